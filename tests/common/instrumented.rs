//! A storage wrapper for tests: counts syncs and writes, fails or stalls them on demand, and
//! breaks them deliberately for the meta-tests, around any backend.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use helix_wal::{DirLock, Storage, StorageFile, WalError, WalResult};

/// Counters and switches shared by the wrapper and its files. Counters leave out files being
/// prepared (`*.tmp`), which the log zero-fills in the background.
#[derive(Debug, Default)]
pub struct Probe {
    /// File syncs, including the sync half of write_at_and_sync.
    pub syncs: AtomicU64,
    /// File writes, including the write half of write_at_and_sync.
    pub writes: AtomicU64,
    /// When set, every file sync fails with EIO (and the write half of write_at_and_sync
    /// still happens first).
    pub fail_syncs: AtomicBool,
    /// While set, directory syncs wait (until [`Probe::release_dir_syncs`]): with a timeout
    /// around the caller, this is a slow disk, or a process killed between a rename or removal
    /// and the directory sync.
    pub stall_dir_syncs: AtomicBool,
    /// While set, file writes (`write_at`, `write_at_and_sync`) of segments wait, like
    /// directory syncs under `stall_dir_syncs`.
    pub stall_writes: AtomicBool,
    /// Writes that found `stall_writes` set and waited.
    pub writes_stalled: AtomicU64,
    /// Directory syncs that found `stall_dir_syncs` set and waited.
    pub dir_syncs_stalled: AtomicU64,
    /// Wakes stalled directory syncs.
    released: tokio::sync::Notify,
    /// The deliberate bug of this storage, fixed when it is made.
    sabotage: Option<StorageSabotage>,
}

/// A deliberate bug at the storage boundary, for the meta-tests that prove a checker catches
/// it. The wrapper sits below the log's own `CheckedStorage` (which `Wal::open` adds), so the
/// log sees only what the broken storage reports. (The log's own deliberate bugs are
/// `helix_wal::sabotage`, feature `sabotage`.)
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StorageSabotage {
    /// File syncs return `Ok` without syncing; `write_at_and_sync` only writes.
    SkipFsync,
    /// Directory syncs return `Ok` without syncing.
    SkipDirSync,
    /// A failed file sync (or `write_at_and_sync`) is retried by one more sync, whose result
    /// is returned: after a failed fsync the kernel may have dropped the dirty pages and marked
    /// them clean, so the retry succeeds without making them durable (fsyncgate).
    RetryFailedFsync,
}

impl Probe {
    pub fn syncs(&self) -> u64 {
        self.syncs.load(Ordering::SeqCst)
    }
    pub fn writes(&self) -> u64 {
        self.writes.load(Ordering::SeqCst)
    }
    /// Lets stalled directory syncs, and later ones, go through.
    pub fn release_dir_syncs(&self) {
        self.stall_dir_syncs.store(false, Ordering::SeqCst);
        self.released.notify_waiters();
    }
    /// Lets stalled writes, and later ones, go through.
    pub fn release_writes(&self) {
        self.stall_writes.store(false, Ordering::SeqCst);
        self.released.notify_waiters();
    }
    /// Waits while `switch` is set, counting the wait in `stalled`.
    async fn stall(&self, switch: &AtomicBool, stalled: &AtomicU64) {
        let mut counted = false;
        loop {
            let released = self.released.notified();
            tokio::pin!(released);
            released.as_mut().enable();
            if !switch.load(Ordering::SeqCst) {
                return;
            }
            if !counted {
                counted = true;
                stalled.fetch_add(1, Ordering::SeqCst);
            }
            released.await;
        }
    }
}

/// Wraps a backend with a [`Probe`].
#[derive(Debug, Clone)]
pub struct Instrumented {
    pub inner: Arc<dyn Storage>,
    pub probe: Arc<Probe>,
}

impl Instrumented {
    pub fn new(inner: Arc<dyn Storage>) -> Self {
        Self {
            inner,
            probe: Arc::new(Probe::default()),
        }
    }

    /// Wraps `inner` with the deliberate bug `sabotage`.
    pub fn sabotaged(inner: Arc<dyn Storage>, sabotage: StorageSabotage) -> Self {
        let probe = Probe {
            sabotage: Some(sabotage),
            ..Probe::default()
        };
        Self {
            inner,
            probe: Arc::new(probe),
        }
    }

