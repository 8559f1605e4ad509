//! Filling and emptying a site's knowledge: the one pipeline behind `confab knowledge ...` and
//! `/admin/v1/sites/{id}/knowledge`, so the two front ends never disagree.
//!
//! An add runs in two phases. **Reading**: every source is resolved into documents (a directory
//! is walked, a sitemap is read), each document is read (at most `max_document_bytes + 1` bytes
//! of a file, a page through the [`Fetcher`], own origins only), hashed (SHA-256 of its bytes)
//! and, unless the site already holds that very content, parsed into passages
//! (`confab_knowledge::ingest`). **Storing**: each document is put in the store, which adds it,
//! replaces the site's document of the same source, or changes nothing for the same hash.
//!
//! - **Sources.** A file is stored under its canonical absolute path and a page under its final
//!   URL (after redirects), so that [`refresh`] can read them again; uploaded content (admin
//!   API) under the name it was given, which has no `/` and so never looks like either.
//! - **Sitemaps.** A URL is read as a sitemap when its path ends in `.xml` or its last segment
//!   contains `sitemap` (`/sitemap.xml`, `/sitemap_index.xml`, `/post-sitemap.xml`, `/sitemap`);
//!   any other URL is a page. The rule is on the URL alone, so that what an add will do is
//!   known before anything is fetched. The sitemap itself is not stored: its pages are.
//! - **Directories** are walked recursively (a folder's files in name order, then its
//!   subfolders); hidden files and directories
//!   (`.git`) and files of extensions that are not Markdown, HTML, text or PDF are skipped with
//!   a note; symbolic links to directories are not followed (no loops); a directory of more than
//!   100,000 files is refused whole (reading stops at the site's caps anyway).
//! - **Caps.** Before anything is stored, what the site would hold after the add is computed;
//!   past `[knowledge] max_documents_per_site` or `max_passages_per_site`, the whole add is
//!   refused and nothing changes. Reading stops as soon as the caps are passed, which also bounds
//!   the memory an add takes. (The store checks each put again, for adds that race.)
//! - **Failures.** A document that cannot be read or parsed is reported with a message that
//!   names it, and leaves the stored knowledge as it was. [`OnFailure`] says whether the others
//!   are stored (the CLI) or nothing is (the admin API, where a bad item is a bad request).
//! - **Refresh** reads every stored document's source again; an unchanged one changes nothing.
//!   A source that is gone (a missing file, a 404) is reported as failed and its document is
//!   **kept**, not deleted: a page that is down for a minute, or a disk not mounted, must not
//!   silently empty a site's knowledge. Removing a document is an explicit operation
//!   ([`remove`]). Refresh does not discover new pages: add the sitemap again for those.
//! - **Embeddings.** With `[knowledge.embeddings]`, an add and a refresh end by embedding every
//!   passage of the site that has no vector by the configured model yet (those just stored,
//!   and those an earlier failure or a model change left without one; `embed::embed_missing`).
//!   A failing model fails no document: the report notes it and BM25 retrieves those passages
//!   until the next add or refresh embeds them.

use std::collections::{HashMap, HashSet};
use std::io::Read as _;
use std::path::{Path, PathBuf};

use confab_admin_api::{KnowledgeDocumentView, KnowledgeReport, KnowledgeResult};
use confab_store::knowledge::{KnowledgeDocument, NewDocument, NewPassage, PutOutcome};
use confab_store::{Site, Store, StoreError};
use sha2::{Digest, Sha256};
use url::Url;

use super::config::KnowledgeConfig;
use super::embed::{EmbedError, Embedder, embed_missing};
use super::fetch::{FetchError, Fetcher};

/// File extensions a directory walk reads (the formats `confab_knowledge` parses).
/// Files one directory walk may list (their paths only: reading stops at the site's caps).
const MAX_WALK_FILES: u64 = 100_000;
const EXTENSIONS: [&str; 11] =
    ["md", "markdown", "mdown", "mkd", "mdx", "html", "htm", "xhtml", "txt", "text", "pdf"];

/// Something an operator names to add.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A local file, or a directory to walk.
    Path(PathBuf),
    /// A page of the site, or a sitemap (see [`is_sitemap`]).
    Url(Url),
    /// Content handed in (the admin API): a file name (no `/`), maybe a content type, bytes.
    Upload { name: String, content_type: Option<String>, bytes: Vec<u8> },
}

