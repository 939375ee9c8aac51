//! Tests specific to the io_uring backend: its counters, batching, the linked write+fsync pair
//! and its recovery from short writes, cancellation, shutdown, backpressure and concurrency.
//! The generic storage contract is proven for it, buffered and in the default direct-I/O
//! configuration, by the conformance suite (tests/storage_conformance.rs).
//!
//! When the machine refuses io_uring, each test says so loudly on stderr and returns (set
//! `HELIX_REQUIRE_IO_URING=1` to turn that into a failure). The tests of the short-write and
//! refused-`O_DIRECT` test hooks exist only with the test-only `test-support` feature, which
//! compiles those hooks into the backend and which scripts/test.sh enables.
#![cfg(all(target_os = "linux", feature = "io-uring"))]

mod common;

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use helix_wal::{
    create_storage_with, IoUringConfig, IoUringStats, IoUringWorkerStorage, StorageOptions,
    WalError,
};

use crate::common::ring::{buffered, pattern, wait_until_idle, IDLE_WAIT_LIMIT};
use crate::common::Harness;

/// A page, the granularity of the short-write test hook.
const PAGE_BYTES: usize = 4096;

fn harness_with(config: IoUringConfig) -> Option<(Harness, IoUringWorkerStorage)> {
    Harness::io_uring_with(config)
}

/// Waits (yielding) until the ring has completed at least `count` requests in all.
async fn wait_for_completions(storage: &IoUringWorkerStorage, count: u64) -> IoUringStats {
    let start = Instant::now();
    loop {
        let stats = storage.stats();
        if stats.requests_completed >= count {
            return stats;
        }
        assert!(
            start.elapsed() < IDLE_WAIT_LIMIT,
            "the ring never completed {count} requests: {stats:?}"
        );
        tokio::task::yield_now().await;
    }
}

/// An owner of write data that records when it is dropped (the buffer is freed).
struct DropFlag {
    data: Vec<u8>,
    dropped: Arc<AtomicBool>,
}

impl AsRef<[u8]> for DropFlag {
    fn as_ref(&self) -> &[u8] {
        &self.data
    }
}

impl Drop for DropFlag {
    fn drop(&mut self) {
        self.dropped.store(true, Ordering::SeqCst);
    }
}

// Proves reads, writes and syncs really go through io_uring: the ring's counters of submitted
// SQEs, io_uring_enter calls and registered-buffer hits grow with the operations.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operations_go_through_the_ring() {
    let Some((harness, storage)) = harness_with(buffered()) else {
        return;
    };
    harness.storage.create_dir_all(&harness.dir).await.unwrap();
    let file = harness.storage.open(&harness.dir.join("a")).await.unwrap();
    let before = storage.stats();
    for round in 0..8u64 {
        let data = Bytes::from(pattern(round as u32, 1000));
        file.write_at(round * 1000, data).await.unwrap();
    }
    file.sync().await.unwrap();
    file.write_at_and_sync(8000, Bytes::from_static(b"tail"))
        .await
        .unwrap();
    assert_eq!(file.read_at(0, 1000).await.unwrap(), pattern(0, 1000));
    let after = storage.stats();
    // 8 writes + 1 fsync + a linked write and fsync + 1 read.
    assert!(
        after.sqes_submitted - before.sqes_submitted >= 12,
        "{after:?}"
    );
    assert!(after.enter_calls > before.enter_calls, "{after:?}");
    assert_eq!(after.requests_completed - before.requests_completed, 11);
    if after.registered_buffers > 0 {
        // 8 writes, the linked write and the read all fit in a 64 KiB registered buffer.
        assert_eq!(
            after.registered_buffer_hits - before.registered_buffer_hits,
            10
        );
    }
}

