//! `SimulatedStorage`: an in-memory backend with a crash model and fault injection, for
//! deterministic simulation testing of the log.
//!
//! Everything random (which faults fire, what a crash keeps) comes from one seeded generator,
//! so the same seed and the same sequence of operations give the same outcome on any machine.
//!
//! # What a crash ([`SimulatedStorage::crash`]) can and cannot do
//!
//! It keeps exactly what the storage contract promises and nothing more:
//!
//! * Data made durable by a successful `sync` survives, byte for byte, with the size it had.
//! * Each write or `set_len` since the last sync of its file is settled in order: a write reaches
//!   the media whole, is lost whole, or is settled sector by sector
//!   ([`SIMULATED_SECTOR_SIZE_BYTES`](crate::constants::SIMULATED_SECTOR_SIZE_BYTES), aligned to
//!   file offsets), each sector kept, lost, or torn into a prefix of the new bytes, zeros, or
//!   garbage. Any subset survives, not only a prefix. A write past the durable end may leave the
//!   size extended with zeros where sectors were lost, or leave the size unextended.
//! * Each directory change (open creating a file, remove, rename, a directory made by
//!   `create_dir_all`) since the last `sync_dir` of the directory holding the entry may be
//!   undone, so a file can vanish or come back. Changes to the same name survive only in order,
//!   and a rename is one change: the file is found under exactly one of its two names.
//! * Handles opened before the crash fail every call with an I/O error; the log must reopen.
//!
//! A failed `sync` behaves as Linux does (fsyncgate): a random part of the dirty data reaches the
//! media, the rest is dropped and marked clean, so a retried sync succeeds without it. Handles do
//! not poison themselves: [`CheckedStorage`](crate::CheckedStorage), which the log wraps every
//! backend in, refuses writes after a failure. A handle only reports, on its next write, `set_len`
//! or sync, the failure of a write-class call whose future was dropped before it saw it.
//!
//! # Calls left in flight
//!
//! With [`SimulatedConfig::in_flight_rate`] above 0, any call but `lock_dir` may return
//! `Pending` and complete later, at a seeded point, whether or not its future is still there:
//! a caller that gives up on a write (a timeout, a `select!`) does not stop it, and it may land
//! after a later write to the same bytes, as an io_uring request or a blocking-pool pwrite does.
//! A crash first resolves every call in flight: a process crash completes them all, a power loss
//! completes or discards each one.

mod config;
mod errors;
mod file;
mod handle;
mod in_flight;
mod rng;
mod tree;

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use async_trait::async_trait;

pub use config::{
    CrashReport, FaultConfig, FaultCounters, FaultKind, NoSpaceScope, OneShotFault, SimulatedConfig,
};

use super::{DirLock, Storage, StorageFile};
use crate::error::{Poison, WalError, WalResult};
use handle::{Handle, Opened, SimulatedFile};
use in_flight::{Completion, CrashKind, InFlight};
pub use rng::SimRng;
use tree::{components, Node, NodeId, Tree};

/// The in-memory, deterministic, fault-injecting storage backend. Cloning gives another handle
/// to the same simulated machine, so a test can crash and inspect it while the log owns a clone.
#[derive(Clone)]
pub struct SimulatedStorage {
    shared: Arc<Mutex<State>>,
}

/// Everything behind the lock. It is a simulator: no lock is held across an await.
struct State {
    seed: u64,
    rng: SimRng,
    faults: FaultConfig,
    one_shots: Vec<OneShotFault>,
    counters: FaultCounters,
    capacity_bytes: Option<u64>,
    /// Incremented by every crash; handles from an older generation are stale.
    generation: u64,
    tree: Tree,
    /// Locked directories, with the generation that took the lock: a crash (a new generation)
    /// releases every lock, as the death of a process does.
    locks: std::collections::HashMap<PathBuf, u64>,
    /// Temporary file tags handed out, so names depend on the run, not on the process.
    tags: u64,
    /// Write alignment of files opened with `open_direct`, or 1 (see [`SimulatedConfig`]).
    write_alignment_bytes: u64,
    /// Chance that a call is left in flight (see [`SimulatedConfig::in_flight_rate`]).
    in_flight_rate: f64,
    /// The calls in flight, in submission order.
    in_flight: InFlight,
}

