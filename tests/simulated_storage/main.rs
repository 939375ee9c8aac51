//! Backend-specific tests of SimulatedStorage: the crash model (what a power loss keeps, loses
//! and tears), each injected fault, the capacity limit, stale handles, determinism, and calls
//! left in flight (in_flight.rs). The
//! generic contract is covered by the conformance suite, which also runs on this backend.

mod in_flight;

use std::io;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use helix_wal::constants::SIMULATED_SECTOR_SIZE_BYTES as SECTOR;
use helix_wal::{
    CheckedStorage, FaultConfig, FaultKind, OneShotFault, SimulatedConfig, SimulatedStorage,
    Storage, WalError,
};

/// Seeds per "for some seed" search and per "for every seed" check. Every outcome searched for
/// has a probability of at least a few percent per seed, so 300 seeds make a miss impossible in
/// practice, and the runs are deterministic anyway.
const SEEDS: u64 = 300;

fn dir() -> PathBuf {
    PathBuf::from("/data")
}

/// A machine whose `/data` directory exists durably.
fn machine(seed: u64) -> SimulatedStorage {
    let storage = SimulatedStorage::new(seed);
    storage.create_dir_all_durably(&dir()).unwrap();
    storage
}

/// The whole contents of the file at `path`, or `None` when it does not exist.
async fn contents(storage: &SimulatedStorage, path: &Path) -> Option<Vec<u8>> {
    if !storage.exists(path).await.unwrap() {
        return None;
    }
    let file = storage.open(path).await.unwrap();
    Some(file.read_at(0, 1 << 20).await.unwrap().to_vec())
}

/// Writes `data` to a new file at `path`, syncs it and its directory.
async fn durable_file(storage: &SimulatedStorage, path: &Path, data: &[u8]) {
    let file = storage.open(path).await.unwrap();
    file.write_at_and_sync(0, Bytes::copy_from_slice(data))
        .await
        .unwrap();
    storage.sync_dir(path.parent().unwrap()).await.unwrap();
}

fn io_kind(result: Result<impl std::fmt::Debug, WalError>) -> io::ErrorKind {
    match result {
        Err(error) => error
            .io_kind()
            .unwrap_or_else(|| panic!("not an Io error: {error:?}")),
        Ok(value) => panic!("expected an I/O error, got Ok({value:?})"),
    }
}

fn errno(result: Result<impl std::fmt::Debug, WalError>) -> Option<i32> {
    match result {
        Err(WalError::Io { source, .. }) => source.raw_os_error(),
        other => panic!("expected an Io error, got {other:?}"),
    }
}

// Proves synced data survives every crash: for many seeds, a synced file keeps its synced bytes
// and at least its synced size, while unsynced appends, an unsynced new file and an unsynced
// write to a second synced file are settled at random around it.
#[tokio::test]
async fn synced_data_survives_every_crash() {
    let synced: Vec<u8> = (0..3000u32).map(|i| (i * 7 + 1) as u8).collect();
    for seed in 0..SEEDS {
        let storage = machine(seed);
        let path = dir().join("log");
        durable_file(&storage, &path, &synced).await;
        durable_file(&storage, &dir().join("other"), &synced).await;
        let file = storage.open(&path).await.unwrap();
        file.write_at(3000, Bytes::from(vec![0xEE; 1500]))
            .await
            .unwrap();
        let other = storage.open(&dir().join("other")).await.unwrap();
        other
            .write_at(4000, Bytes::from(vec![0xDD; 700]))
            .await
            .unwrap();
        storage.open(&dir().join("unsynced")).await.unwrap();
        storage.crash();
        for name in ["log", "other"] {
            let after = contents(&storage, &dir().join(name))
                .await
                .unwrap_or_else(|| panic!("seed {seed}: synced file {name} lost"));
            assert!(after.len() >= synced.len(), "seed {seed}: {name} shrank");
            assert_eq!(&after[..synced.len()], &synced[..], "seed {seed}: {name}");
        }
    }
}

