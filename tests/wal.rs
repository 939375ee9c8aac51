//! The log's behaviour on every storage backend: appends, reads, rotation, recovery of torn and
//! corrupt data under each RecoveryMode, truncation and purge. Each case is instantiated per
//! backend by `for_each_backend!`.

mod common;

mod cases {
    use std::path::Path;
    use std::sync::Arc;

    use bytes::Bytes;
    use helix_wal::{Entry, RecoveryMode, Storage, Wal, WalConfig, WalError};

    use crate::common::Harness;

    /// Small segments, so a few entries exercise rotation.
    const SEGMENT_BYTES: u64 = 64 << 10;

    fn config(dir: &Path) -> WalConfig {
        WalConfig::new(dir)
            .segment_size_bytes(SEGMENT_BYTES)
            .max_entry_size_bytes(16 << 10)
    }

    /// A payload whose bytes depend on index and term, so mix-ups are visible.
    fn payload(index: u64, term: u64, len: usize) -> Bytes {
        (0..len)
            .map(|position| (index as usize * 31 + term as usize * 7 + position) as u8)
            .collect()
    }

    fn entry(index: u64, term: u64, len: usize) -> Entry {
        Entry::new(index, term, payload(index, term, len))
    }

    async fn open(storage: &Arc<dyn Storage>, config: WalConfig) -> Wal<Arc<dyn Storage>> {
        Wal::open(storage.clone(), config)
            .await
            .expect("open the log")
    }

    async fn assert_entries(
        wal: &Wal<Arc<dyn Storage>>,
        range: std::ops::RangeInclusive<u64>,
        term_of: impl Fn(u64) -> u64,
        len_of: impl Fn(u64) -> usize,
    ) {
        for index in range {
            let read = wal.read(index).await.expect("read");
            assert_eq!(
                read,
                entry(index, term_of(index), len_of(index)),
                "entry {index}"
            );
        }
    }

    /// True when the backend opens the file at `path` for direct I/O (aligned writes only) when
    /// asked to, as the log asks for its segments.
    async fn direct_io(storage: &Arc<dyn Storage>, path: &Path) -> bool {
        storage.open_direct(path).await.unwrap().write_alignment() > 1
    }

    /// Overwrites `bytes` at `offset` of the file at `path` through the backend, durably. A file
    /// from `open` takes writes at any offset, whatever the backend does for the log's segments.
    async fn overwrite(storage: &Arc<dyn Storage>, path: &Path, offset: u64, bytes: Vec<u8>) {
        let file = storage.open(path).await.unwrap();
        file.write_at(offset, Bytes::from(bytes)).await.unwrap();
        file.sync().await.unwrap();
    }

    // Proves appended entries read back identical (empty payloads included), through read and
    // read_range, with the right terms and bounds, and that durability advances only on sync.
    pub async fn append_read_round_trip(harness: Harness) {
        let storage = harness.storage.clone();
        // Large enough that no rotation (which syncs) happens even when every append is padded
        // to a whole block (direct I/O).
        let mut wal = open(&storage, config(&harness.dir).segment_size_bytes(1 << 20)).await;
        assert_eq!((wal.first_index(), wal.last_index()), (1, 0));
        assert!(wal.is_empty());
        for index in 1..=20 {
            wal.append(entry(index, 1 + index / 8, (index as usize * 37) % 300))
                .await
                .unwrap();
        }
        assert_eq!(wal.durable_index(), 0);
        wal.sync().await.unwrap();
        assert_eq!(wal.durable_index(), 20);
        assert_eq!((wal.first_index(), wal.last_index()), (1, 20));
        assert_entries(&wal, 1..=20, |i| 1 + i / 8, |i| (i as usize * 37) % 300).await;
        assert_eq!(wal.term(16).unwrap(), 3);
        let range = wal.read_range(3, 9, usize::MAX).await.unwrap();
        assert_eq!(
            range.iter().map(|e| e.index).collect::<Vec<_>>(),
            (3..9).collect::<Vec<_>>()
        );
        // max_bytes bounds the payload total, but one entry always comes back.
        let limited = wal.read_range(3, 20, 200).await.unwrap();
        let total: usize = limited.iter().map(|e| e.payload.len()).sum();
        assert!(!limited.is_empty() && (total <= 200 || limited.len() == 1));
        assert!(wal.read_range(3, 20, 0).await.unwrap().len() == 1);
        assert!(matches!(
            wal.read(21).await,
            Err(WalError::IndexOutOfRange { index: 21, .. })
        ));
        assert!(matches!(
            wal.read(0).await,
            Err(WalError::IndexOutOfRange { .. })
        ));
    }

