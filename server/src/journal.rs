//! The reservation journal: each chat request's worst case, appended to a file before its
//! upstream call, so that a crash (kill -9, an OOM kill) cannot lose what the requests running at
//! that moment cost.
//!
//! One `write(2)` of one line per request, under a lock held only for that call: no transaction
//! and no hand-off to another thread on the request path (a pending usage row in the database
//! cost about 85 µs of CPU per request, see BENCHMARKS.md). Once `write` returns, the line is in
//! the kernel's page cache, which outlives the process; like SQLite's WAL with
//! `synchronous = NORMAL`, it does not outlive the host losing power.
//!
//! A request's line stays until its final usage record is in the database (the usage writer
//! settles its [`Ticket`] after the commit). The journal is a directory of segment files; a full
//! segment is sealed and a new one started, and a sealed segment whose requests are all settled is
//! deleted. At start-up, [`Journal::open`] hands back every line left by the previous run: those
//! requests are recorded as interrupted at their worst case, but for those whose final record the
//! previous run did write (`Store::recover_usage`).
//!
//! The directory is locked (`flock`) while a relay uses it, so two relays cannot share one.

use std::borrow::Cow;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use serde::{Deserialize, Serialize};

use crate::store::{Outcome, UsageRecord};

/// A segment is sealed once it holds this many bytes (about 30,000 requests).
const SEGMENT_BYTES: u64 = 8 << 20;

/// The directory's lock file; segments are `NNNNNNNNNNNNNNNNNNNN.jsonl`.
const LOCK_FILE: &str = "lock";

#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error(
        "the reservation journal {dir} is in use by another relay (each relay needs its own: set usage.journal_dir)"
    )]
    InUse { dir: PathBuf },
    #[error("reservation journal {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
}

fn io_error(path: &Path) -> impl FnOnce(io::Error) -> JournalError + '_ {
    move |source| JournalError::Io { path: path.to_owned(), source }
}

/// One journal line: what a request may cost at most, and who pays.
#[derive(Serialize, Deserialize)]
struct Line<'a> {
    #[serde(borrow)]
    request_id: Cow<'a, str>,
    at_ms: i64,
    #[serde(borrow)]
    site_id: Option<Cow<'a, str>>,
    #[serde(borrow)]
    key_id: Option<Cow<'a, str>>,
    #[serde(borrow)]
    visitor: Option<Cow<'a, str>>,
    #[serde(borrow)]
    model: Cow<'a, str>,
    #[serde(borrow)]
    upstream: Cow<'a, str>,
    input_tokens: u64,
    output_tokens: u64,
    cost_micros: u64,
    /// The id of the request's admission, which keys the idempotency of its budget settle in
    /// Redis (absent in lines an earlier version wrote, and without Redis).
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    reservation: Option<Cow<'a, str>>,
}

impl Line<'_> {
    fn into_interrupted_record(self) -> UsageRecord {
        UsageRecord {
            request_id: self.request_id.into_owned(),
            at_ms: self.at_ms,
            site_id: self.site_id.map(Cow::into_owned),
            key_id: self.key_id.map(Cow::into_owned),
            visitor: self.visitor.map(Cow::into_owned),
            model: self.model.into_owned(),
            upstream: self.upstream.into_owned(),
            input_tokens: self.input_tokens,
            output_tokens: self.output_tokens,
            cache_read_tokens: 0,
            cache_write_tokens: 0,
            estimated: true,
            cost_micros: self.cost_micros,
            first_token_ms: None,
            total_ms: 0,
            outcome: Outcome::Interrupted,
        }
    }
}

/// A segment file and how many of its requests are not settled yet.
#[derive(Debug)]
struct Segment {
    path: PathBuf,
    state: Mutex<SegmentState>,
}

#[derive(Debug, Default)]
struct SegmentState {
    outstanding: u64,
    /// No more lines are written to it: it is deleted once `outstanding` is 0.
    sealed: bool,
}

