//! Operations on a plain `Wal`, each checked against the model as it returns.

use helix_wal::{Entry, WalError};

use super::{ensure, refused, Check, Crash, Flow, Log, Simulation, MAX_BATCH_ENTRIES};
use crate::model::Written;

impl Simulation {
    pub(super) async fn drive_plain(&mut self, wal: &mut Log) -> Check<Crash> {
        loop {
            if self.operations_left == 0 {
                let crash = self.random_crash();
                return Ok(crash);
            }
            self.operations_left -= 1;
            self.operation += 1;
            self.summary.operations += 1;
            let flow = match self.rng.weighted(&[20, 12, 15, 8, 10, 8, 4, 4, 4, 1, 8]) {
                0 => self.plain_append(wal, 1, false).await?,
                1 => {
                    let count = self.rng.between(2, MAX_BATCH_ENTRIES);
                    self.plain_append(wal, count, false).await?
                }
                2 => {
                    let count = self.rng.between(1, MAX_BATCH_ENTRIES);
                    self.plain_append(wal, count, true).await?
                }
                3 => {
                    self.note("sync".into());
                    let result = wal.sync().await;
                    self.after_write(wal, result).await?
                }
                4 => self.plain_read(wal).await?,
                5 => self.plain_read_range(wal).await?,
                6 => self.plain_truncate(wal).await?,
                7 => self.plain_purge(wal).await?,
                8 => {
                    self.note("the process dies".into());
                    Flow::Crash(self.random_crash())
                }
                10 => self.plain_interrupted(wal).await?,
                _ => {
                    self.note("close".into());
                    match wal.close().await {
                        Ok(()) => {
                            self.model.acknowledge(wal.durable_index());
                            ensure!(
                                wal.durable_index() == wal.last_index(),
                                "close left entries not durable"
                            );
                            Flow::Crash(Crash::Process)
                        }
                        Err(error) => self.after_failure(Some(wal), error).await?,
                    }
                }
            };
            if let Flow::Crash(crash) = flow {
                return Ok(crash);
            }
        }
    }

    async fn plain_append(&mut self, wal: &mut Log, count: u64, durable: bool) -> Check<Flow> {
        let first = self.model.next;
        let written: Vec<Written> = (0..count).map(|_| self.next_entry()).collect();
        let entries: Vec<Entry> = written
            .iter()
            .zip(first..)
            .map(|(w, index)| w.entry(index))
            .collect();
        self.note(format!(
            "append {count} at {first}{}",
            if durable { " durably" } else { "" }
        ));
        let result = match (count, durable) {
            (1, false) => wal.append(entries[0].clone()).await.map(|_| ()),
            (_, false) => wal.append_batch(&entries).await,
            (_, true) => wal.append_batch_durable(&entries).await,
        };
        match result {
            Ok(()) => {
                for (index, w) in (first..).zip(written) {
                    self.model.appended(index, w);
                }
                ensure!(
                    wal.last_index() == self.model.last(),
                    "after appending up to {} the log's last index is {}",
                    self.model.last(),
                    wal.last_index()
                );
                if durable {
                    ensure!(
                        wal.durable_index() == self.model.last(),
                        "a durable append returned with the durable index at {}",
                        wal.durable_index()
                    );
                }
                self.model.acknowledge(wal.durable_index());
                Ok(Flow::Continue)
            }
            Err(error) => {
                // Some of the batch may have reached the file: each may be found by recovery.
                for (index, w) in (first..).zip(written) {
                    self.model.candidates.entry(index).or_default().push(w);
                }
                self.after_failure(Some(wal), error).await
            }
        }
    }

    /// The result of a sync: acknowledges on success.
    async fn after_write(&mut self, wal: &mut Log, result: Result<(), WalError>) -> Check<Flow> {
        match result {
            Ok(()) => {
                ensure!(
                    wal.durable_index() == wal.last_index(),
                    "sync returned with the durable index at {} below the last index {}",
                    wal.durable_index(),
                    wal.last_index()
                );
                self.model.acknowledge(wal.durable_index());
                Ok(Flow::Continue)
            }
            Err(error) => self.after_failure(Some(wal), error).await,
        }
    }