    // Proves a batch that crosses several segment boundaries is split across segments and
    // reads back whole, before and after reopening.
    pub async fn rotation_in_the_middle_of_a_batch(harness: Harness) {
        let storage = harness.storage.clone();
        let mut wal = open(&storage, config(&harness.dir)).await;
        wal.append(entry(1, 1, 100)).await.unwrap();
        let batch: Vec<Entry> = (2..=30).map(|index| entry(index, 1, 10_000)).collect();
        wal.append_batch_durable(&batch).await.unwrap();
        assert!(
            wal.segments().len() >= 4,
            "30 x 10 KB must span several 64 KiB segments"
        );
        assert_eq!(wal.durable_index(), 30);
        let check = |i: u64| if i == 1 { 100 } else { 10_000 };
        assert_entries(&wal, 1..=30, |_| 1, check).await;
        let all = wal.read_range(1, 31, usize::MAX).await.unwrap();
        assert_eq!(all.len(), 30);
        wal.close().await.unwrap();
        let wal = open(&storage, config(&harness.dir)).await;
        assert_eq!(wal.last_index(), 30);
        assert_entries(&wal, 1..=30, |_| 1, check).await;
    }

    // Proves invalid batches (gap, repeat, decreasing term, oversize payload) are refused with
    // the matching error and leave nothing behind, in memory or on disk.
    pub async fn invalid_appends_write_nothing(harness: Harness) {
        let storage = harness.storage.clone();
        let mut wal = open(&storage, config(&harness.dir)).await;
        wal.append_batch_durable(&[entry(1, 2, 10), entry(2, 2, 10)])
            .await
            .unwrap();
        let gap = wal.append_batch(&[entry(3, 2, 10), entry(5, 2, 10)]).await;
        assert!(matches!(
            gap,
            Err(WalError::NonContiguousIndex {
                expected: 4,
                got: 5,
                ..
            })
        ));
        let repeat = wal.append(entry(2, 2, 10)).await;
        assert!(matches!(
            repeat,
            Err(WalError::NonContiguousIndex { expected: 3, .. })
        ));
        let regress = wal.append_batch(&[entry(3, 2, 10), entry(4, 1, 10)]).await;
        assert!(matches!(
            regress,
            Err(WalError::TermRegression {
                index: 4,
                term: 1,
                previous_term: 2
            })
        ));
        let large = wal.append(entry(3, 2, (16 << 10) + 1)).await;
        assert!(matches!(
            large,
            Err(WalError::EntryTooLarge { index: 3, .. })
        ));
        assert_eq!(wal.last_index(), 2);
        assert!(!wal.is_poisoned(), "invalid input must not poison the log");
        wal.close().await.unwrap();
        let mut wal = open(&storage, config(&harness.dir)).await;
        assert_eq!(wal.last_index(), 2);
        wal.append(entry(3, 2, 10)).await.unwrap();
    }

    // Proves every kind of bad configuration is rejected with an InvalidConfig naming the field.
    pub async fn bad_config_is_rejected(harness: Harness) {
        let storage = harness.storage.clone();
        let cases = [
            (
                config(&harness.dir).segment_size_bytes(4096),
                "segment_size_bytes",
            ),
            (
                config(&harness.dir).segment_size_bytes(2 << 30),
                "segment_size_bytes",
            ),
            (
                config(&harness.dir).segment_size_bytes((64 << 10) + 1),
                "segment_size_bytes",
            ),
            (
                config(&harness.dir).max_entry_size_bytes(0),
                "max_entry_size_bytes",
            ),
            (
                config(&harness.dir).max_entry_size_bytes(1 << 30),
                "max_entry_size_bytes",
            ),
            (
                config(&harness.dir).max_entry_size_bytes(64 << 10),
                "segment_size_bytes",
            ),
            (config(Path::new("")), "dir"),
        ];
        for (bad, expected_field) in cases {
            match Wal::open(storage.clone(), bad.clone()).await {
                Err(WalError::InvalidConfig { field, .. }) => assert_eq!(field, expected_field),
                other => panic!("{bad:?} was not rejected: {other:?}"),
            }
        }
    }

