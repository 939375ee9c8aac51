//! The io_uring backend's directory lock against a killed writer's in-flight direct writes:
//! the flooding child (many large direct writes in flight under a lock, then killed) and the
//! parent's check that nothing of it reaches the device once the lock is free.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::Stdio;
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use helix_wal::{Storage, TokioStorage};

use crate::child::{report, FLOOD, MARK};
use crate::crashes::{child_command, READY_LIMIT};
use crate::loop_disk::LoopDisk;

/// The file the flooding child writes.
const FILE: &str = "flood";
/// Writes in flight at once: few enough that the kernel issues each to the device at once
/// (the device's queue holds them all) rather than handing some to its worker threads.
const WRITES: u64 = 64;
/// Size of each write.
const WRITE_BYTES: u64 = 128 << 10;
/// Kills that must leave a write in flight after the child is reaped (about two in five
/// do here: the process is reaped only after its io-wq workers exit, and a worker finishes
/// the write it is in, waiting for the device; writes queued for workers are cancelled),
/// and the most kills a test makes to get them.
const ROUNDS_IN_FLIGHT: usize = 2;
const MAX_ROUNDS: usize = 32;
/// Size of the file system image the flooding child writes on.
const IMAGE_BYTES: u64 = 256 << 20;
/// The byte the flooding child's writes carry (the file starts as zeros).
const BYTE: u8 = 0xA5;
/// The unit of the kernel's block device statistics.
const SECTOR_BYTES: u64 = 512;

/// The flooding child: locks `dir`, puts [`WRITES`] direct writes in flight at once, reports
/// when the kernel has them all, and waits to be killed.
pub(crate) async fn writer(dir: &Path) {
    let storage = helix_wal::IoUringWorkerStorage::try_new().expect("io_uring");
    storage.create_dir_all(dir).await.expect("directory");
    let _lock = storage.lock_dir(dir).await.expect("lock");

    let file = storage.open_direct(&dir.join(FILE)).await.expect("open");
    // Every block written and synced first, so that the flood is of pure overwrites, which
    // the kernel issues to the device at once rather than handing to a worker thread.
    let zeros = Bytes::from(vec![0u8; WRITE_BYTES as usize]);
    for write in 0..WRITES {
        file.write_at_and_sync(write * WRITE_BYTES, zeros.clone())
            .await
            .expect("zero");
    }
    let submitted = storage.stats().sqes_submitted;
    let data = Bytes::from(vec![BYTE; WRITE_BYTES as usize]);
    for write in 0..WRITES {
        let file = Arc::clone(&file);
        let data = data.clone();
        tokio::spawn(async move { file.write_at(write * WRITE_BYTES, data).await });
    }
    while storage.stats().sqes_submitted < submitted + WRITES {
        tokio::task::yield_now().await;
    }
    report(FLOOD.to_string());
    std::future::pending::<()>().await;
}

/// The check of `a_killed_writers_lock_outlasts_its_in_flight_writes` (its comment says how).
pub(crate) fn lock_outlasts_in_flight_writes() {
    let probe = helix_wal::IoUringWorkerStorage::try_new().expect("io_uring");
    if probe.stats().held_file_slots == 0 {
        // Before Linux 5.19 the locks are plain flocks (documented); nothing to test here.
        eprintln!("SKIPPED: the kernel refused the ring a file table");
        return;
    }
    drop(probe);
    let temporary = tempfile::tempdir().expect("temporary directory");
    let Some(disk) = LoopDisk::create_sized(temporary.path(), IMAGE_BYTES) else {
        return;
    };
    let device = mounted_device(&disk.mount_point);
    let dir = disk.mount_point.join("log");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    // A kill does not always leave writes in flight once the child is reaped: kill until
    // enough did.
    let a_write = WRITE_BYTES / SECTOR_BYTES;
    let mut landed = Vec::new();
    let mut in_flight = Vec::new();
    let mut waited_ms = Vec::new();
    while in_flight
        .iter()
        .filter(|&&sectors| sectors >= a_write)
        .count()
        < ROUNDS_IN_FLIGHT
        && in_flight.len() < MAX_ROUNDS
    {
        let round = flood_kill_and_lock(&runtime, &dir, &device);
        landed.push(round.after_lock);
        in_flight.push(round.after_reap);
        waited_ms.push(format!("{:.1}", round.waited.as_secs_f64() * 1e3));
    }
    println!(
        "per kill: KiB that reached {device} after the child was reaped {:?}, of which after \
         the lock was free {:?}; ms from reaping the child to a free lock {waited_ms:?}",
        in_flight
            .iter()
            .map(|sectors| sectors / 2)
            .collect::<Vec<_>>(),
        landed.iter().map(|sectors| sectors / 2).collect::<Vec<_>>(),
    );
    // Otherwise too few kills left writes in flight, and the test proved little.
    assert!(
        in_flight
            .iter()
            .filter(|&&sectors| sectors >= a_write)
            .count()
            >= ROUNDS_IN_FLIGHT,
        "{} kills, and too few left a write in flight",
        in_flight.len()
    );
    assert!(
        landed.iter().all(|&sectors| sectors < a_write),
        "writes of a killed child landed after its successor took the lock"
    );
    drop(disk);
}

