//! Conversations: the searchable list (site, text, rating, holder, recent days and visitor
//! filters, a page at a time through the relay's `next` cursor) and one conversation's
//! transcript, with a reply box and "Hand back to the bot" while a person holds it (refreshed
//! every 2 s meanwhile), and deleting it or erasing its visitor's data (each asked twice).

use std::time::Duration;

use confab_admin_api::{ConversationView, MessageView, Page};
use leptos::ev;
use leptos::prelude::*;
use leptos::task::spawn_local;

use super::{AskTwice, Choice, ErrorNote, FieldError, Loaded, LoadingNote};
use crate::api::{self, ConversationFilter, SiteView};
use crate::format::{dollars, grouped, timestamp};
use crate::route::Route;

/// How the holder reads.
fn holder_label(holder: &str) -> &'static str {
    match holder {
        "waiting" => "Waiting for a person",
        "person" => "A person is answering",
        _ => "Bot",
    }
}

/// How an author reads.
fn author_label(author: &str) -> &'static str {
    match author {
        "visitor" => "Visitor",
        "bot" => "Bot",
        _ => "Person",
    }
}

fn site_name(sites: &[SiteView], id: &str) -> String {
    sites.iter().find(|s| s.id == id).map(|s| s.name.clone()).unwrap_or_else(|| id.to_owned())
}

const RATINGS: &[(&str, &str)] = &[("", "Any"), ("up", "Rated up"), ("down", "Rated down")];
const HOLDERS: &[(&str, &str)] =
    &[("", "Any"), ("bot", "Bot"), ("waiting", "Waiting for a person"), ("person", "A person")];
const UPDATED: &[(&str, &str)] =
    &[("", "Any time"), ("1", "Last 24 hours"), ("7", "Last 7 days"), ("30", "Last 30 days")];

#[component]
pub fn ConversationList() -> impl IntoView {
    let sites = RwSignal::new(Vec::<SiteView>::new());
    spawn_local(async move {
        if let Ok(list) = api::sites().await {
            sites.set(list);
        }
    });

    // The form's fields, and the filter of the page shown (applied on submit).
    let site = RwSignal::new(String::new());
    let q = RwSignal::new(String::new());
    let rating = RwSignal::new(String::new());
    let holder = RwSignal::new(String::new());
    let days = RwSignal::new(String::new());
    let visitor = RwSignal::new(String::new());
    let applied = RwSignal::new(ConversationFilter::default());
    // The cursors of the pages before the one shown (the first page's is empty), and its own.
    let previous = RwSignal::new(Vec::<String>::new());
    let cursor = RwSignal::new(String::new());
    let page = RwSignal::new(Loaded::<Page<ConversationView>>::None);

    let load = move || {
        let filter = applied.get_untracked();
        let at = cursor.get_untracked();
        page.set(None);
        spawn_local(async move { page.set(Some(api::conversations(&filter, &at).await)) });
    };
    load();

    let search = move |ev: ev::SubmitEvent| {
        ev.prevent_default();
        applied.set(ConversationFilter {
            site: site.get_untracked(),
            q: q.get_untracked().trim().to_owned(),
            rating: rating.get_untracked(),
            holder: holder.get_untracked(),
            days: days.get_untracked(),
            visitor: visitor.get_untracked().trim().to_owned(),
        });
        previous.set(Vec::new());
        cursor.set(String::new());
        load();
    };
    let next = move |_| {
        let Some(Ok(shown)) = page.get_untracked() else { return };
        let Some(next) = shown.next else { return };
        previous.update(|p| p.push(cursor.get_untracked()));
        cursor.set(next);
        load();
    };
    let back = move |_| {
        let Some(before) = previous.try_update(|p| p.pop()).flatten() else { return };
        cursor.set(before);
        load();
    };

    view! {
        <h1>"Conversations"</h1>
        <form class="filters" role="search" on:submit=search>
            <div class="field">
                <label for="f-site">"Site"</label>
                <select id="f-site" on:change=move |ev| site.set(event_target_value(&ev))>
                    <option value="">"All sites"</option>
                    {move || {
                        sites
                            .get()
                            .into_iter()
                            .map(|s| view! { <option value=s.id.clone()>{s.name.clone()}</option> })
                            .collect_view()
                    }}
                </select>
            </div>
            <div class="field grow">
                <label for="f-q">"Text"</label>
                <input
                    id="f-q"
                    type="search"
                    maxlength="200"
                    prop:value=move || q.get()
                    on:input=move |ev| q.set(event_target_value(&ev))
                />
            </div>
            <Choice id="f-rating" label="Feedback" options=RATINGS value=rating />
            <Choice id="f-holder" label="Holder" options=HOLDERS value=holder />
            <Choice id="f-days" label="Updated" options=UPDATED value=days />
            <div class="field">
                <label for="f-visitor">"Visitor"</label>
                <input
                    id="f-visitor"
                    placeholder="the visitor's hash"
                    prop:value=move || visitor.get()
                    on:input=move |ev| visitor.set(event_target_value(&ev))
                />
            </div>
            <button type="submit" class="primary">"Search"</button>
        </form>
        {move || match page.get() {
            None => view! { <LoadingNote /> }.into_any(),
            Some(Err(e)) => view! { <ErrorNote message=e.message /> }.into_any(),
            Some(Ok(shown)) if shown.data.is_empty() => {
                view! { <p class="muted">"No conversations match."</p> }.into_any()
            }
            Some(Ok(shown)) => {
                let known = sites.get();
                view! {
                    <ul class="cards conversations">
                        {shown
                            .data
                            .into_iter()
                            .map(|c| conversation_card(c, &known))
                            .collect_view()}
                    </ul>
                }
                    .into_any()
            }
        }}
        <div class="pager">
            <button type="button" on:click=back disabled=move || previous.with(Vec::is_empty)>
                "Previous page"
            </button>
            <button
                type="button"
                on:click=next
                disabled=move || !page.with(|p| matches!(p, Some(Ok(Page { next: Some(_), .. }))))
            >
                "Next page"
            </button>
        </div>
    }
}

