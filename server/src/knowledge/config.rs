//! The `[knowledge]` section: how much a site may hold, how much of it goes into a prompt, how
//! often relays look for changes, and how politely its pages are fetched.

use std::time::Duration;

use confab_store::knowledge::KnowledgeCaps;
use serde::{Deserialize, Serialize};

use super::fetch::FetchLimits;
use crate::config_base::ConfigError;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KnowledgeConfig {
    /// Documents one site may hold; an add past it is refused and changes nothing.
    pub max_documents_per_site: u64,
    /// Passages one site may hold (all its documents together).
    pub max_passages_per_site: u64,
    /// One document (a file or a page), at most; a larger one is refused with its name.
    pub max_document_bytes: u64,
    /// Passages retrieved for a question, at most.
    pub top_k: usize,
    /// Tokens of sources added to a prompt, at most (about 4 bytes each). They count against
    /// the context limit (`policy.context_bytes`, of which they take at most half) and the
    /// request's budget reservation.
    pub max_context_tokens: u32,
    /// How often a relay looks for sites whose knowledge changed (through another relay or the
    /// CLI) and rebuilds their index.
    pub poll_ms: u64,
    /// Between two requests to one origin while fetching pages, at least.
    pub fetch_interval_ms: u64,
    /// One page request, at most.
    pub fetch_timeout_ms: u64,
    /// Pages a sitemap (with the sitemaps it names) may list.
    pub max_sitemap_pages: usize,
}

impl Default for KnowledgeConfig {
    fn default() -> Self {
        Self {
            max_documents_per_site: 2_000,
            max_passages_per_site: 20_000,
            max_document_bytes: 5 * 1024 * 1024,
            top_k: 4,
            max_context_tokens: 1_500,
            poll_ms: 2_000,
            fetch_interval_ms: 250,
            fetch_timeout_ms: 20_000,
            max_sitemap_pages: 1_000,
        }
    }
}

impl KnowledgeConfig {
    pub fn caps(&self) -> KnowledgeCaps {
        KnowledgeCaps {
            documents: self.max_documents_per_site,
            passages: self.max_passages_per_site,
        }
    }

    pub fn poll(&self) -> Duration {
        Duration::from_millis(self.poll_ms)
    }

    /// The limits of ingestion (`confab-knowledge`), with this section's document size.
    pub fn ingest_limits(&self) -> confab_knowledge::Limits {
        confab_knowledge::Limits {
            max_document_bytes: usize::try_from(self.max_document_bytes).unwrap_or(usize::MAX),
            ..confab_knowledge::Limits::default()
        }
    }

    /// The limits of fetching pages and sitemaps.
    pub fn fetch_limits(&self) -> FetchLimits {
        FetchLimits {
            max_bytes: self.max_document_bytes,
            max_pages: self.max_sitemap_pages,
            interval: Duration::from_millis(self.fetch_interval_ms),
            timeout: Duration::from_millis(self.fetch_timeout_ms),
            ..FetchLimits::default()
        }
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |field: &str, problem: &str| ConfigError::Invalid {
            field: format!("knowledge.{field}"),
            problem: problem.to_owned(),
        };
        for (field, value) in [
            ("max_documents_per_site", self.max_documents_per_site),
            ("max_passages_per_site", self.max_passages_per_site),
            ("max_document_bytes", self.max_document_bytes),
            ("top_k", self.top_k as u64),
            ("max_context_tokens", u64::from(self.max_context_tokens)),
            ("poll_ms", self.poll_ms),
            ("fetch_timeout_ms", self.fetch_timeout_ms),
            ("max_sitemap_pages", self.max_sitemap_pages as u64),
        ] {
            if value == 0 {
                return Err(invalid(field, "must be greater than 0"));
            }
        }
        if self.top_k > 20 {
            return Err(invalid("top_k", "must be at most 20"));
        }
        Ok(())
    }
}
