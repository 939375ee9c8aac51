//! The io_uring storage backend (feature `io-uring`, Linux only).
//!
//! A dedicated thread owns one io_uring instance through a small C shim over liburing
//! (csrc/helix_uring.c). Tokio tasks hand it requests through a lock-free bounded queue and wait
//! for completions on an atomic slot + waker; the thread batches requests into one
//! `io_uring_enter`, uses registered buffers when the data fits, and turns `write_at_and_sync`
//! into a linked write + fdatasync pair, recovering from short writes. See docs/IO_URING.md.
//!
//! Module map: `sys` (raw bindings, private), `ring` (safe wrapper of one C ring), `shared`
//! (request table, submission queue, completion futures, cancellation safety), `worker` (the
//! thread and shutdown), `file` (the `StorageFile`), `config` (limits and errors).
//! `unsafe` exists only in this module.

mod affinity;
mod aligned;
mod config;
mod file;
mod ring;
mod shared;
mod sys;
mod worker;

use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use async_trait::async_trait;

pub use config::{IoUringConfig, TaskRun};
use file::IoUringFile;
use shared::{Owned, Request, SHUTDOWN_WHAT};
use worker::Worker;

use super::{Storage, StorageFile, TokioStorage};
use crate::error::{WalError, WalResult};
use crate::stats::LatencyHistogram;

/// Limits and defaults of the io_uring backend.
pub mod limits {
    pub use super::config::{
        DEFAULT_GATHER_WINDOW_US, DEFAULT_IDLE_SPIN_US, DEFAULT_IOWQ_MAX_WORKERS,
        DEFAULT_MAX_BATCH, DEFAULT_REGISTERED_BUFFER_BYTES, DEFAULT_REGISTERED_BUFFER_COUNT,
        DEFAULT_SQ_ENTRIES, DIRECT_IO_ALIGNMENT_BYTES, MAX_BATCH, MAX_GATHER_WINDOW_US,
        MAX_IDLE_SPIN_US, MAX_IOWQ_MAX_WORKERS, MAX_REGISTERED_BUFFER_BYTES,
        MAX_REGISTERED_BUFFER_COUNT, MAX_REGISTERED_POOL_BYTES, MAX_SQPOLL_IDLE_MS, MAX_SQ_ENTRIES,
        MIN_SQ_ENTRIES, REGISTERED_BUFFER_ALIGNMENT_BYTES,
    };
}

/// The io_uring storage backend: one ring on a dedicated thread, shared by every file.
///
/// Same contract as every [`Storage`]: see the storage module docs. Metadata operations (open,
/// list, remove, rename, create_dir_all, sync_dir, set_len) run on tokio's blocking pool; reads,
/// writes and syncs go through the ring.
///
/// Shutdown: [`IoUringWorkerStorage::shutdown`] or dropping the last handle (the storage, its
/// clones and its files all hold one) lets the ring finish every request already queued, then
/// joins the thread. Calls after shutdown fail with [`WalError::Shutdown`].
#[derive(Debug, Clone)]
pub struct IoUringWorkerStorage {
    worker: Arc<Worker>,
    metadata: TokioStorage,
    /// Files from `open_direct` are opened for direct I/O ([`IoUringConfig::direct_io`]).
    direct_io: bool,
    /// Set once a filesystem refused `O_DIRECT` (the fallback is logged once).
    direct_io_refused: Arc<AtomicBool>,
    /// Test hook (feature `test-support`): open files as if the filesystem refused `O_DIRECT`.
    #[cfg(feature = "test-support")]
    refuse_direct_io: Arc<AtomicBool>,
    /// Set once a directory lock could not be held by the ring (logged once).
    lock_not_held_logged: Arc<AtomicBool>,
}

