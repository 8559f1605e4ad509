//! The knowledge part of the store contract (instantiated per engine by `contract!`): documents
//! and their passages, replaced whole, refused past the caps, removed with their site, the
//! versions relays poll, and the passages' embeddings, which go with their passages.

use std::collections::HashMap;

use confab_server::sitekey::{KeyKind, NewKey};
use confab_server::store::{
    KnowledgeCaps, NewDocument, NewPassage, PassageEmbedding, PutOutcome, Store, StoreError,
};

use super::{Database, new_site};

const ROOMY: KnowledgeCaps = KnowledgeCaps { documents: 100, passages: 10_000 };

async fn site(store: &dyn Store) -> String {
    store.create_site(new_site(&NewKey::generate(KeyKind::Site))).await.unwrap().id
}

fn document(site: &str, source: &str, hash: &str, texts: &[&str]) -> NewDocument {
    NewDocument {
        site_id: site.into(),
        source: source.into(),
        title: format!("Title of {source}"),
        content_hash: hash.into(),
        at_ms: 1_000,
        passages: texts
            .iter()
            .enumerate()
            .map(|(n, text)| NewPassage {
                heading_path: if n == 0 {
                    vec![]
                } else {
                    vec!["Guide".into(), format!("Step {n}")]
                },
                text: (*text).into(),
            })
            .collect(),
    }
}

async fn versions(store: &dyn Store) -> HashMap<String, i64> {
    store.knowledge_versions().await.unwrap().into_iter().map(|v| (v.site_id, v.version)).collect()
}

pub async fn a_document_reads_back_with_its_passages_in_order(db: Database) {
    let store = db.open().await;
    let (shop, other) = (site(store.as_ref()).await, site(store.as_ref()).await);
    assert!(versions(store.as_ref()).await.is_empty());
    let texts = ["Returns are free.", "Pack the item.", "Drop it at a café — «ça va»."];
    let put = store.put_document(&document(&shop, "returns.md", "h1", &texts), ROOMY).await;
    let PutOutcome::Added(added) = put.unwrap() else { panic!("not added") };
    assert_eq!((added.site_id.as_str(), added.source.as_str()), (shop.as_str(), "returns.md"));
    assert_eq!((added.passages, added.title.as_str()), (3, "Title of returns.md"));
    assert_eq!(added.chars, texts.iter().map(|t| t.chars().count() as u64).sum::<u64>());
    assert_eq!((added.added_at_ms, added.updated_at_ms), (1_000, 1_000));
    assert_eq!(store.knowledge_documents(&shop).await.unwrap(), vec![added.clone()]);
    assert!(store.knowledge_documents(&other).await.unwrap().is_empty());

    let passages = store.site_passages(&shop).await.unwrap();
    let read: Vec<(u32, &str)> = passages.iter().map(|p| (p.ordinal, p.text.as_str())).collect();
    assert_eq!(read, [(0, texts[0]), (1, texts[1]), (2, texts[2])]);
    assert!(passages[0].heading_path.is_empty());
    assert_eq!(passages[2].heading_path, ["Guide", "Step 2"]);
    assert!(passages.iter().all(|p| p.document_id == added.id && p.source == "returns.md"));
    assert!(passages.iter().all(|p| p.title == "Title of returns.md" && p.site_id == shop));

    // By id: only the site's own, whatever else is asked for.
    let wanted = [passages[2].id, passages[0].id, -7, 999_999];
    let mut found: Vec<i64> =
        store.passages(&shop, &wanted).await.unwrap().iter().map(|p| p.id).collect();
    found.sort_unstable();
    assert_eq!(found, [passages[0].id, passages[2].id]);
    assert!(store.passages(&other, &wanted).await.unwrap().is_empty());
    assert!(store.passages(&shop, &[]).await.unwrap().is_empty());
    assert_eq!(versions(store.as_ref()).await.keys().collect::<Vec<_>>(), [&shop]);
}

