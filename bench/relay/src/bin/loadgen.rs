//! The relay benchmark's load generator.
//!
//! `loadgen run`: C workers, each on its own keep-alive HTTP/1.1 connection, send chat requests
//! back to back for a warm-up and then a measured window, and it prints one JSON line
//! ([`RunResult`]): requests/s, latency p50/p99, time to the first body byte for streams, errors,
//! and the CPU time and peak memory of the proxy's processes (`--pid`) over the measured window.
//!
//! `loadgen capacity`: opens N streams at once (one connection each) against an upstream that
//! sends one chunk a second, and prints the proxy's memory per open stream ([`CapacityResult`]).
//!
//! Why not `oha` or `wrk`: `oha` takes many minutes to build here and reports no time to first
//! byte for streams; `wrk` needs a Lua script per scenario and cannot check that each stream
//! ended with `[DONE]`. This one is small and measures exactly what the targets name.
#![expect(
    clippy::unwrap_used,
    reason = "benchmark tool: a failure aborts the run with its message"
)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::{Context as _, anyhow, bail};
use bytes::Bytes;
use clap::{Args, Parser, Subcommand};
use confab_bench::{CapacityResult, Mode, RunResult, percentile, procfs};
use http_body_util::{BodyExt as _, Full};
use hyper::client::conn::http1::{Connection, SendRequest};
use hyper::header::{CONTENT_TYPE, HOST, HeaderMap, HeaderName, HeaderValue};
use hyper::{Request, Uri};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::time::Instant;

#[derive(Debug, Parser)]
#[command(about = "Load generator for the relay benchmark")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Drive a target at a fixed concurrency; print a RunResult as JSON.
    Run(RunArgs),
    /// Hold thousands of slow streams open at once; print a CapacityResult as JSON.
    Capacity(CapacityArgs),
}

#[derive(Debug, Args)]
struct TargetArgs {
    /// Name of the target in the results (direct, nginx, confab).
    #[arg(long)]
    target: String,
    /// The API root, e.g. http://127.0.0.1:8080/v1 (only plain HTTP to an IP address).
    #[arg(long)]
    url: String,
    /// More instances of the same API (`http://IP:PORT`, same path as --url; repeatable): the
    /// connections are spread over all of them, as a load balancer would.
    #[arg(long = "also-url")]
    also_urls: Vec<String>,
    /// An extra request header, `Name: value` (repeatable).
    #[arg(long = "header", value_name = "NAME: VALUE")]
    headers: Vec<String>,
    /// The proxy's processes: their CPU time and peak memory are measured (repeatable).
    #[arg(long = "pid")]
    pids: Vec<u32>,
    /// Of those, the ones whose memory counts [default: all of --pid]; nginx: the workers.
    #[arg(long = "rss-pid")]
    rss_pids: Vec<u32>,
    /// The upstream's processes (the mock): their CPU time is reported too, to show where the
    /// cores went (repeatable).
    #[arg(long = "upstream-pid")]
    upstream_pids: Vec<u32>,
    /// Clock ticks per second of /proc/PID/stat (`getconf CLK_TCK`).
    #[arg(long, default_value_t = 100)]
    clk_tck: u64,
    /// Runtime worker threads [default: one per core].
    #[arg(long)]
    threads: Option<usize>,
}

#[derive(Debug, Args)]
struct RunArgs {
    #[command(flatten)]
    target: TargetArgs,
    #[arg(long, value_enum)]
    mode: Mode,
    /// Concurrent workers, one connection each.
    #[arg(long, default_value_t = 1)]
    concurrency: usize,
    /// Seconds of warm-up (not measured).
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// Seconds measured.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
}

#[derive(Debug, Args)]
struct CapacityArgs {
    #[command(flatten)]
    target: TargetArgs,
    /// Streams to open, one connection each.
    #[arg(long, default_value_t = 10_000)]
    streams: usize,
    /// Connections opened per batch while ramping up ...
    #[arg(long, default_value_t = 250)]
    batch: usize,
    /// ... one batch every this many milliseconds.
    #[arg(long, default_value_t = 25)]
    batch_ms: u64,
    /// Seconds after which a stream that has not ended counts as an error.
    #[arg(long, default_value_t = 60.0)]
    timeout: f64,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let threads = match &cli.command {
        Command::Run(args) => args.target.threads,
        Command::Capacity(args) => args.target.threads,
    };
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    if let Some(threads) = threads {
        runtime.worker_threads(threads);
    }
    let runtime = runtime.enable_all().build()?;
    let output = match cli.command {
        Command::Run(args) => serde_json::to_string(&runtime.block_on(run(args))?)?,
        Command::Capacity(args) => serde_json::to_string(&runtime.block_on(capacity(args))?)?,
    };
    println!("{output}");
    Ok(())
}

