//! Sites: the list, each site's conversation settings (`PATCH .../conversations`), a new site
//! and a re-key, and the embed snippet with the key the relay gave (only at creation and re-key;
//! a placeholder otherwise) and a copy button.

use confab_admin_api::ConversationSettingsPatch;
use leptos::ev;
use leptos::prelude::*;
use leptos::task::spawn_local;
use wasm_bindgen_futures::JsFuture;

use super::{ErrorNote, Loaded, LoadingNote};
use crate::api::{self, SiteView};

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

    let name = RwSignal::new(String::new());
    let origin = RwSignal::new(String::new());
    let create_error = RwSignal::new(None::<String>);
    let create = move |ev: ev::SubmitEvent| {
        ev.prevent_default();
        create_error.set(None);
        spawn_local(async move {
            match api::create_site(name.get_untracked().trim(), origin.get_untracked().trim()).await
            {
                Ok(site) => {
                    if let Some(key) = site.key.clone() {
                        revealed.set(Some((site.id.clone(), key)));
                    }
                    name.set(String::new());
                    origin.set(String::new());
                    load();
                }
                Err(e) => create_error.set(Some(e.message)),
            }
        });
    };

    view! {
        <h1>"Sites"</h1>
        {move || match sites.get() {
            None => view! { <LoadingNote /> }.into_any(),
            Some(Err(e)) => view! { <ErrorNote message=e.message /> }.into_any(),
            Some(Ok(list)) if list.is_empty() => view! { <p class="muted">"No sites yet."</p> }.into_any(),
            Some(Ok(list)) => view! {
                <ul class="cards">
                    {list.into_iter().map(|site| view! { <SiteCard site=site revealed=revealed /> }).collect_view()}
                </ul>
            }
                .into_any(),
        }}
        <section class="panel" aria-labelledby="new-site">
            <h2 id="new-site">"New site"</h2>
            <form on:submit=create class="stack">
                <label for="site-name">"Name"</label>
                <input id="site-name" required="" prop:value=move || name.get() on:input=move |ev| name.set(event_target_value(&ev)) />
                <label for="site-origin">"Origin"</label>
                <input
                    id="site-origin"
                    type="url"
                    placeholder="https://shop.example"
                    aria-describedby="site-error"
                    prop:value=move || origin.get()
                    on:input=move |ev| origin.set(event_target_value(&ev))
                />
                <p id="site-error" class="field-error" role="alert">{move || create_error.get()}</p>
                <button type="submit" class="primary">"Create site"</button>
            </form>
        </section>
    }
}

#[component]
fn SiteCard(site: SiteView, revealed: RwSignal<Option<(String, String)>>) -> impl IntoView {
    let id = StoredValue::new(site.id.clone());
    let settings = site.conversations.clone();
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
    let copied = RwSignal::new(false);
    let copy = move |_| {
        let text = code();
        spawn_local(async move {
            let clipboard = window().navigator().clipboard();
            copied.set(JsFuture::from(clipboard.write_text(&text)).await.is_ok());
        });
    };
    let field = |name: &str| format!("{}-{name}", site.id);

    view! {
        <li class="card" data-site=site.id.clone()>
            <div class="card-head">
                <h2>{site.name.clone()}</h2>
                <code>{site.key_prefix.clone()}"…"</code>
            </div>
            <p class="meta wrap">{site.id.clone()} " · " {site.origins.join(", ")}</p>
            <form class="settings" on:submit=save>
                <fieldset>
                    <legend>"Conversations"</legend>
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
                </fieldset>
                <div class="actions">
                    <button type="submit" class="primary">"Save settings"</button>
                    <span role="status" class=move || match status.get() { Some(Err(_)) => "field-error", _ => "ok" }>
                        {move || status.get().map(|s| s.unwrap_or_else(|e| e))}
                    </span>
                </div>
            </form>
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
                    <span role="status">{move || copied.get().then_some("Copied.")}</span>
                </div>
                <p class="field-error" role="alert">{move || rekey_error.get()}</p>
            </div>
        </li>
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
