//! `conversations`, `conversation_messages` and `conversation_feedback` (see
//! `migrations/0003_conversations.sql`).

use sqlx::postgres::{PgPool, PgRow, Postgres};
use sqlx::{QueryBuilder, Row, Transaction};

use confab_store::conversations::like_pattern;
use confab_store::{
    Author, Conversation, ConversationFilter, Feedback, Holder, Message, NewMessage, Outcome,
    Rating, StoreError, Turn,
};

fn int(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

fn count(row: &PgRow, column: &str) -> Result<u64, StoreError> {
    let value: i64 = row.try_get(column)?;
    u64::try_from(value).map_err(|_| StoreError::Corrupt(format!("conversations.{column} < 0")))
}

fn corrupt(what: &str, value: &str) -> StoreError {
    StoreError::Corrupt(format!("{what} `{value}`"))
}

/// `SELECT <every conversation column> FROM conversations c <tail>` as one static string.
macro_rules! select_conversations {
    ($tail:literal) => {
        concat!(
            "SELECT c.id, c.site_id, c.visitor, c.page_url, c.model, c.started_at_ms, ",
            "c.updated_at_ms, c.messages, c.input_tokens, c.output_tokens, c.cost_micros, ",
            "c.outcome, c.holder, c.handoff_at_ms, ",
            "(SELECT COUNT(*) FROM conversation_feedback f WHERE f.conversation_id = c.id ",
            "AND f.site_id = c.site_id ",
            "AND f.rating = 'up') AS feedback_up, ",
            "(SELECT COUNT(*) FROM conversation_feedback f WHERE f.conversation_id = c.id ",
            "AND f.site_id = c.site_id ",
            "AND f.rating = 'down') AS feedback_down FROM conversations c ",
            $tail
        )
    };
}

fn conversation_from_row(row: &PgRow) -> Result<Conversation, StoreError> {
    let holder: String = row.try_get("holder")?;
    let outcome: Option<String> = row.try_get("outcome")?;
    Ok(Conversation {
        id: row.try_get("id")?,
        site_id: row.try_get("site_id")?,
        visitor: row.try_get("visitor")?,
        page_url: row.try_get("page_url")?,
        model: row.try_get("model")?,
        started_at_ms: row.try_get("started_at_ms")?,
        updated_at_ms: row.try_get("updated_at_ms")?,
        messages: count(row, "messages")?,
        input_tokens: count(row, "input_tokens")?,
        output_tokens: count(row, "output_tokens")?,
        cost_micros: count(row, "cost_micros")?,
        outcome: outcome
            .map(|name| Outcome::from_name(&name).ok_or_else(|| corrupt("outcome", &name)))
            .transpose()?,
        holder: Holder::from_name(&holder).ok_or_else(|| corrupt("holder", &holder))?,
        handoff_at_ms: row.try_get("handoff_at_ms")?,
        feedback_up: count(row, "feedback_up")?,
        feedback_down: count(row, "feedback_down")?,
    })
}

fn message_from_row(row: &PgRow) -> Result<Message, StoreError> {
    let author: String = row.try_get("author")?;
    let rating: Option<String> = row.try_get("rating")?;
    Ok(Message {
        seq: row.try_get("seq")?,
        at_ms: row.try_get("at_ms")?,
        author: Author::from_name(&author).ok_or_else(|| corrupt("author", &author))?,
        content: row.try_get("content")?,
        request_id: row.try_get("request_id")?,
        rating: rating
            .map(|name| Rating::from_name(&name).ok_or_else(|| corrupt("rating", &name)))
            .transpose()?,
        comment: row.try_get("comment")?,
    })
}

/// Makes sure the conversation exists for `site_id` (creating it at `at_ms`); `false` when it
/// belongs to another site.
async fn ensure(
    tx: &mut Transaction<'_, Postgres>,
    id: &str,
    site_id: &str,
    visitor: Option<&str>,
    page_url: Option<&str>,
    at_ms: i64,
) -> Result<bool, StoreError> {
    sqlx::query(
        "INSERT INTO conversations (id, site_id, visitor, page_url, started_at_ms, \
         updated_at_ms) VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (id) DO NOTHING",
    )
    .bind(id)
    .bind(site_id)
    .bind(visitor)
    .bind(page_url)
    .bind(at_ms)
    .bind(at_ms)
    .execute(&mut **tx)
    .await?;
    let owner: Option<String> =
        sqlx::query_scalar("SELECT site_id FROM conversations WHERE id = $1 FOR UPDATE")
            .bind(id)
            .fetch_optional(&mut **tx)
            .await?;
    Ok(owner.as_deref() == Some(site_id))
}

/// Appends a message, returning its sequence number.
async fn append(
    tx: &mut Transaction<'_, Postgres>,
    id: &str,
    author: Author,
    content: &str,
    request_id: Option<&str>,
    at_ms: i64,
) -> Result<i64, StoreError> {
    let seq: i64 = sqlx::query_scalar(
        "INSERT INTO conversation_messages (conversation_id, seq, at_ms, author, content, \
         request_id) SELECT $1, COALESCE(MAX(seq), 0) + 1, $2, $3, $4, $5 \
         FROM conversation_messages WHERE conversation_id = $1 RETURNING seq",
    )
    .bind(id)
    .bind(at_ms)
    .bind(author.as_str())
    .bind(content)
    .bind(request_id)
    .fetch_one(&mut **tx)
    .await?;
    sqlx::query(
        "UPDATE conversations SET messages = messages + 1, \
         updated_at_ms = GREATEST(updated_at_ms, $1) WHERE id = $2",
    )
    .bind(at_ms)
    .bind(id)
    .execute(&mut **tx)
    .await?;
    Ok(seq)
}

pub async fn open(
    pool: &PgPool,
    id: &str,
    site_id: &str,
    visitor: Option<&str>,
    page_url: Option<&str>,
    at_ms: i64,
) -> Result<bool, StoreError> {
    let mut tx = pool.begin().await?;
    let owned = ensure(&mut tx, id, site_id, visitor, page_url, at_ms).await?;
    tx.commit().await?;
    Ok(owned)
}

pub async fn record_turns(pool: &PgPool, turns: &[Turn]) -> Result<(), StoreError> {
    if turns.is_empty() {
        return Ok(());
    }
    let mut tx = pool.begin().await?;
    for turn in turns {
        let id = turn.conversation_id.as_str();
        let owned = ensure(
            &mut tx,
            id,
            &turn.site_id,
            turn.visitor.as_deref(),
            turn.page_url.as_deref(),
            turn.at_ms,
        )
        .await?;
        if !owned {
            tracing::warn!(site = %turn.site_id, "a turn names another site's conversation; dropped");
            continue;
        }
        append(&mut tx, id, Author::Visitor, &turn.question, None, turn.at_ms).await?;
        append(&mut tx, id, Author::Bot, &turn.answer, Some(&turn.request_id), turn.at_ms).await?;
        sqlx::query(
            "UPDATE conversations SET model = $1, outcome = $2, \
             input_tokens = LEAST(input_tokens::numeric + $3, 9223372036854775807)::bigint, \
             output_tokens = LEAST(output_tokens::numeric + $4, 9223372036854775807)::bigint, \
             cost_micros = LEAST(cost_micros::numeric + $5, 9223372036854775807)::bigint, \
             visitor = COALESCE(visitor, $6), page_url = COALESCE(page_url, $7) WHERE id = $8",
        )
        .bind(&turn.model)
        .bind(turn.outcome.as_str())
        .bind(int(turn.input_tokens))
        .bind(int(turn.output_tokens))
        .bind(int(turn.cost_micros))
        .bind(&turn.visitor)
        .bind(&turn.page_url)
        .bind(id)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(())
}

pub async fn add_message(
    pool: &PgPool,
    message: &NewMessage,
) -> Result<Option<Message>, StoreError> {
    let mut tx = pool.begin().await?;
    let id = message.conversation_id.as_str();
    let owned = if message.author == Author::Visitor {
        ensure(
            &mut tx,
            id,
            &message.site_id,
            message.visitor.as_deref(),
            message.page_url.as_deref(),
            message.at_ms,
        )
        .await?
    } else {
        let owner: Option<String> =
            sqlx::query_scalar("SELECT site_id FROM conversations WHERE id = $1 FOR UPDATE")
                .bind(id)
                .fetch_optional(&mut *tx)
                .await?;
        owner.as_deref() == Some(message.site_id.as_str())
    };
    if !owned {
        return Ok(None);
    }
    let seq = append(&mut tx, id, message.author, &message.content, None, message.at_ms).await?;
    tx.commit().await?;
    Ok(Some(Message {
        seq,
        at_ms: message.at_ms,
        author: message.author,
        content: message.content.clone(),
        request_id: None,
        rating: None,
        comment: None,
    }))
}

pub async fn set_holder(
    pool: &PgPool,
    id: &str,
    holder: Holder,
    at_ms: i64,
) -> Result<bool, StoreError> {
    let updated = sqlx::query(
        "UPDATE conversations SET holder = $1, \
         handoff_at_ms = CASE WHEN $1::text = 'waiting' THEN $2 ELSE handoff_at_ms END, \
         updated_at_ms = GREATEST(updated_at_ms, $2) WHERE id = $3",
    )
    .bind(holder.as_str())
    .bind(at_ms)
    .bind(id)
    .execute(pool)
    .await?;
    Ok(updated.rows_affected() > 0)
}

pub async fn conversation(pool: &PgPool, id: &str) -> Result<Option<Conversation>, StoreError> {
    let row =
        sqlx::query(select_conversations!("WHERE c.id = $1")).bind(id).fetch_optional(pool).await?;
    row.as_ref().map(conversation_from_row).transpose()
}

pub async fn messages(
    pool: &PgPool,
    id: &str,
    after_seq: i64,
    limit: u32,
) -> Result<Vec<Message>, StoreError> {
    let rows = sqlx::query(
        "SELECT m.seq, m.at_ms, m.author, m.content, m.request_id, f.rating, f.comment \
         FROM conversation_messages m LEFT JOIN conversation_feedback f \
         ON f.conversation_id = m.conversation_id AND f.request_id = m.request_id \
         AND f.site_id = (SELECT site_id FROM conversations WHERE id = m.conversation_id) \
         WHERE m.conversation_id = $1 AND m.seq > $2 ORDER BY m.seq LIMIT $3",
    )
    .bind(id)
    .bind(after_seq)
    .bind(i64::from(limit))
    .fetch_all(pool)
    .await?;
    rows.iter().map(message_from_row).collect()
}

pub async fn list(
    pool: &PgPool,
    filter: &ConversationFilter,
) -> Result<Vec<Conversation>, StoreError> {
    let mut query: QueryBuilder<Postgres> = QueryBuilder::new(select_conversations!("WHERE TRUE"));
    if let Some(site) = &filter.site_id {
        query.push(" AND c.site_id = ").push_bind(site);
    }
    if let Some(visitor) = &filter.visitor {
        query.push(" AND c.visitor = ").push_bind(visitor);
    }
    if let Some(holder) = filter.holder {
        query.push(" AND c.holder = ").push_bind(holder.as_str());
    }
    if let Some(since) = filter.since_ms {
        query.push(" AND c.updated_at_ms >= ").push_bind(since);
    }
    if let Some(rating) = filter.rating {
        query
            .push(
                " AND EXISTS (SELECT 1 FROM conversation_feedback f \
                 WHERE f.conversation_id = c.id AND f.site_id = c.site_id AND f.rating = ",
            )
            .push_bind(rating.as_str())
            .push(")");
    }
    if let Some(text) = &filter.text {
        query
            .push(
                " AND EXISTS (SELECT 1 FROM conversation_messages m \
                 WHERE m.conversation_id = c.id AND m.content ILIKE ",
            )
            .push_bind(like_pattern(text))
            .push(" ESCAPE '\\')");
    }
    if let Some((at, id)) = &filter.before {
        query
            .push(" AND (c.updated_at_ms < ")
            .push_bind(*at)
            .push(" OR (c.updated_at_ms = ")
            .push_bind(*at)
            .push(" AND c.id < ")
            .push_bind(id)
            .push("))");
    }
    query
        .push(" ORDER BY c.updated_at_ms DESC, c.id DESC LIMIT ")
        .push_bind(i64::from(filter.limit));
    let rows = query.build().fetch_all(pool).await?;
    rows.iter().map(conversation_from_row).collect()
}

pub async fn record_feedback(pool: &PgPool, feedback: &Feedback) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO conversation_feedback (conversation_id, request_id, site_id, rating, \
         comment, at_ms) VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (conversation_id, request_id, site_id) \
         DO UPDATE SET rating = excluded.rating, comment = excluded.comment, \
         at_ms = excluded.at_ms",
    )
    .bind(&feedback.conversation_id)
    .bind(&feedback.request_id)
    .bind(&feedback.site_id)
    .bind(feedback.rating.as_str())
    .bind(&feedback.comment)
    .bind(feedback.at_ms)
    .execute(pool)
    .await?;
    Ok(())
}

