//! [`Embedder`]: the embedding model of `[knowledge.embeddings]`, called through its upstream's
//! provider (`Provider::embed`, an OpenAI-compatible `POST {base_url}/embeddings` with the
//! upstream's key), for hybrid retrieval. Ingestion embeds the passages that have no vector by
//! the configured model yet ([`embed_missing`]); each grounded request embeds its question
//! ([`Embedder::question`]), and a question whose embedding fails or is late is retrieved by
//! BM25 alone: an embedding model's outage never fails a visitor's request.

use std::sync::Arc;
use std::time::Duration;

use confab_providers::{Call, EmbeddingRequest, Provider, UpstreamError};
use confab_store::knowledge::PassageEmbedding;
use prometheus_client::metrics::counter::Counter;

use super::config::EmbeddingsConfig;
use crate::config::{Config, ConfigError};
use crate::store::{Store, StoreError};
use crate::upstreams::Upstreams;

/// Passages read from the store per round of [`embed_missing`]: their vectors are stored in
/// one transaction (one version bump, so one index rebuild per relay per round).
const ROUND: usize = 1_024;

/// The configured embedding model and how to reach it.
pub struct Embedder {
    provider: Arc<dyn Provider>,
    config: EmbeddingsConfig,
    /// [`EmbeddingsConfig::key`], what the store files vectors under.
    key: String,
    /// Questions retrieved by BM25 alone because their embedding failed
    /// (`confab_knowledge_embedding_fallbacks_total`).
    fallbacks: Counter,
}

impl std::fmt::Debug for Embedder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Embedder").field("key", &self.key).finish_non_exhaustive()
    }
}

