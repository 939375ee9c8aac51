//! BufferedWal on every backend: group commit, the two acknowledgements, flush triggers, failure
//! propagation, truncation and close.

mod common;

mod cases {
    use std::path::Path;
    use std::sync::atomic::Ordering;
    use std::sync::Arc;
    use std::time::Duration;

    use bytes::Bytes;
    use helix_wal::{BufferedWal, BufferedWalConfig, Entry, Storage, Wal, WalConfig, WalError};

    use crate::common::instrumented::Instrumented;
    use crate::common::Harness;

    /// Generous bound for anything that must happen "soon": a hang fails the test instead of
    /// stalling the suite. Never used to assert speed.
    const HANG_GUARD: Duration = Duration::from_secs(30);

    fn config(dir: &Path) -> WalConfig {
        WalConfig::new(dir)
            .segment_size_bytes(256 << 10)
            .max_entry_size_bytes(16 << 10)
    }

    fn buffered_config(flush_interval_ms: u64) -> BufferedWalConfig {
        BufferedWalConfig {
            flush_interval_ms,
            ..BufferedWalConfig::default()
        }
    }

    fn payload_for(task: u64, sequence: u64) -> Bytes {
        Bytes::from(format!("task {task} entry {sequence} {}", "x".repeat(64)))
    }

    async fn open_buffered(
        storage: Arc<dyn Storage>,
        dir: &Path,
        flush: BufferedWalConfig,
    ) -> BufferedWal<Arc<dyn Storage>> {
        let wal = Wal::open(storage, config(dir)).await.unwrap();
        BufferedWal::new(wal, flush).unwrap()
    }

    /// Concurrent appenders in the group-commit cases.
    const APPENDERS: u64 = 16;
    /// Durable appends each of them makes, one after another.
    const APPENDS_PER_APPENDER: u64 = 40;
    /// The longest flush interval the configuration accepts, in milliseconds.
    const LONGEST_FLUSH_INTERVAL_MS: u64 = 10_000;

    /// Runs `APPENDERS` tasks that each append `APPENDS_PER_APPENDER` entries, waiting for each
    /// to be durable before the next. Returns every acknowledged index with its payload.
    async fn append_durably_from_many_tasks(
        log: &BufferedWal<Arc<dyn Storage>>,
    ) -> Vec<(u64, Bytes)> {
        let mut tasks = Vec::new();
        for task in 0..APPENDERS {
            let log = log.clone();
            tasks.push(tokio::spawn(async move {
                let mut acknowledged = Vec::new();
                for sequence in 0..APPENDS_PER_APPENDER {
                    let payload = payload_for(task, sequence);
                    let index = log.append_next(1, payload.clone()).await.unwrap();
                    log.wait_durable(index).await.unwrap();
                    assert!(log.durable_index() >= index);
                    acknowledged.push((index, payload));
                }
                acknowledged
            }));
        }
        let mut acknowledged = Vec::new();
        for task in tasks {
            acknowledged.extend(
                tokio::time::timeout(HANG_GUARD, task)
                    .await
                    .unwrap()
                    .unwrap(),
            );
        }
        acknowledged
    }

    /// Closes the log, reopens it and checks that it holds exactly the acknowledged entries.
    async fn assert_acknowledged_survive_reopen(
        log: BufferedWal<Arc<dyn Storage>>,
        storage: Arc<dyn Storage>,
        dir: &Path,
        acknowledged: Vec<(u64, Bytes)>,
    ) {
        log.close().await.unwrap();
        drop(log);
        let wal = Wal::open(storage, config(dir)).await.unwrap();
        let appends = APPENDERS * APPENDS_PER_APPENDER;
        assert_eq!((wal.first_index(), wal.last_index()), (1, appends));
        assert_eq!(acknowledged.len() as u64, appends);
        for (index, payload) in acknowledged {
            assert_eq!(
                wal.read(index).await.unwrap().payload,
                payload,
                "index {index}"
            );
        }
    }

