//! The conversations part of the store contract (instantiated per engine by `contract!`).

use confab_server::sitekey::{KeyKind, NewKey};
use confab_server::store::{
    Author, ConversationFilter, ConversationSettings, Feedback, Holder, NewMessage, Outcome,
    Rating, Store, Turn,
};

use super::{Database, new_site};

async fn site(store: &dyn Store) -> String {
    store.create_site(new_site(&NewKey::generate(KeyKind::Site))).await.unwrap().id
}

fn turn(conversation: &str, site: &str, request: &str, at_ms: i64, cost: u64) -> Turn {
    Turn {
        conversation_id: conversation.into(),
        site_id: site.into(),
        visitor: Some("v_hash".into()),
        page_url: Some("https://shop.example/help".into()),
        model: "m1".into(),
        request_id: request.into(),
        at_ms,
        question: format!("question {request}"),
        answer: format!("answer {request}"),
        input_tokens: 10,
        output_tokens: 5,
        cost_micros: cost,
        outcome: Outcome::Completed,
    }
}

fn feedback(conversation: &str, site: &str, request: &str, rating: Rating) -> Feedback {
    Feedback {
        conversation_id: conversation.into(),
        site_id: site.into(),
        request_id: request.into(),
        rating,
        comment: Some(format!("about {request}")),
        at_ms: 5,
    }
}

const C1: &str = "conv_aaaaaaaaaaaaaaaa";
const C2: &str = "conv_bbbbbbbbbbbbbbbb";
const C3: &str = "conv_cccccccccccccccc";

pub async fn a_sites_conversation_settings_read_back_as_set(db: Database) {
    let store = db.open().await;
    let id = site(store.as_ref()).await;
    let before = store.site(&id).await.unwrap().unwrap();
    assert_eq!(before.settings.conversations, ConversationSettings::default());
    let settings = ConversationSettings {
        transcripts: true,
        retention_days: 7,
        mask_contacts: true,
        notice: Some("We keep this chat \"for 7 days\".".into()),
        handoff: true,
    };
    assert!(store.set_site_conversations(&id, &settings).await.unwrap());
    assert_eq!(store.site(&id).await.unwrap().unwrap().settings.conversations, settings);
    // Through another store (another relay): the directory's copy has it too.
    let other = db.open().await;
    let credentials = other.site(&id).await.unwrap().unwrap();
    assert_eq!(credentials.settings.conversations, settings);
    assert!(!store.set_site_conversations("site_none", &settings).await.unwrap());
}

pub async fn turns_make_a_conversation_with_its_cost_and_feedback(db: Database) {
    let store = db.open().await;
    let site_a = site(store.as_ref()).await;
    let site_b = site(store.as_ref()).await;
    // Feedback can arrive before its answer's turn is written.
    store.record_feedback(&feedback(C1, &site_a, "r1", Rating::Down)).await.unwrap();
    store
        .record_turns(&[turn(C1, &site_a, "r1", 1_000, 30), turn(C2, &site_a, "r9", 1_500, 1)])
        .await
        .unwrap();
    store.record_turns(&[turn(C1, &site_a, "r2", 2_000, 12)]).await.unwrap();
    // Another site naming the same conversation: its turn is dropped, its feedback not counted.
    store.record_turns(&[turn(C1, &site_b, "x1", 3_000, 99)]).await.unwrap();
    store.record_feedback(&feedback(C1, &site_b, "r2", Rating::Up)).await.unwrap();
    // Feedback given again replaces the earlier one.
    store.record_feedback(&feedback(C1, &site_a, "r2", Rating::Down)).await.unwrap();
    store.record_feedback(&feedback(C1, &site_a, "r2", Rating::Up)).await.unwrap();

    let c = store.conversation(C1).await.unwrap().unwrap();
    assert_eq!(c.site_id, site_a);
    assert_eq!((c.started_at_ms, c.updated_at_ms, c.messages), (1_000, 2_000, 4));
    assert_eq!((c.input_tokens, c.output_tokens, c.cost_micros), (20, 10, 42));
    assert_eq!((c.feedback_up, c.feedback_down), (1, 1));
    assert_eq!(c.holder, Holder::Bot);
    assert_eq!(c.outcome, Some(Outcome::Completed));
    assert_eq!(c.visitor.as_deref(), Some("v_hash"));
    assert_eq!(c.page_url.as_deref(), Some("https://shop.example/help"));

    let messages = store.messages(C1, 0, 100).await.unwrap();
    let seen: Vec<_> = messages
        .iter()
        .map(|m| (m.seq, m.author, m.content.as_str(), m.request_id.as_deref(), m.rating))
        .collect();
    assert_eq!(
        seen,
        [
            (1, Author::Visitor, "question r1", None, None),
            (2, Author::Bot, "answer r1", Some("r1"), Some(Rating::Down)),
            (3, Author::Visitor, "question r2", None, None),
            (4, Author::Bot, "answer r2", Some("r2"), Some(Rating::Up)),
        ]
    );
    assert_eq!(messages[1].comment.as_deref(), Some("about r1"));
    // A page after a message.
    let later: Vec<i64> = store.messages(C1, 2, 1).await.unwrap().iter().map(|m| m.seq).collect();
    assert_eq!(later, [3]);
    assert_eq!(store.conversation("conv_none_0000000000").await.unwrap(), None);
}

