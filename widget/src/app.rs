//! The chat UI: launcher, panel, message list and input, in Leptos.

use confab_protocol::{ChatMessage, Role, WidgetConfig};
use leptos::prelude::*;
use leptos::task::spawn_local;
use wasm_bindgen::JsCast;
use web_sys::AbortController;

use crate::api::{self, ChatError};

/// How the page embedded the widget (`data-*` attributes of the script tag).
#[derive(Debug, Clone, Default)]
pub struct Embed {
    pub relay: String,
    pub site_key: String,
    pub open: bool,
    pub title: Option<String>,
    pub greeting: Option<String>,
    pub left: bool,
}

/// What the page's JavaScript (`window.Confab`) can do to a mounted widget.
#[derive(Debug, Clone, Copy)]
pub struct Controls {
    pub open: RwSignal<bool>,
    /// A message to send, set by `Confab.send(text)`.
    pub outbox: RwSignal<Option<String>>,
}

impl Controls {
    pub fn new(open: bool) -> Self {
        Self { open: RwSignal::new(open), outbox: RwSignal::new(None) }
    }
}

/// Tells the page's listeners (`Confab.on(name, fn)`) what happened.
fn emit(name: &str, detail: &str) {
    let Some(window) = web_sys::window() else { return };
    let Ok(confab) = js_sys::Reflect::get(&window, &"Confab".into()) else { return };
    if let Ok(emit) = js_sys::Reflect::get(&confab, &"emit".into())
        && let Ok(emit) = emit.dyn_into::<js_sys::Function>()
    {
        let _ = emit.call2(&confab, &name.into(), &detail.into());
    }
}

#[derive(Debug, Clone, Copy)]
struct Message {
    id: usize,
    role: Role,
    text: RwSignal<String>,
}

