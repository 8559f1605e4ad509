//! Prints what retrieval and ingestion cost: `cargo run --release -p confab-knowledge --example
//! bench_retrieval`. Issue 15's targets: retrieval adds at most 2 ms at the median on a site of
//! 10,000 passages, and 1,000 local pages ingest in under a minute.
//!
//! The corpus is synthetic and deterministic: words drawn from a 20,000-word vocabulary with a
//! Zipf-like skew (a few words everywhere, most rare, as in prose), passages of 80–150 words,
//! queries of 3–12 words from the same distribution.

use std::time::{Duration, Instant};

use confab_knowledge::{IndexedPassage, Limits, SiteIndex, Vectors, fuse, ingest};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const PASSAGES: u64 = 10_000;
const QUERIES: usize = 1_000;
const PAGES: usize = 1_000;

struct Vocabulary {
    words: Vec<String>,
    /// Cumulative Zipf weights, for sampling by binary search.
    cumulative: Vec<f64>,
}

impl Vocabulary {
    fn new(rng: &mut StdRng, size: usize) -> Self {
        let words = (0..size)
            .map(|_| (0..rng.random_range(3..11)).map(|_| rng.random_range('a'..='z')).collect())
            .collect();
        let mut total = 0.0;
        let cumulative = (1..=size)
            .map(|rank| {
                total += 1.0 / f64::from(u32::try_from(rank).unwrap_or(u32::MAX));
                total
            })
            .collect();
        Self { words, cumulative }
    }

    fn word(&self, rng: &mut StdRng) -> &str {
        let total = self.cumulative.last().copied().unwrap_or(1.0);
        let at = self.cumulative.partition_point(|&c| c < rng.random_range(0.0..total));
        &self.words[at.min(self.words.len() - 1)]
    }

    fn words(
        &self,
        rng: &mut StdRng,
        count: impl rand::distr::uniform::SampleRange<usize>,
    ) -> String {
        let count = rng.random_range(count);
        (0..count).map(|_| self.word(rng)).collect::<Vec<_>>().join(" ")
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    #[expect(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss,
        reason = "an index into a short list"
    )]
    let at = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[at]
}

