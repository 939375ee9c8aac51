//! The seeded checker: random operations on a log over `SimulatedStorage`, process crashes and
//! power losses at random points, and after every recovery the invariants of the model.
//!
//! Each incarnation of the process is its own current-thread tokio runtime with paused time, so
//! a run is a pure function of its seed; a crash drops that runtime with every task of the log
//! in it (the background segment preparation, the BufferedWal flusher) exactly where it stood,
//! as the death of a process does.

use std::collections::VecDeque;
use std::fmt;
use std::path::Path;

use std::sync::Arc;

use helix_wal::{
    BufferedWal, BufferedWalConfig, Entry, FaultConfig, FaultKind, RecoveryMode, SimulatedConfig,
    SimulatedStorage, Storage, Wal, WalConfig, WalError,
};

use crate::common::instrumented::{Instrumented, StorageSabotage};
use crate::model::{Model, Written};

mod buffered;
mod interrupt;
mod plain;
use crate::rng::Rng;

/// Size of each segment file: the smallest the log accepts, so runs rotate often.
const SEGMENT_SIZE_BYTES: u64 = 64 << 10;
/// Largest payload the checker appends, and the log's configured maximum.
const MAX_ENTRY_SIZE_BYTES: usize = 8 << 10;
/// Block size of the runs with direct-I/O files.
const DIRECT_IO_BLOCK_BYTES: u64 = 4096;
/// Most entries in one batch or one burst of concurrent appenders.
const MAX_BATCH_ENTRIES: u64 = 8;
/// Operations kept for the failure report.
const TRACE_OPERATIONS: usize = 40;
/// Where the simulated machine keeps the log.
const LOG_DIR: &str = "/sim/log";

/// What the log runs on: the simulated machine, or a deliberately broken storage around it.
type LogStorage = Arc<dyn Storage>;
type Log = Wal<LogStorage>;
type Buffered = BufferedWal<LogStorage>;
type Check<T> = Result<T, String>;

macro_rules! ensure_impl {
    ($condition:expr, $($message:tt)+) => {
        if !$condition {
            return Err(format!($($message)+));
        }
    };
}
use ensure_impl as ensure;

/// Simulated time after which a process's operations count as hung. The clock is paused, so
/// it only runs when every task waits: a wedged call (an append that waits for ever) reaches
/// this at once, while a run's own pauses add up to well under a minute.
const HANG_LIMIT: std::time::Duration = std::time::Duration::from_secs(3_600);

/// Runs `work`, failing the run if it is still waiting after [`HANG_LIMIT`] of simulated time.
async fn hang_guard<T>(work: impl std::future::Future<Output = T>) -> Check<T> {
    tokio::time::timeout(HANG_LIMIT, work)
        .await
        .map_err(|_| "an operation hung: it waited an hour of simulated time".to_string())
}

/// A run that broke an invariant.
#[derive(Debug)]
pub struct Failure {
    pub seed: u64,
    pub operations: usize,
    pub operation: usize,
    pub message: String,
    pub trace: Vec<String>,
}

impl fmt::Display for Failure {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            formatter,
            "seed {} broke an invariant at operation {}: {}",
            self.seed, self.operation, self.message
        )?;
        writeln!(formatter, "last operations:")?;
        for line in &self.trace {
            writeln!(formatter, "  {line}")?;
        }
        write!(
            formatter,
            "replay: HELIX_SIM_SEED={} HELIX_SIM_OPS={} cargo test --all-features --test \
             simulation replay -- --nocapture",
            self.seed, self.operations
        )
    }
}

/// What a run did, for the soak report.
#[derive(Debug, Default, Clone, Copy)]
pub struct Summary {
    pub operations: u64,
    pub entries_appended: u64,
    pub recoveries: u64,
    pub power_losses: u64,
    pub process_crashes: u64,
    pub faults_injected: u64,
    pub cuts: u64,
    /// Runs with direct-I/O files (aligned writes, durable on return).
    pub direct_io_runs: u64,
    /// Runs on a disk small enough to fill up.
    pub small_disk_runs: u64,
    /// The simulated machine's final state (not summed by `add`).
    pub fingerprint: u64,
}

impl Summary {
    pub fn add(&mut self, other: &Summary) {
        self.operations += other.operations;
        self.entries_appended += other.entries_appended;
        self.recoveries += other.recoveries;
        self.power_losses += other.power_losses;
        self.process_crashes += other.process_crashes;
        self.faults_injected += other.faults_injected;
        self.cuts += other.cuts;
        self.direct_io_runs += other.direct_io_runs;
        self.small_disk_runs += other.small_disk_runs;
    }
}

