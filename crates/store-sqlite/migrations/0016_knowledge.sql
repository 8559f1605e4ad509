-- A site's knowledge (issue 15): the documents ingested for it and the passages they were split
-- into, which every relay indexes for retrieval. A document is one per site and source (a URL
-- or a file name); replacing it replaces its passages. `knowledge_versions` grows with every
-- change of a site's knowledge: relays poll it to rebuild that site's index.
CREATE TABLE knowledge_documents (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    site_id TEXT NOT NULL,
    source TEXT NOT NULL,
    title TEXT NOT NULL,
    content_hash TEXT NOT NULL,
    passages INTEGER NOT NULL,
    chars INTEGER NOT NULL,
    added_at_ms INTEGER NOT NULL,
    updated_at_ms INTEGER NOT NULL,
    UNIQUE (site_id, source)
);

CREATE TABLE knowledge_passages (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    document_id INTEGER NOT NULL REFERENCES knowledge_documents (id) ON DELETE CASCADE,
    site_id TEXT NOT NULL,
    ordinal INTEGER NOT NULL,
    heading_path TEXT NOT NULL,
    text TEXT NOT NULL
);
CREATE INDEX knowledge_passages_by_site ON knowledge_passages (site_id, document_id, ordinal);
CREATE INDEX knowledge_passages_by_document ON knowledge_passages (document_id);

CREATE TABLE knowledge_versions (
    site_id TEXT PRIMARY KEY NOT NULL,
    version INTEGER NOT NULL
);
