//! `TokioStorage`: the portable backend.
//!
//! Every operation is one hop onto tokio's blocking pool running positional `pwrite`/`pread`
//! (`FileExt::write_all_at` / `read_at`), so there is no shared seek cursor and no lock around
//! the file. `write_at_and_sync` writes and fdatasyncs in the same hop. Nothing is buffered in
//! user space: tokio::fs::File keeps an internal write buffer that it drops on a write error
//! while a later `sync_all` reports success, so this backend does not use it.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;

use super::blocking::{run as blocking, run_reporting_abandoned};
use super::{DirLock, Storage, StorageFile, LOCK_FILE_NAME};
use crate::error::{Poison, WalError, WalResult};

/// The portable storage backend on tokio's blocking thread pool.
#[derive(Debug, Default, Clone)]
pub struct TokioStorage {
    _private: (),
}

impl TokioStorage {
    /// A new backend. It holds no resources: files are opened on demand.
    pub fn new() -> Self {
        Self::default()
    }

    /// Opens `path` for reading and, when `writable`, for writing (creating it if missing).
    async fn open_with(&self, path: &Path, writable: bool) -> WalResult<Arc<dyn StorageFile>> {
        let owned = path.to_path_buf();
        let file = blocking("open", path, move || {
            std::fs::OpenOptions::new()
                .read(true)
                .write(writable)
                .create(writable)
                .truncate(false)
                .open(&owned)
        })
        .await?;
        if file
            .metadata()
            .map_err(|source| WalError::io("stat", path, source))?
            .is_dir()
        {
            return Err(WalError::io(
                "open",
                path,
                io::Error::new(io::ErrorKind::IsADirectory, "is a directory"),
            ));
        }
        Ok(Arc::new(TokioFile {
            inner: Arc::new(FileInner {
                file,
                path: path.to_path_buf(),
                abandoned_failure: Poison::new(),
            }),
        }))
    }
}

#[async_trait]
impl Storage for TokioStorage {
    fn name(&self) -> &'static str {
        "tokio"
    }

    async fn open(&self, path: &Path) -> WalResult<Arc<dyn StorageFile>> {
        self.open_with(path, true).await
    }

    /// The same as [`Storage::open`]: this backend has no direct I/O.
    async fn open_direct(&self, path: &Path) -> WalResult<Arc<dyn StorageFile>> {
        self.open_with(path, true).await
    }

    async fn open_read_only(&self, path: &Path) -> WalResult<Arc<dyn StorageFile>> {
        self.open_with(path, false).await
    }

    async fn exists(&self, path: &Path) -> WalResult<bool> {
        let owned = path.to_path_buf();
        blocking("stat", path, move || owned.try_exists()).await
    }

    async fn list(&self, dir: &Path) -> WalResult<Vec<PathBuf>> {
        let owned = dir.to_path_buf();
        blocking("list", dir, move || {
            let mut entries = Vec::new();
            for entry in std::fs::read_dir(&owned)? {
                entries.push(entry?.path());
            }
            entries.sort_by(|a, b| a.file_name().cmp(&b.file_name()));
            Ok(entries)
        })
        .await
    }

    async fn is_dir(&self, path: &Path) -> WalResult<bool> {
        let owned = path.to_path_buf();
        blocking("stat", path, move || match std::fs::metadata(&owned) {
            Ok(metadata) => Ok(metadata.is_dir()),
            Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(error) => Err(error),
        })
        .await
    }

    async fn remove(&self, path: &Path) -> WalResult<()> {
        let owned = path.to_path_buf();
        blocking("remove", path, move || std::fs::remove_file(&owned)).await
    }

    async fn rename(&self, from: &Path, to: &Path) -> WalResult<()> {
        let (source, target) = (from.to_path_buf(), to.to_path_buf());
        blocking("rename", from, move || std::fs::rename(&source, &target)).await
    }

    async fn create_dir_all(&self, dir: &Path) -> WalResult<()> {
        let owned = dir.to_path_buf();
        blocking("create_dir_all", dir, move || {
            std::fs::create_dir_all(&owned)
        })
        .await
    }

    async fn sync_dir(&self, dir: &Path) -> WalResult<()> {
        let owned = dir.to_path_buf();
        blocking("fsync directory", dir, move || sync_directory(&owned)).await
    }

    async fn lock_dir(&self, dir: &Path) -> WalResult<DirLock> {
        // The lock lives as long as the open file.
        Ok(DirLock::holding(self.lock_file(dir).await?))
    }
}

impl TokioStorage {
    /// Opens (creating it if needed) the lock file of `dir` and takes its exclusive `flock`,
    /// held until the returned file is closed (or the process dies).
    pub(crate) async fn lock_file(&self, dir: &Path) -> WalResult<File> {
        let path = dir.join(LOCK_FILE_NAME);
        let owned = path.clone();
        let file = blocking("lock", &path, move || {
            std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(&owned)
        })
        .await?;
        lock_exclusively(&file).map_err(|source| {
            if source.kind() == io::ErrorKind::WouldBlock {
                WalError::Locked {
                    dir: dir.to_path_buf(),
                }
            } else {
                WalError::io("lock", &path, source)
            }
        })?;
        Ok(file)
    }
}

