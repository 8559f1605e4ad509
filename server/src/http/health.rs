//! `GET /healthz`: answers without touching any upstream, and says what is degraded.
//!
//! - `200 {"status": "ok"}`: everything answers.
//! - `200 {"status": "degraded", "degraded": [...], ...}`: the relay serves, but some of what it
//!   relies on does not answer: `database` (keys are checked against the in-memory directory for
//!   up to `database.directory_max_stale_ms`, usage records wait in memory, `usage_backlog` says
//!   how many), `redis` (limits and budgets degrade as documented), `usage` (records are waiting
//!   to be written while the database answers pings).
//! - `503`, `"status": "directory stale"`: keys are refused, since the copy of sites and keys could
//!   not be checked for too long; a load balancer should send visitors elsewhere.
//!
//! It is public, so it names components and counts only, never an address or an error text.

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{Map, Value, json};

use super::AppState;

pub fn router() -> Router<AppState> {
    Router::new().route("/healthz", get(health))
}

/// Records waiting to be written past which `usage` counts as degraded: several batches' worth
/// at a busy relay's rate means writes are not keeping up.
const USAGE_BACKLOG_DEGRADED: usize = 50_000;

/// A database that has not answered a ping in this long counts as unavailable.
const PING_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(1);

async fn health(State(state): State<AppState>) -> (StatusCode, Json<Value>) {
    let mut degraded = Vec::new();
    match tokio::time::timeout(PING_TIMEOUT, state.store.ping()).await {
        Ok(Ok(())) => {}
        Ok(Err(error)) => {
            tracing::error!(%error, "health check: database unavailable");
            degraded.push("database");
        }
        Err(_) => {
            tracing::error!(timeout = ?PING_TIMEOUT, "health check: the database does not answer");
            degraded.push("database");
        }
    }
    if state.metering.redis_health.as_ref().is_some_and(|redis| !redis.reachable()) {
        degraded.push("redis");
    }
    let backlog = state.metering.recorder.backlog();
    if backlog > USAGE_BACKLOG_DEGRADED && !degraded.contains(&"database") {
        degraded.push("usage");
    }
    let mut body = Map::new();
    let status = if let Some(since_ms) = state.store.directory_stale_since() {
        body.insert(
            "directory".into(),
            json!({
                "stale": true,
                "last_refreshed_at": crate::rfc3339(since_ms / 1000),
                "stale_for_ms": crate::unix_now_ms().saturating_sub(since_ms),
            }),
        );
        body.insert("status".into(), json!("directory stale"));
        StatusCode::SERVICE_UNAVAILABLE
    } else if degraded.is_empty() {
        body.insert("status".into(), json!("ok"));
        StatusCode::OK
    } else {
        body.insert("status".into(), json!("degraded"));
        StatusCode::OK
    };
    if !degraded.is_empty() {
        body.insert("degraded".into(), json!(degraded));
        body.insert("usage_backlog".into(), json!(backlog));
    }
    (status, Json(Value::Object(body)))
}