/// Classifies one sector after a crash that settled a write of `new` over `old`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum SectorOutcome {
    Kept,
    Lost,
    TornPrefix,
    Zeros,
    Garbage,
}

fn classify(after: &[u8], old: u8, new: u8) -> SectorOutcome {
    let new_run = after.iter().take_while(|byte| **byte == new).count();
    if new_run == after.len() {
        SectorOutcome::Kept
    } else if after.iter().all(|byte| *byte == old) {
        SectorOutcome::Lost
    } else if new_run > 0 && after[new_run..].iter().all(|byte| *byte == old) {
        SectorOutcome::TornPrefix
    } else if after.iter().all(|byte| *byte == 0) {
        SectorOutcome::Zeros
    } else {
        SectorOutcome::Garbage
    }
}

// Proves unsynced writes are lost in subsets that are not prefixes: eight unsynced one-sector
// writes over synced data; for some seed a sector is lost while a later one survives whole.
// Also proves the synced bytes under a lost write are the old ones, never anything else but
// the outcomes above.
#[tokio::test]
async fn unsynced_writes_are_lost_in_non_prefix_subsets() {
    let mut non_prefix_seed = None;
    for seed in 0..SEEDS {
        let storage = machine(seed);
        let path = dir().join("log");
        durable_file(&storage, &path, &vec![0x11; 8 * SECTOR]).await;
        let file = storage.open(&path).await.unwrap();
        for sector in 0..8 {
            let data = Bytes::from(vec![0xA0 + sector as u8; SECTOR]);
            file.write_at((sector * SECTOR) as u64, data).await.unwrap();
        }
        storage.crash();
        let after = contents(&storage, &path).await.unwrap();
        assert_eq!(
            after.len(),
            8 * SECTOR,
            "seed {seed}: overwrites change no size"
        );
        let outcomes: Vec<SectorOutcome> = (0..8)
            .map(|sector| {
                let bytes = &after[sector * SECTOR..(sector + 1) * SECTOR];
                classify(bytes, 0x11, 0xA0 + sector as u8)
            })
            .collect();
        let first_lost = outcomes.iter().position(|o| *o == SectorOutcome::Lost);
        let last_kept = outcomes.iter().rposition(|o| *o == SectorOutcome::Kept);
        if let (Some(lost), Some(kept)) = (first_lost, last_kept) {
            if lost < kept && non_prefix_seed.is_none() {
                non_prefix_seed = Some(seed);
            }
        }
    }
    assert!(
        non_prefix_seed.is_some(),
        "no seed lost an earlier write while keeping a later one"
    );
}

// Proves a torn sector can hold a prefix of the new data, zeros, or garbage: one unsynced
// multi-sector write over synced bytes is settled sector by sector for some seeds, and across
// seeds every torn shape (and plain kept and lost sectors) appears; the crash report's counts
// agree that tearing happened.
#[tokio::test]
async fn torn_sectors_appear_as_prefix_zeros_or_garbage() {
    let mut seen = std::collections::HashSet::new();
    let mut torn_reported = 0;
    for seed in 0..SEEDS {
        let storage = machine(seed);
        let path = dir().join("log");
        durable_file(&storage, &path, &vec![0x11; 4 * SECTOR]).await;
        let file = storage.open(&path).await.unwrap();
        file.write_at(0, Bytes::from(vec![0xAB; 4 * SECTOR]))
            .await
            .unwrap();
        let report = storage.crash();
        torn_reported +=
            report.sectors_torn_prefix + report.sectors_torn_zeros + report.sectors_torn_garbage;
        let after = contents(&storage, &path).await.unwrap();
        for sector in after.chunks(SECTOR) {
            seen.insert(classify(sector, 0x11, 0xAB));
        }
    }
    for outcome in [
        SectorOutcome::Kept,
        SectorOutcome::Lost,
        SectorOutcome::TornPrefix,
        SectorOutcome::Zeros,
        SectorOutcome::Garbage,
    ] {
        assert!(seen.contains(&outcome), "{outcome:?} never happened");
    }
    assert!(torn_reported > 0);
}

