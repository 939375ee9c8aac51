//! `helix-wal bench`: the side-by-side backend comparison.
//!
//! Every workload runs on every backend in turn (A B C A B C ...), after a warm-up pass, and the
//! reported figure of each pair is the median of the runs. Durability is identical everywhere:
//! an append counts only once the fsync covering it has returned.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::{Args, ValueEnum};
use helix_wal::{BufferedWal, BufferedWalConfig, Entry, Storage, TokioStorage, Wal, WalConfig};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;

use crate::naive_tokio::NaiveTokioStorage;
use crate::ring_report::{RingProbe, RingReports};
use crate::Failure;

mod floor;
mod variant;

use variant::{Contender, Tuning};

/// Options of `helix-wal bench`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Directory for the benchmark's logs (default: a new temporary directory, removed after).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Payload size of each entry, in bytes.
    #[arg(long, default_value_t = 4096)]
    payload_bytes: usize,
    /// Number of logs (Raft groups) in the multi-partition workloads, and of appenders in the
    /// group-commit workloads.
    #[arg(long, default_value_t = 16)]
    partitions: usize,
    /// Length of each measured run, in seconds.
    #[arg(long, default_value_t = 2.0)]
    seconds: f64,
    /// Measured runs per workload and backend; the median is reported.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Length of the warm-up pass per workload and backend, in seconds.
    #[arg(long, default_value_t = 0.5)]
    warmup_seconds: f64,
    /// Segment size of the benchmark's logs, in MiB.
    #[arg(long, default_value_t = 8)]
    segment_mib: u64,
    /// Backends to compare (default: every one compiled in).
    #[arg(long, value_enum, value_delimiter = ',')]
    backends: Vec<Backend>,
    /// Workloads to run (default: all).
    #[arg(long, value_enum, value_delimiter = ',')]
    workloads: Vec<Workload>,
    /// Extra rows, each a backend with tuned settings, interleaved with the others:
    /// `NAME:KEY=VALUE[,KEY=VALUE...]` (repeatable). Keys: base (io-uring, io-uring-buffered,
    /// tokio), sq-entries, max-batch, gather-us, registered-buffers, registered-buffer-bytes,
    /// iowq-workers, sqpoll-ms, spin-us, ring-cpu, task-run (best, coop, plain), direct (true,
    /// false),
    /// flush-ms (BufferedWal interval of the group-commit workloads), compact (true: the
    /// durable-append workloads purge what lies two segments behind every 256 appends).
    #[arg(long = "variant")]
    variants: Vec<String>,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
    /// Do not show a progress bar.
    #[arg(long)]
    no_progress: bool,
}

/// Storage backends the benchmark can compare.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Backend {
    /// TokioStorage: one blocking-pool hop per operation, positional I/O.
    Tokio,
    /// The straightforward tokio::fs design: Mutex<tokio::fs::File>, seek + write_all + sync_data.
    NaiveTokioFs,
    /// IoUringWorkerStorage as configured by default: one io_uring on a dedicated thread,
    /// direct I/O (`O_DIRECT | O_DSYNC` writes from aligned buffers, durable on completion, no
    /// fsync; needs the `io-uring` feature on Linux).
    IoUring,
    /// The io_uring backend with buffered writes: a linked write + fdatasync per durable write.
    IoUringBuffered,
    /// C-level floor (single-durable only): `pwrite` + `fdatasync` of the bytes the log writes
    /// per append, on one thread, no Rust in the loop.
    CPwrite,
    /// C-level floor: io_uring write linked to an fdatasync, submitted and awaited on one thread.
    CUring,
    /// C-level floor: `pwrite` on an `O_DIRECT | O_DSYNC` descriptor of the padded commit the
    /// log writes in direct I/O mode.
    CPwriteDirect,
    /// C-level floor: io_uring write from a registered buffer on an `O_DIRECT | O_DSYNC`
    /// descriptor, on one thread (the io-uring backend's mechanism without the log, the queue
    /// and the ring thread).
    CUringDirect,
    /// The backend's C shim with its loop on the benchmark's thread: linked write + fdatasync
    /// requests (what the shim's bookkeeping adds to `c-uring`).
    CShim,
    /// The C shim on the benchmark's thread: direct writes (what it adds to `c-uring-direct`).
    CShimDirect,
    /// The C shim on its own thread, each request handed over from the benchmark's thread,
    /// which sleeps on an eventfd until it completes: the io-uring backend's design in C,
    /// linked write + fdatasync.
    CShimHandoff,
    /// The same hand-off in C with direct writes: the io-uring backend's default, without Rust.
    CShimHandoffDirect,
    /// No log: one task calling `write_at_and_sync` of the same bytes on a TokioStorage file.
    FileTokio,
    /// No log: one task calling `write_at_and_sync` on an io-uring (direct I/O) file: the Rust
    /// path of the backend, to compare with `c-shim-handoff-direct`.
    FileIoUring,
}