// Proves the batch size bound: with max_batch = 4 and a long gathering window, 32 concurrent
// writes never put more than 4 requests into one submission, and all complete.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_never_exceed_max_batch() {
    let config = IoUringConfig {
        max_batch: 4,
        gather_window_us: 2_000,
        ..buffered()
    };
    let Some((harness, storage)) = harness_with(config) else {
        return;
    };
    harness.storage.create_dir_all(&harness.dir).await.unwrap();
    let file = harness.storage.open(&harness.dir.join("a")).await.unwrap();
    let tasks: Vec<_> = (0..32u64)
        .map(|slot| {
            let file = Arc::clone(&file);
            tokio::spawn(async move {
                let data = Bytes::from(pattern(slot as u32, 512));
                file.write_at(slot * 512, data).await.unwrap();
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    let stats = wait_until_idle(&storage).await;
    assert!(stats.largest_batch <= 4, "{stats:?}");
    assert!(stats.batches >= 32 / 4, "{stats:?}");
    for slot in 0..32u64 {
        let read = file.read_at(slot * 512, 512).await.unwrap();
        assert_eq!(read, pattern(slot as u32, 512));
    }
}

// Proves the batch time bound: a lone request, which can never fill a batch of 64, is submitted
// once the gathering window runs out (counted as a gather timeout) instead of waiting for more.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lone_request_is_submitted_when_the_window_ends() {
    let config = IoUringConfig {
        max_batch: 64,
        gather_window_us: 2_000,
        ..buffered()
    };
    let Some((harness, storage)) = harness_with(config) else {
        return;
    };
    harness.storage.create_dir_all(&harness.dir).await.unwrap();
    let file = harness.storage.open(&harness.dir.join("a")).await.unwrap();
    let before = storage.stats();
    file.write_at_and_sync(0, Bytes::from_static(b"alone"))
        .await
        .unwrap();
    let after = storage.stats();
    assert_eq!(
        after.gather_timeouts - before.gather_timeouts,
        1,
        "{after:?}"
    );
    assert_eq!(after.largest_batch, 1, "{after:?}");
}

// Proves the linked pair recovers from a genuine short write: the test hook (feature
// `test-support`, as the other hook tests here) makes the kernel write only up to the first
// page boundary (the rest of the source is unreadable), so the kernel cancels the linked fsync;
// the backend writes the remainder with a fresh fsync and reports success only then, and every
// byte is on disk.
#[cfg(feature = "test-support")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn linked_pair_recovers_from_a_short_write() {
    // No registered buffers: the hook works on either path, this keeps the case simple.
    let config = IoUringConfig {
        registered_buffer_count: 0,
        ..buffered()
    };
    let Some((harness, storage)) = harness_with(config) else {
        return;
    };
    harness.storage.create_dir_all(&harness.dir).await.unwrap();
    let path = harness.dir.join("a");
    let file = harness.storage.open(&path).await.unwrap();
    let data = pattern(7, 3 * PAGE_BYTES);
    let before = storage.stats();
    storage.inject_short_write_for_testing();
    file.write_at_and_sync(100, Bytes::from(data.clone()))
        .await
        .unwrap();
    let after = storage.stats();
    assert_eq!(
        after.short_transfers - before.short_transfers,
        1,
        "{after:?}"
    );
    assert_eq!(
        after.linked_fsyncs_cancelled - before.linked_fsyncs_cancelled,
        1,
        "{after:?}"
    );
    let on_disk = std::fs::read(&path).unwrap();
    assert_eq!(&on_disk[100..], &data[..]);
}

// Proves a plain write continues after a genuine short write (same hook, no fsync involved).
#[cfg(feature = "test-support")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn write_continues_after_a_short_write() {
    let Some((harness, storage)) = harness_with(buffered()) else {
        return;
    };
    harness.storage.create_dir_all(&harness.dir).await.unwrap();
    let file = harness.storage.open(&harness.dir.join("a")).await.unwrap();
    let data = pattern(3, 2 * PAGE_BYTES + 17);
    storage.inject_short_write_for_testing();
    file.write_at(10, Bytes::from(data.clone())).await.unwrap();
    assert_eq!(storage.stats().short_transfers, 1);
    assert_eq!(file.read_at(10, data.len()).await.unwrap(), data);
}

