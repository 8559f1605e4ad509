//! Rate limits, budgets and usage records, through real HTTP.

use std::time::Duration;

use confab_server::keys::KeySpec;
use confab_server::store::{CallerLimits, Outcome, Scope, UsageRecord, VisitorLimits};
use confab_tests::{MockUpstream, Reply, Step, TestRelay, json_body};
use futures_util::StreamExt;
use futures_util::future::join_all;
use serde_json::{Value, json};

fn hello() -> Value {
    json!({"messages": [{"role": "user", "content": "Hello"}], "max_tokens": 20})
}

fn key_spec(limits: CallerLimits) -> KeySpec {
    KeySpec { name: "backend".into(), scopes: vec![Scope::Chat], limits, ..KeySpec::default() }
}

async fn usage_records(relay: &TestRelay, count: usize) -> Vec<UsageRecord> {
    relay.settled_usage(count).await
}

#[tokio::test]
async fn a_limit_of_n_per_minute_under_concurrent_load_admits_exactly_n() {
    let mock = MockUpstream::start().await;
    for _ in 0..40 {
        mock.push(Reply::answer(&["ok"], (1, 1)));
    }
    let relay = TestRelay::metered(&mock).start().await;
    let (_, secret) =
        relay.create_key(key_spec(CallerLimits { rpm: Some(10), ..Default::default() })).await;

    let responses =
        join_all((0..40).map(|_| relay.chat_as(&secret, None).json(&hello()).send())).await;
    let mut statuses: Vec<u16> =
        responses.iter().map(|r| r.as_ref().unwrap().status().as_u16()).collect();
    statuses.sort_unstable();
    assert_eq!(statuses.iter().filter(|s| **s == 200).count(), 10, "{statuses:?}");
    assert_eq!(statuses.iter().filter(|s| **s == 429).count(), 30, "{statuses:?}");
    assert_eq!(mock.requests().len(), 10, "refused requests never reach the upstream");
}

#[tokio::test]
async fn a_rate_limited_response_names_the_limit_and_says_when_to_retry() {
    let mock = MockUpstream::start().await;
    for _ in 0..2 {
        mock.push(Reply::answer(&["ok"], (1, 1)));
    }
    let relay = TestRelay::metered(&mock)
        .site(|s| s.visitor_limits = VisitorLimits { rpm: Some(2), ..Default::default() })
        .start()
        .await;
    for (remaining, remaining_today) in [("1", "499"), ("0", "498")] {
        let response = relay.send_chat(hello()).await;
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["x-ratelimit-limit"], "2");
        assert_eq!(response.headers()["x-ratelimit-remaining"], remaining);
        assert_eq!(response.headers()["x-ratelimit-remaining-rpm"], remaining);
        assert_eq!(response.headers()["x-ratelimit-remaining-rpd"], remaining_today);
    }
    let response = relay.send_chat(hello()).await;
    let headers = response.headers().clone();
    assert_eq!(headers["retry-after"], "30");
    assert_eq!(headers["x-ratelimit-remaining"], "0");
    assert_eq!(headers["x-ratelimit-reset"], "60");
    assert_eq!(
        json_body(response).await,
        (
            429,
            json!({"error": {
                "message": "rate limit exceeded: the visitor's limit of 2 requests per minute; retry in 30 s",
                "type": "rate_limit_error",
                "code": "rate_limit_exceeded",
            }})
        )
    );
    assert_eq!(mock.requests().len(), 2);
}