pub async fn a_person_takes_over_and_hands_back(db: Database) {
    let store = db.open().await;
    let site_a = site(store.as_ref()).await;
    let site_b = site(store.as_ref()).await;
    let operator = |content: &str, site: &str| NewMessage {
        conversation_id: C1.into(),
        site_id: site.into(),
        author: Author::Operator,
        content: content.into(),
        at_ms: 5_000,
        visitor: None,
        page_url: None,
    };
    // An operator cannot start a conversation.
    assert_eq!(store.add_message(&operator("hello?", &site_a)).await.unwrap(), None);
    assert!(!store.set_holder(C1, Holder::Waiting, 4_000).await.unwrap());

    assert!(store.open_conversation(C1, &site_a, Some("v"), None, 1_000).await.unwrap());
    assert!(store.open_conversation(C1, &site_a, Some("w"), None, 2_000).await.unwrap());
    assert!(!store.open_conversation(C1, &site_b, None, None, 2_000).await.unwrap());
    assert!(store.set_holder(C1, Holder::Waiting, 4_000).await.unwrap());
    let c = store.conversation(C1).await.unwrap().unwrap();
    assert_eq!(
        (c.holder, c.handoff_at_ms, c.visitor.as_deref()),
        (Holder::Waiting, Some(4_000), Some("v"))
    );

    assert_eq!(store.add_message(&operator("not yours", &site_b)).await.unwrap(), None);
    let reply = store.add_message(&operator("Hi, I am Ana", &site_a)).await.unwrap().unwrap();
    assert_eq!((reply.seq, reply.author), (1, Author::Operator));
    assert!(store.set_holder(C1, Holder::Person, 5_000).await.unwrap());
    let visitor = NewMessage {
        author: Author::Visitor,
        content: "thanks".into(),
        at_ms: 6_000,
        ..operator("", &site_a)
    };
    assert_eq!(store.add_message(&visitor).await.unwrap().unwrap().seq, 2);
    // A turn written late (it was batched) goes after them.
    store.record_turns(&[turn(C1, &site_a, "r1", 3_000, 7)]).await.unwrap();
    let c = store.conversation(C1).await.unwrap().unwrap();
    assert_eq!(
        (c.holder, c.handoff_at_ms, c.messages, c.updated_at_ms),
        (Holder::Person, Some(4_000), 4, 6_000)
    );
    assert!(store.set_holder(C1, Holder::Bot, 7_000).await.unwrap());
    let c = store.conversation(C1).await.unwrap().unwrap();
    assert_eq!((c.holder, c.handoff_at_ms), (Holder::Bot, Some(4_000)));
    let authors: Vec<_> =
        store.messages(C1, 0, 10).await.unwrap().iter().map(|m| m.author).collect();
    assert_eq!(authors, [Author::Operator, Author::Visitor, Author::Visitor, Author::Bot]);
}