// Proves cancellation safety: a write whose future is dropped while the kernel holds it keeps
// its buffer alive until its completion (the data lands intact although other buffers are
// allocated and filled meanwhile), the buffer is freed afterwards, and the ring keeps working.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_a_future_mid_write_keeps_its_buffer_alive() {
    let Some((harness, storage)) = harness_with(buffered()) else {
        return;
    };
    harness.storage.create_dir_all(&harness.dir).await.unwrap();
    let path = harness.dir.join("a");
    let file = harness.storage.open(&path).await.unwrap();
    let data = pattern(11, 8 << 20);
    // One poll queues the write; the zero timeout then drops the future mid-flight. If this
    // thread was descheduled long enough for the write to finish within that poll, nothing was
    // dropped mid-flight: try again.
    let mut attempts = 0;
    let (dropped, before) = loop {
        let dropped = Arc::new(AtomicBool::new(false));
        let owner = DropFlag {
            data: data.clone(),
            dropped: Arc::clone(&dropped),
        };
        let before = wait_until_idle(&storage).await;
        let write = file.write_at_and_sync(0, Bytes::from_owner(owner));
        if tokio::time::timeout(Duration::ZERO, write).await.is_err() {
            break (dropped, before);
        }
        attempts += 1;
        assert!(
            attempts < 10,
            "an 8 MiB durable write finished within one poll {attempts} times"
        );
    };
    // Churn the allocator so a freed buffer would likely be reused and overwritten.
    let churn: Vec<Vec<u8>> = (0..16).map(|_| vec![0xEE; 1 << 20]).collect();
    // Idle is not enough: the ring thread may not have taken the abandoned write yet.
    wait_for_completions(&storage, before.requests_completed + 1).await;
    let stats = wait_until_idle(&storage).await;
    drop(churn);
    assert!(
        dropped.load(Ordering::SeqCst),
        "buffer freed after completion"
    );
    assert_eq!(stats.in_flight, 0);
    assert_eq!(std::fs::read(&path).unwrap(), data);
    file.write_at_and_sync(0, Bytes::from_static(b"still works"))
        .await
        .unwrap();
    assert_eq!(&file.read_at(0, 11).await.unwrap()[..], b"still works");
}

// Proves a failed write poisons its file even when nobody awaits it: the write (at an offset
// the kernel rejects) is dropped after one poll; the ring thread records the failure it settles
// for nobody, so later writes and syncs of the bare file (no CheckedStorage above it, which
// could not see the failure) are refused as Poisoned while reads keep working. A write whose
// one poll already saw it fail was not abandoned (its caller got the error): the attempt is
// repeated on a fresh file until one is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_write_poisons_even_when_its_future_is_dropped() {
    const ATTEMPTS: usize = 100;
    let Some((harness, storage)) = harness_with(buffered()) else {
        return;
    };
    harness.storage.create_dir_all(&harness.dir).await.unwrap();
    let bad_offset = u64::MAX - 16;
    for attempt in 0..ATTEMPTS {
        let path = harness.dir.join(format!("a{attempt}"));
        let file = harness.storage.open(&path).await.unwrap();
        file.write_at(0, Bytes::from_static(b"kept")).await.unwrap();
        let before = wait_until_idle(&storage).await;
        let mut write = Box::pin(file.write_at(bad_offset, Bytes::from_static(b"rejected")));
        let polled = std::future::poll_fn(|context| {
            std::task::Poll::Ready(write.as_mut().poll(context).is_ready())
        })
        .await;
        drop(write);
        if polled {
            continue;
        }
        // Idle is not enough: the ring thread may not have taken the abandoned write yet.
        wait_for_completions(&storage, before.requests_completed + 1).await;
        let refused = file.write_at(4, Bytes::from_static(b"x")).await;
        assert!(
            matches!(refused, Err(WalError::Poisoned { .. })),
            "{refused:?}"
        );
        assert!(file.sync().await.unwrap_err().is_poisoned());
        assert_eq!(&file.read_at(0, 4).await.unwrap()[..], b"kept");
        return;
    }
    panic!("in {ATTEMPTS} attempts the write always failed within its first poll");
}

