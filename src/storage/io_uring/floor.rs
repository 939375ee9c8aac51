//! The C-level floor of a durable append (csrc/helix_floor.c): raw durable-write loops on one
//! thread, with no Rust in the loop and no hand-off, for `helix-wal bench` to divide the log's
//! figures by; and the same loops through the backend's C shim, inline and with the ring on its
//! own thread, to tell what the shim and the Rust path each cost.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::Duration;

use super::config::IoUringConfig;
use super::sys;

/// Largest number of operations one floor run records (bounds its latency buffer: 8 MiB).
pub const MAX_FLOOR_OPERATIONS: usize = 1 << 20;

/// How the floor makes each write durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CFloorMode {
    /// `pwrite` then `fdatasync`, buffered.
    PwriteFdatasync,
    /// io_uring write linked to an fdatasync, submitted and awaited on the calling thread.
    UringLinked,
    /// `pwrite` on an `O_DIRECT | O_DSYNC` descriptor.
    PwriteDirect,
    /// io_uring write from a registered buffer on an `O_DIRECT | O_DSYNC` descriptor, on the
    /// calling thread.
    UringDirect,
    /// The backend's C shim running its loop on the calling thread: `HELIX_OP_WRITE_FSYNC`.
    ShimLinked,
    /// The shim on the calling thread: `HELIX_OP_WRITE` on an `O_DIRECT | O_DSYNC` descriptor.
    ShimDirect,
    /// The shim on its own thread, each request handed over from the calling thread, which
    /// sleeps on an eventfd until it completes (the Rust backend's design, in C):
    /// `HELIX_OP_WRITE_FSYNC`.
    ShimHandoffLinked,
    /// The same hand-off with `HELIX_OP_WRITE` on an `O_DIRECT | O_DSYNC` descriptor.
    ShimHandoffDirect,
}

impl CFloorMode {
    fn raw(self) -> u32 {
        match self {
            CFloorMode::PwriteFdatasync => sys::HELIX_FLOOR_PWRITE_FDATASYNC,
            CFloorMode::UringLinked => sys::HELIX_FLOOR_URING_LINKED,
            CFloorMode::PwriteDirect => sys::HELIX_FLOOR_PWRITE_DIRECT,
            CFloorMode::UringDirect => sys::HELIX_FLOOR_URING_DIRECT,
            CFloorMode::ShimLinked => sys::HELIX_FLOOR_SHIM_LINKED,
            CFloorMode::ShimDirect => sys::HELIX_FLOOR_SHIM_DIRECT,
            CFloorMode::ShimHandoffLinked => sys::HELIX_FLOOR_SHIM_HANDOFF_LINKED,
            CFloorMode::ShimHandoffDirect => sys::HELIX_FLOOR_SHIM_HANDOFF_DIRECT,
        }
    }

    /// True for the modes that write through `O_DIRECT | O_DSYNC`.
    pub fn is_direct(self) -> bool {
        matches!(
            self,
            CFloorMode::PwriteDirect
                | CFloorMode::UringDirect
                | CFloorMode::ShimDirect
                | CFloorMode::ShimHandoffDirect
        )
    }
}

/// The result of one floor run.
#[derive(Debug, Clone)]
pub struct CFloorRun {
    /// Latency of each durable write, in nanoseconds.
    pub latencies_ns: Vec<u64>,
    /// Wall time of the run.
    pub elapsed: Duration,
}

/// Prepares `path` as the log prepares a segment (`file_bytes` of zeros, written and synced),
/// then runs `mode` on it for `duration`: `write_bytes` per durable write, at consecutive
/// offsets, wrapping around. `write_bytes` and `file_bytes` must be multiples of 4096 for the
/// direct modes. The shim modes configure their ring as `IoUringConfig::default()` does the
/// backend's. Blocks the calling thread for the whole run.
pub fn run_c_floor(
    path: &Path,
    mode: CFloorMode,
    write_bytes: u32,
    file_bytes: u64,
    duration: Duration,
) -> io::Result<CFloorRun> {
    prepare_file(path, file_bytes)?;
    let mut options = OpenOptions::new();
    options.read(true).write(true);
    if mode.is_direct() {
        options.custom_flags(libc::O_DIRECT | libc::O_DSYNC);
    }
    let file = options.open(path)?;
    let mut latencies_ns = vec![0u64; MAX_FLOOR_OPERATIONS];
    let mut result = sys::helix_floor_result::default();
    let duration_ns = u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX);
    let ring_config = IoUringConfig::default().raw();
    // SAFETY: `file` stays open for the call and every pointer is valid for it; the shim keeps
    // no pointer after it returns, and `latencies_ns` has room for the `MAX_FLOOR_OPERATIONS`
    // values it may write.
    let ret = unsafe {
        sys::helix_floor_run(
            file.as_raw_fd(),
            mode.raw(),
            write_bytes,
            file_bytes,
            duration_ns,
            latencies_ns.as_mut_ptr(),
            MAX_FLOOR_OPERATIONS as u64,
            &ring_config,
            &mut result,
        )
    };
    if ret < 0 {
        return Err(io::Error::from_raw_os_error(-ret));
    }
    latencies_ns.truncate(usize::try_from(result.operations).unwrap_or(MAX_FLOOR_OPERATIONS));
    Ok(CFloorRun {
        latencies_ns,
        elapsed: Duration::from_nanos(result.elapsed_ns),
    })
}

/// Writes `file_bytes` of zeros to `path` and syncs it, so every floor write overwrites
/// allocated, written blocks, as the log's appends into pre-zeroed segments do.
fn prepare_file(path: &Path, file_bytes: u64) -> io::Result<()> {
    /// Zeros written per call while preparing.
    const CHUNK_BYTES: usize = 1 << 20;
    let mut file = File::create(path)?;
    let chunk = vec![0u8; CHUNK_BYTES];
    let mut left = file_bytes;
    while left > 0 {
        let length = usize::try_from(left)
            .unwrap_or(CHUNK_BYTES)
            .min(CHUNK_BYTES);
        file.write_all(&chunk[..length])?;
        left -= length as u64;
    }
    file.sync_all()
}
