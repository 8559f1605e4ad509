//! What grounding adds to a chat request of a site with knowledge, on a site of 10,000 passages,
//! and what ingesting 1,000 local pages takes: `cargo run --release -p confab-bench --bin
//! grounding`. Issue 15's targets: at most 2 ms at the median, and under a minute.
//!
//! Ingestion runs `knowledge::ingest::add`, the pipeline of `confab knowledge add`, on a folder of
//! 1,000 Markdown pages (each a title and 5 sections of 60–200 words) written to the temp
//! directory first: the folder walk, reading, hashing, parsing, splitting and storing.
//!
//! It runs the relay's own code on a real SQLite store in a temp directory: `Library::retrieve`
//! (the site's BM25 index searched with the visitor's messages, then the passages it names read
//! from the store by id) and `Sources::build` (the numbered block within its budget), which is all
//! the work a request of a site with knowledge does that one without does not. The corpus is
//! synthetic and deterministic (1,000 documents of 10 passages of 80–150 words, drawn from a
//! 20,000-word vocabulary with a Zipf-like skew); the questions are 3–12 words of the same
//! distribution, with one earlier question as context.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use confab_server::config::Config;
use confab_server::knowledge::grounding::Sources;
use confab_server::knowledge::ingest::{self, OnFailure, Quiet, Source};
use confab_server::knowledge::library::Library;
use confab_server::sites::{self, SiteSpec};
use confab_server::store::knowledge::{NewDocument, NewPassage};
use confab_server::store::{Grounding, Store};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const DOCUMENTS: usize = 1_000;
const PASSAGES_PER_DOCUMENT: usize = 10;
const QUESTIONS: usize = 1_000;
const PAGES: usize = 1_000;
const VOCABULARY: f64 = 20_000.0;

/// A word of the vocabulary, log-uniform over its ranks (about Zipf's law): `w17` is common,
/// `w18211` rare.
fn word(rng: &mut StdRng) -> String {
    let rank = (rng.random_range(0.0..VOCABULARY.ln())).exp().floor();
    format!("w{rank}")
}

fn words(rng: &mut StdRng, low: usize, high: usize) -> String {
    let count = rng.random_range(low..=high);
    (0..count).map(|_| word(rng)).collect::<Vec<_>>().join(" ")
}

/// The `q` quantile of `sorted` (nanoseconds), by nearest rank.
fn percentile(sorted: &[u64], q: f64) -> Duration {
    Duration::from_nanos(confab_bench::percentile(sorted, q).unwrap_or_default())
}

fn ms(d: Duration) -> String {
    format!("{:.3} ms", d.as_secs_f64() * 1e3)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let mut config = Config::default();
    config.database.url = format!("sqlite://{}", dir.path().join("bench.db").display());
    let store: Arc<dyn Store> = confab_server::store::open(&config.database).await?;
    let spec = SiteSpec {
        name: "Bench".into(),
        origins: vec!["https://shop.example".into()],
        ..SiteSpec::default()
    };
    let site = sites::create_site(store.as_ref(), &config, spec, false).await?.site;
    let mut rng = StdRng::seed_from_u64(15);

    let started = Instant::now();
    for d in 0..DOCUMENTS {
        let passages = (0..PASSAGES_PER_DOCUMENT)
            .map(|p| NewPassage {
                heading_path: vec![format!("Section {p}"), words(&mut rng, 1, 3)],
                text: words(&mut rng, 80, 150),
            })
            .collect();
        let document = NewDocument {
            site_id: site.id.clone(),
            source: format!("https://shop.example/docs/{d}"),
            title: words(&mut rng, 2, 5),
            content_hash: format!("{d:x}"),
            at_ms: 1,
            passages,
        };
        store.put_document(&document, config.knowledge.caps()).await.context("put")?;
    }
    let stored = started.elapsed();

    let library = Library::new(Arc::clone(&store), None);
    let started = Instant::now();
    library.load().await?;
    let built = started.elapsed();

    let knowledge = &config.knowledge;
    let max_bytes =
        (knowledge.max_context_tokens as usize * 4).min(config.policy.context_bytes as usize / 2);
    let questions: Vec<(String, String)> =
        (0..QUESTIONS).map(|_| (words(&mut rng, 3, 12), words(&mut rng, 3, 12))).collect();
    // Warm-up: the first searches fault the index's pages in.
    for (earlier, latest) in questions.iter().take(50) {
        library.retrieve(&site.id, &[earlier, latest], knowledge.top_k).await?;
    }
    let (mut times, mut block_bytes, mut sources) = (Vec::new(), 0usize, 0usize);
    for (earlier, latest) in &questions {
        let started = Instant::now();
        let found = library.retrieve(&site.id, &[earlier, latest], knowledge.top_k).await?;
        let found = found.context("the site has knowledge")?;
        let built = Sources::build(&found.passages, Grounding::Prefer, false, max_bytes);
        times.push(u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX));
        if let Some(built) = built {
            block_bytes += built.block.len();
            sources += built.sources.len();
        }
    }
    times.sort();
    println!(
        "site: {DOCUMENTS} documents, {} passages, SQLite in {}",
        DOCUMENTS * PASSAGES_PER_DOCUMENT,
        dir.path().display()
    );
    println!("stored in {:.1} s; index built at start in {}", stored.as_secs_f64(), ms(built));
    println!(
        "grounding per request ({QUESTIONS} questions, top_k {}, budget {max_bytes} B): \
         p50 {}  p90 {}  p99 {}  max {}",
        knowledge.top_k,
        ms(percentile(&times, 0.5)),
        ms(percentile(&times, 0.9)),
        ms(percentile(&times, 0.99)),
        ms(percentile(&times, 1.0)),
    );
    println!(
        "average block {} bytes, {:.1} sources",
        block_bytes / QUESTIONS,
        sources as f64 / QUESTIONS as f64
    );
    let median = percentile(&times, 0.5);
    let verdict = if median <= Duration::from_millis(2) { "PASS" } else { "MISS" };
    println!("target: p50 <= 2 ms on 10,000 passages: {verdict} ({})", ms(median));

    let pages = dir.path().join("pages");
    std::fs::create_dir(&pages)?;
    for p in 0..PAGES {
        let mut page = format!("# {}\n\n", words(&mut rng, 2, 5));
        for s in 0..5 {
            page.push_str(&format!("## Section {s}\n\n{}\n\n", words(&mut rng, 60, 200)));
        }
        std::fs::write(pages.join(format!("page-{p:04}.md")), page)?;
    }
    let spec = SiteSpec {
        name: "Pages".into(),
        origins: vec!["https://pages.example".into()],
        ..SiteSpec::default()
    };
    let pages_site = sites::create_site(store.as_ref(), &config, spec, false).await?.site;
    let started = Instant::now();
    let report = ingest::add(
        store.as_ref(),
        knowledge,
        None,
        &pages_site.id,
        vec![Source::Path(pages)],
        OnFailure::StoreTheRest,
        &mut Quiet,
    )
    .await
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    let took = started.elapsed();
    let counts = report.counts();
    let passages: u64 =
        store.knowledge_documents(&pages_site.id).await?.iter().map(|d| d.passages).sum();
    println!(
        "ingest {PAGES} local pages (confab knowledge add's pipeline): {:.2} s, {} added, {} \
         failed, {passages} passages",
        took.as_secs_f64(),
        counts.added,
        counts.failed
    );
    let verdict = if took < Duration::from_secs(60) { "PASS" } else { "MISS" };
    println!("target: 1,000 local pages in under a minute: {verdict}");
    Ok(())
}
