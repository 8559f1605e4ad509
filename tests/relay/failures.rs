//! Upstream failures: before the answer starts they become a status in the envelope; after it
//! starts, the stream ends with an `error` event. Nothing hangs. And the relay's own failure to
//! keep its directory of keys fresh, which refuses keys rather than trusting an old copy.

use std::time::Duration;

use confab_server::keys::KeySpec;
use confab_server::store::Scope;
use confab_tests::{
    MockUpstream, Reply, SITE_ORIGIN, Step, TestRelay, UPSTREAM_SECRET, json_body, read_events,
    wait_for_log,
};
use eventsource_stream::Event;
use serde_json::{Value, json};

fn hello(stream: bool) -> Value {
    json!({"stream": stream, "messages": [{"role": "user", "content": "Hello"}]})
}

fn envelope(kind: &str, code: &str, message: &str) -> Value {
    json!({"error": {"message": message, "type": kind, "code": code}})
}

/// The last event of a stream that failed after it started.
fn error_event(events: &[Event]) -> Value {
    let last = events.last().expect("at least one event");
    assert_eq!(last.event, "error", "{events:#?}");
    assert!(!events.iter().any(|e| e.data == "[DONE]"));
    serde_json::from_str(&last.data).unwrap()
}

#[tokio::test]
async fn an_upstream_500_becomes_a_502() {
    let mock = MockUpstream::start().await;
    mock.push(Reply::Status {
        status: 500,
        retry_after: None,
        body: "{\"error\":\"boom\"}".into(),
    });
    mock.push(Reply::Status { status: 503, retry_after: None, body: String::new() });
    let relay = TestRelay::start(&mock).await;
    for (stream, status) in [(true, 500), (false, 503)] {
        assert_eq!(
            json_body(relay.send_chat(hello(stream)).await).await,
            (
                502,
                envelope(
                    "upstream_error",
                    "upstream_error",
                    &format!("the model provider failed (HTTP {status})")
                )
            )
        );
    }
}

#[tokio::test]
async fn an_upstream_429_is_passed_on_with_retry_after() {
    let mock = MockUpstream::start().await;
    mock.push(Reply::Status { status: 429, retry_after: Some(7), body: "{}".into() });
    let relay = TestRelay::start(&mock).await;
    let response = relay.send_chat(hello(true)).await;
    assert_eq!(response.headers()["retry-after"], "7");
    assert_eq!(
        json_body(response).await,
        (
            429,
            envelope(
                "rate_limit_error",
                "upstream_rate_limited",
                "the model provider is rate limiting requests; retry later"
            )
        )
    );
}

#[tokio::test]
async fn an_upstream_that_rejects_the_relays_key_is_a_502_that_does_not_echo_it() {
    let mock = MockUpstream::start().await;
    let echo =
        format!("{{\"error\":{{\"message\":\"Incorrect API key provided: {UPSTREAM_SECRET}\"}}}}");
    mock.push(Reply::Status { status: 401, retry_after: None, body: echo });
    let relay = TestRelay::start(&mock).await;
    let response = relay.send_chat(hello(false)).await;
    let text = response.text().await.unwrap();
    assert!(!text.contains(UPSTREAM_SECRET));
    assert_eq!(
        serde_json::from_str::<Value>(&text).unwrap(),
        envelope(
            "upstream_error",
            "upstream_auth_failed",
            "the model provider rejected the relay's credentials"
        )
    );
}

#[tokio::test]
async fn an_upstream_that_never_answers_times_out_with_504() {
    let mock = MockUpstream::start().await;
    mock.push(Reply::Hang);
    mock.push(Reply::Stream(vec![Step::Hang]));
    let relay = TestRelay::builder(&mock).config(|c| c.timeouts.first_byte_ms = 200).start().await;
    // No headers at all, then headers but no first event: both are the first-byte limit.
    for _ in 0..2 {
        assert_eq!(
            json_body(relay.send_chat(hello(true)).await).await,
            (
                504,
                envelope(
                    "timeout_error",
                    "upstream_timeout",
                    "the model provider did not start answering within 200 ms"
                )
            )
        );
    }
}

#[tokio::test]
async fn an_upstream_that_goes_silent_mid_answer_ends_the_stream_with_an_error_event() {
    let mock = MockUpstream::start().await;
    mock.push(Reply::Stream(vec![Step::Content("partial"), Step::Hang]));
    let relay = TestRelay::builder(&mock).config(|c| c.timeouts.idle_ms = 200).start().await;
    let events = read_events(relay.send_chat(hello(true)).await).await;
    assert_eq!(events.len(), 2);
    assert_eq!(
        error_event(&events),
        envelope(
            "timeout_error",
            "upstream_timeout",
            "the model provider stopped sending for 200 ms; the answer is incomplete"
        )
    );
    mock.hangup().await;
}