/// Runs `operations` random operations from `seed` and checks every recovery.
pub fn run(seed: u64, operations: usize) -> Result<Summary, Failure> {
    run_with(seed, operations, None)
}

/// Like [`run`], with the log on a storage broken by `sabotage` (for the meta-tests), which
/// otherwise runs exactly as the same seed on a sound one.
pub fn run_with(
    seed: u64,
    operations: usize,
    sabotage: Option<StorageSabotage>,
) -> Result<Summary, Failure> {
    let mut simulation = Simulation::new(seed, operations, sabotage);
    match simulation.run_all() {
        Ok(()) => {
            simulation.summary.fingerprint = simulation.storage.fingerprint();
            let counters = simulation.storage.counters();
            simulation.summary.faults_injected =
                FaultKind::ALL.iter().map(|kind| counters.get(*kind)).sum();
            Ok(simulation.summary)
        }
        Err(message) => Err(Failure {
            seed,
            operations,
            operation: simulation.operation,
            message,
            trace: simulation.trace.into_iter().collect(),
        }),
    }
}

/// How the process ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Crash {
    /// The process dies; the kernel keeps everything it was given.
    Process,
    /// The machine loses power: only synced data survives, the rest settles at random.
    Power,
    /// Power loss in its worst deterministic case: everything unsynced is lost.
    PowerLosingEverything,
}

/// What the operation loop does next.
enum Flow {
    Continue,
    Crash(Crash),
}

/// True for the errors of a log that refuses writes.
fn refused(result: &Result<(), WalError>) -> bool {
    matches!(
        result,
        Err(WalError::Poisoned { .. } | WalError::Shutdown { .. })
    )
}

/// The log as this incarnation drives it.
enum Handle {
    Plain(Box<Log>),
    Buffered(Buffered),
}

struct Simulation {
    rng: Rng,
    /// The simulated machine, for crashes and faults.
    storage: SimulatedStorage,
    /// What the log is opened on: `storage`, or a broken storage around it.
    log_storage: LogStorage,
    model: Model,
    faults: FaultConfig,
    /// The simulated disk is small enough to fill up.
    capacity_limited: bool,
    operations_left: usize,
    operation: usize,
    trace: VecDeque<String>,
    summary: Summary,
    directory_sync_failures: u64,
    /// Print every operation as it runs (`HELIX_SIM_TRACE=1`, for replays).
    print_trace: bool,
    /// The entry a recovery cut away at the index the next append takes: one appended entry
    /// in two after such a cut gets exactly its length and term, so that a record left behind
    /// the cut lines up again if the cut was not sealed.
    refill: Option<(u64, Written)>,
}

impl Simulation {
    fn new(seed: u64, operations: usize, sabotage: Option<StorageSabotage>) -> Self {
        let mut rng = Rng::new(seed);
        // One run in four has direct-I/O files: aligned writes only, durable on return, so the
        // log pads every commit to a block boundary.
        let settings = SimulatedConfig {
            write_alignment_bytes: if rng.one_in(4) {
                DIRECT_IO_BLOCK_BYTES
            } else {
                1
            },
            ..SimulatedConfig::new(seed)
        };
        // Three runs in four leave storage calls in flight (Pending for a while, completing at
        // seeded points even when their future is dropped), so that dropped calls matter.
        let settings = SimulatedConfig {
            in_flight_rate: [0.0, 0.05, 0.25, 0.6][rng.below(4) as usize],
            ..settings
        };
        let direct_io = settings.write_alignment_bytes > 1;
        let storage = SimulatedStorage::with_config(settings).expect("a valid configuration");
        storage
            .create_dir_all_durably(Path::new("/sim"))
            .expect("the simulated root is creatable");
        // Half of the runs are fault-free: there, any error at all is a bug.
        let faults = match rng.below(6) {
            0..=2 => FaultConfig::none(),
            3 => FaultConfig::uniform(0.002),
            4 => FaultConfig::uniform(0.01),
            _ => FaultConfig::none()
                .with_rate(FaultKind::SyncError, 0.02)
                .with_rate(FaultKind::WriteError, 0.005)
                .with_rate(FaultKind::ShortWrite, 0.005),
        };
        // One run in eight has a small disk: appends, rotations and truncations meet ENOSPC,
        // purges free space, and recovery must open a full disk.
        let capacity_limited = rng.one_in(8);
        if capacity_limited {
            let capacity_bytes = rng.between(256 << 10, 1 << 20);
            storage.set_capacity_bytes(Some(capacity_bytes));
        }
        let log_storage: LogStorage = match sabotage {
            None => Arc::new(storage.clone()),
            Some(sabotage) => {
                Arc::new(Instrumented::sabotaged(Arc::new(storage.clone()), sabotage))
            }
        };
        Self {
            rng,
            storage,
            log_storage,
            capacity_limited,
            model: Model::new(seed),
            faults,
            operations_left: operations,
            operation: 0,
            trace: VecDeque::new(),
            summary: Summary {
                direct_io_runs: u64::from(direct_io),
                small_disk_runs: u64::from(capacity_limited),
                ..Summary::default()
            },
            directory_sync_failures: 0,
            print_trace: std::env::var_os("HELIX_SIM_TRACE").is_some(),
            refill: None,
        }
    }

