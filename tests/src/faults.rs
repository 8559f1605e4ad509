//! A fault-injecting upstream: a raw TCP server on `127.0.0.1:0` that speaks just enough
//! HTTP/1.1 to read the relay's request (its head and its `Content-Length` body) and then
//! misbehaves below HTTP where a real provider or the network between can: it resets the
//! connection, answers an error status, sends a head and then nothing, cuts a stream, sends
//! garbage, an event over the relay's size cap, or a slow trickle. It speaks each provider kind's
//! wire shapes (OpenAI chunks, Anthropic's Messages events, Gemini's `GenerateContentResponse`s),
//! streamed or whole, whichever the request asked for.
//!
//! It counts the connections it accepted and those still open, where a connection is open until
//! the *relay* closes its side (the server reads until end of file or an error, whatever it
//! wrote), so that a test can prove the relay leaked no connection. The first connection gets
//! the fault the test chose; any later one a well-formed whole answer (with `Connection: close`),
//! so that a test's follow-up request is answered at once.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::task::AbortHandle;

/// The relay's cap on one upstream SSE event (`MAX_EVENT_BYTES` in
/// `crates/providers/src/common.rs`): bytes that have made no complete event past it end the
/// stream as unreadable.
pub const RELAY_EVENT_CAP: usize = 1 << 20;
/// The relay's cap on a whole answer's body (`MAX_ANSWER_BYTES` in the same file).
pub const RELAY_ANSWER_CAP: usize = 8 << 20;
/// How far an oversized event or answer goes past its cap. The relay counts an event's bytes
/// read by read (up to 64 KiB each), and a read that completes an event starts the count again,
/// so an event only a little over the cap may pass: this is well past any such slack.
const OVER_THE_CAP: usize = 256 * 1024;

/// The provider API the fault server speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApiKind {
    OpenAi,
    Anthropic,
    Gemini,
}

impl ApiKind {
    pub const ALL: [Self; 3] = [Self::OpenAi, Self::Anthropic, Self::Gemini];

    /// The `base_url` a relay is configured with to reach a server of this kind at `origin`.
    pub fn base_url(self, origin: &str) -> String {
        match self {
            Self::OpenAi => format!("{origin}/v1"),
            Self::Anthropic => origin.to_owned(),
            Self::Gemini => format!("{origin}/v1beta"),
        }
    }

    /// The path (and query) the relay must call for `model`, streamed or whole.
    pub fn path(self, model: &str, stream: bool) -> String {
        match (self, stream) {
            (Self::OpenAi, _) => "/v1/chat/completions".into(),
            (Self::Anthropic, _) => "/v1/messages".into(),
            (Self::Gemini, true) => format!("/v1beta/models/{model}:streamGenerateContent?alt=sse"),
            (Self::Gemini, false) => format!("/v1beta/models/{model}:generateContent"),
        }
    }

    /// Whether the request asks for a stream: `"stream": true` in the body, or Gemini's
    /// streaming method in the path.
    fn wants_stream(self, request: &FaultRequest) -> bool {
        match self {
            Self::Gemini => request.path.contains(":streamGenerateContent"),
            Self::OpenAi | Self::Anthropic => request.body["stream"] == true,
        }
    }

    /// The events a stream starts with before any text (Anthropic's `message_start` and
    /// `content_block_start`; the others start with text).
    fn prelude(self) -> String {
        match self {
            Self::OpenAi | Self::Gemini => String::new(),
            Self::Anthropic => [
                json!({"type": "message_start", "message": {
                    "id": "msg_fault", "type": "message", "role": "assistant", "content": [],
                    "model": "fault-model", "stop_reason": null, "stop_sequence": null,
                    "usage": {"input_tokens": 9, "output_tokens": 1}}}),
                json!({"type": "content_block_start", "index": 0,
                       "content_block": {"type": "text", "text": ""}}),
            ]
            .into_iter()
            .map(anthropic_event)
            .collect(),
        }
    }

