//! Real process crashes: a writer runs in a child process (this test binary, re-executed to run
//! the ignored `child_writer` case), reports on stdout every index it was told is durable, and
//! is killed with SIGKILL at a random moment: mid-append, mid-rotation (segments are small),
//! mid-truncate, mid-purge, mid-group-commit. After each kill this process reopens the log and
//! checks that every entry reported durable is there byte for byte, that every entry it can read
//! is intact (checksummed, contiguous, terms never decreasing), that truncated and purged entries
//! stay gone, and that the log takes a durable append; then the next child continues the same
//! log. Alternate kills run a plain `Wal` and a `BufferedWal` with concurrent appenders. Every
//! fourth kill waits for the plain writer to report that it went idle with unsynced entries
//! written, the moment a power cut surely loses something.
//!
//! `HELIX_CRASH_KILLS` sets the kills per backend (default 200). The OS keeps everything a
//! killed process wrote: a process crash loses nothing a write returned, and these tests check
//! that too.
//!
//! Power loss for real: the `power_loss_*` tests run the same writers on an ext4 file system in
//! a loop-mounted image file (root needed; `HELIX_REQUIRE_ROOT_TESTS=1` makes a missing mount a
//! failure). After the kill the image is copied as it stands: the copy holds what the file system
//! had sent to its block device, and not the dirty pages of its page cache, which a power cut
//! loses. The copy is then mounted (ext4 replays its journal, as after a power cut) and checked.
//! Every entry reported durable must be there; entries written without a sync must go missing
//! in some cuts (else the emulation lost nothing and proves nothing); with direct I/O
//! (`O_DIRECT | O_DSYNC`) a completed write is durable and nothing written may go missing.
//! `HELIX_POWER_CUTS` sets the cuts per backend (default 60).

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
/// Set to `skip-fsync` to run the child with that deliberate bug (feature `sabotage`).
const CHILD_SABOTAGE: &str = "HELIX_CRASH_CHILD_SABOTAGE";
/// Kills per backend.
const DEFAULT_KILLS: u64 = 200;
/// Power cuts per backend.
const DEFAULT_POWER_CUTS: u64 = 60;
/// How long an unmount may stay busy after a kill.
const UNMOUNT_LIMIT: Duration = Duration::from_secs(10);
/// Size of the file system image the power-loss tests mount.
const IMAGE_SIZE_BYTES: u64 = 64 << 20;
/// The longest a child may take to open its log and say it is ready.
const READY_LIMIT: Duration = Duration::from_secs(30);
/// A child is killed this long after it is ready, at most (uniformly random below it).
const MAX_RUN_MS: u64 = 40;
/// A plain child's report that it went idle with unsynced entries written.
const IDLE: &str = "IDLE";
/// Every this many kills (all of them of a plain child), the kill waits for the child to go idle
/// with unsynced entries, so that a power cut surely finds some to lose; the others land at
/// random moments.
const IDLE_KILL_EVERY: u64 = 4;
/// How long a kill waits for the child to go idle before it kills anyway.
const IDLE_WAIT_LIMIT: Duration = Duration::from_secs(5);
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
    let sabotage = std::env::var(CHILD_SABOTAGE).is_ok();
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.worker_threads(2).enable_all();
    if sabotage {
        sabotage_every_thread(&mut builder);
    }
    let runtime = builder.build().expect("runtime");
    if mode == FLOOD {
        runtime.block_on(flood_writer(&dir));
        return;
    }
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

/// Makes every thread of the child's runtime (and this one) skip its fsyncs.
#[cfg(feature = "sabotage")]
fn sabotage_every_thread(builder: &mut tokio::runtime::Builder) {
    use helix_wal::sabotage::{enable, Sabotage};
    std::mem::forget(enable(Sabotage::SkipFsync));
    builder.on_thread_start(|| std::mem::forget(enable(Sabotage::SkipFsync)));
}

#[cfg(not(feature = "sabotage"))]
fn sabotage_every_thread(_builder: &mut tokio::runtime::Builder) {
    panic!("the child was asked to sabotage itself, but `sabotage` is not compiled in");
}

