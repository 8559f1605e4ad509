//! Conversations kept on the server, through real HTTP: transcripts on and off, feedback,
//! masking, hand-off to a person with live replies (on one relay and across two), retention,
//! erasure, and bad input.

use std::time::Duration;

use confab_server::store::{Holder, Outcome, Turn};
use confab_server::webhooks::EndpointConfig;
use confab_tests::{
    MockUpstream, Reply, SITE_ORIGIN, TestRelay, TestRelayBuilder, WAIT, WebhookReceiver, json_body,
};
use futures_util::StreamExt;
use reqwest::Method;
use serde_json::{Value, json};

const TOKEN: &str = "admin-token-for-conversations-0123456789";
const CONVERSATION: &str = "c_3fZq9KpL0aXw7YbN2mRt";
const WEBHOOK_SECRET: &str = "whsec-conversations-4f2a9c7e1b3d";

/// A relay with the admin API on, turns written every 20 ms, and the site's conversation
/// settings as `settings` (through the admin API, as an operator would set them).
struct Setup {
    relay: TestRelay,
    _dir: tempfile::TempDir,
}

fn builder(mock: &MockUpstream, dir: &tempfile::TempDir) -> TestRelayBuilder {
    let token_file = dir.path().join("admin-token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).unwrap();
    TestRelay::metered(mock).config(|c| {
        c.admin.token_file = Some(token_file);
        c.conversations.flush_ms = 20;
        c.conversations.poll_ms = 100;
    })
}

async fn setup(mock: &MockUpstream, settings: Value) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let relay = builder(mock, &dir).start().await;
    configure(&relay, settings).await;
    Setup { relay, _dir: dir }
}

async fn configure(relay: &TestRelay, settings: Value) {
    let path = format!("/admin/v1/sites/{}/conversations", relay.site_id);
    let (status, site) = admin(relay, Method::PATCH, &path, Some(settings)).await;
    assert_eq!(status, 200, "{site}");
}

async fn admin(relay: &TestRelay, method: Method, path: &str, body: Option<Value>) -> (u16, Value) {
    let mut request = relay.client.request(method, relay.url(path)).bearer_auth(TOKEN);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    if response.status() == 204 {
        return (204, Value::Null);
    }
    json_body(response).await
}

/// A visitor's request of the site (key and origin), to `path`.
fn visitor(relay: &TestRelay, method: Method, path: &str) -> reqwest::RequestBuilder {
    relay
        .client
        .request(method, relay.url(path))
        .bearer_auth(&relay.key)
        .header("Origin", SITE_ORIGIN)
}

/// A chat request of the conversation, streamed.
async fn ask(relay: &TestRelay, question: &str) -> reqwest::Response {
    relay
        .chat()
        .header("X-Confab-Conversation", CONVERSATION)
        .header("X-Confab-Page", "https://shop.example/help?topic=returns")
        .json(&json!({"messages": [{"role": "user", "content": question}], "stream": true}))
        .send()
        .await
        .unwrap()
}

