//! The overview: today's and this month's spend and requests, and the last 30 days' spend as a
//! bar chart, from `GET /admin/v1/usage?days=30`.

use leptos::prelude::*;
use leptos::task::spawn_local;

use super::{ErrorNote, Loaded, LoadingNote};
use crate::api::{self, UsageView};
use crate::chart::{BarChart, Column};
use crate::format::{dollars, grouped, today_and_month};

#[component]
pub fn Overview() -> impl IntoView {
    let report = RwSignal::new(Loaded::<UsageView>::None);
    spawn_local(async move { report.set(Some(api::usage(30, "", "").await)) });
    view! {
        <h1>"Overview"</h1>
        {move || match report.get() {
            None => view! { <LoadingNote /> }.into_any(),
            Some(Err(e)) => view! { <ErrorNote message=e.message /> }.into_any(),
            Some(Ok(report)) => summary(report).into_any(),
        }}
    }
}

fn summary(report: UsageView) -> impl IntoView {
    let (today, month) = today_and_month(&report.days);
    let columns: Vec<Column> = report
        .days
        .iter()
        .map(|day| Column {
            label: day.date.clone(),
            values: vec![day.totals.cost_micros],
            description: format!(
                "{}: {}, {} requests",
                day.date,
                dollars(day.totals.cost_micros),
                grouped(day.totals.requests)
            ),
        })
        .collect();
    let label = format!(
        "Spend per day over the last {} days, {} in all",
        report.days.len(),
        dollars(report.totals.cost_micros)
    );
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
    }
}
