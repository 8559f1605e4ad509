//! The pass-through: reads an upstream event stream under the first-byte and idle limits,
//! rewrites each chunk only where policy requires (the model name), notes usage and streamed text,
//! and ends every stream in a defined way: usage chunk and `[DONE]`, or an `error` event. Whole
//! answers, for clients that want one, are read in one piece and rewritten the same way
//! (`complete`).
//!
//! Dropping a `RelayStream` drops the upstream response, which closes the upstream connection:
//! that is how a client disconnect cancels the upstream call at once when streams are not
//! resumable (`resume.grace_ms = 0`), and how a resumable stream's producer (`produce`) ends
//! one that was cancelled or that nobody followed for the grace period.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use confab_protocol::{
    CHUNK_OBJECT, COMPLETION_OBJECT, ChatCompletion, ChatCompletionChunk, ChatMessage, ChatRequest,
    CompletionChoice, DONE_SENTINEL, Role, Usage,
};
use futures_util::{FutureExt, Stream, StreamExt, stream};
use serde::Deserialize;
use serde::de::IgnoredAny;
use serde_json::Value;
use serde_json::value::RawValue;
use tokio::time::Instant;
use tracing::Instrument;

use crate::config::TimeoutConfig;
use crate::cut::CutWatch;
use crate::error::ApiError;
use crate::knowledge::grounding::{Citations, Source};
use crate::meter::{Charge, Meter};
use crate::metrics::OpenStream;
use crate::resume::{FrameKind, StopSignal, StreamWriter};
use crate::sse;
use crate::store::Outcome;
use crate::unix_now;
use confab_providers::estimate::{estimate_answer_tokens, prompt_bytes, prompt_token_ceiling};
use confab_providers::{Call, EventStream, Sent, TimeoutKind, UpstreamError, UpstreamEvent};

use crate::upstreams::{RetryBudget, Route, Target};

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
    /// An event the relay sends before this chunk: the knowledge sources chunk, ahead of the
    /// upstream's usage chunk (which stays the last before `[DONE]`, where clients look for it).
    pub before: Option<String>,
}

/// What the next read of the upstream gave.
#[derive(Debug)]
pub enum Step {
    Chunk(RelayedChunk),
    /// The upstream finished cleanly.
    Done,
    Failed(UpstreamError),
}

/// The time limits of one stream, and the cut that ends it at shutdown.
#[derive(Debug, Clone)]
pub struct Timing {
    /// When the upstream request was sent: the first-byte and stream limits count from it.
    pub requested_at: Instant,
    pub first_byte: Duration,
    pub idle: Duration,
    /// The whole stream, however steadily it streams.
    pub stream: Duration,
    pub cut: Option<CutWatch>,
}

impl Timing {
    pub fn new(timeouts: &TimeoutConfig, requested_at: Instant, cut: Option<CutWatch>) -> Self {
        Self {
            requested_at,
            first_byte: timeouts.first_byte(),
            idle: timeouts.idle(),
            stream: timeouts.stream(),
            cut,
        }
    }
}

/// An upstream stream under the relay's time limits and rewriting rules.
pub struct RelayStream {
    upstream: Option<EventStream>,
    model: String,
    first_byte_deadline: Instant,
    first_byte: Duration,
    idle: Duration,
    stream_deadline: Instant,
    stream: Duration,
    cut: Option<CutWatch>,
    started: bool,
    finished: bool,
    /// The usage the upstream reported, if any.
    usage: Option<Usage>,
    /// Whether a chunk with usage and no choices (the OpenAI usage chunk) was passed through.
    usage_chunk_sent: bool,
    /// Bytes of answer text streamed so far, and the chunks that carried some (for a usage
    /// estimate when none is reported).
    content_bytes: usize,
    content_chunks: u64,
    id: Option<String>,
    created: Option<u64>,
    /// The prompt's token ceiling (what an estimate charges for the prompt).
    prompt_ceiling: u64,
    /// Whether any chunk arrived from the upstream.
    received: bool,
    /// Settled when the stream ends, however it ends (see `Drop`).
    meter: Option<Meter>,
    /// `model` as a JSON string, made on the first chunk.
    model_json: Option<String>,
    /// Counts this stream in `confab_open_streams` while it lives.
    _open: Option<OpenStream>,
    /// The knowledge sources the answer was given, and which it cites (`knowledge::grounding`).
    citations: Option<Citations>,
}

impl std::fmt::Debug for RelayStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RelayStream").field("model", &self.model).finish_non_exhaustive()
    }
}

impl RelayStream {
    pub fn new(
        upstream: EventStream,
        model: String,
        timing: Timing,
        prompt_ceiling: u64,
        meter: Option<Meter>,
    ) -> Self {
        let Timing { requested_at, first_byte, idle, stream, cut } = timing;
        let open = meter.as_ref().map(|meter| meter.metrics().stream_opened());
        Self {
            upstream: Some(upstream),
            model,
            first_byte_deadline: requested_at + first_byte,
            first_byte,
            idle,
            stream_deadline: requested_at + stream,
            stream,
            cut,
            started: false,
            finished: false,
            usage: None,
            usage_chunk_sent: false,
            content_bytes: 0,
            content_chunks: 0,
            id: None,
            created: None,
            prompt_ceiling,
            received: false,
            meter,
            model_json: None,
            _open: open,
            citations: None,
        }
    }

