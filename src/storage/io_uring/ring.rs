//! Safe wrapper around one C ring (`struct helix_ring`).

use std::ptr::NonNull;

use super::config::IoUringConfig;
use super::sys;

/// Owns one `helix_ring`; destroys it when dropped.
///
/// The ring is created on, and runs on, the ring thread. `notify`, `request_stop`, `stats` and
/// (with the `test-support` feature) `arm_short_write` are thread safe by the shim's contract;
/// `run` is called once, on the ring thread.
#[derive(Debug)]
pub(crate) struct Ring {
    raw: NonNull<sys::helix_ring>,
}

// SAFETY: the shim documents notify/request_stop/read_stats/arm_short_write/max_requests as
// callable from any thread (atomics and an eventfd write); `run` is only called by the ring
// thread (see `worker.rs`), and `destroy` only from Drop, when no other reference exists.
unsafe impl Send for Ring {}
// SAFETY: as above: every method taking `&self` is thread safe in the shim.
unsafe impl Sync for Ring {}

impl Ring {
    /// Creates a ring on the calling thread (which must be the thread that will run it).
    /// Returns the negative errno of the shim on failure.
    pub(crate) fn create(config: &IoUringConfig) -> Result<Ring, i32> {
        let raw_config = config.raw();
        let mut out: *mut sys::helix_ring = std::ptr::null_mut();
        // SAFETY: both pointers are valid for the call; the shim copies the config and writes
        // `out` only on success.
        let ret = unsafe { sys::helix_ring_create(&raw_config, &mut out) };
        if ret < 0 {
            return Err(ret);
        }
        NonNull::new(out)
            .map(|raw| Ring { raw })
            .ok_or(-libc::ENOMEM)
    }

    /// Runs the ring loop until stopped. Returns 0 or a negative errno if the ring failed.
    ///
    /// # Safety
    ///
    /// Called once, on the thread that created the ring. `hooks.context` must stay valid, and
    /// the hooks must uphold the shim's contract (every request handed out by `pop` stays valid
    /// and untouched, buffer included, until `complete` hands it back), for the whole call.
    pub(crate) unsafe fn run(&self, hooks: &sys::helix_ring_hooks) -> i32 {
        // SAFETY: the caller guarantees the hooks' contract and the calling thread.
        unsafe { sys::helix_ring_run(self.raw.as_ptr(), hooks) }
    }

    /// Wakes the ring thread if it sleeps. Call after queueing a request.
    pub(crate) fn notify(&self) {
        // SAFETY: thread safe by the shim's contract; the ring is alive while `self` is.
        unsafe { sys::helix_ring_notify(self.raw.as_ptr()) }
    }

    /// Asks the loop to drain and return.
    pub(crate) fn request_stop(&self) {
        // SAFETY: thread safe by the shim's contract; the ring is alive while `self` is.
        unsafe { sys::helix_ring_request_stop(self.raw.as_ptr()) }
    }

    /// The largest number of requests the ring accepts at once (bounded by its CQ size).
    pub(crate) fn max_requests(&self) -> u32 {
        // SAFETY: reads a field fixed at creation; the ring is alive while `self` is.
        unsafe { sys::helix_ring_max_requests(self.raw.as_ptr()) }
    }

    /// A snapshot of the counters.
    pub(crate) fn stats(&self) -> sys::helix_ring_stats {
        let mut out = sys::helix_ring_stats::default();
        // SAFETY: thread safe by the shim's contract; `out` is valid for writes.
        unsafe { sys::helix_ring_read_stats(self.raw.as_ptr(), &mut out) };
        out
    }

    /// Test hook (feature `test-support`, which compiles the shim's hook too): the next write
    /// that crosses a page boundary of its file is cut short there by the kernel.
    #[cfg(feature = "test-support")]
    pub(crate) fn arm_short_write(&self, armed: bool) {
        // SAFETY: thread safe by the shim's contract (one atomic store).
        unsafe { sys::helix_ring_arm_short_write(self.raw.as_ptr(), u32::from(armed)) }
    }
}

impl Drop for Ring {
    fn drop(&mut self) {
        // The ring thread holds a reference to the `Shared` that owns the ring until it exits.
        // SAFETY: `Ring` is the only owner and drops only after `run` returned: no other user.
        unsafe { sys::helix_ring_destroy(self.raw.as_ptr()) }
    }
}
