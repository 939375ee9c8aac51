//! Opening a log: validation of the configuration, the directory lock, recovery, and the
//! seal of a recovery cut.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::config::WalConfig;
use super::operation::Resources;
use super::{recovery, Wal};
use crate::error::{Poison, WalError, WalResult};
use crate::limits::{LOCK_MAX_RETRY_INTERVAL_MS, LOCK_RETRY_INTERVAL_MS, LOCK_WAIT_MS};
use crate::storage::{CheckedStorage, DirLock, Storage};

impl<S: Storage + Clone> Wal<S> {
    /// Opens (creating if needed) the log in `config.dir` and recovers it according to
    /// `config.recovery_mode`. Recovery syncs what it keeps, so every recovered entry is durable
    /// when this returns.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe in the sense of a crash: a dropped open leaves the directory as a process
    /// that died during recovery would (every step of recovery is crash safe), releases the
    /// lock, and the next open recovers again.
    pub async fn open(storage: S, config: WalConfig) -> WalResult<Self> {
        Self::open_with(storage, config, false).await
    }

    /// Opens the log for reading only: recovery changes nothing on disk (no cut is sealed, no
    /// file is removed or synced), and every write returns [`WalError::ReadOnly`]. Its
    /// [`Wal::recovery_report`] tells what a writable open would do. For inspection tools.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: it changes nothing on disk.
    pub async fn open_read_only(storage: S, config: WalConfig) -> WalResult<Self> {
        Self::open_with(storage, config, true).await
    }

    async fn open_with(storage: S, config: WalConfig, read_only: bool) -> WalResult<Self> {
        config.validate()?;
        // Every file the log opens refuses writes after a failed one, whatever the backend.
        let storage = CheckedStorage::new(storage);
        // One writer per directory: the lock is taken before recovery changes anything.
        let lock = if read_only {
            DirLock::none()
        } else {
            recovery::create_log_dir(&storage, &config.dir).await?;
            lock_patiently(&storage, &config.dir).await?
        };
        let recovered = recovery::recover(&storage, &config, read_only).await?;
        let mut wal = Wal {
            storage,
            segments: recovered.segments,
            terms: recovered.terms,
            next_index: recovered.next_index,
            durable_index: recovered.next_index - 1,
            log_start_index: recovered.log_start_index,
            unsynced: false,
            poison: Poison::new(),
            closed: false,
            report: recovered.report,
            resources: Resources {
                next_segment_id: recovered.next_segment_id,
                ..Resources::default()
            },
            in_flight: None,
            read_only,
            seal_pending: false,
            counters: Arc::default(),
            _lock: lock,
            dir: Arc::from(config.dir.as_path()),
            config,
        };
        if read_only {
            return Ok(wal);
        }
        if recovered.needs_new_segment {
            // Opening must not need free space: a full disk defers the seal to the first
            // write, which then fails cleanly until space returns. Until sealed, the cut data
            // stays on disk and every recovery cuts it again at the same place.
            wal.seal_pending = true;
            match wal.seal_cut().await {
                Ok(()) => {}
                Err(error) if error.io_kind() == Some(std::io::ErrorKind::StorageFull) => {}
                Err(error) => return Err(error),
            }
        }
        wal.prepare_spare();
        tracing::info!(
            dir = %wal.config.dir.display(),
            backend = wal.storage.name(),
            first_index = wal.first_index(),
            last_index = wal.last_index(),
            segments = wal.segments.len(),
            cut = ?wal.report.cut,
            "opened the log"
        );
        Ok(wal)
    }
}

/// Takes the directory lock, retrying for up to [`LOCK_WAIT_MS`] while it is held elsewhere:
/// a predecessor that just died may hold it until the kernel has finished its last writes.
async fn lock_patiently<S: Storage>(storage: &S, dir: &std::path::Path) -> WalResult<DirLock> {
    // Real time, and a pause on the blocking pool rather than a timer: opening a log needs no
    // time driver in the runtime, and a paused test clock cannot stretch the wait.
    let deadline = Instant::now() + Duration::from_millis(LOCK_WAIT_MS);
    // Short pauses first (a dead predecessor's lock comes free within milliseconds), longer
    // ones while it stays held.
    let mut pause = Duration::from_millis(LOCK_RETRY_INTERVAL_MS);
    loop {
        match storage.lock_dir(dir).await {
            Err(WalError::Locked { .. }) if Instant::now() < deadline => {
                // A join error means the runtime is shutting down: the next attempt decides.
                let _ = tokio::task::spawn_blocking(move || std::thread::sleep(pause)).await;
                pause = (pause * 2).min(Duration::from_millis(LOCK_MAX_RETRY_INTERVAL_MS));
            }
            other => return other,
        }
    }
}
