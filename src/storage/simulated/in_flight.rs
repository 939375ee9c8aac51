//! Storage calls left in flight: handed to the simulated kernel, completed later.
//!
//! With [`SimulatedConfig::in_flight_rate`](super::SimulatedConfig::in_flight_rate) above 0, a
//! call may be *submitted* rather than performed at once: its effect joins the machine's list of
//! operations in flight and its future returns `Pending`. As with an io_uring request or a
//! `spawn_blocking` pwrite, the operation belongs to the kernel from then on: dropping the future
//! does not cancel it.
//!
//! Operations in flight complete at seeded points: at the start of every later storage call (any
//! handle, any operation) and at every poll of a future waiting for one. At each such point each
//! operation completes with probability [`COMPLETION_PROBABILITY`], independently of the others,
//! so they complete out of submission order: a write whose caller gave up can land after a later
//! write to the same bytes. Completing runs the effect exactly as an immediate call would, fault
//! injection included, and leaves the result for the future. A write-class call whose future
//! was dropped reports its failure on its handle instead (see the `handle` module).
//!
//! A crash resolves every operation in flight first (see [`CrashKind`]); their futures then
//! return a stale-handle error, as the calls of a process that died never return.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};

use super::{errors, SimulatedStorage, State};
use crate::error::{WalError, WalResult};
use crate::limits::SIMULATED_MAX_IN_FLIGHT_OPERATIONS;

/// Chance that one operation in flight completes at one completion point. Even odds keep most
/// operations in flight across a few later calls (long enough for a later write to overtake a
/// dropped one) without letting any linger for long.
const COMPLETION_PROBABILITY: f64 = 0.5;

/// Chance that a power loss finds an operation in flight already applied to the kernel's caches
/// (it is then settled like any unsynced change) rather than never started.
const APPLIED_AT_POWER_LOSS_PROBABILITY: f64 = 0.5;

/// How an operation in flight ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Resolution {
    /// It completes; its future sees its result.
    Complete,
    /// A crash found it applied; its future sees a stale-handle error.
    AppliedByCrash,
    /// A crash found it never started: nothing is applied; its future sees a stale-handle error.
    DiscardedByCrash,
}

/// What a crash does to the operations in flight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum CrashKind {
    /// The process died; the kernel finishes everything it was given, in a seeded order.
    Process,
    /// Power loss: each operation is applied (in a seeded order) or discarded, at random.
    PowerLoss,
    /// Power loss in its deterministic worst case: every operation is discarded.
    PowerLossLosingEverything,
}

/// Runs a submitted operation's effect (or not, per the resolution) and stores its result.
type Finish = Box<dyn FnOnce(&mut State, Resolution) + Send>;

/// One operation in flight.
struct Operation {
    /// Submission number, unique per machine, for fingerprints and traces.
    id: u64,
    /// The name of the call, e.g. `"write"`.
    op: &'static str,
    /// The path it acts on.
    path: PathBuf,
    finish: Finish,
}

/// The operations in flight on one simulated machine, in submission order.
#[derive(Default)]
pub(super) struct InFlight {
    operations: Vec<Operation>,
    submitted: u64,
}

impl InFlight {
    /// Number of operations in flight.
    pub(super) fn len(&self) -> usize {
        self.operations.len()
    }

    /// Submission number, name and path of each operation in flight, in submission order.
    pub(super) fn describe(&self) -> impl Iterator<Item = (u64, &'static str, &Path)> {
        self.operations
            .iter()
            .map(|operation| (operation.id, operation.op, operation.path.as_path()))
    }
}

/// Records the failure of a call whose caller stopped waiting for it, so that it is reported
/// later instead of lost (the storage contract: "Errors are reported, never lost").
pub(super) type Reporter = Box<dyn FnOnce(WalError) + Send>;

