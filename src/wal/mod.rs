//! The log: appends, reads, sync, truncation and purge over segment files.

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use crate::error::{Poison, WalError, WalResult};
use crate::format::Entry;
use crate::limits::{
    HARD_MAX_ENTRY_SIZE_BYTES, LOCK_MAX_RETRY_INTERVAL_MS, LOCK_RETRY_INTERVAL_MS, LOCK_WAIT_MS,
    MAX_LOG_INDEX,
};
use crate::sabotage::{is_on, Sabotage};
use crate::stats::{WalCounters, WalStats};
use crate::storage::{CheckedStorage, DirLock, Storage};

pub(crate) mod buffered;
pub(crate) mod config;
mod operation;
mod reads;
pub(crate) mod recovery;
pub(crate) mod segment;
pub(crate) mod terms;

pub use buffered::{BufferedWal, BufferedWalConfig};
use config::WalConfig;
use operation::{Effect, Operation, Resources, Tail};
use recovery::RecoveryReport;
use segment::{prepare_segment_file, Segment};
use terms::TermRuns;

/// The storage calls of one mutating call, with what they change, until they have finished.
struct InFlight<S: Storage + Clone> {
    /// The call that started it, for logs.
    operation: &'static str,
    /// A full disk fails it without poisoning the log: true only for sealing a recovery cut,
    /// which meets a full disk while zero-filling its file, before anything on disk changed.
    full_disk_changes_nothing: bool,
    /// The calls themselves. Only ever reached through `&mut` (`Mutex::get_mut`, no locking):
    /// the mutex only makes the log `Sync`, as the future alone is not.
    future: Mutex<OperationFuture<S>>,
}

type OperationFuture<S> =
    Pin<Box<dyn Future<Output = (Operation<CheckedStorage<S>>, WalResult<()>)> + Send + 'static>>;

