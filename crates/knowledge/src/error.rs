//! The one error of ingestion: why a document handed in could not become passages. Every
//! message names the document (its file name or URL as the caller gave it), because an operator
//! who adds a folder of a thousand pages must see which one failed and why.

use crate::document::Format;

/// Why a document could not be ingested. `Display` names the document first.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// The document is over [`Limits::max_document_bytes`](crate::Limits).
    #[error("{name}: {size} bytes is more than the limit of {limit} bytes")]
    TooLarge { name: String, size: usize, limit: usize },
    /// A text format (Markdown, HTML, text) whose bytes are not text: NUL bytes, or too much
    /// that is not UTF-8.
    #[error("{name}: binary content, not {format} text ({reason})")]
    Binary { name: String, format: Format, reason: String },
    /// Neither the content type, the name nor the first bytes say which format it is, or they
    /// name one this crate does not read.
    #[error("{name}: unsupported format ({reason}); Markdown, HTML, plain text and PDF are")]
    Unsupported { name: String, reason: String },
    /// The parser gave up, or the document is over a structural limit (nesting, elements).
    #[error("{name}: malformed {format}: {reason}")]
    Malformed { name: String, format: Format, reason: String },
    /// Splitting made more passages than [`Limits::max_passages_per_document`](crate::Limits).
    /// Splitting stops at the first section that crosses the limit.
    #[error("{name}: more than the limit of {limit} passages per document")]
    TooManyPassages { name: String, limit: usize },
    /// Nothing left to index once navigation, scripts and markup are gone.
    #[error("{name}: no text found")]
    Empty { name: String },
}
