//! The upstream's secret key and the site keys never show up where they should not.

use confab_tests::{
    MockUpstream, Reply, Step, TestRelay, UPSTREAM_SECRET, captured_logs, read_events,
};
use serde_json::json;

#[tokio::test]
async fn the_upstream_secret_and_full_site_keys_never_appear_in_responses_or_logs() {
    let mock = MockUpstream::start().await;
    let echo =
        format!("{{\"error\":{{\"message\":\"Incorrect API key provided: {UPSTREAM_SECRET}\"}}}}");
    mock.push(Reply::Status { status: 401, retry_after: None, body: echo.clone() });
    mock.push(Reply::Status { status: 500, retry_after: None, body: echo });
    mock.push(Reply::Stream(vec![Step::Content("a"), Step::Drop]));
    mock.push(Reply::answer(&["fine"], (1, 1)));
    let relay = TestRelay::start(&mock).await;
    let hello = json!({"stream": true, "messages": [{"role": "user", "content": "Hello"}]});

    let mut bodies = Vec::new();
    for _ in 0..2 {
        let response = relay.send_chat(hello.clone()).await;
        bodies.push(format!("{:?}", response.headers()));
        bodies.push(response.text().await.unwrap());
    }
    for _ in 0..2 {
        let events = read_events(relay.send_chat(hello.clone()).await).await;
        bodies.push(format!("{events:?}"));
    }
    let bad = relay
        .client
        .post(relay.url("/v1/chat/completions"))
        .bearer_auth(&relay.key)
        .send()
        .await
        .unwrap();
    bodies.push(bad.text().await.unwrap());

    let site_secret = &relay.key[relay.key.len() - 32..];
    for body in &bodies {
        assert!(!body.contains(UPSTREAM_SECRET), "{body}");
        assert!(!body.contains(site_secret), "{body}");
    }
    // The provider's error body is logged (scrubbed) in the background; wait for it.
    confab_tests::wait_for_log("Incorrect API key provided: [redacted]").await;
    let logs = captured_logs();
    // The capture works: this relay's requests were logged, under the key's public prefix.
    let prefix = &relay.key[..relay.key.len() - 33];
    assert!(logs.contains(prefix), "the site's public key prefix should be in the logs");
    assert!(!logs.contains(UPSTREAM_SECRET), "the upstream secret leaked into the logs");
    assert!(!logs.contains(site_secret), "a full site key leaked into the logs");
}
