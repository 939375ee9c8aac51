//! `BufferedWal`: group commit for many concurrent appenders.
//!
//! Appenders push entries into a shared buffer and get their index back at once. A flusher task
//! writes everything buffered since the last flush with one write and makes it durable with one
//! fsync (a linked write+fsync on io_uring), then publishes the new durable index to every
//! waiter. A flush happens when the oldest buffered entry has waited `flush_interval_ms`, when
//! the buffer reaches its entry or byte limit, or on request; with `flush_interval_ms = 0` it
//! happens as soon as anything is buffered, so concurrent appenders still share fsyncs.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{Notify, RwLock};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::error::{WalError, WalResult};
use crate::format::Entry;
use crate::limits::{
    DEFAULT_FLUSH_INTERVAL_MS, DEFAULT_MAX_BUFFERED_BYTES, DEFAULT_MAX_BUFFERED_ENTRIES,
    HARD_MAX_BUFFERED_BYTES, HARD_MAX_BUFFERED_ENTRIES, HARD_MAX_ENTRY_SIZE_BYTES,
    MAX_FLUSH_INTERVAL_MS, TRUNCATION_HISTORY,
};
use crate::stats::{GroupCommitCounters, WalCounters, WalStats};
use crate::storage::Storage;
use crate::wal::Wal;

/// Configuration of a [`BufferedWal`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BufferedWalConfig {
    /// Longest time an entry waits in the buffer before a flush, in milliseconds. Default 10;
    /// at most [`MAX_FLUSH_INTERVAL_MS`]. Zero flushes as soon as anything is buffered (every
    /// append is synced; concurrent appends share a sync).
    pub flush_interval_ms: u64,
    /// Buffered entries that trigger a flush before the interval elapses; appenders wait while
    /// the buffer is this full. Default 4096; within `[1, HARD_MAX_BUFFERED_ENTRIES]`.
    pub max_buffered_entries: usize,
    /// Buffered payload bytes that trigger a flush; appenders wait while the buffer is this
    /// full. Default 4 MiB; within `[1, HARD_MAX_BUFFERED_BYTES]`.
    pub max_buffered_bytes: usize,
}

impl Default for BufferedWalConfig {
    fn default() -> Self {
        Self {
            flush_interval_ms: DEFAULT_FLUSH_INTERVAL_MS,
            max_buffered_entries: DEFAULT_MAX_BUFFERED_ENTRIES,
            max_buffered_bytes: DEFAULT_MAX_BUFFERED_BYTES,
        }
    }
}

impl BufferedWalConfig {
    /// Checks every field against its bounds.
    pub fn validate(&self) -> WalResult<()> {
        if self.flush_interval_ms > MAX_FLUSH_INTERVAL_MS {
            return Err(WalError::InvalidConfig {
                field: "flush_interval_ms",
                reason: format!(
                    "is {}, must be at most {MAX_FLUSH_INTERVAL_MS}",
                    self.flush_interval_ms
                ),
            });
        }
        if !(1..=HARD_MAX_BUFFERED_ENTRIES).contains(&self.max_buffered_entries) {
            return Err(WalError::InvalidConfig {
                field: "max_buffered_entries",
                reason: format!(
                    "is {}, must be within [1, {HARD_MAX_BUFFERED_ENTRIES}]",
                    self.max_buffered_entries
                ),
            });
        }
        if !(1..=HARD_MAX_BUFFERED_BYTES).contains(&self.max_buffered_bytes) {
            return Err(WalError::InvalidConfig {
                field: "max_buffered_bytes",
                reason: format!(
                    "is {}, must be within [1, {HARD_MAX_BUFFERED_BYTES}]",
                    self.max_buffered_bytes
                ),
            });
        }
        Ok(())
    }
}