    // Proves a torn final record of every possible length (a prefix of its bytes followed by
    // the zeros of the pre-written segment) is cut by TolerateTailCorruption, that the log
    // appends again afterwards, and that the replacement survives another reopen.
    pub async fn torn_tail_of_every_length_is_cut(harness: Harness) {
        let storage = harness.storage.clone();
        let record_bytes = 32 + 104;
        for kept in 0..record_bytes {
            let dir = harness.dir.join(format!("torn-{kept}"));
            let mut wal = open(&storage, config(&dir)).await;
            wal.append_batch_durable(&[entry(1, 1, 50), entry(2, 1, 60)])
                .await
                .unwrap();
            let tail_offset = wal.segments()[0].used_bytes;
            let path = wal.segments()[0].path.clone();
            wal.append_batch_durable(&[entry(3, 1, 104)]).await.unwrap();
            wal.close().await.unwrap();
            drop(wal);
            overwrite(
                &storage,
                &path,
                tail_offset + kept as u64,
                vec![0; record_bytes - kept],
            )
            .await;
            let mut wal = open(&storage, config(&dir)).await;
            assert_eq!(wal.last_index(), 2, "torn prefix of {kept} bytes");
            // With direct I/O the commit's padding record follows the zeroed record, so even
            // a wholly zeroed record is a torn commit, cut.
            let padded = direct_io(&storage, &path).await;
            assert_eq!(
                wal.recovery_report().cut.is_some(),
                kept > 0 || padded,
                "kept {kept}"
            );
            wal.append(entry(3, 2, 20)).await.unwrap();
            wal.sync().await.unwrap();
            wal.close().await.unwrap();
            let wal = open(&storage, config(&dir)).await;
            assert_eq!(wal.last_index(), 3);
            assert_eq!(wal.read(3).await.unwrap(), entry(3, 2, 20));
            assert_entries(&wal, 1..=2, |_| 1, |i| if i == 1 { 50 } else { 60 }).await;
        }
    }

    // Proves a garbage tail (non-zero bytes after the last record, with zeros in between) is
    // cut under TolerateTailCorruption and PointInTime, and is an error naming the file and
    // offset under AbsoluteConsistency.
    pub async fn garbage_tail_under_each_mode(harness: Harness) {
        let storage = harness.storage.clone();
        let dir = harness.dir.clone();
        let (tail, path) = two_entry_log(&storage, &dir).await;
        overwrite(&storage, &path, tail + 200, vec![0xAB; 333]).await;
        let strict = Wal::open(
            storage.clone(),
            config(&dir).recovery_mode(RecoveryMode::AbsoluteConsistency),
        )
        .await;
        match strict {
            Err(WalError::Corrupt {
                segment, offset, ..
            }) => {
                assert_eq!(segment, path);
                assert_eq!(offset, tail);
            }
            other => panic!("AbsoluteConsistency accepted a garbage tail: {other:?}"),
        }
        let wal = open(&storage, config(&dir)).await;
        assert_eq!(wal.last_index(), 2);
        let cut = wal.recovery_report().cut.clone().expect("the tail was cut");
        assert_eq!(
            (cut.segment, cut.offset, cut.first_discarded_index),
            (path.clone(), tail, 3)
        );
        drop(wal);
        // The cut is sealed by a new segment: reopening again is clean, even strictly.
        let wal = open(
            &storage,
            config(&dir).recovery_mode(RecoveryMode::AbsoluteConsistency),
        )
        .await;
        assert_eq!(wal.last_index(), 2);
        assert!(wal.recovery_report().cut.is_none());
    }

    /// Writes a durable log of two 10-byte entries and closes it; returns the offset just past
    /// them and the segment's path.
    async fn two_entry_log(storage: &Arc<dyn Storage>, dir: &Path) -> (u64, std::path::PathBuf) {
        let mut wal = open(storage, config(dir)).await;
        let entries = [entry(1, 1, 10), entry(2, 1, 10)];
        wal.append_batch_durable(&entries).await.unwrap();
        let segment = wal.segments()[0].clone();
        wal.close().await.unwrap();
        (segment.used_bytes, segment.path)
    }

    /// Builds a log of `count` entries of `len` bytes, each synced on its own, and returns the
    /// path and offset of entry `target`'s record.
    async fn synced_log(
        storage: &Arc<dyn Storage>,
        dir: &Path,
        count: u64,
        len: usize,
        target: u64,
    ) -> (std::path::PathBuf, u64) {
        let mut wal = open(storage, config(dir)).await;
        let mut location = None;
        for index in 1..=count {
            if index == target {
                let last = wal.segments().last().cloned();
                let fits = last.as_ref().is_some_and(|s| {
                    s.capacity_bytes - s.used_bytes >= (32 + len as u64).next_multiple_of(8)
                });
                if fits {
                    let s = last.unwrap();
                    location = Some((s.path, s.used_bytes));
                }
            }
            wal.append_batch_durable(&[entry(index, 1, len)])
                .await
                .unwrap();
            if index == target && location.is_none() {
                let s = wal.segments().last().cloned().unwrap();
                location = Some((s.path, 4096));
            }
        }
        wal.close().await.unwrap();
        location.expect("target located")
    }