    /// True when operations may fail: faults are injected or the disk can fill up.
    fn faults_on(&self) -> bool {
        self.capacity_limited || self.faults != FaultConfig::none()
    }

    fn note(&mut self, line: String) {
        if self.print_trace {
            println!("#{} {line}", self.operation);
        }
        if self.trace.len() == TRACE_OPERATIONS {
            self.trace.pop_front();
        }
        self.trace.push_back(format!("#{} {line}", self.operation));
    }

    fn run_all(&mut self) -> Check<()> {
        loop {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .start_paused(true)
                .build()
                .expect("a current-thread runtime builds");
            let finished = runtime.block_on(self.incarnation())?;
            // Dropping the runtime drops every task of the dead process unpolled.
            drop(runtime);
            if finished {
                return Ok(());
            }
        }
    }

    /// One process lifetime: recover, check, then run operations until a crash. Returns true
    /// once the operation budget is spent and the final recovery has been checked.
    async fn incarnation(&mut self) -> Check<bool> {
        let handle = self.recover().await?;
        if self.operations_left == 0 {
            return Ok(true);
        }
        let crash = match handle {
            Handle::Plain(mut wal) => {
                let crash = hang_guard(self.drive_plain(&mut wal)).await??;
                self.crash(crash);
                drop(wal);
                crash
            }
            Handle::Buffered(buffered) => {
                let crash = hang_guard(self.drive_buffered(&buffered)).await??;
                self.crash(crash);
                drop(buffered);
                crash
            }
        };
        self.note(format!("crash: {crash:?}"));
        Ok(false)
    }

    fn config(&self, mode: RecoveryMode) -> WalConfig {
        WalConfig::new(LOG_DIR)
            .segment_size_bytes(SEGMENT_SIZE_BYTES)
            .max_entry_size_bytes(MAX_ENTRY_SIZE_BYTES)
            .recovery_mode(mode)
    }

    /// Ends the process. After a failed directory sync the machine always loses power: a
    /// filesystem that cannot write its directory aborts (ext4 remounts read-only), and the
    /// simulator drops the failed changes while still showing them, which only a reboot undoes.
    fn crash(&mut self, mut crash: Crash) {
        self.storage.set_faults(FaultConfig::none()).expect("valid");
        self.storage.clear_one_shots();
        let failures = self.storage.counters().get(FaultKind::SyncDirError);
        if failures > self.directory_sync_failures && crash == Crash::Process {
            crash = Crash::Power;
        }
        self.directory_sync_failures = failures;
        match crash {
            Crash::Process => {
                self.summary.process_crashes += 1;
                self.storage.crash_keeping_everything();
            }
            Crash::Power => {
                self.summary.power_losses += 1;
                self.storage.crash();
            }
            Crash::PowerLosingEverything => {
                self.summary.power_losses += 1;
                self.storage.crash_losing_everything_unsynced();
            }
        }
    }

    fn random_crash(&mut self) -> Crash {
        match self.rng.below(5) {
            0 | 1 => Crash::Process,
            2 | 3 => Crash::Power,
            _ => Crash::PowerLosingEverything,
        }
    }

    fn random_length(&mut self) -> usize {
        let length = match self.rng.below(10) {
            0..=5 => self.rng.between(0, 200),
            6..=8 => self.rng.between(200, 2000),
            _ => self.rng.between(2000, MAX_ENTRY_SIZE_BYTES as u64),
        };
        length as usize
    }

