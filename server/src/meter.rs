//! Metering: what a chat request is allowed before it starts (rate limits, budget reservation)
//! and what is recorded when it ends, however it ends: completed, failed, or dropped half way by
//! the client. A [`Meter`] travels with the answer's stream; finishing it (or dropping it)
//! settles the budget with what was generated, charges the tokens to the token limits, and hands
//! a usage record to the [`UsageRecorder`], which writes records in batches off the request path.
//! Settling also queues the `budget.threshold` and `request.completed` webhook events, which
//! never makes the request wait either (see `webhooks`).
//!
//! Rate limits and budgets are `confab-metering`'s [`Admission`]: a request is admitted against
//! both in one all-or-nothing step and settled against both in one step (one round trip to Redis
//! each way). [`Metering::start`] is the one place that chooses its engine (in process, or Redis
//! with `[redis] url`). A meter never awaits in `Drop`: the settle is handed to the engines'
//! `Settler`, which runs it at once in process and in a background task (retrying until Redis
//! takes it) with Redis.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use confab_metering::admission::{Admission, Pass};
use confab_metering::{Backoff, Engines, RedisSettings, Settler, SpendSource};
use confab_protocol::{PromptTokensDetails, Usage};
use tokio::sync::{mpsc, oneshot};

use crate::conversations::Transcript;

use crate::budget::{
    BudgetRule, CacheTokens, Crossing, Micros, Payer, Period, PriceTable, Reservation,
};
use crate::journal::{Journal, Ticket};
use crate::metrics::{ChatLabels, Metrics};
use crate::store::{Outcome, Store, UsageRecord};
use crate::webhooks::Webhooks;
use confab_providers::Sent;

/// Everything the request path needs to meter calls; part of the app state.
#[derive(Debug)]
pub struct Metering {
    /// Admits requests against their rate limits and budgets, and settles them.
    pub admission: Arc<dyn Admission>,
    /// Runs the settles of budgets and tokens after requests (see the module comment).
    pub settler: Settler,
    /// Whether Redis answers, when limits and budgets are shared through it (for `/healthz`).
    pub redis_health: Option<confab_metering::RedisHealth>,
    pub prices: PriceTable,
    pub recorder: UsageRecorder,
    /// Where each request's worst case is made durable before its upstream call; `None` with a
    /// database that does not outlive the process either (`sqlite::memory:`).
    pub journal: Option<Journal>,
    /// Where budget alerts and finished requests are sent.
    pub webhooks: Arc<Webhooks>,
    /// Timings, tokens and costs of settled requests, and upstream failures.
    pub metrics: Arc<Metrics>,
}

/// How [`Metering::start`] is configured.
#[derive(Debug)]
pub struct MeteringOptions<'a> {
    /// The reservation journal's directory (`Config::journal_dir`).
    pub journal_dir: Option<&'a std::path::Path>,
    pub prices: PriceTable,
    /// `usage.flush_ms`.
    pub flush_every: Duration,
    /// `usage.retention_days`; `None`: raw records are kept.
    pub retention: Option<Duration>,
    /// `[redis]`, when set: limits and budgets are shared through it.
    pub redis: Option<&'a RedisSettings>,
}

/// How long [`Metering::flush_settlements`] waits for settles that need Redis.
pub const SETTLE_WAIT: Duration = Duration::from_secs(2);

