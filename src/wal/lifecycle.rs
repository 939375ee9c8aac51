//! The segment lifecycle: truncation, purge and reset, close, the seal of a recovery cut, and
//! the spare segment prepared ahead of rotation.

use std::path::PathBuf;

use super::segment::prepare_segment_file;
use super::Wal;
use crate::error::{WalError, WalResult};
use crate::limits::MAX_LOG_INDEX;
use crate::storage::{DirLock, Storage};

impl<S: Storage + Clone> Wal<S> {
    /// Removes every entry after `index`, durably: when this returns, no crash can bring them
    /// back. `index` may be `first_index() - 1` (empties the log); a no-op when `index >=
    /// last_index()`.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe. A dropped truncation is finished by the next call that changes the log
    /// (whatever state its storage calls reached), so an append that follows it can never be
    /// acknowledged on top of a truncation that memory has not seen: an append continuing the
    /// old end fails with [`WalError::NonContiguousIndex`] once the truncation has taken
    /// effect. Until then the log reports the entries it had before the call.
    pub async fn truncate_after(&mut self, index: u64) -> WalResult<()> {
        self.settle_and_check().await?;
        self.prepare_write().await?;
        if index >= self.last_index() {
            return Ok(());
        }
        if index + 1 < self.first_index() {
            return Err(WalError::InvalidArgument(format!(
                "cannot truncate after {index}: entries below the first index {} were purged",
                self.first_index()
            )));
        }
        tracing::info!(
            after = index,
            last_index = self.last_index(),
            "truncating the log"
        );
        let superseded: Vec<PathBuf> = self
            .segments
            .iter()
            .filter(|segment| segment.first_index() > index)
            .map(|segment| segment.path.clone())
            .collect();
        self.launch("truncate_after", move |mut operation| async move {
            let result = operation.truncate_after(index, &superseded).await;
            (operation, result)
        });
        self.complete().await
    }

    /// Removes whole segments whose entries all lie below `index` (a snapshot covers them).
    /// The segment being appended to is never removed, so entries below `index` may remain.
    /// When `index > last_index() + 1` the log is reset: every entry goes, and the next append
    /// must carry `index` (installing a snapshot on a follower).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe, as [`Wal::truncate_after`]: a dropped purge or reset is finished by the next
    /// call that changes the log.
    pub async fn purge_before(&mut self, index: u64) -> WalResult<()> {
        self.settle_and_check().await?;
        self.prepare_write().await?;
        if index > MAX_LOG_INDEX {
            return Err(WalError::InvalidArgument(format!(
                "cannot purge before {index}: indexes above {MAX_LOG_INDEX} are not supported"
            )));
        }
        if index > self.next_index {
            let old: Vec<PathBuf> = self.segments.iter().map(|s| s.path.clone()).collect();
            self.launch("purge_before (reset)", move |mut operation| async move {
                let result = operation.reset_to(index, &old).await;
                (operation, result)
            });
            return self.complete().await;
        }
        let mut removable = 0;
        while removable + 1 < self.segments.len()
            && self.segments[removable + 1].first_index() <= index
        {
            removable += 1;
        }
        if removable == 0 {
            return Ok(());
        }
        tracing::info!(before = index, segments = removable, "purging segments");
        let purged: Vec<(PathBuf, u64)> = self.segments[..removable]
            .iter()
            .map(|segment| (segment.path.clone(), segment.header.segment_size_bytes))
            .collect();
        self.launch("purge_before", move |mut operation| async move {
            let result = operation.purge(&purged).await;
            (operation, result)
        });
        self.complete().await
    }

    /// Syncs and closes the log. Later calls return [`WalError::Shutdown`].
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: a dropped close leaves the log open, with its final sync (if it started)
    /// finished by the next call; call `close` again.
    pub async fn close(&mut self) -> WalResult<()> {
        if self.closed {
            return Ok(());
        }
        let synced = if self.read_only {
            Ok(())
        } else {
            // A poisoned log reports its poisoning here too: a caller using close as its final
            // flush must not be told success.
            self.sync().await
        };
        self.closed = true;
        self.abandon_spare();
        // A closed log writes nothing more: another may open the directory.
        self._lock = DirLock::none();
        synced
    }

    /// Checks that the log takes writes, sealing a pending recovery cut first. A disk still
    /// full fails the write without poisoning (the seal fails while zero-filling its file, before
    /// anything in the directory changes), so the log works again once space returns; any other
    /// failure poisons.
    pub(super) async fn prepare_write(&mut self) -> WalResult<()> {
        if self.seal_pending {
            tracing::info!("sealing the recovery cut before the first write");
            self.seal_cut().await?;
        }
        Ok(())
    }

    /// Seals a recovery cut: a new segment starting at the next index supersedes whatever lies
    /// beyond the cut, then the segments it supersedes are removed.
    pub(super) async fn seal_cut(&mut self) -> WalResult<()> {
        let superseded = self.report.segments_removed.clone();
        self.launch("seal the recovery cut", move |mut operation| async move {
            let result = operation.seal_cut(&superseded).await;
            (operation, result)
        });
        self.in_flight
            .as_mut()
            .expect("just launched")
            .full_disk_changes_nothing = true;
        self.complete().await
    }

    /// Starts zero-filling the next segment's file in the background, so rotation only has to
    /// write a header and rename.
    pub(super) fn prepare_spare(&mut self) {
        if self.resources.spare.is_some() || !self.resources.recycled.is_empty() {
            return;
        }
        let storage = self.storage.clone();
        let dir = self.config.dir.clone();
        let size = self.config.segment_size_bytes;
        let task = tokio::spawn(async move { prepare_segment_file(&storage, &dir, size).await });
        self.resources.spare = Some(task);
    }

    /// Stops preparing the spare segment; its temporary file is removed by the next recovery.
    pub(super) fn abandon_spare(&mut self) {
        if let Some(task) = self.resources.spare.take() {
            task.abort();
        }
    }
}
