//! `POST /v1/chat/completions`: authenticate, apply the site's policy, call the upstream, and
//! either stream the answer through or collect it into one `chat.completion`.

use axum::extract::State;
use axum::http::{HeaderName, HeaderValue};
use axum::response::sse::{KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use confab_protocol::ChatRequest;

use super::{ApiJson, AppState, Caller};
use crate::error::ApiError;
use crate::policy::SitePolicy;
use crate::relay::{self, collect_completion, sse_events};
use crate::store::Scope;

pub fn router() -> Router<AppState> {
    Router::new().route("/v1/chat/completions", post(create_chat_completion))
}

async fn create_chat_completion(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(request): ApiJson<ChatRequest>,
) -> Result<Response, ApiError> {
    caller.require(Scope::Chat)?;
    let (defaults, limits) = (&state.config.policy, &state.config.limits);
    let policy = match &caller {
        Caller::Site(site) => SitePolicy::for_site(site, defaults, limits),
        Caller::Key(key) if key.models.is_empty() => {
            SitePolicy::for_key(state.upstreams.models(), defaults, limits)
        }
        Caller::Key(key) => SitePolicy::for_key(&key.models, defaults, limits),
    };
    let stream_to_client = request.stream;
    let upstream_request = policy.apply(request)?;
    let model = upstream_request.model.as_deref().unwrap_or_default();
    let upstream = state
        .upstreams
        .for_model(model)
        .ok_or_else(|| ApiError::ModelUnavailable { model: model.to_owned() })?;
    tracing::Span::current().record("upstream", upstream.name());

    let plan = relay::start(upstream, &upstream_request, &state.config.timeouts).await?;
    if stream_to_client {
        let sse = Sse::new(sse_events(plan))
            .keep_alive(KeepAlive::new().interval(state.config.heartbeat()));
        let no_buffering =
            [(HeaderName::from_static("x-accel-buffering"), HeaderValue::from_static("no"))];
        Ok((no_buffering, sse).into_response())
    } else {
        Ok(Json(collect_completion(plan).await?).into_response())
    }
}