impl Metering {
    /// Opens the reservation journal in `journal_dir` and settles the requests a previous run
    /// left in it or pending in the store (it crashed mid-request: they count at their worst
    /// case), starts the usage writer, and builds the limiter and the ledger: in process, with
    /// what was already spent this month and today, so that budgets hold across restarts; or in
    /// Redis (`redis`), seeded from the same figures unless another relay did it already.
    pub async fn start(
        store: Arc<dyn Store>,
        options: MeteringOptions<'_>,
        webhooks: Arc<Webhooks>,
        metrics: Arc<Metrics>,
    ) -> anyhow::Result<Self> {
        let MeteringOptions { journal_dir, prices, flush_every, retention, redis } = options;
        let (journal, recovered) = match journal_dir {
            Some(dir) => {
                let (journal, leftovers) = Journal::open(dir)?;
                if leftovers.unreadable > 0 {
                    tracing::warn!(
                        lines = leftovers.unreadable,
                        "reservation journal lines cut short by a crash were skipped"
                    );
                }
                let recovered = store.recover_usage(&leftovers.records).await?;
                if recovered > 0 {
                    tracing::warn!(
                        requests = recovered,
                        "requests left running by the previous run (a crash?) are recorded as \
                         interrupted at their worst case"
                    );
                }
                let recovered: Vec<_> =
                    leftovers.records.iter().cloned().zip(leftovers.reservations.clone()).collect();
                leftovers.discard()?;
                (Some(journal), recovered)
            }
            None => (None, Vec::new()),
        };
        // Rows an earlier version left pending, before there was a journal.
        let interrupted = store.settle_pending_usage().await?;
        if interrupted > 0 {
            tracing::warn!(
                requests = interrupted,
                "requests left pending by an earlier version are recorded as interrupted at \
                 their worst case"
            );
        }
        if let Some(retention) = retention {
            tokio::spawn(prune_usage(Arc::clone(&store), retention));
        }
        let recorder = UsageRecorder::start(Arc::clone(&store), flush_every);
        let spend = Arc::new(DatabaseSpend { store, recorder: recorder.clone() });
        let observer: Arc<dyn confab_metering::Observer> = Arc::clone(&metrics) as _;
        // The one place where the engines are chosen.
        let engines = match redis {
            None => {
                let now = crate::unix_now();
                let spent = spend
                    .spent(Period::month_of(now), Period::day_of(now))
                    .await
                    .map_err(|error| anyhow::anyhow!(error))?;
                Engines::in_process(spent, observer)
            }
            Some(settings) => {
                let engines = Engines::redis(settings, spend, observer)?;
                if let Some(ledger) = &engines.redis_ledger {
                    match ledger.seed_current_periods().await {
                        // Seeded now, from the database, which holds the recovered requests.
                        Ok(true) => {}
                        Ok(false) => {
                            count_recovered(&engines, ledger.generation(), &recovered);
                        }
                        Err(error) => tracing::warn!(
                            %error,
                            recovered = recovered.len(),
                            "cannot reach Redis at start: this month's spend is seeded on first \
                             use; requests recovered from the journal are counted only if that \
                             seed reads them from the database"
                        ),
                    }
                }
                engines
            }
        };
        Ok(Self {
            admission: engines.admission,
            settler: engines.settler,
            redis_health: engines.redis_health,
            prices,
            recorder,
            journal,
            webhooks,
            metrics,
        })
    }

    /// Waits (at most [`SETTLE_WAIT`]) until the settles handed to the settler are done; `false`
    /// when some are still waiting for Redis (logged).
    pub async fn flush_settlements(&self) -> bool {
        if self.settler.flush(SETTLE_WAIT).await {
            return true;
        }
        tracing::warn!(
            pending = self.settler.pending(),
            "budget and token settles are waiting for Redis; they are retried until it answers"
        );
        false
    }

    /// Settles a request's budget with its `cost` (reporting the alert thresholds it crossed)
    /// and its tokens with `used`, in one step, through the settler. A retry after an error
    /// counts once: settling is idempotent per pass.
    fn settle(&self, mut pass: Pass, cost: Micros, used: u64) {
        let admission = Arc::clone(&self.admission);
        let webhooks = Arc::clone(&self.webhooks);
        self.settler.submit(Box::pin(async move {
            let mut backoff = Backoff::default();
            let crossings = loop {
                match admission.settle(&mut pass, cost, used).await {
                    Ok(crossings) => break crossings,
                    Err(error) => backoff.wait(error).await,
                }
            };
            for crossing in crossings {
                log_crossing(&crossing);
                webhooks.budget_crossed(&crossing);
            }
        }));
    }
}