impl Source {
    /// What an operator typed: an `http://` or `https://` URL, otherwise a path.
    pub fn parse(text: &str) -> Result<Self, String> {
        let lower = text.to_ascii_lowercase();
        if lower.starts_with("http://") || lower.starts_with("https://") {
            Url::parse(text).map(Source::Url).map_err(|e| format!("{text}: not a valid URL ({e})"))
        } else {
            Ok(Source::Path(PathBuf::from(text)))
        }
    }
}

/// Whether a URL is read as a sitemap: its path ends in `.xml`, or its last segment contains
/// `sitemap` (case-insensitive).
pub fn is_sitemap(url: &Url) -> bool {
    let path = url.path().to_ascii_lowercase();
    let last = path.rsplit('/').next().unwrap_or_default();
    path.ends_with(".xml") || last.contains("sitemap")
}

/// What to do with the other documents when one fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnFailure {
    /// Store the others and report the failed ones (the CLI; a refresh).
    StoreTheRest,
    /// Store nothing: the add is refused with the failures (the admin API).
    StoreNothing,
}

/// What happened to one document.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Added,
    Replaced,
    /// The site held that very content already: nothing changed.
    Unchanged,
    /// Not read, not parsed or not stored: the stored knowledge is as it was.
    Failed,
    /// Nothing to do: an uploaded document has no source to read again on refresh.
    Skipped,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Added => "added",
            Self::Replaced => "replaced",
            Self::Unchanged => "unchanged",
            Self::Failed => "failed",
            Self::Skipped => "skipped",
        }
    }
}

/// One document's line of a [`Report`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DocumentReport {
    /// The file's path, the page's URL or the upload's name.
    pub source: String,
    pub status: Status,
    /// The stored document (not for a failed one).
    pub document: Option<KnowledgeDocument>,
    /// Why it failed, naming it.
    pub error: Option<String>,
}

/// What an add or a refresh did, document by document.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    pub documents: Vec<DocumentReport>,
    /// What was passed over and why (hidden files, unsupported extensions), and how the
    /// passages' embeddings went (with `[knowledge.embeddings]`).
    pub notes: Vec<String>,
    /// Passages embedded (with `[knowledge.embeddings]`).
    pub embedded: u64,
}

/// A [`Report`]'s counts by status.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub added: u64,
    pub replaced: u64,
    pub unchanged: u64,
    pub failed: u64,
    pub skipped: u64,
}

impl Report {
    pub fn counts(&self) -> Counts {
        let mut counts = Counts::default();
        for document in &self.documents {
            *match document.status {
                Status::Added => &mut counts.added,
                Status::Replaced => &mut counts.replaced,
                Status::Unchanged => &mut counts.unchanged,
                Status::Failed => &mut counts.failed,
                Status::Skipped => &mut counts.skipped,
            } += 1;
        }
        counts
    }

    /// Whether the site's knowledge changed (a document added or replaced, passages embedded).
    pub fn changed(&self) -> bool {
        self.embedded > 0
            || self.documents.iter().any(|d| matches!(d.status, Status::Added | Status::Replaced))
    }

    /// The failed documents' messages.
    pub fn failures(&self) -> impl Iterator<Item = &str> {
        self.documents.iter().filter_map(|d| d.error.as_deref())
    }

    fn failed(&mut self, source: impl Into<String>, error: impl Into<String>) {
        self.documents.push(DocumentReport {
            source: source.into(),
            status: Status::Failed,
            document: None,
            error: Some(error.into()),
        });
    }
}

/// A stored document as the admin API and `confab knowledge list --json` show it.
pub fn document_view(document: &KnowledgeDocument) -> KnowledgeDocumentView {
    KnowledgeDocumentView {
        id: document.id,
        source: document.source.clone(),
        title: document.title.clone(),
        content_hash: document.content_hash.clone(),
        passages: document.passages,
        chars: document.chars,
        added_at_ms: document.added_at_ms,
        updated_at_ms: document.updated_at_ms,
    }
}