    // Proves that with 16 concurrent appenders each waiting for durability of every append, and
    // a flusher that flushes as soon as anything is buffered (racing the appenders), every
    // acknowledged index is present after reopen with exactly its payload and the indexes are
    // contiguous. How many appenders share a flush here depends on scheduling (a backend that
    // completes every call at once may serve them one by one), so only what holds either way is
    // asserted about it: never more flushes than appends.
    pub async fn concurrent_durable_appenders_survive_reopen(harness: Harness) {
        let storage = harness.storage.clone();
        let log = open_buffered(storage.clone(), &harness.dir, buffered_config(0)).await;
        let acknowledged = append_durably_from_many_tasks(&log).await;
        let flushes = log.stats().group_commit.unwrap().flushes;
        assert!(
            flushes <= APPENDERS * APPENDS_PER_APPENDER,
            "{flushes} flushes"
        );
        assert_acknowledged_survive_reopen(log, storage, &harness.dir, acknowledged).await;
    }

    // Proves group commit: concurrent durable appenders share one flush, and one fsync. The
    // buffer flushes when it holds one entry per appender (each waits for its own entry, so
    // holds at most one), or when the oldest entry has waited the longest interval; such a
    // flush needs that interval of waiting since the previous one began. So there are at most
    // 40 flushes of all 16 appenders' entries plus one per interval elapsed: exactly 40 unless
    // the run stalled for 10 s. Every acknowledged entry survives reopen.
    pub async fn concurrent_durable_appenders_share_flushes(harness: Harness) {
        let instrumented = Instrumented::new(harness.storage.clone());
        let probe = instrumented.probe.clone();
        let one_flush_per_round = BufferedWalConfig {
            flush_interval_ms: LONGEST_FLUSH_INTERVAL_MS,
            max_buffered_entries: APPENDERS as usize,
            ..BufferedWalConfig::default()
        };
        let log = open_buffered(Arc::new(instrumented), &harness.dir, one_flush_per_round).await;
        let syncs_before = probe.syncs();
        let started = std::time::Instant::now();
        let acknowledged = append_durably_from_many_tasks(&log).await;
        let intervals_elapsed = started.elapsed().as_millis() as u64 / LONGEST_FLUSH_INTERVAL_MS;
        let group_commit = log.stats().group_commit.unwrap();
        let syncs = probe.syncs() - syncs_before;
        assert_eq!(
            group_commit.flushed_entries,
            APPENDERS * APPENDS_PER_APPENDER
        );
        assert!(
            group_commit.flushes <= APPENDS_PER_APPENDER + intervals_elapsed,
            "{} durable appends took {} flushes in {intervals_elapsed} intervals: \
             appenders did not share them",
            APPENDERS * APPENDS_PER_APPENDER,
            group_commit.flushes
        );
        assert_eq!(syncs, group_commit.flushes, "one fsync per flush");
        assert_acknowledged_survive_reopen(
            log,
            harness.storage.clone(),
            &harness.dir,
            acknowledged,
        )
        .await;
    }

    // Proves append acknowledges before durability (entry readable, durable index unchanged),
    // and an explicit flush makes everything durable with one write and one sync.
    pub async fn append_is_buffered_until_flush(harness: Harness) {
        let instrumented = Instrumented::new(harness.storage.clone());
        let probe = instrumented.probe.clone();
        // Entry 1 creates the first segment, whose own writes and syncs are not group commits.
        let mut wal = Wal::open(
            Arc::new(instrumented) as Arc<dyn Storage>,
            config(&harness.dir),
        )
        .await
        .unwrap();
        wal.append_batch_durable(&[Entry::new(1, 1, payload_for(0, 1))])
            .await
            .unwrap();
        let log = BufferedWal::new(wal, buffered_config(10_000)).unwrap();
        let (writes, syncs) = (probe.writes(), probe.syncs());
        for index in 2..=101 {
            let appended = log.append(Entry::new(index, 1, payload_for(0, index)));
            assert_eq!(appended.await.unwrap(), index);
        }
        assert_eq!(log.durable_index(), 1);
        assert_eq!(log.last_index(), 101);
        assert_eq!(log.read(57).await.unwrap().payload, payload_for(0, 57));
        let range = log.read_range(95, 101, usize::MAX).await.unwrap();
        assert_eq!(range.len(), 6);
        let flushed = (probe.writes() - writes, probe.syncs() - syncs);
        assert_eq!(flushed, (0, 0), "nothing flushed yet");
        log.flush().await.unwrap();
        assert_eq!(log.durable_index(), 101);
        let flushed = (probe.writes() - writes, probe.syncs() - syncs);
        assert_eq!(flushed, (1, 1), "one group commit");
        let appended = log.append(Entry::new(102, 1, payload_for(0, 102)));
        appended.await.unwrap();
        let mixed = log.read_range(100, 103, usize::MAX).await.unwrap();
        let indexes: Vec<u64> = mixed.iter().map(|entry| entry.index).collect();
        assert_eq!(indexes, vec![100, 101, 102]);
    }

