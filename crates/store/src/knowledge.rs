//! A site's knowledge (issue 15): the documents an operator ingested for it (files and pages of
//! its own origins) and the passages they were split into, which every relay indexes for
//! retrieval. [`Knowledge`] is the seam every engine implements.
//!
//! A document is known by its site and its `source` (a URL, or a file's name as given): adding
//! it again replaces it, with all its passages, in one transaction, so a relay never sees half
//! of a document; adding it with the same `content_hash` changes nothing (a refresh that found
//! nothing new). Every change bumps the site's knowledge version, which relays poll to rebuild
//! the site's index.

use async_trait::async_trait;

use crate::StoreError;

/// A passage as ingestion makes it: where in its document it sits, and its text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewPassage {
    /// The headings above it, outermost first (may be empty).
    pub heading_path: Vec<String>,
    pub text: String,
}

/// A document to add (or to replace, for the same site and source).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewDocument {
    pub site_id: String,
    /// Where it came from: a URL, or a file's name as given to `knowledge add`.
    pub source: String,
    pub title: String,
    /// A hash of the bytes it was read from (hex): an unchanged document is not re-indexed.
    pub content_hash: String,
    pub at_ms: i64,
    pub passages: Vec<NewPassage>,
}

/// How much knowledge one site may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KnowledgeCaps {
    pub documents: u64,
    pub passages: u64,
}

/// A stored document, without its passages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KnowledgeDocument {
    pub id: i64,
    pub site_id: String,
    pub source: String,
    pub title: String,
    pub content_hash: String,
    pub passages: u64,
    /// The characters of its passages' text, summed.
    pub chars: u64,
    pub added_at_ms: i64,
    pub updated_at_ms: i64,
}

/// A stored passage, with what a citation needs of its document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Passage {
    pub id: i64,
    pub document_id: i64,
    pub site_id: String,
    /// Its place in its document, from 0.
    pub ordinal: u32,
    pub heading_path: Vec<String>,
    pub text: String,
    pub source: String,
    pub title: String,
}

/// What [`Knowledge::put_document`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PutOutcome {
    /// A new document.
    Added(KnowledgeDocument),
    /// The site's document of that source, replaced with its passages.
    Replaced(KnowledgeDocument),
    /// The same content was there already: nothing changed.
    Unchanged(KnowledgeDocument),
    /// Refused, nothing changed: the site would hold more than its caps. The counts are what it
    /// would have held.
    OverCaps { documents: u64, passages: u64 },
}

/// The version of one site's knowledge: it grows with every change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KnowledgeVersion {
    pub site_id: String,
    pub version: i64,
}

#[async_trait]
pub trait Knowledge: Send + Sync {
    /// Adds the document with its passages, or replaces the site's document of the same source
    /// (unless its `content_hash` is the same: then nothing changes), in one transaction, and
    /// bumps the site's version; refused, changing nothing, past `caps`.
    async fn put_document(
        &self,
        document: &NewDocument,
        caps: KnowledgeCaps,
    ) -> Result<PutOutcome, StoreError>;
    /// The site's documents, by source.
    async fn knowledge_documents(
        &self,
        site_id: &str,
    ) -> Result<Vec<KnowledgeDocument>, StoreError>;
    /// Removes a document of the site with its passages (and bumps the site's version); `false`
    /// when the site has no such document.
    async fn remove_document(&self, site_id: &str, id: i64) -> Result<bool, StoreError>;
    /// Every passage of the site, by document and place: what its index is built from.
    async fn site_passages(&self, site_id: &str) -> Result<Vec<Passage>, StoreError>;
    /// The passages of the site with these ids (those that still exist), in no set order.
    async fn passages(&self, site_id: &str, ids: &[i64]) -> Result<Vec<Passage>, StoreError>;
    /// The version of every site that has (or had) knowledge: relays poll it and rebuild the
    /// index of a site whose version changed.
    async fn knowledge_versions(&self) -> Result<Vec<KnowledgeVersion>, StoreError>;
}

impl KnowledgeCaps {
    /// What a site would hold after a put, from what it holds (`documents`, `passages`), the
    /// passages of the document it replaces (`None`: a new document) and the new document's
    /// passages: `Some((documents, passages))` when that is past the caps.
    pub fn exceeded_by(
        self,
        documents: u64,
        passages: u64,
        replaced: Option<u64>,
        added: u64,
    ) -> Option<(u64, u64)> {
        let documents = documents + u64::from(replaced.is_none());
        let passages = passages.saturating_sub(replaced.unwrap_or(0)).saturating_add(added);
        (documents > self.documents || passages > self.passages).then_some((documents, passages))
    }
}