pub async fn putting_a_source_again_replaces_it_and_the_same_content_changes_nothing(db: Database) {
    let (store, other_relay) = (db.open().await, db.open().await);
    let shop = site(store.as_ref()).await;
    store.put_document(&document(&shop, "faq.md", "v1", &["Old A", "Old B"]), ROOMY).await.unwrap();
    let old_ids: Vec<i64> =
        store.site_passages(&shop).await.unwrap().iter().map(|p| p.id).collect();
    let first = versions(store.as_ref()).await[&shop];

    // The same bytes again (a refresh that found nothing new): nothing changes.
    let again = store.put_document(&document(&shop, "faq.md", "v1", &["Other"]), ROOMY).await;
    assert!(matches!(again.unwrap(), PutOutcome::Unchanged(d) if d.passages == 2));
    assert_eq!(versions(store.as_ref()).await[&shop], first);

    // New bytes: the document and all its passages are replaced, seen by another relay.
    let mut changed = document(&shop, "faq.md", "v2", &["New A", "New B", "New C"]);
    changed.at_ms = 2_000;
    let PutOutcome::Replaced(replaced) = store.put_document(&changed, ROOMY).await.unwrap() else {
        panic!("not replaced")
    };
    assert_eq!((replaced.passages, replaced.content_hash.as_str()), (3, "v2"));
    assert_eq!((replaced.added_at_ms, replaced.updated_at_ms), (1_000, 2_000));
    let texts: Vec<String> =
        other_relay.site_passages(&shop).await.unwrap().into_iter().map(|p| p.text).collect();
    assert_eq!(texts, ["New A", "New B", "New C"]);
    assert!(other_relay.passages(&shop, &old_ids).await.unwrap().is_empty(), "old passages gone");
    assert!(versions(other_relay.as_ref()).await[&shop] > first);
    assert_eq!(other_relay.knowledge_documents(&shop).await.unwrap().len(), 1);
}

pub async fn a_document_past_the_caps_is_refused_and_changes_nothing(db: Database) {
    let store = db.open().await;
    let shop = site(store.as_ref()).await;
    let caps = KnowledgeCaps { documents: 2, passages: 5 };
    let put = |source: &'static str, hash: &'static str, n: usize| {
        let texts = vec!["text"; n];
        let doc = document(&shop, source, hash, &texts);
        let store = store.clone();
        async move { store.put_document(&doc, caps).await.unwrap() }
    };
    assert!(matches!(put("a.md", "1", 3).await, PutOutcome::Added(_)));
    let version = versions(store.as_ref()).await[&shop];
    assert_eq!(put("b.md", "1", 3).await, PutOutcome::OverCaps { documents: 2, passages: 6 });
    assert!(matches!(put("b.md", "1", 2).await, PutOutcome::Added(_)));
    assert_eq!(put("c.md", "1", 0).await, PutOutcome::OverCaps { documents: 3, passages: 5 });
    // Replacing a.md (3 passages) with 3 fits; with 4 it does not.
    assert!(matches!(put("a.md", "2", 3).await, PutOutcome::Replaced(_)));
    assert_eq!(put("a.md", "3", 4).await, PutOutcome::OverCaps { documents: 2, passages: 6 });
    let documents = store.knowledge_documents(&shop).await.unwrap();
    let held: Vec<(&str, &str, u64)> = documents
        .iter()
        .map(|d| (d.source.as_str(), d.content_hash.as_str(), d.passages))
        .collect();
    assert_eq!(held, [("a.md", "2", 3), ("b.md", "1", 2)]);
    assert_eq!(store.site_passages(&shop).await.unwrap().len(), 5);
    assert!(versions(store.as_ref()).await[&shop] > version);
}

