//! `GET /metrics`: the Prometheus exposition after real traffic, scraped over HTTP.

use std::time::Duration;

use confab_server::budget::Price;
use confab_server::metrics::METRIC_NAMES;
use confab_server::store::CallerLimits;
use confab_tests::{MockUpstream, Reply, TestRelay, read_events};
use serde_json::json;

const TOKEN: &str = "admin-token-for-the-metrics-0123456789";

/// The metric names in the README's "Metrics" table (its first column, in backticks).
fn documented_metrics() -> Vec<String> {
    let readme = include_str!("../../README.md");
    let section = readme.split("\n## Metrics").nth(1).expect("the README has a Metrics section");
    let section = section.split("\n## ").next().unwrap_or(section);
    section
        .lines()
        .filter_map(|line| line.strip_prefix("| `"))
        .filter_map(|rest| rest.split('`').next())
        .map(str::to_owned)
        .collect()
}

/// The value of the sample `series` (name and labels, exactly as exposed).
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|value| value.trim().parse().ok())
}

async fn scrape(relay: &TestRelay) -> String {
    let response = relay.client.get(relay.url("/metrics")).bearer_auth(TOKEN).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "text/plain; version=0.0.4; charset=utf-8");
    response.text().await.unwrap()
}

#[test]
fn the_readme_documents_exactly_the_metrics_the_relay_exports() {
    let mut documented = documented_metrics();
    let mut exported: Vec<String> = METRIC_NAMES.iter().map(|name| (*name).to_owned()).collect();
    documented.sort();
    exported.sort();
    assert_eq!(documented, exported);
}

#[tokio::test]
async fn metrics_count_answers_refusals_upstream_errors_and_streams() {
    let mock = MockUpstream::start().await;
    mock.push(Reply::answer(&["Hello", " there"], (10, 5)));
    mock.push(Reply::answer(&["Streamed"], (12, 3)));
    mock.push(Reply::Status { status: 500, retry_after: None, body: "{}".into() });
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("admin-token");
    std::fs::write(&token_file, TOKEN).unwrap();
    let relay = TestRelay::builder(&mock)
        .config(|c| {
            c.admin.token_file = Some(token_file);
            c.prices.insert("model-a".into(), Price::new(1_000_000, 2_000_000));
        })
        .site(|s| s.limits = CallerLimits { rpm: Some(3), ..CallerLimits::default() })
        .start()
        .await;
    let hello = json!({"model": "model-a", "messages": [{"role": "user", "content": "Hello"}]});

    assert_eq!(relay.send_chat(hello.clone()).await.status(), 200);
    let stream = relay
        .send_chat(json!({"model": "model-b", "stream": true,
            "messages": [{"role": "user", "content": "Hi"}]}))
        .await;
    assert_eq!(stream.status(), 200);
    assert_eq!(read_events(stream).await.last().unwrap().data, "[DONE]");
    assert_eq!(relay.send_chat(hello.clone()).await.status(), 502);
    assert_eq!(relay.send_chat(hello.clone()).await.status(), 429);
    // Without the admin token, the public listener does not serve the metrics.
    let anonymous = relay.client.get(relay.url("/metrics")).send().await.unwrap();
    assert_eq!(anonymous.status(), 401);

    // The stream's end is counted once the relay drops it, just after the client read `[DONE]`.
    let text = tokio::time::timeout(confab_tests::WAIT, async {
        loop {
            let text = scrape(&relay).await;
            if sample(&text, "confab_open_streams") == Some(0.0) {
                return text;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the stream was never counted as closed");

    for name in documented_metrics() {
        assert!(text.contains(&format!("# TYPE {name} ")), "{name} is missing from:\n{text}");
    }
    let site = &relay.site_id;
    let chat = "confab_requests_total{route=\"/v1/chat/completions\"";
    for (series, value) in [
        (format!("{chat},status=\"200\",site=\"{site}\",model=\"model-a\"}}"), 1.0),
        (format!("{chat},status=\"200\",site=\"{site}\",model=\"model-b\"}}"), 1.0),
        (format!("{chat},status=\"502\",site=\"{site}\",model=\"model-a\"}}"), 1.0),
        (format!("{chat},status=\"429\",site=\"{site}\",model=\"model-a\"}}"), 1.0),
        (
            "confab_requests_total{route=\"/metrics\",status=\"401\",site=\"\",model=\"\"}"
                .to_owned(),
            1.0,
        ),
        ("confab_limit_refusals_total{rule=\"rpm\",subject=\"site\"}".to_owned(), 1.0),
        ("confab_upstream_errors_total{kind=\"status_5xx\"}".to_owned(), 1.0),
        (
            format!("confab_tokens_total{{site=\"{site}\",model=\"model-a\",direction=\"input\"}}"),
            10.0,
        ),
        (
            format!(
                "confab_tokens_total{{site=\"{site}\",model=\"model-b\",direction=\"output\"}}"
            ),
            3.0,
        ),
        (format!("confab_spent_microdollars_total{{site=\"{site}\",model=\"model-a\"}}"), 20.0),
        ("confab_chat_duration_seconds_count{model=\"model-a\"}".to_owned(), 2.0),
        ("confab_chat_first_token_seconds_count{model=\"model-b\"}".to_owned(), 1.0),
        ("confab_open_streams".to_owned(), 0.0),
        ("confab_webhook_backlog".to_owned(), 0.0),
        ("confab_webhook_delivery_failures_total".to_owned(), 0.0),
        ("confab_webhook_events_dropped_total".to_owned(), 0.0),
    ] {
        assert_eq!(sample(&text, &series), Some(value), "{series} in:\n{text}");
    }
    assert!(!text.contains("Hello"), "no request content in the metrics");
}