/// The child mode that locks a directory on the io_uring backend (direct I/O), puts many large
/// writes in flight at once, reports when the kernel has them all, and waits to be killed.
const FLOOD: &str = "flood";

/// The flooding child's file, writes, rounds and disk.
#[cfg(all(target_os = "linux", feature = "io-uring"))]
mod flood {
    /// The file the flooding child writes.
    pub(crate) const FILE: &str = "flood";
    /// Writes in flight at once: few enough that the kernel issues each to the device at once
    /// (the device's queue holds them all) rather than handing some to its worker threads.
    pub(crate) const WRITES: u64 = 64;
    /// Size of each write.
    pub(crate) const WRITE_BYTES: u64 = 128 << 10;
    /// Kills that must leave a write in flight after the child is reaped (about two in five
    /// do here: the process is reaped only after its io-wq workers exit, and a worker finishes
    /// the write it is in, waiting for the device; writes queued for workers are cancelled),
    /// and the most kills a test makes to get them.
    pub(crate) const ROUNDS_IN_FLIGHT: usize = 2;
    pub(crate) const MAX_ROUNDS: usize = 32;
    /// Size of the file system image the flooding child writes on.
    pub(crate) const IMAGE_BYTES: u64 = 256 << 20;
    /// The byte the flooding child's writes carry (the file starts as zeros).
    pub(crate) const BYTE: u8 = 0xA5;
    /// The unit of the kernel's block device statistics.
    pub(crate) const SECTOR_BYTES: u64 = 512;
}

#[cfg(all(target_os = "linux", feature = "io-uring"))]
async fn flood_writer(dir: &Path) {
    let storage = helix_wal::IoUringWorkerStorage::try_new().expect("io_uring");
    storage.create_dir_all(dir).await.expect("directory");
    let _lock = storage.lock_dir(dir).await.expect("lock");

    let file = storage
        .open_direct(&dir.join(flood::FILE))
        .await
        .expect("open");
    // Every block written and synced first, so that the flood is of pure overwrites, which
    // the kernel issues to the device at once rather than handing to a worker thread.
    let zeros = Bytes::from(vec![0u8; flood::WRITE_BYTES as usize]);
    for write in 0..flood::WRITES {
        file.write_at_and_sync(write * flood::WRITE_BYTES, zeros.clone())
            .await
            .expect("zero");
    }
    let submitted = storage.stats().sqes_submitted;
    let data = Bytes::from(vec![flood::BYTE; flood::WRITE_BYTES as usize]);
    for write in 0..flood::WRITES {
        let file = Arc::clone(&file);
        let data = data.clone();
        tokio::spawn(async move { file.write_at(write * flood::WRITE_BYTES, data).await });
    }
    while storage.stats().sqes_submitted < submitted + flood::WRITES {
        tokio::task::yield_now().await;
    }
    report(FLOOD.to_string());
    std::future::pending::<()>().await;
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

/// What the parent knows must be in the log.
#[derive(Default)]
struct Model {
    /// Index -> (term, payload) of every entry reported durable and not removed since.
    durable: BTreeMap<u64, (u64, Bytes)>,
    /// The log never again starts below this (acknowledged purges).
    first_floor: u64,
    /// Index -> (term, payload) of every entry written (the write returned) but not reported
    /// durable since the last check: a process crash keeps them, a power cut may not.
    written: BTreeMap<u64, (u64, Bytes)>,
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
                    self.written.remove(&number(1));
                    self.durable.insert(number(1), entry);
                }
                Some("WRITTEN") => {
                    let entry = (number(2), payload(number(3), number(4) as usize));
                    self.written.insert(number(1), entry);
                }
                // A truncation or purge under way may already have removed what it removes:
                // from then on those entries are no longer required.
                Some("TRUNCATING") => {
                    self.durable.split_off(&(number(1) + 1));
                    self.written.split_off(&(number(1) + 1));
                }
                Some("PURGING") => purging = purging.max(number(1)),
                Some("PURGED") => self.first_floor = self.first_floor.max(number(1)),
                _ => {}
            }
        }
        self.durable = self.durable.split_off(&purging.max(self.first_floor));
        self.written = self.written.split_off(&purging.max(self.first_floor));
    }
}

