//! Routes: a model served by an ordered list of targets. A call falls back to the next target
//! only before any of the answer reached the client, within the retry budget; a target whose
//! breaker is open is skipped without a connection attempt; the target that answered is named
//! in `X-Confab-Upstream` and in the usage record, priced at its own model.

use std::time::Duration;

use confab_server::config::{Config, FallbackConfig, ModelConfig, UpstreamConfig, UpstreamKind};
use confab_server::keys::KeySpec;
use confab_server::store::{Outcome, Scope};
use confab_tests::{MockUpstream, Reply, Step, TestRelay, json_body, read_events};
use serde_json::{Value, json};

/// A relay whose `support-bot` is served by `mock:model-a`, then `backup:model-z` (a second
/// mock), each priced at one micro-dollar a token (`model-z` at two), and a secret key for it.
async fn relay_with_backup(
    main: &MockUpstream,
    backup: &MockUpstream,
    fallback: FallbackConfig,
) -> (TestRelay, String) {
    relay_with_backup_and(main, backup, |c| c.fallback = fallback).await
}

/// [`relay_with_backup`] with its configuration changed by `configure` too.
async fn relay_with_backup_and(
    main: &MockUpstream,
    backup: &MockUpstream,
    configure: impl FnOnce(&mut Config),
) -> (TestRelay, String) {
    let backup_url = backup.base_url.clone();
    let token = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(token.path(), ADMIN_TOKEN).unwrap();
    let token_file = token.into_temp_path().keep().unwrap();
    let relay = TestRelay::metered(main)
        .config(move |c| {
            c.admin.token_file = Some(token_file);
            c.upstreams.push(UpstreamConfig {
                name: "backup".into(),
                kind: UpstreamKind::Openai,
                base_url: Some(backup_url),
                api_key_env: None,
                api_key_file: None,
                models: vec!["model-z".into()],
            });
            c.models.push(ModelConfig {
                name: "support-bot".into(),
                targets: vec!["mock:model-a".into(), "backup:model-z".into()],
                context_length: Some(128_000),
            });
            let price = confab_server::budget::Price::new(2_000_000, 2_000_000);
            c.prices.insert("model-z".into(), price);
        })
        .config(configure)
        .start()
        .await;
    let spec = KeySpec {
        name: "backend".into(),
        scopes: vec![Scope::Chat, Scope::Models],
        ..KeySpec::default()
    };
    let (_, secret) = relay.create_key(spec).await;
    (relay, secret)
}

const ADMIN_TOKEN: &str = "admin-token-for-the-routes-tests-0123";

/// `GET path` with the admin token: its status and body as text.
async fn admin_get(relay: &TestRelay, path: &str) -> (u16, String) {
    let response = relay.client.get(relay.url(path)).bearer_auth(ADMIN_TOKEN).send().await.unwrap();
    (response.status().as_u16(), response.text().await.unwrap())
}

fn ask(stream: bool) -> Value {
    json!({"model": "support-bot", "stream": stream, "max_tokens": 20,
           "messages": [{"role": "user", "content": "Hello"}]})
}

fn unavailable() -> Reply {
    Reply::Status { status: 503, retry_after: None, body: "{\"error\":\"overloaded\"}".into() }
}

#[tokio::test]
async fn a_failing_first_target_falls_back_to_the_next_before_the_first_byte() {
    let (main, backup) = (MockUpstream::start().await, MockUpstream::start().await);
    main.push(unavailable());
    backup.push(Reply::answer(&["From", " the", " backup"], (5, 3)));
    main.push(Reply::Status { status: 529, retry_after: None, body: "{}".into() });
    backup.push(Reply::answer(&["Whole"], (5, 1)));
    let (relay, secret) = relay_with_backup(&main, &backup, FallbackConfig::default()).await;

    let response = relay.chat_as(&secret, None).json(&ask(true)).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-confab-upstream"], "backup:model-z");
    let events = read_events(response).await;
    let chunks: Vec<Value> =
        events.iter().filter_map(|e| serde_json::from_str(&e.data).ok()).collect();
    // The client sees the model it asked for, whichever target answered.
    assert!(chunks.iter().all(|c| c["model"] == "support-bot"), "{chunks:?}");
    let text: String =
        chunks.iter().filter_map(|c| c["choices"][0]["delta"]["content"].as_str()).collect();
    assert_eq!(text, "From the backup");
    // Each target was asked under its own model name.
    assert_eq!(main.requests()[0].body["model"], "model-a");
    assert_eq!(backup.requests()[0].body["model"], "model-z");

    // A whole answer falls back the same way (529, overloaded, is a 5xx).
    let response = relay.chat_as(&secret, None).json(&ask(false)).send().await.unwrap();
    assert_eq!(response.headers()["x-confab-upstream"], "backup:model-z");
    let (status, body) = json_body(response).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["model"], "support-bot");
    assert_eq!(body["choices"][0]["message"]["content"], "Whole");

    // Recorded once each, as the target that answered, at its price.
    let records = relay.settled_usage(2).await;
    assert_eq!(records.len(), 2, "{records:?}");
    for record in &records {
        assert_eq!((record.upstream.as_str(), record.model.as_str()), ("backup", "model-z"));
        assert_eq!(record.outcome, Outcome::Completed);
        assert_eq!(record.cost_micros, 2 * (record.input_tokens + record.output_tokens));
    }
}