    /// One streamed event that adds `text` to the answer.
    pub fn text_event(self, text: &str) -> String {
        match self {
            Self::OpenAi => data_event(&json!({
                "id": "chatcmpl-fault", "object": "chat.completion.chunk", "created": 1_767_225_600,
                "model": "fault-model",
                "choices": [{"index": 0, "delta": {"role": "assistant", "content": text},
                             "finish_reason": null}],
            })),
            Self::Anthropic => anthropic_event(json!({
                "type": "content_block_delta", "index": 0,
                "delta": {"type": "text_delta", "text": text},
            })),
            Self::Gemini => data_event(&json!({
                "candidates": [{"content": {"parts": [{"text": text}], "role": "model"},
                                "index": 0}],
                "usageMetadata": {"promptTokenCount": 9, "candidatesTokenCount": 1,
                                  "totalTokenCount": 10},
                "modelVersion": "fault-model",
            })),
        }
    }

    /// The events that end a well-formed stream: the finish, the usage, the sentinel (Gemini
    /// has none: its body ends).
    fn ending(self) -> String {
        match self {
            Self::OpenAi => {
                let finish = json!({
                    "id": "chatcmpl-fault", "object": "chat.completion.chunk",
                    "created": 1_767_225_600, "model": "fault-model",
                    "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
                });
                let usage = json!({
                    "id": "chatcmpl-fault", "object": "chat.completion.chunk",
                    "created": 1_767_225_600, "model": "fault-model", "choices": [],
                    "usage": {"prompt_tokens": 9, "completion_tokens": 2, "total_tokens": 11},
                });
                format!("{}{}data: [DONE]\n\n", data_event(&finish), data_event(&usage))
            }
            Self::Anthropic => [
                json!({"type": "content_block_stop", "index": 0}),
                json!({"type": "message_delta",
                       "delta": {"stop_reason": "end_turn", "stop_sequence": null},
                       "usage": {"output_tokens": 2}}),
                json!({"type": "message_stop"}),
            ]
            .into_iter()
            .map(anthropic_event)
            .collect(),
            Self::Gemini => data_event(&json!({
                "candidates": [{"content": {"parts": [{"text": ""}], "role": "model"},
                                "finishReason": "STOP", "index": 0}],
                "usageMetadata": {"promptTokenCount": 9, "candidatesTokenCount": 2,
                                  "totalTokenCount": 11},
                "modelVersion": "fault-model",
            })),
        }
    }

    /// A well-formed whole answer saying `text`.
    fn whole_answer(self, text: &str) -> String {
        let answer = match self {
            Self::OpenAi => json!({
                "id": "chatcmpl-fault", "object": "chat.completion", "created": 1_767_225_600,
                "model": "fault-model",
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                             "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 9, "completion_tokens": 2, "total_tokens": 11},
            }),
            Self::Anthropic => json!({
                "id": "msg_fault", "type": "message", "role": "assistant", "model": "fault-model",
                "content": [{"type": "text", "text": text}], "stop_reason": "end_turn",
                "stop_sequence": null, "usage": {"input_tokens": 9, "output_tokens": 2},
            }),
            Self::Gemini => json!({
                "candidates": [{"content": {"parts": [{"text": text}], "role": "model"},
                                "finishReason": "STOP", "index": 0}],
                "usageMetadata": {"promptTokenCount": 9, "candidatesTokenCount": 2,
                                  "totalTokenCount": 11},
                "modelVersion": "fault-model",
            }),
        };
        answer.to_string()
    }

    /// The provider's own error object, as it reports a failure inside a 200 (Anthropic's
    /// `overloaded_error` event; an `error` object in the others' data).
    fn reported_error(self) -> Value {
        match self {
            Self::OpenAi => json!({"error": {"message": "The server is overloaded.",
                                             "type": "server_error", "code": null}}),
            Self::Anthropic => json!({"type": "error",
                                      "error": {"type": "overloaded_error",
                                                "message": "Overloaded"}}),
            Self::Gemini => json!({"error": {"code": 503, "message": "The model is overloaded.",
                                             "status": "UNAVAILABLE"}}),
        }
    }

    /// The in-stream error event.
    fn error_event(self) -> String {
        match self {
            Self::Anthropic => anthropic_event(self.reported_error()),
            Self::OpenAi | Self::Gemini => data_event(&self.reported_error()),
        }
    }