/// When a kill lands.
#[derive(Clone, Copy, Debug)]
enum KillAt {
    /// This long after the child is ready.
    Random { run_ms: u64 },
    /// At the first idle report the child makes this long after it is ready.
    Idle { run_ms: u64 },
}

/// This test binary, set to run the ignored `child_writer` case as a child writer.
fn child_command(backend: &str, mode: &str, dir: &Path, seed: u64) -> Command {
    let mut command = Command::new(std::env::current_exe().expect("test binary"));
    command
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
        .env(CHILD_SEED, seed.to_string());
    command
}

/// Runs one child until the moment `at` says, kills it, and returns its report.
fn run_and_kill(
    backend: &str,
    mode: &str,
    dir: &Path,
    seed: u64,
    at: KillAt,
    sabotage: bool,
) -> Vec<String> {
    let mut command = child_command(backend, mode, dir, seed);
    if sabotage {
        command.env(CHILD_SABOTAGE, "skip-fsync");
    }
    let mut child = command
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
    match at {
        KillAt::Random { run_ms } => std::thread::sleep(Duration::from_millis(run_ms)),
        KillAt::Idle { run_ms } => {
            std::thread::sleep(Duration::from_millis(run_ms));
            report.extend(lines.try_iter());
            let deadline = Instant::now() + IDLE_WAIT_LIMIT;
            loop {
                let left = deadline.saturating_duration_since(Instant::now());
                // A child that never goes idle in time is killed anyway (the tally counts the
                // kills that did land on an idle moment).
                let Ok(line) = lines.recv_timeout(left) else {
                    break;
                };
                let idle = line == IDLE;
                report.push(line);
                if idle {
                    break;
                }
            }
        }
    }
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
/// then makes the model the whole log (recovery made every entry in it durable). Returns how
/// many entries that were written but not reported durable are missing.
async fn verify(backend: &str, dir: &Path, model: &mut Model, kill: u64) -> usize {
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
    let lost_written = std::mem::take(&mut model.written)
        .into_iter()
        .filter(|(index, (term, bytes))| {
            present
                .get(index)
                .is_none_or(|entry| entry.term != *term || entry.payload != *bytes)
        })
        .count();
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
    lost_written
}

/// How a child writer's life ends.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Crash {
    /// SIGKILL: the OS keeps everything the process wrote.
    Process,
    /// SIGKILL, then the file system loses what it had not sent to its device.
    Power,
}

/// What a run of crashes saw.
#[derive(Debug, Default)]
struct Tally {
    crashes: u64,
    /// Facts the children reported.
    reported: usize,
    /// Crashes whose last report was the child going idle with unsynced entries written.
    idle_kills: u64,
    /// Crashes that landed while a purge or truncation was under way (its start reported, not
    /// its end).
    mid_purge: u64,
    mid_truncate: u64,
    /// Entries written (the write returned) but not reported durable that recovery did not find.
    lost_written: usize,
    /// Crashes after which at least one such entry was missing.
    crashes_losing_written: u64,
}