// Proves an unsynced append past the end can leave the size extended with zeros where data was
// lost, or not extended at all, and never exposes anything but new bytes, zeros or garbage past
// the synced end.
#[tokio::test]
async fn unsynced_append_can_leave_a_zero_tail_or_no_tail() {
    let (mut zero_tail, mut no_tail) = (false, false);
    for seed in 0..SEEDS {
        let storage = machine(seed);
        let path = dir().join("log");
        durable_file(&storage, &path, &[0x11; SECTOR]).await;
        let file = storage.open(&path).await.unwrap();
        file.write_at(SECTOR as u64, Bytes::from(vec![0xAB; 2 * SECTOR]))
            .await
            .unwrap();
        storage.crash();
        let after = contents(&storage, &path).await.unwrap();
        assert!(
            after.len() == SECTOR || after.len() == 3 * SECTOR,
            "seed {seed}"
        );
        no_tail |= after.len() == SECTOR;
        zero_tail |= after.len() == 3 * SECTOR && after[SECTOR..].iter().all(|b| *b == 0);
    }
    assert!(
        zero_tail && no_tail,
        "zero tail {zero_tail}, no tail {no_tail}"
    );
}

// Proves a file created without a directory sync may vanish or survive a crash, even when its
// data was synced, and that after sync_dir it survives every crash.
#[tokio::test]
async fn unsynced_create_can_vanish() {
    let (mut vanished, mut survived) = (0, 0);
    for seed in 0..SEEDS {
        let storage = machine(seed);
        let path = dir().join("new");
        let file = storage.open(&path).await.unwrap();
        file.write_at_and_sync(0, Bytes::from_static(b"payload"))
            .await
            .unwrap();
        storage.crash();
        match contents(&storage, &path).await {
            None => vanished += 1,
            Some(data) => {
                assert_eq!(data, b"payload", "seed {seed}");
                survived += 1;
            }
        }
        let synced = dir().join("synced");
        durable_file(&storage, &synced, b"kept").await;
        storage.crash();
        assert_eq!(contents(&storage, &synced).await.unwrap(), b"kept");
    }
    assert!(
        vanished > 0 && survived > 0,
        "vanished {vanished}, survived {survived}"
    );
}

// Proves a directory made by create_dir_all without a sync of its parent may vanish with
// everything in it, even files synced inside it with sync_dir of the new directory.
#[tokio::test]
async fn unsynced_directory_can_vanish_with_its_files() {
    let (mut vanished, mut survived) = (false, false);
    for seed in 0..SEEDS {
        let storage = machine(seed);
        let sub = dir().join("sub");
        storage.create_dir_all(&sub).await.unwrap();
        durable_file(&storage, &sub.join("file"), b"x").await;
        storage.crash();
        let exists = storage.exists(&sub.join("file")).await.unwrap();
        assert_eq!(exists, storage.is_dir(&sub).await.unwrap(), "seed {seed}");
        vanished |= !exists;
        survived |= exists;
    }
    assert!(vanished && survived);
}

// Proves a file removed without a directory sync may come back after a crash, with its synced
// contents, and stays removed once the directory is synced.
#[tokio::test]
async fn unsynced_remove_can_come_back() {
    let (mut came_back, mut stayed_removed) = (false, false);
    for seed in 0..SEEDS {
        let storage = machine(seed);
        let path = dir().join("old");
        durable_file(&storage, &path, b"old data").await;
        storage.remove(&path).await.unwrap();
        storage.crash();
        match contents(&storage, &path).await {
            Some(data) => {
                assert_eq!(data, b"old data");
                came_back = true;
            }
            None => stayed_removed = true,
        }
        if storage.exists(&path).await.unwrap() {
            storage.remove(&path).await.unwrap();
            storage.sync_dir(&dir()).await.unwrap();
            storage.crash();
            assert!(!storage.exists(&path).await.unwrap(), "seed {seed}");
        }
    }
    assert!(came_back && stayed_removed);
}