    /// The body of an error status, as the provider words it (Gemini's 429 is
    /// `RESOURCE_EXHAUSTED` with a `RetryInfo`).
    fn status_body(self, status: u16, retry_after: Option<u64>) -> String {
        match self {
            Self::OpenAi => json!({"error": {"message": format!("fault {status}"),
                                             "type": "server_error", "code": null}}),
            Self::Anthropic => {
                let kind = match status {
                    429 => "rate_limit_error",
                    529 => "overloaded_error",
                    _ => "api_error",
                };
                json!({"type": "error", "error": {"type": kind, "message": "fault"}})
            }
            Self::Gemini => match (status, retry_after) {
                (429, Some(seconds)) => json!({"error": {
                    "code": 429, "message": "You exceeded your current quota.",
                    "status": "RESOURCE_EXHAUSTED",
                    "details": [{"@type": "type.googleapis.com/google.rpc.RetryInfo",
                                 "retryDelay": format!("{seconds}s")}]}}),
                _ => json!({"error": {"code": status, "message": "fault",
                                      "status": "UNAVAILABLE"}}),
            },
        }
        .to_string()
    }
}

/// `data: <json>` and its blank line.
fn data_event(data: &Value) -> String {
    format!("data: {data}\n\n")
}

/// An event as Anthropic frames it: named by its `type`.
fn anthropic_event(data: Value) -> String {
    format!("event: {}\ndata: {data}\n\n", data["type"].as_str().unwrap_or("message"))
}

/// How the server misbehaves on the first connection. Streams are chunked, as providers send
/// them; whole answers carry a `Content-Length`. "Hold" means the server then writes nothing
/// and keeps the connection open until the relay closes it.
#[derive(Debug, Clone)]
pub enum Fault {
    /// Reads the request, then resets the connection (`SO_LINGER` 0, then close: an RST) before
    /// any response head.
    ResetBeforeHead,
    /// An error status with the provider's error body (and `Retry-After` when given; Gemini's
    /// 429 carries it as its body's `retryDelay` instead), then `Connection: close`.
    Status { status: u16, retry_after: Option<u64> },
    /// A 200 head, then hold. (A whole answer's head announces a body that never comes.)
    HeadThenSilence,
    /// A 200 head and bytes that are not SSE at all (an HTML page), then hold.
    NotSse,
    /// `events` text events (after the kind's prelude), then half of one more, then the
    /// connection closed mid-body. A whole answer: half its body, then closed.
    CutAfter { events: usize },
    /// `events` text events (none: no prelude either), then an event whose data is not JSON,
    /// then hold. A whole answer: a body that is not JSON.
    Garbage { events: usize },
    /// `events` text events (none: no prelude either), then one event larger than
    /// [`RELAY_EVENT_CAP`], then hold. A whole answer: a body larger than [`RELAY_ANSWER_CAP`].
    Oversize { events: usize },
    /// `events` text events (none: no prelude either), then the provider's own error event,
    /// then hold. A whole answer: the provider's error object in a 200.
    Reported { events: usize },
    /// Text events, one every `every`, for ever (each well within the idle limit).
    TrickleEvents { every: Duration },
    /// `events` text events, then the next event one byte every `every`, for ever: bytes keep
    /// coming, but no event is ever completed. A whole answer: its body one byte at a time.
    TrickleBytes { events: usize, every: Duration },
}

/// A request as the fault server read it.
#[derive(Debug, Clone)]
pub struct FaultRequest {
    /// The request line's target: path and query.
    pub path: String,
    /// Header names in lower case, with their values.
    pub headers: Vec<(String, String)>,
    pub body: Value,
}

#[derive(Debug, Default)]
struct Shared {
    accepted: AtomicUsize,
    open: AtomicUsize,
    requests: Mutex<Vec<FaultRequest>>,
    faults: Mutex<VecDeque<Fault>>,
    tasks: Mutex<Vec<AbortHandle>>,
}

/// The running fault server; stops (with every connection it holds) when dropped.
#[derive(Debug)]
pub struct FaultServer {
    /// `http://127.0.0.1:PORT`.
    pub origin: String,
    pub kind: ApiKind,
    shared: Arc<Shared>,
    /// The bound, not listening, socket of [`FaultServer::refusing`].
    _bound: Option<TcpSocket>,
}

