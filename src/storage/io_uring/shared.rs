//! The request table shared by tokio tasks and the ring thread, and the lock-free path between
//! them.
//!
//! * A fixed table of slots, one per request the ring may hold at once (bounded by its CQ
//!   size). A task takes a free slot, fills in the request and the memory it owns, and pushes
//!   the slot's index into the submission queue (a bounded lock-free `ArrayQueue` as large as
//!   the table, so the push never fails), then wakes the ring thread only if it sleeps.
//! * Backpressure: a free slot is taken through a semaphore with one permit per free slot, so
//!   when every slot is busy callers wait; nothing is dropped and nothing grows. The semaphore's
//!   uncontended path is one atomic compare-and-swap; it locks only when callers must wait.
//! * Completion: a failed write or fsync poisons its file on the ring thread (the shim's
//!   `settle` hook) before the shim counts the request complete, whether or not anybody waits
//!   for it; then the ring thread stores the result in the slot and flips its state, and the
//!   waiting future is woken through the slot's `AtomicWaker`. So whoever sees a failed write
//!   finished (its caller, the counters, a later write) sees its file poisoned.
//! * Ownership: a slot's memory (the data being written, the read buffer, the open file) stays
//!   in the slot until the request's last CQE. If the future is dropped first, the slot is
//!   marked abandoned and the ring thread frees it on completion, so the kernel never writes
//!   into or reads from freed memory.
//! * Latency: each slot notes when its request was handed to the ring thread; the completion
//!   hook records the time to completion in the histogram of the request's operation.

use std::cell::UnsafeCell;
use std::ffi::c_void;
use std::future::Future;
use std::os::fd::AsRawFd;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use atomic_waker::AtomicWaker;
use bytes::Bytes;
use crossbeam_queue::ArrayQueue;
use tokio::sync::Semaphore;

use super::aligned::AlignedBuffer;
use super::file::FileInner;
use super::ring::Ring;
use super::sys;
use crate::error::WalError;
use crate::stats::{LatencyHistogram, LatencyRecorder, Maximum};

/// The slot is free.
const STATE_FREE: u8 = 0;
/// The request is queued or in flight: the ring thread owns the slot.
const STATE_QUEUED: u8 = 1;
/// The request is finished: the waiting future owns the slot.
const STATE_DONE: u8 = 2;
/// The future was dropped before completion: the ring thread frees the slot on completion.
const STATE_ABANDONED: u8 = 3;

/// An opcode no request has: completions that record no latency.
const NO_OPERATION: u32 = 0;

/// `user_data` of the ring thread's own release request (slot indices are `u32`).
const RELEASE_TAG: u64 = u64::MAX;
/// Marks a release in the submission queue: the rest of the entry is the held file's slot
/// (below `HELIX_MAX_HELD_FILES`), not a request slot (fewer than 2^31 of those).
const RELEASE_ENTRY: u32 = 1 << 31;

/// What shutdown errors name.
pub(crate) const SHUTDOWN_WHAT: &str = "io_uring storage";

/// Memory a request owns until its last CQE.
#[derive(Default)]
pub(crate) struct Owned {
    /// The data of a write.
    pub(crate) write_data: Option<Bytes>,
    /// The data of a direct I/O write, copied to block-aligned memory.
    pub(crate) aligned_data: Option<AlignedBuffer>,
    /// The destination of a read.
    pub(crate) read_buffer: Vec<u8>,
    /// The file: keeps the descriptor open (never reused by another file) while in flight.
    pub(crate) file: Option<Arc<FileInner>>,
    /// The file a `HELIX_OP_HOLD_FILE` hands to the ring: open until the request completes,
    /// even if its caller gave up, so its descriptor cannot name another file meanwhile.
    pub(crate) held_file: Option<std::fs::File>,
    /// The operation a failure of a write or fsync is reported as when it poisons `file`: set
    /// by `IoUringFile::mutate`, through which every write and fsync goes.
    pub(crate) operation: &'static str,
}

/// A request to execute.
pub(crate) struct Request {
    pub(crate) opcode: u32,
    pub(crate) offset: u64,
    pub(crate) owned: Owned,
}

/// A finished request.
pub(crate) struct Outcome {
    /// The request's opcode.
    pub(crate) opcode: u32,
    /// 0 or a negative errno.
    pub(crate) result: i32,
    /// Bytes transferred (for `HELIX_OP_HOLD_FILE`: the slot of the held file).
    pub(crate) done: u64,
    /// The memory the request owned, handed back.
    pub(crate) owned: Owned,
}