/// The buffer shared by appenders and the flusher.
#[derive(Debug)]
struct Buffer {
    /// Entries appended but not yet taken by a flush.
    pending: Vec<Entry>,
    pending_bytes: usize,
    /// Entries taken by the flush under way: still readable from here until written.
    in_flight: Vec<Entry>,
    /// When the oldest pending entry was appended.
    oldest_pending_at: Option<Instant>,
    /// Index the next append must carry.
    next_index: u64,
    /// Term of the last appended entry.
    last_term: u64,
    /// First index of the log.
    first_index: u64,
    /// A flush was requested explicitly.
    flush_requested: bool,
    /// No more appends; the flusher drains and stops.
    closing: bool,
    /// Truncates and purges started and not yet finished: while any is, appends wait, so the
    /// index they get cannot race the log being rewritten, and flushes wait for them.
    maintenance: u32,
    /// The failure that poisoned the log, if any.
    failure: Option<Arc<WalError>>,
    /// Number of truncations that removed appended entries so far.
    truncation_count: u64,
    /// The latest of them, as `(truncation_count after it, index truncated after)`, oldest
    /// first, at most `TRUNCATION_HISTORY`.
    truncations: VecDeque<(u64, u64)>,
}

impl Buffer {
    /// True if a truncation after the moment `truncation_count` was `since` removed `index`,
    /// or if the history no longer reaches back that far (then it may have).
    fn truncated_since(&self, since: u64, index: u64) -> bool {
        if self.truncation_count == since {
            return false;
        }
        let covered = self
            .truncations
            .front()
            .is_some_and(|(count, _)| *count <= since + 1);
        !covered
            || self
                .truncations
                .iter()
                .any(|(count, after)| *count > since && *after < index)
    }
}

/// What waiters watch: how far the log is durable, or why it never will be.
#[derive(Debug, Clone)]
struct Durability {
    index: u64,
    failure: Option<Arc<WalError>>,
    /// Set when the flusher has stopped.
    stopped: bool,
}

#[derive(Debug)]
struct Shared<S: Storage + Clone> {
    config: BufferedWalConfig,
    max_entry_size_bytes: usize,
    buffer: Mutex<Buffer>,
    wal: RwLock<Wal<S>>,
    wake_flusher: Notify,
    durability: Published<Durability>,
    /// The log's counters, readable without its lock.
    counters: Arc<WalCounters>,
    group_commit: GroupCommitCounters,
}

/// A value tasks wait on. Like a tokio watch channel, but waiters are woken in the order they
/// began to wait: tokio's watch wakes its waiters through shards picked at random, which would
/// make a simulated run depend on more than its seed.
#[derive(Debug)]
struct Published<T> {
    value: Mutex<T>,
    changed: Notify,
}

impl<T: Clone> Published<T> {
    fn new(value: T) -> Self {
        Self {
            value: Mutex::new(value),
            changed: Notify::new(),
        }
    }