/// A report as the admin API shows it.
pub fn report_view(report: &Report) -> KnowledgeReport {
    let counts = report.counts();
    KnowledgeReport {
        added: counts.added,
        replaced: counts.replaced,
        unchanged: counts.unchanged,
        failed: counts.failed,
        skipped: counts.skipped,
        results: report
            .documents
            .iter()
            .map(|d| KnowledgeResult {
                source: d.source.clone(),
                status: d.status.as_str().to_owned(),
                document: d.document.as_ref().map(document_view),
                error: d.error.clone(),
            })
            .collect(),
        notes: report.notes.clone(),
    }
}

/// Told how an add or a refresh goes, for a progress bar; the admin API ignores it.
pub trait Progress: Send {
    /// `more` documents were found (a directory walked, a sitemap read, the stored ones listed).
    fn found(&mut self, more: usize);
    /// One document was read (or failed): `source` names it.
    fn read(&mut self, source: &str);
}

/// No progress to show.
#[derive(Debug, Clone, Copy, Default)]
pub struct Quiet;

impl Progress for Quiet {
    fn found(&mut self, _: usize) {}
    fn read(&mut self, _: &str) {}
}

/// Why an add or a refresh did nothing at all.
#[derive(Debug, thiserror::Error)]
pub enum KnowledgeError {
    #[error("no site with id `{0}`")]
    NoSuchSite(String),
    /// The site would hold more than its caps: nothing was stored.
    #[error("{0}")]
    OverCaps(CapsExceeded),
    /// With [`OnFailure::StoreNothing`]: these documents failed, so nothing was stored.
    #[error("{}", .0.join("; "))]
    Refused(Vec<String>),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What a site would hold, past its caps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CapsExceeded {
    pub site_id: String,
    pub documents: u64,
    pub passages: u64,
    pub max_documents: u64,
    pub max_passages: u64,
}

impl std::fmt::Display for CapsExceeded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "site {} would hold {} documents / {} passages; the cap is {} documents / {} \
             passages per site ([knowledge] max_documents_per_site, max_passages_per_site); \
             nothing was changed",
            self.site_id, self.documents, self.passages, self.max_documents, self.max_passages
        )
    }
}

/// A document read and parsed, ready to store.
#[derive(Debug)]
struct Ready {
    document: NewDocument,
}

/// One thing to read: where from, and under which source it is stored.
#[derive(Debug)]
enum Item {
    File(PathBuf),
    Page(Url),
    Upload { name: String, content_type: Option<String>, bytes: Vec<u8> },
}

/// What the site holds, by source, and in total: for the caps and for unchanged documents.
#[derive(Debug)]
struct Holding {
    by_source: HashMap<String, KnowledgeDocument>,
    documents: u64,
    passages: u64,
}

impl Holding {
    async fn of(store: &dyn Store, site_id: &str) -> Result<Self, StoreError> {
        let documents = store.knowledge_documents(site_id).await?;
        let passages = documents.iter().map(|d| d.passages).sum();
        Ok(Self {
            documents: documents.len() as u64,
            passages,
            by_source: documents.into_iter().map(|d| (d.source.clone(), d)).collect(),
        })
    }

    /// The stored document of this source when it has this very content.
    fn same(&self, source: &str, hash: &str) -> Option<&KnowledgeDocument> {
        self.by_source.get(source).filter(|d| d.content_hash == hash)
    }

    /// Counts `document` in, as its put would.
    fn take(&mut self, document: &NewDocument) {
        let passages = document.passages.len() as u64;
        match self.by_source.get(&document.source) {
            Some(old) => {
                self.passages = self.passages.saturating_sub(old.passages) + passages;
            }
            None => {
                self.documents += 1;
                self.passages += passages;
            }
        }
    }

    fn exceeded(&self, site_id: &str, config: &KnowledgeConfig) -> Option<CapsExceeded> {
        let caps = config.caps();
        (self.documents > caps.documents || self.passages > caps.passages).then(|| CapsExceeded {
            site_id: site_id.to_owned(),
            documents: self.documents,
            passages: self.passages,
            max_documents: caps.documents,
            max_passages: caps.passages,
        })
    }
}

