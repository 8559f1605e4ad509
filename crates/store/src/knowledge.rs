//! A site's knowledge (issue 15): the documents an operator ingested for it (files and pages of
//! its own origins) and the passages they were split into, which every relay indexes for
//! retrieval. [`Knowledge`] is the seam every engine implements.
//!
//! A document is known by its site and its `source` (a URL, or a file's name as given): adding
//! it again replaces it, with all its passages, in one transaction, so a relay never sees half
//! of a document; adding it with the same `content_hash` changes nothing (a refresh that found
//! nothing new). Every change bumps the site's knowledge version, which relays poll to rebuild
//! the site's index.
//!
//! A passage may also have an embedding (for hybrid retrieval), by one model at a time: it goes
//! with its passage, so replacing or removing a document takes its embeddings with it.

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

/// A passage's embedding by one model: what hybrid retrieval compares a question's with.
#[derive(Debug, Clone, PartialEq)]
pub struct PassageEmbedding {
    pub passage_id: i64,
    pub vector: Vec<f32>,
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
    /// Stores embeddings of the site's passages by `model` (an opaque name such as
    /// `openai:text-embedding-3-small@512`), replacing whatever embedding each passage had (by
    /// any model), in one transaction, and bumps the site's version when any was stored.
    /// Embeddings of passages that no longer exist, or are another site's, are skipped. Returns
    /// how many were stored. Refused ([`StoreError::Invalid`]), storing nothing, when a vector
    /// is empty, holds a value that is not finite or is not as long as the others, or when a
    /// passage is given twice (see [`dimensions_of`]).
    async fn put_embeddings(
        &self,
        site_id: &str,
        model: &str,
        embeddings: &[PassageEmbedding],
    ) -> Result<u64, StoreError>;
    /// Every embedding by `model` of the site's passages, by passage id.
    async fn site_embeddings(
        &self,
        site_id: &str,
        model: &str,
    ) -> Result<Vec<PassageEmbedding>, StoreError>;
    /// At most `limit` of the site's passages that have no embedding by `model`, by document
    /// and place.
    async fn passages_without_embedding(
        &self,
        site_id: &str,
        model: &str,
        limit: usize,
    ) -> Result<Vec<Passage>, StoreError>;
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

/// The length every vector of one put shares (0 when there are none), or why the put is refused:
/// a vector that is empty, not as long as the first, or holding a value that is not finite (one
/// that could never be read back, see [`vector_from_column`]), or a passage given twice (which
/// of its vectors would be kept would depend on the engine).
pub fn dimensions_of(embeddings: &[PassageEmbedding]) -> Result<usize, StoreError> {
    let Some(first) = embeddings.first() else { return Ok(0) };
    let dimensions = first.vector.len();
    let mut seen = std::collections::HashSet::with_capacity(embeddings.len());
    for embedding in embeddings {
        let id = embedding.passage_id;
        let refused = if embedding.vector.is_empty() {
            format!("the embedding of passage {id} is empty")
        } else if embedding.vector.len() != dimensions {
            let len = embedding.vector.len();
            format!("the embedding of passage {id} has {len} values, the first has {dimensions}")
        } else if !embedding.vector.iter().all(|v| v.is_finite()) {
            format!("the embedding of passage {id} holds a value that is not finite")
        } else if !seen.insert(id) {
            format!("passage {id} is given twice")
        } else {
            continue;
        };
        return Err(StoreError::Invalid(refused));
    }
    Ok(dimensions)
}

/// How an embedding is kept in one column: its values as little-endian `f32`s, four bytes each,
/// so that every engine and every machine reads back the same bits.
pub fn vector_to_column(vector: &[f32]) -> Vec<u8> {
    vector.iter().flat_map(|value| value.to_le_bytes()).collect()
}

/// What [`vector_to_column`] stored, with the `dimensions` stored beside it: bytes of another
/// length (a truncated write, a column changed by hand) or a value that is not finite (which no
/// put stores) are corrupt, rather than a vector that would make every similarity meaningless.
pub fn vector_from_column(bytes: &[u8], dimensions: i64) -> Result<Vec<f32>, StoreError> {
    let corrupt = |problem: String| StoreError::Corrupt(format!("knowledge embedding: {problem}"));
    let expected = usize::try_from(dimensions).ok().and_then(|d| d.checked_mul(4));
    if expected != Some(bytes.len()) {
        let len = bytes.len();
        return Err(corrupt(format!("{len} bytes for {dimensions} dimensions (4 bytes each)")));
    }
    let vector: Vec<f32> = bytes
        .chunks_exact(4)
        .map(|chunk| f32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]))
        .collect();
    match vector.iter().position(|v| !v.is_finite()) {
        Some(at) => Err(corrupt(format!("value {at} is {}, not a finite number", vector[at]))),
        None => Ok(vector),
    }
}

/// Reading knowledge rows, and writing embeddings, the same for every sqlx engine (the columns
/// are named and typed alike in each engine's migration: integers as 64-bit, text as text,
/// bytes as bytes).
#[cfg(feature = "sqlx")]
pub mod rows {
    use sqlx::{ColumnIndex, Database, Decode, Encode, QueryBuilder, Row, Type};

    use super::{
        KnowledgeDocument, Passage, PassageEmbedding, heading_path_from_column, vector_from_column,
        vector_to_column,
    };
    use crate::StoreError;

