//! A look-alike of the widget's open panel (its launcher, header, greeting and suggestions in the
//! site's colour), drawn with the console's own elements and updated as the operator types,
//! before anything is saved.
//!
//! The colour is set with `style:` (the CSSOM's `setProperty`, which the console's CSP allows;
//! a `style` attribute would not be), and only once it is a colour.

use leptos::prelude::*;

use crate::input;

/// What the widget shows when a site sets nothing (the relay's `[widget]` defaults).
const DEFAULT_TITLE: &str = "Chat with us";
const DEFAULT_GREETING: &str = "Hi! How can I help you today?";
/// The widget's own colour (`widget/src/widget.css`, `--primary`).
const DEFAULT_COLOR: &str = "#1f5fbf";

#[component]
pub fn WidgetPreview(
    title: RwSignal<String>,
    greeting: RwSignal<String>,
    suggestions: RwSignal<String>,
    color: RwSignal<String>,
) -> impl IntoView {
    let color = move || {
        color.with(|c| if input::is_color(c) { c.trim().to_owned() } else { DEFAULT_COLOR.into() })
    };
    let title = move || input::optional(&title.get()).unwrap_or_else(|| DEFAULT_TITLE.into());
    let greeting =
        move || input::optional(&greeting.get()).unwrap_or_else(|| DEFAULT_GREETING.into());
    view! {
        <figure class="preview" aria-label="Widget preview" data-preview="">
            <div class="preview-panel">
                <p class="preview-head" style:background-color=color>{title}</p>
                <p class="preview-bubble">{greeting}</p>
                <ul class="preview-chips">
                    {move || input::lines(&suggestions.get()).into_iter().map(|s| view! {
                        <li style:border-color=color style:color=color>{s}</li>
                    }).collect_view()}
                </ul>
                <p class="preview-input">"Type a message…"</p>
            </div>
            <span class="preview-launcher" style:background-color=color aria-hidden="true"></span>
            <figcaption class="hint">"Preview: not saved until you save the widget."</figcaption>
        </figure>
    }
}
