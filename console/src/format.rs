//! How numbers, money and times read in the console, the geometry of its bar charts, and the
//! usage CSV. Pure functions of integers, tested natively.

use confab_admin_api::UsageDay as DayView;

/// Micro-dollars as dollars: `$0.000123` below a cent, `$12.34` above.
pub fn dollars(micros: u64) -> String {
    let whole = micros / 1_000_000;
    let fraction = micros % 1_000_000;
    if micros != 0 && micros < 10_000 {
        format!("${whole}.{fraction:06}")
    } else {
        // Rounded to the cent, half up.
        let cents = (micros + 5_000) / 10_000;
        format!("${}.{:02}", grouped(cents / 100), cents % 100)
    }
}

/// An integer with thin separators every three digits: `12,345`.
pub fn grouped(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Unix milliseconds as `YYYY-MM-DD HH:MM UTC`.
pub fn timestamp(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let days = secs.div_euclid(86_400);
    let rest = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!("{y:04}-{m:02}-{d:02} {:02}:{:02} UTC", rest / 3600, rest % 3600 / 60)
}

/// An RFC 3339 time from the relay (`2026-12-03T00:53:25Z`) as `YYYY-MM-DD HH:MM UTC`.
pub fn rfc3339(text: &str) -> String {
    match (text.get(..10), text.get(11..16)) {
        (Some(date), Some(time)) => format!("{date} {time} UTC"),
        _ => text.to_owned(),
    }
}

/// Days since 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// The plot area of the console's bar charts, in SVG user units.
pub const CHART_WIDTH: u64 = 600;
pub const CHART_HEIGHT: u64 = 160;

/// One bar, or one segment of a stacked bar: its place and size in the plot area.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bar {
    pub x: u64,
    pub y: u64,
    pub width: u64,
    pub height: u64,
}

/// Stacked bars for `series` (one entry per bar, one value per segment, bottom first), scaled
/// so that the tallest stack fills the plot's height. Integer arithmetic only; a non-zero value
/// is at least one unit tall so that it stays visible.
pub fn stacked_bars(series: &[Vec<u64>]) -> Vec<Vec<Bar>> {
    let count = series.len().max(1) as u64;
    let slot = CHART_WIDTH / count;
    let gap = (slot / 5).max(1).min(slot.saturating_sub(1));
    let max = series.iter().map(|s| s.iter().sum::<u64>()).max().unwrap_or(0).max(1);
    series
        .iter()
        .enumerate()
        .map(|(i, stack)| {
            let x = i as u64 * slot + gap / 2;
            // Segments end at their scaled running sums, so that a stack is as tall as its
            // total scaled once (not the sum of each segment rounded down).
            let (mut sum, mut drawn) = (0u128, 0u64);
            stack
                .iter()
                .map(|&value| {
                    sum += u128::from(value);
                    let end = (sum * u128::from(CHART_HEIGHT) / u128::from(max)) as u64;
                    let end = end.max(drawn + u64::from(value > 0)).min(CHART_HEIGHT);
                    let bar =
                        Bar { x, y: CHART_HEIGHT - end, width: slot - gap, height: end - drawn };
                    drawn = end;
                    bar
                })
                .collect()
        })
        .collect()
}

/// A CSV field, quoted when it must be.
fn csv_field(text: &str) -> String {
    if text.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text.to_owned()
    }
}

/// The usage series as CSV, one row per day, cost in micro-dollars as the API gives it.
pub fn usage_csv(days: &[DayView]) -> String {
    let mut out = String::from("date,requests,input_tokens,output_tokens,cost_micros\n");
    for day in days {
        let t = &day.totals;
        out.push_str(&format!(
            "{},{},{},{},{}\n",
            csv_field(&day.date),
            t.requests,
            t.input_tokens,
            t.output_tokens,
            t.cost_micros
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use confab_admin_api::UsageTotals as Totals;

    fn day(date: &str, requests: u64, cost_micros: u64) -> DayView {
        DayView { date: date.into(), totals: Totals { requests, cost_micros, ..Totals::default() } }
    }

    #[test]
    fn money_reads_in_dollars_with_small_amounts_kept_exact() {
        assert_eq!(dollars(0), "$0.00");
        assert_eq!(dollars(123), "$0.000123");
        assert_eq!(dollars(12_345_678), "$12.35");
        assert_eq!(dollars(1_234_000_000), "$1,234.00");
        assert_eq!(grouped(1_000), "1,000");
        assert_eq!(grouped(999), "999");
    }

    #[test]
    fn times_are_utc() {
        assert_eq!(timestamp(0), "1970-01-01 00:00 UTC");
        assert_eq!(timestamp(1_796_172_805_000), "2026-12-02 00:53 UTC");
        assert_eq!(rfc3339("2026-12-03T00:53:25Z"), "2026-12-03 00:53 UTC");
    }

    #[test]
    fn the_tallest_stack_fills_the_chart_and_small_values_stay_visible() {
        let bars = stacked_bars(&[vec![0, 0], vec![1, 1000], vec![500, 500]]);
        assert_eq!(bars[0][0].height + bars[0][1].height, 0);
        let tallest = &bars[1];
        assert_eq!(tallest[0].height, 1);
        assert_eq!(tallest[0].y + tallest[0].height, CHART_HEIGHT);
        assert_eq!(tallest[1].y, 0, "{tallest:?}");
        assert_eq!(bars[2][0].height + bars[2][1].height, CHART_HEIGHT * 1000 / 1001);
        assert!(bars[2][0].x > bars[1][0].x + bars[1][0].width);
        assert!(stacked_bars(&[]).is_empty());
    }

    #[test]
    fn the_csv_has_a_header_and_a_row_per_day() {
        let csv = usage_csv(&[day("2026-12-01", 3, 42)]);
        assert_eq!(
            csv,
            "date,requests,input_tokens,output_tokens,cost_micros\n2026-12-01,3,0,0,42\n"
        );
        assert_eq!(csv_field("a,\"b\""), "\"a,\"\"b\"\"\"");
    }
}
