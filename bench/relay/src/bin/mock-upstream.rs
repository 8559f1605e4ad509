//! A fast mock of an OpenAI-compatible upstream, for the relay benchmark.
//!
//! `POST /v1/chat/completions` answers one `chat.completion` with usage, or, for
//! `"stream": true`, an SSE stream of `--chunks` `chat.completion.chunk` events, a usage chunk
//! (`choices: []`) and `data: [DONE]`, with `--delay-ms` between two chunks. `GET /v1/models`
//! lists the model. The `x-mock-chunks` and `x-mock-delay-ms` request headers override the flags
//! for one request. `POST /v1/messages` is the same answer in Anthropic's Messages API: for
//! `"stream": true`, `message_start`, a text block of the same `--chunks` deltas, `message_delta`
//! with the usage and `message_stop`; otherwise one `message`.
//!
//! It must cost far less than what it serves: every answer is serialised once at start-up and
//! sent as shared `Bytes`; the request body is only scanned for its `stream` flag.
//!
//! Prints `mock upstream listening on http://ADDR` once it accepts connections.
#![expect(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "benchmark tool: a failure aborts the run with its message"
)]

use std::convert::Infallible;
use std::io::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use clap::Parser;
use futures_util::StreamExt as _;
use futures_util::stream;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt as _, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::header::{CACHE_CONTROL, CONTENT_TYPE, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use serde_json::json;
use tokio::net::TcpSocket;

#[derive(Debug, Parser)]
#[command(about = "A fast mock OpenAI-compatible upstream for the relay benchmark")]
struct Args {
    /// Address to listen on (port 0: any free port, printed at start).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Chunks with answer text in a streamed answer (then a usage chunk and `[DONE]`).
    #[arg(long, default_value_t = 20)]
    chunks: usize,
    /// Milliseconds between two chunks of a streamed answer.
    #[arg(long, default_value_t = 0)]
    delay_ms: u64,
    /// Runtime worker threads [default: one per core].
    #[arg(long)]
    threads: Option<usize>,
    /// Listen backlog: a capacity run opens thousands of connections at once.
    #[arg(long, default_value_t = 8192)]
    backlog: u32,
}

/// Every answer, serialised once.
#[derive(Debug)]
struct Answers {
    completion: Bytes,
    models: Bytes,
    chunks: usize,
    /// `data: {chunk}\n\n` for each chunk, then the usage chunk, then `data: [DONE]\n\n`.
    events: Vec<Bytes>,
    /// The same answer as one Anthropic `message`, and as the events of its stream.
    message: Bytes,
    anthropic_events: Vec<Bytes>,
    delay: Duration,
}

const PROMPT_TOKENS: u64 = 12;
const CREATED: u64 = 1_700_000_000;

/// The text of chunk `index`: a short word, like one token of a real answer.
fn piece(index: usize) -> String {
    format!("word{index} ")
}

fn events(chunks: usize) -> Vec<Bytes> {
    let id = "chatcmpl-mock";
    let mut events = Vec::with_capacity(chunks + 2);
    for index in 0..chunks {
        let mut delta = json!({ "content": piece(index) });
        if index == 0 {
            delta["role"] = json!("assistant");
        }
        let last = index + 1 == chunks;
        let chunk = json!({
            "id": id,
            "object": "chat.completion.chunk",
            "created": CREATED,
            "model": confab_bench::MODEL,
            "system_fingerprint": null,
            "choices": [{
                "index": 0,
                "delta": delta,
                "logprobs": null,
                "finish_reason": if last { json!("stop") } else { json!(null) },
            }],
        });
        events.push(Bytes::from(format!("data: {chunk}\n\n")));
    }
    let usage = json!({
        "id": id,
        "object": "chat.completion.chunk",
        "created": CREATED,
        "model": confab_bench::MODEL,
        "choices": [],
        "usage": {
            "prompt_tokens": PROMPT_TOKENS,
            "completion_tokens": chunks,
            "total_tokens": PROMPT_TOKENS + chunks as u64,
        },
    });
    events.push(Bytes::from(format!("data: {usage}\n\n")));
    events.push(Bytes::from_static(b"data: [DONE]\n\n"));
    events
}

/// The events of an Anthropic Messages stream with the same text as [`events`].
fn anthropic_events(chunks: usize) -> Vec<Bytes> {
    let event = |name: &str, data: serde_json::Value| {
        Bytes::from(format!("event: {name}\ndata: {data}\n\n"))
    };
    let mut events = Vec::with_capacity(chunks + 6);
    events.push(event(
        "message_start",
        json!({"type": "message_start", "message": {
            "id": "msg_mock", "type": "message", "role": "assistant", "content": [],
            "model": confab_bench::MODEL, "stop_reason": null, "stop_sequence": null,
            "usage": {"input_tokens": PROMPT_TOKENS, "output_tokens": 1},
        }}),
    ));
    events.push(event(
        "content_block_start",
        json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
    ));
    events.push(event("ping", json!({"type": "ping"})));
    for index in 0..chunks {
        events.push(event(
            "content_block_delta",
            json!({"type": "content_block_delta", "index": 0,
                "delta": {"type": "text_delta", "text": piece(index)}}),
        ));
    }
    events.push(event("content_block_stop", json!({"type": "content_block_stop", "index": 0})));
    events.push(event(
        "message_delta",
        json!({"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": null},
            "usage": {"output_tokens": chunks}}),
    ));
    events.push(event("message_stop", json!({"type": "message_stop"})));
    events
}

