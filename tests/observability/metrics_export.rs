//! `export_metrics` through the `metrics` facade, read back with metrics-util's
//! DebuggingRecorder.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use helix_wal::{export_metrics, Storage, TokioStorage};
use metrics_util::debugging::{DebugValue, DebuggingRecorder};

use crate::cases::flushed_on_request;

/// Every recorded metric as `name{label=value,...}` (labels sorted) to its value.
fn recorded(recorder: &DebuggingRecorder) -> BTreeMap<String, DebugValue> {
    recorder
        .snapshotter()
        .snapshot()
        .into_vec()
        .into_iter()
        .map(|(key, _unit, _description, value)| {
            let key = key.key();
            let mut labels: Vec<String> = key
                .labels()
                .map(|label| format!("{}={}", label.key(), label.value()))
                .collect();
            labels.sort();
            (format!("{}{{{}}}", key.name(), labels.join(",")), value)
        })
        .collect()
}

fn counter(metrics: &BTreeMap<String, DebugValue>, key: &str) -> u64 {
    match metrics.get(key) {
        Some(DebugValue::Counter(value)) => *value,
        other => panic!("{key}: {other:?} in {metrics:#?}"),
    }
}

fn gauge(metrics: &BTreeMap<String, DebugValue>, key: &str) -> f64 {
    match metrics.get(key) {
        Some(DebugValue::Gauge(value)) => value.into_inner(),
        other => panic!("{key}: {other:?} in {metrics:#?}"),
    }
}

// Proves `export_metrics` records every documented metric name, labelled with the log's name,
// with the snapshot's exact values (counters as absolute values, latency quantiles as gauges),
// including the group commit metrics of a BufferedWal.
#[tokio::test(flavor = "current_thread")]
async fn export_records_the_documented_names_and_values() {
    let temporary = tempfile::tempdir().unwrap();
    let storage: Arc<dyn Storage> = Arc::new(TokioStorage::new());
    // The one explicit flush takes all four entries.
    let log = flushed_on_request(storage, &temporary.path().join("log")).await;
    for _ in 0..4 {
        log.append_next(1, Bytes::from_static(b"12345"))
            .await
            .unwrap();
    }
    log.flush().await.unwrap();
    let stats = log.stats();
    let recorder = DebuggingRecorder::new();
    metrics::with_local_recorder(&recorder, || export_metrics("group-7", &stats));
    let metrics = recorded(&recorder);

    assert_eq!(counter(&metrics, "helix_wal_appends_total{log=group-7}"), 1);
    assert_eq!(counter(&metrics, "helix_wal_entries_total{log=group-7}"), 4);
    assert_eq!(
        counter(&metrics, "helix_wal_payload_bytes_total{log=group-7}"),
        20
    );
    assert_eq!(
        counter(&metrics, "helix_wal_written_bytes_total{log=group-7}"),
        stats.written_bytes
    );
    assert_eq!(counter(&metrics, "helix_wal_syncs_total{log=group-7}"), 1);
    for name in [
        "truncations_total",
        "purges_total",
        "segments_rotated_total",
        "segments_recycled_total",
    ] {
        assert_eq!(
            counter(&metrics, &format!("helix_wal_{name}{{log=group-7}}")),
            0
        );
    }
    assert_eq!(gauge(&metrics, "helix_wal_poisoned{log=group-7}"), 0.0);
    assert_eq!(
        counter(&metrics, "helix_wal_sync_latency_count{log=group-7}"),
        1
    );
    assert_eq!(
        gauge(
            &metrics,
            "helix_wal_sync_latency_us{log=group-7,quantile=0.5}"
        ),
        stats.sync_latency.p50_us as f64
    );
    assert_eq!(
        gauge(
            &metrics,
            "helix_wal_sync_latency_us{log=group-7,quantile=max}"
        ),
        stats.sync_latency.max_us as f64
    );
    assert_eq!(
        counter(
            &metrics,
            "helix_wal_durable_append_latency_count{log=group-7}"
        ),
        1
    );
    assert_eq!(
        gauge(
            &metrics,
            "helix_wal_durable_append_latency_us{log=group-7,quantile=0.999}"
        ),
        stats.durable_append_latency.p999_us as f64
    );
    assert_eq!(
        counter(
            &metrics,
            "helix_wal_group_commit_flushes_total{log=group-7}"
        ),
        1
    );
    assert_eq!(
        counter(
            &metrics,
            "helix_wal_group_commit_entries_total{log=group-7}"
        ),
        4
    );
    assert_eq!(
        gauge(
            &metrics,
            "helix_wal_group_commit_largest_entries{log=group-7}"
        ),
        4.0
    );
    // Nine counters, the poisoned gauge, two histograms of four gauges and a count, three
    // group commit metrics: nothing else.
    assert_eq!(metrics.len(), 9 + 1 + 2 * 5 + 3, "{metrics:#?}");
    log.close().await.unwrap();
}
