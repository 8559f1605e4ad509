//! `knowledge_documents`, `knowledge_passages`, `knowledge_embeddings` and `knowledge_versions`
//! (see `migrations/0005_knowledge.sql` and `0007_embeddings.sql`). Changes to one site's
//! knowledge are serialised by a transaction-level advisory lock on the site, so that two relays
//! ingesting at once both see the caps and one source is one document.

use sqlx::postgres::{PgPool, Postgres};
use sqlx::{QueryBuilder, Row, Transaction};

use confab_store::knowledge::{chars_of, dimensions_of, heading_path_to_column, rows};
use confab_store::{
    KnowledgeCaps, KnowledgeDocument, KnowledgeVersion, NewDocument, Passage, PassageEmbedding,
    PutOutcome, StoreError,
};

/// Rows per multi-row insert: five values at most each, well under PostgreSQL's 65,535 parameters.
const INSERT_BATCH: usize = 1_000;

fn int(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// `SELECT <every document column> FROM knowledge_documents <tail>` as one static string.
macro_rules! select_documents {
    ($tail:literal) => {
        concat!(
            "SELECT id, site_id, source, title, content_hash, passages, chars, added_at_ms, ",
            "updated_at_ms FROM knowledge_documents ",
            $tail
        )
    };
}

/// `SELECT <every passage column, with its document's source and title> <tail>`.
macro_rules! select_passages {
    ($tail:literal) => {
        concat!(
            "SELECT p.id, p.document_id, p.site_id, p.ordinal, p.heading_path, p.text, ",
            "d.source, d.title FROM knowledge_passages p ",
            "JOIN knowledge_documents d ON d.id = p.document_id ",
            $tail
        )
    };
}

/// Serialises the changes to one site's knowledge until the transaction ends.
async fn lock_site(tx: &mut Transaction<'_, Postgres>, site_id: &str) -> Result<(), StoreError> {
    sqlx::query("SELECT pg_advisory_xact_lock(hashtext('confab.knowledge:' || $1))")
        .bind(site_id)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

async fn document_in(
    tx: &mut Transaction<'_, Postgres>,
    id: i64,
) -> Result<KnowledgeDocument, StoreError> {
    let row = sqlx::query(select_documents!("WHERE id = $1")).bind(id).fetch_one(&mut **tx).await?;
    rows::document(&row)
}

/// Makes the site's knowledge version greater than every version given so far.
async fn bump(tx: &mut Transaction<'_, Postgres>, site_id: &str) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO knowledge_versions (site_id, version) \
         VALUES ($1, nextval('knowledge_version_seq')) \
         ON CONFLICT (site_id) DO UPDATE SET version = excluded.version",
    )
    .bind(site_id)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

pub async fn put_document(
    pool: &PgPool,
    document: &NewDocument,
    caps: KnowledgeCaps,
) -> Result<PutOutcome, StoreError> {
    let mut tx = pool.begin().await?;
    lock_site(&mut tx, &document.site_id).await?;
    let existing = sqlx::query(
        "SELECT id, content_hash, passages FROM knowledge_documents \
         WHERE site_id = $1 AND source = $2",
    )
    .bind(&document.site_id)
    .bind(&document.source)
    .fetch_optional(&mut *tx)
    .await?;
    let existing = match existing {
        Some(row) => {
            let id: i64 = row.try_get("id")?;
            let hash: String = row.try_get("content_hash")?;
            if hash == document.content_hash {
                let unchanged = document_in(&mut tx, id).await?;
                tx.commit().await?;
                return Ok(PutOutcome::Unchanged(unchanged));
            }
            Some((id, rows::count(&row, "passages")?))
        }
        None => None,
    };
    let held = sqlx::query(
        "SELECT COUNT(*) AS documents, COALESCE(SUM(passages), 0)::BIGINT AS passages \
         FROM knowledge_documents WHERE site_id = $1",
    )
    .bind(&document.site_id)
    .fetch_one(&mut *tx)
    .await?;
    let added = document.passages.len() as u64;
    let replaced = existing.map(|(_, passages)| passages);
    if let Some((documents, passages)) = caps.exceeded_by(
        rows::count(&held, "documents")?,
        rows::count(&held, "passages")?,
        replaced,
        added,
    ) {
        return Ok(PutOutcome::OverCaps { documents, passages });
    }

    let chars = int(chars_of(&document.passages));
    let id = match existing {
        Some((id, _)) => {
            sqlx::query("DELETE FROM knowledge_passages WHERE document_id = $1")
                .bind(id)
                .execute(&mut *tx)
                .await?;
            sqlx::query(
                "UPDATE knowledge_documents SET title = $1, content_hash = $2, passages = $3, \
                 chars = $4, updated_at_ms = $5 WHERE id = $6",
            )
            .bind(&document.title)
            .bind(&document.content_hash)
            .bind(int(added))
            .bind(chars)
            .bind(document.at_ms)
            .bind(id)
            .execute(&mut *tx)
            .await?;
            id
        }
        None => {
            sqlx::query_scalar(
                "INSERT INTO knowledge_documents (site_id, source, title, content_hash, \
                 passages, chars, added_at_ms, updated_at_ms) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
                 RETURNING id",
            )
            .bind(&document.site_id)
            .bind(&document.source)
            .bind(&document.title)
            .bind(&document.content_hash)
            .bind(int(added))
            .bind(chars)
            .bind(document.at_ms)
            .bind(document.at_ms)
            .fetch_one(&mut *tx)
            .await?
        }
    };
    let numbered: Vec<(usize, &confab_store::NewPassage)> =
        document.passages.iter().enumerate().collect();
    for batch in numbered.chunks(INSERT_BATCH) {
        let mut insert = QueryBuilder::<Postgres>::new(
            "INSERT INTO knowledge_passages (document_id, site_id, ordinal, heading_path, text) ",
        );
        insert.push_values(batch, |mut row, (ordinal, passage)| {
            row.push_bind(id)
                .push_bind(&document.site_id)
                .push_bind(i64::try_from(*ordinal).unwrap_or(i64::MAX))
                .push_bind(heading_path_to_column(&passage.heading_path))
                .push_bind(&passage.text);
        });
        insert.build().execute(&mut *tx).await?;
    }
    bump(&mut tx, &document.site_id).await?;
    let stored = document_in(&mut tx, id).await?;
    tx.commit().await?;
    Ok(if existing.is_some() { PutOutcome::Replaced(stored) } else { PutOutcome::Added(stored) })
}

pub async fn documents(pool: &PgPool, site_id: &str) -> Result<Vec<KnowledgeDocument>, StoreError> {
    let rows = sqlx::query(select_documents!("WHERE site_id = $1 ORDER BY source"))
        .bind(site_id)
        .fetch_all(pool)
        .await?;
    rows.iter().map(rows::document).collect()
}

pub async fn remove_document(pool: &PgPool, site_id: &str, id: i64) -> Result<bool, StoreError> {
    let mut tx = pool.begin().await?;
    lock_site(&mut tx, site_id).await?;
    let done = sqlx::query("DELETE FROM knowledge_documents WHERE site_id = $1 AND id = $2")
        .bind(site_id)
        .bind(id)
        .execute(&mut *tx)
        .await?;
    let removed = done.rows_affected() > 0;
    if removed {
        bump(&mut tx, site_id).await?;
    }
    tx.commit().await?;
    Ok(removed)
}

/// A deleted site's knowledge goes with it, and its version row (relays then drop its index).
pub async fn delete_site(
    tx: &mut Transaction<'_, Postgres>,
    site_id: &str,
) -> Result<(), StoreError> {
    for statement in [
        "DELETE FROM knowledge_embeddings WHERE site_id = $1",
        "DELETE FROM knowledge_passages WHERE site_id = $1",
        "DELETE FROM knowledge_documents WHERE site_id = $1",
        "DELETE FROM knowledge_versions WHERE site_id = $1",
    ] {
        sqlx::query(statement).bind(site_id).execute(&mut **tx).await?;
    }
    Ok(())
}

pub async fn site_passages(pool: &PgPool, site_id: &str) -> Result<Vec<Passage>, StoreError> {
    let rows =
        sqlx::query(select_passages!("WHERE p.site_id = $1 ORDER BY p.document_id, p.ordinal"))
            .bind(site_id)
            .fetch_all(pool)
            .await?;
    rows.iter().map(rows::passage).collect()
}

pub async fn passages(
    pool: &PgPool,
    site_id: &str,
    ids: &[i64],
) -> Result<Vec<Passage>, StoreError> {
    let mut found = Vec::with_capacity(ids.len());
    for batch in ids.chunks(INSERT_BATCH) {
        let mut query = QueryBuilder::<Postgres>::new(select_passages!("WHERE p.site_id = "));
        query.push_bind(site_id).push(" AND p.id IN (");
        let mut list = query.separated(", ");
        for id in batch {
            list.push_bind(*id);
        }
        query.push(")");
        for row in query.build().fetch_all(pool).await? {
            found.push(rows::passage(&row)?);
        }
    }
    Ok(found)
}

pub async fn versions(pool: &PgPool) -> Result<Vec<KnowledgeVersion>, StoreError> {
    let rows = sqlx::query("SELECT site_id, version FROM knowledge_versions ORDER BY site_id")
        .fetch_all(pool)
        .await?;
    rows.iter()
        .map(|row| {
            Ok(KnowledgeVersion {
                site_id: row.try_get("site_id")?,
                version: row.try_get("version")?,
            })
        })
        .collect()
}

/// In batches of one statement each (see `rows::insert_embeddings`), in one transaction; the
/// version is bumped only when one stored something, so a put of nothing of the site's leaves
/// the relays' indexes alone.
pub async fn put_embeddings(
    pool: &PgPool,
    site_id: &str,
    model: &str,
    embeddings: &[PassageEmbedding],
) -> Result<u64, StoreError> {
    let dimensions = int(dimensions_of(embeddings)? as u64);
    if embeddings.is_empty() {
        return Ok(0);
    }
    let mut tx = pool.begin().await?;
    lock_site(&mut tx, site_id).await?;
    let mut stored = 0;
    for batch in embeddings.chunks(INSERT_BATCH) {
        let mut insert = rows::insert_embeddings::<Postgres>(site_id, model, dimensions, batch);
        stored += insert.build().execute(&mut *tx).await?.rows_affected();
    }
    if stored > 0 {
        bump(&mut tx, site_id).await?;
    }
    tx.commit().await?;
    Ok(stored)
}

pub async fn site_embeddings(
    pool: &PgPool,
    site_id: &str,
    model: &str,
) -> Result<Vec<PassageEmbedding>, StoreError> {
    let rows = sqlx::query(
        "SELECT passage_id, dimensions, vector FROM knowledge_embeddings \
         WHERE site_id = $1 AND model = $2 ORDER BY passage_id",
    )
    .bind(site_id)
    .bind(model)
    .fetch_all(pool)
    .await?;
    rows.iter().map(rows::embedding).collect()
}

pub async fn passages_without_embedding(
    pool: &PgPool,
    site_id: &str,
    model: &str,
    limit: usize,
) -> Result<Vec<Passage>, StoreError> {
    let rows = sqlx::query(select_passages!(
        "WHERE p.site_id = $1 AND NOT EXISTS (SELECT 1 FROM knowledge_embeddings e \
         WHERE e.passage_id = p.id AND e.model = $2) ORDER BY p.document_id, p.ordinal LIMIT $3"
    ))
    .bind(site_id)
    .bind(model)
    .bind(int(limit as u64))
    .fetch_all(pool)
    .await?;
    rows.iter().map(rows::passage).collect()
}