    fn get(&self) -> T {
        self.value
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Changes the value and wakes every waiter.
    fn modify(&self, change: impl FnOnce(&mut T)) {
        change(&mut self.value.lock().unwrap_or_else(PoisonError::into_inner));
        self.changed.notify_waiters();
    }

    /// Waits until `ready` returns `Some` for the value, and returns that.
    async fn wait_for<R>(&self, mut ready: impl FnMut(&T) -> Option<R>) -> R {
        loop {
            // Registered before the check, so a change between the check and the wait is seen.
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(result) = ready(&self.get()) {
                return result;
            }
            notified.await;
        }
    }
}

impl<S: Storage + Clone> Shared<S> {
    fn buffer(&self) -> MutexGuard<'_, Buffer> {
        // A panic while holding this lock is a bug in this module; the buffer itself stays
        // consistent (every update is a few field writes), so keep going.
        self.buffer
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Waits until `reached` holds for the published durability: `Ok` then (even after a
    /// failure, unless `reached` looks at it); an error if the log fails or stops first.
    async fn wait_durable_until(&self, reached: impl Fn(&Durability) -> bool) -> WalResult<()> {
        self.durability
            .wait_for(|state| {
                if reached(state) {
                    Some(Ok(()))
                } else if let Some(failure) = &state.failure {
                    Some(Err(Self::poisoned_error(failure)))
                } else if state.stopped {
                    Some(Err(WalError::Shutdown {
                        what: "buffered log",
                    }))
                } else {
                    None
                }
            })
            .await
    }

    fn poisoned_error(failure: &Arc<WalError>) -> WalError {
        WalError::Poisoned {
            first_failure: Arc::clone(failure),
        }
    }
}

/// The part of the handle whose drop stops the flusher.
#[derive(Debug)]
struct Handle<S: Storage + Clone> {
    shared: Arc<Shared<S>>,
    flusher: Mutex<Option<JoinHandle<()>>>,
}

impl<S: Storage + Clone> Drop for Handle<S> {
    fn drop(&mut self) {
        // The last handle is gone: the flusher writes what is buffered and stops.
        self.shared.buffer().closing = true;
        self.shared.wake_flusher.notify_one();
    }
}

/// A cloneable, group-committing front of a [`Wal`], shared by many concurrent appenders.
///
/// Two acknowledgements: [`BufferedWal::append`] returns the index once the entry is buffered
/// (readable, not durable); [`BufferedWal::append_durable`] and [`BufferedWal::wait_durable`]
/// resolve only after the fsync covering that index succeeded. A failed flush reaches every
/// waiter and poisons the log.
#[derive(Debug)]
pub struct BufferedWal<S: Storage + Clone> {
    handle: Arc<Handle<S>>,
}

impl<S: Storage + Clone> Clone for BufferedWal<S> {
    fn clone(&self) -> Self {
        Self {
            handle: Arc::clone(&self.handle),
        }
    }
}

impl<S: Storage + Clone> BufferedWal<S> {
    /// Wraps an open log and starts its flusher task on the current tokio runtime.
    pub fn new(wal: Wal<S>, config: BufferedWalConfig) -> WalResult<Self> {
        config.validate()?;
        let durable = wal.durable_index();
        let buffer = Buffer {
            pending: Vec::new(),
            pending_bytes: 0,
            in_flight: Vec::new(),
            oldest_pending_at: None,
            next_index: wal.last_index() + 1,
            last_term: wal.terms.last_term().unwrap_or(0),
            first_index: wal.first_index(),
            flush_requested: false,
            closing: false,
            maintenance: 0,
            failure: None,
            truncation_count: 0,
            truncations: VecDeque::new(),
        };
        let durability = Published::new(Durability {
            index: durable,
            failure: None,
            stopped: false,
        });
        let counters = wal.counters();
        let shared = Arc::new(Shared {
            max_entry_size_bytes: wal.config().max_entry_size_bytes,
            config,
            buffer: Mutex::new(buffer),
            wal: RwLock::new(wal),
            wake_flusher: Notify::new(),
            durability,
            counters,
            group_commit: GroupCommitCounters::default(),
        });
        let flusher = tokio::spawn(run_flusher(Arc::clone(&shared)));
        Ok(Self {
            handle: Arc::new(Handle {
                shared,
                flusher: Mutex::new(Some(flusher)),
            }),
        })
    }

    fn shared(&self) -> &Shared<S> {
        &self.handle.shared
    }

    /// Buffers `entry`, which must carry the next index, and returns that index. The entry is
    /// readable at once and durable after a later flush; see [`BufferedWal::wait_durable`].
    /// Waits while the buffer is full.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: the entry is buffered in the same step that returns its index, so a dropped
    /// call buffered nothing.
    pub async fn append(&self, entry: Entry) -> WalResult<u64> {
        Ok(self.append_with(entry, false).await?.0)
    }

    /// Buffers an entry of `term` and `payload` at the next index, which it returns: for many
    /// concurrent appenders that do not track indexes themselves.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe, as [`BufferedWal::append`].
    pub async fn append_next(&self, term: u64, payload: Bytes) -> WalResult<u64> {
        let entry = Entry {
            index: 0,
            term,
            payload,
        };
        Ok(self.append_with(entry, true).await?.0)
    }

