//! Prints the relay benchmark's results (JSON lines from `loadgen`) as one Markdown table, then
//! each of issue 5's targets with the measured ratio and PASS or MISS.
//!
//! `bench-report RESULTS.jsonl [--capacity CAPACITY.json]`

use std::path::PathBuf;

use anyhow::Context as _;
use clap::Parser;
use confab_bench::{CapacityResult, Mode, RunResult};

#[derive(Debug, Parser)]
#[command(about = "Prints the relay benchmark's table and targets")]
struct Args {
    /// One RunResult per line, as `loadgen run` prints them.
    results: PathBuf,
    /// What `loadgen capacity` printed, if it ran.
    #[arg(long)]
    capacity: Option<PathBuf>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let text = std::fs::read_to_string(&args.results)
        .with_context(|| format!("reading {}", args.results.display()))?;
    let runs: Vec<RunResult> = text
        .lines()
        .filter(|line| !line.trim().is_empty())
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()
        .context("a line of the results is not a RunResult")?;
    let capacity: Option<CapacityResult> = match &args.capacity {
        Some(path) if path.exists() => {
            let text = std::fs::read_to_string(path)?;
            (!text.trim().is_empty()).then(|| serde_json::from_str(&text)).transpose()?
        }
        _ => None,
    };
    print!("{}", table(&runs));
    println!();
    print!("{}", targets(&runs, capacity.as_ref()));
    if let Some(capacity) = &capacity {
        println!();
        print!("{}", capacity_table(capacity));
    }
    Ok(())
}

fn ms(us: Option<f64>) -> String {
    us.map_or_else(|| "—".into(), |us| format!("{:.3}", us / 1000.0))
}

/// 12345.6 → "12,346".
fn thousands(value: f64) -> String {
    let digits = format!("{:.0}", value.max(0.0));
    let mut out = String::new();
    for (index, digit) in digits.chars().enumerate() {
        if index > 0 && (digits.len() - index) % 3 == 0 {
            out.push(',');
        }
        out.push(digit);
    }
    out
}

fn table(runs: &[RunResult]) -> String {
    let mut out = String::from(
        "| target | mode | c | requests/s | p50 ms | p99 ms | TTFB p50 ms | TTFB p99 ms | CPU µs/req | peak RSS MiB | errors | loadgen / mock CPU µs/req |\n\
         |---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for run in runs {
        let errors = if run.errors == 0 {
            "0".to_owned()
        } else {
            let kinds: Vec<String> =
                run.error_kinds.iter().map(|(kind, count)| format!("{kind} {count}")).collect();
            format!("**{}** ({})", run.errors, kinds.join(", "))
        };
        let peak = run.peak_rss_kib.map_or_else(
            || "—".into(),
            |kib| {
                format!("{:.1}{}", kib as f64 / 1024.0, if run.peak_rss_reset { "" } else { "*" })
            },
        );
        let one = |us: Option<f64>| us.map_or_else(|| "—".into(), |us| format!("{us:.1}"));
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} / {} |\n",
            run.target,
            run.mode.label(),
            run.concurrency,
            thousands(run.requests_per_sec),
            ms(run.p50_us),
            ms(run.p99_us),
            ms(run.ttfb_p50_us),
            ms(run.ttfb_p99_us),
            one(run.cpu_us_per_request),
            peak,
            errors,
            one(run.client_cpu_us_per_request),
            one(run.upstream_cpu_us_per_request),
        ));
    }
    if runs.iter().any(|run| run.peak_rss_kib.is_some() && !run.peak_rss_reset) {
        out.push_str("\n\\* peak since the process started (the peak could not be reset)\n");
    }
    out
}

/// One target: what it compares, the measured value, the bound, and whether it is met.
struct Verdict {
    name: String,
    measured: String,
    bound: String,
    pass: Option<bool>,
}

fn find<'a>(runs: &'a [RunResult], target: &str, mode: Mode, c: usize) -> Option<&'a RunResult> {
    runs.iter().find(|run| run.target == target && run.mode == mode && run.concurrency == c)
}

fn missing(name: String, bound: &str) -> Verdict {
    Verdict { name, measured: "not measured".into(), bound: bound.into(), pass: None }
}

/// A figure of a run, and how to show it.
#[derive(Clone, Copy)]
struct Figure {
    what: &'static str,
    of: fn(&RunResult) -> Option<f64>,
    show: fn(f64) -> String,
}

