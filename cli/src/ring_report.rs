//! The io_uring backend's own counters for `helix-wal bench`: how the ring was used in the
//! measured runs of each workload (SQEs per `io_uring_enter`, batch sizes, requests in flight,
//! registered buffers, fsyncs) and its per-operation latency, printed after the table and added
//! to each io_uring row of `--json` under `"io_uring"`.
//!
//! Each run starts a fresh backend, so its counters cover the whole run: the measured window
//! and the run's setup (opening the logs, pre-writing their segments with 1 MiB writes).

use std::collections::BTreeMap;

use helix_wal::LatencyHistogram;
use serde::Serialize;

/// Latency figures of one operation.
#[derive(Debug, Clone, Serialize)]
pub struct OperationFigures {
    count: u64,
    p50_us: u64,
    p99_us: u64,
    max_us: u64,
}

impl From<&LatencyHistogram> for OperationFigures {
    fn from(histogram: &LatencyHistogram) -> Self {
        Self {
            count: histogram.count,
            p50_us: histogram.p50_us,
            p99_us: histogram.p99_us,
            max_us: histogram.max_us,
        }
    }
}

/// The ring's figures for one workload on one io_uring backend, summed over its measured runs.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RingFigures {
    runs: usize,
    sqes_submitted: u64,
    enter_calls: u64,
    sqes_per_enter: f64,
    largest_batch: u64,
    in_flight_peak: u64,
    registered_buffer_hits: u64,
    registered_buffer_misses: u64,
    fsyncs_submitted: u64,
    #[serde(skip)]
    #[cfg_attr(not(all(target_os = "linux", feature = "io-uring")), allow(dead_code))]
    histograms: [LatencyHistogram; 4],
    operations: BTreeMap<&'static str, OperationFigures>,
}

/// Names of the operations, in the order of `RingFigures::histograms`.
#[cfg_attr(not(all(target_os = "linux", feature = "io-uring")), allow(dead_code))]
const OPERATIONS: [&str; 4] = ["write", "write+fsync", "read", "fsync"];

/// Collects the ring figures of every io_uring run, keyed by (workload, backend).
#[derive(Debug, Default)]
pub struct RingReports {
    figures: BTreeMap<(&'static str, &'static str), RingFigures>,
}

/// The backend a run uses, kept to read its counters after the run.
pub struct RingProbe {
    #[cfg(all(target_os = "linux", feature = "io-uring"))]
    storage: Option<helix_wal::IoUringWorkerStorage>,
}

impl RingProbe {
    /// A run on a backend without a ring.
    pub fn none() -> Self {
        Self {
            #[cfg(all(target_os = "linux", feature = "io-uring"))]
            storage: None,
        }
    }

    /// A run on `storage`.
    #[cfg(all(target_os = "linux", feature = "io-uring"))]
    pub fn of(storage: &helix_wal::IoUringWorkerStorage) -> Self {
        Self {
            storage: Some(storage.clone()),
        }
    }
}

impl RingReports {
    /// Adds the counters of one measured run.
    pub fn record(&mut self, workload: &'static str, backend: &'static str, probe: &RingProbe) {
        #[cfg(all(target_os = "linux", feature = "io-uring"))]
        if let Some(storage) = &probe.storage {
            let stats = storage.stats();
            let figures = self.figures.entry((workload, backend)).or_default();
            figures.runs += 1;
            figures.sqes_submitted += stats.sqes_submitted;
            figures.enter_calls += stats.enter_calls;
            figures.sqes_per_enter =
                figures.sqes_submitted as f64 / figures.enter_calls.max(1) as f64;
            figures.largest_batch = figures.largest_batch.max(stats.largest_batch);
            figures.in_flight_peak = figures.in_flight_peak.max(stats.in_flight_peak);
            figures.registered_buffer_hits += stats.registered_buffer_hits;
            figures.registered_buffer_misses += stats.registered_buffer_misses;
            figures.fsyncs_submitted += stats.fsyncs_submitted;
            let latencies = [
                &stats.write_latency,
                &stats.write_fsync_latency,
                &stats.read_latency,
                &stats.fsync_latency,
            ];
            for (position, latency) in latencies.into_iter().enumerate() {
                figures.histograms[position].merge(latency);
                let merged = &figures.histograms[position];
                if merged.count > 0 {
                    figures
                        .operations
                        .insert(OPERATIONS[position], merged.into());
                }
            }
        }
        #[cfg(not(all(target_os = "linux", feature = "io-uring")))]
        let _ = (workload, backend, probe);
    }

    /// Adds each io_uring row's figures to the JSON rows (objects with "workload" and
    /// "backend") under "io_uring".
    pub fn attach(&self, rows: &mut serde_json::Value) {
        let Some(rows) = rows.as_array_mut() else {
            return;
        };
        for row in rows {
            let key = (row["workload"].as_str(), row["backend"].as_str());
            let found = self
                .figures
                .iter()
                .find(|((workload, backend), _)| (Some(*workload), Some(*backend)) == key);
            if let (Some((_, figures)), Some(object)) = (found, row.as_object_mut()) {
                let value = serde_json::to_value(figures).unwrap_or_default();
                object.insert("io_uring".to_string(), value);
            }
        }
    }

    /// Prints one block per io_uring row.
    pub fn print(&self) {
        if self.figures.is_empty() {
            return;
        }
        println!();
        println!("io_uring backend, summed over the measured runs (setup included):");
        println!(
            "{:<20} {:<22} {:>9} {:>9} {:>9} {:>10} {:>11} {:>8}  latency p50/p99 us",
            "workload",
            "backend",
            "SQE/enter",
            "max batch",
            "in flight",
            "regbuf hit",
            "regbuf miss",
            "fsyncs"
        );
        for ((workload, backend), figures) in &self.figures {
            let latencies: Vec<String> = figures
                .operations
                .iter()
                .map(|(name, op)| format!("{name} {}/{}", op.p50_us, op.p99_us))
                .collect();
            println!(
                "{:<20} {:<22} {:>9.2} {:>9} {:>9} {:>10} {:>11} {:>8}  {}",
                workload,
                backend,
                figures.sqes_per_enter,
                figures.largest_batch,
                figures.in_flight_peak,
                figures.registered_buffer_hits,
                figures.registered_buffer_misses,
                figures.fsyncs_submitted,
                latencies.join(", ")
            );
        }
    }
}