/// A 200 head is not yet an answer: a target that sends its head and then nothing before the
/// first-byte limit is given up on like one that never answers, and the next target answers.
/// The given-up call was written, so its provider may bill the prompt: the record charges its
/// ceiling at the first target's price on top of the answer, marked estimated.
#[tokio::test]
async fn a_head_without_a_first_event_in_time_falls_back_and_charges_the_abandoned_prompt() {
    let (main, backup) = (MockUpstream::start().await, MockUpstream::start().await);
    main.push(Reply::Stream(vec![Step::Hang]));
    backup.push(Reply::answer(&["Saved"], (5, 1)));
    let (relay, secret) =
        relay_with_backup_and(&main, &backup, |c| c.timeouts.first_byte_ms = 300).await;

    let response = relay.chat_as(&secret, None).json(&ask(true)).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-confab-upstream"], "backup:model-z");
    let events = read_events(response).await;
    assert!(events.iter().any(|e| e.data.contains("Saved")), "{events:?}");
    assert_eq!(events.last().unwrap().data, "[DONE]");
    assert_eq!((main.requests().len(), backup.requests().len()), (1, 1));

    let record = relay.only_settled_usage().await;
    assert_eq!((record.upstream.as_str(), record.outcome), ("backup", Outcome::Completed));
    assert_eq!((record.input_tokens, record.output_tokens), (5, 1));
    // model-a costs one micro-dollar a token: whatever is above the answer's 2 × 6 is the
    // abandoned prompt's ceiling, which is never less than the prompt's 5 tokens.
    let abandoned = record.cost_micros - 2 * 6;
    assert!(record.estimated, "{record:?}");
    assert!((5..100).contains(&abandoned), "{record:?}");
}

