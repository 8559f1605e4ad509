//! The relay benchmark (`scripts/bench-relay`): what the three binaries share.
//!
//! - `mock-upstream`: a fast OpenAI-compatible upstream with pre-serialised answers;
//! - `loadgen`: drives one target at a fixed concurrency and prints one [`RunResult`] as JSON,
//!   or opens thousands of slow streams at once and prints a [`CapacityResult`];
//! - `bench-report`: turns those JSON lines into the table and the verdicts on the targets.
//!
//! The proxy's CPU time and memory are read from `/proc` by the load generator itself, at the
//! edges of the measured window, so warm-up and start-up are not counted.

pub mod procfs;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The model every request names; the mock answers for any model.
pub const MODEL: &str = "bench-model";

/// Whether a request asks for one JSON answer or an SSE stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// `"stream": false`: one `chat.completion`.
    Json,
    /// `"stream": true`: `chat.completion.chunk` events, a usage chunk and `[DONE]`.
    Stream,
}

impl Mode {
    pub fn label(self) -> &'static str {
        match self {
            Self::Json => "non-streaming",
            Self::Stream => "streaming",
        }
    }
}

/// The chat request the load generator sends (the same bytes every time).
pub fn request_body(mode: Mode) -> Vec<u8> {
    let body = serde_json::json!({
        "model": MODEL,
        "messages": [{"role": "user", "content": "Hello! What can you tell me about your shop?"}],
        "max_tokens": 64,
        "stream": mode == Mode::Stream,
    });
    body.to_string().into_bytes()
}

/// One target driven at one concurrency for a fixed time: what `loadgen run` prints.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunResult {
    /// `direct`, `nginx` or `confab`.
    pub target: String,
    pub mode: Mode,
    pub concurrency: usize,
    /// Length of the measured window (after the warm-up).
    pub seconds: f64,
    /// Requests that started and completed successfully inside the measured window.
    pub requests: u64,
    pub requests_per_sec: f64,
    /// Latency from sending the request to the end of the response body, in microseconds.
    pub p50_us: Option<f64>,
    pub p99_us: Option<f64>,
    /// From sending the request to the first byte of the response body (streams only).
    pub ttfb_p50_us: Option<f64>,
    pub ttfb_p99_us: Option<f64>,
    /// Failed requests over the whole run, warm-up included.
    pub errors: u64,
    pub error_kinds: BTreeMap<String, u64>,
    /// CPU time (user + system) of the proxy's processes in the measured window, divided by
    /// `requests`. `None` without a proxy (direct).
    pub cpu_us_per_request: Option<f64>,
    /// The load generator's own CPU time per request, in the same window.
    #[serde(default)]
    pub client_cpu_us_per_request: Option<f64>,
    /// The mock upstream's CPU time per request, in the same window (with `--upstream-pid`).
    #[serde(default)]
    pub upstream_cpu_us_per_request: Option<f64>,
    /// Peak resident memory of the proxy's processes (`VmHWM`, summed), in KiB.
    pub peak_rss_kib: Option<u64>,
    /// Whether the peak was reset at the start of the measured window (`/proc/PID/clear_refs`);
    /// when it was not, it is the peak since the process started.
    pub peak_rss_reset: bool,
}

/// Thousands of slow streams held open at once: what `loadgen capacity` prints.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CapacityResult {
    pub target: String,
    /// Streams asked for.
    pub streams: usize,
    /// Streams whose first body byte arrived (all of them open at once at the peak).
    pub opened: usize,
    /// The most streams open (first byte received, end not yet) at one time.
    pub max_open: usize,
    /// Streams that ended with `[DONE]`.
    pub completed: usize,
    pub errors: u64,
    pub error_kinds: BTreeMap<String, u64>,
    /// Seconds from the first connection until every stream was open (or failed); `None` when
    /// that never happened within the time limit.
    pub ramp_seconds: Option<f64>,
    /// Seconds from the first connection until the last stream ended.
    pub total_seconds: f64,
    /// The proxy's resident memory before the streams were opened, in KiB.
    pub rss_before_kib: u64,
    /// ... and its peak (`VmHWM`, reset just before) while they were open.
    pub peak_rss_kib: u64,
    /// `(peak_rss_kib - rss_before_kib) / max_open`.
    pub kib_per_stream: f64,
    /// CPU time of the proxy over the whole phase, divided by the streams.
    pub cpu_us_per_stream: f64,
}

/// The value at quantile `q` (0..=1) of sorted samples, by nearest rank.
pub fn percentile(sorted: &[u64], q: f64) -> Option<u64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_taken_by_nearest_rank() {
        let samples: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&samples, 0.5), Some(50));
        assert_eq!(percentile(&samples, 0.99), Some(99));
        assert_eq!(percentile(&samples, 1.0), Some(100));
        assert_eq!(percentile(&[7], 0.99), Some(7));
        assert_eq!(percentile(&[], 0.5), None);
    }
}
