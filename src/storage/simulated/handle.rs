//! File handles of [`SimulatedStorage`]: what each call on an open file does to the machine.
//!
//! A call's effect runs under the machine's lock, either at once or, when the call is left in
//! flight, whenever the operation completes (see the `in_flight` module). The effect therefore
//! holds only what it needs ([`Handle`]: path, node, generation, how it was opened, failures
//! nobody saw), never the machine
//! itself, so an operation in flight never keeps its machine alive.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;

use super::in_flight::{self, Completion};
use super::tree::NodeId;
use super::{errors, CrashReport, FaultKind, NoSpaceScope, SimulatedStorage, State};
use crate::error::{Poison, WalError, WalResult};
use crate::limits::SIMULATED_MAX_FILE_SIZE_BYTES;
use crate::storage::StorageFile;

/// What an open file is, independent of the machine it lives on.
#[derive(Debug)]
pub(super) struct Handle {
    pub(super) path: PathBuf,
    pub(super) node: NodeId,
    /// The machine's generation when the file was opened; a crash makes the handle stale.
    pub(super) generation: u64,
    pub(super) opened: Opened,
    /// The first failure of a write-class call whose caller dropped its future before it saw
    /// it: every later write, `set_len` and sync of this handle fails with it, since nobody
    /// else saw it (the storage contract: "Errors are reported, never lost"). Failures a caller
    /// receives are not recorded: `CheckedStorage` poisons on those.
    pub(super) abandoned_failure: Poison,
}

/// How a handle was opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Opened {
    /// `open`: any write.
    Buffered,
    /// `open_direct`: the configured write alignment, and writes durable on return.
    Direct,
    /// `open_read_only`: writes fail with EBADF.
    ReadOnly,
}

/// A file handle of [`SimulatedStorage`], valid until the next crash.
#[derive(Debug)]
pub(super) struct SimulatedFile {
    pub(super) storage: SimulatedStorage,
    pub(super) handle: Arc<Handle>,
}

impl Handle {
    fn stale(&self, op: &'static str) -> WalError {
        WalError::io(op, &self.path, errors::stale_handle())
    }

    /// Runs `work` if the handle is not stale.
    fn live<T>(
        &self,
        state: &mut State,
        op: &'static str,
        work: impl FnOnce(&mut State) -> io::Result<T>,
    ) -> WalResult<T> {
        if state.generation != self.generation {
            return Err(self.stale(op));
        }
        work(state).map_err(|source| WalError::io(op, &self.path, source))
    }

    /// Runs a write-class operation (write, `set_len`, sync). It does not poison the handle:
    /// [`CheckedStorage`](crate::CheckedStorage) refuses writes after a failure, for every
    /// backend. A read-only handle refuses it with EBADF.
    fn mutate<T>(
        &self,
        state: &mut State,
        op: &'static str,
        work: impl FnOnce(&mut State) -> io::Result<T>,
    ) -> WalResult<T> {
        if self.opened == Opened::ReadOnly {
            return Err(WalError::io(op, &self.path, errors::bad_descriptor()));
        }
        if state.generation != self.generation {
            return Err(self.stale(op));
        }
        self.abandoned_failure.check()?;
        self.live(state, op, work)
    }

    /// The write alignment of this handle: the configured one if it was opened for direct I/O.
    fn alignment(&self, state: &State) -> u64 {
        match self.opened {
            Opened::Direct => state.write_alignment_bytes,
            Opened::Buffered | Opened::ReadOnly => 1,
        }
    }

    fn write(&self, state: &mut State, offset: u64, data: Bytes) -> io::Result<()> {
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

    fn sync(&self, state: &mut State) -> io::Result<()> {
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

    fn set_len(&self, state: &mut State, len: u64) -> io::Result<()> {
        if len > SIMULATED_MAX_FILE_SIZE_BYTES {
            return Err(errors::file_too_large());
        }
        if state.inject(FaultKind::WriteError, &self.path) {
            return Err(errors::input_output());
        }
        state.file(self.node).set_len(len);
        Ok(())
    }

    fn read(&self, state: &mut State, offset: u64, len: usize) -> io::Result<Bytes> {
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
    }

    fn evict_cache(&self, state: &mut State) -> io::Result<()> {
        // Like POSIX_FADV_DONTNEED: clean pages are dropped, so reads see the media again; a
        // file with unsynced writes keeps its dirty pages.
        let file = state.file(self.node);
        if file.pending.is_empty() {
            file.restart_from_durable();
        }
        Ok(())
    }
}

impl SimulatedFile {
    /// A call that only looks at the file (stale handles fail).
    fn inspect<T: Send + 'static>(
        &self,
        op: &'static str,
        work: impl FnOnce(&mut State, &Handle) -> io::Result<T> + Send + 'static,
    ) -> Completion<T> {
        let handle = Arc::clone(&self.handle);
        in_flight::perform(
            &self.storage,
            op,
            &self.handle.path,
            move |state| handle.live(state, op, |state| work(state, &handle)),
            None,
        )
    }

    /// A write-class call: refused on a read-only handle, and failing with the failure of an
    /// earlier one whose caller left before seeing it (it records such failures; it does not
    /// poison on the failures its callers receive).
    fn mutate<T: Send + 'static>(
        &self,
        op: &'static str,
        work: impl FnOnce(&mut State, &Handle) -> io::Result<T> + Send + 'static,
    ) -> Completion<T> {
        let handle = Arc::clone(&self.handle);
        let recorder = Arc::clone(&self.handle);
        let report: in_flight::Reporter = Box::new(move |error: WalError| {
            drop(recorder.abandoned_failure.poison(error));
        });
        in_flight::perform(
            &self.storage,
            op,
            &self.handle.path,
            move |state| handle.mutate(state, op, |state| work(state, &handle)),
            Some(report),
        )
    }
}

#[async_trait]
impl StorageFile for SimulatedFile {
    fn path(&self) -> &Path {
        &self.handle.path
    }

    async fn write_at(&self, offset: u64, data: Bytes) -> WalResult<()> {
        self.mutate("write", move |state, handle| {
            handle.write(state, offset, data)
        })
        .await
    }

    fn write_alignment(&self) -> u64 {
        self.handle.alignment(&self.storage.lock())
    }

    async fn evict_cache(&self) -> WalResult<()> {
        self.inspect("evict cache", |state, handle| handle.evict_cache(state))
            .await
    }

    async fn read_at(&self, offset: u64, len: usize) -> WalResult<Bytes> {
        self.inspect("read", move |state, handle| handle.read(state, offset, len))
            .await
    }

    async fn size(&self) -> WalResult<u64> {
        self.inspect("stat", |state, handle| {
            Ok(state.file(handle.node).volatile.len() as u64)
        })
        .await
    }

    async fn set_len(&self, len: u64) -> WalResult<()> {
        self.mutate("set_len", move |state, handle| handle.set_len(state, len))
            .await
    }

    async fn sync(&self) -> WalResult<()> {
        self.mutate("fsync", |state, handle| handle.sync(state))
            .await
    }

    async fn write_at_and_sync(&self, offset: u64, data: Bytes) -> WalResult<()> {
        self.mutate("write+fsync", move |state, handle| {
            handle.write(state, offset, data)?;
            handle.sync(state)
        })
        .await
    }
}
