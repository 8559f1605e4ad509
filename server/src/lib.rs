//! The Confab relay as a library: `confab` (the binary) parses the command line and calls
//! [`cli::run`]; tests build an [`AppState`] and call [`serve`] on a listener of their own.

pub mod cli;
pub mod config;
pub mod error;
pub mod http;
pub mod policy;
pub mod relay;
pub mod sitekey;
pub mod sites;
pub mod store;
pub mod upstream;

pub use http::{AppState, router, serve};