/// Waits (bounded) until the conversation has `count` messages, and returns its admin view.
async fn conversation_with(relay: &TestRelay, count: usize) -> Value {
    let path = format!("/admin/v1/conversations/{CONVERSATION}");
    tokio::time::timeout(WAIT, async {
        loop {
            let (status, view) = admin(relay, Method::GET, &path, None).await;
            if status == 200 && view["messages"].as_array().is_some_and(|m| m.len() >= count) {
                return view;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("the conversation never had {count} messages"))
}

async fn metrics(relay: &TestRelay) -> String {
    let response = relay.client.get(relay.url("/metrics")).bearer_auth(TOKEN).send().await;
    response.unwrap().text().await.unwrap()
}

#[tokio::test]
async fn a_kept_conversation_has_its_questions_answers_cost_and_feedback() {
    let mock = MockUpstream::start().await;
    let Setup { relay, _dir } = setup(&mock, json!({"transcripts": true})).await;
    mock.push(Reply::answer(&["Returns ", "take 30 days."], (12, 4)));
    let response = ask(&relay, "How long do returns take?").await;
    assert_eq!(response.status(), 200);
    // The answer's id is readable by the widget's script (CORS), for feedback.
    let exposed = response.headers()["access-control-expose-headers"].to_str().unwrap();
    assert!(exposed.to_ascii_lowercase().contains("x-request-id"), "{exposed}");
    let request_id = response.headers()["x-request-id"].to_str().unwrap().to_owned();
    response.text().await.unwrap();

    // A whole answer is kept too.
    mock.push(Reply::answer(&["Yes."], (20, 1)));
    let whole = relay
        .chat()
        .header("X-Confab-Conversation", CONVERSATION)
        .json(&json!({"messages": [{"role": "user", "content": "Free?"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(whole.status(), 200);
    whole.text().await.unwrap();

    let view = conversation_with(&relay, 4).await;
    let messages: Vec<(&str, &str)> = view["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["author"].as_str().unwrap(), m["content"].as_str().unwrap()))
        .collect();
    assert_eq!(
        messages,
        [
            ("visitor", "How long do returns take?"),
            ("bot", "Returns take 30 days."),
            ("visitor", "Free?"),
            ("bot", "Yes."),
        ]
    );
    assert_eq!(view["messages"][1]["request_id"], request_id.as_str());
    assert_eq!(view["site_id"], relay.site_id.as_str());
    assert_eq!(view["page_url"], "https://shop.example/help?topic=returns");
    assert_eq!(view["holder"], "bot");
    // Priced at a micro-dollar a token: the two answers' tokens, as the usage records say.
    let records = relay.settled_usage(2).await;
    let cost: u64 = records.iter().map(|r| r.cost_micros).sum();
    assert_eq!((view["cost_micros"].as_u64(), cost), (Some(37), 37));
    assert_eq!((&view["input_tokens"], &view["output_tokens"]), (&json!(32), &json!(5)));
    assert_eq!(view["visitor"], json!(records[0].visitor));

    // Feedback on the first answer, changed from up to down with a comment.
    for (rating, comment) in [("up", None), ("down", Some("  Too vague  "))] {
        let mut body =
            json!({"conversation": CONVERSATION, "message": request_id, "rating": rating});
        if let Some(comment) = comment {
            body["comment"] = json!(comment);
        }
        let response = visitor(&relay, Method::POST, "/v1/feedback").json(&body).send().await;
        let (status, answer) = json_body(response.unwrap()).await;
        assert_eq!((status, answer), (202, json!({"stored": true})));
    }
    let view = conversation_with(&relay, 4).await;
    assert_eq!(view["messages"][1]["rating"], "down");
    assert_eq!(view["messages"][1]["comment"], "Too vague");
    assert_eq!(view["messages"][3]["rating"], Value::Null);
    assert_eq!(view["feedback"], json!({"up": 0, "down": 1}));

    // Found in the listing, by site, by rating and by text; counted in the metrics.
    let path = format!("/admin/v1/conversations?site={}&rating=down&q=RETURNS", relay.site_id);
    let (status, list) = admin(&relay, Method::GET, &path, None).await;
    assert_eq!(status, 200, "{list}");
    assert_eq!(list["data"][0]["id"], CONVERSATION);
    assert_eq!(list["data"].as_array().unwrap().len(), 1);
    let text = metrics(&relay).await;
    assert!(text.contains("confab_feedback_total{rating=\"down\"} 1"), "{text}");
    assert!(text.contains("confab_feedback_total{rating=\"up\"} 1"), "{text}");

    // The widget is told that the site keeps transcripts.
    let config = visitor(&relay, Method::GET, "/v1/widget/config").send().await.unwrap();
    let (_, config) = json_body(config).await;
    assert_eq!(
        config["conversations"],
        json!({"notice": confab_server::conversations::NOTICE, "handoff": false})
    );
    relay.stop().await;
}

#[tokio::test]
async fn with_transcripts_off_nothing_of_a_conversation_is_stored() {
    let mock = MockUpstream::start().await;
    let Setup { relay, _dir } = setup(&mock, json!({"transcripts": false})).await;
    mock.push(Reply::answer(&["Hi"], (3, 1)));
    let response = ask(&relay, "my mail is ana@shop.example").await;
    let request_id = response.headers()["x-request-id"].to_str().unwrap().to_owned();
    response.text().await.unwrap();
    let body = json!({"conversation": CONVERSATION, "message": request_id, "rating": "up"});
    let response = visitor(&relay, Method::POST, "/v1/feedback").json(&body).send().await;
    assert_eq!(json_body(response.unwrap()).await, (202, json!({"stored": false})));
    // Asking for a person is refused: nothing would keep the conversation.
    let path = format!("/v1/conversations/{CONVERSATION}/handoff");
    let (status, error) =
        json_body(visitor(&relay, Method::POST, &path).send().await.unwrap()).await;
    assert_eq!((status, &error["error"]["code"]), (403, &json!("transcripts_off")));

    relay.settled_usage(1).await;
    // Flushed at shutdown: still nothing.
    let store = std::sync::Arc::clone(&relay.store);
    relay.stop().await;
    let all = confab_server::store::ConversationFilter { limit: 10, ..Default::default() };
    assert!(store.list_conversations(&all).await.unwrap().is_empty());
    assert_eq!(store.conversation(CONVERSATION).await.unwrap(), None);
    assert!(store.messages(CONVERSATION, 0, 10).await.unwrap().is_empty());
}

#[tokio::test]
async fn contacts_are_masked_before_storage_when_the_site_asks() {
    let mock = MockUpstream::start().await;
    let settings = json!({"transcripts": true, "mask_contacts": true});
    let Setup { relay, _dir } = setup(&mock, settings).await;
    mock.push(Reply::answer(&["We will call +34 612 345 678."], (3, 1)));
    ask(&relay, "I am ana.lopez@mail.example, phone 0612345678").await.text().await.unwrap();
    let view = conversation_with(&relay, 2).await;
    assert_eq!(view["messages"][0]["content"], "I am [email], phone [phone]");
    assert_eq!(view["messages"][1]["content"], "We will call [phone].");
    // The upstream still got the visitor's words: masking is about what is kept.
    assert!(mock.only_request()["messages"].to_string().contains("ana.lopez@mail.example"));
    relay.stop().await;
}

/// An events stream of the conversation, read event by event.
struct Events {
    lines: std::pin::Pin<Box<dyn futures_util::Stream<Item = (String, Value)> + Send>>,
}

impl Events {
    async fn open(relay: &TestRelay, after: i64) -> Self {
        let path = format!("/v1/conversations/{CONVERSATION}/events?after={after}");
        let response = visitor(relay, Method::GET, &path).send().await.unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["content-type"], "text/event-stream");
        let events =
            eventsource_stream::Eventsource::eventsource(response.bytes_stream()).map(|event| {
                let event = event.unwrap();
                (event.event, serde_json::from_str(&event.data).unwrap())
            });
        Self { lines: Box::pin(events) }
    }

    async fn next(&mut self) -> (String, Value) {
        tokio::time::timeout(WAIT, self.lines.next())
            .await
            .expect("no event in time")
            .expect("the stream ended")
    }
}

fn hooked(
    mock: &MockUpstream,
    dir: &tempfile::TempDir,
    receiver: &WebhookReceiver,
) -> TestRelayBuilder {
    std::fs::write(dir.path().join("webhook.secret"), WEBHOOK_SECRET).unwrap();
    let endpoint = EndpointConfig {
        url: receiver.url.clone(),
        secret_env: None,
        secret_file: Some(dir.path().join("webhook.secret")),
        events: vec!["conversation.handoff".into()],
        site: None,
        request_completed_sample_percent: 100,
    };
    builder(mock, dir).config(|c| {
        c.webhooks.endpoints = vec![endpoint];
        c.webhooks.poll_ms = 20;
    })
}

#[tokio::test]
async fn a_person_takes_over_replies_live_and_hands_back() {
    let mock = MockUpstream::start().await;
    let receiver = WebhookReceiver::start(&[]).await;
    let dir = tempfile::tempdir().unwrap();
    let relay = hooked(&mock, &dir, &receiver).start().await;
    configure(&relay, json!({"transcripts": true, "handoff": true})).await;

    mock.push(Reply::answer(&["I am a bot."], (3, 1)));
    ask(&relay, "Can I talk to a human?").await.text().await.unwrap();
    conversation_with(&relay, 2).await;

    let path = format!("/v1/conversations/{CONVERSATION}/handoff");
    let response = visitor(&relay, Method::POST, &path).send().await.unwrap();
    assert_eq!(json_body(response).await, (200, json!({"holder": "waiting"})));

    // Operators hear of it, with the conversation and a signed link that opens it.
    let delivery = receiver.wait_for(1).await.remove(0);
    assert!(delivery.signature_is_valid(WEBHOOK_SECRET));
    let event = delivery.json();
    assert_eq!(event["type"], "conversation.handoff");
    let data = &event["data"];
    assert_eq!(data["conversation_id"], CONVERSATION);
    assert_eq!(data["messages"][0]["content"], "Can I talk to a human?");
    let link = data["api_link"].as_str().unwrap();
    assert!(link.starts_with(&format!("/admin/v1/shared/conversations/{CONVERSATION}?")), "{link}");
    let query = link.split_once('?').unwrap().1;
    let console = format!("/console/#/shared/{CONVERSATION}?{query}");
    assert_eq!(data["link"], console.as_str(), "the console's page of the same link");
    let shared = relay.client.get(relay.url(link)).send().await.unwrap();
    let (status, view) = json_body(shared).await;
    assert_eq!((status, &view["holder"]), (200, &json!("waiting")));
    let forged = link.replace("sig=", "sig=0");
    let (status, error) =
        json_body(relay.client.get(relay.url(&forged)).send().await.unwrap()).await;
    assert_eq!((status, &error["error"]["code"]), (403, &json!("invalid_link")));

    // The bot no longer answers: refused before anything is charged or sent upstream.
    let refused = ask(&relay, "Hello?").await;
    let (status, error) = json_body(refused).await;
    assert_eq!((status, &error["error"]["code"]), (409, &json!("conversation_with_person")));
    assert_eq!(mock.requests().len(), 1);

    // The visitor's widget follows the conversation: the holder first, then a person's reply.
    let mut events = Events::open(&relay, 0).await;
    assert_eq!(events.next().await, ("holder".into(), json!({"holder": "waiting"})));
    let path = format!("/admin/v1/conversations/{CONVERSATION}/messages");
    let (status, reply) =
        admin(&relay, Method::POST, &path, Some(json!({"content": "Hi, I am Ana"}))).await;
    assert_eq!((status, &reply["author"]), (201, &json!("operator")), "{reply}");
    let (kind, first) = events.next().await;
    let (kind, first) = if kind == "holder" {
        assert_eq!(first, json!({"holder": "person"}));
        events.next().await
    } else {
        (kind, first)
    };
    assert_eq!(
        (kind.as_str(), &first["content"], &first["author"]),
        ("message", &json!("Hi, I am Ana"), &json!("operator"))
    );
    let seq = first["seq"].as_i64().unwrap();

    // The visitor answers the person.
    let path = format!("/v1/conversations/{CONVERSATION}/messages");
    let response = visitor(&relay, Method::POST, &path)
        .json(&json!({"content": "My order is late"}))
        .send()
        .await
        .unwrap();
    let (status, message) = json_body(response).await;
    assert_eq!((status, &message["author"]), (201, &json!("visitor")), "{message}");

    // A visitor who comes back later gets the reply again (and only what is after `after`).
    let mut later = Events::open(&relay, seq - 1).await;
    assert_eq!(later.next().await.0, "holder");
    assert_eq!(later.next().await.1["content"], "Hi, I am Ana");

    // Handed back: the stream says so and the bot answers again.
    let path = format!("/admin/v1/conversations/{CONVERSATION}/release");
    assert_eq!(admin(&relay, Method::POST, &path, None).await, (200, json!({"holder": "bot"})));
    assert_eq!(events.next().await, ("holder".into(), json!({"holder": "bot"})));
    mock.push(Reply::answer(&["Back again."], (3, 1)));
    let response = ask(&relay, "Thanks").await;
    assert_eq!(response.status(), 200);
    response.text().await.unwrap();

    let view = conversation_with(&relay, 6).await;
    let authors: Vec<&str> = view["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["author"].as_str().unwrap())
        .collect();
    assert_eq!(authors, ["visitor", "bot", "operator", "visitor", "visitor", "bot"]);
    let text = metrics(&relay).await;
    assert!(text.contains("confab_handoffs_total 1"), "{text}");
    relay.stop().await;
}

/// A visitor's conversation calls count against their limits in a window of their own: a
/// visitor out of questions to the bot can still ask for and talk to a person, but a flood of
/// messages, feedback or event streams is refused with 429, and nothing of it is written.
#[tokio::test]
async fn a_visitors_conversation_calls_are_rate_limited_apart_from_their_questions() {
    let mock = MockUpstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let relay = builder(&mock, &dir).config(|c| c.visitors.rpm = 3).start().await;
    configure(&relay, json!({"transcripts": true, "handoff": true})).await;

    // Three questions use the visitor's minute; the fourth is refused.
    let mut request_id = String::new();
    for question in ["One?", "Two?", "Three?"] {
        mock.push(Reply::answer(&["Yes."], (3, 1)));
        let response = ask(&relay, question).await;
        assert_eq!(response.status(), 200);
        request_id = response.headers()["x-request-id"].to_str().unwrap().to_owned();
        response.text().await.unwrap();
    }
    let (status, error) = json_body(ask(&relay, "Four?").await).await;
    assert_eq!((status, &error["error"]["code"]), (429, &json!("rate_limit_exceeded")));
    conversation_with(&relay, 6).await;

    // The person is still there: a hand-off, a message, a rating (three calls of the minute).
    let handoff = format!("/v1/conversations/{CONVERSATION}/handoff");
    let response = visitor(&relay, Method::POST, &handoff).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let messages = format!("/v1/conversations/{CONVERSATION}/messages");
    let response = visitor(&relay, Method::POST, &messages)
        .json(&json!({"content": "Please help"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let rating = json!({"conversation": CONVERSATION, "message": request_id, "rating": "down"});
    let response = visitor(&relay, Method::POST, "/v1/feedback").json(&rating).send().await;
    assert_eq!(response.unwrap().status(), 202);

    // The fourth of the minute, whichever it is, is refused with Retry-After; nothing is added.
    let flood = visitor(&relay, Method::POST, &messages)
        .json(&json!({"content": "Hello??"}))
        .send()
        .await
        .unwrap();
    assert!(flood.headers().contains_key("retry-after"), "{:?}", flood.headers());
    let (status, error) = json_body(flood).await;
    assert_eq!((status, &error["error"]["code"]), (429, &json!("rate_limit_exceeded")));
    let events = format!("/v1/conversations/{CONVERSATION}/events");
    let response = visitor(&relay, Method::GET, &events).send().await.unwrap();
    assert_eq!(response.status(), 429);
    let again = json!({"conversation": CONVERSATION, "message": request_id, "rating": "up"});
    let response = visitor(&relay, Method::POST, "/v1/feedback").json(&again).send().await;
    assert_eq!(response.unwrap().status(), 429);

    let path = format!("/admin/v1/conversations/{CONVERSATION}");
    let (_, view) = admin(&relay, Method::GET, &path, None).await;
    let messages = view["messages"].as_array().unwrap();
    assert_eq!(messages.len(), 7, "{view}");
    assert_eq!(messages[6]["content"], "Please help");
    assert_eq!(view["feedback"], json!({"up": 0, "down": 1}), "{view}");
    assert!(metrics(&relay).await.contains("confab_feedback_total{rating=\"down\"} 1"));
    relay.stop().await;
}

#[tokio::test]
async fn a_reply_written_through_another_relay_reaches_the_visitor() {
    let mock = MockUpstream::start().await;
    let shared = tempfile::tempdir().unwrap();
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let journal = |dir: &tempfile::TempDir| {
        let path = dir.path().join("journal");
        move |c: &mut confab_server::config::Config| c.usage.journal_dir = Some(path)
    };
    let a = builder(&mock, &dir_a).database(shared.path()).config(journal(&dir_a)).start().await;
    configure(&a, json!({"transcripts": true, "handoff": true})).await;
    // The second relay on the same database, with the first one's site key.
    let mut b =
        builder(&mock, &dir_b).database(shared.path()).config(journal(&dir_b)).start().await;
    b.key.clone_from(&a.key);

    let path = format!("/v1/conversations/{CONVERSATION}/handoff");
    let response = visitor(&a, Method::POST, &path).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let mut events = Events::open(&a, 0).await;
    assert_eq!(events.next().await.1, json!({"holder": "waiting"}));
    let path = format!("/admin/v1/conversations/{CONVERSATION}/messages");
    let (status, _) = admin(&b, Method::POST, &path, Some(json!({"content": "From B"}))).await;
    assert_eq!(status, 201);
    let mut seen = Vec::new();
    while !seen.iter().any(|(kind, _): &(String, Value)| kind == "message") {
        seen.push(events.next().await);
    }
    assert_eq!(seen.last().unwrap().1["content"], "From B");
    b.stop().await;
    a.stop().await;
}

#[tokio::test]
async fn conversations_past_their_sites_retention_are_deleted() {
    let mock = MockUpstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let relay = builder(&mock, &dir).config(|c| c.conversations.sweep_every_ms = 100).start().await;
    configure(&relay, json!({"transcripts": true, "retention_days": 1})).await;
    let now = i64::try_from(
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis(),
    )
    .unwrap();
    let turn = |id: &str, at_ms: i64| Turn {
        conversation_id: id.into(),
        site_id: relay.site_id.clone(),
        visitor: None,
        page_url: None,
        model: "model-a".into(),
        request_id: format!("r-{id}"),
        at_ms,
        question: "q".into(),
        answer: "a".into(),
        input_tokens: 1,
        output_tokens: 1,
        cost_micros: 2,
        outcome: Outcome::Completed,
    };
    let (old, fresh) = ("c_old_00000000000000", "c_fresh_000000000000");
    relay
        .store
        .record_turns(&[turn(old, now - 2 * 86_400_000), turn(fresh, now - 3_600_000)])
        .await
        .unwrap();
    tokio::time::timeout(WAIT, async {
        while relay.store.conversation(old).await.unwrap().is_some() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the expired conversation was never deleted");
    assert!(relay.store.messages(old, 0, 10).await.unwrap().is_empty());
    let kept = relay.store.conversation(fresh).await.unwrap().unwrap();
    assert_eq!(kept.holder, Holder::Bot);
    relay.stop().await;
}

#[tokio::test]
async fn a_visitor_is_erased_on_request() {
    let mock = MockUpstream::start().await;
    let Setup { relay, _dir } = setup(&mock, json!({"transcripts": true})).await;
    mock.push(Reply::answer(&["Hi"], (3, 1)));
    ask(&relay, "Hello").await.text().await.unwrap();
    let view = conversation_with(&relay, 2).await;
    let hash = view["visitor"].as_str().unwrap().to_owned();
    let path = format!("/admin/v1/conversations?visitor={hash}");
    let erased = admin(&relay, Method::DELETE, &path, None).await;
    assert_eq!(erased, (200, json!({"deleted": 1})), "{}", confab_tests::captured_logs());
    let path = format!("/admin/v1/conversations/{CONVERSATION}");
    let (status, _) = admin(&relay, Method::GET, &path, None).await;
    assert_eq!(status, 404);
    relay.stop().await;
}

#[tokio::test]
async fn bad_conversation_input_is_refused_and_changes_nothing() {
    let mock = MockUpstream::start().await;
    let Setup { relay, _dir } = setup(&mock, json!({"transcripts": true})).await;

    // A malformed conversation id: 400 before anything is charged or sent.
    let response = relay
        .chat()
        .header("X-Confab-Conversation", "short")
        .json(&json!({"messages": [{"role": "user", "content": "Hi"}]}))
        .send()
        .await
        .unwrap();
    let (status, error) = json_body(response).await;
    assert_eq!((status, &error["error"]["code"]), (400, &json!("invalid_conversation")));
    assert!(mock.requests().is_empty());

    for (body, code) in [
        (json!({"conversation": CONVERSATION, "message": "r1", "rating": "meh"}), "invalid_rating"),
        (json!({"conversation": "x", "message": "r1", "rating": "up"}), "invalid_conversation"),
        (json!({"conversation": CONVERSATION, "message": "", "rating": "up"}), "invalid_message"),
        (
            json!({"conversation": CONVERSATION, "message": "r1", "rating": "up", "comment": "x".repeat(2001)}),
            "message_too_long",
        ),
        (
            json!({"conversation": CONVERSATION, "message": "r1", "rating": "up", "extra": 1}),
            "invalid_field",
        ),
    ] {
        let response = visitor(&relay, Method::POST, "/v1/feedback").json(&body).send().await;
        let (status, error) = json_body(response.unwrap()).await;
        assert_eq!(status, 400, "{body} → {error}");
        assert_eq!(error["error"]["code"], code, "{body} → {error}");
    }
    // Hand-off is off for this site; a visitor message to a conversation nobody holds is refused.
    let path = format!("/v1/conversations/{CONVERSATION}/handoff");
    let (status, error) =
        json_body(visitor(&relay, Method::POST, &path).send().await.unwrap()).await;
    assert_eq!((status, &error["error"]["code"]), (403, &json!("handoff_off")));
    let path = format!("/v1/conversations/{CONVERSATION}/events");
    let (status, _) = json_body(visitor(&relay, Method::GET, &path).send().await.unwrap()).await;
    assert_eq!(status, 404);
    // Settings that do not hold together are refused, and the site keeps its own.
    let path = format!("/admin/v1/sites/{}/conversations", relay.site_id);
    for body in [
        json!({"transcripts": false, "handoff": true}),
        json!({"retention_days": 0}),
        json!({"notice": "x".repeat(301)}),
        json!({"transcripts": "yes"}),
    ] {
        let (status, _) = admin(&relay, Method::PATCH, &path, Some(body.clone())).await;
        assert_eq!(status, 400, "{body}");
    }
    let (_, site) =
        admin(&relay, Method::GET, &format!("/admin/v1/sites/{}", relay.site_id), None).await;
    assert_eq!(
        site["conversations"],
        json!({"transcripts": true, "retention_days": 30, "mask_contacts": false, "notice": null, "handoff": false})
    );
    // Nothing was stored by any of it.
    let (_, list) = admin(&relay, Method::GET, "/admin/v1/conversations", None).await;
    assert_eq!(list["data"], json!([]));
    // Another site cannot read this site's conversation.
    let (_, other_key) = relay
        .create_site(confab_server::sites::SiteSpec {
            name: "Other".into(),
            origins: vec!["https://other.example".into()],
            ..Default::default()
        })
        .await;
    mock.push(Reply::answer(&["Hi"], (3, 1)));
    ask(&relay, "Hello").await.text().await.unwrap();
    conversation_with(&relay, 2).await;
    let path = format!("/v1/conversations/{CONVERSATION}/events");
    let response = relay
        .client
        .get(relay.url(&path))
        .bearer_auth(other_key)
        .header("Origin", "https://other.example")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 403, "the other site keeps no transcripts");
    relay.stop().await;
}
