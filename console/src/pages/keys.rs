//! Secret keys: the list (name, prefix, scopes, models, limits, last use, revoked), a new key
//! (scopes, models and limits; its secret shown once), rotating one (the new secret shown once)
//! and revoking one (asked twice).

use confab_admin_api::NewKey;
use leptos::ev;
use leptos::prelude::*;
use leptos::task::spawn_local;

use super::{AskTwice, ErrorNote, FieldError, Loaded, LoadingNote};
use crate::api::{self, KeyView};
use crate::format::{dollars, grouped, rfc3339};
use crate::input;

/// The limit fields of a new key: (id, label, field, in dollars).
const LIMITS: [(&str, &str, &str, bool); 5] = [
    ("key-rpm", "Requests per minute", "rpm", false),
    ("key-rpd", "Requests per day", "rpd", false),
    ("key-tpm", "Tokens per minute", "tpm", false),
    ("key-monthly", "Monthly budget ($)", "monthly_budget_micros", true),
    ("key-daily", "Daily budget ($)", "daily_budget_micros", true),
];

/// A key's limits as a line: `60 rpm · $5.00 a month`, or `no limits`.
fn limits_line(key: &KeyView) -> String {
    let mut parts: Vec<String> = [(key.rpm, "rpm"), (key.rpd, "rpd"), (key.tpm, "tpm")]
        .into_iter()
        .filter_map(|(n, unit)| n.map(|n| format!("{} {unit}", grouped(n.into()))))
        .collect();
    parts.extend(key.monthly_budget_micros.map(|m| format!("{} a month", dollars(m))));
    parts.extend(key.daily_budget_micros.map(|m| format!("{} a day", dollars(m))));
    if parts.is_empty() { "no limits".into() } else { parts.join(" · ") }
}

/// The key the form describes, or an error for each field that is not valid.
fn new_key(
    name: String,
    scopes: Vec<String>,
    models: &str,
    limits: &[String; 5],
) -> Result<NewKey, Vec<(&'static str, String)>> {
    let mut errors = Vec::new();
    let mut count = |i: usize| {
        input::limit::<u32>(&limits[i]).unwrap_or_else(|e| {
            errors.push((LIMITS[i].2, e));
            None
        })
    };
    let (rpm, rpd, tpm) = (count(0), count(1), count(2));
    let mut money = |i: usize| {
        input::dollars_to_micros(&limits[i]).unwrap_or_else(|e| {
            errors.push((LIMITS[i].2, e));
            None
        })
    };
    let (monthly_budget_micros, daily_budget_micros) = (money(3), money(4));
    if !errors.is_empty() {
        return Err(errors);
    }
    Ok(NewKey {
        name,
        scopes,
        models: input::list(models),
        rpm,
        rpd,
        tpm,
        monthly_budget_micros,
        daily_budget_micros,
    })
}

const SCOPES: [&str; 4] = ["chat", "models", "usage", "tools"];