    /// Validates and buffers `entry`, first giving it the next index when `assign_index`.
    /// Returns the index and the truncation count at the moment it was buffered.
    async fn append_with(&self, mut entry: Entry, assign_index: bool) -> WalResult<(u64, u64)> {
        let shared = self.shared();
        loop {
            // A flush frees the buffer and publishes a new durable index (or a failure); the end
            // of a truncate or purge publishes too. Listen before looking, to miss none.
            let published = shared.durability.changed.notified();
            tokio::pin!(published);
            published.as_mut().enable();
            {
                let mut buffer = shared.buffer();
                let full = buffer.pending.len() >= shared.config.max_buffered_entries
                    || buffer.pending_bytes >= shared.config.max_buffered_bytes;
                if buffer.maintenance == 0 {
                    if assign_index {
                        entry.index = buffer.next_index;
                    }
                    self.check_append(&buffer, &entry)?;
                    if !full {
                        let count = buffer.truncation_count;
                        return Ok((self.push(&mut buffer, entry), count));
                    }
                    buffer.flush_requested = true;
                } else if let Some(failure) = &buffer.failure {
                    return Err(Shared::<S>::poisoned_error(failure));
                }
            }
            shared.wake_flusher.notify_one();
            published.await;
        }
    }

    fn check_append(&self, buffer: &Buffer, entry: &Entry) -> WalResult<()> {
        if let Some(failure) = &buffer.failure {
            return Err(Shared::<S>::poisoned_error(failure));
        }
        if buffer.closing {
            return Err(WalError::Shutdown {
                what: "buffered log",
            });
        }
        if entry.index != buffer.next_index {
            return Err(WalError::NonContiguousIndex {
                expected: buffer.next_index,
                last: buffer.next_index - 1,
                got: entry.index,
            });
        }
        if entry.term < buffer.last_term {
            return Err(WalError::TermRegression {
                index: entry.index,
                term: entry.term,
                previous_term: buffer.last_term,
            });
        }
        if entry.payload.len() > self.shared().max_entry_size_bytes {
            return Err(WalError::EntryTooLarge {
                index: entry.index,
                size: entry.payload.len(),
                max: self.shared().max_entry_size_bytes,
                hard_max: HARD_MAX_ENTRY_SIZE_BYTES,
            });
        }
        Ok(())
    }

    fn push(&self, buffer: &mut Buffer, entry: Entry) -> u64 {
        let shared = self.shared();
        let index = entry.index;
        buffer.next_index += 1;
        buffer.last_term = entry.term;
        buffer.pending_bytes += entry.payload.len();
        buffer.pending.push(entry);
        buffer.oldest_pending_at.get_or_insert_with(Instant::now);
        let due = shared.config.flush_interval_ms == 0
            || buffer.pending.len() == 1
            || buffer.pending.len() >= shared.config.max_buffered_entries
            || buffer.pending_bytes >= shared.config.max_buffered_bytes;
        if due {
            // The first pending entry starts the interval timer; limits flush at once.
            shared.wake_flusher.notify_one();
        }
        index
    }

    /// Buffers `entry` and waits until it is durable. Returns its index. Fails with
    /// [`WalError::Truncated`] if `truncate_after` removed the entry before it became durable.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: dropped before the entry was buffered, nothing happened; dropped after,
    /// the entry stays buffered and becomes durable with a later flush (the log's last index
    /// tells which), exactly as if the caller had used [`BufferedWal::append`].
    pub async fn append_durable(&self, entry: Entry) -> WalResult<u64> {
        let (index, truncations) = self.append_with(entry, false).await?;
        self.wait_durable(index).await?;
        if self.shared().buffer().truncated_since(truncations, index) {
            return Err(WalError::Truncated { index });
        }
        Ok(index)
    }