/// An error in place of the first event (after a 200 head) that is not an overload is the
/// provider's answer to this request: no fallback, and it costs nothing.
#[tokio::test]
async fn an_error_in_place_of_the_first_event_is_not_retried_elsewhere() {
    let (main, backup) = (MockUpstream::start().await, MockUpstream::start().await);
    main.push(Reply::Stream(vec![Step::Raw(r#"{"error":{"message":"bad request"}}"#)]));
    let (relay, secret) = relay_with_backup(&main, &backup, FallbackConfig::default()).await;
    let response = relay.chat_as(&secret, None).json(&ask(true)).send().await.unwrap();
    assert_eq!(response.status(), 502);
    assert!(backup.requests().is_empty());
    let record = relay.only_settled_usage().await;
    assert_eq!((record.outcome, record.cost_micros), (Outcome::UpstreamError, 0));
}

#[tokio::test]
async fn once_text_has_reached_the_client_there_is_no_fallback() {
    let (main, backup) = (MockUpstream::start().await, MockUpstream::start().await);
    let cut = Step::Pause(Duration::from_millis(100));
    main.push(Reply::Stream(vec![Step::Content("Half an"), cut, Step::Drop]));
    let (relay, secret) = relay_with_backup(&main, &backup, FallbackConfig::default()).await;
    let response = relay.chat_as(&secret, None).json(&ask(true)).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-confab-upstream"], "mock:model-a");
    let events = read_events(response).await;
    assert_eq!(events.last().unwrap().event, "error", "{events:?}");
    assert!(events.iter().any(|e| e.data.contains("Half an")));
    assert!(backup.requests().is_empty(), "the backup was never called");
}

#[tokio::test]
async fn an_open_breaker_skips_its_target_until_a_probe_succeeds() {
    let (main, backup) = (MockUpstream::start().await, MockUpstream::start().await);
    let fallback =
        FallbackConfig { breaker_failures: 2, breaker_open_ms: 300, ..Default::default() };
    let (relay, secret) = relay_with_backup(&main, &backup, fallback).await;
    for _ in 0..2 {
        main.push(unavailable());
    }
    for _ in 0..3 {
        backup.push(Reply::answer(&["ok"], (5, 1)));
    }
    // Two failures open the first target's breaker; the third request goes straight to the
    // backup, without a connection to the first.
    for _ in 0..3 {
        let response = relay.chat_as(&secret, None).json(&ask(false)).send().await.unwrap();
        assert_eq!(response.headers()["x-confab-upstream"], "backup:model-z");
    }
    assert_eq!(main.requests().len(), 2);
    assert_eq!(backup.requests().len(), 3);
    // The operator sees it open, in the admin API and in the metrics.
    let (status, body) = admin_get(&relay, "/admin/v1/upstreams").await;
    assert_eq!(status, 200, "{body}");
    let list: Value = serde_json::from_str(&body).unwrap();
    let main_target =
        list["data"].as_array().unwrap().iter().find(|t| t["target"] == "mock:model-a");
    let main_target = main_target.unwrap();
    assert_eq!(main_target["breaker"], "open");
    assert_eq!(
        (main_target["calls"].as_u64(), main_target["failures"].as_u64()),
        (Some(2), Some(2))
    );
    let (_, metrics) = admin_get(&relay, "/metrics").await;
    assert!(
        metrics.contains("confab_upstream_breaker_state{target=\"mock:model-a\"} 2"),
        "{metrics}"
    );
    assert!(
        metrics.contains("confab_upstream_calls_total{target=\"backup:model-z\"} 3"),
        "{metrics}"
    );

    // Once the open time is over, one request probes it; its success closes the breaker.
    tokio::time::sleep(Duration::from_millis(400)).await;
    main.push(Reply::answer(&["back"], (5, 1)));
    main.push(Reply::answer(&["again"], (5, 1)));
    for _ in 0..2 {
        let response = relay.chat_as(&secret, None).json(&ask(false)).send().await.unwrap();
        assert_eq!(response.headers()["x-confab-upstream"], "mock:model-a");
    }
    assert_eq!(main.requests().len(), 4);
}

#[tokio::test]
async fn under_a_full_outage_the_retry_budget_caps_the_calls_to_the_next_target() {
    let (main, backup) = (MockUpstream::start().await, MockUpstream::start().await);
    // A tenth of the requests may be retried, with no floor; the breaker never opens.
    let fallback = FallbackConfig {
        retry_budget_percent: 10,
        min_retries_per_second: 0,
        breaker_failures: 1_000,
        ..Default::default()
    };
    let (relay, secret) = relay_with_backup(&main, &backup, fallback).await;
    for _ in 0..40 {
        main.push(unavailable());
        backup.push(unavailable());
    }
    for _ in 0..40 {
        let response = relay.chat_as(&secret, None).json(&ask(false)).send().await.unwrap();
        let (status, body) = json_body(response).await;
        assert_eq!(status, 502, "{body}");
        assert_eq!(body["error"]["code"], "upstream_error");
    }
    assert_eq!(main.requests().len(), 40);
    // 40 requests earn 4 retries.
    assert_eq!(backup.requests().len(), 4);
}

#[tokio::test]
async fn models_list_their_targets_context_and_prices_on_request_only() {
    let (main, backup) = (MockUpstream::start().await, MockUpstream::start().await);
    let (relay, secret) = relay_with_backup(&main, &backup, FallbackConfig::default()).await;
    let list = |query: &'static str| {
        let request =
            relay.client.get(relay.url(&format!("/v1/models{query}"))).bearer_auth(&secret);
        async move { json_body(request.send().await.unwrap()).await }
    };
    let (status, plain) = list("").await;
    assert_eq!(status, 200);
    let bot = plain["data"].as_array().unwrap().iter().find(|m| m["id"] == "support-bot").unwrap();
    assert_eq!(bot["owned_by"], "mock");
    assert!(bot.get("detail").is_none(), "{bot}");

    let (status, detailed) = list("?detail=true").await;
    assert_eq!(status, 200);
    let bot =
        detailed["data"].as_array().unwrap().iter().find(|m| m["id"] == "support-bot").unwrap();
    assert_eq!(
        bot["detail"],
        json!({
            "targets": ["mock:model-a", "backup:model-z"],
            "context_length": 128_000,
            "pricing": {"input_per_million": 1_000_000, "output_per_million": 1_000_000},
        })
    );
    let z = detailed["data"].as_array().unwrap().iter().find(|m| m["id"] == "model-z").unwrap();
    assert_eq!(
        z["detail"],
        json!({"targets": ["backup:model-z"],
        "pricing": {"input_per_million": 2_000_000, "output_per_million": 2_000_000}})
    );

    let (status, body) = list("?detail=maybe").await;
    assert_eq!(status, 400);
    assert_eq!(body["error"]["code"], "invalid_value");
}