    // Proves a damaged record in a segment that is not the last one is an error naming the
    // segment and offset under TolerateTailCorruption and AbsoluteConsistency, and that
    // PointInTime keeps exactly the entries before it and accepts appends after.
    pub async fn corrupt_middle_record_under_each_mode(harness: Harness) {
        let storage = harness.storage.clone();
        let dir = harness.dir.clone();
        let (path, offset) = synced_log(&storage, &dir, 40, 4000, 5).await;
        overwrite(&storage, &path, offset + 40, vec![0xFF]).await;
        for mode in [
            RecoveryMode::TolerateTailCorruption,
            RecoveryMode::AbsoluteConsistency,
        ] {
            match Wal::open(storage.clone(), config(&dir).recovery_mode(mode)).await {
                Err(WalError::Corrupt {
                    segment,
                    offset: at,
                    reason,
                }) => {
                    assert_eq!((segment, at), (path.clone(), offset), "{mode:?}: {reason}");
                }
                other => panic!("{mode:?} accepted mid-log corruption: {other:?}"),
            }
        }
        let mut wal = open(
            &storage,
            config(&dir).recovery_mode(RecoveryMode::PointInTime),
        )
        .await;
        assert_eq!(wal.last_index(), 4);
        assert_entries(&wal, 1..=4, |_| 1, |_| 4000).await;
        wal.append(entry(5, 3, 10)).await.unwrap();
        wal.sync().await.unwrap();
        drop(wal);
        let wal = open(&storage, config(&dir)).await;
        assert_eq!(wal.last_index(), 5);
        assert_eq!(wal.read(5).await.unwrap(), entry(5, 3, 10));
    }

    // Proves damage to a record in the last segment is not mistaken for a torn tail when a
    // later valid record shows it was durable: TolerateTailCorruption refuses to cut it.
    pub async fn damaged_durable_record_in_last_segment_is_not_a_torn_tail(harness: Harness) {
        let storage = harness.storage.clone();
        let dir = harness.dir.clone();
        let (path, offset) = synced_log(&storage, &dir, 8, 100, 4).await;
        overwrite(&storage, &path, offset + 35, vec![0x5A]).await;
        match Wal::open(storage.clone(), config(&dir)).await {
            Err(WalError::Corrupt {
                segment,
                offset: at,
                reason,
            }) => {
                assert_eq!((segment, at), (path.clone(), offset));
                assert!(reason.contains("durable"), "{reason}");
            }
            other => panic!("durable damage was cut as a torn tail: {other:?}"),
        }
        let wal = open(
            &storage,
            config(&dir).recovery_mode(RecoveryMode::PointInTime),
        )
        .await;
        assert_eq!(wal.last_index(), 3);
    }

    // Proves truncate_after removes the suffix durably (reopen does not bring it back, even
    // before anything new is appended), across segment boundaries, and that new entries with a
    // higher term take the freed indexes.
    pub async fn truncate_after_then_reopen(harness: Harness) {
        let storage = harness.storage.clone();
        let dir = harness.dir.clone();
        let mut wal = open(&storage, config(&dir)).await;
        let batch: Vec<Entry> = (1..=30).map(|index| entry(index, 1, 5000)).collect();
        wal.append_batch_durable(&batch).await.unwrap();
        wal.truncate_after(25).await.unwrap();
        assert_eq!(wal.last_index(), 25);
        drop(wal);
        let mut wal = open(&storage, config(&dir)).await;
        assert_eq!(wal.last_index(), 25);
        wal.truncate_after(12).await.unwrap();
        assert_eq!(wal.last_index(), 12);
        assert!(matches!(
            wal.read(13).await,
            Err(WalError::IndexOutOfRange { .. })
        ));
        wal.append_batch(&[entry(13, 2, 70), entry(14, 2, 80)])
            .await
            .unwrap();
        wal.sync().await.unwrap();
        drop(wal);
        let mut wal = open(
            &storage,
            config(&dir).recovery_mode(RecoveryMode::AbsoluteConsistency),
        )
        .await;
        assert_eq!(wal.last_index(), 14);
        assert_entries(&wal, 1..=12, |_| 1, |_| 5000).await;
        assert_eq!(wal.read(13).await.unwrap(), entry(13, 2, 70));
        assert_eq!(wal.term(14).unwrap(), 2);
        // Truncating to before the first entry empties the log; below that is refused.
        wal.truncate_after(0).await.unwrap();
        assert!(wal.is_empty());
        drop(wal);
        let mut wal = open(&storage, config(&dir)).await;
        assert!(wal.is_empty());
        wal.append(entry(1, 3, 1)).await.unwrap();
    }

