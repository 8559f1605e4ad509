//! The console's shell: the session (checked at start, a login form without one, a logout
//! button with one, back to the login on any 401), the header's navigation, and the page the
//! URL's fragment names.

use leptos::ev;
use leptos::prelude::*;
use leptos::task::spawn_local;

use crate::api;
use crate::pages;
use crate::route::{NAVIGATION, Route};

/// Where the session stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Session {
    Checking,
    LoggedOut,
    LoggedIn,
}

fn current_route() -> Route {
    Route::parse(&window().location().hash().unwrap_or_default())
}

#[component]
pub fn App() -> impl IntoView {
    let session = RwSignal::new(Session::Checking);
    api::on_unauthorized(move || session.set(Session::LoggedOut));
    spawn_local(async move {
        let checked = api::session().await;
        session.set(if checked.is_ok() { Session::LoggedIn } else { Session::LoggedOut });
    });

    let route = RwSignal::new(current_route());
    // The console's whole life: the listener is never removed.
    let _listener = window_event_listener(ev::hashchange, move |_| route.set(current_route()));
    Effect::new(move |_| {
        document().set_title(&format!("{} · Confab console", route.get().title()));
    });

    // Only a change to or from a hand-off link redraws the whole page (a memo: moving between
    // the other pages does not touch it).
    let shared = Memo::new(move |_| match route.get() {
        Route::Shared { id, query } => Some((id, query)),
        _ => None,
    });
    view! {
        {move || match (shared.get(), session.get()) {
            // A hand-off link opens its conversation read-only, logged in or not.
            (Some((id, query)), _) => {
                view! { <pages::conversations::SharedTranscript id=id query=query /> }.into_any()
            }
            (_, Session::Checking) => view! { <main class="center"><p role="status">"Loading…"</p></main> }.into_any(),
            (_, Session::LoggedOut) => view! { <Login session=session /> }.into_any(),
            (_, Session::LoggedIn) => view! { <Shell session=session route=route /> }.into_any(),
        }}
    }
}

#[component]
fn Login(session: RwSignal<Session>) -> impl IntoView {
    let token = RwSignal::new(String::new());
    let error = RwSignal::new(None::<String>);
    let busy = RwSignal::new(false);
    let submit = move |ev: ev::SubmitEvent| {
        ev.prevent_default();
        if busy.get_untracked() {
            return;
        }
        busy.set(true);
        error.set(None);
        let value = token.get_untracked();
        spawn_local(async move {
            match api::login(value).await {
                Ok(()) => session.set(Session::LoggedIn),
                Err(e) => error.set(Some(e.message)),
            }
            busy.set(false);
        });
    };
    view! {
        <main class="login">
            <h1>"Confab console"</h1>
            <form on:submit=submit novalidate="">
                <label for="token">"Admin token"</label>
                <input
                    id="token"
                    name="token"
                    type="password"
                    autocomplete="current-password"
                    required=""
                    aria-invalid=move || if error.get().is_some() { "true" } else { "false" }
                    aria-describedby="token-error"
                    prop:value=move || token.get()
                    on:input=move |ev| token.set(event_target_value(&ev))
                />
                <p id="token-error" class="field-error" role="alert">{move || error.get()}</p>
                <button type="submit" class="primary" disabled=move || busy.get()>"Log in"</button>
            </form>
        </main>
    }
}

/// Focuses the page's heading (made focusable from script only, `tabindex=-1`).
fn focus_heading() {
    use wasm_bindgen::JsCast;
    let heading = document().query_selector("main h1").ok().flatten();
    if let Some(heading) = heading.and_then(|h| h.dyn_into::<web_sys::HtmlElement>().ok()) {
        let _ = heading.set_attribute("tabindex", "-1");
        let _ = heading.focus();
    }
}

#[component]
fn Shell(session: RwSignal<Session>, route: RwSignal<Route>) -> impl IntoView {
    // A new page takes the focus on its heading, so that a screen reader announces it and the
    // next Tab starts from the page; not on the first page shown (the focus stays at the top).
    Effect::new(move |shown_before: Option<()>| {
        route.track();
        if shown_before.is_some() {
            // After this render pass, once the new page's heading is in the document.
            request_animation_frame(focus_heading);
        }
    });
    let logout = move |_| {
        spawn_local(async move {
            // Whatever the relay says, this browser is logged out now; a failure to reach it
            // leaves a session that expires on its own.
            let _ = api::logout().await;
            session.set(Session::LoggedOut);
        });
    };
    view! {
        <header class="top">
            <a class="brand" href="#/">"Confab"</a>
            <nav aria-label="Console">
                <ul>
                    {NAVIGATION
                        .iter()
                        .map(|entry| {
                            let entry = entry.clone();
                            let here = entry.clone();
                            view! {
                                <li>
                                    <a
                                        href=entry.href()
                                        aria-current=move || (route.get().section() == here).then_some("page")
                                    >
                                        {entry.title()}
                                    </a>
                                </li>
                            }
                        })
                        .collect_view()}
                </ul>
            </nav>
            <button type="button" class="logout" on:click=logout>"Log out"</button>
        </header>
        <main id="main">
            {move || match route.get() {
                Route::Overview => view! { <pages::overview::Overview /> }.into_any(),
                Route::Conversations => view! { <pages::conversations::ConversationList /> }.into_any(),
                Route::Conversation(id) | Route::Shared { id, .. } => {
                    view! { <pages::conversations::Transcript id /> }.into_any()
                }
                Route::Sites => view! { <pages::sites::Sites /> }.into_any(),
                Route::Keys => view! { <pages::keys::Keys /> }.into_any(),
                Route::Webhooks => view! { <pages::webhooks::Webhooks /> }.into_any(),
                Route::Usage => view! { <pages::usage::Usage /> }.into_any(),
            }}
        </main>
    }
}