// Proves graceful shutdown with operations in flight: 64 durable writes are racing when the
// storage shuts down; each either succeeds (and its data is on disk) or fails with Shutdown,
// none hangs, and every later call fails with Shutdown.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_drains_in_flight_operations() {
    let Some((harness, storage)) = harness_with(buffered()) else {
        return;
    };
    harness.storage.create_dir_all(&harness.dir).await.unwrap();
    let path = harness.dir.join("a");
    let file = harness.storage.open(&path).await.unwrap();
    let tasks: Vec<_> = (0..64u64)
        .map(|slot| {
            let file = Arc::clone(&file);
            tokio::spawn(async move {
                let data = Bytes::from(pattern(slot as u32, 4096));
                file.write_at_and_sync(slot * 4096, data).await
            })
        })
        .collect();
    // Shut down once the ring has started some of them.
    while storage.stats().requests_started == 0 {
        tokio::task::yield_now().await;
    }
    let stopper = storage.clone();
    tokio::task::spawn_blocking(move || stopper.shutdown())
        .await
        .unwrap();
    let on_disk = std::fs::read(&path).unwrap();
    let mut succeeded = 0;
    for (slot, task) in tasks.into_iter().enumerate() {
        match task.await.unwrap() {
            Ok(()) => {
                succeeded += 1;
                let range = slot * 4096..(slot + 1) * 4096;
                assert_eq!(on_disk[range], pattern(slot as u32, 4096)[..]);
            }
            Err(WalError::Shutdown { .. }) => {}
            Err(other) => panic!("unexpected error {other:?}"),
        }
    }
    assert!(succeeded >= 1);
    assert_eq!(storage.stats().in_flight, 0);
    let after = file.write_at(0, Bytes::from_static(b"late")).await;
    assert!(matches!(after, Err(WalError::Shutdown { .. })), "{after:?}");
    assert!(matches!(
        harness.storage.open(&path).await,
        Err(WalError::Shutdown { .. })
    ));
    assert!(matches!(
        file.read_at(0, 4).await,
        Err(WalError::Shutdown { .. })
    ));
}

