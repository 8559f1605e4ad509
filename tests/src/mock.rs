//! A scriptable mock of an OpenAI-compatible upstream, served by axum on `127.0.0.1:0`. It also
//! answers Gemini's `/v1beta/models/{model}:generateContent` and `:streamGenerateContent`, with
//! scripts of `Step::Raw` Gemini responses, and Anthropic's `POST /v1/messages` (at
//! [`MockUpstream::root_url`]), with bodies the test writes itself ([`Step::Bytes`]).
//!
//! Each test queues the replies the mock gives, in order; the mock records every request it
//! receives (headers that matter and the JSON body) and reports when a client hangs up on a
//! stream before it was finished.
//!
//! It also serves OpenAI's `POST /v1/embeddings` with a model of meaning small enough to read:
//! each dimension is one group of [`EMBEDDING_CONCEPTS`], and a text's vector counts its words
//! in each group, so words that share no letters ("zorblax", "quimper") can mean the same.
//! Embedding calls are recorded apart from chat calls ([`MockUpstream::embedding_requests`]),
//! and can be made to fail or to be slow.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use bytes::Bytes;
use futures_util::stream;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::{Notify, mpsc, oneshot};

/// The model name the mock reports in its chunks (the relay rewrites it to the site's model).
pub const MOCK_MODEL_NAME: &str = "mock-model-2026-01-01";

