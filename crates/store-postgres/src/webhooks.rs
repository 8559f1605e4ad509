//! `webhook_events` and `webhook_deliveries`: the webhook outbox, shared by every relay on the
//! database.
//!
//! Two relays may work the outbox at once. An event is dispatched once: the `UPDATE` that marks
//! it dispatched takes its row lock, and the second relay's finds it dispatched and creates
//! nothing. A delivery is claimed by one relay: the claim locks the due rows `FOR UPDATE SKIP
//! LOCKED` and moves their due time to the end of the lease in the same statement, so another
//! relay's claim skips them while the first one's is under way and finds them not due after it.

use sqlx::Row;
use sqlx::postgres::{PgPool, PgRow};

use confab_store::{NewWebhookDelivery, StoreError, WebhookDelivery, WebhookEvent};

fn delivery_from_row(row: &PgRow) -> Result<WebhookDelivery, StoreError> {
    let attempts: i64 = row.try_get("attempts")?;
    Ok(WebhookDelivery {
        id: row.try_get("id")?,
        event_id: row.try_get("event_id")?,
        kind: row.try_get("type")?,
        payload: row.try_get("payload")?,
        endpoint: row.try_get("endpoint")?,
        attempts: u32::try_from(attempts).map_err(|_| {
            StoreError::Corrupt("webhook_deliveries.attempts is out of range".into())
        })?,
        created_at_ms: row.try_get("created_at_ms")?,
        delivered_at_ms: row.try_get("delivered_at_ms")?,
        failed_at_ms: row.try_get("failed_at_ms")?,
        last_error: row.try_get("last_error")?,
    })
}

pub async fn add_events(pool: &PgPool, events: &[WebhookEvent]) -> Result<(), StoreError> {
    if events.is_empty() {
        return Ok(());
    }
    let column = |value: fn(&WebhookEvent) -> &str| events.iter().map(value).collect::<Vec<_>>();
    sqlx::query(
        "INSERT INTO webhook_events (id, type, site_id, payload, created_at_ms) \
         SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::bigint[])",
    )
    .bind(column(|e| &e.id))
    .bind(column(|e| &e.kind))
    .bind(events.iter().map(|e| e.site_id.as_deref()).collect::<Vec<_>>())
    .bind(column(|e| &e.payload))
    .bind(events.iter().map(|e| e.created_at_ms).collect::<Vec<_>>())
    .execute(pool)
    .await?;
    Ok(())
}

pub async fn undispatched(pool: &PgPool, limit: u32) -> Result<Vec<WebhookEvent>, StoreError> {
    let rows = sqlx::query(
        "SELECT id, type, site_id, payload, created_at_ms FROM webhook_events \
         WHERE NOT dispatched ORDER BY created_at_ms, id LIMIT $1",
    )
    .bind(i64::from(limit))
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|row| {
            Ok(WebhookEvent {
                id: row.try_get("id")?,
                kind: row.try_get("type")?,
                site_id: row.try_get("site_id")?,
                payload: row.try_get("payload")?,
                created_at_ms: row.try_get("created_at_ms")?,
            })
        })
        .collect()
}

pub async fn dispatch(
    pool: &PgPool,
    event_id: &str,
    deliveries: &[NewWebhookDelivery],
    due_ms: i64,
) -> Result<bool, StoreError> {
    let mut tx = pool.begin().await?;
    // A relay dispatching the same event at the same moment waits here for this transaction,
    // then finds the event dispatched.
    let marked =
        sqlx::query("UPDATE webhook_events SET dispatched = TRUE WHERE id = $1 AND NOT dispatched")
            .bind(event_id)
            .execute(&mut *tx)
            .await?;
    if marked.rows_affected() == 0 {
        return Ok(false);
    }
    let ids: Vec<&str> = deliveries.iter().map(|d| d.id.as_str()).collect();
    let endpoints: Vec<&str> = deliveries.iter().map(|d| d.endpoint.as_str()).collect();
    sqlx::query(
        "INSERT INTO webhook_deliveries (id, event_id, endpoint, next_attempt_at_ms) \
         SELECT id, $3, endpoint, $4 FROM UNNEST($1::text[], $2::text[]) AS d(id, endpoint)",
    )
    .bind(&ids)
    .bind(&endpoints)
    .bind(event_id)
    .bind(due_ms)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(true)
}

pub async fn claim_to(
    pool: &PgPool,
    endpoint: &str,
    now_ms: i64,
    lease_until_ms: i64,
    limit: u32,
) -> Result<Vec<WebhookDelivery>, StoreError> {
    // The rows are locked as they are picked; one another claim holds is skipped rather than
    // waited for, and one whose lease that claim committed in the meantime is re-checked
    // against the conditions and is no longer due.
    let rows = sqlx::query(
        "WITH due AS ( \
           SELECT id, next_attempt_at_ms AS due_at_ms FROM webhook_deliveries \
           WHERE endpoint = $1 AND delivered_at_ms IS NULL AND failed_at_ms IS NULL \
           AND next_attempt_at_ms <= $2 ORDER BY next_attempt_at_ms, id LIMIT $4 \
           FOR UPDATE SKIP LOCKED), \
         leased AS ( \
           UPDATE webhook_deliveries d SET next_attempt_at_ms = $3 FROM due, webhook_events e \
           WHERE d.id = due.id AND e.id = d.event_id \
           RETURNING d.id, d.event_id, e.type, e.payload, d.endpoint, d.attempts, \
           e.created_at_ms, d.delivered_at_ms, d.failed_at_ms, d.last_error, due.due_at_ms) \
         SELECT * FROM leased ORDER BY due_at_ms, id",
    )
    .bind(endpoint)
    .bind(now_ms)
    .bind(lease_until_ms)
    .bind(i64::from(limit))
    .fetch_all(pool)
    .await?;
    rows.iter().map(delivery_from_row).collect()
}