pub async fn removing_a_document_or_its_site_takes_its_passages(db: Database) {
    let store = db.open().await;
    let (shop, other) = (site(store.as_ref()).await, site(store.as_ref()).await);
    let PutOutcome::Added(a) =
        store.put_document(&document(&shop, "a.md", "1", &["A1", "A2"]), ROOMY).await.unwrap()
    else {
        panic!("not added")
    };
    store.put_document(&document(&shop, "b.md", "1", &["B1"]), ROOMY).await.unwrap();
    store.put_document(&document(&other, "a.md", "1", &["X"]), ROOMY).await.unwrap();
    let version = versions(store.as_ref()).await[&shop];

    assert!(!store.remove_document(&other, a.id).await.unwrap(), "not the other site's");
    assert_eq!(versions(store.as_ref()).await[&shop], version);
    assert!(store.remove_document(&shop, a.id).await.unwrap());
    assert!(!store.remove_document(&shop, a.id).await.unwrap(), "already gone");
    let left: Vec<String> =
        store.site_passages(&shop).await.unwrap().into_iter().map(|p| p.text).collect();
    assert_eq!(left, ["B1"]);
    assert!(versions(store.as_ref()).await[&shop] > version);

    // A deleted site's knowledge goes with it, version and all; the other site's stays.
    assert!(store.delete_site(&shop).await.unwrap());
    assert!(store.site_passages(&shop).await.unwrap().is_empty());
    assert!(store.knowledge_documents(&shop).await.unwrap().is_empty());
    let versions = versions(store.as_ref()).await;
    assert!(!versions.contains_key(&shop) && versions.contains_key(&other));
    assert_eq!(store.site_passages(&other).await.unwrap().len(), 1);
}

pub async fn two_relays_adding_at_once_both_respect_the_caps(db: Database) {
    let (one, two) = (db.open().await, db.open().await);
    let shop = site(one.as_ref()).await;
    let caps = KnowledgeCaps { documents: 1, passages: 100 };
    for round in 0..5 {
        let (a, b) = (
            document(&shop, &format!("one-{round}.md"), "x", &["1"]),
            document(&shop, &format!("two-{round}.md"), "x", &["2"]),
        );
        let (first, second) = tokio::join!(one.put_document(&a, caps), two.put_document(&b, caps));
        let outcomes = [first.unwrap(), second.unwrap()];
        let added = outcomes.iter().filter(|o| matches!(o, PutOutcome::Added(_))).count();
        assert_eq!(added, usize::from(round == 0), "round {round}: {outcomes:?}");
        assert_eq!(one.knowledge_documents(&shop).await.unwrap().len(), 1);
    }
    // And the same source from both at once is one document.
    let other = site(one.as_ref()).await;
    let (x, y) =
        (document(&other, "same.md", "x", &["x"]), document(&other, "same.md", "y", &["y"]));
    let (first, second) = tokio::join!(one.put_document(&x, ROOMY), two.put_document(&y, ROOMY));
    let (first, second) = (first.unwrap(), second.unwrap());
    assert!(
        matches!(
            (&first, &second),
            (PutOutcome::Added(_), PutOutcome::Replaced(_))
                | (PutOutcome::Replaced(_), PutOutcome::Added(_))
        ),
        "{first:?} {second:?}"
    );
    assert_eq!(one.knowledge_documents(&other).await.unwrap().len(), 1);
    assert_eq!(one.site_passages(&other).await.unwrap().len(), 1);
}

const SMALL: &str = "openai:text-embedding-3-small@512";
const LARGE: &str = "openai:text-embedding-3-large@1024";

fn embedding(passage_id: i64, vector: &[f32]) -> PassageEmbedding {
    PassageEmbedding { passage_id, vector: vector.to_vec() }
}

/// The site's passage ids, by document and place.
async fn passage_ids(store: &dyn Store, site: &str) -> Vec<i64> {
    store.site_passages(site).await.unwrap().iter().map(|p| p.id).collect()
}

/// The passage ids of the site's embeddings by `model`.
async fn embedded(store: &dyn Store, site: &str, model: &str) -> Vec<i64> {
    store.site_embeddings(site, model).await.unwrap().iter().map(|e| e.passage_id).collect()
}