    // Proves purge_before removes whole segments below the index and keeps the rest readable
    // across reopen, and that purging past the end resets the log to start at that index.
    pub async fn purge_before_then_reopen(harness: Harness) {
        let storage = harness.storage.clone();
        let dir = harness.dir.clone();
        let mut wal = open(&storage, config(&dir)).await;
        let batch: Vec<Entry> = (1..=40).map(|index| entry(index, 1, 5000)).collect();
        wal.append_batch_durable(&batch).await.unwrap();
        let segments_before = wal.segments().len();
        wal.purge_before(25).await.unwrap();
        let first = wal.first_index();
        assert!(first > 1 && first <= 25, "first index {first}");
        assert!(wal.segments().len() < segments_before);
        assert!(matches!(
            wal.read(first - 1).await,
            Err(WalError::IndexOutOfRange { .. })
        ));
        drop(wal);
        let mut wal = open(&storage, config(&dir)).await;
        assert_eq!((wal.first_index(), wal.last_index()), (first, 40));
        assert_entries(&wal, first..=40, |_| 1, |_| 5000).await;
        assert!(matches!(
            wal.truncate_after(first - 2).await,
            Err(WalError::InvalidArgument(_))
        ));
        wal.purge_before(100).await.unwrap();
        assert!(wal.is_empty());
        assert_eq!(wal.last_index(), 99);
        drop(wal);
        let mut wal = open(&storage, config(&dir)).await;
        assert_eq!((wal.first_index(), wal.last_index()), (100, 99));
        let stale = wal.append(entry(41, 1, 1)).await;
        assert!(matches!(
            stale,
            Err(WalError::NonContiguousIndex { expected: 100, .. })
        ));
        wal.append(entry(100, 4, 9)).await.unwrap();
        wal.sync().await.unwrap();
        drop(wal);
        let wal = open(&storage, config(&dir)).await;
        assert_eq!(wal.read(100).await.unwrap(), entry(100, 4, 9));
    }

    // Proves foreign files are ignored, while a file with a segment's name but the wrong magic
    // number, a zero-length segment and a directory named like a segment are errors naming
    // the file.
    pub async fn foreign_and_damaged_files(harness: Harness) {
        let storage = harness.storage.clone();
        let dir = harness.dir.clone();
        let mut wal = open(&storage, config(&dir)).await;
        wal.append_batch_durable(&[entry(1, 1, 10)]).await.unwrap();
        drop(wal);
        overwrite(&storage, &dir.join("README.txt"), 0, b"notes".to_vec()).await;
        let wal = open(&storage, config(&dir)).await;
        assert_eq!(wal.last_index(), 1);
        assert_eq!(
            wal.recovery_report().foreign_files,
            vec![dir.join("README.txt")]
        );
        drop(wal);
        let impostor = dir.join("00000000000000000099.wal");
        overwrite(&storage, &impostor, 0, vec![b'X'; 4096]).await;
        match Wal::open(storage.clone(), config(&dir)).await {
            Err(WalError::Corrupt {
                segment,
                offset: 0,
                reason,
            }) => {
                assert_eq!(segment, impostor);
                assert!(reason.contains("magic"), "{reason}");
            }
            other => panic!("a foreign segment was accepted: {other:?}"),
        }
        storage.remove(&impostor).await.unwrap();
        storage.open(&impostor).await.unwrap();
        assert!(matches!(
            Wal::open(storage.clone(), config(&dir)).await,
            Err(WalError::Corrupt { offset: 0, .. })
        ));
        storage.remove(&impostor).await.unwrap();
        storage.create_dir_all(&impostor).await.unwrap();
        assert!(matches!(
            Wal::open(storage.clone(), config(&dir)).await,
            Err(WalError::Corrupt { .. })
        ));
    }