    // Proves the flush interval alone makes an entry durable (no explicit flush), and that the
    // entry-count limit triggers a flush long before a 10 s interval would.
    pub async fn interval_and_limits_trigger_flushes(harness: Harness) {
        let log = open_buffered(harness.storage.clone(), &harness.dir, buffered_config(5)).await;
        let index = log.append_next(1, payload_for(1, 1)).await.unwrap();
        tokio::time::timeout(HANG_GUARD, log.wait_durable(index))
            .await
            .unwrap()
            .unwrap();
        log.close().await.unwrap();
        let limited = BufferedWalConfig {
            flush_interval_ms: 10_000,
            max_buffered_entries: 4,
            ..BufferedWalConfig::default()
        };
        let dir = harness.dir.join("limited");
        let log = open_buffered(harness.storage.clone(), &dir, limited).await;
        for sequence in 0..4 {
            log.append_next(1, payload_for(2, sequence)).await.unwrap();
        }
        let waited = tokio::time::timeout(Duration::from_secs(5), log.wait_durable(4)).await;
        assert!(
            waited.is_ok(),
            "a full buffer did not flush before the 10 s interval"
        );
    }

    // Proves a failed fsync reaches every waiting appender as an error, never as success,
    // poisons the log for later appends, and leaves previously durable entries intact.
    pub async fn failed_flush_reaches_every_waiter(harness: Harness) {
        let instrumented = Instrumented::new(harness.storage.clone());
        let probe = instrumented.probe.clone();
        let log = open_buffered(Arc::new(instrumented), &harness.dir, buffered_config(1)).await;
        for sequence in 0..5 {
            log.append_durable(Entry::new(sequence + 1, 1, payload_for(0, sequence)))
                .await
                .unwrap();
        }
        probe.fail_syncs.store(true, Ordering::SeqCst);
        let mut waiters = Vec::new();
        for task in 0..8u64 {
            let log = log.clone();
            waiters.push(tokio::spawn(async move {
                log.append_next(1, payload_for(task, 99)).await?;
                log.flush().await
            }));
        }
        for waiter in waiters {
            let result = tokio::time::timeout(HANG_GUARD, waiter)
                .await
                .unwrap()
                .unwrap();
            assert!(
                result.is_err(),
                "an appender was told its entry is durable after a failed fsync"
            );
        }
        assert_eq!(log.durable_index(), 5);
        let refused = log.append_next(1, payload_for(9, 9)).await;
        assert!(
            matches!(refused, Err(WalError::Poisoned { .. })),
            "{refused:?}"
        );
        assert!(
            log.close().await.is_err(),
            "close must report the poisoning"
        );
        drop(log);
        let wal = Wal::open(harness.storage.clone(), config(&harness.dir))
            .await
            .unwrap();
        assert!(wal.last_index() >= 5);
        for index in 1..=5 {
            assert_eq!(
                wal.read(index).await.unwrap().payload,
                payload_for(0, index - 1)
            );
        }
    }

    // Proves truncate_after drops buffered and written entries above the index durably, writes
    // the buffered ones below it, and lets the log continue at the next index.
    pub async fn truncate_with_buffered_entries(harness: Harness) {
        let log = open_buffered(
            harness.storage.clone(),
            &harness.dir,
            buffered_config(10_000),
        )
        .await;
        for index in 1..=10 {
            log.append(Entry::new(index, 1, payload_for(0, index)))
                .await
                .unwrap();
        }
        log.flush().await.unwrap();
        for index in 11..=15 {
            log.append(Entry::new(index, 1, payload_for(0, index)))
                .await
                .unwrap();
        }
        log.truncate_after(12).await.unwrap();
        assert_eq!(log.last_index(), 12);
        assert!(log.read(13).await.is_err());
        log.append(Entry::new(13, 2, payload_for(1, 13)))
            .await
            .unwrap();
        log.close().await.unwrap();
        drop(log);
        let wal = Wal::open(harness.storage.clone(), config(&harness.dir))
            .await
            .unwrap();
        assert_eq!(wal.last_index(), 13);
        assert_eq!(wal.read(12).await.unwrap().payload, payload_for(0, 12));
        assert_eq!(
            wal.read(13).await.unwrap(),
            Entry::new(13, 2, payload_for(1, 13))
        );
    }

