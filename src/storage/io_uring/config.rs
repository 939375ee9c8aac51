//! Configuration of the io_uring backend, its limits, and the translation of setup failures into
//! errors that name the cause and the fix.

use crate::error::{WalError, WalResult};

/// Default submission queue entries: 256, room for 128 linked write+fsync pairs, far more than
/// the 64 registered buffers can feed. The completion queue gets twice as many.
pub const DEFAULT_SQ_ENTRIES: u32 = 256;
/// Largest accepted submission queue: the kernel's own maximum.
pub const MAX_SQ_ENTRIES: u32 = 32_768;
/// Smallest accepted submission queue: room for one linked write+fsync pair.
pub const MIN_SQ_ENTRIES: u32 = 2;
/// Default largest batch of requests prepared and submitted with one `io_uring_enter`.
pub const DEFAULT_MAX_BATCH: u32 = 64;
/// Largest accepted batch.
pub const MAX_BATCH: u32 = 4096;
/// Default gathering window: 0, submit at once. Measured on a 2-vCPU VM, a request's latency is
/// dominated by thread hops (~25 µs each), and requests that arrive while the ring thread is
/// busy are batched anyway; a window pays off only with many writers trickling in.
pub const DEFAULT_GATHER_WINDOW_US: u32 = 0;
/// Largest accepted gathering window: 10 ms. Longer would be a unit mistake.
pub const MAX_GATHER_WINDOW_US: u32 = 10_000;
/// Default number of registered buffers: 64. A write in flight holds one; writes beyond 64 at
/// once go out from their own memory (counted as misses).
pub const DEFAULT_REGISTERED_BUFFER_COUNT: u32 = 64;
/// Default size of each registered buffer: 64 KiB, a typical batched WAL write; the whole pool
/// (4 MiB) stays inside an 8 MiB memlock limit.
pub const DEFAULT_REGISTERED_BUFFER_BYTES: u32 = 64 << 10;
/// Largest accepted number of registered buffers.
pub const MAX_REGISTERED_BUFFER_COUNT: u32 = 1024;
/// Largest accepted registered buffer: 1 MiB.
pub const MAX_REGISTERED_BUFFER_BYTES: u32 = 1 << 20;
/// Largest accepted pool in total (count x size): 64 MiB of pinned memory.
pub const MAX_REGISTERED_POOL_BYTES: u64 = 64 << 20;
/// Registered buffers are page-aligned and a whole number of pages.
pub const REGISTERED_BUFFER_ALIGNMENT_BYTES: u32 = 4096;
/// Default io-wq worker limit. Buffered writes and every fsync run on io-wq workers; raising
/// the kernel's small default to 16 let 16 concurrent writers reach the thread-pool baseline.
pub const DEFAULT_IOWQ_MAX_WORKERS: u32 = 16;
/// Largest accepted io-wq worker limit.
pub const MAX_IOWQ_MAX_WORKERS: u32 = 1024;
/// Block alignment of direct I/O ([`IoUringConfig::direct_io`]): offsets, lengths and memory of
/// every write. 4096 covers the logical and physical block sizes of common disks, so a commit
/// never shares a physical block with an earlier one (no read-modify-write in the device).
pub const DIRECT_IO_ALIGNMENT_BYTES: u32 = 4096;
/// Largest accepted SQPOLL idle time: 10 s.
pub const MAX_SQPOLL_IDLE_MS: u32 = 10_000;
/// Default idle spin of the ring thread: none. On 2 vCPUs a spinning ring thread takes the CPU
/// the submitting tasks need (docs/BENCHMARKS.md, tuning record).
pub const DEFAULT_IDLE_SPIN_US: u32 = 0;
/// Largest accepted idle spin: 1 ms (beyond that the ring thread is a busy loop).
pub const MAX_IDLE_SPIN_US: u32 = 1_000;

