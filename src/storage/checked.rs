//! `CheckedStorage`: the one place where files are poisoned.
//!
//! After a failed write, `set_len` or sync of a file, every later write, `set_len` and sync of
//! that file is refused with [`WalError::Poisoned`] naming the first failure; reads keep working.
//! Backends need not poison their own files: the log wraps whatever storage it is given in a
//! [`CheckedStorage`], so a backend written outside this crate gets the guarantee too. (The
//! `CheckedBackend` of redb is the model.) Backends only keep a record of the failures of calls
//! whose caller went away; the io_uring backend records every failed write and fsync, since its
//! ring thread cannot tell at completion whether the caller is still there.
//!
//! A wrapper above a call sees only the calls it waits for. A backend that carries out a call
//! whose caller stopped waiting reports a failure of it on the file's next write-class call (the
//! contract in the storage module docs); the error reaches this wrapper there and poisons the
//! file from then on.
//!
//! It also sees only what the storage below it reports: a storage that hides a failure (retries
//! a failed fsync and reports the retry's success, or skips a sync and reports `Ok`) breaks the
//! storage contract where no wrapper above can notice. The meta-tests put exactly such broken
//! storages below this wrapper to prove that the simulation and crash checkers catch them.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;

use super::{DirLock, Storage, StorageFile};
use crate::error::{Poison, WalError, WalResult};

/// Any backend, with files that refuse every write, `set_len` and sync after the first one that
/// failed (see the storage module docs, "Errors poison writes").
///
/// Every other call is forwarded unchanged. Wrapping twice is harmless. [`Wal::open`] wraps the
/// storage it is given, so a log never needs this explicitly; use it to give files the same
/// guarantee outside a log.
///
/// [`Wal::open`]: crate::Wal::open
#[derive(Debug, Clone)]
pub struct CheckedStorage<S> {
    inner: S,
}

impl<S: Storage> CheckedStorage<S> {
    /// Wraps `inner`.
    pub fn new(inner: S) -> Self {
        Self { inner }
    }

    /// The wrapped backend.
    pub fn inner(&self) -> &S {
        &self.inner
    }

    /// Unwraps the backend. Files opened through the wrapper keep their checks.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

#[async_trait]
impl<S: Storage> Storage for CheckedStorage<S> {
    fn name(&self) -> &'static str {
        self.inner.name()
    }
    async fn open(&self, path: &Path) -> WalResult<Arc<dyn StorageFile>> {
        Ok(CheckedFile::wrap(self.inner.open(path).await?))
    }
    async fn open_direct(&self, path: &Path) -> WalResult<Arc<dyn StorageFile>> {
        Ok(CheckedFile::wrap(self.inner.open_direct(path).await?))
    }
    async fn open_read_only(&self, path: &Path) -> WalResult<Arc<dyn StorageFile>> {
        Ok(CheckedFile::wrap(self.inner.open_read_only(path).await?))
    }
    async fn exists(&self, path: &Path) -> WalResult<bool> {
        self.inner.exists(path).await
    }
    async fn list(&self, dir: &Path) -> WalResult<Vec<PathBuf>> {
        self.inner.list(dir).await
    }
    async fn is_dir(&self, path: &Path) -> WalResult<bool> {
        self.inner.is_dir(path).await
    }
    async fn remove(&self, path: &Path) -> WalResult<()> {
        self.inner.remove(path).await
    }
    async fn rename(&self, from: &Path, to: &Path) -> WalResult<()> {
        self.inner.rename(from, to).await
    }
    async fn create_dir_all(&self, dir: &Path) -> WalResult<()> {
        self.inner.create_dir_all(dir).await
    }
    async fn sync_dir(&self, dir: &Path) -> WalResult<()> {
        self.inner.sync_dir(dir).await
    }
    fn temporary_file_tag(&self) -> String {
        self.inner.temporary_file_tag()
    }
    async fn lock_dir(&self, dir: &Path) -> WalResult<DirLock> {
        self.inner.lock_dir(dir).await
    }
}

/// A file of [`CheckedStorage`]: the wrapped file, refusing every write, `set_len` and sync
/// after the first one that failed.
#[derive(Debug)]
pub struct CheckedFile {
    inner: Arc<dyn StorageFile>,
    poison: Poison,
}

impl CheckedFile {
    /// Wraps `inner`, unpoisoned.
    pub fn new(inner: Arc<dyn StorageFile>) -> Self {
        Self {
            inner,
            poison: Poison::new(),
        }
    }

    fn wrap(inner: Arc<dyn StorageFile>) -> Arc<dyn StorageFile> {
        Arc::new(Self::new(inner))
    }

    /// True once a write, `set_len` or sync of this file failed.
    pub fn is_poisoned(&self) -> bool {
        self.poison.is_poisoned()
    }

    /// Runs a write-class call: refused when poisoned, poisoning on failure. A shutdown of the
    /// backend is not a failure of the file (the call never reached it), so it does not poison.
    async fn mutate(
        &self,
        call: impl std::future::Future<Output = WalResult<()>>,
    ) -> WalResult<()> {
        self.poison.check()?;
        match call.await {
            Err(error @ WalError::Shutdown { .. }) => Err(error),
            Err(error) => Err(self.poison.poison(error)),
            Ok(()) => Ok(()),
        }
    }
}

#[async_trait]
impl StorageFile for CheckedFile {
    fn path(&self) -> &Path {
        self.inner.path()
    }
    async fn write_at(&self, offset: u64, data: Bytes) -> WalResult<()> {
        self.mutate(self.inner.write_at(offset, data)).await
    }
    async fn read_at(&self, offset: u64, len: usize) -> WalResult<Bytes> {
        self.inner.read_at(offset, len).await
    }
    async fn size(&self) -> WalResult<u64> {
        self.inner.size().await
    }
    async fn set_len(&self, len: u64) -> WalResult<()> {
        self.mutate(self.inner.set_len(len)).await
    }
    async fn sync(&self) -> WalResult<()> {
        self.mutate(self.inner.sync()).await
    }
    async fn evict_cache(&self) -> WalResult<()> {
        self.inner.evict_cache().await
    }
    fn write_alignment(&self) -> u64 {
        self.inner.write_alignment()
    }
    async fn write_at_and_sync(&self, offset: u64, data: Bytes) -> WalResult<()> {
        self.mutate(self.inner.write_at_and_sync(offset, data))
            .await
    }
}