// Proves backpressure: with the smallest ring (one request at a time), 64 concurrent writers on
// 4 files all wait their turn and complete correctly; nothing is dropped or reordered between
// callers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tiny_ring_makes_callers_wait() {
    let config = IoUringConfig {
        sq_entries: 2,
        max_batch: 1,
        ..buffered()
    };
    let Some((harness, storage)) = harness_with(config) else {
        return;
    };
    assert_eq!(storage.capacity(), 1);
    harness.storage.create_dir_all(&harness.dir).await.unwrap();
    let mut files = Vec::new();
    for number in 0..4 {
        let path = harness.dir.join(format!("f{number}"));
        files.push(harness.storage.open(&path).await.unwrap());
    }
    let tasks: Vec<_> = (0..64u32)
        .map(|task| {
            let file = Arc::clone(&files[task as usize % 4]);
            tokio::spawn(async move {
                let offset = u64::from(task / 4) * 1000;
                let data = Bytes::from(pattern(task, 1000));
                file.write_at_and_sync(offset, data).await.unwrap();
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    let stats = wait_until_idle(&storage).await;
    assert_eq!(stats.max_in_flight, 1);
    assert_eq!(stats.largest_batch, 1);
    for task in 0..64u32 {
        let file = &files[task as usize % 4];
        let read = file
            .read_at(u64::from(task / 4) * 1000, 1000)
            .await
            .unwrap();
        assert_eq!(read, pattern(task, 1000));
    }
}

// Proves many tasks on many files get exactly their own completions: 16 files x 24 tasks of
// mixed sizes (some larger than a registered buffer, some reading back at once) all read back
// their own bytes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_tasks_on_many_files_get_their_own_completions() {
    let config = IoUringConfig {
        registered_buffer_count: 8,
        registered_buffer_bytes: 16 << 10,
        ..buffered()
    };
    let Some((harness, storage)) = harness_with(config) else {
        return;
    };
    harness.storage.create_dir_all(&harness.dir).await.unwrap();
    const SLOT_BYTES: usize = 40 << 10;
    let mut tasks = Vec::new();
    for number in 0..16u32 {
        let path = harness.dir.join(format!("f{number}"));
        let file = harness.storage.open(&path).await.unwrap();
        for slot in 0..24u32 {
            let file = Arc::clone(&file);
            tasks.push(tokio::spawn(async move {
                let seed = number * 100 + slot;
                let len = 1 + (seed as usize * 977) % SLOT_BYTES;
                let offset = u64::from(slot) * SLOT_BYTES as u64;
                let data = pattern(seed, len);
                if slot % 3 == 0 {
                    file.write_at_and_sync(offset, Bytes::from(data.clone()))
                        .await
                        .unwrap();
                } else {
                    file.write_at(offset, Bytes::from(data.clone()))
                        .await
                        .unwrap();
                }
                assert_eq!(file.read_at(offset, len).await.unwrap(), data);
            }));
        }
    }
    for task in tasks {
        task.await.unwrap();
    }
    let stats = wait_until_idle(&storage).await;
    assert_eq!(stats.requests_completed, stats.requests_started);
    if stats.registered_buffers > 0 {
        // Both paths were taken: writes of up to 16 KiB in the pool, larger ones without it.
        assert!(stats.registered_buffer_misses > 0, "{stats:?}");
        assert!(stats.registered_buffer_hits > 0, "{stats:?}");
    } else {
        // Registration refused (RLIMIT_MEMLOCK for an unprivileged user): all plain I/O.
        eprintln!(
            "registered buffers refused: errno {:?}",
            stats.registration_errno
        );
    }
}

// Proves the ring holds directory locks: a lock taken through the backend is held in the
// ring's file table (counted), excludes any other lock on the directory, and once dropped is
// released through the ring thread (the count returns to zero and the directory can be locked
// again, by this backend or another). A log opened, closed and reopened at once in one process
// gets its lock back. (crash::a_killed_writers_lock_outlasts_its_in_flight_writes proves what
// the holding is for.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ring_holds_directory_locks_until_released() {
    use helix_wal::{Storage, TokioStorage, Wal, WalConfig};
    let Some((harness, storage)) = harness_with(IoUringConfig::default()) else {
        return;
    };
    let stats = storage.stats();
    if stats.held_file_slots == 0 {
        // Before Linux 5.19 the locks are plain flocks (documented); nothing to test here.
        eprintln!("SKIPPED: the kernel refused the ring a file table: {stats:?}");
        return;
    }
    assert_eq!(stats.held_files_errno, None);
    harness.storage.create_dir_all(&harness.dir).await.unwrap();
    let lock = storage.lock_dir(&harness.dir).await.unwrap();
    assert_eq!(storage.stats().held_files, 1);
    let plain = TokioStorage::new();
    assert!(matches!(
        plain.lock_dir(&harness.dir).await,
        Err(WalError::Locked { .. })
    ));
    assert!(matches!(
        storage.lock_dir(&harness.dir).await,
        Err(WalError::Locked { .. })
    ));
    assert_eq!(
        storage.stats().held_files,
        1,
        "a refused lock holds nothing"
    );
    drop(lock);
    let released = Instant::now();
    while storage.stats().held_files != 0 {
        assert!(
            released.elapsed() < IDLE_WAIT_LIMIT,
            "the ring never released the lock"
        );
        tokio::task::yield_now().await;
    }
    // The kernel puts the released file a little later on some kernels (up to a second
    // before 6.4): the flock comes free then.
    loop {
        match plain.lock_dir(&harness.dir).await {
            Ok(lock) => break drop(lock),
            Err(WalError::Locked { .. }) => {
                assert!(
                    released.elapsed() < IDLE_WAIT_LIMIT,
                    "the released lock never came free"
                );
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            Err(error) => panic!("lock: {error}"),
        }
    }
    let dir = harness.dir.join("log");
    for _ in 0..3 {
        let mut wal = Wal::open(storage.clone(), WalConfig::new(&dir))
            .await
            .unwrap();
        assert_eq!(storage.stats().held_files, 1);
        wal.append_batch_durable(&[helix_wal::Entry::new(
            wal.last_index() + 1,
            1,
            Bytes::from_static(b"entry"),
        )])
        .await
        .unwrap();
        wal.close().await.unwrap();
        drop(wal);
    }
    let wal = Wal::open(storage.clone(), WalConfig::new(&dir))
        .await
        .unwrap();
    assert_eq!(wal.last_index(), 3);
}

// Proves a released lock waits for the writes the ring started before the release: a 64 MiB
// durable write is abandoned after one poll (its caller gave up; the ring still runs it), the
// lock is dropped, and the ring keeps the lock file until the write has finished (the release
// is seen waiting, the lock still held); then it lets go, and the write's data is on disk.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_released_lock_waits_for_writes_in_flight() {
    use helix_wal::Storage;
    let Some((harness, storage)) = harness_with(buffered()) else {
        return;
    };
    if storage.stats().held_file_slots == 0 {
        eprintln!("SKIPPED: the kernel refused the ring a file table");
        return;
    }
    harness.storage.create_dir_all(&harness.dir).await.unwrap();
    let path = harness.dir.join("a");
    let file = harness.storage.open(&path).await.unwrap();
    let data = pattern(5, 64 << 20);
    let mut attempts = 0;
    loop {
        let lock = storage.lock_dir(&harness.dir).await.unwrap();
        let before = wait_until_idle(&storage).await;
        let write = file.write_at_and_sync(0, Bytes::from(data.clone()));
        let abandoned = tokio::time::timeout(Duration::ZERO, write).await.is_err();
        drop(lock);
        let mut seen_waiting = false;
        let started = Instant::now();
        loop {
            let stats = storage.stats();
            if stats.held_files_releasing == 1 {
                assert_eq!(stats.held_files, 1, "{stats:?}");
                seen_waiting = true;
            }
            if stats.held_files == 0 {
                break;
            }
            assert!(
                started.elapsed() < IDLE_WAIT_LIMIT,
                "the lock was never released: {stats:?}"
            );
            tokio::task::yield_now().await;
        }
        // The release came after the write, so the write finished first (both counted).
        let stats = storage.stats();
        assert!(
            stats.requests_completed >= before.requests_completed + 2,
            "{stats:?}"
        );
        if abandoned && seen_waiting {
            break;
        }
        // The write finished before the release was taken: nothing was waited for. Again.
        attempts += 1;
        assert!(attempts < 10, "never saw a release wait for a write");
    }
    wait_until_idle(&storage).await;
    assert_eq!(std::fs::read(&path).unwrap(), data);
}

// Proves the factory picks io_uring on this machine and reports it, and picks TokioStorage
// when io_uring is not preferred.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_factory_reports_its_choice() {
    if harness_with(buffered()).is_none() {
        return;
    }
    let choice = create_storage_with(&StorageOptions::default());
    assert_eq!(choice.backend, "io_uring");
    assert_eq!(choice.storage.name(), "io_uring");
    assert!(choice.fallback_reason.is_none());
    let mut options = StorageOptions::default();
    options.prefer_io_uring = false;
    let choice = create_storage_with(&options);
    assert_eq!(choice.backend, "tokio");
    assert!(choice.fallback_reason.is_none());
}