#[tokio::test]
async fn an_upstream_that_drops_the_connection_mid_answer_ends_the_stream_with_an_error_event() {
    let mock = MockUpstream::start().await;
    // The pause makes the mock's body stream return Pending, and hyper flushes what it has
    // buffered before it waits: the chunks are on the wire before the abort, whatever the load.
    let pause = Step::Pause(Duration::from_millis(50));
    mock.push(Reply::Stream(vec![
        Step::Content("a"),
        Step::Content("b"),
        pause.clone(),
        Step::Drop,
    ]));
    mock.push(Reply::Stream(vec![Step::Content("a"), pause, Step::Drop]));
    let relay = TestRelay::start(&mock).await;
    let expected = envelope(
        "upstream_error",
        "upstream_disconnected",
        "the model provider closed the connection before the answer was complete",
    );

    let events = read_events(relay.send_chat(hello(true)).await).await;
    assert_eq!(events.len(), 3);
    assert_eq!(error_event(&events), expected);

    assert_eq!(json_body(relay.send_chat(hello(false)).await).await, (502, expected));
}

#[tokio::test]
async fn an_upstream_that_ends_without_finishing_is_not_a_complete_answer() {
    let mock = MockUpstream::start().await;
    // A clean end of the body, but no finish_reason and no [DONE].
    mock.push(Reply::Stream(vec![Step::Content("a")]));
    let relay = TestRelay::start(&mock).await;
    let events = read_events(relay.send_chat(hello(true)).await).await;
    assert_eq!(error_event(&events)["error"]["code"], "upstream_disconnected");
}

