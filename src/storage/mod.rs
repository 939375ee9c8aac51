//! The storage layer: the only way the log touches files.
//!
//! The log (entries, segments, recovery) talks to storage exclusively through [`Storage`] and
//! [`StorageFile`]; backends know nothing about entries. Every backend passes one conformance
//! suite (`helix_wal::conformance`, feature `test-support`).
//!
//! # The contract every backend keeps
//!
//! * **Durability.** Once [`StorageFile::sync`] returns `Ok`, every write to that file that
//!   *completed* before `sync` was *called* survives a crash (power loss included). Writes that
//!   had not completed, or were issued after the call, may or may not survive, wholly or in part
//!   (at sector granularity, in any subset). Creating, removing or renaming a file, and creating a
//!   directory with [`Storage::create_dir_all`], is durable only after [`Storage::sync_dir`] on
//!   the parent directory returns `Ok`.
//! * **Whole writes.** [`StorageFile::write_at`] writes all of `data` or returns an error; a
//!   short write by the OS is continued internally, never reported as success.
//! * **Any offset through `open`.** A file from [`Storage::open`] takes writes of any length at
//!   any offset. Only [`Storage::open_direct`] may return a file that demands aligned writes
//!   ([`StorageFile::write_alignment`] above 1).
//! * **Short reads only at the end.** [`StorageFile::read_at`] returns exactly `len` bytes, or
//!   fewer only when the file ends before `offset + len` (then it returns what exists, possibly
//!   nothing). It never returns fewer bytes for any other reason.
//! * **Errors are reported, never lost.** A failed write, `set_len` or sync returns its error to
//!   its caller. If the caller stopped waiting (dropped the future) and the backend still carried
//!   the call out, a failure of it must make the file's next write, `set_len` or sync fail
//!   (with [`WalError::Poisoned`](crate::WalError) naming it), since nobody else can see it.
//!   "Next" means started after the abandoned call finished: a sync started while an abandoned
//!   sync of the same file is still running may return before that failure is known (Linux
//!   reports a writeback error once per open file), so a caller that gives up on a sync and
//!   retries must not count on the retry alone. The log never does this: it abandons no storage
//!   call (a dropped log call's calls are finished by the next one, see `Wal`). Directory syncs
//!   have no such record: a failed `sync_dir` nobody waited for is lost, as the next one opens
//!   the directory anew; the log never abandons one either.
//! * **Errors poison writes**, kept by [`CheckedStorage`] for every backend: after a write,
//!   `set_len` or sync of a file fails, every later write, `set_len` and sync of that file returns
//!   [`WalError::Poisoned`](crate::WalError) naming the first failure. A failed fsync is never
//!   retried: the kernel may have dropped the dirty pages and marked them clean, so a retry could
//!   report success for lost data. Reads keep working. The log wraps whatever storage it is given
//!   in [`CheckedStorage`], so a backend need not poison its files itself.
//! * **Concurrency.** All methods take `&self` and may be called from many tasks at once.
//!   Writes to disjoint ranges do not interfere; the order of concurrent writes to overlapping
//!   ranges is unspecified.
//!
//! The methods on which safety depends ([`Storage::open_direct`], [`Storage::open_read_only`],
//! [`Storage::lock_dir`], [`StorageFile::evict_cache`], [`StorageFile::write_alignment`]) have
//! no default: a backend, and a wrapper around one, must say what it does for each.

use std::fmt::Debug;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;

use crate::error::WalResult;

mod blocking;
mod checked;
#[cfg(all(target_os = "linux", feature = "io-uring"))]
mod io_uring;
mod simulated;
mod tokio_storage;

pub use checked::{CheckedFile, CheckedStorage};
#[cfg(all(target_os = "linux", feature = "io-uring"))]
pub use io_uring::{
    limits as io_uring_limits, IoUringConfig, IoUringStats, IoUringWorkerStorage, TaskRun,
};
pub use simulated::{
    CrashReport, FaultConfig, FaultCounters, FaultKind, NoSpaceScope, OneShotFault, SimRng,
    SimulatedConfig, SimulatedStorage,
};
pub use tokio_storage::TokioStorage;