#[tokio::test]
async fn visitors_behind_a_trusted_proxy_are_told_apart_by_x_forwarded_for() {
    let mock = MockUpstream::start().await;
    for _ in 0..4 {
        mock.push(Reply::answer(&["ok"], (1, 1)));
    }
    let from = |relay: &TestRelay, ip: &str| {
        relay.chat().header("X-Forwarded-For", format!("{ip}, 127.0.0.1")).json(&hello()).send()
    };
    // Behind a proxy the relay trusts, each client address has its own limit...
    let relay = TestRelay::metered(&mock)
        .config(|c| c.server.trusted_proxies = vec!["127.0.0.1".parse().unwrap()])
        .site(|s| s.visitor_limits = VisitorLimits { rpm: Some(1), ..Default::default() })
        .start()
        .await;
    assert_eq!(from(&relay, "203.0.113.1").await.unwrap().status(), 200);
    assert_eq!(from(&relay, "203.0.113.2").await.unwrap().status(), 200);
    assert_eq!(from(&relay, "203.0.113.1").await.unwrap().status(), 429);
    // ...while from anyone else the header is ignored: it cannot be used to dodge the limit.
    let untrusting = TestRelay::metered(&mock)
        .site(|s| s.visitor_limits = VisitorLimits { rpm: Some(1), ..Default::default() })
        .start()
        .await;
    assert_eq!(from(&untrusting, "203.0.113.1").await.unwrap().status(), 200);
    assert_eq!(from(&untrusting, "203.0.113.2").await.unwrap().status(), 429);
}

