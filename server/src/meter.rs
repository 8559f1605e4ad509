//! Metering: what a chat request is allowed before it starts (rate limits, budget reservation)
//! and what is recorded when it ends, however it ends: completed, failed, or dropped half way by
//! the client. A [`Meter`] travels with the answer's stream; finishing it (or dropping it)
//! settles the budget with what was generated, charges the tokens to the token limits, and hands
//! a usage record to the [`UsageRecorder`], which writes records in batches off the request path.
//! Settling also queues the `budget.threshold` and `request.completed` webhook events, which
//! never makes the request wait either (see `webhooks`).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use confab_protocol::Usage;
use tokio::sync::{mpsc, oneshot};

use crate::budget::{Crossing, Ledger, Payer, Period, PriceTable, Reservation};
use crate::limits::{RateLimiter, Rule, Subject};
use crate::metrics::{ChatLabels, Metrics};
use crate::store::{Outcome, Store, UsageRecord};
use crate::upstream::Sent;
use crate::webhooks::Webhooks;

/// Everything the request path needs to meter calls; part of the app state.
#[derive(Debug)]
pub struct Metering {
    pub limiter: Arc<dyn RateLimiter>,
    pub ledger: Arc<Ledger>,
    pub prices: PriceTable,
    pub recorder: UsageRecorder,
    /// Where budget alerts and finished requests are sent.
    pub webhooks: Arc<Webhooks>,
    /// Timings, tokens and costs of settled requests, and upstream failures.
    pub metrics: Arc<Metrics>,
}