/// What one kill of a flooding child left behind.
struct FloodRound {
    /// Sectors that reached the device from the reaping of the child until 300 ms after the
    /// lock was free: the child's writes still in flight when it was gone.
    after_reap: u64,
    /// Of those, sectors that reached it after the lock was free.
    after_lock: u64,
    /// From reaping the child to a free lock.
    waited: Duration,
}

/// One round: a flooding child killed with its writes in flight; waits for the lock, then
/// watches the device for 300 ms.
fn flood_kill_and_lock(runtime: &tokio::runtime::Runtime, dir: &Path, device: &str) -> FloodRound {
    let mut child = child_command("io-uring", FLOOD, dir, 1)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn the flooding child");
    let stdout = BufReader::new(child.stdout.take().expect("piped"));
    // Read on a thread of its own, so that a child that never reports cannot hang the test.
    let (flooding_sender, flooding_receiver) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        let flooding = stdout
            .lines()
            .map_while(Result::ok)
            .any(|line| line.strip_prefix(MARK) == Some(FLOOD));
        let _ = flooding_sender.send(flooding);
    });
    let flooding = flooding_receiver.recv_timeout(READY_LIMIT).unwrap_or(false);
    child.kill().expect("SIGKILL the child");
    let output = child.wait_with_output().expect("reap the child");
    let at_reap = sectors_written(device);
    reader.join().expect("reader");
    assert!(
        flooding,
        "the flooding child never had its writes in flight; stderr:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let reaped = Instant::now();
    let lock = loop {
        match runtime.block_on(TokioStorage::new().lock_dir(dir)) {
            Ok(lock) => break lock,
            Err(helix_wal::WalError::Locked { .. }) => {
                assert!(
                    reaped.elapsed() < READY_LIMIT,
                    "the dead child's lock was never released"
                );
                std::thread::sleep(Duration::from_micros(100));
            }
            Err(error) => panic!("lock: {error}"),
        }
    };
    let waited = reaped.elapsed();
    let at_lock = sectors_written(device);
    std::thread::sleep(Duration::from_millis(300));
    drop(lock);
    let end = sectors_written(device);
    FloodRound {
        after_reap: end - at_reap,
        after_lock: end - at_lock,
        waited,
    }
}

/// The block device (e.g. `loop3`) mounted at `mount_point`.
fn mounted_device(mount_point: &Path) -> String {
    let mounts = std::fs::read_to_string("/proc/self/mounts").expect("mount table");
    let target = mount_point.to_str().expect("a UTF-8 path");
    mounts
        .lines()
        .find_map(|line| {
            let mut fields = line.split_whitespace();
            let source = fields.next()?;
            (fields.next()? == target).then(|| source.trim_start_matches("/dev/").to_string())
        })
        .expect("the loop mount is in the mount table")
}

/// Sectors the block device has finished writing since it appeared (sysfs `stat`, 7th field).
fn sectors_written(device: &str) -> u64 {
    let stat = std::fs::read_to_string(format!("/sys/block/{device}/stat")).expect("stat");
    stat.split_whitespace()
        .nth(6)
        .and_then(|field| field.parse().ok())
        .expect("sectors written")
}
