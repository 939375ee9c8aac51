//! Deterministic simulation of the log: thousands of seeded runs of random operations, crashes
//! and faults over `SimulatedStorage`, each checked against a reference model after every
//! recovery (see checker.rs for the invariants).
//!
//! Environment:
//! * `HELIX_SIM_SEEDS`: seeds in the CI run (default 2,000, split over four tests);
//! * `HELIX_SIM_OPS`: operations per seed (default 100);
//! * `HELIX_SIM_SEED`: the seed `replay` runs (printed by every failure);
//! * `HELIX_SIM_SOAK_OPS`: total operations of the ignored `soak` test;
//! * `HELIX_SIM_TRACE`: print every operation as it runs.

mod checker;
#[path = "../common/mod.rs"]
mod common;
mod model;
mod rng;

use std::time::Instant;

use checker::Summary;

const DEFAULT_SEEDS: u64 = 2_000;
const DEFAULT_OPERATIONS: usize = 100;
const SHARDS: u64 = 4;
/// First seed of the soak, far from the CI seeds.
const SOAK_FIRST_SEED: u64 = 1 << 32;

fn env_number(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(text) => text
            .parse()
            .unwrap_or_else(|_| panic!("{name}={text:?} is not a number")),
        Err(_) => default,
    }
}

fn operations() -> usize {
    env_number("HELIX_SIM_OPS", DEFAULT_OPERATIONS as u64) as usize
}

/// Runs every seed of `shard` and panics with the replay command on the first failure.
fn run_shard(shard: u64) {
    let seeds = env_number("HELIX_SIM_SEEDS", DEFAULT_SEEDS);
    let operations = operations();
    let mut total = Summary::default();
    let started = Instant::now();
    for seed in (shard..seeds).step_by(SHARDS as usize) {
        match checker::run(seed, operations) {
            Ok(summary) => total.add(&summary),
            Err(failure) => panic!("{failure}"),
        }
    }
    println!(
        "shard {shard}: {} seeds in {:.1} s: {total:?}",
        seeds.div_ceil(SHARDS),
        started.elapsed().as_secs_f64()
    );
    assert!(total.recoveries > 0 && total.operations > 0);
}

// Each shard proves that a quarter of the CI seeds (random appends, batches, syncs, reads,
// truncations, purges, BufferedWal appenders, process crashes and power losses, faults in a
// half of the runs) keep every invariant of checker.rs.
#[test]
fn ci_seeds_shard_0() {
    run_shard(0);
}

#[test]
fn ci_seeds_shard_1() {
    run_shard(1);
}

#[test]
fn ci_seeds_shard_2() {
    run_shard(2);
}

#[test]
fn ci_seeds_shard_3() {
    run_shard(3);
}

// Replays one seed: `HELIX_SIM_SEED` (with `HELIX_SIM_OPS`) as a failure prints it, or by
// default a single long run of 2,000 operations from seed 1.
#[test]
fn replay() {
    let seed = env_number("HELIX_SIM_SEED", 1);
    let operations = if std::env::var("HELIX_SIM_OPS").is_ok() {
        operations()
    } else {
        2_000
    };
    match checker::run(seed, operations) {
        Ok(summary) => println!("seed {seed}: {summary:?}"),
        Err(failure) => panic!("{failure}"),
    }
}

// Proves the run is a function of its seed: the same seed twice gives the same operations,
// faults, crashes and final simulated machine, byte for byte.
#[test]
fn same_seed_same_run() {
    for seed in [3, 17, 40] {
        let first = checker::run(seed, 300).unwrap_or_else(|failure| panic!("{failure}"));
        let second = checker::run(seed, 300).unwrap_or_else(|failure| panic!("{failure}"));
        assert_eq!(first.fingerprint, second.fingerprint, "seed {seed}");
        assert_eq!(format!("{first:?}"), format!("{second:?}"), "seed {seed}");
    }
}

// The long soak: `HELIX_SIM_SOAK_OPS=1000000 cargo test --release --all-features --test
// simulation soak -- --ignored --nocapture` runs seeds of 1,000 operations until that many
// operations have been checked.
#[test]
#[ignore = "soak: set HELIX_SIM_SOAK_OPS and run with --ignored"]
fn soak() {
    let target = env_number("HELIX_SIM_SOAK_OPS", 1_000_000);
    let started = Instant::now();
    let mut total = Summary::default();
    let mut seed = SOAK_FIRST_SEED;
    while total.operations < target {
        match checker::run(seed, 1_000) {
            Ok(summary) => total.add(&summary),
            Err(failure) => panic!("{failure}"),
        }
        seed += 1;
    }
    println!(
        "soak: seeds {SOAK_FIRST_SEED}..{seed} in {:.0} s: {total:?}",
        started.elapsed().as_secs_f64()
    );
}