fn resident_mib() -> Option<f64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: f64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096.0 / (1024.0 * 1024.0))
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut rng = StdRng::seed_from_u64(15);
    let vocabulary = Vocabulary::new(&mut rng, 20_000);
    let before = resident_mib();

    let passages: Vec<IndexedPassage> = (0..PASSAGES)
        .map(|id| IndexedPassage {
            id,
            document: id / 10,
            title: vocabulary.words(&mut rng, 3..=3),
            heading_path: vec![
                vocabulary.words(&mut rng, 2..=2),
                vocabulary.words(&mut rng, 3..=3),
            ],
            text: vocabulary.words(&mut rng, 80..=150),
        })
        .collect();
    let index = SiteIndex::new()?;
    let started = Instant::now();
    index.add(&passages)?;
    let build = started.elapsed();
    drop(passages);
    let after = resident_mib();

    let queries: Vec<String> = (0..QUERIES).map(|_| vocabulary.words(&mut rng, 3..=12)).collect();
    for query in queries.iter().take(100) {
        index.search(query, 5)?; // warm-up
    }
    let mut latencies = Vec::with_capacity(QUERIES);
    let mut hits = 0;
    for query in &queries {
        let started = Instant::now();
        hits += index.search(query, 5)?.len();
        latencies.push(started.elapsed());
    }
    latencies.sort();

    let started = Instant::now();
    index.remove_document(7)?;
    let update = started.elapsed();

    println!("index of {PASSAGES} passages built in {:.0} ms", build.as_secs_f64() * 1e3);
    if let (Some(before), Some(after)) = (before, after) {
        println!(
            "resident memory: {before:.0} MiB before, {after:.0} MiB with the index ({:.0} MiB more)",
            after - before
        );
    }
    println!(
        "search, top 5 of {QUERIES} queries of 3-12 words: p50 {:.0} µs, p95 {:.0} µs, p99 {:.0} µs, max {:.0} µs ({} hits)",
        percentile(&latencies, 0.50).as_secs_f64() * 1e6,
        percentile(&latencies, 0.95).as_secs_f64() * 1e6,
        percentile(&latencies, 0.99).as_secs_f64() * 1e6,
        percentile(&latencies, 1.0).as_secs_f64() * 1e6,
        hits,
    );
    println!("removing one document: {:.1} ms", update.as_secs_f64() * 1e3);

    // Hybrid retrieval's second ranking: the exhaustive cosine search of `Vectors` over the
    // same number of passages, at the lengths of common embedding models, and the fusion.
    for dimensions in [384, 512, 1536] {
        let random_vector = |rng: &mut StdRng| -> Vec<f32> {
            (0..dimensions).map(|_| rng.random_range(-1.0f32..1.0)).collect()
        };
        let mut vectors = Vectors::new();
        for id in 0..PASSAGES {
            vectors.push(id, &random_vector(&mut rng))?;
        }
        let questions: Vec<Vec<f32>> = (0..200).map(|_| random_vector(&mut rng)).collect();
        let (mut cosine, mut latencies) = (Vec::new(), Vec::new());
        for (question, words) in questions.iter().zip(&queries) {
            let started = Instant::now();
            let meaning = vectors.search(question, 20, 0.0);
            cosine.push(started.elapsed());
            let words = index.search(words, 20)?;
            std::hint::black_box(fuse(&[&words, &meaning], 5));
            latencies.push(started.elapsed());
        }
        latencies.sort();
        cosine.sort();
        println!(
            "hybrid search, {PASSAGES} vectors of {dimensions} dimensions: cosine top 20 p50 {:.0} µs; with BM25 top 20 and fusion p50 {:.0} µs, p99 {:.0} µs; vectors take {:.0} MiB",
            percentile(&cosine, 0.50).as_secs_f64() * 1e6,
            percentile(&latencies, 0.50).as_secs_f64() * 1e6,
            percentile(&latencies, 0.99).as_secs_f64() * 1e6,
            (PASSAGES as f64 * dimensions as f64) / (1024.0 * 1024.0),
        );
    }

    // Ingestion: 1,000 pages, half HTML with navigation and scripts, half Markdown, each of
    // some 12 sections of 3 paragraphs (about 20 KB).
    let pages: Vec<(String, String)> = (0..PAGES)
        .map(|page| {
            let mut body = String::new();
            for section in 0..12 {
                let heading = vocabulary.words(&mut rng, 4..=4);
                let paragraphs: Vec<String> = (0..3).map(|_| format!("{}.", vocabulary.words(&mut rng, 60..=60))).collect();
                if page % 2 == 0 {
                    body.push_str(&format!("<h{0}>{heading}</h{0}>", 2 + section % 2));
                    for paragraph in paragraphs {
                        body.push_str(&format!("<p>{paragraph} <a href=\"/x\">link</a></p>\n"));
                    }
                } else {
                    body.push_str(&format!("{} {heading}\n\n{}\n\n", "#".repeat(2 + section % 2), paragraphs.join("\n\n")));
                }
            }
            if page % 2 == 0 {
                let nav = "<nav><ul>".to_owned() + &"<li><a href=\"/a\">Menu entry</a></li>".repeat(50) + "</ul></nav>";
                let page_html = format!(
                    "<!doctype html><html><head><title>Page {page}</title><script>{}</script></head><body>{nav}<main><h1>Page {page}</h1>{body}</main><footer>Footer</footer></body></html>",
                    "var x = 1;".repeat(500)
                );
                (format!("site/page-{page}.html"), page_html)
            } else {
                (format!("site/page-{page}.md"), format!("# Page {page}\n\n{body}"))
            }
        })
        .collect();
    let bytes: usize = pages.iter().map(|(_, page)| page.len()).sum();
    let started = Instant::now();
    let mut ingested = Vec::new();
    for (name, page) in &pages {
        let document = ingest(name, None, page.as_bytes(), &Limits::default())?;
        for passage in document.passages {
            let id = u64::try_from(ingested.len())?;
            ingested.push(IndexedPassage {
                id,
                document: id / 40,
                title: document.title.clone(),
                heading_path: passage.heading_path,
                text: passage.text,
            });
        }
    }
    let parsed = started.elapsed();
    let site = SiteIndex::new()?;
    site.add(&ingested)?;
    println!(
        "ingesting {PAGES} pages ({:.1} MB, half HTML, half Markdown): parsed and split into {} passages in {:.0} ms, indexed in {:.0} ms more",
        bytes as f64 / 1e6,
        ingested.len(),
        parsed.as_secs_f64() * 1e3,
        (started.elapsed() - parsed).as_secs_f64() * 1e3,
    );
    Ok(())
}
