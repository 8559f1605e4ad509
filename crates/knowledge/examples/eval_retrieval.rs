//! Measures retrieval on the evaluation set of `tests/knowledge` (see its README.md): every
//! corpus page goes through [`ingest`] and into a [`SiteIndex`] as the relay puts a site's
//! documents there, every question is asked through [`SiteIndex::search_turns`] with the
//! visitor's messages as the relay passes them (a follow-up's earlier visitor message, then
//! the question), and the ranks of the passages holding each answer become hit@1, hit@3 and
//! MRR, overall, per kind of question and per half of the set.
//!
//! ```sh
//! scripts/eval-knowledge [--misses] [--min-hit3 0.9] [--set DIR]
//! ```
//!
//! - `--misses` lists the questions whose answer is not in the top 3, with the rank it had
//!   (if in the top 10) and the page and headings of what came first instead.
//! - `--min-hit3 F` exits with status 1 when hit@3 over all questions is below `F`.
//! - `--copies N` indexes the corpus N times over (as N documents each), to time searches on
//!   a larger index with real English questions: 18 copies make some 10,000 passages. Only
//!   the time means something then: the copies of a passage tie, so the top 10 are copies of
//!   one passage and hit@3 and MRR fall to hit@1.
//! - `--set DIR` reads another set laid out like `tests/knowledge` (`corpus/`,
//!   `questions.jsonl`).
//! - `--embeddings URL` (an OpenAI-compatible API root, such as `http://127.0.0.1:8000/v1`)
//!   also measures hybrid retrieval ([`SiteIndex::search_hybrid`]): every passage and question
//!   is embedded through `confab-providers`, as the relay embeds them, by `--embedding-model`
//!   (default `all-MiniLM-L6-v2`), and the table is printed for BM25 alone, embeddings alone
//!   and hybrid; `--min-similarity F` sets the cosine floor (as `[knowledge.embeddings]
//!   min_similarity` does; default 0.3).
//!   `scripts/eval-knowledge-embeddings` runs it against a real model on this machine.
//!
//! The halves split the questions by the parity of their number (`q001` is odd): retrieval
//! settings were tuned looking at the odd half only, so the even half shows whether they
//! carry over to questions they were not tuned on.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use confab_knowledge::{Dense, Hit, IndexedPassage, Limits, SiteIndex, Vectors, ingest};
use confab_providers::{Call, EmbeddingRequest, Provider, ProviderKind, Settings};
use serde::Deserialize;

/// Passages retrieved per question: MRR counts a rank up to 10.
const RETRIEVED: usize = 10;

#[derive(Debug, Deserialize)]
struct Question {
    id: String,
    question: String,
    file: String,
    answer: String,
    kind: String,
    /// A follow-up's earlier turns: the visitor's message, then the assistant's reply.
    #[serde(default)]
    history: Vec<String>,
}

impl Question {
    /// The visitor's messages, oldest first, as the relay hands them to the index: the
    /// history's visitor turns (every other message, starting with the first), then the
    /// question. Assistant replies are not passed.
    fn user_messages(&self) -> Vec<&str> {
        self.history.iter().step_by(2).map(String::as_str).chain([self.question.as_str()]).collect()
    }

    fn is_odd(&self) -> bool {
        self.id
            .trim_start_matches(|c: char| !c.is_ascii_digit())
            .parse::<u32>()
            .is_ok_and(|number| number % 2 == 1)
    }
}

/// An indexed passage as the evaluation sees it.
struct Stored {
    file: String,
    heading_path: Vec<String>,
    /// The text with whitespace collapsed, for finding answer quotes.
    text: String,
}

#[derive(Default, Clone, Copy)]
struct Score {
    questions: u32,
    hit1: u32,
    hit3: u32,
    reciprocal_ranks: f64,
}

impl Score {
    fn add(&mut self, rank: Option<usize>) {
        self.questions += 1;
        if let Some(rank) = rank {
            self.hit1 += u32::from(rank == 1);
            self.hit3 += u32::from(rank <= 3);
            #[expect(clippy::cast_precision_loss, reason = "a rank of at most 10")]
            let reciprocal = 1.0 / rank as f64;
            self.reciprocal_ranks += reciprocal;
        }
    }

