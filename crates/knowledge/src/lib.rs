//! Confab's site knowledge: the library behind answers grounded in a site's own documents.
//!
//! Two halves:
//! - **Ingestion**, pure functions: [`Format::detect`] a document's format from its content type,
//!   name or first bytes; [`parse`] it (Markdown, HTML main content, plain text, PDF) into a
//!   [`Document`] of sections under their heading paths; split it into [`Passage`]s with
//!   [`passages`]. [`ingest`] does all three.
//! - **Retrieval**: [`SiteIndex`], one site's passages in an in-RAM BM25 index (tantivy), built
//!   by the relay from the store at start and updated as documents change, searched with a
//!   conversation's visitor messages ([`SiteIndex::search_turns`]) for the ids of the best
//!   passages. `scripts/eval-knowledge` measures how well, on the set in `tests/knowledge`.
//!   Optionally hybrid: passage embeddings in [`Vectors`] (made by the caller's embedding
//!   model), searched by cosine and fused with BM25 by reciprocal rank
//!   ([`SiteIndex::search_hybrid`]).
//!
//! **Architecture Invariant:** no I/O beyond what callers hand in: no network, no filesystem,
//! no store, no threads of its own outside an index update. Fetching URLs, reading files,
//! storing passages and deciding what goes into a prompt belong to the callers.
//!
//! **Architecture Invariant:** hostile input ends in an [`IngestError`] that names the document,
//! never a panic, a stack overflow or unbounded work: size is checked before parsing
//! ([`Limits::max_document_bytes`], 5 MiB), HTML is read by a tokenizer with limits on nesting
//! and element count (no tree, no recursion), PDF decompression is bounded and its parser's
//! panics are caught, and a document may make at most [`Limits::max_passages_per_document`]
//! passages of at most [`Limits::max_passage_chars`] characters.
//!
//! What this leaves to callers: a 1 GB file is refused here only once it is in memory, so a
//! caller reads at most `max_document_bytes + 1` bytes of a file or a response (and passes
//! what it read, so the error reports the size as over the limit); and a site's total size
//! (documents, passages) is a store policy, not a per-document limit.

mod document;
mod error;
mod html;
mod index;
mod split;
mod vectors;
mod vocabulary;

pub use document::{Document, Format, Limits, Section, parse};
pub use error::IngestError;
pub use index::{CONTEXT_WEIGHT, Dense, Hit, IndexError, IndexedPassage, SiteIndex};
pub use split::{Passage, passages};
pub use vectors::{
    DEFAULT_MIN_SIMILARITY, MAX_DIMENSIONS, RRF_K, VectorError, Vectors, embedding_passage_text,
    fuse,
};

/// A document ingested: its title and its passages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ingested {
    pub title: String,
    pub passages: Vec<Passage>,
}

/// Detect the format, parse and split: everything from a document's bytes to its passages.
pub fn ingest(
    name: &str,
    content_type: Option<&str>,
    bytes: &[u8],
    limits: &Limits,
) -> Result<Ingested, IngestError> {
    // Detection reads at most the first 512 bytes; `parse` refuses an oversized document
    // before reading the rest.
    let format = Format::detect(name, content_type, bytes)?;
    let document = parse(name, bytes, format, limits)?;
    let passages = passages(&document, limits)?;
    if passages.is_empty() {
        return Err(IngestError::Empty { name: name.to_owned() });
    }
    Ok(Ingested { title: document.title, passages })
}