/// A snapshot of the backend's counters ([`IoUringWorkerStorage::stats`]).
///
/// The counters come from the C shim; the latency histograms and `in_flight_peak` are measured
/// on the Rust side, from the moment a request is handed to the ring thread until the ring
/// thread sees its completion (before the waiting task is woken).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct IoUringStats {
    /// SQEs the kernel accepted.
    pub sqes_submitted: u64,
    /// Calls into the kernel to submit or wait (`io_uring_enter`).
    pub enter_calls: u64,
    /// Batches of requests prepared together (each submitted with one enter).
    pub batches: u64,
    /// The most requests in one batch so far.
    pub largest_batch: u64,
    /// Batches closed because the gathering window ran out (rather than being full).
    pub gather_timeouts: u64,
    /// Requests taken from the submission queue.
    pub requests_started: u64,
    /// Requests finished (successfully or not).
    pub requests_completed: u64,
    /// Requests in the ring now.
    pub in_flight: u64,
    /// Reads and writes that used a registered buffer.
    pub registered_buffer_hits: u64,
    /// Reads and writes that did not fit or found the pool empty.
    pub registered_buffer_misses: u64,
    /// Reads or writes the kernel completed short (continued by the backend).
    pub short_transfers: u64,
    /// Linked fsyncs the kernel cancelled because their write was short or failed.
    pub linked_fsyncs_cancelled: u64,
    /// Times the ring thread went to sleep in the kernel.
    pub sleeps: u64,
    /// Eventfd wake-ups sent to a sleeping ring thread.
    pub wakeups_sent: u64,
    /// Idle spins of the ring thread ([`IoUringConfig::idle_spin_us`]) that found a request
    /// before their time ran out.
    pub spins_rewarded: u64,
    /// fdatasync SQEs queued (linked to a write or alone); none for durable writes in direct
    /// I/O mode.
    pub fsyncs_submitted: u64,
    /// The ring runs with SQPOLL.
    pub sqpoll: bool,
    /// The ring runs with SINGLE_ISSUER | DEFER_TASKRUN.
    pub defer_taskrun: bool,
    /// The ring runs with COOP_TASKRUN.
    pub coop_taskrun: bool,
    /// Registered buffers in the pool (0 when none were asked for or registration failed).
    pub registered_buffers: u32,
    /// The errno with which buffer registration failed (e.g. ENOMEM: RLIMIT_MEMLOCK).
    pub registration_errno: Option<i32>,
    /// The most requests the ring holds at once (bounded by its completion queue).
    pub max_in_flight: u32,
    /// Slots of the ring's own file table for directory locks (0 when the kernel refused it:
    /// locks are then plain `flock`s that a killed process's in-flight writes can outlive).
    pub held_file_slots: u32,
    /// The errno with which the kernel refused that table.
    pub held_files_errno: Option<i32>,
    /// Directory locks the ring holds now.
    pub held_files: u64,
    /// Of those, locks released and waiting for the requests the ring started before their
    /// release (a write still in flight keeps its log's directory locked).
    pub held_files_releasing: u64,
    /// The most requests handed to the ring thread and not yet completed at once (at most
    /// `max_in_flight`).
    pub in_flight_peak: u64,
    /// Latency of writes. In direct I/O mode every write is `O_DSYNC`, durable writes
    /// included: they are counted here, not under `write_fsync_latency`.
    pub write_latency: LatencyHistogram,
    /// Latency of linked write + fdatasync pairs (durable writes in buffered mode), until the
    /// fsync completed.
    pub write_fsync_latency: LatencyHistogram,
    /// Latency of reads.
    pub read_latency: LatencyHistogram,
    /// Latency of lone fdatasyncs.
    pub fsync_latency: LatencyHistogram,
}

impl IoUringStats {
    fn from_raw(raw: &sys::helix_ring_stats) -> IoUringStats {
        IoUringStats {
            sqes_submitted: raw.sqes_submitted,
            enter_calls: raw.enter_calls,
            batches: raw.batches,
            largest_batch: raw.largest_batch,
            gather_timeouts: raw.gather_timeouts,
            requests_started: raw.requests_started,
            requests_completed: raw.requests_completed,
            in_flight: raw.in_flight,
            registered_buffer_hits: raw.fixed_buffer_hits,
            registered_buffer_misses: raw.fixed_buffer_misses,
            short_transfers: raw.short_transfers,
            linked_fsyncs_cancelled: raw.linked_fsyncs_cancelled,
            sleeps: raw.sleeps,
            wakeups_sent: raw.wakeups_sent,
            spins_rewarded: raw.spins_rewarded,
            fsyncs_submitted: raw.fsyncs_submitted,
            sqpoll: raw.setup_flags & sys::HELIX_SETUP_SQPOLL != 0,
            defer_taskrun: raw.setup_flags & sys::HELIX_SETUP_DEFER_TASKRUN != 0,
            coop_taskrun: raw.setup_flags & sys::HELIX_SETUP_COOP_TASKRUN != 0,
            registered_buffers: raw.registered_buffers,
            registration_errno: (raw.registration_error < 0).then_some(-raw.registration_error),
            max_in_flight: raw.max_requests,
            held_file_slots: raw.held_file_slots,
            held_files_errno: (raw.held_files_error < 0).then_some(-raw.held_files_error),
            held_files: raw.held_files,
            held_files_releasing: raw.held_files_releasing,
            ..IoUringStats::default()
        }
    }
}

