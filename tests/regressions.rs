//! Named regression tests: each one is a bug that was found, with the scenario that exposed it.

mod common;

use std::path::Path;
use std::sync::Arc;

use common::instrumented::Instrumented;

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

// Regression: a run killed between renaming a new segment into place and syncing the
// directory left a segment name that recovery used without syncing the directory, so entries
// acknowledged after the restart could vanish with the name at the next power loss. Here a
// rotation stalls in its directory sync and the process dies there; the log reopens, appends
// durably, and the power fails. Proves, over 100 seeds, that the entry acknowledged after the
// restart survives.
#[tokio::test(flavor = "current_thread")]
async fn recovery_syncs_the_directory_before_trusting_it() {
    use std::sync::atomic::Ordering;
    for seed in 0..100u64 {
        let simulated = SimulatedStorage::new(seed);
        simulated.create_dir_all_durably(Path::new("/sim")).unwrap();
        let instrumented = Instrumented::new(Arc::new(simulated.clone()));
        let probe = instrumented.probe.clone();
        let storage: Arc<dyn Storage> = Arc::new(instrumented);
        let dir = Path::new("/sim/log");
        let mut wal = Wal::open(storage.clone(), config(dir)).await.unwrap();
        let mut index = 1;
        while wal.segments().len() < 2 {
            let entry = Entry::new(index, 1, Bytes::from(vec![2u8; 6000]));
            if wal.segments().len() == 1
                && wal.segments()[0].capacity_bytes - wal.segments()[0].used_bytes < 6100
            {
                // The next append rotates: die in the directory sync after the rename.
                probe.stall_dir_syncs.store(true, Ordering::SeqCst);
                let batch = [entry];
                let stalled = tokio::time::timeout(
                    std::time::Duration::from_millis(50),
                    wal.append_batch_durable(&batch),
                );
                assert!(
                    stalled.await.is_err(),
                    "seed {seed}: the rotation did not stall"
                );
                break;
            }
            wal.append_batch_durable(&[entry]).await.unwrap();
            index += 1;
        }
        drop(wal);
        probe.stall_dir_syncs.store(false, Ordering::SeqCst);
        simulated.crash_keeping_everything();
        let mut wal = Wal::open(storage.clone(), config(dir)).await.unwrap();
        let next = wal.last_index() + 1;
        let acknowledged = Entry::new(next, 2, Bytes::from(vec![3u8; 100]));
        wal.append_batch_durable(std::slice::from_ref(&acknowledged))
            .await
            .unwrap();
        drop(wal);
        simulated.crash();
        let wal = Wal::open(storage.clone(), config(dir)).await.unwrap();
        assert!(
            wal.last_index() >= next,
            "seed {seed}: acknowledged entry {next} lost"
        );
        assert_eq!(wal.read(next).await.unwrap(), acknowledged, "seed {seed}");
    }
}

// Regression: after a failed fsync, Linux marks the unwritten pages clean but keeps serving
// them from the page cache. A restart without a reboot then recovered those entries from the
// cache, synced (successfully: nothing was dirty) and reported them durable; the next power
// loss removed them. Proves, over 100 seeds, that after a failed fsync, a process crash and a
// reopen, every entry the reopened log reports is still there after a power loss.
#[tokio::test(flavor = "current_thread")]
async fn recovery_does_not_trust_pages_a_failed_fsync_left_behind() {
    use helix_wal::{FaultKind, OneShotFault};
    for seed in 0..100u64 {
        let simulated = SimulatedStorage::new(seed);
        simulated.create_dir_all_durably(Path::new("/sim")).unwrap();
        let storage: Arc<dyn Storage> = Arc::new(simulated.clone());
        let dir = Path::new("/sim/log");
        let mut wal = Wal::open(storage.clone(), config(dir)).await.unwrap();
        let durable: Vec<Entry> = (1..=5)
            .map(|index| Entry::new(index, 1, Bytes::from(vec![index as u8; 700])))
            .collect();
        wal.append_batch_durable(&durable).await.unwrap();
        let unsynced: Vec<Entry> = (6..=9)
            .map(|index| Entry::new(index, 1, Bytes::from(vec![index as u8; 700])))
            .collect();
        wal.append_batch(&unsynced).await.unwrap();
        simulated.inject(OneShotFault::next(FaultKind::SyncError));
        assert!(
            wal.sync().await.is_err(),
            "seed {seed}: the injected fsync error"
        );
        drop(wal);
        simulated.crash_keeping_everything();
        let wal = Wal::open(storage.clone(), config(dir)).await.unwrap();
        let reported = wal.durable_index();
        assert!(reported >= 5, "seed {seed}: lost synced entries");
        drop(wal);
        simulated.crash();
        let wal = Wal::open(storage.clone(), config(dir)).await.unwrap();
        assert!(
            wal.last_index() >= reported,
            "seed {seed}: recovery reported {reported} durable, a power loss left {}",
            wal.last_index()
        );
    }
}
