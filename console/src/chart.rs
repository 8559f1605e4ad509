//! Bar charts drawn as SVG from integer data (no chart library): one `<rect>` per segment, each
//! with a `<title>` that a pointer and a screen reader both reach, and the whole chart an image
//! with a name that says what it shows. Colours come from classes (`.series-0`, `.series-1`),
//! never from inline styles, which the console's CSP forbids.

use leptos::prelude::*;

use crate::format::{CHART_HEIGHT, CHART_WIDTH, stacked_bars};

/// One bar: its label (a date) and its segments' values with their descriptions, bottom first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    pub label: String,
    pub values: Vec<u64>,
    /// What the bar says when hovered or read out: `2026-12-01: $0.12, 3 requests`.
    pub description: String,
}

/// A bar chart of `columns` (stacked when they have several values), named `label`; `legend`
/// names the series, bottom first.
#[component]
pub fn BarChart(label: String, columns: Vec<Column>, legend: Vec<&'static str>) -> impl IntoView {
    let bars = stacked_bars(&columns.iter().map(|c| c.values.clone()).collect::<Vec<_>>());
    let first = columns.first().map(|c| c.label.clone()).unwrap_or_default();
    let last = columns.last().map(|c| c.label.clone()).unwrap_or_default();
    let view_box = format!("0 0 {CHART_WIDTH} {CHART_HEIGHT}");
    let stacked = legend.len() > 1;
    view! {
        <figure class="chart">
            <svg viewBox=view_box role="img" aria-label=label.clone() preserveAspectRatio="none">
                {columns
                    .into_iter()
                    .zip(bars)
                    .map(|(column, segments)| {
                        let title = column.description;
                        view! {
                            <g>
                                <title>{title}</title>
                                {segments
                                    .into_iter()
                                    .enumerate()
                                    .map(|(i, bar)| {
                                        view! {
                                            <rect
                                                class=format!("series-{i}")
                                                x=bar.x.to_string()
                                                y=bar.y.to_string()
                                                width=bar.width.to_string()
                                                height=bar.height.to_string()
                                            />
                                        }
                                    })
                                    .collect_view()}
                            </g>
                        }
                    })
                    .collect_view()}
            </svg>
            <figcaption>
                <span class="axis">{first}</span>
                {stacked
                    .then(|| {
                        view! {
                            <span class="legend">
                                {legend
                                    .iter()
                                    .enumerate()
                                    .map(|(i, name)| {
                                        view! {
                                            <span class="key">
                                                <span class=format!("swatch series-{i}") aria-hidden="true"></span>
                                                {*name}
                                            </span>
                                        }
                                    })
                                    .collect_view()}
                            </span>
                        }
                    })}
                <span class="axis">{last}</span>
            </figcaption>
        </figure>
    }
}