/// Adds `sources` to the site's knowledge (see the module's documentation).
pub async fn add(
    store: &dyn Store,
    config: &KnowledgeConfig,
    embedder: Option<&Embedder>,
    site_id: &str,
    sources: Vec<Source>,
    on_failure: OnFailure,
    progress: &mut dyn Progress,
) -> Result<Report, KnowledgeError> {
    let site = site(store, site_id).await?;
    let mut report = Report::default();
    let mut fetcher = None;
    let mut items = Vec::new();
    for source in sources {
        match source {
            Source::Path(path) => {
                let found = tokio::task::spawn_blocking(move || walk(&path, MAX_WALK_FILES))
                    .await
                    .map_err(|e| StoreError::Corrupt(format!("walking files: {e}")))?;
                match found {
                    Ok((files, notes)) => {
                        progress.found(files.len());
                        report.notes.extend(notes);
                        items.extend(files.into_iter().map(Item::File));
                    }
                    Err((path, error)) => {
                        progress.found(1);
                        progress.read(&path);
                        report.failed(path, error);
                    }
                }
            }
            Source::Url(url) if is_sitemap(&url) => {
                let fetcher = fetcher_for(&mut fetcher, &site, config)?;
                match fetcher.sitemap(&url).await {
                    Ok(pages) => {
                        progress.found(pages.len());
                        items.extend(pages.into_iter().map(Item::Page));
                    }
                    Err(error) => {
                        progress.found(1);
                        progress.read(url.as_str());
                        report.failed(url.as_str(), error.to_string());
                    }
                }
            }
            Source::Url(url) => {
                progress.found(1);
                items.push(Item::Page(url));
            }
            Source::Upload { name, content_type, bytes } => {
                progress.found(1);
                items.push(Item::Upload { name, content_type, bytes });
            }
        }
    }
    let mut holding = Holding::of(store, site_id).await?;
    let mut ready = Vec::new();
    let mut seen = HashSet::new();
    for item in items {
        let read = read_item(item, config, &site, &mut fetcher).await;
        match read {
            Err((source, error)) => {
                progress.read(&source);
                report.failed(source, error);
            }
            Ok(read) => {
                progress.read(&read.source);
                // A page listed twice, or reached by two URLs that redirect to one.
                if !seen.insert(read.source.clone()) {
                    continue;
                }
                match prepare(read, &holding, config, site_id) {
                    Prepared::Unchanged(document) => report.documents.push(DocumentReport {
                        source: document.source.clone(),
                        status: Status::Unchanged,
                        document: Some(document),
                        error: None,
                    }),
                    Prepared::Failed(source, error) => report.failed(source, error),
                    Prepared::Ready(document) => {
                        holding.take(&document);
                        if let Some(exceeded) = holding.exceeded(site_id, config) {
                            return Err(KnowledgeError::OverCaps(exceeded));
                        }
                        ready.push(Ready { document });
                    }
                }
            }
        }
    }
    if on_failure == OnFailure::StoreNothing && report.counts().failed > 0 {
        return Err(KnowledgeError::Refused(report.failures().map(str::to_owned).collect()));
    }
    store_ready(store, config, ready, &mut report).await?;
    embed(store, embedder, site_id, &mut report).await?;
    Ok(report)
}

/// Embeds the site's passages that have no vector by the configured model yet (the ones just
/// stored, and any an earlier failure or a model change left without one), noting how it went.
/// A failing embedding model fails no document: the passages are stored and retrieved by BM25
/// until an add or a refresh embeds them.
async fn embed(
    store: &dyn Store,
    embedder: Option<&Embedder>,
    site_id: &str,
    report: &mut Report,
) -> Result<(), KnowledgeError> {
    let Some(embedder) = embedder else { return Ok(()) };
    let result = embed_missing(store, embedder, site_id, &mut report.embedded).await;
    if report.embedded > 0 {
        report.notes.push(format!("{} passages embedded by {}", report.embedded, embedder.key()));
    }
    match result {
        Ok(()) => {}
        Err(EmbedError::Store(error)) => return Err(error.into()),
        Err(error) => report.notes.push(format!(
            "{error}: passages without an embedding are retrieved by BM25 alone until \
             `confab knowledge refresh {site_id}` (or the next add) embeds them"
        )),
    }
    Ok(())
}

