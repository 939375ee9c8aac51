//! Appends: payload 64 B to 64 KiB, synced every append, every 16 appends, or never (the
//! fsync-per-write and periodic-fsync scenarios), on every backend compiled in.

mod common;

use std::time::Instant;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use helix_wal::{Entry, Wal};

fn wal_write(criterion: &mut Criterion) {
    let runtime = common::runtime();
    let mut group = common::group(criterion, "wal_write");
    for (name, storage) in common::backends() {
        for payload_bytes in [64usize, 4096, 65536] {
            for (mode, sync_every) in [("sync_each", 1u64), ("sync_16", 16), ("no_sync", 0)] {
                let dir = tempfile::tempdir().expect("temporary directory");
                let payload = common::payload(payload_bytes);
                let mut wal = runtime
                    .block_on(Wal::open(
                        storage.clone(),
                        common::config(dir.path(), payload_bytes),
                    ))
                    .expect("open");
                group.throughput(Throughput::Bytes(payload_bytes as u64));
                let id = BenchmarkId::new(format!("{name}/{mode}"), payload_bytes);
                group.bench_function(id, |bencher| {
                    bencher.iter_custom(|iterations| {
                        runtime.block_on(async {
                            let started = Instant::now();
                            for _ in 0..iterations {
                                let entry = Entry::new(wal.last_index() + 1, 1, payload.clone());
                                let durable = sync_every != 0 && entry.index % sync_every == 0;
                                if durable {
                                    wal.append_batch_durable(&[entry]).await.expect("append");
                                } else {
                                    wal.append_batch(&[entry]).await.expect("append");
                                }
                            }
                            started.elapsed()
                        })
                    })
                });
                runtime.block_on(wal.close()).expect("close");
            }
        }
    }
    group.finish();
}

criterion_group!(benches, wal_write);
criterion_main!(benches);
