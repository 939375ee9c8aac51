//! Fuzzes segment parsing and recovery, structure-aware: the first bytes of the input shape a
//! real log (entry count and sizes, an optional truncation) written by the log itself on
//! `SimulatedStorage`; the rest is a list of damages (file, offset, byte to XOR) applied to its
//! segment files. The damaged directory is then opened under every recovery mode. Opening may
//! fail with a structured error; it must never panic or hang, and a log it opens must read back
//! every entry it claims.
#![no_main]

use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use helix_wal::{Entry, RecoveryMode, SimulatedStorage, Storage, Wal, WalConfig};
use libfuzzer_sys::fuzz_target;

const DIR: &str = "/sim/log";
/// Bytes of input per damage: file, 3 bytes of offset, XOR mask.
const DAMAGE_BYTES: usize = 5;

fuzz_target!(|input: &[u8]| {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    runtime.block_on(recover(input));
});

fn config(mode: RecoveryMode) -> WalConfig {
    WalConfig::new(DIR)
        .segment_size_bytes(64 << 10)
        .max_entry_size_bytes(4096)
        .recovery_mode(mode)
}

async fn recover(input: &[u8]) {
    let Some((&shape, rest)) = input.split_first() else {
        return;
    };
    let (sizes, damages) = rest.split_at(rest.len().min(64));
    let simulated = SimulatedStorage::new(1);
    simulated
        .create_dir_all_durably(Path::new("/sim"))
        .expect("root");
    let storage: Arc<dyn Storage> = Arc::new(simulated);
    let mut wal = Wal::open(storage.clone(), config(RecoveryMode::default()))
        .await
        .expect("open");
    let count = 1 + u64::from(shape % 64);
    for index in 1..=count {
        let size = sizes
            .get(index as usize % sizes.len().max(1))
            .copied()
            .unwrap_or(7);
        let entry = Entry::new(index, 1, Bytes::from(vec![size; usize::from(size) * 16]));
        wal.append_batch_durable(&[entry]).await.expect("append");
    }
    if shape & 0x80 != 0 && count > 2 {
        wal.truncate_after(count / 2).await.expect("truncate");
    }
    wal.close().await.expect("close");
    drop(wal);
    let files: Vec<_> = storage
        .list(Path::new(DIR))
        .await
        .expect("list")
        .into_iter()
        .filter(|path| path.extension().is_some_and(|extension| extension == "wal"))
        .collect();
    for damage in damages.chunks_exact(DAMAGE_BYTES) {
        let path = &files[usize::from(damage[0]) % files.len()];
        let file = storage.open(path).await.expect("open");
        let size = file.size().await.expect("size");
        let offset = u64::from_le_bytes([damage[1], damage[2], damage[3], 0, 0, 0, 0, 0]);
        let offset = offset % size.max(1);
        let old = file.read_at(offset, 1).await.expect("read");
        let new = old.first().copied().unwrap_or(0) ^ damage[4].max(1);
        file.write_at(offset, Bytes::copy_from_slice(&[new]))
            .await
            .expect("write");
        file.sync().await.expect("sync");
    }
    for mode in [
        RecoveryMode::TolerateTailCorruption,
        RecoveryMode::AbsoluteConsistency,
        RecoveryMode::PointInTime,
    ] {
        // Read-only, so each mode sees the same damaged directory.
        let Ok(wal) = Wal::open_read_only(storage.clone(), config(mode)).await else {
            continue;
        };
        if wal.first_index() <= wal.last_index() {
            let entries = wal
                .read_range(wal.first_index(), wal.last_index() + 1, usize::MAX)
                .await
                .expect("a log recovery accepted reads back");
            assert_eq!(
                entries.len() as u64,
                (wal.last_index() - wal.first_index() + 1).min(entries.len() as u64)
            );
        }
    }
}