impl Backend {
    fn all() -> Vec<Backend> {
        let mut all = vec![Backend::Tokio, Backend::NaiveTokioFs];
        if cfg!(all(target_os = "linux", feature = "io-uring")) {
            all.push(Backend::IoUring);
            all.push(Backend::IoUringBuffered);
            all.extend([
                Backend::CPwrite,
                Backend::CUring,
                Backend::CPwriteDirect,
                Backend::CUringDirect,
                Backend::CShim,
                Backend::CShimDirect,
                Backend::CShimHandoff,
                Backend::CShimHandoffDirect,
                Backend::FileTokio,
                Backend::FileIoUring,
            ]);
        } else {
            all.push(Backend::FileTokio);
        }
        all
    }

    fn name(self) -> &'static str {
        match self {
            Backend::Tokio => "tokio",
            Backend::NaiveTokioFs => "naive-tokio-fs",
            Backend::IoUring => "io-uring",
            Backend::IoUringBuffered => "io-uring-buffered",
            Backend::CPwrite => "c-pwrite",
            Backend::CUring => "c-uring",
            Backend::CPwriteDirect => "c-pwrite-direct",
            Backend::CUringDirect => "c-uring-direct",
            Backend::CShim => "c-shim",
            Backend::CShimDirect => "c-shim-direct",
            Backend::CShimHandoff => "c-shim-handoff",
            Backend::CShimHandoffDirect => "c-shim-handoff-direct",
            Backend::FileTokio => "file-tokio",
            Backend::FileIoUring => "file-io-uring",
        }
    }

    /// A fresh backend with `tuning`'s io_uring settings, and a probe of its ring's counters
    /// when it has one.
    fn storage(self, tuning: &Tuning) -> Result<(Arc<dyn Storage>, RingProbe), Failure> {
        Ok(match self {
            Backend::Tokio => (Arc::new(TokioStorage::new()), RingProbe::none()),
            Backend::NaiveTokioFs => (Arc::new(NaiveTokioStorage::new()), RingProbe::none()),
            Backend::IoUring | Backend::FileIoUring => io_uring_storage(true, tuning)?,
            Backend::IoUringBuffered => io_uring_storage(false, tuning)?,
            Backend::FileTokio => (Arc::new(TokioStorage::new()), RingProbe::none()),
            Backend::CPwrite
            | Backend::CUring
            | Backend::CPwriteDirect
            | Backend::CUringDirect
            | Backend::CShim
            | Backend::CShimDirect
            | Backend::CShimHandoff
            | Backend::CShimHandoffDirect => {
                return Err(Failure::usage("a C-level floor is not a storage backend"))
            }
        })
    }

    /// True for the C-level floors and the file-level loops, which run the single-durable
    /// workload only (they have no log).
    fn single_durable_only(self) -> bool {
        !matches!(
            self,
            Backend::Tokio | Backend::NaiveTokioFs | Backend::IoUring | Backend::IoUringBuffered
        )
    }

    /// True for the file-level loops through a storage backend.
    fn is_file_loop(self) -> bool {
        matches!(self, Backend::FileTokio | Backend::FileIoUring)
    }
}

