//! Answers grounded in a site's knowledge: what the upstream receives, what the stream tells the
//! client, and what a site without knowledge keeps (the same bytes as before).

use std::time::Duration;

use confab_server::store::Grounding;
use confab_server::store::knowledge::{NewDocument, NewPassage, PutOutcome};
use confab_tests::sse::read_events;
use confab_tests::{MockUpstream, Reply, TestRelay, WAIT, json_body};
use serde_json::{Value, json};

const RETURNS_FACT: &str = "Refunds for returned kayaks reach your card within 9 working days.";
const SHIPPING_FACT: &str = "Orders ship from the Alderbank warehouse every weekday at 15:00.";

fn document(site: &str, source: &str, title: &str, heading: &str, text: &str) -> NewDocument {
    NewDocument {
        site_id: site.into(),
        source: source.into(),
        title: title.into(),
        content_hash: format!("{:x}", text.len()),
        at_ms: 1,
        passages: vec![NewPassage { heading_path: vec![heading.into()], text: text.into() }],
    }
}

/// Adds the returns page (a URL) and the shipping notes (a file) to the relay's site, and tells
/// the relay, as the admin API does; the returns document's id.
async fn add_knowledge(relay: &TestRelay) -> i64 {
    let caps = relay.config.knowledge.caps();
    let returns = document(
        &relay.site_id,
        "https://shop.example/help/returns",
        "Returns and refunds",
        "Refunds",
        RETURNS_FACT,
    );
    let shipping =
        document(&relay.site_id, "/srv/docs/shipping.md", "Shipping", "Dispatch", SHIPPING_FACT);
    let PutOutcome::Added(returns) = relay.store.put_document(&returns, caps).await.unwrap() else {
        panic!("the returns page was not added")
    };
    relay.store.put_document(&shipping, caps).await.unwrap();
    relay.knowledge.site_changed(&relay.site_id).await;
    returns.id
}

/// The system messages the upstream received.
fn system_messages(sent: &Value) -> Vec<String> {
    let messages = sent["messages"].as_array().unwrap();
    messages
        .iter()
        .filter(|m| m["role"] == "system")
        .map(|m| m["content"].as_str().unwrap().to_owned())
        .collect()
}

