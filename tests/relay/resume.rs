//! Streams that survive a dropped connection: reattaching with `Last-Event-ID`, who may,
//! cancelling, the grace period, and `resume.grace_ms = 0`, which keeps streams as they were;
//! and, with two relays on one Redis, reattaching and cancelling through the other relay.

use std::sync::Arc;
use std::time::Duration;

use confab_server::config::RedisUrl;
use confab_server::keys::KeySpec;
use confab_server::resume::config::ResumeConfig;
use confab_server::sites::SiteSpec;
use confab_server::store::{Outcome, Scope};
use confab_tests::servers::RedisServer;
use confab_tests::{
    MockUpstream, Reply, SITE_ORIGIN, Step, TestRelay, WAIT, json_body, read_events,
};
use eventsource_stream::{Event, Eventsource};
use futures_util::{Stream, StreamExt};
use serde_json::{Value, json};

fn ask() -> Value {
    json!({"stream": true, "messages": [{"role": "user", "content": "Hello"}]})
}

fn not_found() -> Value {
    json!({"error": {
        "message": "no stream with this id (it may have ended too long ago)",
        "type": "invalid_request_error",
        "code": "stream_not_found",
    }})
}

/// The stream id a streamed answer's response names.
fn stream_id(response: &reqwest::Response) -> String {
    let id = response.headers()["x-confab-stream"].to_str().unwrap().to_owned();
    assert!(id.starts_with("cs_") && id.len() == 35, "{id}");
    id
}

/// The next event of a stream (bounded wait).
async fn next_event<E: std::fmt::Debug>(
    events: &mut (impl Stream<Item = Result<Event, E>> + Unpin),
) -> Event {
    tokio::time::timeout(WAIT, events.next())
        .await
        .expect("no event in time")
        .expect("the stream ended early")
        .expect("the stream is well-formed SSE")
}

/// The text an event's chunk adds to the answer.
fn text_of(event: &Event) -> String {
    let Ok(chunk) = serde_json::from_str::<Value>(&event.data) else { return String::new() };
    chunk["choices"][0]["delta"]["content"].as_str().unwrap_or_default().to_owned()
}

/// The `error` event's envelope code.
fn error_code(event: &Event) -> String {
    assert_eq!(event.event, "error", "{event:?}");
    let envelope: Value = serde_json::from_str(&event.data).unwrap();
    envelope["error"]["code"].as_str().unwrap().to_owned()
}

/// A relay with `resume.grace_ms = grace_ms`, and the response of an answer that never ends.
async fn endless_answer(mock: &MockUpstream, grace_ms: u64) -> (TestRelay, reqwest::Response) {
    mock.push(Reply::Stream(vec![Step::Endless(Duration::from_millis(10))]));
    let relay = TestRelay::metered(mock).config(|c| c.resume.grace_ms = grace_ms).start().await;
    let response = relay.send_chat(ask()).await;
    assert_eq!(response.status(), 200);
    (relay, response)
}

/// The upstream call was ended before the answer's end, and settled as interrupted at what was
/// generated.
async fn ended_and_settled_as_interrupted(mock: &MockUpstream, relay: &TestRelay) {
    mock.hangup().await;
    let record = &relay.settled_usage(1).await[0];
    assert_eq!(record.outcome, Outcome::Interrupted);
    assert!(record.estimated && record.output_tokens > 0, "{record:?}");
}