const _: () = assert!(DEFAULT_SQ_ENTRIES.is_power_of_two());
const _: () = assert!(MIN_SQ_ENTRIES <= DEFAULT_SQ_ENTRIES && DEFAULT_SQ_ENTRIES <= MAX_SQ_ENTRIES);
const _: () = assert!(DEFAULT_MAX_BATCH >= 1 && DEFAULT_MAX_BATCH <= MAX_BATCH);
// A whole default batch of linked pairs fits in the default submission queue.
const _: () = assert!(2 * DEFAULT_MAX_BATCH <= DEFAULT_SQ_ENTRIES);
const _: () = assert!(DEFAULT_REGISTERED_BUFFER_BYTES % REGISTERED_BUFFER_ALIGNMENT_BYTES == 0);
const _: () = assert!(DEFAULT_REGISTERED_BUFFER_BYTES <= MAX_REGISTERED_BUFFER_BYTES);
const _: () = assert!(DEFAULT_REGISTERED_BUFFER_COUNT <= MAX_REGISTERED_BUFFER_COUNT);
// The default pool (4 MiB) stays well inside a common 8 MiB RLIMIT_MEMLOCK.
const _: () = assert!(
    DEFAULT_REGISTERED_BUFFER_COUNT as u64 * DEFAULT_REGISTERED_BUFFER_BYTES as u64
        <= MAX_REGISTERED_POOL_BYTES
);
const _: () = assert!(
    (DEFAULT_REGISTERED_BUFFER_COUNT as u64 * DEFAULT_REGISTERED_BUFFER_BYTES as u64) <= 4 << 20
);
const _: () = assert!(DEFAULT_IOWQ_MAX_WORKERS <= MAX_IOWQ_MAX_WORKERS);
// Registered buffers serve direct I/O writes, so they are aligned at least as strictly.
const _: () = assert!(REGISTERED_BUFFER_ALIGNMENT_BYTES % DIRECT_IO_ALIGNMENT_BYTES == 0);
// The log pads commits to the storage's write alignment, which it bounds.
const _: () =
    assert!(DIRECT_IO_ALIGNMENT_BYTES as usize <= crate::limits::MAX_WRITE_ALIGNMENT_BYTES);

/// Configuration of [`IoUringWorkerStorage`](super::IoUringWorkerStorage). Every field has a
/// default ([`IoUringConfig::default`]) and bounds checked by [`IoUringConfig::validate`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IoUringConfig {
    /// Submission queue entries, a power of two in
    /// [`MIN_SQ_ENTRIES`]..=[`MAX_SQ_ENTRIES`]; default [`DEFAULT_SQ_ENTRIES`]. The completion
    /// queue is twice as large and bounds the requests in flight (about `sq_entries`): callers
    /// beyond that wait.
    pub sq_entries: u32,
    /// Largest number of requests submitted with one `io_uring_enter`, 1..=[`MAX_BATCH`];
    /// default [`DEFAULT_MAX_BATCH`].
    pub max_batch: u32,
    /// How long the ring thread keeps gathering a batch while requests trickle in, in
    /// microseconds, 0..=[`MAX_GATHER_WINDOW_US`]; default [`DEFAULT_GATHER_WINDOW_US`] (none).
    pub gather_window_us: u32,
    /// Number of registered (fixed) buffers, 0..=[`MAX_REGISTERED_BUFFER_COUNT`] (0: none);
    /// default [`DEFAULT_REGISTERED_BUFFER_COUNT`]. Reads and writes that fit use them; if the
    /// kernel refuses registration (RLIMIT_MEMLOCK) the backend runs without them.
    pub registered_buffer_count: u32,
    /// Size of each registered buffer in bytes, a multiple of 4096 up to
    /// [`MAX_REGISTERED_BUFFER_BYTES`]; default [`DEFAULT_REGISTERED_BUFFER_BYTES`].
    pub registered_buffer_bytes: u32,
    /// Upper bound of io-wq kernel workers, 0..=[`MAX_IOWQ_MAX_WORKERS`] (0: the kernel's
    /// default); default [`DEFAULT_IOWQ_MAX_WORKERS`].
    pub iowq_max_workers: u32,
    /// Idle time of the kernel's SQPOLL thread in milliseconds, 0..=[`MAX_SQPOLL_IDLE_MS`];
    /// 0 (the default) disables SQPOLL. When the kernel refuses SQPOLL the backend runs without
    /// it. On small machines SQPOLL costs a CPU: measured 40% slower on 2 vCPUs.
    pub sqpoll_idle_ms: u32,
    /// Opens the files the log asks for with
    /// [`Storage::open_direct`](crate::Storage::open_direct) (its segments) for direct I/O
    /// (`O_DIRECT | O_DSYNC`) on the write side: each write goes from an aligned (registered
    /// when it fits) buffer straight to the device and is durable when it completes, so a
    /// durable append is one write, with no fsync and no page cache. Every write to such a file
    /// is whole [`DIRECT_IO_ALIGNMENT_BYTES`] blocks: the log ends each commit on a block
    /// boundary with a padding record (more space per small commit; batch small entries, e.g.
    /// with `BufferedWal`). Reads use a second, buffered descriptor. Files from
    /// [`Storage::open`](crate::Storage::open) are always buffered and take any write. Default
    /// true: on this project's measurements it is the fastest durable path
    /// (docs/BENCHMARKS.md). A file on a filesystem that refuses `O_DIRECT` is opened buffered
    /// instead (logged once), with the linked write + fsync.
    pub direct_io: bool,
    /// When the ring thread runs out of work (nothing queued, nothing in flight), it keeps
    /// polling the queue for this many microseconds before it sleeps, so a request queued
    /// meanwhile is taken without an eventfd wake-up; 0..=[`MAX_IDLE_SPIN_US`]; default
    /// [`DEFAULT_IDLE_SPIN_US`].
    pub idle_spin_us: u32,
    /// The completion task-running mode asked of the kernel; default [`TaskRun::Best`].
    pub task_run: TaskRun,
    /// Pins the ring thread to this CPU (one the process may run on, else
    /// `WalError::InvalidConfig`); default `None`: the scheduler places it.
    pub ring_cpu: Option<u32>,
}

