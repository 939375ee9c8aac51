//! The io_uring backend's per-operation latency histograms and in-flight peak.

use bytes::Bytes;
use helix_wal::IoUringConfig;

use crate::common::Harness;

// Proves each operation lands in its own latency histogram with an exact count (5 writes, 2
// linked write+fsyncs, 3 fsyncs, 4 reads on a buffered file; durable writes of a direct-I/O
// file count as writes), that every recorded operation has a non-zero maximum no smaller than
// its percentiles, and that the in-flight peak is at least 1 and within the ring's capacity.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_operation_has_its_latency_histogram() {
    let buffered = IoUringConfig {
        direct_io: false,
        ..IoUringConfig::default()
    };
    let Some((harness, storage)) = Harness::io_uring_with(buffered) else {
        return;
    };
    harness.storage.create_dir_all(&harness.dir).await.unwrap();
    let file = harness.storage.open(&harness.dir.join("a")).await.unwrap();
    let before = storage.stats();
    assert_eq!(before.write_latency.count, 0);
    for round in 0..5u64 {
        file.write_at(round * 100, Bytes::from(vec![round as u8; 100]))
            .await
            .unwrap();
    }
    for round in 0..2u64 {
        file.write_at_and_sync(500 + round * 10, Bytes::from_static(b"0123456789"))
            .await
            .unwrap();
    }
    for _ in 0..3 {
        file.sync().await.unwrap();
    }
    for round in 0..4u64 {
        file.read_at(round * 100, 100).await.unwrap();
    }
    let stats = storage.stats();
    let histograms = [
        (&stats.write_latency, 5),
        (&stats.write_fsync_latency, 2),
        (&stats.fsync_latency, 3),
        (&stats.read_latency, 4),
    ];
    for (histogram, count) in histograms {
        assert_eq!(histogram.count, count, "{stats:#?}");
        assert!(histogram.max_us > 0, "{histogram:?}");
        assert!(histogram.p50_us <= histogram.p99_us, "{histogram:?}");
        assert!(histogram.p999_us <= histogram.max_us, "{histogram:?}");
    }
    assert!(stats.in_flight_peak >= 1, "{stats:#?}");
    assert!(
        stats.in_flight_peak <= u64::from(stats.max_in_flight),
        "{stats:#?}"
    );

    // Direct I/O: a durable write is one O_DSYNC write, counted as a write.
    let Some((harness, storage)) = Harness::io_uring_with(IoUringConfig::default()) else {
        return;
    };
    harness.storage.create_dir_all(&harness.dir).await.unwrap();
    let file = harness.storage.open_direct(&harness.dir.join("b")).await;
    let file = file.unwrap();
    if file.write_alignment() == 1 {
        eprintln!("*** the filesystem refuses O_DIRECT: direct I/O part skipped");
        return;
    }
    file.write_at_and_sync(0, Bytes::from(vec![7u8; 4096]))
        .await
        .unwrap();
    let stats = storage.stats();
    assert_eq!(
        (stats.write_latency.count, stats.write_fsync_latency.count),
        (1, 0),
        "{stats:#?}"
    );
}