/// Streams a question and returns the data of every event and what the upstream received.
async fn ask(
    relay: &TestRelay,
    mock: &MockUpstream,
    messages: Value,
    words: &[&'static str],
) -> (Vec<Value>, Value) {
    mock.push(Reply::answer(words, (10, 5)));
    let response = relay.send_chat(json!({"messages": messages, "stream": true})).await;
    assert_eq!(response.status(), 200);
    let events = read_events(response).await;
    let data = events
        .iter()
        .filter(|e| e.data != "[DONE]")
        .map(|e| serde_json::from_str(&e.data).unwrap())
        .collect();
    (data, mock.requests().pop().unwrap().body)
}

fn sources_chunk(events: &[Value]) -> Option<&Value> {
    events.iter().find(|e| e.get("confab").is_some())
}

#[tokio::test]
async fn the_passage_that_answers_reaches_the_upstream_and_the_stream_names_the_cited_source() {
    let mock = MockUpstream::start().await;
    let relay = TestRelay::start(&mock).await;
    add_knowledge(&relay).await;

    let question = json!([{"role": "user", "content": "How long do kayak refunds take?"}]);
    let (events, sent) =
        ask(&relay, &mock, question, &["Within 9 working days ", "[1", "]."]).await;

    let systems = system_messages(&sent);
    assert_eq!(systems[0], "You are the shop's assistant.", "the site's prompt stays first");
    let block = &systems[1];
    assert!(block.contains("cite each source you use"), "{block}");
    assert!(
        block.contains("[1] Returns and refunds (https://shop.example/help/returns)"),
        "{block}"
    );
    assert!(block.contains(&format!("Refunds: {RETURNS_FACT}")), "{block}");
    assert!(!block.contains("/srv/docs"), "a file's path never leaves the relay: {block}");

    let chunk = sources_chunk(&events).expect("a chunk names the sources");
    assert_eq!(chunk["object"], "chat.completion.chunk");
    assert_eq!(chunk["choices"], json!([]), "OpenAI clients skip it like the usage chunk");
    assert_eq!(
        chunk["confab"]["sources"],
        json!([{"n": 1, "title": "Returns and refunds", "url": "https://shop.example/help/returns"}])
    );
    // After the whole answer: the client knows which sources it cited once it has it all.
    let at = |f: &dyn Fn(&Value) -> bool| events.iter().rposition(f).unwrap();
    let answered = at(&|e| e["choices"].as_array().is_some_and(|c| !c.is_empty()));
    let named = at(&|e| e.get("confab").is_some());
    assert!(named > answered);
    // And before the usage chunk, which stays the last before [DONE], where clients look for it.
    assert!(events[named + 1].get("usage").is_some_and(|u| !u.is_null()), "{events:?}");
    assert_eq!(named + 2, events.len());
}

#[tokio::test]
async fn a_follow_up_finds_its_source_through_the_earlier_question() {
    let mock = MockUpstream::start().await;
    let relay = TestRelay::start(&mock).await;
    add_knowledge(&relay).await;

    let conversation = json!([
        {"role": "user", "content": "When do orders ship from the warehouse?"},
        {"role": "assistant", "content": "Every weekday."},
        {"role": "user", "content": "At what time?"}
    ]);
    let (_, sent) = ask(&relay, &mock, conversation, &["At 15:00."]).await;
    let block = &system_messages(&sent)[1];
    assert!(block.contains(SHIPPING_FACT), "{block}");
    assert!(block.contains("[1] Shipping\n"), "a file's source has a title and no URL: {block}");
}

#[tokio::test]
async fn a_document_removed_elsewhere_is_never_retrieved_even_before_this_relay_rebuilds() {
    let mock = MockUpstream::start().await;
    let relay = TestRelay::start(&mock).await;
    let returns = add_knowledge(&relay).await;
    let question = json!([{"role": "user", "content": "How long do kayak refunds take?"}]);
    let (_, sent) = ask(&relay, &mock, question.clone(), &["9 days."]).await;
    assert!(system_messages(&sent)[1].contains(RETURNS_FACT));

    // Another relay (or the CLI) removes it: this relay's index still holds it until its
    // next poll, but what reaches a prompt is read from the store.
    assert!(relay.store.remove_document(&relay.site_id, returns).await.unwrap());
    let (events, sent) = ask(&relay, &mock, question, &["I do not know."]).await;
    let sent_text = sent.to_string();
    assert!(!sent_text.contains(RETURNS_FACT), "{sent_text}");
    if let Some(chunk) = sources_chunk(&events) {
        assert!(!chunk.to_string().contains("returns"), "{chunk}");
    }
}

#[tokio::test]
async fn knowledge_added_through_another_relay_is_picked_up_by_polling() {
    let mock = MockUpstream::start().await;
    let relay = TestRelay::builder(&mock).config(|c| c.knowledge.poll_ms = 50).start().await;
    let shipping =
        document(&relay.site_id, "https://shop.example/shipping", "Shipping", "", SHIPPING_FACT);
    relay.store.put_document(&shipping, relay.config.knowledge.caps()).await.unwrap();
    // Not told: the poll finds the new version.
    tokio::time::timeout(WAIT, async {
        while !relay.knowledge.has(&relay.site_id) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the relay did not pick up the new knowledge");
    let question = json!([{"role": "user", "content": "When do orders ship?"}]);
    let (_, sent) = ask(&relay, &mock, question, &["15:00."]).await;
    assert!(system_messages(&sent)[1].contains(SHIPPING_FACT));

    // And a site whose knowledge is all gone is dropped from the index on the next poll.
    let documents = relay.store.knowledge_documents(&relay.site_id).await.unwrap();
    relay.store.remove_document(&relay.site_id, documents[0].id).await.unwrap();
    tokio::time::timeout(WAIT, async {
        while relay.knowledge.has(&relay.site_id) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the relay did not drop the emptied site");
}

#[tokio::test]
async fn a_strict_site_is_told_to_answer_only_from_its_sources_and_to_offer_a_person() {
    let mock = MockUpstream::start().await;
    let relay = TestRelay::start(&mock).await;
    add_knowledge(&relay).await;
    relay.store.set_site_grounding(&relay.site_id, Grounding::Strict).await.unwrap();
    let mut conversations = relay.store.site(&relay.site_id).await.unwrap().unwrap();
    conversations.settings.conversations.transcripts = true;
    conversations.settings.conversations.handoff = true;
    let settings = conversations.settings.conversations;
    relay.store.set_site_conversations(&relay.site_id, &settings).await.unwrap();

    // Nothing in the knowledge matches: the instruction still goes, saying so.
    let question = json!([{"role": "user", "content": "Do you sell bicycles?"}]);
    let (events, sent) = ask(&relay, &mock, question, &["The documents do not say."]).await;
    let block = &system_messages(&sent)[1];
    assert!(block.contains("Answer only from them"), "{block}");
    assert!(block.contains("Talk to a person"), "{block}");
    assert!(block.contains("No source matches"), "{block}");
    assert!(sources_chunk(&events).is_none(), "no sources, no sources chunk");
}

#[tokio::test]
async fn the_sources_take_their_share_of_the_context_before_older_turns() {
    let mock = MockUpstream::start().await;
    let relay = TestRelay::builder(&mock).config(|c| c.policy.context_bytes = 1_200).start().await;
    add_knowledge(&relay).await;
    // It would fit without the sources: 800 + 6 + 31 bytes.
    let older = "o".repeat(800);
    let conversation = json!([
        {"role": "user", "content": older},
        {"role": "assistant", "content": "Noted."},
        {"role": "user", "content": "How long do kayak refunds take?"}
    ]);
    let (_, sent) = ask(&relay, &mock, conversation, &["9 days."]).await;
    let block = &system_messages(&sent)[1];
    assert!(block.len() <= 600, "at most half of context_bytes: {}", block.len());
    assert!(block.contains(RETURNS_FACT), "{block}");
    // 1,200 bytes: the sources (up to 600) and the question leave no room for the older turn.
    assert!(!sent.to_string().contains(&older), "the older turn was trimmed");
}

#[tokio::test]
async fn a_site_without_knowledge_sends_the_same_bytes_upstream_as_a_relay_without_any() {
    let mock = MockUpstream::start().await;
    let body = json!({
        "messages": [{"role": "user", "content": "How long do kayak refunds take?"}],
        "stream": true,
        "temperature": 0.3
    });

    let plain = TestRelay::start(&mock).await;
    mock.push(Reply::answer(&["ok"], (1, 1)));
    read_events(plain.send_chat(body.clone()).await).await;
    let before = mock.requests().pop().unwrap().raw_body;

    // Another site of the same database has knowledge; this one has none.
    let dir = tempfile::tempdir().unwrap();
    let other = TestRelay::builder(&mock).database(dir.path()).start().await;
    add_knowledge(&other).await;
    let journal = tempfile::tempdir().unwrap();
    let relay = TestRelay::builder(&mock)
        .database(dir.path())
        .config(|c| c.usage.journal_dir = Some(journal.path().to_owned()))
        .start()
        .await;
    assert!(relay.knowledge.has(&other.site_id), "built at start from the shared database");
    mock.push(Reply::answer(&["ok"], (1, 1)));
    read_events(relay.send_chat(body).await).await;
    let after = mock.requests().pop().unwrap().raw_body;
    assert_eq!(after, before);
}

#[tokio::test]
async fn grounding_is_set_and_shown_through_the_admin_api_and_refuses_other_values() {
    let mock = MockUpstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("admin-token");
    std::fs::write(&token_file, format!("{ADMIN_TOKEN}\n")).unwrap();
    let relay =
        TestRelay::builder(&mock).config(|c| c.admin.token_file = Some(token_file)).start().await;
    let client = reqwest::Client::new();
    let url = relay.url(&format!("/admin/v1/sites/{}", relay.site_id));
    let patch = |body: Value| client.patch(&url).bearer_auth(ADMIN_TOKEN).json(&body).send();

    let (status, site) = json_body(patch(json!({"grounding": "strict"})).await.unwrap()).await;
    assert_eq!(status, 200, "{site}");
    assert_eq!(site["grounding"], "strict");
    let stored = relay.store.site(&relay.site_id).await.unwrap().unwrap();
    assert_eq!(stored.settings.grounding, Grounding::Strict);

    let (status, error) = json_body(patch(json!({"grounding": "loose"})).await.unwrap()).await;
    assert_eq!(status, 400, "{error}");
    assert_eq!(error["error"]["type"], "invalid_request_error");
    let stored = relay.store.site(&relay.site_id).await.unwrap().unwrap();
    assert_eq!(stored.settings.grounding, Grounding::Strict, "a refused change changes nothing");
}

const ADMIN_TOKEN: &str = "grounding-admin-token-0123456789abcdef";
