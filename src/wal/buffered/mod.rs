//! `BufferedWal`: group commit for many concurrent appenders.
//!
//! Appenders push entries into a shared buffer and get their index back at once. A flusher task
//! writes everything buffered since the last flush with one write and makes it durable with one
//! fsync (a linked write+fsync on io_uring), then publishes the new durable index to every
//! waiter. A flush happens when the oldest buffered entry has waited `flush_interval_ms`, when
//! the buffer reaches its entry or byte limit, or on request; with `flush_interval_ms = 0` it
//! happens as soon as anything is buffered, and the appends that arrive while a flush is under
//! way share the next one (appenders that never overlap a flush get one fsync each).
//!
//! The parts: [`config`] (the knobs), [`shared`] (the buffer and the published durability),
//! [`flusher`] (the task that writes and syncs), [`maintenance`] (truncate and purge in tasks of
//! their own); this file holds the handle and its API.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tokio::sync::{Notify, RwLock};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::error::{WalError, WalResult};
use crate::format::Entry;
use crate::stats::{GroupCommitCounters, WalStats};
use crate::storage::Storage;
use crate::wal::published::Published;
use crate::wal::{check_continues, Wal};

mod config;
mod flusher;
mod maintenance;
mod shared;

pub use config::BufferedWalConfig;
use flusher::run_flusher;
use maintenance::{Maintenance, MaintenanceGuard};
use shared::{find_buffered, Buffer, Durability, Shared};

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
        check_continues(
            entry,
            buffer.next_index,
            buffer.last_term,
            self.shared().max_entry_size_bytes,
        )
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