    // Regression: purge_before reset the next index from the log while appenders kept
    // buffering, so two entries got the same index and the next flush poisoned the log. Proves
    // that appenders racing purges and flushes get contiguous, unique indexes and that the log
    // reopens with every entry.
    pub async fn appends_race_purges(harness: Harness) {
        let log = open_buffered(harness.storage.clone(), &harness.dir, buffered_config(1)).await;
        let mut tasks = Vec::new();
        for task in 0..8u64 {
            let log = log.clone();
            tasks.push(tokio::spawn(async move {
                let mut indexes = Vec::new();
                for sequence in 0..150u64 {
                    indexes.push(log.append_next(1, payload_for(task, sequence)).await?);
                    // Let the purges' I/O interleave with the appends.
                    tokio::task::yield_now().await;
                }
                Ok::<_, WalError>(indexes)
            }));
        }
        let purger = {
            let log = log.clone();
            tokio::spawn(async move {
                for _ in 0..40 {
                    let durable = log.durable_index();
                    log.purge_before(durable.saturating_sub(50)).await?;
                    tokio::task::yield_now().await;
                }
                Ok::<_, WalError>(())
            })
        };
        let mut all = Vec::new();
        for task in tasks {
            all.extend(
                tokio::time::timeout(HANG_GUARD, task)
                    .await
                    .unwrap()
                    .unwrap()
                    .unwrap(),
            );
        }
        purger.await.unwrap().unwrap();
        all.sort_unstable();
        assert_eq!(
            all,
            (1..=1200).collect::<Vec<u64>>(),
            "indexes are not unique and contiguous"
        );
        log.close().await.unwrap();
        drop(log);
        let wal = Wal::open(harness.storage.clone(), config(&harness.dir))
            .await
            .unwrap();
        assert_eq!(wal.last_index(), 1200);
        let first = wal.first_index();
        let entries = wal.read_range(first, 1201, usize::MAX).await.unwrap();
        assert_eq!(entries.len() as u64, 1201 - first);
    }

    // Proves an appender waiting in append_durable is never told its entry is durable when
    // truncate_after removed it, even after another entry takes its index and is synced: it
    // gets Truncated, while entries below the cut are acknowledged normally.
    pub async fn truncated_entry_is_never_acknowledged(harness: Harness) {
        let log = open_buffered(
            harness.storage.clone(),
            &harness.dir,
            buffered_config(10_000),
        )
        .await;
        // The orchestration runs as a task on a runtime worker, where waiting by sleeping
        // lets the appenders' tasks run.
        let scenario = tokio::spawn(truncation_scenario(log));
        tokio::time::timeout(HANG_GUARD, scenario)
            .await
            .expect("the scenario hung")
            .unwrap();
    }