/// One step of a scripted stream.
#[derive(Debug, Clone)]
pub enum Step {
    /// A chunk whose delta adds this text.
    Content(&'static str),
    /// A chunk with `finish_reason`.
    Finish(&'static str),
    /// The usage chunk (`choices: []`).
    Usage { prompt: u64, completion: u64 },
    /// A raw `data:` payload, sent as is.
    Raw(&'static str),
    /// Bytes sent as they are (whole SSE events of another API, `event:` lines included); for a
    /// request without `stream: true`, like `Raw`, the whole body.
    Bytes(String),
    /// `data: [DONE]`.
    Done,
    /// Wait this long before the next step.
    Pause(Duration),
    /// Wait until the test calls `MockUpstream::release`.
    WaitForRelease,
    /// Wait until the test calls `MockUpstream::open_gate` (which lets every waiting stream,
    /// and every later one, go on).
    WaitForGate,
    /// Abort the connection (an error in the body: the client sees an incomplete response).
    Drop,
    /// Never send anything again, keeping the connection open.
    Hang,
    /// Send a content chunk every interval, forever.
    Endless(Duration),
    /// Send 64 KiB content chunks as fast as the client takes them, forever.
    Flood,
}

/// How the mock answers one request.
#[derive(Debug, Clone)]
pub enum Reply {
    /// 200 `text/event-stream` following the steps. A request without `stream: true` gets what
    /// an OpenAI server would answer it instead: one `chat.completion` with the text, finish
    /// reason and usage of the steps, sent once the steps up to `Done` (or the last) have run;
    /// `Raw` is then the whole body sent instead, and `Flood` an answer that never ends.
    Stream(Vec<Step>),
    /// An error status with a body (and optionally `Retry-After`).
    Status { status: u16, retry_after: Option<u64>, body: String },
    /// Accept the connection and never answer.
    Hang,
}

impl Reply {
    /// A complete, well-formed answer: the words, a finish chunk, usage and `[DONE]`.
    pub fn answer(words: &[&'static str], usage: (u64, u64)) -> Self {
        let mut steps: Vec<Step> = words.iter().map(|w| Step::Content(w)).collect();
        steps.push(Step::Finish("stop"));
        steps.push(Step::Usage { prompt: usage.0, completion: usage.1 });
        steps.push(Step::Done);
        Self::Stream(steps)
    }
}

/// A request as the mock received it.
#[derive(Debug, Clone)]
pub struct RecordedRequest {
    pub authorization: Option<String>,
    /// Anthropic's key header, `x-api-key`.
    pub api_key: Option<String>,
    pub anthropic_version: Option<String>,
    pub body: Value,
    /// The body's bytes as they arrived (for what must be passed on byte for byte).
    pub raw_body: Bytes,
    /// The path and query, as the request line had them (`/v1/chat/completions`,
    /// `/v1/messages`, `/v1beta/models/m:generateContent`).
    pub path: String,
    pub headers: HeaderMap,
}

/// The mock embedding model's dimensions: words of one group mean the same.
pub const EMBEDDING_CONCEPTS: &[&[&str]] = &[
    &["zorblax", "quimper", "flonk"],
    &["vendel", "trask", "morrow"],
    &["kayak", "kayaks", "canoe", "paddle"],
    &["refund", "refunds", "money", "cash"],
    &["ship", "ships", "shipping", "delivery", "parcel"],
    &["warehouse", "depot", "alderbank"],
];

/// How the mock answers embeddings calls.
#[derive(Debug, Clone, Copy, Default)]
pub struct EmbeddingsBehaviour {
    /// Answer this status instead of vectors, with an error body that quotes the
    /// `Authorization` header it received (as some servers quote a wrong key).
    pub fail_status: Option<u16>,
    /// Answer 200 with a body that is no embeddings list and quotes the `Authorization` header.
    pub malformed: bool,
    /// Wait this long before answering.
    pub delay: Duration,
    /// The value of every text's last dimension: above 0, every two texts are a little alike,
    /// as with a real model (a greeting and a help page at a cosine of about 0.2).
    pub baseline: f32,
}

/// The mock model's vector of `text` (see [`EMBEDDING_CONCEPTS`]), its last dimension
/// `baseline` (see [`EmbeddingsBehaviour::baseline`]).
pub fn mock_embedding(text: &str, baseline: f32) -> Vec<f32> {
    let mut vector = vec![0.0; EMBEDDING_CONCEPTS.len() + 1];
    vector[EMBEDDING_CONCEPTS.len()] = baseline;
    for word in text.split(|c: char| !c.is_alphanumeric()).map(str::to_lowercase) {
        for (dimension, group) in EMBEDDING_CONCEPTS.iter().enumerate() {
            if group.contains(&word.as_str()) {
                vector[dimension] += 1.0;
            }
        }
    }
    vector
}

#[derive(Debug)]
struct MockState {
    replies: Mutex<VecDeque<Reply>>,
    requests: Mutex<Vec<RecordedRequest>>,
    embedding_requests: Mutex<Vec<RecordedRequest>>,
    embeddings: Mutex<EmbeddingsBehaviour>,
    release: Notify,
    gate: tokio::sync::watch::Sender<bool>,
    received: Notify,
    hangups: mpsc::UnboundedSender<()>,
}

/// The running mock; stops when dropped.
#[derive(Debug)]
pub struct MockUpstream {
    /// `http://127.0.0.1:PORT/v1`
    pub base_url: String,
    state: Arc<MockState>,
    hangups: tokio::sync::Mutex<mpsc::UnboundedReceiver<()>>,
    _shutdown: oneshot::Sender<()>,
}

impl MockUpstream {
    pub async fn start() -> Self {
        let (hangup_tx, hangup_rx) = mpsc::unbounded_channel();
        let state = Arc::new(MockState {
            replies: Mutex::new(VecDeque::new()),
            requests: Mutex::new(Vec::new()),
            embedding_requests: Mutex::new(Vec::new()),
            embeddings: Mutex::new(EmbeddingsBehaviour::default()),
            release: Notify::new(),
            gate: tokio::sync::watch::channel(false).0,
            received: Notify::new(),
            hangups: hangup_tx,
        });
        let app = Router::new()
            .route("/v1/chat/completions", post(chat))
            .route("/v1beta/models/{call}", post(chat))
            .route("/v1/messages", post(chat))
            .route("/v1/embeddings", post(embeddings))
            .with_state(Arc::clone(&state));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (shutdown_tx, shutdown_rx) = oneshot::channel::<()>();
        tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = shutdown_rx.await;
                })
                .await
                .unwrap();
        });
        Self {
            base_url: format!("http://{addr}/v1"),
            state,
            hangups: tokio::sync::Mutex::new(hangup_rx),
            _shutdown: shutdown_tx,
        }
    }

