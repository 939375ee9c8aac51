//! Observability: the exact counts of `Wal::stats` and `BufferedWal::stats` after known
//! sequences of operations (on every backend, through `for_each_log_backend!`), the tracing
//! events of a recovery cut and of poisoning, and the `metrics` export.

#[path = "../common/mod.rs"]
mod common;

mod cases {
    use std::path::Path;
    use std::sync::atomic::Ordering;
    use std::sync::Arc;

    use bytes::Bytes;
    use helix_wal::constants::SEGMENT_HEADER_SIZE_BYTES;
    use helix_wal::{
        BufferedWal, BufferedWalConfig, Entry, GroupCommitStats, Storage, Wal, WalConfig, WalStats,
    };

    use crate::common::instrumented::Instrumented;
    use crate::common::Harness;

    /// The smallest segment, so a few large entries rotate.
    const SEGMENT_BYTES: u64 = 64 << 10;
    /// Payload of the small entries.
    const SMALL: usize = 100;
    /// Payload of the large entries: three fit in a segment, four do not.
    const LARGE: usize = 16_000;

    pub fn config(dir: &Path) -> WalConfig {
        WalConfig::new(dir)
            .segment_size_bytes(SEGMENT_BYTES)
            .max_entry_size_bytes(16 << 10)
    }

    fn entry(index: u64, len: usize) -> Entry {
        Entry::new(index, 1, Bytes::from(vec![index as u8; len]))
    }

    fn batch(first: u64, count: u64, len: usize) -> Vec<Entry> {
        (first..first + count)
            .map(|index| entry(index, len))
            .collect()
    }

    /// A new log in `dir` behind a BufferedWal whose interval is so long that nothing flushes
    /// unless asked.
    pub async fn flushed_on_request(
        storage: Arc<dyn Storage>,
        dir: &Path,
    ) -> BufferedWal<Arc<dyn Storage>> {
        let wal = Wal::open(storage, config(dir)).await.unwrap();
        let buffered_config = BufferedWalConfig {
            flush_interval_ms: 10_000,
            ..BufferedWalConfig::default()
        };
        BufferedWal::new(wal, buffered_config).unwrap()
    }

    /// Asserts the counters that are easy to get wrong together, with the sync histogram
    /// counting exactly the syncs.
    fn assert_counts(stats: &WalStats, appends: u64, entries: u64, syncs: u64) {
        assert_eq!(
            (stats.appends, stats.entries, stats.syncs),
            (appends, entries, syncs),
            "{stats:#?}"
        );
        assert_eq!(stats.sync_latency.count, syncs, "{stats:#?}");
    }