/// Where a submitted operation leaves its result for its future.
struct Slot<T> {
    result: Option<WalResult<T>>,
    /// The future was dropped before the result arrived.
    abandoned: bool,
    /// Where a failure nobody will see goes, if the call reports those.
    report: Option<Reporter>,
}

type SharedSlot<T> = Arc<Mutex<Slot<T>>>;

fn lock_slot<T>(slot: &SharedSlot<T>) -> MutexGuard<'_, Slot<T>> {
    // A panicking test thread must not hide a result from the next poll.
    slot.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The future of one storage call: ready at once when the call was performed on submission,
/// otherwise waiting for its operation in flight.
pub(super) struct Completion<T> {
    stage: Stage<T>,
    /// For a call performed on submission: where its failure goes if the future is dropped
    /// before it returned it.
    report: Option<Reporter>,
}

enum Stage<T> {
    /// Performed on submission; the result until it is returned.
    Ready(Option<WalResult<T>>),
    /// In flight.
    Waiting {
        storage: SimulatedStorage,
        slot: SharedSlot<T>,
        /// The first poll returns `Pending` unconditionally: submitting is not completing.
        submitted: bool,
    },
}

// Nothing is pinned structurally: the stages hold only owned, movable values.
impl<T> Unpin for Completion<T> {}

impl<T> Future for Completion<T> {
    type Output = WalResult<T>;

    fn poll(self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let result = match &mut this.stage {
            Stage::Ready(result) => Some(
                result
                    .take()
                    .expect("a storage future polled after it completed"),
            ),
            Stage::Waiting { submitted, .. } if !*submitted => {
                *submitted = true;
                None
            }
            Stage::Waiting { storage, slot, .. } => {
                complete_some(&mut storage.lock());
                lock_slot(slot).result.take()
            }
        };
        match result {
            Some(result) => {
                this.stage = Stage::Ready(None);
                Poll::Ready(result)
            }
            None => {
                // Nothing else will wake this task: operations complete only when some call or
                // poll gives them the chance, so ask to be polled again after the others ran.
                context.waker().wake_by_ref();
                Poll::Pending
            }
        }
    }
}

impl<T> Drop for Completion<T> {
    fn drop(&mut self) {
        match &mut self.stage {
            Stage::Ready(result) => {
                if let (Some(Err(error)), Some(report)) = (result.take(), self.report.take()) {
                    report(error);
                }
            }
            Stage::Waiting { slot, .. } => {
                let mut slot = lock_slot(slot);
                match slot.result.take() {
                    None => slot.abandoned = true,
                    Some(Err(error)) => {
                        // Completed, but its caller left before it saw the failure.
                        if let Some(report) = slot.report.take() {
                            report(error);
                        }
                    }
                    Some(Ok(_)) => {}
                }
            }
        }
    }
}

/// Performs a storage call: first a completion point for the operations already in flight,
/// then, with the configured chance, submitted to complete later; otherwise `effect` runs at
/// once. `effect` is what the call does, under the machine's lock, whenever it runs. `report`,
/// if any, receives a failure of the call that its caller never saw (it dropped the future).
pub(super) fn perform<T: Send + 'static>(
    storage: &SimulatedStorage,
    op: &'static str,
    path: &Path,
    effect: impl FnOnce(&mut State) -> WalResult<T> + Send + 'static,
    report: Option<Reporter>,
) -> Completion<T> {
    let mut guard = storage.lock();
    let state = &mut *guard;
    complete_some(state);
    let room = state.in_flight.len() < SIMULATED_MAX_IN_FLIGHT_OPERATIONS;
    if !(room && state.rng.chance(state.in_flight_rate)) {
        return Completion {
            stage: Stage::Ready(Some(effect(state))),
            report,
        };
    }
    let slot = Arc::new(Mutex::new(Slot {
        result: None,
        abandoned: false,
        report,
    }));
    let id = state.in_flight.submitted;
    state.in_flight.submitted += 1;
    state.counters.in_flight_submitted += 1;
    tracing::trace!(id, op, path = %path.display(), "simulated storage call left in flight");
    state.in_flight.operations.push(Operation {
        id,
        op,
        path: path.to_path_buf(),
        finish: finisher(op, path.to_path_buf(), Arc::clone(&slot), effect),
    });
    Completion {
        stage: Stage::Waiting {
            storage: storage.clone(),
            slot,
            submitted: false,
        },
        report: None,
    }
}