/// Adds the cost of the requests a crash left in the journal to the shared spend, which does
/// not hold them unless their relay settled them just before it died: each is settled under the
/// reservation id its admission had (in its journal line), so one that was settled already is
/// not counted twice, and a restart that recovers it again counts it once. Lines from before
/// the journal kept it are settled under their request id.
fn count_recovered(
    engines: &Engines,
    generation: u64,
    recovered: &[(UsageRecord, Option<String>)],
) {
    for (record, reservation) in recovered {
        let payer = match (&record.key_id, &record.site_id) {
            (Some(key), _) => Payer::Key(key.clone()),
            (None, Some(site)) => Payer::Site(site.clone()),
            (None, None) => continue,
        };
        let at = u64::try_from(record.at_ms / 1000).unwrap_or(0);
        let payers = [(payer, BudgetRule::default())];
        let id = reservation.as_deref().unwrap_or(&record.request_id);
        let reservation = Reservation::unheld(id, &payers, at, generation);
        let (ledger, cost) = (Arc::clone(&engines.ledger), record.cost_micros);
        engines.settler.submit(Box::pin(async move {
            let mut backoff = Backoff::default();
            while let Err(error) = ledger.settle(&reservation, cost).await {
                backoff.wait(error).await;
            }
        }));
    }
}

/// What the usage records in the database say was spent: what budgets start from.
#[derive(Debug)]
struct DatabaseSpend {
    store: Arc<dyn Store>,
    /// Flushed first, so that this relay's latest records are counted.
    recorder: UsageRecorder,
}

#[async_trait]
impl SpendSource for DatabaseSpend {
    async fn spent(
        &self,
        month: Period,
        day: Period,
    ) -> Result<HashMap<(Payer, Period), Micros>, Box<dyn std::error::Error + Send + Sync>> {
        self.recorder.flush().await;
        let since_ms = i64::try_from(month.starts_at().saturating_mul(1000)).unwrap_or(i64::MAX);
        let mut spent: HashMap<(Payer, Period), Micros> = HashMap::new();
        for group in self.store.usage_totals(since_ms, None, None).await? {
            let payer = match (group.key_id, group.site_id) {
                (Some(key), _) => Payer::Key(key),
                (None, Some(site)) => Payer::Site(site),
                (None, None) => continue,
            };
            let month_spent = spent.entry((payer.clone(), month)).or_default();
            *month_spent = month_spent.saturating_add(group.cost_micros);
            if Period::day_of(group.day_start) == day {
                let day_spent = spent.entry((payer, day)).or_default();
                *day_spent = day_spent.saturating_add(group.cost_micros);
            }
        }
        Ok(spent)
    }
}

/// How often raw usage records past their retention are looked for.
const PRUNE_EVERY: Duration = Duration::from_secs(3_600);

/// Deletes raw usage records older than `retention`, at start and then hourly, for as long as
/// the process runs (several relays may do it at once: it is idempotent).
async fn prune_usage(store: Arc<dyn Store>, retention: Duration) {
    let mut every = tokio::time::interval(PRUNE_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        let retention_ms = i64::try_from(retention.as_millis()).unwrap_or(i64::MAX);
        let before_ms = crate::unix_now_ms().saturating_sub(retention_ms);
        match store.prune_usage(before_ms).await {
            Ok(0) => {}
            Ok(deleted) => {
                tracing::info!(deleted, "usage records past usage.retention_days deleted")
            }
            Err(error) => tracing::warn!(%error, "cannot delete old usage records; will retry"),
        }
    }
}

/// A reported answer may exceed `max_tokens` by a little (some providers count a stop token or
/// reasoning on top), never by more than this factor: anything larger is clamped.
pub const COMPLETION_MARGIN: u64 = 2;

/// The most a request can use: its prompt's ceiling and its `max_tokens`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ceiling {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
}

impl Ceiling {
    pub fn worst_case(self) -> Usage {
        Usage::new(self.prompt_tokens, self.completion_tokens)
    }

    /// `usage` bounded by what the request could have produced; `true` when it had to be cut.
    /// Its cache counts stay, bounded by the prompt they are part of.
    fn clamp(self, usage: Usage) -> (Usage, bool) {
        let prompt = usage.prompt_tokens.min(self.prompt_tokens);
        let completion = usage
            .completion_tokens
            .min(self.completion_tokens.saturating_mul(COMPLETION_MARGIN).max(1));
        let clamped = prompt != usage.prompt_tokens || completion != usage.completion_tokens;
        let mut bounded = Usage::new(prompt, completion);
        bounded.prompt_tokens_details = usage.prompt_tokens_details.map(|details| {
            let read = details.cached_tokens.map(|read| read.min(prompt));
            let left = prompt - read.unwrap_or(0);
            PromptTokensDetails {
                cached_tokens: read,
                cache_creation_tokens: details.cache_creation_tokens.map(|w| w.min(left)),
            }
        });
        (bounded, clamped)
    }
}

