//! The pass-through: reads an upstream event stream under the first-byte and idle limits,
//! rewrites each chunk only where policy requires (the model name), notes usage and streamed text,
//! and ends every stream in a defined way: usage chunk and `[DONE]`, or an `error` event.
//!
//! Dropping a `RelayStream` drops the upstream response, which closes the upstream connection:
//! that is how a client disconnect cancels the upstream call at once.

use std::convert::Infallible;
use std::time::Duration;

use axum::response::sse::Event;
use confab_protocol::{
    CHUNK_OBJECT, COMPLETION_OBJECT, ChatCompletion, ChatCompletionChunk, ChatMessage, ChatRequest,
    CompletionChoice, DONE_SENTINEL, Role, Usage,
};
use futures_util::{Stream, StreamExt, stream};
use serde_json::Value;
use tokio::time::Instant;
use tracing::Instrument;

use crate::config::TimeoutConfig;
use crate::error::ApiError;
use crate::meter::Meter;
use crate::store::Outcome;
use crate::unix_now;
use crate::upstream::{EventStream, TimeoutKind, Upstream, UpstreamError, UpstreamEvent};

/// Rough token count for text whose usage the upstream did not report: about four bytes per
/// token for English text, which is what tokenizers of the GPT family average.
pub fn estimate_tokens(bytes: usize) -> u64 {
    (bytes as u64).div_ceil(4)
}

/// Bytes of message text in a request (what a usage estimate counts for the prompt).
pub fn prompt_bytes(request: &ChatRequest) -> usize {
    request.messages.iter().map(|m| m.content.len()).sum()
}

/// One upstream chunk after rewriting.
#[derive(Debug, Clone)]
pub struct RelayedChunk {
    /// The chunk as the client receives it.
    pub json: String,
    /// The text this chunk adds to the answer.
    pub content: String,
    pub finish_reason: Option<String>,
    pub id: Option<String>,
    pub created: Option<u64>,
}

/// What the next read of the upstream gave.
#[derive(Debug)]
pub enum Step {
    Chunk(RelayedChunk),
    /// The upstream finished cleanly.
    Done,
    Failed(UpstreamError),
}

/// An upstream stream under the relay's time limits and rewriting rules.
pub struct RelayStream {
    upstream: Option<EventStream>,
    model: String,
    first_byte_deadline: Instant,
    first_byte: Duration,
    idle: Duration,
    started: bool,
    finished: bool,
    /// The usage the upstream reported, if any.
    usage: Option<Usage>,
    /// Whether a chunk with usage and no choices (the OpenAI usage chunk) was passed through.
    usage_chunk_sent: bool,
    /// Bytes of answer text streamed so far (for a usage estimate when none is reported).
    content_bytes: usize,
    id: Option<String>,
    created: Option<u64>,
    /// Bytes of the prompt sent (for a usage estimate).
    prompt_bytes: usize,
    /// Whether any chunk arrived from the upstream.
    received: bool,
    /// Settled when the stream ends, however it ends (see `Drop`).
    meter: Option<Meter>,
}

impl std::fmt::Debug for RelayStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RelayStream").field("model", &self.model).finish_non_exhaustive()
    }
}

impl RelayStream {
    /// `requested_at` is when the upstream request was sent: the first-byte limit counts from it.
    pub fn new(
        upstream: EventStream,
        model: String,
        requested_at: Instant,
        first_byte: Duration,
        idle: Duration,
        prompt_bytes: usize,
        meter: Option<Meter>,
    ) -> Self {
        Self {
            upstream: Some(upstream),
            model,
            first_byte_deadline: requested_at + first_byte,
            first_byte,
            idle,
            started: false,
            finished: false,
            usage: None,
            usage_chunk_sent: false,
            content_bytes: 0,
            id: None,
            created: None,
            prompt_bytes,
            received: false,
            meter,
        }
    }