struct Slot {
    state: AtomicU8,
    /// When the request was handed to the ring thread, in nanoseconds since `Shared::epoch`.
    queued_at_nanos: AtomicU64,
    /// Set when the ring failed with this request in the kernel's hands: its memory is then
    /// leaked rather than freed, and the slot never reused.
    leak: AtomicBool,
    waker: AtomicWaker,
    request: UnsafeCell<sys::helix_request>,
    owned: UnsafeCell<Owned>,
}

// SAFETY: `request` and `owned` are accessed only by the slot's current owner, and ownership
// moves between threads only through the atomic `state` (and the queue's own synchronisation):
// the submitting task while FREE (after taking it from the free list), the ring thread while
// QUEUED or ABANDONED, the waiting future once DONE. The raw pointer in `request` points into
// `owned`, which travels with it.
unsafe impl Sync for Slot {}
// SAFETY: see above; nothing in a slot is tied to a thread.
unsafe impl Send for Slot {}

impl Slot {
    fn new(index: u32) -> Slot {
        Slot {
            state: AtomicU8::new(STATE_FREE),
            queued_at_nanos: AtomicU64::new(0),
            leak: AtomicBool::new(false),
            waker: AtomicWaker::new(),
            request: UnsafeCell::new(sys::helix_request {
                user_data: u64::from(index),
                fixed_index: -1,
                ..Default::default()
            }),
            owned: UnsafeCell::new(Owned::default()),
        }
    }
}

/// State shared by the storage, its files, and the ring thread.
pub(crate) struct Shared {
    pub(crate) ring: Ring,
    slots: Box<[Slot]>,
    /// Indices of free slots.
    free: ArrayQueue<u32>,
    /// The submission queue: indices of queued slots, in order.
    queue: ArrayQueue<u32>,
    /// One permit per free slot.
    permits: Semaphore,
    /// Tasks between "checked not closed" and "pushed and notified" (see `execute`).
    pushing: AtomicUsize,
    closed: AtomicBool,
    /// The errno with which the ring failed, or 0.
    ring_failure: AtomicI32,
    /// Time origin of `Slot::queued_at_nanos`.
    epoch: Instant,
    /// Latency from hand-off to completion, per operation.
    latency: OperationLatency,
    /// Requests handed to the ring thread and not yet completed.
    outstanding: AtomicU64,
    /// The most requests outstanding at once.
    outstanding_peak: Maximum,
    /// The request through which the ring thread releases held files.
    release_request: ReleaseRequest,
}

/// The request through which the ring thread releases held files.
struct ReleaseRequest(UnsafeCell<sys::helix_request>);

// SAFETY: only the ring thread touches the request: `hook_pop` fills it and hands it to the
// shim, which completes a release at once, within the same call that took it, so it is never
// handed out twice at a time. It points at no memory (`buf` is null).
unsafe impl Sync for ReleaseRequest {}
// SAFETY: as above; nothing in it is tied to a thread.
unsafe impl Send for ReleaseRequest {}

/// Latency histograms of the ring's operations, from the moment a request is handed to the ring
/// thread until its completion reaches the hook (before the waiting task is woken).
#[derive(Debug, Default)]
pub(crate) struct OperationLatency {
    write: LatencyRecorder,
    write_fsync: LatencyRecorder,
    read: LatencyRecorder,
    fsync: LatencyRecorder,
}

/// A snapshot of [`OperationLatency`] and the outstanding-request peak.
pub(crate) struct LatencySnapshot {
    pub(crate) write: LatencyHistogram,
    pub(crate) write_fsync: LatencyHistogram,
    pub(crate) read: LatencyHistogram,
    pub(crate) fsync: LatencyHistogram,
    pub(crate) outstanding_peak: u64,
}