/// The characters of a document's passages, as [`KnowledgeDocument::chars`] counts them.
pub fn chars_of(passages: &[NewPassage]) -> u64 {
    passages.iter().map(|p| p.text.chars().count() as u64).sum()
}

/// How a heading path is kept in one column: its headings joined by a separator no heading
/// contains (ingestion collapses whitespace, so a heading has no line feed).
pub fn heading_path_to_column(path: &[String]) -> String {
    path.join("\n")
}

/// What [`heading_path_to_column`] stored.
pub fn heading_path_from_column(column: &str) -> Vec<String> {
    if column.is_empty() { Vec::new() } else { column.split('\n').map(str::to_owned).collect() }
}

/// Reading knowledge rows, the same for every sqlx engine (the columns are named and typed alike
/// in each engine's migration: integers as 64-bit, text as text).
#[cfg(feature = "sqlx")]
pub mod rows {
    use sqlx::{ColumnIndex, Decode, Row, Type};

    use super::{KnowledgeDocument, Passage, heading_path_from_column};
    use crate::StoreError;

    /// A count column (never negative).
    pub fn count<R: Row>(row: &R, column: &'static str) -> Result<u64, StoreError>
    where
        &'static str: ColumnIndex<R>,
        for<'r> i64: Decode<'r, R::Database> + Type<R::Database>,
    {
        let value: i64 = row.try_get(column)?;
        u64::try_from(value).map_err(|_| StoreError::Corrupt(format!("knowledge: {column} < 0")))
    }

    /// A row of `knowledge_documents`.
    pub fn document<R: Row>(row: &R) -> Result<KnowledgeDocument, StoreError>
    where
        &'static str: ColumnIndex<R>,
        for<'r> i64: Decode<'r, R::Database> + Type<R::Database>,
        for<'r> String: Decode<'r, R::Database> + Type<R::Database>,
    {
        Ok(KnowledgeDocument {
            id: row.try_get("id")?,
            site_id: row.try_get("site_id")?,
            source: row.try_get("source")?,
            title: row.try_get("title")?,
            content_hash: row.try_get("content_hash")?,
            passages: count(row, "passages")?,
            chars: count(row, "chars")?,
            added_at_ms: row.try_get("added_at_ms")?,
            updated_at_ms: row.try_get("updated_at_ms")?,
        })
    }

    /// A row of `knowledge_passages` joined with its document's `source` and `title`.
    pub fn passage<R: Row>(row: &R) -> Result<Passage, StoreError>
    where
        &'static str: ColumnIndex<R>,
        for<'r> i64: Decode<'r, R::Database> + Type<R::Database>,
        for<'r> String: Decode<'r, R::Database> + Type<R::Database>,
    {
        let ordinal: i64 = row.try_get("ordinal")?;
        let heading_path: String = row.try_get("heading_path")?;
        Ok(Passage {
            id: row.try_get("id")?,
            document_id: row.try_get("document_id")?,
            site_id: row.try_get("site_id")?,
            ordinal: u32::try_from(ordinal)
                .map_err(|_| StoreError::Corrupt(format!("knowledge: ordinal {ordinal}")))?,
            heading_path: heading_path_from_column(&heading_path),
            text: row.try_get("text")?,
            source: row.try_get("source")?,
            title: row.try_get("title")?,
        })
    }

    /// A row of `knowledge_versions`.
    pub fn version<R: Row>(row: &R) -> Result<super::KnowledgeVersion, StoreError>
    where
        &'static str: ColumnIndex<R>,
        for<'r> i64: Decode<'r, R::Database> + Type<R::Database>,
        for<'r> String: Decode<'r, R::Database> + Type<R::Database>,
    {
        Ok(super::KnowledgeVersion {
            site_id: row.try_get("site_id")?,
            version: row.try_get("version")?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_count_a_replaced_document_once() {
        let caps = KnowledgeCaps { documents: 2, passages: 10 };
        assert_eq!(caps.exceeded_by(1, 6, None, 4), None);
        assert_eq!(caps.exceeded_by(1, 6, None, 5), Some((2, 11)));
        assert_eq!(caps.exceeded_by(2, 6, None, 1), Some((3, 7)));
        // Replacing a document of 3 passages with one of 7 stays within 10.
        assert_eq!(caps.exceeded_by(2, 6, Some(3), 7), None);
    }

    #[test]
    fn a_heading_path_reads_back_as_it_was_stored() {
        for path in [vec![], vec!["Returns".to_owned()], vec!["A".into(), "B c".into()]] {
            assert_eq!(heading_path_from_column(&heading_path_to_column(&path)), path);
        }
    }
}