/// What a request is charged when it settles.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Charge {
    /// The request never reached the upstream (no connection) or the upstream refused it (an
    /// error status, an error in place of the answer): it costs nothing.
    Nothing,
    /// What the upstream reported, bounded by the request's [`Ceiling`].
    Reported(Usage),
    /// The upstream reported nothing: the prompt at its ceiling and the answer estimated from
    /// what was streamed ([`estimate_answer_tokens`]).
    Estimated { text_bytes: usize, content_chunks: u64 },
    /// Nothing is known of what was generated: the prompt and `max_tokens` of answer.
    WorstCase,
}

/// One request's metering, from admission to its usage record.
pub struct Meter {
    metering: Arc<Metering>,
    /// What admission charged to the rate limits and reserved against the budgets, settled
    /// with the tokens used and the cost.
    pass: Option<Pass>,
    /// Taken when the meter is settled (so it is settled once, by `finish` or by `Drop`).
    record: Option<UsageRecord>,
    ceiling: Ceiling,
    /// The worst case's cost, as reserved and as the pending usage row holds it.
    worst_cost: u64,
    /// The request's line in the reservation journal, once written.
    ticket: Option<Ticket>,
    sent: Sent,
    started: Instant,
    first_text: Option<Duration>,
    /// The request's site and model, as the metrics label them.
    labels: ChatLabels,
    /// Calls to targets given up on after the request was written to them (no first event in
    /// time): what their prompts may have cost, charged on top of the answer.
    abandoned: Abandoned,
    /// The request's turn of its conversation, on a site that keeps transcripts.
    transcript: Option<Transcript>,
}

/// The prompts of calls given up on (see [`Meter::abandoned`]).
#[derive(Debug, Default, Clone, Copy)]
struct Abandoned {
    tokens: u64,
    cost: u64,
}

impl std::fmt::Debug for Meter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let model = self.record.as_ref().map(|r| r.model.as_str());
        f.debug_struct("Meter").field("model", &model).finish_non_exhaustive()
    }
}

/// What [`Meter::new`] needs beyond the metering itself.
#[derive(Debug)]
pub struct Admitted {
    /// What the rate limits charged (tokens per minute at the worst case) and the budgets hold.
    pub pass: Pass,
    /// Who called, the model and the upstream; the rest is filled in at the end.
    pub record: UsageRecord,
    pub ceiling: Ceiling,
    pub worst_cost: u64,
    pub labels: ChatLabels,
}

impl Meter {
    pub fn new(metering: Arc<Metering>, admitted: Admitted) -> Self {
        let Admitted { pass, record, ceiling, worst_cost, labels } = admitted;
        Self {
            metering,
            pass: Some(pass),
            record: Some(record),
            ceiling,
            worst_cost,
            ticket: None,
            sent: Sent::default(),
            started: Instant::now(),
            first_text: None,
            labels,
            abandoned: Abandoned::default(),
            transcript: None,
        }
    }

    /// The request's usage record as admitted (who, which model, when).
    ///
    /// # Panics
    /// Never: a meter's record is taken only when it settles, which consumes it.
    pub fn record(&self) -> &UsageRecord {
        self.record.as_ref().unwrap_or_else(|| unreachable!("a live meter has its record"))
    }

    /// Keeps the request's question and answer in its conversation once it settles.
    pub fn keep_transcript(&mut self, transcript: Transcript) {
        self.transcript = Some(transcript);
    }

    /// Text of the answer, as it reaches the client (for the transcript, if one is kept).
    pub fn answered(&mut self, text: &str) {
        if let Some(transcript) = self.transcript.as_mut() {
            transcript.answered(text);
        }
    }

    /// The metrics this request is counted in.
    pub fn metrics(&self) -> &Metrics {
        &self.metering.metrics
    }

    /// The flag the upstream call sets once the request is written.
    pub fn sent(&self) -> &Sent {
        &self.sent
    }

