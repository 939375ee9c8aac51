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

// Regression: the background spare segment reserved its id when its preparation started, so
// after a purge the recycled files installed first took higher ids, and the spare, installed
// last, became the newest segment with the lowest id; the next open ordered segments by id,
// took the newest for superseded and removed it with every entry in it. Proves that rotating
// through recycled files and then the spare keeps every synced entry across a reopen.
#[tokio::test(flavor = "current_thread")]
async fn segment_ids_follow_installation_order() {
    let simulated = SimulatedStorage::new(11);
    simulated.create_dir_all_durably(Path::new("/sim")).unwrap();
    let storage: Arc<dyn Storage> = Arc::new(simulated);
    let dir = Path::new("/sim/log");
    let mut wal = Wal::open(storage.clone(), config(dir)).await.unwrap();
    let mut index = 1u64;
    let mut append_until = |wal: &mut Wal<Arc<dyn Storage>>, segments: usize| {
        let mut batch = Vec::new();
        while wal.segments().len() + batch.len() / 12 < segments {
            batch.push(Entry::new(index, 1, Bytes::from(vec![index as u8; 5000])));
            index += 1;
        }
        batch
    };
    let batch = append_until(&mut wal, 4);
    wal.append_batch_durable(&batch).await.unwrap();
    wal.purge_before(wal.last_index()).await.unwrap();
    // Three more rotations: two recycled files, then the spare.
    for _ in 0..3 {
        let target = wal.segments().len() + 1;
        while wal.segments().len() < target {
            let entry = Entry::new(wal.last_index() + 1, 1, Bytes::from(vec![7u8; 5000]));
            wal.append_batch_durable(&[entry]).await.unwrap();
        }
    }
    let ids: Vec<u64> = wal.segments().iter().map(|s| s.segment_id).collect();
    assert!(
        ids.windows(2).all(|pair| pair[0] < pair[1]),
        "ids out of order: {ids:?}"
    );
    let last = wal.last_index();
    drop(wal);
    let wal = Wal::open(storage.clone(), config(dir)).await.unwrap();
    assert_eq!(wal.last_index(), last);
    assert!(wal.recovery_report().segments_removed.is_empty());
}
