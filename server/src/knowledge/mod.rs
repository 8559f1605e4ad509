//! A site's knowledge (issue 15): the documents an operator ingests for it, which the relay
//! retrieves from to ground its answers. `fetch` brings the site's own pages and sitemaps.

pub mod config;
pub mod fetch;
pub mod grounding;
pub mod library;
