//! The operator's console: its files at `/console/` (from `admin.console_dir`, the output of
//! `scripts/build-console`) under a strict Content-Security-Policy, and its sessions.
//!
//! Logging in (`POST /admin/v1/session` with the admin token) sets an HttpOnly, SameSite=Strict
//! cookie that stands for the token on every `/admin/v1/...` route until it expires
//! (`admin.session_hours`) or is logged out (`DELETE /admin/v1/session`). The cookie is
//! `<session id>.<expiry>.<HMAC>` under a secret kept in the database, so every relay sharing
//! the database accepts it; a logout is written to the database too
//! (`Store::revoke_console_session`), so every relay refuses the cookie from then on. With the
//! cookie, a request that changes something must also carry an `Origin` of the relay itself.
//!
//! Wrong admin tokens, on login or as a bearer token, are slowed down: each waits a second, and
//! a client address with ten in ten minutes is refused (429) for the rest of that window.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use confab_admin_api::{LoginRequest, SessionView};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tower_http::services::ServeDir;

use super::assets::{Files, serve_bundle};
use super::chat::Peer;
use super::{ApiJson, AppState};
use crate::error::ApiError;
use crate::webhooks::events::hmac_hex;

/// The session cookie's name.
pub const COOKIE: &str = "confab_console";

/// What the console's pages may load: their own files and the relay's API, nothing inline.
pub const CSP: &str = "default-src 'self'; script-src 'self' 'wasm-unsafe-eval'; \
     style-src 'self'; img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; \
     base-uri 'none'; form-action 'self'; object-src 'none'";

/// The console's files.
pub fn router(state: &AppState) -> Router<AppState> {
    let router = Router::new()
        .route("/console", get(|| async { axum::response::Redirect::permanent("/console/") }));
    let router = match Files::console(&state.config) {
        Files::Dir(dir) => {
            let files = ServeDir::new(dir)
                .precompressed_br()
                .precompressed_gzip()
                .append_index_html_on_directories(true);
            router.nest_service("/console/", files)
        }
        Files::Embedded(bundle) => router.nest_service(
            "/console/",
            axum::routing::any(move |method, uri, headers| {
                serve_bundle(bundle, method, uri, headers)
            }),
        ),
    };
    router.layer(middleware::from_fn(console_headers))
}

async fn console_headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    if !headers.contains_key(header::CACHE_CONTROL) {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    }
    response
}

/// `/admin/v1/session`: log in, see the session, log out.
pub fn session_router() -> Router<AppState> {
    Router::new().route("/admin/v1/session", get(session).post(login).delete(logout))
}

/// The console's sessions, and the wrong tokens seen lately.
#[derive(Debug)]
pub struct Sessions {
    secret: Vec<u8>,
    lifetime: Duration,
    /// Sessions logged out on this relay, with their expiry (forgotten once expired).
    revoked: Mutex<HashMap<String, i64>>,
    /// Wrong tokens per client address: how many since when.
    failures: Mutex<HashMap<IpAddr, (u32, Instant)>>,
}

/// Wrong tokens an address may present per window before it is refused.
const MAX_FAILURES: u32 = 10;
const FAILURE_WINDOW: Duration = Duration::from_secs(600);
/// What each wrong token waits before its answer.
const FAILURE_DELAY: Duration = Duration::from_secs(1);

impl Sessions {
    pub fn new(secret: Vec<u8>, lifetime: Duration) -> Self {
        Self { secret, lifetime, revoked: Mutex::default(), failures: Mutex::default() }
    }

    fn sign(&self, id: &str, expires: i64) -> String {
        hmac_hex(&self.secret, &[id.as_bytes(), expires.to_string().as_bytes()])
    }

    /// A new session's cookie value and expiry (unix seconds).
    fn open(&self, now: i64) -> (String, i64) {
        let id = hex::encode(rand::random::<[u8; 16]>());
        let expires = now + i64::try_from(self.lifetime.as_secs()).unwrap_or(i64::MAX / 2);
        (format!("{id}.{expires}.{}", self.sign(&id, expires)), expires)
    }

