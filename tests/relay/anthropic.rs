//! `kind = "anthropic"` through real HTTP: the relay calls a mock that speaks Anthropic's
//! Messages API (its SSE events as Anthropic sends them), and the client gets the OpenAI shape:
//! chunks, the usage chunk with the cache counts, `[DONE]`; the usage record is priced with the
//! cache prices. Errors: an `error` event after the 200 and a 529 overloaded, neither with the
//! provider's words.

use confab_server::budget::Price;
use confab_server::config::UpstreamKind;
use confab_server::store::Outcome;
use confab_tests::{
    MockUpstream, Reply, Step, TestRelay, TestRelayBuilder, UPSTREAM_SECRET, json_body,
    read_events, wait_for_log,
};
use serde_json::{Value, json};

fn hello(stream: bool) -> Value {
    json!({"stream": stream, "messages": [{"role": "user", "content": "Hello"}], "max_tokens": 20})
}

/// A relay whose upstream is `mock` as an Anthropic API, with `model-a` priced per token: one
/// micro-dollar in, two out, a tenth for a cache read, 1.25 for a cache write.
fn anthropic_relay(mock: &MockUpstream) -> TestRelayBuilder {
    let price = Price {
        cache_read_per_million: Some(100_000),
        cache_write_per_million: Some(1_250_000),
        ..Price::new(1_000_000, 2_000_000)
    };
    TestRelay::builder(mock).config(|c| {
        c.upstreams[0].kind = UpstreamKind::Anthropic;
        c.upstreams[0].base_url = Some(mock.root_url());
        c.prices.insert("model-a".into(), price);
        c.usage.flush_ms = 50;
    })
}

/// An event as Anthropic frames it: its name, then its data.
fn event(data: Value) -> String {
    format!("event: {}\ndata: {data}\n\n", data["type"].as_str().unwrap())
}

/// Anthropic's stream for "Hello!" with a prompt of 5 uncached tokens, 10 written to the cache
/// and 20 read from it; 15 tokens out, counted cumulatively over two `message_delta`s.
fn cached_stream() -> String {
    let text = |text: &str| {
        json!({"type": "content_block_delta", "index": 0,
               "delta": {"type": "text_delta", "text": text}})
    };
    [
        json!({"type": "message_start", "message": {
            "id": "msg_01XFDUDYJgAACzvnptvVoYEL", "type": "message", "role": "assistant",
            "content": [], "model": "claude-sonnet-4-5", "stop_reason": null,
            "stop_sequence": null, "usage": {"input_tokens": 5, "cache_creation_input_tokens": 10,
            "cache_read_input_tokens": 20, "output_tokens": 1}}}),
        json!({"type": "content_block_start", "index": 0,
               "content_block": {"type": "text", "text": ""}}),
        json!({"type": "ping"}),
        text("Hello"),
        json!({"type": "message_delta", "delta": {"stop_reason": null},
               "usage": {"output_tokens": 9}}),
        text("!"),
        json!({"type": "content_block_stop", "index": 0}),
        json!({"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": null},
               "usage": {"output_tokens": 15}}),
        json!({"type": "message_stop"}),
    ]
    .into_iter()
    .map(event)
    .collect()
}

/// The usage the client is told and the meter charges for `cached_stream`.
fn cached_usage() -> Value {
    json!({"prompt_tokens": 35, "completion_tokens": 15, "total_tokens": 50,
           "prompt_tokens_details": {"cached_tokens": 20, "cache_creation_tokens": 10}})
}

/// 5 x 1 + 20 x 0.1 + 10 x 1.25 + 15 x 2 = 49.5 micro-dollars, rounded up.
const CACHED_COST: u64 = 50;