    fn hit3(&self) -> f64 {
        f64::from(self.hit3) / f64::from(self.questions.max(1))
    }

    fn line(&self, label: &str) -> String {
        let n = f64::from(self.questions.max(1));
        format!(
            "{label:<22} {:>4} {:>7.3} {:>7.3} {:>7.3}",
            self.questions,
            f64::from(self.hit1) / n,
            self.hit3(),
            self.reciprocal_ranks / n,
        )
    }
}

struct Options {
    misses: bool,
    min_hit3: Option<f64>,
    set: PathBuf,
    copies: usize,
    embeddings: Option<url::Url>,
    embedding_model: String,
    min_similarity: f32,
}

/// Texts per embeddings call.
const EMBEDDING_BATCH: usize = 64;

fn options() -> Result<Options, String> {
    let mut options = Options {
        misses: false,
        min_hit3: None,
        set: Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/knowledge"),
        copies: 1,
        embeddings: None,
        embedding_model: "all-MiniLM-L6-v2".to_owned(),
        min_similarity: confab_knowledge::DEFAULT_MIN_SIMILARITY,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--misses" => options.misses = true,
            "--min-hit3" => {
                let value = args.next().ok_or("--min-hit3 needs a value, such as 0.9")?;
                options.min_hit3 = Some(
                    value.parse().map_err(|_| format!("--min-hit3: {value} is not a number"))?,
                );
            }
            "--copies" => {
                let value = args.next().ok_or("--copies needs a number")?;
                options.copies = value
                    .parse::<usize>()
                    .ok()
                    .filter(|copies| *copies > 0)
                    .ok_or(format!("--copies: {value} is not a positive number"))?;
            }
            "--set" => options.set = args.next().ok_or("--set needs a directory")?.into(),
            "--embeddings" => {
                let value = args.next().ok_or("--embeddings needs an API root URL")?;
                options.embeddings = Some(
                    url::Url::parse(&value)
                        .map_err(|e| format!("--embeddings: {value} is not a URL: {e}"))?,
                );
            }
            "--min-similarity" => {
                let value = args.next().ok_or("--min-similarity needs a number")?;
                options.min_similarity = value
                    .parse()
                    .map_err(|_| format!("--min-similarity: {value} is not a number"))?;
            }
            "--embedding-model" => {
                options.embedding_model = args.next().ok_or("--embedding-model needs a name")?;
            }
            "-h" | "--help" => {
                return Err(
                    "usage: eval-knowledge [--misses] [--min-hit3 F] [--copies N] [--set DIR] \
                     [--embeddings URL [--embedding-model NAME] [--min-similarity F]]"
                        .into(),
                );
            }
            other => return Err(format!("unknown argument {other}; see --help")),
        }
    }
    Ok(options)
}

fn collapse_whitespace(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Every file under `dir`, as paths relative to `root` with `/` separators, sorted.
fn files(root: &Path, dir: &Path, out: &mut Vec<String>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            files(root, &path, out)?;
        } else if let Ok(relative) = path.strip_prefix(root) {
            let parts: Vec<_> =
                relative.components().map(|c| c.as_os_str().to_string_lossy()).collect();
            out.push(parts.join("/"));
        }
    }
    out.sort();
    Ok(())
}