    pub fn ceiling(&self) -> Ceiling {
        self.ceiling
    }

    /// The request's id (empty once settled).
    pub fn request_id(&self) -> &str {
        self.record.as_ref().map_or("", |record| record.request_id.as_str())
    }

    /// The call went to `upstream`, asked for `model` (a target of the model the client named):
    /// what the usage record names, and what it is priced at.
    pub fn routed(&mut self, upstream: &str, model: &str) {
        if let Some(record) = self.record.as_mut() {
            if record.upstream != upstream {
                upstream.clone_into(&mut record.upstream);
            }
            if record.model != model {
                model.clone_into(&mut record.model);
            }
        }
    }

    /// The call to a target of `model` was given up on after the request was written (it sent
    /// no first event in time) and the request goes on to the next target. The provider may
    /// well have read, and billed, the prompt: its ceiling is charged at that model's price on
    /// top of whatever the answer costs, and the record is marked estimated.
    pub fn abandoned(&mut self, model: &str) {
        let tokens = self.ceiling.prompt_tokens;
        let cost = self.metering.prices.cost(model, tokens, 0);
        self.abandoned.tokens = self.abandoned.tokens.saturating_add(tokens);
        self.abandoned.cost = self.abandoned.cost.saturating_add(cost);
    }

    /// Makes the request's worst case durable before its upstream call: a line in the
    /// reservation journal (see `journal`), kept until the request's final usage record is in
    /// the database. After a crash, the line is still there and is counted at start-up. An
    /// error means the line could not be written (logged): the request must not run unrecorded.
    pub fn write_pending(&mut self) -> Result<(), UsageUnrecorded> {
        let (Some(record), Some(journal)) = (&self.record, &self.metering.journal) else {
            return Ok(());
        };
        let mut pending = record.clone();
        let worst = self.ceiling.worst_case();
        pending.input_tokens = worst.prompt_tokens;
        pending.output_tokens = worst.completion_tokens;
        pending.cost_micros = self.worst_cost;
        match journal.reserve(&pending, self.pass.as_ref().map(Pass::id)) {
            Ok(ticket) => {
                self.ticket = Some(ticket);
                Ok(())
            }
            Err(error) => {
                tracing::error!(%error, "cannot write the reservation journal; request refused");
                Err(UsageUnrecorded)
            }
        }
    }

    /// Notes the arrival of the answer's first text (latency to first token).
    pub fn text_arrived(&mut self) {
        if self.first_text.is_none() {
            self.first_text = Some(self.started.elapsed());
        }
    }

    /// Settles the request with what it is charged (see [`Charge`]).
    pub fn finish(mut self, charge: Charge, outcome: Outcome) {
        self.settle(charge, outcome);
    }

    /// Settles a request that ended before any answer was read: free if the request was never
    /// written to the upstream, its prompt's ceiling otherwise.
    pub fn finish_unanswered(self, outcome: Outcome) {
        let charge = if self.sent.is_set() {
            Charge::Estimated { text_bytes: 0, content_chunks: 0 }
        } else {
            Charge::Nothing
        };
        self.finish(charge, outcome);
    }

    /// The usage a charge stands for, and whether it is an estimate.
    pub fn usage_of(&self, charge: Charge) -> (Usage, bool) {
        match charge {
            Charge::Nothing => (Usage::new(0, 0), true),
            Charge::Reported(usage) => (usage, false),
            Charge::Estimated { text_bytes, content_chunks } => (
                Usage::new(
                    self.ceiling.prompt_tokens,
                    confab_providers::estimate::estimate_answer_tokens(text_bytes, content_chunks),
                ),
                true,
            ),
            Charge::WorstCase => (self.ceiling.worst_case(), true),
        }
    }

