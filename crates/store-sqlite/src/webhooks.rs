//! `webhook_events` and `webhook_deliveries`: the webhook outbox (see
//! `migrations/sqlite/0005_webhooks.sql`).

use sqlx::Row;
use sqlx::sqlite::{SqlitePool, SqliteRow};

use confab_store::{NewWebhookDelivery, StoreError, WebhookDelivery, WebhookEvent};

/// `SELECT <every delivery column with its event's> <tail>` as one static string.
macro_rules! select_deliveries {
    ($tail:literal) => {
        concat!(
            "SELECT d.id, d.event_id, e.type, e.payload, d.endpoint, d.attempts, ",
            "e.created_at_ms, d.delivered_at_ms, d.failed_at_ms, d.last_error ",
            "FROM webhook_deliveries d JOIN webhook_events e ON e.id = d.event_id ",
            $tail
        )
    };
}

fn delivery_from_row(row: &SqliteRow) -> Result<WebhookDelivery, StoreError> {
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

pub async fn add_events(pool: &SqlitePool, events: &[WebhookEvent]) -> Result<(), StoreError> {
    let mut tx = pool.begin().await?;
    for event in events {
        sqlx::query(
            "INSERT INTO webhook_events (id, type, site_id, payload, created_at_ms) \
             VALUES (?, ?, ?, ?, ?)",
        )
        .bind(&event.id)
        .bind(&event.kind)
        .bind(&event.site_id)
        .bind(&event.payload)
        .bind(event.created_at_ms)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(())
}

pub async fn undispatched(pool: &SqlitePool, limit: u32) -> Result<Vec<WebhookEvent>, StoreError> {
    let rows = sqlx::query(
        "SELECT id, type, site_id, payload, created_at_ms FROM webhook_events \
         WHERE dispatched = 0 ORDER BY created_at_ms, id LIMIT ?",
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
    pool: &SqlitePool,
    event_id: &str,
    deliveries: &[NewWebhookDelivery],
    due_ms: i64,
) -> Result<bool, StoreError> {
    // Writes first anyway; immediate, like a claim, so that it waits rather than fails.
    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
    let marked =
        sqlx::query("UPDATE webhook_events SET dispatched = 1 WHERE id = ? AND dispatched = 0")
            .bind(event_id)
            .execute(&mut *tx)
            .await?;
    if marked.rows_affected() == 0 {
        return Ok(false);
    }
    for delivery in deliveries {
        sqlx::query(
            "INSERT INTO webhook_deliveries (id, event_id, endpoint, next_attempt_at_ms) \
             VALUES (?, ?, ?, ?)",
        )
        .bind(&delivery.id)
        .bind(event_id)
        .bind(&delivery.endpoint)
        .bind(due_ms)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(true)
}

pub async fn claim_to(
    pool: &SqlitePool,
    endpoint: &str,
    now_ms: i64,
    lease_until_ms: i64,
    limit: u32,
) -> Result<Vec<WebhookDelivery>, StoreError> {
    // The claim reads, then writes. A deferred transaction would be refused its write at once
    // ("database is locked") when another connection wrote in between, since SQLite cannot
    // upgrade a read that is no longer current; taking the write lock first makes a concurrent
    // claim wait for this one (within the busy timeout) and then see its leases.
    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
    let rows = sqlx::query(select_deliveries!(
        "WHERE d.endpoint = ? AND d.delivered_at_ms IS NULL AND d.failed_at_ms IS NULL \
         AND d.next_attempt_at_ms <= ? ORDER BY d.next_attempt_at_ms, d.id LIMIT ?"
    ))
    .bind(endpoint)
    .bind(now_ms)
    .bind(i64::from(limit))
    .fetch_all(&mut *tx)
    .await?;
    let claimed = lease(&mut tx, &rows, now_ms, lease_until_ms).await?;
    tx.commit().await?;
    Ok(claimed)
}

/// Leases the due deliveries read into `rows` until `lease_until_ms`; returns those it leased.
async fn lease(
    tx: &mut sqlx::Transaction<'_, sqlx::Sqlite>,
    rows: &[SqliteRow],
    now_ms: i64,
    lease_until_ms: i64,
) -> Result<Vec<WebhookDelivery>, StoreError> {
    let mut claimed = Vec::with_capacity(rows.len());
    for row in rows {
        let delivery = delivery_from_row(row)?;
        // The same conditions again: a delivery another worker leased in the meantime is no
        // longer due, and is left to it.
        let leased = sqlx::query(
            "UPDATE webhook_deliveries SET next_attempt_at_ms = ? WHERE id = ? \
             AND delivered_at_ms IS NULL AND failed_at_ms IS NULL AND next_attempt_at_ms <= ?",
        )
        .bind(lease_until_ms)
        .bind(&delivery.id)
        .bind(now_ms)
        .execute(&mut **tx)
        .await?;
        if leased.rows_affected() == 1 {
            claimed.push(delivery);
        }
    }
    Ok(claimed)
}

pub async fn delivered(pool: &SqlitePool, id: &str, at_ms: i64) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE webhook_deliveries SET attempts = attempts + 1, delivered_at_ms = ?, \
         last_error = NULL WHERE id = ?",
    )
    .bind(at_ms)
    .bind(id)
    .execute(pool)
    .await?;
    Ok(())
}

pub async fn attempt_failed(
    pool: &SqlitePool,
    id: &str,
    error: &str,
    at_ms: i64,
    retry_at_ms: Option<i64>,
) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE webhook_deliveries SET attempts = attempts + 1, last_error = ?1, \
         next_attempt_at_ms = COALESCE(?2, next_attempt_at_ms), \
         failed_at_ms = CASE WHEN ?2 IS NULL THEN ?3 END WHERE id = ?4",
    )
    .bind(error)
    .bind(retry_at_ms)
    .bind(at_ms)
    .bind(id)
    .execute(pool)
    .await?;
    Ok(())
}

