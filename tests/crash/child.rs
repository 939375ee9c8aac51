//! The child's side: a writer that runs in a child process (this test binary, re-executed to
//! run the ignored `child_writer` case with the `HELIX_CRASH_CHILD_*` variables set), reports on
//! stdout every fact it was told (an index durable, a truncation or purge started or done), and
//! runs until it is killed.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use helix_wal::{BufferedWal, BufferedWalConfig, Entry, Storage, TokioStorage, Wal, WalConfig};

use crate::common::instrumented::{Instrumented, StorageSabotage};

/// Environment of the child: which backend, which mode, the log directory and a seed.
pub(crate) const CHILD_BACKEND: &str = "HELIX_CRASH_CHILD_BACKEND";
pub(crate) const CHILD_MODE: &str = "HELIX_CRASH_CHILD_MODE";
pub(crate) const CHILD_DIR: &str = "HELIX_CRASH_CHILD_DIR";
pub(crate) const CHILD_SEED: &str = "HELIX_CRASH_CHILD_SEED";
/// Set to [`SKIP_FSYNC`] to run the child on a storage with that deliberate bug.
pub(crate) const CHILD_SABOTAGE: &str = "HELIX_CRASH_CHILD_SABOTAGE";
/// The value of [`CHILD_SABOTAGE`] that makes every file sync of the child's storage return
/// `Ok` without syncing ([`StorageSabotage::SkipFsync`]).
pub(crate) const SKIP_FSYNC: &str = "skip-fsync";
/// A plain child's report that it went idle with unsynced entries written.
pub(crate) const IDLE: &str = "IDLE";
/// The child mode that locks a directory on the io_uring backend (direct I/O), puts many large
/// writes in flight at once, reports when the kernel has them all, and waits to be killed.
pub(crate) const FLOOD: &str = "flood";
/// Marks the child's report lines among the test harness's own output.
pub(crate) const MARK: &str = "@@ ";
/// Segments small enough that a child rotates every few appends.
const SEGMENT_SIZE_BYTES: u64 = 64 << 10;
/// Largest payload a child appends.
const MAX_PAYLOAD_BYTES: u64 = 3000;

pub(crate) fn config(dir: &Path) -> WalConfig {
    WalConfig::new(dir)
        .segment_size_bytes(SEGMENT_SIZE_BYTES)
        .max_entry_size_bytes(MAX_PAYLOAD_BYTES as usize)
}

/// The payload of the entry with `nonce`: its bytes depend only on the nonce and length.
pub(crate) fn payload(nonce: u64, length: usize) -> Bytes {
    let mut state = nonce.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let bytes: Vec<u8> = (0..length)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect();
    Bytes::from(bytes)
}

/// A small deterministic generator (xorshift) for the child's and the parent's choices.
pub(crate) struct Choices(pub(crate) u64);

impl Choices {
    pub(crate) fn below(&mut self, bound: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % bound.max(1)
    }
}

pub(crate) fn storage_for(backend: &str) -> Arc<dyn Storage> {
    match backend {
        "tokio" => Arc::new(TokioStorage::new()),
        #[cfg(all(target_os = "linux", feature = "io-uring"))]
        "io-uring" => Arc::new(helix_wal::IoUringWorkerStorage::try_new().expect("io_uring")),
        #[cfg(all(target_os = "linux", feature = "io-uring"))]
        "io-uring-buffered" => {
            let config = helix_wal::IoUringConfig {
                direct_io: false,
                ..helix_wal::IoUringConfig::default()
            };
            Arc::new(helix_wal::IoUringWorkerStorage::with_config(config).expect("io_uring"))
        }
        other => panic!("unknown backend {other}"),
    }
}

/// The child's storage: `backend`, broken as [`CHILD_SABOTAGE`] says if it is set.
fn child_storage(backend: &str) -> Arc<dyn Storage> {
    let storage = storage_for(backend);
    match std::env::var(CHILD_SABOTAGE).as_deref() {
        Err(_) => storage,
        Ok(SKIP_FSYNC) => Arc::new(Instrumented::sabotaged(storage, StorageSabotage::SkipFsync)),
        Ok(other) => panic!("unknown sabotage {other:?} in {CHILD_SABOTAGE}"),
    }
}

/// One line of the child's report, written and flushed only after the fact it states.
pub(crate) fn report(line: String) {
    let mut out = std::io::stdout().lock();
    writeln!(out, "\n{MARK}{line}").expect("report");
    out.flush().expect("report");
}

/// The child writer of `child_writer`, as its environment describes it.
pub(crate) fn run() {
    let Ok(backend) = std::env::var(CHILD_BACKEND) else {
        panic!("child_writer runs only as the child of a crash test");
    };
    let mode = std::env::var(CHILD_MODE).expect("mode");
    let dir = PathBuf::from(std::env::var(CHILD_DIR).expect("dir"));
    let seed: u64 = std::env::var(CHILD_SEED)
        .expect("seed")
        .parse()
        .expect("seed");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    if mode == FLOOD {
        runtime.block_on(flood_writer(&dir));
        return;
    }
    runtime.block_on(async move {
        let storage = child_storage(&backend);
        let wal = Wal::open(storage, config(&dir)).await.expect("open");
        let term = if wal.is_empty() {
            1
        } else {
            wal.term(wal.last_index()).expect("term")
        };
        report(format!("READY {} {}", wal.first_index(), wal.last_index()));
        let mut choices = Choices(seed | 1);
        if mode == "plain" {
            plain_writer(wal, term, &mut choices, seed).await;
        } else {
            buffered_writer(wal, term, seed).await;
        }
    });
}

