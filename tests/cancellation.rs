//! Cancel safety of the log on every backend: callers drop futures (a timeout, a `select!`)
//! at any await point, and no later call may be acknowledged on top of a disagreement between
//! memory and disk. Each case holds one storage call of the operation (a directory sync, a
//! segment write) until the caller's future has been dropped there, then lets it go.

mod common;

mod cases {
    use std::path::Path;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;
    use std::time::Duration;

    use bytes::Bytes;
    use helix_wal::{BufferedWal, BufferedWalConfig, Entry, Storage, Wal, WalConfig, WalError};

    use crate::common::instrumented::{Instrumented, Probe};
    use crate::common::Harness;

    /// Longest a step may take before the test calls it a hang.
    const HANG_GUARD: Duration = Duration::from_secs(20);

    type Log = Wal<Arc<dyn Storage>>;

    fn config(dir: &Path) -> WalConfig {
        WalConfig::new(dir)
            .segment_size_bytes(64 << 10)
            .max_entry_size_bytes(16 << 10)
    }

    fn entry(index: u64, term: u64) -> Entry {
        Entry::new(
            index,
            term,
            Bytes::from(format!("entry {index} of term {term}")),
        )
    }

    fn entries(indexes: std::ops::RangeInclusive<u64>, term: u64) -> Vec<Entry> {
        indexes.map(|index| entry(index, term)).collect()
    }

    /// The harness's backend behind a probe that can hold directory syncs and writes.
    fn instrumented(harness: &Harness) -> (Arc<dyn Storage>, Arc<Probe>) {
        let instrumented = Instrumented::new(harness.storage.clone());
        let probe = Arc::clone(&instrumented.probe);
        (Arc::new(instrumented), probe)
    }

    /// A log of `1..=20` in term 1, all durable.
    async fn log_of_twenty(storage: &Arc<dyn Storage>, dir: &Path) -> Log {
        storage.create_dir_all(dir).await.unwrap();
        let mut wal = Wal::open(storage.clone(), config(dir)).await.unwrap();
        wal.append_batch_durable(&entries(1..=20, 1)).await.unwrap();
        wal
    }