    /// The session id and expiry of a valid, unexpired, not logged-out cookie value.
    pub fn check(&self, value: &str, now: i64) -> Option<(String, i64)> {
        let mut parts = value.splitn(3, '.');
        let (id, expires, signature) = (parts.next()?, parts.next()?, parts.next()?);
        let expires: i64 = expires.parse().ok()?;
        let expected = self.sign(id, expires);
        let valid: bool = expected.as_bytes().ct_eq(signature.as_bytes()).into();
        if !valid || expires <= now {
            return None;
        }
        let revoked = self.revoked.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        (!revoked.contains_key(id)).then(|| (id.to_owned(), expires))
    }

    fn revoke(&self, id: String, expires: i64, now: i64) {
        let mut revoked = self.revoked.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        revoked.retain(|_, until| *until > now);
        revoked.insert(id, expires);
    }

    /// Refuses an address that presented too many wrong tokens lately.
    pub fn admit(&self, peer: Option<IpAddr>) -> Result<(), ApiError> {
        let Some(peer) = peer else { return Ok(()) };
        let failures = self.failures.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        match failures.get(&peer) {
            Some((count, since)) if *count >= MAX_FAILURES && since.elapsed() < FAILURE_WINDOW => {
                Err(ApiError::TooManyAttempts)
            }
            _ => Ok(()),
        }
    }

    /// Counts a wrong token and waits before the answer is sent.
    pub async fn failed(&self, peer: Option<IpAddr>) {
        if let Some(peer) = peer {
            let mut failures =
                self.failures.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            if failures.len() > 10_000 {
                failures.retain(|_, (_, since)| since.elapsed() < FAILURE_WINDOW);
            }
            let entry = failures.entry(peer).or_insert((0, Instant::now()));
            if entry.1.elapsed() >= FAILURE_WINDOW {
                *entry = (0, Instant::now());
            }
            entry.0 += 1;
        }
        tokio::time::sleep(FAILURE_DELAY).await;
    }
}

/// The value of cookie `name` in the request's `Cookie` headers.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .find_map(|pair| {
            let (key, value) = pair.trim().split_once('=')?;
            (key == name).then_some(value)
        })
}

/// Whether a request made with the session cookie may change something: it must say it comes
/// from a page of the relay itself (its `Origin`'s host and port are the `Host` it was sent to).
pub fn same_origin(method: &Method, headers: &HeaderMap) -> bool {
    if matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS) {
        return true;
    }
    let (Some(origin), Some(host)) = (
        headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()),
        headers.get(header::HOST).and_then(|v| v.to_str().ok()),
    ) else {
        return false;
    };
    url::Url::parse(origin).ok().is_some_and(|url| {
        let authority = match (url.host_str(), url.port()) {
            (Some(host), Some(port)) => format!("{host}:{port}"),
            (Some(host), None) => host.to_owned(),
            (None, _) => return false,
        };
        authority.eq_ignore_ascii_case(host)
    })
}

/// Whether `presented` is the admin token (constant time whatever the lengths).
pub fn is_admin_token(state: &AppState, presented: &str) -> bool {
    let Some(expected) = &state.admin_token else { return false };
    Sha256::digest(presented.as_bytes()).ct_eq(&Sha256::digest(expected.expose().as_bytes())).into()
}

fn now() -> i64 {
    crate::unix_now_ms() / 1000
}

/// The session id and expiry of a cookie value that is valid, unexpired and not logged out on
/// any relay of this store (this relay's own logouts are known without asking it).
pub async fn valid_session(
    state: &AppState,
    value: &str,
) -> Result<Option<(String, i64)>, ApiError> {
    let Some((id, expires)) = state.sessions.check(value, now()) else { return Ok(None) };
    let revoked = state.store.console_session_revoked(&id).await.map_err(ApiError::internal)?;
    Ok((!revoked).then_some((id, expires)))
}

