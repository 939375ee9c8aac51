//! Hostile and damaged input, generated: a real log (segments written by the log itself, with a
//! truncation and rotations) is damaged at random (flipped bytes, files cut short, bytes
//! overwritten, CRC-valid records carrying an out-of-order index or a decreasing term, foreign,
//! empty and directory entries named like segments), then opened under every RecoveryMode.
//! Every case must give a structured error naming the file, or a log whose every entry reads
//! back identical to what was written at that index: never a panic, a hang or other bytes.
//!
//! `PROPTEST_CASES` raises the number of cases (256 by default here).

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use helix_wal::{Entry, RecoveryMode, SimulatedStorage, Storage, Wal, WalConfig};
use proptest::prelude::*;

/// Every allocation of this test binary goes through a cap, lowered while a damaged log is
/// opened and read: an allocation beyond it fails, and the process aborts with "memory
/// allocation of N bytes failed" (the test fails loudly).
#[global_allocator]
static ALLOCATOR: cap::Cap<std::alloc::System> = cap::Cap::new(std::alloc::System, usize::MAX);

/// Memory an open and a full read of a damaged log may take on top of what was allocated
/// before: the whole log is under 1 MiB, so this is generous, and a length field believed
/// (up to 4 GiB) would blow through it.
const RECOVERY_MEMORY_BUDGET_BYTES: usize = 16 << 20;

/// Lowers the allocation cap to what is allocated now plus the budget, until dropped.
struct MemoryBudget;

impl MemoryBudget {
    fn start() -> MemoryBudget {
        ALLOCATOR
            .set_limit(ALLOCATOR.allocated() + RECOVERY_MEMORY_BUDGET_BYTES)
            .expect("the budget is above what is allocated");
        MemoryBudget
    }
}

impl Drop for MemoryBudget {
    fn drop(&mut self) {
        let _ = ALLOCATOR.set_limit(usize::MAX);
    }
}

const DIR: &str = "/sim/log";
const SEGMENT_SIZE_BYTES: u64 = 64 << 10;
const MAX_ENTRY_BYTES: usize = 2048;
/// Offset of the length field of a segment's first record.
const FIRST_RECORD_LENGTH_FIELD: usize = 4096 + 4;
/// Cases per run unless `PROPTEST_CASES` says otherwise.
const DEFAULT_CASES: u32 = 256;

fn config(mode: RecoveryMode) -> WalConfig {
    WalConfig::new(DIR)
        .segment_size_bytes(SEGMENT_SIZE_BYTES)
        .max_entry_size_bytes(MAX_ENTRY_BYTES)
        .recovery_mode(mode)
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// The undamaged log: its files (name, bytes) and its entries by index.
struct Original {
    files: Vec<(String, Vec<u8>)>,
    entries: Vec<Entry>,
}

/// Writes a log of 120 entries over several segments, truncates it after 100, appends 10 in a
/// newer term, and keeps every file's bytes.
fn original() -> &'static Original {
    static ORIGINAL: OnceLock<Original> = OnceLock::new();
    ORIGINAL.get_or_init(|| {
        runtime().block_on(async {
            let simulated = SimulatedStorage::new(7);
            simulated.create_dir_all_durably(Path::new("/sim")).unwrap();
            let storage: Arc<dyn Storage> = Arc::new(simulated);
            let mut wal = Wal::open(storage.clone(), config(RecoveryMode::default()))
                .await
                .unwrap();
            let make = |index: u64, term: u64| {
                let length = (index as usize * 733) % MAX_ENTRY_BYTES;
                Entry::new(index, term, Bytes::from(vec![(index % 251) as u8; length]))
            };
            for first in (1..=120u64).step_by(4) {
                let batch: Vec<Entry> = (first..first + 4).map(|index| make(index, 1)).collect();
                wal.append_batch_durable(&batch).await.unwrap();
            }
            wal.truncate_after(100).await.unwrap();
            let newer: Vec<Entry> = (101..=110).map(|index| make(index, 2)).collect();
            wal.append_batch_durable(&newer).await.unwrap();
            let entries = wal.read_range(1, 111, usize::MAX).await.unwrap();
            wal.close().await.unwrap();
            drop(wal);
            let mut files = Vec::new();
            for path in storage.list(Path::new(DIR)).await.unwrap() {
                let name = path.file_name().unwrap().to_string_lossy().into_owned();
                if !name.ends_with(".wal") {
                    continue;
                }
                let file = storage.open(&path).await.unwrap();
                let bytes = file.read_at(0, 1 << 20).await.unwrap().to_vec();
                files.push((name, bytes));
            }
            assert!(
                files.len() >= 3,
                "rotations and the truncation make several segments"
            );
            Original { files, entries }
        })
    })
}