/// Meta-tests: each deliberately broken variant of the log, or of the storage below it, is
/// caught within the CI seeds.
#[cfg(feature = "sabotage")]
mod meta {
    use helix_wal::sabotage::{enable, Sabotage};

    use super::*;
    use crate::common::instrumented::StorageSabotage;

    /// A deliberate bug: of the log itself (`helix_wal::sabotage`), or of the storage it runs
    /// on (a wrapper of the tests below the log's own `CheckedStorage`).
    #[derive(Debug, Clone, Copy)]
    enum Bug {
        Log(Sabotage),
        Storage(StorageSabotage),
    }

    /// Runs `seed` with `bug` in place.
    fn run_broken(bug: Bug, seed: u64) -> Result<Summary, checker::Failure> {
        match bug {
            Bug::Log(sabotage) => {
                let _guard = enable(sabotage);
                checker::run(seed, operations())
            }
            Bug::Storage(sabotage) => checker::run_with(seed, operations(), Some(sabotage)),
        }
    }

    /// Runs seeds with `bug` in place until one fails, and checks that the same seed passes
    /// without it (so the bug, not another one, was caught); panics if no seed fails.
    fn caught(bug: Bug) {
        let seeds = env_number("HELIX_SIM_SEEDS", DEFAULT_SEEDS);
        for seed in 0..seeds {
            if let Err(failure) = run_broken(bug, seed) {
                println!("{bug:?} caught by seed {seed}: {}", failure.message);
                if let Err(failure) = checker::run(seed, operations()) {
                    panic!("seed {seed} fails without {bug:?} too: {failure}");
                }
                return;
            }
        }
        panic!("{bug:?} went unnoticed through {seeds} seeds");
    }

    // Proves the checker notices a storage whose file syncs return `Ok` without syncing.
    #[test]
    fn skipped_fsync_is_caught() {
        caught(Bug::Storage(StorageSabotage::SkipFsync));
    }

    // Proves the checker notices a storage that skips directory syncs: segment creations,
    // renames and removals left unsynced in the directory.
    #[test]
    fn skipped_directory_fsync_is_caught() {
        caught(Bug::Storage(StorageSabotage::SkipDirSync));
    }

    // Proves the checker notices a durable index that runs ahead of the fsync.
    #[test]
    fn acknowledging_before_fsync_is_caught() {
        caught(Bug::Log(Sabotage::AckBeforeFsync));
    }

    // Proves the checker notices a recovery that keeps a torn tail instead of cutting it.
    #[test]
    fn keeping_a_torn_tail_is_caught() {
        caught(Bug::Log(Sabotage::KeepTornTail));
    }

    // Proves the checker notices a log that finishes a dropped call's storage operation
    // without bringing its memory in line (a truncation on disk that memory has not seen, so a
    // later append is acknowledged and then lost), the bug cancel safety exists for.
    #[test]
    fn skipping_the_cancellation_guard_is_caught() {
        caught(Bug::Log(Sabotage::SkipCancellationGuard));
    }

    // Proves the checker notices a recovery that cuts a torn tail from its index but leaves
    // the bytes after the cut in the segment it keeps appending to: a refilled record of the
    // lost one's exact size lines the old records up again, and they come back.
    #[test]
    fn leaving_a_cut_unsealed_is_caught() {
        caught(Bug::Log(Sabotage::LeaveCutUnsealed));
    }

    // Proves the checker notices a storage that retries a failed fsync and reports the retry's
    // success (fsyncgate): the simulated machine, like Linux, settled the unsynced writes at
    // random when the first fsync failed (some reached the media, the rest never will) and
    // marked them clean, so the retry succeeds without making them durable, and the log above
    // carries on unpoisoned as the storage hid the failure from its CheckedStorage.
    #[test]
    fn retrying_a_failed_fsync_is_caught() {
        caught(Bug::Storage(StorageSabotage::RetryFailedFsync));
    }
}