    // Proves a damaged header of a segment in the middle is an error naming the file and offset
    // 0 in every mode, PointInTime included: the damaged segment's first index is unknown, so
    // recovery cannot tell which older records it superseded (here it is the segment that a
    // truncation created, and keeping the older segment whole would bring truncated entries
    // back). Nothing on disk changes, so the error repeats.
    pub async fn damaged_segment_header_in_the_middle(harness: Harness) {
        let storage = harness.storage.clone();
        let dir = harness.dir.clone();
        let mut wal = open(&storage, config(&dir)).await;
        let batch: Vec<Entry> = (1..=20).map(|index| entry(index, 1, 100)).collect();
        wal.append_batch_durable(&batch).await.unwrap();
        wal.truncate_after(10).await.unwrap();
        let truncation_segment = wal.segments().last().unwrap().path.clone();
        wal.append_batch_durable(&[entry(11, 2, 10)]).await.unwrap();
        drop(wal);
        overwrite(&storage, &truncation_segment, 0, b"GARBAGE!".to_vec()).await;
        let modes = [
            RecoveryMode::TolerateTailCorruption,
            RecoveryMode::AbsoluteConsistency,
            RecoveryMode::PointInTime,
            RecoveryMode::PointInTime,
        ];
        for mode in modes {
            match Wal::open(storage.clone(), config(&dir).recovery_mode(mode)).await {
                Err(WalError::Corrupt {
                    segment,
                    offset: 0,
                    reason,
                }) => {
                    assert_eq!(segment, truncation_segment);
                    assert!(reason.contains("magic"), "{reason}");
                }
                Err(other) => panic!("{mode:?}: unexpected error {other}"),
                Ok(wal) => panic!(
                    "{mode:?} accepted a damaged header: last {}",
                    wal.last_index()
                ),
            }
        }
    }

    // Proves the leftover of an interrupted segment creation (a `.wal.tmp` file, whatever its
    // contents) is removed and reported by recovery and never read as part of the log.
    pub async fn leftover_temporary_file_is_removed(harness: Harness) {
        let storage = harness.storage.clone();
        let dir = harness.dir.clone();
        let mut wal = open(&storage, config(&dir)).await;
        wal.append_batch_durable(&[entry(1, 1, 10)]).await.unwrap();
        drop(wal);
        let leftover = dir.join("00000000000000000077.wal.tmp");
        overwrite(&storage, &leftover, 0, vec![0xEE; 9000]).await;
        let wal = open(&storage, config(&dir)).await;
        assert_eq!(wal.last_index(), 1);
        assert!(wal
            .recovery_report()
            .temporary_files_removed
            .contains(&leftover));
        assert!(!storage.exists(&leftover).await.unwrap());
    }

    // Proves a read-only open changes nothing on disk: it reports the cut and the leftover
    // temporary file a writable open would handle, twice in a row, refuses writes with
    // ReadOnly, and still reads; a writable open afterwards performs the cut.
    pub async fn read_only_open_changes_nothing(harness: Harness) {
        let storage = harness.storage.clone();
        let dir = harness.dir.clone();
        let (tail, path) = two_entry_log(&storage, &dir).await;
        overwrite(&storage, &path, tail + 8, vec![0x77; 20]).await;
        let leftover = dir.join("00000000000000000009.wal.tmp");
        overwrite(&storage, &leftover, 0, vec![1; 10]).await;
        let listing_before = storage.list(&dir).await.unwrap();
        for _ in 0..2 {
            let mut wal = Wal::open_read_only(storage.clone(), config(&dir))
                .await
                .unwrap();
            assert_eq!(wal.last_index(), 2);
            assert_eq!(wal.recovery_report().cut.as_ref().unwrap().offset, tail);
            assert!(wal
                .recovery_report()
                .temporary_files_removed
                .contains(&leftover));
            assert_eq!(wal.read(2).await.unwrap(), entry(2, 1, 10));
            assert!(matches!(
                wal.append(entry(3, 1, 1)).await,
                Err(WalError::ReadOnly { .. })
            ));
            assert!(matches!(
                wal.truncate_after(1).await,
                Err(WalError::ReadOnly { .. })
            ));
            assert_eq!(storage.list(&dir).await.unwrap(), listing_before);
        }
        let missing = Wal::open_read_only(storage.clone(), config(&dir.join("absent"))).await;
        assert!(matches!(missing, Err(WalError::Io { .. })));
        let wal = open(&storage, config(&dir)).await;
        assert!(wal.recovery_report().cut.is_some());
        assert!(!storage.exists(&leftover).await.unwrap());
    }

    // Proves purged segment files are reused for new segments (no zero-fill), and that a
    // recycled segment, whose bytes after the records are its previous life's records, reopens
    // cleanly, even under AbsoluteConsistency, with every entry intact.
    pub async fn purged_segments_are_recycled(harness: Harness) {
        let storage = harness.storage.clone();
        let dir = harness.dir.clone();
        let mut wal = open(&storage, config(&dir)).await;
        let batch: Vec<Entry> = (1..=40).map(|index| entry(index, 1, 5000)).collect();
        wal.append_batch_durable(&batch).await.unwrap();
        wal.purge_before(30).await.unwrap();
        let batch: Vec<Entry> = (41..=140).map(|index| entry(index, 2, 700)).collect();
        wal.append_batch_durable(&batch).await.unwrap();
        let segments = wal.segments();
        assert!(
            segments.iter().any(|segment| segment.recycled),
            "{segments:?}"
        );
        drop(wal);
        let strict = config(&dir).recovery_mode(RecoveryMode::AbsoluteConsistency);
        let wal = open(&storage, strict).await;
        assert!(wal.recovery_report().cut.is_none());
        assert_eq!(wal.last_index(), 140);
        assert_entries(&wal, 41..=140, |_| 2, |_| 700).await;
    }