    /// Reads the next upstream event. After `Done` or `Failed` the upstream connection is closed
    /// and every further call returns `Done`.
    pub async fn step(&mut self) -> Step {
        loop {
            let Some(upstream) = self.upstream.as_mut() else {
                return Step::Done;
            };
            let (mut deadline, mut kind, mut after) = if self.started {
                (Instant::now() + self.idle, TimeoutKind::Idle, self.idle)
            } else {
                (self.first_byte_deadline, TimeoutKind::FirstByte, self.first_byte)
            };
            if self.stream_deadline < deadline {
                (deadline, kind, after) = (self.stream_deadline, TimeoutKind::Stream, self.stream);
            }
            let next = tokio::time::timeout_at(deadline, upstream.next());
            let read = match self.cut.as_mut() {
                Some(cut) => tokio::select! {
                    biased;
                    () = cut.fired() => None,
                    read = next => Some(read),
                },
                None => Some(next.await),
            };
            let Some(read) = read else {
                self.upstream = None;
                self.settle(Outcome::Interrupted, false);
                return Step::Failed(UpstreamError::Cut);
            };
            let step = match read {
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
            if let Step::Chunk(_) = &step {
                self.received = true;
            } else {
                self.upstream = None;
            }
            self.meter_step(&step);
            return step;
        }
    }

    /// Meters `step`: the first text's arrival, or the settlement at the end.
    fn meter_step(&mut self, step: &Step) {
        match step {
            Step::Chunk(chunk) => {
                if !chunk.content.is_empty()
                    && let Some(meter) = self.meter.as_mut()
                {
                    meter.text_arrived();
                    meter.answered(&chunk.content);
                }
            }
            Step::Done => self.settle(Outcome::Completed, false),
            Step::Failed(error) => {
                if let Some(meter) = &self.meter {
                    meter.metrics().upstream_error(error);
                }
                // An error in place of the answer is a refusal, like an error status.
                let refused = matches!(error, UpstreamError::Reported);
                self.settle(Outcome::UpstreamError, refused);
            }
        }
    }

    /// Puts the stream under `meter` once its target has answered with `first` (read without
    /// a meter, so that a target given up on does not settle the request): from here on it
    /// counts as an open stream and settles the meter however it ends.
    fn attach(&mut self, meter: Meter, first: &Step) {
        self._open = Some(meter.metrics().stream_opened());
        self.meter = Some(meter);
        self.meter_step(first);
    }

    fn rewrite(&mut self, data: &str) -> Result<RelayedChunk, UpstreamError> {
        let read = match serde_json::from_str::<ChunkView<'_>>(data) {
            Ok(view) => self.rewrite_usual(data, view),
            Err(_) => None,
        };
        let read = match read {
            Some(read) => read,
            None => rewrite_any(data, &self.model)?,
        };
        let ChunkRead { json, content, finish_reason, usage, usage_only, id, created } = read;
        // The upstream's usage chunk comes after the whole answer: the sources it cited are
        // known, and named just before it.
        let before = match usage_only && usage.is_some() {
            true => self.take_sources_chunk(id.as_deref(), created),
            false => None,
        };
        if usage.is_some() {
            self.usage = usage;
            self.usage_chunk_sent |= usage_only;
        }
        self.finished |= finish_reason.is_some();
        if let Some(citations) = self.citations.as_mut() {
            citations.read(&content);
        }
        self.content_bytes += content.len();
        self.content_chunks += u64::from(!content.is_empty());
        if self.id.is_none() {
            self.id.clone_from(&id);
        }
        self.created = self.created.or(created);
        Ok(RelayedChunk { json, content, finish_reason, id, created, before })
    }

    /// The fast path, for a chunk of the usual shape: the fields the relay reads are borrowed
    /// from the text, and the chunk is passed on as it came with only the model's value
    /// replaced, instead of being parsed into a tree and encoded again (which cost about as much
    /// as the rest of the relay's work on a chunk). `None`: not the usual shape (no `model`, an
    /// `error`, a field of another type); the general path then decides.
    fn rewrite_usual(&mut self, data: &str, view: ChunkView<'_>) -> Option<ChunkRead> {
        if view.error.is_some() {
            return None;
        }
        let model_json = self.model_json.get_or_insert_with(|| {
            serde_json::to_string(&self.model).unwrap_or_else(|_| "\"\"".into())
        });
        let json = splice(data, view.model?.get(), model_json)?;

        let mut content = String::new();
        let mut finish_reason = None;
        let choices = view.choices.unwrap_or_default();
        for choice in &choices {
            if let Some(text) = choice.delta.as_ref().and_then(|d| d.content.as_deref()) {
                content.push_str(text);
            }
            if let Some(reason) = &choice.finish_reason {
                finish_reason = Some(reason.clone().into_owned());
            }
        }
        Some(ChunkRead {
            json,
            content,
            finish_reason,
            usage_only: choices.is_empty(),
            usage: view.usage,
            id: view.id.map(Cow::into_owned),
            created: view.created,
        })
    }

    /// Settles the meter with what was used: the upstream's usage, or an estimate of what was
    /// sent and streamed. Once the upstream took the request it costs at least its prompt, even
    /// if no event followed; only a refusal (`refused`) costs nothing.
    fn settle(&mut self, outcome: Outcome, refused: bool) {
        let Some(meter) = self.meter.take() else { return };
        let charge = if refused && !self.received { Charge::Nothing } else { self.charge() };
        meter.finish(charge, outcome);
    }

    /// What the stream so far is charged: the upstream's usage, or an estimate.
    fn charge(&self) -> Charge {
        match self.usage {
            Some(usage) => Charge::Reported(usage),
            None => Charge::Estimated {
                text_bytes: self.content_bytes,
                content_chunks: self.content_chunks,
            },
        }
    }

