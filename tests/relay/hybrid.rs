//! Hybrid retrieval (`[knowledge.embeddings]`) through real HTTP: documents added over the
//! admin API are embedded by the upstream's embedding model (the mock's model of meaning, see
//! `confab_tests::mock`), a question that shares no word with its answer is grounded by meaning,
//! and a failing or slow model never fails a visitor's request.

use std::time::Duration;

use confab_server::knowledge::config::EmbeddingsConfig;
use confab_tests::mock::{EmbeddingsBehaviour, mock_embedding};
use confab_tests::sse::read_events;
use confab_tests::{MockUpstream, Reply, TestRelay, json_body};
use serde_json::{Value, json};

const ADMIN_TOKEN: &str = "hybrid-admin-token-0123456789abcdef";

/// The fact a visitor asks about with a word of the same meaning and no word in common.
const CARE_FACT: &str = "Rinse the zorblax in fresh water after every trip.";
const STORAGE_FACT: &str = "Keep the vendel somewhere dry over winter.";

/// "What about my quimper?": BM25 finds nothing (its one content word is in no passage); the
/// mock model puts "quimper" and "zorblax" in one dimension.
const BY_MEANING: &str = "What about my quimper?";

fn embeddings(query_timeout_ms: u64) -> EmbeddingsConfig {
    EmbeddingsConfig {
        upstream: "mock".into(),
        model: "mock-embed".into(),
        dimensions: None,
        batch: 2,
        // The default (`confab_knowledge::DEFAULT_MIN_SIMILARITY`).
        min_similarity: 0.3,
        query_timeout_ms,
        ingest_timeout_ms: 5_000,
    }
}

/// A relay with the admin token (its file in the directory returned with it).
async fn relay(
    mock: &MockUpstream,
    embeddings: Option<EmbeddingsConfig>,
) -> (TestRelay, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("admin-token");
    std::fs::write(&token_file, format!("{ADMIN_TOKEN}\n")).unwrap();
    let relay = TestRelay::builder(mock)
        .config(|c| {
            c.admin.token_file = Some(token_file);
            c.knowledge.embeddings = embeddings;
        })
        .start()
        .await;
    (relay, dir)
}

/// Adds the care and storage notes over the admin API; the report.
async fn add_notes(relay: &TestRelay) -> Value {
    let url = relay.url(&format!("/admin/v1/sites/{}/knowledge", relay.site_id));
    let body = json!({"documents": [
        {"name": "care.md", "text": format!("# Zorblax care\n\n{CARE_FACT}\n")},
        {"name": "storage.md", "text": format!("# Vendel storage\n\n{STORAGE_FACT}\n")},
    ]});
    let response =
        relay.client.post(url).bearer_auth(ADMIN_TOKEN).json(&body).send().await.unwrap();
    let (status, report) = json_body(response).await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["added"], 2, "{report}");
    report
}