/// Crashes the child writer `crashes` times on `backend`, alternating a plain Wal and a
/// BufferedWal, checking the log after each crash.
fn crash_repeatedly(backend: &str, crash: Crash, crashes: u64, sabotage: bool) -> Tally {
    let temporary = tempfile::tempdir().expect("temporary directory");
    let disk = match crash {
        Crash::Process => None,
        Crash::Power => match LoopDisk::create(temporary.path()) {
            Some(disk) => Some(disk),
            None => return Tally::default(),
        },
    };
    let dir = match &disk {
        Some(disk) => disk.mount_point.join("log"),
        None => temporary.path().join("log"),
    };
    let traced = std::env::var_os("HELIX_CRASH_TRACE").is_some();
    // A traced run keeps the log for inspection when it fails.
    let temporary = if traced {
        println!("log directory: {}", dir.display());
        std::mem::forget(temporary);
        None
    } else {
        Some(temporary)
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let mut model = Model::default();
    let mut choices = Choices(0x5EED ^ backend.len() as u64 ^ (crash as u64) << 8);
    let mut tally = Tally::default();
    let started = Instant::now();
    for kill in 0..crashes {
        let mode = if kill % 2 == 0 { "plain" } else { "buffered" };
        let run_ms = 1 + choices.below(MAX_RUN_MS);
        let at = if kill % IDLE_KILL_EVERY == 0 {
            KillAt::Idle { run_ms }
        } else {
            KillAt::Random { run_ms }
        };
        let report = run_and_kill(backend, mode, &dir, kill + 1, at, sabotage);
        tally.reported += report.len();
        tally.idle_kills += u64::from(report.last().is_some_and(|line| line == IDLE));
        match report
            .last()
            .and_then(|line| line.split_whitespace().next())
        {
            Some("PURGING") => tally.mid_purge += 1,
            Some("TRUNCATING") => tally.mid_truncate += 1,
            _ => {}
        }
        model.apply(&report);
        if let Some(disk) = &disk {
            disk.cut_power();
        }
        if traced {
            println!("{crash:?} crash {kill} ({mode}, {at:?}): {report:?}");
        }
        let lost = runtime.block_on(verify(backend, &dir, &mut model, kill));
        tally.lost_written += lost;
        tally.crashes_losing_written += u64::from(lost > 0);
        tally.crashes += 1;
    }
    drop(disk);
    drop(temporary);
    println!(
        "{backend}: {} {crash:?} crashes in {:.1} s ({} while idle with unsynced entries, {} \
         mid-purge, {} mid-truncate), {} facts reported by the children, none lost; {} \
         written-but-unsynced entries missing after {} crashes",
        tally.crashes,
        started.elapsed().as_secs_f64(),
        tally.idle_kills,
        tally.mid_purge,
        tally.mid_truncate,
        tally.reported,
        tally.lost_written,
        tally.crashes_losing_written,
    );
    assert!(
        tally.reported as u64 > crashes,
        "the children reported almost nothing"
    );
    tally
}

/// Kills the child writer HELIX_CRASH_KILLS times (default 200) on `backend`.
fn kill_repeatedly(backend: &str) {
    let kills = count_from_env("HELIX_CRASH_KILLS", DEFAULT_KILLS);
    let tally = crash_repeatedly(backend, Crash::Process, kills, false);
    assert_eq!(
        tally.lost_written, 0,
        "a process crash lost entries whose writes had returned"
    );
}

/// Cuts the power under the child writer HELIX_POWER_CUTS times (default 60) on `backend`.
/// `direct` says every completed write is durable on this backend.
fn cut_power_repeatedly(backend: &str, direct: bool) {
    let cuts = count_from_env("HELIX_POWER_CUTS", DEFAULT_POWER_CUTS);
    let tally = crash_repeatedly(backend, Crash::Power, cuts, false);
    if tally.crashes == 0 {
        return;
    }
    if direct {
        assert_eq!(
            tally.lost_written, 0,
            "with O_DIRECT | O_DSYNC a completed write is durable, yet a power cut lost some"
        );
    } else {
        assert!(
            tally.lost_written > 0,
            "{cuts} power cuts lost no unsynced write: the emulation loses nothing and proves \
             nothing"
        );
    }
}

fn count_from_env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .map(|text| {
            text.parse()
                .unwrap_or_else(|_| panic!("{name} is a number"))
        })
        .unwrap_or(default)
}

/// An ext4 file system in an image file, loop-mounted on a fresh directory.
struct LoopDisk {
    image: PathBuf,
    mount_point: PathBuf,
    /// Mounts so far: they alternate the data journaling modes.
    mounts: std::cell::Cell<u64>,
}

impl LoopDisk {
    /// Makes and mounts the file system; `None` (after saying so) when this process cannot
    /// mount and the test is not required.
    fn create(parent: &Path) -> Option<LoopDisk> {
        Self::create_sized(parent, IMAGE_SIZE_BYTES)
    }