    /// Reads the next upstream event. After `Done` or `Failed` the upstream connection is closed
    /// and every further call returns `Done`.
    pub async fn step(&mut self) -> Step {
        loop {
            let Some(upstream) = self.upstream.as_mut() else {
                return Step::Done;
            };
            let (deadline, kind, after) = if self.started {
                (Instant::now() + self.idle, TimeoutKind::Idle, self.idle)
            } else {
                (self.first_byte_deadline, TimeoutKind::FirstByte, self.first_byte)
            };
            let step = match tokio::time::timeout_at(deadline, upstream.next()).await {
                Err(_) => Step::Failed(UpstreamError::Timeout { kind, after }),
                // Some servers send empty data lines as keep-alives.
                Ok(Some(Ok(UpstreamEvent::Data(data)))) if data.trim().is_empty() => continue,
                Ok(Some(Ok(UpstreamEvent::Data(data)))) => match self.rewrite(&data) {
                    Ok(chunk) => Step::Chunk(chunk),
                    Err(e) => Step::Failed(e),
                },
                Ok(Some(Ok(UpstreamEvent::Done))) => Step::Done,
                // Some servers close the body without `[DONE]`; that is a clean end only if the
                // answer said it was finished.
                Ok(None) if self.finished => Step::Done,
                Ok(None) => Step::Failed(UpstreamError::Dropped),
                Ok(Some(Err(e))) => Step::Failed(e),
            };
            self.started = true;
            match &step {
                Step::Chunk(chunk) => {
                    self.received = true;
                    if !chunk.content.is_empty()
                        && let Some(meter) = self.meter.as_mut()
                    {
                        meter.text_arrived();
                    }
                }
                Step::Done => {
                    self.upstream = None;
                    self.settle(Outcome::Completed);
                }
                Step::Failed(_) => {
                    self.upstream = None;
                    self.settle(Outcome::UpstreamError);
                }
            }
            return step;
        }
    }

    fn rewrite(&mut self, data: &str) -> Result<RelayedChunk, UpstreamError> {
        let mut value: Value = serde_json::from_str(data)
            .map_err(|e| UpstreamError::Protocol(format!("chunk is not JSON: {e}")))?;
        let object = value
            .as_object_mut()
            .ok_or_else(|| UpstreamError::Protocol("chunk is not a JSON object".into()))?;
        if object.contains_key("error") {
            return Err(UpstreamError::Reported);
        }
        object.insert("model".into(), Value::String(self.model.clone()));
        let usage =
            object.get("usage").and_then(|u| serde_json::from_value::<Usage>(u.clone()).ok());
        let choices = object.get("choices").and_then(Value::as_array);
        let mut content = String::new();
        let mut finish_reason = None;
        for choice in choices.into_iter().flatten() {
            if let Some(text) = choice.pointer("/delta/content").and_then(Value::as_str) {
                content.push_str(text);
            }
            if let Some(reason) = choice.get("finish_reason").and_then(Value::as_str) {
                finish_reason = Some(reason.to_owned());
            }
        }
        if usage.is_some() {
            self.usage = usage;
            self.usage_chunk_sent |= choices.is_none_or(|c| c.is_empty());
        }
        let id = object.get("id").and_then(Value::as_str).map(str::to_owned);
        let created = object.get("created").and_then(Value::as_u64);
        let json = serde_json::to_string(&value)
            .map_err(|e| UpstreamError::Protocol(format!("cannot re-encode chunk: {e}")))?;
        self.finished |= finish_reason.is_some();
        self.content_bytes += content.len();
        self.id = self.id.take().or_else(|| id.clone());
        self.created = self.created.or(created);
        Ok(RelayedChunk { json, content, finish_reason, id, created })
    }

    /// Settles the meter with what was used: the upstream's usage, or an estimate of what was
    /// sent and streamed. An upstream that never answered cost nothing.
    fn settle(&mut self, outcome: Outcome) {
        let Some(meter) = self.meter.take() else { return };
        if self.received {
            meter.finish(self.final_usage(self.prompt_bytes), self.usage.is_none(), outcome);
        } else {
            meter.finish(Usage::new(0, 0), true, outcome);
        }
    }

    /// The usage to report: the upstream's, or an estimate from what was sent and streamed.
    pub fn final_usage(&self, prompt_bytes: usize) -> Usage {
        self.usage.unwrap_or_else(|| {
            Usage::new(estimate_tokens(prompt_bytes), estimate_tokens(self.content_bytes))
        })
    }

    /// The OpenAI usage chunk (`choices: []`), for streams whose upstream sent none of its own
    /// (it reported no usage, or reported it on a chunk that also had choices).
    fn usage_chunk(&self, prompt_bytes: usize) -> Option<String> {
        if self.usage_chunk_sent {
            return None;
        }
        let chunk = ChatCompletionChunk {
            id: self.id.clone().unwrap_or_default(),
            object: CHUNK_OBJECT.into(),
            created: self.created.unwrap_or_else(unix_now),
            model: self.model.clone(),
            choices: Vec::new(),
            usage: Some(self.final_usage(prompt_bytes)),
        };
        serde_json::to_string(&chunk).ok()
    }
}

