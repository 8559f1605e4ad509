//! Webhooks: the latest deliveries with their status and last error, and a redeliver button.

use confab_admin_api::{DeliveryView, Page};
use leptos::prelude::*;
use leptos::task::spawn_local;

use super::{ErrorNote, Loaded, LoadingNote};
use crate::api;
use crate::format::timestamp;

/// How many deliveries the page asks for.
const SHOWN: u32 = 50;

#[component]
pub fn Webhooks() -> impl IntoView {
    let page = RwSignal::new(Loaded::<Page<DeliveryView>>::None);
    let load = move || spawn_local(async move { page.set(Some(api::deliveries(SHOWN).await)) });
    load();
    view! {
        <h1>"Webhooks"</h1>
        <p class="muted">{format!("The latest {SHOWN} deliveries, newest first.")}</p>
        {move || match page.get() {
            None => view! { <LoadingNote /> }.into_any(),
            Some(Err(e)) => view! { <ErrorNote message=e.message /> }.into_any(),
            Some(Ok(p)) if p.data.is_empty() => view! { <p class="muted">"No deliveries yet."</p> }.into_any(),
            Some(Ok(p)) => view! {
                <ul class="cards">
                    {p.data.into_iter().map(|d| view! { <DeliveryCard delivery=d /> }).collect_view()}
                </ul>
            }
                .into_any(),
        }}
    }
}

#[component]
fn DeliveryCard(delivery: DeliveryView) -> impl IntoView {
    let shown = RwSignal::new(delivery);
    let error = RwSignal::new(None::<String>);
    let busy = RwSignal::new(false);
    let redeliver = move |_| {
        let id = shown.with_untracked(|d| d.id.clone());
        busy.set(true);
        error.set(None);
        spawn_local(async move {
            match api::redeliver(&id).await {
                Ok(d) => shown.set(d),
                Err(e) => error.set(Some(e.message)),
            }
            busy.set(false);
        });
    };
    view! {
        {move || {
            let d = shown.get();
            let badge = match d.status.as_str() {
                "delivered" => "badge ok",
                "failed" => "badge attention",
                _ => "badge",
            };
            view! {
                <li class="card" data-delivery=d.id.clone()>
                    <div class="card-head">
                        <h2>{d.event.clone()}</h2>
                        <span class=badge>{d.status.clone()}</span>
                    </div>
                    <p class="meta wrap">
                        {format!("{} · {} attempt(s) · {}", d.endpoint, d.attempts, timestamp(d.created_at_ms))}
                    </p>
                    {d.last_error.clone().map(|e| view! { <p class="wrap">"Last error: " {e}</p> })}
                    <div class="actions">
                        <button type="button" on:click=redeliver disabled=move || busy.get()>"Redeliver"</button>
                    </div>
                    <p class="field-error" role="alert">{move || error.get()}</p>
                </li>
            }
        }}
    }
}