#[component]
pub fn Keys() -> impl IntoView {
    let keys = RwSignal::new(Loaded::<Vec<KeyView>>::None);
    let load = move || spawn_local(async move { keys.set(Some(api::keys().await)) });
    load();

    let name = RwSignal::new(String::new());
    let scopes = RwSignal::new(vec!["chat".to_owned()]);
    let models = RwSignal::new(String::new());
    let limits = [(); 5].map(|()| RwSignal::new(String::new()));
    let field_errors = RwSignal::new(Vec::<(&'static str, String)>::new());
    let error = RwSignal::new(None::<String>);
    let secret = RwSignal::new(None::<String>);
    let create = move |ev: ev::SubmitEvent| {
        ev.prevent_default();
        error.set(None);
        secret.set(None);
        let key = new_key(
            name.get_untracked().trim().to_owned(),
            scopes.get_untracked(),
            &models.get_untracked(),
            &limits.map(|l| l.get_untracked()),
        );
        let key = match key {
            Ok(key) => key,
            Err(problems) => return field_errors.set(problems),
        };
        field_errors.set(Vec::new());
        spawn_local(async move {
            match api::create_key(&key).await {
                Ok(key) => {
                    secret.set(key.key);
                    name.set(String::new());
                    models.set(String::new());
                    for limit in limits {
                        limit.set(String::new());
                    }
                    load();
                }
                Err(e) => {
                    let field = input::error_field(&e.message)
                        .and_then(|f| LIMITS.iter().find(|l| l.2 == f).map(|l| l.2));
                    match field {
                        Some(field) => field_errors.set(vec![(field, e.message)]),
                        None => error.set(Some(e.message)),
                    }
                }
            }
        });
    };
    let limit_fields = LIMITS
        .iter()
        .zip(limits)
        .map(|(&(id, label, field, money), value)| {
            let message = Signal::derive(move || {
                field_errors.with(|e| e.iter().find(|(f, _)| *f == field).map(|(_, m)| m.clone()))
            });
            let error_id = format!("{id}-error");
            view! {
                <div class="field">
                    <label for=id>{label}</label>
                    <input
                        id=id
                        inputmode=if money { "decimal" } else { "numeric" }
                        placeholder=if money { "no budget" } else { "no limit" }
                        aria-describedby=error_id.clone()
                        aria-invalid=move || if message.with(Option::is_some) { "true" } else { "false" }
                        prop:value=move || value.get()
                        on:input=move |ev| value.set(event_target_value(&ev))
                    />
                    <FieldError id=error_id message />
                </div>
            }
        })
        .collect_view();

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
                <label for="key-models">"Allowed models"</label>
                <input id="key-models" placeholder="every model" aria-describedby="key-models-hint" prop:value=move || models.get() on:input=move |ev| models.set(event_target_value(&ev)) />
                <p id="key-models-hint" class="hint">"Separated by commas; empty: every model."</p>
                <details class="section">
                    <summary>"Limits"</summary>
                    <div class="grid">{limit_fields}</div>
                </details>
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
    let error = RwSignal::new(None::<String>);
    let rotated = RwSignal::new(None::<String>);
    let id = StoredValue::new(key.id.clone());
    let revoke = Callback::new(move |()| {
        spawn_local(async move {
            match api::revoke_key(&id.get_value()).await {
                Ok(()) => reload.run(()),
                Err(e) => error.set(Some(e.message)),
            }
        });
    });
    let rotate = move |_| {
        error.set(None);
        spawn_local(async move {
            match api::rotate_key(&id.get_value()).await {
                Ok(key) => rotated.set(key.key),
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
    let models = if key.models.is_empty() { "every model".into() } else { key.models.join(", ") };
    let name = key.name.clone();
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
            <p class="meta wrap" data-limits="">{format!("Models: {models} · Limits: {}", limits_line(&key))}</p>
            {move || rotated.get().map(|s| view! {
                <div class="reveal" role="status">
                    <p>{format!("The new secret of {name}, shown this once (the old one keeps working for a grace period):")}</p>
                    <pre><code data-rotated="">{s}</code></pre>
                </div>
            })}
            {(!revoked).then(|| view! {
                <div class="actions">
                    <button type="button" on:click=rotate>"Rotate secret"</button>
                    <AskTwice label="Revoke" confirm="Confirm: revoke now" action=revoke />
                </div>
            })}
            <p class="field-error" role="alert">{move || error.get()}</p>
        </li>
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_key_carries_its_models_and_limits_with_budgets_in_micro_dollars() {
        let limits = ["60".into(), String::new(), String::new(), "5.25".into(), String::new()];
        let key = new_key("k".into(), vec!["chat".into()], "a, b", &limits).unwrap();
        assert_eq!(key.models, ["a", "b"]);
        assert_eq!(
            (key.rpm, key.rpd, key.monthly_budget_micros),
            (Some(60), None, Some(5_250_000))
        );
        let bad = ["x".into(), String::new(), String::new(), "-1".into(), String::new()];
        let errors = new_key("k".into(), vec![], "", &bad).unwrap_err();
        assert_eq!(
            errors.iter().map(|e| e.0).collect::<Vec<_>>(),
            ["rpm", "monthly_budget_micros"]
        );
    }
}