/// How the kernel runs completion work for the ring (io_uring setup flags).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TaskRun {
    /// `SINGLE_ISSUER | DEFER_TASKRUN` (Linux 6.1): completions are processed only when the
    /// ring thread enters the kernel to wait; else `COOP_TASKRUN`; else none.
    #[default]
    Best,
    /// `COOP_TASKRUN` (Linux 5.19): no interrupting signal for completion work; else none.
    Cooperative,
    /// No flag: completion work interrupts the ring thread when it runs.
    Plain,
}

impl Default for IoUringConfig {
    fn default() -> Self {
        Self {
            sq_entries: DEFAULT_SQ_ENTRIES,
            max_batch: DEFAULT_MAX_BATCH,
            gather_window_us: DEFAULT_GATHER_WINDOW_US,
            registered_buffer_count: DEFAULT_REGISTERED_BUFFER_COUNT,
            registered_buffer_bytes: DEFAULT_REGISTERED_BUFFER_BYTES,
            iowq_max_workers: DEFAULT_IOWQ_MAX_WORKERS,
            sqpoll_idle_ms: 0,
            direct_io: true,
            idle_spin_us: DEFAULT_IDLE_SPIN_US,
            task_run: TaskRun::Best,
            ring_cpu: None,
        }
    }
}

fn invalid(field: &'static str, reason: String) -> WalError {
    WalError::InvalidConfig { field, reason }
}

fn check_range(field: &'static str, value: u32, min: u32, max: u32) -> WalResult<()> {
    if value < min || value > max {
        return Err(invalid(
            field,
            format!("is {value}, must be in {min}..={max}"),
        ));
    }
    Ok(())
}

impl IoUringConfig {
    /// The shim's view of this configuration (the fields it reads).
    pub(crate) fn raw(&self) -> super::sys::helix_ring_config {
        super::sys::helix_ring_config {
            sq_entries: self.sq_entries,
            max_batch: self.max_batch,
            gather_window_us: self.gather_window_us,
            registered_buffer_count: self.registered_buffer_count,
            registered_buffer_bytes: self.registered_buffer_bytes,
            iowq_max_workers: self.iowq_max_workers,
            sqpoll_idle_ms: self.sqpoll_idle_ms,
            idle_spin_us: self.idle_spin_us,
            task_run: match self.task_run {
                TaskRun::Best => super::sys::HELIX_TASKRUN_BEST,
                TaskRun::Cooperative => super::sys::HELIX_TASKRUN_COOP,
                TaskRun::Plain => super::sys::HELIX_TASKRUN_PLAIN,
            },
        }
    }