impl FaultServer {
    /// A server of `kind` whose first connection gets `fault`.
    pub async fn start(kind: ApiKind, fault: Fault) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let origin = format!("http://{}", listener.local_addr().unwrap());
        let shared = Arc::new(Shared::default());
        shared.faults.lock().unwrap().push_back(fault);
        let accepting = tokio::spawn(accept(listener, kind, Arc::clone(&shared)));
        shared.tasks.lock().unwrap().push(accepting.abort_handle());
        Self { origin, kind, shared, _bound: None }
    }

    /// An address where nothing listens: every connection attempt is refused. The port stays
    /// bound (without listening) while the server lives, so that no other test's server can
    /// take it meanwhile and answer in its place.
    pub async fn refusing(kind: ApiKind) -> Self {
        let socket = TcpSocket::new_v4().unwrap();
        socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let origin = format!("http://{}", socket.local_addr().unwrap());
        let shared = Arc::new(Shared::default());
        Self { origin, kind, shared, _bound: Some(socket) }
    }

    /// The `base_url` a relay is configured with to reach this server.
    pub fn base_url(&self) -> String {
        self.kind.base_url(&self.origin)
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> usize {
        self.shared.accepted.load(Ordering::SeqCst)
    }

    /// Connections the relay has not closed yet.
    pub fn open(&self) -> usize {
        self.shared.open.load(Ordering::SeqCst)
    }

    pub fn requests(&self) -> Vec<FaultRequest> {
        self.shared.requests.lock().unwrap().clone()
    }

    /// Waits (bounded, 5 s) until the relay has closed every connection it opened here; panics
    /// with the count still open otherwise: a leaked connection.
    pub async fn wait_all_closed(&self) {
        let closed = tokio::time::timeout(Duration::from_secs(5), async {
            while self.open() > 0 {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await;
        assert!(
            closed.is_ok(),
            "the relay left {} of {} connections to the upstream open",
            self.open(),
            self.accepted()
        );
    }
}

impl Drop for FaultServer {
    fn drop(&mut self) {
        for task in self.shared.tasks.lock().unwrap().drain(..) {
            task.abort();
        }
    }
}

async fn accept(listener: TcpListener, kind: ApiKind, shared: Arc<Shared>) {
    while let Ok((stream, _)) = listener.accept().await {
        shared.accepted.fetch_add(1, Ordering::SeqCst);
        shared.open.fetch_add(1, Ordering::SeqCst);
        let guard = OpenConnection(Arc::clone(&shared));
        let task = tokio::spawn(serve(stream, kind, guard));
        shared.tasks.lock().unwrap().push(task.abort_handle());
    }
}

/// Counts a connection as open until it is dropped (with its task, aborted or finished).
struct OpenConnection(Arc<Shared>);

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::SeqCst);
    }
}

async fn serve(mut stream: TcpStream, kind: ApiKind, open: OpenConnection) {
    let shared = Arc::clone(&open.0);
    let Some(request) = read_request(&mut stream).await else { return };
    let stream_wanted = kind.wants_stream(&request);
    shared.requests.lock().unwrap().push(request);
    let fault = shared.faults.lock().unwrap().pop_front();
    if let Some(Fault::ResetBeforeHead) = fault {
        stream.set_zero_linger().unwrap();
        drop(stream);
        return;
    }
    let (mut reader, mut writer) = stream.into_split();
    // The relay's side closing (end of file, or an error such as a reset) is what ends the
    // connection, whatever the script is doing then.
    let closed = async move {
        let mut buffer = [0_u8; 4096];
        while let Ok(read) = reader.read(&mut buffer).await {
            if read == 0 {
                break;
            }
        }
    };
    tokio::pin!(closed);
    let script = async {
        // A write error means the relay went away; the read side then sees it too.
        let _ = match fault {
            Some(fault) => play(kind, stream_wanted, fault, &mut writer).await,
            None => answer(kind, stream_wanted, &mut writer).await,
        };
    };
    tokio::select! {
        () = &mut closed => return,
        () = script => {}
    }
    closed.await;
    drop(writer);
    drop(open);
}