    /// A new entry for the next index, sometimes in a newer term.
    fn next_entry(&mut self) -> Written {
        if let Some((index, lost)) = self.refill.take() {
            if index == self.model.next && self.rng.one_in(2) {
                self.summary.entries_appended += 1;
                return self.model.new_entry_like(lost);
            }
        }
        if self.rng.one_in(12) {
            self.model.term += 1;
        }
        let length = self.random_length();
        self.summary.entries_appended += 1;
        self.model.new_entry(length)
    }
}

// Recovery and its invariants.
impl Simulation {
    async fn recover(&mut self) -> Check<Handle> {
        self.summary.recoveries += 1;
        let mode = match self.rng.below(4) {
            0 => RecoveryMode::AbsoluteConsistency,
            1 => RecoveryMode::PointInTime,
            _ => RecoveryMode::TolerateTailCorruption,
        };
        let first_open = self.summary.recoveries == 1;
        let view = if first_open {
            None
        } else {
            self.read_only_view(mode).await?
        };
        let (wal, mode) = self.open_for_recovery(mode).await?;
        if wal.recovery_report().cut.is_some() {
            self.summary.cuts += 1;
        }
        let (first, last) = (wal.first_index(), wal.last_index());
        if let Some(view) = view {
            ensure!(
                view == (first, last),
                "a read-only open saw [{}, {}] but recovery gave [{first}, {last}]",
                view.0,
                view.1
            );
        }
        let entries = self.check_recovered(&wal).await?;
        self.refill = wal.recovery_report().cut.as_ref().and_then(|cut| {
            let index = cut.first_discarded_index;
            let lost = self.model.candidates.get(&index)?.last().copied()?;
            Some((index, lost))
        });
        self.model.recovered(first, &entries);
        self.note(format!(
            "recovered [{first}, {last}] under {mode:?}, cut: {:?}",
            wal.recovery_report().cut.as_ref().map(|cut| cut.offset)
        ));
        // Reopening gives the same log: the first recovery left nothing for a second to change.
        drop(wal);
        self.storage.crash_keeping_everything();
        let wal = Wal::open(self.log_storage.clone(), self.config(mode))
            .await
            .map_err(|error| format!("the second open after recovery failed: {error}"))?;
        ensure!(
            (wal.first_index(), wal.last_index()) == (first, last),
            "reopening changed the log from [{first}, {last}] to [{}, {}]",
            wal.first_index(),
            wal.last_index()
        );
        let again = self.check_recovered(&wal).await?;
        ensure!(again == entries, "reopening changed the entries");
        self.storage.set_faults(self.faults.clone()).expect("valid");
        if self.rng.one_in(2) {
            return Ok(Handle::Plain(Box::new(wal)));
        }
        let config = BufferedWalConfig {
            flush_interval_ms: [0, 1, 5, 20][self.rng.below(4) as usize],
            max_buffered_entries: [2, 8, 4096][self.rng.below(3) as usize],
            max_buffered_bytes: [4096, 1 << 20][self.rng.below(2) as usize],
        };
        self.note(format!("buffered: {config:?}"));
        let buffered = BufferedWal::new(wal, config).map_err(|error| error.to_string())?;
        Ok(Handle::Buffered(buffered))
    }

    /// What a read-only open reports, which the real recovery must agree with. None when the
    /// mode refuses the log (checked again by the real open).
    async fn read_only_view(&mut self, mode: RecoveryMode) -> Check<Option<(u64, u64)>> {
        match Wal::open_read_only(self.log_storage.clone(), self.config(mode)).await {
            Ok(wal) => Ok(Some((wal.first_index(), wal.last_index()))),
            Err(WalError::Corrupt { .. }) if mode == RecoveryMode::AbsoluteConsistency => Ok(None),
            Err(error) => Err(format!("read-only open failed: {error}")),
        }
    }

