//! Malformed requests get a 400 or 413 that says what was wrong, and the relay keeps serving.

use confab_tests::{MockUpstream, Reply, TestRelay, json_body, wait_for_log};
use serde_json::{Value, json};

fn envelope(code: &str, message: &str) -> Value {
    json!({"error": {"message": message, "type": "invalid_request_error", "code": code}})
}

async fn send_raw(relay: &TestRelay, body: impl Into<reqwest::Body>) -> (u16, Value) {
    json_body(
        relay.chat().header("Content-Type", "application/json").body(body).send().await.unwrap(),
    )
    .await
}

#[tokio::test]
async fn each_kind_of_bad_input_gets_a_precise_error() {
    let mock = MockUpstream::start().await;
    let relay = TestRelay::builder(&mock).config(|c| c.limits.max_body_bytes = 2048).start().await;

    let cases: Vec<(Vec<u8>, u16, Value)> = vec![
        (
            b"{\"messages\": [".to_vec(),
            400,
            envelope(
                "invalid_json",
                "request body is not valid JSON: EOF while parsing a list at line 1 column 14",
            ),
        ),
        (
            b"{\"messages\": [}".to_vec(),
            400,
            envelope(
                "invalid_json",
                "request body is not valid JSON: expected value at line 1 column 15",
            ),
        ),
        (
            b"".to_vec(),
            400,
            envelope("invalid_json", "request body is empty; expected a JSON object"),
        ),
        (
            br#"{"messages": "hello"}"#.to_vec(),
            400,
            envelope(
                "invalid_field",
                "invalid `messages`: invalid type: string \"hello\", expected a sequence at line 1 column 20",
            ),
        ),
        (
            br#"{"model": "model-a"}"#.to_vec(),
            400,
            envelope(
                "invalid_field",
                "invalid request body: missing field `messages` at line 1 column 20",
            ),
        ),
        (
            br#"{"messages": [{"role": "hacker", "content": "x"}]}"#.to_vec(),
            400,
            envelope(
                "invalid_field",
                "invalid `messages[0].role`: unknown variant `hacker`, expected one of `system`, `developer`, `user`, `assistant`, `tool` at line 1 column 31",
            ),
        ),
        (
            br#"{"messages": [{"role": "user"}]}"#.to_vec(),
            400,
            envelope(
                "invalid_field",
                "invalid `messages[0]`: missing field `content` at line 1 column 30",
            ),
        ),
        (
            br#"{"messages": [{"role": "user", "content": 42}]}"#.to_vec(),
            400,
            envelope(
                "invalid_field",
                "invalid `messages[0].content`: invalid type: integer `42`, expected a string, an array of text parts or null at line 1 column 44",
            ),
        ),
        (
            br#"{"messages": [], "stream": "yes"}"#.to_vec(),
            400,
            envelope(
                "invalid_field",
                "invalid `stream`: invalid type: string \"yes\", expected a boolean at line 1 column 32",
            ),
        ),
        (
            br#"{"messages": []}"#.to_vec(),
            400,
            envelope("empty_messages", "`messages` must contain at least one message"),
        ),
        (
            br#"[1, 2]"#.to_vec(),
            400,
            envelope("invalid_json", "request body must be a JSON object"),
        ),
        (
            b"{\"messages\": [{\"role\": \"user\", \"content\": \"\xff\xfe\"}]}".to_vec(),
            400,
            envelope("invalid_body", "request body is not valid UTF-8 (invalid byte at offset 43)"),
        ),
        (
            format!(r#"{{"messages": [{{"role": "user", "content": "{}"}}]}}"#, "x".repeat(4096))
                .into_bytes(),
            413,
            envelope("body_too_large", "request body is larger than 2048 bytes"),
        ),
        (
            br#"{"messages": [{"role": "user", "content": "x"}]} trailing"#.to_vec(),
            400,
            envelope(
                "invalid_json",
                "request body is not valid JSON: trailing characters at line 1 column 50",
            ),
        ),
    ];
    for (body, status, expected) in cases {
        let shown = String::from_utf8_lossy(&body).chars().take(60).collect::<String>();
        assert_eq!(send_raw(&relay, body).await, (status, expected), "body: {shown}");
    }
    assert!(mock.requests().is_empty());

    // And the relay still serves.
    mock.push(Reply::answer(&["still here"], (1, 2)));
    let (status, body) =
        json_body(relay.send_chat(json!({"messages": [{"role": "user", "content": "hi"}]})).await)
            .await;
    assert_eq!(status, 200);
    assert_eq!(body["choices"][0]["message"]["content"], "still here");
}

#[tokio::test]
async fn a_body_over_the_limit_is_refused_even_when_it_streams_in_without_a_length() {
    let mock = MockUpstream::start().await;
    let relay = TestRelay::builder(&mock).config(|c| c.limits.max_body_bytes = 2048).start().await;
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        (0..10).map(|_| Ok(vec![b' '; 1024])).collect();
    let body = reqwest::Body::wrap_stream(futures_util::stream::iter(chunks));
    assert_eq!(
        send_raw(&relay, body).await,
        (413, envelope("body_too_large", "request body is larger than 2048 bytes"))
    );
}

#[tokio::test]
async fn unknown_routes_and_methods_answer_in_the_envelope() {
    let mock = MockUpstream::start().await;
    let relay = TestRelay::start(&mock).await;
    let response = relay.client.get(relay.url("/v1/nothing")).send().await.unwrap();
    assert_eq!(
        json_body(response).await,
        (404, envelope("not_found", "no route for GET /v1/nothing"))
    );
    let response = relay.client.get(relay.url("/v1/chat/completions")).send().await.unwrap();
    assert_eq!(
        json_body(response).await,
        (405, envelope("method_not_allowed", "method not allowed"))
    );
}

#[tokio::test]
async fn text_from_a_client_never_forges_a_log_line() {
    let mock = MockUpstream::start().await;
    let relay = TestRelay::start(&mock).await;
    let forged = "gpt\n2026-12-02T00:00:00Z  INFO admin: forged-line-from-a-model-name";
    let body = json!({"model": forged, "messages": [{"role": "user", "content": "Hi"}]});
    let (status, error) = json_body(relay.send_chat(body).await).await;
    assert_eq!(status, 404);
    assert_eq!(error["error"]["code"], "model_not_found");
    let snippet = "{\"messages\": [{\"role\": \"user\", \"content\": 7}], \"x\": \"\\nforged-line-from-json\"}";
    let (status, _) = send_raw(&relay, snippet).await;
    assert_eq!(status, 400);
    // The 4xx lines carry the error code; the client's text is in none of them.
    wait_for_log("code=model_not_found").await;
    let logs = confab_tests::captured_logs();
    assert!(!logs.contains("forged-line-from-a-model-name"), "{logs}");
    assert!(!logs.contains("forged-line-from-json"), "{logs}");
}