    /// The usage to report: the upstream's, or the estimate the meter charges (the prompt at
    /// its ceiling, the answer from what was streamed).
    pub fn final_usage(&self) -> Usage {
        self.usage.unwrap_or_else(|| {
            Usage::new(
                self.prompt_ceiling,
                estimate_answer_tokens(self.content_bytes, self.content_chunks),
            )
        })
    }

    /// The OpenAI usage chunk (`choices: []`), for streams whose upstream sent none of its own
    /// (it reported no usage, or reported it on a chunk that also had choices).
    /// The chunk naming the knowledge sources the answer used, if it had any and it was not
    /// sent yet (once per stream).
    fn take_sources_chunk(&mut self, id: Option<&str>, created: Option<u64>) -> Option<String> {
        let citations = self.citations.take()?;
        let id = id.or(self.id.as_deref()).unwrap_or_default();
        let created = created.or(self.created).unwrap_or_else(unix_now);
        citations.chunk(id, created, &self.model)
    }

    fn usage_chunk(&self) -> Option<String> {
        if self.usage_chunk_sent {
            return None;
        }
        let chunk = ChatCompletionChunk {
            id: self.id.clone().unwrap_or_default(),
            object: CHUNK_OBJECT.into(),
            created: self.created.unwrap_or_else(unix_now),
            model: self.model.clone(),
            choices: Vec::new(),
            usage: Some(self.final_usage()),
        };
        serde_json::to_string(&chunk).ok()
    }
}

/// What the relay reads from one upstream chunk, and the chunk as the client gets it.
struct ChunkRead {
    json: String,
    content: String,
    finish_reason: Option<String>,
    usage: Option<Usage>,
    /// The chunk has no choices: the OpenAI usage chunk.
    usage_only: bool,
    id: Option<String>,
    created: Option<u64>,
}

/// The fields of a `chat.completion.chunk` the relay reads, borrowed from its text.
#[derive(Deserialize)]
struct ChunkView<'a> {
    #[serde(borrow, default)]
    id: Option<Cow<'a, str>>,
    #[serde(default)]
    created: Option<u64>,
    #[serde(borrow, default)]
    model: Option<&'a RawValue>,
    #[serde(borrow, default)]
    choices: Option<Vec<ChoiceView<'a>>>,
    #[serde(default)]
    usage: Option<Usage>,
    #[serde(default)]
    error: Option<IgnoredAny>,
}

#[derive(Deserialize)]
struct ChoiceView<'a> {
    #[serde(borrow, default)]
    delta: Option<DeltaView<'a>>,
    #[serde(borrow, default)]
    finish_reason: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct DeltaView<'a> {
    #[serde(borrow, default)]
    content: Option<Cow<'a, str>>,
}

/// The general path, for any JSON object: parsed into a tree, the model set, encoded again.
/// Fields of unexpected types are ignored rather than refused, as before the fast path existed.
fn rewrite_any(data: &str, model: &str) -> Result<ChunkRead, UpstreamError> {
    let object = with_model(data, model, "chunk")?;
    let usage = reported_usage(&object);
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
    let usage_only = choices.is_none_or(|c| c.is_empty());
    let id = object.get("id").and_then(Value::as_str).map(str::to_owned);
    let created = object.get("created").and_then(Value::as_u64);
    let json = serde_json::to_string(&object)
        .map_err(|e| UpstreamError::Protocol(format!("cannot re-encode chunk: {e}")))?;
    Ok(ChunkRead { json, content, finish_reason, usage, usage_only, id, created })
}

/// The general paths' start: `text` (a chunk or an answer, `what`) as a JSON object that is not
/// an error report, with its model set to `model`.
fn with_model(
    text: &str,
    model: &str,
    what: &str,
) -> Result<serde_json::Map<String, Value>, UpstreamError> {
    let value: Value = serde_json::from_str(text)
        .map_err(|e| UpstreamError::Protocol(format!("{what} is not JSON: {e}")))?;
    let Value::Object(mut object) = value else {
        return Err(UpstreamError::Protocol(format!("{what} is not a JSON object")));
    };
    if object.contains_key("error") {
        return Err(UpstreamError::Reported);
    }
    object.insert("model".into(), Value::String(model.to_owned()));
    Ok(object)
}

/// The usage an object reports, if it reports one of the right shape.
fn reported_usage(object: &serde_json::Map<String, Value>) -> Option<Usage> {
    object.get("usage").and_then(|u| serde_json::from_value::<Usage>(u.clone()).ok())
}

impl Drop for RelayStream {
    /// The client went away before the end (a stop button, a closed tab): the upstream call is
    /// cancelled by dropping it, and what was generated so far is still settled and recorded.
    fn drop(&mut self) {
        if let Some(meter) = self.meter.take() {
            meter.finish(self.charge(), Outcome::Interrupted);
        }
    }
}

/// An upstream call that has produced its first event (or finished): what both response
/// shapes are built from.
#[derive(Debug)]
pub struct StreamPlan {
    relay: RelayStream,
    first: Step,
    /// The target that answers.
    pub target: Arc<Target>,
}

impl StreamPlan {
    /// Has the stream name the knowledge `sources` the answer used, in a chunk before its
    /// usage chunk (see `knowledge::grounding`).
    pub fn cite(&mut self, sources: Vec<Source>) {
        let mut citations = Citations::new(sources);
        if let Step::Chunk(chunk) = &self.first {
            citations.read(&chunk.content);
        }
        self.relay.citations = Some(citations);
    }
}

