//! Truncate and purge of a `BufferedWal`: each runs in a task of its own, with appends paused,
//! and brings the buffer in line with the log when it ends.

use std::sync::Arc;

use super::shared::Shared;
use crate::error::{WalError, WalResult};
use crate::format::Entry;
use crate::limits::TRUNCATION_HISTORY;
use crate::storage::Storage;
use crate::wal::Wal;

/// A truncate or purge of a [`BufferedWal`].
#[derive(Debug, Clone, Copy)]
pub(super) enum Maintenance {
    TruncateAfter(u64),
    PurgeBefore(u64),
}

impl Maintenance {
    pub(super) fn name(self) -> &'static str {
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
pub(super) struct MaintenanceGuard<S: Storage + Clone> {
    shared: Arc<Shared<S>>,
    operation: &'static str,
    armed: bool,
}

impl<S: Storage + Clone> MaintenanceGuard<S> {
    pub(super) fn begin(shared: Arc<Shared<S>>, operation: &'static str) -> Self {
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
    pub(super) async fn run(mut self, maintenance: Maintenance) -> WalResult<()> {
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
    pub(super) fn record_truncation(&self, index: u64) {
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
    pub(super) fn take_pending_through(&self, index: u64) -> WalResult<Vec<Entry>> {
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
    pub(super) fn after_maintenance(&self, wal: &Wal<S>, result: WalResult<()>) -> WalResult<()> {
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
