//! The widget's files and the demo page.
//!
//! - `/confab.js`, the loader: cached briefly, so a new release reaches pages within minutes;
//! - `/widget/<name>.<hash>.<ext>`: content-hashed, so cached forever (`immutable`);
//! - both from `widget.assets_dir` (the output of `scripts/build-widget`), with the brotli and gzip
//!   variants built next to them served to clients that accept them, and CORS for any origin;
//! - `/`: in demo mode, the demo page with the widget embedded for the demo site.

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, header};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use tower_http::services::{ServeDir, ServeFile};

use super::AppState;
use crate::error::ApiError;

const DEMO_PAGE: &str = include_str!("../../../www/index.html");
const LOADER_CACHE: &str = "public, max-age=300";
const HASHED_CACHE: &str = "public, max-age=31536000, immutable";

pub fn router(state: &AppState) -> Router<AppState> {
    let dir = &state.config.widget.assets_dir;
    let loader = ServeFile::new(dir.join("confab.js")).precompressed_br().precompressed_gzip();
    let files = ServeDir::new(dir).precompressed_br().precompressed_gzip();
    Router::new()
        .route("/", get(demo_page))
        .route_service("/confab.js", loader)
        .nest_service("/widget", files)
        .layer(middleware::from_fn(cache_control))
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