    /// Opens the log after a crash, sometimes with I/O errors injected into recovery itself (a
    /// failed recovery must leave a log that the next one recovers correctly).
    /// Returns the log and the mode that opened it.
    async fn open_for_recovery(&mut self, mode: RecoveryMode) -> Check<(Log, RecoveryMode)> {
        if self.faults_on() && self.rng.one_in(3) {
            let recovery_faults = FaultConfig::none()
                .with_rate(FaultKind::ReadError, 0.05)
                .with_rate(FaultKind::OpenError, 0.05)
                .with_rate(FaultKind::ListError, 0.05);
            self.storage.set_faults(recovery_faults).expect("valid");
            let attempt = Wal::open(self.log_storage.clone(), self.config(mode)).await;
            self.storage.set_faults(FaultConfig::none()).expect("valid");
            match attempt {
                Ok(wal) => return Ok((wal, mode)),
                Err(WalError::Io { .. }) => {
                    self.note("recovery failed on an injected I/O error".into());
                    self.storage.crash_keeping_everything();
                }
                Err(WalError::Corrupt { .. }) if mode == RecoveryMode::AbsoluteConsistency => {}
                Err(error) => return Err(format!("recovery failed under faults: {error}")),
            }
        }
        match Wal::open(self.log_storage.clone(), self.config(mode)).await {
            Ok(wal) => Ok((wal, mode)),
            Err(WalError::Corrupt { .. }) if mode == RecoveryMode::AbsoluteConsistency => {
                // A torn tail is what a crash leaves; AbsoluteConsistency refuses it by design.
                self.note("AbsoluteConsistency refused the log; reopening tolerantly".into());
                let tolerant = RecoveryMode::TolerateTailCorruption;
                let wal = Wal::open(self.log_storage.clone(), self.config(tolerant))
                    .await
                    .map_err(|error| format!("recovery failed: {error}"))?;
                Ok((wal, tolerant))
            }
            Err(error) => Err(format!("recovery failed under {mode:?}: {error}")),
        }
    }

    /// Reads the whole recovered log and checks it against the model: acknowledged entries
    /// present and identical, nothing that was never appended or was ruled out, contiguous
    /// indexes, terms that never decrease, everything reported durable.
    async fn check_recovered(&mut self, wal: &Log) -> Check<Vec<(u64, Written)>> {
        let (first, last) = (wal.first_index(), wal.last_index());
        ensure!(
            wal.durable_index() == last,
            "after recovery the durable index is {} but the last index is {last}",
            wal.durable_index()
        );
        ensure!(
            first >= self.model.first_floor,
            "purged entries came back: the log starts at {first}, below {}",
            self.model.first_floor
        );
        if let Some((&lowest, _)) = self.model.acked.first_key_value() {
            ensure!(
                first <= lowest,
                "acknowledged entry {lowest} lost: the log starts at {first}"
            );
        }
        if let Some((&highest, _)) = self.model.acked.last_key_value() {
            ensure!(
                last >= highest,
                "acknowledged entries up to {highest} lost: the log ends at {last}"
            );
        }
        let mut found = Vec::new();
        let mut previous_term = 0;
        let mut index = first;
        while index <= last {
            let max_bytes = self.rng.between(1, 64 << 10) as usize;
            let chunk = wal
                .read_range(index, last + 1, max_bytes)
                .await
                .map_err(|error| format!("reading [{index}, {last}] failed: {error}"))?;
            ensure!(
                !chunk.is_empty(),
                "read_range from {index} returned nothing"
            );
            for entry in chunk {
                ensure!(
                    entry.index == index,
                    "read_range returned index {} where {index} was due",
                    entry.index
                );
                ensure!(
                    entry.term >= previous_term,
                    "term {} at index {index} follows term {previous_term}",
                    entry.term
                );
                previous_term = entry.term;
                found.push((index, self.identify(&entry)?));
                index += 1;
            }
        }
        Ok(found)
    }

    /// The model's entry that `entry` is, or why it cannot be one.
    fn identify(&self, entry: &Entry) -> Check<Written> {
        let index = entry.index;
        if let Some(acked) = self.model.acked.get(&index) {
            ensure!(
                acked.matches(index, entry),
                "acknowledged entry {index} came back different (term {} length {}, acknowledged \
                 term {} length {})",
                entry.term,
                entry.payload.len(),
                acked.term,
                acked.length
            );
            return Ok(*acked);
        }
        let candidates = self.model.candidates.get(&index);
        match candidates.and_then(|list| list.iter().find(|w| w.matches(index, entry))) {
            Some(written) => Ok(*written),
            None => Err(format!(
                "entry {index} (term {}, {} bytes) was never appended there, or was truncated, \
                 purged or cut before",
                entry.term,
                entry.payload.len()
            )),
        }
    }
}