/// Deletes the conversations `ids` with their feedback (messages go by cascade).
async fn delete_ids(tx: &mut Transaction<'_, Postgres>, ids: &[String]) -> Result<u64, StoreError> {
    for id in ids {
        sqlx::query("DELETE FROM conversation_feedback WHERE conversation_id = $1")
            .bind(id)
            .execute(&mut **tx)
            .await?;
        sqlx::query("DELETE FROM conversations WHERE id = $1").bind(id).execute(&mut **tx).await?;
    }
    Ok(u64::try_from(ids.len()).unwrap_or(u64::MAX))
}

pub async fn delete_conversation(pool: &PgPool, id: &str) -> Result<bool, StoreError> {
    let mut tx = pool.begin().await?;
    let found: Option<String> = sqlx::query_scalar("SELECT id FROM conversations WHERE id = $1")
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?;
    // Feedback can precede its conversation's first turn: delete it either way.
    sqlx::query("DELETE FROM conversation_feedback WHERE conversation_id = $1")
        .bind(id)
        .execute(&mut *tx)
        .await?;
    let deleted = delete_ids(&mut tx, found.as_slice()).await?;
    tx.commit().await?;
    Ok(deleted > 0)
}

pub async fn delete_visitor(
    pool: &PgPool,
    visitor: &str,
    site_id: Option<&str>,
) -> Result<u64, StoreError> {
    let mut tx = pool.begin().await?;
    let ids: Vec<String> = sqlx::query_scalar(
        "SELECT id FROM conversations WHERE visitor = $1 AND ($2::text IS NULL OR site_id = $3)",
    )
    .bind(visitor)
    .bind(site_id)
    .bind(site_id)
    .fetch_all(&mut *tx)
    .await?;
    let deleted = delete_ids(&mut tx, &ids).await?;
    tx.commit().await?;
    Ok(deleted)
}

pub async fn prune(pool: &PgPool, site_id: &str, before_ms: i64) -> Result<u64, StoreError> {
    let mut tx = pool.begin().await?;
    let ids: Vec<String> = sqlx::query_scalar(
        "SELECT id FROM conversations WHERE site_id = $1 AND updated_at_ms < $2",
    )
    .bind(site_id)
    .bind(before_ms)
    .fetch_all(&mut *tx)
    .await?;
    let deleted = delete_ids(&mut tx, &ids).await?;
    // Feedback on a conversation whose turns were never written (the relay stopped first)
    // expires too: a comment may say who the visitor is.
    sqlx::query(
        "DELETE FROM conversation_feedback WHERE site_id = $1 AND at_ms < $2 \
         AND NOT EXISTS (SELECT 1 FROM conversations c WHERE c.id = conversation_id)",
    )
    .bind(site_id)
    .bind(before_ms)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(deleted)
}