/// Where a call may go: a model's route, tried target by target within the retry budget.
#[derive(Debug, Clone, Copy)]
pub struct Routing<'a> {
    pub route: &'a Route,
    pub budget: &'a RetryBudget,
}

/// Whether a failure before any of the answer reached the client lets the call go on to the
/// next target: no connection, the connection closed before the first event, no first event in
/// time, 429, 5xx (529, overloaded, included).
fn falls_back(error: &UpstreamError) -> bool {
    matches!(
        error,
        UpstreamError::Connect
            | UpstreamError::Dropped
            | UpstreamError::Timeout { kind: TimeoutKind::Connect | TimeoutKind::FirstByte, .. }
            | UpstreamError::Status { status: 429 | 500..=599, .. }
    )
}

/// The calls of one request to its model's targets: each target in turn whose breaker lets it,
/// the next only after a failure that [`falls_back`] and only within the retry budget. Every
/// target's breaker hears how its call went. The request is asked of each target under its
/// own model name.
struct Attempts<'a> {
    routing: Routing<'a>,
    next: usize,
    calls: u32,
    failed: Option<UpstreamError>,
    /// The model of the last call, when it was given up on after the request was written
    /// (the provider may have billed its prompt); taken when the next call goes out.
    abandoned: Option<String>,
}

impl<'a> Attempts<'a> {
    fn new(routing: Routing<'a>) -> Self {
        Self { routing, next: 0, calls: 0, failed: None, abandoned: None }
    }

    /// The next target to call, with `request` set to its model; `None` when the call is over.
    fn next(&mut self, request: &mut ChatRequest) -> Option<Arc<Target>> {
        if self.failed.as_ref().is_some_and(|error| !falls_back(error)) {
            return None;
        }
        while let Some(target) = self.routing.route.targets.get(self.next) {
            self.next += 1;
            if !target.breaker.allow() {
                tracing::debug!(target = %target.label, "skipped: its breaker is open");
                continue;
            }
            if self.calls > 0 && !self.routing.budget.withdraw() {
                tracing::warn!(target = %target.label, "no fallback: the retry budget is spent");
                return None;
            }
            self.calls += 1;
            if request.model.as_deref() != Some(target.model.as_str()) {
                request.model = Some(target.model.clone());
            }
            return Some(Arc::clone(target));
        }
        None
    }

    /// `target` answered, its first byte `started.elapsed()` after the call.
    fn answered(target: &Target, started: Instant) {
        target.record(Ok(started.elapsed()));
    }

    /// `target` failed with `error` before answering; `written`: after the request was written
    /// to it.
    fn failed(&mut self, target: &Target, error: UpstreamError, written: bool) {
        if error != UpstreamError::Cut {
            target.record(Err(()));
            if falls_back(&error) {
                tracing::warn!(target = %target.label, %error, "upstream target failed before answering");
            }
        }
        self.abandoned = (written && !refused(&error)).then(|| target.model.clone());
        self.failed = Some(error);
    }

    /// Why the call failed: the last target's error, or that none could be called.
    fn error(self) -> UpstreamError {
        self.failed.unwrap_or(UpstreamError::Unavailable)
    }
}

/// Calls the model's targets (see [`Attempts`]) and waits for the first event, so that a
/// failure before the answer starts (refused, 429, 5xx, no first event in time, an error in
/// place of the first event) is an error the handler can answer with a status code, and one
/// that [`falls_back`] goes on to the next target: a 200 head is not yet an answer. The client
/// sees the model it asked for (`request.model` as it comes in), whichever target answers.
///
/// The meter joins the stream once a target has answered, so an abandoned call does not settle
/// it; a call given up on after the request was written is charged its prompt
/// ([`Meter::abandoned`]).
pub async fn start(
    routing: Routing<'_>,
    request: &mut ChatRequest,
    timeouts: &TimeoutConfig,
    mut meter: Option<Meter>,
    cut: Option<CutWatch>,
) -> Result<StreamPlan, UpstreamError> {
    let model = request.model.clone().unwrap_or_default();
    let first_byte = timeouts.first_byte();
    let mut cut_while_opening = cut.clone();
    let sent = meter.as_ref().map(|meter| meter.sent().clone());
    let request_id = meter.as_ref().map(|meter| meter.request_id().to_owned());
    let call = Call { request_id: request_id.as_deref(), sent: sent.as_ref() };
    let prompt_ceiling = prompt_token_ceiling(prompt_bytes(request), request.messages.len());
    let opening = async {
        let mut attempts = Attempts::new(routing);
        while let Some(target) = attempts.next(request) {
            if let (Some(model), Some(meter)) = (attempts.abandoned.take(), meter.as_mut()) {
                meter.abandoned(&model);
            }
            if let Some(sent) = &sent {
                sent.clear();
            }
            let requested_at = Instant::now();
            let opened = tokio::time::timeout_at(
                requested_at + first_byte,
                target.provider.open(request, call),
            )
            .await
            .unwrap_or(Err(UpstreamError::Timeout {
                kind: TimeoutKind::FirstByte,
                after: first_byte,
            }));
            let first = match opened {
                Ok(events) => {
                    let timing = Timing::new(timeouts, requested_at, cut.clone());
                    let mut relay =
                        RelayStream::new(events, model.clone(), timing, prompt_ceiling, None);
                    match relay.step().await {
                        Step::Failed(error) => Err(error),
                        first => Ok((relay, first)),
                    }
                }
                Err(error) => Err(error),
            };
            match first {
                Ok((relay, first)) => {
                    Attempts::answered(&target, requested_at);
                    return Ok((target, relay, first));
                }
                Err(error) => {
                    let written = sent.as_ref().is_some_and(Sent::is_set);
                    attempts.failed(&target, error, written);
                }
            }
        }
        Err(attempts.error())
    };
    let opened = match cut_while_opening.as_mut() {
        Some(cut) => tokio::select! {
            biased;
            () = cut.fired() => Err(UpstreamError::Cut),
            opened = opening => opened,
        },
        None => opening.await,
    };
    let (target, mut relay, first) = match opened {
        Ok(opened) => opened,
        Err(error) => {
            // Refused (no connection, an error status such as 429 or 5xx, an error in place of
            // the answer): it costs nothing, but it is recorded. Failed after the request was
            // written (out of time, cut off before the head, unreadable): the upstream may be
            // generating, so the prompt is charged.
            if let Some(meter) = meter {
                meter.metrics().upstream_error(&error);
                if error == UpstreamError::Cut {
                    meter.finish_unanswered(Outcome::Interrupted);
                } else if refused(&error) {
                    meter.finish(Charge::Nothing, Outcome::UpstreamError);
                } else {
                    meter.finish_unanswered(Outcome::UpstreamError);
                }
            }
            return Err(error);
        }
    };
    if let Some(mut meter) = meter {
        meter.routed(&target.upstream, &target.model);
        relay.attach(meter, &first);
    }
    Ok(StreamPlan { relay, first, target })
}

