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
    let mut tx = pool.begin().await?;
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
    let mut tx = pool.begin().await?;
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

#[cfg(test)]
mod tests {
    use crate::SqliteStore;
    use confab_store::{NewWebhookDelivery, Store, WebhookDelivery, WebhookEvent};

    async fn store() -> (tempfile::TempDir, SqliteStore) {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("t.db").display());
        (dir, SqliteStore::open(&url, 2).await.unwrap())
    }

    fn event(id: &str, at_ms: i64) -> WebhookEvent {
        WebhookEvent {
            id: id.into(),
            kind: "key.revoked".into(),
            site_id: None,
            payload: format!("{{\"id\":\"{id}\"}}"),
            created_at_ms: at_ms,
        }
    }

    fn to(endpoint: &str, id: &str) -> NewWebhookDelivery {
        NewWebhookDelivery { id: id.into(), endpoint: endpoint.into() }
    }

    async fn only(store: &SqliteStore) -> WebhookDelivery {
        let mut all = store.webhook_deliveries(10).await.unwrap();
        assert_eq!(all.len(), 1, "{all:?}");
        all.remove(0)
    }

    #[tokio::test]
    async fn an_event_is_dispatched_once_and_its_delivery_is_leased_while_attempted() {
        let (_dir, store) = store().await;
        store.add_webhook_events(&[event("evt_1", 1_000)]).await.unwrap();
        let pending = store.undispatched_webhook_events(10).await.unwrap();
        assert_eq!(pending, vec![event("evt_1", 1_000)]);

        assert!(
            store.dispatch_webhook_event("evt_1", &[to("http://a", "whd_1")], 2_000).await.unwrap()
        );
        assert!(
            !store
                .dispatch_webhook_event("evt_1", &[to("http://a", "whd_2")], 2_000)
                .await
                .unwrap()
        );
        assert!(store.undispatched_webhook_events(10).await.unwrap().is_empty());

        assert!(
            store
                .claim_webhook_deliveries_to("http://a", 1_999, 9_000, 10)
                .await
                .unwrap()
                .is_empty()
        );
        let claimed =
            store.claim_webhook_deliveries_to("http://a", 2_000, 9_000, 10).await.unwrap();
        assert_eq!(claimed.len(), 1);
        assert_eq!(
            (claimed[0].id.as_str(), claimed[0].kind.as_str(), claimed[0].payload.as_str()),
            ("whd_1", "key.revoked", "{\"id\":\"evt_1\"}")
        );
        assert_eq!(claimed[0].attempts, 0);
        // Leased: not due again until the lease ends.
        assert!(
            store
                .claim_webhook_deliveries_to("http://a", 8_999, 19_000, 10)
                .await
                .unwrap()
                .is_empty()
        );
        assert_eq!(
            store.claim_webhook_deliveries_to("http://a", 9_000, 19_000, 10).await.unwrap().len(),
            1
        );
    }

    #[tokio::test]
    async fn failed_attempts_are_retried_until_delivered_or_given_up() {
        let (_dir, store) = store().await;
        store.add_webhook_events(&[event("evt_1", 1_000)]).await.unwrap();
        store.dispatch_webhook_event("evt_1", &[to("http://a", "whd_1")], 1_000).await.unwrap();

        store.claim_webhook_deliveries_to("http://a", 1_000, 5_000, 10).await.unwrap();
        store.webhook_attempt_failed("whd_1", "HTTP 500", 1_100, Some(3_000)).await.unwrap();
        let failed = only(&store).await;
        assert_eq!((failed.attempts, failed.last_error.as_deref()), (1, Some("HTTP 500")));
        assert_eq!((failed.delivered_at_ms, failed.failed_at_ms), (None, None));
        assert!(
            store
                .claim_webhook_deliveries_to("http://a", 2_999, 9_000, 10)
                .await
                .unwrap()
                .is_empty()
        );
        assert_eq!(
            store.claim_webhook_deliveries_to("http://a", 3_000, 9_000, 10).await.unwrap().len(),
            1
        );

        store.webhook_delivered("whd_1", 3_100).await.unwrap();
        let delivered = only(&store).await;
        assert_eq!((delivered.attempts, delivered.delivered_at_ms), (2, Some(3_100)));
        assert_eq!(delivered.last_error, None);
        assert!(
            store
                .claim_webhook_deliveries_to("http://a", 99_000, 100_000, 10)
                .await
                .unwrap()
                .is_empty()
        );

        // Given up: kept as a dead letter, never attempted again.
        store.add_webhook_events(&[event("evt_2", 1_000)]).await.unwrap();
        store.dispatch_webhook_event("evt_2", &[to("http://a", "whd_2")], 1_000).await.unwrap();
        store.webhook_attempt_failed("whd_2", "timed out", 1_200, None).await.unwrap();
        let dead = store.webhook_deliveries(10).await.unwrap();
        let dead = dead.iter().find(|d| d.id == "whd_2").unwrap();
        assert_eq!((dead.attempts, dead.failed_at_ms), (1, Some(1_200)));
        assert_eq!(dead.last_error.as_deref(), Some("timed out"));
        assert!(
            store
                .claim_webhook_deliveries_to("http://a", 99_000, 100_000, 10)
                .await
                .unwrap()
                .is_empty()
        );
    }

    #[tokio::test]
    async fn a_claim_for_one_endpoint_leaves_the_others_deliveries_due() {
        let (_dir, store) = store().await;
        store.add_webhook_events(&[event("evt_1", 1_000)]).await.unwrap();
        let deliveries = [to("http://a", "whd_a"), to("http://b", "whd_b")];
        store.dispatch_webhook_event("evt_1", &deliveries, 1_000).await.unwrap();

        let claimed =
            store.claim_webhook_deliveries_to("http://a", 1_000, 9_000, 10).await.unwrap();
        let ids: Vec<&str> = claimed.iter().map(|d| d.id.as_str()).collect();
        assert_eq!(ids, ["whd_a"]);
        assert!(
            store
                .claim_webhook_deliveries_to("http://a", 1_000, 9_000, 10)
                .await
                .unwrap()
                .is_empty()
        );
        let claimed =
            store.claim_webhook_deliveries_to("http://b", 1_000, 9_000, 10).await.unwrap();
        assert_eq!(claimed.len(), 1);
        assert_eq!((claimed[0].id.as_str(), claimed[0].endpoint.as_str()), ("whd_b", "http://b"));
    }

    #[tokio::test]
    async fn deliveries_to_endpoints_no_longer_configured_are_given_up() {
        let (_dir, store) = store().await;
        store.add_webhook_events(&[event("evt_1", 1_000), event("evt_2", 1_000)]).await.unwrap();
        let deliveries = [to("http://a", "whd_a"), to("http://gone", "whd_gone")];
        store.dispatch_webhook_event("evt_1", &deliveries, 1_000).await.unwrap();
        store.dispatch_webhook_event("evt_2", &[to("http://old", "whd_old")], 1_000).await.unwrap();
        store.webhook_delivered("whd_old", 1_100).await.unwrap();

        let configured = ["http://a".to_owned()];
        assert_eq!(
            store.give_up_webhook_deliveries_except(&configured, "removed", 2_000).await.unwrap(),
            1
        );
        let all = store.webhook_deliveries(10).await.unwrap();
        let state = |id: &str| {
            let d = all.iter().find(|d| d.id == id).unwrap();
            (d.delivered_at_ms, d.failed_at_ms, d.last_error.clone())
        };
        assert_eq!(state("whd_gone"), (None, Some(2_000), Some("removed".into())));
        assert_eq!(state("whd_a"), (None, None, None), "still to make");
        assert_eq!(state("whd_old"), (Some(1_100), None, None), "delivered before: kept as it was");
        // With no endpoint configured, every delivery still to make is given up.
        let none: [String; 0] = [];
        assert_eq!(
            store.give_up_webhook_deliveries_except(&none, "removed", 3_000).await.unwrap(),
            1
        );
    }

    #[tokio::test]
    async fn the_backlog_counts_each_event_still_to_deliver_once() {
        let (_dir, store) = store().await;
        assert_eq!(store.webhook_backlog().await.unwrap(), 0);
        store
            .add_webhook_events(&[
                event("evt_new", 1_000),
                event("evt_two", 1_000),
                event("evt_done", 1_000),
                event("evt_none", 1_000),
            ])
            .await
            .unwrap();
        assert_eq!(store.webhook_backlog().await.unwrap(), 4, "undispatched");

        let two = [to("http://a", "whd_a"), to("http://b", "whd_b")];
        store.dispatch_webhook_event("evt_two", &two, 1_000).await.unwrap();
        store.dispatch_webhook_event("evt_done", &[to("http://a", "whd_c")], 1_000).await.unwrap();
        store.dispatch_webhook_event("evt_none", &[], 1_000).await.unwrap();
        assert_eq!(store.webhook_backlog().await.unwrap(), 3, "evt_none has nothing to deliver");

        store.webhook_delivered("whd_c", 1_100).await.unwrap();
        store.webhook_delivered("whd_a", 1_100).await.unwrap();
        assert_eq!(store.webhook_backlog().await.unwrap(), 2, "evt_two still goes to b");
        store.webhook_attempt_failed("whd_b", "HTTP 500", 1_200, None).await.unwrap();
        assert_eq!(store.webhook_backlog().await.unwrap(), 1, "a dead letter is not waiting");
    }

    #[tokio::test]
    async fn pruning_keeps_events_with_deliveries_still_to_make() {
        let (_dir, store) = store().await;
        store
            .add_webhook_events(&[
                event("evt_done", 1_000),
                event("evt_open", 1_000),
                event("evt_new", 5_000),
            ])
            .await
            .unwrap();
        for (event, delivery) in
            [("evt_done", "whd_1"), ("evt_open", "whd_2"), ("evt_new", "whd_3")]
        {
            store.dispatch_webhook_event(event, &[to("http://a", delivery)], 1_000).await.unwrap();
        }
        store.webhook_delivered("whd_1", 1_500).await.unwrap();
        store.webhook_delivered("whd_3", 5_500).await.unwrap();

        assert_eq!(store.prune_webhook_events(2_000).await.unwrap(), 1);
        let mut left: Vec<String> =
            store.webhook_deliveries(10).await.unwrap().into_iter().map(|d| d.id).collect();
        left.sort();
        assert_eq!(left, ["whd_2", "whd_3"]);
    }
}