    /// Waits until every entry up to `index` is durable. Fails if a flush failed first, if the
    /// log shut down first, or if `index` was never appended. This speaks of the index, not of
    /// an entry: after `truncate_after`, whatever entry later holds `index` satisfies it;
    /// [`BufferedWal::append_durable`] tells its own entry apart.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: it only waits.
    pub async fn wait_durable(&self, index: u64) -> WalResult<()> {
        let shared = self.shared();
        {
            let buffer = shared.buffer();
            if index >= buffer.next_index {
                return Err(WalError::InvalidArgument(format!(
                    "cannot wait for index {index}: the last appended index is {}",
                    buffer.next_index - 1
                )));
            }
        }
        shared
            .wait_durable_until(|state| state.index >= index)
            .await
    }

    /// Flushes everything buffered now and waits until it is durable, and until every
    /// truncate or purge started before the call has finished. Entries a truncation removes
    /// meanwhile are not waited for.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: the flush it requested still happens; only the wait is given up.
    pub async fn flush(&self) -> WalResult<()> {
        let shared = self.shared();
        let target = {
            let mut buffer = shared.buffer();
            if let Some(failure) = &buffer.failure {
                return Err(Shared::<S>::poisoned_error(failure));
            }
            buffer.flush_requested = true;
            buffer.next_index - 1
        };
        shared.wake_flusher.notify_one();
        shared
            .wait_durable_until(|state| {
                // A failure wins here: a truncate or purge that failed left the buffer's last
                // index behind the log, so reaching it proves nothing.
                let buffer = shared.buffer();
                state.failure.is_none()
                    && buffer.maintenance == 0
                    && state.index >= target.min(buffer.next_index - 1)
            })
            .await
    }

    /// The last appended (buffered) index.
    pub fn last_index(&self) -> u64 {
        self.shared().buffer().next_index - 1
    }

    /// The first index of the log.
    pub fn first_index(&self) -> u64 {
        self.shared().buffer().first_index
    }

    /// The highest index known durable.
    pub fn durable_index(&self) -> u64 {
        self.shared().durability.get().index
    }

    /// A snapshot of the log's counters (see [`Wal::stats`]: its appends and syncs are the
    /// flushes' writes) with the group commits in [`WalStats::group_commit`]. Takes no lock.
    pub fn stats(&self) -> WalStats {
        let shared = self.shared();
        WalStats {
            group_commit: Some(shared.group_commit.snapshot()),
            ..shared.counters.snapshot()
        }
    }

    /// Reads entry `index`, from the buffer if it is not written yet.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: it changes nothing.
    pub async fn read(&self, index: u64) -> WalResult<Entry> {
        let shared = self.shared();
        let lost = {
            let buffer = shared.buffer();
            if let Some(entry) = find_buffered(&buffer, index) {
                return Ok(entry);
            }
            Self::lost_to_failure(&buffer, index)
        };
        let wal = shared.wal.read().await;
        if let Some(failure) = lost.filter(|_| index > wal.last_index()) {
            return Err(Shared::<S>::poisoned_error(&failure));
        }
        wal.read(index).await
    }

    /// The failure that discarded buffered entries, when `index` was one of them (appended,
    /// never written): reads of it report the poisoning, not a missing index.
    fn lost_to_failure(buffer: &Buffer, index: u64) -> Option<Arc<WalError>> {
        buffer.failure.clone().filter(|_| index < buffer.next_index)
    }

    /// Reads entries `[from, to)` (see [`Wal::read_range`]), buffered ones included.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: it changes nothing.
    pub async fn read_range(&self, from: u64, to: u64, max_bytes: usize) -> WalResult<Vec<Entry>> {
        let shared = self.shared();
        let wal = shared.wal.read().await;
        // Holding the log's read lock keeps the flusher from moving entries out of the buffer.
        let mut entries = wal.read_range(from, to, max_bytes).await?;
        let mut payload_bytes: usize = entries.iter().map(|entry| entry.payload.len()).sum();
        let mut next = entries.last().map_or(from, |entry| entry.index + 1);
        if next <= wal.last_index() && next < to {
            return Ok(entries); // Stopped by max_bytes.
        }
        let buffer = shared.buffer();
        while next < to {
            let Some(entry) = find_buffered(&buffer, next) else {
                if let Some(failure) = Self::lost_to_failure(&buffer, next) {
                    return Err(Shared::<S>::poisoned_error(&failure));
                }
                break;
            };
            payload_bytes += entry.payload.len();
            if payload_bytes > max_bytes && !entries.is_empty() {
                break;
            }
            entries.push(entry);
            next += 1;
        }
        Ok(entries)
    }