// Proves an invalid configuration is refused with a structured error before any ring exists,
// and that the factory then falls back to TokioStorage and says why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_configuration_falls_back_with_a_reason() {
    let config = IoUringConfig {
        sq_entries: 3,
        ..buffered()
    };
    match IoUringWorkerStorage::with_config(config.clone()) {
        Err(WalError::InvalidConfig { field, .. }) => assert_eq!(field, "sq_entries"),
        other => panic!("expected InvalidConfig, got {other:?}"),
    }
    let mut options = StorageOptions::default();
    options.io_uring = config;
    let choice = create_storage_with(&options);
    assert_eq!(choice.backend, "tokio");
    assert!(matches!(
        choice.fallback_reason,
        Some(WalError::InvalidConfig { .. })
    ));
}

// Proves the SQPOLL option works: the ring either runs with a kernel polling thread or, when
// the kernel refuses it, without; either way durable writes complete and read back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqpoll_is_used_or_falls_back() {
    let config = IoUringConfig {
        sqpoll_idle_ms: 50,
        ..buffered()
    };
    let Some((harness, storage)) = harness_with(config) else {
        return;
    };
    let stats = storage.stats();
    eprintln!("sqpoll granted: {}", stats.sqpoll);
    assert!(
        !(stats.sqpoll && stats.defer_taskrun),
        "SQPOLL excludes DEFER_TASKRUN"
    );
    harness.storage.create_dir_all(&harness.dir).await.unwrap();
    let file = harness.storage.open(&harness.dir.join("a")).await.unwrap();
    for round in 0..16u64 {
        let data = Bytes::from(pattern(round as u32, 3000));
        file.write_at_and_sync(round * 3000, data).await.unwrap();
    }
    for round in 0..16u64 {
        let read = file.read_at(round * 3000, 3000).await.unwrap();
        assert_eq!(read, pattern(round as u32, 3000));
    }
}