/// Reads one request: its head, then as many body bytes as `Content-Length` says. `None` if the
/// connection ended first or sent something this server does not read.
async fn read_request(stream: &mut TcpStream) -> Option<FaultRequest> {
    let mut buffer = Vec::new();
    let mut chunk = [0_u8; 4096];
    let head_end = loop {
        if let Some(at) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
            break at;
        }
        if buffer.len() > 64 * 1024 {
            return None;
        }
        let read = stream.read(&mut chunk).await.ok()?;
        if read == 0 {
            return None;
        }
        buffer.extend_from_slice(&chunk[..read]);
    };
    let head = std::str::from_utf8(&buffer[..head_end]).ok()?.to_owned();
    let mut lines = head.split("\r\n");
    let path = lines.next()?.split(' ').nth(1)?.to_owned();
    let headers: Vec<(String, String)> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim().to_ascii_lowercase(), value.trim().to_owned()))
        .collect();
    let length: usize = headers
        .iter()
        .find(|(name, _)| name == "content-length")
        .and_then(|(_, value)| value.parse().ok())
        .unwrap_or(0);
    let mut body = buffer.split_off(head_end + 4);
    while body.len() < length {
        let read = stream.read(&mut chunk).await.ok()?;
        if read == 0 {
            return None;
        }
        body.extend_from_slice(&chunk[..read]);
    }
    let body = serde_json::from_slice(&body[..length]).unwrap_or(Value::Null);
    Some(FaultRequest { path, headers, body })
}

const STREAM_HEAD: &str = "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\
                           Cache-Control: no-cache\r\nTransfer-Encoding: chunked\r\n\r\n";

fn whole_head(length: usize) -> String {
    format!("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {length}\r\n\r\n")
}

/// The head of a whole body that will arrive complete: `Connection: close`, so that the relay
/// keeps no idle connection that the open count would mistake for a leak.
fn whole_head_closing(length: usize) -> String {
    whole_head(length).replace("\r\n\r\n", "\r\nConnection: close\r\n\r\n")
}

/// One piece of a chunked body.
async fn chunk(writer: &mut OwnedWriteHalf, data: &[u8]) -> std::io::Result<()> {
    // An empty chunk would be the last one: the end of the body.
    if data.is_empty() {
        return Ok(());
    }
    let mut framed = format!("{:x}\r\n", data.len()).into_bytes();
    framed.extend_from_slice(data);
    framed.extend_from_slice(b"\r\n");
    writer.write_all(&framed).await
}

/// The kind's prelude and `events` text events, or nothing at all for none.
fn text_events(kind: ApiKind, events: usize) -> String {
    if events == 0 {
        return String::new();
    }
    let mut text = kind.prelude();
    for i in 0..events {
        text.push_str(&kind.text_event(&format!("word{i} ")));
    }
    text
}

/// Waits until the relay closes the connection, writing nothing.
async fn hold() -> std::io::Result<()> {
    std::future::pending().await
}

