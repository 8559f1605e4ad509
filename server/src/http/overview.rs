//! `GET /admin/v1/overview`: what the console's first page shows. Spend comes from the daily
//! usage rollup (so it is every relay's), errors and refusals from this relay's metrics.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use confab_admin_api::{BudgetView, DayView, OverviewView, SinceStartView, SpendView};

use super::AppState;
use super::admin::Admin;
use crate::budget::Period;
use crate::error::ApiError;
use crate::store::CallerLimits;
use crate::usage::{self, Totals};

pub fn router() -> Router<AppState> {
    Router::new().route("/admin/v1/overview", get(overview))
}

fn spend(totals: &Totals) -> SpendView {
    SpendView { requests: totals.requests, cost_micros: totals.cost_micros }
}

async fn overview(_: Admin, State(state): State<AppState>) -> Result<Json<OverviewView>, ApiError> {
    let store = state.store.as_ref();
    let now = crate::unix_now();
    // The last 31 days cover the chart's 30 and the whole of this month.
    let report = usage::report(store, 31, None, None, now).await.map_err(ApiError::internal)?;
    let month_start = Period::month_of(now).to_string();
    let today = Period::day_of(now).to_string();
    let mut month = Totals::default();
    for day in report.days.iter().filter(|d| d.date.as_str() >= month_start.as_str()) {
        month.requests += day.totals.requests;
        month.cost_micros += day.totals.cost_micros;
    }
    let today_totals = report.days.iter().find(|d| d.date == today).map(|d| d.totals);
    // Spend per payer this month and today, from the month's groups.
    let groups = store
        .usage_totals(
            i64::try_from(Period::month_of(now).starts_at() * 1000).unwrap_or(0),
            None,
            None,
        )
        .await
        .map_err(ApiError::internal)?;
    let today_start = Period::day_of(now).starts_at();
    let mut monthly: BTreeMap<(bool, String), u64> = BTreeMap::new();
    let mut daily: BTreeMap<(bool, String), u64> = BTreeMap::new();
    for group in &groups {
        let payer = match (&group.site_id, &group.key_id) {
            (Some(site), _) => (true, site.clone()),
            (None, Some(key)) => (false, key.clone()),
            (None, None) => continue,
        };
        *monthly.entry(payer.clone()).or_default() += group.cost_micros;
        if group.day_start >= today_start {
            *daily.entry(payer).or_default() += group.cost_micros;
        }
    }
    let mut budgets = Vec::new();
    let mut add = |is_site: bool, id: &str, name: &str, limits: &CallerLimits| {
        let payer = (is_site, id.to_owned());
        for (period, budget, spent) in [
            ("monthly", limits.monthly_budget_micros, monthly.get(&payer)),
            ("daily", limits.daily_budget_micros, daily.get(&payer)),
        ] {
            if let Some(budget) = budget {
                budgets.push(BudgetView {
                    payer: if is_site { "site" } else { "key" }.into(),
                    id: id.to_owned(),
                    name: name.to_owned(),
                    period: period.into(),
                    budget_micros: budget,
                    spent_micros: spent.copied().unwrap_or(0),
                });
            }
        }
    };
    for site in store.list_sites().await.map_err(ApiError::internal)? {
        add(true, &site.id, &site.settings.name, &site.settings.limits);
    }
    for key in store.list_api_keys().await.map_err(ApiError::internal)? {
        if key.is_active() {
            add(false, &key.id, &key.name, &key.limits);
        }
    }
    let days = report.days[report.days.len().saturating_sub(30)..]
        .iter()
        .map(|d| DayView {
            date: d.date.clone(),
            requests: d.totals.requests,
            cost_micros: d.totals.cost_micros,
        })
        .collect();
    let counted = &state.metrics.since_start;
    Ok(Json(OverviewView {
        today: today_totals.as_ref().map(spend).unwrap_or_default(),
        month: spend(&month),
        budgets,
        days,
        since_start: SinceStartView {
            upstream_errors: counted.upstream_errors.load(Ordering::Relaxed),
            rate_limit_refusals: counted.limit_refusals.load(Ordering::Relaxed),
            budget_refusals: counted.budget_refusals.load(Ordering::Relaxed),
        },
    }))
}