    /// `http://127.0.0.1:PORT`: the API root, for APIs whose paths start with `/v1` themselves
    /// (Anthropic's).
    pub fn root_url(&self) -> String {
        self.base_url.trim_end_matches("/v1").to_owned()
    }

    /// Queues the reply to the next request.
    pub fn push(&self, reply: Reply) -> &Self {
        self.state.replies.lock().unwrap().push_back(reply);
        self
    }

    /// Lets a stream waiting at `Step::WaitForRelease` go on.
    pub fn release(&self) {
        self.state.release.notify_one();
    }

    /// Opens the gate of `Step::WaitForGate`, for good.
    pub fn open_gate(&self) {
        self.state.gate.send_replace(true);
    }

    /// Waits (bounded) until the mock has received a request (one not yet waited for).
    pub async fn request_received(&self) {
        tokio::time::timeout(crate::WAIT, self.state.received.notified())
            .await
            .expect("no upstream request arrived in time");
    }

    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.state.requests.lock().unwrap().clone()
    }

    /// The embeddings calls received so far (not in [`MockUpstream::requests`]).
    pub fn embedding_requests(&self) -> Vec<RecordedRequest> {
        self.state.embedding_requests.lock().unwrap().clone()
    }

    /// How the next embeddings calls are answered.
    pub fn set_embeddings(&self, behaviour: EmbeddingsBehaviour) {
        *self.state.embeddings.lock().unwrap() = behaviour;
    }

    /// The body of the only request received so far.
    pub fn only_request(&self) -> Value {
        let requests = self.requests();
        assert_eq!(requests.len(), 1, "expected exactly one upstream request");
        requests[0].body.clone()
    }

    /// Waits (bounded) until a client hangs up on an unfinished stream.
    pub async fn hangup(&self) {
        let mut hangups = self.hangups.lock().await;
        tokio::time::timeout(crate::WAIT, hangups.recv())
            .await
            .expect("the upstream connection was not closed in time")
            .expect("the mock stopped");
    }
}

/// OpenAI's `/v1/chat/completions`, Anthropic's `/v1/messages`, and Gemini's
/// `models/{model}:streamGenerateContent?alt=sse` (a stream, whose `Step::Raw`s are its events)
/// and `models/{model}:generateContent` (a whole answer, the `Step::Raw` its body).
async fn chat(
    State(state): State<Arc<MockState>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let raw_body = body.clone();
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let wants_stream =
        body["stream"] == json!(true) || uri.path().ends_with(":streamGenerateContent");
    let header = |name| headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let authorization = header(header::AUTHORIZATION.as_str());
    let api_key = header("x-api-key");
    let anthropic_version = header("anthropic-version");
    let path = uri.path_and_query().map_or_else(|| uri.path().to_owned(), ToString::to_string);
    state.requests.lock().unwrap().push(RecordedRequest {
        path,
        authorization,
        api_key,
        anthropic_version,
        body,
        raw_body,
        headers,
    });
    state.received.notify_one();
    let reply = state.replies.lock().unwrap().pop_front();
    match reply {
        None => (StatusCode::INTERNAL_SERVER_ERROR, "no reply queued").into_response(),
        Some(Reply::Hang) => std::future::pending().await,
        Some(Reply::Status { status, retry_after, body }) => {
            let mut response = (
                StatusCode::from_u16(status).unwrap(),
                [(header::CONTENT_TYPE, "application/json")],
                body,
            )
                .into_response();
            if let Some(seconds) = retry_after {
                response.headers_mut().insert(header::RETRY_AFTER, seconds.into());
            }
            response
        }
        Some(Reply::Stream(steps)) if wants_stream => {
            let body = Body::from_stream(scripted_stream(state, steps));
            ([(header::CONTENT_TYPE, "text/event-stream")], body).into_response()
        }
        Some(Reply::Stream(steps)) => {
            let body = Body::from_stream(scripted_answer(state, steps));
            ([(header::CONTENT_TYPE, "application/json")], body).into_response()
        }
    }
}

