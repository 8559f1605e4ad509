//! `confab keys ...`: secret API keys for server-side callers.

use std::time::Duration;

use anyhow::bail;
use clap::{Args, Subcommand};
use serde_json::json;

use super::print_flush;
use crate::config::Config;
use crate::keys::{self, IssuedKey, KeySpec};
use crate::sitekey::KeyKind;
use crate::store::{ApiKey, CallerLimits, Scope, Store};

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Create a secret API key and print it (shown once).
    Create(CreateKeyArgs),
    /// List keys (never their secrets).
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Give a key a new secret; the old one keeps working for a grace period.
    Rotate {
        id: String,
        /// How long the old secret keeps working, in seconds; 0 stops it at once
        /// [default: keys.rotation_grace_secs].
        #[arg(long, value_name = "SECS")]
        grace: Option<u64>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Revoke a key; it stops working at once.
    Revoke { id: String },
}

#[derive(Debug, Args)]
pub struct CreateKeyArgs {
    /// A name for people (shown in listings).
    #[arg(long)]
    pub name: String,
    /// What the key may do: chat, models, usage, tools (repeatable). `tools` lets its chat
    /// requests use function calling and `response_format`.
    #[arg(long = "scope", value_name = "SCOPE", value_parser = parse_scope, required = true)]
    pub scopes: Vec<Scope>,
    /// A model the key may use (repeatable) [default: every model the relay serves].
    #[arg(long = "model", value_name = "MODEL")]
    pub models: Vec<String>,
    #[command(flatten)]
    pub limits: super::CallerLimitArgs,
    /// Print one JSON object (with `id` and `key`).
    #[arg(long)]
    pub json: bool,
}

fn parse_scope(text: &str) -> Result<Scope, String> {
    Scope::from_name(text)
        .ok_or_else(|| format!("unknown scope `{text}` (known: {})", Scope::names()))
}

/// US dollars (`25`, `12.5`, `0.000001`) as micro-dollars, without going through a float.
pub fn parse_usd(text: &str) -> Result<u64, String> {
    let text = text.trim().trim_start_matches('$');
    let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(whole) || (!fraction.is_empty() && !digits(fraction)) || fraction.len() > 6 {
        return Err(format!(
            "`{text}` is not an amount in dollars (like 25 or 12.50, at most 6 decimals)"
        ));
    }
    let whole: u64 = whole.parse().map_err(|_| format!("`{text}` is too large"))?;
    let micros: u64 = format!("{fraction:0<6}").parse().map_err(|_| format!("`{text}`?"))?;
    whole
        .checked_mul(1_000_000)
        .and_then(|w| w.checked_add(micros))
        .ok_or_else(|| format!("`{text}` is too large"))
}

/// Micro-dollars as `$12.50` (cents; sub-cent amounts keep their digits).
pub(super) fn format_usd(micros: u64) -> String {
    let (dollars, rest) = (micros / 1_000_000, micros % 1_000_000);
    if rest % 10_000 == 0 {
        format!("${dollars}.{:02}", rest / 10_000)
    } else {
        format!("${dollars}.{rest:06}")
    }
}

