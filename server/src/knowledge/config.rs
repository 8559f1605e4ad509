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
    /// Hybrid retrieval: passages and questions embedded by an upstream's embedding model, and
    /// its ranking fused with BM25's. Off (BM25 alone) unless this section is given.
    pub embeddings: Option<EmbeddingsConfig>,
}

/// `[knowledge.embeddings]`: which model embeds a site's passages (at ingestion) and its
/// visitors' questions (one call per grounded request).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmbeddingsConfig {
    /// `[[upstreams]] name` of an upstream with an embeddings API (kind `openai`: OpenAI and
    /// the servers compatible with it, which serve `POST {base_url}/embeddings`).
    pub upstream: String,
    /// The embedding model, e.g. `text-embedding-3-small`.
    pub model: String,
    /// Shorter vectors, for models that can make them (`text-embedding-3-*`): less memory per
    /// passage (4 bytes a dimension in the database, 1 on every relay) and faster searches.
    #[serde(default)]
    pub dimensions: Option<u32>,
    /// Passages per embeddings call at ingestion (at most 256: an answer of floats as JSON is
    /// some 30 bytes a value, and the relay reads at most 8 MB of one).
    #[serde(default = "default_batch")]
    pub batch: usize,
    /// The cosine below which a passage is not proposed by its embedding (it may still be by
    /// its words): unrelated texts are never at 0 with a real model, and without a floor a
    /// greeting would be given sources. Model-dependent: 0.3 suits all-MiniLM-L6-v2 (see
    /// BENCHMARKS.md); measure yours with `scripts/eval-knowledge --embeddings URL`.
    #[serde(default = "default_min_similarity")]
    pub min_similarity: f32,
    /// How long a question's embedding is waited for; past it (or when the call fails) the
    /// request is grounded by BM25 alone.
    #[serde(default = "default_query_timeout_ms")]
    pub query_timeout_ms: u64,
    /// One embeddings call at ingestion, at most.
    #[serde(default = "default_ingest_timeout_ms")]
    pub ingest_timeout_ms: u64,
}

fn default_batch() -> usize {
    64
}

fn default_min_similarity() -> f32 {
    confab_knowledge::DEFAULT_MIN_SIMILARITY
}

fn default_query_timeout_ms() -> u64 {
    1_000
}

fn default_ingest_timeout_ms() -> u64 {
    60_000
}

impl EmbeddingsConfig {
    /// What the store files the vectors under: the upstream, the model and the length asked
    /// for. Changing any of them makes the stored vectors another model's, which are then
    /// neither used nor kept (the next ingestion or refresh embeds the passages again).
    pub fn key(&self) -> String {
        match self.dimensions {
            Some(dimensions) => format!("{}:{}@{dimensions}", self.upstream, self.model),
            None => format!("{}:{}", self.upstream, self.model),
        }
    }

    pub fn query_timeout(&self) -> Duration {
        Duration::from_millis(self.query_timeout_ms)
    }

    pub fn ingest_timeout(&self) -> Duration {
        Duration::from_millis(self.ingest_timeout_ms)
    }
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
            embeddings: None,
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
        if let Some(embeddings) = &self.embeddings {
            if embeddings.model.trim().is_empty() {
                return Err(invalid("embeddings.model", "must not be empty"));
            }
            if embeddings.dimensions == Some(0) {
                return Err(invalid("embeddings.dimensions", "must be greater than 0"));
            }
            if !(1..=256).contains(&embeddings.batch) {
                return Err(invalid("embeddings.batch", "must be between 1 and 256"));
            }
            if !(0.0..1.0).contains(&embeddings.min_similarity) {
                return Err(invalid(
                    "embeddings.min_similarity",
                    "must be at least 0 and less than 1 (a cosine)",
                ));
            }
            if embeddings.query_timeout_ms == 0 || embeddings.ingest_timeout_ms == 0 {
                return Err(invalid("embeddings", "timeouts must be greater than 0"));
            }
        }
        Ok(())
    }
}
