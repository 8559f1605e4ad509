//! The overview: today's and this month's spend and requests (UTC), every budget against what
//! was spent in its period, what the relay refused since it started, and the last 30 days'
//! spend as a bar chart, from `GET /admin/v1/overview`.

use confab_admin_api::OverviewView;
use leptos::prelude::*;
use leptos::task::spawn_local;

use super::{ErrorNote, Loaded, LoadingNote};
use crate::api;
use crate::chart::{BarChart, Column};
use crate::format::{dollars, grouped};

#[component]
pub fn Overview() -> impl IntoView {
    let overview = RwSignal::new(Loaded::<OverviewView>::None);
    spawn_local(async move { overview.set(Some(api::overview().await)) });
    view! {
        <h1>"Overview"</h1>
        {move || match overview.get() {
            None => view! { <LoadingNote /> }.into_any(),
            Some(Err(e)) => view! { <ErrorNote message=e.message /> }.into_any(),
            Some(Ok(overview)) => summary(overview).into_any(),
        }}
    }
}

fn summary(overview: OverviewView) -> impl IntoView {
    let total: u64 = overview.days.iter().map(|d| d.cost_micros).sum();
    let columns: Vec<Column> = overview
        .days
        .iter()
        .map(|day| Column {
            label: day.date.clone(),
            values: vec![day.cost_micros],
            description: format!(
                "{}: {}, {} requests",
                day.date,
                dollars(day.cost_micros),
                grouped(day.requests)
            ),
        })
        .collect();
    let label = format!(
        "Spend per day over the last {} days, {} in all",
        overview.days.len(),
        dollars(total)
    );
    let (today, month, since) = (overview.today, overview.month, overview.since_start);
    view! {
        <dl class="stats">
            <div><dt>"Spent today"</dt><dd data-stat="today-cost">{dollars(today.cost_micros)}</dd></div>
            <div><dt>"Spent this month"</dt><dd data-stat="month-cost">{dollars(month.cost_micros)}</dd></div>
            <div><dt>"Requests today"</dt><dd data-stat="today-requests">{grouped(today.requests)}</dd></div>
            <div><dt>"Requests this month"</dt><dd data-stat="month-requests">{grouped(month.requests)}</dd></div>
        </dl>
        <section aria-labelledby="spend-heading">
            <h2 id="spend-heading">"Spend, last 30 days"</h2>
            <BarChart label=label columns=columns legend=vec!["Spend"] />
        </section>
        <section aria-labelledby="budgets-heading">
            <h2 id="budgets-heading">"Budgets"</h2>
            {if overview.budgets.is_empty() {
                view! { <p class="muted">"No site or key has a budget."</p> }.into_any()
            } else {
                view! {
                    <ul class="cards">
                        {overview.budgets.into_iter().map(|b| view! {
                            <li class="card">
                                <div class="card-head">
                                    <strong>{format!("{} ({})", b.name, b.payer)}</strong>
                                    <span>{format!("{} of {} {}", dollars(b.spent_micros), dollars(b.budget_micros), b.period)}</span>
                                </div>
                            </li>
                        }).collect_view()}
                    </ul>
                }.into_any()
            }}
        </section>
        <section aria-labelledby="since-heading">
            <h2 id="since-heading">"Since the relay started"</h2>
            <dl class="stats">
                <div><dt>"Upstream errors"</dt><dd>{grouped(since.upstream_errors)}</dd></div>
                <div><dt>"Rate-limit refusals"</dt><dd>{grouped(since.rate_limit_refusals)}</dd></div>
                <div><dt>"Budget refusals"</dt><dd>{grouped(since.budget_refusals)}</dd></div>
            </dl>
        </section>
    }
}
