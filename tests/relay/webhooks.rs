//! Webhooks through real HTTP: signed deliveries to a real receiver, retries with backoff, the
//! outbox across a restart, budget alerts, site-scoped endpoints, and endpoints that hang.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use confab_server::budget::{Period, Price};
use confab_server::keys::{self, KeySpec};
use confab_server::sitekey::KeyKind;
use confab_server::sites::SiteSpec;
use confab_server::store::{CallerLimits, Scope, Store, WebhookDelivery};
use confab_server::webhooks::EndpointConfig;
use confab_tests::receiver::Delivery;
use confab_tests::{
    MockUpstream, Reply, SITE_ORIGIN, TestRelay, TestRelayBuilder, WAIT, WebhookReceiver,
    unused_address, wait_for_log,
};
use serde_json::{Value, json};

/// The endpoints' signing secret, read by the relay from a file.
const SECRET: &str = "whsec-test-4f2a9c7e1b3d5f60a8";

/// A directory holding the signing secret in `webhook.secret`.
fn secret_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("webhook.secret"), format!("{SECRET}\n")).unwrap();
    dir
}

fn endpoint(url: &str, events: &[&str], secrets: &Path) -> EndpointConfig {
    EndpointConfig {
        url: url.to_owned(),
        secret_env: None,
        secret_file: Some(secrets.join("webhook.secret")),
        events: events.iter().map(|e| (*e).to_owned()).collect(),
        site: None,
        request_completed_sample_percent: 100,
    }
}

/// A relay with these endpoints, retrying quickly: 50 ms, then 100 ms, then every 200 ms.
fn hooked(mock: &MockUpstream, endpoints: Vec<EndpointConfig>) -> TestRelayBuilder {
    TestRelay::builder(mock).config(|c| {
        c.webhooks.endpoints = endpoints;
        c.webhooks.poll_ms = 20;
        c.webhooks.initial_backoff_ms = 50;
        c.webhooks.max_backoff_ms = 200;
        c.webhooks.timeout_ms = 2_000;
    })
}

fn hello() -> Value {
    json!({"messages": [{"role": "user", "content": "Hello"}], "max_tokens": 5})
}