impl Answers {
    fn new(chunks: usize, delay: Duration) -> Self {
        let text: String = (0..chunks).map(piece).collect();
        let completion = json!({
            "id": "chatcmpl-mock",
            "object": "chat.completion",
            "created": CREATED,
            "model": confab_bench::MODEL,
            "choices": [{
                "index": 0,
                "message": { "role": "assistant", "content": text },
                "logprobs": null,
                "finish_reason": "stop",
            }],
            "usage": {
                "prompt_tokens": PROMPT_TOKENS,
                "completion_tokens": chunks,
                "total_tokens": PROMPT_TOKENS + chunks as u64,
            },
        });
        let models = json!({
            "object": "list",
            "data": [{ "id": confab_bench::MODEL, "object": "model", "created": CREATED, "owned_by": "mock" }],
        });
        let message = json!({
            "id": "msg_mock", "type": "message", "role": "assistant",
            "content": [{"type": "text", "text": text}],
            "model": confab_bench::MODEL, "stop_reason": "end_turn", "stop_sequence": null,
            "usage": {"input_tokens": PROMPT_TOKENS, "output_tokens": chunks},
        });
        Self {
            completion: Bytes::from(completion.to_string()),
            models: Bytes::from(models.to_string()),
            chunks,
            events: events(chunks),
            message: Bytes::from(message.to_string()),
            anthropic_events: anthropic_events(chunks),
            delay,
        }
    }
}

type Body = BoxBody<Bytes, Infallible>;

