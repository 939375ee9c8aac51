//! How a mutating call's storage calls outlive a dropped caller: each call launches one
//! operation kept in the log, and its effects reach the log's memory only once it has finished,
//! whether the call that launched it is still there or the next call settles it.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};

use super::operation::{Effect, Operation, Tail};
use super::Wal;
use crate::error::WalResult;
use crate::sabotage::{is_on, Sabotage};
use crate::storage::{CheckedStorage, Storage};

/// The storage calls of one mutating call, with what they change, until they have finished.
pub(super) struct InFlight<S: Storage + Clone> {
    /// The call that started it, for logs.
    pub(super) operation: &'static str,
    /// A full disk fails it without poisoning the log: true only for sealing a recovery cut,
    /// which meets a full disk while zero-filling its file, before anything on disk changed.
    pub(super) full_disk_changes_nothing: bool,
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

impl<S: Storage + Clone> Wal<S> {
    /// Hands the storage calls of `operation`, with the state they need, to a future kept in
    /// the log until [`Wal::complete`] has driven it to its end.
    pub(super) fn launch<F, Fut>(&mut self, operation: &'static str, work: F)
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
    pub(super) async fn settle_and_check(&mut self) -> WalResult<()> {
        self.settle().await;
        self.check_writable()
    }

    /// Finishes an operation a dropped call left suspended, if any. Its outcome is applied and
    /// its failure poisons the log (callers then see that through `check_writable`).
    pub(super) async fn settle(&mut self) {
        if self.in_flight.is_some() {
            let _ = self.finish(true).await;
        }
    }

    /// Drives the operation this call launched to its end; see [`Wal::finish`].
    pub(super) async fn complete(&mut self) -> WalResult<()> {
        self.finish(false).await
    }

    /// Drives the operation in flight to its end and applies what it did to the log's memory.
    /// Returns its own result; a failure poisons the log, except a full disk met while sealing
    /// a recovery cut (nothing changed then). Cancel safe: dropped, it leaves the operation in
    /// flight for the next call. `orphaned`: the call that launched it was dropped.
    pub(super) async fn finish(&mut self, orphaned: bool) -> WalResult<()> {
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
    pub(super) fn apply(&mut self, operation: Operation<CheckedStorage<S>>) {
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
}
