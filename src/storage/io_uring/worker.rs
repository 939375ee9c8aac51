//! The dedicated ring thread: starting it (the ring is created on it), and shutting it down.

use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use super::affinity;
use super::config::{setup_error, IoUringConfig};
use super::ring::Ring;
use super::shared::Shared;
use crate::error::{WalError, WalResult};

/// Name of the ring thread, as shown by `top -H` and in panics.
const RING_THREAD_NAME: &str = "helix-uring";

/// The ring thread and the state it shares with callers. Dropping the last handle shuts it
/// down (draining what is in flight) and joins the thread.
#[derive(Debug)]
pub(crate) struct Worker {
    pub(crate) shared: Arc<Shared>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Worker {
    /// Starts the ring thread and waits until its ring exists (or failed to).
    pub(crate) fn start(config: &IoUringConfig) -> WalResult<Worker> {
        config.validate()?;
        if let Some(cpu) = config.ring_cpu {
            affinity::check_cpu(cpu)?;
        }
        let (ring_sender, ring_receiver) = mpsc::sync_channel::<Result<Ring, i32>>(1);
        let (shared_sender, shared_receiver) = mpsc::sync_channel::<Arc<Shared>>(1);
        let thread_config = config.clone();
        let thread = std::thread::Builder::new()
            .name(RING_THREAD_NAME.to_string())
            .spawn(move || ring_thread(&thread_config, &ring_sender, &shared_receiver))
            .map_err(|error| WalError::IoUringUnavailable {
                cause: format!("cannot start the ring thread: {error}"),
                fix: "raise the process's thread limit (ulimit -u) or free memory",
                errno: error.raw_os_error(),
            })?;
        let ring = match ring_receiver.recv() {
            Ok(Ok(ring)) => ring,
            Ok(Err(errno)) => {
                let _ = thread.join();
                return Err(setup_error(-errno));
            }
            Err(_) => {
                let _ = thread.join();
                return Err(setup_error(libc::EIO));
            }
        };
        if ring.max_requests() == 0 {
            // Cannot happen with a validated sq_entries (>= 2 gives a CQ of >= 4); refuse
            // rather than build a table the ring would never take requests from.
            drop(shared_sender);
            let _ = thread.join();
            return Err(WalError::InvalidConfig {
                field: "sq_entries",
                reason: format!(
                    "is {}, too small for one request in flight",
                    config.sq_entries
                ),
            });
        }
        let shared = Arc::new(Shared::new(ring));
        // The thread waits for this message; it cannot have gone away.
        let _ = shared_sender.send(Arc::clone(&shared));
        Ok(Worker {
            shared,
            thread: Mutex::new(Some(thread)),
        })
    }

    /// Refuses new requests, lets the ring finish every request already queued or in flight,
    /// and joins the thread. Idempotent; blocks the calling thread until the drain ends.
    pub(crate) fn shutdown(&self) {
        self.shared.close();
        self.shared.ring.request_stop();
        // The join happens under the lock, so a concurrent caller returns only after the
        // drain has ended too. (Shutdown path only: the hot path takes no lock.)
        let mut guard = match self.thread.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        if let Some(thread) = guard.take() {
            if thread.join().is_err() {
                tracing::error!("the io_uring ring thread panicked");
            }
        }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// The ring thread: creates the ring (io_uring's SINGLE_ISSUER and DEFER_TASKRUN want the ring
/// created by the thread that submits), hands it over, and runs the loop until shutdown.
fn ring_thread(
    config: &IoUringConfig,
    ring_sender: &mpsc::SyncSender<Result<Ring, i32>>,
    shared_receiver: &mpsc::Receiver<Arc<Shared>>,
) {
    if let Some(cpu) = config.ring_cpu {
        // Checked by `Worker::start`; should the kernel still refuse, run unpinned.
        if let Err(errno) = affinity::pin_current_thread(cpu) {
            tracing::warn!(
                cpu,
                errno,
                "cannot pin the io_uring ring thread; it runs unpinned"
            );
        }
    }
    let ring = Ring::create(config);
    let created = ring.is_ok();
    if ring_sender.send(ring).is_err() || !created {
        return;
    }
    let Ok(shared) = shared_receiver.recv() else {
        return;
    };
    // SAFETY: `shared` (an Arc held until this function returns) outlives the run.
    let hooks = unsafe { shared.hooks() };
    // SAFETY: this is the thread that created the ring; the hooks keep the shim's contract
    // (see shared.rs: a slot's request and memory are untouched while the ring owns it).
    let result = unsafe { shared.ring.run(&hooks) };
    if result < 0 {
        tracing::error!(
            errno = -result,
            "the io_uring ring failed; failing its requests and refusing new ones"
        );
        shared.fail_all(result);
    }
}
