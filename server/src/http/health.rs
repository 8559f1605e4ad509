//! `GET /healthz`: answers without touching any upstream; checks the database, and that the
//! in-memory directory of sites and keys is fresh enough to be used (503 otherwise, since every
//! key is refused then).

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{Value, json};

use super::AppState;

pub fn router() -> Router<AppState> {
    Router::new().route("/healthz", get(health))
}

async fn health(State(state): State<AppState>) -> (StatusCode, Json<Value>) {
    if let Err(error) = state.store.ping().await {
        tracing::error!(%error, "health check: database unavailable");
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "status": "database unavailable" })),
        );
    }
    if let Some(since_ms) = state.store.directory_stale_since() {
        let body = json!({
            "status": "directory stale",
            "directory": {
                "stale": true,
                "last_refreshed_at": crate::rfc3339(since_ms / 1000),
                "stale_for_ms": crate::unix_now_ms().saturating_sub(since_ms),
            },
        });
        return (StatusCode::SERVICE_UNAVAILABLE, Json(body));
    }
    (StatusCode::OK, Json(json!({ "status": "ok" })))
}