/// OpenAI's `/v1/embeddings`, by the mock model of meaning (see [`mock_embedding`]).
async fn embeddings(
    State(state): State<Arc<MockState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let raw_body = body.clone();
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let authorization =
        headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).map(str::to_owned);
    state.embedding_requests.lock().unwrap().push(RecordedRequest {
        path: "/v1/embeddings".into(),
        authorization,
        api_key: None,
        anthropic_version: None,
        body: body.clone(),
        raw_body,
        headers,
    });
    let behaviour = *state.embeddings.lock().unwrap();
    tokio::time::sleep(behaviour.delay).await;
    let sent_key =
        state.embedding_requests.lock().unwrap().last().and_then(|r| r.authorization.clone());
    if let Some(status) = behaviour.fail_status {
        let message = format!("the mock model is down; you sent {sent_key:?}");
        let error = json!({"error": {"message": message, "type": "server_error"}});
        return (StatusCode::from_u16(status).unwrap(), axum::Json(error)).into_response();
    }
    if behaviour.malformed {
        return axum::Json(json!({"data": format!("key {sent_key:?}")})).into_response();
    }
    let inputs: Vec<String> = match &body["input"] {
        Value::String(text) => vec![text.clone()],
        Value::Array(texts) => texts.iter().filter_map(|t| t.as_str().map(str::to_owned)).collect(),
        _ => return (StatusCode::BAD_REQUEST, "no input").into_response(),
    };
    let data: Vec<Value> = inputs
        .iter()
        .enumerate()
        .map(|(index, text)| {
            let embedding = mock_embedding(text, behaviour.baseline);
            json!({"object": "embedding", "index": index, "embedding": embedding})
        })
        .collect();
    axum::Json(json!({"object": "list", "data": data, "model": body["model"], "usage": {"prompt_tokens": 1, "total_tokens": 1}}))
        .into_response()
}

/// Tells the test when the stream is dropped before it ran to its end.
struct HangupGuard {
    state: Arc<MockState>,
    finished: bool,
}

impl Drop for HangupGuard {
    fn drop(&mut self) {
        if !self.finished {
            let _ = self.state.hangups.send(());
        }
    }
}

fn chunk(choices: Value, usage: Option<Value>) -> Bytes {
    let mut chunk = json!({
        "id": "chatcmpl-mock",
        "object": "chat.completion.chunk",
        "created": 1_700_000_000u64,
        "model": MOCK_MODEL_NAME,
        "choices": choices,
    });
    if let Some(usage) = usage {
        chunk["usage"] = usage;
    }
    Bytes::from(format!("data: {chunk}\n\n"))
}

/// The state of a whole answer being sent.
enum Answer {
    Script(HangupGuard, VecDeque<Step>),
    Flooding(HangupGuard),
    Sent,
}