#[tokio::test]
async fn tokens_per_minute_hold_back_the_next_request_after_a_large_answer() {
    let mock = MockUpstream::start().await;
    mock.push(Reply::answer(&["a long answer"], (40, 60)));
    let relay = TestRelay::metered(&mock).start().await;
    let (_, secret) =
        relay.create_key(key_spec(CallerLimits { tpm: Some(50), ..Default::default() })).await;
    let first = relay.chat_as(&secret, None).json(&hello()).send().await.unwrap();
    assert_eq!(first.status(), 200);
    let _ = first.bytes().await;
    // 100 tokens against 50 per minute: the next request waits until the debt is paid.
    let (status, body) =
        json_body(relay.chat_as(&secret, None).json(&hello()).send().await.unwrap()).await;
    assert_eq!(status, 429, "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("50 tokens per minute"), "{body}");
}

#[tokio::test]
async fn two_hundred_concurrent_requests_against_a_budget_for_fifty_serve_exactly_fifty() {
    let mock = MockUpstream::start().await;
    for _ in 0..200 {
        mock.push(Reply::Stream(vec![
            Step::WaitForGate,
            Step::Content("ok"),
            Step::Finish("stop"),
            Step::Usage { prompt: 12, completion: 20 },
            Step::Done,
        ]));
    }
    let relay = TestRelay::metered(&mock).start().await;
    // The worst case of `hello()`: 5 prompt bytes + 4 per message + 3 = 12 tokens, plus
    // max_tokens 20; at one micro-dollar a token, 32 micro-dollars. The upstream then reports
    // exactly that, so the budget is spent to the last micro-dollar and not one more.
    let worst_case = 32;
    let budget = 50 * worst_case;
    let (key, secret) = relay
        .create_key(key_spec(CallerLimits {
            monthly_budget_micros: Some(budget),
            ..Default::default()
        }))
        .await;

    let requests = (0..200).map(|_| {
        let request = relay.chat_as(&secret, None).json(&hello());
        async move {
            let response = request.send().await.unwrap();
            json_body(response).await
        }
    });
    let all = tokio::spawn(join_all(requests));
    // Hold every admitted call open until all 200 have been decided, so that no reservation
    // is settled (and freed) while others are still being admitted.
    tokio::time::timeout(Duration::from_secs(20), async {
        while mock.requests().len() < 50 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("50 calls never reached the upstream");
    tokio::time::sleep(Duration::from_millis(300)).await;
    mock.open_gate();
    let results = all.await.unwrap();

    let served = results.iter().filter(|(status, _)| *status == 200).count();
    let refused: Vec<&Value> =
        results.iter().filter(|(status, _)| *status == 402).map(|(_, body)| body).collect();
    assert_eq!(served, 50);
    assert_eq!(refused.len(), 150);
    assert_eq!(
        refused[0],
        &json!({"error": {
            "message": "the key's monthly budget of $0.00 has too little left for this request",
            "type": "insufficient_quota",
            "code": "insufficient_quota",
        }})
    );
    assert_eq!(mock.requests().len(), 50, "refused calls never reach the upstream");

    let records = usage_records(&relay, 50).await;
    let spent: u64 = records.iter().map(|r| r.cost_micros).sum();
    assert_eq!(records.len(), 50);
    assert!(records.iter().all(|r| r.key_id.as_deref() == Some(key.id.as_str())));
    assert_eq!(spent, budget, "recorded spend is the budget, to the micro-dollar");
    // And now it is used up.
    let (status, body) =
        json_body(relay.chat_as(&secret, None).json(&hello()).send().await.unwrap()).await;
    assert_eq!(status, 402);
    assert_eq!(body["error"]["message"], "the key's monthly budget of $0.00 is used up");
}

#[tokio::test]
async fn a_request_that_does_not_fit_the_site_budget_gets_402_before_any_upstream_call() {
    let mock = MockUpstream::start().await;
    let relay = TestRelay::metered(&mock)
        .site(|s| {
            s.limits = CallerLimits { daily_budget_micros: Some(31), ..Default::default() };
        })
        .start()
        .await;
    let (status, body) = json_body(relay.send_chat(hello()).await).await;
    assert_eq!(status, 402);
    assert_eq!(
        body["error"]["message"],
        "the site's daily budget of $0.00 has too little left for this request"
    );
    assert!(mock.requests().is_empty());
}

#[tokio::test]
async fn a_stream_the_client_drops_half_way_is_recorded_with_the_tokens_it_generated() {
    let mock = MockUpstream::start().await;
    mock.push(Reply::Stream(vec![
        Step::Content("twelve bytes"),
        Step::Content(" more text!!"),
        Step::Hang,
    ]));
    // Without a grace period (`resume.grace_ms = 0`), as is tested here, a client that leaves
    // ends the upstream call at once; with one, the answer outlives it (tests/relay/resume.rs).
    let relay = TestRelay::metered(&mock).config(|c| c.resume.grace_ms = 0).start().await;
    let mut request = hello();
    request["stream"] = json!(true);
    let response = relay.send_chat(request).await;
    assert_eq!(response.status(), 200);
    let mut body = response.bytes_stream();
    let mut seen = String::new();
    while !seen.contains("more text") {
        let chunk = body.next().await.expect("stream ended early").unwrap();
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    drop(body);
    mock.hangup().await;

    let records = usage_records(&relay, 1).await;
    let record = &records[0];
    assert_eq!(record.outcome, Outcome::Interrupted);
    assert!(record.estimated, "the upstream sent no usage: the relay estimated it");
    // About four bytes a token: 24 bytes streamed (in 2 chunks); the prompt at its ceiling, 45
    // tokens for 34 bytes (the site's system prompt and "Hello") in 2 messages.
    assert_eq!((record.input_tokens, record.output_tokens), (45, 6));
    assert_eq!(record.cost_micros, 51, "what was generated is paid for, never zero");
    assert!(record.first_token_ms.is_some());
}

#[tokio::test]
async fn a_completed_request_is_recorded_with_its_caller_tokens_cost_and_a_hashed_visitor() {
    let mock = MockUpstream::start().await;
    mock.push(Reply::answer(&["Hi"], (7, 3)));
    let relay = TestRelay::metered(&mock).start().await;
    let response = relay.send_chat(hello()).await;
    assert_eq!(response.status(), 200);
    let records = usage_records(&relay, 1).await;
    let record = &records[0];
    assert_eq!(record.site_id.as_deref(), Some(relay.site_id.as_str()));
    assert_eq!(record.key_id, None);
    assert_eq!((record.model.as_str(), record.upstream.as_str()), ("model-a", "mock"));
    assert_eq!((record.input_tokens, record.output_tokens, record.cost_micros), (7, 3, 10));
    assert!(!record.estimated);
    assert_eq!(record.outcome, Outcome::Completed);
    let visitor = record.visitor.as_deref().unwrap();
    assert!(visitor.len() == 32 && visitor.bytes().all(|b| b.is_ascii_hexdigit()), "{visitor}");
    assert!(!visitor.contains("127.0.0.1"));
}
