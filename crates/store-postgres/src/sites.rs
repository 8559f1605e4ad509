//! `sites` and `site_origins`: the websites that embed the widget.

use sqlx::Row;
use sqlx::postgres::{PgPool, PgRow};

use confab_store::{
    CallerLimits, ClientInstructions, ConversationSettings, Grounding, NewSite, Site, SiteSettings,
    SiteWidget, StoreError, Verification, VisitorLimits, grounding_column, new_id,
};

use crate::{caller_limits, limit_column, money_column};

/// `SELECT <every site column> <tail>` as one static string, so no SQL is ever built at run time.
macro_rules! select_sites {
    ($tail:literal) => {
        concat!(
            "SELECT id, name, key_prefix, allow_no_origin, models, system_prompt, max_tokens, ",
            "temperature_max, context_messages, is_demo, created_at, key_hash, widget_title, ",
            "widget_greeting, widget_suggestions, widget_primary_color, rpm, rpd, tpm, ",
            "monthly_budget_micros, daily_budget_micros, visitor_rpm, visitor_rpd, ",
            "visitor_secret, require_verified_visitor, visitor_token_mode, verified_rpm, ",
            "verified_rpd, client_instructions, previous_key_prefix, previous_key_hash, ",
            "previous_expires_at, conversations, grounding FROM sites ",
            $tail
        )
    };
}
pub(crate) use select_sites;

/// A site without its origins (they are in a table of their own).
pub(crate) fn site_from_row(row: &PgRow) -> Result<Site, StoreError> {
    let limit = |column: &str| limit_column(row, "sites", column);
    let client_instructions: Option<String> = row.try_get("client_instructions")?;
    let client_instructions = client_instructions
        .map(|name| {
            ClientInstructions::from_name(&name)
                .ok_or_else(|| StoreError::Corrupt(format!("sites.client_instructions `{name}`")))
        })
        .transpose()?;
    let mode: String = row.try_get("visitor_token_mode")?;
    Ok(Site {
        id: row.try_get("id")?,
        key_lookup_id: row.try_get("key_prefix")?,
        settings: SiteSettings {
            name: row.try_get("name")?,
            origins: Vec::new(),
            allow_no_origin: row.try_get("allow_no_origin")?,
            models: row.try_get("models")?,
            system_prompt: row.try_get("system_prompt")?,
            max_tokens: limit("max_tokens")?,
            temperature_max: row.try_get("temperature_max")?,
            context_messages: limit("context_messages")?,
            client_instructions,
            widget: SiteWidget {
                title: row.try_get("widget_title")?,
                greeting: row.try_get("widget_greeting")?,
                suggestions: row.try_get("widget_suggestions")?,
                primary_color: row.try_get("widget_primary_color")?,
            },
            limits: caller_limits(row, "sites")?,
            visitor_limits: VisitorLimits {
                rpm: limit("visitor_rpm")?,
                rpd: limit("visitor_rpd")?,
                verified_rpm: limit("verified_rpm")?,
                verified_rpd: limit("verified_rpd")?,
            },
            conversations: {
                let column: Option<String> = row.try_get("conversations")?;
                ConversationSettings::from_column(column.as_deref())?
            },
            grounding: grounding_column(row.try_get("grounding")?)?,
        },
        is_demo: row.try_get("is_demo")?,
        verification: Verification {
            secret: row.try_get("visitor_secret")?,
            required: row.try_get("require_verified_visitor")?,
            mode: mode
                .parse()
                .map_err(|e| StoreError::Corrupt(format!("sites.visitor_token_mode: {e}")))?,
        },
        created_at: row.try_get("created_at")?,
        previous_key_lookup_id: row.try_get("previous_key_prefix")?,
        previous_key_expires_at: row.try_get("previous_expires_at")?,
    })
}

/// A site's origins, in the order they were given; a repeated one is kept once.
async fn insert_origins(
    tx: &mut sqlx::PgTransaction<'_>,
    site_id: &str,
    origins: &[String],
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO site_origins (site_id, origin) \
         SELECT $1, origin FROM UNNEST($2::text[]) WITH ORDINALITY AS given(origin, n) \
         ORDER BY n ON CONFLICT DO NOTHING",
    )
    .bind(site_id)
    .bind(origins)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

