//! Export of [`WalStats`] through the `metrics` facade (feature `metrics`).
//!
//! The log keeps its own counters (cheap, lock-free, no dependency); this module copies a
//! snapshot into whatever recorder the application installed, so the hot path never calls into
//! the facade. Call [`export_metrics`] periodically, e.g. before each scrape.

use crate::stats::{LatencyHistogram, WalStats};

/// The label that names the log on every exported metric.
pub const METRIC_LABEL: &str = "log";

/// Counters: `(metric name, value)`, exported as absolute counter values.
fn counters(stats: &WalStats) -> [(&'static str, u64); 9] {
    [
        ("helix_wal_appends_total", stats.appends),
        ("helix_wal_entries_total", stats.entries),
        ("helix_wal_payload_bytes_total", stats.payload_bytes),
        ("helix_wal_written_bytes_total", stats.written_bytes),
        ("helix_wal_syncs_total", stats.syncs),
        ("helix_wal_truncations_total", stats.truncations),
        ("helix_wal_purges_total", stats.purges),
        ("helix_wal_segments_rotated_total", stats.segments_rotated),
        ("helix_wal_segments_recycled_total", stats.segments_recycled),
    ]
}

/// Records `stats` through the `metrics` facade, every metric labelled `log = label`:
///
/// | metric | kind | value |
/// |---|---|---|
/// | `helix_wal_appends_total` | counter | [`WalStats::appends`] |
/// | `helix_wal_entries_total` | counter | [`WalStats::entries`] |
/// | `helix_wal_payload_bytes_total` | counter | [`WalStats::payload_bytes`] |
/// | `helix_wal_written_bytes_total` | counter | [`WalStats::written_bytes`] |
/// | `helix_wal_syncs_total` | counter | [`WalStats::syncs`] |
/// | `helix_wal_truncations_total` | counter | [`WalStats::truncations`] |
/// | `helix_wal_purges_total` | counter | [`WalStats::purges`] |
/// | `helix_wal_segments_rotated_total` | counter | [`WalStats::segments_rotated`] |
/// | `helix_wal_segments_recycled_total` | counter | [`WalStats::segments_recycled`] |
/// | `helix_wal_poisoned` | gauge | 1 when poisoned, else 0 |
/// | `helix_wal_sync_latency_us` | gauge, label `quantile` = `0.5`, `0.99`, `0.999`, `max` | [`WalStats::sync_latency`] |
/// | `helix_wal_sync_latency_count` | counter | syncs measured |
/// | `helix_wal_durable_append_latency_us` | gauge, label `quantile` as above | [`WalStats::durable_append_latency`] |
/// | `helix_wal_durable_append_latency_count` | counter | durable appends measured |
/// | `helix_wal_group_commit_flushes_total` | counter | a `BufferedWal`'s flushes |
/// | `helix_wal_group_commit_entries_total` | counter | entries they made durable |
/// | `helix_wal_group_commit_largest_entries` | gauge | the largest flush |
///
/// Counters are set to the snapshot's absolute values, so calling this again with a later
/// snapshot is correct. The group commit metrics are recorded only for a `BufferedWal`.
pub fn export_metrics(label: &str, stats: &WalStats) {
    let label = label.to_owned();
    for (name, value) in counters(stats) {
        metrics::counter!(name, METRIC_LABEL => label.clone()).absolute(value);
    }
    metrics::gauge!("helix_wal_poisoned", METRIC_LABEL => label.clone())
        .set(f64::from(u8::from(stats.poisoned)));
    export_latency("helix_wal_sync_latency", &label, &stats.sync_latency);
    export_latency(
        "helix_wal_durable_append_latency",
        &label,
        &stats.durable_append_latency,
    );
    if let Some(group_commit) = &stats.group_commit {
        metrics::counter!("helix_wal_group_commit_flushes_total", METRIC_LABEL => label.clone())
            .absolute(group_commit.flushes);
        metrics::counter!("helix_wal_group_commit_entries_total", METRIC_LABEL => label.clone())
            .absolute(group_commit.flushed_entries);
        metrics::gauge!("helix_wal_group_commit_largest_entries", METRIC_LABEL => label)
            .set(group_commit.largest_flush_entries as f64);
    }
}

/// Records one histogram as `{prefix}_us` gauges per quantile and a `{prefix}_count` counter.
fn export_latency(prefix: &'static str, label: &str, histogram: &LatencyHistogram) {
    let quantiles = [
        ("0.5", histogram.p50_us),
        ("0.99", histogram.p99_us),
        ("0.999", histogram.p999_us),
        ("max", histogram.max_us),
    ];
    let name = format!("{prefix}_us");
    for (quantile, value) in quantiles {
        metrics::gauge!(name.clone(), METRIC_LABEL => label.to_owned(), "quantile" => quantile)
            .set(value as f64);
    }
    metrics::counter!(format!("{prefix}_count"), METRIC_LABEL => label.to_owned())
        .absolute(histogram.count);
}