impl State {
    /// Decides whether an eligible operation of `kind` on `path` fails: a matching one-shot
    /// fault first (no randomness), then the configured rate.
    fn inject(&mut self, kind: FaultKind, path: &Path) -> bool {
        let fired = match self
            .one_shots
            .iter()
            .position(|shot| shot.matches(kind, path))
        {
            Some(position) => {
                self.one_shots[position].count -= 1;
                if self.one_shots[position].count == 0 {
                    self.one_shots.remove(position);
                }
                true
            }
            None => self.rng.chance(self.faults.rate(kind)),
        };
        if fired {
            self.counters.bump(kind);
            tracing::debug!(?kind, path = %path.display(), "simulated fault injected");
        }
        fired
    }

    fn file(&mut self, node: NodeId) -> &mut file::FileNode {
        self.tree
            .files
            .get_mut(&node)
            .expect("a live handle's file node exists")
    }

    fn restart(&mut self, report: CrashReport) -> CrashReport {
        self.tree.restart_from_durable();
        for file in self.tree.files.values_mut() {
            file.restart_from_durable();
        }
        self.generation += 1;
        self.counters.crashes += 1;
        report
    }
}

impl fmt::Debug for SimulatedStorage {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.lock();
        formatter
            .debug_struct("SimulatedStorage")
            .field("seed", &state.seed)
            .field("generation", &state.generation)
            .field("counters", &state.counters)
            .finish_non_exhaustive()
    }
}

impl SimulatedStorage {
    /// A fault-free simulated machine with unlimited capacity whose crashes follow `seed`.
    pub fn new(seed: u64) -> Self {
        Self::with_config(SimulatedConfig::new(seed)).expect("the default configuration is valid")
    }

