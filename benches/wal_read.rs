//! Reads: sequential read_range, random single reads, and recovery (open) of a log, on every
//! backend compiled in. The log is 64 MiB of 4 KiB entries (`HELIX_BENCH_LOG_MIB` for more:
//! 1024 gives the 1 GiB recovery).

mod common;

use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use helix_wal::{Entry, Wal};

const ENTRY_BYTES: usize = 4096;
const BATCH: u64 = 64;

fn log_mib() -> u64 {
    std::env::var("HELIX_BENCH_LOG_MIB")
        .ok()
        .and_then(|text| text.parse().ok())
        .unwrap_or(64)
}

fn wal_read(criterion: &mut Criterion) {
    let runtime = common::runtime();
    let entries = (log_mib() << 20) / ENTRY_BYTES as u64;
    let mut group = common::group(criterion, "wal_read");
    for (name, storage) in common::backends() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let config = common::config(dir.path(), ENTRY_BYTES);
        let mut wal = runtime
            .block_on(Wal::open(storage.clone(), config.clone()))
            .expect("open");
        runtime.block_on(async {
            for first in (1..=entries).step_by(BATCH as usize) {
                let batch: Vec<Entry> = (first..first + BATCH)
                    .map(|index| Entry::new(index, 1, common::payload(ENTRY_BYTES)))
                    .collect();
                wal.append_batch_durable(&batch).await.expect("append");
            }
        });
        group.throughput(Throughput::Bytes(BATCH * ENTRY_BYTES as u64));
        group.bench_function(format!("{name}/read_range_sequential"), |bencher| {
            let mut next = 1;
            bencher.iter(|| {
                let batch = runtime
                    .block_on(wal.read_range(next, next + BATCH, usize::MAX))
                    .expect("read_range");
                next = if next + 2 * BATCH > entries {
                    1
                } else {
                    next + BATCH
                };
                batch
            })
        });
        group.throughput(Throughput::Bytes(ENTRY_BYTES as u64));
        group.bench_function(format!("{name}/read_random"), |bencher| {
            let mut state = 0x9E37_79B9_7F4A_7C15u64;
            bencher.iter(|| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                let index = 1 + state % entries;
                runtime.block_on(wal.read(index)).expect("read")
            })
        });
        runtime.block_on(wal.close()).expect("close");
        drop(wal);
        group.throughput(Throughput::Bytes(entries * ENTRY_BYTES as u64));
        group.bench_function(format!("{name}/recovery"), |bencher| {
            bencher.iter_custom(|iterations| {
                let mut total = Duration::ZERO;
                for _ in 0..iterations {
                    let started = Instant::now();
                    let wal = runtime
                        .block_on(Wal::open(storage.clone(), config.clone()))
                        .expect("recover");
                    total += started.elapsed();
                    assert_eq!(wal.last_index(), entries);
                }
                total
            })
        });
    }
    group.finish();
}

criterion_group!(benches, wal_read);
criterion_main!(benches);