impl Segment {
    fn state(&self) -> MutexGuard<'_, SegmentState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Deletes the file if nothing in it is needed any more.
    fn delete_if_done(&self, state: &SegmentState) {
        if state.sealed
            && state.outstanding == 0
            && let Err(error) = fs::remove_file(&self.path)
        {
            tracing::warn!(path = %self.path.display(), %error, "cannot delete a settled reservation journal segment");
        }
    }
}

/// A request's line in the journal. Settle it once the request's final usage record is in the
/// database; a ticket dropped unsettled keeps its line until the next start, which then counts
/// the request at its worst case (unless its final record did get written).
#[derive(Debug)]
#[must_use = "a ticket must be settled once its request's usage record is written"]
pub struct Ticket(Arc<Segment>);

impl Ticket {
    pub fn settle(self) {
        let mut state = self.0.state();
        state.outstanding = state.outstanding.saturating_sub(1);
        self.0.delete_if_done(&state);
    }
}

#[derive(Debug)]
struct Active {
    file: File,
    segment: Arc<Segment>,
    bytes: u64,
    number: u64,
    /// A write failed part-way: the next line starts on a line of its own.
    torn: bool,
}

/// The journal of one relay (see the module's documentation).
#[derive(Debug)]
pub struct Journal {
    dir: PathBuf,
    active: Mutex<Active>,
    /// Held for the journal's lifetime: the directory's `flock`.
    _lock: File,
}

/// What the previous run left: its requests, to be settled, and the files that held them.
#[derive(Debug)]
pub struct Leftovers {
    pub records: Vec<UsageRecord>,
    /// The reservation id of each record, in the same order (see [`Journal::reserve`]).
    pub reservations: Vec<Option<String>>,
    /// Lines that could not be read (a write cut short by the crash), skipped.
    pub unreadable: u64,
    files: Vec<PathBuf>,
}

impl Leftovers {
    /// Deletes the previous run's segments; call once their records are in the database.
    pub fn discard(self) -> Result<(), JournalError> {
        for path in &self.files {
            fs::remove_file(path).map_err(io_error(path))?;
        }
        Ok(())
    }
}

impl Journal {
    /// Opens (creating it if missing) and locks the journal in `dir`, and reads what a previous
    /// run left in it. New lines go to a segment of their own, so the leftovers can be discarded
    /// once settled.
    pub fn open(dir: &Path) -> Result<(Self, Leftovers), JournalError> {
        fs::create_dir_all(dir).map_err(io_error(dir))?;
        let lock_path = dir.join(LOCK_FILE);
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(io_error(&lock_path))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => {
                return Err(JournalError::InUse { dir: dir.to_owned() });
            }
            Err(fs::TryLockError::Error(source)) => {
                return Err(JournalError::Io { path: lock_path, source });
            }
        }
        let mut files = segments(dir)?;
        files.sort();
        let next = files.last().and_then(|path| segment_number(path)).map_or(0, |n| n + 1);
        let mut records = Vec::new();
        let mut reservations = Vec::new();
        let mut unreadable = 0;
        for path in &files {
            let file = File::open(path).map_err(io_error(path))?;
            for line in BufReader::new(file).split(b'\n') {
                let line = line.map_err(io_error(path))?;
                if line.is_empty() {
                    continue;
                }
                match serde_json::from_slice::<Line<'_>>(&line) {
                    Ok(mut line) => {
                        reservations.push(line.reservation.take().map(Cow::into_owned));
                        records.push(line.into_interrupted_record());
                    }
                    Err(_) => unreadable += 1,
                }
            }
        }
        let active = Mutex::new(new_segment(dir, next)?);
        Ok((
            Self { dir: dir.to_owned(), active, _lock: lock },
            Leftovers { records, reservations, unreadable, files },
        ))
    }

    /// Appends `record` (its tokens and cost already the request's worst case) with the id of its
    /// admission (`reservation`, when it has one) and returns the ticket to settle once the
    /// request's final record is written. An error means the line may not be on disk: the
    /// request must not run.
    pub fn reserve(
        &self,
        record: &UsageRecord,
        reservation: Option<&str>,
    ) -> Result<Ticket, JournalError> {
        let line = Line {
            request_id: Cow::Borrowed(&record.request_id),
            at_ms: record.at_ms,
            site_id: record.site_id.as_deref().map(Cow::Borrowed),
            key_id: record.key_id.as_deref().map(Cow::Borrowed),
            visitor: record.visitor.as_deref().map(Cow::Borrowed),
            model: Cow::Borrowed(&record.model),
            upstream: Cow::Borrowed(&record.upstream),
            input_tokens: record.input_tokens,
            output_tokens: record.output_tokens,
            cost_micros: record.cost_micros,
            reservation: reservation.map(Cow::Borrowed),
        };
        let mut bytes = Vec::with_capacity(256);
        bytes.push(b'\n');
        serde_json::to_writer(&mut bytes, &line).map_err(|e| JournalError::Io {
            path: self.dir.clone(),
            source: io::Error::other(e),
        })?;
        bytes.push(b'\n');

        let mut active = self.active.lock().unwrap_or_else(PoisonError::into_inner);
        // The leading newline is only needed after a torn write.
        let start = usize::from(!active.torn);
        if let Err(source) = active.file.write_all(&bytes[start..]) {
            active.torn = true;
            return Err(JournalError::Io { path: active.segment.path.clone(), source });
        }
        active.torn = false;
        active.bytes += (bytes.len() - start) as u64;
        active.segment.state().outstanding += 1;
        let ticket = Ticket(Arc::clone(&active.segment));
        if active.bytes >= SEGMENT_BYTES {
            let next = new_segment(&self.dir, active.number + 1);
            match next {
                Ok(next) => {
                    let full = std::mem::replace(&mut *active, next);
                    let mut state = full.segment.state();
                    state.sealed = true;
                    full.segment.delete_if_done(&state);
                }
                // The full segment keeps taking lines; the next request tries again.
                Err(error) => {
                    tracing::warn!(%error, "cannot start a new reservation journal segment")
                }
            }
        }
        Ok(ticket)
    }
}