    /// Polls `operation` until `counter` shows it is held in a stalled storage call, then
    /// drops it, as a caller's timeout would.
    async fn drop_when_stalled<F: std::future::Future>(operation: F, counter: &AtomicU64) {
        let stalled = async {
            while counter.load(Ordering::SeqCst) == 0 {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        };
        tokio::select! {
            _ = operation => panic!("the operation finished although its storage call was held"),
            _ = tokio::time::timeout(HANG_GUARD, stalled) => {}
        }
    }

    async fn reopen(storage: &Arc<dyn Storage>, dir: &Path) -> Log {
        Wal::open(storage.clone(), config(dir)).await.unwrap()
    }

    // Proves a truncation dropped in its directory sync cannot lose entries acknowledged
    // later: on a log of 1..=20, `truncate_after(10)` is dropped while the sync of the
    // directory after its new segment's rename is held. The append of 21..=25 that follows
    // must not be acknowledged (the truncation takes effect first, so 21 no longer continues
    // the log); appending 11..=15 durably works, and a reopen finds exactly 1..=15. Before the
    // log finished dropped operations, 21..=25 were acknowledged durable and lost on reopen.
    pub async fn a_dropped_truncation_takes_effect_before_the_next_write(harness: Harness) {
        let (storage, probe) = instrumented(&harness);
        let mut wal = log_of_twenty(&storage, &harness.dir).await;
        probe.stall_dir_syncs.store(true, Ordering::SeqCst);
        drop_when_stalled(wal.truncate_after(10), &probe.dir_syncs_stalled).await;
        probe.release_dir_syncs();
        let refused = wal.append_batch_durable(&entries(21..=25, 1)).await;
        assert!(
            matches!(
                refused,
                Err(WalError::NonContiguousIndex { expected: 11, .. })
            ),
            "an append continuing the truncated end: {refused:?}"
        );
        assert_eq!((wal.last_index(), wal.durable_index()), (10, 10));
        wal.append_batch_durable(&entries(11..=15, 2))
            .await
            .unwrap();
        wal.close().await.unwrap();
        drop(wal);
        let wal = reopen(&storage, &harness.dir).await;
        assert_eq!((wal.first_index(), wal.last_index()), (1, 15));
        for index in 1..=15 {
            let term = if index <= 10 { 1 } else { 2 };
            assert_eq!(wal.read(index).await.unwrap(), entry(index, term));
        }
    }

    // Proves the same for a purge past the end (a reset to a snapshot): dropped in its
    // directory sync, it still takes effect before the next append, which must carry the
    // snapshot's next index; a reopen agrees.
    pub async fn a_dropped_reset_takes_effect_before_the_next_write(harness: Harness) {
        let (storage, probe) = instrumented(&harness);
        let mut wal = log_of_twenty(&storage, &harness.dir).await;
        probe.stall_dir_syncs.store(true, Ordering::SeqCst);
        drop_when_stalled(wal.purge_before(30), &probe.dir_syncs_stalled).await;
        probe.release_dir_syncs();
        let refused = wal.append_batch_durable(&entries(21..=21, 1)).await;
        assert!(
            matches!(
                refused,
                Err(WalError::NonContiguousIndex { expected: 30, .. })
            ),
            "an append continuing the reset log's old end: {refused:?}"
        );
        wal.append_batch_durable(&entries(30..=32, 3))
            .await
            .unwrap();
        wal.close().await.unwrap();
        drop(wal);
        let wal = reopen(&storage, &harness.dir).await;
        assert_eq!((wal.first_index(), wal.last_index()), (30, 32));
        assert_eq!(wal.read(31).await.unwrap(), entry(31, 3));
    }

    // Proves a durable append dropped while its write is held is finished, not repeated or
    // overwritten: the caller retries index 21 with other bytes (as a new leader's entry would
    // be), which must be refused because the first write of 21 took effect; 21 reads back as
    // the first write, before and after a reopen.
    pub async fn a_dropped_append_is_finished_not_overwritten(harness: Harness) {
        let (storage, probe) = instrumented(&harness);
        let mut wal = log_of_twenty(&storage, &harness.dir).await;
        probe.stall_writes.store(true, Ordering::SeqCst);
        let first = entry(21, 1);
        let batch = [first.clone()];
        drop_when_stalled(wal.append_batch_durable(&batch), &probe.writes_stalled).await;
        assert_eq!(wal.last_index(), 20, "a dropped append is not applied yet");
        probe.release_writes();
        let retried = wal.append_batch_durable(&[entry(21, 2)]).await;
        assert!(
            matches!(
                retried,
                Err(WalError::NonContiguousIndex { expected: 22, .. })
            ),
            "a second write of index 21: {retried:?}"
        );
        wal.sync().await.unwrap();
        assert_eq!((wal.last_index(), wal.durable_index()), (21, 21));
        assert_eq!(wal.read(21).await.unwrap(), first);
        wal.close().await.unwrap();
        drop(wal);
        let wal = reopen(&storage, &harness.dir).await;
        assert_eq!(wal.last_index(), 21);
        assert_eq!(wal.read(21).await.unwrap(), first);
    }

    // Proves a dropped close leaves a log that a second close finishes: the first close is
    // dropped in its final sync (its write held), the second returns Ok, and every entry is
    // durable after a reopen.
    pub async fn a_dropped_close_is_finished_by_the_next(harness: Harness) {
        let (storage, probe) = instrumented(&harness);
        let mut wal = log_of_twenty(&storage, &harness.dir).await;
        probe.stall_writes.store(true, Ordering::SeqCst);
        drop_when_stalled(
            wal.append_batch(&entries(21..=22, 1)),
            &probe.writes_stalled,
        )
        .await;
        probe.release_writes();
        wal.close().await.unwrap();
        assert_eq!(wal.durable_index(), 22);
        drop(wal);
        let wal = reopen(&storage, &harness.dir).await;
        assert_eq!(wal.last_index(), 22);
    }

    // Proves a dropped BufferedWal truncation neither wedges the log nor half-applies: with
    // the directory sync held, `truncate_after(10)` is dropped; appends issued meanwhile wait
    // (they must not get indexes the truncation is removing) and, once the sync is let go,
    // continue from 11; a reopen finds 1..=11. Before the truncation ran in a task of its own,
    // the dropped future left appends paused for ever.
    pub async fn a_dropped_buffered_truncation_does_not_wedge_appends(harness: Harness) {
        let (storage, probe) = instrumented(&harness);
        let wal = log_of_twenty(&storage, &harness.dir).await;
        let log = BufferedWal::new(wal, BufferedWalConfig::default()).unwrap();
        probe.stall_dir_syncs.store(true, Ordering::SeqCst);
        drop_when_stalled(log.truncate_after(10), &probe.dir_syncs_stalled).await;
        let index = {
            let waiting = log.append_next(2, Bytes::from_static(b"after the truncation"));
            tokio::pin!(waiting);
            let early = tokio::time::timeout(Duration::from_millis(20), waiting.as_mut()).await;
            assert!(
                early.is_err(),
                "an append overtook the truncation: {early:?}"
            );
            probe.release_dir_syncs();
            tokio::time::timeout(HANG_GUARD, waiting)
                .await
                .expect("the append hung after a dropped truncation")
                .unwrap()
        };
        assert_eq!(index, 11);
        tokio::time::timeout(HANG_GUARD, log.wait_durable(index))
            .await
            .expect("durability hung")
            .unwrap();
        log.close().await.unwrap();
        drop(log);
        let wal = reopen(&storage, &harness.dir).await;
        assert_eq!((wal.first_index(), wal.last_index()), (1, 11));
        assert_eq!(
            &wal.read(11).await.unwrap().payload[..],
            b"after the truncation"
        );
    }

    // Proves a dropped BufferedWal close still closes: the close is dropped while the final
    // flush's write is held; once let go, appends are refused as shut down, a second close
    // returns, and everything appended before is durable after a reopen.
    pub async fn a_dropped_buffered_close_still_closes(harness: Harness) {
        let (storage, probe) = instrumented(&harness);
        let wal = log_of_twenty(&storage, &harness.dir).await;
        let config = BufferedWalConfig {
            flush_interval_ms: 1_000,
            ..BufferedWalConfig::default()
        };
        let log = BufferedWal::new(wal, config).unwrap();
        log.append_next(1, Bytes::from_static(b"buffered"))
            .await
            .unwrap();
        probe.stall_writes.store(true, Ordering::SeqCst);
        drop_when_stalled(log.close(), &probe.writes_stalled).await;
        probe.release_writes();
        let refused = log.append_next(1, Bytes::from_static(b"late")).await;
        assert!(
            matches!(refused, Err(WalError::Shutdown { .. })),
            "{refused:?}"
        );
        tokio::time::timeout(HANG_GUARD, log.close())
            .await
            .expect("the second close hung")
            .unwrap();
        drop(log);
        let wal = reopen(&storage, &harness.dir).await;
        assert_eq!(wal.last_index(), 21);
    }
}

for_each_log_backend!(crate::cases;
    a_dropped_truncation_takes_effect_before_the_next_write,
    a_dropped_reset_takes_effect_before_the_next_write,
    a_dropped_append_is_finished_not_overwritten,
    a_dropped_close_is_finished_by_the_next,
    a_dropped_buffered_truncation_does_not_wedge_appends,
    a_dropped_buffered_close_still_closes,
);
