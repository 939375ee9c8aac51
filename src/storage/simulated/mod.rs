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
//! backend in, refuses writes after a failure.

mod config;
mod errors;
mod file;
mod rng;
mod tree;

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use async_trait::async_trait;
use bytes::Bytes;

pub use config::{
    CrashReport, FaultConfig, FaultCounters, FaultKind, NoSpaceScope, OneShotFault, SimulatedConfig,
};

use super::{DirLock, Storage, StorageFile};
use crate::error::{WalError, WalResult};
use crate::limits::SIMULATED_MAX_FILE_SIZE_BYTES;
use rng::SimRng;
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
        self.namespace("create_dir_all", dir, |state| {
            state.tree.create_dir_all(&names)?;
            for depth in 0..names.len() {
                if let Some(parent) = state.tree.dir_for_sync(&names[..depth])? {
                    state.tree.sync_dir(parent, None);
                }
            }
            Ok(())
        })
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
    pub fn crash(&self) -> CrashReport {
        let mut guard = self.lock();
        let state = &mut *guard;
        let mut report = state.tree.crash(&mut state.rng);
        for file in state.tree.files.values_mut() {
            file.settle_randomly(&mut state.rng, &mut report);
        }
        state.restart(report)
    }

    /// Process crash: the kernel keeps every completed write and directory change, so reads
    /// see all of it, but nothing becomes more durable than it was (a later [`crash`] can still
    /// lose what was unsynced). Open handles become stale.
    ///
    /// [`crash`]: SimulatedStorage::crash
    pub fn crash_keeping_everything(&self) {
        let mut state = self.lock();
        state.generation += 1;
        state.counters.crashes += 1;
    }

    /// Power loss in its deterministic worst case: everything unsynced is lost, no tearing.
    pub fn crash_losing_everything_unsynced(&self) -> CrashReport {
        let mut state = self.lock();
        let mut report = state.tree.lose_pending();
        for file in state.tree.files.values_mut() {
            file.lose_pending(&mut report);
        }
        state.restart(report)
    }

    /// A hash of the whole simulated machine (namespace, contents volatile and durable, pending
    /// operations, counters, crash count). Equal fingerprints mean equal states; tests use it to
    /// prove determinism.
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
        hash.bytes(format!("{:?}", state.counters).as_bytes());
        hash.u64(state.generation);
        hash.finish()
    }

    /// Runs a namespace operation under the lock, mapping its error to [`WalError::Io`].
    fn namespace<T>(
        &self,
        op: &'static str,
        path: &Path,
        work: impl FnOnce(&mut State) -> io::Result<T>,
    ) -> WalResult<T> {
        work(&mut self.lock()).map_err(|source| WalError::io(op, path, source))
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
        self.open_as(path, Opened::Buffered)
    }

    /// Files opened this way behave as direct I/O files when
    /// [`SimulatedConfig::write_alignment_bytes`] is above 1.
    async fn open_direct(&self, path: &Path) -> WalResult<Arc<dyn StorageFile>> {
        self.open_as(path, Opened::Direct)
    }

    async fn open_read_only(&self, path: &Path) -> WalResult<Arc<dyn StorageFile>> {
        self.open_as(path, Opened::ReadOnly)
    }

    async fn exists(&self, path: &Path) -> WalResult<bool> {
        let names = components(path);
        self.namespace("stat", path, |state| {
            Ok(state.tree.lookup(&names)?.is_some())
        })
    }

    async fn list(&self, dir: &Path) -> WalResult<Vec<PathBuf>> {
        let names = components(dir);
        let entries = self.namespace("list", dir, |state| {
            if state.inject(FaultKind::ListError, dir) {
                return Err(errors::input_output());
            }
            state.tree.list(&names)
        })?;
        Ok(entries.iter().map(|name| dir.join(name)).collect())
    }

    async fn is_dir(&self, path: &Path) -> WalResult<bool> {
        let names = components(path);
        self.namespace("stat", path, |state| {
            Ok(matches!(state.tree.lookup(&names)?, Some(Node::Dir(_))))
        })
    }

    async fn remove(&self, path: &Path) -> WalResult<()> {
        let names = components(path);
        self.namespace("remove", path, |state| {
            if state.inject(FaultKind::RemoveError, path) {
                return Err(errors::input_output());
            }
            state.tree.remove(&names)
        })
    }

    async fn rename(&self, from: &Path, to: &Path) -> WalResult<()> {
        let (from_names, to_names) = (components(from), components(to));
        self.namespace("rename", from, |state| {
            if state.inject(FaultKind::RenameError, from) {
                return Err(errors::input_output());
            }
            state.tree.rename(&from_names, &to_names)
        })
    }

    async fn create_dir_all(&self, dir: &Path) -> WalResult<()> {
        let names = components(dir);
        self.namespace("create_dir_all", dir, |state| {
            state.tree.create_dir_all(&names)
        })
    }

    async fn sync_dir(&self, dir: &Path) -> WalResult<()> {
        let names = components(dir);
        self.namespace("fsync directory", dir, |state| {
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
    }

    fn temporary_file_tag(&self) -> String {
        // A simulated machine runs one process: its id is 0 and the counter is the machine's.
        let mut state = self.lock();
        state.tags += 1;
        format!("{:08x}-{:08x}", 0, state.tags)
    }

    async fn lock_dir(&self, dir: &Path) -> WalResult<DirLock> {
        let mut state = self.lock();
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
    fn open_as(&self, path: &Path, opened: Opened) -> WalResult<Arc<dyn StorageFile>> {
        let names = components(path);
        let (node, generation) = self.namespace("open", path, |state| {
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
        })?;
        Ok(Arc::new(SimulatedFile {
            storage: self.clone(),
            path: path.to_path_buf(),
            node,
            generation,
            opened,
        }))
    }
}

/// How a handle was opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Opened {
    /// `open`: any write.
    Buffered,
    /// `open_direct`: the configured write alignment, and writes durable on return.
    Direct,
    /// `open_read_only`: writes fail with EBADF.
    ReadOnly,
}

/// A file handle of [`SimulatedStorage`], valid until the next crash.
#[derive(Debug)]
struct SimulatedFile {
    storage: SimulatedStorage,
    path: PathBuf,
    node: NodeId,
    generation: u64,
    opened: Opened,
}

impl SimulatedFile {
    /// Runs `work` under the lock if the handle is not stale.
    fn live<T>(
        &self,
        op: &'static str,
        work: impl FnOnce(&mut State) -> io::Result<T>,
    ) -> WalResult<T> {
        let mut state = self.storage.lock();
        if state.generation != self.generation {
            return Err(WalError::io(op, &self.path, errors::stale_handle()));
        }
        work(&mut state).map_err(|source| WalError::io(op, &self.path, source))
    }

    /// Runs a write-class operation (write, `set_len`, sync). It does not poison the handle:
    /// [`CheckedStorage`](crate::CheckedStorage) refuses writes after a failure, for every
    /// backend.
    fn mutate<T>(
        &self,
        op: &'static str,
        work: impl FnOnce(&mut State) -> io::Result<T>,
    ) -> WalResult<T> {
        if self.opened == Opened::ReadOnly {
            return Err(WalError::io(op, &self.path, errors::bad_descriptor()));
        }
        self.live(op, work)
    }

    /// The write alignment of this handle: the configured one if it was opened for direct I/O.
    fn alignment(&self, state: &State) -> u64 {
        match self.opened {
            Opened::Direct => state.write_alignment_bytes,
            Opened::Buffered | Opened::ReadOnly => 1,
        }
    }

    fn write_locked(&self, state: &mut State, offset: u64, data: Bytes) -> io::Result<()> {
        if data.is_empty() {
            return Ok(());
        }
        let length = data.len() as u64;
        let end = offset
            .checked_add(length)
            .filter(|end| *end <= SIMULATED_MAX_FILE_SIZE_BYTES)
            .ok_or_else(errors::file_too_large)?;
        let alignment = self.alignment(state);
        if offset % alignment != 0 || length % alignment != 0 {
            // As O_DIRECT does: a misaligned write is refused before anything is written.
            return Err(errors::invalid_input(
                "direct I/O write not aligned to the block size",
            ));
        }
        let current = state.file(self.node).volatile.len() as u64;
        if state.inject(FaultKind::WriteError, &self.path) {
            return Err(errors::input_output());
        }
        let no_space_eligible =
            end > current || state.faults.no_space_scope == NoSpaceScope::AllWrites;
        if no_space_eligible && state.inject(FaultKind::NoSpace, &self.path) {
            return Err(errors::no_space());
        }
        if let Some(capacity) = state.capacity_bytes {
            let growth = end.saturating_sub(current);
            let used = state.tree.used_bytes();
            if growth > 0 && used.saturating_add(growth) > capacity {
                // The OS writes what fits, then the continuation fails with ENOSPC.
                let room = capacity.saturating_sub(used);
                let fits = (current + room).saturating_sub(offset).min(length);
                state
                    .file(self.node)
                    .write(offset, data.slice(..fits as usize));
                state.counters.capacity_exhausted += 1;
                return Err(errors::no_space());
            }
        }
        if length >= 2 && state.inject(FaultKind::ShortWrite, &self.path) {
            let applied = 1 + state.rng.below(length - 1);
            state
                .file(self.node)
                .write(offset, data.slice(..applied as usize));
            return Err(errors::input_output());
        }
        let direct = alignment > 1;
        state.file(self.node).write(offset, data);
        if direct {
            // O_DSYNC: durable on return, and so is what was written before.
            state.file(self.node).sync();
        }
        Ok(())
    }

    fn sync_locked(&self, state: &mut State) -> io::Result<()> {
        if state.inject(FaultKind::SyncError, &self.path) {
            // fsyncgate: writeback failed part-way, and the kernel marks the rest clean.
            let file = state
                .tree
                .files
                .get_mut(&self.node)
                .expect("live file node");
            file.settle_randomly(&mut state.rng, &mut CrashReport::default());
            return Err(errors::input_output());
        }
        state.file(self.node).sync();
        Ok(())
    }
}

#[async_trait]
impl StorageFile for SimulatedFile {
    fn path(&self) -> &Path {
        &self.path
    }

    async fn write_at(&self, offset: u64, data: Bytes) -> WalResult<()> {
        self.mutate("write", |state| self.write_locked(state, offset, data))
    }

    fn write_alignment(&self) -> u64 {
        self.alignment(&self.storage.lock())
    }

    async fn evict_cache(&self) -> WalResult<()> {
        self.live("evict cache", |state| {
            // Like POSIX_FADV_DONTNEED: clean pages are dropped, so reads see the media
            // again; a file with unsynced writes keeps its dirty pages.
            let file = state.file(self.node);
            if file.pending.is_empty() {
                file.restart_from_durable();
            }
            Ok(())
        })
    }

    async fn read_at(&self, offset: u64, len: usize) -> WalResult<Bytes> {
        self.live("read", |state| {
            if state.inject(FaultKind::ReadError, &self.path) {
                return Err(errors::input_output());
            }
            let contents = &state.file(self.node).volatile;
            let start = usize::try_from(offset)
                .unwrap_or(usize::MAX)
                .min(contents.len());
            let end = start.saturating_add(len).min(contents.len());
            let mut data = contents[start..end].to_vec();
            if !data.is_empty() && state.inject(FaultKind::ReadBitFlip, &self.path) {
                let bit = state.rng.below(data.len() as u64 * 8) as usize;
                data[bit / 8] ^= 1 << (bit % 8);
            }
            Ok(Bytes::from(data))
        })
    }

    async fn size(&self) -> WalResult<u64> {
        self.live("stat", |state| {
            Ok(state.file(self.node).volatile.len() as u64)
        })
    }

    async fn set_len(&self, len: u64) -> WalResult<()> {
        self.mutate("set_len", |state| {
            if len > SIMULATED_MAX_FILE_SIZE_BYTES {
                return Err(errors::file_too_large());
            }
            if state.inject(FaultKind::WriteError, &self.path) {
                return Err(errors::input_output());
            }
            state.file(self.node).set_len(len);
            Ok(())
        })
    }

    async fn sync(&self) -> WalResult<()> {
        self.mutate("fsync", |state| self.sync_locked(state))
    }

    async fn write_at_and_sync(&self, offset: u64, data: Bytes) -> WalResult<()> {
        self.mutate("write+fsync", |state| {
            self.write_locked(state, offset, data)?;
            self.sync_locked(state)
        })
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