fn main() -> Result<ExitCode, Box<dyn std::error::Error>> {
    let options = match options() {
        Ok(options) => options,
        Err(message) => {
            eprintln!("{message}");
            return Ok(ExitCode::from(2));
        }
    };
    let corpus = options.set.join("corpus");
    let mut names = Vec::new();
    files(&corpus, &corpus, &mut names)?;

    // Ingest every page as the relay does: its name, no content type, the default limits.
    let started = Instant::now();
    let mut stored = Vec::new();
    let mut indexed = Vec::new();
    let documents = names.iter().cycle().take(names.len() * options.copies);
    for (document, name) in documents.enumerate() {
        let bytes = std::fs::read(corpus.join(name))?;
        let ingested = ingest(name, None, &bytes, &Limits::default())?;
        for passage in ingested.passages {
            let id = u64::try_from(stored.len())?;
            stored.push(Stored {
                file: name.clone(),
                heading_path: passage.heading_path.clone(),
                text: collapse_whitespace(&passage.text),
            });
            indexed.push(IndexedPassage {
                id,
                document: u64::try_from(document)?,
                title: ingested.title.clone(),
                heading_path: passage.heading_path,
                text: passage.text,
            });
        }
    }
    let index = SiteIndex::new()?;
    index.add(&indexed)?;
    let built = started.elapsed();

    let questions: Vec<Question> = std::fs::read_to_string(options.set.join("questions.jsonl"))?
        .lines()
        .filter(|line| !line.trim().is_empty())
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()?;

    println!(
        "{} pages, {} passages (ingested and indexed in {} ms); {} questions, {} whose answer no passage holds",
        names.len(),
        stored.len(),
        built.as_millis(),
        questions.len(),
        questions
            .iter()
            .filter(|q| !stored.iter().any(|p| p.text.contains(&collapse_whitespace(&q.answer))))
            .count(),
    );
    let words = evaluate(&questions, &stored, |question| {
        index.search_turns(&question.user_messages(), RETRIEVED)
    })?;
    let mut all = words.print(&stored, options.misses);

    if let Some(api) = &options.embeddings {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let embedder = Embedder::new(api, &options.embedding_model)?;
        let started = Instant::now();
        let texts: Vec<String> = indexed.iter().map(embedded_passage).collect();
        let passage_vectors = runtime.block_on(embedder.embed(&texts))?;
        let mut vectors = Vectors::new();
        for (passage, vector) in indexed.iter().zip(&passage_vectors) {
            vectors.push(passage.id, vector)?;
        }
        let queries: Vec<String> =
            questions.iter().map(|q| SiteIndex::embedding_text(&q.user_messages())).collect();
        let query_vectors = runtime.block_on(embedder.embed(&queries))?;
        println!(
            "\nhybrid: {} passages and {} questions embedded by {} ({} dimensions) in {} ms; cosine floor {}",
            texts.len(),
            queries.len(),
            options.embedding_model,
            vectors.dimensions(),
            started.elapsed().as_millis(),
            options.min_similarity,
        );
        let by_id: BTreeMap<&str, &Vec<f32>> =
            questions.iter().map(|q| q.id.as_str()).zip(&query_vectors).collect();
        let meaning = evaluate(&questions, &stored, |question| {
            let query = by_id.get(question.id.as_str()).map(|v| v.as_slice()).unwrap_or_default();
            Ok(vectors.search(query, RETRIEVED, options.min_similarity))
        })?;
        println!("embeddings alone:");
        meaning.print(&stored, false);
        let hybrid = evaluate(&questions, &stored, |question| {
            let query = by_id.get(question.id.as_str()).map(|v| v.as_slice()).unwrap_or_default();
            let dense = Dense { vectors: &vectors, query, min_similarity: options.min_similarity };
            index.search_hybrid(&question.user_messages(), Some(dense), RETRIEVED)
        })?;
        println!("hybrid (BM25 and embeddings, reciprocal rank fusion):");
        all = hybrid.print(&stored, options.misses);
    }

    if let Some(min) = options.min_hit3
        && all.hit3() < min
    {
        eprintln!("hit@3 {:.3} is below --min-hit3 {min}", all.hit3());
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

/// What the evaluation scored for one way of searching.
struct Evaluation<'q> {
    all: Score,
    kinds: BTreeMap<&'q str, Score>,
    halves: [Score; 2],
    misses: Vec<(&'q Question, Option<usize>, Option<u64>)>,
    latencies: Vec<Duration>,
}

/// Asks every question through `search` (the top [`RETRIEVED`] passages) and scores the rank
/// of the first passage that holds its answer.
fn evaluate<'q>(
    questions: &'q [Question],
    stored: &[Stored],
    mut search: impl FnMut(&Question) -> Result<Vec<Hit>, confab_knowledge::IndexError>,
) -> Result<Evaluation<'q>, confab_knowledge::IndexError> {
    let mut evaluation = Evaluation {
        all: Score::default(),
        kinds: BTreeMap::new(),
        halves: [Score::default(); 2],
        misses: Vec::new(),
        latencies: Vec::with_capacity(questions.len()),
    };
    for question in questions {
        let answer = collapse_whitespace(&question.answer);
        let relevant = |id: u64| {
            usize::try_from(id)
                .ok()
                .and_then(|at| stored.get(at))
                .is_some_and(|p| p.text.contains(&answer))
        };
        let started = Instant::now();
        let hits = search(question)?;
        evaluation.latencies.push(started.elapsed());
        let rank = hits.iter().position(|hit| relevant(hit.id)).map(|at| at + 1);
        evaluation.all.add(rank);
        evaluation.kinds.entry(question.kind.as_str()).or_default().add(rank);
        evaluation.halves[usize::from(!question.is_odd())].add(rank);
        if rank.is_none_or(|rank| rank > 3) {
            evaluation.misses.push((question, rank, hits.first().map(|hit| hit.id)));
        }
    }
    evaluation.latencies.sort();
    Ok(evaluation)
}