/// `confab ÷ nginx` for a figure, at least (`min`) or at most (`max`) `bound`.
fn ratio(
    runs: &[RunResult],
    mode: Mode,
    c: usize,
    figure: Figure,
    min: bool,
    bound: f64,
) -> Verdict {
    let name = format!("{} c={c}: {}, Confab ÷ nginx", mode.label(), figure.what);
    let bound_text = format!("{} {bound}", if min { "≥" } else { "≤" });
    let (Some(confab), Some(nginx)) = (
        find(runs, "confab", mode, c).and_then(figure.of),
        find(runs, "nginx", mode, c).and_then(figure.of),
    ) else {
        return missing(name, &bound_text);
    };
    let value = confab / nginx;
    Verdict {
        name,
        measured: format!("{} ÷ {} = **{value:.2}**", (figure.show)(confab), (figure.show)(nginx)),
        bound: bound_text,
        pass: Some(if min { value >= bound } else { value <= bound }),
    }
}

/// What Confab adds over direct for a latency figure (nginx's for comparison), in ms.
fn added(
    runs: &[RunResult],
    mode: Mode,
    c: usize,
    what: &str,
    figure: fn(&RunResult) -> Option<f64>,
    bound_ms: f64,
) -> Verdict {
    let name = format!("{} c={c}: added {what} over direct", mode.label());
    let bound = format!("≤ {bound_ms} ms");
    let Some(direct) = find(runs, "direct", mode, c).and_then(figure) else {
        return missing(name, &bound);
    };
    let Some(confab) = find(runs, "confab", mode, c).and_then(figure) else {
        return missing(name, &bound);
    };
    let confab_added = (confab - direct) / 1000.0;
    let nginx = find(runs, "nginx", mode, c)
        .and_then(figure)
        .map(|nginx| format!(" (nginx {:+.3} ms)", (nginx - direct) / 1000.0))
        .unwrap_or_default();
    Verdict {
        name,
        measured: format!("**{confab_added:+.3} ms**{nginx}"),
        bound,
        pass: Some(confab_added <= bound_ms),
    }
}