#[cfg(all(target_os = "linux", feature = "io-uring"))]
fn io_uring_storage(
    direct_io: bool,
    tuning: &Tuning,
) -> Result<(Arc<dyn Storage>, RingProbe), Failure> {
    let mut config = helix_wal::IoUringConfig {
        direct_io,
        ..helix_wal::IoUringConfig::default()
    };
    variant::apply(&mut config, &tuning.io_uring);
    let storage = helix_wal::IoUringWorkerStorage::with_config(config)?;
    let probe = RingProbe::of(&storage);
    Ok((Arc::new(storage), probe))
}

#[cfg(not(all(target_os = "linux", feature = "io-uring")))]
fn io_uring_storage(
    _direct_io: bool,
    _tuning: &Tuning,
) -> Result<(Arc<dyn Storage>, RingProbe), Failure> {
    Err(Failure::usage(
        "the io-uring backend is not compiled in: build with --features io-uring (Linux only)",
    ))
}

/// The workloads, each durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Workload {
    /// One log, one writer, every append made durable before the next (write + fsync).
    SingleDurable,
    /// `--partitions` logs, one writer task each, every append durable.
    PartitionsDurable,
    /// One BufferedWal, one appender that waits for durability of every append (interval 0).
    #[value(name = "group-commit-1")]
    GroupCommit1,
    /// One BufferedWal, `--partitions` appenders that each wait for durability of every append
    /// (interval 0): concurrent waiters share fsyncs.
    GroupCommitN,
    /// One BufferedWal, `--partitions` appenders that do not wait, 10 ms flush interval:
    /// durable bytes per second.
    BufferedThroughput,
}

impl Workload {
    fn all() -> Vec<Workload> {
        vec![
            Workload::SingleDurable,
            Workload::PartitionsDurable,
            Workload::GroupCommit1,
            Workload::GroupCommitN,
            Workload::BufferedThroughput,
        ]
    }

    fn name(self) -> &'static str {
        match self {
            Workload::SingleDurable => "single-durable",
            Workload::PartitionsDurable => "partitions-durable",
            Workload::GroupCommit1 => "group-commit-1",
            Workload::GroupCommitN => "group-commit-n",
            Workload::BufferedThroughput => "buffered-throughput",
        }
    }
}

/// One measured run.
#[derive(Debug, Clone)]
struct Sample {
    operations: u64,
    payload_bytes: u64,
    elapsed: Duration,
    cpu: Duration,
    latencies_ns: Vec<u64>,
}

impl Sample {
    /// A run of `latencies_ns.len()` operations of `payload_bytes` each.
    fn new(latencies_ns: Vec<u64>, payload_bytes: usize, elapsed: Duration, cpu: Duration) -> Self {
        let operations = latencies_ns.len() as u64;
        Self {
            operations,
            payload_bytes: operations * payload_bytes as u64,
            elapsed,
            cpu,
            latencies_ns,
        }
    }
}

/// The reported figures of one workload on one backend.
#[derive(Debug, Clone, Serialize)]
struct Figures {
    workload: &'static str,
    backend: &'static str,
    operations_per_second: f64,
    megabytes_per_second: f64,
    p50_us: f64,
    p99_us: f64,
    p999_us: f64,
    cpu_us_per_operation: f64,
    runs: usize,
    ratio_to_tokio: Option<f64>,
    ratio_to_naive: Option<f64>,
    /// Throughput over the C-level `pwrite` + `fdatasync` floor's (single-durable only).
    ratio_to_floor: Option<f64>,
}

/// Shared settings of every run.
struct Setup {
    payload: Bytes,
    partitions: usize,
    segment_size_bytes: u64,
    root: PathBuf,
    run_number: std::sync::atomic::AtomicU64,
}

impl Setup {
    /// A fresh directory for one run.
    fn fresh_dir(&self, label: &str) -> PathBuf {
        let run = self
            .run_number
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.root.join(format!("{label}-{run}"))
    }

