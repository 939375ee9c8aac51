//! `NaiveTokioStorage`: the historical baseline for benchmarks, not for production.
//!
//! It does what a first, straightforward TokioStorage would do: a `tokio::fs::File` behind a
//! `Mutex`, a seek before every read and write, `write_all`, then `sync_data` — three or four
//! hops onto tokio's blocking pool per durable append, all serialized by the lock. The
//! benchmarks compare every backend against it because the io_uring backend's targets (a
//! 20-50% improvement) were first stated against this design. Durability is the same as every backend's (a sync returns
//! only after fdatasync). tokio::fs finishes a call whose future was dropped in the background
//! and may drop its error, so a write-class call abandoned before it completed makes every later
//! one fail: its outcome is unknown.
//!
//! Built on the library's public API only (it lives in the tool, not in the library), and held
//! to the same storage contract: the tests below run the library's conformance suite on it.

use std::io::SeekFrom;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use async_trait::async_trait;
use bytes::Bytes;
use helix_wal::{DirLock, Storage, StorageFile, TokioStorage, WalError, WalResult};
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};
use tokio::sync::Mutex;

/// The straightforward tokio::fs design, kept as a benchmark baseline. Directory operations are
/// delegated to [`TokioStorage`].
#[derive(Debug, Default, Clone)]
pub struct NaiveTokioStorage {
    directories: TokioStorage,
}

impl NaiveTokioStorage {
    /// A new baseline backend.
    pub fn new() -> Self {
        Self::default()
    }
}

#[async_trait]
impl Storage for NaiveTokioStorage {
    fn name(&self) -> &'static str {
        "naive-tokio-fs"
    }

    async fn open(&self, path: &Path) -> WalResult<Arc<dyn StorageFile>> {
        let file = tokio::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .await;
        NaiveFile::opened(path, file)
    }

    /// The same as [`Storage::open`]: this backend has no direct I/O.
    async fn open_direct(&self, path: &Path) -> WalResult<Arc<dyn StorageFile>> {
        self.open(path).await
    }

    async fn open_read_only(&self, path: &Path) -> WalResult<Arc<dyn StorageFile>> {
        // A read-only open(2) of a directory succeeds; a file of this backend is never one.
        if self.directories.is_dir(path).await? {
            return Err(WalError::io(
                "open",
                path,
                std::io::Error::new(std::io::ErrorKind::IsADirectory, "is a directory"),
            ));
        }
        NaiveFile::opened(path, tokio::fs::File::open(path).await)
    }

    async fn exists(&self, path: &Path) -> WalResult<bool> {
        self.directories.exists(path).await
    }

    async fn list(&self, dir: &Path) -> WalResult<Vec<PathBuf>> {
        self.directories.list(dir).await
    }

    async fn is_dir(&self, path: &Path) -> WalResult<bool> {
        self.directories.is_dir(path).await
    }

    async fn remove(&self, path: &Path) -> WalResult<()> {
        self.directories.remove(path).await
    }

    async fn rename(&self, from: &Path, to: &Path) -> WalResult<()> {
        self.directories.rename(from, to).await
    }

    async fn create_dir_all(&self, dir: &Path) -> WalResult<()> {
        self.directories.create_dir_all(dir).await
    }

    async fn sync_dir(&self, dir: &Path) -> WalResult<()> {
        self.directories.sync_dir(dir).await
    }

    async fn lock_dir(&self, dir: &Path) -> WalResult<DirLock> {
        self.directories.lock_dir(dir).await
    }
}

#[derive(Debug)]
struct NaiveFile {
    file: Mutex<tokio::fs::File>,
    path: PathBuf,
    /// Set, to the error it stands for, when a write-class call was abandoned before it
    /// completed.
    abandoned: OnceLock<Arc<WalError>>,
}

impl NaiveFile {
    /// The file `opened` at `path`, or the error of opening it.
    fn opened(
        path: &Path,
        opened: std::io::Result<tokio::fs::File>,
    ) -> WalResult<Arc<dyn StorageFile>> {
        Ok(Arc::new(NaiveFile {
            file: Mutex::new(opened.map_err(|source| WalError::io("open", path, source))?),
            path: path.to_path_buf(),
            abandoned: OnceLock::new(),
        }))
    }

    /// Runs a write-class call, which the caller starts once it holds the file's lock (a call
    /// given up while waiting for the lock submitted nothing): refused if an earlier one was
    /// abandoned before it completed, and marking the file so if this one is.
    async fn mutate(
        &self,
        op: &'static str,
        call: impl std::future::Future<Output = std::io::Result<()>>,
    ) -> WalResult<()> {
        if let Some(first_failure) = self.abandoned.get() {
            return Err(WalError::Poisoned {
                first_failure: Arc::clone(first_failure),
            });
        }
        let mut watch = AbandonWatch {
            file: self,
            op,
            completed: false,
        };
        let result = call.await;
        watch.completed = true;
        result.map_err(|source| WalError::io(op, &self.path, source))
    }
}

