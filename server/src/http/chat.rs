//! `POST /v1/chat/completions`: authenticate, apply the site's policy, call the upstream, and
//! either stream the answer through or collect it into one `chat.completion`.

use axum::extract::State;
use axum::http::{HeaderName, HeaderValue};
use axum::response::sse::{KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use confab_protocol::ChatRequest;
use tokio::time::Instant;

use super::{ApiJson, AppState, SiteAuth};
use crate::error::ApiError;
use crate::policy::SitePolicy;
use crate::relay::{RelayStream, Step, StreamPlan, collect_completion, sse_events};
use crate::upstream::{TimeoutKind, UpstreamError};

pub fn router() -> Router<AppState> {
    Router::new().route("/v1/chat/completions", post(create_chat_completion))
}

#[tracing::instrument(skip_all)]
async fn create_chat_completion(
    State(state): State<AppState>,
    auth: SiteAuth,
    ApiJson(request): ApiJson<ChatRequest>,
) -> Result<Response, ApiError> {
    let policy = SitePolicy::for_site(&auth.site, &state.config.policy, &state.config.limits);
    let stream_to_client = request.stream;
    let upstream_request = policy.apply(request)?;
    let model = upstream_request.model.clone().unwrap_or_default();
    let upstream = state
        .upstreams
        .for_model(&model)
        .ok_or_else(|| ApiError::ModelUnavailable { model: model.clone() })?;
    let prompt_bytes = upstream_request.messages.iter().map(|m| m.content.len()).sum();

    let timeouts = &state.config.timeouts;
    let requested_at = Instant::now();
    let events = tokio::time::timeout_at(
        requested_at + timeouts.first_byte(),
        upstream.open(&upstream_request),
    )
    .await
    .map_err(|_| UpstreamError::Timeout {
        kind: TimeoutKind::FirstByte,
        after: timeouts.first_byte(),
    })
    .and_then(|opened| opened)
    .map_err(|e| {
        tracing::warn!(upstream = upstream.name(), error = %e, "upstream call failed");
        e.to_api_error()
    })?;

    // Wait for the first event before answering, so that a failure before the answer starts
    // gets a proper status code rather than a 200 with an error event.
    let mut relay =
        RelayStream::new(events, model, requested_at, timeouts.first_byte(), timeouts.idle());
    let first = relay.step().await;
    if let Step::Failed(e) = &first {
        tracing::warn!(upstream = upstream.name(), error = %e, "upstream call failed");
        return Err(e.to_api_error());
    }
    let plan = StreamPlan { relay, first, prompt_bytes };

    if stream_to_client {
        let sse = Sse::new(sse_events(plan))
            .keep_alive(KeepAlive::new().interval(state.config.heartbeat()));
        Ok(([(HeaderName::from_static("x-accel-buffering"), HeaderValue::from_static("no"))], sse)
            .into_response())
    } else {
        let completion = collect_completion(plan).await.map_err(|e| {
            tracing::warn!(upstream = upstream.name(), error = %e, "upstream call failed");
            e.to_api_error()
        })?;
        Ok(Json(completion).into_response())
    }
}