    // Proves a torn write in a recycled segment is still recognised: a later record of this
    // segment after a damaged one means the tail is torn, not stale; TolerateTailCorruption
    // cuts and seals it, AbsoluteConsistency refuses.
    pub async fn torn_tail_in_a_recycled_segment(harness: Harness) {
        let storage = harness.storage.clone();
        let dir = harness.dir.clone();
        let mut wal = open(&storage, config(&dir)).await;
        let batch: Vec<Entry> = (1..=40).map(|index| entry(index, 1, 5000)).collect();
        wal.append_batch_durable(&batch).await.unwrap();
        wal.purge_before(30).await.unwrap();
        // Fill the current segment so the next entries go to a recycled one.
        let mut index = 41;
        while !wal.segments().last().unwrap().recycled {
            wal.append(entry(index, 2, 3000)).await.unwrap();
            index += 1;
        }
        wal.sync().await.unwrap();
        let last = wal.segments().last().unwrap().clone();
        let tail = last.used_bytes;
        wal.append_batch(&[entry(index, 2, 100), entry(index + 1, 2, 100)])
            .await
            .unwrap();
        wal.close().await.unwrap();
        drop(wal);
        // The first of the two unsynced records is lost, the second survived.
        overwrite(&storage, &last.path, tail, vec![0; 136]).await;
        let strict = config(&dir).recovery_mode(RecoveryMode::AbsoluteConsistency);
        assert!(matches!(
            Wal::open(storage.clone(), strict).await,
            Err(WalError::Corrupt { .. })
        ));
        let mut wal = open(&storage, config(&dir)).await;
        assert_eq!(wal.last_index(), index - 1);
        assert!(wal.recovery_report().cut.is_some());
        wal.append(entry(index, 3, 100)).await.unwrap();
        wal.sync().await.unwrap();
        drop(wal);
        let wal = open(&storage, config(&dir)).await;
        assert_eq!(
            wal.last_index(),
            index,
            "the surviving unsynced record came back"
        );
        assert_eq!(wal.read(index).await.unwrap(), entry(index, 3, 100));
    }

    // Proves a record claiming an absurd payload length is treated as damage (cut as a torn
    // tail here) without allocating that length.
    pub async fn absurd_length_field_is_damage(harness: Harness) {
        let storage = harness.storage.clone();
        let dir = harness.dir.clone();
        let mut wal = open(&storage, config(&dir)).await;
        wal.append_batch(&[entry(1, 1, 10), entry(2, 1, 10)])
            .await
            .unwrap();
        let path = wal.segments()[0].path.clone();
        wal.close().await.unwrap();
        drop(wal);
        // Entry 2's length field (record 1 is 48 bytes long) claims 4 GiB - 1.
        overwrite(&storage, &path, 4096 + 48 + 4, vec![0xFF; 4]).await;
        let wal = open(&storage, config(&dir)).await;
        assert_eq!(wal.last_index(), 1);
        assert!(wal
            .recovery_report()
            .cut
            .as_ref()
            .unwrap()
            .reason
            .contains("payload"));
    }

    // Proves a failed fsync poisons the log: the sync reports the error, the durable index does
    // not move, every later write or sync fails with Poisoned naming the first failure (never a
    // retried fsync that "succeeds"), and reads of written data keep working.
    pub async fn failed_sync_poisons_the_log(harness: Harness) {
        let instrumented = crate::common::instrumented::Instrumented::new(harness.storage.clone());
        let probe = instrumented.probe.clone();
        let storage: Arc<dyn Storage> = Arc::new(instrumented);
        let mut wal = open(&storage, config(&harness.dir)).await;
        wal.append_batch_durable(&[entry(1, 1, 10)]).await.unwrap();
        wal.append(entry(2, 1, 10)).await.unwrap();
        probe
            .fail_syncs
            .store(true, std::sync::atomic::Ordering::SeqCst);
        let failed = wal.sync().await;
        assert!(
            matches!(failed, Err(WalError::Io { op: "fsync", .. })),
            "{failed:?}"
        );
        assert_eq!(wal.durable_index(), 1);
        assert!(wal.is_poisoned());
        probe
            .fail_syncs
            .store(false, std::sync::atomic::Ordering::SeqCst);
        let syncs_before = probe.syncs();
        match wal.sync().await {
            Err(WalError::Poisoned { first_failure }) => {
                assert!(matches!(*first_failure, WalError::Io { op: "fsync", .. }));
            }
            other => panic!("a retried sync after a failure returned {other:?}"),
        }
        assert_eq!(probe.syncs(), syncs_before, "the failed fsync was retried");
        assert!(matches!(
            wal.append(entry(3, 1, 1)).await,
            Err(WalError::Poisoned { .. })
        ));
        assert!(matches!(
            wal.truncate_after(1).await,
            Err(WalError::Poisoned { .. })
        ));
        assert!(matches!(
            wal.purge_before(2).await,
            Err(WalError::Poisoned { .. })
        ));
        assert_eq!(wal.read(2).await.unwrap(), entry(2, 1, 10));
        let closed = wal.close().await;
        assert!(
            matches!(closed, Err(WalError::Poisoned { .. })),
            "{closed:?}"
        );
    }