impl RelayStream {
    /// The next step if it is ready without waiting: the next event of the upstream read that
    /// gave the last one (or an end already known). `None` when it would have to wait; nothing
    /// is lost then, since `step` keeps nothing across its wait but the upstream stream, which
    /// keeps its own place.
    pub fn step_ready(&mut self) -> Option<Step> {
        self.step().now_or_never()
    }
}

/// The SSE body sent to the client, a batch at a time: every chunk as it arrives, then a usage
/// chunk (unless the upstream sent one) and `[DONE]`; or, on failure, an `error` event carrying
/// the envelope. A batch is every step ready at once (all that one upstream read delivered),
/// written as one buffer; an event never waits for the next read.
pub fn sse_events(plan: StreamPlan) -> impl Stream<Item = Bytes> + Send {
    let span = tracing::Span::current();
    let StreamPlan { relay, first, .. } = plan;
    stream::unfold(Some((relay, Some(first))), move |state| {
        let span = span.clone();
        async move {
            let (mut relay, next) = state?;
            let mut step = match next {
                Some(step) => step,
                None => relay.step().instrument(span.clone()).await,
            };
            let mut body = BytesMut::new();
            loop {
                let end = match step {
                    Step::Chunk(chunk) => {
                        if let Some(before) = &chunk.before {
                            sse::write_event(&mut body, FrameKind::Data, 0, before);
                        }
                        sse::write_event(&mut body, FrameKind::Data, 0, &chunk.json);
                        match span.in_scope(|| relay.step_ready()) {
                            Some(next) => {
                                step = next;
                                continue;
                            }
                            None => return Some((body.freeze(), Some((relay, None)))),
                        }
                    }
                    Step::Done => None,
                    Step::Failed(error) => Some(error),
                };
                for (kind, data) in span.in_scope(|| ending(&mut relay, end)) {
                    sse::write_event(&mut body, kind, 0, &data);
                }
                return Some((body.freeze(), None));
            }
        }
    })
}

/// The events that end a stream: the chunk naming the knowledge sources used (if it had any),
/// the usage chunk (unless the upstream sent one) and `[DONE]` when it ended cleanly (`failed` is `None`), or an `error` event carrying the envelope.
fn ending(relay: &mut RelayStream, failed: Option<UpstreamError>) -> Vec<(FrameKind, String)> {
    match failed {
        None => {
            let sources = relay.take_sources_chunk(None, None).map(|json| (FrameKind::Data, json));
            let usage = relay.usage_chunk().map(|json| (FrameKind::Data, json));
            let done = (FrameKind::Data, DONE_SENTINEL.to_owned());
            sources.into_iter().chain(usage).chain([done]).collect()
        }
        Some(error) => {
            tracing::warn!(%error, "upstream failed mid-answer");
            let envelope = ApiError::from(&error).envelope();
            vec![(FrameKind::Error, serde_json::to_string(&envelope).unwrap_or_default())]
        }
    }
}

/// Produces a resumable answer into its replay log (`resume`): every event as it arrives, then
/// the same ending as `sse_events`. Whoever follows the log sends the events on (and drives
/// this future, see `resume::Producers`); nobody following does not stop it, until `stop` says
/// the stream was cancelled or nobody followed it for the grace period. Then the upstream call is
/// dropped, which settles it as interrupted at what was generated (see `Drop`), and the log
/// ends with an `error` event saying why.
pub async fn produce(plan: StreamPlan, mut writer: Box<dyn StreamWriter>, mut stop: StopSignal) {
    let StreamPlan { mut relay, first, .. } = plan;
    let mut step = first;
    // The events ready at once, appended together (see `StreamWriter::append_all`).
    let mut batch = Vec::new();
    let ending = loop {
        let failed = match step {
            Step::Chunk(chunk) => {
                if let Some(before) = chunk.before {
                    batch.push((FrameKind::Data, before));
                }
                batch.push((FrameKind::Data, chunk.json));
                if let Some(next) = relay.step_ready() {
                    step = next;
                    continue;
                }
                writer.append_all(&mut batch);
                let next = tokio::select! {
                    biased;
                    stop = &mut stop => Err(stop),
                    step = relay.step() => Ok(step),
                };
                match next {
                    Ok(next) => {
                        step = next;
                        continue;
                    }
                    Err(stop) => {
                        tracing::info!(?stop, "stream stopped before its end");
                        break vec![(FrameKind::Error, stop.envelope())];
                    }
                }
            }
            Step::Done => None,
            Step::Failed(error) => Some(error),
        };
        break ending(&mut relay, failed);
    };
    // Gone (and settled) before a follower sees the end.
    drop(relay);
    batch.extend(ending);
    writer.append_all(&mut batch);
    writer.finish();
}