pub async fn conversations_are_listed_newest_first_filtered_and_paged(db: Database) {
    let store = db.open().await;
    let site_a = site(store.as_ref()).await;
    let site_b = site(store.as_ref()).await;
    let mut odd = turn(C3, &site_b, "r3", 3_000, 1);
    odd.question = "is 100% cotton_wool?".into();
    store
        .record_turns(&[turn(C1, &site_a, "r1", 1_000, 1), turn(C2, &site_a, "r2", 2_000, 1), odd])
        .await
        .unwrap();
    store.record_feedback(&feedback(C1, &site_a, "r1", Rating::Down)).await.unwrap();
    store.set_holder(C2, Holder::Waiting, 2_500).await.unwrap();

    let ids = |list: Vec<confab_server::store::Conversation>| -> Vec<String> {
        list.into_iter().map(|c| c.id).collect()
    };
    let all = ConversationFilter { limit: 10, ..ConversationFilter::default() };
    assert_eq!(ids(store.list_conversations(&all).await.unwrap()), [C3, C2, C1]);
    let of_a = ConversationFilter { site_id: Some(site_a.clone()), ..all.clone() };
    assert_eq!(ids(store.list_conversations(&of_a).await.unwrap()), [C2, C1]);
    let waiting = ConversationFilter { holder: Some(Holder::Waiting), ..all.clone() };
    assert_eq!(ids(store.list_conversations(&waiting).await.unwrap()), [C2]);
    let down = ConversationFilter { rating: Some(Rating::Down), ..all.clone() };
    assert_eq!(ids(store.list_conversations(&down).await.unwrap()), [C1]);
    let up = ConversationFilter { rating: Some(Rating::Up), ..all.clone() };
    assert!(store.list_conversations(&up).await.unwrap().is_empty());
    // Text search: wildcards in the text are literal.
    let search = |text: &str| ConversationFilter { text: Some(text.into()), ..all.clone() };
    assert_eq!(ids(store.list_conversations(&search("100% cotton_w")).await.unwrap()), [C3]);
    assert_eq!(ids(store.list_conversations(&search("ANSWER R2")).await.unwrap()), [C2]);
    assert!(store.list_conversations(&search("100%%")).await.unwrap().is_empty());
    assert!(store.list_conversations(&search("cotton%wool")).await.unwrap().is_empty());
    let since = ConversationFilter { since_ms: Some(2_000), ..all.clone() };
    assert_eq!(ids(store.list_conversations(&since).await.unwrap()), [C3, C2]);
    let visitor = ConversationFilter { visitor: Some("nobody".into()), ..all.clone() };
    assert!(store.list_conversations(&visitor).await.unwrap().is_empty());
    // Pages of one, each after the last one seen.
    let mut seen = Vec::new();
    let mut before = None;
    loop {
        let page = ConversationFilter { limit: 1, before: before.clone(), ..all.clone() };
        let page = store.list_conversations(&page).await.unwrap();
        let Some(last) = page.last() else { break };
        before = Some((last.updated_at_ms, last.id.clone()));
        seen.extend(ids(page));
    }
    assert_eq!(seen, [C3, C2, C1]);
}

pub async fn deleting_conversations_takes_their_messages_and_feedback(db: Database) {
    let store = db.open().await;
    let site_a = site(store.as_ref()).await;
    let site_b = site(store.as_ref()).await;
    let mut other_visitor = turn(C3, &site_a, "r3", 1_000, 1);
    other_visitor.visitor = Some("someone_else".into());
    store
        .record_turns(&[
            turn(C1, &site_a, "r1", 1_000, 1),
            turn(C2, &site_b, "r2", 90_000, 1),
            other_visitor,
        ])
        .await
        .unwrap();
    store.record_feedback(&feedback(C1, &site_a, "r1", Rating::Up)).await.unwrap();

    assert!(store.delete_conversation(C1).await.unwrap());
    assert!(!store.delete_conversation(C1).await.unwrap());
    assert!(store.messages(C1, 0, 10).await.unwrap().is_empty());
    // A conversation made again with the id starts with no feedback.
    store.record_turns(&[turn(C1, &site_a, "r1", 2_000, 1)]).await.unwrap();
    let again = store.conversation(C1).await.unwrap().unwrap();
    assert_eq!((again.messages, again.feedback_up), (2, 0));

    // Erasing a visitor, on one site and then everywhere.
    assert_eq!(store.delete_visitor("v_hash", Some(&site_b)).await.unwrap(), 1);
    assert_eq!(store.delete_visitor("v_hash", None).await.unwrap(), 1);
    assert_eq!(store.conversation(C1).await.unwrap(), None);
    assert!(store.conversation(C3).await.unwrap().is_some());

    // Retention: only the site's conversations last updated before the cut, and feedback on
    // a conversation that never got a turn (at 5 ms).
    const ORPHAN: &str = "conv_orphan_000000000";
    store.record_feedback(&feedback(ORPHAN, &site_a, "r0", Rating::Down)).await.unwrap();
    store.record_turns(&[turn(C2, &site_b, "r2", 90_000, 1)]).await.unwrap();
    assert_eq!(store.prune_conversations(&site_a, 500).await.unwrap(), 0);
    assert_eq!(store.prune_conversations(&site_a, 1_001).await.unwrap(), 1);
    // The orphan's feedback is gone: a turn written now starts without it.
    store.record_turns(&[turn(ORPHAN, &site_a, "r0", 95_000, 1)]).await.unwrap();
    let orphan = store.conversation(ORPHAN).await.unwrap().unwrap();
    assert_eq!((orphan.feedback_up, orphan.feedback_down), (0, 0));
    assert_eq!(store.conversation(C3).await.unwrap(), None);
    assert!(store.conversation(C2).await.unwrap().is_some());

    // A deleted site's conversations go with it.
    assert!(store.delete_site(&site_b).await.unwrap());
    assert_eq!(store.conversation(C2).await.unwrap(), None);
    assert!(store.messages(C2, 0, 10).await.unwrap().is_empty());
}
