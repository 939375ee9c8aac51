//! Load: 64 partitions (one BufferedWal each, with two appenders waiting for durability and a
//! purger keeping the log short) on the io_uring backend, for `HELIX_LOAD_SECONDS` (default 3;
//! the long run is 60). Memory and file descriptors must stay flat: the descriptor count
//! returns exactly to its baseline once the logs are closed, stays under a bound per log while
//! the load runs, and neither it (in runs of 10 s or more) nor the resident set grows between a
//! third and five sixths of the run beyond a stated bound.
#![cfg(all(target_os = "linux", feature = "io-uring"))]

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use helix_wal::{BufferedWal, BufferedWalConfig, Storage, Wal, WalConfig};

const PARTITIONS: usize = 64;
const APPENDERS_PER_PARTITION: usize = 2;
const PAYLOAD_BYTES: usize = 512;
const SEGMENT_SIZE_BYTES: u64 = 256 << 10;
/// Entries a partition keeps behind its durable index. With direct I/O every group commit
/// takes at least a 4 KiB block, so this is a few segments at most.
const KEEP_ENTRIES: u64 = 64;
/// Descriptors one log may hold: its lock, and two per segment (direct I/O writes and buffered
/// reads) for the few live segments, the spare and the recycled files.
const MAX_DESCRIPTORS_PER_LOG: usize = 16;
/// Runs at least this long also check that the descriptors are flat between a third and five
/// sixths of the run (a shorter run may still be filling its first segments).
const FLATNESS_CHECK_SECONDS: u64 = 10;
const PURGE_INTERVAL: Duration = Duration::from_millis(100);
/// Growth of the resident set allowed between a third and five sixths of the run.
const MAX_RSS_GROWTH_BYTES: u64 = 32 << 20;
/// Extra descriptors allowed at five sixths of the run over a third (a rotation in progress
/// per log).
const MAX_FD_GROWTH: usize = PARTITIONS;

/// Resident set and its peak, in bytes, from /proc/self/status.
fn memory() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let field = |name: &str| {
        status
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|kib| kib.parse::<u64>().ok())
            .map_or(0, |kib| kib * 1024)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

fn descriptors() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .expect("/proc/self/fd")
        .count()
}

fn seconds() -> u64 {
    std::env::var("HELIX_LOAD_SECONDS")
        .map(|text| text.parse().expect("HELIX_LOAD_SECONDS is a number"))
        .unwrap_or(3)
}

/// Runs one partition until `deadline`: appenders that wait for durability and a purger.
/// Returns the number of appends made durable.
async fn partition(log: BufferedWal<Arc<dyn Storage>>, deadline: Instant) -> u64 {
    let mut appenders = Vec::new();
    for _ in 0..APPENDERS_PER_PARTITION {
        let log = log.clone();
        appenders.push(tokio::spawn(async move {
            let payload = Bytes::from(vec![0x5Au8; PAYLOAD_BYTES]);
            let mut appended = 0u64;
            while Instant::now() < deadline {
                let index = log.append_next(1, payload.clone()).await.expect("append");
                log.wait_durable(index).await.expect("durable");
                appended += 1;
            }
            appended
        }));
    }
    while Instant::now() < deadline {
        tokio::time::sleep(PURGE_INTERVAL).await;
        let durable = log.durable_index();
        log.purge_before(durable.saturating_sub(KEEP_ENTRIES))
            .await
            .expect("purge");
    }
    let mut total = 0;
    for appender in appenders {
        total += appender.await.expect("appender");
    }
    log.close().await.expect("close");
    total
}

// Proves 64 partitions of concurrent durable appenders on the io_uring backend run without a
// failure, with descriptors and memory flat (bounds above), and that closing the logs and the
// backend returns the descriptor count exactly to its baseline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_four_partitions_stay_flat() {
    let baseline_descriptors = descriptors();
    let Some(harness) = common::Harness::io_uring_direct() else {
        return;
    };
    let duration = Duration::from_secs(seconds());
    let mut logs = Vec::new();
    for number in 0..PARTITIONS {
        let config = WalConfig::new(harness.dir.join(format!("partition-{number}")))
            .segment_size_bytes(SEGMENT_SIZE_BYTES)
            .max_entry_size_bytes(PAYLOAD_BYTES);
        let wal = Wal::open(harness.storage.clone(), config).await.unwrap();
        let settings = BufferedWalConfig {
            flush_interval_ms: 1,
            ..BufferedWalConfig::default()
        };
        logs.push(BufferedWal::new(wal, settings).unwrap());
    }
    // The clock starts once every log is open: a slow setup must not eat the run.
    let started = Instant::now();
    let deadline = started + duration;
    let partitions: Vec<_> = logs
        .into_iter()
        .map(|log| tokio::spawn(partition(log, deadline)))
        .collect();
    let start_memory = memory();
    let start_descriptors = descriptors();
    // Samples at a third and at five sixths of the run, both while it is in full swing.
    tokio::time::sleep(duration / 3).await;
    let middle_memory = memory();
    let middle_descriptors = descriptors();
    tokio::time::sleep(duration / 2).await;
    let late_memory = memory();
    let late_descriptors = descriptors();
    let mut appended = 0;
    for partition in partitions {
        appended += partition.await.expect("partition");
    }
    let end_memory = memory();
    let end_descriptors = descriptors();
    println!(
        "64 partitions x {APPENDERS_PER_PARTITION} appenders for {:.1} s: {appended} durable \
         appends; RSS start {} MiB, a third in {} MiB, five sixths in {} MiB, after close {} \
         MiB, peak {} MiB; descriptors: baseline {baseline_descriptors}, start \
         {start_descriptors}, a third in {middle_descriptors}, five sixths in \
         {late_descriptors}, after close {end_descriptors}",
        started.elapsed().as_secs_f64(),
        start_memory.0 >> 20,
        middle_memory.0 >> 20,
        late_memory.0 >> 20,
        end_memory.0 >> 20,
        end_memory.1 >> 20,
    );
    assert!(
        appended > PARTITIONS as u64,
        "the partitions barely appended"
    );
    assert!(
        late_memory.0 <= middle_memory.0 + MAX_RSS_GROWTH_BYTES,
        "memory grew from {} to {} bytes while the load ran",
        middle_memory.0,
        late_memory.0
    );
    let ceiling = baseline_descriptors + PARTITIONS * MAX_DESCRIPTORS_PER_LOG;
    assert!(
        middle_descriptors.max(late_descriptors) <= ceiling,
        "{middle_descriptors} and {late_descriptors} descriptors, above the bound {ceiling}"
    );
    if duration.as_secs() >= FLATNESS_CHECK_SECONDS {
        assert!(
            late_descriptors <= middle_descriptors + MAX_FD_GROWTH,
            "descriptors grew from {middle_descriptors} to {late_descriptors} while the load ran"
        );
    }
    drop(harness);
    // The ring thread's own descriptors close when the backend shuts down (on the last drop).
    let closed = Instant::now();
    while descriptors() != baseline_descriptors && closed.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(descriptors(), baseline_descriptors, "descriptors leaked");
}
