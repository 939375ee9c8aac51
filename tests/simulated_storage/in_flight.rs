//! Calls left in flight (`SimulatedConfig::in_flight_rate`): pending on their first poll,
//! completed at later seeded points even when their future is dropped, out of order, and
//! resolved by crashes; deterministic for a seed.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use helix_wal::{
    CheckedStorage, FaultConfig, FaultCounters, FaultKind, OneShotFault, SimulatedConfig,
    SimulatedStorage, Storage, StorageFile, WalError,
};

use super::{contents, dir, durable_file, machine, SEEDS};

/// Polls `future` once, outside any runtime, so a test sees exactly what one poll returns.
fn poll_once<F: Future + Unpin>(future: &mut F) -> Poll<F::Output> {
    Pin::new(future).poll(&mut Context::from_waker(Waker::noop()))
}

/// Most polls an operation in flight can need in these tests: each poll completes it with even
/// odds, so 200 polls without completion would be a bug, not bad luck (and runs are seeded).
const MAX_POLLS: usize = 200;

/// Polls `future` until it is ready; panics if it takes more than [`MAX_POLLS`] polls.
fn poll_to_completion<F: Future + Unpin>(future: &mut F) -> F::Output {
    for _ in 0..MAX_POLLS {
        if let Poll::Ready(output) = poll_once(future) {
            return output;
        }
    }
    panic!("a storage call in flight did not complete in {MAX_POLLS} polls");
}

/// A machine with `/data` whose calls go in flight with probability `rate`.
fn in_flight_machine(seed: u64, rate: f64) -> SimulatedStorage {
    let storage = machine(seed);
    storage.set_in_flight_rate(rate).unwrap();
    storage
}

/// Makes later calls complete at once, then makes calls (reads of `file`, which are completion
/// points and change nothing) until nothing is in flight.
async fn drain_with_reads(storage: &SimulatedStorage, file: &dyn StorageFile) {
    storage.set_in_flight_rate(0.0).unwrap();
    for _ in 0..MAX_POLLS {
        if storage.in_flight_count() == 0 {
            return;
        }
        let _ = file.size().await;
    }
    panic!("calls in flight did not complete in {MAX_POLLS} calls");
}

// Proves the knob's two ends for every kind of call: at rate 0 (the default) each call is ready
// on its first poll and nothing is counted in flight; at rate 1 each call but lock_dir returns
// Pending on its first poll and then completes with its proper result when polled on. Also
// proves invalid rates are refused, naming the field.
#[tokio::test]
async fn calls_go_in_flight_only_when_the_rate_says_so() {
    for rate in [0.0, 1.0] {
        let storage = in_flight_machine(11, rate);
        let (path, moved) = (dir().join("a"), dir().join("b"));
        durable_file(&storage, &path, b"abc").await;
        let file = storage.open(&path).await.unwrap();
        let expect_pending = rate == 1.0;
        let before = storage.counters().in_flight_submitted;
        let results = [
            first_poll_then_finish(storage.open(&path), expect_pending).map(drop),
            first_poll_then_finish(file.write_at(3, Bytes::from_static(b"d")), expect_pending),
            first_poll_then_finish(file.read_at(0, 4), expect_pending)
                .map(|data| assert_eq!(&data[..], b"abcd")),
            first_poll_then_finish(file.size(), expect_pending).map(|size| assert_eq!(size, 4)),
            first_poll_then_finish(file.set_len(4), expect_pending),
            first_poll_then_finish(file.sync(), expect_pending),
            first_poll_then_finish(
                file.write_at_and_sync(0, Bytes::from_static(b"A")),
                expect_pending,
            ),
            first_poll_then_finish(file.evict_cache(), expect_pending),
            first_poll_then_finish(storage.exists(&path), expect_pending)
                .map(|found| assert!(found)),
            first_poll_then_finish(storage.is_dir(&dir()), expect_pending).map(|dir| assert!(dir)),
            first_poll_then_finish(storage.list(&dir()), expect_pending)
                .map(|names| assert_eq!(names, std::slice::from_ref(&path))),
            first_poll_then_finish(storage.create_dir_all(&dir().join("sub")), expect_pending),
            first_poll_then_finish(storage.sync_dir(&dir()), expect_pending),
            first_poll_then_finish(storage.rename(&path, &moved), expect_pending),
            first_poll_then_finish(storage.remove(&moved), expect_pending),
        ];
        let calls = results.len() as u64;
        for (call, result) in results.into_iter().enumerate() {
            result.unwrap_or_else(|error| panic!("rate {rate}, call {call}: {error}"));
        }
        let data_dir = dir();
        let mut lock = storage.lock_dir(&data_dir);
        assert!(
            poll_once(&mut lock).is_ready(),
            "lock_dir is never in flight"
        );
        let submitted = storage.counters().in_flight_submitted - before;
        assert_eq!(
            submitted,
            if expect_pending { calls } else { 0 },
            "rate {rate}"
        );
    }
    let storage = machine(1);
    for bad in [1.5, -0.1, f64::NAN] {
        match storage.set_in_flight_rate(bad) {
            Err(WalError::InvalidConfig { field, .. }) => assert_eq!(field, "in_flight_rate"),
            other => panic!("rate {bad} accepted: {other:?}"),
        }
    }
    let config = SimulatedConfig {
        in_flight_rate: 2.0,
        ..SimulatedConfig::new(1)
    };
    assert!(SimulatedStorage::with_config(config).is_err());
}