// Proves an unsynced rename is atomic across a crash: the renamed file is found under exactly
// one of its two names (never both, never neither), a replaced target either keeps its old
// contents or is replaced whole, and both outcomes happen.
#[tokio::test]
async fn unsynced_rename_leaves_exactly_one_name() {
    let (mut old_name, mut new_name) = (false, false);
    for seed in 0..SEEDS {
        let storage = machine(seed);
        let (from, to) = (dir().join("a"), dir().join("b"));
        durable_file(&storage, &from, b"renamed").await;
        durable_file(&storage, &to, b"replaced").await;
        storage.rename(&from, &to).await.unwrap();
        storage.crash();
        match (
            contents(&storage, &from).await,
            contents(&storage, &to).await,
        ) {
            (Some(a), Some(b)) => {
                assert_eq!(
                    (a.as_slice(), b.as_slice()),
                    (&b"renamed"[..], &b"replaced"[..])
                );
                old_name = true;
            }
            (None, Some(b)) => {
                assert_eq!(b, b"renamed", "seed {seed}");
                new_name = true;
            }
            other => panic!("seed {seed}: rename left {other:?}"),
        }
    }
    assert!(old_name && new_name);
}

// Proves changes to one name survive only in order: after a durable file is renamed away and a
// new file is created under its old name, no crash loses the original contents (it is under
// exactly one name) even though both changes were unsynced.
#[tokio::test]
async fn changes_to_one_name_survive_in_order() {
    for seed in 0..SEEDS {
        let storage = machine(seed);
        let (from, to) = (dir().join("a"), dir().join("b"));
        durable_file(&storage, &from, b"original").await;
        storage.rename(&from, &to).await.unwrap();
        let fresh = storage.open(&from).await.unwrap();
        fresh
            .write_at_and_sync(0, Bytes::from_static(b"fresh"))
            .await
            .unwrap();
        storage.crash();
        let holders = [
            contents(&storage, &from).await,
            contents(&storage, &to).await,
        ]
        .into_iter()
        .filter(|data| data.as_deref() == Some(&b"original"[..]))
        .count();
        assert_eq!(holders, 1, "seed {seed}");
    }
}

// Proves fsyncgate semantics: after an injected fsync failure the dirty data is dropped and
// marked clean, so on a bare simulated file (which, like every backend, leaves poisoning to
// CheckedStorage) a retried sync reports success, and for some seed a crash then loses data that
// the retry claimed durable. Through CheckedStorage (the contract) the retry is refused as
// Poisoned instead.
#[tokio::test]
async fn failed_fsync_drops_dirty_data_and_a_retry_lies() {
    let mut lied = false;
    for seed in 0..SEEDS {
        let storage = machine(seed);
        let path = dir().join("log");
        durable_file(&storage, &path, &[0; 2 * SECTOR]).await;
        let file = storage.open(&path).await.unwrap();
        file.write_at(0, Bytes::from(vec![0xAB; 2 * SECTOR]))
            .await
            .unwrap();
        storage.inject(OneShotFault::next(FaultKind::SyncError));
        assert_eq!(errno(file.sync().await), Some(5), "seed {seed}");
        // The page cache still shows the data, and the retry "succeeds".
        assert!(file
            .read_at(0, 2 * SECTOR)
            .await
            .unwrap()
            .iter()
            .all(|b| *b == 0xAB));
        file.sync().await.unwrap();
        storage.crash();
        let after = contents(&storage, &path).await.unwrap();
        lied |= after.iter().any(|byte| *byte != 0xAB);
    }
    assert!(
        lied,
        "no seed lost data after a retried sync reported success"
    );

    let storage = machine(1);
    let checked = CheckedStorage::new(storage.clone());
    let file = checked.open(&dir().join("log")).await.unwrap();
    file.write_at(0, Bytes::from_static(b"x")).await.unwrap();
    storage.inject(OneShotFault::next(FaultKind::SyncError));
    assert!(file.sync().await.is_err());
    assert!(file.sync().await.unwrap_err().is_poisoned());
    assert!(file
        .write_at(1, Bytes::from_static(b"y"))
        .await
        .unwrap_err()
        .is_poisoned());
    assert_eq!(
        &file.read_at(0, 1).await.unwrap()[..],
        b"x",
        "reads keep working"
    );
}