async fn login(
    State(state): State<AppState>,
    Peer(peer): Peer,
    headers: HeaderMap,
    ApiJson(body): ApiJson<LoginRequest>,
) -> Result<Response, ApiError> {
    if state.admin_token.is_none() {
        return Err(super::admin::disabled());
    }
    if !same_origin(&Method::POST, &headers) {
        return Err(ApiError::PermissionDenied {
            code: "bad_origin",
            message: "log in from the console's own page".into(),
        });
    }
    state.sessions.admit(peer)?;
    if !is_admin_token(&state, body.token.trim()) {
        state.sessions.failed(peer).await;
        return Err(ApiError::Unauthenticated {
            code: "invalid_admin_token",
            message: "the admin token is not valid",
        });
    }
    let (value, expires) = state.sessions.open(now());
    let max_age = expires - now();
    let secure = state.config.server.public_url.as_deref().is_some_and(|u| u.starts_with("https:"));
    let cookie = format!(
        "{COOKIE}={value}; HttpOnly; SameSite=Strict; Path=/; Max-Age={max_age}{}",
        if secure { "; Secure" } else { "" }
    );
    let mut response = StatusCode::NO_CONTENT.into_response();
    if let Ok(cookie) = HeaderValue::from_str(&cookie) {
        response.headers_mut().insert(header::SET_COOKIE, cookie);
    }
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

fn not_logged_in() -> ApiError {
    ApiError::Unauthenticated { code: "not_logged_in", message: "log in to the console first" }
}

async fn session(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<SessionView>, ApiError> {
    let value = cookie(&headers, COOKIE).ok_or_else(not_logged_in)?;
    let (_, expires_at) = valid_session(&state, value).await?.ok_or_else(not_logged_in)?;
    Ok(Json(SessionView { expires_at }))
}

/// Ends the session on every relay of this store: at once on this one, and on the others at
/// their next request (they ask the store). Should the store not take it, the answer is an
/// error and the cookie stays, so that the console can try again.
async fn logout(State(state): State<AppState>, headers: HeaderMap) -> Result<Response, ApiError> {
    if same_origin(&Method::DELETE, &headers)
        && let Some(value) = cookie(&headers, COOKIE)
        && let Some((id, expires)) = state.sessions.check(value, now())
    {
        state.sessions.revoke(id.clone(), expires, now());
        state
            .store
            .revoke_console_session(&id, expires, now())
            .await
            .map_err(ApiError::internal)?;
    }
    let clear = format!("{COOKIE}=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0");
    let mut response = StatusCode::NO_CONTENT.into_response();
    if let Ok(clear) = HeaderValue::from_str(&clear) {
        response.headers_mut().insert(header::SET_COOKIE, clear);
    }
    Ok(response)
}

/// The sessions a relay keeps, for tests of the rules above.
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_cookie_is_valid_until_it_expires_or_is_revoked() {
        let sessions = Sessions::new(b"secret".to_vec(), Duration::from_secs(100));
        let (value, expires) = sessions.open(1_000);
        assert_eq!(expires, 1_100);
        let (id, _) = sessions.check(&value, 1_050).unwrap();
        assert_eq!(sessions.check(&value, 1_100), None, "expired");
        let forged = value.replace(".1100.", ".9999.");
        assert_eq!(sessions.check(&forged, 1_050), None, "expiry changed");
        let other = Sessions::new(b"other".to_vec(), Duration::from_secs(100));
        assert_eq!(other.check(&value, 1_050), None, "another secret");
        sessions.revoke(id, expires, 1_060);
        assert_eq!(sessions.check(&value, 1_061), None, "logged out");
        assert_eq!(sessions.check("garbage", 0), None);
    }

    #[test]
    fn changes_need_the_relays_own_origin() {
        let headers = |origin: Option<&str>| {
            let mut headers = HeaderMap::new();
            headers.insert(header::HOST, HeaderValue::from_static("127.0.0.1:9090"));
            if let Some(origin) = origin {
                headers.insert(header::ORIGIN, HeaderValue::from_str(origin).unwrap());
            }
            headers
        };
        assert!(same_origin(&Method::GET, &headers(None)));
        assert!(same_origin(&Method::POST, &headers(Some("http://127.0.0.1:9090"))));
        assert!(!same_origin(&Method::POST, &headers(Some("http://127.0.0.1:9091"))));
        assert!(!same_origin(&Method::DELETE, &headers(Some("https://evil.example"))));
        assert!(!same_origin(&Method::PATCH, &headers(None)));
        assert!(!same_origin(&Method::POST, &headers(Some("null"))));
    }

    #[test]
    fn cookies_are_found_among_others() {
        let mut headers = HeaderMap::new();
        headers.insert(header::COOKIE, HeaderValue::from_static("a=1; confab_console=x.y.z; b=2"));
        assert_eq!(cookie(&headers, COOKIE), Some("x.y.z"));
        assert_eq!(cookie(&headers, "c"), None);
    }
}