/// Polls `future` once, checks that it was pending exactly when `expect_pending` says so, and
/// polls it to its result.
fn first_poll_then_finish<T, F: Future<Output = Result<T, WalError>> + Unpin>(
    mut future: F,
    expect_pending: bool,
) -> Result<T, WalError> {
    match poll_once(&mut future) {
        Poll::Ready(result) => {
            assert!(!expect_pending, "ready on its first poll at rate 1");
            result
        }
        Poll::Pending => {
            assert!(expect_pending, "pending at rate 0");
            poll_to_completion(&mut future)
        }
    }
}

// Proves a call in flight is not cancelled by dropping its future: a write polled once (Pending)
// and dropped is still in flight, lands once later calls give it the chance, and is counted as
// landed after a drop; a second one, dropped the same way, lands in a process crash.
#[tokio::test]
async fn a_dropped_write_still_lands() {
    let storage = in_flight_machine(12, 1.0);
    let path = dir().join("log");
    let file = storage.open(&path).await.unwrap();
    let mut write = file.write_at(0, Bytes::from_static(b"dropped"));
    assert!(poll_once(&mut write).is_pending());
    drop(write);
    assert_eq!(storage.in_flight_count(), 1);
    drain_with_reads(&storage, file.as_ref()).await;
    assert_eq!(&file.read_at(0, 100).await.unwrap()[..], b"dropped");
    assert_eq!(storage.counters().in_flight_landed_after_drop, 1);

    storage.set_in_flight_rate(1.0).unwrap();
    let mut write = file.write_at(7, Bytes::from_static(b" twice"));
    assert!(poll_once(&mut write).is_pending());
    drop(write);
    // Submitting gave it no chance to complete, and nothing has since.
    assert_eq!(storage.in_flight_count(), 1);
    storage.crash_keeping_everything();
    assert_eq!(storage.in_flight_count(), 0);
    assert_eq!(contents(&storage, &path).await.unwrap(), b"dropped twice");
    assert_eq!(storage.counters().in_flight_landed_after_drop, 2);
}

/// Final contents after a write W1 of `AAAA` is dropped in flight, then a write W2 of `BBBB` to
/// the same offset is submitted and awaited to completion, and everything settles.
async fn overtaken_write(seed: u64) -> Vec<u8> {
    let storage = in_flight_machine(seed, 1.0);
    let path = dir().join("log");
    let file = storage.open(&path).await.unwrap();
    let mut first = file.write_at(0, Bytes::from_static(b"AAAA"));
    assert!(poll_once(&mut first).is_pending());
    drop(first);
    file.write_at(0, Bytes::from_static(b"BBBB")).await.unwrap();
    storage.complete_in_flight();
    assert_eq!(
        storage.counters().in_flight_landed_after_drop,
        1,
        "seed {seed}"
    );
    file.read_at(0, 4).await.unwrap().to_vec()
}

