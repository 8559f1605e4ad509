//! Usage reports: totals and a per-day series (UTC days) over the last N days, by site, key and
//! model, from the usage records. Shared by `confab usage` and `GET /v1/usage`.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::budget::Period;
use crate::store::{Store, StoreError, UsageGroup};

/// The longest report, in days.
pub const MAX_DAYS: u32 = 366;

/// Counts for one group of requests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Totals {
    pub requests: u64,
    pub input_tokens: u64,
    pub output_tokens: u64,
    /// Of the input tokens, those read from and written to the provider's prompt cache.
    pub cache_read_tokens: u64,
    pub cache_write_tokens: u64,
    pub cost_micros: u64,
}

impl Totals {
    fn add(&mut self, group: &UsageGroup) {
        self.requests = self.requests.saturating_add(group.requests);
        self.input_tokens = self.input_tokens.saturating_add(group.input_tokens);
        self.output_tokens = self.output_tokens.saturating_add(group.output_tokens);
        self.cache_read_tokens = self.cache_read_tokens.saturating_add(group.cache_read_tokens);
        self.cache_write_tokens = self.cache_write_tokens.saturating_add(group.cache_write_tokens);
        self.cost_micros = self.cost_micros.saturating_add(group.cost_micros);
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Day {
    /// `YYYY-MM-DD` (UTC).
    pub date: String,
    #[serde(flatten)]
    pub totals: Totals,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UsageReport {
    /// First day covered, `YYYY-MM-DD` (UTC).
    pub since: String,
    pub days: Vec<Day>,
    pub totals: Totals,
    pub by_site: BTreeMap<String, Totals>,
    pub by_key: BTreeMap<String, Totals>,
    pub by_model: BTreeMap<String, Totals>,
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
    let days = days.clamp(1, MAX_DAYS);
    let first = Period::day_of(now_unix.saturating_sub(u64::from(days - 1) * 86_400));
    let since_ms = i64::try_from(first.starts_at().saturating_mul(1000)).unwrap_or(i64::MAX);
    let groups = store.usage_totals(since_ms, site, key).await?;

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
        series.entry(group.day_start).or_default().add(group);
        report.totals.add(group);
        if let Some(site) = &group.site_id {
            report.by_site.entry(site.clone()).or_default().add(group);
        }
        if let Some(key) = &group.key_id {
            report.by_key.entry(key.clone()).or_default().add(group);
        }
        report.by_model.entry(group.model.clone()).or_default().add(group);
    }
    report.days = series
        .into_iter()
        .map(|(start, totals)| Day { date: Period::day_of(start).to_string(), totals })
        .collect();
    Ok(report)
}