/// Reads every stored document of the site again from its source (see the module's
/// documentation: a source that is gone is reported and its document kept).
pub async fn refresh(
    store: &dyn Store,
    config: &KnowledgeConfig,
    embedder: Option<&Embedder>,
    site_id: &str,
    progress: &mut dyn Progress,
) -> Result<Report, KnowledgeError> {
    let site = site(store, site_id).await?;
    let mut holding = Holding::of(store, site_id).await?;
    let mut stored: Vec<KnowledgeDocument> = holding.by_source.values().cloned().collect();
    stored.sort_by(|a, b| a.source.cmp(&b.source));
    progress.found(stored.len());
    let mut report = Report::default();
    let mut fetcher = None;
    let mut ready = Vec::new();
    for document in stored {
        let source = document.source.clone();
        let item = if source.starts_with('/') {
            Item::File(PathBuf::from(&source))
        } else if let Some(url) = Url::parse(&source).ok().filter(|u| u.has_host()) {
            Item::Page(url)
        } else {
            progress.read(&source);
            report.documents.push(DocumentReport {
                source,
                status: Status::Skipped,
                document: Some(document),
                error: None,
            });
            continue;
        };
        let read = match read_item(item, config, &site, &mut fetcher).await {
            // A page that redirects elsewhere now stays the document it was.
            Ok(read) => Bytes { source: source.clone(), ..read },
            Err((_, error)) => {
                progress.read(&source);
                report.failed(
                    source,
                    format!(
                        "{error} (its stored document is kept; remove it with `confab knowledge \
                         remove {site_id} {}`)",
                        document.id
                    ),
                );
                continue;
            }
        };
        progress.read(&source);
        match prepare(read, &holding, config, site_id) {
            Prepared::Unchanged(document) => report.documents.push(DocumentReport {
                source,
                status: Status::Unchanged,
                document: Some(document),
                error: None,
            }),
            Prepared::Failed(source, error) => {
                report.failed(source, format!("{error} (its stored document is kept)"))
            }
            Prepared::Ready(new) => {
                holding.take(&new);
                if let Some(exceeded) = holding.exceeded(site_id, config) {
                    return Err(KnowledgeError::OverCaps(exceeded));
                }
                ready.push(Ready { document: new });
            }
        }
    }
    store_ready(store, config, ready, &mut report).await?;
    embed(store, embedder, site_id, &mut report).await?;
    Ok(report)
}

/// Removes documents of the site by id; returns the ids it did not hold.
pub async fn remove(
    store: &dyn Store,
    site_id: &str,
    ids: &[i64],
) -> Result<Vec<i64>, KnowledgeError> {
    site(store, site_id).await?;
    let mut missing = Vec::new();
    for &id in ids {
        if !store.remove_document(site_id, id).await? {
            missing.push(id);
        }
    }
    Ok(missing)
}

async fn site(store: &dyn Store, site_id: &str) -> Result<Site, KnowledgeError> {
    store.site(site_id).await?.ok_or_else(|| KnowledgeError::NoSuchSite(site_id.to_owned()))
}

fn fetcher_for<'a>(
    fetcher: &'a mut Option<Fetcher>,
    site: &Site,
    config: &KnowledgeConfig,
) -> Result<&'a mut Fetcher, FetchError> {
    if fetcher.is_none() {
        *fetcher = Some(Fetcher::new(&site.settings.origins, config.fetch_limits())?);
    }
    // Just set when it was not.
    fetcher
        .as_mut()
        .ok_or_else(|| FetchError::Network { url: String::new(), reason: "no fetcher".into() })
}

impl From<FetchError> for KnowledgeError {
    /// Only [`Fetcher::new`]'s errors get here: a site's origins that are not URLs.
    fn from(error: FetchError) -> Self {
        KnowledgeError::Store(StoreError::Corrupt(format!("the site's origins: {error}")))
    }
}

/// A document's bytes, as read.
#[derive(Debug)]
struct Bytes {
    source: String,
    content_type: Option<String>,
    bytes: Vec<u8>,
}