// Proves handles opened before a crash fail every call with an Io error saying they are stale,
// for both kinds of crash, and that reopening works.
#[tokio::test]
async fn handles_are_stale_after_a_crash() {
    let storage = machine(3);
    let path = dir().join("log");
    durable_file(&storage, &path, b"data").await;
    for crash_kind in 0..2 {
        let file = storage.open(&path).await.unwrap();
        if crash_kind == 0 {
            storage.crash();
        } else {
            storage.crash_keeping_everything();
        }
        let errors = [
            file.write_at(0, Bytes::from_static(b"x"))
                .await
                .unwrap_err(),
            file.read_at(0, 1).await.unwrap_err(),
            file.size().await.unwrap_err(),
            file.set_len(0).await.unwrap_err(),
            file.sync().await.unwrap_err(),
            file.write_at_and_sync(0, Bytes::from_static(b"x"))
                .await
                .unwrap_err(),
        ];
        for error in errors {
            assert!(matches!(error, WalError::Io { .. }), "{error:?}");
            assert!(error.to_string().contains("stale handle"), "{error}");
        }
        let reopened = storage.open(&path).await.unwrap();
        assert_eq!(&reopened.read_at(0, 4).await.unwrap()[..], b"data");
    }
    assert_eq!(storage.counters().crashes, 2);
}

// Proves a process crash keeps every completed write and directory change visible without
// making it durable: after crash_keeping_everything the unsynced data and file are readable,
// and a later power loss can still lose them (for some seed), while
// crash_losing_everything_unsynced always loses them.
#[tokio::test]
async fn process_crash_keeps_everything_but_makes_nothing_durable() {
    let mut lost_later = false;
    for seed in 0..SEEDS {
        let storage = machine(seed);
        let path = dir().join("new");
        let file = storage.open(&path).await.unwrap();
        file.write_at(0, Bytes::from_static(b"unsynced"))
            .await
            .unwrap();
        storage.crash_keeping_everything();
        assert_eq!(contents(&storage, &path).await.unwrap(), b"unsynced");
        storage.crash();
        lost_later |= contents(&storage, &path).await.as_deref() != Some(&b"unsynced"[..]);
    }
    assert!(lost_later);
    let storage = machine(0);
    let file = storage.open(&dir().join("new")).await.unwrap();
    file.write_at_and_sync(0, Bytes::from_static(b"synced"))
        .await
        .unwrap();
    storage.crash_losing_everything_unsynced();
    assert!(!storage.exists(&dir().join("new")).await.unwrap());
}

/// One eligible operation for each fault kind, returning its result as an I/O error kind and
/// errno (or `None` when it succeeded).
async fn run_eligible(
    storage: &SimulatedStorage,
    kind: FaultKind,
) -> Option<(io::ErrorKind, Option<i32>)> {
    let path = dir().join("target");
    let result: Result<(), WalError> = match kind {
        FaultKind::OpenError => storage.open(&path).await.map(drop),
        FaultKind::ListError => storage.list(&dir()).await.map(drop),
        FaultKind::RemoveError => storage.remove(&path).await,
        FaultKind::RenameError => storage.rename(&path, &dir().join("moved")).await,
        FaultKind::SyncDirError => storage.sync_dir(&dir()).await,
        _ => {
            let file = storage.open(&path).await.unwrap();
            match kind {
                FaultKind::WriteError | FaultKind::ShortWrite | FaultKind::NoSpace => {
                    let end = file.size().await.unwrap();
                    file.write_at(end, Bytes::from_static(b"extending")).await
                }
                FaultKind::SyncError => file.sync().await,
                FaultKind::ReadError | FaultKind::ReadBitFlip => {
                    let read = file.read_at(0, 4).await;
                    let flipped = read.as_ref().is_ok_and(|data| &data[..] != b"base");
                    read.map(drop).and_then(|()| {
                        if flipped {
                            Err(WalError::io("read", &path, io::Error::other("bit flipped")))
                        } else {
                            Ok(())
                        }
                    })
                }
                _ => unreachable!("every kind is handled above"),
            }
        }
    };
    result.err().map(|error| match error {
        WalError::Io { source, .. } => (source.kind(), source.raw_os_error()),
        other => panic!("{kind:?}: not an Io error: {other:?}"),
    })
}