// Proves the task-running modes: each is granted as asked on this kernel (6.1 or later has all
// three), reported in the stats, and the ring serves durable writes and reads under it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_task_run_mode_is_granted_and_works() {
    use helix_wal::TaskRun;
    for mode in [TaskRun::Best, TaskRun::Cooperative, TaskRun::Plain] {
        let config = IoUringConfig {
            task_run: mode,
            ..buffered()
        };
        let Some((harness, storage)) = harness_with(config) else {
            return;
        };
        let stats = storage.stats();
        match mode {
            TaskRun::Best => assert!(stats.defer_taskrun, "{stats:?}"),
            TaskRun::Cooperative => {
                assert!(stats.coop_taskrun && !stats.defer_taskrun, "{stats:?}")
            }
            TaskRun::Plain => {
                assert!(!stats.coop_taskrun && !stats.defer_taskrun, "{stats:?}")
            }
        }
        harness.storage.create_dir_all(&harness.dir).await.unwrap();
        let file = harness.storage.open(&harness.dir.join("a")).await.unwrap();
        for round in 0..8u64 {
            let data = Bytes::from(pattern(round as u32, 3000));
            file.write_at_and_sync(round * 3000, data).await.unwrap();
        }
        for round in 0..8u64 {
            let read = file.read_at(round * 3000, 3000).await.unwrap();
            assert_eq!(read, pattern(round as u32, 3000));
        }
    }
}

// Proves `ring_cpu`: the ring thread runs pinned to the CPU asked for (its affinity in /proc
// says so) and serves requests; a CPU the process may not use is refused as InvalidConfig.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ring_thread_can_be_pinned_to_a_cpu() {
    let config = IoUringConfig {
        ring_cpu: Some(0),
        ..buffered()
    };
    let Some((harness, _storage)) = harness_with(config) else {
        return;
    };
    harness.storage.create_dir_all(&harness.dir).await.unwrap();
    let file = harness.storage.open(&harness.dir.join("a")).await.unwrap();
    file.write_at_and_sync(0, Bytes::from(pattern(1, 3000)))
        .await
        .unwrap();
    assert_eq!(file.read_at(0, 3000).await.unwrap(), pattern(1, 3000));
    let pinned = std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(Result::ok)
        .filter(|task| {
            std::fs::read_to_string(task.path().join("comm"))
                .is_ok_and(|name| name.trim() == "helix-uring")
        })
        .filter_map(|task| std::fs::read_to_string(task.path().join("status")).ok())
        .any(|status| {
            status.lines().any(|line| {
                line.split_whitespace().collect::<Vec<_>>() == ["Cpus_allowed_list:", "0"]
            })
        });
    assert!(pinned, "no ring thread runs pinned to CPU 0");
    let refused = IoUringWorkerStorage::with_config(IoUringConfig {
        ring_cpu: Some(100_000),
        ..buffered()
    });
    match refused {
        Err(WalError::InvalidConfig { field, .. }) => assert_eq!(field, "ring_cpu"),
        other => panic!("CPU 100000 accepted: {other:?}"),
    }
}

// Proves a ring without registered buffers (none asked for) serves every operation through
// plain reads and writes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn works_without_registered_buffers() {
    let config = IoUringConfig {
        registered_buffer_count: 0,
        ..buffered()
    };
    let Some((harness, storage)) = harness_with(config) else {
        return;
    };
    harness.storage.create_dir_all(&harness.dir).await.unwrap();
    let file = harness.storage.open(&harness.dir.join("a")).await.unwrap();
    let data = pattern(5, 100_000);
    file.write_at_and_sync(0, Bytes::from(data.clone()))
        .await
        .unwrap();
    assert_eq!(file.read_at(0, data.len()).await.unwrap(), data);
    let stats = storage.stats();
    assert_eq!(stats.registered_buffers, 0);
    assert_eq!(stats.registered_buffer_hits, 0);
}

