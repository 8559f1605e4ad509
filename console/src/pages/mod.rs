//! The console's pages, one module each, and what they share.

use leptos::prelude::*;

use crate::api::ApiError;

pub mod conversations;
pub mod keys;
pub mod overview;
pub mod sites;
pub mod usage;
pub mod webhooks;

/// What a page loading its data shows: nothing yet, the error, or the data.
pub type Loaded<T> = Option<Result<T, ApiError>>;

/// An error of a whole page or section, announced.
#[component]
pub fn ErrorNote(message: String) -> impl IntoView {
    view! { <p class="error" role="alert">{message}</p> }
}

/// A status line while a page loads.
#[component]
pub fn LoadingNote() -> impl IntoView {
    view! { <p class="muted" role="status">"Loading…"</p> }
}