/// Where requests go and what they carry, built once.
#[derive(Debug)]
struct Target {
    /// Where connections go, in turn.
    addresses: Vec<SocketAddr>,
    next: std::sync::atomic::AtomicUsize,
    chat: Uri,
    headers: HeaderMap,
    body: Bytes,
    mode: Mode,
}

impl Target {
    fn new(args: &TargetArgs, mode: Mode) -> anyhow::Result<Self> {
        let root: Uri = args.url.parse().with_context(|| format!("bad --url {}", args.url))?;
        if root.scheme_str() != Some("http") {
            bail!("--url must be http://IP:PORT/...");
        }
        let authority = root.authority().ok_or_else(|| anyhow!("--url has no host"))?;
        let mut addresses: Vec<SocketAddr> =
            vec![authority.as_str().parse().context("--url must name an IP address and a port")?];
        for url in &args.also_urls {
            let also: Uri = url.parse().with_context(|| format!("bad --also-url {url}"))?;
            let authority = also.authority().ok_or_else(|| anyhow!("--also-url has no host"))?;
            addresses.push(authority.as_str().parse().context("--also-url must be IP:PORT")?);
        }
        let chat: Uri =
            format!("{}/chat/completions", root.path().trim_end_matches('/')).parse()?;
        let mut headers = HeaderMap::new();
        headers.insert(HOST, HeaderValue::from_str(authority.as_str())?);
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        for header in &args.headers {
            let (name, value) =
                header.split_once(':').ok_or_else(|| anyhow!("--header {header:?}: no colon"))?;
            headers.append(
                HeaderName::from_bytes(name.trim().as_bytes())?,
                HeaderValue::from_str(value.trim())?,
            );
        }
        Ok(Self {
            addresses,
            next: std::sync::atomic::AtomicUsize::new(0),
            chat,
            headers,
            body: Bytes::from(confab_bench::request_body(mode)),
            mode,
        })
    }

    fn request(&self) -> Request<Full<Bytes>> {
        let mut request =
            Request::post(self.chat.clone()).body(Full::new(self.body.clone())).unwrap();
        *request.headers_mut() = self.headers.clone();
        request
    }

    async fn connect(&self) -> Result<Client, Failure> {
        let turn = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let address = self.addresses[turn % self.addresses.len()];
        let stream = TcpStream::connect(address).await.map_err(|_| Failure::Connect)?;
        let _ = stream.set_nodelay(true);
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|_| Failure::Connect)?;
        Ok(Client { sender, connection: Box::pin(connection) })
    }
}

/// One keep-alive connection. Its I/O is driven in the task that sends the requests (not in a
/// task of its own, as hyper's examples do), which saves a wake-up and a hand-off between
/// threads per response: the load generator shares the cores with what it measures.
struct Client {
    sender: SendRequest<Full<Bytes>>,
    connection: Pin<Box<Connection<TokioIo<TcpStream>, Full<Bytes>>>>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client").finish_non_exhaustive()
    }
}

impl Client {
    /// Runs `work` (which uses `sender`) while driving the connection; `Err(Io)` if the
    /// connection ends first.
    async fn drive<T>(
        &mut self,
        work: impl AsyncFnOnce(&mut SendRequest<Full<Bytes>>) -> Result<T, Failure>,
    ) -> Result<T, Failure> {
        let Self { sender, connection } = self;
        tokio::select! {
            biased;
            result = work(sender) => result,
            _ = connection.as_mut() => Err(Failure::Io),
        }
    }

    /// Whether the connection can take another request (a server may close a keep-alive
    /// connection after a response).
    async fn ready(&mut self) -> bool {
        self.drive(async |sender| sender.ready().await.map_err(|_| Failure::Io)).await.is_ok()
    }
}

/// Why a request failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Failure {
    Connect,
    Io,
    Status(u16),
    /// A stream that ended without `data: [DONE]`.
    NoDone,
    Timeout,
}

impl Failure {
    fn name(self) -> String {
        match self {
            Self::Connect => "connect".into(),
            Self::Io => "io".into(),
            Self::Status(status) => format!("http_{status}"),
            Self::NoDone => "stream_without_done".into(),
            Self::Timeout => "timeout".into(),
        }
    }

