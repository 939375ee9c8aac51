//! Shared pieces of the criterion benches: backends by name, fresh logs, payloads.
#![allow(dead_code)]

use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, Criterion};
use helix_wal::{Storage, TokioStorage, WalConfig};

/// Segment size of the benches' logs: large enough that rotation is rare in a measurement.
pub const SEGMENT_SIZE_BYTES: u64 = 64 << 20;

/// The backends compiled in, by name: TokioStorage, and with the io-uring feature the io_uring
/// backend with direct I/O (its default) and with buffered writes.
pub fn backends() -> Vec<(&'static str, Arc<dyn Storage>)> {
    #[allow(unused_mut)] // Without the io-uring feature nothing is added.
    let mut backends: Vec<(&'static str, Arc<dyn Storage>)> =
        vec![("tokio", Arc::new(TokioStorage::new()))];
    #[cfg(all(target_os = "linux", feature = "io-uring"))]
    {
        use helix_wal::{IoUringConfig, IoUringWorkerStorage};
        if let Ok(direct) = IoUringWorkerStorage::try_new() {
            backends.push(("io_uring", Arc::new(direct)));
        }
        let buffered = IoUringConfig {
            direct_io: false,
            ..IoUringConfig::default()
        };
        if let Ok(storage) = IoUringWorkerStorage::with_config(buffered) {
            backends.push(("io_uring_buffered", Arc::new(storage)));
        }
    }
    backends
}

pub fn config(dir: &Path, max_entry_bytes: usize) -> WalConfig {
    WalConfig::new(dir)
        .segment_size_bytes(SEGMENT_SIZE_BYTES)
        .max_entry_size_bytes(max_entry_bytes.max(1))
}

pub fn payload(bytes: usize) -> Bytes {
    Bytes::from(vec![0xA5u8; bytes])
}

pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

/// A benchmark group with the benches' settings: 10 samples over 3 s (each sample is many
/// durable operations, so this stays short on a slow disk).
pub fn group<'a>(criterion: &'a mut Criterion, name: &str) -> BenchmarkGroup<'a, WallTime> {
    let mut group = criterion.benchmark_group(name);
    group
        .sample_size(10)
        .measurement_time(std::time::Duration::from_secs(3));
    group
}