fn full(status: StatusCode, content_type: &'static str, body: Bytes) -> Response<Body> {
    let mut response = Response::new(Full::new(body).boxed());
    *response.status_mut() = status;
    response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

/// Whether the JSON request asks for a stream. A scan instead of a parse: the relay and the load
/// generator both write `"stream":true` without spaces, and this keeps the mock cheap.
fn wants_stream(body: &[u8]) -> bool {
    const NEEDLE: &[u8] = b"\"stream\":true";
    body.windows(NEEDLE.len()).any(|window| window == NEEDLE)
}

fn header_number<T: std::str::FromStr>(request: &Request<Incoming>, name: &str) -> Option<T> {
    request.headers().get(name)?.to_str().ok()?.parse().ok()
}

async fn handle(
    request: Request<Incoming>,
    answers: Arc<Answers>,
) -> Result<Response<Body>, Infallible> {
    let response = match (request.method(), request.uri().path()) {
        (&Method::POST, "/v1/chat/completions") => {
            let chunks = header_number(&request, "x-mock-chunks").unwrap_or(answers.chunks);
            let delay = header_number(&request, "x-mock-delay-ms")
                .map_or(answers.delay, Duration::from_millis);
            let Ok(body) = request.into_body().collect().await else {
                return Ok(full(StatusCode::BAD_REQUEST, "text/plain", Bytes::new()));
            };
            if wants_stream(&body.to_bytes()) {
                stream_response(&answers, chunks, delay)
            } else if chunks == answers.chunks {
                full(StatusCode::OK, "application/json", answers.completion.clone())
            } else {
                let completion = Answers::new(chunks, delay).completion;
                full(StatusCode::OK, "application/json", completion)
            }
        }
        (&Method::POST, "/v1/messages") => {
            let Ok(body) = request.into_body().collect().await else {
                return Ok(full(StatusCode::BAD_REQUEST, "text/plain", Bytes::new()));
            };
            if wants_stream(&body.to_bytes()) {
                events_response(answers.anthropic_events.clone(), answers.chunks, answers.delay)
            } else {
                full(StatusCode::OK, "application/json", answers.message.clone())
            }
        }
        (&Method::GET, "/v1/models") => {
            full(StatusCode::OK, "application/json", answers.models.clone())
        }
        _ => full(StatusCode::NOT_FOUND, "text/plain", Bytes::from_static(b"not found\n")),
    };
    Ok(response)
}

fn stream_response(answers: &Answers, chunks: usize, delay: Duration) -> Response<Body> {
    let events = if chunks == answers.chunks { answers.events.clone() } else { events(chunks) };
    events_response(events, chunks, delay)
}

/// `events` as an SSE body: all at once, or the first at once and then one every `delay` up to
/// the `chunks`-th, the rest right after it.
fn events_response(events: Vec<Bytes>, chunks: usize, delay: Duration) -> Response<Body> {
    let body: Body = if delay.is_zero() {
        BoxBody::new(StreamBody::new(stream::iter(
            events.into_iter().map(|event| Ok(Frame::data(event))),
        )))
    } else {
        // The first chunk at once, then one every `delay`: a model generating slowly.
        let frames = stream::iter(events.into_iter().enumerate()).then(move |(index, event)| {
            async move {
                // The usage chunk and `[DONE]` follow the last text chunk at once.
                if index > 0 && index < chunks {
                    tokio::time::sleep(delay).await;
                }
                Ok(Frame::data(event))
            }
        });
        BoxBody::new(StreamBody::new(frames))
    };
    let mut response = Response::new(body);
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

fn main() {
    let args = Args::parse();
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    if let Some(threads) = args.threads {
        runtime.worker_threads(threads);
    }
    runtime.enable_all().build().expect("cannot start the runtime").block_on(serve(args));
}

async fn serve(args: Args) {
    let socket = if args.listen.is_ipv4() { TcpSocket::new_v4() } else { TcpSocket::new_v6() }
        .expect("cannot create a socket");
    socket.set_reuseaddr(true).expect("cannot set SO_REUSEADDR");
    socket.bind(args.listen).unwrap_or_else(|e| panic!("cannot bind {}: {e}", args.listen));
    let listener = socket.listen(args.backlog).expect("cannot listen");
    let address = listener.local_addr().expect("no local address");
    let answers = Arc::new(Answers::new(args.chunks, Duration::from_millis(args.delay_ms)));
    let mut stdout = std::io::stdout();
    writeln!(stdout, "mock upstream listening on http://{address}").unwrap();
    stdout.flush().unwrap();

    let mut builder = hyper::server::conn::http1::Builder::new();
    builder.timer(TokioTimer::new()).keep_alive(true);
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                // Out of file descriptors: say so and back off instead of spinning.
                eprintln!("mock upstream: cannot accept: {error}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let answers = Arc::clone(&answers);
        let connection = builder.serve_connection(
            TokioIo::new(stream),
            hyper::service::service_fn(move |request| handle(request, Arc::clone(&answers))),
        );
        tokio::spawn(async move {
            let _ = connection.await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stream_is_its_chunks_then_usage_then_done() {
        let events = events(3);
        assert_eq!(events.len(), 5);
        let chunk: serde_json::Value =
            serde_json::from_slice(events[2].strip_prefix(b"data: ").unwrap()).unwrap();
        assert_eq!(chunk["choices"][0]["finish_reason"], "stop");
        let usage: serde_json::Value =
            serde_json::from_slice(events[3].strip_prefix(b"data: ").unwrap()).unwrap();
        assert_eq!(usage["usage"]["completion_tokens"], 3);
        assert_eq!(&events[4][..], b"data: [DONE]\n\n");
    }

    #[test]
    fn the_stream_flag_is_found_in_compact_json() {
        assert!(wants_stream(br#"{"model":"m","stream":true,"stream_options":{}}"#));
        assert!(!wants_stream(br#"{"model":"m","stream":false}"#));
        assert!(!wants_stream(br#"{"model":"m"}"#));
    }
}