fn targets(runs: &[RunResult], capacity: Option<&CapacityResult>) -> String {
    let rps = |run: &RunResult| Some(run.requests_per_sec);
    let cpu = |run: &RunResult| run.cpu_us_per_request;
    let p50 = |run: &RunResult| run.p50_us;
    let p99 = |run: &RunResult| run.p99_us;
    let ttfb = |run: &RunResult| run.ttfb_p50_us;
    let rps = Figure { what: "requests/s", of: rps, show: |rps| format!("{}/s", thousands(rps)) };
    let cpu = Figure { what: "CPU per request", of: cpu, show: |us| format!("{us:.1} µs") };
    let mut verdicts = vec![
        ratio(runs, Mode::Json, 32, rps, true, 0.8),
        ratio(runs, Mode::Json, 32, cpu, false, 1.5),
        added(runs, Mode::Json, 1, "p50", p50, 0.1),
        added(runs, Mode::Json, 1, "p99", p99, 0.3),
        added(runs, Mode::Stream, 1, "p50", p50, 0.1),
        added(runs, Mode::Stream, 1, "p99", p99, 0.3),
        ratio(runs, Mode::Stream, 32, rps, true, 0.9),
        added(runs, Mode::Stream, 32, "TTFB p50", ttfb, 0.2),
        // Issue 13's bounds for the stream path.
        ratio(runs, Mode::Stream, 32, rps, true, 0.6),
        ratio(runs, Mode::Stream, 32, cpu, false, 3.0),
    ];
    // What translating Anthropic's stream costs over passing an OpenAI one through.
    for c in [1, 32] {
        let name = format!("streaming c={c}: CPU per stream, confab-anthropic ÷ confab");
        let (Some(anthropic), Some(openai)) = (
            find(runs, "confab-anthropic", Mode::Stream, c),
            find(runs, "confab", Mode::Stream, c),
        ) else {
            continue;
        };
        let (Some(translated), Some(passed)) =
            (anthropic.cpu_us_per_request, openai.cpu_us_per_request)
        else {
            verdicts.push(missing(name, "≤ 1.3"));
            continue;
        };
        let value = translated / passed;
        verdicts.push(Verdict {
            name,
            measured: format!(
                "{translated:.1} µs ÷ {passed:.1} µs = **{value:.2}** ({}/s against {}/s)",
                thousands(anthropic.requests_per_sec),
                thousands(openai.requests_per_sec)
            ),
            bound: "≤ 1.3".into(),
            pass: Some(value <= 1.3),
        });
    }
    let name = "streaming c=32: Confab's peak RSS".to_owned();
    verdicts.push(match find(runs, "confab", Mode::Stream, 32).and_then(|run| run.peak_rss_kib) {
        Some(kib) => {
            let mib = kib as f64 / 1024.0;
            Verdict {
                name,
                measured: format!("**{mib:.1} MiB**"),
                bound: "≤ 40 MiB".into(),
                pass: Some(mib <= 40.0),
            }
        }
        None => missing(name, "≤ 40 MiB"),
    });
    if let Some(capacity) = capacity {
        verdicts.push(Verdict {
            name: format!(
                "{} open streams: Confab's memory per stream",
                thousands(capacity.max_open as f64)
            ),
            measured: format!("**{:.1} KiB**", capacity.kib_per_stream),
            bound: "≤ 20 KiB".into(),
            pass: Some(capacity.kib_per_stream <= 20.0),
        });
        verdicts.push(Verdict {
            name: format!("{} open streams: errors", thousands(capacity.streams as f64)),
            measured: format!("**{}**", capacity.errors),
            bound: "0".into(),
            pass: Some(capacity.errors == 0),
        });
    }
    // With `--redis`: what sharing limits and budgets through Redis adds to one request, and
    // what a second relay on the same Redis and database gives.
    for mode in [Mode::Json, Mode::Stream] {
        let p50 = |target| find(runs, target, mode, 1).and_then(|run| run.p50_us);
        let (Some(alone), Some(shared)) = (p50("confab"), p50("confab-redis")) else {
            continue;
        };
        let added_ms = (shared - alone) / 1000.0;
        verdicts.push(Verdict {
            name: format!("{} c=1: p50 Redis adds (confab-redis − confab)", mode.label()),
            measured: format!("**{added_ms:.3} ms**"),
            bound: "≤ 0.2 ms".into(),
            pass: Some(added_ms <= 0.2),
        });
    }
    for mode in [Mode::Json, Mode::Stream] {
        let (Some(one), Some(two)) =
            (find(runs, "confab-redis", mode, 32), find(runs, "confab-redis-x2", mode, 32))
        else {
            continue;
        };
        verdicts.push(Verdict {
            name: format!("{} c=32: two relays on Redis ÷ one", mode.label()),
            measured: format!(
                "**{:.2}×** ({} against {})",
                two.requests_per_sec / one.requests_per_sec,
                thousands(two.requests_per_sec),
                thousands(one.requests_per_sec)
            ),
            bound: "reported".into(),
            pass: None,
        });
    }
    let mut out = String::from("| target | measured | bound | |\n|---|---|---|---|\n");
    for verdict in verdicts {
        let result = match verdict.pass {
            Some(true) => "PASS",
            Some(false) => "**MISS**",
            None => "—",
        };
        out.push_str(&format!(
            "| {} | {} | {} | {} |\n",
            verdict.name, verdict.measured, verdict.bound, result
        ));
    }
    out
}

fn capacity_table(capacity: &CapacityResult) -> String {
    let kinds: Vec<String> =
        capacity.error_kinds.iter().map(|(kind, count)| format!("{kind} {count}")).collect();
    format!(
        "| capacity ({}) | value |\n|---|---:|\n\
         | streams asked for | {} |\n\
         | most open at once | {} |\n\
         | ended with [DONE] | {} |\n\
         | errors | {}{} |\n\
         | all open after | {} |\n\
         | whole phase | {:.1} s |\n\
         | RSS before | {:.1} MiB |\n\
         | peak RSS with the streams open | {:.1} MiB |\n\
         | memory per open stream | {:.1} KiB |\n\
         | CPU per stream (whole phase) | {:.0} µs |\n",
        capacity.target,
        thousands(capacity.streams as f64),
        thousands(capacity.max_open as f64),
        thousands(capacity.completed as f64),
        capacity.errors,
        if kinds.is_empty() { String::new() } else { format!(" ({})", kinds.join(", ")) },
        capacity.ramp_seconds.map_or_else(|| "never".into(), |s| format!("{s:.1} s")),
        capacity.total_seconds,
        capacity.rss_before_kib as f64 / 1024.0,
        capacity.peak_rss_kib as f64 / 1024.0,
        capacity.kib_per_stream,
        capacity.cpu_us_per_stream,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thousands_are_separated() {
        assert_eq!(thousands(0.0), "0");
        assert_eq!(thousands(999.4), "999");
        assert_eq!(thousands(12_345.6), "12,346");
        assert_eq!(thousands(1_234_567.0), "1,234,567");
    }
}