pub async fn create(pool: &PgPool, new: NewSite) -> Result<Site, StoreError> {
    let site = Site {
        id: new_id("site"),
        key_lookup_id: new.key_lookup_id,
        settings: new.settings,
        is_demo: new.is_demo,
        verification: Verification::default(),
        created_at: crate::unix_now(),
        previous_key_lookup_id: None,
        previous_key_expires_at: None,
    };
    let settings = &site.settings;
    let mut tx = pool.begin().await?;
    sqlx::query(
        "INSERT INTO sites (id, name, key_prefix, key_hash, allow_no_origin, models, \
         system_prompt, max_tokens, temperature_max, context_messages, is_demo, created_at, \
         widget_title, widget_greeting, widget_suggestions, widget_primary_color, rpm, rpd, \
         tpm, monthly_budget_micros, daily_budget_micros, visitor_rpm, visitor_rpd, \
         verified_rpm, verified_rpd, client_instructions, conversations, grounding) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, \
         $18, $19, $20, $21, $22, $23, $24, $25, $26, $27, $28)",
    )
    .bind(&site.id)
    .bind(&settings.name)
    .bind(&site.key_lookup_id)
    .bind(&new.key_hash[..])
    .bind(settings.allow_no_origin)
    .bind(&settings.models)
    .bind(&settings.system_prompt)
    .bind(settings.max_tokens.map(i64::from))
    .bind(settings.temperature_max)
    .bind(settings.context_messages.map(i64::from))
    .bind(site.is_demo)
    .bind(site.created_at)
    .bind(&settings.widget.title)
    .bind(&settings.widget.greeting)
    .bind(&settings.widget.suggestions)
    .bind(&settings.widget.primary_color)
    .bind(settings.limits.rpm.map(i64::from))
    .bind(settings.limits.rpd.map(i64::from))
    .bind(settings.limits.tpm.map(i64::from))
    .bind(money_column(settings.limits.monthly_budget_micros)?)
    .bind(money_column(settings.limits.daily_budget_micros)?)
    .bind(settings.visitor_limits.rpm.map(i64::from))
    .bind(settings.visitor_limits.rpd.map(i64::from))
    .bind(settings.visitor_limits.verified_rpm.map(i64::from))
    .bind(settings.visitor_limits.verified_rpd.map(i64::from))
    .bind(settings.client_instructions.map(ClientInstructions::as_str))
    .bind(settings.conversations.to_column())
    .bind(settings.grounding.as_str())
    .execute(&mut *tx)
    .await?;
    insert_origins(&mut tx, &site.id, &settings.origins).await?;
    tx.commit().await?;
    Ok(site)
}

async fn origins_of(pool: &PgPool, site_id: &str) -> Result<Vec<String>, StoreError> {
    let origins =
        sqlx::query_scalar("SELECT origin FROM site_origins WHERE site_id = $1 ORDER BY seq")
            .bind(site_id)
            .fetch_all(pool)
            .await?;
    Ok(origins)
}

async fn with_origins(pool: &PgPool, row: &PgRow) -> Result<Site, StoreError> {
    let mut site = site_from_row(row)?;
    site.settings.origins = origins_of(pool, &site.id).await?;
    Ok(site)
}

pub async fn list(pool: &PgPool) -> Result<Vec<Site>, StoreError> {
    let rows = sqlx::query(select_sites!("ORDER BY created_at, id")).fetch_all(pool).await?;
    let mut sites = Vec::with_capacity(rows.len());
    for row in &rows {
        sites.push(with_origins(pool, row).await?);
    }
    Ok(sites)
}

pub async fn get(pool: &PgPool, id: &str) -> Result<Option<Site>, StoreError> {
    let row = sqlx::query(select_sites!("WHERE id = $1")).bind(id).fetch_optional(pool).await?;
    match row {
        Some(row) => Ok(Some(with_origins(pool, &row).await?)),
        None => Ok(None),
    }
}

pub async fn delete(pool: &PgPool, id: &str) -> Result<bool, StoreError> {
    let mut tx = pool.begin().await?;
    // A deleted site's conversations go with it.
    sqlx::query("DELETE FROM conversation_feedback WHERE site_id = $1")
        .bind(id)
        .execute(&mut *tx)
        .await?;
    sqlx::query("DELETE FROM conversations WHERE site_id = $1").bind(id).execute(&mut *tx).await?;
    crate::knowledge::delete_site(&mut tx, id).await?;
    let done = sqlx::query("DELETE FROM sites WHERE id = $1").bind(id).execute(&mut *tx).await?;
    tx.commit().await?;
    Ok(done.rows_affected() > 0)
}

pub async fn set_conversations(
    pool: &PgPool,
    id: &str,
    settings: &ConversationSettings,
) -> Result<bool, StoreError> {
    let done = sqlx::query("UPDATE sites SET conversations = $1 WHERE id = $2")
        .bind(settings.to_column())
        .bind(id)
        .execute(pool)
        .await?;
    Ok(done.rows_affected() > 0)
}