impl IoUringWorkerStorage {
    /// Starts the backend with the default configuration. Fails with
    /// [`WalError::IoUringUnavailable`] naming the cause and the fix when the kernel refuses
    /// io_uring (ENOSYS: too old; EPERM: seccomp or `kernel.io_uring_disabled`; ENOMEM:
    /// RLIMIT_MEMLOCK).
    pub fn try_new() -> WalResult<Self> {
        Self::with_config(IoUringConfig::default())
    }

    /// Starts the backend with `config` (validated first).
    pub fn with_config(config: IoUringConfig) -> WalResult<Self> {
        let worker = Worker::start(&config)?;
        Ok(Self {
            worker: Arc::new(worker),
            metadata: TokioStorage::new(),
            direct_io: config.direct_io,
            direct_io_refused: Arc::new(AtomicBool::new(false)),
            #[cfg(feature = "test-support")]
            refuse_direct_io: Arc::new(AtomicBool::new(false)),
            lock_not_held_logged: Arc::new(AtomicBool::new(false)),
        })
    }

    /// A snapshot of the counters and latency histograms.
    pub fn stats(&self) -> IoUringStats {
        let shared = &self.worker.shared;
        let latency = shared.latency_snapshot();
        IoUringStats {
            in_flight_peak: latency.outstanding_peak,
            write_latency: latency.write,
            write_fsync_latency: latency.write_fsync,
            read_latency: latency.read,
            fsync_latency: latency.fsync,
            ..IoUringStats::from_raw(&shared.ring.stats())
        }
    }

    /// The most requests queued or in flight at once; more callers wait.
    pub fn capacity(&self) -> usize {
        self.worker.shared.capacity()
    }

    /// Shuts the backend down: refuses new requests, lets every queued or in-flight request
    /// finish, and joins the ring thread. Blocks the calling thread until then. Later calls on
    /// the storage or its files fail with [`WalError::Shutdown`]. Idempotent.
    pub fn shutdown(&self) {
        self.worker.shutdown();
    }

    /// Test hook (feature `test-support` only, never in a shipped build): the next write that
    /// crosses a page boundary of its file is cut short at that boundary by the kernel (its
    /// source memory past the boundary is made unreadable), so that tests can prove the
    /// recovery from short writes.
    #[cfg(feature = "test-support")]
    #[doc(hidden)]
    pub fn inject_short_write_for_testing(&self) {
        self.worker.shared.ring.arm_short_write(true);
    }

    /// A file of this backend over open descriptors.
    fn file(
        &self,
        file: std::fs::File,
        read_file: Option<std::fs::File>,
        path: &Path,
    ) -> Arc<dyn StorageFile> {
        Arc::new(IoUringFile::new(
            Arc::clone(&self.worker),
            file,
            read_file,
            path.to_path_buf(),
        ))
    }

    /// Test hook (feature `test-support` only, never in a shipped build): files opened with
    /// `open_direct` from now on are treated as on a filesystem that refuses `O_DIRECT`
    /// (EINVAL), so they fall back to buffered writes.
    #[cfg(feature = "test-support")]
    #[doc(hidden)]
    pub fn refuse_direct_io_for_testing(&self) {
        self.refuse_direct_io.store(true, Ordering::Relaxed);
    }

    /// How `open_direct` opens files when direct I/O is configured.
    fn direct_io_mode(&self) -> DirectIo {
        #[cfg(feature = "test-support")]
        if self.refuse_direct_io.load(Ordering::Relaxed) {
            return DirectIo::RefusedForTesting;
        }
        DirectIo::On
    }