#[component]
pub fn Chat(embed: Embed, controls: Controls) -> impl IntoView {
    let open = controls.open;
    let config = RwSignal::new(None::<WidgetConfig>);
    let messages = RwSignal::new(Vec::<Message>::new());
    let next_id = StoredValue::new(0usize);
    let draft = RwSignal::new(String::new());
    let error = RwSignal::new(None::<ChatError>);
    let busy = RwSignal::new(false);
    let controller = StoredValue::new_local(None::<AbortController>);
    let embed = StoredValue::new(embed);

    spawn_local(async move {
        let (relay, key) = embed.with_value(|e| (e.relay.clone(), e.site_key.clone()));
        match api::widget_config(&relay, &key).await {
            Ok(loaded) => config.set(Some(loaded)),
            Err(e) => error.set(Some(e)),
        }
    });

    let title = move || {
        embed
            .with_value(|e| e.title.clone())
            .or_else(|| config.with(|c| c.as_ref().map(|c| c.title.clone())))
            .unwrap_or_else(|| "Chat".into())
    };
    let greeting = move || {
        embed
            .with_value(|e| e.greeting.clone())
            .or_else(|| config.with(|c| c.as_ref().map(|c| c.greeting.clone())))
            .unwrap_or_default()
    };

    // Messages outlive whatever view created them (a suggestion button disappears as soon as
    // it is clicked), so their signals belong to the chat itself.
    let owner = StoredValue::new_local(Owner::current());
    let push = move |role: Role, text: String| {
        let id = next_id.get_value();
        next_id.set_value(id + 1);
        let text = owner.with_value(|owner| match owner {
            Some(owner) => owner.with(|| RwSignal::new(text)),
            None => RwSignal::new(text),
        });
        let message = Message { id, role, text };
        messages.update(|list| list.push(message));
        message
    };

    let send = move |text: String| {
        let text = text.trim().to_owned();
        if text.is_empty() || busy.get_untracked() {
            return;
        }
        error.set(None);
        let history: Vec<ChatMessage> = messages.with_untracked(|list| {
            list.iter().map(|m| ChatMessage::new(m.role, m.text.get_untracked())).collect()
        });
        push(Role::User, text.clone());
        let answer = push(Role::Assistant, String::new());
        draft.set(String::new());
        busy.set(true);
        let Ok(abort) = AbortController::new() else { return };
        let signal = abort.signal();
        controller.set_value(Some(abort));
        let mut conversation = history;
        conversation.push(ChatMessage::new(Role::User, text));
        spawn_local(async move {
            let (relay, key) = embed.with_value(|e| (e.relay.clone(), e.site_key.clone()));
            let result = api::stream_chat(&relay, &key, conversation, &signal, |piece| {
                answer.text.update(|t| t.push_str(piece));
            })
            .await;
            busy.set(false);
            controller.set_value(None);
            if result.is_ok() {
                emit("message", &answer.text.get_untracked());
            }
            if let Err(e) = result {
                if answer.text.with_untracked(String::is_empty) {
                    messages.update(|list| list.retain(|m| m.id != answer.id));
                }
                error.set(Some(e));
            }
        });
    };

    // `Confab.send(text)` from the page.
    Effect::new(move |_| {
        if let Some(text) = controls.outbox.get() {
            controls.outbox.set(None);
            send(text);
        }
    });
    // `open` and `close` events for the page, after the first render.
    Effect::new(move |previous: Option<bool>| {
        let now = open.get();
        if previous.is_some_and(|was| was != now) {
            emit(if now { "open" } else { "close" }, "");
        }
        now
    });

    let stop = move |_| {
        controller.with_value(|c| {
            if let Some(c) = c {
                c.abort();
            }
        });
    };
    let retry = move |_| {
        // Resend the last question: drop it (and any partial answer) and send it again.
        let last_user = messages.with_untracked(|list| {
            list.iter()
                .rposition(|m| m.role == Role::User)
                .map(|i| (i, list[i].text.get_untracked()))
        });
        if let Some((index, text)) = last_user {
            messages.update(|list| list.truncate(index));
            send(text);
        }
    };
    let clear = move |_| {
        messages.set(Vec::new());
        error.set(None);
    };

    view! {
        <div class="confab" class:open=move || open.get() class:left=embed.with_value(|e| e.left)>
            <Show when=move || open.get()>
                <section class="panel" role="dialog" aria-label=title>
                    <header>
                        <h2>{title}</h2>
                        <button class="clear" type="button" on:click=clear>"Clear"</button>
                        <button
                            class="close"
                            type="button"
                            aria-label="Close chat"
                            on:click=move |_| open.set(false)
                        >
                            "×"
                        </button>
                    </header>
                    <ol class="messages">
                        <li class="assistant greeting">{greeting}</li>
                        <For each=move || messages.get() key=|m| m.id let:message>
                            <li class=match message.role {
                                Role::User => "user",
                                _ => "assistant",
                            }>{move || message.text.get()}</li>
                        </For>
                    </ol>
                    <Show when=move || messages.with(Vec::is_empty)>
                        <div class="suggestions">
                            {move || {
                                config
                                    .with(|c| c.as_ref().map(|c| c.suggestions.clone()))
                                    .unwrap_or_default()
                                    .into_iter()
                                    .map(|q| {
                                        let text = q.clone();
                                        view! {
                                            <button type="button" on:click=move |_| send(text.clone())>
                                                {q}
                                            </button>
                                        }
                                    })
                                    .collect_view()
                            }}
                        </div>
                    </Show>
                    <Show when=move || error.with(Option::is_some)>
                        <p class="error" role="alert">
                            {move || error.with(|e| e.as_ref().map(ChatError::message))}
                            <button class="retry" type="button" on:click=retry>"Retry"</button>
                        </p>
                    </Show>
                    <form on:submit=move |ev| {
                        ev.prevent_default();
                        send(draft.get_untracked());
                    }>
                        <textarea
                            aria-label="Your message"
                            placeholder="Ask a question…"
                            rows="1"
                            prop:value=move || draft.get()
                            on:input=move |ev| draft.set(event_target_value(&ev))
                            on:keydown=move |ev| {
                                if ev.key() == "Enter" && !ev.shift_key() {
                                    ev.prevent_default();
                                    send(draft.get_untracked());
                                }
                            }
                        ></textarea>
                        <Show
                            when=move || busy.get()
                            fallback=|| view! { <button class="send" type="submit">"Send"</button> }
                        >
                            <button class="stop" type="button" on:click=stop>"Stop"</button>
                        </Show>
                    </form>
                </section>
            </Show>
            <button
                class="launcher"
                type="button"
                aria-label=move || if open.get() { "Close chat" } else { "Open chat" }
                aria-expanded=move || open.get().to_string()
                on:click=move |_| open.update(|o| *o = !*o)
            >
                <svg viewBox="0 0 24 24" aria-hidden="true" fill="currentColor">
                    <path d="M4 3h16a2 2 0 0 1 2 2v11a2 2 0 0 1-2 2H9l-5 4v-4a2 2 0 0 1-2-2V5a2 2 0 0 1 2-2z"></path>
                </svg>
            </button>
        </div>
    }
}