    fn config(&self, dir: &Path) -> WalConfig {
        WalConfig::new(dir)
            .segment_size_bytes(self.segment_size_bytes)
            .max_entry_size_bytes(self.payload.len().max(1))
    }
}

/// Runs the comparison and prints the table (or JSON).
pub async fn run(args: BenchArgs) -> Result<(), Failure> {
    if args.payload_bytes > helix_wal::constants::DEFAULT_MAX_ENTRY_SIZE_BYTES {
        return Err(Failure::usage(format!(
            "--payload-bytes must be at most {}",
            helix_wal::constants::DEFAULT_MAX_ENTRY_SIZE_BYTES
        )));
    }
    if args.partitions == 0 || args.runs == 0 || args.seconds.is_nan() || args.seconds <= 0.0 {
        return Err(Failure::usage(
            "--partitions, --runs and --seconds must be positive",
        ));
    }
    let temporary;
    let root = match &args.dir {
        Some(dir) => dir.clone(),
        None => {
            temporary = tempfile::Builder::new()
                .prefix("helix-wal-bench")
                .tempdir_in(std::env::current_dir().map_err(|e| Failure::usage(e.to_string()))?)
                .map_err(|e| Failure::usage(format!("cannot create a temporary directory: {e}")))?;
            temporary.path().to_path_buf()
        }
    };
    let mut backends: Vec<Contender> = if args.backends.is_empty() {
        Backend::all()
    } else {
        args.backends.clone()
    }
    .into_iter()
    .map(Contender::plain)
    .collect();
    for text in &args.variants {
        backends.push(variant::parse(text)?);
    }
    let workloads = if args.workloads.is_empty() {
        Workload::all()
    } else {
        args.workloads.clone()
    };
    let setup = Setup {
        payload: Bytes::from(vec![0xA5u8; args.payload_bytes]),
        partitions: args.partitions,
        segment_size_bytes: args.segment_mib << 20,
        root,
        run_number: Default::default(),
    };
    let measured = Duration::from_secs_f64(args.seconds);
    let warmup = Duration::from_secs_f64(args.warmup_seconds);
    let total = (workloads.len() * backends.len() * (args.runs + 1)) as u64;
    let progress = progress_bar(total, args.no_progress || args.json);
    let mut all = Vec::new();
    let mut ring_reports = RingReports::default();
    for workload in &workloads {
        let mut samples: Vec<Vec<Sample>> = vec![Vec::new(); backends.len()];
        for round in 0..=args.runs {
            let duration = if round == 0 { warmup } else { measured };
            for (position, contender) in backends.iter().enumerate() {
                let backend = &contender.backend;
                progress.set_message(format!("{} on {}", workload.name(), contender.name));
                let (sample, ring) = if backend.single_durable_only() {
                    if *workload != Workload::SingleDurable {
                        progress.inc(1);
                        continue;
                    }
                    if backend.is_file_loop() {
                        let (storage, ring) = backend.storage(&contender.tuning)?;
                        (floor::file_loop(storage, &setup, duration).await?, ring)
                    } else {
                        (
                            floor::run(*backend, &setup, duration).await?,
                            RingProbe::none(),
                        )
                    }
                } else {
                    let (storage, ring) = backend.storage(&contender.tuning)?;
                    (
                        run_workload(*workload, storage, &setup, &contender.tuning, duration)
                            .await?,
                        ring,
                    )
                };
                if round > 0 {
                    samples[position].push(sample);
                    ring_reports.record(workload.name(), contender.name, &ring);
                }
                progress.inc(1);
            }
        }
        all.extend(summarize(*workload, &backends, samples));
    }
    progress.finish_and_clear();
    if args.json {
        let mut rows = serde_json::to_value(&all).map_err(|e| Failure::usage(e.to_string()))?;
        ring_reports.attach(&mut rows);
        let text =
            serde_json::to_string_pretty(&rows).map_err(|e| Failure::usage(e.to_string()))?;
        println!("{text}");
    } else {
        print_table(&all, &args);
        ring_reports.print();
    }
    Ok(())
}

