//! The file type of the io_uring backend.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;

use super::aligned::AlignedBuffer;
use super::config::DIRECT_IO_ALIGNMENT_BYTES;
use super::shared::{Outcome, Owned, Request};
use super::sys;
use super::worker::Worker;
use crate::error::{Poison, WalError, WalResult};
use crate::storage::blocking::run_reporting_abandoned;
use crate::storage::StorageFile;

/// What an in-flight request keeps alive of its file: the descriptor (so it is never closed
/// and reused by another file while the kernel uses it), and the record of failures nobody
/// waited for.
#[derive(Debug)]
pub(crate) struct FileInner {
    /// The descriptor writes and syncs go through (opened `O_DIRECT | O_DSYNC` in direct I/O
    /// mode).
    pub(crate) file: File,
    /// In direct I/O mode, a buffered descriptor for reads (they need no alignment and are
    /// served by the page cache, which the kernel keeps coherent with direct writes).
    pub(crate) read_file: Option<File>,
    pub(crate) path: PathBuf,
    /// The first failure of a write or sync, recorded by the ring thread when it settles the
    /// request, before anybody can see it finished, so that the failure of a request whose
    /// caller stopped waiting is not lost (the storage contract: "Errors are reported, never
    /// lost"); or of a `set_len` whose caller stopped waiting, by its blocking task. Every
    /// later write, `set_len` and sync of the file fails with it. (`CheckedStorage` poisons on
    /// the failures callers receive too; a file outside it still reports them here.)
    pub(crate) poison: Poison,
}

impl FileInner {
    pub(crate) fn raw_fd(&self) -> i32 {
        self.file.as_raw_fd()
    }

    /// The descriptor reads go through.
    pub(crate) fn read_fd(&self) -> i32 {
        self.read_file.as_ref().unwrap_or(&self.file).as_raw_fd()
    }

    fn direct_io(&self) -> bool {
        self.read_file.is_some()
    }

    /// Records the failure of a call whose caller stopped waiting (see `poison`).
    fn record_abandoned_failure(&self, op: &'static str, source: io::Error) {
        drop(self.poison.poison(WalError::io(op, &self.path, source)));
    }
}

/// A file of [`IoUringWorkerStorage`](super::IoUringWorkerStorage). Reads, writes and syncs
/// go through the ring; `size` is an `fstat` on the calling thread and `set_len` an `ftruncate`
/// on tokio's blocking pool.
#[derive(Debug)]
pub(crate) struct IoUringFile {
    worker: Arc<Worker>,
    inner: Arc<FileInner>,
}

impl IoUringFile {
    /// A file whose writes go through `file`; `read_file` is the buffered descriptor of a file
    /// opened for direct I/O, `None` otherwise.
    pub(crate) fn new(
        worker: Arc<Worker>,
        file: File,
        read_file: Option<File>,
        path: PathBuf,
    ) -> IoUringFile {
        IoUringFile {
            worker,
            inner: Arc::new(FileInner {
                file,
                read_file,
                path,
                poison: Poison::new(),
            }),
        }
    }

    fn owned(&self) -> Owned {
        Owned {
            file: Some(Arc::clone(&self.inner)),
            ..Owned::default()
        }
    }

    /// Runs a request and turns a failure into `WalError::Io` naming `op` and the path.
    async fn run(&self, op: &'static str, request: Request) -> WalResult<Outcome> {
        let outcome = self.worker.shared.execute(request).await?;
        if outcome.result < 0 {
            return Err(self.io_error(op, -outcome.result));
        }
        Ok(outcome)
    }

    fn io_error(&self, op: &'static str, errno: i32) -> WalError {
        WalError::io(op, &self.inner.path, io::Error::from_raw_os_error(errno))
    }

    /// Runs a write-class request (write, sync), after reporting a failure the ring thread
    /// recorded for this file (it records every failed write or fsync before anybody can see
    /// it, so that of a request whose caller stopped waiting too; see `shared.rs`), if any.
    async fn mutate(&self, op: &'static str, mut request: Request) -> WalResult<()> {
        self.inner.poison.check()?;
        request.owned.operation = op;
        self.run(op, request).await.map(drop)
    }