fn conversation_card(c: ConversationView, sites: &[SiteView]) -> impl IntoView + use<> {
    let href = Route::Conversation(c.id.clone()).href();
    let held = c.holder != "bot";
    view! {
        <li class="card" data-conversation=c.id.clone()>
            <div class="card-head">
                <a href=href>{format!("{} · {}", site_name(sites, &c.site_id), timestamp(c.updated_at_ms))}</a>
                <span class=if held { "badge attention" } else { "badge" }>{holder_label(&c.holder)}</span>
            </div>
            <p class="meta">
                {format!(
                    "{} messages · {} · up {} / down {}",
                    c.messages_count,
                    dollars(c.cost_micros),
                    c.feedback.up,
                    c.feedback.down
                )}
            </p>
        </li>
    }
}

#[component]
pub fn Transcript(id: String) -> impl IntoView {
    let conversation = RwSignal::new(Loaded::<ConversationView>::None);
    let sites = RwSignal::new(Vec::<SiteView>::new());
    let id = StoredValue::new(id);
    spawn_local(async move {
        if let Ok(list) = api::sites().await {
            sites.set(list);
        }
    });
    let refresh = move || {
        let id = id.get_value();
        spawn_local(async move {
            let loaded = api::conversation(&id).await;
            // A refresh that fails keeps what is shown; the first load shows the error.
            if loaded.is_ok() || conversation.with_untracked(|c| !matches!(c, Some(Ok(_)))) {
                conversation.set(Some(loaded));
            }
        });
    };
    refresh();

    // While a person holds the conversation, the visitor's new messages come in every 2 s.
    let handed_off = move || conversation.with(|c| matches!(c, Some(Ok(c)) if c.holder != "bot"));
    if let Ok(handle) = set_interval_with_handle(
        move || {
            if conversation.with_untracked(|c| matches!(c, Some(Ok(c)) if c.holder != "bot")) {
                refresh();
            }
        },
        Duration::from_secs(2),
    ) {
        on_cleanup(move || handle.clear());
    }

    let reply = RwSignal::new(String::new());
    let reply_error = RwSignal::new(None::<String>);
    let release_error = RwSignal::new(None::<String>);
    let busy = RwSignal::new(false);
    let send = move |ev: ev::SubmitEvent| {
        ev.prevent_default();
        let content = reply.get_untracked();
        if content.trim().is_empty() || busy.get_untracked() {
            reply_error.set(Some("Write a reply first.".into()));
            return;
        }
        busy.set(true);
        reply_error.set(None);
        spawn_local(async move {
            match api::reply(&id.get_value(), content).await {
                Ok(message) => {
                    reply.set(String::new());
                    conversation.update(|c| {
                        if let Some(Ok(c)) = c {
                            c.holder = "person".into();
                            c.messages.get_or_insert_with(Vec::new).push(message);
                        }
                    });
                }
                Err(e) => reply_error.set(Some(e.message)),
            }
            busy.set(false);
        });
    };
    let gone_error = RwSignal::new(None::<String>);
    let back_to_list = move || {
        let _ = window().location().set_hash(&Route::Conversations.href());
    };
    let delete = Callback::new(move |()| {
        gone_error.set(None);
        spawn_local(async move {
            match api::delete_conversation(&id.get_value()).await {
                Ok(()) => back_to_list(),
                Err(e) => gone_error.set(Some(e.message)),
            }
        });
    });
    let erase = Callback::new(move |()| {
        gone_error.set(None);
        let visitor = conversation.with_untracked(|c| match c {
            Some(Ok(c)) => c.visitor.clone(),
            _ => None,
        });
        let Some(visitor) = visitor else { return };
        spawn_local(async move {
            match api::erase_visitor(&visitor).await {
                Ok(_) => back_to_list(),
                Err(e) => gone_error.set(Some(e.message)),
            }
        });
    });
    let has_visitor =
        move || conversation.with(|c| matches!(c, Some(Ok(c)) if c.visitor.is_some()));
    let hand_back = move |_| {
        release_error.set(None);
        spawn_local(async move {
            match api::release(&id.get_value()).await {
                Ok(()) => refresh(),
                Err(e) => release_error.set(Some(e.message)),
            }
        });
    };

    view! {
        <p><a href=Route::Conversations.href()>"← All conversations"</a></p>
        <h1>"Conversation"</h1>
        {move || match conversation.get() {
            None => view! { <LoadingNote /> }.into_any(),
            Some(Err(e)) => view! { <ErrorNote message=e.message /> }.into_any(),
            Some(Ok(c)) => {
                let site = site_name(&sites.get(), &c.site_id);
                conversation_facts(c, site).into_any()
            }
        }}
        <Show when=handed_off>
            <form class="reply" on:submit=send>
                <label for="reply">"Reply as a person"</label>
                <textarea
                    id="reply"
                    rows="3"
                    aria-describedby="reply-error"
                    prop:value=move || reply.get()
                    on:input=move |ev| reply.set(event_target_value(&ev))
                ></textarea>
                <p id="reply-error" class="field-error" role="alert">{move || reply_error.get()}</p>
                <div class="actions">
                    <button type="submit" class="primary" disabled=move || busy.get()>"Send reply"</button>
                    <button type="button" on:click=hand_back>"Hand back to the bot"</button>
                </div>
                <p class="field-error" role="alert">{move || release_error.get()}</p>
            </form>
        </Show>
        <Show when=move || matches!(conversation.get(), Some(Ok(_)))>
            <section class="panel danger-zone" aria-labelledby="erase-heading">
                <h2 id="erase-heading">"Delete"</h2>
                <div class="actions">
                    <AskTwice label="Delete conversation" confirm="Confirm: delete this conversation" action=delete />
                    <Show when=has_visitor>
                        <AskTwice label="Erase this visitor's data" confirm="Confirm: erase every conversation of this visitor" action=erase />
                    </Show>
                </div>
                <FieldError id="erase-error" message=gone_error />
            </section>
        </Show>
    }
}