/// The closure that ends a submitted operation: runs `effect` unless a crash discarded it, and
/// stores what its future will return.
fn finisher<T: Send + 'static>(
    op: &'static str,
    path: PathBuf,
    slot: SharedSlot<T>,
    effect: impl FnOnce(&mut State) -> WalResult<T> + Send + 'static,
) -> Finish {
    Box::new(move |state: &mut State, resolution: Resolution| {
        let stale = || WalError::io(op, &path, errors::stale_handle());
        let result = match resolution {
            Resolution::Complete => effect(state),
            Resolution::AppliedByCrash => {
                // The process is gone: whatever the call returned, no caller ever sees it.
                let _ = effect(state);
                Err(stale())
            }
            Resolution::DiscardedByCrash => Err(stale()),
        };
        let mut slot = lock_slot(&slot);
        if slot.abandoned && resolution != Resolution::DiscardedByCrash {
            state.counters.in_flight_landed_after_drop += 1;
        }
        if slot.abandoned && resolution == Resolution::Complete {
            // Nobody will take the result: a failure goes where the call reports those.
            if let (Err(error), Some(report)) = (result, slot.report.take()) {
                report(error);
            }
            return;
        }
        slot.result = Some(result);
    })
}

/// A completion point: each operation in flight completes with [`COMPLETION_PROBABILITY`],
/// independently, visited in submission order.
pub(super) fn complete_some(state: &mut State) {
    let mut index = 0;
    while index < state.in_flight.operations.len() {
        if state.rng.chance(COMPLETION_PROBABILITY) {
            let operation = state.in_flight.operations.remove(index);
            (operation.finish)(state, Resolution::Complete);
        } else {
            index += 1;
        }
    }
}

/// Completes every operation in flight, in a seeded order, as a kernel that is given time does.
pub(super) fn complete_all(state: &mut State) {
    for operation in take_shuffled(state) {
        (operation.finish)(state, Resolution::Complete);
    }
}

/// Resolves every operation in flight as a crash of `kind` does, before the crash settles
/// anything else. Returns how many were applied and how many discarded.
pub(super) fn resolve_at_crash(state: &mut State, kind: CrashKind) -> (u64, u64) {
    let (mut applied, mut discarded) = (0, 0);
    let operations = match kind {
        // Nothing is applied, so the order does not matter: draw nothing for it.
        CrashKind::PowerLossLosingEverything => std::mem::take(&mut state.in_flight.operations),
        CrashKind::Process | CrashKind::PowerLoss => take_shuffled(state),
    };
    for operation in operations {
        let apply = match kind {
            CrashKind::Process => true,
            CrashKind::PowerLoss => state.rng.chance(APPLIED_AT_POWER_LOSS_PROBABILITY),
            CrashKind::PowerLossLosingEverything => false,
        };
        let resolution = if apply {
            applied += 1;
            Resolution::AppliedByCrash
        } else {
            discarded += 1;
            Resolution::DiscardedByCrash
        };
        (operation.finish)(state, resolution);
    }
    (applied, discarded)
}

/// Takes every operation in flight out of the list, in a seeded order (Fisher-Yates). Draws
/// nothing when fewer than two are in flight, so a run without any is unchanged.
fn take_shuffled(state: &mut State) -> Vec<Operation> {
    let mut operations = std::mem::take(&mut state.in_flight.operations);
    for last in (1..operations.len()).rev() {
        let other = state.rng.below(last as u64 + 1) as usize;
        operations.swap(last, other);
    }
    operations
}