pub async fn list(pool: &SqlitePool, limit: u32) -> Result<Vec<WebhookDelivery>, StoreError> {
    let rows = sqlx::query(select_deliveries!("ORDER BY e.created_at_ms DESC, d.id DESC LIMIT ?"))
        .bind(i64::from(limit))
        .fetch_all(pool)
        .await?;
    rows.iter().map(delivery_from_row).collect()
}

pub async fn redeliver(
    pool: &SqlitePool,
    id: &str,
    due_ms: i64,
) -> Result<Option<WebhookDelivery>, StoreError> {
    sqlx::query(
        "UPDATE webhook_deliveries SET next_attempt_at_ms = ?, attempts = 0, \
         delivered_at_ms = NULL, failed_at_ms = NULL, last_error = NULL WHERE id = ?",
    )
    .bind(due_ms)
    .bind(id)
    .execute(pool)
    .await?;
    let row =
        sqlx::query(select_deliveries!("WHERE d.id = ?")).bind(id).fetch_optional(pool).await?;
    row.as_ref().map(delivery_from_row).transpose()
}

pub async fn prune(pool: &SqlitePool, before_ms: i64) -> Result<u64, StoreError> {
    // Deleting an event deletes its deliveries (ON DELETE CASCADE).
    let done = sqlx::query(
        "DELETE FROM webhook_events WHERE created_at_ms < ? AND dispatched = 1 AND NOT EXISTS \
         (SELECT 1 FROM webhook_deliveries d WHERE d.event_id = webhook_events.id \
          AND d.delivered_at_ms IS NULL AND d.failed_at_ms IS NULL)",
    )
    .bind(before_ms)
    .execute(pool)
    .await?;
    Ok(done.rows_affected())
}

pub async fn give_up_except(
    pool: &SqlitePool,
    endpoints: &[String],
    error: &str,
    at_ms: i64,
) -> Result<u64, StoreError> {
    // The configured URLs as one bound JSON array, which `json_each` turns back into rows.
    let configured = serde_json::Value::from(endpoints).to_string();
    let done = sqlx::query(
        "UPDATE webhook_deliveries SET failed_at_ms = ?, last_error = ? \
         WHERE delivered_at_ms IS NULL AND failed_at_ms IS NULL \
         AND endpoint NOT IN (SELECT value FROM json_each(?))",
    )
    .bind(at_ms)
    .bind(error)
    .bind(configured)
    .execute(pool)
    .await?;
    Ok(done.rows_affected())
}

pub async fn backlog(pool: &SqlitePool) -> Result<u64, StoreError> {
    // Both counts read partial indexes that hold only what is still to do.
    let backlog: i64 = sqlx::query_scalar(
        "SELECT (SELECT COUNT(*) FROM webhook_events WHERE dispatched = 0) + \
         (SELECT COUNT(DISTINCT event_id) FROM webhook_deliveries \
          WHERE delivered_at_ms IS NULL AND failed_at_ms IS NULL)",
    )
    .fetch_one(pool)
    .await?;
    u64::try_from(backlog).map_err(|_| StoreError::Corrupt("a negative webhook backlog".into()))
}