    fn write_request(&self, opcode: u32, offset: u64, data: Bytes) -> Request {
        // Direct I/O reads the source straight from memory: it must start on a block boundary.
        let owned = if self.inner.direct_io() {
            Owned {
                aligned_data: Some(AlignedBuffer::copy_of(&data)),
                ..self.owned()
            }
        } else {
            Owned {
                write_data: Some(data),
                ..self.owned()
            }
        };
        Request {
            opcode,
            offset,
            owned,
        }
    }

    fn check_open(&self) -> WalResult<()> {
        if self.worker.shared.is_closed() {
            return Err(WalError::Shutdown {
                what: super::shared::SHUTDOWN_WHAT,
            });
        }
        Ok(())
    }
}

#[async_trait]
impl StorageFile for IoUringFile {
    fn path(&self) -> &Path {
        &self.inner.path
    }

    fn write_alignment(&self) -> u64 {
        if self.inner.direct_io() {
            u64::from(DIRECT_IO_ALIGNMENT_BYTES)
        } else {
            1
        }
    }

    async fn write_at(&self, offset: u64, data: Bytes) -> WalResult<()> {
        if data.is_empty() {
            self.check_open()?;
            return self.inner.poison.check();
        }
        let request = self.write_request(sys::HELIX_OP_WRITE, offset, data);
        self.mutate("write", request).await
    }

    async fn read_at(&self, offset: u64, len: usize) -> WalResult<Bytes> {
        self.check_open()?;
        // The allocation is bounded by the file's size, not by the caller's `len`.
        let size = self.size().await?;
        let available = usize::try_from(size.saturating_sub(offset)).unwrap_or(usize::MAX);
        let len = len.min(available);
        if len == 0 {
            return Ok(Bytes::new());
        }
        let request = Request {
            opcode: sys::HELIX_OP_READ,
            offset,
            owned: Owned {
                read_buffer: vec![0; len],
                ..self.owned()
            },
        };
        let outcome = self.run("read", request).await?;
        let mut buffer = outcome.owned.read_buffer;
        buffer.truncate(usize::try_from(outcome.done).unwrap_or(usize::MAX));
        Ok(Bytes::from(buffer))
    }

    async fn size(&self) -> WalResult<u64> {
        self.check_open()?;
        // fstat of an open file reads the in-memory inode; it does not wait for the disk.
        self.inner
            .file
            .metadata()
            .map(|metadata| metadata.len())
            .map_err(|source| WalError::io("stat", &self.inner.path, source))
    }

    async fn evict_cache(&self) -> WalResult<()> {
        self.check_open()?;
        crate::storage::evict_file_cache(&self.inner.file)
            .map_err(|source| WalError::io("evict cache", &self.inner.path, source))
    }

    async fn set_len(&self, len: u64) -> WalResult<()> {
        self.check_open()?;
        self.inner.poison.check()?;
        let (inner, record) = (Arc::clone(&self.inner), Arc::clone(&self.inner));
        run_reporting_abandoned(
            "set_len",
            &self.inner.path,
            move || inner.file.set_len(len),
            move |source| record.record_abandoned_failure("set_len", source),
        )
        .await
    }

    async fn sync(&self) -> WalResult<()> {
        let request = Request {
            opcode: sys::HELIX_OP_FSYNC,
            offset: 0,
            owned: self.owned(),
        };
        self.mutate("fsync", request).await
    }

    async fn write_at_and_sync(&self, offset: u64, data: Bytes) -> WalResult<()> {
        if data.is_empty() {
            return self.sync().await;
        }
        if self.inner.direct_io() {
            // O_DSYNC: the write is durable when it completes; no fsync is needed.
            let request = self.write_request(sys::HELIX_OP_WRITE, offset, data);
            return self.mutate("write (O_DSYNC)", request).await;
        }
        let request = self.write_request(sys::HELIX_OP_WRITE_FSYNC, offset, data);
        self.mutate("write+fsync", request).await
    }
}