    /// Whether the connection is unusable afterwards.
    fn breaks_connection(self) -> bool {
        !matches!(self, Self::Status(_))
    }
}

/// One request's timings, from the moment it was sent.
#[derive(Debug, Clone, Copy)]
struct Timing {
    total: Duration,
    first_byte: Option<Duration>,
}

const DONE: &[u8] = b"data: [DONE]\n\n";

/// Sends one request and reads the whole answer. `on_first_byte` runs when the first body
/// bytes arrive (the capacity run counts open streams with it).
async fn exchange(
    client: &mut Client,
    target: &Target,
    on_first_byte: impl FnMut(),
) -> Result<Timing, Failure> {
    client.drive(async |sender| read_answer(sender, target, on_first_byte).await).await
}

async fn read_answer(
    sender: &mut SendRequest<Full<Bytes>>,
    target: &Target,
    mut on_first_byte: impl FnMut(),
) -> Result<Timing, Failure> {
    sender.ready().await.map_err(|_| Failure::Io)?;
    let sent = Instant::now();
    let response = sender.send_request(target.request()).await.map_err(|_| Failure::Io)?;
    let status = response.status();
    let mut body = response.into_body();
    let mut first_byte = None;
    // The last bytes of the body, to check the `[DONE]` at the end of a stream.
    let mut tail: Vec<u8> = Vec::with_capacity(64);
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|_| Failure::Io)?;
        let Ok(data) = frame.into_data() else { continue };
        if data.is_empty() {
            continue;
        }
        if first_byte.is_none() {
            first_byte = Some(sent.elapsed());
            on_first_byte();
        }
        tail.extend_from_slice(&data[data.len().saturating_sub(DONE.len())..]);
        if tail.len() > DONE.len() {
            tail.drain(..tail.len() - DONE.len());
        }
    }
    let total = sent.elapsed();
    if !status.is_success() {
        return Err(Failure::Status(status.as_u16()));
    }
    if target.mode == Mode::Stream && tail != DONE {
        return Err(Failure::NoDone);
    }
    Ok(Timing { total, first_byte })
}

/// Sends one request and checks the whole answer for its shape, so that a misconfigured target
/// (an error page, a rewritten answer) stops the run instead of being measured.
async fn check_answer(target: &Target) -> anyhow::Result<()> {
    let mut client = target.connect().await.map_err(|f| anyhow!("{}", f.name()))?;
    let (status, body) = client
        .drive(async |sender| {
            let response = sender.send_request(target.request()).await.map_err(|_| Failure::Io)?;
            let status = response.status();
            let body = response.into_body().collect().await.map_err(|_| Failure::Io)?;
            Ok((status, body.to_bytes()))
        })
        .await
        .map_err(|f| anyhow!("{}", f.name()))?;
    let text = String::from_utf8_lossy(&body);
    if !status.is_success() {
        bail!("{} answered {status}: {text}", target.addresses[0]);
    }
    let answer = match target.mode {
        Mode::Json => {
            let completion: serde_json::Value = serde_json::from_slice(&body)?;
            completion["choices"][0]["message"]["content"].as_str().unwrap_or_default().to_owned()
        }
        Mode::Stream => {
            let mut answer = String::new();
            let mut done = false;
            for event in text.split("\n\n").filter(|e| !e.trim().is_empty()) {
                let data = event
                    .lines()
                    .find_map(|line| line.strip_prefix("data:"))
                    .ok_or_else(|| anyhow!("an event without data: {event:?}"))?
                    .trim();
                if data == "[DONE]" {
                    done = true;
                    continue;
                }
                let chunk: serde_json::Value = serde_json::from_str(data)?;
                if let Some(piece) = chunk["choices"][0]["delta"]["content"].as_str() {
                    answer.push_str(piece);
                }
            }
            if !done {
                bail!("the stream did not end with [DONE]: {text}");
            }
            answer
        }
    };
    if !answer.starts_with("word0 ") {
        bail!("unexpected answer {answer:?} in {text}");
    }
    Ok(())
}

/// CPU ticks and resets the memory peak of the proxy's processes: the start of a measurement.
fn start_measuring(args: &TargetArgs) -> anyhow::Result<(u64, bool)> {
    let rss_pids = if args.rss_pids.is_empty() { &args.pids } else { &args.rss_pids };
    let reset = rss_pids.iter().all(|&pid| procfs::reset_peak_rss(pid).is_ok());
    Ok((procfs::sum(&args.pids, procfs::cpu_ticks)?, reset))
}

