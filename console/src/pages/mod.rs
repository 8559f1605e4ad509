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

/// A field's or a section's error, announced and named by the control's `aria-describedby`.
#[component]
pub fn FieldError(
    #[prop(into)] id: String,
    #[prop(into)] message: Signal<Option<String>>,
) -> impl IntoView {
    view! { <p id=id class="field-error" role="alert">{move || message.get()}</p> }
}

/// A button for what cannot be undone, asked twice: the first press turns it into `confirm`
/// (with a Cancel beside it), the second runs `action`.
#[component]
pub fn AskTwice(label: &'static str, confirm: &'static str, action: Callback<()>) -> impl IntoView {
    let asking = RwSignal::new(false);
    let press = move |_| {
        if asking.get_untracked() {
            asking.set(false);
            action.run(());
        } else {
            asking.set(true);
        }
    };
    view! {
        <button type="button" class="danger" on:click=press>
            {move || if asking.get() { confirm } else { label }}
        </button>
        <Show when=move || asking.get()>
            <button type="button" on:click=move |_| asking.set(false)>"Cancel"</button>
        </Show>
    }
}

/// A filter's select: `options` are (value, text), the first chosen at the start.
#[component]
pub fn Choice(
    id: &'static str,
    label: &'static str,
    options: &'static [(&'static str, &'static str)],
    value: RwSignal<String>,
) -> impl IntoView {
    view! {
        <div class="field">
            <label for=id>{label}</label>
            <select id=id on:change=move |ev| value.set(event_target_value(&ev))>
                {options.iter().map(|&(v, text)| view! { <option value=v>{text}</option> }).collect_view()}
            </select>
        </div>
    }
}