/// A file system as the log sees it. Object safe: the log holds `Arc<dyn Storage>` or a concrete
/// backend.
#[async_trait]
pub trait Storage: Send + Sync + Debug + 'static {
    /// A short, stable name of the backend for logs and reports, e.g. `"tokio"`.
    fn name(&self) -> &'static str;

    /// Opens the file at `path` for reading and writing, creating it empty if it does not exist.
    /// The creation is durable only after [`Storage::sync_dir`] of the parent. The file takes
    /// writes of any length at any offset ([`StorageFile::write_alignment`] is 1).
    async fn open(&self, path: &Path) -> WalResult<Arc<dyn StorageFile>>;

    /// Opens the file at `path` as [`Storage::open`] does, for a writer that writes it only in
    /// whole aligned blocks (the log's segments: their zero-filling, header and appends). The
    /// backend may open it for direct I/O (`O_DIRECT | O_DSYNC`): the file may then demand
    /// aligned writes ([`StorageFile::write_alignment`] above 1) and make each write durable
    /// when it completes. A backend without direct I/O returns what [`Storage::open`] returns.
    async fn open_direct(&self, path: &Path) -> WalResult<Arc<dyn StorageFile>>;

    /// Opens the existing file at `path` for reading only, for inspecting a log without changing
    /// it (a read-only mount included): it must not create the file nor need write permission.
    async fn open_read_only(&self, path: &Path) -> WalResult<Arc<dyn StorageFile>>;

    /// True if a file or directory exists at `path`.
    async fn exists(&self, path: &Path) -> WalResult<bool>;

    /// The entries of directory `dir` (files and subdirectories), as full paths sorted by file
    /// name. Fails if `dir` does not exist.
    async fn list(&self, dir: &Path) -> WalResult<Vec<PathBuf>>;

    /// True if `path` is a directory.
    async fn is_dir(&self, path: &Path) -> WalResult<bool>;

    /// Removes the file at `path`. Durable after [`Storage::sync_dir`] of the parent.
    async fn remove(&self, path: &Path) -> WalResult<()>;

    /// Renames `from` to `to`, replacing `to` if it exists. Atomic: after a crash the file
    /// is found under exactly one of the two names. Durable after [`Storage::sync_dir`].
    async fn rename(&self, from: &Path, to: &Path) -> WalResult<()>;

    /// Creates `dir` and its missing parents. Each new directory is durable only after
    /// [`Storage::sync_dir`] of its parent.
    async fn create_dir_all(&self, dir: &Path) -> WalResult<()>;

    /// Makes the creation, removal and renaming of entries of `dir` durable (fsync of the
    /// directory).
    async fn sync_dir(&self, dir: &Path) -> WalResult<()>;

    /// A tag no earlier call returned in this process, for naming temporary files
    /// (`PPPPPPPP-CCCCCCCC`: hex digits of the process id and of a counter), so that a file
    /// prepared by an abandoned log never shares a name with one a newer log prepares. The
    /// default uses the process id and a process-wide counter.
    fn temporary_file_tag(&self) -> String {
        static TAGS: AtomicU64 = AtomicU64::new(0);
        let tag = TAGS.fetch_add(1, Ordering::Relaxed);
        format!("{:08x}-{tag:08x}", std::process::id())
    }

    /// Takes an exclusive lock on the existing directory `dir`, held until the returned
    /// [`DirLock`] is dropped (or the process dies), so that two logs never write one directory.
    /// Fails with [`WalError::Locked`](crate::WalError) when it is held elsewhere. A backend
    /// that cannot lock returns [`DirLock::none`] and says so in its docs.
    async fn lock_dir(&self, dir: &Path) -> WalResult<DirLock>;
}

/// Name of the lock file a backend may keep in a log directory ([`Storage::lock_dir`]).
/// Recovery leaves a file of this name alone and does not report it as foreign, so a backend
/// that locks with a file in the directory uses this name.
pub const LOCK_FILE_NAME: &str = "LOCK";

/// An exclusive lock on a log directory, released when dropped.
pub struct DirLock {
    _guard: Option<Box<dyn Send + Sync>>,
}

impl DirLock {
    /// No lock at all (backends that cannot lock).
    pub fn none() -> Self {
        Self { _guard: None }
    }