/// The bits of every value, so that `-0.0` is told from `0.0` and nothing is compared loosely.
fn bits(embeddings: &[PassageEmbedding]) -> Vec<(i64, Vec<u32>)> {
    embeddings
        .iter()
        .map(|e| (e.passage_id, e.vector.iter().map(|v| v.to_bits()).collect()))
        .collect()
}

pub async fn embeddings_read_back_exactly_and_by_their_model_only(db: Database) {
    let (store, other_relay) = (db.open().await, db.open().await);
    let shop = site(store.as_ref()).await;
    store.put_document(&document(&shop, "a.md", "1", &["A", "B", "C"]), ROOMY).await.unwrap();
    let ids = passage_ids(store.as_ref(), &shop).await;
    let first = [0.5, -1.25, 1e-30, -3.4e38, f32::MIN_POSITIVE, 1e-45, -0.0, 0.1];
    let third = [-0.1, 7.0, -1e-42, 0.0, 1.0, -1.0, 123_456.75, -f32::EPSILON];
    // Given out of order: read back by passage id.
    let put = [embedding(ids[2], &third), embedding(ids[0], &first)];
    assert_eq!(store.put_embeddings(&shop, SMALL, &put).await.unwrap(), 2);
    let read = other_relay.site_embeddings(&shop, SMALL).await.unwrap();
    assert_eq!(bits(&read), bits(&[embedding(ids[0], &first), embedding(ids[2], &third)]));
    assert!(store.site_embeddings(&shop, LARGE).await.unwrap().is_empty(), "another model's");

    // A put by another model replaces the passage's embedding: one per passage.
    let large = [embedding(ids[0], &[2.0; 4]), embedding(ids[1], &[-2.0; 4])];
    assert_eq!(store.put_embeddings(&shop, LARGE, &large).await.unwrap(), 2);
    assert_eq!(other_relay.site_embeddings(&shop, LARGE).await.unwrap(), large);
    assert_eq!(embedded(other_relay.as_ref(), &shop, SMALL).await, [ids[2]]);
    // And by the same model too, with vectors of another length.
    assert_eq!(store.put_embeddings(&shop, LARGE, &[embedding(ids[1], &[3.0])]).await.unwrap(), 1);
    let read = store.site_embeddings(&shop, LARGE).await.unwrap();
    assert_eq!(read, [large[0].clone(), embedding(ids[1], &[3.0])]);
}

pub async fn passages_without_an_embedding_are_listed_in_order_up_to_the_limit(db: Database) {
    let store = db.open().await;
    let (shop, other) = (site(store.as_ref()).await, site(store.as_ref()).await);
    store.put_document(&document(&shop, "b.md", "1", &["B0", "B1", "B2"]), ROOMY).await.unwrap();
    store.put_document(&document(&shop, "a.md", "1", &["A0", "A1"]), ROOMY).await.unwrap();
    store.put_document(&document(&other, "x.md", "1", &["X0"]), ROOMY).await.unwrap();
    let ids = passage_ids(store.as_ref(), &shop).await;
    let missing = async |model: &str, limit: usize| -> Vec<String> {
        let passages = store.passages_without_embedding(&shop, model, limit).await.unwrap();
        passages.into_iter().map(|p| p.text).collect()
    };
    assert_eq!(missing(SMALL, 100).await, ["B0", "B1", "B2", "A0", "A1"], "by document, place");
    // B1 and A0 embedded: the others are missing, in the same order.
    let put = [embedding(ids[1], &[1.0, 2.0]), embedding(ids[3], &[3.0, 4.0])];
    assert_eq!(store.put_embeddings(&shop, SMALL, &put).await.unwrap(), 2);
    assert_eq!(missing(SMALL, 100).await, ["B0", "B2", "A1"]);
    assert_eq!(missing(SMALL, 2).await, ["B0", "B2"]);
    assert!(missing(SMALL, 0).await.is_empty());
    assert_eq!(missing(LARGE, 100).await.len(), 5, "none by that model");
    // B1 embedded by another model now: missing by the first again.
    assert_eq!(store.put_embeddings(&shop, LARGE, &[embedding(ids[1], &[5.0])]).await.unwrap(), 1);
    assert_eq!(missing(SMALL, 100).await, ["B0", "B1", "B2", "A1"]);
    assert_eq!(missing(LARGE, 100).await, ["B0", "B2", "A0", "A1"]);
    let others = store.passages_without_embedding(&other, SMALL, 100).await.unwrap();
    assert_eq!(others.iter().map(|p| p.text.as_str()).collect::<Vec<_>>(), ["X0"]);
    assert!(others.iter().all(|p| p.source == "x.md" && p.site_id == other));
}