/// A conversation's facts (site, holder, cost...) and its messages.
fn conversation_facts(c: ConversationView, site: String) -> impl IntoView {
    view! {
        <dl class="facts">
            <div><dt>"Site"</dt><dd>{site}</dd></div>
            <div><dt>"Holder"</dt><dd data-holder=c.holder.clone()>{holder_label(&c.holder)}</dd></div>
            <div><dt>"Started"</dt><dd>{timestamp(c.started_at_ms)}</dd></div>
            <div><dt>"Model"</dt><dd>{c.model.clone().unwrap_or_else(|| "—".into())}</dd></div>
            <div><dt>"Tokens"</dt><dd>{format!("{} in, {} out", grouped(c.input_tokens), grouped(c.output_tokens))}</dd></div>
            <div><dt>"Cost"</dt><dd>{dollars(c.cost_micros)}</dd></div>
            <div><dt>"Page"</dt><dd class="wrap">{c.page_url.clone().unwrap_or_else(|| "—".into())}</dd></div>
            <div><dt>"Visitor"</dt><dd class="wrap" data-visitor=c.visitor.clone().unwrap_or_default()>{c.visitor.clone().unwrap_or_else(|| "—".into())}</dd></div>
        </dl>
        <ol class="transcript" aria-label="Messages">
            {c.messages.unwrap_or_default().into_iter().map(message_item).collect_view()}
        </ol>
    }
}

/// A conversation opened from the signed link of a `conversation.handoff` webhook
/// (`#/shared/{id}?expires=…&sig=…`): read-only, without a session; answering it needs one.
#[component]
pub fn SharedTranscript(id: String, query: String) -> impl IntoView {
    let conversation = RwSignal::new(Loaded::<ConversationView>::None);
    let answer_at = Route::Conversation(id.clone()).href();
    spawn_local(async move {
        conversation.set(Some(api::shared_conversation(&id, &query).await));
    });
    view! {
        <main id="main" class="shared">
            <h1>"Conversation"</h1>
            <p class="muted">
                "Shared by a hand-off link, read-only. "
                <a href=answer_at>"Log in to answer it"</a>
            </p>
            {move || match conversation.get() {
                None => view! { <LoadingNote /> }.into_any(),
                Some(Err(e)) => view! { <ErrorNote message=e.message /> }.into_any(),
                Some(Ok(c)) => {
                    let site = c.site_id.clone();
                    conversation_facts(c, site).into_any()
                }
            }}
        </main>
    }
}

fn message_item(m: MessageView) -> impl IntoView {
    let class = format!("message {}", m.author);
    let rating = m.rating.as_deref().map(|r| if r == "up" { "Rated up" } else { "Rated down" });
    let is_bot = m.author == "bot";
    view! {
        <li class=class data-seq=m.seq.to_string()>
            <p class="author">
                <strong>{author_label(&m.author)}</strong>
                " "
                <span class="muted">{timestamp(m.at)}</span>
            </p>
            <p class="content">{m.content}</p>
            {(is_bot && (rating.is_some() || m.comment.is_some()))
                .then(|| {
                    view! {
                        <p class="feedback">
                            {rating.map(|r| view! { <span class="badge">{r}</span> })}
                            {m.comment.map(|c| view! { " " <q>{c}</q> })}
                        </p>
                    }
                })}
        </li>
    }
}