    /// A lock released when `guard` is dropped.
    pub fn holding(guard: impl Send + Sync + 'static) -> Self {
        Self {
            _guard: Some(Box::new(guard)),
        }
    }

    /// False for [`DirLock::none`]: the backend took no lock.
    pub fn is_held(&self) -> bool {
        self._guard.is_some()
    }
}

impl std::fmt::Debug for DirLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DirLock")
            .field("held", &self._guard.is_some())
            .finish()
    }
}

/// An open file. Positional I/O only: there is no shared cursor.
#[async_trait]
pub trait StorageFile: Send + Sync + Debug + 'static {
    /// The path this file was opened with.
    fn path(&self) -> &Path;

    /// Writes all of `data` at byte `offset`, extending the file if needed. Not durable until
    /// [`StorageFile::sync`].
    async fn write_at(&self, offset: u64, data: Bytes) -> WalResult<()>;

    /// Reads up to `len` bytes at `offset`. Returns exactly `len` bytes unless the file ends
    /// first, in which case it returns the bytes up to the end (possibly none).
    async fn read_at(&self, offset: u64, len: usize) -> WalResult<Bytes>;

    /// The current size of the file in bytes.
    async fn size(&self) -> WalResult<u64>;

    /// Truncates or extends (with zeros) the file to `len` bytes. Durable after `sync`.
    async fn set_len(&self, len: u64) -> WalResult<()>;

    /// Makes every write that completed before this call durable (fdatasync semantics: data and
    /// the metadata needed to read it back, such as the file size).
    async fn sync(&self) -> WalResult<()>;

    /// Drops this file's clean pages from the OS page cache, so later reads come from the
    /// device. After a failed fsync, Linux marks the unwritten pages clean but keeps serving them
    /// from the cache; recovery syncs and then evicts the segment it appends to, so that it never
    /// counts as durable what only the cache still holds. Dirty pages are not dropped. A backend
    /// without a page cache does nothing.
    async fn evict_cache(&self) -> WalResult<()>;

    /// The alignment, in bytes, that every write's offset and length must have: 1 for none,
    /// always 1 for a file from [`Storage::open`]. A file from [`Storage::open_direct`] opened
    /// for direct I/O (`O_DIRECT | O_DSYNC`) demands whole blocks; the log then ends every
    /// commit on such a boundary with a padding record, so that no write ever rewrites a block
    /// holding records already durable. At most
    /// [`MAX_WRITE_ALIGNMENT_BYTES`](crate::constants::MAX_WRITE_ALIGNMENT_BYTES), a power of two.
    fn write_alignment(&self) -> u64;

    /// Writes `data` at `offset` and then syncs, as one operation. Returns `Ok` only after a
    /// successful sync that covers this write. Backends may do both in one step (io_uring links
    /// the write and the fsync).
    async fn write_at_and_sync(&self, offset: u64, data: Bytes) -> WalResult<()> {
        self.write_at(offset, data).await?;
        self.sync().await
    }
}

#[async_trait]
impl<S: Storage + ?Sized> Storage for Arc<S> {
    fn name(&self) -> &'static str {
        (**self).name()
    }
    async fn open(&self, path: &Path) -> WalResult<Arc<dyn StorageFile>> {
        (**self).open(path).await
    }
    async fn open_direct(&self, path: &Path) -> WalResult<Arc<dyn StorageFile>> {
        (**self).open_direct(path).await
    }
    async fn open_read_only(&self, path: &Path) -> WalResult<Arc<dyn StorageFile>> {
        (**self).open_read_only(path).await
    }
    async fn exists(&self, path: &Path) -> WalResult<bool> {
        (**self).exists(path).await
    }
    async fn list(&self, dir: &Path) -> WalResult<Vec<PathBuf>> {
        (**self).list(dir).await
    }
    async fn is_dir(&self, path: &Path) -> WalResult<bool> {
        (**self).is_dir(path).await
    }
    async fn remove(&self, path: &Path) -> WalResult<()> {
        (**self).remove(path).await
    }
    async fn rename(&self, from: &Path, to: &Path) -> WalResult<()> {
        (**self).rename(from, to).await
    }
    async fn create_dir_all(&self, dir: &Path) -> WalResult<()> {
        (**self).create_dir_all(dir).await
    }
    async fn sync_dir(&self, dir: &Path) -> WalResult<()> {
        (**self).sync_dir(dir).await
    }
    fn temporary_file_tag(&self) -> String {
        (**self).temporary_file_tag()
    }
    async fn lock_dir(&self, dir: &Path) -> WalResult<DirLock> {
        (**self).lock_dir(dir).await
    }
}

