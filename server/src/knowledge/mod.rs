//! A site's knowledge (issue 15): the documents an operator ingests for it, which the relay
//! retrieves from to ground its answers. `fetch` brings the site's own pages and sitemaps;
//! `ingest` fills and empties a site's knowledge (the CLI's and the admin API's one pipeline);
//! `library` holds this relay's index of each site's knowledge; `embed`
//! calls the embedding model of hybrid retrieval; `grounding` makes what a
//! request of a site with knowledge sends upstream and what its stream says about its sources.

pub mod config;
pub mod embed;
pub mod fetch;
pub mod grounding;
pub mod ingest;
pub mod library;