// Proves calls in flight complete out of order, as a kernel's do: a write whose future was
// dropped can land after a later write to the same offset that was submitted and completed, so
// the file ends with the dropped write's bytes (for some seed), while other seeds end with the
// later write's. Were dropped calls cancelled, every seed would end with `BBBB` and the search
// for `AAAA` would fail.
#[tokio::test]
async fn a_dropped_write_can_land_after_a_later_write() {
    let mut endings = std::collections::BTreeSet::new();
    for seed in 0..SEEDS {
        endings.insert(overtaken_write(seed).await);
    }
    let expected: std::collections::BTreeSet<Vec<u8>> = [b"AAAA".to_vec(), b"BBBB".to_vec()].into();
    assert_eq!(endings, expected, "both orders happen, and nothing else");
}

// Proves a failed write in flight is reported, never lost, though its future was dropped: the
// fault is decided when the write completes, nobody sees it then, so the handle's next write
// fails with it (Poisoned, naming it), and through CheckedStorage every later one does too.
// A fresh handle to the same file still writes: the simulator poisons nothing else.
#[tokio::test]
async fn a_dropped_failing_write_poisons_its_checked_file() {
    let storage = in_flight_machine(13, 1.0);
    let checked = CheckedStorage::new(storage.clone());
    let path = dir().join("log");
    let file = checked.open(&path).await.unwrap();
    storage.inject(OneShotFault::next(FaultKind::WriteError));
    let mut write = file.write_at(0, Bytes::from_static(b"fails"));
    assert!(poll_once(&mut write).is_pending());
    drop(write);
    assert_eq!(storage.counters().write_errors, 0, "decided at completion");
    drain_with_reads(&storage, file.as_ref()).await;
    assert_eq!(storage.counters().write_errors, 1);
    let refused = file.write_at(0, Bytes::from_static(b"later")).await;
    assert!(refused.unwrap_err().is_poisoned());
    assert!(file.sync().await.unwrap_err().is_poisoned());
    let fresh = storage.open(&path).await.unwrap();
    fresh.write_at(0, Bytes::from_static(b"ok")).await.unwrap();
}

// Proves a process crash completes every call in flight before it restarts the machine: dropped
// writes, a dropped directory creation and a write whose future is still held all take effect,
// nothing stays in flight, and the held future then returns a stale-handle error.
#[tokio::test]
async fn a_process_crash_applies_every_call_in_flight() {
    let storage = in_flight_machine(14, 1.0);
    let path = dir().join("log");
    let file = storage.open(&path).await.unwrap();
    for (offset, data) in [(0, &b"one "[..]), (4, b"two ")] {
        let mut write = file.write_at(offset, Bytes::from_static(data));
        assert!(poll_once(&mut write).is_pending());
    }
    let sub = dir().join("sub");
    assert!(poll_once(&mut storage.create_dir_all(&sub)).is_pending());
    let mut held = file.write_at(8, Bytes::from_static(b"three"));
    assert!(poll_once(&mut held).is_pending());
    assert!(storage.in_flight_count() >= 1);
    storage.crash_keeping_everything();
    assert_eq!(storage.in_flight_count(), 0);
    let stale = poll_once(&mut held);
    let Poll::Ready(Err(error)) = stale else {
        panic!("the held future did not fail: {stale:?}");
    };
    assert!(error.to_string().contains("stale handle"), "{error}");
    storage.set_in_flight_rate(0.0).unwrap();
    assert_eq!(contents(&storage, &path).await.unwrap(), b"one two three");
    assert!(storage.is_dir(&sub).await.unwrap());
}

// Proves a power loss resolves each call in flight one way or the other: an in-flight
// write_at_and_sync over synced data is, across seeds, sometimes applied (then durable, as its
// sync ran) and sometimes discarded (the old bytes remain), and the report counts which; its
// future fails as stale either way. The worst-case crash always discards it.
#[tokio::test]
async fn a_power_loss_applies_or_discards_each_call_in_flight() {
    let (mut applied, mut discarded) = (0, 0);
    for seed in 0..SEEDS {
        let storage = in_flight_machine(seed, 0.0);
        let path = dir().join("log");
        durable_file(&storage, &path, b"old!").await;
        let file = storage.open(&path).await.unwrap();
        storage.set_in_flight_rate(1.0).unwrap();
        let mut held = file.write_at_and_sync(0, Bytes::from_static(b"new!"));
        assert!(poll_once(&mut held).is_pending());
        let report = storage.crash();
        assert_eq!(report.in_flight_applied + report.in_flight_discarded, 1);
        let stale = poll_once(&mut held);
        assert!(
            matches!(stale, Poll::Ready(Err(WalError::Io { .. }))),
            "{stale:?}"
        );
        storage.set_in_flight_rate(0.0).unwrap();
        let after = contents(&storage, &path).await.unwrap();
        if report.in_flight_applied == 1 {
            assert_eq!(after, b"new!", "seed {seed}");
            applied += 1;
        } else {
            assert_eq!(after, b"old!", "seed {seed}");
            discarded += 1;
        }
    }
    assert!(
        applied > 0 && discarded > 0,
        "{applied} applied, {discarded} discarded"
    );
    let storage = in_flight_machine(0, 1.0);
    let file = storage.open(&dir().join("worst")).await.unwrap();
    let mut held = file.write_at_and_sync(0, Bytes::from_static(b"gone"));
    assert!(poll_once(&mut held).is_pending());
    let report = storage.crash_losing_everything_unsynced();
    assert_eq!(
        (report.in_flight_applied, report.in_flight_discarded),
        (0, 1)
    );
    assert_eq!(storage.in_flight_count(), 0);
    assert!(matches!(
        poll_once(&mut held),
        Poll::Ready(Err(WalError::Io { .. }))
    ));
}

