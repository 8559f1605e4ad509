//! A Leptos app that uses the Confab chat as a component: a help centre with the chat in its
//! right column, and a line that shows the chat's events. What a Rust front-end developer
//! writes; built in CI and driven by the browser tests (`tests/e2e/frontend.test.mjs`).

use confab_widget::{ChatEvent, ConfabChat};
use leptos::prelude::*;

/// The content of `<meta name="...">` in index.html.
fn meta(name: &str) -> String {
    document()
        .query_selector(&["meta[name=\"", name, "\"]"].concat())
        .ok()
        .flatten()
        .and_then(|element| {
            wasm_bindgen::JsCast::dyn_into::<web_sys::HtmlMetaElement>(element).ok()
        })
        .map(|meta| meta.content())
        .unwrap_or_default()
}

#[component]
fn App() -> impl IntoView {
    let (relay, site) = (meta("confab-relay"), meta("confab-site"));
    let answers = RwSignal::new(0u32);
    let last = RwSignal::new(String::new());
    // The chat can be taken off the page and put back: it cleans up after itself.
    let shown = RwSignal::new(true);
    let on_event = Callback::new(move |event: ChatEvent| {
        if let ChatEvent::Message(text) = event {
            answers.update(|n| *n += 1);
            last.set(text);
        }
    });
    view! {
        <div class="layout">
            <main>
                <h1>"Help centre"</h1>
                <p>"Ask in the column on the right."</p>
                <p id="answers">{move || answers.get().to_string()}</p>
                <p id="last">{move || last.get()}</p>
                <button id="toggle" on:click=move |_| shown.update(|s| *s = !*s)>"Toggle the chat"</button>
            </main>
            <aside id="help">
                <Show when=move || shown.get()>
                    <ConfabChat
                        relay=relay.clone()
                        site=site.clone()
                        title="Leptos help"
                        name="leptos"
                        locale="de"
                        on_event=on_event
                    />
                </Show>
            </aside>
        </div>
    }
}

fn main() {
    leptos::mount::mount_to_body(App);
}