/// One kind of damage.
#[derive(Debug, Clone)]
enum Damage {
    /// XOR a byte.
    Flip {
        file: usize,
        offset: usize,
        mask: u8,
    },
    /// Cut the file to a fraction of its length.
    Truncate { file: usize, keep_per_mille: usize },
    /// Overwrite bytes with arbitrary ones.
    Overwrite {
        file: usize,
        offset: usize,
        bytes: Vec<u8>,
    },
    /// A record with a valid checksum whose index is out of order or whose term decreases.
    Forged {
        file: usize,
        slot: usize,
        index_shift: u64,
        term: u64,
        length: u32,
    },
    /// An extra directory entry named like a segment: empty file, foreign bytes, or directory.
    Extra { kind: u8, id: u64, bytes: Vec<u8> },
    /// The length field of a segment's first record set beyond the largest entry, up to 4 GiB.
    AbsurdLength { file: usize, length: u32 },
}

fn damage() -> impl Strategy<Value = Damage> {
    prop_oneof![
        (0..8usize, any::<usize>(), 1..=255u8).prop_map(|(file, offset, mask)| Damage::Flip {
            file,
            offset,
            mask
        }),
        (0..8usize, 0..1000usize).prop_map(|(file, keep_per_mille)| Damage::Truncate {
            file,
            keep_per_mille
        }),
        (
            0..8usize,
            any::<usize>(),
            proptest::collection::vec(any::<u8>(), 1..64)
        )
            .prop_map(|(file, offset, bytes)| Damage::Overwrite {
                file,
                offset,
                bytes
            }),
        (0..8usize, 0..512usize, 1..5u64, 0..3u64, 0..4096u32).prop_map(
            |(file, slot, index_shift, term, length)| Damage::Forged {
                file,
                slot,
                index_shift,
                term,
                length
            }
        ),
        (
            0..3u8,
            0..40u64,
            proptest::collection::vec(any::<u8>(), 0..128)
        )
            .prop_map(|(kind, id, bytes)| Damage::Extra { kind, id, bytes }),
        (0..8usize, (MAX_ENTRY_BYTES as u32 + 1)..=u32::MAX)
            .prop_map(|(file, length)| Damage::AbsurdLength { file, length }),
    ]
}

/// The segment id a segment file's name carries.
fn segment_id(name: &str) -> u64 {
    name.trim_end_matches(".wal")
        .parse()
        .expect("a segment name")
}

/// A record with a valid checksum (docs/FORMAT.md), whatever its fields say.
fn forged_record(segment_id: u64, index: u64, term: u64, payload_len: u32) -> Vec<u8> {
    let mut record = vec![0u8; 4];
    record.extend_from_slice(&payload_len.to_le_bytes());
    record.extend_from_slice(&index.to_le_bytes());
    record.extend_from_slice(&term.to_le_bytes());
    record.extend_from_slice(&0u64.to_le_bytes());
    record.extend(std::iter::repeat_n(0x5Au8, payload_len as usize));
    let seed = crc32c::crc32c(&segment_id.to_le_bytes());
    let crc = crc32c::crc32c_append(seed, &record[4..]);
    record[..4].copy_from_slice(&crc.to_le_bytes());
    record.resize(record.len().next_multiple_of(8), 0);
    record
}