/// flock(LOCK_EX | LOCK_NB): released when the file is closed, also when the process dies.
#[cfg(target_os = "linux")]
fn lock_exclusively(file: &File) -> io::Result<()> {
    rustix::fs::flock(file, rustix::fs::FlockOperation::NonBlockingLockExclusive)?;
    Ok(())
}

#[cfg(not(target_os = "linux"))]
fn lock_exclusively(_file: &File) -> io::Result<()> {
    Ok(())
}

#[cfg(unix)]
fn sync_directory(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(not(unix))]
fn sync_directory(_dir: &Path) -> io::Result<()> {
    // Windows has no directory fsync; NTFS journals metadata operations itself.
    Ok(())
}

/// A file of [`TokioStorage`]: what calls on the blocking pool share, behind one `Arc`.
#[derive(Debug)]
struct TokioFile {
    inner: Arc<FileInner>,
}

#[derive(Debug)]
struct FileInner {
    file: File,
    path: PathBuf,
    /// The first failure of a write-class call whose caller stopped waiting: it fails every
    /// later write-class call, since nobody else saw it.
    abandoned_failure: Poison,
}

impl TokioFile {
    /// Runs a write-class operation (write, set_len, sync), after reporting the failure of one
    /// whose caller stopped waiting, if any.
    async fn mutate<T, F>(&self, op: &'static str, work: F) -> WalResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&File) -> io::Result<T> + Send + 'static,
    {
        self.inner.abandoned_failure.check()?;
        let (inner, record) = (Arc::clone(&self.inner), Arc::clone(&self.inner));
        let record_failure = move |source| {
            let error = WalError::io(op, &record.path, source);
            drop(record.abandoned_failure.poison(error));
        };
        run_reporting_abandoned(
            op,
            &self.inner.path,
            move || work(&inner.file),
            record_failure,
        )
        .await
    }

    /// Runs a call whose failure only its caller acts on (reads, stat, cache eviction).
    async fn read_class<T, F>(&self, op: &'static str, work: F) -> WalResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&File) -> io::Result<T> + Send + 'static,
    {
        let inner = Arc::clone(&self.inner);
        blocking(op, &self.inner.path, move || work(&inner.file)).await
    }
}

#[async_trait]
impl StorageFile for TokioFile {
    fn path(&self) -> &Path {
        &self.inner.path
    }

    async fn write_at(&self, offset: u64, data: Bytes) -> WalResult<()> {
        self.mutate("write", move |file| write_all_at(file, &data, offset))
            .await
    }

    async fn read_at(&self, offset: u64, len: usize) -> WalResult<Bytes> {
        self.read_class("read", move |file| read_up_to(file, offset, len))
            .await
    }

    async fn size(&self) -> WalResult<u64> {
        self.read_class("stat", |file| Ok(file.metadata()?.len()))
            .await
    }

    async fn set_len(&self, len: u64) -> WalResult<()> {
        self.mutate("set_len", move |file| file.set_len(len)).await
    }

    async fn sync(&self) -> WalResult<()> {
        self.mutate("fsync", |file| file.sync_data()).await
    }

    fn write_alignment(&self) -> u64 {
        1
    }

    async fn evict_cache(&self) -> WalResult<()> {
        self.read_class("evict cache", super::evict_file_cache)
            .await
    }

    async fn write_at_and_sync(&self, offset: u64, data: Bytes) -> WalResult<()> {
        self.mutate("write+fsync", move |file| {
            write_all_at(file, &data, offset)?;
            file.sync_data()
        })
        .await
    }
}

#[cfg(unix)]
fn write_all_at(file: &File, data: &[u8], offset: u64) -> io::Result<()> {
    use std::os::unix::fs::FileExt;
    file.write_all_at(data, offset)
}

#[cfg(windows)]
fn write_all_at(file: &File, mut data: &[u8], mut offset: u64) -> io::Result<()> {
    use std::os::windows::fs::FileExt;
    while !data.is_empty() {
        match file.seek_write(data, offset) {
            Ok(0) => return Err(io::Error::from(io::ErrorKind::WriteZero)),
            Ok(written) => {
                data = &data[written..];
                offset += written as u64;
            }
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
            Err(error) => return Err(error),
        }
    }
    Ok(())
}

#[cfg(unix)]
fn read_once(file: &File, buffer: &mut [u8], offset: u64) -> io::Result<usize> {
    use std::os::unix::fs::FileExt;
    file.read_at(buffer, offset)
}

#[cfg(windows)]
fn read_once(file: &File, buffer: &mut [u8], offset: u64) -> io::Result<usize> {
    use std::os::windows::fs::FileExt;
    file.seek_read(buffer, offset)
}

/// Reads `len` bytes at `offset`, fewer only at end of file.
/// The allocation is bounded by the file's size, not by the caller's `len`.
fn read_up_to(file: &File, offset: u64, len: usize) -> io::Result<Bytes> {
    let available = file.metadata()?.len().saturating_sub(offset);
    let len = len.min(usize::try_from(available).unwrap_or(usize::MAX));
    let mut buffer = vec![0u8; len];
    let mut filled = 0;
    while filled < len {
        match read_once(file, &mut buffer[filled..], offset + filled as u64) {
            Ok(0) => break,
            Ok(read) => filled += read,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
            Err(error) => return Err(error),
        }
    }
    buffer.truncate(filled);
    Ok(Bytes::from(buffer))
}
