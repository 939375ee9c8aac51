//! Real process crashes: a writer runs in a child process (this test binary, re-executed to run
//! the ignored `child_writer` case), reports on stdout every index it was told is durable, and
//! is killed with SIGKILL at a random moment: mid-append, mid-rotation (segments are small),
//! mid-truncate, mid-purge, mid-group-commit. After each kill this process reopens the log and
//! checks that every entry reported durable is there byte for byte, that every entry it can read
//! is intact (checksummed, contiguous, terms never decreasing), that truncated and purged entries
//! stay gone, and that the log takes a durable append; then the next child continues the same
//! log. Alternate kills run a plain `Wal` and a `BufferedWal` with concurrent appenders.
//!
//! `HELIX_CRASH_KILLS` sets the kills per backend (default 200). The OS keeps everything a
//! killed process wrote (a process crash, not a power loss: the simulator covers power loss).

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use helix_wal::{BufferedWal, BufferedWalConfig, Entry, Storage, TokioStorage, Wal, WalConfig};

/// Environment of the child: which backend, which mode, the log directory and a seed.
const CHILD_BACKEND: &str = "HELIX_CRASH_CHILD_BACKEND";
const CHILD_MODE: &str = "HELIX_CRASH_CHILD_MODE";
const CHILD_DIR: &str = "HELIX_CRASH_CHILD_DIR";
const CHILD_SEED: &str = "HELIX_CRASH_CHILD_SEED";
/// Kills per backend.
const DEFAULT_KILLS: u64 = 200;
/// The longest a child may take to open its log and say it is ready.
const READY_LIMIT: Duration = Duration::from_secs(30);
/// A child is killed this long after it is ready, at most (uniformly random below it).
const MAX_RUN_MS: u64 = 40;
/// Segments small enough that a child rotates every few appends.
const SEGMENT_SIZE_BYTES: u64 = 64 << 10;
/// Largest payload a child appends.
const MAX_PAYLOAD_BYTES: u64 = 3000;

fn config(dir: &Path) -> WalConfig {
    WalConfig::new(dir)
        .segment_size_bytes(SEGMENT_SIZE_BYTES)
        .max_entry_size_bytes(MAX_PAYLOAD_BYTES as usize)
}