    /// Checks every field against its bounds.
    pub fn validate(&self) -> WalResult<()> {
        check_range(
            "sq_entries",
            self.sq_entries,
            MIN_SQ_ENTRIES,
            MAX_SQ_ENTRIES,
        )?;
        if !self.sq_entries.is_power_of_two() {
            return Err(invalid(
                "sq_entries",
                format!("is {}, must be a power of two", self.sq_entries),
            ));
        }
        check_range("max_batch", self.max_batch, 1, MAX_BATCH)?;
        check_range(
            "gather_window_us",
            self.gather_window_us,
            0,
            MAX_GATHER_WINDOW_US,
        )?;
        self.validate_pool()?;
        check_range(
            "iowq_max_workers",
            self.iowq_max_workers,
            0,
            MAX_IOWQ_MAX_WORKERS,
        )?;
        check_range("idle_spin_us", self.idle_spin_us, 0, MAX_IDLE_SPIN_US)?;
        check_range("sqpoll_idle_ms", self.sqpoll_idle_ms, 0, MAX_SQPOLL_IDLE_MS)
    }

    fn validate_pool(&self) -> WalResult<()> {
        check_range(
            "registered_buffer_count",
            self.registered_buffer_count,
            0,
            MAX_REGISTERED_BUFFER_COUNT,
        )?;
        if self.registered_buffer_count == 0 {
            return Ok(());
        }
        check_range(
            "registered_buffer_bytes",
            self.registered_buffer_bytes,
            REGISTERED_BUFFER_ALIGNMENT_BYTES,
            MAX_REGISTERED_BUFFER_BYTES,
        )?;
        if self.registered_buffer_bytes % REGISTERED_BUFFER_ALIGNMENT_BYTES != 0 {
            return Err(invalid(
                "registered_buffer_bytes",
                format!(
                    "is {}, must be a multiple of {REGISTERED_BUFFER_ALIGNMENT_BYTES}",
                    self.registered_buffer_bytes
                ),
            ));
        }
        let total =
            u64::from(self.registered_buffer_count) * u64::from(self.registered_buffer_bytes);
        if total > MAX_REGISTERED_POOL_BYTES {
            return Err(invalid(
                "registered_buffer_count",
                format!(
                    "times registered_buffer_bytes is {total} bytes, must be at most \
                     {MAX_REGISTERED_POOL_BYTES}"
                ),
            ));
        }
        Ok(())
    }
}

/// Fix for a kernel without (usable) io_uring.
const FIX_KERNEL: &str = "run on Linux 5.6 or later (6.1 or later recommended) built with \
                          CONFIG_IO_URING, or use TokioStorage";
/// Fix for io_uring blocked by policy.
const FIX_PERMISSION: &str = "allow io_uring_setup, io_uring_enter and io_uring_register in the \
     seccomp profile (Docker >= 25 and containerd block them by default: run with a profile that \
     allows them, e.g. `docker run --security-opt seccomp=<profile.json>`), and make sure \
     `sysctl kernel.io_uring_disabled` is 0 (or 1 with this process in kernel.io_uring_group)";
/// Fix for a memory-lock refusal.
const FIX_MEMLOCK: &str = "raise RLIMIT_MEMLOCK (`ulimit -l`, LimitMEMLOCK= in systemd, \
     `--ulimit memlock=-1` in Docker) or lower sq_entries";
/// Fix for anything else.
const FIX_OTHER: &str = "check the kernel log and the io_uring configuration, or use TokioStorage";

