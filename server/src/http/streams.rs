//! Resumable streams over HTTP: a streamed answer's response when it is resumable (its
//! `X-Confab-Stream` id and SSE `id`s), `GET /v1/chat/streams/{id}` to follow it again after a
//! dropped connection (from the event after `Last-Event-ID`), and
//! `POST /v1/chat/streams/{id}/cancel` to stop it. Both need the same authentication as chat,
//! and answer 404 `stream_not_found` to any caller but the one that started the stream
//! (`resume::Owner`). The logs themselves are `resume`'s.

use std::net::IpAddr;
use std::sync::Arc;

use axum::extract::{FromRequestParts, Path, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::Response;
use axum::routing::{get, post};
use bytes::{Bytes, BytesMut};
use futures_util::{Stream, StreamExt};
use tracing::Instrument;

use super::auth::{page_origin, site_visitor, visitor_hash};
use super::chat::Peer;
use super::{AppState, Caller};
use crate::error::ApiError;
use crate::relay::{self, StreamPlan};
use crate::resume::{Frame, Opened, Owner, ReplayLog};
use crate::sse;
use crate::store::Scope;

/// The header that names a resumable stream.
pub const X_CONFAB_STREAM: HeaderName = HeaderName::from_static("x-confab-stream");

/// The reattaching client's position: the `id` of the last event it received.
const LAST_EVENT_ID: HeaderName = HeaderName::from_static("last-event-id");

pub fn router() -> axum::Router<AppState> {
    axum::Router::new()
        .route("/v1/chat/streams/{id}", get(follow_stream))
        .route("/v1/chat/streams/{id}/cancel", post(cancel_stream))
}

/// The response to a streamed chat request whose upstream call has started: resumable (its
/// events produced into the replay log, which this response follows and, while it is polled,
/// drives the producer) when the relay keeps replay logs and has room for one more, otherwise
/// passed through as it is read, as before streams could be resumed.
pub(super) async fn stream_answer(
    state: &AppState,
    owner: Option<Owner>,
    plan: StreamPlan,
) -> Response {
    let opened = match (&state.replay, owner) {
        (Some(log), Some(owner)) => log.open(owner).await,
        _ => None,
    };
    let Some(Opened { id, writer, stop, frames }) = opened else {
        return sse_response(relay::sse_events(plan), state, None);
    };
    let producer = relay::produce(plan, writer, stop).instrument(tracing::Span::current());
    let frames = state.producers.start(&id, producer).frames(frames);
    sse_response(frames.map(|frames| batch(&frames)), state, Some(&id))
}

/// Who may follow a stream the caller starts: `None` when the relay keeps no replay logs.
pub(super) fn owner(
    state: &AppState,
    caller: &Caller,
    peer: Option<IpAddr>,
    headers: &HeaderMap,
) -> Result<Option<Owner>, ApiError> {
    if state.replay.is_none() {
        return Ok(None);
    }
    Ok(Some(match caller {
        Caller::Site(site) => Owner::Site {
            site: site.id.clone(),
            origin: page_origin(headers).map(|o| String::from_utf8_lossy(o.as_bytes()).into()),
            visitor: visitor_hash(state, site, &site_visitor(state, site, peer, headers)?),
        },
        Caller::Key(key) => Owner::Key { key: key.id.clone() },
    }))
}

/// A request about a stream the caller may have started: the replay log, and the caller as a
/// stream's owner would be. Authenticated as chat is; with no replay log, every stream is
/// unknown.
struct StreamCaller {
    log: Arc<dyn ReplayLog>,
    owner: Owner,
}

impl FromRequestParts<AppState> for StreamCaller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let caller = Caller::from_request_parts(parts, state).await?;
        caller.require(Scope::Chat)?;
        let Ok(Peer(peer)) = Peer::from_request_parts(parts, state).await;
        match (&state.replay, owner(state, &caller, peer, &parts.headers)?) {
            (Some(log), Some(owner)) => Ok(Self { log: Arc::clone(log), owner }),
            _ => Err(ApiError::StreamNotFound),
        }
    }
}

/// `GET /v1/chat/streams/{id}`: the stream's events after `Last-Event-ID` (all of them without
/// it), then the rest as they come.
async fn follow_stream(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    StreamCaller { log, owner }: StreamCaller,
) -> Result<Response, ApiError> {
    let after = match headers.get(LAST_EVENT_ID) {
        None => 0,
        Some(value) => {
            value.to_str().ok().and_then(|v| v.trim().parse().ok()).ok_or_else(|| {
                ApiError::invalid("invalid_value", "Last-Event-ID must be the id of an event")
            })?
        }
    };
    let frames = log.follow(&id, &owner, after).await.map_err(|_| ApiError::StreamNotFound)?;
    // Produced here and not ended yet: this client drives it too.
    let frames = match state.producers.driver(&id) {
        Some(driver) => driver.frames(frames),
        None => frames,
    };
    Ok(sse_response(frames.map(|frames| batch(&frames)), &state, Some(&id)))
}

/// `POST /v1/chat/streams/{id}/cancel`: stops the stream's upstream call (settled as
/// interrupted at what was generated) and answers 204 once it is stopped; 204 too for a stream
/// that had already ended.
async fn cancel_stream(
    State(state): State<AppState>,
    Path(id): Path<String>,
    StreamCaller { log, owner }: StreamCaller,
) -> Result<StatusCode, ApiError> {
    let cancelled = log.cancel(&id, &owner);
    // The producer must run to see the cancellation: this request drives it too, in case none
    // of its followers is being polled.
    let cancelled = match state.producers.driver(&id) {
        None => cancelled.await,
        Some(driver) => {
            tokio::pin!(cancelled);
            tokio::select! {
                biased;
                cancelled = &mut cancelled => cancelled,
                () = driver => cancelled.await,
            }
        }
    };
    cancelled.map_err(|_| ApiError::StreamNotFound)?;
    Ok(StatusCode::NO_CONTENT)
}

/// Events of a replay log taken at once, as SSE in one buffer (one body frame).
fn batch(frames: &[Frame]) -> Bytes {
    let mut body = BytesMut::with_capacity(frames.iter().map(|f| f.data.len() + 32).sum());
    for frame in frames {
        sse::write_event(&mut body, frame.kind, frame.seq, &frame.data);
    }
    body.freeze()
}

/// An SSE response (see `sse`) with heartbeats, that proxies are asked not to buffer, naming
/// its stream when it is resumable.
fn sse_response(
    batches: impl Stream<Item = Bytes> + Send + 'static,
    state: &AppState,
    stream: Option<&str>,
) -> Response {
    let mut response = sse::response(batches, state.config.heartbeat());
    let headers = response.headers_mut();
    headers.insert(HeaderName::from_static("x-accel-buffering"), HeaderValue::from_static("no"));
    if let Some(id) = stream.and_then(|id| HeaderValue::from_str(id).ok()) {
        headers.insert(X_CONFAB_STREAM, id);
    }
    response
}