    /// A simulated machine built from `config`, after validating it.
    pub fn with_config(config: SimulatedConfig) -> WalResult<Self> {
        config.validate()?;
        let state = State {
            seed: config.seed,
            rng: SimRng::new(config.seed),
            faults: config.faults,
            one_shots: Vec::new(),
            counters: FaultCounters::default(),
            capacity_bytes: config.capacity_bytes,
            generation: 0,
            tree: Tree::new(),
            locks: std::collections::HashMap::new(),
            tags: 0,
            write_alignment_bytes: config.write_alignment_bytes,
            in_flight_rate: config.in_flight_rate,
            in_flight: InFlight::default(),
        };
        Ok(Self {
            shared: Arc::new(Mutex::new(state)),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panicking test thread must not hide the state from the next assertion.
        self.shared.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The seed this machine was built with; print it to replay a failing run.
    pub fn seed(&self) -> u64 {
        self.lock().seed
    }

    /// Replaces the fault rates (after validating them). Tests turn faults off with
    /// `set_faults(FaultConfig::none())` before verifying.
    pub fn set_faults(&self, faults: FaultConfig) -> WalResult<()> {
        faults.validate()?;
        self.lock().faults = faults;
        Ok(())
    }

    /// The current fault rates.
    pub fn faults(&self) -> FaultConfig {
        self.lock().faults.clone()
    }

    /// Queues a one-shot fault. A `count` of 0 is ignored.
    pub fn inject(&self, fault: OneShotFault) {
        if fault.count > 0 {
            self.lock().one_shots.push(fault);
        }
    }

    /// Removes every queued one-shot fault that has not fired yet.
    pub fn clear_one_shots(&self) {
        self.lock().one_shots.clear();
    }

    /// Test setup outside the simulation: creates `dir` and its missing parents and makes them
    /// durable at once, as a directory that existed before the test would be.
    pub fn create_dir_all_durably(&self, dir: &Path) -> WalResult<()> {
        let names = components(dir);
        let mut state = self.lock();
        let mut create = || {
            state.tree.create_dir_all(&names)?;
            for depth in 0..names.len() {
                if let Some(parent) = state.tree.dir_for_sync(&names[..depth])? {
                    state.tree.sync_dir(parent, None);
                }
            }
            Ok(())
        };
        create().map_err(|source| WalError::io("create_dir_all", dir, source))
    }

    /// Sets the total capacity in bytes (`None`: unlimited). Existing data is kept even when it
    /// is above the new capacity; only later growth is refused.
    pub fn set_capacity_bytes(&self, capacity_bytes: Option<u64>) {
        self.lock().capacity_bytes = capacity_bytes;
    }

    /// Bytes held by the files currently linked in the namespace (what capacity counts).
    pub fn used_bytes(&self) -> u64 {
        self.lock().tree.used_bytes()
    }

    /// A snapshot of the injected-fault counters.
    pub fn counters(&self) -> FaultCounters {
        self.lock().counters
    }

    /// Number of crashes so far (the handle generation).
    pub fn crash_count(&self) -> u64 {
        self.lock().generation
    }

    /// Power loss: keeps what was synced, settles everything else at random (see the module
    /// docs), and makes every open handle stale. Returns what happened to the unsynced state.
    ///
    /// Each call in flight is first either applied (and then settled like any unsynced change)
    /// or discarded, at random and in a random order; its future returns a stale-handle error.
    pub fn crash(&self) -> CrashReport {
        let mut guard = self.lock();
        let state = &mut *guard;
        let in_flight = in_flight::resolve_at_crash(state, CrashKind::PowerLoss);
        let mut report = state.tree.crash(&mut state.rng);
        for file in state.tree.files.values_mut() {
            file.settle_randomly(&mut state.rng, &mut report);
        }
        (report.in_flight_applied, report.in_flight_discarded) = in_flight;
        state.restart(report)
    }

    /// Process crash: the kernel keeps every completed write and directory change, so reads
    /// see all of it, but nothing becomes more durable than it was (a later [`crash`] can still
    /// lose what was unsynced). Open handles become stale.
    ///
    /// The kernel also finishes every call in flight first, in a random order (a sync among
    /// them does make its file durable); their futures return a stale-handle error.
    ///
    /// [`crash`]: SimulatedStorage::crash
    pub fn crash_keeping_everything(&self) {
        let mut state = self.lock();
        in_flight::resolve_at_crash(&mut state, CrashKind::Process);
        state.generation += 1;
        state.counters.crashes += 1;
    }

    /// Power loss in its deterministic worst case: everything unsynced is lost, no tearing, and
    /// every call in flight is discarded (its future returns a stale-handle error).
    pub fn crash_losing_everything_unsynced(&self) -> CrashReport {
        let mut state = self.lock();
        let in_flight =
            in_flight::resolve_at_crash(&mut state, CrashKind::PowerLossLosingEverything);
        let mut report = state.tree.lose_pending();
        for file in state.tree.files.values_mut() {
            file.lose_pending(&mut report);
        }
        (report.in_flight_applied, report.in_flight_discarded) = in_flight;
        state.restart(report)
    }

    /// Replaces the chance that a call is left in flight (see
    /// [`SimulatedConfig::in_flight_rate`]), after validating it. Calls already in flight stay
    /// in flight and complete as before; 0 only stops new ones.
    pub fn set_in_flight_rate(&self, rate: f64) -> WalResult<()> {
        config::validate_in_flight_rate(rate)?;
        self.lock().in_flight_rate = rate;
        Ok(())
    }

    /// The current chance that a call is left in flight.
    pub fn in_flight_rate(&self) -> f64 {
        self.lock().in_flight_rate
    }

    /// Number of calls in flight now (submitted, not yet completed), whether or not anyone
    /// still awaits them.
    pub fn in_flight_count(&self) -> usize {
        self.lock().in_flight.len()
    }

    /// Completes every call in flight now, in a random order, as a kernel given time does;
    /// their futures see their results. Tests call it (after `set_in_flight_rate(0.0)`) to
    /// reach a quiet machine before they verify without crashing.
    pub fn complete_in_flight(&self) {
        in_flight::complete_all(&mut self.lock());
    }

    /// A hash of the whole simulated machine (namespace, contents volatile and durable, pending
    /// operations, calls in flight, counters, crash count). Equal fingerprints mean equal
    /// states; tests use it to prove determinism.
    pub fn fingerprint(&self) -> u64 {
        let state = self.lock();
        let mut hash = Fingerprint::new();
        for (id, dir) in &state.tree.dirs {
            hash.u64(*id);
            for entries in [&dir.volatile, &dir.durable] {
                hash.u64(entries.len() as u64);
                for (name, node) in entries {
                    hash.bytes(name.as_encoded_bytes());
                    match node {
                        Node::File(file) => hash.u64(file << 1),
                        Node::Dir(dir) => hash.u64((dir << 1) | 1),
                    }
                }
            }
        }
        for (id, file) in &state.tree.files {
            hash.u64(*id);
            hash.bytes(&file.volatile);
            hash.bytes(&file.durable);
            hash.u64(file.pending.len() as u64);
        }
        hash.u64(state.tree.pending_changes() as u64);
        hash.u64(state.in_flight.len() as u64);
        for (id, op, path) in state.in_flight.describe() {
            hash.u64(id);
            hash.bytes(op.as_bytes());
            hash.bytes(path.as_os_str().as_encoded_bytes());
        }
        hash.bytes(format!("{:?}", state.counters).as_bytes());
        hash.u64(state.generation);
        hash.finish()
    }

    /// Performs a namespace call on `path` (now or in flight), mapping its error to
    /// [`WalError::Io`]. `work` gets the machine and the path.
    fn namespace<T: Send + 'static>(
        &self,
        op: &'static str,
        path: &Path,
        work: impl FnOnce(&mut State, &Path) -> io::Result<T> + Send + 'static,
    ) -> Completion<T> {
        let owned = path.to_path_buf();
        in_flight::perform(
            self,
            op,
            path,
            move |state| work(state, &owned).map_err(|source| WalError::io(op, &owned, source)),
            None,
        )
    }
}

/// FNV-1a, 64 bits, with explicit little-endian lengths so it is the same on every machine.
struct Fingerprint(u64);

impl Fingerprint {
    fn new() -> Self {
        Self(0xCBF2_9CE4_8422_2325)
    }
    fn bytes(&mut self, bytes: &[u8]) {
        self.u64(bytes.len() as u64);
        for byte in bytes {
            self.0 = (self.0 ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01B3);
        }
    }
    fn u64(&mut self, value: u64) {
        for byte in value.to_le_bytes() {
            self.0 = (self.0 ^ u64::from(byte)).wrapping_mul(0x0100_0000_01B3);
        }
    }
    fn finish(&self) -> u64 {
        self.0
    }
}

#[async_trait]
impl Storage for SimulatedStorage {
    fn name(&self) -> &'static str {
        "simulated"
    }

    async fn open(&self, path: &Path) -> WalResult<Arc<dyn StorageFile>> {
        self.open_as(path, Opened::Buffered).await
    }

    /// Files opened this way behave as direct I/O files when
    /// [`SimulatedConfig::write_alignment_bytes`] is above 1.
    async fn open_direct(&self, path: &Path) -> WalResult<Arc<dyn StorageFile>> {
        self.open_as(path, Opened::Direct).await
    }

    async fn open_read_only(&self, path: &Path) -> WalResult<Arc<dyn StorageFile>> {
        self.open_as(path, Opened::ReadOnly).await
    }

    async fn exists(&self, path: &Path) -> WalResult<bool> {
        let names = components(path);
        self.namespace("stat", path, move |state, _| {
            Ok(state.tree.lookup(&names)?.is_some())
        })
        .await
    }

    async fn list(&self, dir: &Path) -> WalResult<Vec<PathBuf>> {
        let names = components(dir);
        self.namespace("list", dir, move |state, dir| {
            if state.inject(FaultKind::ListError, dir) {
                return Err(errors::input_output());
            }
            let entries = state.tree.list(&names)?;
            Ok(entries.iter().map(|name| dir.join(name)).collect())
        })
        .await
    }

    async fn is_dir(&self, path: &Path) -> WalResult<bool> {
        let names = components(path);
        self.namespace("stat", path, move |state, _| {
            Ok(matches!(state.tree.lookup(&names)?, Some(Node::Dir(_))))
        })
        .await
    }

    async fn remove(&self, path: &Path) -> WalResult<()> {
        let names = components(path);
        self.namespace("remove", path, move |state, path| {
            if state.inject(FaultKind::RemoveError, path) {
                return Err(errors::input_output());
            }
            state.tree.remove(&names)
        })
        .await
    }

    async fn rename(&self, from: &Path, to: &Path) -> WalResult<()> {
        let (from_names, to_names) = (components(from), components(to));
        self.namespace("rename", from, move |state, from| {
            if state.inject(FaultKind::RenameError, from) {
                return Err(errors::input_output());
            }
            state.tree.rename(&from_names, &to_names)
        })
        .await
    }

    async fn create_dir_all(&self, dir: &Path) -> WalResult<()> {
        let names = components(dir);
        self.namespace("create_dir_all", dir, move |state, _| {
            state.tree.create_dir_all(&names)
        })
        .await
    }

    async fn sync_dir(&self, dir: &Path) -> WalResult<()> {
        let names = components(dir);
        self.namespace("fsync directory", dir, move |state, dir| {
            let Some(node) = state.tree.dir_for_sync(&names)? else {
                return Ok(());
            };
            if state.inject(FaultKind::SyncDirError, dir) {
                // Like a failed file fsync: part of it reached the media, the rest never will.
                state.tree.sync_dir(node, Some(&mut state.rng));
                return Err(errors::input_output());
            }
            state.tree.sync_dir(node, None);
            Ok(())
        })
        .await
    }

    fn temporary_file_tag(&self) -> String {
        // A simulated machine runs one process: its id is 0 and the counter is the machine's.
        let mut state = self.lock();
        state.tags += 1;
        format!("{:08x}-{:08x}", 0, state.tags)
    }

    async fn lock_dir(&self, dir: &Path) -> WalResult<DirLock> {
        // Never left in flight: a lock must be held once this returns. It is still a call, so
        // it gives the calls in flight their chance to complete.
        let mut state = self.lock();
        in_flight::complete_some(&mut state);
        let generation = state.generation;
        if state.locks.get(dir) == Some(&generation) {
            return Err(WalError::Locked {
                dir: dir.to_path_buf(),
            });
        }
        state.locks.insert(dir.to_path_buf(), generation);
        Ok(DirLock::holding(SimulatedLock {
            shared: Arc::clone(&self.shared),
            dir: dir.to_path_buf(),
            generation,
        }))
    }
}

impl SimulatedStorage {
    /// Opens a handle; only a writable open creates a missing file.
    async fn open_as(&self, path: &Path, opened: Opened) -> WalResult<Arc<dyn StorageFile>> {
        let names = components(path);
        let (node, generation) = self
            .namespace("open", path, move |state, path| {
                if state.inject(FaultKind::OpenError, path) {
                    return Err(errors::input_output());
                }
                let node = match opened {
                    Opened::Buffered | Opened::Direct => state.tree.open_file(&names)?,
                    Opened::ReadOnly => match state.tree.lookup(&names)? {
                        Some(Node::File(node)) => node,
                        Some(Node::Dir(_)) => return Err(errors::is_a_directory()),
                        None => return Err(errors::not_found()),
                    },
                };
                Ok((node, state.generation))
            })
            .await?;
        Ok(Arc::new(SimulatedFile {
            storage: self.clone(),
            handle: Arc::new(Handle {
                path: path.to_path_buf(),
                node,
                generation,
                opened,
                abandoned_failure: Poison::new(),
            }),
        }))
    }
}

/// A simulated directory lock; dropping it releases the lock unless a crash already did.
struct SimulatedLock {
    shared: Arc<Mutex<State>>,
    dir: PathBuf,
    generation: u64,
}

impl Drop for SimulatedLock {
    fn drop(&mut self) {
        let mut state = self.shared.lock().unwrap_or_else(PoisonError::into_inner);
        if state.locks.get(&self.dir) == Some(&self.generation) {
            state.locks.remove(&self.dir);
        }
    }
}