    fn settle(&mut self, charge: Charge, outcome: Outcome) {
        let Some(mut record) = self.record.take() else { return };
        let metering = &self.metering;
        let (reported, estimated) = self.usage_of(charge);
        let (usage, clamped) = self.ceiling.clamp(reported);
        if clamped {
            tracing::warn!(
                request_id = %record.request_id,
                model = %crate::logsafe::Escaped(&record.model),
                reported_prompt_tokens = reported.prompt_tokens,
                reported_completion_tokens = reported.completion_tokens,
                prompt_tokens = usage.prompt_tokens,
                completion_tokens = usage.completion_tokens,
                "usage beyond what the request could produce; clamped"
            );
        }
        let cache =
            CacheTokens { read: usage.cache_read_tokens(), written: usage.cache_write_tokens() };
        let answer_cost = metering.prices.cost_with_cache(
            &record.model,
            usage.prompt_tokens,
            cache,
            usage.completion_tokens,
        );
        let cost = answer_cost.saturating_add(self.abandoned.cost);
        let tokens = usage.prompt_tokens.saturating_add(usage.completion_tokens);
        let tokens = tokens.saturating_add(self.abandoned.tokens);
        if let Some(pass) = self.pass.take() {
            metering.settle(pass, cost, tokens);
        }
        record.input_tokens = usage.prompt_tokens;
        record.output_tokens = usage.completion_tokens;
        record.cache_read_tokens = cache.read;
        record.cache_write_tokens = cache.written;
        record.estimated = estimated || self.abandoned.tokens > 0;
        record.cost_micros = cost;
        let total = self.started.elapsed();
        metering.metrics.settled(
            &self.labels,
            self.first_text,
            total,
            (usage.prompt_tokens, usage.completion_tokens),
            cost,
        );
        record.first_token_ms =
            self.first_text.map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        record.total_ms = u64::try_from(total.as_millis()).unwrap_or(u64::MAX);
        record.outcome = outcome;
        metering.webhooks.request_completed(&record);
        if let Some(transcript) = self.transcript.take() {
            transcript.finish(&record);
        }
        metering.recorder.record(record, self.ticket.take());
    }
}

fn log_crossing(crossing: &Crossing) {
    tracing::warn!(
        payer = %crossing.payer,
        payer_id = crossing.payer.id(),
        period = %crossing.period,
        percent = crossing.percent,
        spent_micros = crossing.spent,
        budget_micros = crossing.budget,
        "budget threshold crossed"
    );
}

impl Drop for Meter {
    /// A meter dropped unfinished belongs to a request whose owner went away before settling
    /// (the relay stream settles its own meter with what was streamed): record it as
    /// interrupted, at its prompt if the request had been sent, rather than lose it.
    fn drop(&mut self) {
        let charge = if self.sent.is_set() {
            Charge::Estimated { text_bytes: 0, content_chunks: 0 }
        } else {
            Charge::Nothing
        };
        self.settle(charge, Outcome::Interrupted);
    }
}

/// The request's worst case could not be made durable.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("usage could not be recorded")]
pub struct UsageUnrecorded;

#[expect(
    clippy::large_enum_variant,
    reason = "records are nearly every command; boxing them would allocate once per request"
)]
enum Command {
    /// A final record, and the journal line it settles once written.
    Record(UsageRecord, Option<Ticket>),
    Flush(oneshot::Sender<bool>),
}

/// Writes usage records in batches from a background task, so that a request never waits for
/// the database; `flush` writes everything recorded so far (at shutdown). A record's journal
/// ticket is settled once the record is committed.
#[derive(Debug, Clone)]
pub struct UsageRecorder {
    commands: mpsc::UnboundedSender<Command>,
    /// Records handed over and not written yet.
    backlog: Arc<AtomicUsize>,
}

impl UsageRecorder {
    /// Starts the writer (needs a Tokio runtime).
    pub fn start(store: Arc<dyn Store>, flush_every: Duration) -> Self {
        let (commands, receiver) = mpsc::unbounded_channel();
        let backlog = Arc::new(AtomicUsize::new(0));
        tokio::spawn(write_batches(store, receiver, flush_every, Arc::clone(&backlog)));
        Self { commands, backlog }
    }

    pub fn record(&self, record: UsageRecord, ticket: Option<Ticket>) {
        self.backlog.fetch_add(1, Ordering::Relaxed);
        if self.commands.send(Command::Record(record, ticket)).is_err() {
            self.backlog.fetch_sub(1, Ordering::Relaxed);
            tracing::error!("the usage writer has stopped; a usage record is lost");
        }
    }

    /// Records handed over and not written yet: more than a second's worth means the database
    /// is not taking them (they are kept, up to a bound, and retried).
    pub fn backlog(&self) -> usize {
        self.backlog.load(Ordering::Relaxed)
    }