/// Streams `question`; the system messages the upstream received and whether the stream named
/// a source.
async fn ask(relay: &TestRelay, mock: &MockUpstream, question: &str) -> (String, bool) {
    mock.push(Reply::answer(&["Noted."], (10, 2)));
    let body = json!({"messages": [{"role": "user", "content": question}], "stream": true});
    let response = relay.send_chat(body).await;
    assert_eq!(response.status(), 200);
    let events = read_events(response).await;
    let cited = events.iter().any(|e| e.data.contains("\"confab\""));
    let sent = mock.requests().pop().unwrap().body;
    let system: Vec<String> = sent["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["role"] == "system")
        .map(|m| m["content"].as_str().unwrap().to_owned())
        .collect();
    (system.join("\n"), cited)
}

async fn scrape(relay: &TestRelay) -> String {
    let response =
        relay.client.get(relay.url("/metrics")).bearer_auth(ADMIN_TOKEN).send().await.unwrap();
    assert_eq!(response.status(), 200);
    response.text().await.unwrap()
}

fn fallbacks(metrics: &str) -> u64 {
    metrics
        .lines()
        .find_map(|line| line.strip_prefix("confab_knowledge_embedding_fallbacks_total "))
        .map_or(0, |value| value.trim().parse().unwrap())
}

#[tokio::test]
async fn a_question_that_shares_no_word_with_its_answer_is_grounded_by_meaning() {
    let mock = MockUpstream::start().await;
    let (relay, _dir) = relay(&mock, Some(embeddings(2_000))).await;
    let report = add_notes(&relay).await;
    assert!(
        report["notes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|n| n == "2 passages embedded by mock:mock-embed"),
        "{report}"
    );

    // Ingestion embedded each passage with its title and headings, two per call, with the
    // upstream's key.
    let calls = mock.embedding_requests();
    assert_eq!(calls.len(), 1, "two passages in one batch of two");
    assert_eq!(calls[0].body["model"], "mock-embed");
    assert_eq!(calls[0].body["encoding_format"], "float");
    assert_eq!(
        calls[0].authorization.as_deref(),
        Some(format!("Bearer {}", confab_tests::UPSTREAM_SECRET).as_str())
    );
    let inputs = calls[0].body["input"].as_array().unwrap();
    assert!(inputs.iter().any(|i| i.as_str().unwrap().contains(CARE_FACT)), "{inputs:?}");
    let embeddings = relay.store.site_embeddings(&relay.site_id, "mock:mock-embed").await.unwrap();
    assert_eq!(embeddings.len(), 2);
    // The vectors stored are the model's: one passage means dimension 0, the other dimension 1.
    let means = |dimension: usize| embeddings.iter().filter(|e| e.vector[dimension] > 0.0).count();
    assert_eq!((means(0), means(1)), (1, 1), "{embeddings:?}");
    assert_eq!(embeddings[0].vector.len(), mock_embedding("", 0.0).len());

    let (system, cited) = ask(&relay, &mock, BY_MEANING).await;
    assert!(system.contains(CARE_FACT), "the passage of the same meaning is sent: {system}");
    assert!(!system.contains(STORAGE_FACT), "the other one is not: {system}");
    assert!(cited, "the stream names its source");
    let question = mock.embedding_requests().pop().unwrap();
    assert_eq!(question.body["input"], json!([BY_MEANING]), "one call for the question");
    assert_eq!(fallbacks(&scrape(&relay).await), 0);

    // The same knowledge without embeddings: BM25 alone finds nothing for that question.
    let plain_mock = MockUpstream::start().await;
    let (plain, _plain_dir) = self::relay(&plain_mock, None).await;
    add_notes(&plain).await;
    let (system, cited) = ask(&plain, &plain_mock, BY_MEANING).await;
    assert!(!system.contains(CARE_FACT), "BM25 alone has no word to match: {system}");
    assert!(!cited);
    assert!(plain_mock.embedding_requests().is_empty(), "no embeddings without the section");
}

#[tokio::test]
async fn a_failing_or_slow_embedding_model_falls_back_to_bm25_and_never_fails_the_request() {
    let mock = MockUpstream::start().await;
    let (relay, _dir) = relay(&mock, Some(embeddings(300))).await;
    add_notes(&relay).await;

    mock.set_embeddings(EmbeddingsBehaviour { fail_status: Some(500), ..Default::default() });
    let (system, cited) = ask(&relay, &mock, "How do I rinse the zorblax?").await;
    assert!(system.contains(CARE_FACT), "BM25 still grounds the answer: {system}");
    assert!(cited);
    assert_eq!(fallbacks(&scrape(&relay).await), 1);

    mock.set_embeddings(EmbeddingsBehaviour {
        delay: Duration::from_secs(20),
        ..Default::default()
    });
    let started = std::time::Instant::now();
    let (system, _) = ask(&relay, &mock, "How do I rinse the zorblax?").await;
    assert!(system.contains(CARE_FACT), "{system}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "the question's embedding was not awaited past its timeout"
    );
    assert_eq!(fallbacks(&scrape(&relay).await), 2);
    let logs = confab_tests::captured_logs();
    assert!(!logs.contains(confab_tests::UPSTREAM_SECRET), "the key is never logged");
}

#[tokio::test]
async fn passages_added_while_the_model_is_down_are_embedded_by_the_next_refresh() {
    let mock = MockUpstream::start().await;
    let (relay, _dir) = relay(&mock, Some(embeddings(2_000))).await;
    mock.set_embeddings(EmbeddingsBehaviour { fail_status: Some(503), ..Default::default() });
    let report = add_notes(&relay).await;
    let notes = report["notes"].to_string();
    assert!(notes.contains("mock-embed") && notes.contains("BM25 alone until"), "{report}");
    assert!(!notes.contains(confab_tests::UPSTREAM_SECRET));
    assert!(
        relay.store.site_embeddings(&relay.site_id, "mock:mock-embed").await.unwrap().is_empty()
    );
    let (system, _) = ask(&relay, &mock, BY_MEANING).await;
    assert!(!system.contains(CARE_FACT), "no vectors yet: {system}");

    mock.set_embeddings(EmbeddingsBehaviour::default());
    let url = relay.url(&format!("/admin/v1/sites/{}/knowledge/refresh", relay.site_id));
    let response = relay.client.post(url).bearer_auth(ADMIN_TOKEN).send().await.unwrap();
    let (status, report) = json_body(response).await;
    assert_eq!(status, 200, "{report}");
    assert!(report["notes"].to_string().contains("2 passages embedded"), "{report}");
    assert_eq!(
        relay.store.site_embeddings(&relay.site_id, "mock:mock-embed").await.unwrap().len(),
        2
    );
    let (system, cited) = ask(&relay, &mock, BY_MEANING).await;
    assert!(system.contains(CARE_FACT), "grounded by meaning once embedded: {system}");
    assert!(cited);
}

#[tokio::test]
async fn a_greeting_gets_no_sources_though_every_text_is_a_little_alike() {
    // Every text shares the mock's last dimension: "hi there" is at a cosine of about 0.2 from
    // each note, as a greeting is from a help page with a real model.
    let alike = EmbeddingsBehaviour { baseline: 0.6, ..Default::default() };
    let mock = MockUpstream::start().await;
    mock.set_embeddings(alike);
    let (relay, _dir) = relay(&mock, Some(embeddings(2_000))).await;
    add_notes(&relay).await;
    let (system, cited) = ask(&relay, &mock, "hi there").await;
    assert!(!system.contains("Sources from"), "nothing above the floor: {system}");
    assert!(!cited, "and no sources under the answer");
    let (system, cited) = ask(&relay, &mock, BY_MEANING).await;
    assert!(system.contains(CARE_FACT) && !system.contains(STORAGE_FACT), "{system}");
    assert!(cited);

    // Without the floor, the greeting would be given both notes.
    let floorless_mock = MockUpstream::start().await;
    floorless_mock.set_embeddings(alike);
    let floorless = EmbeddingsConfig { min_similarity: 0.0, ..embeddings(2_000) };
    let (floorless_relay, _floorless_dir) = self::relay(&floorless_mock, Some(floorless)).await;
    add_notes(&floorless_relay).await;
    let (system, _) = ask(&floorless_relay, &floorless_mock, "hi there").await;
    assert!(system.contains(CARE_FACT) && system.contains(STORAGE_FACT), "{system}");
}

#[tokio::test]
async fn what_a_broken_embedding_model_says_never_reaches_reports_or_logs() {
    let mock = MockUpstream::start().await;
    let (relay, _dir) = relay(&mock, Some(embeddings(2_000))).await;
    add_notes(&relay).await;
    let secret = confab_tests::UPSTREAM_SECRET;
    let url = relay.url(&format!("/admin/v1/sites/{}/knowledge", relay.site_id));
    for (round, behaviour) in [
        EmbeddingsBehaviour { malformed: true, ..Default::default() },
        EmbeddingsBehaviour { fail_status: Some(401), ..Default::default() },
    ]
    .into_iter()
    .enumerate()
    {
        mock.set_embeddings(behaviour);
        // A question: its embedding fails, BM25 grounds it.
        let (system, _) = ask(&relay, &mock, "How do I rinse the zorblax?").await;
        assert!(system.contains(CARE_FACT), "{system}");
        // A new document: stored, its embedding noted as failed.
        let text = format!("# Trask {round}\n\nThe trask number {round} is kept apart.\n");
        let body = json!({"documents": [{"name": format!("trask-{round}.md"), "text": text}]});
        let response =
            relay.client.post(&url).bearer_auth(ADMIN_TOKEN).json(&body).send().await.unwrap();
        let (status, report) = json_body(response).await;
        assert_eq!(status, 200, "{report}");
        assert_eq!(report["added"], 1, "{report}");
        assert!(report["notes"].to_string().contains("BM25 alone until"), "{report}");
        assert!(!report.to_string().contains(secret), "{report}");
    }
    assert_eq!(fallbacks(&scrape(&relay).await), 2);
    let calls = mock.embedding_requests();
    assert!(calls.iter().all(|r| r.authorization == Some(format!("Bearer {secret}"))));
    assert!(!confab_tests::captured_logs().contains(secret), "the key is never logged");
}