impl<S: Storage + Clone> std::fmt::Debug for InFlight<S> {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("InFlight")
            .field("operation", &self.operation)
            .finish_non_exhaustive()
    }
}

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
    /// Opens (creating if needed) the log in `config.dir` and recovers it according to
    /// `config.recovery_mode`. Recovery syncs what it keeps, so every recovered entry is durable
    /// when this returns.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe in the sense of a crash: a dropped open leaves the directory as a process
    /// that died during recovery would (every step of recovery is crash safe), releases the
    /// lock, and the next open recovers again.
    pub async fn open(storage: S, config: WalConfig) -> WalResult<Self> {
        Self::open_with(storage, config, false).await
    }

    /// Opens the log for reading only: recovery changes nothing on disk (no cut is sealed, no
    /// file is removed or synced), and every write returns [`WalError::ReadOnly`]. Its
    /// [`Wal::recovery_report`] tells what a writable open would do. For inspection tools.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: it changes nothing on disk.
    pub async fn open_read_only(storage: S, config: WalConfig) -> WalResult<Self> {
        Self::open_with(storage, config, true).await
    }

    async fn open_with(storage: S, config: WalConfig, read_only: bool) -> WalResult<Self> {
        config.validate()?;
        // Every file the log opens refuses writes after a failed one, whatever the backend.
        let storage = CheckedStorage::new(storage);
        // One writer per directory: the lock is taken before recovery changes anything.
        let lock = if read_only {
            DirLock::none()
        } else {
            recovery::create_log_dir(&storage, &config.dir).await?;
            lock_patiently(&storage, &config.dir).await?
        };
        let recovered = recovery::recover(&storage, &config, read_only).await?;
        let mut wal = Wal {
            storage,
            segments: recovered.segments,
            terms: recovered.terms,
            next_index: recovered.next_index,
            durable_index: recovered.next_index - 1,
            log_start_index: recovered.log_start_index,
            unsynced: false,
            poison: Poison::new(),
            closed: false,
            report: recovered.report,
            resources: Resources {
                next_segment_id: recovered.next_segment_id,
                ..Resources::default()
            },
            in_flight: None,
            read_only,
            seal_pending: false,
            counters: Arc::default(),
            _lock: lock,
            dir: Arc::from(config.dir.as_path()),
            config,
        };
        if read_only {
            return Ok(wal);
        }
        if recovered.needs_new_segment {
            // Opening must not need free space: a full disk defers the seal to the first
            // write, which then fails cleanly until space returns. Until sealed, the cut data
            // stays on disk and every recovery cuts it again at the same place.
            wal.seal_pending = true;
            match wal.seal_cut().await {
                Ok(()) => {}
                Err(error) if error.io_kind() == Some(std::io::ErrorKind::StorageFull) => {}
                Err(error) => return Err(error),
            }
        }
        wal.prepare_spare();
        tracing::info!(
            dir = %wal.config.dir.display(),
            backend = wal.storage.name(),
            first_index = wal.first_index(),
            last_index = wal.last_index(),
            segments = wal.segments.len(),
            cut = ?wal.report.cut,
            "opened the log"
        );
        Ok(wal)
    }

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

    /// Checks that `entries` continue the log: contiguous indexes from `next_index`, terms that
    /// never decrease, payloads within the limit. Nothing is written if any entry fails.
    fn validate_batch(&self, entries: &[Entry]) -> WalResult<()> {
        let mut previous_term = self.terms.last_term().unwrap_or(0);
        if self.next_index + entries.len() as u64 > MAX_LOG_INDEX {
            return Err(WalError::InvalidArgument(format!(
                "indexes above {MAX_LOG_INDEX} are not supported"
            )));
        }
        for (expected, entry) in (self.next_index..).zip(entries) {
            if entry.index != expected {
                return Err(WalError::NonContiguousIndex {
                    expected,
                    last: expected - 1,
                    got: entry.index,
                });
            }
            if entry.term < previous_term {
                return Err(WalError::TermRegression {
                    index: entry.index,
                    term: entry.term,
                    previous_term,
                });
            }
            if entry.payload.len() > self.config.max_entry_size_bytes {
                return Err(WalError::EntryTooLarge {
                    index: entry.index,
                    size: entry.payload.len(),
                    max: self.config.max_entry_size_bytes,
                    hard_max: HARD_MAX_ENTRY_SIZE_BYTES,
                });
            }
            previous_term = entry.term;
        }
        Ok(())
    }

    /// Appends one entry (written, not yet durable). Returns its index.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe. If the future is dropped before it completes, the write it started is
    /// neither lost nor repeated: it stays suspended in the log, and the next call that changes
    /// the log (or [`Wal::close`]) finishes it first and applies its outcome, so the entry is
    /// either appended whole or, if that write failed, the log is poisoned. Until then the log
    /// reports the state before the call.
    pub async fn append(&mut self, entry: Entry) -> WalResult<u64> {
        let index = entry.index;
        self.append_batch(std::slice::from_ref(&entry)).await?;
        Ok(index)
    }

    /// Appends entries in order (written, not yet durable), rotating segments as they fill,
    /// also in the middle of the batch. Either every entry is valid and written, or an invalid
    /// batch is refused before anything is written; a failed write poisons the log.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe, as [`Wal::append`]: a dropped call's batch is finished by the next call
    /// that changes the log, whole (every entry appended) or not at all (a failed write, which
    /// poisons the log).
    pub async fn append_batch(&mut self, entries: &[Entry]) -> WalResult<()> {
        self.write_batch(entries, false).await
    }

    /// Appends entries and makes them durable with one write and one sync of the last segment
    /// (a linked write+fsync on io_uring). Returns once the sync succeeded.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe, as [`Wal::append_batch`]. An `Ok` is the only acknowledgement: after a
    /// dropped call, [`Wal::durable_index`] tells how far the log is durable once the next call
    /// that changes the log (a [`Wal::sync`], say) has finished the dropped one.
    pub async fn append_batch_durable(&mut self, entries: &[Entry]) -> WalResult<()> {
        self.write_batch(entries, true).await
    }

    async fn write_batch(&mut self, entries: &[Entry], durable: bool) -> WalResult<()> {
        self.settle_and_check().await?;
        self.validate_batch(entries)?;
        self.prepare_write().await?;
        let entries = entries.to_vec();
        let name = if durable {
            "append_batch_durable"
        } else {
            "append_batch"
        };
        self.launch(name, move |mut operation| async move {
            let result = operation.append(&entries, durable).await;
            (operation, result)
        });
        self.complete().await
    }

    /// Makes every appended entry durable.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe. A dropped sync is finished by the next call that changes the log; until
    /// then the durable index stays where it was.
    pub async fn sync(&mut self) -> WalResult<()> {
        self.settle_and_check().await?;
        if !self.unsynced {
            return Ok(());
        }
        self.launch("sync", |mut operation| async move {
            let result = operation.sync().await;
            (operation, result)
        });
        self.complete().await
    }

    /// Removes every entry after `index`, durably: when this returns, no crash can bring them
    /// back. `index` may be `first_index() - 1` (empties the log); a no-op when `index >=
    /// last_index()`.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe. A dropped truncation is finished by the next call that changes the log
    /// (whatever state its storage calls reached), so an append that follows it can never be
    /// acknowledged on top of a truncation that memory has not seen: an append continuing the
    /// old end fails with [`WalError::NonContiguousIndex`] once the truncation has taken
    /// effect. Until then the log reports the entries it had before the call.
    pub async fn truncate_after(&mut self, index: u64) -> WalResult<()> {
        self.settle_and_check().await?;
        self.prepare_write().await?;
        if index >= self.last_index() {
            return Ok(());
        }
        if index + 1 < self.first_index() {
            return Err(WalError::InvalidArgument(format!(
                "cannot truncate after {index}: entries below the first index {} were purged",
                self.first_index()
            )));
        }
        tracing::info!(
            after = index,
            last_index = self.last_index(),
            "truncating the log"
        );
        let superseded: Vec<PathBuf> = self
            .segments
            .iter()
            .filter(|segment| segment.first_index() > index)
            .map(|segment| segment.path.clone())
            .collect();
        self.launch("truncate_after", move |mut operation| async move {
            let result = operation.truncate_after(index, &superseded).await;
            (operation, result)
        });
        self.complete().await
    }

    /// Removes whole segments whose entries all lie below `index` (a snapshot covers them).
    /// The segment being appended to is never removed, so entries below `index` may remain.
    /// When `index > last_index() + 1` the log is reset: every entry goes, and the next append
    /// must carry `index` (installing a snapshot on a follower).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe, as [`Wal::truncate_after`]: a dropped purge or reset is finished by the next
    /// call that changes the log.
    pub async fn purge_before(&mut self, index: u64) -> WalResult<()> {
        self.settle_and_check().await?;
        self.prepare_write().await?;
        if index > MAX_LOG_INDEX {
            return Err(WalError::InvalidArgument(format!(
                "cannot purge before {index}: indexes above {MAX_LOG_INDEX} are not supported"
            )));
        }
        if index > self.next_index {
            let old: Vec<PathBuf> = self.segments.iter().map(|s| s.path.clone()).collect();
            self.launch("purge_before (reset)", move |mut operation| async move {
                let result = operation.reset_to(index, &old).await;
                (operation, result)
            });
            return self.complete().await;
        }
        let mut removable = 0;
        while removable + 1 < self.segments.len()
            && self.segments[removable + 1].first_index() <= index
        {
            removable += 1;
        }
        if removable == 0 {
            return Ok(());
        }
        tracing::info!(before = index, segments = removable, "purging segments");
        let purged: Vec<(PathBuf, u64)> = self.segments[..removable]
            .iter()
            .map(|segment| (segment.path.clone(), segment.header.segment_size_bytes))
            .collect();
        self.launch("purge_before", move |mut operation| async move {
            let result = operation.purge(&purged).await;
            (operation, result)
        });
        self.complete().await
    }

    /// Syncs and closes the log. Later calls return [`WalError::Shutdown`].
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: a dropped close leaves the log open, with its final sync (if it started)
    /// finished by the next call; call `close` again.
    pub async fn close(&mut self) -> WalResult<()> {
        if self.closed {
            return Ok(());
        }
        let synced = if self.read_only {
            Ok(())
        } else {
            // A poisoned log reports its poisoning here too: a caller using close as its final
            // flush must not be told success.
            self.sync().await
        };
        self.closed = true;
        self.abandon_spare();
        // A closed log writes nothing more: another may open the directory.
        self._lock = DirLock::none();
        synced
    }

    /// Checks that the log takes writes, sealing a pending recovery cut first. A disk still
    /// full fails the write without poisoning (the seal fails while zero-filling its file, before
    /// anything in the directory changes), so the log works again once space returns; any other
    /// failure poisons.
    async fn prepare_write(&mut self) -> WalResult<()> {
        if self.seal_pending {
            tracing::info!("sealing the recovery cut before the first write");
            self.seal_cut().await?;
        }
        Ok(())
    }

    /// Seals a recovery cut: a new segment starting at the next index supersedes whatever lies
    /// beyond the cut, then the segments it supersedes are removed.
    async fn seal_cut(&mut self) -> WalResult<()> {
        let superseded = self.report.segments_removed.clone();
        self.launch("seal the recovery cut", move |mut operation| async move {
            let result = operation.seal_cut(&superseded).await;
            (operation, result)
        });
        self.in_flight
            .as_mut()
            .expect("just launched")
            .full_disk_changes_nothing = true;
        self.complete().await
    }

    /// Hands the storage calls of `operation`, with the state they need, to a future kept in
    /// the log until [`Wal::complete`] has driven it to its end.
    fn launch<F, Fut>(&mut self, operation: &'static str, work: F)
    where
        F: FnOnce(Operation<CheckedStorage<S>>) -> Fut,
        Fut: Future<Output = (Operation<CheckedStorage<S>>, WalResult<()>)> + Send + 'static,
    {
        assert!(self.in_flight.is_none(), "one operation at a time");
        let state = Operation {
            storage: self.storage.clone(),
            dir: Arc::clone(&self.dir),
            segment_size_bytes: self.config.segment_size_bytes,
            counters: Arc::clone(&self.counters),
            resources: std::mem::take(&mut self.resources),
            tail: self.segments.last().map(Tail::of),
            next_index: self.next_index,
            last_term: self.terms.last_term(),
            durable_index: self.durable_index,
            log_start_index: self.log_start_index,
            unsynced: self.unsynced,
            effects: Vec::new(),
        };
        self.in_flight = Some(InFlight {
            operation,
            full_disk_changes_nothing: false,
            future: Mutex::new(Box::pin(work(state))),
        });
    }

    /// Finishes an operation a dropped call left suspended, if any, then checks that the log
    /// takes writes. Every mutating call begins here.
    async fn settle_and_check(&mut self) -> WalResult<()> {
        self.settle().await;
        self.check_writable()
    }

    /// Finishes an operation a dropped call left suspended, if any. Its outcome is applied and
    /// its failure poisons the log (callers then see that through `check_writable`).
    async fn settle(&mut self) {
        if self.in_flight.is_some() {
            let _ = self.finish(true).await;
        }
    }

    /// Drives the operation this call launched to its end; see [`Wal::finish`].
    async fn complete(&mut self) -> WalResult<()> {
        self.finish(false).await
    }

    /// Drives the operation in flight to its end and applies what it did to the log's memory.
    /// Returns its own result; a failure poisons the log, except a full disk met while sealing
    /// a recovery cut (nothing changed then). Cancel safe: dropped, it leaves the operation in
    /// flight for the next call. `orphaned`: the call that launched it was dropped.
    async fn finish(&mut self, orphaned: bool) -> WalResult<()> {
        let Some(in_flight) = self.in_flight.as_mut() else {
            return Ok(());
        };
        let future = in_flight
            .future
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner);
        let (operation, result) = future.as_mut().await;
        let in_flight = self.in_flight.take().expect("still in flight");
        if orphaned && is_on(Sabotage::SkipCancellationGuard) {
            self.resources = operation.resources;
            return Ok(());
        }
        self.apply(operation);
        let error = match result {
            Ok(()) => return Ok(()),
            Err(error) => error,
        };
        if orphaned {
            tracing::warn!(
                operation = in_flight.operation,
                %error,
                "the storage calls of a dropped call failed"
            );
        }
        if in_flight.full_disk_changes_nothing
            && error.io_kind() == Some(std::io::ErrorKind::StorageFull)
        {
            tracing::warn!(%error, "no space to seal the recovery cut; a later write will");
            return Err(error);
        }
        Err(self.fail(error))
    }

    /// Applies the steps an operation completed, in order, and takes back its resources.
    fn apply(&mut self, operation: Operation<CheckedStorage<S>>) {
        self.resources = operation.resources;
        for effect in operation.effects {
            match effect {
                Effect::Appended {
                    offsets,
                    term_changes,
                    end_offset,
                } => {
                    let segment = self.segments.last_mut().expect("appended to a segment");
                    self.next_index += offsets.len() as u64;
                    segment.offsets.extend(offsets);
                    segment.end_offset = end_offset;
                    for (index, term) in term_changes {
                        self.terms.push(index, term);
                    }
                    self.unsynced = true;
                }
                Effect::Synced => {
                    self.durable_index = self.next_index - 1;
                    self.unsynced = false;
                }
                Effect::SegmentAdded(segment) => self.segments.push(segment),
                Effect::Sealed(segment) => {
                    self.segments.push(segment);
                    self.seal_pending = false;
                }
                Effect::Truncated { index, segment } => {
                    while self
                        .segments
                        .last()
                        .is_some_and(|segment| segment.first_index() > index)
                    {
                        self.segments.pop();
                    }
                    if let Some(last) = self.segments.last_mut() {
                        last.truncate_after(index);
                    }
                    self.segments.push(segment);
                    self.terms.truncate_after(index);
                    self.next_index = index + 1;
                    self.durable_index = self.durable_index.min(index);
                }
                Effect::Reset { index, segment } => {
                    self.segments.clear();
                    self.segments.push(segment);
                    self.terms.clear();
                    self.log_start_index = index;
                    self.next_index = index;
                    self.durable_index = index - 1;
                    self.unsynced = false;
                }
                Effect::Purged { count } => {
                    self.segments.drain(..count);
                    self.terms.purge_before(self.first_index());
                }
            }
        }
        // The operation tracked the same state as it went; the two must agree.
        assert_eq!(
            (self.next_index, self.durable_index, self.unsynced),
            (
                operation.next_index,
                operation.durable_index,
                operation.unsynced
            ),
            "an operation's effects disagree with its own view of the log"
        );
        if !self.closed {
            self.prepare_spare();
        }
    }

    /// Starts zero-filling the next segment's file in the background, so rotation only has to
    /// write a header and rename.
    fn prepare_spare(&mut self) {
        if self.resources.spare.is_some() || !self.resources.recycled.is_empty() {
            return;
        }
        let storage = self.storage.clone();
        let dir = self.config.dir.clone();
        let size = self.config.segment_size_bytes;
        let task = tokio::spawn(async move { prepare_segment_file(&storage, &dir, size).await });
        self.resources.spare = Some(task);
    }

    /// Stops preparing the spare segment; its temporary file is removed by the next recovery.
    fn abandon_spare(&mut self) {
        if let Some(task) = self.resources.spare.take() {
            task.abort();
        }
    }
}

