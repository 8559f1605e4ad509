//! The pass-through: reads an upstream event stream under the first-byte and idle limits,
//! rewrites each chunk only where policy requires (the model name), notes usage and streamed text,
//! and ends every stream in a defined way: usage chunk and `[DONE]`, or an `error` event.
//!
//! Dropping a `RelayStream` drops the upstream response, which closes the upstream connection:
//! that is how a client disconnect cancels the upstream call at once.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::response::sse::Event;
use confab_protocol::{
    CHUNK_OBJECT, COMPLETION_OBJECT, ChatCompletion, ChatCompletionChunk, ChatMessage,
    CompletionChoice, DONE_SENTINEL, Role, Usage,
};
use futures_util::{Stream, StreamExt, stream};
use serde_json::Value;
use tokio::time::Instant;

use crate::upstream::{EventStream, TimeoutKind, UpstreamError, UpstreamEvent};

/// Rough token count for text whose usage the upstream did not report: about four bytes per
/// token for English text, which is what tokenizers of the GPT family average.
pub fn estimate_tokens(bytes: usize) -> u64 {
    (bytes as u64).div_ceil(4)
}

/// One upstream chunk after rewriting.
#[derive(Debug, Clone)]
pub struct RelayedChunk {
    /// The chunk as the client receives it.
    pub json: String,
    /// The text this chunk adds to the answer.
    pub content: String,
    pub usage: Option<Usage>,
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
    pub usage: Option<Usage>,
    /// Bytes of answer text streamed so far (for a usage estimate when none is reported).
    pub content_bytes: usize,
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
            content_bytes: 0,
        }
    }

    /// Reads the next upstream event. After `Done` or `Failed` the upstream connection is closed
    /// and every further call returns `Done`.
    pub async fn step(&mut self) -> Step {
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
        if !matches!(step, Step::Chunk(_)) {
            self.upstream = None;
        }
        step
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
        let mut content = String::new();
        let mut finish_reason = None;
        if let Some(choices) = object.get("choices").and_then(Value::as_array) {
            for choice in choices {
                if let Some(text) = choice.pointer("/delta/content").and_then(Value::as_str) {
                    content.push_str(text);
                }
                if let Some(reason) = choice.get("finish_reason").and_then(Value::as_str) {
                    finish_reason = Some(reason.to_owned());
                }
            }
        }
        let id = object.get("id").and_then(Value::as_str).map(str::to_owned);
        let created = object.get("created").and_then(Value::as_u64);
        let json = serde_json::to_string(&value)
            .map_err(|e| UpstreamError::Protocol(format!("cannot re-encode chunk: {e}")))?;
        if usage.is_some() {
            self.usage = usage;
        }
        self.finished |= finish_reason.is_some();
        self.content_bytes += content.len();
        Ok(RelayedChunk { json, content, usage, finish_reason, id, created })
    }

    /// The usage to report: the upstream's, or an estimate from what was sent and streamed.
    pub fn final_usage(&self, prompt_bytes: usize) -> Usage {
        self.usage.unwrap_or_else(|| {
            Usage::new(estimate_tokens(prompt_bytes), estimate_tokens(self.content_bytes))
        })
    }
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or_default()
}

/// Everything the streaming response needs once the first upstream step is known.
#[derive(Debug)]
pub struct StreamPlan {
    pub relay: RelayStream,
    pub first: Step,
    pub prompt_bytes: usize,
}

/// The SSE events sent to the client: every chunk as it arrives, then a usage chunk (the
/// upstream's, or an estimate if it sent none) and `[DONE]`; or, on failure, an `error` event.
pub fn sse_events(plan: StreamPlan) -> impl Stream<Item = Result<Event, Infallible>> + Send {
    struct State {
        relay: RelayStream,
        pending: VecDeque<Event>,
        next: Option<Step>,
        prompt_bytes: usize,
        last_id: String,
        last_created: u64,
        ended: bool,
    }
    let state = State {
        relay: plan.relay,
        pending: VecDeque::new(),
        next: Some(plan.first),
        prompt_bytes: plan.prompt_bytes,
        last_id: String::new(),
        last_created: 0,
        ended: false,
    };
    stream::unfold(state, |mut s| async move {
        while s.pending.is_empty() && !s.ended {
            let step = match s.next.take() {
                Some(step) => step,
                None => s.relay.step().await,
            };
            match step {
                Step::Chunk(chunk) => {
                    if let Some(id) = chunk.id {
                        s.last_id = id;
                    }
                    s.last_created = chunk.created.unwrap_or(s.last_created);
                    s.pending.push_back(Event::default().data(chunk.json));
                }
                Step::Done => {
                    if s.relay.usage.is_none() {
                        let usage = s.relay.final_usage(s.prompt_bytes);
                        let chunk = ChatCompletionChunk {
                            id: s.last_id.clone(),
                            object: CHUNK_OBJECT.into(),
                            created: if s.last_created == 0 { unix_now() } else { s.last_created },
                            model: s.relay.model.clone(),
                            choices: Vec::new(),
                            usage: Some(usage),
                        };
                        if let Ok(json) = serde_json::to_string(&chunk) {
                            s.pending.push_back(Event::default().data(json));
                        }
                    }
                    s.pending.push_back(Event::default().data(DONE_SENTINEL));
                    s.ended = true;
                }
                Step::Failed(error) => {
                    tracing::warn!(error = %error, "upstream failed mid-stream");
                    let envelope = error.to_api_error().envelope();
                    let data = serde_json::to_string(&envelope).unwrap_or_default();
                    s.pending.push_back(Event::default().event("error").data(data));
                    s.ended = true;
                }
            }
        }
        let event = s.pending.pop_front()?;
        Some((Ok(event), s))
    })
}

/// Reads the whole upstream answer into one `chat.completion`.
pub async fn collect_completion(plan: StreamPlan) -> Result<ChatCompletion, UpstreamError> {
    let StreamPlan { mut relay, first, prompt_bytes } = plan;
    let mut text = String::new();
    let mut finish_reason = None;
    let mut id = None;
    let mut created = None;
    let mut step = first;
    loop {
        match step {
            Step::Chunk(chunk) => {
                text.push_str(&chunk.content);
                finish_reason = chunk.finish_reason.or(finish_reason);
                id = id.or(chunk.id);
                created = created.or(chunk.created);
            }
            Step::Done => break,
            Step::Failed(error) => return Err(error),
        }
        step = relay.step().await;
    }
    Ok(ChatCompletion {
        id: id.unwrap_or_else(|| format!("chatcmpl-{:016x}", rand::random::<u64>())),
        object: COMPLETION_OBJECT.into(),
        created: created.unwrap_or_else(unix_now),
        model: relay.model.clone(),
        choices: vec![CompletionChoice {
            index: 0,
            message: ChatMessage::new(Role::Assistant, text),
            finish_reason,
        }],
        usage: relay.final_usage(prompt_bytes),
    })
}
