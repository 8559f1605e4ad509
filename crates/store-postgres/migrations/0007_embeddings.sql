-- Passage embeddings (hybrid retrieval): at most one per passage, by the one model that made it
-- (`model`, an opaque name), as `dimensions` little-endian f32s in `vector`. An embedding goes
-- with its passage, so replacing or removing a document takes its embeddings with it; `site_id`
-- is the passage's, for reading and deleting a site's embeddings without a join.
CREATE TABLE knowledge_embeddings (
    passage_id BIGINT PRIMARY KEY REFERENCES knowledge_passages (id) ON DELETE CASCADE,
    site_id TEXT NOT NULL,
    model TEXT NOT NULL,
    dimensions BIGINT NOT NULL,
    vector BYTEA NOT NULL
);
CREATE INDEX knowledge_embeddings_by_site ON knowledge_embeddings (site_id, model);