/// The payload of the entry with `nonce`: its bytes depend only on the nonce and length.
fn payload(nonce: u64, length: usize) -> Bytes {
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
struct Choices(u64);

impl Choices {
    fn below(&mut self, bound: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % bound.max(1)
    }
}

fn storage_for(backend: &str) -> Arc<dyn Storage> {
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

/// Marks the child's report lines among the test harness's own output.
const MARK: &str = "@@ ";

/// One line of the child's report, written and flushed only after the fact it states.
fn report(line: String) {
    let mut out = std::io::stdout().lock();
    writeln!(out, "\n{MARK}{line}").expect("report");
    out.flush().expect("report");
}

// The child's side: not a test on its own (ignored); the crash tests run it in a child process
// with the `HELIX_CRASH_CHILD_*` variables set, and it runs until it is killed.
#[test]
#[ignore = "the writer the crash tests run in a child process and kill"]
fn child_writer() {
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
    runtime.block_on(async move {
        let storage = storage_for(&backend);
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
                    unsynced.extend(batch);
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

/// What the parent knows must be in the log.
#[derive(Default)]
struct Model {
    /// Index -> (term, payload) of every entry reported durable and not removed since.
    durable: BTreeMap<u64, (u64, Bytes)>,
    /// The log never again starts below this (acknowledged purges).
    first_floor: u64,
}

impl Model {
    /// Applies the child's report, in order. Durable reports of appenders may arrive after a
    /// purge that removed their entry, so purges apply again at the end. A completed
    /// truncation needs nothing more: its start already released the entries, and an entry
    /// appended after it at the same index is reported anew.
    fn apply(&mut self, lines: &[String]) {
        // Entries below the highest purge started are no longer required (purges only ever
        // remove a prefix, so applying the bound once at the end is exact).
        let mut purging = 0;
        for line in lines {
            let words: Vec<&str> = line.split_whitespace().collect();
            let number = |position: usize| words[position].parse::<u64>().expect("a number");
            match words.first().copied() {
                Some("DURABLE") => {
                    let entry = (number(2), payload(number(3), number(4) as usize));
                    self.durable.insert(number(1), entry);
                }
                // A truncation or purge under way may already have removed what it removes:
                // from then on those entries are no longer required.
                Some("TRUNCATING") => {
                    self.durable.split_off(&(number(1) + 1));
                }
                Some("PURGING") => purging = purging.max(number(1)),
                Some("PURGED") => self.first_floor = self.first_floor.max(number(1)),
                _ => {}
            }
        }
        self.durable = self.durable.split_off(&purging.max(self.first_floor));
    }
}

/// Runs one child until a random moment, kills it, and returns its report.
fn run_and_kill(backend: &str, mode: &str, dir: &Path, seed: u64, run_ms: u64) -> Vec<String> {
    let mut child = Command::new(std::env::current_exe().expect("test binary"))
        .args([
            "--ignored",
            "--exact",
            "child_writer",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_BACKEND, backend)
        .env(CHILD_MODE, mode)
        .env(CHILD_DIR, dir)
        .env(CHILD_SEED, seed.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn the child writer");
    let stdout = child.stdout.take().expect("piped");
    let (lines_sender, lines) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let Some(fact) = line.strip_prefix(MARK) else {
                continue;
            };
            if lines_sender.send(fact.to_string()).is_err() {
                break;
            }
        }
    });
    let mut report = Vec::new();
    let deadline = Instant::now() + READY_LIMIT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            Ok(line) => {
                let ready = line.starts_with("READY");
                report.push(line);
                if ready {
                    break;
                }
            }
            Err(_) => {
                let _ = child.kill();
                let output = child.wait_with_output().expect("child output");
                reader.join().expect("reader");
                panic!(
                    "the child writer never became ready; stderr:\n{}",
                    String::from_utf8_lossy(&output.stderr)
                );
            }
        }
    }
    std::thread::sleep(Duration::from_millis(run_ms));
    child.kill().expect("SIGKILL the child");
    let output = child.wait_with_output().expect("reap the child");
    reader.join().expect("reader");
    report.extend(lines.try_iter());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !output.status.success() && !stderr.contains("panicked"),
        "the child writer failed before it was killed ({}):\n{stderr}",
        output.status
    );
    report
}

/// Reopens the log after a kill and checks it against the model; appends one durable entry;
/// then makes the model the whole log (recovery made every entry in it durable).
async fn verify(backend: &str, dir: &Path, model: &mut Model, kill: u64) {
    let storage = storage_for(backend);
    let mut wal = Wal::open(storage, config(dir))
        .await
        .unwrap_or_else(|error| {
            panic!("kill {kill}: the log does not reopen: {error}");
        });
    let (first, last) = (wal.first_index(), wal.last_index());
    assert!(
        first >= model.first_floor,
        "kill {kill}: purged entries came back"
    );
    let mut previous_term = 0;
    let mut present = BTreeMap::new();
    for index in first..=last {
        let entry = wal.read(index).await.unwrap_or_else(|error| {
            panic!("kill {kill}: entry {index} of [{first}, {last}] is unreadable: {error}")
        });
        assert!(
            entry.term >= previous_term,
            "kill {kill}: term decreases at {index}"
        );
        previous_term = entry.term;
        present.insert(index, entry);
    }
    for (index, (term, bytes)) in &model.durable {
        let entry = present.get(index).unwrap_or_else(|| {
            panic!("kill {kill}: durable entry {index} lost (log is [{first}, {last}])")
        });
        assert_eq!(entry.term, *term, "kill {kill}: entry {index}");
        assert_eq!(&entry.payload, bytes, "kill {kill}: entry {index}");
    }
    let next = Entry::new(last + 1, previous_term.max(1), payload(u64::MAX - kill, 16));
    wal.append_batch_durable(std::slice::from_ref(&next))
        .await
        .unwrap_or_else(|error| panic!("kill {kill}: the log refuses appends: {error}"));
    wal.close().await.expect("close");
    model.durable = present
        .into_iter()
        .map(|(index, entry)| (index, (entry.term, entry.payload)))
        .collect();
    model.durable.insert(next.index, (next.term, next.payload));
    model.first_floor = first;
}

/// Kills the child writer `kills` times on `backend`, alternating a plain Wal and a
/// BufferedWal, checking the log after each kill.
fn kill_repeatedly(backend: &str) {
    let kills = std::env::var("HELIX_CRASH_KILLS")
        .map(|text| text.parse().expect("HELIX_CRASH_KILLS is a number"))
        .unwrap_or(DEFAULT_KILLS);
    let temporary = tempfile::tempdir().expect("temporary directory");
    let dir = temporary.path().join("log");
    // A traced run keeps the log for inspection when it fails.
    let temporary = if std::env::var_os("HELIX_CRASH_TRACE").is_some() {
        std::mem::forget(temporary);
        None
    } else {
        Some(temporary)
    };
    if std::env::var_os("HELIX_CRASH_TRACE").is_some() {
        println!("log directory: {}", dir.display());
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let mut model = Model::default();
    let mut choices = Choices(0x5EED ^ backend.len() as u64);
    let mut reported = 0usize;
    // Kills that landed while a purge or truncation was under way (its start reported, not
    // its end).
    let (mut mid_purge, mut mid_truncate) = (0u64, 0u64);
    let started = Instant::now();
    for kill in 0..kills {
        let mode = if kill % 2 == 0 { "plain" } else { "buffered" };
        let run_ms = 1 + choices.below(MAX_RUN_MS);
        let report = run_and_kill(backend, mode, &dir, kill + 1, run_ms);
        reported += report.len();
        match report
            .last()
            .and_then(|line| line.split_whitespace().next())
        {
            Some("PURGING") => mid_purge += 1,
            Some("TRUNCATING") => mid_truncate += 1,
            _ => {}
        }
        model.apply(&report);
        if std::env::var_os("HELIX_CRASH_TRACE").is_some() {
            println!("kill {kill} ({mode}, {run_ms} ms): {report:?}");
        }
        runtime.block_on(verify(backend, &dir, &mut model, kill));
    }
    drop(temporary);
    println!(
        "{backend}: {kills} kills in {:.1} s ({mid_purge} mid-purge, {mid_truncate} \
         mid-truncate), {reported} facts reported by the children, none lost",
        started.elapsed().as_secs_f64()
    );
    assert!(
        reported as u64 > kills,
        "the children reported almost nothing"
    );
}

// Proves, over HELIX_CRASH_KILLS (default 200) SIGKILLs of writers on TokioStorage, that
// everything acknowledged durable survives and the log stays intact and writable.
#[test]
fn sigkill_tokio_storage() {
    kill_repeatedly("tokio");
}

// The same on the io_uring backend in its default configuration (direct I/O).
#[cfg(all(target_os = "linux", feature = "io-uring"))]
#[test]
fn sigkill_io_uring() {
    if common::Harness::io_uring().is_none() {
        return;
    }
    kill_repeatedly("io-uring");
}

// The same on the io_uring backend with buffered writes and linked fsyncs.
#[cfg(all(target_os = "linux", feature = "io-uring"))]
#[test]
fn sigkill_io_uring_buffered() {
    if common::Harness::io_uring().is_none() {
        return;
    }
    kill_repeatedly("io-uring-buffered");
}