/// The value of `kernel.io_uring_disabled` (Linux 6.6+), when readable.
fn io_uring_disabled_sysctl() -> Option<u32> {
    std::fs::read_to_string("/proc/sys/kernel/io_uring_disabled")
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// Turns a failed ring setup (a negative errno from the shim) into an error naming the cause
/// and the fix.
pub(crate) fn setup_error(errno: i32) -> WalError {
    let (cause, fix) = match errno {
        libc::ENOSYS => (
            "io_uring_setup returned ENOSYS: this kernel has no io_uring (older than 5.1 or \
             built without CONFIG_IO_URING)"
                .to_string(),
            FIX_KERNEL,
        ),
        libc::EOPNOTSUPP => (
            "the kernel's io_uring lacks the read/write opcodes this backend needs (Linux 5.6+)"
                .to_string(),
            FIX_KERNEL,
        ),
        libc::EPERM => (permission_cause(), FIX_PERMISSION),
        libc::ENOMEM => (
            "io_uring_setup returned ENOMEM: the ring's memory exceeds RLIMIT_MEMLOCK".to_string(),
            FIX_MEMLOCK,
        ),
        other => (
            format!(
                "io_uring setup failed: {}",
                std::io::Error::from_raw_os_error(other)
            ),
            FIX_OTHER,
        ),
    };
    WalError::IoUringUnavailable {
        cause,
        fix,
        errno: Some(errno),
    }
}

fn permission_cause() -> String {
    match io_uring_disabled_sysctl() {
        Some(value) if value != 0 => format!(
            "io_uring_setup returned EPERM: the sysctl kernel.io_uring_disabled is {value} \
             (1: only CAP_SYS_ADMIN or kernel.io_uring_group, 2: nobody)"
        ),
        _ => "io_uring_setup returned EPERM: io_uring is blocked by a seccomp profile (the \
              default of Docker >= 25 and containerd) or by kernel.io_uring_disabled"
            .to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Proves the defaults are valid and that each bound is enforced with a structured error
    // naming the field.
    #[test]
    fn validate_enforces_bounds() {
        IoUringConfig::default().validate().unwrap();
        let cases: [(IoUringConfig, &str); 6] = [
            (
                IoUringConfig {
                    idle_spin_us: MAX_IDLE_SPIN_US + 1,
                    ..IoUringConfig::default()
                },
                "idle_spin_us",
            ),
            (
                IoUringConfig {
                    sq_entries: 100,
                    ..IoUringConfig::default()
                },
                "sq_entries",
            ),
            (
                IoUringConfig {
                    max_batch: 0,
                    ..IoUringConfig::default()
                },
                "max_batch",
            ),
            (
                IoUringConfig {
                    gather_window_us: MAX_GATHER_WINDOW_US + 1,
                    ..IoUringConfig::default()
                },
                "gather_window_us",
            ),
            (
                IoUringConfig {
                    registered_buffer_bytes: 5000,
                    ..IoUringConfig::default()
                },
                "registered_buffer_bytes",
            ),
            (
                IoUringConfig {
                    registered_buffer_count: 1024,
                    registered_buffer_bytes: 1 << 20,
                    ..IoUringConfig::default()
                },
                "registered_buffer_count",
            ),
        ];
        for (config, expected_field) in cases {
            match config.validate() {
                Err(WalError::InvalidConfig { field, .. }) => assert_eq!(field, expected_field),
                other => panic!("expected InvalidConfig for {expected_field}, got {other:?}"),
            }
        }
    }

    // Proves each setup errno maps to IoUringUnavailable with its own fix and the errno kept.
    #[test]
    fn setup_errors_name_cause_and_fix() {
        for (errno, fix) in [
            (libc::ENOSYS, FIX_KERNEL),
            (libc::EPERM, FIX_PERMISSION),
            (libc::ENOMEM, FIX_MEMLOCK),
            (libc::EINVAL, FIX_OTHER),
        ] {
            match setup_error(errno) {
                WalError::IoUringUnavailable {
                    fix: found,
                    errno: Some(found_errno),
                    ..
                } => {
                    assert_eq!(found, fix);
                    assert_eq!(found_errno, errno);
                }
                other => panic!("unexpected {other:?}"),
            }
        }
    }
}