    /// A write-side operation failed. Without injected faults that is a bug. With them the
    /// error must be an I/O error or a poisoning, and the log must now refuse writes; the
    /// process then crashes, since the in-memory state after a failure is not the model's.
    pub(super) async fn after_failure(
        &mut self,
        wal: Option<&mut Log>,
        error: WalError,
    ) -> Check<Flow> {
        self.note(format!("failed: {error}"));
        ensure!(
            self.faults_on(),
            "an operation failed without any fault injected: {error}"
        );
        ensure!(
            matches!(error, WalError::Io { .. } | WalError::Poisoned { .. }),
            "a write failed with an unexpected error: {error}"
        );
        // Sealing a recovery cut on a full disk fails before anything is written, and the
        // log stays usable for when space returns; every other write failure poisons.
        let nothing_written = error.io_kind() == Some(std::io::ErrorKind::StorageFull);
        if let Some(wal) = wal.filter(|wal| !nothing_written || wal.is_poisoned()) {
            ensure!(
                wal.is_poisoned(),
                "a failed write left the log writable: {error}"
            );
            let next = Entry::new(wal.last_index() + 1, self.model.term, vec![1u8; 8]);
            // A log whose close failed refuses as shut down; any other as poisoned.
            let appended = wal.append(next).await.map(|_| ());
            ensure!(
                refused(&appended),
                "a poisoned log accepted an append: {appended:?}"
            );
            let synced = wal.sync().await;
            ensure!(
                refused(&synced),
                "a poisoned log accepted a sync: {synced:?}"
            );
            ensure!(
                wal.read_range(wal.first_index(), wal.first_index() + 1, 0)
                    .await
                    .is_ok()
                    || wal.is_empty()
                    || self.faults_on(),
                "a poisoned log refused reads"
            );
        }
        Ok(Flow::Crash(self.random_crash()))
    }

    /// An index to read: mostly inside the log, sometimes just outside it.
    pub(super) fn index_to_read(&mut self) -> u64 {
        let low = self.model.first.saturating_sub(1).max(1);
        self.rng.between(low, self.model.next)
    }

    async fn plain_read(&mut self, wal: &mut Log) -> Check<Flow> {
        let index = self.index_to_read();
        self.note(format!("read {index}"));
        let result = wal.read(index).await;
        self.check_read(index, result)?;
        if let Some(written) = self.model.current.get(&index) {
            let term = wal
                .term(index)
                .map_err(|error| format!("term({index}): {error}"))?;
            ensure!(term == written.term, "term({index}) is {term}");
        }
        Ok(Flow::Continue)
    }

    /// A read returns the model's entry, an out-of-range error outside the log, or (only with
    /// read faults injected) an I/O or corruption error; never other bytes.
    pub(super) fn check_read(&self, index: u64, result: Result<Entry, WalError>) -> Check<()> {
        match (self.model.current.get(&index), result) {
            (Some(written), Ok(entry)) => {
                ensure!(
                    written.matches(index, &entry),
                    "read({index}) returned other bytes than were appended (term {}, {} bytes)",
                    entry.term,
                    entry.payload.len()
                );
            }
            (None, Ok(_)) => return Err(format!("read({index}) outside the log succeeded")),
            (None, Err(WalError::IndexOutOfRange { .. })) => {}
            // Read faults; or a background group commit failed and took this entry with it.
            (
                _,
                Err(WalError::Io { .. } | WalError::Corrupt { .. } | WalError::Poisoned { .. }),
            ) if self.faults_on() => {}
            (_, Err(error)) => return Err(format!("read({index}) failed: {error}")),
        }
        Ok(())
    }

    async fn plain_read_range(&mut self, wal: &mut Log) -> Check<Flow> {
        let from = self.index_to_read();
        let to = self.rng.between(from, self.model.next + 2);
        let max_bytes = self.rng.between(0, 32 << 10) as usize;
        self.note(format!("read_range [{from}, {to}) max {max_bytes}"));
        let result = wal.read_range(from, to, max_bytes).await;
        self.check_read_range(from, to, max_bytes, result)?;
        Ok(Flow::Continue)
    }