/// The body of a whole answer (a request without `stream: true`) following the steps.
fn scripted_answer(
    state: Arc<MockState>,
    steps: Vec<Step>,
) -> impl futures_util::Stream<Item = Result<Bytes, std::io::Error>> + Send {
    let guard = HangupGuard { state, finished: false };
    stream::unfold(Answer::Script(guard, VecDeque::from(steps)), |answer| async move {
        let (mut guard, mut steps) = match answer {
            Answer::Sent => return None,
            Answer::Flooding(guard) => {
                let text = Bytes::from("x".repeat(64 * 1024));
                return Some((Ok(text), Answer::Flooding(guard)));
            }
            Answer::Script(guard, steps) => (guard, steps),
        };
        let (mut text, mut finish_reason, mut usage, mut raw) = (String::new(), None, None, None);
        while let Some(step) = steps.pop_front() {
            match step {
                Step::Content(more) => text.push_str(more),
                Step::Finish(reason) => finish_reason = Some(reason),
                Step::Usage { prompt, completion } => {
                    usage = Some(json!({
                        "prompt_tokens": prompt,
                        "completion_tokens": completion,
                        "total_tokens": prompt + completion,
                    }));
                }
                Step::Raw(data) => raw = Some(data.to_owned()),
                Step::Bytes(bytes) => raw = Some(bytes),
                Step::Done => break,
                Step::Pause(duration) => tokio::time::sleep(duration).await,
                Step::WaitForRelease => guard.state.release.notified().await,
                Step::WaitForGate => {
                    let mut gate = guard.state.gate.subscribe();
                    let _ = gate.wait_for(|open| *open).await;
                }
                Step::Drop => {
                    guard.finished = true;
                    let error = std::io::Error::other("mock drops the connection");
                    return Some((Err(error), Answer::Sent));
                }
                Step::Hang | Step::Endless(_) => std::future::pending::<()>().await,
                Step::Flood => {
                    let start = r#"{"object":"chat.completion","choices":[{"message":{"content":""#;
                    return Some((Ok(Bytes::from(start)), Answer::Flooding(guard)));
                }
            }
        }
        guard.finished = true;
        let body = match raw {
            Some(raw) => raw,
            None => {
                let mut completion = json!({
                    "id": "chatcmpl-mock",
                    "object": "chat.completion",
                    "created": 1_700_000_000u64,
                    "model": MOCK_MODEL_NAME,
                    "system_fingerprint": "fp_mock",
                    "choices": [{
                        "index": 0,
                        "message": {"role": "assistant", "content": text, "refusal": null},
                        "logprobs": null,
                        "finish_reason": finish_reason,
                    }],
                });
                if let Some(usage) = usage {
                    completion["usage"] = usage;
                }
                completion.to_string()
            }
        };
        Some((Ok(Bytes::from(body)), Answer::Sent))
    })
}

fn scripted_stream(
    state: Arc<MockState>,
    steps: Vec<Step>,
) -> impl futures_util::Stream<Item = Result<Bytes, std::io::Error>> + Send {
    let guard = HangupGuard { state, finished: false };
    stream::unfold((guard, VecDeque::from(steps)), |(mut guard, mut steps)| async move {
        loop {
            let Some(step) = steps.pop_front() else {
                guard.finished = true;
                drop(guard);
                return None;
            };
            let bytes = match step {
                Step::Content(text) => chunk(
                    json!([{"index": 0, "delta": {"content": text}, "finish_reason": null}]),
                    None,
                ),
                Step::Finish(reason) => {
                    chunk(json!([{"index": 0, "delta": {}, "finish_reason": reason}]), None)
                }
                Step::Usage { prompt, completion } => chunk(
                    json!([]),
                    Some(json!({
                        "prompt_tokens": prompt,
                        "completion_tokens": completion,
                        "total_tokens": prompt + completion,
                    })),
                ),
                Step::Raw(data) => Bytes::from(format!("data: {data}\n\n")),
                Step::Bytes(bytes) => Bytes::from(bytes),
                Step::Done => Bytes::from_static(b"data: [DONE]\n\n"),
                Step::Pause(duration) => {
                    tokio::time::sleep(duration).await;
                    continue;
                }
                Step::WaitForRelease => {
                    guard.state.release.notified().await;
                    continue;
                }
                Step::WaitForGate => {
                    let mut gate = guard.state.gate.subscribe();
                    let _ = gate.wait_for(|open| *open).await;
                    continue;
                }
                Step::Drop => {
                    guard.finished = true;
                    return Some((
                        Err(std::io::Error::other("mock drops the connection")),
                        (guard, steps),
                    ));
                }
                Step::Hang => std::future::pending::<Bytes>().await,
                Step::Flood => {
                    steps.push_front(Step::Flood);
                    let text = "x".repeat(64 * 1024);
                    chunk(
                        json!([{"index": 0, "delta": {"content": text}, "finish_reason": null}]),
                        None,
                    )
                }
                Step::Endless(interval) => {
                    tokio::time::sleep(interval).await;
                    steps.push_front(Step::Endless(interval));
                    chunk(
                        json!([{"index": 0, "delta": {"content": "la "}, "finish_reason": null}]),
                        None,
                    )
                }
            };
            return Some((Ok(bytes), (guard, steps)));
        }
    })
}
