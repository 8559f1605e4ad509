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
//!
//! The halves split the questions by the parity of their number (`q001` is odd): retrieval
//! settings were tuned looking at the odd half only, so the even half shows whether they
//! carry over to questions they were not tuned on.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use confab_knowledge::{IndexedPassage, Limits, SiteIndex, ingest};
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
}

fn options() -> Result<Options, String> {
    let mut options = Options {
        misses: false,
        min_hit3: None,
        set: Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/knowledge"),
        copies: 1,
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
            "-h" | "--help" => {
                return Err(
                    "usage: eval-knowledge [--misses] [--min-hit3 F] [--copies N] [--set DIR]"
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

    let mut all = Score::default();
    let mut kinds: BTreeMap<&str, Score> = BTreeMap::new();
    let mut halves = [Score::default(); 2];
    let mut unanswerable = 0;
    let mut misses = Vec::new();
    let mut latencies: Vec<Duration> = Vec::with_capacity(questions.len());
    for question in &questions {
        let answer = collapse_whitespace(&question.answer);
        let relevant = |id: u64| {
            usize::try_from(id)
                .ok()
                .and_then(|at| stored.get(at))
                .is_some_and(|p| p.text.contains(&answer))
        };
        if !stored.iter().any(|p| p.text.contains(&answer)) {
            unanswerable += 1;
        }
        let started = Instant::now();
        let hits = index.search_turns(&question.user_messages(), RETRIEVED)?;
        latencies.push(started.elapsed());
        let rank = hits.iter().position(|hit| relevant(hit.id)).map(|at| at + 1);
        all.add(rank);
        kinds.entry(question.kind.as_str()).or_default().add(rank);
        halves[usize::from(!question.is_odd())].add(rank);
        if rank.is_none_or(|rank| rank > 3) {
            misses.push((question, rank, hits.first().map(|hit| hit.id)));
        }
    }
    latencies.sort();

    println!(
        "{} pages, {} passages (ingested and indexed in {} ms); {} questions, {unanswerable} whose answer no passage holds",
        names.len(),
        stored.len(),
        built.as_millis(),
        questions.len(),
    );
    println!("{:<22} {:>4} {:>7} {:>7} {:>7}", "", "n", "hit@1", "hit@3", "MRR");
    println!("{}", all.line("all"));
    for (kind, score) in &kinds {
        println!("{}", score.line(&format!("  {kind}")));
    }
    println!("{}", halves[0].line("odd ids (tuned on)"));
    println!("{}", halves[1].line("even ids (held out)"));
    if let (Some(p50), Some(p95)) =
        (latencies.get(latencies.len() / 2), latencies.get(latencies.len() * 95 / 100))
    {
        println!("search: p50 {} µs, p95 {} µs", p50.as_micros(), p95.as_micros());
    }

    if options.misses {
        println!("\nmisses at rank 3 ({}):", misses.len());
        for (question, rank, first) in &misses {
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

    if let Some(min) = options.min_hit3
        && all.hit3() < min
    {
        eprintln!("hit@3 {:.3} is below --min-hit3 {min}", all.hit3());
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}
