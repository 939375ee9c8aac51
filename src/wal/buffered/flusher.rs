//! The flusher task of a `BufferedWal`: it writes and syncs what is buffered, one batch at a
//! time, and publishes how far the log is durable.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::config::BufferedWalConfig;
use super::shared::{Buffer, Durability, Shared};
use crate::storage::Storage;
use crate::wal::published::Published;

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
pub(super) async fn run_flusher<S: Storage + Clone>(shared: Arc<Shared<S>>) {
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