/// Reads one item; an error names it.
async fn read_item(
    item: Item,
    config: &KnowledgeConfig,
    site: &Site,
    fetcher: &mut Option<Fetcher>,
) -> Result<Bytes, (String, String)> {
    match item {
        Item::File(path) => {
            let max = config.max_document_bytes;
            let shown = path.display().to_string();
            tokio::task::spawn_blocking(move || read_file(&path, max))
                .await
                .map_err(|e| (shown.clone(), format!("{shown}: {e}")))?
        }
        Item::Page(url) => {
            let fetcher =
                fetcher_for(fetcher, site, config).map_err(|e| (url.to_string(), e.to_string()))?;
            let page = fetcher.page(&url).await.map_err(|e| (url.to_string(), e.to_string()))?;
            Ok(Bytes {
                source: page.url.to_string(),
                content_type: page.content_type,
                bytes: page.body.to_vec(),
            })
        }
        Item::Upload { name, content_type, bytes } => {
            Ok(Bytes { source: name, content_type, bytes })
        }
    }
}

/// A file's bytes, at most `max + 1` of them (a file larger than `max` by its metadata is not
/// read at all), under its canonical path.
fn read_file(path: &Path, max: u64) -> Result<Bytes, (String, String)> {
    let shown = path.display().to_string();
    let failed = |e: std::io::Error| (shown.clone(), format!("{shown}: {e}"));
    let canonical = path.canonicalize().map_err(failed)?;
    let source = canonical.display().to_string();
    let file = std::fs::File::open(&canonical).map_err(failed)?;
    let size = file.metadata().map_err(failed)?.len();
    if size > max {
        let error = confab_knowledge::IngestError::TooLarge {
            name: source.clone(),
            size: usize::try_from(size).unwrap_or(usize::MAX),
            limit: usize::try_from(max).unwrap_or(usize::MAX),
        };
        return Err((source, format!("{error} ([knowledge] max_document_bytes)")));
    }
    // The file may grow between the two: never read more than the limit and one byte.
    let mut bytes = Vec::new();
    file.take(max + 1).read_to_end(&mut bytes).map_err(failed)?;
    Ok(Bytes { source, content_type: None, bytes })
}

#[derive(Debug)]
enum Prepared {
    Unchanged(KnowledgeDocument),
    Ready(NewDocument),
    Failed(String, String),
}

/// Hashes a document's bytes and, unless the site holds that content already, parses it.
fn prepare(read: Bytes, holding: &Holding, config: &KnowledgeConfig, site_id: &str) -> Prepared {
    let content_hash = hex::encode(Sha256::digest(&read.bytes));
    if let Some(same) = holding.same(&read.source, &content_hash) {
        return Prepared::Unchanged(same.clone());
    }
    let limits = config.ingest_limits();
    match confab_knowledge::ingest(&read.source, read.content_type.as_deref(), &read.bytes, &limits)
    {
        Ok(ingested) => Prepared::Ready(NewDocument {
            site_id: site_id.to_owned(),
            source: read.source,
            title: ingested.title,
            content_hash,
            at_ms: crate::unix_now_ms(),
            passages: ingested
                .passages
                .into_iter()
                .map(|p| NewPassage { heading_path: p.heading_path, text: p.text })
                .collect(),
        }),
        Err(error) => Prepared::Failed(read.source, error.to_string()),
    }
}

async fn store_ready(
    store: &dyn Store,
    config: &KnowledgeConfig,
    ready: Vec<Ready>,
    report: &mut Report,
) -> Result<(), KnowledgeError> {
    for Ready { document } in ready {
        let (status, stored) = match store.put_document(&document, config.caps()).await? {
            PutOutcome::Added(stored) => (Status::Added, stored),
            PutOutcome::Replaced(stored) => (Status::Replaced, stored),
            PutOutcome::Unchanged(stored) => (Status::Unchanged, stored),
            // Another add got there first (the caps were checked before storing).
            PutOutcome::OverCaps { documents, passages } => {
                let caps = config.caps();
                let exceeded = CapsExceeded {
                    site_id: document.site_id.clone(),
                    documents,
                    passages,
                    max_documents: caps.documents,
                    max_passages: caps.passages,
                };
                let error = format!("{}: {exceeded}", document.source);
                report.failed(document.source, error);
                continue;
            }
        };
        report.documents.push(DocumentReport {
            source: document.source,
            status,
            document: Some(stored),
            error: None,
        });
    }
    Ok(())
}