// Proves every fault kind fires as a one-shot on its eligible operation, fails it with the
// expected errno (EIO, or ENOSPC for NoSpace; a bit flip shows as different data), increments
// exactly its own counter, and fires only once.
#[tokio::test]
async fn each_one_shot_fault_fires_once_and_is_counted() {
    for kind in FaultKind::ALL {
        let storage = machine(9);
        durable_file(&storage, &dir().join("target"), b"base").await;
        assert_eq!(
            run_eligible(&storage, kind).await,
            None,
            "{kind:?} without a fault"
        );
        storage.inject(OneShotFault::next(kind));
        let before = storage.counters();
        let failure = run_eligible(&storage, kind)
            .await
            .unwrap_or_else(|| panic!("{kind:?} did not fire"));
        match kind {
            FaultKind::NoSpace => {
                assert_eq!(failure, (io::ErrorKind::StorageFull, Some(28)))
            }
            FaultKind::ReadBitFlip => assert_eq!(failure.0, io::ErrorKind::Other),
            _ => assert_eq!(failure.1, Some(5), "{kind:?}"),
        }
        let after = storage.counters();
        for other in FaultKind::ALL {
            let expected = before.get(other) + u64::from(other == kind);
            assert_eq!(after.get(other), expected, "{other:?} after {kind:?}");
        }
        if matches!(
            kind,
            FaultKind::OpenError
                | FaultKind::ListError
                | FaultKind::ReadError
                | FaultKind::ReadBitFlip
                | FaultKind::SyncDirError
        ) {
            // Operations that do not poison or consume their target fire only once.
            assert_eq!(
                run_eligible(&storage, kind).await,
                None,
                "{kind:?} fired twice"
            );
        }
    }
}

// Proves a one-shot fault with a path filter only hits matching paths, and that a count of N
// fails exactly N operations.
#[tokio::test]
async fn one_shot_faults_respect_path_filter_and_count() {
    let storage = machine(4);
    storage.inject(
        OneShotFault::next(FaultKind::OpenError)
            .on_path("seg-2")
            .times(2),
    );
    storage.open(&dir().join("seg-1")).await.unwrap();
    assert!(storage.open(&dir().join("seg-2")).await.is_err());
    assert!(storage.open(&dir().join("seg-2")).await.is_err());
    storage.open(&dir().join("seg-2")).await.unwrap();
    assert_eq!(storage.counters().open_errors, 2);
}

// Proves a short write applies a non-empty proper prefix of the data and then fails, never
// reporting success for part of the data, so that CheckedStorage poisons the handle.
#[tokio::test]
async fn short_write_applies_a_prefix_then_fails() {
    let storage = machine(5);
    let checked = CheckedStorage::new(storage.clone());
    let file = checked.open(&dir().join("log")).await.unwrap();
    storage.inject(OneShotFault::next(FaultKind::ShortWrite));
    let data: Vec<u8> = (1..=200u8).collect();
    assert!(file.write_at(0, Bytes::from(data.clone())).await.is_err());
    let written = file.read_at(0, 1000).await.unwrap();
    assert!(
        !written.is_empty() && written.len() < data.len(),
        "{}",
        written.len()
    );
    assert_eq!(&written[..], &data[..written.len()]);
    assert!(file
        .write_at(0, Bytes::from_static(b"z"))
        .await
        .unwrap_err()
        .is_poisoned());
}

