//! What a request is charged however it ends: before the response head, after it but before
//! the first event, with absurd usage from the upstream, with text the byte rule under-counts;
//! a running request's worst case held in the reservation journal; tokens per minute under a burst; and
//! a stream that never ends.

use std::time::Duration;

use confab_server::keys::KeySpec;
use confab_server::store::{CallerLimits, Outcome, Scope, UsageRecord};
use confab_tests::{MockUpstream, Reply, SITE_ORIGIN, Step, TestRelay, read_events, wait_for_log};
use futures_util::StreamExt;
use serde_json::{Value, json};

/// The site's system prompt (29 bytes) and "Hello" (5 bytes) in two messages: a prompt ceiling
/// of 34 + 2 x 4 + 3 = 45 tokens.
const PROMPT_CEILING: u64 = 45;

fn hello(stream: bool) -> Value {
    json!({"stream": stream, "messages": [{"role": "user", "content": "Hello"}], "max_tokens": 20})
}

/// Waits (bounded) until the one usage record of the test's one request is settled.
async fn settled_record(relay: &TestRelay) -> UsageRecord {
    let mut records = relay.settled_usage(1).await;
    assert_eq!(records.len(), 1, "one request, one record: {records:?}");
    records.remove(0)
}

#[tokio::test]
async fn a_client_that_leaves_before_the_response_head_is_charged_its_prompt() {
    let mock = MockUpstream::start().await;
    mock.push(Reply::Hang);
    let relay = TestRelay::metered(&mock).start().await;
    let request = tokio::spawn(relay.chat().json(&hello(true)).send());
    mock.request_received().await;
    request.abort();
    // The relay drops the call when the client goes (the mock never answers, so it cannot
    // report the hang-up): the settled record is what shows it.
    let record = settled_record(&relay).await;
    assert_eq!(record.outcome, Outcome::Interrupted);
    assert_eq!((record.input_tokens, record.output_tokens), (PROMPT_CEILING, 0));
    assert_eq!(record.cost_micros, PROMPT_CEILING);
}

#[tokio::test]
async fn a_stream_that_fails_before_its_first_event_is_charged_its_prompt() {
    let mock = MockUpstream::start().await;
    mock.push(Reply::Stream(vec![Step::Hang]));
    let relay = TestRelay::metered(&mock).config(|c| c.timeouts.first_byte_ms = 200).start().await;
    let response = relay.send_chat(hello(true)).await;
    assert_eq!(response.status(), 504);
    let record = settled_record(&relay).await;
    assert_eq!(record.outcome, Outcome::UpstreamError);
    assert_eq!((record.input_tokens, record.output_tokens), (PROMPT_CEILING, 0));
}

#[tokio::test]
async fn an_upstream_that_refuses_with_an_error_status_costs_nothing() {
    let mock = MockUpstream::start().await;
    mock.push(Reply::Status { status: 500, retry_after: None, body: "{}".into() });
    let relay = TestRelay::metered(&mock).start().await;
    assert_eq!(relay.send_chat(hello(true)).await.status(), 502);
    let record = settled_record(&relay).await;
    assert_eq!((record.outcome, record.cost_micros), (Outcome::UpstreamError, 0));
}

#[tokio::test]
async fn usage_beyond_what_the_request_could_produce_is_clamped_and_logged() {
    let mock = MockUpstream::start().await;
    let absurd = (i64::MAX as u64, i64::MAX as u64 - 1);
    mock.push(Reply::answer(&["Hi"], absurd));
    let relay = TestRelay::metered(&mock).start().await;
    let response = relay.send_chat(hello(true)).await;
    assert_eq!(response.status(), 200);
    let _ = read_events(response).await;
    let record = settled_record(&relay).await;
    // The prompt's ceiling, and twice `max_tokens` (20): the most the request could produce.
    assert_eq!((record.input_tokens, record.output_tokens), (PROMPT_CEILING, 40));
    assert_eq!(record.cost_micros, PROMPT_CEILING + 40);
    wait_for_log("usage beyond what the request could produce; clamped").await;
}

#[tokio::test]
async fn absurd_usage_rows_in_the_database_do_not_keep_the_relay_from_starting() {
    let mock = MockUpstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let first = TestRelay::metered(&mock)
        .database(dir.path())
        .site(|s| s.limits.monthly_budget_micros = Some(1_000_000))
        .start()
        .await;
    let now_ms =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis();
    // Two rows whose costs sum past i64::MAX (written as an older relay could have).
    let row = |id: &str| UsageRecord {
        request_id: id.into(),
        at_ms: i64::try_from(now_ms).unwrap(),
        site_id: Some(first.site_id.clone()),
        key_id: None,
        visitor: None,
        model: "model-a".into(),
        upstream: "mock".into(),
        input_tokens: u64::MAX,
        output_tokens: u64::MAX,
        cache_read_tokens: 0,
        cache_write_tokens: 0,
        estimated: false,
        cost_micros: u64::MAX,
        first_token_ms: None,
        total_ms: 1,
        outcome: Outcome::Completed,
    };
    first.store.record_usage(&[row("req_a"), row("req_b")]).await.unwrap();
    let first_key = first.key.clone();
    first.stop().await;

    // Before, summing them failed and the relay could not start.
    let second = TestRelay::metered(&mock).database(dir.path()).start().await;
    // The first site's spend saturated: its budget is exhausted, and the relay says so.
    let response =
        second.chat_as(&first_key, Some(SITE_ORIGIN)).json(&hello(false)).send().await.unwrap();
    assert_eq!(response.status(), 402);
}