/// Answers a client that asked for no stream with one upstream call that does not stream either,
/// within `timeouts.answer_ms`: the upstream's `chat.completion` is passed on as it came, with
/// only its `model` replaced (and `usage` added if the upstream reported none). Reading one body
/// instead of some twenty events is what makes this path cheaper than collecting a stream.
///
/// A client that leaves before the answer arrives cancels the call (the future is dropped), and
/// since what the upstream generated until then is unknown, the request is charged its
/// reservation's worst case: the prompt and `max_tokens` of answer. So is an answer that fails
/// after the upstream took the request (out of time, cut off, unreadable).
pub async fn complete(
    routing: Routing<'_>,
    request: &mut ChatRequest,
    timeouts: &TimeoutConfig,
    meter: Option<Meter>,
    mut cut: Option<CutWatch>,
) -> Result<(String, Arc<Target>), UpstreamError> {
    let model = request.model.clone().unwrap_or_default();
    let model = model.as_str();
    let prompt_ceiling = prompt_token_ceiling(prompt_bytes(request), request.messages.len());
    let sent = meter.as_ref().map(|meter| meter.sent().clone());
    let request_id = meter.as_ref().map(|meter| meter.request_id().to_owned());
    let call = Call { request_id: request_id.as_deref(), sent: sent.as_ref() };
    let mut pending = PendingAnswer { meter };
    let limit = timeouts.answer();
    let answering = async {
        let mut attempts = Attempts::new(routing);
        while let Some(target) = attempts.next(request) {
            if let (Some(model), Some(meter)) = (attempts.abandoned.take(), pending.meter.as_mut())
            {
                meter.abandoned(&model);
            }
            if let Some(sent) = &sent {
                sent.clear();
            }
            let started = Instant::now();
            let answered = tokio::time::timeout(limit, target.provider.complete(request, call))
                .await
                .unwrap_or(Err(UpstreamError::Timeout { kind: TimeoutKind::Answer, after: limit }));
            match answered {
                Ok(body) => {
                    Attempts::answered(&target, started);
                    return Ok((target, body));
                }
                Err(error) => {
                    let written = sent.as_ref().is_some_and(Sent::is_set);
                    attempts.failed(&target, error, written);
                }
            }
        }
        Err(attempts.error())
    };
    let answered = match cut.as_mut() {
        Some(cut) => tokio::select! {
            biased;
            () = cut.fired() => Err(UpstreamError::Cut),
            answered = answering => answered,
        },
        None => answering.await,
    };
    if matches!(answered, Err(UpstreamError::Cut)) {
        // Settled by `PendingAnswer` as interrupted: the worst case once the request was sent.
        drop(pending);
        return Err(UpstreamError::Cut);
    }
    if let (Ok((target, _)), Some(meter)) = (&answered, pending.meter.as_mut()) {
        meter.routed(&target.upstream, &target.model);
    }
    let answer = answered.and_then(|(target, body)| {
        rewrite_completion(&body, model, prompt_ceiling).map(|answer| (answer, target))
    });
    let meter = pending.meter.take();
    match answer {
        Ok((answer, target)) => {
            if let Some(mut meter) = meter {
                if !answer.text.is_empty() {
                    meter.text_arrived();
                    meter.answered(&answer.text);
                }
                meter.finish(answer.charge, Outcome::Completed);
            }
            Ok((answer.json, target))
        }
        Err(error) => {
            // Refused (no connection, an error status, an error in place of the answer): no
            // cost. Failed after the upstream took the request (out of time, cut off, unreadable):
            // it has most likely generated, and been paid for, an answer nobody will see.
            if let Some(meter) = meter {
                meter.metrics().upstream_error(&error);
                let charge = if refused(&error) { Charge::Nothing } else { Charge::WorstCase };
                meter.finish(charge, Outcome::UpstreamError);
            }
            Err(error)
        }
    }
}

/// Whether an upstream failure is a refusal, which costs nothing: no connection, an error status,
/// an error in place of the answer.
fn refused(error: &UpstreamError) -> bool {
    matches!(
        error,
        UpstreamError::Connect
            | UpstreamError::Status { .. }
            | UpstreamError::Reported
            | UpstreamError::Timeout { kind: TimeoutKind::Connect, .. }
    )
}

/// The meter of a whole answer still awaited: dropped with it when the client leaves. What was
/// generated is unknown, so once the request was written it is charged its worst case.
struct PendingAnswer {
    meter: Option<Meter>,
}

impl Drop for PendingAnswer {
    fn drop(&mut self) {
        if let Some(meter) = self.meter.take() {
            let charge = if meter.sent().is_set() { Charge::WorstCase } else { Charge::Nothing };
            meter.finish(charge, Outcome::Interrupted);
        }
    }
}