// Proves a bit flip changes exactly one bit of what is returned and nothing that is stored.
#[tokio::test]
async fn bit_flip_changes_one_returned_bit_only() {
    let storage = machine(6);
    let path = dir().join("log");
    durable_file(&storage, &path, &[0x55; 64]).await;
    let file = storage.open(&path).await.unwrap();
    storage.inject(OneShotFault::next(FaultKind::ReadBitFlip));
    let flipped = file.read_at(0, 64).await.unwrap();
    let differing_bits: u32 = flipped.iter().map(|byte| (byte ^ 0x55).count_ones()).sum();
    assert_eq!(differing_bits, 1);
    assert!(file
        .read_at(0, 64)
        .await
        .unwrap()
        .iter()
        .all(|b| *b == 0x55));
}

// Proves rates work: rate 1 fails every eligible operation, rate 0 none, and faults can be
// turned off at run time; invalid rates are rejected naming the field.
#[tokio::test]
async fn rates_apply_and_are_validated() {
    let storage = machine(7);
    let file = storage.open(&dir().join("log")).await.unwrap();
    storage
        .set_faults(FaultConfig::none().with_rate(FaultKind::ReadError, 1.0))
        .unwrap();
    for _ in 0..10 {
        assert!(file.read_at(0, 1).await.is_err());
    }
    storage.set_faults(FaultConfig::none()).unwrap();
    file.read_at(0, 1).await.unwrap();
    assert_eq!(storage.counters().read_errors, 10);
    for bad in [1.5, -0.1, f64::NAN] {
        match storage.set_faults(FaultConfig::none().with_rate(FaultKind::SyncError, bad)) {
            Err(WalError::InvalidConfig { field, .. }) => assert_eq!(field, "sync_error_rate"),
            other => panic!("rate {bad} accepted: {other:?}"),
        }
    }
    let mut config = SimulatedConfig::new(1);
    config.faults.open_error_rate = 2.0;
    assert!(SimulatedStorage::with_config(config).is_err());
}

// Proves the capacity limit: a write past it writes what fits and fails with ENOSPC
// (StorageFull, errno 28), overwrites inside a file still work, and removing a file frees space.
#[tokio::test]
async fn capacity_limit_gives_enospc() {
    let mut config = SimulatedConfig::new(8);
    config.capacity_bytes = Some(1000);
    let storage = SimulatedStorage::with_config(config).unwrap();
    storage.create_dir_all_durably(&dir()).unwrap();
    let first = storage.open(&dir().join("a")).await.unwrap();
    let second = storage.open(&dir().join("b")).await.unwrap();
    first.write_at(0, Bytes::from(vec![1; 600])).await.unwrap();
    let full = second.write_at(0, Bytes::from(vec![2; 600])).await;
    assert_eq!(io_kind(full), io::ErrorKind::StorageFull);
    assert_eq!(second.size().await.unwrap(), 400, "what fits is written");
    assert_eq!(storage.used_bytes(), 1000);
    assert_eq!(storage.counters().capacity_exhausted, 1);
    first.write_at(0, Bytes::from(vec![3; 600])).await.unwrap();
    storage.remove(&dir().join("a")).await.unwrap();
    let fresh = storage.open(&dir().join("c")).await.unwrap();
    fresh.write_at(0, Bytes::from(vec![4; 600])).await.unwrap();
    assert_eq!(storage.used_bytes(), 1000);
}