    // Proves one directory has one writer: a second open fails with Locked while the first log
    // is open (read-only opens are allowed), and succeeds once it is dropped.
    pub async fn one_writer_per_directory(harness: Harness) {
        let storage = harness.storage.clone();
        let first = open(&storage, config(&harness.dir)).await;
        match Wal::open(storage.clone(), config(&harness.dir)).await {
            Err(WalError::Locked { dir }) => assert_eq!(dir, harness.dir),
            other => panic!("a second writer was let in: {other:?}"),
        }
        Wal::open_read_only(storage.clone(), config(&harness.dir))
            .await
            .unwrap();
        drop(first);
        open(&storage, config(&harness.dir)).await;
    }

    // Proves closing makes appends durable and refuses later writes with Shutdown.
    pub async fn close_syncs_and_refuses_writes(harness: Harness) {
        let storage = harness.storage.clone();
        let mut wal = open(&storage, config(&harness.dir)).await;
        wal.append(entry(1, 1, 10)).await.unwrap();
        wal.close().await.unwrap();
        assert_eq!(wal.durable_index(), 1);
        assert!(matches!(
            wal.append(entry(2, 1, 1)).await,
            Err(WalError::Shutdown { .. })
        ));
        assert_eq!(wal.read(1).await.unwrap(), entry(1, 1, 10));
    }
}

for_each_log_backend!(crate::cases;
    append_read_round_trip,
    rotation_in_the_middle_of_a_batch,
    invalid_appends_write_nothing,
    bad_config_is_rejected,
    torn_tail_of_every_length_is_cut,
    garbage_tail_under_each_mode,
    corrupt_middle_record_under_each_mode,
    damaged_durable_record_in_last_segment_is_not_a_torn_tail,
    truncate_after_then_reopen,
    purge_before_then_reopen,
    foreign_and_damaged_files,
    absurd_length_field_is_damage,
    close_syncs_and_refuses_writes,
    failed_sync_poisons_the_log,
    damaged_segment_header_in_the_middle,
    leftover_temporary_file_is_removed,
    read_only_open_changes_nothing,
    purged_segments_are_recycled,
    torn_tail_in_a_recycled_segment,
    one_writer_per_directory,
);

// Proves that on direct-I/O files (aligned writes only, durable on return) commits of small
// entries are padded with records longer than the configured entry limit, and that recovery
// reads past them: a log with a 64-byte entry limit reopens with every entry after a power loss.
#[tokio::test(flavor = "current_thread")]
async fn padding_longer_than_the_entry_limit_is_read_back() {
    use bytes::Bytes;
    use helix_wal::{Entry, Wal, WalConfig};
    let harness = common::Harness::simulated_direct();
    let settings = WalConfig::new(&harness.dir)
        .segment_size_bytes(64 << 10)
        .max_entry_size_bytes(64);
    let mut wal = Wal::open(harness.storage.clone(), settings.clone())
        .await
        .unwrap();
    for index in 1..=30u64 {
        let entry = Entry::new(index, 1, Bytes::from(vec![index as u8; 40]));
        wal.append_batch_durable(&[entry]).await.unwrap();
    }
    assert!(
        wal.segments().len() > 1,
        "30 padded commits fill more than a segment"
    );
    drop(wal);
    harness.crash().await;
    let wal = Wal::open(harness.storage.clone(), settings).await.unwrap();
    assert_eq!((wal.first_index(), wal.last_index()), (1, 30));
    for index in 1..=30u64 {
        assert_eq!(
            wal.read(index).await.unwrap().payload,
            vec![index as u8; 40]
        );
    }
}
