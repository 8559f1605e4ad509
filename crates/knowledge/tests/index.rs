//! The site index: stemmed BM25 retrieval, removal, lenient queries, concurrent use.

use std::sync::atomic::{AtomicBool, Ordering};

use confab_knowledge::{IndexedPassage, SiteIndex};

fn passage(id: u64, document: u64, title: &str, headings: &[&str], text: &str) -> IndexedPassage {
    IndexedPassage {
        id,
        document,
        title: title.to_owned(),
        heading_path: headings.iter().map(|h| (*h).to_owned()).collect(),
        text: text.to_owned(),
    }
}

fn shop() -> Vec<IndexedPassage> {
    vec![
        passage(
            1,
            10,
            "Help",
            &["Orders"],
            "Orders placed before noon leave the warehouse the same day.",
        ),
        passage(
            2,
            10,
            "Help",
            &["Orders", "Delivery"],
            "Acme ships to Canada and Mexico within five working days.",
        ),
        passage(
            3,
            11,
            "Returns",
            &["Refunds"],
            "Refunds are paid to the original card within a week.",
        ),
        passage(
            4,
            11,
            "Returns",
            &["Damaged goods"],
            "Send us a photo of the damaged parcel and we replace it.",
        ),
        passage(5, 12, "Accounts", &["Passwords"], "Reset your password from the sign-in page."),
    ]
}

#[test]
fn a_fact_is_found_at_rank_one_by_another_inflection_of_its_words() {
    let index = SiteIndex::new().unwrap();
    index.add(&shop()).unwrap();
    assert_eq!(index.len(), 5);
    let hits = index.search("Is shipping to Canada possible?", 3).unwrap();
    assert_eq!(hits[0].id, 2, "{hits:?}");
    let hits = index.search("how do I get REFUNDED", 3).unwrap();
    assert_eq!(hits[0].id, 3, "{hits:?}");
    // Headings are searched too: only the heading says "passwords" in the plural.
    let hits = index.search("password", 5).unwrap();
    assert_eq!(hits[0].id, 5, "{hits:?}");
    assert!(hits.windows(2).all(|pair| pair[0].score >= pair[1].score));
}

#[test]
fn a_follow_up_finds_what_the_conversation_is_about_while_the_latest_message_decides() {
    let index = SiteIndex::new().unwrap();
    index.add(&shop()).unwrap();
    assert!(
        index.search("how long does that take?", 5).unwrap().first().is_none_or(|hit| hit.id != 2)
    );
    let hits = index
        .search_conversation("how long does that take?", "Do you deliver to Mexico?", 5)
        .unwrap();
    assert_eq!(hits[0].id, 2, "{hits:?}");
    // A new subject in the latest message outweighs the earlier one.
    let hits = index
        .search_conversation("and how do I reset my password?", "Do you deliver to Mexico?", 5)
        .unwrap();
    assert_eq!(hits[0].id, 5, "{hits:?}");
}

#[test]
fn search_turns_reads_the_latest_visitor_message_with_the_one_before_it_and_no_older_one() {
    let index = SiteIndex::new().unwrap();
    index.add(&shop()).unwrap();
    assert!(index.search_turns(&[], 5).unwrap().is_empty());
    assert_eq!(
        index.search_turns(&["Is shipping to Canada possible?"], 5).unwrap(),
        index.search("Is shipping to Canada possible?", 5).unwrap()
    );
    let hits = index
        .search_turns(
            &[
                "How do I reset my password?",
                "Do you deliver to Mexico?",
                "how long does that take?",
            ],
            5,
        )
        .unwrap();
    assert_eq!(hits[0].id, 2, "{hits:?}");
    // The message two turns back is not read: nothing here is about passwords.
    assert!(hits.iter().all(|hit| hit.id != 5), "{hits:?}");
}

