//! The append path: what a new entry must satisfy, appends, and sync.

use super::Wal;
use crate::error::{WalError, WalResult};
use crate::format::Entry;
use crate::limits::{HARD_MAX_ENTRY_SIZE_BYTES, MAX_LOG_INDEX};
use crate::storage::Storage;

impl<S: Storage + Clone> Wal<S> {
    /// Checks that `entries` continue the log (see [`check_continues`]). Nothing is written if
    /// any entry fails.
    pub(super) fn validate_batch(&self, entries: &[Entry]) -> WalResult<()> {
        let mut last_term = self.terms.last_term().unwrap_or(0);
        for (next_index, entry) in (self.next_index..).zip(entries) {
            check_continues(
                entry,
                next_index,
                last_term,
                self.config.max_entry_size_bytes,
            )?;
            last_term = entry.term;
        }
        Ok(())
    }

    /// Appends one entry (written, not yet durable). Returns its index.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe. If the future is dropped before it completes, the write it started is
    /// neither lost nor repeated: it stays suspended in the log, and the next call that changes
    /// the log (or [`Wal::close`]) finishes it first and applies its outcome, so the entry is
    /// either appended whole or, if that write failed, the log is poisoned. Until then the log
    /// reports the state before the call.
    pub async fn append(&mut self, entry: Entry) -> WalResult<u64> {
        let index = entry.index;
        self.append_batch(std::slice::from_ref(&entry)).await?;
        Ok(index)
    }

    /// Appends entries in order (written, not yet durable), rotating segments as they fill,
    /// also in the middle of the batch. Either every entry is valid and written, or an invalid
    /// batch is refused before anything is written; a failed write poisons the log.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe, as [`Wal::append`]: a dropped call's batch is finished by the next call
    /// that changes the log, whole (every entry appended) or not at all (a failed write, which
    /// poisons the log).
    pub async fn append_batch(&mut self, entries: &[Entry]) -> WalResult<()> {
        self.write_batch(entries, false).await
    }

    /// Appends entries and makes them durable with one write and one sync of the last segment
    /// (a linked write+fsync on io_uring). Returns once the sync succeeded.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe, as [`Wal::append_batch`]. An `Ok` is the only acknowledgement: after a
    /// dropped call, [`Wal::durable_index`] tells how far the log is durable once the next call
    /// that changes the log (a [`Wal::sync`], say) has finished the dropped one.
    pub async fn append_batch_durable(&mut self, entries: &[Entry]) -> WalResult<()> {
        self.write_batch(entries, true).await
    }

    async fn write_batch(&mut self, entries: &[Entry], durable: bool) -> WalResult<()> {
        self.settle_and_check().await?;
        self.validate_batch(entries)?;
        self.prepare_write().await?;
        let entries = entries.to_vec();
        let name = if durable {
            "append_batch_durable"
        } else {
            "append_batch"
        };
        self.launch(name, move |mut operation| async move {
            let result = operation.append(&entries, durable).await;
            (operation, result)
        });
        self.complete().await
    }

    /// Makes every appended entry durable.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe. A dropped sync is finished by the next call that changes the log; until
    /// then the durable index stays where it was.
    pub async fn sync(&mut self) -> WalResult<()> {
        self.settle_and_check().await?;
        if !self.unsynced {
            return Ok(());
        }
        self.launch("sync", |mut operation| async move {
            let result = operation.sync().await;
            (operation, result)
        });
        self.complete().await
    }
}

/// Checks that `entry` may follow a log whose next index is `next_index` and whose last term is
/// `last_term`: the index is the next one and below [`MAX_LOG_INDEX`], the term does not
/// decrease, the payload is within `max_entry_size_bytes`. The one validation of new entries,
/// for [`Wal`] and `BufferedWal` alike.
pub(crate) fn check_continues(
    entry: &Entry,
    next_index: u64,
    last_term: u64,
    max_entry_size_bytes: usize,
) -> WalResult<()> {
    if entry.index != next_index {
        return Err(WalError::NonContiguousIndex {
            expected: next_index,
            last: next_index - 1,
            got: entry.index,
        });
    }
    if entry.index >= MAX_LOG_INDEX {
        return Err(WalError::InvalidArgument(format!(
            "index {} is not supported: indexes stay below {MAX_LOG_INDEX}",
            entry.index
        )));
    }
    if entry.term < last_term {
        return Err(WalError::TermRegression {
            index: entry.index,
            term: entry.term,
            previous_term: last_term,
        });
    }
    if entry.payload.len() > max_entry_size_bytes {
        return Err(WalError::EntryTooLarge {
            index: entry.index,
            size: entry.payload.len(),
            max: max_entry_size_bytes,
            hard_max: HARD_MAX_ENTRY_SIZE_BYTES,
        });
    }
    Ok(())
}
