//! The state appenders, the flusher and maintenance share: the buffer of entries not yet
//! durable, and the durability every waiter watches.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::{Notify, RwLock};
use tokio::time::Instant;

use super::config::BufferedWalConfig;
use crate::error::{WalError, WalResult};
use crate::format::Entry;
use crate::stats::{GroupCommitCounters, WalCounters};
use crate::storage::Storage;
use crate::wal::published::Published;
use crate::wal::Wal;

/// The buffer shared by appenders and the flusher.
#[derive(Debug)]
pub(super) struct Buffer {
    /// Entries appended but not yet taken by a flush.
    pub(super) pending: Vec<Entry>,
    pub(super) pending_bytes: usize,
    /// Entries taken by the flush under way: still readable from here until written.
    pub(super) in_flight: Vec<Entry>,
    /// When the oldest pending entry was appended.
    pub(super) oldest_pending_at: Option<Instant>,
    /// Index the next append must carry.
    pub(super) next_index: u64,
    /// Term of the last appended entry.
    pub(super) last_term: u64,
    /// First index of the log.
    pub(super) first_index: u64,
    /// A flush was requested explicitly.
    pub(super) flush_requested: bool,
    /// No more appends; the flusher drains and stops.
    pub(super) closing: bool,
    /// Truncates and purges started and not yet finished: while any is, appends wait, so the
    /// index they get cannot race the log being rewritten, and flushes wait for them.
    pub(super) maintenance: u32,
    /// The failure that poisoned the log, if any.
    pub(super) failure: Option<Arc<WalError>>,
    /// Number of truncations that removed appended entries so far.
    pub(super) truncation_count: u64,
    /// The latest of them, as `(truncation_count after it, index truncated after)`, oldest
    /// first, at most `TRUNCATION_HISTORY`.
    pub(super) truncations: VecDeque<(u64, u64)>,
}

impl Buffer {
    /// True if a truncation after the moment `truncation_count` was `since` removed `index`,
    /// or if the history no longer reaches back that far (then it may have).
    pub(super) fn truncated_since(&self, since: u64, index: u64) -> bool {
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
pub(super) struct Durability {
    pub(super) index: u64,
    pub(super) failure: Option<Arc<WalError>>,
    /// Set when the flusher has stopped.
    pub(super) stopped: bool,
}

#[derive(Debug)]
pub(super) struct Shared<S: Storage + Clone> {
    pub(super) config: BufferedWalConfig,
    pub(super) max_entry_size_bytes: usize,
    pub(super) buffer: Mutex<Buffer>,
    pub(super) wal: RwLock<Wal<S>>,
    pub(super) wake_flusher: Notify,
    pub(super) durability: Published<Durability>,
    /// The log's counters, readable without its lock.
    pub(super) counters: Arc<WalCounters>,
    pub(super) group_commit: GroupCommitCounters,
}

impl<S: Storage + Clone> Shared<S> {
    pub(super) fn buffer(&self) -> MutexGuard<'_, Buffer> {
        // A panic while holding this lock is a bug in this module; the buffer itself stays
        // consistent (every update is a few field writes), so keep going.
        self.buffer
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Waits until `reached` holds for the published durability: `Ok` then (even after a
    /// failure, unless `reached` looks at it); an error if the log fails or stops first.
    pub(super) async fn wait_durable_until(
        &self,
        reached: impl Fn(&Durability) -> bool,
    ) -> WalResult<()> {
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

    pub(super) fn poisoned_error(failure: &Arc<WalError>) -> WalError {
        WalError::Poisoned {
            first_failure: Arc::clone(failure),
        }
    }
}

/// The entry `index` if it is pending or in flight.
pub(super) fn find_buffered(buffer: &Buffer, index: u64) -> Option<Entry> {
    [&buffer.in_flight, &buffer.pending]
        .into_iter()
        .find_map(|entries| {
            let first = entries.first()?.index;
            let position = index.checked_sub(first)? as usize;
            entries.get(position).cloned()
        })
}