    /// Resolves once everything recorded before the call is written: `true`, or could not be
    /// (logged at error): `false`.
    pub async fn flush(&self) -> bool {
        let (done, written) = oneshot::channel();
        if self.commands.send(Command::Flush(done)).is_err() {
            return false;
        }
        written.await.unwrap_or(false)
    }
}

/// Records waiting to be written are kept across failed writes, up to this many (the journal
/// keeps the worst case of those dropped beyond it, counted at the next start).
const MAX_PENDING: usize = 100_000;

/// Records not written yet, and the journal lines they settle (one entry per record).
#[derive(Default)]
struct Batch {
    records: Vec<UsageRecord>,
    tickets: Vec<Option<Ticket>>,
}

async fn write_batches(
    store: Arc<dyn Store>,
    mut commands: mpsc::UnboundedReceiver<Command>,
    flush_every: Duration,
    backlog: Arc<AtomicUsize>,
) {
    let mut batch = Batch::default();
    let mut flushes: Vec<oneshot::Sender<bool>> = Vec::new();
    let mut every = tokio::time::interval(flush_every);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let now = tokio::select! {
            command = commands.recv() => match command {
                Some(command) => take(command, &mut batch, &mut flushes),
                None => {
                    write(store.as_ref(), &mut batch, &backlog).await;
                    return;
                }
            },
            _ = every.tick() => true,
        };
        if !now {
            continue;
        }
        // Take everything already queued too: one transaction for all of it.
        while let Ok(command) = commands.try_recv() {
            take(command, &mut batch, &mut flushes);
        }
        let written = write(store.as_ref(), &mut batch, &backlog).await;
        for done in flushes.drain(..) {
            let _ = done.send(written);
        }
    }
}

/// Adds a command to the batch; `true` when it asks for a write now.
fn take(command: Command, batch: &mut Batch, flushes: &mut Vec<oneshot::Sender<bool>>) -> bool {
    match command {
        Command::Record(record, ticket) => {
            batch.records.push(record);
            batch.tickets.push(ticket);
            false
        }
        Command::Flush(done) => {
            flushes.push(done);
            true
        }
    }
}

/// Writes the batch; `true` when it is empty afterwards.
async fn write(store: &dyn Store, batch: &mut Batch, backlog: &AtomicUsize) -> bool {
    if batch.records.is_empty() {
        return true;
    }
    match store.record_usage(&batch.records).await {
        Ok(()) => {
            backlog.fetch_sub(batch.records.len(), Ordering::Relaxed);
            batch.records.clear();
            for ticket in batch.tickets.drain(..).flatten() {
                ticket.settle();
            }
            true
        }
        Err(error) => {
            let records = batch.records.len();
            tracing::error!(%error, records, "cannot write usage records; will retry");
            if records > MAX_PENDING {
                let dropped = records - MAX_PENDING;
                batch.records.drain(..dropped);
                backlog.fetch_sub(dropped, Ordering::Relaxed);
                // Dropped unsettled: their lines stay in the journal.
                batch.tickets.drain(..dropped);
                tracing::error!(
                    dropped,
                    "usage records dropped: the database is unavailable (their reservations \
                     stay in the journal and are counted at their worst case at the next start)"
                );
            }
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cached(prompt: u64, completion: u64, read: u64, written: u64) -> Usage {
        let mut usage = Usage::new(prompt, completion);
        usage.prompt_tokens_details = Some(PromptTokensDetails {
            cached_tokens: Some(read),
            cache_creation_tokens: Some(written),
        });
        usage
    }

    #[test]
    fn clamping_keeps_the_cache_counts_within_the_prompt() {
        let ceiling = Ceiling { prompt_tokens: 100, completion_tokens: 10 };
        assert_eq!(ceiling.clamp(cached(90, 5, 60, 20)), (cached(90, 5, 60, 20), false));
        // The prompt cut to 100: reads fit, writes get what is left.
        assert_eq!(ceiling.clamp(cached(500, 5, 70, 400)), (cached(100, 5, 70, 30), true));
        assert_eq!(ceiling.clamp(Usage::new(90, 5)), (Usage::new(90, 5), false));
    }
}