/// A fixed script of operations under faults and crashes, returning a trace of every result.
async fn scripted_run(seed: u64) -> (Vec<String>, u64, helix_wal::FaultCounters) {
    let mut config = SimulatedConfig::new(seed);
    config.faults = FaultConfig::uniform(0.05);
    let storage = SimulatedStorage::with_config(config).unwrap();
    storage.create_dir_all_durably(&dir()).unwrap();
    let mut trace = Vec::new();
    for round in 0..20u64 {
        if round % 5 == 4 {
            trace.push(format!("{:?}", storage.crash()));
        }
        let path = dir().join(format!("f{}", round % 3));
        let file = match storage.open(&path).await {
            Ok(file) => file,
            Err(error) => {
                trace.push(format!("open {error}"));
                continue;
            }
        };
        let data = Bytes::from(vec![round as u8; 700]);
        trace.push(format!(
            "{:?}",
            file.write_at(round * 300, data).await.err()
        ));
        trace.push(format!("{:?}", file.sync().await.err()));
        trace.push(format!(
            "{:?}",
            file.read_at(0, 5000).await.map(|d| d.len())
        ));
        trace.push(format!("{:?}", storage.sync_dir(&dir()).await.err()));
    }
    (trace, storage.fingerprint(), storage.counters())
}

// Proves determinism: the same seed and operations give an identical trace of results,
// identical final state (fingerprint) and identical counters; different seeds give different
// outcomes.
#[tokio::test]
async fn same_seed_same_outcome() {
    let first = scripted_run(42).await;
    let second = scripted_run(42).await;
    assert_eq!(first, second);
    assert!(first.2.crashes == 4);
    let other = scripted_run(43).await;
    assert_ne!(first.1, other.1, "seeds 42 and 43 ended in the same state");
    assert_ne!(first.0, other.0);
}

// Proves the model of direct-I/O files: a file from open_direct reports its alignment, a write
// whose offset or length is not a multiple of it is refused with InvalidInput before anything is
// written, and an aligned write survives every power loss without a sync (O_DSYNC), across 300
// seeds; a file from open stays buffered (alignment 1, any write); an invalid alignment is
// refused at construction.
#[tokio::test]
async fn direct_io_files_take_aligned_writes_durable_on_return() {
    let bad = SimulatedConfig {
        write_alignment_bytes: 3000,
        ..SimulatedConfig::new(1)
    };
    assert!(SimulatedStorage::with_config(bad).is_err());
    for seed in 0..SEEDS {
        let config = SimulatedConfig {
            write_alignment_bytes: 4096,
            ..SimulatedConfig::new(seed)
        };
        let storage = SimulatedStorage::with_config(config).unwrap();
        storage.create_dir_all_durably(&dir()).unwrap();
        let path = dir().join("direct");
        storage.open(&path).await.unwrap();
        storage.sync_dir(&dir()).await.unwrap();
        let file = storage.open_direct(&path).await.unwrap();
        assert_eq!(file.write_alignment(), 4096);
        for (offset, length) in [(100u64, 4096usize), (0, 100)] {
            let refused = file.write_at(offset, Bytes::from(vec![1u8; length])).await;
            let kind = refused.unwrap_err().io_kind();
            assert_eq!(kind, Some(io::ErrorKind::InvalidInput), "seed {seed}");
        }
        assert_eq!(
            file.size().await.unwrap(),
            0,
            "seed {seed}: nothing written"
        );
        let buffered = storage.open(&path).await.unwrap();
        assert_eq!(buffered.write_alignment(), 1);
        buffered
            .write_at(1, Bytes::from_static(b"x"))
            .await
            .unwrap();
        buffered.set_len(0).await.unwrap();
        buffered.sync().await.unwrap();
        drop(buffered);
        file.write_at(4096, Bytes::from(vec![7u8; 8192]))
            .await
            .unwrap();
        drop(file);
        storage.crash();
        let file = storage.open(&path).await.unwrap();
        let mut expected = vec![0u8; 4096];
        expected.extend(vec![7u8; 8192]);
        assert_eq!(
            file.read_at(0, 1 << 20).await.unwrap(),
            expected,
            "seed {seed}"
        );
    }
}