fn key_spec(limits: CallerLimits) -> KeySpec {
    KeySpec { name: "backend".into(), scopes: vec![Scope::Chat], limits, ..KeySpec::default() }
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

/// Waits (bounded) until the relay's outbox holds deliveries that satisfy `done`; returns them.
async fn deliveries_until(
    store: &dyn Store,
    done: impl Fn(&[WebhookDelivery]) -> bool,
) -> Vec<WebhookDelivery> {
    tokio::time::timeout(WAIT, async {
        loop {
            let deliveries = store.webhook_deliveries(100).await.unwrap();
            if done(&deliveries) {
                return deliveries;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("the outbox never reached the expected state"))
}

fn kinds(received: &[Delivery]) -> BTreeSet<String> {
    received.iter().map(|d| d.header("confab-event").to_owned()).collect()
}

#[tokio::test]
async fn a_receiver_that_fails_twice_then_succeeds_gets_exactly_one_accepted_signed_delivery() {
    let mock = MockUpstream::start().await;
    let receiver = WebhookReceiver::start(&[500, 500]).await;
    let secrets = secret_dir();
    let relay = hooked(&mock, vec![endpoint(&receiver.url, &["key.revoked"], secrets.path())])
        .start()
        .await;
    let (key, secret) = relay.create_key(key_spec(CallerLimits::default())).await;

    keys::revoke_key(relay.store.as_ref(), &key.id).await.unwrap();
    receiver.wait_for(3).await;
    let recorded =
        deliveries_until(relay.store.as_ref(), |d| d.iter().any(|d| d.delivered_at_ms.is_some()))
            .await;
    let revoked_at = relay.store.api_key(&key.id).await.unwrap().unwrap().revoked_at;
    relay.stop().await;

    let received = receiver.received();
    let statuses: Vec<u16> = received.iter().map(|d| d.status).collect();
    assert_eq!(statuses, [500, 500, 200], "three attempts, the last one accepted");
    let accepted = &received[2];
    assert_eq!(accepted.header("content-type"), "application/json");
    assert_eq!(accepted.header("confab-event"), "key.revoked");
    let delivery_id = accepted.header("confab-delivery");
    assert!(delivery_id.starts_with("whd_"), "{delivery_id}");
    let timestamp: u64 = accepted.header("confab-timestamp").parse().unwrap();
    assert!(unix_now().abs_diff(timestamp) < 300, "a fresh timestamp: {timestamp}");
    assert!(accepted.signature_is_valid(SECRET), "{:?}", accepted.headers);
    assert!(!accepted.signature_is_valid("another-secret-of-some-length"));
    for attempt in &received {
        // The same delivery each time, so a receiver can deduplicate; each signed afresh.
        assert_eq!(attempt.header("confab-delivery"), delivery_id);
        assert_eq!(attempt.body, accepted.body);
        assert!(attempt.signature_is_valid(SECRET));
    }

    let body = accepted.json();
    assert_eq!(body["type"], "key.revoked");
    assert!(body["id"].as_str().unwrap().starts_with("evt_"), "{body}");
    assert!(body["created"].as_u64().unwrap().abs_diff(unix_now()) < 300, "{body}");
    assert_eq!(
        body["data"],
        json!({
            "id": key.id,
            "name": "backend",
            "key_prefix": KeyKind::Secret.public(&key.lookup_id),
            "revoked_at": revoked_at,
        })
    );
    assert!(!String::from_utf8_lossy(&accepted.body).contains(&secret));

    assert_eq!(recorded.len(), 1);
    let outbox = &recorded[0];
    assert_eq!((outbox.id.as_str(), outbox.attempts), (delivery_id, 3));
    assert_eq!((outbox.failed_at_ms, outbox.last_error.as_deref()), (None, None));
}

#[tokio::test]
async fn a_signature_taken_from_one_delivery_does_not_verify_another_with_the_same_body() {
    let mock = MockUpstream::start().await;
    let first = WebhookReceiver::start(&[]).await;
    let second = WebhookReceiver::start(&[]).await;
    let secrets = secret_dir();
    let endpoints = vec![
        endpoint(&first.url, &["key.revoked"], secrets.path()),
        endpoint(&second.url, &["key.revoked"], secrets.path()),
    ];
    let relay = hooked(&mock, endpoints).start().await;
    let (key, _) = relay.create_key(key_spec(CallerLimits::default())).await;

    // One event, two deliveries: the same body under two delivery ids.
    keys::revoke_key(relay.store.as_ref(), &key.id).await.unwrap();
    let one = first.wait_for(1).await.remove(0);
    let other = second.wait_for(1).await.remove(0);
    relay.stop().await;
    assert_eq!(one.body, other.body);
    assert_ne!(one.header("confab-delivery"), other.header("confab-delivery"));
    assert!(one.signature_is_valid(SECRET) && other.signature_is_valid(SECRET));
    assert!(one.header("confab-signature").starts_with("v1="), "{:?}", one.headers);

    // The first delivery replayed under the second one's id, to get past deduplication.
    let mut replayed = one.clone();
    replayed.headers.insert("confab-delivery", other.headers["confab-delivery"].clone());
    assert!(!replayed.signature_is_valid(SECRET), "v2 covers the delivery id");
    // The deprecated v1 does not, which is why it is on its way out.
    assert!(replayed.v1_signature_is_valid(SECRET));
}

#[tokio::test]
async fn an_endpoint_that_never_answers_does_not_delay_deliveries_to_the_others() {
    let mock = MockUpstream::start().await;
    let hanging = WebhookReceiver::hanging().await;
    let healthy = WebhookReceiver::start(&[]).await;
    let secrets = secret_dir();
    let endpoints = vec![
        endpoint(&hanging.url, &["key.revoked"], secrets.path()),
        endpoint(&healthy.url, &["key.revoked"], secrets.path()),
    ];
    // The hanging endpoint's attempt lasts six times as long as any wait below.
    let timeout = WAIT * 6;
    let relay = hooked(&mock, endpoints)
        .config(|c| c.webhooks.timeout_ms = u64::try_from(timeout.as_millis()).unwrap())
        .start()
        .await;
    let (first, _) = relay.create_key(key_spec(CallerLimits::default())).await;
    let (second, _) = relay.create_key(key_spec(CallerLimits::default())).await;

    keys::revoke_key(relay.store.as_ref(), &first.id).await.unwrap();
    healthy.wait_for(1).await;
    // The hanging endpoint has the first event and is sitting on it...
    hanging.wait_for(1).await;
    // ... while an event recorded now still reaches the healthy one (`wait_for` gives up after
    // `WAIT`, long before the hanging attempt's time limit).
    keys::revoke_key(relay.store.as_ref(), &second.id).await.unwrap();
    let received = healthy.wait_for(2).await;
    assert_eq!(hanging.received().len(), 1, "still hanging on its first delivery");
    relay.stop().await;

    let revoked: BTreeSet<String> =
        received.iter().map(|d| d.json()["data"]["id"].as_str().unwrap().to_owned()).collect();
    assert_eq!(revoked, BTreeSet::from([first.id, second.id]));
    assert!(received.iter().all(|d| d.accepted() && d.signature_is_valid(SECRET)));
}

#[tokio::test]
async fn a_delivery_to_an_endpoint_removed_from_the_config_is_given_up_at_start() {
    let mock = MockUpstream::start().await;
    let down = unused_address().await;
    let removed = format!("http://{down}/hooks/confab");
    let secrets = secret_dir();
    let database = tempfile::tempdir().unwrap();

    let endpoints = vec![endpoint(&removed, &["key.revoked"], secrets.path())];
    let first = hooked(&mock, endpoints)
        .config(|c| c.webhooks.max_attempts = 1_000)
        .database(database.path())
        .start()
        .await;
    let (key, _) = first.create_key(key_spec(CallerLimits::default())).await;
    keys::revoke_key(first.store.as_ref(), &key.id).await.unwrap();
    deliveries_until(first.store.as_ref(), |d| d.len() == 1 && d[0].attempts >= 1).await;
    first.stop().await;

    // Restarted with another endpoint only: nobody can attempt the pending delivery any more.
    let other = WebhookReceiver::start(&[]).await;
    let endpoints = vec![endpoint(&other.url, &["key.revoked"], secrets.path())];
    let second = hooked(&mock, endpoints).database(database.path()).start().await;
    let outbox =
        deliveries_until(second.store.as_ref(), |d| d.len() == 1 && d[0].failed_at_ms.is_some())
            .await;
    second.stop().await;
    assert_eq!(outbox[0].endpoint, removed);
    assert_eq!(outbox[0].last_error.as_deref(), Some("the endpoint is no longer configured"));
    assert!(other.received().is_empty(), "an event is sent where it was dispatched only");
}

#[tokio::test]
async fn a_restarted_relay_delivers_what_was_pending_exactly_once() {
    let mock = MockUpstream::start().await;
    mock.push(Reply::answer(&["Hi"], (7, 3)));
    let down = unused_address().await;
    let url = format!("http://{down}/hooks/confab");
    let secrets = secret_dir();
    let database = tempfile::tempdir().unwrap();
    let endpoints = vec![endpoint(&url, &["key.revoked", "request.completed"], secrets.path())];
    let patient = |builder: TestRelayBuilder| builder.config(|c| c.webhooks.max_attempts = 1_000);

    // The receiver is down: both events are attempted, and fail.
    let first = patient(hooked(&mock, endpoints.clone())).database(database.path()).start().await;
    let response = first.send_chat(hello()).await;
    assert_eq!(response.status(), 200);
    let _ = response.bytes().await.unwrap();
    let (key, _) = first.create_key(key_spec(CallerLimits::default())).await;
    keys::revoke_key(first.store.as_ref(), &key.id).await.unwrap();
    let failing = deliveries_until(first.store.as_ref(), |d| {
        d.len() == 2 && d.iter().all(|d| d.attempts >= 1)
    })
    .await;
    assert!(failing.iter().all(|d| d.delivered_at_ms.is_none()));
    let error = failing[0].last_error.as_deref().unwrap();
    assert!(!error.contains("/hooks/confab"), "errors never show the URL: {error}");
    first.stop().await;

    // Another relay on the same database, with the receiver up, delivers both.
    let receiver = WebhookReceiver::start_on(down, &[]).await;
    let second = patient(hooked(&mock, endpoints)).database(database.path()).start().await;
    let delivered = deliveries_until(second.store.as_ref(), |d| {
        d.len() == 2 && d.iter().all(|d| d.delivered_at_ms.is_some())
    })
    .await;
    second.stop().await;

    let received = receiver.received();
    assert_eq!(received.len(), 2, "each pending delivery exactly once");
    assert!(received.iter().all(|d| d.accepted() && d.signature_is_valid(SECRET)));
    assert_eq!(
        kinds(&received),
        BTreeSet::from(["key.revoked".to_owned(), "request.completed".to_owned()])
    );
    let ids: BTreeSet<&str> = received.iter().map(|d| d.header("confab-delivery")).collect();
    let expected: BTreeSet<&str> = delivered.iter().map(|d| d.id.as_str()).collect();
    assert_eq!(ids, expected);
    let completed = received.iter().find(|d| d.header("confab-event") == "request.completed");
    let data = &completed.unwrap().json()["data"];
    assert_eq!(
        (data["model"].as_str(), data["outcome"].as_str()),
        (Some("model-a"), Some("completed"))
    );
    assert_eq!((&data["input_tokens"], &data["output_tokens"]), (&json!(7), &json!(3)));
}

#[tokio::test]
async fn a_budget_crossing_80_then_100_percent_sends_exactly_those_two_alerts() {
    let mock = MockUpstream::start().await;
    mock.push(Reply::answer(&["a"], (40, 40)));
    mock.push(Reply::answer(&["b"], (10, 10)));
    let receiver = WebhookReceiver::start(&[]).await;
    let secrets = secret_dir();
    let relay = hooked(&mock, vec![endpoint(&receiver.url, &["budget.threshold"], secrets.path())])
        .config(|c| {
            // One micro-dollar per token: costs equal token counts.
            let price = Price::new(1_000_000, 1_000_000);
            c.prices.insert("model-a".into(), price);
        })
        .start()
        .await;
    let (key, secret) = relay
        .create_key(key_spec(CallerLimits {
            monthly_budget_micros: Some(100),
            ..Default::default()
        }))
        .await;

    // Each call reserves its worst case and then costs what the upstream reports, which must be
    // within what the request could produce: first 40 prompt tokens (the ceiling of 33 bytes in
    // one message) and max_tokens 20, reserving 60, costing 80 (40 + 40, within twice
    // max_tokens); then "Hello" with max_tokens 5, reserving 17, costing 20.
    let chat = |body: Value| {
        let call = relay.chat_as(&secret, None).json(&body);
        async move {
            let response = call.send().await.unwrap();
            assert_eq!(response.status(), 200);
            let _ = response.bytes().await.unwrap();
        }
    };
    let long = "x".repeat(33);
    chat(json!({"messages": [{"role": "user", "content": long}], "max_tokens": 20})).await;
    receiver.wait_for(1).await;
    chat(hello()).await;
    receiver.wait_for(2).await;
    relay.stop().await;

    let received = receiver.received();
    assert_eq!(received.len(), 2, "one alert per threshold");
    assert!(received.iter().all(|d| d.accepted() && d.signature_is_valid(SECRET)));
    let period = Period::month_of(unix_now()).to_string();
    let alert = |percent: u64, spent: u64| {
        json!({
            "payer": "key",
            "payer_id": key.id,
            "period": period,
            "period_kind": "monthly",
            "percent": percent,
            "spent_micros": spent,
            "budget_micros": 100,
        })
    };
    assert_eq!(received[0].header("confab-event"), "budget.threshold");
    assert_eq!(received[0].json()["data"], alert(80, 80));
    assert_eq!(received[1].json()["data"], alert(100, 100));
}

/// Waits (bounded) until `done` holds.
async fn until(what: &str, done: impl Fn() -> bool) {
    tokio::time::timeout(WAIT, async {
        while !done() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("never: {what}"));
}

#[tokio::test]
async fn a_full_backlog_drops_request_completed_events_but_keeps_budget_alerts_and_revocations() {
    let mock = MockUpstream::start().await;
    for _ in 0..6 {
        mock.push(Reply::answer(&["ok"], (1, 1)));
    }
    mock.push(Reply::answer(&["big"], (40, 40)));
    // The endpoint is down for the whole test: nothing leaves the backlog.
    let down = unused_address().await;
    let url = format!("http://{down}/hooks/confab");
    let secrets = secret_dir();
    let events = ["budget.threshold", "key.revoked", "request.completed"];
    let relay = hooked(&mock, vec![endpoint(&url, &events, secrets.path())])
        .config(|c| {
            c.webhooks.max_backlog = 3;
            c.webhooks.max_attempts = 1_000;
            // One micro-dollar per token: costs equal token counts.
            let price = Price::new(1_000_000, 1_000_000);
            c.prices.insert("model-a".into(), price);
        })
        .start()
        .await;
    let (key, secret) = relay
        .create_key(key_spec(CallerLimits {
            monthly_budget_micros: Some(100),
            ..Default::default()
        }))
        .await;
    let chat = || async {
        let response = relay.chat_as(&secret, None).json(&hello()).send().await.unwrap();
        assert_eq!(response.status(), 200);
        let _ = response.bytes().await.unwrap();
    };

    // Six requests costing 2 each: three fit under the cap, three are dropped.
    for _ in 0..6 {
        chat().await;
    }
    until("three events dropped", || relay.webhooks.dropped() == 3).await;
    assert_eq!(relay.store.webhook_backlog().await.unwrap(), 3, "the backlog stays at the cap");
    wait_for_log("the webhook backlog is full: request.completed events dropped").await;

    // One costing 80 crosses 80 % of the budget: its alert is recorded, its request is not.
    // (Its usage must be what the request could produce: a prompt ceiling of 40 tokens, 33
    // bytes in one message, and max_tokens 30, reserving 70 of the 88 left.)
    let big = json!({"messages": [{"role": "user", "content": "x".repeat(33)}], "max_tokens": 30});
    let response = relay.chat_as(&secret, None).json(&big).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let _ = response.bytes().await.unwrap();
    let has = |kind: &'static str| move |d: &[WebhookDelivery]| d.iter().any(|d| d.kind == kind);
    deliveries_until(relay.store.as_ref(), has("budget.threshold")).await;
    until("the fourth event dropped", || relay.webhooks.dropped() == 4).await;
    // A revoked key is recorded too.
    keys::revoke_key(relay.store.as_ref(), &key.id).await.unwrap();
    let outbox = deliveries_until(relay.store.as_ref(), has("key.revoked")).await;
    until("the backlog counted", || relay.webhooks.backlog() == 5).await;
    assert!(relay.webhooks.failures() >= 1, "every attempt at the dead endpoint failed");
    relay.stop().await;

    let count = |kind: &str| outbox.iter().filter(|d| d.kind == kind).count();
    assert_eq!(
        (count("request.completed"), count("budget.threshold"), count("key.revoked")),
        (3, 1, 1)
    );
    assert!(outbox.iter().all(|d| d.delivered_at_ms.is_none()));
}

#[tokio::test]
async fn a_site_scoped_endpoint_receives_only_that_sites_requests() {
    let mock = MockUpstream::start().await;
    for _ in 0..3 {
        mock.push(Reply::answer(&["ok"], (1, 1)));
    }
    let secrets = secret_dir();
    let database = tempfile::tempdir().unwrap();
    // An endpoint names a site that exists: create the sites and a key first, then start the
    // relay with the endpoints configured.
    let setup = TestRelay::builder(&mock).database(database.path()).start().await;
    let (site_id, site_key) = (setup.site_id.clone(), setup.key.clone());
    let other = SiteSpec {
        name: "Other".into(),
        origins: vec!["https://other.example".into()],
        ..SiteSpec::default()
    };
    let (other_id, other_key) = setup.create_site(other).await;
    let (key, key_secret) = setup.create_key(key_spec(CallerLimits::default())).await;
    setup.stop().await;

    let scoped_receiver = WebhookReceiver::start(&[]).await;
    let global_receiver = WebhookReceiver::start(&[]).await;
    let mut scoped = endpoint(&scoped_receiver.url, &["request.completed"], secrets.path());
    scoped.site = Some(site_id.clone());
    let global = endpoint(&global_receiver.url, &["request.completed"], secrets.path());
    let relay = hooked(&mock, vec![scoped, global]).database(database.path()).start().await;

    for (caller, origin) in [
        (&site_key, Some(SITE_ORIGIN)),
        (&other_key, Some("https://other.example")),
        (&key_secret, None),
    ] {
        let response = relay.chat_as(caller, origin).json(&hello()).send().await.unwrap();
        assert_eq!(response.status(), 200);
        let _ = response.bytes().await.unwrap();
    }
    // The global endpoint gets all three; each event's deliveries are created together, so the
    // outbox then holds every delivery there will be.
    global_receiver.wait_for(3).await;
    let outbox = relay.store.webhook_deliveries(100).await.unwrap();
    let to_scoped: Vec<&WebhookDelivery> =
        outbox.iter().filter(|d| d.endpoint == scoped_receiver.url).collect();
    assert_eq!((outbox.len(), to_scoped.len()), (4, 1), "{outbox:?}");
    scoped_receiver.wait_for(1).await;
    relay.stop().await;

    let site_of = |d: &Delivery| d.json()["data"]["site_id"].clone();
    let scoped = scoped_receiver.received();
    assert_eq!(scoped.len(), 1);
    assert_eq!(site_of(&scoped[0]), json!(site_id));
    let mut everyone: Vec<Value> = global_receiver.received().iter().map(site_of).collect();
    everyone.sort_by_key(Value::to_string);
    let mut expected = vec![json!(site_id), json!(other_id), Value::Null];
    expected.sort_by_key(Value::to_string);
    assert_eq!(everyone, expected);
    let by_key = global_receiver.received().into_iter().find(|d| site_of(d).is_null()).unwrap();
    assert_eq!(by_key.json()["data"]["key_id"], json!(key.id));
}
