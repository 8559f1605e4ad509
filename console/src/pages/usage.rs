//! Usage: by site, key, model and number of days; input and output tokens per day as stacked bars,
//! spend and requests per day, totals by model, and the series as a CSV download (a Blob).

use leptos::ev;
use leptos::prelude::*;
use leptos::task::spawn_local;
use web_sys::{Blob, BlobPropertyBag, Url};

use super::{ErrorNote, Loaded, LoadingNote};
use crate::api::{self, KeyView, SiteView, UsageFilter, UsageReport};
use crate::chart::{BarChart, Column};
use crate::format::{dollars, grouped, usage_csv};

/// A Blob URL for `text` as CSV.
fn csv_url(text: &str) -> Option<String> {
    let parts = js_sys::Array::of1(&text.into());
    let options = BlobPropertyBag::new();
    options.set_type("text/csv;charset=utf-8");
    let blob = Blob::new_with_str_sequence_and_options(&parts, &options).ok()?;
    Url::create_object_url_with_blob(&blob).ok()
}

#[component]
pub fn Usage() -> impl IntoView {
    let sites = RwSignal::new(Vec::<SiteView>::new());
    let keys = RwSignal::new(Vec::<KeyView>::new());
    spawn_local(async move {
        if let Ok(list) = api::sites().await {
            sites.set(list);
        }
        if let Ok(list) = api::keys().await {
            keys.set(list);
        }
    });
    let site = RwSignal::new(String::new());
    let key = RwSignal::new(String::new());
    let model = RwSignal::new(String::new());
    let days = RwSignal::new(30u32);
    // Every model a report has named, for the Model filter.
    let models = RwSignal::new(std::collections::BTreeSet::<String>::new());
    let report = RwSignal::new(Loaded::<UsageReport>::None);
    let download = RwSignal::new(None::<String>);
    let load = move || {
        report.set(None);
        let filter = UsageFilter {
            days: days.get_untracked(),
            site: site.get_untracked(),
            key: key.get_untracked(),
            model: model.get_untracked(),
        };
        spawn_local(async move {
            let loaded = api::usage(&filter).await;
            if let Ok(r) = &loaded {
                let seen = r.by_model.keys().filter(|m| !models.with_untracked(|s| s.contains(*m)));
                let seen: Vec<String> = seen.cloned().collect();
                if !seen.is_empty() {
                    models.update(|s| s.extend(seen));
                }
            }
            let url = loaded.as_ref().ok().and_then(|r| csv_url(&usage_csv(&r.days)));
            if let Some(old) = download.get_untracked() {
                let _ = Url::revoke_object_url(&old);
            }
            download.set(url);
            report.set(Some(loaded));
        });
    };
    load();
    on_cleanup(move || {
        if let Some(old) = download.get_untracked() {
            let _ = Url::revoke_object_url(&old);
        }
    });
    let apply = move |ev: ev::SubmitEvent| {
        ev.prevent_default();
        load();
    };

    view! {
        <h1>"Usage"</h1>
        <form class="filters" on:submit=apply>
            <div class="field">
                <label for="u-site">"Site"</label>
                <select id="u-site" on:change=move |ev| site.set(event_target_value(&ev))>
                    <option value="">"All sites"</option>
                    {move || sites.get().into_iter().map(|s| view! { <option value=s.id.clone()>{s.name.clone()}</option> }).collect_view()}
                </select>
            </div>
            <div class="field">
                <label for="u-key">"Secret key"</label>
                <select id="u-key" on:change=move |ev| key.set(event_target_value(&ev))>
                    <option value="">"All keys"</option>
                    {move || keys.get().into_iter().map(|k| view! { <option value=k.id.clone()>{k.name.clone()}</option> }).collect_view()}
                </select>
            </div>
            <div class="field">
                <label for="u-model">"Model"</label>
                <select id="u-model" on:change=move |ev| model.set(event_target_value(&ev))>
                    <option value="">"All models"</option>
                    {move || models.get().into_iter().map(|m| {
                        let (chosen, text) = (m.clone(), m.clone());
                        view! { <option value=m selected=move || model.get() == chosen>{text}</option> }
                    }).collect_view()}
                </select>
            </div>
            <div class="field">
                <label for="u-days">"Days"</label>
                <select id="u-days" on:change=move |ev| days.set(event_target_value(&ev).parse().unwrap_or(30))>
                    <option value="7">"7"</option>
                    <option value="30" selected="">"30"</option>
                    <option value="90">"90"</option>
                </select>
            </div>
            <button type="submit" class="primary">"Show"</button>
        </form>
        {move || match report.get() {
            None => view! { <LoadingNote /> }.into_any(),
            Some(Err(e)) => view! { <ErrorNote message=e.message /> }.into_any(),
            Some(Ok(r)) => details(r, download.get()).into_any(),
        }}
    }
}

fn details(report: UsageReport, download: Option<String>) -> impl IntoView {
    let columns: Vec<Column> = report
        .days
        .iter()
        .map(|d| Column {
            label: d.date.clone(),
            values: vec![d.totals.input_tokens, d.totals.output_tokens],
            description: format!(
                "{}: {} input and {} output tokens, {} requests, {}",
                d.date,
                grouped(d.totals.input_tokens),
                grouped(d.totals.output_tokens),
                grouped(d.totals.requests),
                dollars(d.totals.cost_micros)
            ),
        })
        .collect();
    let t = report.totals;
    let label = format!(
        "Input and output tokens per day since {}: {} input, {} output",
        report.since,
        grouped(t.input_tokens),
        grouped(t.output_tokens)
    );
    let file = format!("confab-usage-since-{}.csv", report.since);
    view! {
        <dl class="stats">
            <div><dt>"Spend"</dt><dd>{dollars(t.cost_micros)}</dd></div>
            <div><dt>"Requests"</dt><dd>{grouped(t.requests)}</dd></div>
            <div><dt>"Input tokens"</dt><dd>{grouped(t.input_tokens)}</dd></div>
            <div><dt>"Output tokens"</dt><dd>{grouped(t.output_tokens)}</dd></div>
        </dl>
        <section aria-labelledby="tokens-heading">
            <h2 id="tokens-heading">"Tokens per day"</h2>
            <BarChart label=label columns=columns legend=vec!["Input tokens", "Output tokens"] />
        </section>
        {download.map(|href| view! {
            <p><a class="button" href=href download=file>"Download CSV"</a></p>
        })}
        <section aria-labelledby="models-heading">
            <h2 id="models-heading">"By model"</h2>
            <ul class="cards">
                {report.by_model.into_iter().map(|(model, t)| view! {
                    <li class="card">
                        <div class="card-head"><strong>{model}</strong><span>{dollars(t.cost_micros)}</span></div>
                        <p class="meta">{format!("{} requests · {} in · {} out", grouped(t.requests), grouped(t.input_tokens), grouped(t.output_tokens))}</p>
                    </li>
                }).collect_view()}
            </ul>
        </section>
    }
}