/// The files to read under `path` (itself, when it is a file) in name order, and notes on what
/// was skipped; an error (with the path it names) for a path that cannot be read or a
/// directory of more than `max` files.
fn walk(path: &Path, max: u64) -> Result<(Vec<PathBuf>, Vec<String>), (String, String)> {
    let shown = path.display().to_string();
    let metadata = std::fs::metadata(path).map_err(|e| (shown.clone(), format!("{shown}: {e}")))?;
    if !metadata.is_dir() {
        // A file named on its own is read whatever its extension (its content may say).
        return Ok((vec![path.to_owned()], Vec::new()));
    }
    let path_root = shown;
    let mut files = Vec::new();
    let mut notes = Vec::new();
    let mut directories = vec![path.to_owned()];
    while let Some(directory) = directories.pop() {
        let shown = directory.display().to_string();
        let failed = |e: std::io::Error| (shown.clone(), format!("{shown}: {e}"));
        let mut entries = std::fs::read_dir(&directory)
            .map_err(failed)?
            .collect::<Result<Vec<_>, _>>()
            .map_err(failed)?;
        entries.sort_by_key(std::fs::DirEntry::file_name);
        let mut subdirectories = Vec::new();
        for entry in entries {
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') {
                notes.push(format!("{}: skipped (hidden)", path.display()));
                continue;
            }
            let kind = entry.file_type().map_err(failed)?;
            if kind.is_dir() {
                subdirectories.push(path);
                continue;
            }
            if kind.is_symlink() && path.is_dir() {
                notes.push(format!("{}: skipped (a link to a directory)", path.display()));
                continue;
            }
            let extension = path.extension().map(|e| e.to_string_lossy().to_ascii_lowercase());
            if !extension.as_deref().is_some_and(|e| EXTENSIONS.contains(&e)) {
                notes.push(format!(
                    "{}: skipped (not Markdown, HTML, text or PDF by its extension)",
                    path.display()
                ));
                continue;
            }
            if files.len() as u64 == max {
                let root = path_root.clone();
                return Err((
                    root.clone(),
                    format!("{root}: more than {max} files to read; add its folders one by one"),
                ));
            }
            files.push(path);
        }
        // Depth-first in name order.
        directories.extend(subdirectories.into_iter().rev());
    }
    Ok((files, notes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sitemaps_are_told_from_pages_by_their_url() {
        for (url, sitemap) in [
            ("https://shop.example/sitemap.xml", true),
            ("https://shop.example/sitemap_index.xml", true),
            ("https://shop.example/post-sitemap.xml?x=1", true),
            ("https://shop.example/SITEMAP", true),
            ("https://shop.example/feeds/all.xml", true),
            ("https://shop.example/faq", false),
            ("https://shop.example/sitemap/faq.html", false),
            ("https://shop.example/", false),
        ] {
            assert_eq!(is_sitemap(&Url::parse(url).unwrap()), sitemap, "{url}");
        }
    }

    #[test]
    fn an_operators_argument_is_a_url_only_with_an_http_scheme() {
        assert_eq!(
            Source::parse("https://shop.example/a").unwrap(),
            Source::Url(Url::parse("https://shop.example/a").unwrap())
        );
        assert_eq!(Source::parse("docs/a.md").unwrap(), Source::Path("docs/a.md".into()));
        assert_eq!(
            Source::parse("HTTP://x").unwrap(),
            Source::Url(Url::parse("http://x").unwrap())
        );
        assert!(Source::parse("https://").is_err());
    }

    #[test]
    fn a_walk_reads_supported_files_in_order_and_notes_what_it_skips() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("b/.git")).unwrap();
        for file in ["a.md", "b/c.html", "b/d.txt", "b/e.png", ".hidden.md", "b/.git/x.md"] {
            std::fs::write(root.join(file), "x").unwrap();
        }
        let (files, notes) = walk(root, 10).unwrap();
        let names: Vec<_> =
            files.iter().map(|f| f.strip_prefix(root).unwrap().display().to_string()).collect();
        assert_eq!(names, ["a.md", "b/c.html", "b/d.txt"]);
        assert_eq!(notes.len(), 3, "{notes:?}");
        assert!(notes.iter().any(|n| {
            n.ends_with("e.png: skipped (not Markdown, HTML, text or PDF by its extension)")
        }));
        let (_, error) = walk(root, 2).unwrap_err();
        assert!(error.contains("more than 2 files"), "{error}");
    }
}