pub async fn embeddings_of_unknown_or_another_sites_passages_are_skipped(db: Database) {
    let store = db.open().await;
    let (shop, other) = (site(store.as_ref()).await, site(store.as_ref()).await);
    store.put_document(&document(&shop, "a.md", "1", &["A"]), ROOMY).await.unwrap();
    store.put_document(&document(&other, "x.md", "1", &["X"]), ROOMY).await.unwrap();
    let (own, others) =
        (passage_ids(store.as_ref(), &shop).await[0], passage_ids(store.as_ref(), &other).await[0]);
    let (shop_version, other_version) = {
        let versions = versions(store.as_ref()).await;
        (versions[&shop], versions[&other])
    };

    // Nothing of the site's: nothing stored, no version bumped.
    let theirs = [embedding(others, &[1.0]), embedding(999_999, &[2.0]), embedding(-1, &[3.0])];
    assert_eq!(store.put_embeddings(&shop, SMALL, &theirs).await.unwrap(), 0);
    assert!(store.site_embeddings(&shop, SMALL).await.unwrap().is_empty());
    assert!(store.site_embeddings(&other, SMALL).await.unwrap().is_empty());
    assert_eq!(store.put_embeddings(&shop, SMALL, &[]).await.unwrap(), 0);
    let versions_now = versions(store.as_ref()).await;
    assert_eq!((versions_now[&shop], versions_now[&other]), (shop_version, other_version));

    // One of the site's among them: that one stored, the site's version bumped (only its).
    let mixed = [embedding(others, &[1.0]), embedding(own, &[4.0]), embedding(999_999, &[2.0])];
    assert_eq!(store.put_embeddings(&shop, SMALL, &mixed).await.unwrap(), 1);
    assert_eq!(store.site_embeddings(&shop, SMALL).await.unwrap(), [embedding(own, &[4.0])]);
    assert!(store.site_embeddings(&other, SMALL).await.unwrap().is_empty());
    let versions_now = versions(store.as_ref()).await;
    assert!(versions_now[&shop] > shop_version);
    assert_eq!(versions_now[&other], other_version);
}

pub async fn a_put_of_embeddings_that_do_not_fit_together_is_refused_whole(db: Database) {
    let store = db.open().await;
    let shop = site(store.as_ref()).await;
    store.put_document(&document(&shop, "a.md", "1", &["A", "B"]), ROOMY).await.unwrap();
    let ids = passage_ids(store.as_ref(), &shop).await;
    let version = versions(store.as_ref()).await[&shop];
    for refused in [
        vec![embedding(ids[0], &[1.0, 2.0]), embedding(ids[1], &[1.0, 2.0, 3.0])],
        vec![embedding(ids[0], &[1.0]), embedding(ids[1], &[])],
        vec![embedding(ids[0], &[]), embedding(ids[1], &[])],
        vec![embedding(ids[0], &[1.0]), embedding(ids[1], &[f32::NAN])],
        vec![embedding(ids[0], &[1.0]), embedding(ids[0], &[2.0])],
    ] {
        let outcome = store.put_embeddings(&shop, SMALL, &refused).await;
        assert!(matches!(outcome, Err(StoreError::Invalid(_))), "{refused:?}: {outcome:?}");
    }
    assert!(store.site_embeddings(&shop, SMALL).await.unwrap().is_empty());
    assert_eq!(versions(store.as_ref()).await[&shop], version);
}

