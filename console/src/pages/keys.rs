//! Secret keys: the list (name, prefix, scopes, last use, revoked), a new key (its secret shown
//! once) and revoking one (asked twice).

use leptos::ev;
use leptos::prelude::*;
use leptos::task::spawn_local;

use super::{ErrorNote, Loaded, LoadingNote};
use crate::api::{self, KeyView};
use crate::format::rfc3339;

const SCOPES: [&str; 4] = ["chat", "models", "usage", "tools"];

#[component]
pub fn Keys() -> impl IntoView {
    let keys = RwSignal::new(Loaded::<Vec<KeyView>>::None);
    let load = move || spawn_local(async move { keys.set(Some(api::keys().await)) });
    load();

    let name = RwSignal::new(String::new());
    let scopes = RwSignal::new(vec!["chat".to_owned()]);
    let error = RwSignal::new(None::<String>);
    let secret = RwSignal::new(None::<String>);
    let create = move |ev: ev::SubmitEvent| {
        ev.prevent_default();
        error.set(None);
        secret.set(None);
        spawn_local(async move {
            match api::create_key(name.get_untracked().trim(), &scopes.get_untracked()).await {
                Ok(key) => {
                    secret.set(key.key);
                    name.set(String::new());
                    load();
                }
                Err(e) => error.set(Some(e.message)),
            }
        });
    };

    view! {
        <h1>"Secret keys"</h1>
        {move || match keys.get() {
            None => view! { <LoadingNote /> }.into_any(),
            Some(Err(e)) => view! { <ErrorNote message=e.message /> }.into_any(),
            Some(Ok(list)) if list.is_empty() => view! { <p class="muted">"No secret keys yet."</p> }.into_any(),
            Some(Ok(list)) => view! {
                <ul class="cards">
                    {list.into_iter().map(|key| view! { <KeyCard api_key=key reload=Callback::new(move |_: ()| load()) /> }).collect_view()}
                </ul>
            }
                .into_any(),
        }}
        <section class="panel" aria-labelledby="new-key">
            <h2 id="new-key">"New secret key"</h2>
            <form class="stack" on:submit=create>
                <label for="key-name">"Name"</label>
                <input id="key-name" required="" aria-describedby="key-error" prop:value=move || name.get() on:input=move |ev| name.set(event_target_value(&ev)) />
                <fieldset>
                    <legend>"Scopes"</legend>
                    {SCOPES
                        .iter()
                        .map(|scope| {
                            let scope = *scope;
                            view! {
                                <label class="check">
                                    <input
                                        type="checkbox"
                                        prop:checked=move || scopes.with(|s| s.iter().any(|x| x == scope))
                                        on:change=move |ev| {
                                            let on = event_target_checked(&ev);
                                            scopes.update(|s| {
                                                s.retain(|x| x != scope);
                                                if on {
                                                    s.push(scope.to_owned());
                                                }
                                            });
                                        }
                                    />
                                    {scope}
                                </label>
                            }
                        })
                        .collect_view()}
                </fieldset>
                <p id="key-error" class="field-error" role="alert">{move || error.get()}</p>
                <button type="submit" class="primary">"Create key"</button>
            </form>
            {move || secret.get().map(|s| view! {
                <div class="reveal" role="status">
                    <p>"The new key's secret, shown this once:"</p>
                    <pre><code data-secret="">{s}</code></pre>
                </div>
            })}
        </section>
    }
}

#[component]
fn KeyCard(api_key: KeyView, reload: Callback<()>) -> impl IntoView {
    let key = api_key;
    let confirming = RwSignal::new(false);
    let error = RwSignal::new(None::<String>);
    let id = StoredValue::new(key.id.clone());
    let revoke = move |_| {
        if !confirming.get_untracked() {
            confirming.set(true);
            return;
        }
        spawn_local(async move {
            match api::revoke_key(&id.get_value()).await {
                Ok(()) => reload.run(()),
                Err(e) => error.set(Some(e.message)),
            }
        });
    };
    let state = match (&key.revoked_at, key.active) {
        (Some(at), _) => format!("Revoked {}", rfc3339(at)),
        (None, true) => "Active".to_owned(),
        (None, false) => "Inactive".to_owned(),
    };
    let revoked = key.revoked_at.is_some();
    view! {
        <li class="card" data-key=key.id.clone()>
            <div class="card-head">
                <h2>{key.name.clone()}</h2>
                <span class=if revoked { "badge" } else { "badge ok" }>{state}</span>
            </div>
            <p class="meta wrap">
                <code>{key.key_prefix.clone()}"…"</code>
                {format!(" · scopes: {} · created {} · last used {}",
                    key.scopes.join(", "),
                    rfc3339(&key.created_at),
                    key.last_used_at.as_deref().map(rfc3339).unwrap_or_else(|| "never".into()))}
            </p>
            {(!revoked).then(|| view! {
                <div class="actions">
                    <button type="button" class="danger" on:click=revoke>
                        {move || if confirming.get() { "Confirm: revoke now" } else { "Revoke" }}
                    </button>
                    <Show when=move || confirming.get()>
                        <button type="button" on:click=move |_| confirming.set(false)>"Cancel"</button>
                    </Show>
                </div>
            })}
            <p class="field-error" role="alert">{move || error.get()}</p>
        </li>
    }
}