    pub(super) fn check_read_range(
        &self,
        from: u64,
        to: u64,
        max_bytes: usize,
        result: Result<Vec<Entry>, WalError>,
    ) -> Check<()> {
        let end = to.min(self.model.next);
        let entries = match result {
            Ok(entries) => entries,
            Err(WalError::IndexOutOfRange { .. }) if from < self.model.first => return Ok(()),
            Err(WalError::Io { .. } | WalError::Corrupt { .. } | WalError::Poisoned { .. })
                if self.faults_on() =>
            {
                return Ok(())
            }
            Err(error) => return Err(format!("read_range [{from}, {to}) failed: {error}")),
        };
        if from >= end {
            ensure!(entries.is_empty(), "an empty range returned entries");
            return Ok(());
        }
        ensure!(
            from >= self.model.first,
            "read_range from {from} below the first index succeeded"
        );
        ensure!(
            !entries.is_empty(),
            "read_range [{from}, {to}) returned nothing"
        );
        let mut payload_bytes = 0;
        for (offset, entry) in entries.iter().enumerate() {
            let index = from + offset as u64;
            ensure!(index < end, "read_range returned index {index} past {end}");
            let written = self.model.current.get(&index).expect("inside the log");
            ensure!(
                written.matches(index, entry),
                "read_range returned other bytes at {index}"
            );
            payload_bytes += entry.payload.len();
        }
        let complete = from + entries.len() as u64 == end;
        ensure!(
            entries.len() == 1 || payload_bytes <= max_bytes,
            "read_range returned {payload_bytes} payload bytes, above max_bytes {max_bytes}"
        );
        if !complete {
            let next = self.model.current[&(from + entries.len() as u64)];
            ensure!(
                payload_bytes + next.length > max_bytes,
                "read_range stopped early with room for the next entry"
            );
        }
        Ok(())
    }

    async fn plain_truncate(&mut self, wal: &mut Log) -> Check<Flow> {
        let low = self.model.first.saturating_sub(1);
        let index = self.rng.between(low, self.model.last().max(low));
        self.note(format!("truncate_after {index}"));
        match wal.truncate_after(index).await {
            Ok(()) => {
                self.model.truncated(index);
                self.model.term += self.rng.below(2);
                ensure!(
                    wal.last_index() == self.model.last(),
                    "truncate_after({index}) left the last index at {}",
                    wal.last_index()
                );
                self.model.acknowledge(wal.durable_index());
                Ok(Flow::Continue)
            }
            Err(error) => {
                self.model.truncation_uncertain(index);
                self.after_failure(Some(wal), error).await
            }
        }
    }

    async fn plain_purge(&mut self, wal: &mut Log) -> Check<Flow> {
        let index = self.purge_point();
        self.note(format!("purge_before {index}"));
        match wal.purge_before(index).await {
            Ok(()) => {
                let first = wal.first_index();
                self.check_purge(index, first)?;
                self.model.purged(first);
                ensure!(
                    wal.last_index() == self.model.last(),
                    "purge_before({index}) moved the last index to {}",
                    wal.last_index()
                );
                Ok(Flow::Continue)
            }
            Err(error) => {
                self.model.purge_uncertain(index);
                self.after_failure(Some(wal), error).await
            }
        }
    }

    /// Where to purge: mostly inside the log, now and then past its end (a snapshot install).
    pub(super) fn purge_point(&mut self) -> u64 {
        if self.rng.one_in(8) {
            self.model.next + self.rng.between(1, 20)
        } else {
            self.rng.between(self.model.first, self.model.next)
        }
    }

    pub(super) fn check_purge(&self, index: u64, first: u64) -> Check<()> {
        if index > self.model.next {
            ensure!(
                first == index,
                "a reset to {index} left the log starting at {first}"
            );
        } else {
            ensure!(
                (self.model.first..=index).contains(&first),
                "purge_before({index}) left the log starting at {first}"
            );
        }
        Ok(())
    }
}