fn progress_bar(total: u64, hidden: bool) -> ProgressBar {
    if hidden {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
    if let Ok(style) = ProgressStyle::with_template("{bar:30} {pos}/{len} runs  {msg}") {
        bar.set_style(style);
    }
    bar
}

/// BufferedWal flush interval of the workloads whose appenders wait for every append.
const WAITING_FLUSH_INTERVAL_MS: u64 = 0;
/// BufferedWal flush interval of buffered-throughput (the 10 ms).
const THROUGHPUT_FLUSH_INTERVAL_MS: u64 = 10;

/// Appends between two compactions of a durable-append workload run with `compact`.
const COMPACT_EVERY: u64 = 256;

/// Runs `workload` with a variant's `tuning`: its flush interval overrides the group-commit
/// workloads', and `compact` makes the durable-append workloads purge as they go.
async fn run_workload(
    workload: Workload,
    storage: Arc<dyn Storage>,
    setup: &Setup,
    tuning: &Tuning,
    duration: Duration,
) -> Result<Sample, Failure> {
    let flush_interval_ms = tuning.flush_interval_ms;
    let compact = tuning.compact;
    let waiting = flush_interval_ms.unwrap_or(WAITING_FLUSH_INTERVAL_MS);
    let throughput = flush_interval_ms.unwrap_or(THROUGHPUT_FLUSH_INTERVAL_MS);
    let partitions = setup.partitions;
    match workload {
        Workload::SingleDurable => partitions_durable(storage, setup, 1, compact, duration).await,
        Workload::PartitionsDurable => {
            partitions_durable(storage, setup, partitions, compact, duration).await
        }
        Workload::GroupCommit1 => group_commit(storage, setup, 1, true, waiting, duration).await,
        Workload::GroupCommitN => {
            group_commit(storage, setup, partitions, true, waiting, duration).await
        }
        Workload::BufferedThroughput => {
            group_commit(storage, setup, partitions, false, throughput, duration).await
        }
    }
}

/// Clock ticks per second of the times in /proc/self/stat (USER_HZ, fixed at 100 by the Linux
/// ABI on every architecture the crate targets).
const USER_HZ: u64 = 100;

/// CPU time (user + system) of the whole process, all threads included, from /proc/self/stat
/// (10 ms resolution; runs last seconds). Zero where /proc is unavailable.
fn process_cpu_time() -> Duration {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return Duration::ZERO;
    };
    // The command name (field 2) may contain spaces; fields after its closing parenthesis are
    // plain numbers: utime and stime are fields 14 and 15, so 12th and 13th after it.
    let Some(after_name) = stat.rfind(')').map(|position| &stat[position + 1..]) else {
        return Duration::ZERO;
    };
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let ticks = |position: usize| fields.get(position).and_then(|f| f.parse::<u64>().ok());
    match (ticks(11), ticks(12)) {
        (Some(user), Some(system)) => Duration::from_millis((user + system) * 1000 / USER_HZ),
        _ => Duration::ZERO,
    }
}

/// Time for the background zero-fill of each log's next segment to finish before the clock
/// starts, so every run starts in the same steady state.
const SETTLE: Duration = Duration::from_millis(300);

/// How often the bulk workload purges what is more than two segments behind.
const COMPACTION_INTERVAL: Duration = Duration::from_millis(50);

async fn settle() {
    tokio::time::sleep(SETTLE).await;
}