/// Scripts an answer of `words` (usage: 7 prompt tokens, one per word) whose upstream waits
/// after the third word until `MockUpstream::release`.
fn pausing_answer(mock: &MockUpstream, words: &[&'static str]) {
    let mut steps: Vec<Step> = words[..3].iter().map(|w| Step::Content(w)).collect();
    steps.push(Step::WaitForRelease);
    steps.extend(words[3..].iter().map(|w| Step::Content(w)));
    let completion = words.len() as u64;
    steps.extend([Step::Finish("stop"), Step::Usage { prompt: 7, completion }, Step::Done]);
    mock.push(Reply::Stream(steps));
}

/// The events of a [`pausing_answer`] were received whole: every event once, in order, numbered
/// from 1, the text exactly what the upstream sent; and `relay`'s database has it generated to
/// its end and settled as complete at the upstream's usage.
async fn received_whole(received: &[Event], words: &[&str], relay: &TestRelay) {
    let ids: Vec<String> = received.iter().map(|e| e.id.clone()).collect();
    let expected: Vec<String> = (1..=received.len()).map(|n| n.to_string()).collect();
    assert_eq!(ids, expected);
    assert_eq!(received.iter().map(text_of).collect::<String>(), words.concat());
    assert_eq!(received.last().unwrap().data, "[DONE]");
    let record = &relay.settled_usage(1).await[0];
    assert_eq!(record.outcome, Outcome::Completed);
    assert_eq!((record.input_tokens, record.output_tokens), (7, words.len() as u64));
}

#[tokio::test]
async fn a_stream_cut_mid_answer_is_resumed_after_its_last_event_and_every_token_arrives_once() {
    let mock = MockUpstream::start().await;
    let words = ["The", " answer", " to", " that", " is", " forty", "-two", ", as", " always."];
    pausing_answer(&mock, &words);
    let relay = TestRelay::metered(&mock).start().await;

    let response = relay.send_chat(ask()).await;
    assert_eq!(response.status(), 200);
    let id = stream_id(&response);
    // A script on the site's page may read it (CORS).
    let exposed = response.headers()["access-control-expose-headers"].to_str().unwrap();
    assert!(exposed.split(',').any(|h| h == "x-confab-stream"), "{exposed}");
    let mut events = response.bytes_stream().eventsource();
    let mut received = Vec::new();
    for _ in 0..3 {
        received.push(next_event(&mut events).await);
    }
    // The connection is cut mid-answer; meanwhile the upstream goes on.
    drop(events);
    mock.release();

    let last = received.last().unwrap().id.clone();
    assert_eq!(last, "3");
    let response = relay.follow(&id).header("Last-Event-ID", &last).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(stream_id(&response), id);
    received.extend(read_events(response).await);

    received_whole(&received, &words, &relay).await;
}

#[tokio::test]
async fn an_ended_stream_is_replayed_whole_to_its_owner_and_to_nobody_else() {
    let mock = MockUpstream::start().await;
    mock.push(Reply::answer(&["Hi", " there"], (3, 2)));
    let relay = TestRelay::builder(&mock)
        .config(|c| c.server.trusted_proxies = vec!["127.0.0.1".parse().unwrap()])
        .site(|s| s.origins.push("https://www.shop.example".into()))
        .start()
        .await;
    let visitor = "203.0.113.7, 127.0.0.1";
    let response =
        relay.chat().header("X-Forwarded-For", visitor).json(&ask()).send().await.unwrap();
    let id = stream_id(&response);
    let first = read_events(response).await;
    assert_eq!(first.last().unwrap().data, "[DONE]");

    // The owner gets all of it again (no Last-Event-ID: from the start).
    let again = relay.follow(&id).header("X-Forwarded-For", visitor).send().await.unwrap();
    let again = read_events(again).await;
    let data = |events: &[Event]| events.iter().map(|e| e.data.clone()).collect::<Vec<_>>();
    assert_eq!(data(&again), data(&first));

    // Another visitor, another of the site's origins, another site on the same origin, a
    // secret key, and an id that never was: all told the same thing.
    let (_, other_site_key) = relay
        .create_site(SiteSpec {
            name: "Other".into(),
            origins: vec![SITE_ORIGIN.into()],
            models: vec!["model-a".into()],
            ..SiteSpec::default()
        })
        .await;
    let (_, secret) = relay
        .create_key(KeySpec {
            name: "backend".into(),
            scopes: vec![Scope::Chat],
            ..KeySpec::default()
        })
        .await;
    let url = relay.url(&format!("/v1/chat/streams/{id}"));
    let site_page = |key: &str, origin: &str, address: &str| {
        let forwarded = format!("{address}, 127.0.0.1");
        relay
            .client
            .get(&url)
            .bearer_auth(key)
            .header("Origin", origin)
            .header("X-Forwarded-For", forwarded)
    };
    let attempts = [
        site_page(&relay.key, SITE_ORIGIN, "203.0.113.8"),
        site_page(&relay.key, "https://www.shop.example", "203.0.113.7"),
        site_page(&other_site_key, SITE_ORIGIN, "203.0.113.7"),
        relay.client.get(&url).bearer_auth(&secret),
        relay.follow("cs_00000000000000000000000000000000").header("X-Forwarded-For", visitor),
        relay.cancel(&id).header("X-Forwarded-For", "203.0.113.8, 127.0.0.1"),
    ];
    for attempt in attempts {
        assert_eq!(json_body(attempt.send().await.unwrap()).await, (404, not_found()));
    }
    // The page of the same visitor on the same origin is the owner.
    let owner = site_page(&relay.key, SITE_ORIGIN, "203.0.113.7").send().await.unwrap();
    assert_eq!(owner.status(), 200);
    // A Last-Event-ID that is not an event's id is refused as such.
    let bad = relay.follow(&id).header("Last-Event-ID", "three").send().await.unwrap();
    assert_eq!(json_body(bad).await.0, 400);
}

#[tokio::test]
async fn a_secret_keys_stream_is_followed_with_that_key_only() {
    let mock = MockUpstream::start().await;
    mock.push(Reply::answer(&["Hi"], (3, 1)));
    let relay = TestRelay::start(&mock).await;
    let spec =
        || KeySpec { name: "backend".into(), scopes: vec![Scope::Chat], ..KeySpec::default() };
    let (_, secret) = relay.create_key(spec()).await;
    let (_, other) = relay.create_key(spec()).await;
    let response = relay.chat_as(&secret, None).json(&ask()).send().await.unwrap();
    let id = stream_id(&response);
    read_events(response).await;

    let url = relay.url(&format!("/v1/chat/streams/{id}"));
    let mine = relay.client.get(&url).bearer_auth(&secret).header("Last-Event-ID", "1");
    let rest = read_events(mine.send().await.unwrap()).await;
    assert_eq!(rest.first().unwrap().id, "2");
    assert_eq!(rest.last().unwrap().data, "[DONE]");
    let theirs = relay.client.get(&url).bearer_auth(&other).send().await.unwrap();
    assert_eq!(json_body(theirs).await, (404, not_found()));
    let site = relay.follow(&id).send().await.unwrap();
    assert_eq!(json_body(site).await, (404, not_found()));
}

#[tokio::test]
async fn cancel_stops_the_upstream_call_and_settles_what_was_generated() {
    let mock = MockUpstream::start().await;
    let (relay, response) = endless_answer(&mock, ResumeConfig::default().grace_ms).await;
    let id = stream_id(&response);
    let mut events = response.bytes_stream().eventsource();
    assert_eq!(text_of(&next_event(&mut events).await), "la ");

    let cancelled = relay.cancel(&id).send().await.unwrap();
    assert_eq!(cancelled.status(), 204);
    ended_and_settled_as_interrupted(&mock, &relay).await;
    // The client still attached sees the rest, then why it ended.
    let mut last = next_event(&mut events).await;
    while last.event != "error" {
        last = next_event(&mut events).await;
    }
    assert_eq!(error_code(&last), "stream_cancelled");
    assert!(tokio::time::timeout(WAIT, events.next()).await.unwrap().is_none());
    // Cancelling it again changes nothing, and is no error.
    assert_eq!(relay.cancel(&id).send().await.unwrap().status(), 204);
}

#[tokio::test]
async fn nobody_reattaching_within_the_grace_period_ends_the_upstream_call_and_settles_it() {
    let mock = MockUpstream::start().await;
    let (relay, response) = endless_answer(&mock, 200).await;
    let id = stream_id(&response);
    let mut events = response.bytes_stream().eventsource();
    let first = next_event(&mut events).await;
    drop(events);
    ended_and_settled_as_interrupted(&mock, &relay).await;
    // Whoever comes back later (within resume.keep_ms) gets what was generated and why it
    // stopped.
    let late = relay.follow(&id).header("Last-Event-ID", &first.id).send().await.unwrap();
    let rest = read_events(late).await;
    assert_eq!(rest.first().unwrap().id, "2");
    assert_eq!(error_code(rest.last().unwrap()), "stream_abandoned");
}

#[tokio::test]
async fn with_a_grace_of_0_streams_are_not_resumable_and_a_client_that_leaves_ends_the_call() {
    let mock = MockUpstream::start().await;
    let (relay, response) = endless_answer(&mock, 0).await;
    assert!(response.headers().get("x-confab-stream").is_none());
    let mut events = response.bytes_stream().eventsource();
    assert_eq!(next_event(&mut events).await.id, "", "events carry no id");
    drop(events);
    ended_and_settled_as_interrupted(&mock, &relay).await;
    let follow = relay.follow("cs_00000000000000000000000000000000").send().await.unwrap();
    assert_eq!(json_body(follow).await, (404, not_found()));
}

#[tokio::test]
async fn shutdown_cuts_an_answer_nobody_follows_and_its_usage_is_written() {
    let mock = MockUpstream::start().await;
    mock.push(Reply::Stream(vec![Step::Endless(Duration::from_millis(10))]));
    // Usage records are written by the final flush, not before.
    let relay = TestRelay::metered(&mock)
        .config(|c| c.server.shutdown_grace_ms = 200)
        .config(|c| c.usage.flush_ms = 600_000)
        .start()
        .await;
    let response = relay.send_chat(ask()).await;
    let mut events = response.bytes_stream().eventsource();
    next_event(&mut events).await;
    drop(events);

    // The answer is still being produced for nobody (the grace period is a minute); shutdown
    // waits for it as for a request, then cuts it, and the final flush writes its record.
    let store = Arc::clone(&relay.store);
    relay.stop().await;
    mock.hangup().await;
    let records = store.usage_since(0, None, None).await.unwrap();
    assert_eq!(records.len(), 1, "{records:?}");
    assert_eq!(records[0].outcome, Outcome::Interrupted);
}

/// Two relays on one PostgreSQL database and one Redis, as behind a load balancer, with
/// `resume` as their `[resume]` section.
async fn two_relays(
    mock: &MockUpstream,
    redis: &RedisServer,
    resume: ResumeConfig,
) -> [TestRelay; 2] {
    let database = confab_tests::servers::postgres().database();
    let relay = || {
        let (url, resume) = (redis.url(), resume.clone());
        TestRelay::metered(mock).database_url(&database).config(move |c| {
            c.redis.url = Some(RedisUrl(url));
            c.resume = resume;
        })
    };
    [relay().start().await, relay().start().await]
}

/// `GET /v1/chat/streams/{id}` through `relay` as the page of `owner`'s site that started it,
/// retried (bounded) while the stream is not found there yet: it is mirrored to Redis in the
/// background.
async fn follow_through(
    relay: &TestRelay,
    owner: &TestRelay,
    id: &str,
    after: &str,
) -> reqwest::Response {
    tokio::time::timeout(WAIT, async {
        loop {
            let response = relay
                .client
                .get(relay.url(&format!("/v1/chat/streams/{id}")))
                .bearer_auth(&owner.key)
                .header("Origin", SITE_ORIGIN)
                .header("Last-Event-ID", after)
                .send()
                .await
                .unwrap();
            if response.status() != 404 {
                return response;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the other relay never found the stream")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_cut_mid_answer_is_resumed_through_the_other_relay_and_every_token_arrives_once() {
    let redis = RedisServer::start();
    let mock = MockUpstream::start().await;
    let words = ["Trains", " go", " through", " tunnels", ", and", " text", " survives", "."];
    pausing_answer(&mock, &words);
    let [one, two] = two_relays(&mock, &redis, ResumeConfig::default()).await;

    let response = one.send_chat(ask()).await;
    let id = stream_id(&response);
    let mut events = response.bytes_stream().eventsource();
    let mut received = Vec::new();
    for _ in 0..3 {
        received.push(next_event(&mut events).await);
    }
    // The connection is cut; the load balancer sends the client back to the other relay.
    drop(events);
    let response = follow_through(&two, &one, &id, "3").await;
    assert_eq!(response.status(), 200);
    assert_eq!(stream_id(&response), id);
    mock.release();
    received.extend(read_events(response).await);

    received_whole(&received, &words, &one).await;
    // Nobody else finds it through either relay.
    let (_, other) = two
        .create_site(SiteSpec {
            name: "Other".into(),
            origins: vec![SITE_ORIGIN.into()],
            models: vec!["model-a".into()],
            ..SiteSpec::default()
        })
        .await;
    let theirs = two
        .client
        .get(two.url(&format!("/v1/chat/streams/{id}")))
        .bearer_auth(&other)
        .header("Origin", SITE_ORIGIN);
    assert_eq!(json_body(theirs.send().await.unwrap()).await, (404, not_found()));
    one.stop().await;
    two.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_following_through_the_other_relay_keeps_the_answer_going_and_can_cancel_it_there()
{
    let redis = RedisServer::start();
    let mock = MockUpstream::start().await;
    mock.push(Reply::Stream(vec![Step::Endless(Duration::from_millis(10))]));
    let [one, two] =
        two_relays(&mock, &redis, ResumeConfig { grace_ms: 300, ..Default::default() }).await;
    let response = one.send_chat(ask()).await;
    let id = stream_id(&response);
    let mut events = response.bytes_stream().eventsource();
    let first = next_event(&mut events).await;
    drop(events);

    let response = follow_through(&two, &one, &id, &first.id).await;
    let mut events = response.bytes_stream().eventsource();
    // Three grace periods long, nobody follows through the relay that produces the answer:
    // the client on the other one keeps it going, and gets every event once, in order.
    let mut last: u64 = first.id.parse().unwrap();
    let until = tokio::time::Instant::now() + Duration::from_millis(900);
    while tokio::time::Instant::now() < until {
        let event = next_event(&mut events).await;
        assert_eq!(event.id, (last + 1).to_string(), "{event:?}");
        assert_eq!(text_of(&event), "la ");
        last += 1;
    }

    let cancelled = two
        .client
        .post(two.url(&format!("/v1/chat/streams/{id}/cancel")))
        .bearer_auth(&one.key)
        .header("Origin", SITE_ORIGIN)
        .send()
        .await
        .unwrap();
    assert_eq!(cancelled.status(), 204);
    ended_and_settled_as_interrupted(&mock, &one).await;
    let mut event = next_event(&mut events).await;
    while event.event != "error" {
        event = next_event(&mut events).await;
    }
    assert_eq!(error_code(&event), "stream_cancelled");
    assert!(tokio::time::timeout(WAIT, events.next()).await.unwrap().is_none());
    one.stop().await;
    two.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_redis_down_answers_stream_and_resume_through_the_relay_that_produces_them() {
    let mut redis = RedisServer::start();
    let mock = MockUpstream::start().await;
    mock.push(Reply::Stream(vec![
        Step::Content("Still"),
        Step::WaitForRelease,
        Step::Content(" here"),
        Step::Finish("stop"),
        Step::Usage { prompt: 7, completion: 2 },
        Step::Done,
    ]));
    let [one, two] = two_relays(&mock, &redis, ResumeConfig::default()).await;
    redis.stop();
    let response = one.send_chat(ask()).await;
    assert_eq!(response.status(), 200);
    let id = stream_id(&response);
    let mut events = response.bytes_stream().eventsource();
    let first = next_event(&mut events).await;
    drop(events);
    mock.release();
    let rest =
        read_events(one.follow(&id).header("Last-Event-ID", &first.id).send().await.unwrap()).await;
    assert_eq!(text_of(&first) + &rest.iter().map(text_of).collect::<String>(), "Still here");
    assert_eq!(rest.last().unwrap().data, "[DONE]");
    // The other relay cannot know it: it says so as for any unknown stream.
    let elsewhere = two
        .client
        .get(two.url(&format!("/v1/chat/streams/{id}")))
        .bearer_auth(&one.key)
        .header("Origin", SITE_ORIGIN);
    assert_eq!(json_body(elsewhere.send().await.unwrap()).await, (404, not_found()));
    one.stop().await;
    two.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_other_relay_holds_a_stream_within_the_same_bounds_and_says_what_it_no_longer_has() {
    let redis = RedisServer::start();
    let mock = MockUpstream::start().await;
    // In bursts the client keeps up with (it too gets only what the log holds).
    let mut steps = Vec::new();
    for _ in 0..3 {
        steps.extend(std::iter::repeat_n(Step::Content("word "), 10));
        steps.push(Step::Pause(Duration::from_millis(50)));
    }
    steps.extend([Step::Finish("stop"), Step::Usage { prompt: 7, completion: 30 }, Step::Done]);
    mock.push(Reply::Stream(steps));
    let bounds = ResumeConfig { max_events: 16, ..Default::default() };
    let [one, two] = two_relays(&mock, &redis, bounds).await;
    let response = one.send_chat(ask()).await;
    let id = stream_id(&response);
    let all = read_events(response).await;
    let last: u64 = all.last().unwrap().id.parse().unwrap();
    one.settled_usage(1).await;
    // Nobody wanted it through another relay yet: Redis holds nothing of it.
    assert_eq!(redis.command("KEYS confab:stream:*").unwrap(), "*0");

    // The last 16 events are held: from 15 before the last, the rest arrives whole.
    let from = (last - 15).to_string();
    let kept = read_events(follow_through(&two, &one, &id, &from).await).await;
    assert_eq!(
        kept.iter().map(|e| e.id.clone()).collect::<Vec<_>>(),
        all[all.len() - 15..].iter().map(|e| e.id.clone()).collect::<Vec<_>>()
    );
    // From further back, the client is told that the answer cannot be resumed from there.
    let lost = read_events(follow_through(&two, &one, &id, "1").await).await;
    assert_eq!(lost.len(), 1, "{lost:?}");
    assert_eq!(error_code(&lost[0]), "stream_truncated");
    one.stop().await;
    two.stop().await;
}