// Proves a sync in flight covers every write that completed before it was called: a completed
// write, then a sync left in flight and polled to success, survive the worst-case power loss.
#[tokio::test]
async fn a_sync_in_flight_covers_writes_completed_before_it() {
    let storage = machine(15);
    let path = dir().join("log");
    let file = storage.open(&path).await.unwrap();
    storage.sync_dir(&dir()).await.unwrap();
    file.write_at(0, Bytes::from_static(b"covered"))
        .await
        .unwrap();
    storage.set_in_flight_rate(1.0).unwrap();
    let mut sync = file.sync();
    assert!(poll_once(&mut sync).is_pending());
    poll_to_completion(&mut sync).unwrap();
    storage.crash_losing_everything_unsynced();
    storage.set_in_flight_rate(0.0).unwrap();
    assert_eq!(contents(&storage, &path).await.unwrap(), b"covered");
}

/// A fixed script under faults, crashes and calls in flight, half of whose writes are dropped
/// after one poll, returning a trace of every result and the final fingerprint.
async fn scripted_run_in_flight(seed: u64) -> (Vec<String>, u64, FaultCounters) {
    let config = SimulatedConfig {
        faults: FaultConfig::uniform(0.05),
        in_flight_rate: 0.5,
        ..SimulatedConfig::new(seed)
    };
    let storage = SimulatedStorage::with_config(config).unwrap();
    storage.create_dir_all_durably(&dir()).unwrap();
    let mut trace = Vec::new();
    for round in 0..20u64 {
        if round % 5 == 4 {
            trace.push(format!("{:?}", storage.crash()));
        }
        let file = match storage.open(&dir().join(format!("f{}", round % 3))).await {
            Ok(file) => file,
            Err(error) => {
                trace.push(format!("open {error}"));
                continue;
            }
        };
        let mut write = file.write_at(round * 300, Bytes::from(vec![round as u8; 700]));
        if round % 2 == 0 {
            trace.push(format!(
                "{:?}",
                poll_once(&mut write).map(|result| result.err())
            ));
            drop(write);
        } else {
            trace.push(format!("{:?}", write.await.err()));
        }
        trace.push(format!("{:?}", file.sync().await.err()));
        trace.push(format!(
            "{:?}",
            file.read_at(0, 5000).await.map(|d| d.len())
        ));
        trace.push(format!("in flight {}", storage.in_flight_count()));
    }
    (trace, storage.fingerprint(), storage.counters())
}

// Proves determinism with calls in flight: the same seed and the same calls and polls give the
// same trace, counters and final fingerprint (which covers the calls still in flight); another
// seed gives another outcome. Also proves the script exercised the feature: calls went in
// flight, and dropped ones landed.
#[tokio::test(flavor = "current_thread")]
async fn same_seed_same_outcome_with_calls_in_flight() {
    let first = scripted_run_in_flight(42).await;
    assert_eq!(first, scripted_run_in_flight(42).await);
    assert!(first.2.in_flight_submitted > 0);
    assert!(first.2.in_flight_landed_after_drop > 0);
    let other = scripted_run_in_flight(43).await;
    assert_ne!(first.1, other.1, "seeds 42 and 43 ended in the same state");
    assert_ne!(first.0, other.0);
}