// Proves direct I/O mode really bypasses the page cache and needs no fsync: a file from
// open_direct demands 4096-byte alignment, a misaligned write is refused by the kernel (EINVAL,
// which only an O_DIRECT descriptor does) while a file from open takes it, and an aligned
// durable write, from a registered buffer or from aligned heap memory when it does not fit one,
// queues no fsync (O_DSYNC makes the write itself durable) and reads back through the buffered
// descriptor.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_io_writes_whole_blocks_without_fsync() {
    let config = IoUringConfig::default();
    assert!(config.direct_io, "direct I/O is the default");
    let Some((harness, storage)) = harness_with(config) else {
        return;
    };
    harness.storage.create_dir_all(&harness.dir).await.unwrap();
    let misaligned = harness.storage.open_direct(&harness.dir.join("a")).await;
    let misaligned = misaligned.unwrap();
    assert_eq!(misaligned.write_alignment(), PAGE_BYTES as u64);
    let refused = misaligned.write_at(100, Bytes::from_static(b"x")).await;
    match refused {
        Err(WalError::Io { source, .. }) => {
            assert_eq!(source.raw_os_error(), Some(22), "EINVAL expected: {source}")
        }
        other => panic!("a misaligned direct write was not refused: {other:?}"),
    }
    let plain = harness.storage.open(&harness.dir.join("a")).await.unwrap();
    assert_eq!(plain.write_alignment(), 1);
    plain
        .write_at_and_sync(100, Bytes::from_static(b"x"))
        .await
        .unwrap();

    let file = harness.storage.open_direct(&harness.dir.join("b")).await;
    let file = file.unwrap();
    for (offset, length) in [(0u64, PAGE_BYTES), (PAGE_BYTES as u64, 32 * PAGE_BYTES)] {
        let data = pattern(offset as u32 + 1, length);
        let before = wait_until_idle(&storage).await;
        file.write_at_and_sync(offset, Bytes::from(data.clone()))
            .await
            .unwrap();
        let after = wait_until_idle(&storage).await;
        assert_eq!(
            after.fsyncs_submitted, before.fsyncs_submitted,
            "{length} bytes"
        );
        assert_eq!(after.requests_completed - before.requests_completed, 1);
        assert_eq!(file.read_at(offset, length).await.unwrap(), data);
    }
    let stats = storage.stats();
    assert!(stats.registered_buffer_hits >= 1 && stats.registered_buffer_misses >= 1);
}

// Proves the fallback when a filesystem refuses O_DIRECT: files from open_direct are then
// buffered (no alignment demanded, durable writes by a linked fsync), and a log on them works
// and reopens.
#[cfg(feature = "test-support")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_filesystem_refusing_direct_io_gets_buffered_files() {
    use helix_wal::{Entry, Wal, WalConfig};
    let Some((harness, storage)) = harness_with(IoUringConfig::default()) else {
        return;
    };
    storage.refuse_direct_io_for_testing();
    harness.storage.create_dir_all(&harness.dir).await.unwrap();
    let file = harness.storage.open_direct(&harness.dir.join("a")).await;
    let file = file.unwrap();
    assert_eq!(file.write_alignment(), 1);
    let before = storage.stats().fsyncs_submitted;
    file.write_at_and_sync(3, Bytes::from_static(b"unaligned"))
        .await
        .unwrap();
    assert_eq!(storage.stats().fsyncs_submitted, before + 1);
    let config = WalConfig::new(harness.dir.join("log"))
        .segment_size_bytes(64 << 10)
        .max_entry_size_bytes(1024);
    let mut wal = Wal::open(harness.storage.clone(), config.clone())
        .await
        .unwrap();
    wal.append_batch_durable(&[Entry::new(1, 1, Bytes::from_static(b"one"))])
        .await
        .unwrap();
    wal.close().await.unwrap();
    drop(wal);
    let wal = Wal::open(harness.storage.clone(), config).await.unwrap();
    assert_eq!(&wal.read(1).await.unwrap().payload[..], b"one");
}
