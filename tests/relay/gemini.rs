//! `kind = "gemini"` through real HTTP: the relay in front of a mock that speaks Gemini's
//! `generateContent` API, a client that speaks OpenAI's.

use confab_server::budget::Price;
use confab_server::config::UpstreamKind;
use confab_server::store::Outcome;
use confab_tests::{
    MockUpstream, Reply, Step, TestRelay, TestRelayBuilder, UPSTREAM_SECRET, json_body, read_events,
};
use serde_json::{Value, json};

/// A thinking model's stream, as the Gemini API sends it: the thoughts counted in
/// `thoughtsTokenCount` (and not shown), cumulative usage on every event but the middle one.
const THINKING_STREAM: [&str; 3] = [
    r#"{"candidates": [{"content": {"parts": [{"text": "We ship"}],"role": "model"},"index": 0}],"usageMetadata": {"promptTokenCount": 21,"candidatesTokenCount": 2,"totalTokenCount": 63,"thoughtsTokenCount": 40},"modelVersion": "gemini-2.5-flash","responseId": "gem-1"}"#,
    r#"{"candidates": [{"content": {"parts": [{"text": " to Norway"}],"role": "model"},"index": 0}],"modelVersion": "gemini-2.5-flash","responseId": "gem-1"}"#,
    r#"{"candidates": [{"content": {"parts": [{"text": " in 3 days."}],"role": "model"},"finishReason": "STOP","index": 0}],"usageMetadata": {"promptTokenCount": 21,"candidatesTokenCount": 8,"totalTokenCount": 69,"thoughtsTokenCount": 40},"modelVersion": "gemini-2.5-flash","responseId": "gem-1"}"#,
];

/// A relay whose only upstream is `mock`, as `kind = "gemini"` at `…/v1beta`, with `model-a`
/// priced at one micro-dollar per input token and three per output token.
fn gemini_relay(mock: &MockUpstream) -> TestRelayBuilder {
    let origin = mock.base_url.strip_suffix("/v1").expect("the mock serves under /v1");
    let root = format!("{origin}/v1beta");
    TestRelay::builder(mock).config(move |config| {
        config.upstreams[0].kind = UpstreamKind::Gemini;
        config.upstreams[0].base_url = Some(root);
        let price = Price::new(1_000_000, 3_000_000);
        config.prices.insert("model-a".into(), price);
        config.usage.flush_ms = 50;
    })
}

fn question(stream: bool) -> Value {
    json!({
        "stream": stream,
        "messages": [{"role": "user", "content": "Do you ship to Norway?"}],
        "max_tokens": 300,
    })
}

/// What the upstream must have been sent: the key in its header only, the site's persona as
/// the system instruction, the question as the user's turn.
fn assert_sent_as_gemini(mock: &MockUpstream, method: &str) {
    let requests = mock.requests();
    assert_eq!(requests.len(), 1);
    let request = &requests[0];
    assert_eq!(request.path, format!("/v1beta/models/model-a:{method}"));
    assert_eq!(request.headers["x-goog-api-key"], UPSTREAM_SECRET);
    assert!(request.headers.get("authorization").is_none());
    assert!(!request.path.contains(UPSTREAM_SECRET), "the key is never in the URL");
    assert!(!request.path.contains("key="), "the key is never in the URL");
    assert!(request.headers.contains_key("x-request-id"));
    assert_eq!(
        request.body["contents"],
        json!([{"role": "user", "parts": [{"text": "Do you ship to Norway?"}]}])
    );
    let persona = request.body["systemInstruction"]["parts"][0]["text"].as_str().unwrap();
    assert!(persona.contains("You are the shop's assistant."), "{persona}");
    assert_eq!(request.body["generationConfig"]["maxOutputTokens"], 300);
    assert_eq!(request.body["generationConfig"]["candidateCount"], 1);
}

#[tokio::test]
async fn a_gemini_stream_reaches_the_client_as_openai_chunks_with_thoughts_billed_as_output() {
    let mock = MockUpstream::start().await;
    mock.push(Reply::Stream(THINKING_STREAM.iter().map(|event| Step::Raw(event)).collect()));
    let relay = gemini_relay(&mock).start().await;

    let response = relay.send_chat(question(true)).await;
    assert_eq!(response.status(), 200);
    let events = read_events(response).await;
    assert_eq!(events.last().unwrap().data, "[DONE]");
    let chunks: Vec<Value> = events[..events.len() - 1]
        .iter()
        .map(|event| serde_json::from_str(&event.data).unwrap())
        .collect();
    assert!(
        chunks.iter().all(|c| c["object"] == "chat.completion.chunk" && c["model"] == "model-a")
    );
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let text: String =
        chunks.iter().filter_map(|c| c["choices"][0]["delta"]["content"].as_str()).collect();
    assert_eq!(text, "We ship to Norway in 3 days.");
    let finishes: Vec<&Value> =
        chunks.iter().map(|c| &c["choices"][0]["finish_reason"]).filter(|f| !f.is_null()).collect();
    assert_eq!(finishes, [&json!("stop")]);
    let usage = chunks.last().unwrap();
    assert_eq!(usage["choices"], json!([]));
    assert_eq!(
        usage["usage"],
        json!({
            "prompt_tokens": 21,
            "completion_tokens": 48,
            "total_tokens": 69,
            "completion_tokens_details": {"reasoning_tokens": 40},
        })
    );

    assert_sent_as_gemini(&mock, "streamGenerateContent?alt=sse");
    let record = relay.settled_usage(1).await.remove(0);
    assert_eq!(record.outcome, Outcome::Completed);
    assert_eq!((record.input_tokens, record.output_tokens, record.estimated), (21, 48, false));
    assert_eq!(record.cost_micros, 21 + 3 * 48);
}

