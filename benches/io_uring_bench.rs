//! Storage level, no log: write_at, write_at_and_sync and read_at of 4 KiB blocks on
//! TokioStorage and on the io_uring backend with direct I/O (the default), with buffered writes,
//! without registered buffers, and with SQPOLL; one file, and 16 files written at once.

mod common;

use std::sync::Arc;
use std::time::Instant;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use helix_wal::{IoUringConfig, IoUringWorkerStorage, Storage, StorageFile, TokioStorage};

const BLOCK_BYTES: usize = 4096;
/// Blocks per file, written round-robin (the files are written once before measuring).
const FILE_BLOCKS: u64 = 1024;

fn variants() -> Vec<(&'static str, Arc<dyn Storage>)> {
    let mut variants: Vec<(&'static str, Arc<dyn Storage>)> =
        vec![("tokio", Arc::new(TokioStorage::new()))];
    let configs = [
        ("io_uring_direct", IoUringConfig::default()),
        (
            "io_uring_buffered",
            IoUringConfig {
                direct_io: false,
                ..IoUringConfig::default()
            },
        ),
        (
            "io_uring_unregistered",
            IoUringConfig {
                registered_buffer_count: 0,
                ..IoUringConfig::default()
            },
        ),
        (
            "io_uring_sqpoll",
            IoUringConfig {
                sqpoll_idle_ms: 100,
                ..IoUringConfig::default()
            },
        ),
    ];
    for (name, config) in configs {
        if let Ok(storage) = IoUringWorkerStorage::with_config(config) {
            variants.push((name, Arc::new(storage)));
        }
    }
    variants
}

/// `count` files of `FILE_BLOCKS` blocks, written and synced.
async fn files(
    storage: &Arc<dyn Storage>,
    dir: &std::path::Path,
    count: usize,
) -> Vec<Arc<dyn StorageFile>> {
    let mut files = Vec::new();
    for number in 0..count {
        let file = storage
            .open_direct(&dir.join(format!("file-{number}")))
            .await
            .expect("open");
        let whole = common::payload(BLOCK_BYTES * FILE_BLOCKS as usize);
        file.write_at_and_sync(0, whole).await.expect("fill");
        files.push(file);
    }
    files
}

fn storage_ops(criterion: &mut Criterion) {
    let runtime = common::runtime();
    let mut group = common::group(criterion, "io_uring_bench");
    for (name, storage) in variants() {
        for file_count in [1usize, 16] {
            let dir = tempfile::tempdir().expect("temporary directory");
            let files = runtime.block_on(files(&storage, dir.path(), file_count));
            group.throughput(Throughput::Bytes((BLOCK_BYTES * file_count) as u64));
            for operation in ["write_at", "write_at_and_sync", "read_at"] {
                let id = BenchmarkId::new(format!("{name}/{operation}"), file_count);
                group.bench_function(id, |bencher| {
                    bencher.iter_custom(|iterations| {
                        runtime.block_on(async {
                            let started = Instant::now();
                            for iteration in 0..iterations {
                                let offset = (iteration % FILE_BLOCKS) * BLOCK_BYTES as u64;
                                let mut tasks = Vec::new();
                                for file in &files {
                                    let file = Arc::clone(file);
                                    tasks.push(tokio::spawn(async move {
                                        let data = common::payload(BLOCK_BYTES);
                                        match operation {
                                            "write_at" => file.write_at(offset, data).await,
                                            "write_at_and_sync" => {
                                                file.write_at_and_sync(offset, data).await
                                            }
                                            _ => file.read_at(offset, BLOCK_BYTES).await.map(drop),
                                        }
                                    }));
                                }
                                for task in tasks {
                                    task.await.expect("task").expect("operation");
                                }
                            }
                            started.elapsed()
                        })
                    })
                });
            }
        }
    }
    group.finish();
}

criterion_group!(benches, storage_ops);
criterion_main!(benches);