    /// Removes every entry after `index` (buffered or written), durably. Waiters on removed
    /// indexes are resolved by whatever entry later becomes durable at that index.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: the truncation runs in a task of its own that finishes it, on disk and in
    /// memory, even when this future is dropped; appends wait until it has finished. Dropping
    /// the future only gives up the result.
    pub async fn truncate_after(&self, index: u64) -> WalResult<()> {
        self.maintain(Maintenance::TruncateAfter(index)).await
    }

    /// Removes whole segments below `index` (see [`Wal::purge_before`]); buffered entries are
    /// written first.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe, as [`BufferedWal::truncate_after`]: the purge finishes in its own task.
    pub async fn purge_before(&self, index: u64) -> WalResult<()> {
        self.maintain(Maintenance::PurgeBefore(index)).await
    }

    /// Runs `maintenance` in a task of its own and waits for its result. Appends pause from
    /// this call on, before the task first runs, so that no append started after this call can
    /// take an index the maintenance is about to remove.
    async fn maintain(&self, maintenance: Maintenance) -> WalResult<()> {
        let guard = MaintenanceGuard::begin(Arc::clone(&self.handle.shared), maintenance.name());
        let task = tokio::spawn(guard.run(maintenance));
        join_task(task, maintenance.name()).await
    }

    /// Flushes what is buffered, stops the flusher and closes the log. Other clones get
    /// [`WalError::Shutdown`] afterwards.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: closing runs in a task of its own that finishes it even when this future
    /// is dropped (appends fail with [`WalError::Shutdown`] from the moment it starts); calling
    /// `close` again waits for it and reports the log's final state.
    pub async fn close(&self) -> WalResult<()> {
        let shared = Arc::clone(&self.handle.shared);
        shared.buffer().closing = true;
        shared.wake_flusher.notify_one();
        let flusher = self
            .handle
            .flusher
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take();
        let task = tokio::spawn(async move {
            if let Some(flusher) = flusher {
                let _ = flusher.await;
            }
            // The flusher drains what was buffered before it stops. A first close whose caller
            // went away holds its handle: a second close waits for the stop all the same, so
            // that it never closes the log under the final flush.
            shared
                .durability
                .wait_for(|state| state.stopped.then_some(()))
                .await;
            let mut wal = shared.wal.write().await;
            wal.close().await?;
            match &shared.buffer().failure {
                Some(failure) => Err(Shared::<S>::poisoned_error(failure)),
                None => Ok(()),
            }
        });
        join_task(task, "close").await
    }
}

/// Waits for a task that carries out a mutating call. A task cancelled before it finished
/// (the runtime shutting down) is reported as [`WalError::Interrupted`]; a panic is resumed.
async fn join_task(task: JoinHandle<WalResult<()>>, operation: &'static str) -> WalResult<()> {
    match task.await {
        Ok(result) => result,
        Err(error) if error.is_panic() => std::panic::resume_unwind(error.into_panic()),
        Err(_) => Err(WalError::Interrupted { operation }),
    }
}

/// A truncate or purge of a [`BufferedWal`].
#[derive(Debug, Clone, Copy)]
enum Maintenance {
    TruncateAfter(u64),
    PurgeBefore(u64),
}

impl Maintenance {
    fn name(self) -> &'static str {
        match self {
            Maintenance::TruncateAfter(_) => "truncate_after",
            Maintenance::PurgeBefore(_) => "purge_before",
        }
    }
}

/// One truncate or purge of a [`BufferedWal`], counted in `Buffer::maintenance` from its start
/// until it has brought the buffer in line with the log. Dropped before that (its task was
/// cancelled before or while it ran, or it panicked), it resumes appends on a log that refuses
/// writes, since the buffer may disagree with the log, and tells every waiter why.
struct MaintenanceGuard<S: Storage + Clone> {
    shared: Arc<Shared<S>>,
    operation: &'static str,
    armed: bool,
}

impl<S: Storage + Clone> MaintenanceGuard<S> {
    fn begin(shared: Arc<Shared<S>>, operation: &'static str) -> Self {
        shared.buffer().maintenance += 1;
        Self {
            shared,
            operation,
            armed: true,
        }
    }

