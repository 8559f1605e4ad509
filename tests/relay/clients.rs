//! Slow, stalled and departing clients: none of them can hold a connection or an upstream call
//! for longer than the configured limits.

use std::time::Duration;

use confab_tests::{MockUpstream, Reply, SITE_ORIGIN, Step, TestRelay, WAIT, json_body};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Reads until the server closes the connection (bounded); returns what it sent.
async fn read_until_closed(stream: &mut TcpStream) -> String {
    let mut received = Vec::new();
    tokio::time::timeout(WAIT, stream.read_to_end(&mut received))
        .await
        .expect("the relay kept the connection open")
        .ok();
    String::from_utf8_lossy(&received).into_owned()
}

async fn connect(relay: &TestRelay) -> TcpStream {
    TcpStream::connect(relay.base_url.trim_start_matches("http://")).await.unwrap()
}

#[tokio::test]
async fn a_client_that_sends_its_headers_too_slowly_is_disconnected() {
    let mock = MockUpstream::start().await;
    let relay =
        TestRelay::builder(&mock).config(|c| c.timeouts.request_header_ms = 200).start().await;
    let mut stream = connect(&relay).await;
    stream.write_all(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n").await.unwrap();
    read_until_closed(&mut stream).await;
}

#[tokio::test]
async fn a_connection_that_sends_nothing_is_closed() {
    let mock = MockUpstream::start().await;
    let relay =
        TestRelay::builder(&mock).config(|c| c.timeouts.request_header_ms = 200).start().await;
    let mut silent = connect(&relay).await;
    assert_eq!(read_until_closed(&mut silent).await, "");
}

#[tokio::test]
async fn a_body_that_arrives_too_slowly_gets_408() {
    let mock = MockUpstream::start().await;
    let relay =
        TestRelay::builder(&mock).config(|c| c.timeouts.request_body_ms = 200).start().await;
    let mut stream = connect(&relay).await;
    let head = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\
         Origin: {SITE_ORIGIN}\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n\
         {{\"messages\":",
        relay.key
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let response = read_until_closed(&mut stream).await;
    assert!(response.starts_with("HTTP/1.1 408 Request Timeout\r\n"), "{response}");
    let body = response.split("\r\n\r\n").nth(1).unwrap();
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(body).unwrap(),
        json!({"error": {
            "message": "the request body was not received within 200 ms",
            "type": "invalid_request_error",
            "code": "request_timeout",
        }})
    );
    assert!(mock.requests().is_empty());
}

#[tokio::test]
async fn a_client_that_stops_reading_is_disconnected_and_its_upstream_call_cancelled() {
    let mock = MockUpstream::start().await;
    mock.push(Reply::Stream(vec![Step::Flood]));
    // Without a grace period (`resume.grace_ms = 0`), as is tested here, a client that leaves
    // ends the upstream call at once; with one, the answer outlives it (tests/relay/resume.rs).
    let relay = TestRelay::builder(&mock)
        .config(|c| c.timeouts.client_write_ms = 200)
        .config(|c| c.resume.grace_ms = 0)
        .start()
        .await;
    let mut stream = connect(&relay).await;
    let body = r#"{"stream":true,"messages":[{"role":"user","content":"hi"}]}"#;
    let request = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\
         Origin: {SITE_ORIGIN}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        relay.key,
        body.len()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    // The client never reads: once the socket buffers are full the relay's writes stall, and
    // after client_write_ms it gives up on the client and on the upstream call.
    mock.hangup().await;
}

#[tokio::test]
async fn a_client_that_leaves_before_the_first_token_cancels_the_upstream_call() {
    let mock = MockUpstream::start().await;
    // Headers are sent, then nothing: the relay is waiting for the first event.
    mock.push(Reply::Stream(vec![Step::Hang]));
    let relay = TestRelay::start(&mock).await;
    let request = tokio::spawn({
        let call = relay
            .chat()
            .json(&json!({"stream": true, "messages": [{"role": "user", "content": "hi"}]}));
        async move { call.send().await }
    });
    mock.request_received().await;
    request.abort();
    mock.hangup().await;
}

#[tokio::test]
async fn a_client_that_leaves_a_non_streamed_answer_cancels_the_upstream_call() {
    let mock = MockUpstream::start().await;
    mock.push(Reply::Stream(vec![Step::Endless(Duration::from_millis(10))]));
    let relay = TestRelay::start(&mock).await;
    let request = tokio::spawn({
        let call = relay.chat().json(&json!({"messages": [{"role": "user", "content": "hi"}]}));
        async move { call.send().await }
    });
    mock.request_received().await;
    request.abort();
    mock.hangup().await;
}

#[tokio::test]
async fn a_well_behaved_client_is_unaffected_by_the_limits() {
    let mock = MockUpstream::start().await;
    mock.push(Reply::Stream(vec![
        Step::Content("slow"),
        Step::Pause(Duration::from_millis(300)),
        Step::Content(" but fine"),
        Step::Finish("stop"),
        Step::Done,
    ]));
    // The answer takes longer than every client-side limit; only client behaviour counts.
    let relay = TestRelay::builder(&mock)
        .config(|c| {
            c.timeouts.request_header_ms = 100;
            c.timeouts.request_body_ms = 100;
            c.timeouts.client_write_ms = 100;
        })
        .start()
        .await;
    let (status, body) =
        json_body(relay.send_chat(json!({"messages": [{"role": "user", "content": "hi"}]})).await)
            .await;
    assert_eq!(status, 200);
    assert_eq!(body["choices"][0]["message"]["content"], "slow but fine");
}
