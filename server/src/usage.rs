//! Usage reports: totals and a per-day series (UTC days) over the last N days, by site, key and
//! model, from the usage records. Shared by `confab usage`, `GET /v1/usage` and
//! `GET /admin/v1/usage` (which may also pick one model).

use std::collections::BTreeMap;

use crate::budget::Period;
use crate::store::{Store, StoreError, UsageGroup};

/// The longest report, in days.
pub const MAX_DAYS: u32 = 366;

// The report's shapes are the admin API's (`confab-admin-api`), which the console reads: the
// relay serialises the very types the console deserialises.
pub use confab_admin_api::{UsageDay as Day, UsageReport, UsageTotals as Totals};

fn add(totals: &mut Totals, group: &UsageGroup) {
    totals.requests = totals.requests.saturating_add(group.requests);
    totals.input_tokens = totals.input_tokens.saturating_add(group.input_tokens);
    totals.output_tokens = totals.output_tokens.saturating_add(group.output_tokens);
    totals.cache_read_tokens = totals.cache_read_tokens.saturating_add(group.cache_read_tokens);
    totals.cache_write_tokens = totals.cache_write_tokens.saturating_add(group.cache_write_tokens);
    totals.cost_micros = totals.cost_micros.saturating_add(group.cost_micros);
}

/// Which requests a report counts; `None` counts all.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UsageFilter<'a> {
    pub site: Option<&'a str>,
    pub key: Option<&'a str>,
    /// The model as usage records name it (the keys of `by_model`).
    pub model: Option<&'a str>,
}

/// The report of the last `days` days up to `now_unix` (today included), optionally of one site
/// or one key. Days without requests are in the series with zeros.
pub async fn report(
    store: &dyn Store,
    days: u32,
    site: Option<&str>,
    key: Option<&str>,
    now_unix: u64,
) -> Result<UsageReport, StoreError> {
    filtered_report(store, days, UsageFilter { site, key, model: None }, now_unix).await
}

/// [`report`], of the requests `filter` names. The store groups by site and key; a model is
/// picked out of its groups here (they are per day, site, key and model, so few).
pub async fn filtered_report(
    store: &dyn Store,
    days: u32,
    filter: UsageFilter<'_>,
    now_unix: u64,
) -> Result<UsageReport, StoreError> {
    let days = days.clamp(1, MAX_DAYS);
    let first = Period::day_of(now_unix.saturating_sub(u64::from(days - 1) * 86_400));
    let since_ms = i64::try_from(first.starts_at().saturating_mul(1000)).unwrap_or(i64::MAX);
    let mut groups = store.usage_totals(since_ms, filter.site, filter.key).await?;
    if let Some(model) = filter.model {
        groups.retain(|group| group.model == model);
    }

    let mut series: BTreeMap<u64, Totals> = BTreeMap::new();
    for day in 0..u64::from(days) {
        series.insert(first.starts_at() + day * 86_400, Totals::default());
    }
    let mut report = UsageReport {
        since: first.to_string(),
        days: Vec::new(),
        totals: Totals::default(),
        by_site: BTreeMap::new(),
        by_key: BTreeMap::new(),
        by_model: BTreeMap::new(),
    };
    for group in &groups {
        add(series.entry(group.day_start).or_default(), group);
        add(&mut report.totals, group);
        if let Some(site) = &group.site_id {
            add(report.by_site.entry(site.clone()).or_default(), group);
        }
        if let Some(key) = &group.key_id {
            add(report.by_key.entry(key.clone()).or_default(), group);
        }
        add(report.by_model.entry(group.model.clone()).or_default(), group);
    }
    report.days = series
        .into_iter()
        .map(|(start, totals)| Day { date: Period::day_of(start).to_string(), totals })
        .collect();
    Ok(report)
}
