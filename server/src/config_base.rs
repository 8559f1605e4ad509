//! The leaf of configuration: [`ConfigError`], [`Secret`] and [`parse_http_url`], which every
//! section's validation uses, wherever that section is defined, and [`ClientInstructions`], a
//! `[policy]` setting that sites store too (so the store need not import `config`).
//!
//! They live here rather than in `config` so that a section defined beside the code it
//! configures (`webhooks::config`) can use them without importing `config`, which imports that
//! section: `config` → `webhooks::config` → `config_base`, with no cycle. This module imports
//! nothing from the crate. `config` re-exports them all, so `crate::config::Secret` and the
//! like keep working.

use std::path::PathBuf;

/// A secret value whose `Debug` never shows it (the providers' own type, which holds their keys).
pub use confab_providers::Secret;

/// A configuration that cannot be used, with the field at fault.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config file {0} does not exist")]
    MissingFile(PathBuf),
    #[error("invalid configuration: {}", describe_figment_error(.0))]
    Parse(Box<figment::Error>),
    #[error("invalid configuration: `{field}` {problem}")]
    Invalid { field: String, problem: String },
}

/// `figment`'s own message names its internal profile (`default.timeouts.idle_ms`); this one
/// names the field as a user writes it, and where the bad value came from.
fn describe_figment_error(error: &figment::Error) -> String {
    error
        .clone()
        .into_iter()
        .map(|e| {
            let mut text = if e.path.is_empty() {
                e.kind.to_string()
            } else {
                format!("`{}`: {}", e.path.join("."), e.kind)
            };
            if let Some(source) = e.metadata.as_ref().and_then(|m| m.source.as_ref()) {
                text.push_str(&format!(" (in {source})"));
            } else if let Some(metadata) = &e.metadata {
                text.push_str(&format!(" (in {})", metadata.name));
            }
            text
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// Accepts `http://` and `https://` URLs with a host.
pub fn parse_http_url(value: &str) -> Result<url::Url, String> {
    let url = url::Url::parse(value).map_err(|e| format!("is not a valid URL ({e})"))?;
    if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
        return Err("must be an http:// or https:// URL with a host".into());
    }
    Ok(url)
}

pub use confab_store::ClientInstructions;