/// Why passages could not be embedded.
#[derive(Debug, thiserror::Error)]
pub enum EmbedError {
    #[error("the embedding model `{model}` failed: {error}")]
    Upstream { model: String, error: UpstreamError },
    #[error("the embedding model `{model}` did not answer within {} ms", after.as_millis())]
    Timeout { model: String, after: Duration },
    /// Vectors that do not fit together (a length that changed between calls, or past
    /// `confab_knowledge::MAX_DIMENSIONS`), or that the store refused as such.
    #[error("the embedding model `{model}` made unusable vectors: {problem}")]
    Unusable { model: String, problem: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl Embedder {
    /// The embedder of `[knowledge.embeddings]`, if configured, with the provider of the
    /// upstream it names (checked by `Config::validate` to be one with an embeddings API).
    pub fn from_config(
        config: &Config,
        upstreams: &Upstreams,
        fallbacks: Counter,
    ) -> Result<Option<Arc<Self>>, ConfigError> {
        let Some(embeddings) = &config.knowledge.embeddings else { return Ok(None) };
        let invalid = |problem: String| ConfigError::Invalid {
            field: "knowledge.embeddings.upstream".into(),
            problem,
        };
        let provider = upstreams
            .provider(&embeddings.upstream)
            .ok_or_else(|| invalid(format!("names no upstream: `{}`", embeddings.upstream)))?;
        if !provider.embeds() {
            return Err(invalid(format!("`{}` has no embeddings API", embeddings.upstream)));
        }
        Ok(Some(Arc::new(Self {
            provider,
            key: embeddings.key(),
            config: embeddings.clone(),
            fallbacks,
        })))
    }

    /// The embedder of `[knowledge.embeddings]` for a command that serves nothing (`confab
    /// knowledge`): it reads the upstreams' keys only when embeddings are configured.
    pub fn standalone(config: &Config) -> Result<Option<Arc<Self>>, ConfigError> {
        if config.knowledge.embeddings.is_none() {
            return Ok(None);
        }
        Self::from_config(config, &Upstreams::from_config(config)?, Counter::default())
    }

    /// What the store files this model's vectors under.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The vectors of `texts`, in order, in calls of `batch` texts, each within
    /// `ingest_timeout_ms`; all of one length (the provider checks each call, this the calls
    /// together), and at most `confab_knowledge::MAX_DIMENSIONS`.
    pub async fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, EmbedError> {
        let mut vectors: Vec<Vec<f32>> = Vec::with_capacity(texts.len());
        for batch in texts.chunks(self.config.batch) {
            vectors.extend(self.call(batch, self.config.ingest_timeout()).await?);
        }
        let length = vectors.first().map_or(0, Vec::len);
        if length > confab_knowledge::MAX_DIMENSIONS {
            return Err(self.unusable(format!(
                "{length} dimensions, more than {}",
                confab_knowledge::MAX_DIMENSIONS
            )));
        }
        if let Some(other) = vectors.iter().map(Vec::len).find(|l| *l != length) {
            return Err(self.unusable(format!("lengths of {length} and {other} in one ingestion")));
        }
        Ok(vectors)
    }

    fn unusable(&self, problem: String) -> EmbedError {
        EmbedError::Unusable { model: self.config.model.clone(), problem }
    }

    /// The cosine below which a passage is not proposed by its embedding.
    pub fn min_similarity(&self) -> f32 {
        self.config.min_similarity
    }

    /// A question retrieved by BM25 alone although its site has embeddings: logged and counted.
    fn fell_back(&self, why: &dyn std::fmt::Display) {
        self.fallbacks.inc();
        tracing::warn!(model = %self.key, %why, "a question was retrieved by BM25 alone");
    }

    /// The embedding of a question (see `SiteIndex::embedding_text`), or `None` when the model
    /// failed, was later than `query_timeout_ms`, or made a vector of another length than the
    /// site's `dimensions`: logged and counted, and the request goes on with BM25 alone.
    pub async fn question(&self, text: String, dimensions: usize) -> Option<Vec<f32>> {
        match self.call(&[text], self.config.query_timeout()).await {
            Ok(mut vectors) => match vectors.pop() {
                Some(question) if question.len() == dimensions => Some(question),
                other => {
                    let length = other.map_or(0, |v| v.len());
                    let why = format!(
                        "the question's embedding has {length} dimensions, the site's {dimensions}"
                    );
                    self.fell_back(&why);
                    None
                }
            },
            Err(error) => {
                self.fell_back(&error);
                None
            }
        }
    }

    async fn call(&self, texts: &[String], limit: Duration) -> Result<Vec<Vec<f32>>, EmbedError> {
        let model = &self.config.model;
        let request = EmbeddingRequest::new(model, texts, self.config.dimensions);
        match tokio::time::timeout(limit, self.provider.embed(&request, Call::default())).await {
            Ok(Ok(vectors)) => Ok(vectors),
            Ok(Err(error)) => Err(EmbedError::Upstream { model: model.clone(), error }),
            Err(_) => Err(EmbedError::Timeout { model: model.clone(), after: limit }),
        }
    }
}

/// Embeds every passage of the site that has no vector by the embedder's model yet (all of
/// them after a model change), [`ROUND`] at a time, adding how many were stored to `embedded`
/// (also when it fails part way). A failure stops it: what was stored stays, and the next
/// ingestion or `knowledge refresh` goes on from there. It reads each passage at most once: a
/// passage found without a vector again (another relay or CLI embedding the site by another
/// model meanwhile, since a passage keeps one vector) ends it rather than taking turns forever.
pub async fn embed_missing(
    store: &dyn Store,
    embedder: &Embedder,
    site_id: &str,
    embedded: &mut u64,
) -> Result<(), EmbedError> {
    let mut seen = std::collections::HashSet::new();
    loop {
        let passages = store.passages_without_embedding(site_id, embedder.key(), ROUND).await?;
        if passages.is_empty() || !passages.iter().all(|p| seen.insert(p.id)) {
            return Ok(());
        }
        let texts: Vec<String> = passages
            .iter()
            .map(|p| confab_knowledge::embedding_passage_text(&p.title, &p.heading_path, &p.text))
            .collect();
        let vectors = embedder.embed(&texts).await?;
        let embeddings: Vec<PassageEmbedding> = passages
            .iter()
            .zip(vectors)
            .map(|(passage, vector)| PassageEmbedding { passage_id: passage.id, vector })
            .collect();
        let stored = match store.put_embeddings(site_id, embedder.key(), &embeddings).await {
            Ok(stored) => stored,
            Err(StoreError::Invalid(problem)) => return Err(embedder.unusable(problem)),
            Err(error) => return Err(error.into()),
        };
        *embedded += stored;
        // Every passage read was just embedded, unless it was removed meanwhile.
        if stored == 0 {
            return Ok(());
        }
    }
}