/// Options of [`create_storage_with`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct StorageOptions {
    /// Try the io_uring backend when it is compiled in (default `true`). `false` always picks
    /// [`TokioStorage`].
    pub prefer_io_uring: bool,
    /// Configuration of the io_uring backend.
    #[cfg(all(target_os = "linux", feature = "io-uring"))]
    pub io_uring: IoUringConfig,
}

impl Default for StorageOptions {
    fn default() -> Self {
        Self {
            prefer_io_uring: true,
            #[cfg(all(target_os = "linux", feature = "io-uring"))]
            io_uring: IoUringConfig::default(),
        }
    }
}

/// The backend [`create_storage_with`] chose, and why.
#[derive(Debug)]
#[non_exhaustive]
pub struct StorageChoice {
    /// The backend.
    pub storage: Arc<dyn Storage>,
    /// Its name ([`Storage::name`]): `"io_uring"` or `"tokio"`.
    pub backend: &'static str,
    /// Why io_uring was not chosen although it was compiled in and preferred (for example
    /// [`WalError::IoUringUnavailable`](crate::WalError) naming the cause and the fix).
    pub fallback_reason: Option<crate::WalError>,
}

/// Drops the clean cached pages of `file` (POSIX_FADV_DONTNEED on Linux; nothing elsewhere).
pub(crate) fn evict_file_cache(file: &std::fs::File) -> std::io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        rustix::fs::fadvise(file, 0, None, rustix::fs::Advice::DontNeed)?;
    }
    #[cfg(not(target_os = "linux"))]
    let _ = file;
    Ok(())
}

/// Creates the best storage backend available: the io_uring backend when the crate is built with
/// the `io-uring` feature on Linux and the kernel allows it, otherwise [`TokioStorage`]. When
/// io_uring is compiled in but unusable, a warning names the cause and the fix.
pub fn create_storage() -> Arc<dyn Storage> {
    create_storage_with(&StorageOptions::default()).storage
}

/// [`create_storage`] with options, reporting which backend it chose and why. Logs the choice
/// (info) and the reason for a fallback (warning, with the fix).
pub fn create_storage_with(options: &StorageOptions) -> StorageChoice {
    let fallback_reason = match try_io_uring(options) {
        Ok(storage) => {
            tracing::info!(backend = "io_uring", "using the io_uring storage backend");
            return StorageChoice {
                storage,
                backend: "io_uring",
                fallback_reason: None,
            };
        }
        Err(reason) => reason,
    };
    if let Some(reason) = &fallback_reason {
        tracing::warn!(
            backend = "tokio",
            reason = %reason,
            "io_uring is unavailable, falling back to the tokio::fs storage backend"
        );
    }
    tracing::info!(backend = "tokio", "using the tokio::fs storage backend");
    StorageChoice {
        storage: Arc::new(TokioStorage::new()),
        backend: "tokio",
        fallback_reason,
    }
}

/// The io_uring backend, or why not (`None` when it was not compiled in or not preferred).
#[cfg(all(target_os = "linux", feature = "io-uring"))]
fn try_io_uring(options: &StorageOptions) -> Result<Arc<dyn Storage>, Option<crate::WalError>> {
    if !options.prefer_io_uring {
        return Err(None);
    }
    match IoUringWorkerStorage::with_config(options.io_uring.clone()) {
        Ok(storage) => Ok(Arc::new(storage)),
        Err(error) => Err(Some(error)),
    }
}

#[cfg(not(all(target_os = "linux", feature = "io-uring")))]
fn try_io_uring(_options: &StorageOptions) -> Result<Arc<dyn Storage>, Option<crate::WalError>> {
    Err(None)
}
