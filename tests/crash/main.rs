//! Real process crashes: a writer runs in a child process (this test binary, re-executed to run
//! the ignored `child_writer` case), reports on stdout every index it was told is durable, and
//! is killed with SIGKILL at a random moment: mid-append, mid-rotation (segments are small),
//! mid-truncate, mid-purge, mid-group-commit. After each kill this process reopens the log and
//! checks that every entry reported durable is there byte for byte, that every entry it can read
//! is intact (checksummed, contiguous, terms never decreasing), that truncated and purged entries
//! stay gone, and that the log takes a durable append; then the next child continues the same
//! log. Alternate kills run a plain `Wal` and a `BufferedWal` with concurrent appenders. Every
//! fourth kill waits for the plain writer to report that it went idle with unsynced entries
//! written, the moment a power cut surely loses something.
//!
//! `HELIX_CRASH_KILLS` sets the kills per backend (default 200). The OS keeps everything a
//! killed process wrote: a process crash loses nothing a write returned, and these tests check
//! that too.
//!
//! Power loss for real: the `power_loss_*` tests run the same writers on an ext4 file system in
//! a loop-mounted image file (root needed; `HELIX_REQUIRE_ROOT_TESTS=1` makes a missing mount a
//! failure). After the kill the image is copied as it stands: the copy holds what the file system
//! had sent to its block device, and not the dirty pages of its page cache, which a power cut
//! loses. The copy is then mounted (ext4 replays its journal, as after a power cut) and checked.
//! Every entry reported durable must be there; entries written without a sync must go missing
//! in some cuts (else the emulation lost nothing and proves nothing); with direct I/O
//! (`O_DIRECT | O_DSYNC`) a completed write is durable and nothing written may go missing.
//! `HELIX_POWER_CUTS` sets the cuts per backend (default 60).
//!
//! Modules: `child` (the writer in the child process), `crashes` (the parent's loop: run, crash,
//! check, repeat), `model` (what must be in the log, and the check), `loop_disk` (the
//! loop-mounted file system whose power is cut), `flood` (the io_uring lock against a killed
//! writer's in-flight writes) and `meta` (the checks catch a writer that skips its fsyncs).

#[path = "../common/mod.rs"]
mod common;

mod child;
mod crashes;
#[cfg(all(target_os = "linux", feature = "io-uring"))]
mod flood;
mod loop_disk;
#[cfg(feature = "sabotage")]
mod meta;
mod model;

use crashes::{cut_power_repeatedly, kill_repeatedly};

// The child's side: not a test on its own (ignored); the crash tests run it in a child process
// with the `HELIX_CRASH_CHILD_*` variables set, and it runs until it is killed.
#[test]
#[ignore = "the writer the crash tests run in a child process and kill"]
fn child_writer() {
    child::run();
}

// Proves, over HELIX_CRASH_KILLS (default 200) SIGKILLs of writers on TokioStorage, that
// everything acknowledged durable survives and the log stays intact and writable.
#[test]
fn sigkill_tokio_storage() {
    kill_repeatedly("tokio");
}

// The same on the io_uring backend in its default configuration (direct I/O).
#[cfg(all(target_os = "linux", feature = "io-uring"))]
#[test]
fn sigkill_io_uring() {
    if common::Harness::io_uring().is_none() {
        return;
    }
    kill_repeatedly("io-uring");
}

// The same on the io_uring backend with buffered writes and linked fsyncs.
#[cfg(all(target_os = "linux", feature = "io-uring"))]
#[test]
fn sigkill_io_uring_buffered() {
    if common::Harness::io_uring().is_none() {
        return;
    }
    kill_repeatedly("io-uring-buffered");
}

// Proves, over HELIX_POWER_CUTS (default 60) power cuts emulated on a loop-mounted ext4 image,
// that everything acknowledged durable on TokioStorage survives the loss of the page cache, and
// that the emulation really loses unsynced writes.
#[test]
fn power_loss_tokio_storage() {
    cut_power_repeatedly("tokio", false);
}

// The same on the io_uring backend in its default configuration: direct I/O, where every
// completed write must survive.
#[cfg(all(target_os = "linux", feature = "io-uring"))]
#[test]
fn power_loss_io_uring() {
    if common::Harness::io_uring().is_none() {
        return;
    }
    cut_power_repeatedly("io-uring", true);
}

// The same on the io_uring backend with buffered writes and linked fsyncs.
#[cfg(all(target_os = "linux", feature = "io-uring"))]
#[test]
fn power_loss_io_uring_buffered() {
    if common::Harness::io_uring().is_none() {
        return;
    }
    cut_power_repeatedly("io-uring-buffered", false);
}

// Proves the io_uring backend's directory lock outlasts a killed writer's in-flight direct
// writes. The kernel finishes those writes after the process is gone; were the lock free
// meanwhile, a successor could recover and write blocks that a late write then overwrites.
// The child locks a directory on a loop-mounted file system of its own, puts 64 direct writes
// of 128 KiB in flight and is killed, until two kills left writes in flight after the child was
// reaped (about two in five do; at most 32 kills); once the lock is free, nothing more may reach
// that device (its count of sectors written stays put for 300 ms, but for the odd journal
// block). With a plain flock, released with the process's descriptors, the lock is free at
// once and the writes in flight land after it (seven of eight runs failed that way). Root only
// (the mount), like the power-loss tests.
#[cfg(all(target_os = "linux", feature = "io-uring"))]
#[test]
fn a_killed_writers_lock_outlasts_its_in_flight_writes() {
    if common::Harness::io_uring().is_none() {
        return;
    }
    flood::lock_outlasts_in_flight_writes();
}