#[derive(Debug, Default)]
struct WorkerLog {
    latencies_ns: Vec<u64>,
    first_bytes_ns: Vec<u64>,
    errors: BTreeMap<String, u64>,
}

async fn run(args: RunArgs) -> anyhow::Result<RunResult> {
    let target = Arc::new(Target::new(&args.target, args.mode)?);
    check_answer(&target).await.with_context(|| format!("checking {}", args.target.target))?;

    let started = Instant::now();
    let measure_from = started + Duration::from_secs_f64(args.warmup);
    let stop = measure_from + Duration::from_secs_f64(args.duration);
    let workers: Vec<_> = (0..args.concurrency)
        .map(|_| tokio::spawn(worker(Arc::clone(&target), measure_from, stop)))
        .collect();

    tokio::time::sleep_until(measure_from).await;
    let (cpu_before, peak_reset) = start_measuring(&args.target)?;
    let me = [std::process::id()];
    let client_before = procfs::sum(&me, procfs::cpu_ticks)?;
    let upstream_before = procfs::sum(&args.target.upstream_pids, procfs::cpu_ticks)?;
    tokio::time::sleep_until(stop).await;
    let cpu_after = procfs::sum(&args.target.pids, procfs::cpu_ticks)?;
    let client_after = procfs::sum(&me, procfs::cpu_ticks)?;
    let upstream_after = procfs::sum(&args.target.upstream_pids, procfs::cpu_ticks)?;
    let rss_pids =
        if args.target.rss_pids.is_empty() { &args.target.pids } else { &args.target.rss_pids };
    let peak_rss_kib = if rss_pids.is_empty() {
        None
    } else {
        Some(procfs::sum(rss_pids, |pid| procfs::status_kib(pid, "VmHWM"))?)
    };

    let mut log = WorkerLog::default();
    for worker in workers {
        let worker = worker.await?;
        log.latencies_ns.extend(worker.latencies_ns);
        log.first_bytes_ns.extend(worker.first_bytes_ns);
        for (kind, count) in worker.errors {
            *log.errors.entry(kind).or_default() += count;
        }
    }
    log.latencies_ns.sort_unstable();
    log.first_bytes_ns.sort_unstable();
    let requests = log.latencies_ns.len() as u64;
    let micros = |ns: Option<u64>| ns.map(|ns| ns as f64 / 1000.0);
    let per_request = |ticks: u64| {
        (requests > 0)
            .then(|| ticks as f64 * 1_000_000.0 / args.target.clk_tck as f64 / requests as f64)
    };
    let cpu_us_per_request =
        per_request(cpu_after - cpu_before).filter(|_| !args.target.pids.is_empty());
    let upstream_cpu_us_per_request = per_request(upstream_after - upstream_before)
        .filter(|_| !args.target.upstream_pids.is_empty());
    Ok(RunResult {
        target: args.target.target,
        mode: args.mode,
        concurrency: args.concurrency,
        seconds: args.duration,
        requests,
        requests_per_sec: requests as f64 / args.duration,
        p50_us: micros(percentile(&log.latencies_ns, 0.50)),
        p99_us: micros(percentile(&log.latencies_ns, 0.99)),
        ttfb_p50_us: micros(percentile(&log.first_bytes_ns, 0.50)),
        ttfb_p99_us: micros(percentile(&log.first_bytes_ns, 0.99)),
        errors: log.errors.values().sum(),
        error_kinds: log.errors,
        cpu_us_per_request,
        client_cpu_us_per_request: per_request(client_after - client_before),
        upstream_cpu_us_per_request,
        peak_rss_kib,
        peak_rss_reset: peak_reset,
    })
}