/// Marks its file when dropped before its call completed.
struct AbandonWatch<'a> {
    file: &'a NaiveFile,
    op: &'static str,
    completed: bool,
}

impl Drop for AbandonWatch<'_> {
    fn drop(&mut self) {
        if !self.completed {
            let unknown = std::io::Error::other(
                "abandoned before it completed; tokio::fs may have dropped its outcome",
            );
            let error = WalError::io(self.op, &self.file.path, unknown);
            // The first abandoned call is the one to name; a later one finds the file refused.
            let _ = self.file.abandoned.set(Arc::new(error));
        }
    }
}

#[async_trait]
impl StorageFile for NaiveFile {
    fn path(&self) -> &Path {
        &self.path
    }

    async fn write_at(&self, offset: u64, data: Bytes) -> WalResult<()> {
        let mut file = self.file.lock().await;
        self.mutate("write", async {
            file.seek(SeekFrom::Start(offset)).await?;
            file.write_all(&data).await?;
            file.flush().await
        })
        .await
    }

    async fn read_at(&self, offset: u64, len: usize) -> WalResult<Bytes> {
        let mut file = self.file.lock().await;
        if self.abandoned.get().is_some() {
            // tokio::fs hands the error of an abandoned seek to the next call that waits for
            // it: wait for it here, so that this read reports its own outcome.
            let _ = file.seek(SeekFrom::Current(0)).await;
        }
        let read = async {
            let size = file.metadata().await?.len();
            let len = len.min(size.saturating_sub(offset) as usize);
            file.seek(SeekFrom::Start(offset)).await?;
            let mut buffer = vec![0u8; len];
            let mut filled = 0;
            while filled < len {
                let count = file.read(&mut buffer[filled..]).await?;
                if count == 0 {
                    break;
                }
                filled += count;
            }
            buffer.truncate(filled);
            Ok(Bytes::from(buffer))
        }
        .await;
        read.map_err(|source| WalError::io("read", &self.path, source))
    }

    async fn size(&self) -> WalResult<u64> {
        let file = self.file.lock().await;
        let metadata = file.metadata().await;
        metadata
            .map(|metadata| metadata.len())
            .map_err(|source| WalError::io("stat", &self.path, source))
    }

    async fn set_len(&self, len: u64) -> WalResult<()> {
        let file = self.file.lock().await;
        self.mutate("set_len", file.set_len(len)).await
    }

    async fn sync(&self) -> WalResult<()> {
        let file = self.file.lock().await;
        self.mutate("fsync", file.sync_data()).await
    }

    async fn evict_cache(&self) -> WalResult<()> {
        let file = self.file.lock().await;
        let duplicate = file
            .try_clone()
            .await
            .map_err(|source| WalError::io("evict cache", &self.path, source))?
            .into_std()
            .await;
        let evicted = tokio::task::spawn_blocking(move || evict_file_cache(&duplicate)).await;
        evicted
            .unwrap_or_else(|join_error| {
                Err(std::io::Error::other(format!(
                    "blocking task failed: {join_error}"
                )))
            })
            .map_err(|source| WalError::io("evict cache", &self.path, source))
    }

    fn write_alignment(&self) -> u64 {
        1
    }
}

/// Drops the clean cached pages of `file` (POSIX_FADV_DONTNEED on Linux; nothing elsewhere).
fn evict_file_cache(file: &std::fs::File) -> std::io::Result<()> {
    #[cfg(target_os = "linux")]
    rustix::fs::fadvise(file, 0, None, rustix::fs::Advice::DontNeed)?;
    #[cfg(not(target_os = "linux"))]
    let _ = file;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use helix_wal::conformance::{run_all, Target};
    use helix_wal::Storage;

    use super::NaiveTokioStorage;

    // Proves the baseline keeps every clause of the storage contract, as the library's backends
    // do: runs every case of the library's conformance suite on it, in a fresh temporary
    // directory whose entry is durable.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn keeps_the_storage_contract() {
        let temporary = tempfile::tempdir().expect("create a temporary directory");
        let scratch = temporary.path().join("conformance");
        let storage = Arc::new(NaiveTokioStorage::new());
        storage.create_dir_all(&scratch).await.unwrap();
        storage.sync_dir(temporary.path()).await.unwrap();
        run_all(&Target::new(storage, scratch)).await;
    }
}