/// Applies the damage to copies of the files; returns the files and the extra entries.
fn damaged_files(damages: &[Damage]) -> (Vec<(String, Vec<u8>)>, Vec<Damage>) {
    let mut files = original().files.clone();
    let count = files.len();
    let mut extras = Vec::new();
    for damage in damages {
        match damage.clone() {
            Damage::Flip { file, offset, mask } => {
                let bytes = &mut files[file % count].1;
                if !bytes.is_empty() {
                    let at = offset % bytes.len();
                    bytes[at] ^= mask;
                }
            }
            Damage::Truncate {
                file,
                keep_per_mille,
            } => {
                let bytes = &mut files[file % count].1;
                let keep = bytes.len() * keep_per_mille / 1000;
                bytes.truncate(keep);
            }
            Damage::Overwrite {
                file,
                offset,
                bytes: new,
            } => {
                let bytes = &mut files[file % count].1;
                if bytes.len() > new.len() {
                    let at = offset % (bytes.len() - new.len());
                    bytes[at..at + new.len()].copy_from_slice(&new);
                }
            }
            Damage::Forged {
                file,
                slot,
                index_shift,
                term,
                length,
            } => {
                let (name, bytes) = &mut files[file % count];
                // A record where the scan expects one, with the index it expects shifted, or
                // with the expected index and a term below the log's.
                let offset = 4096 + (slot * 8) % (bytes.len().saturating_sub(4096).max(8));
                let expected = original().entries.len() as u64 / 2;
                let index = expected + index_shift;
                let record = forged_record(segment_id(name), index, term, length);
                if offset + record.len() <= bytes.len() {
                    bytes[offset..offset + record.len()].copy_from_slice(&record);
                }
            }
            Damage::AbsurdLength { file, length } => {
                // The first record starts right after the 4096-byte header; its length field
                // is at bytes 4..8 of it (docs/FORMAT.md).
                let bytes = &mut files[file % count].1;
                if bytes.len() >= FIRST_RECORD_LENGTH_FIELD + 4 {
                    bytes[FIRST_RECORD_LENGTH_FIELD..FIRST_RECORD_LENGTH_FIELD + 4]
                        .copy_from_slice(&length.to_le_bytes());
                }
            }
            extra @ Damage::Extra { .. } => extras.push(extra),
        }
    }
    (files, extras)
}

/// Writes the files (and extras) to a fresh simulated machine, durably.
async fn machine_with(files: &[(String, Vec<u8>)], extras: &[Damage]) -> Arc<dyn Storage> {
    let simulated = SimulatedStorage::new(11);
    simulated.create_dir_all_durably(Path::new(DIR)).unwrap();
    let storage: Arc<dyn Storage> = Arc::new(simulated);
    let dir = PathBuf::from(DIR);
    for (name, bytes) in files {
        let file = storage.open(&dir.join(name)).await.unwrap();
        file.write_at(0, Bytes::from(bytes.clone())).await.unwrap();
        file.sync().await.unwrap();
    }
    for extra in extras {
        if let Damage::Extra { kind, id, bytes } = extra {
            let path = dir.join(format!("{id:020}.wal"));
            if storage.exists(&path).await.unwrap() {
                continue;
            }
            match kind {
                0 => drop(storage.open(&path).await.unwrap()),
                1 => {
                    let file = storage.open(&path).await.unwrap();
                    file.write_at(0, Bytes::from(bytes.clone())).await.unwrap();
                    file.sync().await.unwrap();
                }
                _ => storage.create_dir_all(&path).await.unwrap(),
            }
        }
    }
    storage.sync_dir(&dir).await.unwrap();
    storage
}

/// Opens under `mode` and checks the outcome: an error that names a file of the log, or a log
/// whose every entry is the original one at its index.
async fn check(storage: Arc<dyn Storage>, mode: RecoveryMode) -> Result<(), TestCaseError> {
    let wal = match Wal::open(storage, config(mode)).await {
        Ok(wal) => wal,
        Err(error) => {
            let message = error.to_string();
            prop_assert!(
                message.contains(DIR),
                "{mode:?}: error names no file: {message}"
            );
            return Ok(());
        }
    };
    let original = &original().entries;
    for index in wal.first_index()..=wal.last_index() {
        // Recovery verified every record it kept: with no I/O faults, a read cannot fail.
        let read = wal.read(index).await;
        prop_assert!(
            read.is_ok(),
            "{:?}: entry {} unreadable: {:?}",
            mode,
            index,
            read
        );
        let entry = read.unwrap();
        let expected = original.get(index as usize - 1);
        prop_assert_eq!(
            Some(&entry),
            expected,
            "{:?}: entry {} differs",
            mode,
            index
        );
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|text| text.parse().ok())
            .unwrap_or(DEFAULT_CASES),
        ..ProptestConfig::default()
    })]

    // Proves any combination of one to four damages gives, under every recovery mode, either a
    // structured error naming a file of the log or only entries identical to the originals,
    // within a fixed memory budget whatever the length fields say.
    #[test]
    fn damaged_logs_give_errors_or_original_entries(
        damages in proptest::collection::vec(damage(), 1..5)
    ) {
        let (files, extras) = damaged_files(&damages);
        let runtime = runtime();
        for mode in [
            RecoveryMode::TolerateTailCorruption,
            RecoveryMode::AbsoluteConsistency,
            RecoveryMode::PointInTime,
        ] {
            runtime.block_on(async {
                let storage = machine_with(&files, &extras).await;
                let budget = MemoryBudget::start();
                let outcome = check(storage, mode).await;
                drop(budget);
                outcome
            })?;
        }
    }
}