impl Metering {
    /// Settles the requests a previous run left pending (it crashed mid-request: they count at
    /// their worst case), starts the usage writer and loads what was already spent this month
    /// and today, so that budgets hold across restarts.
    pub async fn start(
        store: Arc<dyn Store>,
        prices: PriceTable,
        flush_every: Duration,
        webhooks: Arc<Webhooks>,
        metrics: Arc<Metrics>,
    ) -> Result<Self, crate::store::StoreError> {
        let now = crate::unix_now();
        let month = Period::month_of(now);
        let day = Period::day_of(now);
        let since_ms = i64::try_from(month.starts_at().saturating_mul(1000)).unwrap_or(i64::MAX);
        let leftovers = store.settle_pending_usage().await?;
        if leftovers > 0 {
            tracing::warn!(
                requests = leftovers,
                "requests left running by the previous run (a crash?) are recorded as \
                 interrupted at their worst case"
            );
        }
        let mut spent: HashMap<(Payer, Period), u64> = HashMap::new();
        for group in store.usage_totals(since_ms, None, None).await? {
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
        Ok(Self {
            limiter: Arc::new(crate::limits::InProcessLimiter::new()),
            ledger: Arc::new(Ledger::new(spent)),
            prices,
            recorder: UsageRecorder::start(store, flush_every),
            webhooks,
            metrics,
        })
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
    fn clamp(self, usage: Usage) -> (Usage, bool) {
        let prompt = usage.prompt_tokens.min(self.prompt_tokens);
        let completion = usage
            .completion_tokens
            .min(self.completion_tokens.saturating_mul(COMPLETION_MARGIN).max(1));
        let clamped = prompt != usage.prompt_tokens || completion != usage.completion_tokens;
        (Usage::new(prompt, completion), clamped)
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
    checks: Vec<(Subject, Rule)>,
    reservation: Option<Reservation>,
    /// Taken when the meter is settled (so it is settled once, by `finish` or by `Drop`).
    record: Option<UsageRecord>,
    ceiling: Ceiling,
    /// The worst case's cost, as reserved and as the pending usage row holds it.
    worst_cost: u64,
    /// Tokens charged to the tokens-per-minute windows at admission (the worst case); the
    /// difference to what was used is given back when the request settles.
    reserved_tokens: u64,
    sent: Sent,
    started: Instant,
    first_text: Option<Duration>,
    /// The request's site and model, as the metrics label them.
    labels: ChatLabels,
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
    pub checks: Vec<(Subject, Rule)>,
    pub reservation: Option<Reservation>,
    /// Who called, the model and the upstream; the rest is filled in at the end.
    pub record: UsageRecord,
    pub ceiling: Ceiling,
    pub worst_cost: u64,
    pub reserved_tokens: u64,
    pub labels: ChatLabels,
}

impl Meter {
    pub fn new(metering: Arc<Metering>, admitted: Admitted) -> Self {
        let Admitted { checks, reservation, record, ceiling, worst_cost, reserved_tokens, labels } =
            admitted;
        Self {
            metering,
            checks,
            reservation,
            record: Some(record),
            ceiling,
            worst_cost,
            reserved_tokens,
            sent: Sent::default(),
            started: Instant::now(),
            first_text: None,
            labels,
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

    /// Makes the request's worst case durable before its upstream call: a `pending` usage row,
    /// written by the usage writer in the next batch (which starts at once) and settled in place
    /// when the request ends. After a crash, the row is still there and is counted at start-up.
    /// An error means the row could not be written: the request must not run unrecorded.
    pub async fn write_pending(&self) -> Result<(), UsageUnrecorded> {
        let Some(record) = &self.record else { return Ok(()) };
        let mut pending = record.clone();
        let worst = self.ceiling.worst_case();
        pending.input_tokens = worst.prompt_tokens;
        pending.output_tokens = worst.completion_tokens;
        pending.estimated = true;
        pending.cost_micros = self.worst_cost;
        pending.outcome = Outcome::Pending;
        self.metering.recorder.record_durably(pending).await
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
                    crate::estimate::estimate_answer_tokens(text_bytes, content_chunks),
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
        let cost =
            metering.prices.cost(&record.model, usage.prompt_tokens, usage.completion_tokens);
        if let Some(reservation) = self.reservation.take() {
            for crossing in reservation.settle(cost) {
                log_crossing(&crossing);
                metering.webhooks.budget_crossed(&crossing);
            }
        }
        let tokens = usage.prompt_tokens.saturating_add(usage.completion_tokens);
        metering.limiter.settle_tokens(&self.checks, self.reserved_tokens, tokens, Instant::now());
        record.input_tokens = usage.prompt_tokens;
        record.output_tokens = usage.completion_tokens;
        record.estimated = estimated;
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
        metering.recorder.record(record);
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

/// The usage writer could not make a pending row durable.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("usage could not be recorded")]
pub struct UsageUnrecorded;

enum Command {
    Record(UsageRecord),
    /// A pending row, to be written at once; the sender learns whether it was.
    Durable(UsageRecord, oneshot::Sender<Result<(), UsageUnrecorded>>),
    Flush(oneshot::Sender<bool>),
}

/// Writes usage records in batches from a background task, so that a request never waits for
/// the database (but for its pending row: see [`Meter::write_pending`]); `flush` writes
/// everything recorded so far (at shutdown).
#[derive(Debug, Clone)]
pub struct UsageRecorder {
    commands: mpsc::UnboundedSender<Command>,
}

impl UsageRecorder {
    /// Starts the writer (needs a Tokio runtime).
    pub fn start(store: Arc<dyn Store>, flush_every: Duration) -> Self {
        let (commands, receiver) = mpsc::unbounded_channel();
        tokio::spawn(write_batches(store, receiver, flush_every));
        Self { commands }
    }

    pub fn record(&self, record: UsageRecord) {
        if self.commands.send(Command::Record(record)).is_err() {
            tracing::error!("the usage writer has stopped; a usage record is lost");
        }
    }

    /// Writes `record` in the next batch, which starts at once (group commit: the records that
    /// arrive while one batch is being written go together in the next), and resolves once it
    /// is in the database.
    pub async fn record_durably(&self, record: UsageRecord) -> Result<(), UsageUnrecorded> {
        let (done, written) = oneshot::channel();
        self.commands.send(Command::Durable(record, done)).map_err(|_| UsageUnrecorded)?;
        written.await.unwrap_or(Err(UsageUnrecorded))
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

/// Records waiting to be written are kept across failed writes, up to this many.
const MAX_PENDING: usize = 100_000;

async fn write_batches(
    store: Arc<dyn Store>,
    mut commands: mpsc::UnboundedReceiver<Command>,
    flush_every: Duration,
) {
    let mut batch: Vec<UsageRecord> = Vec::new();
    let mut waiting: Vec<oneshot::Sender<Result<(), UsageUnrecorded>>> = Vec::new();
    let mut flushes: Vec<oneshot::Sender<bool>> = Vec::new();
    let mut every = tokio::time::interval(flush_every);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let now = tokio::select! {
            command = commands.recv() => match command {
                Some(command) => take(command, &mut batch, &mut waiting, &mut flushes),
                None => {
                    write(store.as_ref(), &mut batch).await;
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
            take(command, &mut batch, &mut waiting, &mut flushes);
        }
        let written = write(store.as_ref(), &mut batch).await;
        for done in waiting.drain(..) {
            let _ = done.send(if written { Ok(()) } else { Err(UsageUnrecorded) });
        }
        for done in flushes.drain(..) {
            let _ = done.send(written);
        }
    }
}

/// Adds a command to the batch; `true` when it asks for a write now.
fn take(
    command: Command,
    batch: &mut Vec<UsageRecord>,
    waiting: &mut Vec<oneshot::Sender<Result<(), UsageUnrecorded>>>,
    flushes: &mut Vec<oneshot::Sender<bool>>,
) -> bool {
    match command {
        Command::Record(record) => {
            batch.push(record);
            false
        }
        Command::Durable(record, done) => {
            batch.push(record);
            waiting.push(done);
            true
        }
        Command::Flush(done) => {
            flushes.push(done);
            true
        }
    }
}

/// Writes the batch; `true` when it is empty afterwards.
async fn write(store: &dyn Store, batch: &mut Vec<UsageRecord>) -> bool {
    if batch.is_empty() {
        return true;
    }
    match store.record_usage(batch).await {
        Ok(()) => {
            batch.clear();
            true
        }
        Err(error) => {
            tracing::error!(%error, records = batch.len(), "cannot write usage records; will retry");
            if batch.len() > MAX_PENDING {
                let dropped = batch.len() - MAX_PENDING;
                batch.drain(..dropped);
                tracing::error!(dropped, "usage records dropped: the database is unavailable");
            }
            false
        }
    }
}