async fn play(
    kind: ApiKind,
    stream: bool,
    fault: Fault,
    writer: &mut OwnedWriteHalf,
) -> std::io::Result<()> {
    match (fault, stream) {
        (Fault::ResetBeforeHead, _) => unreachable!("handled before the head"),
        (Fault::Status { status, retry_after }, _) => {
            let body = kind.status_body(status, retry_after);
            let retry = match (kind, status, retry_after) {
                // Gemini says when to retry in its body.
                (ApiKind::Gemini, 429, _) | (_, _, None) => String::new(),
                (_, _, Some(seconds)) => format!("Retry-After: {seconds}\r\n"),
            };
            let head = format!(
                "HTTP/1.1 {status} Fault\r\nContent-Type: application/json\r\n\
                 Content-Length: {}\r\nConnection: close\r\n{retry}\r\n",
                body.len()
            );
            writer.write_all(format!("{head}{body}").as_bytes()).await?;
            writer.shutdown().await
        }
        (Fault::HeadThenSilence, true) => {
            writer.write_all(STREAM_HEAD.as_bytes()).await?;
            hold().await
        }
        (Fault::HeadThenSilence, false) => {
            let length = kind.whole_answer("never sent").len();
            writer.write_all(whole_head(length).as_bytes()).await?;
            hold().await
        }
        (Fault::NotSse, true) => {
            writer.write_all(STREAM_HEAD.as_bytes()).await?;
            chunk(writer, b"<!doctype html>\n<html><body>502 Bad Gateway</body></html>\n\n")
                .await?;
            hold().await
        }
        (Fault::NotSse | Fault::Garbage { .. }, false) => {
            let body = "<!doctype html>\n<html><body>502 Bad Gateway</body></html>\n";
            let head = whole_head_closing(body.len());
            writer.write_all(format!("{head}{body}").as_bytes()).await?;
            hold().await
        }
        (Fault::CutAfter { events }, true) => {
            writer.write_all(STREAM_HEAD.as_bytes()).await?;
            let mut sent = text_events(kind, events);
            let next = kind.text_event("never finished");
            sent.push_str(&next[..next.len() / 2]);
            chunk(writer, sent.as_bytes()).await?;
            // No last chunk: the body ends mid-event, the connection closed under it.
            writer.shutdown().await
        }
        (Fault::CutAfter { .. }, false) => {
            let body = kind.whole_answer("cut short");
            writer.write_all(whole_head(body.len()).as_bytes()).await?;
            writer.write_all(&body.as_bytes()[..body.len() / 2]).await?;
            writer.shutdown().await
        }
        (Fault::Garbage { events }, true) => {
            writer.write_all(STREAM_HEAD.as_bytes()).await?;
            let mut sent = text_events(kind, events);
            sent.push_str("data: <html><body>502 Bad Gateway</body></html>\n\n");
            chunk(writer, sent.as_bytes()).await?;
            hold().await
        }
        (Fault::Oversize { events }, true) => {
            writer.write_all(STREAM_HEAD.as_bytes()).await?;
            chunk(writer, text_events(kind, events).as_bytes()).await?;
            // One text event whose text alone is over the cap, in pieces as a server would
            // write it; it is never finished, since the relay must give up before its end.
            let huge = kind.text_event(&"x".repeat(RELAY_EVENT_CAP + OVER_THE_CAP));
            for piece in huge.as_bytes().chunks(16 * 1024) {
                chunk(writer, piece).await?;
            }
            hold().await
        }
        (Fault::Oversize { .. }, false) => {
            let body = kind.whole_answer(&"x".repeat(RELAY_ANSWER_CAP + OVER_THE_CAP));
            writer.write_all(whole_head(body.len()).as_bytes()).await?;
            writer.write_all(body.as_bytes()).await?;
            hold().await
        }
        (Fault::Reported { events }, true) => {
            writer.write_all(STREAM_HEAD.as_bytes()).await?;
            let mut sent = text_events(kind, events);
            sent.push_str(&kind.error_event());
            chunk(writer, sent.as_bytes()).await?;
            hold().await
        }
        (Fault::Reported { .. }, false) => {
            let body = kind.reported_error().to_string();
            let head = whole_head_closing(body.len());
            writer.write_all(format!("{head}{body}").as_bytes()).await?;
            hold().await
        }
        (Fault::TrickleEvents { every }, true) => {
            writer.write_all(STREAM_HEAD.as_bytes()).await?;
            chunk(writer, kind.prelude().as_bytes()).await?;
            loop {
                chunk(writer, kind.text_event("drip ").as_bytes()).await?;
                tokio::time::sleep(every).await;
            }
        }
        (Fault::TrickleBytes { events, every }, true) => {
            writer.write_all(STREAM_HEAD.as_bytes()).await?;
            chunk(writer, text_events(kind, events).as_bytes()).await?;
            let next = kind.text_event(&"drip ".repeat(10_000));
            for byte in next.as_bytes() {
                tokio::time::sleep(every).await;
                chunk(writer, std::slice::from_ref(byte)).await?;
            }
            hold().await
        }
        (Fault::TrickleEvents { every } | Fault::TrickleBytes { every, .. }, false) => {
            let body = kind.whole_answer(&"drip ".repeat(10_000));
            writer.write_all(whole_head(body.len()).as_bytes()).await?;
            for byte in body.as_bytes() {
                tokio::time::sleep(every).await;
                writer.write_all(std::slice::from_ref(byte)).await?;
            }
            hold().await
        }
    }
}

/// A well-formed answer, streamed or whole, then the connection closed (`Connection: close`).
async fn answer(kind: ApiKind, stream: bool, writer: &mut OwnedWriteHalf) -> std::io::Result<()> {
    if stream {
        let head = STREAM_HEAD.replace("\r\n\r\n", "\r\nConnection: close\r\n\r\n");
        writer.write_all(head.as_bytes()).await?;
        let events = format!("{}{}", text_events(kind, 1), kind.ending());
        chunk(writer, events.as_bytes()).await?;
        writer.write_all(b"0\r\n\r\n").await?;
    } else {
        let body = kind.whole_answer("word0 ");
        let head = whole_head_closing(body.len());
        writer.write_all(format!("{head}{body}").as_bytes()).await?;
    }
    writer.shutdown().await
}