#[tokio::test]
async fn a_whole_gemini_answer_reaches_the_client_as_one_chat_completion() {
    let mock = MockUpstream::start().await;
    let whole = r#"{"candidates": [{"content": {"parts": [{"text": "Shipping options.","thought": true},{"text": "Yes, in 3 days."}],"role": "model"},"finishReason": "MAX_TOKENS","index": 0}],"usageMetadata": {"promptTokenCount": 21,"candidatesTokenCount": 6,"totalTokenCount": 57,"thoughtsTokenCount": 30},"modelVersion": "gemini-2.5-flash","responseId": "gem-2"}"#;
    mock.push(Reply::Stream(vec![Step::Raw(whole)]));
    let relay = gemini_relay(&mock).start().await;

    let (status, body) = json_body(relay.send_chat(question(false)).await).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["object"], "chat.completion");
    assert_eq!(body["model"], "model-a");
    assert_eq!(
        body["choices"],
        json!([{
            "index": 0,
            "message": {"role": "assistant", "content": "Yes, in 3 days."},
            "finish_reason": "length",
        }])
    );
    assert_eq!(body["usage"]["completion_tokens"], 36);
    assert_eq!(body["usage"]["completion_tokens_details"], json!({"reasoning_tokens": 30}));

    assert_sent_as_gemini(&mock, "generateContent");
    let record = relay.settled_usage(1).await.remove(0);
    assert_eq!((record.input_tokens, record.output_tokens), (21, 36));
    assert_eq!(record.cost_micros, 21 + 3 * 36);
}

#[tokio::test]
async fn a_prompt_gemini_blocks_is_an_answer_that_ends_in_content_filter() {
    let mock = MockUpstream::start().await;
    let blocked = r#"{"promptFeedback": {"blockReason": "SAFETY","safetyRatings": [{"category": "HARM_CATEGORY_DANGEROUS_CONTENT","probability": "HIGH"}]},"usageMetadata": {"promptTokenCount": 21,"totalTokenCount": 21},"modelVersion": "gemini-2.5-flash","responseId": "gem-3"}"#;
    mock.push(Reply::Stream(vec![Step::Raw(blocked)]));
    let relay = gemini_relay(&mock).start().await;

    let events = read_events(relay.send_chat(question(true)).await).await;
    let data: Vec<&str> = events.iter().map(|event| event.data.as_str()).collect();
    assert_eq!(data.last(), Some(&"[DONE]"), "{data:?}");
    let chunks: Vec<Value> =
        data[..data.len() - 1].iter().map(|d| serde_json::from_str(d).unwrap()).collect();
    assert_eq!(chunks[chunks.len() - 2]["choices"][0]["finish_reason"], "content_filter");
    assert_eq!(
        chunks[chunks.len() - 1]["usage"],
        json!({"prompt_tokens": 21, "completion_tokens": 0, "total_tokens": 21})
    );
    let record = relay.settled_usage(1).await.remove(0);
    assert_eq!((record.input_tokens, record.output_tokens, record.cost_micros), (21, 0, 21));
}

#[tokio::test]
async fn a_gemini_quota_error_is_a_429_with_its_retry_delay_and_its_body_stays_in_the_relay() {
    let mock = MockUpstream::start().await;
    let quota = r#"{"error": {"code": 429, "message": "You exceeded your current quota. Please migrate to Gemini 2.5 Flash Preview.", "status": "RESOURCE_EXHAUSTED", "details": [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "37s"}]}}"#;
    mock.push(Reply::Status { status: 429, retry_after: None, body: quota.into() });
    let relay = gemini_relay(&mock).start().await;

    let response = relay.send_chat(question(true)).await;
    assert_eq!(response.headers()["retry-after"], "37");
    let (status, body) = json_body(response).await;
    assert_eq!(status, 429);
    assert_eq!(
        body,
        json!({"error": {
            "message": "the model provider is rate limiting requests; retry later",
            "type": "rate_limit_error",
            "code": "upstream_rate_limited",
        }})
    );
}

#[tokio::test]
async fn a_gemini_stream_that_fails_or_ends_without_a_finish_ends_with_an_error_event() {
    let mock = MockUpstream::start().await;
    let failed = r#"{"error": {"code": 500, "message": "An internal error has occurred.", "status": "INTERNAL"}}"#;
    mock.push(Reply::Stream(vec![Step::Raw(THINKING_STREAM[0]), Step::Raw(failed)]));
    mock.push(Reply::Stream(vec![Step::Raw(THINKING_STREAM[0]), Step::Raw(THINKING_STREAM[1])]));
    let relay = gemini_relay(&mock).start().await;

    for (code, message) in [
        ("upstream_error", "the model provider reported an error while answering"),
        (
            "upstream_disconnected",
            "the model provider closed the connection before the answer was complete",
        ),
    ] {
        let events = read_events(relay.send_chat(question(true)).await).await;
        let last = events.last().unwrap();
        assert_eq!(last.event, "error", "{events:#?}");
        assert!(!events.iter().any(|event| event.data == "[DONE]"));
        assert_eq!(
            serde_json::from_str::<Value>(&last.data).unwrap(),
            json!({"error": {"message": message, "type": "upstream_error", "code": code}})
        );
        assert!(events.iter().any(|event| event.data.contains("We ship")), "text came first");
    }
}