/// A whole answer as the client gets it, and what the meter needs from it.
#[derive(Debug)]
struct Answer {
    json: String,
    /// The upstream's usage, or the relay's estimate when it reported none (which the answer
    /// then carries as its `usage`).
    charge: Charge,
    /// The text of its choices.
    text: String,
}

/// The fields of a `chat.completion` the relay reads, borrowed from its text.
#[derive(Deserialize)]
struct CompletionView<'a> {
    #[serde(borrow, default)]
    model: Option<&'a RawValue>,
    #[serde(borrow, default)]
    choices: Option<Vec<AnswerChoiceView<'a>>>,
    #[serde(default)]
    usage: Option<Usage>,
    #[serde(default)]
    error: Option<IgnoredAny>,
}

#[derive(Deserialize)]
struct AnswerChoiceView<'a> {
    /// A message has the shape of a delta, as far as the relay reads it.
    #[serde(borrow, default)]
    message: Option<DeltaView<'a>>,
}

/// The upstream's whole answer with the model replaced: read through borrowed fields and passed
/// on byte for byte but the model's value when it has the usual shape (as `rewrite_usual` does
/// for chunks), parsed into a tree and encoded again otherwise (no usage, fields of odd types).
fn rewrite_completion(
    body: &[u8],
    model: &str,
    prompt_ceiling: u64,
) -> Result<Answer, UpstreamError> {
    let text = std::str::from_utf8(body)
        .map_err(|_| UpstreamError::Protocol("answer is not UTF-8".into()))?;
    if let Ok(view) = serde_json::from_str::<CompletionView<'_>>(text)
        && view.error.is_none()
        && let (Some(raw_model), Some(choices), Some(usage)) =
            (view.model, &view.choices, view.usage)
        && let Ok(model_json) = serde_json::to_string(model)
        && let Some(json) = splice(text, raw_model.get(), &model_json)
    {
        let text = choices
            .iter()
            .filter_map(|choice| choice.message.as_ref().and_then(|m| m.content.as_deref()))
            .collect();
        return Ok(Answer { json, charge: Charge::Reported(usage), text });
    }

    let mut object = with_model(text, model, "answer")?;
    let choices = object
        .get("choices")
        .and_then(Value::as_array)
        .ok_or_else(|| UpstreamError::Protocol("answer has no choices".into()))?;
    let text: String = choices
        .iter()
        .filter_map(|choice| choice.pointer("/message/content").and_then(Value::as_str))
        .collect();
    let content_bytes = text.len();
    let charge = match reported_usage(&object) {
        Some(usage) => Charge::Reported(usage),
        None => {
            let usage = Usage::new(prompt_ceiling, estimate_answer_tokens(content_bytes, 0));
            let usage = serde_json::to_value(usage)
                .map_err(|e| UpstreamError::Protocol(format!("cannot encode usage: {e}")))?;
            object.insert("usage".into(), usage);
            Charge::Estimated { text_bytes: content_bytes, content_chunks: 0 }
        }
    };
    let json = serde_json::to_string(&object)
        .map_err(|e| UpstreamError::Protocol(format!("cannot re-encode answer: {e}")))?;
    Ok(Answer { json, charge, text })
}

/// `text` with `value` replaced by `replacement`. `value` is a value borrowed from `text` by the
/// parser, so where it sits is where the replacement goes; `None` if it is not a slice of `text`.
fn splice(text: &str, value: &str, replacement: &str) -> Option<String> {
    let start = (value.as_ptr() as usize).checked_sub(text.as_ptr() as usize)?;
    let end = start.checked_add(value.len())?;
    if text.get(start..end) != Some(value) {
        return None;
    }
    let mut json = String::with_capacity(text.len() + replacement.len());
    json.push_str(&text[..start]);
    json.push_str(replacement);
    json.push_str(&text[end..]);
    Some(json)
}