impl OperationLatency {
    fn recorder(&self, opcode: u32) -> Option<&LatencyRecorder> {
        match opcode {
            sys::HELIX_OP_WRITE => Some(&self.write),
            sys::HELIX_OP_WRITE_FSYNC => Some(&self.write_fsync),
            sys::HELIX_OP_READ => Some(&self.read),
            sys::HELIX_OP_FSYNC => Some(&self.fsync),
            _ => None,
        }
    }
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Shared")
            .field("slots", &self.slots.len())
            .field("closed", &self.closed.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl Shared {
    /// A table sized to what the ring accepts at once.
    pub(crate) fn new(ring: Ring) -> Shared {
        let count = ring.max_requests();
        assert!(count > 0, "a ring accepts at least one request");
        let free = ArrayQueue::new(count as usize);
        for index in 0..count {
            free.push(index)
                .unwrap_or_else(|_| unreachable!("free list sized to the table"));
        }
        Shared {
            ring,
            slots: (0..count).map(Slot::new).collect(),
            free,
            // Room for every request slot and one release per held file.
            queue: ArrayQueue::new(count as usize + sys::HELIX_MAX_HELD_FILES as usize),
            permits: Semaphore::new(count as usize),
            pushing: AtomicUsize::new(0),
            closed: AtomicBool::new(false),
            ring_failure: AtomicI32::new(0),
            epoch: Instant::now(),
            latency: OperationLatency::default(),
            outstanding: AtomicU64::new(0),
            outstanding_peak: Maximum::default(),
            release_request: ReleaseRequest(UnsafeCell::new(sys::helix_request::default())),
        }
    }

    /// Settles a finished request whose caller gave up waiting: a file the ring now holds for
    /// nobody is released. (A failed write poisoned its file already, in `on_settle`.)
    fn settle_unclaimed(&self, outcome: &Outcome) {
        if outcome.opcode == sys::HELIX_OP_HOLD_FILE && outcome.result == 0 {
            self.release_held_file(outcome.done);
        }
    }

    /// Asks the ring thread to release a file it holds (`HELIX_OP_HOLD_FILE`). Never waits.
    /// The release joins the submission queue behind every request queued before it, and the
    /// ring drops the file once those and every request in flight have finished (a write a
    /// caller gave up on may still land). A ring that stopped cleanly has dropped every held
    /// file already.
    pub(crate) fn release_held_file(&self, slot: u64) {
        let Ok(slot) = u32::try_from(slot) else {
            unreachable!("held file slots are below HELIX_MAX_HELD_FILES");
        };
        // Cannot fail: the queue has room for one release per held file.
        let pushed = self.queue.push(RELEASE_ENTRY | slot);
        assert!(pushed.is_ok(), "the queue holds every release");
        self.ring.notify();
    }

    /// On the ring thread: the release request for a queue entry marked as a release.
    fn release_request_for(&self, slot: u32) -> *mut sys::helix_request {
        let request = self.release_request.0.get();
        // SAFETY: only the ring thread gets here, and the previous release completed before
        // this pop (see `ReleaseRequest`).
        unsafe {
            *request = sys::helix_request {
                opcode: sys::HELIX_OP_RELEASE_FILE,
                offset: u64::from(slot),
                fd: -1,
                user_data: RELEASE_TAG,
                fixed_index: -1,
                ..Default::default()
            };
        }
        request
    }

    /// Nanoseconds since `epoch`.
    fn now_nanos(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// The latency histograms and the outstanding-request peak.
    pub(crate) fn latency_snapshot(&self) -> LatencySnapshot {
        LatencySnapshot {
            write: self.latency.write.snapshot(),
            write_fsync: self.latency.write_fsync.snapshot(),
            read: self.latency.read.snapshot(),
            fsync: self.latency.fsync.snapshot(),
            outstanding_peak: self.outstanding_peak.get(),
        }
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::SeqCst)
    }

    /// Number of slots (requests the ring accepts at once).
    pub(crate) fn capacity(&self) -> usize {
        self.slots.len()
    }

    fn shutdown_error() -> WalError {
        WalError::Shutdown {
            what: SHUTDOWN_WHAT,
        }
    }

    /// Runs one request through the ring. Waits for a free slot when all are busy. Fails only
    /// with `WalError::Shutdown`, when the storage is shut down before the request was queued;
    /// an I/O failure is reported in `Outcome::result`.
    pub(crate) async fn execute(&self, request: Request) -> Result<Outcome, WalError> {
        if self.is_closed() {
            return Err(Self::shutdown_error());
        }
        let permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| Self::shutdown_error())?;
        permit.forget();
        let index = self.free.pop();
        assert!(index.is_some(), "a permit guarantees a free slot");
        let index = index.unwrap_or_default();
        self.fill(index, request);
        self.queue_or_refuse(index)?;
        let completion = Completion {
            shared: self,
            index,
            finished: false,
        };
        Ok(completion.await)
    }

    /// Writes a request into a free slot.
    fn fill(&self, index: u32, request: Request) {
        let slot = &self.slots[index as usize];
        // SAFETY: the slot came from the free list, so this task owns it exclusively until it
        // is pushed to the queue.
        let (raw, owned) = unsafe { (&mut *slot.request.get(), &mut *slot.owned.get()) };
        *owned = request.owned;
        let (buf, len) = match (&owned.write_data, &owned.aligned_data, request.opcode) {
            (Some(data), _, _) => (data.as_ptr().cast_mut(), data.len()),
            (None, Some(aligned), _) => (aligned.as_ptr(), aligned.len()),
            (None, None, sys::HELIX_OP_READ) => {
                (owned.read_buffer.as_mut_ptr(), owned.read_buffer.len())
            }
            (None, None, _) => (std::ptr::null_mut(), 0),
        };
        raw.opcode = request.opcode;
        raw.offset = request.offset;
        raw.buf = buf;
        raw.len = len as u64;
        raw.fd = match (&owned.file, &owned.held_file) {
            (Some(file), _) if request.opcode == sys::HELIX_OP_READ => file.read_fd(),
            (Some(file), _) => file.raw_fd(),
            (None, Some(held)) => held.as_raw_fd(),
            (None, None) => -1,
        };
        raw.result = 0;
        raw.done = 0;
    }

    /// Pushes a filled slot into the submission queue and wakes the ring thread, unless the
    /// storage is closing (then the slot is released and the caller gets `Shutdown`).
    ///
    /// Shutdown sets `closed` and then waits for `pushing` to drop to zero, while this sets
    /// `pushing` and then checks `closed` (both sequentially consistent): either shutdown sees
    /// this push and waits for it, or this sees `closed`. So no request is queued after the
    /// ring thread was told to stop.
    fn queue_or_refuse(&self, index: u32) -> Result<(), WalError> {
        self.pushing.fetch_add(1, Ordering::SeqCst);
        if self.closed.load(Ordering::SeqCst) {
            self.pushing.fetch_sub(1, Ordering::SeqCst);
            drop(self.take_outcome(index));
            return Err(Self::shutdown_error());
        }
        let slot = &self.slots[index as usize];
        slot.queued_at_nanos
            .store(self.now_nanos(), Ordering::Relaxed);
        let outstanding = self.outstanding.fetch_add(1, Ordering::Relaxed) + 1;
        self.outstanding_peak.observe(outstanding);
        slot.state.store(STATE_QUEUED, Ordering::Release);
        let pushed = self.queue.push(index);
        assert!(pushed.is_ok(), "the queue holds every slot");
        self.ring.notify();
        self.pushing.fetch_sub(1, Ordering::SeqCst);
        Ok(())
    }

    /// Takes the result and memory out of a slot its caller owns, and frees the slot.
    fn take_outcome(&self, index: u32) -> Outcome {
        let slot = &self.slots[index as usize];
        // SAFETY: the caller owns the slot (DONE seen by its future, ABANDONED seen by the ring
        // thread, or never queued), so nobody else touches it.
        let (raw, owned) = unsafe { (&mut *slot.request.get(), &mut *slot.owned.get()) };
        let outcome = Outcome {
            opcode: raw.opcode,
            result: raw.result,
            done: raw.done,
            owned: std::mem::take(owned),
        };
        raw.buf = std::ptr::null_mut();
        if slot.leak.load(Ordering::Acquire) {
            // The kernel may still touch this memory: never free it, never reuse the slot.
            std::mem::forget(outcome.owned);
            return Outcome {
                owned: Owned::default(),
                ..outcome
            };
        }
        slot.state.store(STATE_FREE, Ordering::Release);
        let pushed = self.free.push(index);
        assert!(pushed.is_ok(), "the free list holds every slot");
        self.permits.add_permits(1);
        outcome
    }

    /// Called on the ring thread when a request is finished, before anything shows it finished
    /// (see `hook_settle`): a failed write or fsync poisons its file here, so that nobody sees
    /// the failure counted or reported (or the write's slot free again) before the poisoning.
    fn on_settle(&self, index: u32) {
        let slot = &self.slots[index as usize];
        // SAFETY: the ring side owns a slot until `on_complete` publishes it: QUEUED or
        // ABANDONED here, and the waiting future touches neither `request` nor `owned` in
        // those states (it only flips QUEUED to ABANDONED).
        let (raw, owned) = unsafe { (&*slot.request.get(), &*slot.owned.get()) };
        poison_if_failed_write(raw.opcode, raw.result, owned);
    }

    /// Called on the ring thread when the shim hands a request back.
    fn on_complete(&self, index: u32, opcode: u32) {
        let slot = &self.slots[index as usize];
        let queued_at = slot.queued_at_nanos.load(Ordering::Relaxed);
        if let Some(recorder) = self.latency.recorder(opcode) {
            recorder.record_nanos(self.now_nanos().saturating_sub(queued_at));
        }
        self.outstanding.fetch_sub(1, Ordering::Relaxed);
        match slot.state.compare_exchange(
            STATE_QUEUED,
            STATE_DONE,
            Ordering::AcqRel,
            Ordering::Acquire,
        ) {
            Ok(_) => slot.waker.wake(),
            Err(STATE_ABANDONED) => {
                let outcome = self.take_outcome(index);
                self.settle_unclaimed(&outcome);
            }
            Err(state) => panic!("io_uring slot {index} completed in state {state}"),
        }
    }

    /// Closes the table: later and waiting callers get `Shutdown`. Returns once no task is
    /// between its closed check and its push.
    pub(crate) fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        self.permits.close();
        while self.pushing.load(Ordering::SeqCst) != 0 {
            std::thread::yield_now();
        }
    }

