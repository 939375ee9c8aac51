//! Named regression tests: each one is a bug that was found, with the scenario that exposed it.

use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use helix_wal::{Entry, SimulatedStorage, Storage, Wal, WalConfig};

fn config(dir: &Path) -> WalConfig {
    WalConfig::new(dir)
        .segment_size_bytes(64 << 10)
        .max_entry_size_bytes(8 << 10)
}

// Regression: the log created its directory with create_dir_all but never synced the parent, so
// a power loss could remove the directory together with every synced segment in it: about half
// of all seeds reopened an empty log. Proves, over 200 seeds, that every entry acknowledged
// durable survives a power loss when the log directory itself was created by the log.
#[tokio::test(flavor = "current_thread")]
async fn log_directory_creation_is_durable() {
    for seed in 0..200u64 {
        let simulated = SimulatedStorage::new(seed);
        simulated.create_dir_all_durably(Path::new("/sim")).unwrap();
        let storage: Arc<dyn Storage> = Arc::new(simulated.clone());
        let dir = Path::new("/sim/data/log");
        let mut wal = Wal::open(storage.clone(), config(dir)).await.unwrap();
        for index in 1..=40u64 {
            let payload = Bytes::from(vec![index as u8; 100 + index as usize * 37]);
            wal.append_batch_durable(&[Entry::new(index, 1, payload)])
                .await
                .unwrap();
        }
        wal.append(Entry::new(41, 1, Bytes::from_static(b"unsynced")))
            .await
            .unwrap();
        drop(wal);
        simulated.crash();
        let wal = Wal::open(storage.clone(), config(dir)).await.unwrap();
        assert!(wal.last_index() >= 40, "seed {seed}: lost durable entries");
        for index in 1..=40u64 {
            let read = wal.read(index).await.unwrap();
            assert_eq!(read.payload.len(), 100 + index as usize * 37, "seed {seed}");
        }
    }
}
