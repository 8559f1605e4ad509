//! Wire types shared by the Confab widget (WebAssembly) and the relay.
//!
//! They follow the OpenAI chat-completions shapes that every OpenAI-compatible client already
//! speaks. This crate depends only on serde-level crates so that it builds for
//! `wasm32-unknown-unknown`; it never depends on tokio, axum or anything with I/O.

mod chat;
mod conversation;
mod error;
pub mod sse;
mod tools;
mod widget;

pub use chat::*;
pub use conversation::*;
pub use error::*;
pub use tools::*;
pub use widget::*;