/// `count` logs, one task each, appending durably until the deadline.
async fn partitions_durable(
    storage: Arc<dyn Storage>,
    setup: &Setup,
    count: usize,
    compact: bool,
    duration: Duration,
) -> Result<Sample, Failure> {
    // With `compact`, each writer purges what lies more than two segments behind it every
    // COMPACT_EVERY appends, as a Raft node compacts below its snapshots: purged segment files
    // are then recycled, and new segments need no zero-fill.
    let keep_entries = 2 * setup.segment_size_bytes / (setup.payload.len() as u64 + 32);
    let mut logs = Vec::with_capacity(count);
    for _ in 0..count {
        let dir = setup.fresh_dir("partition");
        let mut wal = Wal::open(storage.clone(), setup.config(&dir)).await?;
        // The first append installs the first segment: setup, not measured.
        wal.append_batch_durable(&[Entry::new(1, 1, setup.payload.clone())])
            .await?;
        logs.push(wal);
    }
    let cpu_before = process_cpu_time();
    let started = Instant::now();
    let deadline = started + duration;
    let mut tasks = Vec::with_capacity(count);
    for mut wal in logs {
        let payload = setup.payload.clone();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut index = wal.last_index() + 1;
            // At least one append per run, however late the task starts: a run with none
            // would have no figures to compare.
            loop {
                let began = Instant::now();
                let entry = Entry::new(index, 1, payload.clone());
                wal.append_batch_durable(std::slice::from_ref(&entry))
                    .await?;
                latencies.push(began.elapsed().as_nanos() as u64);
                if compact && index % COMPACT_EVERY == 0 {
                    wal.purge_before(index.saturating_sub(keep_entries)).await?;
                }
                index += 1;
                if Instant::now() >= deadline {
                    break;
                }
            }
            wal.close().await?;
            Ok::<_, helix_wal::WalError>(latencies)
        }));
    }
    let mut latencies_ns = Vec::new();
    for task in tasks {
        let result = task.await.map_err(|e| Failure::usage(e.to_string()))?;
        latencies_ns.extend(result?);
    }
    let elapsed = started.elapsed();
    let cpu = process_cpu_time().saturating_sub(cpu_before);
    Ok(Sample::new(latencies_ns, setup.payload.len(), elapsed, cpu))
}

/// One BufferedWal, `appenders` tasks; each waits for durability of every append when `wait`,
/// otherwise appends freely and the run ends with a flush.
async fn group_commit(
    storage: Arc<dyn Storage>,
    setup: &Setup,
    appenders: usize,
    wait: bool,
    flush_interval_ms: u64,
    duration: Duration,
) -> Result<Sample, Failure> {
    let dir = setup.fresh_dir("buffered");
    let mut wal = Wal::open(storage, setup.config(&dir)).await?;
    wal.append_batch_durable(&[Entry::new(1, 1, setup.payload.clone())])
        .await?;
    let config = BufferedWalConfig {
        flush_interval_ms,
        ..BufferedWalConfig::default()
    };
    let log = BufferedWal::new(wal, config)?;
    settle().await;
    let cpu_before = process_cpu_time();
    let started = Instant::now();
    let deadline = started + duration;
    let mut tasks = Vec::with_capacity(appenders);
    for _ in 0..appenders {
        let log = log.clone();
        let payload = setup.payload.clone();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            // At least one append per appender, however late the task starts.
            loop {
                let began = Instant::now();
                let index = log.append_next(1, payload.clone()).await?;
                if wait {
                    log.wait_durable(index).await?;
                }
                latencies.push(began.elapsed().as_nanos() as u64);
                if Instant::now() >= deadline {
                    break;
                }
            }
            Ok::<_, helix_wal::WalError>(latencies)
        }));
    }
    // Bulk appenders compact behind themselves, as a Raft node purges below its snapshots: the
    // log stays a few segments long and new segments reuse purged files.
    let compactor = (!wait).then(|| {
        let log = log.clone();
        let keep_entries = 2 * setup.segment_size_bytes / (setup.payload.len() as u64 + 32);
        tokio::spawn(async move {
            while Instant::now() < deadline {
                tokio::time::sleep(COMPACTION_INTERVAL).await;
                let durable = log.durable_index();
                log.purge_before(durable.saturating_sub(keep_entries))
                    .await?;
            }
            Ok::<_, helix_wal::WalError>(())
        })
    });
    let mut latencies_ns = Vec::new();
    for task in tasks {
        let result = task.await.map_err(|e| Failure::usage(e.to_string()))?;
        latencies_ns.extend(result?);
    }
    if let Some(compactor) = compactor {
        compactor
            .await
            .map_err(|e| Failure::usage(e.to_string()))??;
    }
    // Only durable bytes count: the run ends when everything appended is synced.
    log.flush().await?;
    let elapsed = started.elapsed();
    let cpu = process_cpu_time().saturating_sub(cpu_before);
    log.close().await?;
    Ok(Sample::new(latencies_ns, setup.payload.len(), elapsed, cpu))
}

