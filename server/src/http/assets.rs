//! The widget's files and the demo page.
//!
//! - `/confab.js`, the loader: cached briefly, so a new release reaches pages within minutes;
//! - `/widget/<name>.<hash>.<ext>`: content-hashed, so cached forever (`immutable`);
//! - both from the widget built into the binary (`--features embed-assets`, see `confab-assets`)
//!   or from `widget.assets_dir` (the output of `scripts/build-widget`), which overrides it, with
//!   the brotli and gzip variants built next to them served to clients that accept them, and
//!   CORS for any origin;
//! - `/`: in demo mode, the demo page with the widget embedded for the demo site.

use std::path::{Path, PathBuf};

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use tower_http::services::{ServeDir, ServeFile};

use confab_assets::Bundle;

use super::AppState;
use crate::error::ApiError;

const DEMO_PAGE: &str = include_str!("../../../www/index.html");
const LOADER_CACHE: &str = "public, max-age=300";
const HASHED_CACHE: &str = "public, max-age=31536000, immutable";

/// Where built files come from: a directory, or the bundle built into the binary.
#[derive(Debug, Clone)]
pub enum Files {
    Dir(PathBuf),
    Embedded(Bundle),
}

impl Files {
    /// `configured` if set, else `embedded` if this binary has it, else `default` on disk.
    pub fn choose(configured: Option<&Path>, embedded: Option<Bundle>, default: &str) -> Self {
        match (configured, embedded) {
            (Some(dir), _) => Self::Dir(dir.to_owned()),
            (None, Some(bundle)) => Self::Embedded(bundle),
            (None, None) => Self::Dir(PathBuf::from(default)),
        }
    }

    /// The widget's files for this configuration.
    pub fn widget(config: &crate::config::Config) -> Self {
        Self::choose(config.widget.assets_dir.as_deref(), Bundle::widget(), "dist/widget")
    }

    /// The console's files for this configuration.
    pub fn console(config: &crate::config::Config) -> Self {
        Self::choose(config.admin.console_dir.as_deref(), Bundle::console(), "dist/console")
    }

    /// Whether the file at `path` (relative) is there.
    pub fn has(&self, path: &str) -> bool {
        match self {
            Self::Dir(dir) => dir.join(path).is_file(),
            Self::Embedded(bundle) => bundle.get(path).is_some(),
        }
    }

    /// Where they are, for people.
    pub fn describe(&self) -> String {
        match self {
            Self::Dir(dir) => dir.display().to_string(),
            Self::Embedded(_) => "built into this binary".into(),
        }
    }
}

/// Serves a bundle's files under the path it is nested at (a `GET` or `HEAD` of the rest of
/// the path), as `ServeDir` serves a directory's: content type by extension, a precompressed
/// variant for clients that accept it (`Vary: Accept-Encoding`).
pub async fn serve_bundle(
    bundle: Bundle,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    if method != Method::GET && method != Method::HEAD {
        return StatusCode::METHOD_NOT_ALLOWED.into_response();
    }
    let path = uri.path().trim_start_matches('/');
    let accept = headers.get(header::ACCEPT_ENCODING).and_then(|v| v.to_str().ok()).unwrap_or("");
    let Some(served) = bundle.serve(path, accept) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let mut response = if method == Method::HEAD {
        Response::new(axum::body::Body::empty())
    } else {
        Response::new(axum::body::Body::from(served.body))
    };
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(served.content_type));
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(served.body.len()));
    headers.insert(header::VARY, HeaderValue::from_static("accept-encoding"));
    if let Some(encoding) = served.encoding {
        headers.insert(header::CONTENT_ENCODING, HeaderValue::from_static(encoding));
    }
    response
}

pub fn router(state: &AppState) -> Router<AppState> {
    let router = Router::new().route("/", get(demo_page));
    let router = match Files::widget(&state.config) {
        Files::Dir(dir) => {
            let loader =
                ServeFile::new(dir.join("confab.js")).precompressed_br().precompressed_gzip();
            let files = ServeDir::new(dir).precompressed_br().precompressed_gzip();
            router.route_service("/confab.js", loader).nest_service("/widget", files)
        }
        Files::Embedded(bundle) => router
            .route(
                "/confab.js",
                get(move |method, headers| {
                    serve_bundle(bundle, method, Uri::from_static("/confab.js"), headers)
                }),
            )
            .nest_service(
                "/widget",
                axum::routing::any(move |method, uri, headers| {
                    serve_bundle(bundle, method, uri, headers)
                }),
            ),
    };
    router.layer(middleware::from_fn(cache_control))
}

/// True for paths that serve widget files (CORS for any origin applies to them).
pub fn is_asset_path(path: &str) -> bool {
    path == "/confab.js" || path.starts_with("/widget/")
}

async fn cache_control(request: Request, next: Next) -> Response {
    let path = request.uri().path().to_owned();
    let mut response = next.run(request).await;
    if !response.status().is_success() {
        return response;
    }
    let policy = if path == "/confab.js" {
        LOADER_CACHE
    } else if is_content_hashed(&path) {
        HASHED_CACHE
    } else {
        "no-cache"
    };
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static(policy));
    response
}

/// `name.<16 hex digits>.ext`, as the build names every versioned file.
fn is_content_hashed(path: &str) -> bool {
    let mut parts = path.rsplit('.');
    let _ext = parts.next();
    parts.next().is_some_and(|h| h.len() == 16 && h.bytes().all(|b| b.is_ascii_hexdigit()))
}

async fn demo_page(State(state): State<AppState>) -> Result<Response, ApiError> {
    let Some(demo) = &state.demo else {
        return Err(ApiError::RouteNotFound { method: "GET".into(), path: "/".into() });
    };
    let page = DEMO_PAGE
        .replace("{{RELAY}}", &html_escape(&demo.public_url))
        .replace("{{SITE_KEY}}", &html_escape(&demo.site_key));
    Ok(([(header::CACHE_CONTROL, "no-store")], Html(page)).into_response())
}

fn html_escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('"', "&quot;").replace('<', "&lt;").replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_content_hashed_names_are_immutable() {
        assert!(is_content_hashed("/widget/confab-widget.043e135d0499608f.wasm"));
        assert!(!is_content_hashed("/widget/manifest.json"));
        assert!(!is_content_hashed("/confab.js"));
    }
}