    // Proves each counter of `Wal::stats` with exact values after a known sequence: appends,
    // entries, payload and written bytes (cross-checked against the segment's used bytes),
    // syncs (no-op syncs not counted), the durable-append histogram, rotations (the first
    // segment is not one), truncations and purges (no-ops not counted), recycled segments, and
    // the poisoned flag after an injected fsync failure.
    pub async fn wal_counts_every_operation(harness: Harness) {
        let instrumented = Instrumented::new(harness.storage.clone());
        let probe = instrumented.probe.clone();
        let storage: Arc<dyn Storage> = Arc::new(instrumented);
        let mut wal = Wal::open(storage, config(&harness.dir)).await.unwrap();
        assert_eq!(wal.stats(), WalStats::default());

        wal.append(entry(1, SMALL)).await.unwrap();
        wal.append_batch(&batch(2, 2, SMALL)).await.unwrap();
        wal.sync().await.unwrap();
        wal.sync().await.unwrap(); // Nothing to sync: not counted.
        wal.append_batch_durable(&batch(4, 1, SMALL)).await.unwrap();
        let stats = wal.stats();
        assert_counts(&stats, 3, 4, 2);
        assert_eq!(stats.payload_bytes, 4 * SMALL as u64);
        let used = wal.segments()[0].used_bytes;
        assert_eq!(stats.written_bytes, used - SEGMENT_HEADER_SIZE_BYTES as u64);
        assert_eq!(stats.durable_append_latency.count, 1);
        assert_eq!(stats.segments_rotated, 0);

        // Five large entries: three fill the first segment, which is synced and rotated.
        wal.append_batch(&batch(5, 5, LARGE)).await.unwrap();
        let stats = wal.stats();
        assert_counts(&stats, 4, 9, 3);
        assert_eq!(stats.segments_rotated, 1);
        assert_eq!(wal.segments().len(), 2);
        let used: u64 = wal
            .segments()
            .iter()
            .map(|segment| segment.used_bytes)
            .sum();
        assert_eq!(
            stats.written_bytes,
            used - 2 * SEGMENT_HEADER_SIZE_BYTES as u64
        );

        // Truncation syncs what stays first; a no-op truncation is not counted.
        wal.truncate_after(5).await.unwrap();
        wal.truncate_after(100).await.unwrap();
        assert_eq!(wal.stats().truncations, 1);
        assert_counts(&wal.stats(), 4, 9, 4);

        // Purging the first segment keeps its file for reuse; a no-op purge is not counted.
        wal.purge_before(6).await.unwrap();
        wal.purge_before(1).await.unwrap();
        assert_eq!(wal.stats().purges, 1);

        // Filling the new segment rotates into the recycled file.
        wal.append_batch_durable(&batch(6, 5, LARGE)).await.unwrap();
        let stats = wal.stats();
        assert_counts(&stats, 5, 14, 6);
        assert_eq!(
            (stats.segments_rotated, stats.segments_recycled),
            (2, 1),
            "{stats:#?}"
        );
        assert_eq!(stats.payload_bytes, (4 * SMALL + 10 * LARGE) as u64);
        assert_eq!(stats.durable_append_latency.count, 2);
        assert!(!stats.poisoned);

        // A failed fsync poisons: the flag is set, the failed sync is not counted.
        wal.append(entry(11, SMALL)).await.unwrap();
        probe.fail_syncs.store(true, Ordering::SeqCst);
        assert!(wal.sync().await.is_err());
        let stats = wal.stats();
        assert!(stats.poisoned);
        assert_counts(&stats, 6, 15, 6);
        assert_eq!(stats.group_commit, None);
    }

    // Proves `BufferedWal::stats`: each explicit flush is one group commit of exactly the
    // entries buffered since the last (counted in flushes, flushed entries and the largest
    // flush), it is one append and one sync of the log underneath, and a truncation through
    // the buffered log is counted by the log.
    pub async fn buffered_wal_counts_group_commits(harness: Harness) {
        let log = flushed_on_request(harness.storage.clone(), &harness.dir).await;
        let expected_empty = GroupCommitStats::default();
        assert_eq!(log.stats().group_commit, Some(expected_empty));
        for _ in 0..3 {
            log.append_next(1, Bytes::from_static(b"three"))
                .await
                .unwrap();
        }
        log.flush().await.unwrap();
        for _ in 0..2 {
            log.append_next(1, Bytes::from_static(b"two"))
                .await
                .unwrap();
        }
        log.flush().await.unwrap();
        let stats = log.stats();
        let group_commit = stats.group_commit.clone().unwrap();
        assert_eq!(
            (
                group_commit.flushes,
                group_commit.flushed_entries,
                group_commit.largest_flush_entries
            ),
            (2, 5, 3)
        );
        assert_counts(&stats, 2, 5, 2);
        assert_eq!(stats.durable_append_latency.count, 2);
        assert_eq!(stats.payload_bytes, 3 * 5 + 2 * 3);

        log.truncate_after(4).await.unwrap();
        let stats = log.stats();
        assert_eq!(stats.truncations, 1);
        // The truncation had nothing buffered to write, so no append; it synced nothing new.
        assert_counts(&stats, 2, 5, 2);
        log.close().await.unwrap();
    }
}

for_each_log_backend!(crate::cases;
    wal_counts_every_operation,
    buffered_wal_counts_group_commits,
);

mod tracing_events;

#[cfg(feature = "metrics")]
mod metrics_export;

#[cfg(all(target_os = "linux", feature = "io-uring"))]
mod io_uring_latency;
