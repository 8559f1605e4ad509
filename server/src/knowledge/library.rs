//! [`Library`]: this relay's search indexes of every site's knowledge, built from the store at
//! start and rebuilt for a site whenever its knowledge version changes (another relay or the
//! CLI changed it: see [`Library::poll`]; this relay's admin API: [`Library::site_changed`]).
//!
//! **Architecture Invariant:** the index only proposes passage ids; what reaches a prompt is read
//! from the store by those ids at the moment of the request ([`Library::retrieve`]). A removed
//! document is therefore never retrieved again, on any relay, even before that relay has
//! rebuilt its index; and the relay keeps no second copy of every site's text in memory.
//!
//! With `[knowledge.embeddings]`, a site's shelf also holds the vectors of its passages by the
//! configured model ([`Vectors`], read at each rebuild), and a question is embedded by that
//! model and retrieved by [`SiteIndex::search_hybrid`]; a site whose passages have no vectors
//! yet, or a question whose embedding failed, is retrieved by BM25 alone.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use confab_knowledge::{Dense, IndexedPassage, SiteIndex, Vectors};
use confab_store::knowledge::Passage;

use super::embed::Embedder;

use crate::store::{Store, StoreError};

/// One site's index.
struct SiteShelf {
    /// The knowledge version it was built from.
    version: i64,
    index: Arc<SiteIndex>,
    /// Its passages' embeddings by the configured model (`None`: no embedder, or none yet).
    vectors: Option<Arc<Vectors>>,
}

/// Every site's index on this relay. Sites without knowledge have none, and their requests
/// are not touched.
pub struct Library {
    store: Arc<dyn Store>,
    embedder: Option<Arc<Embedder>>,
    shelves: RwLock<HashMap<String, SiteShelf>>,
    /// One rebuild at a time: a poll and an admin change of the same site never race to
    /// install an older index over a newer one.
    rebuilding: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for Library {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let sites = self.shelves.read().map(|s| s.len()).unwrap_or_default();
        f.debug_struct("Library").field("sites", &sites).finish_non_exhaustive()
    }
}

/// Passages found for a question, best first, as they are in the store now.
#[derive(Debug, Clone)]
pub struct Found {
    pub passages: Vec<Passage>,
}

impl Library {
    /// An empty library; [`Library::load`] fills it. With an `embedder`, retrieval is hybrid.
    pub fn new(store: Arc<dyn Store>, embedder: Option<Arc<Embedder>>) -> Self {
        Self {
            store,
            embedder,
            shelves: RwLock::new(HashMap::new()),
            rebuilding: tokio::sync::Mutex::new(()),
        }
    }

    /// Builds the index of every site whose knowledge changed since it was last built, and
    /// drops those of sites that have none any more; how many sites were (re)built. A site
    /// whose rebuild fails keeps the index it had (none at start) and is tried again at the next
    /// poll: one site's unreadable knowledge never keeps the others' from being built.
    pub async fn load(&self) -> Result<usize, StoreError> {
        let _one = self.rebuilding.lock().await;
        let versions = self.store.knowledge_versions().await?;
        let known: HashMap<String, i64> = {
            let shelves = self.shelves.read().unwrap_or_else(std::sync::PoisonError::into_inner);
            shelves.iter().map(|(site, shelf)| (site.clone(), shelf.version)).collect()
        };
        let mut rebuilt = 0;
        for version in &versions {
            if known.get(&version.site_id) != Some(&version.version) {
                match self.rebuild(&version.site_id, version.version).await {
                    Ok(()) => rebuilt += 1,
                    Err(error) => tracing::warn!(
                        site = %version.site_id,
                        %error,
                        "cannot build the site's knowledge index; the next poll retries"
                    ),
                }
            }
        }
        let mut shelves = self.shelves.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        shelves.retain(|site, _| versions.iter().any(|v| &v.site_id == site));
        Ok(rebuilt)
    }

    /// This relay changed `site`'s knowledge: its index is rebuilt now rather than at the next
    /// poll.
    pub async fn site_changed(&self, site: &str) {
        if let Err(error) = self.load().await {
            tracing::warn!(%site, %error, "cannot rebuild the knowledge index; the next poll retries");
        }
    }

