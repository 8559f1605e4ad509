//! The operator's console: a Leptos client-side app that the relay serves at `/console/` and
//! that talks to the admin API (`/admin/v1/...`) with a session cookie.
//!
//! Pages are addressed by the URL's fragment (`#/conversations/conv_...`), so the relay serves
//! one `index.html` and every page is a real link that the keyboard, the back button and a
//! bookmark all reach.

use wasm_bindgen::prelude::wasm_bindgen;

pub mod api;
mod app;
mod chart;
pub mod format;
pub mod input;
mod pages;
pub mod route;

/// Mounts the console on the page's body (called by the start-up script once the module is
/// instantiated).
#[wasm_bindgen(start)]
pub fn start() {
    leptos::mount::mount_to_body(app::App);
}