/// Reads the whole upstream stream into one `chat.completion` (upstreams that only stream: the
/// demo).
pub async fn collect_completion(plan: StreamPlan) -> Result<ChatCompletion, UpstreamError> {
    let StreamPlan { mut relay, first, .. } = plan;
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
        usage: relay.final_usage(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn relay() -> RelayStream {
        let minute = Duration::from_secs(60);
        let upstream: EventStream = Box::pin(stream::empty());
        let timing = Timing {
            requested_at: Instant::now(),
            first_byte: minute,
            idle: minute,
            stream: minute,
            cut: None,
        };
        RelayStream::new(upstream, "site \"model\"".into(), timing, 0, None)
    }

    /// The chunk as rewritten by the relay (fast path where it applies) and by the general path
    /// alone must say the same thing.
    fn assert_both_paths_agree(data: &str) -> RelayedChunk {
        let chunk = relay().rewrite(data).unwrap();
        let general = rewrite_any(data, "site \"model\"").unwrap();
        let (fast, slow): (Value, Value) = (
            serde_json::from_str(&chunk.json).unwrap(),
            serde_json::from_str(&general.json).unwrap(),
        );
        assert_eq!(fast, slow, "{data}");
        assert_eq!(fast["model"], "site \"model\"");
        assert_eq!(chunk.content, general.content);
        assert_eq!(chunk.finish_reason, general.finish_reason);
        assert_eq!((chunk.id.clone(), chunk.created), (general.id, general.created));
        chunk
    }

    #[test]
    fn a_usual_chunk_keeps_every_byte_but_the_model() {
        let data = r#"{"id":"c1","object":"chat.completion.chunk","created":7,"model":"gpt-\"x\"","system_fingerprint":"fp","choices":[{"index":0,"delta":{"content":"a \"b\" \u00e9\n"},"logprobs":null,"finish_reason":null}]}"#;
        let chunk = assert_both_paths_agree(data);
        assert_eq!(chunk.content, "a \"b\" é\n");
        assert_eq!(chunk.json, data.replace(r#""gpt-\"x\"""#, r#""site \"model\"""#));
    }

    #[test]
    fn odd_chunks_are_read_the_same_on_either_path() {
        for data in [
            // No model at all, a model of another type, extra spacing.
            r#"{"id":"c1","choices":[{"delta":{"content":"x"}}]}"#,
            r#"{ "model" : null , "choices" : [ { "delta" : { "content" : "x" } , "finish_reason" : "stop" } ] }"#,
            r#"{"model":{"nested":["m"]},"choices":[]}"#,
            // A usage chunk, a finish without content, several choices, fields of odd types.
            r#"{"id":"c2","model":"m","choices":[],"usage":{"prompt_tokens":3,"completion_tokens":4,"total_tokens":7}}"#,
            r#"{"model":"m","choices":[{"delta":{},"finish_reason":"length"}]}"#,
            r#"{"model":"m","choices":[{"delta":{"content":"a"}},{"delta":{"content":"b"}}]}"#,
            r#"{"model":"m","created":"yesterday","id":5,"choices":[{"delta":{"content":7}}]}"#,
            r#"{"model":"m","usage":"none","choices":null}"#,
            // A duplicated field: the general path decides (the last value wins).
            r#"{"model":"a","model":"b","choices":[]}"#,
        ] {
            assert_both_paths_agree(data);
        }
    }

    #[test]
    fn errors_and_non_objects_are_refused_on_either_path() {
        for data in [r#"{"model":"m","error":{"message":"no"}}"#, r#"{"error":null}"#] {
            assert_eq!(relay().rewrite(data).unwrap_err(), UpstreamError::Reported, "{data}");
        }
        for data in ["[1]", "\"text\"", "{\"model\":", ""] {
            assert!(matches!(relay().rewrite(data), Err(UpstreamError::Protocol(_))), "{data}");
        }
    }

    #[test]
    fn a_usual_answer_keeps_every_byte_but_the_model() {
        let body = r#"{"id":"c1","object":"chat.completion","created":7,"model":"gpt-\"x\"","choices":[{"index":0,"message":{"role":"assistant","content":"Hi \u00e9","tool_calls":[]},"finish_reason":"stop"}],"usage":{"prompt_tokens":3,"completion_tokens":2,"total_tokens":5},"service_tier":"default"}"#;
        let answer = rewrite_completion(body.as_bytes(), "site \"model\"", 0).unwrap();
        assert_eq!(answer.json, body.replace(r#""gpt-\"x\"""#, r#""site \"model\"""#));
        assert_eq!(
            (answer.charge, answer.text.as_str()),
            (Charge::Reported(Usage::new(3, 2)), "Hi é")
        );
    }

    #[test]
    fn an_odd_answer_gets_the_model_and_an_estimated_usage() {
        // No model and no usage: both are added. A prompt ceiling of 8 tokens, 9 bytes of answer.
        let body =
            r#"{"choices":[{"message":{"content":"nine byte"}},{"message":{"content":null}}]}"#;
        let answer = rewrite_completion(body.as_bytes(), "m", 8).unwrap();
        let json: Value = serde_json::from_str(&answer.json).unwrap();
        assert_eq!(json["model"], "m");
        let usage =
            serde_json::json!({"prompt_tokens": 8, "completion_tokens": 3, "total_tokens": 11});
        assert_eq!(json["usage"], usage);
        assert_eq!(json["choices"][0]["message"]["content"], "nine byte");
        let estimated = Charge::Estimated { text_bytes: 9, content_chunks: 0 };
        assert_eq!((answer.charge, answer.text.as_str()), (estimated, "nine byte"));
        // Usage of an odd type is not trusted either.
        let body = r#"{"model":"x","choices":[],"usage":"lots"}"#;
        let answer = rewrite_completion(body.as_bytes(), "m", 0).unwrap();
        let estimated = Charge::Estimated { text_bytes: 0, content_chunks: 0 };
        assert_eq!((answer.charge, answer.text.as_str()), (estimated, ""));
    }

    #[test]
    fn answers_that_are_not_completions_are_refused() {
        let bodies: [&[u8]; 6] =
            [b"\xff\xfe", b"", b"null", b"[]", br#"{"model":"m"}"#, br#"{"choices":{}}"#];
        for body in bodies {
            let refused = rewrite_completion(body, "m", 0).unwrap_err();
            assert!(matches!(refused, UpstreamError::Protocol(_)), "{body:?}: {refused:?}");
        }
        let refused = rewrite_completion(br#"{"choices":[],"error":{}}"#, "m", 0).unwrap_err();
        assert_eq!(refused, UpstreamError::Reported);
    }

    #[test]
    fn the_usage_chunk_and_usage_on_a_content_chunk_are_told_apart() {
        let mut relay = relay();
        relay.rewrite(r#"{"model":"m","choices":[{"delta":{"content":"hi"}}],"usage":{"prompt_tokens":1,"completion_tokens":2,"total_tokens":3}}"#).unwrap();
        assert_eq!(relay.usage, Some(Usage::new(1, 2)));
        assert!(!relay.usage_chunk_sent);
        relay.rewrite(r#"{"model":"m","choices":[],"usage":{"prompt_tokens":1,"completion_tokens":2,"total_tokens":3}}"#).unwrap();
        assert!(relay.usage_chunk_sent);
        assert_eq!(relay.content_bytes, 2);
    }
}