    /// Reads the site's passages (at `version` or later) and installs a new index of them, or
    /// drops the site's index when it has none.
    async fn rebuild(&self, site: &str, version: i64) -> Result<(), StoreError> {
        let passages = self.store.site_passages(site).await?;
        if passages.is_empty() {
            self.shelves.write().unwrap_or_else(std::sync::PoisonError::into_inner).remove(site);
            return Ok(());
        }
        let count = passages.len();
        let started = std::time::Instant::now();
        // Indexing is CPU work (about 0.1 s per 1,000 passages): off the async workers.
        let built = tokio::task::spawn_blocking(move || {
            let index = SiteIndex::new()?;
            let indexed: Vec<IndexedPassage> = passages.into_iter().map(indexed).collect();
            index.add(&indexed)?;
            Ok::<_, confab_knowledge::IndexError>(index)
        })
        .await;
        let index = match built {
            Ok(Ok(index)) => index,
            Ok(Err(error)) => return Err(StoreError::Corrupt(format!("knowledge index: {error}"))),
            Err(join) => return Err(StoreError::Corrupt(format!("knowledge index: {join}"))),
        };
        // Vectors are optional: unreadable ones leave the site to BM25, never without an index.
        let vectors = match &self.embedder {
            Some(embedder) => self.vectors(site, embedder).await.unwrap_or_else(|error| {
                tracing::warn!(%site, %error, "cannot read the site's passage embeddings; BM25 alone");
                None
            }),
            None => None,
        };
        tracing::info!(
            %site,
            passages = count,
            embedded = vectors.as_ref().map_or(0, |v| v.len()),
            ms = started.elapsed().as_millis() as u64,
            "knowledge index built"
        );
        let shelf = SiteShelf { version, index: Arc::new(index), vectors };
        self.shelves
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(site.to_owned(), shelf);
        Ok(())
    }

    /// The site's passage embeddings by the embedder's model, `None` when it has none. A
    /// vector of another length than the first (a model that changed its length under the same
    /// name) is left out with a warning; setting `dimensions` (which changes the model's key)
    /// makes the next add or refresh embed the site again.
    async fn vectors(
        &self,
        site: &str,
        embedder: &Embedder,
    ) -> Result<Option<Arc<Vectors>>, StoreError> {
        let embeddings = self.store.site_embeddings(site, embedder.key()).await?;
        if embeddings.is_empty() {
            return Ok(None);
        }
        let mut vectors = Vectors::new();
        let mut refused = 0_usize;
        for embedding in &embeddings {
            let Ok(id) = u64::try_from(embedding.passage_id) else { continue };
            if vectors.push(id, &embedding.vector).is_err() {
                refused += 1;
            }
        }
        if refused > 0 {
            tracing::warn!(%site, refused, model = embedder.key(), "passage embeddings of another length were left out");
        }
        Ok((!vectors.is_empty()).then(|| Arc::new(vectors)))
    }

    /// The embedder of `[knowledge.embeddings]`, for ingestion.
    pub fn embedder(&self) -> Option<&Embedder> {
        self.embedder.as_deref()
    }

    /// Whether `site` has knowledge on this relay.
    pub fn has(&self, site: &str) -> bool {
        self.index(site).is_some()
    }

    fn index(&self, site: &str) -> Option<Arc<SiteIndex>> {
        self.shelf(site).map(|(index, _)| index)
    }

    fn shelf(&self, site: &str) -> Option<(Arc<SiteIndex>, Option<Arc<Vectors>>)> {
        let shelves = self.shelves.read().unwrap_or_else(std::sync::PoisonError::into_inner);
        shelves.get(site).map(|shelf| (Arc::clone(&shelf.index), shelf.vectors.clone()))
    }

    /// The `k` passages of `site` that best answer the latest of `user_messages` (oldest first;
    /// the earlier ones help with follow-ups), best first, read from the store. `None`: the site
    /// has no knowledge here. Passages removed since the index was built are left out.
    pub async fn retrieve(
        &self,
        site: &str,
        user_messages: &[&str],
        k: usize,
    ) -> Result<Option<Found>, StoreError> {
        let Some((index, vectors)) = self.shelf(site) else { return Ok(None) };
        let question = match (&self.embedder, vectors.as_deref()) {
            (Some(embedder), Some(vectors)) => embedder
                .question(SiteIndex::embedding_text(user_messages), vectors.dimensions())
                .await
                .map(|query| (embedder, vectors, query)),
            _ => None,
        };
        let dense = question.as_ref().map(|(embedder, vectors, query)| Dense {
            vectors,
            query,
            min_similarity: embedder.min_similarity(),
        });
        let hits = index.search_hybrid(user_messages, dense, k).map_err(|error| {
            StoreError::Corrupt(format!("knowledge index of site {site}: {error}"))
        })?;
        if hits.is_empty() {
            return Ok(Some(Found { passages: Vec::new() }));
        }
        let ids: Vec<i64> = hits.iter().filter_map(|hit| i64::try_from(hit.id).ok()).collect();
        let mut stored = self.store.passages(site, &ids).await?;
        // Best first, as the index ranked them.
        stored.sort_by_key(|p| ids.iter().position(|id| *id == p.id).unwrap_or(usize::MAX));
        Ok(Some(Found { passages: stored }))
    }

    /// Polls the store every `every` for knowledge changed elsewhere, until dropped.
    pub async fn poll(self: Arc<Self>, every: Duration) {
        let mut ticks = tokio::time::interval(every);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticks.tick().await;
        loop {
            ticks.tick().await;
            if let Err(error) = self.load().await {
                tracing::warn!(%error, "cannot look for changed knowledge; will retry");
            }
        }
    }
}

fn indexed(passage: Passage) -> IndexedPassage {
    IndexedPassage {
        id: passage.id as u64,
        document: passage.document_id as u64,
        title: passage.title,
        heading_path: passage.heading_path,
        text: passage.text,
    }
}