    async fn truncation_scenario(log: BufferedWal<Arc<dyn Storage>>) {
        for index in 1..=3 {
            log.append(Entry::new(index, 1, payload_for(0, index)))
                .await
                .unwrap();
        }
        let mut waiters = Vec::new();
        for index in 4..=6 {
            let appender = log.clone();
            waiters.push(tokio::spawn(async move {
                let entry = Entry::new(index, 1, payload_for(0, index));
                appender.append_durable(entry).await
            }));
            // Appends in index order: wait until this one is buffered.
            while log.last_index() < index {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
        // Replace 5 and 6 under a new term.
        log.truncate_after(4).await.unwrap();
        log.append(Entry::new(5, 2, payload_for(1, 5)))
            .await
            .unwrap();
        log.append(Entry::new(6, 2, payload_for(1, 6)))
            .await
            .unwrap();
        log.flush().await.unwrap();
        for waiter in waiters {
            match waiter.await.unwrap() {
                Ok(index) => assert_eq!(index, 4, "a removed entry was acknowledged"),
                Err(WalError::Truncated { index }) => assert!(index == 5 || index == 6),
                Err(other) => panic!("unexpected error {other}"),
            }
        }
        assert_eq!(log.read(5).await.unwrap().term, 2);
    }

    // Proves close flushes what is buffered, and that later calls on any clone fail with
    // Shutdown instead of hanging.
    pub async fn close_flushes_and_shuts_down(harness: Harness) {
        let log = open_buffered(
            harness.storage.clone(),
            &harness.dir,
            buffered_config(10_000),
        )
        .await;
        let other = log.clone();
        log.append(Entry::new(1, 1, payload_for(0, 1)))
            .await
            .unwrap();
        log.close().await.unwrap();
        assert!(matches!(
            other.append_next(1, Bytes::new()).await,
            Err(WalError::Shutdown { .. })
        ));
        drop((log, other));
        let wal = Wal::open(harness.storage.clone(), config(&harness.dir))
            .await
            .unwrap();
        assert_eq!(wal.last_index(), 1);
    }

    // Proves invalid buffered-log configuration and invalid appends are rejected with clear
    // errors, and that waiting for an index never appended is an error, not a hang.
    pub async fn invalid_config_and_appends(harness: Harness) {
        let wal = Wal::open(harness.storage.clone(), config(&harness.dir))
            .await
            .unwrap();
        let bad = BufferedWalConfig {
            flush_interval_ms: 3_600_000,
            ..BufferedWalConfig::default()
        };
        assert!(matches!(
            BufferedWal::new(wal, bad),
            Err(WalError::InvalidConfig {
                field: "flush_interval_ms",
                ..
            })
        ));
        let log = open_buffered(
            harness.storage.clone(),
            &harness.dir.join("b"),
            buffered_config(1),
        )
        .await;
        log.append(Entry::new(1, 5, Bytes::new())).await.unwrap();
        assert!(matches!(
            log.append(Entry::new(3, 5, Bytes::new())).await,
            Err(WalError::NonContiguousIndex { .. })
        ));
        assert!(matches!(
            log.append(Entry::new(2, 4, Bytes::new())).await,
            Err(WalError::TermRegression { .. })
        ));
        assert!(matches!(
            log.wait_durable(7).await,
            Err(WalError::InvalidArgument(_))
        ));
    }

    /// Proves that a buffered append is validated exactly as a `Wal` append is, index limit
    /// included: an entry at `MAX_LOG_INDEX` is refused when it is appended, and the log stays
    /// writable. (Validated only by the log, it would be buffered and then fail the flush,
    /// poisoning the log and failing every waiter.)
    pub async fn the_index_limit_is_checked_on_append(harness: Harness) {
        use helix_wal::constants::MAX_LOG_INDEX;
        let mut wal = Wal::open(harness.storage.clone(), config(&harness.dir))
            .await
            .unwrap();
        // A reset: the next append must carry the last index the log supports.
        wal.purge_before(MAX_LOG_INDEX - 1).await.unwrap();
        let log = BufferedWal::new(wal, buffered_config(1)).unwrap();
        let last = log
            .append_durable(Entry::new(
                MAX_LOG_INDEX - 1,
                1,
                Bytes::from_static(b"last"),
            ))
            .await
            .unwrap();
        assert_eq!(last, MAX_LOG_INDEX - 1);
        assert!(matches!(
            log.append(Entry::new(MAX_LOG_INDEX, 1, Bytes::new())).await,
            Err(WalError::InvalidArgument(_))
        ));
        assert!(matches!(
            log.append_next(1, Bytes::new()).await,
            Err(WalError::InvalidArgument(_))
        ));
        log.flush().await.unwrap();
        assert_eq!(log.durable_index(), MAX_LOG_INDEX - 1);
        assert_eq!(
            log.read(MAX_LOG_INDEX - 1).await.unwrap().payload,
            Bytes::from_static(b"last")
        );
        log.close().await.unwrap();
    }
}

for_each_log_backend!(crate::cases;
    concurrent_durable_appenders_survive_reopen,
    concurrent_durable_appenders_share_flushes,
    append_is_buffered_until_flush,
    interval_and_limits_trigger_flushes,
    failed_flush_reaches_every_waiter,
    truncate_with_buffered_entries,
    close_flushes_and_shuts_down,
    invalid_config_and_appends,
    appends_race_purges,
    truncated_entry_is_never_acknowledged,
    the_index_limit_is_checked_on_append,
);