    /// Opens the descriptors of a readable and writable file.
    async fn open_with(&self, path: &Path, direct_io: DirectIo) -> WalResult<Arc<dyn StorageFile>> {
        self.check_open()?;
        let owned = path.to_path_buf();
        let refused = Arc::clone(&self.direct_io_refused);
        let (file, read_file) =
            open_blocking(path, move || open_descriptors(&owned, direct_io, &refused)).await?;
        Ok(self.file(file, read_file, path))
    }

    fn check_open(&self) -> WalResult<()> {
        if self.worker.shared.is_closed() {
            return Err(match self.worker.shared.ring_failure() {
                Some(errno) => WalError::io(
                    "io_uring",
                    PathBuf::new(),
                    io::Error::from_raw_os_error(-errno),
                ),
                None => WalError::Shutdown {
                    what: SHUTDOWN_WHAT,
                },
            });
        }
        Ok(())
    }
}

/// Opens (creating if missing) a file for positional reads and writes, with `flags` added to
/// the open flags; refuses directories.
fn open_file(path: &Path, flags: i32) -> io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .custom_flags(flags)
        .open(path)?;
    if file.metadata()?.is_dir() {
        return Err(io::Error::new(
            io::ErrorKind::IsADirectory,
            "is a directory",
        ));
    }
    Ok(file)
}

/// Runs `open` on tokio's blocking pool; errors name `path`.
async fn open_blocking<T: Send + 'static>(
    path: &Path,
    open: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> WalResult<T> {
    crate::storage::blocking::run("open", path, open).await
}

/// Whether files are opened for direct I/O.
#[derive(Debug, Clone, Copy)]
enum DirectIo {
    Off,
    On,
    /// As `On`, but the filesystem is taken to refuse `O_DIRECT` (test hook).
    #[cfg(feature = "test-support")]
    RefusedForTesting,
}

/// The descriptors of one file: the one writes go through and, when it was opened for direct
/// I/O, a buffered one for reads. A filesystem that refuses `O_DIRECT` (EINVAL) gets a buffered
/// file instead, and `refused` records it so the fallback is logged once.
fn open_descriptors(
    path: &Path,
    direct_io: DirectIo,
    refused: &AtomicBool,
) -> io::Result<(std::fs::File, Option<std::fs::File>)> {
    let buffered = open_file(path, 0)?;
    let direct = match direct_io {
        DirectIo::Off => return Ok((buffered, None)),
        DirectIo::On => open_file(path, libc::O_DIRECT | libc::O_DSYNC),
        #[cfg(feature = "test-support")]
        DirectIo::RefusedForTesting => Err(io::Error::from_raw_os_error(libc::EINVAL)),
    };
    match direct {
        Ok(direct) => Ok((direct, Some(buffered))),
        Err(error) if error.raw_os_error() == Some(libc::EINVAL) => {
            if !refused.swap(true, Ordering::Relaxed) {
                tracing::warn!(
                    path = %path.display(),
                    "the filesystem refuses O_DIRECT: files there use buffered writes with a \
                     linked fsync (slower durable appends); put the log on ext4 or xfs for \
                     direct I/O"
                );
            }
            Ok((buffered, None))
        }
        Err(error) => Err(error),
    }
}