    fn wrap(&self, inner: Arc<dyn StorageFile>) -> Arc<dyn StorageFile> {
        Arc::new(InstrumentedFile {
            inner,
            probe: self.probe.clone(),
        })
    }
}

fn injected(path: &Path) -> WalError {
    WalError::Io {
        op: "fsync",
        path: path.to_path_buf(),
        source: std::io::Error::from_raw_os_error(5),
    }
}

#[async_trait]
impl Storage for Instrumented {
    fn name(&self) -> &'static str {
        "instrumented"
    }
    async fn open(&self, path: &Path) -> WalResult<Arc<dyn StorageFile>> {
        Ok(self.wrap(self.inner.open(path).await?))
    }
    async fn open_direct(&self, path: &Path) -> WalResult<Arc<dyn StorageFile>> {
        Ok(self.wrap(self.inner.open_direct(path).await?))
    }
    async fn open_read_only(&self, path: &Path) -> WalResult<Arc<dyn StorageFile>> {
        Ok(self.wrap(self.inner.open_read_only(path).await?))
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
        let probe = &self.probe;
        probe
            .stall(&probe.stall_dir_syncs, &probe.dir_syncs_stalled)
            .await;
        if probe.sabotage == Some(StorageSabotage::SkipDirSync) {
            return Ok(());
        }
        self.inner.sync_dir(dir).await
    }
    fn temporary_file_tag(&self) -> String {
        self.inner.temporary_file_tag()
    }
    async fn lock_dir(&self, dir: &Path) -> WalResult<DirLock> {
        self.inner.lock_dir(dir).await
    }
}

#[derive(Debug)]
struct InstrumentedFile {
    inner: Arc<dyn StorageFile>,
    probe: Arc<Probe>,
}

impl InstrumentedFile {
    /// Waits while `stall_writes` is set, for segment files (not files being prepared).
    async fn stall_segment_write(&self) {
        if !self.inner.path().to_string_lossy().ends_with(".tmp") {
            let probe = &self.probe;
            probe
                .stall(&probe.stall_writes, &probe.writes_stalled)
                .await;
        }
    }

    fn count(&self, counter: &AtomicU64) {
        let preparing = self.inner.path().to_string_lossy().ends_with(".tmp");
        if !preparing {
            counter.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// `result` of a sync-class call, retried by one more sync if it failed and the sabotage
    /// says so.
    async fn maybe_retried(&self, result: WalResult<()>) -> WalResult<()> {
        match result {
            Err(_) if self.probe.sabotage == Some(StorageSabotage::RetryFailedFsync) => {
                self.inner.sync().await
            }
            result => result,
        }
    }
}

#[async_trait]
impl StorageFile for InstrumentedFile {
    fn path(&self) -> &Path {
        self.inner.path()
    }
    fn write_alignment(&self) -> u64 {
        self.inner.write_alignment()
    }
    async fn write_at(&self, offset: u64, data: Bytes) -> WalResult<()> {
        self.stall_segment_write().await;
        self.count(&self.probe.writes);
        self.inner.write_at(offset, data).await
    }
    async fn read_at(&self, offset: u64, len: usize) -> WalResult<Bytes> {
        self.inner.read_at(offset, len).await
    }
    async fn size(&self) -> WalResult<u64> {
        self.inner.size().await
    }
    async fn set_len(&self, len: u64) -> WalResult<()> {
        self.inner.set_len(len).await
    }
    async fn evict_cache(&self) -> WalResult<()> {
        self.inner.evict_cache().await
    }
    async fn sync(&self) -> WalResult<()> {
        self.count(&self.probe.syncs);
        if self.probe.fail_syncs.load(Ordering::SeqCst) {
            return Err(injected(self.inner.path()));
        }
        if self.probe.sabotage == Some(StorageSabotage::SkipFsync) {
            return Ok(());
        }
        let result = self.inner.sync().await;
        self.maybe_retried(result).await
    }
    async fn write_at_and_sync(&self, offset: u64, data: Bytes) -> WalResult<()> {
        let split = self.probe.fail_syncs.load(Ordering::SeqCst)
            || self.probe.sabotage == Some(StorageSabotage::SkipFsync);
        if split {
            self.write_at(offset, data).await?;
            return self.sync().await;
        }
        self.stall_segment_write().await;
        self.count(&self.probe.writes);
        self.count(&self.probe.syncs);
        let result = self.inner.write_at_and_sync(offset, data).await;
        self.maybe_retried(result).await
    }
}