impl Evaluation<'_> {
    /// Prints the table (and the misses when asked); returns the overall score.
    fn print(&self, stored: &[Stored], misses: bool) -> Score {
        println!("{:<22} {:>4} {:>7} {:>7} {:>7}", "", "n", "hit@1", "hit@3", "MRR");
        println!("{}", self.all.line("all"));
        for (kind, score) in &self.kinds {
            println!("{}", score.line(&format!("  {kind}")));
        }
        println!("{}", self.halves[0].line("odd ids (tuned on)"));
        println!("{}", self.halves[1].line("even ids (held out)"));
        let latencies = &self.latencies;
        if let (Some(p50), Some(p95)) =
            (latencies.get(latencies.len() / 2), latencies.get(latencies.len() * 95 / 100))
        {
            println!("search: p50 {} µs, p95 {} µs", p50.as_micros(), p95.as_micros());
        }
        if misses {
            println!("\nmisses at rank 3 ({}):", self.misses.len());
            for (question, rank, first) in &self.misses {
                let rank = rank.map_or_else(|| "-".to_owned(), |rank| rank.to_string());
                println!(
                    "{} [{}] rank {rank}: {}",
                    question.id,
                    question.kind,
                    question.user_messages().join(" / ")
                );
                println!("    wanted {}: {}", question.file, question.answer);
                if let Some(first) =
                    first.and_then(|id| usize::try_from(id).ok()).and_then(|at| stored.get(at))
                {
                    println!("    first  {} > {}", first.file, first.heading_path.join(" > "));
                }
            }
        }
        self.all
    }
}

/// What is embedded of a passage: the same text the relay embeds at ingestion.
fn embedded_passage(passage: &IndexedPassage) -> String {
    confab_knowledge::embedding_passage_text(&passage.title, &passage.heading_path, &passage.text)
}

/// The relay's OpenAI provider, used for its embeddings only.
struct Embedder {
    provider: std::sync::Arc<dyn Provider>,
    model: String,
}

impl Embedder {
    fn new(api: &url::Url, model: &str) -> Result<Self, Box<dyn std::error::Error>> {
        let settings = Settings {
            name: "eval",
            base_url: Some(api),
            api_key: std::env::var("CONFAB_EVAL_EMBEDDINGS_KEY")
                .ok()
                .map(confab_providers::Secret::new),
            connect_timeout: Duration::from_secs(5),
            demo_token_delay: Duration::ZERO,
        };
        let provider = confab_providers::build(ProviderKind::Openai, settings)?;
        Ok(Self { provider, model: model.to_owned() })
    }

    async fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, Box<dyn std::error::Error>> {
        let mut vectors = Vec::with_capacity(texts.len());
        for batch in texts.chunks(EMBEDDING_BATCH) {
            let request = EmbeddingRequest::new(&self.model, batch, None);
            vectors.extend(self.provider.embed(&request, Call::default()).await?);
        }
        Ok(vectors)
    }
}