pub async fn embeddings_go_with_their_passages_document_and_site(db: Database) {
    let store = db.open().await;
    let (shop, other) = (site(store.as_ref()).await, site(store.as_ref()).await);
    store.put_document(&document(&shop, "a.md", "1", &["A0", "A1"]), ROOMY).await.unwrap();
    store.put_document(&document(&shop, "b.md", "1", &["B0"]), ROOMY).await.unwrap();
    store.put_document(&document(&other, "x.md", "1", &["X0"]), ROOMY).await.unwrap();
    let every = async |site: &str| -> Vec<PassageEmbedding> {
        let ids = passage_ids(store.as_ref(), site).await;
        ids.iter().map(|&id| embedding(id, &[id as f32, 1.0])).collect()
    };
    let (ours, theirs) = (every(&shop).await, every(&other).await);
    assert_eq!(store.put_embeddings(&shop, SMALL, &ours).await.unwrap(), 3);
    assert_eq!(store.put_embeddings(&other, SMALL, &theirs).await.unwrap(), 1);

    // The same content again changes nothing; new content drops the old passages' embeddings.
    store.put_document(&document(&shop, "a.md", "1", &["A0", "A1"]), ROOMY).await.unwrap();
    assert_eq!(embedded(store.as_ref(), &shop, SMALL).await.len(), 3);
    store.put_document(&document(&shop, "a.md", "2", &["A0", "A1 new"]), ROOMY).await.unwrap();
    assert_eq!(embedded(store.as_ref(), &shop, SMALL).await, [ours[2].passage_id]);
    let missing = store.passages_without_embedding(&shop, SMALL, 10).await.unwrap();
    assert_eq!(missing.iter().map(|p| p.text.as_str()).collect::<Vec<_>>(), ["A0", "A1 new"]);

    // Removing a document takes its passages' embeddings.
    let b =
        store.knowledge_documents(&shop).await.unwrap().into_iter().find(|d| d.source == "b.md");
    assert!(store.remove_document(&shop, b.unwrap().id).await.unwrap());
    assert!(store.site_embeddings(&shop, SMALL).await.unwrap().is_empty());

    // Deleting a site takes its embeddings; the other site keeps its own.
    let again = every(&shop).await;
    assert_eq!(store.put_embeddings(&shop, SMALL, &again).await.unwrap(), 2);
    assert!(store.delete_site(&shop).await.unwrap());
    assert!(store.site_embeddings(&shop, SMALL).await.unwrap().is_empty());
    assert_eq!(store.site_embeddings(&other, SMALL).await.unwrap(), theirs);
}

pub async fn a_large_put_of_embeddings_is_stored_whole(db: Database) {
    let store = db.open().await;
    let shop = site(store.as_ref()).await;
    let texts: Vec<String> = (0..2_345).map(|n| format!("Passage {n}")).collect();
    let texts: Vec<&str> = texts.iter().map(String::as_str).collect();
    store.put_document(&document(&shop, "big.md", "1", &texts), ROOMY).await.unwrap();
    let ids = passage_ids(store.as_ref(), &shop).await;
    let put: Vec<PassageEmbedding> =
        ids.iter().map(|&id| embedding(id, &[id as f32; 512].map(|v| v / 7.0))).collect();
    assert_eq!(store.put_embeddings(&shop, SMALL, &put).await.unwrap(), 2_345);
    assert_eq!(store.site_embeddings(&shop, SMALL).await.unwrap(), put);
    assert!(store.passages_without_embedding(&shop, SMALL, 10).await.unwrap().is_empty());
}
