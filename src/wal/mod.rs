//! The log: appends, reads, sync, truncation and purge over segment files.
//!
//! The parts: [`open`] (opening, recovery, the directory lock), [`append`] (validation, appends,
//! sync), [`lifecycle`] (truncation, purge, close, the spare segment), [`in_flight`] (how a
//! mutating call's storage calls outlive a dropped caller), [`operation`] (those storage calls),
//! [`reads`], [`segment`], [`recovery`], [`terms`], and [`buffered`] (group commit).

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use crate::error::{Poison, WalError, WalResult};
use crate::stats::{WalCounters, WalStats};
use crate::storage::{CheckedStorage, DirLock, Storage};

mod append;
pub(crate) mod buffered;
pub(crate) mod config;
mod in_flight;
mod lifecycle;
mod open;
mod operation;
mod published;
mod reads;
pub(crate) mod recovery;
pub(crate) mod segment;
pub(crate) mod terms;

pub(crate) use append::check_continues;
pub use buffered::{BufferedWal, BufferedWalConfig};
use config::WalConfig;
use in_flight::InFlight;
use operation::Resources;
use recovery::RecoveryReport;
use segment::Segment;
use terms::TermRuns;

/// A segmented, checksummed write-ahead log of `(term, index, payload)` entries.
///
/// One writer: mutating calls take `&mut self`. Reads take `&self` and go to storage through an
/// in-memory index of positions; the log is never held in memory whole.
///
/// Durability: [`Wal::append`] and [`Wal::append_batch`] write but do not sync; an entry is
/// durable once [`Wal::sync`] (or [`Wal::append_batch_durable`]) returns `Ok` after it was
/// appended. [`Wal::durable_index`] tells how far that is. After any failed write or sync the log
/// is poisoned: every later mutating call returns [`WalError::Poisoned`]; reads keep working.
#[derive(Debug)]
pub struct Wal<S: Storage + Clone> {
    /// The backend, whose files refuse writes after a failed one.
    storage: CheckedStorage<S>,
    config: WalConfig,
    /// `config.dir`, shared with each operation without copying the path.
    dir: Arc<std::path::Path>,
    /// Live segments in index order; the last is the one appended to.
    segments: Vec<Segment>,
    terms: TermRuns,
    /// Index the next appended entry must carry.
    next_index: u64,
    /// Highest index covered by a successful sync (`next_index - 1` at most).
    durable_index: u64,
    /// Entries below this index were purged.
    log_start_index: u64,
    /// The last segment holds writes not yet synced.
    unsynced: bool,
    poison: Poison,
    closed: bool,
    report: RecoveryReport,
    /// What new segments are made from (taken by the operation in flight, if any).
    resources: Resources,
    /// The storage calls of a mutating call, kept until they have finished and their outcome
    /// is applied, even when the call that started them was dropped.
    in_flight: Option<InFlight<S>>,
    /// Opened with [`Wal::open_read_only`].
    read_only: bool,
    /// Recovery cut the log and the disk had no room for the segment that seals the cut: the
    /// next write seals it first (see [`Wal::seal_cut`]).
    seal_pending: bool,
    /// Counters behind [`Wal::stats`], shared with a `BufferedWal` wrapping the log.
    counters: Arc<WalCounters>,
    /// The directory's lock, held until the log is closed or dropped.
    _lock: DirLock,
}

/// A summary of the log's shape, for inspection tools.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentInfo {
    /// The segment file.
    pub path: PathBuf,
    /// Its id.
    pub segment_id: u64,
    /// First index it holds (or would hold).
    pub first_index: u64,
    /// Number of live entries.
    pub entries: u64,
    /// Bytes used by the header and live records.
    pub used_bytes: u64,
    /// The size the segment was pre-written to.
    pub capacity_bytes: u64,
    /// The file was reused from a purged segment.
    pub recycled: bool,
}

impl<S: Storage + Clone> Wal<S> {
    /// The configuration the log was opened with.
    pub fn config(&self) -> &WalConfig {
        &self.config
    }

    /// What recovery found and did when the log was opened.
    pub fn recovery_report(&self) -> &RecoveryReport {
        &self.report
    }

    /// The storage backend.
    pub fn storage(&self) -> &S {
        self.storage.inner()
    }

    /// The first index in the log. When the log is empty this is `last_index() + 1`.
    pub fn first_index(&self) -> u64 {
        self.segments
            .iter()
            .find(|segment| segment.len() > 0)
            .map_or(self.next_index, |segment| segment.first_index())
    }

    /// The last index in the log (`first_index() - 1` when empty; 0 for a new log).
    pub fn last_index(&self) -> u64 {
        self.next_index - 1
    }

    /// The highest index covered by a successful sync.
    pub fn durable_index(&self) -> u64 {
        self.durable_index
    }

    /// True when the log holds no entries.
    pub fn is_empty(&self) -> bool {
        self.first_index() > self.last_index()
    }

    /// True once a write or sync failed; every later write is refused.
    pub fn is_poisoned(&self) -> bool {
        self.poison.is_poisoned()
    }

    /// A snapshot of the log's counters and latency histograms since it was opened. Cheap: a
    /// few dozen relaxed atomic loads and one small allocation per histogram.
    pub fn stats(&self) -> WalStats {
        self.counters.snapshot()
    }

    /// The live counters, for a `BufferedWal` to report without taking the log's lock.
    pub(crate) fn counters(&self) -> Arc<WalCounters> {
        Arc::clone(&self.counters)
    }

    /// Records `error` as the failure that poisons the log (the first one wins; it is logged at
    /// error level once) and returns it.
    fn fail(&self, error: WalError) -> WalError {
        let first = !self.poison.is_poisoned();
        let error = self.poison.poison(error);
        if first && self.poison.is_poisoned() {
            self.counters.poisoned.store(true, Ordering::Relaxed);
            tracing::error!(
                dir = %self.config.dir.display(),
                %error,
                "the log is poisoned: it refuses every write from now on; reopen it to recover"
            );
        }
        error
    }

    /// The term of entry `index`.
    pub fn term(&self, index: u64) -> WalResult<u64> {
        self.check_in_range(index)?;
        Ok(self
            .terms
            .term_of(index)
            .expect("every live index has a term"))
    }

    /// The segments of the log, oldest first.
    pub fn segments(&self) -> Vec<SegmentInfo> {
        self.segments
            .iter()
            .map(|segment| SegmentInfo {
                path: segment.path.clone(),
                segment_id: segment.header.segment_id,
                first_index: segment.first_index(),
                entries: segment.len(),
                used_bytes: segment.end_offset,
                capacity_bytes: segment.header.segment_size_bytes,
                recycled: segment.header.recycled,
            })
            .collect()
    }

    fn check_writable(&self) -> WalResult<()> {
        if self.read_only {
            return Err(WalError::ReadOnly {
                dir: self.config.dir.clone(),
            });
        }
        if self.closed {
            return Err(WalError::Shutdown { what: "log" });
        }
        self.poison.check()
    }

    fn check_in_range(&self, index: u64) -> WalResult<()> {
        if index < self.first_index() || index > self.last_index() {
            return Err(WalError::IndexOutOfRange {
                index,
                first: self.first_index(),
                last: self.last_index(),
            });
        }
        Ok(())
    }
}

impl<S: Storage + Clone> Drop for Wal<S> {
    fn drop(&mut self) {
        self.abandon_spare();
    }
}
