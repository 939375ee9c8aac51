//! `NaiveTokioStorage`: the historical baseline for benchmarks, not for production.
//!
//! It does what the original TokioStorage of the io_uring plan did: a `tokio::fs::File` behind a
//! `Mutex`, a seek before every read and write, `write_all`, then `sync_data` — three or four
//! hops onto tokio's blocking pool per durable append, all serialized by the lock. The
//! benchmarks compare every backend against it because the plan's "20-50% improvement" target
//! was stated against this design. Durability is the same as every backend's (a sync returns
//! only after fdatasync), and like every backend it refuses writes after a failure.

use std::io::SeekFrom;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};
use tokio::sync::Mutex;

use super::{Storage, StorageFile, TokioStorage};
use crate::error::{Poison, WalError, WalResult};

/// The plan's original tokio::fs design, kept as a benchmark baseline. Directory operations are
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
            .await
            .map_err(|source| WalError::io("open", path, source))?;
        Ok(Arc::new(NaiveFile {
            file: Mutex::new(file),
            path: path.to_path_buf(),
            poison: Poison::new(),
        }))
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

    async fn lock_dir(&self, dir: &Path) -> WalResult<super::DirLock> {
        self.directories.lock_dir(dir).await
    }
}

#[derive(Debug)]
struct NaiveFile {
    file: Mutex<tokio::fs::File>,
    path: PathBuf,
    poison: Poison,
}

impl NaiveFile {
    fn fail(&self, op: &'static str, source: std::io::Error) -> WalError {
        self.poison.poison(WalError::io(op, &self.path, source))
    }
}

#[async_trait]
impl StorageFile for NaiveFile {
    fn path(&self) -> &Path {
        &self.path
    }

    async fn write_at(&self, offset: u64, data: Bytes) -> WalResult<()> {
        self.poison.check()?;
        let mut file = self.file.lock().await;
        let written = async {
            file.seek(SeekFrom::Start(offset)).await?;
            file.write_all(&data).await?;
            file.flush().await
        }
        .await;
        written.map_err(|source| self.fail("write", source))
    }

    async fn read_at(&self, offset: u64, len: usize) -> WalResult<Bytes> {
        let mut file = self.file.lock().await;
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
        self.poison.check()?;
        let file = self.file.lock().await;
        let resized = file.set_len(len).await;
        resized.map_err(|source| self.fail("set_len", source))
    }

    async fn sync(&self) -> WalResult<()> {
        self.poison.check()?;
        let file = self.file.lock().await;
        let synced = file.sync_data().await;
        synced.map_err(|source| self.fail("fsync", source))
    }
}