    /// One statement that stores `batch` (checked by [`super::dimensions_of`], of `dimensions`
    /// values each) as the site's embeddings by `model`: its rows go in through a `given` table
    /// of (passage id, vector) joined with the site's passages, so that an id of a passage gone
    /// or of another site stores nothing, and replace the embedding a passage had (whatever its
    /// model). Its rows affected are the embeddings stored.
    pub fn insert_embeddings<DB>(
        site_id: &str,
        model: &str,
        dimensions: i64,
        batch: &[PassageEmbedding],
    ) -> QueryBuilder<DB>
    where
        DB: Database,
        DB::Arguments: Default,
        for<'q> i64: Encode<'q, DB> + Type<DB>,
        for<'q> String: Encode<'q, DB> + Type<DB>,
        for<'q> Vec<u8>: Encode<'q, DB> + Type<DB>,
    {
        let mut insert = QueryBuilder::new("WITH given (passage_id, vector) AS (");
        insert.push_values(batch, |mut row, embedding| {
            row.push_bind(embedding.passage_id).push_bind(vector_to_column(&embedding.vector));
        });
        insert
            .push(
                ") INSERT INTO knowledge_embeddings (passage_id, site_id, model, dimensions, \
                 vector) SELECT p.id, p.site_id, ",
            )
            .push_bind(model.to_owned())
            .push(", ")
            .push_bind(dimensions)
            .push(
                ", given.vector FROM given JOIN knowledge_passages p ON p.id = given.passage_id \
                 WHERE p.site_id = ",
            )
            // (A WHERE before ON CONFLICT also keeps SQLite from reading it as the join's ON.)
            .push_bind(site_id.to_owned())
            .push(
                " ON CONFLICT (passage_id) DO UPDATE SET model = excluded.model, \
                 dimensions = excluded.dimensions, vector = excluded.vector",
            );
        insert
    }

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

    /// A row of `knowledge_embeddings` (its `passage_id`, `dimensions` and `vector`).
    pub fn embedding<R: Row>(row: &R) -> Result<PassageEmbedding, StoreError>
    where
        &'static str: ColumnIndex<R>,
        for<'r> i64: Decode<'r, R::Database> + Type<R::Database>,
        for<'r> Vec<u8>: Decode<'r, R::Database> + Type<R::Database>,
    {
        let bytes: Vec<u8> = row.try_get("vector")?;
        Ok(PassageEmbedding {
            passage_id: row.try_get("passage_id")?,
            vector: vector_from_column(&bytes, row.try_get("dimensions")?)?,
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
    fn a_vector_reads_back_bit_for_bit() {
        let vector = vec![0.25, -1.5, f32::MIN_POSITIVE, -1e-42, 0.0, -0.0, f32::MAX, 1e-45];
        let bytes = vector_to_column(&vector);
        assert_eq!(bytes.len(), 4 * vector.len());
        assert_eq!(bytes[..4], 0.25f32.to_le_bytes(), "little-endian, in order");
        let read = vector_from_column(&bytes, 8).unwrap();
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&read), bits(&vector));
    }

    #[test]
    fn a_vector_of_the_wrong_length_or_not_finite_is_corrupt() {
        let bytes = vector_to_column(&[1.0, 2.0, 3.0]);
        for (bytes, dimensions) in
            [(&bytes[..], 2), (&bytes[..], 4), (&bytes[..11], 3), (&bytes[..], -3), (&[][..], 1)]
        {
            let error = vector_from_column(bytes, dimensions).unwrap_err();
            assert!(
                matches!(&error, StoreError::Corrupt(m) if m.contains("dimensions")),
                "{error}"
            );
        }
        let nan = vector_to_column(&[1.0, f32::NAN]);
        let error = vector_from_column(&nan, 2).unwrap_err();
        assert!(
            matches!(&error, StoreError::Corrupt(m) if m.contains("value 1 is NaN")),
            "{error}"
        );
        assert!(vector_from_column(&vector_to_column(&[f32::INFINITY]), 1).is_err());
    }

    #[test]
    fn a_put_of_vectors_that_do_not_fit_together_is_refused() {
        let e = |passage_id, vector: &[f32]| PassageEmbedding { passage_id, vector: vector.into() };
        assert_eq!(dimensions_of(&[]).unwrap(), 0);
        assert_eq!(dimensions_of(&[e(1, &[1.0, 2.0]), e(2, &[3.0, 4.0])]).unwrap(), 2);
        for (put, problem) in [
            (vec![e(1, &[])], "passage 1 is empty"),
            (vec![e(1, &[1.0]), e(2, &[1.0, 2.0])], "passage 2 has 2 values, the first has 1"),
            (vec![e(1, &[1.0]), e(2, &[f32::NEG_INFINITY])], "not finite"),
            (vec![e(1, &[1.0]), e(1, &[2.0])], "passage 1 is given twice"),
        ] {
            let error = dimensions_of(&put).unwrap_err();
            assert!(matches!(&error, StoreError::Invalid(m) if m.contains(problem)), "{error}");
        }
    }

    #[test]
    fn a_heading_path_reads_back_as_it_was_stored() {
        for path in [vec![], vec!["Returns".to_owned()], vec!["A".into(), "B c".into()]] {
            assert_eq!(heading_path_from_column(&heading_path_to_column(&path)), path);
        }
    }
}