#[async_trait]
impl Storage for IoUringWorkerStorage {
    fn name(&self) -> &'static str {
        "io_uring"
    }

    /// A buffered file: writes of any length at any offset, made durable by an fsync (a
    /// linked one for `write_at_and_sync`).
    async fn open(&self, path: &Path) -> WalResult<Arc<dyn StorageFile>> {
        self.open_with(path, DirectIo::Off).await
    }

    /// With [`IoUringConfig::direct_io`] (the default), a file whose writes go through an
    /// `O_DIRECT | O_DSYNC` descriptor: whole 4096-byte blocks only, durable on completion.
    /// Without it, or on a filesystem that refuses `O_DIRECT`, what `open` returns.
    async fn open_direct(&self, path: &Path) -> WalResult<Arc<dyn StorageFile>> {
        let direct_io = if self.direct_io {
            self.direct_io_mode()
        } else {
            DirectIo::Off
        };
        self.open_with(path, direct_io).await
    }

    async fn open_read_only(&self, path: &Path) -> WalResult<Arc<dyn StorageFile>> {
        self.check_open()?;
        let owned = path.to_path_buf();
        let file = open_blocking(path, move || {
            let file = std::fs::File::open(&owned)?;
            if file.metadata()?.is_dir() {
                return Err(io::Error::new(
                    io::ErrorKind::IsADirectory,
                    "is a directory",
                ));
            }
            Ok(file)
        })
        .await?;
        // Read-only: no direct I/O descriptor (nothing is written through it).
        Ok(self.file(file, None, path))
    }

    async fn exists(&self, path: &Path) -> WalResult<bool> {
        self.check_open()?;
        self.metadata.exists(path).await
    }

    async fn list(&self, dir: &Path) -> WalResult<Vec<PathBuf>> {
        self.check_open()?;
        self.metadata.list(dir).await
    }

    async fn is_dir(&self, path: &Path) -> WalResult<bool> {
        self.check_open()?;
        self.metadata.is_dir(path).await
    }

    async fn remove(&self, path: &Path) -> WalResult<()> {
        self.check_open()?;
        self.metadata.remove(path).await
    }

    async fn rename(&self, from: &Path, to: &Path) -> WalResult<()> {
        self.check_open()?;
        self.metadata.rename(from, to).await
    }

    async fn create_dir_all(&self, dir: &Path) -> WalResult<()> {
        self.check_open()?;
        self.metadata.create_dir_all(dir).await
    }

    async fn sync_dir(&self, dir: &Path) -> WalResult<()> {
        self.check_open()?;
        self.metadata.sync_dir(dir).await
    }

    /// The `flock` of [`TokioStorage`], with the open lock file also held in the ring's own
    /// file table. Were the process killed, the kernel finishes its in-flight direct writes
    /// after the process is gone, and drops the ring's reference (releasing the lock) only
    /// then: a successor cannot lock the directory, recover and write while a late write of
    /// its predecessor may still land on the blocks it writes. Where the kernel refuses the
    /// table (before 5.19), the plain `flock` is kept and the gap is logged once.
    async fn lock_dir(&self, dir: &Path) -> WalResult<crate::storage::DirLock> {
        self.check_open()?;
        let file = self.metadata.lock_file(dir).await?;
        // The file travels with the request, so that it stays open (its descriptor names it
        // and nothing else) until the ring has taken it, even if this future is dropped.
        let request = Request {
            opcode: sys::HELIX_OP_HOLD_FILE,
            offset: 0,
            owned: Owned {
                held_file: Some(file),
                ..Owned::default()
            },
        };
        let outcome = self.worker.shared.execute(request).await?;
        let Some(file) = outcome.owned.held_file else {
            unreachable!("a finished request hands its memory back");
        };
        if outcome.result < 0 {
            if !self.lock_not_held_logged.swap(true, Ordering::Relaxed) {
                let errno = -outcome.result;
                let stats = self.stats();
                if stats.held_file_slots == 0 {
                    tracing::warn!(
                        errno,
                        "the kernel refused the io_uring ring a file table (Linux 5.19 or \
                         later and RLIMIT_NOFILE of at least 1 needed), so directory locks are \
                         plain flocks: a killed process's last direct writes may land after a \
                         successor took its lock; restart a log's owner only after a pause \
                         longer than the device's slowest write"
                    );
                } else {
                    tracing::warn!(
                        errno,
                        held = stats.held_files,
                        slots = stats.held_file_slots,
                        "the io_uring ring could not hold a directory lock (EMFILE: all its \
                         slots are taken; otherwise the errno says why), so this lock is a \
                         plain flock: a killed process's last direct writes may land after a \
                         successor took it"
                    );
                }
            }
            return Ok(crate::storage::DirLock::holding(file));
        }
        Ok(crate::storage::DirLock::holding(HeldLock {
            slot: outcome.done,
            worker: Arc::clone(&self.worker),
            _file: file,
        }))
    }
}

/// A directory lock whose open file the ring holds too: releasing it drops the ring's
/// reference (through the ring thread) and closes the file.
struct HeldLock {
    slot: u64,
    worker: Arc<Worker>,
    _file: std::fs::File,
}

impl Drop for HeldLock {
    fn drop(&mut self) {
        self.worker.shared.release_held_file(self.slot);
    }
}