pub async fn rekey(
    pool: &PgPool,
    id: &str,
    lookup_id: &str,
    key_hash: &[u8; 32],
    previous_expires_at: Option<i64>,
) -> Result<bool, StoreError> {
    // The current key becomes the previous one only when it is to keep working; otherwise any
    // previous key is forgotten with it.
    let done = sqlx::query(
        "UPDATE sites SET \
         previous_key_prefix = CASE WHEN $1::bigint IS NULL THEN NULL ELSE key_prefix END, \
         previous_key_hash = CASE WHEN $1::bigint IS NULL THEN NULL ELSE key_hash END, \
         previous_expires_at = $1, key_prefix = $2, key_hash = $3 WHERE id = $4",
    )
    .bind(previous_expires_at)
    .bind(lookup_id)
    .bind(&key_hash[..])
    .bind(id)
    .execute(pool)
    .await?;
    Ok(done.rows_affected() > 0)
}

pub async fn set_widget(pool: &PgPool, id: &str, widget: &SiteWidget) -> Result<bool, StoreError> {
    let done = sqlx::query(
        "UPDATE sites SET widget_title = $1, widget_greeting = $2, widget_suggestions = $3, \
         widget_primary_color = $4 WHERE id = $5",
    )
    .bind(&widget.title)
    .bind(&widget.greeting)
    .bind(&widget.suggestions)
    .bind(&widget.primary_color)
    .bind(id)
    .execute(pool)
    .await?;
    Ok(done.rows_affected() > 0)
}

pub async fn set_origins(pool: &PgPool, id: &str, origins: &[String]) -> Result<bool, StoreError> {
    let mut tx = pool.begin().await?;
    // Locking the site makes two concurrent replacements of its origins take turns: otherwise
    // the second's DELETE would not see the first's new rows, and the site would keep both lists.
    let exists: Option<i32> = sqlx::query_scalar("SELECT 1 FROM sites WHERE id = $1 FOR UPDATE")
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?;
    if exists.is_none() {
        return Ok(false);
    }
    sqlx::query("DELETE FROM site_origins WHERE site_id = $1").bind(id).execute(&mut *tx).await?;
    insert_origins(&mut tx, id, origins).await?;
    tx.commit().await?;
    Ok(true)
}

pub async fn set_limits(
    pool: &PgPool,
    id: &str,
    limits: &CallerLimits,
    visitor_limits: &VisitorLimits,
) -> Result<bool, StoreError> {
    let updated = sqlx::query(
        "UPDATE sites SET rpm = $1, rpd = $2, tpm = $3, monthly_budget_micros = $4, \
         daily_budget_micros = $5, visitor_rpm = $6, visitor_rpd = $7, verified_rpm = $8, \
         verified_rpd = $9 WHERE id = $10",
    )
    .bind(limits.rpm.map(i64::from))
    .bind(limits.rpd.map(i64::from))
    .bind(limits.tpm.map(i64::from))
    .bind(money_column(limits.monthly_budget_micros)?)
    .bind(money_column(limits.daily_budget_micros)?)
    .bind(visitor_limits.rpm.map(i64::from))
    .bind(visitor_limits.rpd.map(i64::from))
    .bind(visitor_limits.verified_rpm.map(i64::from))
    .bind(visitor_limits.verified_rpd.map(i64::from))
    .bind(id)
    .execute(pool)
    .await?;
    Ok(updated.rows_affected() > 0)
}

pub async fn set_client_instructions(
    pool: &PgPool,
    id: &str,
    setting: Option<ClientInstructions>,
) -> Result<bool, StoreError> {
    let updated = sqlx::query("UPDATE sites SET client_instructions = $1 WHERE id = $2")
        .bind(setting.map(ClientInstructions::as_str))
        .bind(id)
        .execute(pool)
        .await?;
    Ok(updated.rows_affected() > 0)
}

pub async fn set_grounding(
    pool: &PgPool,
    id: &str,
    grounding: Grounding,
) -> Result<bool, StoreError> {
    let updated = sqlx::query("UPDATE sites SET grounding = $1 WHERE id = $2")
        .bind(grounding.as_str())
        .bind(id)
        .execute(pool)
        .await?;
    Ok(updated.rows_affected() > 0)
}

pub async fn set_verification(
    pool: &PgPool,
    id: &str,
    verification: &Verification,
) -> Result<bool, StoreError> {
    let updated = sqlx::query(
        "UPDATE sites SET visitor_secret = $1, require_verified_visitor = $2, \
         visitor_token_mode = $3 WHERE id = $4",
    )
    .bind(&verification.secret)
    .bind(verification.required)
    .bind(verification.mode.as_str())
    .bind(id)
    .execute(pool)
    .await?;
    Ok(updated.rows_affected() > 0)
}