    /// The same with an image of `bytes`.
    fn create_sized(parent: &Path, bytes: u64) -> Option<LoopDisk> {
        let image = parent.join("disk.img");
        let mount_point = parent.join("disk");
        std::fs::create_dir(&mount_point).expect("mount point");
        std::fs::File::create(&image)
            .and_then(|file| file.set_len(bytes))
            .expect("image file");
        // Inode tables and journal initialised now, not by a kernel thread after the mount.
        let made = Command::new("mkfs.ext4")
            .args(["-q", "-F", "-E", "lazy_itable_init=0,lazy_journal_init=0"])
            .arg(&image)
            .output();
        let disk = LoopDisk {
            image,
            mount_point,
            mounts: std::cell::Cell::new(0),
        };
        let mounted = match made {
            Ok(output) if output.status.success() => disk.mount(),
            other => Err(format!("mkfs.ext4 failed: {other:?}")),
        };
        match mounted {
            Ok(()) => Some(disk),
            Err(why) => {
                let required =
                    std::env::var("HELIX_REQUIRE_ROOT_TESTS").is_ok_and(|value| value != "0");
                assert!(!required, "HELIX_REQUIRE_ROOT_TESTS is set but {why}");
                eprintln!("SKIPPED: power-loss test: {why}");
                None
            }
        }
    }

    fn mount(&self) -> Result<(), String> {
        let mounts = self.mounts.get();
        self.mounts.set(mounts + 1);
        // The journal commits on its own only every minute, so what a run writes without a
        // sync stays in the page cache; every other mount journals metadata only, which lets
        // a file's size or blocks reach the disk before its data.
        let data = if mounts % 2 == 0 {
            "data=ordered"
        } else {
            "data=writeback"
        };
        let output = Command::new("mount")
            .args(["-t", "ext4", "-o"])
            .arg(format!("loop,commit=60,{data}"))
            .arg(&self.image)
            .arg(&self.mount_point)
            .output()
            .map_err(|error| format!("cannot run mount: {error}"))?;
        if output.status.success() {
            Ok(())
        } else {
            Err(format!(
                "cannot loop-mount an ext4 image (root needed): {}",
                String::from_utf8_lossy(&output.stderr).trim()
            ))
        }
    }

    /// The power cut: copies the image as its device holds it now, unmounts (whatever the
    /// unmount flushes goes to the discarded image), and mounts the copy in its place.
    fn cut_power(&self) {
        let copy = self.image.with_extension("cut");
        std::fs::copy(&self.image, &copy).expect("copy the image");
        self.unmount();
        std::fs::rename(&copy, &self.image).expect("replace the image");
        self.mount().expect("mount the image after the power cut");
    }

    /// Unmounts, waiting while the file system is busy: the kernel tears down a killed
    /// process's io_uring instance asynchronously, and until then it holds the process's files.
    fn unmount(&self) {
        let deadline = Instant::now() + UNMOUNT_LIMIT;
        loop {
            let output = Command::new("umount")
                .arg(&self.mount_point)
                .output()
                .expect("run umount");
            if output.status.success() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "umount failed for {UNMOUNT_LIMIT:?}: {}",
                String::from_utf8_lossy(&output.stderr)
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for LoopDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.mount_point).output();
    }
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

// Proves, over HELIX_POWER_CUTS (default 60) power cuts emulated on a loop-mounted ext4 image,
// that everything acknowledged durable on TokioStorage survives the loss of the page cache, and
// that the emulation really loses unsynced writes.
#[test]
fn power_loss_tokio_storage() {
    cut_power_repeatedly("tokio", false);
}

// The same on the io_uring backend in its default configuration: direct I/O, where every
// completed write must survive.
#[cfg(all(target_os = "linux", feature = "io-uring"))]
#[test]
fn power_loss_io_uring() {
    if common::Harness::io_uring().is_none() {
        return;
    }
    cut_power_repeatedly("io-uring", true);
}

// The same on the io_uring backend with buffered writes and linked fsyncs.
#[cfg(all(target_os = "linux", feature = "io-uring"))]
#[test]
fn power_loss_io_uring_buffered() {
    if common::Harness::io_uring().is_none() {
        return;
    }
    cut_power_repeatedly("io-uring-buffered", false);
}

/// Meta-tests (feature `sabotage`; scripts/test.sh runs the `meta` modules in a step of their
/// own, with the deliberate bugs compiled in).
#[cfg(feature = "sabotage")]
mod meta {
    use super::*;

