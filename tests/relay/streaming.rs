//! The streamed and the whole answer, event by event.

use confab_tests::{MOCK_MODEL_NAME, MockUpstream, Reply, Step, TestRelay, read_events, read_raw};
use eventsource_stream::Eventsource;
use futures_util::StreamExt;
use serde_json::{Value, json};

fn hello() -> Value {
    json!({"stream": true, "messages": [{"role": "user", "content": "Hello"}]})
}

#[tokio::test]
async fn streams_each_chunk_then_the_usage_chunk_then_done() {
    let mock = MockUpstream::start().await;
    mock.push(Reply::answer(&["Hel", "lo", "!"], (12, 3)));
    let relay = TestRelay::start(&mock).await;

    let response = relay.send_chat(hello()).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    assert_eq!(response.headers()["x-accel-buffering"], "no");
    assert_eq!(response.headers()["cache-control"], "no-cache");
    let events = read_events(response).await;

    let data: Vec<&str> = events.iter().map(|e| e.data.as_str()).collect();
    assert_eq!(data.len(), 6, "{data:#?}");
    assert!(events.iter().all(|e| e.event == "message"));
    let chunks: Vec<Value> = data[..5].iter().map(|d| serde_json::from_str(d).unwrap()).collect();
    let chunk = |choices: Value| {
        json!({
            "id": "chatcmpl-mock", "object": "chat.completion.chunk", "created": 1_700_000_000u64,
            // The upstream's own model name is rewritten to the model the site asked for.
            "model": "model-a", "choices": choices,
        })
    };
    let content = |text: &str| {
        chunk(json!([{"index": 0, "delta": {"content": text}, "finish_reason": null}]))
    };
    assert_eq!(chunks[0], content("Hel"));
    assert_eq!(chunks[1], content("lo"));
    assert_eq!(chunks[2], content("!"));
    assert_eq!(chunks[3], chunk(json!([{"index": 0, "delta": {}, "finish_reason": "stop"}])));
    let mut usage = chunk(json!([]));
    usage["usage"] = json!({"prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 15});
    assert_eq!(chunks[4], usage);
    assert_eq!(data[5], "[DONE]");
    assert!(!data.iter().any(|d| d.contains(MOCK_MODEL_NAME)));
}

#[tokio::test]
async fn asks_the_upstream_for_a_stream_with_usage_using_the_relays_own_key() {
    let mock = MockUpstream::start().await;
    mock.push(Reply::answer(&["ok"], (1, 1)));
    let relay = TestRelay::start(&mock).await;

    // The client asks for a stream but not for usage.
    let response = relay.send_chat(hello()).await;
    assert_eq!(response.status(), 200);
    response.text().await.unwrap();

    let requests = mock.requests();
    assert_eq!(requests.len(), 1);
    assert_eq!(
        requests[0].authorization.as_deref(),
        Some(format!("Bearer {}", confab_tests::UPSTREAM_SECRET).as_str())
    );
    assert_eq!(requests[0].body["stream"], json!(true));
    assert_eq!(requests[0].body["stream_options"], json!({"include_usage": true}));
}

#[tokio::test]
async fn each_chunk_reaches_the_client_before_the_upstream_sends_the_next() {
    let mock = MockUpstream::start().await;
    mock.push(Reply::Stream(vec![
        Step::Content("first"),
        Step::WaitForRelease,
        Step::Content("second"),
        Step::Finish("stop"),
        Step::Usage { prompt: 1, completion: 2 },
        Step::Done,
    ]));
    let relay = TestRelay::start(&mock).await;

    let response = relay.send_chat(hello()).await;
    let mut events = response.bytes_stream().eventsource();
    let first =
        tokio::time::timeout(confab_tests::WAIT, events.next()).await.unwrap().unwrap().unwrap();
    // The upstream is still holding "second": the first chunk was not buffered.
    let first: Value = serde_json::from_str(&first.data).unwrap();
    assert_eq!(first["choices"][0]["delta"]["content"], "first");
    mock.release();
    let second =
        tokio::time::timeout(confab_tests::WAIT, events.next()).await.unwrap().unwrap().unwrap();
    let second: Value = serde_json::from_str(&second.data).unwrap();
    assert_eq!(second["choices"][0]["delta"]["content"], "second");
}

/// Both ways a stream is sent: resumable (the default, through a replay log) and passed
/// through as it is read (`resume.grace_ms = 0`).
const GRACE_PERIODS: [u64; 2] = [60_000, 0];

#[tokio::test]
async fn events_that_arrive_in_one_read_leave_the_relay_in_one_body_frame() {
    for grace_ms in GRACE_PERIODS {
        let mock = MockUpstream::start().await;
        // Seven events in one write of the upstream: four words, the finish, usage, `[DONE]`.
        let chunk = |choices: Value, usage: Option<Value>| {
            let mut chunk = json!({"id": "c", "object": "chat.completion.chunk", "created": 1,
                "model": MOCK_MODEL_NAME, "choices": choices});
            if let Some(usage) = usage {
                chunk["usage"] = usage;
            }
            format!("data: {chunk}\n\n")
        };
        let mut body: String = ["one", "two", "three", "four"]
            .iter()
            .map(|word| chunk(json!([{"index": 0, "delta": {"content": word}}]), None))
            .collect();
        body += &chunk(json!([{"index": 0, "delta": {}, "finish_reason": "stop"}]), None);
        let usage = json!({"prompt_tokens": 1, "completion_tokens": 4, "total_tokens": 5});
        body += &chunk(json!([]), Some(usage));
        body += "data: [DONE]\n\n";
        mock.push(Reply::Stream(vec![Step::Bytes(body)]));
        let relay =
            TestRelay::builder(&mock).config(|c| c.resume.grace_ms = grace_ms).start().await;

        let response = relay.send_chat(hello()).await;
        let frames: Vec<bytes::Bytes> = tokio::time::timeout(
            confab_tests::WAIT,
            response.bytes_stream().map(Result::unwrap).collect(),
        )
        .await
        .unwrap();
        let events: Vec<_> =
            futures_util::stream::iter(frames.iter().cloned().map(Ok::<_, String>))
                .eventsource()
                .map(Result::unwrap)
                .collect()
                .await;
        let data: Vec<&str> = events.iter().map(|e| e.data.as_str()).collect();
        assert_eq!(data.len(), 7, "grace_ms = {grace_ms}: {data:#?}");
        assert_eq!(data[6], "[DONE]");
        // One body frame for all of them (each a chunk of its own before): the first event
        // alone, then the rest, at most, should a read split them.
        assert!(frames.len() <= 2, "grace_ms = {grace_ms}: {} body frames", frames.len());
    }
}

#[tokio::test]
async fn on_either_path_an_event_is_sent_before_the_upstream_sends_the_next() {
    for grace_ms in GRACE_PERIODS {
        let mock = MockUpstream::start().await;
        mock.push(Reply::Stream(vec![
            Step::Content("first"),
            Step::Content("also first"),
            Step::WaitForRelease,
            Step::Content("second"),
            Step::WaitForRelease,
            Step::Finish("stop"),
            Step::Usage { prompt: 1, completion: 2 },
            Step::Done,
        ]));
        let relay =
            TestRelay::builder(&mock).config(|c| c.resume.grace_ms = grace_ms).start().await;

        let response = relay.send_chat(hello()).await;
        let mut events = response.bytes_stream().eventsource();
        let mut next = async || {
            let event = tokio::time::timeout(confab_tests::WAIT, events.next()).await;
            let event = event.unwrap().unwrap().unwrap();
            serde_json::from_str::<Value>(&event.data).unwrap()["choices"][0]["delta"]["content"]
                .clone()
        };
        // The upstream holds "second" until released: what came before it was not held back.
        assert_eq!(next().await, "first", "grace_ms = {grace_ms}");
        assert_eq!(next().await, "also first", "grace_ms = {grace_ms}");
        mock.release();
        assert_eq!(next().await, "second", "grace_ms = {grace_ms}");
        mock.release();
    }
}

#[tokio::test]
async fn estimates_usage_when_the_upstream_reports_none() {
    let mock = MockUpstream::start().await;
    mock.push(Reply::Stream(vec![Step::Content("twelve bytes"), Step::Finish("stop"), Step::Done]));
    let relay = TestRelay::start(&mock).await;

    let events = read_events(relay.send_chat(hello()).await).await;
    let data: Vec<&str> = events.iter().map(|e| e.data.as_str()).collect();
    assert_eq!(data.last(), Some(&"[DONE]"));
    let usage: Value = serde_json::from_str(data[data.len() - 2]).unwrap();
    assert_eq!(usage["choices"], json!([]));
    // Sent upstream: the site prompt (29 bytes) and "Hello" (5 bytes) in two messages, charged at
    // the prompt's ceiling: 34 + 2 x 4 + 3 = 45 tokens; streamed: 12 bytes in one chunk -> 3 tokens.
    assert_eq!(
        usage["usage"],
        json!({"prompt_tokens": 45, "completion_tokens": 3, "total_tokens": 48})
    );
}

#[tokio::test]
async fn sends_heartbeat_comments_while_the_upstream_is_silent() {
    let mock = MockUpstream::start().await;
    mock.push(Reply::Stream(vec![
        Step::Content("a"),
        Step::WaitForRelease,
        Step::Finish("stop"),
        Step::Done,
    ]));
    let relay = TestRelay::builder(&mock).config(|c| c.server.heartbeat_ms = 20).start().await;

    let response = relay.send_chat(hello()).await;
    let mut body = response.bytes_stream();
    let mut seen = String::new();
    // Read until a heartbeat comment follows the first chunk, then let the upstream finish.
    tokio::time::timeout(confab_tests::WAIT, async {
        while !seen.contains("\"a\"") || !seen.split("\"a\"").nth(1).unwrap().contains("\n:") {
            seen.push_str(std::str::from_utf8(&body.next().await.unwrap().unwrap()).unwrap());
        }
    })
    .await
    .expect("no heartbeat comment arrived");
    mock.release();
    let mut rest = String::new();
    while let Some(bytes) = body.next().await {
        rest.push_str(std::str::from_utf8(&bytes.unwrap()).unwrap());
    }
    assert!(rest.ends_with("data: [DONE]\n\n"), "{rest}");
}

#[tokio::test]
async fn a_stream_is_plain_server_sent_events_on_the_wire() {
    let mock = MockUpstream::start().await;
    mock.push(Reply::answer(&["x"], (1, 1)));
    let relay = TestRelay::start(&mock).await;
    let raw = read_raw(relay.send_chat(hello()).await).await;
    // Each event carries its place in the stream, to resume it from (`resume`).
    assert!(raw.starts_with("id: 1\ndata: {"), "{raw}");
    assert!(raw.ends_with("\n\nid: 4\ndata: [DONE]\n\n"), "{raw}");
}

#[tokio::test]
async fn adds_the_usage_chunk_when_the_upstream_put_its_usage_on_a_chunk_with_choices() {
    let mock = MockUpstream::start().await;
    mock.push(Reply::Stream(vec![
        Step::Content("hi"),
        Step::Raw(
            r#"{"id":"chatcmpl-mock","object":"chat.completion.chunk","created":1700000000,"model":"x","choices":[{"index":0,"delta":{},"finish_reason":"stop"}],"usage":{"prompt_tokens":5,"completion_tokens":1,"total_tokens":6}}"#,
        ),
        Step::Done,
    ]));
    let relay = TestRelay::start(&mock).await;
    let events = read_events(relay.send_chat(hello()).await).await;
    let data: Vec<&str> = events.iter().map(|e| e.data.as_str()).collect();
    assert_eq!(data.len(), 4, "{data:#?}");
    let usage: Value = serde_json::from_str(data[2]).unwrap();
    assert_eq!(
        usage,
        json!({
            "id": "chatcmpl-mock", "object": "chat.completion.chunk", "created": 1_700_000_000u64,
            "model": "model-a", "choices": [],
            "usage": {"prompt_tokens": 5, "completion_tokens": 1, "total_tokens": 6},
        })
    );
    assert_eq!(data[3], "[DONE]");
}