/// Sends requests back to back on one connection until `stop`; keeps the timings of those that
/// started at or after `measure_from` and ended before `stop`.
async fn worker(target: Arc<Target>, measure_from: Instant, stop: Instant) -> WorkerLog {
    const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
    let mut log = WorkerLog::default();
    let mut sender = None;
    while Instant::now() < stop {
        let connection = match sender.as_mut() {
            Some(connection) => connection,
            None => match target.connect().await {
                Ok(connection) => sender.insert(connection),
                Err(failure) => {
                    *log.errors.entry(failure.name()).or_default() += 1;
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
        };
        // A server may close a keep-alive connection after a response (nginx does after
        // `keepalive_requests`): that is no failure, nothing was sent on it yet.
        if !connection.ready().await {
            sender = None;
            continue;
        }
        let began = Instant::now();
        let outcome = tokio::time::timeout(REQUEST_TIMEOUT, exchange(connection, &target, || {}))
            .await
            .unwrap_or(Err(Failure::Timeout));
        match outcome {
            Ok(timing) => {
                if began >= measure_from && began + timing.total <= stop {
                    log.latencies_ns.push(timing.total.as_nanos() as u64);
                    if target.mode == Mode::Stream {
                        let first_byte = timing.first_byte.unwrap_or(timing.total);
                        log.first_bytes_ns.push(first_byte.as_nanos() as u64);
                    }
                }
            }
            Err(failure) => {
                *log.errors.entry(failure.name()).or_default() += 1;
                if failure.breaks_connection() {
                    sender = None;
                }
            }
        }
    }
    log
}

async fn capacity(args: CapacityArgs) -> anyhow::Result<CapacityResult> {
    let target = Arc::new(Target::new(&args.target, Mode::Stream)?);
    let rss_pids = if args.target.rss_pids.is_empty() {
        args.target.pids.clone()
    } else {
        args.target.rss_pids.clone()
    };
    if rss_pids.is_empty() {
        bail!("a capacity run needs the proxy's --pid");
    }
    let rss_before_kib = procfs::sum(&rss_pids, |pid| procfs::status_kib(pid, "VmRSS"))?;
    let (cpu_before, _) = start_measuring(&args.target)?;

    let open = Arc::new(AtomicUsize::new(0));
    let max_open = Arc::new(AtomicUsize::new(0));
    let opened = Arc::new(AtomicUsize::new(0));
    let timeout = Duration::from_secs_f64(args.timeout);
    let started = Instant::now();
    let mut streams = Vec::with_capacity(args.streams);
    for index in 0..args.streams {
        if index > 0 && index % args.batch == 0 {
            tokio::time::sleep(Duration::from_millis(args.batch_ms)).await;
        }
        let target = Arc::clone(&target);
        let (open, max_open, opened) =
            (Arc::clone(&open), Arc::clone(&max_open), Arc::clone(&opened));
        streams.push(tokio::spawn(async move {
            let mut counted = false;
            let outcome = tokio::time::timeout(timeout, async {
                let mut client = target.connect().await?;
                exchange(&mut client, &target, || {
                    counted = true;
                    opened.fetch_add(1, Ordering::Relaxed);
                    let now = open.fetch_add(1, Ordering::Relaxed) + 1;
                    max_open.fetch_max(now, Ordering::Relaxed);
                })
                .await
            })
            .await
            .unwrap_or(Err(Failure::Timeout));
            if counted {
                open.fetch_sub(1, Ordering::Relaxed);
            }
            outcome.map(|_| ())
        }));
    }

    // Every stream open (or failed): the ramp is over.
    let mut ramp_seconds = None;
    let mut ticker = tokio::time::interval(Duration::from_millis(50));
    let mut errors: BTreeMap<String, u64> = BTreeMap::new();
    let mut completed = 0;
    while ramp_seconds.is_none() && started.elapsed() < timeout {
        ticker.tick().await;
        let finished = streams.iter().filter(|s| s.is_finished()).count();
        if opened.load(Ordering::Relaxed) + finished >= args.streams {
            ramp_seconds = Some(started.elapsed().as_secs_f64());
        }
    }
    for stream in streams {
        match stream.await? {
            Ok(()) => completed += 1,
            Err(failure) => *errors.entry(failure.name()).or_default() += 1,
        }
    }
    let total_seconds = started.elapsed().as_secs_f64();
    let peak_rss_kib = procfs::sum(&rss_pids, |pid| procfs::status_kib(pid, "VmHWM"))?;
    let cpu_after = procfs::sum(&args.target.pids, procfs::cpu_ticks)?;
    let max_open = max_open.load(Ordering::Relaxed);
    Ok(CapacityResult {
        target: args.target.target,
        streams: args.streams,
        opened: opened.load(Ordering::Relaxed),
        max_open,
        completed,
        errors: errors.values().sum(),
        error_kinds: errors,
        ramp_seconds,
        total_seconds,
        rss_before_kib,
        peak_rss_kib,
        kib_per_stream: peak_rss_kib.saturating_sub(rss_before_kib) as f64 / max_open.max(1) as f64,
        cpu_us_per_stream: (cpu_after - cpu_before) as f64 * 1_000_000.0
            / args.target.clk_tck as f64
            / args.streams.max(1) as f64,
    })
}