pub async fn run(command: KeysCommand, config: &Config, store: &dyn Store) -> anyhow::Result<()> {
    match command {
        KeysCommand::Create(args) => {
            let spec = KeySpec {
                name: args.name,
                scopes: args.scopes,
                models: args.models,
                limits: args.limits.limits(),
            };
            let issued = keys::create_key(store, config, spec).await?;
            print_issued(&issued, args.json, "Secret key (shown once; keep it on your server)");
        }
        KeysCommand::List { json } => {
            let keys = store.list_api_keys().await?;
            if json {
                let list: Vec<_> = keys.iter().map(keys::key_view).collect();
                print_flush(&format!("{}\n", serde_json::Value::Array(list)));
            } else if keys.is_empty() {
                print_flush("No keys yet. Create one with `confab keys create`.\n");
            } else {
                let mut out = format!(
                    "{:<16} {:<20} {:<34} {:<20} {:<22} {:<22} {}\n",
                    "ID", "NAME", "KEY", "SCOPES", "CREATED", "LAST USED", "ACTIVE"
                );
                for key in &keys {
                    out.push_str(&format!(
                        "{:<16} {:<20} {:<34} {:<20} {:<22} {:<22} {}\n",
                        key.id,
                        key.name,
                        KeyKind::Secret.public(&key.lookup_id),
                        scopes_text(key),
                        crate::rfc3339(key.created_at),
                        key.last_used_at.map_or_else(|| "never".into(), crate::rfc3339),
                        if key.is_active() { "yes" } else { "revoked" },
                    ));
                }
                print_flush(&out);
            }
        }
        KeysCommand::Rotate { id, grace, json } => {
            let grace = Duration::from_secs(grace.unwrap_or(config.keys.rotation_grace_secs));
            let issued = keys::rotate_key(store, &id, grace).await?;
            let note = match issued.key.previous_expires_at {
                Some(until) if !grace.is_zero() => format!(
                    "New secret (shown once); the previous one keeps working until {}",
                    crate::rfc3339(until)
                ),
                _ => "New secret (shown once); the previous one no longer works".to_owned(),
            };
            print_issued(&issued, json, &note);
        }
        KeysCommand::Revoke { id } => match keys::revoke_key(store, &id).await {
            Ok(()) => print_flush(&format!("Revoked key {id}; it no longer works.\n")),
            Err(keys::KeyError::NotFound(_)) => {
                bail!("no active key with id `{id}` (see `confab keys list`)")
            }
            Err(error) => return Err(error.into()),
        },
    }
    Ok(())
}

fn print_issued(issued: &IssuedKey, json_output: bool, note: &str) {
    if json_output {
        let mut value = keys::key_view(&issued.key);
        value["key"] = json!(issued.secret.reveal());
        print_flush(&format!("{value}\n"));
    } else {
        print_flush(&format!("{}\n{note}:\n  {}\n", describe(&issued.key), issued.secret.reveal()));
    }
}

fn scopes_text(key: &ApiKey) -> String {
    key.scopes.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(",")
}

pub(super) fn limits_text(limits: &CallerLimits) -> String {
    let mut parts = Vec::new();
    for (name, value) in [("rpm", limits.rpm), ("rpd", limits.rpd), ("tpm", limits.tpm)] {
        if let Some(value) = value {
            parts.push(format!("{value} {name}"));
        }
    }
    if let Some(micros) = limits.monthly_budget_micros {
        parts.push(format!("{} a month", format_usd(micros)));
    }
    if let Some(micros) = limits.daily_budget_micros {
        parts.push(format!("{} a day", format_usd(micros)));
    }
    if parts.is_empty() { "none".into() } else { parts.join(", ") }
}

fn describe(key: &ApiKey) -> String {
    format!(
        "Key {id} \"{name}\"\n  key:      {prefix}\n  scopes:   {scopes}\n  models:   {models}\n  \
         limits:   {limits}\n  created:  {created}",
        id = key.id,
        name = key.name,
        prefix = KeyKind::Secret.public(&key.lookup_id),
        scopes = scopes_text(key),
        models = if key.models.is_empty() { "all served".into() } else { key.models.join(", ") },
        limits = limits_text(&key.limits),
        created = crate::rfc3339(key.created_at),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dollar_amounts_become_exact_micro_dollars() {
        assert_eq!(parse_usd("25"), Ok(25_000_000));
        assert_eq!(parse_usd("12.5"), Ok(12_500_000));
        assert_eq!(parse_usd("$0.000001"), Ok(1));
        assert_eq!(parse_usd("0.10"), Ok(100_000));
        for bad in ["", "-1", "1.2.3", "1.0000001", "abc", "1e3", ".5", "99999999999999999999"] {
            assert!(parse_usd(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn micro_dollars_print_as_dollars_and_cents() {
        assert_eq!(format_usd(12_500_000), "$12.50");
        assert_eq!(format_usd(0), "$0.00");
        assert_eq!(format_usd(1), "$0.000001");
    }
}
