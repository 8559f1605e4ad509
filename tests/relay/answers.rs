//! Whole answers: a client that asks for no stream is answered by one upstream call that does
//! not stream either, passed on with only the model replaced.

use confab_server::store::{Outcome, UsageRecord};
use confab_tests::{MockUpstream, Reply, Step, TestRelay, json_body};
use serde_json::{Value, json};

fn hello() -> Value {
    json!({"messages": [{"role": "user", "content": "Hello"}], "max_tokens": 20})
}

fn envelope(kind: &str, code: &str, message: &str) -> Value {
    json!({"error": {"type": kind, "code": code, "message": message}})
}

/// Waits (bounded) until the one usage record of the test's one request is settled.
async fn only_usage_record(relay: &TestRelay) -> UsageRecord {
    let mut records = relay.settled_usage(1).await;
    assert_eq!(records.len(), 1, "one request, one record: {records:?}");
    records.remove(0)
}

#[tokio::test]
async fn a_whole_answer_is_the_upstreams_own_with_only_the_model_replaced() {
    let mock = MockUpstream::start().await;
    mock.push(Reply::answer(&["Hello", " there"], (7, 3)));
    let relay = TestRelay::metered(&mock).start().await;
    let response = relay.send_chat(hello()).await;
    assert_eq!(response.headers()["content-type"], "application/json");
    let (status, body) = json_body(response).await;
    assert_eq!(status, 200);
    // Every field the upstream sent is there, including those the relay does not know.
    assert_eq!(
        body,
        json!({
            "id": "chatcmpl-mock",
            "object": "chat.completion",
            "created": 1_700_000_000u64,
            "model": "model-a",
            "system_fingerprint": "fp_mock",
            "choices": [{
                "index": 0,
                "message": {"role": "assistant", "content": "Hello there", "refusal": null},
                "logprobs": null,
                "finish_reason": "stop",
            }],
            "usage": {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10},
        })
    );
    let sent = mock.only_request();
    assert_eq!((sent.get("stream"), sent.get("stream_options")), (None, None));

    let record = only_usage_record(&relay).await;
    assert_eq!(record.outcome, Outcome::Completed);
    assert_eq!((record.input_tokens, record.output_tokens, record.cost_micros), (7, 3, 10));
    assert!(!record.estimated);
    assert!(record.first_token_ms.is_some());
}

#[tokio::test]
async fn an_answer_without_usage_gets_the_relays_estimate_in_the_body_and_the_record() {
    let mock = MockUpstream::start().await;
    // 16 bytes of answer: 4 tokens. 34 bytes of prompt (the site's system prompt and "Hello") in
    // two messages: the prompt's ceiling, 34 + 2 x 4 + 3 = 45 tokens, is what an estimate charges.
    mock.push(Reply::Stream(vec![Step::Content("sixteen bytes!!!"), Step::Finish("stop")]));
    let relay = TestRelay::metered(&mock).start().await;
    let (status, body) = json_body(relay.send_chat(hello()).await).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["model"], "model-a");
    assert_eq!(body["choices"][0]["message"]["content"], "sixteen bytes!!!");
    assert_eq!(
        body["usage"],
        json!({"prompt_tokens": 45, "completion_tokens": 4, "total_tokens": 49})
    );
    let record = only_usage_record(&relay).await;
    assert_eq!((record.input_tokens, record.output_tokens, record.estimated), (45, 4, true));
}

#[tokio::test]
async fn an_answer_slower_than_answer_ms_is_a_504_and_the_upstream_call_is_cancelled() {
    let mock = MockUpstream::start().await;
    mock.push(Reply::Stream(vec![Step::Content("late"), Step::Hang]));
    let relay = TestRelay::metered(&mock).config(|c| c.timeouts.answer_ms = 200).start().await;
    assert_eq!(
        json_body(relay.send_chat(hello()).await).await,
        (
            504,
            envelope(
                "timeout_error",
                "upstream_timeout",
                "the model provider did not finish its answer within 200 ms"
            )
        )
    );
    mock.hangup().await;
    // The upstream took the request and may have generated all of it: the worst case is
    // charged (the prompt's ceiling, 45 tokens for 34 bytes in 2 messages, and all of
    // `max_tokens`, 20).
    let record = only_usage_record(&relay).await;
    assert_eq!((record.outcome, record.cost_micros), (Outcome::UpstreamError, 65));
    assert!(record.estimated);
}

#[tokio::test]
async fn an_answer_refused_with_an_error_status_costs_nothing() {
    let mock = MockUpstream::start().await;
    mock.push(Reply::Status { status: 503, retry_after: None, body: "busy".into() });
    let relay = TestRelay::metered(&mock).start().await;
    assert_eq!(relay.send_chat(hello()).await.status(), 502);
    let record = only_usage_record(&relay).await;
    assert_eq!((record.outcome, record.cost_micros), (Outcome::UpstreamError, 0));
}

#[tokio::test]
async fn an_answer_that_never_ends_is_cut_off_and_refused() {
    let mock = MockUpstream::start().await;
    mock.push(Reply::Stream(vec![Step::Flood]));
    let relay = TestRelay::start(&mock).await;
    assert_eq!(
        json_body(relay.send_chat(hello()).await).await,
        (
            502,
            envelope(
                "upstream_error",
                "upstream_invalid_response",
                "the model provider sent a response the relay could not read"
            )
        )
    );
    mock.hangup().await;
}

#[tokio::test]
async fn garbage_or_an_error_in_place_of_an_answer_is_reported_not_forwarded() {
    let mock = MockUpstream::start().await;
    let invalid = envelope(
        "upstream_error",
        "upstream_invalid_response",
        "the model provider sent a response the relay could not read",
    );
    let reported = envelope(
        "upstream_error",
        "upstream_error",
        "the model provider reported an error while answering",
    );
    let cases = [
        ("<html>oops</html>", &invalid),
        ("[1, 2]", &invalid),
        (r#"{"id": "x", "model": "m"}"#, &invalid),
        (r#"{"error": {"message": "overloaded"}}"#, &reported),
        (r#"{"model": "m", "choices": [], "error": {"message": "overloaded"}}"#, &reported),
    ];
    for (raw, _) in &cases {
        mock.push(Reply::Stream(vec![Step::Raw(raw)]));
    }
    let relay = TestRelay::start(&mock).await;
    for (raw, expected) in cases {
        assert_eq!(
            json_body(relay.send_chat(hello()).await).await,
            (502, expected.clone()),
            "{raw}"
        );
    }
}

#[tokio::test]
async fn a_client_that_leaves_before_the_answer_is_charged_the_worst_case() {
    let mock = MockUpstream::start().await;
    mock.push(Reply::Stream(vec![Step::Hang]));
    let relay = TestRelay::metered(&mock).start().await;
    let request = tokio::spawn({
        let call = relay.chat().json(&hello());
        async move { call.send().await }
    });
    mock.request_received().await;
    request.abort();
    mock.hangup().await;
    // What the upstream generated before the call was cancelled is unknown: the prompt's
    // ceiling (45) and all of `max_tokens` (20) are charged.
    let record = only_usage_record(&relay).await;
    assert_eq!(record.outcome, Outcome::Interrupted);
    assert_eq!((record.input_tokens, record.output_tokens, record.cost_micros), (45, 20, 65));
    assert!(record.estimated);
}