fn percentile_us(sorted: &[u64], fraction: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let position = ((sorted.len() as f64 * fraction).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[position] as f64 / 1000.0
}

/// Picks the median run of each backend and computes ratios.
fn summarize(
    workload: Workload,
    backends: &[Contender],
    samples: Vec<Vec<Sample>>,
) -> Vec<Figures> {
    let mut figures: Vec<Figures> = backends
        .iter()
        .zip(samples)
        // A C-level floor has no runs outside single-durable.
        .filter(|(_, runs)| !runs.is_empty())
        .map(|(backend, mut runs)| {
            runs.sort_by(|a, b| throughput(a).total_cmp(&throughput(b)));
            let runs_count = runs.len();
            let median = &mut runs[runs_count / 2];
            median.latencies_ns.sort_unstable();
            let seconds = median.elapsed.as_secs_f64();
            Figures {
                workload: workload.name(),
                backend: backend.name,
                operations_per_second: throughput(median),
                megabytes_per_second: median.payload_bytes as f64 / seconds / 1e6,
                p50_us: percentile_us(&median.latencies_ns, 0.50),
                p99_us: percentile_us(&median.latencies_ns, 0.99),
                p999_us: percentile_us(&median.latencies_ns, 0.999),
                cpu_us_per_operation: median.cpu.as_secs_f64() * 1e6
                    / median.operations.max(1) as f64,
                runs: runs_count,
                ratio_to_tokio: None,
                ratio_to_naive: None,
                ratio_to_floor: None,
            }
        })
        .collect();
    let find = |name: &str, figures: &[Figures]| {
        figures
            .iter()
            .find(|figure| figure.backend == name)
            .map(|figure| figure.operations_per_second)
    };
    let tokio = find("tokio", &figures);
    let naive = find("naive-tokio-fs", &figures);
    let floor = find("c-pwrite", &figures);
    for figure in &mut figures {
        figure.ratio_to_tokio = tokio.map(|base| figure.operations_per_second / base);
        figure.ratio_to_naive = naive.map(|base| figure.operations_per_second / base);
        figure.ratio_to_floor = floor.map(|base| figure.operations_per_second / base);
    }
    figures
}

fn throughput(sample: &Sample) -> f64 {
    sample.operations as f64 / sample.elapsed.as_secs_f64()
}

fn print_table(figures: &[Figures], args: &BenchArgs) {
    println!(
        "helix-wal bench: {} B payloads, {} partitions/appenders, median of {} x {:.1} s runs \
         after a {:.1} s warm-up, backends interleaved",
        args.payload_bytes, args.partitions, args.runs, args.seconds, args.warmup_seconds
    );
    println!(
        "{:<20} {:<22} {:>10} {:>9} {:>9} {:>9} {:>10} {:>9} {:>8} {:>8} {:>8}",
        "workload",
        "backend",
        "ops/s",
        "MB/s",
        "p50 us",
        "p99 us",
        "p99.9 us",
        "CPU us/op",
        "x tokio",
        "x naive",
        "x floor"
    );
    let ratio = |value: Option<f64>| value.map_or("-".to_string(), |v| format!("{v:.2}"));
    for figure in figures {
        println!(
            "{:<20} {:<22} {:>10.0} {:>9.1} {:>9.1} {:>9.1} {:>10.1} {:>9.1} {:>8} {:>8} {:>8}",
            figure.workload,
            figure.backend,
            figure.operations_per_second,
            figure.megabytes_per_second,
            figure.p50_us,
            figure.p99_us,
            figure.p999_us,
            figure.cpu_us_per_operation,
            ratio(figure.ratio_to_tokio),
            ratio(figure.ratio_to_naive),
            ratio(figure.ratio_to_floor),
        );
    }
}
