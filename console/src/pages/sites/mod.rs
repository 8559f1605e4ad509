//! Sites: the list, a new site (every setting `POST /admin/v1/sites` takes), and per site its
//! conversation settings, origins, widget (with a live preview), limits, visitor verification,
//! the embed snippet (the key shown only at creation and re-key) and deleting it.
//!
//! Each section edits one call of the admin API and shows the relay's answer: the card's site
//! is replaced by the view the call returns, so what it shows is what the relay stored.

use confab_admin_api::ConversationSettingsPatch;
use leptos::ev;
use leptos::prelude::*;
use leptos::task::spawn_local;
use wasm_bindgen_futures::JsFuture;

use super::{AskTwice, ErrorNote, FieldError, Loaded, LoadingNote};
use crate::api::{self, SiteView};

mod forms;
mod preview;

/// The tag a website adds (README, "Embedding the widget"), for this relay.
pub fn snippet(relay: &str, key: &str) -> String {
    format!(r#"<script src="{relay}/confab.js" data-site="{key}" async></script>"#)
}

fn relay_origin() -> String {
    window().location().origin().unwrap_or_default()
}

#[component]
pub fn Sites() -> impl IntoView {
    let sites = RwSignal::new(Loaded::<Vec<SiteView>>::None);
    // The full key of a site created or re-keyed here: (site id, key).
    let revealed = RwSignal::new(None::<(String, String)>);
    let load = move || spawn_local(async move { sites.set(Some(api::sites().await)) });
    load();
    let created = Callback::new(move |site: SiteView| {
        if let Some(key) = site.key.clone() {
            revealed.set(Some((site.id.clone(), key)));
        }
        load();
    });
    let deleted = Callback::new(move |id: String| {
        sites.update(|s| {
            if let Some(Ok(list)) = s {
                list.retain(|site| site.id != id);
            }
        })
    });

    view! {
        <h1>"Sites"</h1>
        {move || match sites.get() {
            None => view! { <LoadingNote /> }.into_any(),
            Some(Err(e)) => view! { <ErrorNote message=e.message /> }.into_any(),
            Some(Ok(list)) if list.is_empty() => view! { <p class="muted">"No sites yet."</p> }.into_any(),
            Some(Ok(list)) => view! {
                <ul class="cards">
                    {list.into_iter().map(|site| view! { <SiteCard site revealed deleted /> }).collect_view()}
                </ul>
            }
                .into_any(),
        }}
        <forms::NewSiteForm created />
    }
}

#[component]
fn SiteCard(
    site: SiteView,
    revealed: RwSignal<Option<(String, String)>>,
    deleted: Callback<String>,
) -> impl IntoView {
    let id = StoredValue::new(site.id.clone());
    let name = site.name.clone();
    let prefix = site.key_prefix.clone();
    let conversations = site.conversations.clone();
    let shown = RwSignal::new(site);
    let changed = Callback::new(move |site: SiteView| shown.set(site));

    let delete_error = RwSignal::new(None::<String>);
    let delete = Callback::new(move |()| {
        delete_error.set(None);
        spawn_local(async move {
            match api::delete_site(&id.get_value()).await {
                Ok(()) => deleted.run(id.get_value()),
                Err(e) => delete_error.set(Some(e.message)),
            }
        });
    });
    let delete_error_id = format!("{}-delete-error", id.get_value());

    view! {
        <li class="card" data-site=id.get_value()>
            <div class="card-head">
                <h2>{name}</h2>
                <code>{prefix}"…"</code>
            </div>
            <p class="meta wrap">
                {move || shown.with(|s| format!("{} · {}", s.id, if s.origins.is_empty() { "no origins".into() } else { s.origins.join(", ") }))}
            </p>
            <details class="section" open="">
                <summary>"Conversations"</summary>
                <ConversationSettings id settings=conversations />
            </details>
            <forms::OriginsSection site=shown changed />
            <forms::WidgetSection site=shown changed />
            <forms::LimitsSection site=shown changed />
            <forms::VerificationSection site=shown changed />
            <Embed id revealed />
            <div class="actions">
                <AskTwice label="Delete site" confirm="Confirm: delete the site and its key" action=delete />
            </div>
            <FieldError id=delete_error_id message=delete_error />
        </li>
    }
}

#[component]
fn ConversationSettings(
    id: StoredValue<String>,
    settings: confab_admin_api::ConversationSettingsView,
) -> impl IntoView {
    let transcripts = RwSignal::new(settings.transcripts);
    let retention = RwSignal::new(settings.retention_days.to_string());
    let mask = RwSignal::new(settings.mask_contacts);
    let notice = RwSignal::new(settings.notice.clone().unwrap_or_default());
    let handoff = RwSignal::new(settings.handoff);
    let status = RwSignal::new(None::<Result<String, String>>);

    let save = move |ev: ev::SubmitEvent| {
        ev.prevent_default();
        let Ok(retention_days) = retention.get_untracked().trim().parse::<u32>() else {
            status.set(Some(Err("Retention must be a whole number of days.".into())));
            return;
        };
        let notice = notice.get_untracked();
        let patch = ConversationSettingsPatch {
            transcripts: Some(transcripts.get_untracked()),
            retention_days: Some(retention_days),
            mask_contacts: Some(mask.get_untracked()),
            notice: Some((!notice.trim().is_empty()).then(|| notice.trim().to_owned())),
            handoff: Some(handoff.get_untracked()),
        };
        status.set(None);
        spawn_local(async move {
            let done = api::change_conversation_settings(&id.get_value(), &patch).await;
            status.set(Some(done.map(|()| "Saved.".to_owned()).map_err(|e| e.message)));
        });
    };
    let field = move |name: &str| format!("{}-{name}", id.get_value());

    view! {
        <form class="settings" on:submit=save>
            <label class="check">
                <input type="checkbox" prop:checked=move || transcripts.get() on:change=move |ev| transcripts.set(event_target_checked(&ev)) />
                "Keep transcripts"
            </label>
            <label class="check">
                <input type="checkbox" prop:checked=move || mask.get() on:change=move |ev| mask.set(event_target_checked(&ev)) />
                "Mask contact details"
            </label>
            <label class="check">
                <input type="checkbox" prop:checked=move || handoff.get() on:change=move |ev| handoff.set(event_target_checked(&ev)) />
                "Visitors can ask for a person"
            </label>
            <label for=field("retention")>"Retention (days)"</label>
            <input id=field("retention") inputmode="numeric" prop:value=move || retention.get() on:input=move |ev| retention.set(event_target_value(&ev)) />
            <label for=field("notice")>"Notice shown to visitors (empty: the relay's default)"</label>
            <textarea id=field("notice") rows="2" prop:value=move || notice.get() on:input=move |ev| notice.set(event_target_value(&ev))></textarea>
            <div class="actions">
                <button type="submit" class="primary">"Save settings"</button>
                <span role="status" class=move || match status.get() { Some(Err(_)) => "field-error", _ => "ok" }>
                    {move || status.get().map(|s| s.unwrap_or_else(|e| e))}
                </span>
            </div>
        </form>
    }
}

#[component]
fn Embed(id: StoredValue<String>, revealed: RwSignal<Option<(String, String)>>) -> impl IntoView {
    let rekey_error = RwSignal::new(None::<String>);
    let rekey = move |_| {
        rekey_error.set(None);
        spawn_local(async move {
            match api::rekey_site(&id.get_value()).await {
                Ok(site) => {
                    if let Some(key) = site.key {
                        revealed.set(Some((site.id, key)));
                    }
                }
                Err(e) => rekey_error.set(Some(e.message)),
            }
        });
    };
    let key = move || {
        revealed.with(|r| match r {
            Some((site, key)) if *site == id.get_value() => Some(key.clone()),
            _ => None,
        })
    };
    let code = move || snippet(&relay_origin(), &key().unwrap_or_else(|| "SITE_KEY".into()));
    let copied = RwSignal::new(None::<bool>);
    let copy = move |_| {
        let text = code();
        spawn_local(async move {
            let clipboard = window().navigator().clipboard();
            copied.set(Some(JsFuture::from(clipboard.write_text(&text)).await.is_ok()));
        });
    };
    view! {
        <div class="embed">
            <h3>"Embed"</h3>
            <pre><code data-snippet="">{code}</code></pre>
            <p class="muted">
                {move || if key().is_some() {
                    "This key is shown once: copy it now."
                } else {
                    "The site key is shown only when the site is created or re-keyed; replace SITE_KEY with it."
                }}
            </p>
            <div class="actions">
                <button type="button" on:click=copy>"Copy snippet"</button>
                <button type="button" on:click=rekey>"Re-key site"</button>
                <span role="status">
                    {move || copied.get().map(|ok| if ok { "Copied." } else { "The browser refused to copy; select the snippet instead." })}
                </span>
            </div>
            <p class="field-error" role="alert">{move || rekey_error.get()}</p>
        </div>
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_snippet_is_the_readmes_tag() {
        assert_eq!(
            super::snippet("https://relay.example", "confab_pk_x"),
            r#"<script src="https://relay.example/confab.js" data-site="confab_pk_x" async></script>"#
        );
    }
}