    /// Carries out `maintenance` with the log's write lock held: buffered entries that stay
    /// are written durably first, then the log is truncated or purged, then the buffer is
    /// brought in line with it.
    async fn run(mut self, maintenance: Maintenance) -> WalResult<()> {
        let shared = Arc::clone(&self.shared);
        let mut wal = shared.wal.write().await;
        let keep_through = match maintenance {
            Maintenance::TruncateAfter(index) => index,
            Maintenance::PurgeBefore(_) => u64::MAX,
        };
        // Refused only on a log already failed: the guard, still armed, ends the maintenance
        // and keeps that first failure.
        let keep = shared.take_pending_through(keep_through)?;
        if let Maintenance::TruncateAfter(index) = maintenance {
            shared.record_truncation(index);
        }
        let result = async {
            if !keep.is_empty() {
                wal.append_batch_durable(&keep).await?;
            }
            match maintenance {
                Maintenance::TruncateAfter(index) => wal.truncate_after(index).await,
                Maintenance::PurgeBefore(index) => wal.purge_before(index).await,
            }
        }
        .await;
        self.armed = false;
        shared.after_maintenance(&wal, result)
    }
}

impl<S: Storage + Clone> Drop for MaintenanceGuard<S> {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let failure = Arc::new(WalError::Interrupted {
            operation: self.operation,
        });
        let mut buffer = self.shared.buffer();
        buffer.maintenance -= 1;
        buffer.in_flight.clear();
        buffer.failure.get_or_insert_with(|| Arc::clone(&failure));
        drop(buffer);
        self.shared.durability.modify(|state| {
            state.failure.get_or_insert(failure);
        });
    }
}

impl<S: Storage + Clone> Shared<S> {
    /// Remembers that entries after `index` are being removed, for `append_durable` waiters.
    /// Called with the log's write lock held and appends paused.
    fn record_truncation(&self, index: u64) {
        let mut buffer = self.buffer();
        if index + 1 >= buffer.next_index {
            return;
        }
        buffer.truncation_count += 1;
        let count = buffer.truncation_count;
        buffer.truncations.push_back((count, index));
        if buffer.truncations.len() > TRUNCATION_HISTORY {
            buffer.truncations.pop_front();
        }
    }

    /// Takes the pending entries up to `index` for writing and drops the rest. Called with the
    /// log's write lock held, so no flush is under way, and appends paused.
    fn take_pending_through(&self, index: u64) -> WalResult<Vec<Entry>> {
        let mut buffer = self.buffer();
        if let Some(failure) = &buffer.failure {
            return Err(Self::poisoned_error(failure));
        }
        let mut keep = std::mem::take(&mut buffer.pending);
        keep.retain(|entry| entry.index <= index);
        // Readable from the buffer until written.
        buffer.in_flight = keep.clone();
        buffer.pending_bytes = 0;
        buffer.oldest_pending_at = None;
        Ok(keep)
    }

    /// Brings the buffer and the durable index in line with the log after truncate or purge,
    /// and ends that maintenance (appends resume when none is left).
    fn after_maintenance(&self, wal: &Wal<S>, result: WalResult<()>) -> WalResult<()> {
        let mut buffer = self.buffer();
        buffer.maintenance -= 1;
        buffer.in_flight.clear();
        if let Err(error) = result {
            let failure = Arc::new(error.duplicate());
            buffer.failure = Some(Arc::clone(&failure));
            self.durability
                .modify(|state| state.failure = Some(failure));
            return Err(error);
        }
        buffer.next_index = wal.last_index() + 1;
        buffer.last_term = wal.terms.last_term().unwrap_or(0);
        buffer.first_index = wal.first_index();
        let durable = wal.durable_index();
        self.durability.modify(|state| state.index = durable);
        Ok(())
    }
}