pub async fn delivered(pool: &PgPool, id: &str, at_ms: i64) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE webhook_deliveries SET attempts = attempts + 1, delivered_at_ms = $1, \
         last_error = NULL WHERE id = $2",
    )
    .bind(at_ms)
    .bind(id)
    .execute(pool)
    .await?;
    Ok(())
}

pub async fn attempt_failed(
    pool: &PgPool,
    id: &str,
    error: &str,
    at_ms: i64,
    retry_at_ms: Option<i64>,
) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE webhook_deliveries SET attempts = attempts + 1, last_error = $1, \
         next_attempt_at_ms = COALESCE($2, next_attempt_at_ms), \
         failed_at_ms = CASE WHEN $2::bigint IS NULL THEN $3 END WHERE id = $4",
    )
    .bind(error)
    .bind(retry_at_ms)
    .bind(at_ms)
    .bind(id)
    .execute(pool)
    .await?;
    Ok(())
}

pub async fn list(pool: &PgPool, limit: u32) -> Result<Vec<WebhookDelivery>, StoreError> {
    let rows = sqlx::query(
        "SELECT d.id, d.event_id, e.type, e.payload, d.endpoint, d.attempts, e.created_at_ms, \
         d.delivered_at_ms, d.failed_at_ms, d.last_error \
         FROM webhook_deliveries d JOIN webhook_events e ON e.id = d.event_id \
         ORDER BY e.created_at_ms DESC, d.id DESC LIMIT $1",
    )
    .bind(i64::from(limit))
    .fetch_all(pool)
    .await?;
    rows.iter().map(delivery_from_row).collect()
}

pub async fn redeliver(
    pool: &PgPool,
    id: &str,
    due_ms: i64,
) -> Result<Option<WebhookDelivery>, StoreError> {
    sqlx::query(
        "UPDATE webhook_deliveries SET next_attempt_at_ms = $1, attempts = 0, \
         delivered_at_ms = NULL, failed_at_ms = NULL, last_error = NULL WHERE id = $2",
    )
    .bind(due_ms)
    .bind(id)
    .execute(pool)
    .await?;
    let row = sqlx::query(
        "SELECT d.id, d.event_id, e.type, e.payload, d.endpoint, d.attempts, e.created_at_ms, \
         d.delivered_at_ms, d.failed_at_ms, d.last_error \
         FROM webhook_deliveries d JOIN webhook_events e ON e.id = d.event_id WHERE d.id = $1",
    )
    .bind(id)
    .fetch_optional(pool)
    .await?;
    row.as_ref().map(delivery_from_row).transpose()
}

pub async fn prune(pool: &PgPool, before_ms: i64) -> Result<u64, StoreError> {
    // Deleting an event deletes its deliveries (ON DELETE CASCADE).
    let done = sqlx::query(
        "DELETE FROM webhook_events WHERE created_at_ms < $1 AND dispatched AND NOT EXISTS \
         (SELECT 1 FROM webhook_deliveries d WHERE d.event_id = webhook_events.id \
          AND d.delivered_at_ms IS NULL AND d.failed_at_ms IS NULL)",
    )
    .bind(before_ms)
    .execute(pool)
    .await?;
    Ok(done.rows_affected())
}

pub async fn give_up_except(
    pool: &PgPool,
    endpoints: &[String],
    error: &str,
    at_ms: i64,
) -> Result<u64, StoreError> {
    let done = sqlx::query(
        "UPDATE webhook_deliveries SET failed_at_ms = $1, last_error = $2 \
         WHERE delivered_at_ms IS NULL AND failed_at_ms IS NULL AND endpoint <> ALL($3)",
    )
    .bind(at_ms)
    .bind(error)
    .bind(endpoints)
    .execute(pool)
    .await?;
    Ok(done.rows_affected())
}

pub async fn backlog(pool: &PgPool) -> Result<u64, StoreError> {
    // Both counts read partial indexes that hold only what is still to do.
    let backlog: i64 = sqlx::query_scalar(
        "SELECT (SELECT COUNT(*) FROM webhook_events WHERE NOT dispatched) + \
         (SELECT COUNT(DISTINCT event_id) FROM webhook_deliveries \
          WHERE delivered_at_ms IS NULL AND failed_at_ms IS NULL)",
    )
    .fetch_one(pool)
    .await?;
    u64::try_from(backlog).map_err(|_| StoreError::Corrupt("a negative webhook backlog".into()))
}