fn segment_number(path: &Path) -> Option<u64> {
    path.file_name()?.to_str()?.strip_suffix(".jsonl")?.parse().ok()
}

fn segments(dir: &Path) -> Result<Vec<PathBuf>, JournalError> {
    let mut files = Vec::new();
    for entry in fs::read_dir(dir).map_err(io_error(dir))? {
        let path = entry.map_err(io_error(dir))?.path();
        if segment_number(&path).is_some() {
            files.push(path);
        }
    }
    Ok(files)
}

fn new_segment(dir: &Path, number: u64) -> Result<Active, JournalError> {
    let path = dir.join(format!("{number:020}.jsonl"));
    let file = OpenOptions::new().create(true).append(true).open(&path).map_err(io_error(&path))?;
    let segment = Arc::new(Segment { path, state: Mutex::new(SegmentState::default()) });
    Ok(Active { file, segment, bytes: 0, number, torn: false })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: &str) -> UsageRecord {
        UsageRecord {
            request_id: id.into(),
            at_ms: 1_700_000_000_000,
            site_id: Some("site_1".into()),
            key_id: None,
            visitor: Some("v\"isitor\n".into()),
            model: "gpt-4o-mini".into(),
            upstream: "openai".into(),
            input_tokens: 1_000,
            output_tokens: 512,
            cache_read_tokens: 0,
            cache_write_tokens: 0,
            estimated: true,
            cost_micros: 4_200,
            first_token_ms: None,
            total_ms: 0,
            outcome: Outcome::Interrupted,
        }
    }

    fn jsonl_files(dir: &Path) -> usize {
        segments(dir).map(|files| files.len()).unwrap_or(0)
    }

    #[test]
    fn what_a_crashed_run_reserved_is_handed_back_at_the_next_start() {
        let dir = tempfile::tempdir().unwrap();
        let (journal, leftovers) = Journal::open(dir.path()).unwrap();
        assert!(leftovers.records.is_empty());
        let settled = journal.reserve(&record("req_a"), None).unwrap();
        let _running = journal.reserve(&record("req_b"), Some("rsv_b")).unwrap();
        settled.settle();
        // A crash: nothing is closed or cleaned up, only the lock goes with the process.
        drop(journal);

        let (_journal, leftovers) = Journal::open(dir.path()).unwrap();
        // Both lines are there: whether `req_a`'s final record was written is the database's
        // to say (a pending row never replaces a final one).
        let ids: Vec<_> = leftovers.records.iter().map(|r| r.request_id.as_str()).collect();
        assert_eq!(ids, ["req_a", "req_b"]);
        assert_eq!(leftovers.records[1], record("req_b"));
        // With the id of each one's admission, which keys its settle in Redis.
        assert_eq!(leftovers.reservations, [None, Some("rsv_b".to_owned())]);
        assert_eq!(leftovers.unreadable, 0);
        leftovers.discard().unwrap();
        assert_eq!(jsonl_files(dir.path()), 1, "only the new run's segment is left");
    }

    #[test]
    fn a_line_cut_short_by_a_crash_is_skipped_and_the_rest_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let (journal, _) = Journal::open(dir.path()).unwrap();
        let _a = journal.reserve(&record("req_a"), None).unwrap();
        drop(journal);
        let path = segments(dir.path()).unwrap().pop().unwrap();
        let mut file = OpenOptions::new().append(true).open(&path).unwrap();
        file.write_all(b"{\"request_id\":\"req_torn\",\"at_").unwrap();
        file.write_all(b"\n").unwrap();

        let (_journal, leftovers) = Journal::open(dir.path()).unwrap();
        assert_eq!(leftovers.records.len(), 1);
        assert_eq!(leftovers.unreadable, 1);
    }

    #[test]
    fn a_line_that_cannot_be_written_is_an_error_and_the_next_one_starts_clean() {
        let dir = tempfile::tempdir().unwrap();
        let (journal, _) = Journal::open(dir.path()).unwrap();
        let segment = {
            let mut active = journal.active.lock().unwrap();
            let full = OpenOptions::new().append(true).open("/dev/full").unwrap();
            std::mem::replace(&mut active.file, full)
        };
        let error = journal.reserve(&record("req_refused"), None).unwrap_err();
        assert!(error.to_string().contains("No space left"), "{error}");
        // The disk has room again; a partial line may be there, so the next starts on its own.
        journal.active.lock().unwrap().file = segment;
        let _ticket = journal.reserve(&record("req_next"), None).unwrap();
        drop(journal);
        let (_journal, leftovers) = Journal::open(dir.path()).unwrap();
        let ids: Vec<_> = leftovers.records.iter().map(|r| r.request_id.as_str()).collect();
        assert_eq!(ids, ["req_next"]);
    }

    #[test]
    fn a_second_relay_cannot_use_the_same_journal() {
        let dir = tempfile::tempdir().unwrap();
        let (_journal, _) = Journal::open(dir.path()).unwrap();
        let error = Journal::open(dir.path()).unwrap_err();
        assert!(matches!(error, JournalError::InUse { .. }), "{error}");
        assert!(error.to_string().contains("usage.journal_dir"), "{error}");
    }

    #[test]
    fn a_full_segment_is_deleted_once_its_requests_are_settled() {
        let dir = tempfile::tempdir().unwrap();
        let (journal, _) = Journal::open(dir.path()).unwrap();
        let first = journal.active.lock().unwrap().number;
        let mut tickets = Vec::new();
        while journal.active.lock().unwrap().number == first {
            tickets
                .push(journal.reserve(&record(&format!("req_{}", tickets.len())), None).unwrap());
        }
        assert!(tickets.len() > 10_000, "{} lines filled a segment", tickets.len());
        let next = journal.reserve(&record("req_next"), None).unwrap();
        assert_eq!(jsonl_files(dir.path()), 2, "the first segment is sealed, a second one open");
        let last = tickets.pop().unwrap();
        // All but one of the first segment's requests settle: it must stay.
        for ticket in tickets {
            ticket.settle();
        }
        assert_eq!(jsonl_files(dir.path()), 2);
        last.settle();
        assert_eq!(jsonl_files(dir.path()), 1, "the sealed segment is gone");
        next.settle();
        assert_eq!(jsonl_files(dir.path()), 1, "the open segment stays");
    }
}