/// The entry `index` if it is pending or in flight.
fn find_buffered(buffer: &Buffer, index: u64) -> Option<Entry> {
    [&buffer.in_flight, &buffer.pending]
        .into_iter()
        .find_map(|entries| {
            let first = entries.first()?.index;
            let position = index.checked_sub(first)? as usize;
            entries.get(position).cloned()
        })
}

/// What the flusher should do next.
enum Next {
    Flush,
    Wait(Option<Instant>),
    Stop,
}

/// Decides, under the buffer lock, whether a flush is due.
fn next_step(buffer: &Buffer, config: &BufferedWalConfig) -> Next {
    if buffer.failure.is_some() {
        return Next::Stop;
    }
    if buffer.pending.is_empty() {
        return if buffer.closing {
            Next::Stop
        } else {
            Next::Wait(None)
        };
    }
    let deadline = buffer
        .oldest_pending_at
        .map(|oldest| oldest + Duration::from_millis(config.flush_interval_ms));
    let due = buffer.closing
        || buffer.flush_requested
        || config.flush_interval_ms == 0
        || buffer.pending.len() >= config.max_buffered_entries
        || buffer.pending_bytes >= config.max_buffered_bytes
        || deadline.is_some_and(|deadline| deadline <= Instant::now());
    if due {
        Next::Flush
    } else {
        Next::Wait(deadline)
    }
}

/// The flusher task: waits for a due flush, writes and syncs the batch, publishes the result.
async fn run_flusher<S: Storage + Clone>(shared: Arc<Shared<S>>) {
    // Whatever ends the flusher (done, cancelled with its runtime, a panic), waiters and a
    // closing `close` learn that it stopped.
    let _stopped = Stopped(&shared.durability);
    loop {
        let step = next_step(&shared.buffer(), &shared.config);
        match step {
            Next::Stop => break,
            Next::Wait(None) => shared.wake_flusher.notified().await,
            Next::Wait(Some(deadline)) => {
                // Biased: polled in this order, so a run under a paused clock is a function of
                // its inputs (the simulation's seeds replay exactly).
                tokio::select! {
                    biased;
                    _ = shared.wake_flusher.notified() => {}
                    _ = tokio::time::sleep_until(deadline) => {}
                }
            }
            Next::Flush => flush_once(&shared).await,
        }
    }
}

/// Publishes that the flusher stopped when dropped.
struct Stopped<'a>(&'a Published<Durability>);

impl Drop for Stopped<'_> {
    fn drop(&mut self) {
        self.0.modify(|state| state.stopped = true);
    }
}

/// Writes and syncs everything pending in one batch.
async fn flush_once<S: Storage + Clone>(shared: &Shared<S>) {
    // The log's write lock is taken before the batch, so truncate and purge (which take it
    // too) never see a batch taken but not yet written.
    let mut wal = shared.wal.write().await;
    let batch = {
        let mut buffer = shared.buffer();
        buffer.in_flight = std::mem::take(&mut buffer.pending);
        buffer.pending_bytes = 0;
        buffer.oldest_pending_at = None;
        buffer.flush_requested = false;
        buffer.in_flight.clone()
    };
    if batch.is_empty() {
        return;
    }
    let result = wal.append_batch_durable(&batch).await;
    let mut buffer = shared.buffer();
    buffer.in_flight.clear();
    match result {
        Ok(()) => {
            shared.group_commit.flushed(batch.len());
            let durable = wal.durable_index();
            drop(buffer);
            shared.durability.modify(|state| state.index = durable);
        }
        Err(error) => {
            tracing::error!(%error, "group commit failed; the log is poisoned");
            let failure = Arc::new(error);
            buffer.failure = Some(Arc::clone(&failure));
            buffer.pending.clear();
            drop(buffer);
            shared
                .durability
                .modify(|state| state.failure = Some(failure));
        }
    }
}