#[cfg(all(target_os = "linux", feature = "io-uring"))]
async fn flood_writer(dir: &Path) {
    crate::flood::writer(dir).await;
}

#[cfg(not(all(target_os = "linux", feature = "io-uring")))]
async fn flood_writer(_dir: &Path) {
    panic!("the flooding child needs the io-uring feature");
}

/// Appends (durable batches, and unsynced batches followed by a sync), truncates and purges,
/// reporting each acknowledged fact, until killed.
async fn plain_writer(
    mut wal: Wal<Arc<dyn Storage>>,
    mut term: u64,
    choices: &mut Choices,
    seed: u64,
) {
    let mut nonce = seed << 20;
    let mut unsynced = Vec::new();
    loop {
        match choices.below(10) {
            0..=6 => {
                let count = 1 + choices.below(4);
                let mut batch = Vec::new();
                for _ in 0..count {
                    nonce += 1;
                    let length = choices.below(MAX_PAYLOAD_BYTES) as usize;
                    let index = wal.last_index() + 1 + batch.len() as u64;
                    batch.push((index, term, nonce, length));
                }
                let entries: Vec<Entry> = batch
                    .iter()
                    .map(|&(index, term, nonce, length)| {
                        Entry::new(index, term, payload(nonce, length))
                    })
                    .collect();
                if choices.below(3) == 0 {
                    wal.append_batch(&entries).await.expect("append");
                    for &(index, term, nonce, length) in &batch {
                        report(format!("WRITTEN {index} {term} {nonce} {length}"));
                    }
                    unsynced.extend(batch);
                    // Sometimes the writer goes idle with unsynced entries in the page cache,
                    // where a power cut finds them (an fsync under way would flush them); it
                    // says so, and some kills wait for that moment.
                    if choices.below(2) == 0 {
                        let idle = Duration::from_micros(500 + choices.below(3000));
                        report(IDLE.to_string());
                        tokio::time::sleep(idle).await;
                    }
                    continue;
                }
                wal.append_batch_durable(&entries).await.expect("append");
                for (index, term, nonce, length) in unsynced.drain(..).chain(batch) {
                    report(format!("DURABLE {index} {term} {nonce} {length}"));
                }
            }
            7 => {
                wal.sync().await.expect("sync");
                for (index, term, nonce, length) in unsynced.drain(..) {
                    report(format!("DURABLE {index} {term} {nonce} {length}"));
                }
            }
            8 => {
                let low = wal.first_index() - 1;
                let index = low + choices.below(wal.last_index() - low + 1);
                report(format!("TRUNCATING {index}"));
                wal.truncate_after(index).await.expect("truncate");
                unsynced.retain(|&(unsynced_index, _, _, _)| unsynced_index <= index);
                term += 1;
                report(format!("TRUNCATED {index}"));
            }
            _ => {
                let span = (wal.last_index() + 2).saturating_sub(wal.first_index());
                let index = wal.first_index() + choices.below(span);
                report(format!("PURGING {index}"));
                wal.purge_before(index).await.expect("purge");
                report(format!("PURGED {}", wal.first_index()));
            }
        }
    }
}

/// Eight concurrent appenders that each wait for durability, and a purger, until killed.
async fn buffered_writer(wal: Wal<Arc<dyn Storage>>, term: u64, seed: u64) {
    let settings = BufferedWalConfig {
        flush_interval_ms: 1,
        ..BufferedWalConfig::default()
    };
    let log = BufferedWal::new(wal, settings).expect("buffered");
    let mut tasks = Vec::new();
    for appender in 0..8u64 {
        let log = log.clone();
        tasks.push(tokio::spawn(async move {
            let mut choices = Choices((seed << 8 | appender) | 1);
            let mut nonce = (seed << 20) + (appender << 16);
            loop {
                nonce += 1;
                let length = choices.below(MAX_PAYLOAD_BYTES) as usize;
                let index = log
                    .append_next(term, payload(nonce, length))
                    .await
                    .expect("append");
                log.wait_durable(index).await.expect("durable");
                report(format!("DURABLE {index} {term} {nonce} {length}"));
            }
        }));
    }
    let mut choices = Choices(seed.rotate_left(17) | 1);
    loop {
        tokio::time::sleep(Duration::from_millis(1 + choices.below(5))).await;
        let span = (log.last_index() + 1).saturating_sub(log.first_index());
        let index = log.first_index() + choices.below(span);
        report(format!("PURGING {index}"));
        log.purge_before(index).await.expect("purge");
        report(format!("PURGED {}", log.first_index()));
    }
}
