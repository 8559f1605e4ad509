//! `GET /metrics`: the Prometheus exposition (see `crate::metrics`). Where it is served, and
//! with what:
//!
//! - on `metrics.listen`, when set: a listener of its own with nothing else on it, and no token
//!   (it is meant for an address only the scraper reaches);
//! - otherwise on `admin.listen`, when set, without a token (that listener is the operator's
//!   private address already);
//! - otherwise on the public listener, and there only with the admin token (`Authorization:
//!   Bearer`), as the admin API is: site ids and traffic are not for everyone.

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use super::AppState;
use super::admin::Admin;

/// `/metrics` for anyone who reaches the listener (`metrics.listen`, `admin.listen`).
pub fn open_router() -> Router<AppState> {
    Router::new().route("/metrics", get(exposition))
}

/// `/metrics` for the admin token's holder only (the public listener).
pub fn admin_only_router() -> Router<AppState> {
    Router::new().route("/metrics", get(exposition_for_admin))
}

async fn exposition(State(state): State<AppState>) -> Response {
    let text = state.metrics.encode(&state.webhooks, state.upstreams.targets());
    ([(header::CONTENT_TYPE, HeaderValue::from_static(crate::metrics::CONTENT_TYPE))], text)
        .into_response()
}

async fn exposition_for_admin(_: Admin, state: State<AppState>) -> Response {
    exposition(state).await
}