    /// After the ring failed with `errno`: fails every request it had not finished. Requests
    /// still queued never reached the kernel; those in flight may still be in the kernel's
    /// hands, so their memory is leaked rather than freed.
    pub(crate) fn fail_all(&self, errno: i32) {
        self.ring_failure.store(errno, Ordering::SeqCst);
        self.close();
        while let Some(index) = self.queue.pop() {
            if index & RELEASE_ENTRY != 0 {
                // The ring failed: its table goes with it, when the storage is dropped.
                continue;
            }
            self.set_result(index, errno);
            self.on_settle(index);
            // Not a latency: the ring failed, the request never completed.
            self.on_complete(index, NO_OPERATION);
        }
        for index in 0..self.slots.len() as u32 {
            let slot = &self.slots[index as usize];
            let state = slot.state.load(Ordering::Acquire);
            if state == STATE_QUEUED || state == STATE_ABANDONED {
                slot.leak.store(true, Ordering::Release);
                self.set_result(index, errno);
                self.on_settle(index);
                self.on_complete(index, NO_OPERATION);
            }
        }
    }

    fn set_result(&self, index: u32, errno: i32) {
        // SAFETY: called only on the ring thread after the ring stopped, for slots in QUEUED or
        // ABANDONED state, which the ring side owns.
        unsafe { (*self.slots[index as usize].request.get()).result = errno };
    }