#[tokio::test]
async fn garbage_from_the_upstream_is_reported_not_forwarded() {
    let mock = MockUpstream::start().await;
    mock.push(Reply::Stream(vec![Step::Content("a"), Step::Raw("<html>oops</html>")]));
    mock.push(Reply::Stream(vec![
        Step::Content("a"),
        Step::Raw(r#"{"error":{"message":"overloaded"}}"#),
    ]));
    let relay = TestRelay::start(&mock).await;

    let events = read_events(relay.send_chat(hello(true)).await).await;
    assert_eq!(
        error_event(&events),
        envelope(
            "upstream_error",
            "upstream_invalid_response",
            "the model provider sent a response the relay could not read"
        )
    );
    let events = read_events(relay.send_chat(hello(true)).await).await;
    assert_eq!(
        error_event(&events),
        envelope(
            "upstream_error",
            "upstream_error",
            "the model provider reported an error while answering"
        )
    );
}

#[tokio::test]
async fn an_unreachable_upstream_is_a_502() {
    // A port that was just free: nothing listens on it.
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let mock = MockUpstream::start().await;
    let relay = TestRelay::builder(&mock)
        .config(|c| c.upstreams[0].base_url = Some(format!("http://127.0.0.1:{port}/v1")))
        .start()
        .await;
    assert_eq!(
        json_body(relay.send_chat(hello(true)).await).await,
        (
            502,
            envelope(
                "upstream_error",
                "upstream_unreachable",
                "the model provider could not be reached"
            )
        )
    );
}

#[tokio::test]
async fn a_client_that_disconnects_cancels_the_upstream_call_at_once() {
    let mock = MockUpstream::start().await;
    mock.push(Reply::Stream(vec![Step::Endless(Duration::from_millis(10))]));
    // Without a grace period (`resume.grace_ms = 0`), as is tested here, a client that leaves
    // ends the upstream call at once; with one, the answer outlives it (tests/relay/resume.rs).
    let relay = TestRelay::builder(&mock).config(|c| c.resume.grace_ms = 0).start().await;
    let response = relay.send_chat(hello(true)).await;
    assert_eq!(response.status(), 200);
    let mut body = response.bytes_stream();
    futures_util::StreamExt::next(&mut body).await.unwrap().unwrap();
    drop(body);
    // The mock reports that its stream was dropped before its end: the relay closed the
    // upstream connection because the client left.
    mock.hangup().await;
}

#[tokio::test]
async fn the_relay_keeps_serving_after_every_failure() {
    let mock = MockUpstream::start().await;
    mock.push(Reply::Stream(vec![Step::Content("a"), Step::Drop]));
    mock.push(Reply::Status { status: 500, retry_after: None, body: String::new() });
    mock.push(Reply::answer(&["fine"], (1, 1)));
    let relay = TestRelay::start(&mock).await;
    read_events(relay.send_chat(hello(true)).await).await;
    relay.send_chat(hello(true)).await;
    let (status, body) = json_body(relay.send_chat(hello(false)).await).await;
    assert_eq!(status, 200);
    assert_eq!(body["choices"][0]["message"]["content"], "fine");
}

/// Makes the relay's check of its in-memory directory fail (or work again) for real: the table
/// it polls is renamed away from another connection, as a damaged or replaced database would do.
async fn directory_checks_fail(relay: &TestRelay, fail: bool) {
    let pool = sqlx::SqlitePool::connect(&relay.config.database.url).await.unwrap();
    let statement = if fail {
        "ALTER TABLE directory_version RENAME TO directory_version_unreadable"
    } else {
        "ALTER TABLE directory_version_unreadable RENAME TO directory_version"
    };
    sqlx::query(statement).execute(&pool).await.unwrap();
    pool.close().await;
}

/// Waits (bounded) until `GET /v1/models` with `key` answers `status`; returns the body.
async fn models_until(relay: &TestRelay, key: &str, origin: Option<&str>, status: u16) -> Value {
    let answered = tokio::time::timeout(confab_tests::WAIT, async {
        loop {
            let mut request = relay.client.get(relay.url("/v1/models")).bearer_auth(key);
            if let Some(origin) = origin {
                request = request.header("origin", origin);
            }
            let (got, body) = json_body(request.send().await.unwrap()).await;
            if got == status {
                return body;
            }
            tokio::time::sleep(std::time::Duration::from_millis(25)).await;
        }
    })
    .await;
    answered.unwrap_or_else(|_| panic!("`/v1/models` never answered {status}"))
}

#[tokio::test]
async fn keys_are_refused_while_the_directory_cannot_be_refreshed_and_healthz_says_since_when() {
    let mock = MockUpstream::start().await;
    let relay = TestRelay::builder(&mock)
        .config(|c| c.database.directory_max_stale_ms = 1_000)
        .start()
        .await;
    let spec =
        KeySpec { name: "backend".into(), scopes: vec![Scope::Models], ..KeySpec::default() };
    let (_, secret) = relay.create_key(spec).await;
    models_until(&relay, &secret, None, 200).await;
    models_until(&relay, &relay.key, Some(SITE_ORIGIN), 200).await;

    directory_checks_fail(&relay, true).await;
    let refused = models_until(&relay, &secret, None, 503).await;
    let expected = json!({"error": {
        "message": "the relay cannot check keys right now (its copy of sites and keys could not \
                    be refreshed); retry later",
        "type": "service_unavailable_error",
        "code": "directory_stale",
    }});
    assert_eq!(refused, expected);
    // Site keys fail closed too: a site deleted meanwhile must not keep working.
    assert_eq!(models_until(&relay, &relay.key, Some(SITE_ORIGIN), 503).await, expected);

    let (status, health) =
        json_body(relay.client.get(relay.url("/healthz")).send().await.unwrap()).await;
    assert_eq!((status, &health["status"]), (503, &json!("directory stale")), "{health}");
    assert_eq!(health["directory"]["stale"], true);
    let since = health["directory"]["last_refreshed_at"].as_str().unwrap();
    assert!(since.len() == 20 && since.ends_with('Z'), "{since}");
    assert!(health["directory"]["stale_for_ms"].as_u64().unwrap() > 1_000, "{health}");
    wait_for_log("refusing keys until it can").await;

    // Once the directory can be checked again, keys work again.
    directory_checks_fail(&relay, false).await;
    models_until(&relay, &secret, None, 200).await;
    models_until(&relay, &relay.key, Some(SITE_ORIGIN), 200).await;
    let (status, health) =
        json_body(relay.client.get(relay.url("/healthz")).send().await.unwrap()).await;
    assert_eq!((status, health), (200, json!({"status": "ok"})));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_postgresql_does_not_answer_the_relay_serves_from_memory_and_writes_every_record_once_back()
 {
    let postgres = confab_tests::servers::Postgres::dedicated();
    let mock = MockUpstream::start().await;
    for _ in 0..6 {
        mock.push(Reply::answer(&["ok"], (3, 2)));
    }
    let relay = TestRelay::metered(&mock)
        .database_url(&postgres.database())
        .config(|c| c.usage.flush_ms = 100)
        .start()
        .await;
    let (status, _) = json_body(relay.send_chat(hello(false)).await).await;
    assert_eq!(status, 200);
    relay.settled_usage(1).await;

    // A partition: the database neither answers nor fails.
    postgres.pause();
    for _ in 0..5 {
        let (status, body) = json_body(relay.send_chat(hello(false)).await).await;
        assert_eq!(status, 200, "keys come from memory, usage waits in memory: {body}");
    }
    let (status, health) =
        json_body(relay.client.get(relay.url("/healthz")).send().await.unwrap()).await;
    assert_eq!(status, 200, "the relay still serves: {health}");
    assert_eq!(health["status"], "degraded", "{health}");
    assert_eq!(health["degraded"], json!(["database"]), "{health}");
    assert_eq!(health["usage_backlog"], 5, "{health}");

    // Back: everything buffered is written, once.
    postgres.resume();
    let records = relay.settled_usage(6).await;
    assert_eq!(records.len(), 6, "{records:?}");
    let (_, health) =
        json_body(relay.client.get(relay.url("/healthz")).send().await.unwrap()).await;
    assert_eq!(health, json!({"status": "ok"}));
    relay.stop().await;
}
