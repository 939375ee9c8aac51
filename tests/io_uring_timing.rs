//! The io_uring backend's timing-sensitive behaviour: how many `io_uring_enter` calls a lone
//! writer costs, and the idle spin that takes requests without a wake-up. Each counts what the
//! ring thread did in the time the test gives it, so each needs the CPUs to itself: they live in
//! a binary of their own (cargo runs test binaries one at a time) and take turns within it.
//! Timing is never asserted as speed; only what the ring did is counted.
#![cfg(all(target_os = "linux", feature = "io-uring"))]

mod common;

use std::time::Duration;

use bytes::Bytes;
use helix_wal::IoUringConfig;

use crate::common::ring::{buffered, pattern, wait_until_idle};
use crate::common::Harness;

/// Held by each test for its whole run, so that no other test of this binary competes with it
/// for the CPUs.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

// Proves the ring thread submits a request and waits for it in one io_uring_enter: a writer
// issuing durable writes one after another costs about two enters per write (the submit and
// wait, and the sleep until the next request; fewer when the next arrives first). Before the
// two were merged it took three. The bound allows a rare extra enter: when the writer queues
// its next request just as the ring announces its sleep, both sides see each other and the
// ring stays awake for one more round (the wake-up it was sent ends its next wait at once).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lone_writer_needs_about_two_enters_per_write() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let Some((harness, storage)) = Harness::io_uring_with(IoUringConfig::default()) else {
        return;
    };
    harness.storage.create_dir_all(&harness.dir).await.unwrap();
    let path = harness.dir.join("a");
    let file = harness.storage.open_direct(&path).await.unwrap();
    let alignment = file.write_alignment().max(1) as usize;
    let length = 4096usize.next_multiple_of(alignment);
    let before = wait_until_idle(&storage).await;
    const WRITES: u64 = 200;
    for round in 0..WRITES {
        let data = Bytes::from(pattern(round as u32, length));
        file.write_at_and_sync(round * length as u64, data)
            .await
            .unwrap();
    }
    let after = wait_until_idle(&storage).await;
    let enters = after.enter_calls - before.enter_calls;
    // Three per write (the old protocol) would be 600.
    assert!(
        enters <= 5 * WRITES / 2,
        "{enters} enters for {WRITES} writes"
    );
}

// Proves the idle spin: a ring thread that polls its queue for a while before sleeping takes
// requests queued meanwhile without being woken (spins_rewarded counts them), and every
// operation still completes with the right data; without the spin nothing is counted.
//
// Each request is queued a fixed pause after the previous one completed. The pause is far longer
// than the ring thread needs to go from reaping a completion to looking for work (a few
// microseconds), so the ring is idle when the request arrives; and far shorter than the spin, so
// a spinning ring is still looking. Without the pause a fast producer's request is often already
// queued when the ring looks, and the spin is never needed: that is what the test must not
// depend on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_spin_takes_requests_without_a_wake_up() {
    let _alone = ONE_AT_A_TIME.lock().await;
    const ROUNDS: u64 = 64;
    const PAUSE: Duration = Duration::from_micros(150);
    const _: () = assert!(
        (PAUSE.as_micros() as u32) * 4 < helix_wal::io_uring_limits::MAX_IDLE_SPIN_US,
        "the pause must fit well inside the spin"
    );
    for spin_us in [0, helix_wal::io_uring_limits::MAX_IDLE_SPIN_US] {
        let config = IoUringConfig {
            idle_spin_us: spin_us,
            ..buffered()
        };
        let Some((harness, storage)) = Harness::io_uring_with(config) else {
            return;
        };
        harness.storage.create_dir_all(&harness.dir).await.unwrap();
        let file = harness.storage.open(&harness.dir.join("a")).await.unwrap();
        for round in 0..ROUNDS {
            let data = Bytes::from(pattern(round as u32, 512));
            // Blocking on purpose: a timer would round up to a millisecond, past the spin.
            std::thread::sleep(PAUSE);
            file.write_at(round * 512, data).await.unwrap();
        }
        let read = file.read_at(0, ROUNDS as usize * 512).await.unwrap();
        for round in 0..ROUNDS as usize {
            assert_eq!(
                &read[round * 512..(round + 1) * 512],
                &pattern(round as u32, 512)[..]
            );
        }
        let stats = wait_until_idle(&storage).await;
        if spin_us == 0 {
            assert_eq!(stats.spins_rewarded, 0, "{stats:?}");
            // The ring slept through each pause, so most requests needed a wake-up.
            assert!(stats.wakeups_sent >= ROUNDS / 2, "{stats:?}");
        } else {
            // Most pauses end inside the spin (64 of 64 on an idle 2-vCPU machine, 51 or more
            // with both vCPUs busy elsewhere); a round is missed only when this thread is
            // descheduled for the rest of the millisecond.
            assert!(stats.spins_rewarded >= ROUNDS / 4, "{stats:?}");
        }
    }
}