#[tokio::test]
async fn a_streamed_claude_answer_reaches_the_client_as_openai_chunks_priced_with_its_cache() {
    let mock = MockUpstream::start().await;
    mock.push(Reply::Stream(vec![Step::Bytes(cached_stream())]));
    let relay = anthropic_relay(&mock).start().await;

    let response = relay.send_chat(hello(true)).await;
    assert_eq!(response.status(), 200);
    let events = read_events(response).await;
    let data: Vec<&str> = events.iter().map(|e| e.data.as_str()).collect();
    assert_eq!(data.last(), Some(&"[DONE]"));
    let chunks: Vec<Value> =
        data[..data.len() - 1].iter().map(|d| serde_json::from_str(d).unwrap()).collect();
    for chunk in &chunks {
        assert_eq!(chunk["object"], "chat.completion.chunk");
        assert_eq!(chunk["id"], "msg_01XFDUDYJgAACzvnptvVoYEL");
        assert_eq!(chunk["model"], "model-a");
    }
    let deltas: Vec<&Value> = chunks.iter().map(|c| &c["choices"][0]["delta"]).collect();
    assert_eq!(chunks.len(), 5, "{chunks:?}");
    assert_eq!(
        deltas[..3],
        [
            &json!({"role": "assistant", "content": ""}),
            &json!({"content": "Hello"}),
            &json!({"content": "!"})
        ]
    );
    assert_eq!(chunks[3]["choices"][0]["finish_reason"], "stop");
    assert_eq!(chunks[4]["choices"], json!([]));
    assert_eq!(chunks[4]["usage"], cached_usage());

    let request = &mock.requests()[0];
    assert_eq!(request.path, "/v1/messages");
    assert_eq!(request.api_key.as_deref(), Some(UPSTREAM_SECRET));
    assert_eq!(request.authorization, None);
    assert_eq!(request.anthropic_version.as_deref(), Some("2023-06-01"));
    assert_eq!(
        request.body,
        json!({
            "model": "model-a",
            "system": "You are the shop's assistant.",
            "messages": [{"role": "user", "content": "Hello"}],
            "max_tokens": 20,
            "stream": true,
        })
    );

    let record = relay.only_settled_usage().await;
    assert_eq!(record.outcome, Outcome::Completed);
    assert_eq!((record.input_tokens, record.output_tokens, record.estimated), (35, 15, false));
    assert_eq!((record.cache_read_tokens, record.cache_write_tokens), (20, 10));
    assert_eq!(record.cost_micros, CACHED_COST);
}

#[tokio::test]
async fn a_whole_claude_answer_reaches_the_client_as_a_chat_completion() {
    let mock = MockUpstream::start().await;
    let message = json!({
        "id": "msg_01XFDUDYJgAACzvnptvVoYEL", "type": "message", "role": "assistant",
        "content": [{"type": "text", "text": "Hello!"}], "model": "claude-sonnet-4-5",
        "stop_reason": "max_tokens", "stop_sequence": null,
        "usage": {"input_tokens": 5, "cache_creation_input_tokens": 10,
                  "cache_read_input_tokens": 20, "output_tokens": 15},
    });
    mock.push(Reply::Stream(vec![Step::Bytes(message.to_string())]));
    let relay = anthropic_relay(&mock).start().await;

    let (status, body) = json_body(relay.send_chat(hello(false)).await).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["object"], "chat.completion");
    assert_eq!(body["model"], "model-a");
    assert_eq!(
        body["choices"],
        json!([{"index": 0, "message": {"role": "assistant", "content": "Hello!"},
                "finish_reason": "length"}])
    );
    assert_eq!(body["usage"], cached_usage());
    assert_eq!(mock.only_request().get("stream"), None);

    let record = relay.only_settled_usage().await;
    assert_eq!((record.input_tokens, record.output_tokens), (35, 15));
    assert_eq!(record.cost_micros, CACHED_COST);
}

#[tokio::test]
async fn an_error_event_after_the_200_ends_the_stream_without_the_providers_words() {
    let mock = MockUpstream::start().await;
    let stream = cached_stream();
    let cut = stream.find("event: content_block_stop").unwrap();
    let error = event(json!({"type": "error", "error": {"type": "overloaded_error",
        "message": "Overloaded, and here is a detail nobody outside should read"}}));
    mock.push(Reply::Stream(vec![Step::Bytes(format!("{}{error}", &stream[..cut]))]));
    let relay = anthropic_relay(&mock).start().await;

    let events = read_events(relay.send_chat(hello(true)).await).await;
    let last = events.last().unwrap();
    assert_eq!(last.event, "error");
    assert_eq!(
        serde_json::from_str::<Value>(&last.data).unwrap(),
        json!({"error": {"message": "the model provider is overloaded; retry later",
                         "type": "service_unavailable_error", "code": "upstream_overloaded"}})
    );
    assert!(events.iter().all(|e| e.data != "[DONE]" && !e.data.contains("nobody outside")));
    // The operator reads it in the log.
    wait_for_log("here is a detail nobody outside should read").await;
}

#[tokio::test]
async fn an_overloaded_claude_is_a_503_with_its_retry_after() {
    let mock = MockUpstream::start().await;
    let body = json!({"type": "error", "error": {"type": "overloaded_error",
        "message": "Overloaded"}});
    mock.push(Reply::Status { status: 529, retry_after: Some(30), body: body.to_string() });
    let relay = anthropic_relay(&mock).start().await;

    let response = relay.send_chat(hello(true)).await;
    assert_eq!(response.headers()["retry-after"], "30");
    let (status, body) = json_body(response).await;
    assert_eq!(status, 503);
    assert_eq!(
        body,
        json!({"error": {"message": "the model provider is overloaded; retry later",
                         "type": "service_unavailable_error", "code": "upstream_overloaded"}})
    );
    let record = relay.only_settled_usage().await;
    assert_eq!((record.outcome, record.cost_micros), (Outcome::UpstreamError, 0));
}