    /// The errno of a ring failure, if the ring failed.
    pub(crate) fn ring_failure(&self) -> Option<i32> {
        match self.ring_failure.load(Ordering::SeqCst) {
            0 => None,
            errno => Some(errno),
        }
    }

    /// The hooks through which the shim reaches this table.
    ///
    /// # Safety
    ///
    /// The returned hooks hold a raw pointer to `self`: they may be used only while `self` is
    /// alive (the ring thread holds an `Arc<Shared>` for the whole `run`).
    pub(crate) unsafe fn hooks(&self) -> sys::helix_ring_hooks {
        sys::helix_ring_hooks {
            context: std::ptr::from_ref(self).cast_mut().cast::<c_void>(),
            pop: Some(hook_pop),
            has_pending: Some(hook_has_pending),
            settle: Some(hook_settle),
            complete: Some(hook_complete),
        }
    }
}

/// Poisons the file of a failed write or fsync (`result` is 0 or a negative errno).
fn poison_if_failed_write(opcode: u32, result: i32, owned: &Owned) {
    // A failed write or fsync poisons, whether or not anybody waits for it (fsyncgate: the
    // dirty data may be gone).
    if result >= 0 || opcode == sys::HELIX_OP_READ {
        return;
    }
    if let Some(file) = &owned.file {
        let error = WalError::io(
            owned.operation,
            &file.path,
            std::io::Error::from_raw_os_error(-result),
        );
        drop(file.poison.poison(error));
    }
}