impl<S: Storage + Clone> Drop for Wal<S> {
    fn drop(&mut self) {
        self.abandon_spare();
    }
}

/// Takes the directory lock, retrying for up to [`LOCK_WAIT_MS`] while it is held elsewhere:
/// a predecessor that just died may hold it until the kernel has finished its last writes.
async fn lock_patiently<S: Storage>(storage: &S, dir: &std::path::Path) -> WalResult<DirLock> {
    // Real time, and a pause on the blocking pool rather than a timer: opening a log needs no
    // time driver in the runtime, and a paused test clock cannot stretch the wait.
    let deadline = Instant::now() + std::time::Duration::from_millis(LOCK_WAIT_MS);
    // Short pauses first (a dead predecessor's lock comes free within milliseconds), longer
    // ones while it stays held.
    let mut pause = std::time::Duration::from_millis(LOCK_RETRY_INTERVAL_MS);
    loop {
        match storage.lock_dir(dir).await {
            Err(WalError::Locked { .. }) if Instant::now() < deadline => {
                // A join error means the runtime is shutting down: the next attempt decides.
                let _ = tokio::task::spawn_blocking(move || std::thread::sleep(pause)).await;
                pause =
                    (pause * 2).min(std::time::Duration::from_millis(LOCK_MAX_RETRY_INTERVAL_MS));
            }
            other => return other,
        }
    }
}