#[test]
fn a_visitor_s_everyday_words_find_the_passage_that_says_it_otherwise() {
    let index = SiteIndex::new().unwrap();
    index.add(&shop()).unwrap();
    // No passage says "money back" or "broken": "refunds" and "damaged" do.
    let hits = index.search("when do I get my money back?", 3).unwrap();
    assert_eq!(hits[0].id, 3, "{hits:?}");
    let hits = index.search("the box came broken", 3).unwrap();
    assert_eq!(hits[0].id, 4, "{hits:?}");
    // The visitor's own word outweighs an expansion of another: "returns" is a title here,
    // "refunds" the text, and "refund" decides.
    let hits = index.search("refund card", 3).unwrap();
    assert_eq!(hits[0].id, 3, "{hits:?}");
}

#[test]
fn a_removed_document_is_never_returned_again() {
    let index = SiteIndex::new().unwrap();
    index.add(&shop()).unwrap();
    index.remove_document(11).unwrap();
    assert_eq!(index.len(), 3);
    for query in ["refunds", "damaged parcel photo", "returns refunds damaged card week"] {
        let hits = index.search(query, 10).unwrap();
        assert!(hits.iter().all(|hit| hit.id != 3 && hit.id != 4), "{query}: {hits:?}");
    }
    // Removing what is not there changes nothing.
    index.remove_document(99).unwrap();
    assert_eq!(index.len(), 3);
}

#[test]
fn replacing_a_document_swaps_its_passages() {
    let index = SiteIndex::new().unwrap();
    index.add(&shop()).unwrap();
    index
        .replace_document(
            10,
            &[passage(20, 10, "Help", &["Delivery"], "Acme now ships to Brazil as well.")],
        )
        .unwrap();
    assert_eq!(index.len(), 4);
    // The old passages are gone; the new one comes first ("ship" also searches "send", so
    // passage 4's "Send us a photo" follows it).
    let hits: Vec<u64> = index.search("ship to Canada", 5).unwrap().iter().map(|h| h.id).collect();
    assert_eq!(hits[0], 20, "{hits:?}");
    assert!(!hits.contains(&1) && !hits.contains(&2), "{hits:?}");
    assert_eq!(index.search("Brazil", 5).unwrap()[0].id, 20);
}

#[test]
fn queries_of_stop_words_punctuation_or_query_syntax_are_never_errors() {
    let index = SiteIndex::new().unwrap();
    index.add(&shop()).unwrap();
    for query in [
        "",
        "   ",
        "the and of to is",
        "how can I do it? thanks",
        "?!...,;",
        "\"\"\"",
        "AND OR (",
        ") NOT -",
        "*:* title:x^2 ~1",
        "\u{0}\u{ffff}",
    ] {
        let hits = index.search(query, 5).unwrap();
        assert!(hits.is_empty() || query.contains("title"), "{query:?}: {hits:?}");
    }
    assert_eq!(index.search("\"refunds\" AND (card", 5).unwrap()[0].id, 3);
    assert!(index.search("refunds", 0).unwrap().is_empty());
    assert!(index.search(&"refund ".repeat(100_000), 5).unwrap()[0].id == 3);
}

#[test]
fn searches_run_concurrently_with_an_update_and_see_it_once_it_returns() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<SiteIndex>();

    let index = SiteIndex::new().unwrap();
    index.add(&shop()).unwrap();
    let done = AtomicBool::new(false);
    std::thread::scope(|scope| {
        let searchers: Vec<_> = (0..2)
            .map(|_| {
                scope.spawn(|| {
                    let mut searches = 0;
                    while !done.load(Ordering::Relaxed) {
                        let hits = index.search("ships Canada", 5).unwrap();
                        // Either before or after the update: never a torn state.
                        assert!(hits.iter().any(|hit| hit.id == 2), "{hits:?}");
                        searches += 1;
                    }
                    searches
                })
            })
            .collect();
        for batch in 0..20 {
            let more: Vec<_> = (0..50)
                .map(|i| {
                    passage(
                        1_000 + batch * 50 + i,
                        100 + batch,
                        "More",
                        &[],
                        &format!("filler text number {i} about ships"),
                    )
                })
                .collect();
            index.add(&more).unwrap();
            assert_eq!(index.len(), 5 + (batch + 1) * 50);
        }
        done.store(true, Ordering::Relaxed);
        for searcher in searchers {
            assert!(searcher.join().unwrap() > 0);
        }
    });
    assert_eq!(index.len(), 1_005);
}