    // Proves the power-loss check catches a writer that skips its fsyncs: such a writer loses
    // acknowledged entries to the emulated power cuts (a process crash could not show it).
    #[test]
    fn power_loss_catches_a_writer_that_skips_fsync() {
        let caught = std::panic::catch_unwind(|| {
            crash_repeatedly("tokio", Crash::Power, DEFAULT_POWER_CUTS, true)
        });
        let panic = match caught {
            // The machine cannot mount (already said loudly, and allowed): nothing ran.
            Ok(tally) if tally.crashes == 0 => return,
            Ok(_) => {
                panic!("{DEFAULT_POWER_CUTS} power cuts did not catch a writer that never syncs")
            }
            Err(panic) => panic,
        };
        let message = panic.downcast_ref::<String>().cloned().unwrap_or_default();
        assert!(
            message.contains("lost") || message.contains("does not reopen"),
            "the sabotaged run failed for another reason: {message}"
        );
    }
}

// Proves the io_uring backend's directory lock outlasts a killed writer's in-flight direct
// writes. The kernel finishes those writes after the process is gone; were the lock free
// meanwhile, a successor could recover and write blocks that a late write then overwrites.
// The child locks a directory on a loop-mounted file system of its own, puts 64 direct writes
// of 128 KiB in flight and is killed, until two kills left writes in flight after the child was
// reaped (about two in five do; at most 32 kills); once the lock is free, nothing more may reach
// that device (its count of sectors written stays put for 300 ms, but for the odd journal
// block). With a plain flock, released with the process's descriptors, the lock is free at
// once and the writes in flight land after it (seven of eight runs failed that way). Root only
// (the mount), like the power-loss tests.
#[cfg(all(target_os = "linux", feature = "io-uring"))]
#[test]
fn a_killed_writers_lock_outlasts_its_in_flight_writes() {
    if common::Harness::io_uring().is_none() {
        return;
    }
    let probe = helix_wal::IoUringWorkerStorage::try_new().expect("io_uring");
    if probe.stats().held_file_slots == 0 {
        // Before Linux 5.19 the locks are plain flocks (documented); nothing to test here.
        eprintln!("SKIPPED: the kernel refused the ring a file table");
        return;
    }
    drop(probe);
    let temporary = tempfile::tempdir().expect("temporary directory");
    let Some(disk) = LoopDisk::create_sized(temporary.path(), flood::IMAGE_BYTES) else {
        return;
    };
    let device = mounted_device(&disk.mount_point);
    let dir = disk.mount_point.join("log");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    // A kill does not always leave writes in flight once the child is reaped: kill until
    // enough did.
    let a_write = flood::WRITE_BYTES / flood::SECTOR_BYTES;
    let mut landed = Vec::new();
    let mut in_flight = Vec::new();
    let mut waited_ms = Vec::new();
    while in_flight
        .iter()
        .filter(|&&sectors| sectors >= a_write)
        .count()
        < flood::ROUNDS_IN_FLIGHT
        && in_flight.len() < flood::MAX_ROUNDS
    {
        let round = flood_kill_and_lock(&runtime, &dir, &device);
        landed.push(round.after_lock);
        in_flight.push(round.after_reap);
        waited_ms.push(format!("{:.1}", round.waited.as_secs_f64() * 1e3));
    }
    println!(
        "per kill: KiB that reached {device} after the child was reaped {:?}, of which after \
         the lock was free {:?}; ms from reaping the child to a free lock {waited_ms:?}",
        in_flight
            .iter()
            .map(|sectors| sectors / 2)
            .collect::<Vec<_>>(),
        landed.iter().map(|sectors| sectors / 2).collect::<Vec<_>>(),
    );
    // Otherwise too few kills left writes in flight, and the test proved little.
    assert!(
        in_flight
            .iter()
            .filter(|&&sectors| sectors >= a_write)
            .count()
            >= flood::ROUNDS_IN_FLIGHT,
        "{} kills, and too few left a write in flight",
        in_flight.len()
    );
    assert!(
        landed.iter().all(|&sectors| sectors < a_write),
        "writes of a killed child landed after its successor took the lock"
    );
    drop(disk);
}

/// What one kill of a flooding child left behind.
#[cfg(all(target_os = "linux", feature = "io-uring"))]
struct FloodRound {
    /// Sectors that reached the device from the reaping of the child until 300 ms after the
    /// lock was free: the child's writes still in flight when it was gone.
    after_reap: u64,
    /// Of those, sectors that reached it after the lock was free.
    after_lock: u64,
    /// From reaping the child to a free lock.
    waited: Duration,
}

/// One round: a flooding child killed with its writes in flight; waits for the lock, then
/// watches the device for 300 ms.
#[cfg(all(target_os = "linux", feature = "io-uring"))]
fn flood_kill_and_lock(runtime: &tokio::runtime::Runtime, dir: &Path, device: &str) -> FloodRound {
    let mut child = child_command("io-uring", FLOOD, dir, 1)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn the flooding child");
    let stdout = BufReader::new(child.stdout.take().expect("piped"));
    // Read on a thread of its own, so that a child that never reports cannot hang the test.
    let (flooding_sender, flooding_receiver) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        let flooding = stdout
            .lines()
            .map_while(Result::ok)
            .any(|line| line.strip_prefix(MARK) == Some(FLOOD));
        let _ = flooding_sender.send(flooding);
    });
    let flooding = flooding_receiver.recv_timeout(READY_LIMIT).unwrap_or(false);
    child.kill().expect("SIGKILL the child");
    let output = child.wait_with_output().expect("reap the child");
    let at_reap = sectors_written(device);
    reader.join().expect("reader");
    assert!(
        flooding,
        "the flooding child never had its writes in flight; stderr:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let reaped = Instant::now();
    let lock = loop {
        match runtime.block_on(TokioStorage::new().lock_dir(dir)) {
            Ok(lock) => break lock,
            Err(helix_wal::WalError::Locked { .. }) => {
                assert!(
                    reaped.elapsed() < READY_LIMIT,
                    "the dead child's lock was never released"
                );
                std::thread::sleep(Duration::from_micros(100));
            }
            Err(error) => panic!("lock: {error}"),
        }
    };
    let waited = reaped.elapsed();
    let at_lock = sectors_written(device);
    std::thread::sleep(Duration::from_millis(300));
    drop(lock);
    let end = sectors_written(device);
    FloodRound {
        after_reap: end - at_reap,
        after_lock: end - at_lock,
        waited,
    }
}

/// The block device (e.g. `loop3`) mounted at `mount_point`.
#[cfg(all(target_os = "linux", feature = "io-uring"))]
fn mounted_device(mount_point: &Path) -> String {
    let mounts = std::fs::read_to_string("/proc/self/mounts").expect("mount table");
    let target = mount_point.to_str().expect("a UTF-8 path");
    mounts
        .lines()
        .find_map(|line| {
            let mut fields = line.split_whitespace();
            let source = fields.next()?;
            (fields.next()? == target).then(|| source.trim_start_matches("/dev/").to_string())
        })
        .expect("the loop mount is in the mount table")
}

/// Sectors the block device has finished writing since it appeared (sysfs `stat`, 7th field).
#[cfg(all(target_os = "linux", feature = "io-uring"))]
fn sectors_written(device: &str) -> u64 {
    let stat = std::fs::read_to_string(format!("/sys/block/{device}/stat")).expect("stat");
    stat.split_whitespace()
        .nth(6)
        .and_then(|field| field.parse().ok())
        .expect("sectors written")
}
