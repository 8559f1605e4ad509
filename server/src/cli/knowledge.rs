//! `confab knowledge ...`: what a site's assistant may answer from (its own files and pages),
//! through the same pipeline as the admin API (`knowledge::ingest`).

use std::io::IsTerminal;

use anyhow::bail;
use clap::Subcommand;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::print_flush;
use crate::config::Config;
use crate::knowledge::embed::Embedder;
use crate::knowledge::ingest::{
    self, KnowledgeError, OnFailure, Progress, Report, Source, Status, document_view,
};
use crate::store::Store;

#[derive(Debug, Subcommand)]
pub enum KnowledgeCommand {
    /// Add files, directories (walked recursively), pages or sitemaps of the site's own origins;
    /// a document added again replaces the one of the same source, unless it is unchanged.
    Add {
        site: String,
        /// A file, a directory, a page's URL, or a sitemap's (a URL ending in .xml or naming a
        /// sitemap).
        #[arg(required = true, value_name = "PATH_OR_URL")]
        sources: Vec<String>,
    },
    /// List the site's documents.
    List {
        site: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Remove documents (by the ids `list` shows) with their passages.
    Remove {
        site: String,
        #[arg(required = true, value_name = "DOC_ID")]
        ids: Vec<i64>,
    },
    /// Read every document's file or page again; unchanged ones change nothing, and one whose
    /// source is gone is reported and kept.
    Refresh { site: String },
}

pub async fn run(
    command: KnowledgeCommand,
    config: &Config,
    store: &dyn Store,
) -> anyhow::Result<()> {
    let knowledge = &config.knowledge;
    // Only what writes knowledge embeds it (and reads the upstreams' keys).
    let embedder = match &command {
        KnowledgeCommand::Add { .. } | KnowledgeCommand::Refresh { .. } => {
            Embedder::standalone(config)?
        }
        KnowledgeCommand::List { .. } | KnowledgeCommand::Remove { .. } => None,
    };
    let embedder = embedder.as_deref();
    match command {
        KnowledgeCommand::Add { site, sources } => {
            let sources = sources
                .iter()
                .map(|text| Source::parse(text))
                .collect::<Result<Vec<_>, _>>()
                .map_err(anyhow::Error::msg)?;
            let mut bar = Bar::new();
            let on_failure = OnFailure::StoreTheRest;
            let report =
                ingest::add(store, knowledge, embedder, &site, sources, on_failure, &mut bar).await;
            bar.0.finish_and_clear();
            print_report(&site, report)
        }
        KnowledgeCommand::List { site, json } => {
            exists(store, &site).await?;
            let documents = store.knowledge_documents(&site).await?;
            if json {
                let views: Vec<_> = documents.iter().map(document_view).collect();
                print_flush(&format!("{}\n", serde_json::to_string(&views)?));
            } else if documents.is_empty() {
                print_flush(&format!(
                    "Site {site} has no knowledge yet. Add some with `confab knowledge add \
                     {site} PATH_OR_URL`.\n"
                ));
            } else {
                let mut out = format!(
                    "{:<8} {:<9} {:<22} {:<30} {}\n",
                    "ID", "PASSAGES", "UPDATED", "TITLE", "SOURCE"
                );
                for d in &documents {
                    out.push_str(&format!(
                        "{:<8} {:<9} {:<22} {:<30} {}\n",
                        d.id,
                        d.passages,
                        crate::rfc3339(d.updated_at_ms / 1000),
                        d.title,
                        d.source
                    ));
                }
                print_flush(&out);
            }
            Ok(())
        }
        KnowledgeCommand::Remove { site, ids } => {
            let missing = ingest::remove(store, &site, &ids).await.map_err(explain)?;
            let removed: Vec<String> =
                ids.iter().filter(|id| !missing.contains(id)).map(i64::to_string).collect();
            if !removed.is_empty() {
                print_flush(&format!(
                    "Removed document(s) {} of site {site}.\n",
                    removed.join(", ")
                ));
            }
            if !missing.is_empty() {
                let missing: Vec<String> = missing.iter().map(i64::to_string).collect();
                bail!(
                    "site {site} has no document with id {} (see `confab knowledge list {site}`)",
                    missing.join(", ")
                );
            }
            Ok(())
        }
        KnowledgeCommand::Refresh { site } => {
            let mut bar = Bar::new();
            let report = ingest::refresh(store, knowledge, embedder, &site, &mut bar).await;
            bar.0.finish_and_clear();
            print_report(&site, report)
        }
    }
}

async fn exists(store: &dyn Store, site: &str) -> anyhow::Result<()> {
    if store.site(site).await?.is_none() {
        bail!("no site with id `{site}` (see `confab sites list`)");
    }
    Ok(())
}

fn explain(error: KnowledgeError) -> anyhow::Error {
    match error {
        KnowledgeError::NoSuchSite(id) => {
            anyhow::anyhow!("no site with id `{id}` (see `confab sites list`)")
        }
        other => other.into(),
    }
}

/// One line per document, the notes, and a summary; an error when a document failed.
fn print_report(site: &str, report: Result<Report, KnowledgeError>) -> anyhow::Result<()> {
    let report = report.map_err(explain)?;
    let mut out = String::new();
    for note in &report.notes {
        out.push_str(&format!("note: {note}\n"));
    }
    for d in &report.documents {
        match (&d.error, &d.document) {
            (Some(error), _) => out.push_str(&format!("{:<10} {error}\n", d.status.as_str())),
            (None, Some(document)) if d.status != Status::Skipped => out.push_str(&format!(
                "{:<10} {} ({} passage{}, id {})\n",
                d.status.as_str(),
                d.source,
                document.passages,
                if document.passages == 1 { "" } else { "s" },
                document.id
            )),
            (None, _) => out.push_str(&format!(
                "{:<10} {} (uploaded: nothing to read again)\n",
                d.status.as_str(),
                d.source
            )),
        }
    }
    let counts = report.counts();
    out.push_str(&format!(
        "Site {site}: {} added, {} replaced, {} unchanged, {} failed{}.\n",
        counts.added,
        counts.replaced,
        counts.unchanged,
        counts.failed,
        if counts.skipped > 0 { format!(", {} skipped", counts.skipped) } else { String::new() }
    ));
    print_flush(&out);
    if counts.failed > 0 {
        bail!("{} document(s) failed (see above); the others were stored", counts.failed);
    }
    Ok(())
}

/// A progress bar on stderr, hidden when stderr is not a terminal (a pipe, a log file, CI).
struct Bar(ProgressBar);

impl Bar {
    fn new() -> Self {
        let target = if std::io::stderr().is_terminal() {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        };
        let bar = ProgressBar::with_draw_target(Some(0), target);
        if let Ok(style) = ProgressStyle::with_template("{bar:30} {pos}/{len} {wide_msg}") {
            bar.set_style(style);
        }
        Self(bar)
    }
}

impl Progress for Bar {
    fn found(&mut self, more: usize) {
        self.0.inc_length(more as u64);
    }

    fn read(&mut self, source: &str) {
        self.0.set_message(source.to_owned());
        self.0.inc(1);
    }
}
