//! Secret API keys for server-side callers: creating, rotating and revoking them (the rules
//! shared by the CLI and the admin API), and recording when each was last used without a
//! database write per request.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use crate::config::Config;
use crate::sitekey::{KeyKind, NewKey};
use crate::store::{ApiKey, CallerLimits, NewApiKey, Scope, Store, StoreError};

/// What an operator asks for when creating a key.
#[derive(Debug, Clone, Default)]
pub struct KeySpec {
    pub name: String,
    pub scopes: Vec<Scope>,
    /// Empty: every model the relay serves.
    pub models: Vec<String>,
    pub limits: CallerLimits,
}

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("{field}: {problem}")]
    Invalid { field: &'static str, problem: String },
    #[error("no active key with id `{0}`")]
    NotFound(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn invalid(field: &'static str, problem: impl Into<String>) -> KeyError {
    KeyError::Invalid { field, problem: problem.into() }
}

/// A key just created or rotated, with its secret, which is shown once and never again.
#[derive(Debug)]
pub struct IssuedKey {
    pub key: ApiKey,
    pub secret: NewKey,
}

/// Validates the spec against the config and creates the key.
pub async fn create_key(
    store: &dyn Store,
    config: &Config,
    spec: KeySpec,
) -> Result<IssuedKey, KeyError> {
    let name = spec.name.trim().to_owned();
    if name.is_empty() {
        return Err(invalid("name", "must not be empty"));
    }
    if spec.scopes.is_empty() {
        return Err(invalid("scope", format!("give at least one scope ({})", Scope::names())));
    }
    let mut scopes = spec.scopes;
    scopes.sort();
    scopes.dedup();
    let served = config.served_models();
    for model in &spec.models {
        if !served.contains(model) {
            return Err(invalid(
                "model",
                format!(
                    "`{model}` is not served by any configured upstream (served: {})",
                    served.join(", ")
                ),
            ));
        }
    }
    check_limits(&spec.limits).map_err(|(field, problem)| invalid(field, problem))?;
    let secret = NewKey::generate(KeyKind::Secret);
    let key = store
        .create_api_key(NewApiKey {
            name,
            scopes,
            models: spec.models,
            limits: spec.limits,
            lookup_id: secret.lookup_id.clone(),
            key_hash: secret.hash,
        })
        .await?;
    Ok(IssuedKey { key, secret })
}

/// What is wrong with limits, if anything: a limit of 0 would lock a caller out entirely, and
/// that is what revoking (or deleting a site) is for. Shared by keys and sites.
pub fn check_limits(limits: &CallerLimits) -> Result<(), (&'static str, &'static str)> {
    for (field, value) in [("rpm", limits.rpm), ("rpd", limits.rpd), ("tpm", limits.tpm)] {
        if value == Some(0) {
            return Err((field, "must be at least 1 (leave it out for no limit)"));
        }
    }
    Ok(())
}

/// Gives a key a new secret; the old one keeps working for `grace`.
pub async fn rotate_key(
    store: &dyn Store,
    id: &str,
    grace: Duration,
) -> Result<IssuedKey, KeyError> {
    let secret = NewKey::generate(KeyKind::Secret);
    let grace = i64::try_from(grace.as_secs()).unwrap_or(i64::MAX);
    let expires = crate::unix_now_i64().saturating_add(grace);
    let key = store
        .rotate_api_key(id, &secret.lookup_id, &secret.hash, expires)
        .await?
        .ok_or_else(|| KeyError::NotFound(id.to_owned()))?;
    Ok(IssuedKey { key, secret })
}

/// Revokes a key and records the `key.revoked` webhook event, which the relay's delivery worker
/// sends (also when this runs in the CLI).
pub async fn revoke_key(store: &dyn Store, id: &str) -> Result<(), KeyError> {
    if !store.revoke_api_key(id, crate::unix_now_i64()).await? {
        return Err(KeyError::NotFound(id.to_owned()));
    }
    let recorded = match store.api_key(id).await {
        Ok(Some(key)) => crate::webhooks::record_key_revoked(store, &key).await,
        Ok(None) => Ok(()),
        Err(error) => Err(error),
    };
    // The key is revoked whatever happens here: failing the call would say otherwise.
    if let Err(error) = recorded {
        tracing::error!(%error, key = id, "key revoked, but its key.revoked webhook event is lost");
    }
    Ok(())
}

/// When keys were last used, kept in memory and written in batches (`flush`), so that a
/// request costs no database write.
#[derive(Debug, Default)]
pub struct KeyActivity {
    pending: Mutex<HashMap<String, i64>>,
}

impl KeyActivity {
    pub fn touch(&self, key_id: &str) {
        let mut pending = self.pending.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let at = crate::unix_now_i64();
        match pending.get_mut(key_id) {
            Some(last) => *last = at,
            None => {
                pending.insert(key_id.to_owned(), at);
            }
        }
    }

    /// Writes what was recorded since the last flush. On failure the entries are kept for the
    /// next one.
    pub async fn flush(&self, store: &dyn Store) -> Result<(), StoreError> {
        let batch: Vec<(String, i64)> = {
            let mut pending =
                self.pending.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            pending.drain().collect()
        };
        if batch.is_empty() {
            return Ok(());
        }
        if let Err(error) = store.touch_api_keys(&batch).await {
            let mut pending =
                self.pending.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            for (id, at) in batch {
                let entry = pending.entry(id).or_insert(at);
                *entry = (*entry).max(at);
            }
            return Err(error);
        }
        Ok(())
    }
}

/// A key as the CLI (`--json`) and the admin API show it: never its secret.
pub fn key_view(key: &ApiKey) -> serde_json::Value {
    serde_json::json!({
        "id": key.id,
        "name": key.name,
        "key_prefix": KeyKind::Secret.public(&key.lookup_id),
        "scopes": key.scopes.iter().map(|s| s.as_str()).collect::<Vec<_>>(),
        "models": key.models,
        "rpm": key.limits.rpm,
        "rpd": key.limits.rpd,
        "tpm": key.limits.tpm,
        "monthly_budget_micros": key.limits.monthly_budget_micros,
        "daily_budget_micros": key.limits.daily_budget_micros,
        "created_at": crate::rfc3339(key.created_at),
        "last_used_at": key.last_used_at.map(crate::rfc3339),
        "active": key.is_active(),
        "revoked_at": key.revoked_at.map(crate::rfc3339),
        "previous_key_prefix": key.previous_lookup_id.as_deref().map(|l| KeyKind::Secret.public(l)),
        "previous_expires_at": key.previous_expires_at.map(crate::rfc3339),
    })
}