#[tokio::test]
async fn concurrent_requests_together_stay_within_tokens_per_minute() {
    let mock = MockUpstream::start().await;
    for _ in 0..5 {
        mock.push(Reply::Stream(vec![Step::WaitForGate, Step::Content("ok"), Step::Done]));
    }
    let relay = TestRelay::metered(&mock).start().await;
    let limits = CallerLimits { tpm: Some(100), ..CallerLimits::default() };
    let spec =
        KeySpec { name: "backend".into(), scopes: vec![Scope::Chat], limits, ..KeySpec::default() };
    let (_, secret) = relay.create_key(spec).await;
    // 40 bytes in one message (a ceiling of 47) and max_tokens 20: 67 tokens reserved each. The
    // first fits, the second finds room for one more token and takes the window into debt, and
    // the rest find it in debt, although none of them has finished.
    let body = json!({"stream": true, "max_tokens": 20,
        "messages": [{"role": "user", "content": "x".repeat(40)}]});
    let mut open = Vec::new();
    for i in 0..5 {
        let call = relay.chat_as(&secret, None).json(&body);
        open.push(tokio::spawn(call.send()));
        if i < 2 {
            // Admitted and in flight: its reservation is held until it settles.
            mock.request_received().await;
        }
    }
    // The last three are answered while the first two still hold their reservations.
    let admitted = open.drain(..2).collect::<Vec<_>>();
    let mut codes = Vec::new();
    for request in open {
        codes.push(request.await.unwrap().unwrap().status().as_u16());
    }
    assert_eq!(codes, [429, 429, 429]);
    mock.open_gate();
    for request in admitted {
        let response = request.await.unwrap().unwrap();
        assert_eq!(response.status(), 200);
        let _ = response.bytes().await;
    }
}

#[tokio::test]
async fn an_interrupted_stream_of_cjk_text_is_estimated_by_its_chunks_not_its_bytes() {
    let mock = MockUpstream::start().await;
    // Ten chunks of one CJK character (3 bytes) each: 30 bytes is 8 tokens by the byte rule, but
    // each chunk is at least a token.
    let mut steps: Vec<Step> = (0..10).map(|_| Step::Content("語")).collect();
    steps.push(Step::Hang);
    mock.push(Reply::Stream(steps));
    // Without a grace period (`resume.grace_ms = 0`), as is tested here, a client that leaves
    // ends the upstream call at once; with one, the answer outlives it (tests/relay/resume.rs).
    let relay = TestRelay::metered(&mock).config(|c| c.resume.grace_ms = 0).start().await;
    let response = relay.send_chat(hello(true)).await;
    assert_eq!(response.status(), 200);
    let mut body = response.bytes_stream();
    let mut seen = 0;
    while seen < 10 {
        let chunk = body.next().await.expect("stream ended early").unwrap();
        seen += String::from_utf8_lossy(&chunk).matches("語").count();
    }
    drop(body);
    mock.hangup().await;
    let record = settled_record(&relay).await;
    assert_eq!(record.outcome, Outcome::Interrupted);
    assert_eq!((record.input_tokens, record.output_tokens), (PROMPT_CEILING, 10));
}

/// The lines of the relay's reservation journal (every segment), as JSON.
fn journal_lines(relay: &TestRelay) -> Vec<Value> {
    let dir = relay.config.journal_dir().expect("a file database has a journal");
    let mut lines = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "jsonl") {
            let text = std::fs::read_to_string(&path).unwrap();
            lines.extend(text.lines().map(|line| serde_json::from_str::<Value>(line).unwrap()));
        }
    }
    lines
}

#[tokio::test]
async fn a_running_request_has_its_worst_case_in_the_journal_before_the_upstream_sees_it() {
    let mock = MockUpstream::start().await;
    mock.push(Reply::Stream(vec![Step::WaitForRelease, Step::Content("ok"), Step::Done]));
    // Batches of finished records far apart: nothing reaches the database meanwhile.
    let relay = TestRelay::metered(&mock).config(|c| c.usage.flush_ms = 600_000).start().await;
    let request = tokio::spawn(relay.chat().json(&hello(true)).send());
    mock.request_received().await;
    assert!(relay.store.usage_since(0, None, None).await.unwrap().is_empty());
    let lines = journal_lines(&relay);
    assert_eq!(lines.len(), 1, "{lines:?}");
    let pending = &lines[0];
    assert_eq!(
        (pending["input_tokens"].as_u64(), pending["output_tokens"].as_u64()),
        (Some(PROMPT_CEILING), Some(20))
    );
    assert_eq!(pending["cost_micros"], PROMPT_CEILING + 20);
    let request_id = pending["request_id"].as_str().unwrap().to_owned();
    assert!(request_id.starts_with("req_"));
    mock.release();
    let response = request.await.unwrap().unwrap();
    assert_eq!(
        response.headers()["x-request-id"].to_str().unwrap(),
        request_id,
        "the journal line carries the response's request id"
    );
    let _ = response.bytes().await;
    relay.stop().await;
}

#[tokio::test]
async fn a_stream_that_never_ends_is_ended_at_stream_ms_and_settled() {
    let mock = MockUpstream::start().await;
    mock.push(Reply::Stream(vec![Step::Endless(Duration::from_millis(10))]));
    let relay = TestRelay::metered(&mock).config(|c| c.timeouts.stream_ms = 300).start().await;
    let response = relay.send_chat(hello(true)).await;
    assert_eq!(response.status(), 200);
    let events = tokio::time::timeout(Duration::from_secs(10), read_events(response))
        .await
        .expect("the endless stream was not ended");
    let last = events.last().unwrap();
    assert_eq!(last.event, "error");
    let error: Value = serde_json::from_str(&last.data).unwrap();
    assert_eq!(error["error"]["code"], "upstream_timeout");
    let record = settled_record(&relay).await;
    assert_eq!(record.outcome, Outcome::UpstreamError);
    assert!(record.output_tokens > 0);
}