impl Drop for RelayStream {
    /// The client went away before the end (a stop button, a closed tab): the upstream call is
    /// cancelled by dropping it, and what was generated so far is still settled and recorded.
    fn drop(&mut self) {
        if let Some(meter) = self.meter.take() {
            meter.finish(
                self.final_usage(self.prompt_bytes),
                self.usage.is_none(),
                Outcome::Interrupted,
            );
        }
    }
}

/// An upstream call that has produced its first event (or finished): what both response
/// shapes are built from.
#[derive(Debug)]
pub struct StreamPlan {
    relay: RelayStream,
    first: Step,
    prompt_bytes: usize,
}

/// Calls the upstream and waits for its first event, so that a failure before the answer starts
/// (refused, 429, 5xx, timeout) is an error the handler can answer with a status code.
pub async fn start(
    upstream: &Upstream,
    request: &ChatRequest,
    timeouts: &TimeoutConfig,
    meter: Option<Meter>,
) -> Result<StreamPlan, UpstreamError> {
    let model = request.model.clone().unwrap_or_default();
    let requested_at = Instant::now();
    let first_byte = timeouts.first_byte();
    let opened = tokio::time::timeout_at(requested_at + first_byte, upstream.open(request))
        .await
        .unwrap_or(Err(UpstreamError::Timeout { kind: TimeoutKind::FirstByte, after: first_byte }));
    let events = match opened {
        Ok(events) => events,
        Err(error) => {
            // Refused before any answer (connect failure, 429, 5xx): it costs nothing, but it
            // is recorded.
            if let Some(meter) = meter {
                meter.finish(Usage::new(0, 0), true, Outcome::UpstreamError);
            }
            return Err(error);
        }
    };
    let prompt_bytes = prompt_bytes(request);
    let mut relay = RelayStream::new(
        events,
        model,
        requested_at,
        first_byte,
        timeouts.idle(),
        prompt_bytes,
        meter,
    );
    match relay.step().await {
        Step::Failed(error) => Err(error),
        first => Ok(StreamPlan { relay, first, prompt_bytes }),
    }
}

/// The SSE events sent to the client: every chunk as it arrives, then a usage chunk (unless the
/// upstream sent one) and `[DONE]`; or, on failure, an `error` event carrying the envelope.
pub fn sse_events(plan: StreamPlan) -> impl Stream<Item = Result<Event, Infallible>> + Send {
    let span = tracing::Span::current();
    let StreamPlan { relay, first, prompt_bytes } = plan;
    stream::unfold(Some((relay, Some(first))), move |state| {
        let span = span.clone();
        async move {
            let (mut relay, next) = state?;
            let step = match next {
                Some(step) => step,
                None => relay.step().instrument(span.clone()).await,
            };
            let events = match step {
                Step::Chunk(chunk) => {
                    return Some((vec![Event::default().data(chunk.json)], Some((relay, None))));
                }
                Step::Done => {
                    let mut events: Vec<Event> = relay
                        .usage_chunk(prompt_bytes)
                        .map(|json| Event::default().data(json))
                        .into_iter()
                        .collect();
                    events.push(Event::default().data(DONE_SENTINEL));
                    events
                }
                Step::Failed(error) => {
                    span.in_scope(|| tracing::warn!(%error, "upstream failed mid-answer"));
                    let envelope = ApiError::from(&error).envelope();
                    let data = serde_json::to_string(&envelope).unwrap_or_default();
                    vec![Event::default().event("error").data(data)]
                }
            };
            Some((events, None))
        }
    })
    .flat_map(stream::iter)
    .map(Ok)
}

/// Reads the whole upstream answer into one `chat.completion`.
pub async fn collect_completion(plan: StreamPlan) -> Result<ChatCompletion, UpstreamError> {
    let StreamPlan { mut relay, first, prompt_bytes } = plan;
    let mut text = String::new();
    let mut finish_reason = None;
    let mut step = first;
    loop {
        match step {
            Step::Chunk(chunk) => {
                text.push_str(&chunk.content);
                finish_reason = chunk.finish_reason.or(finish_reason);
            }
            Step::Done => break,
            Step::Failed(error) => return Err(error),
        }
        step = relay.step().await;
    }
    Ok(ChatCompletion {
        id: relay.id.clone().unwrap_or_else(|| format!("chatcmpl-{:016x}", rand::random::<u64>())),
        object: COMPLETION_OBJECT.into(),
        created: relay.created.unwrap_or_else(unix_now),
        model: relay.model.clone(),
        choices: vec![CompletionChoice {
            index: 0,
            message: ChatMessage::new(Role::Assistant, text),
            finish_reason,
        }],
        usage: relay.final_usage(prompt_bytes),
    })
}