/// Recovers the table from a hook's context.
///
/// # Safety
///
/// `context` must come from [`Shared::hooks`] of a table that is still alive.
unsafe fn shared_from(context: *mut c_void) -> &'static Shared {
    // SAFETY: guaranteed by the caller; the 'static is confined to the hook's body.
    unsafe { &*context.cast::<Shared>() }
}

/// Hook: takes the next queued request.
///
/// # Safety
///
/// `context` must come from [`Shared::hooks`] of a live table; called only by the ring thread.
unsafe extern "C" fn hook_pop(context: *mut c_void) -> *mut sys::helix_request {
    // SAFETY: the shim passes back the context of `Shared::hooks`, alive during `run`.
    let shared = unsafe { shared_from(context) };
    match shared.queue.pop() {
        Some(entry) if entry & RELEASE_ENTRY != 0 => {
            shared.release_request_for(entry & !RELEASE_ENTRY)
        }
        Some(index) => shared.slots[index as usize].request.get(),
        None => std::ptr::null_mut(),
    }
}

/// Hook: whether a request is queued.
///
/// # Safety
///
/// As for [`hook_pop`].
unsafe extern "C" fn hook_has_pending(context: *mut c_void) -> i32 {
    // SAFETY: as in `hook_pop`.
    let shared = unsafe { shared_from(context) };
    i32::from(!shared.queue.is_empty())
}

/// Hook: a request is finished but not yet counted complete nor handed back.
///
/// # Safety
///
/// As for [`hook_complete`].
unsafe extern "C" fn hook_settle(context: *mut c_void, request: *const sys::helix_request) {
    // SAFETY: as in `hook_pop`.
    let shared = unsafe { shared_from(context) };
    // SAFETY: as in `hook_complete`: the ring thread still owns the request.
    let tag = unsafe { (*request).user_data };
    if tag != RELEASE_TAG {
        shared.on_settle(tag as u32);
    }
}

/// Hook: a request is finished.
///
/// # Safety
///
/// As for [`hook_pop`]; `request` must be a request `hook_pop` handed out and not yet
/// completed.
unsafe extern "C" fn hook_complete(context: *mut c_void, request: *mut sys::helix_request) {
    // SAFETY: as in `hook_pop`.
    let shared = unsafe { shared_from(context) };
    // SAFETY: the shim hands back a request it got from `hook_pop`: the release request or
    // one in a slot, which the ring thread owns until `on_complete` publishes it.
    let finished = unsafe { &*request };
    let (tag, opcode, result) = (finished.user_data, finished.opcode, finished.result);
    if tag == RELEASE_TAG {
        if result < 0 {
            // The shim refuses only a release of a slot it does not hold: a bug here, since
            // each hold is released once. Nothing is dropped; a held file stays held.
            tracing::error!(
                errno = -result,
                "the io_uring ring refused to release a directory lock it does not hold"
            );
        }
        return;
    }
    shared.on_complete(tag as u32, opcode);
}

/// Waits for a queued request's completion. Dropping it before completion abandons the slot to
/// the ring thread, which frees it when the kernel is done with its memory.
struct Completion<'a> {
    shared: &'a Shared,
    index: u32,
    finished: bool,
}

impl Future for Completion<'_> {
    type Output = Outcome;

    fn poll(mut self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<Outcome> {
        let slot = &self.shared.slots[self.index as usize];
        if slot.state.load(Ordering::Acquire) != STATE_DONE {
            slot.waker.register(context.waker());
            // Checked again after registering, so a completion in between is not missed.
            if slot.state.load(Ordering::Acquire) != STATE_DONE {
                return Poll::Pending;
            }
        }
        self.finished = true;
        Poll::Ready(self.shared.take_outcome(self.index))
    }
}

impl Drop for Completion<'_> {
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        let slot = &self.shared.slots[self.index as usize];
        let abandoned = slot.state.compare_exchange(
            STATE_QUEUED,
            STATE_ABANDONED,
            Ordering::AcqRel,
            Ordering::Acquire,
        );
        if abandoned.is_err() {
            // Completed meanwhile: this side owns the slot and frees it. Nobody will see the
            // result, so it is settled here.
            let outcome = self.shared.take_outcome(self.index);
            self.shared.settle_unclaimed(&outcome);
        }
    }
}
