//! BufferedWal group commit: 1 or 16 appenders that each wait for durability, at flush
//! intervals of 0, 1 and 10 ms; the time is per durable append across all appenders.

mod common;

use std::time::Instant;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use helix_wal::{BufferedWal, BufferedWalConfig, Entry, Wal};

const ENTRY_BYTES: usize = 1024;

fn buffered(criterion: &mut Criterion) {
    let runtime = common::runtime();
    let mut group = common::group(criterion, "buffered_wal");
    group.throughput(Throughput::Bytes(ENTRY_BYTES as u64));
    for (name, storage) in common::backends() {
        for appenders in [1u64, 16] {
            for interval_ms in [0u64, 1, 10] {
                let dir = tempfile::tempdir().expect("temporary directory");
                let log = runtime.block_on(async {
                    let mut wal =
                        Wal::open(storage.clone(), common::config(dir.path(), ENTRY_BYTES))
                            .await
                            .expect("open");
                    let first = Entry::new(1, 1, common::payload(ENTRY_BYTES));
                    wal.append_batch_durable(&[first]).await.expect("append");
                    let settings = BufferedWalConfig {
                        flush_interval_ms: interval_ms,
                        ..BufferedWalConfig::default()
                    };
                    BufferedWal::new(wal, settings).expect("buffered")
                });
                let id = BenchmarkId::new(format!("{name}/{appenders}_appenders"), interval_ms);
                group.bench_function(id, |bencher| {
                    bencher.iter_custom(|iterations| {
                        runtime.block_on(async {
                            let per_appender = iterations.div_ceil(appenders);
                            let started = Instant::now();
                            let mut tasks = Vec::new();
                            for _ in 0..appenders {
                                let log = log.clone();
                                tasks.push(tokio::spawn(async move {
                                    for _ in 0..per_appender {
                                        let payload = common::payload(ENTRY_BYTES);
                                        let index = log.append_next(1, payload).await?;
                                        log.wait_durable(index).await?;
                                    }
                                    Ok::<_, helix_wal::WalError>(())
                                }));
                            }
                            for task in tasks {
                                task.await.expect("appender").expect("durable append");
                            }
                            started
                                .elapsed()
                                .mul_f64(iterations as f64 / (per_appender * appenders) as f64)
                        })
                    })
                });
                runtime.block_on(log.close()).expect("close");
            }
        }
    }
    group.finish();
}

criterion_group!(benches, buffered);
criterion_main!(benches);
