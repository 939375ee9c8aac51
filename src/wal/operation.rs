//! The I/O of the log's mutating calls, run so that it can outlive the call that started it.
//!
//! A mutating call of [`Wal`](super::Wal) plans in memory, then hands an [`Operation`] (the
//! storage, the write position of the last segment and the resources for new segments, moved
//! out of the log) to a future that does every storage call of the operation and records what
//! each completed step changed as an [`Effect`]. The log's memory changes only when that future
//! has finished, by applying the effects in order (see `Wal::settle`). A caller that drops its
//! future part-way therefore leaves the operation suspended, never half-applied: the next call
//! that changes the log drives it to its end first, so memory and disk never disagree and no
//! later write can land on top of one still in flight.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use tokio::task::JoinHandle;

use crate::error::WalResult;
use crate::format::{
    commit_padding, encode_padding, encode_record, record_size, CommitPadding, Entry, SegmentHeader,
};
use crate::limits::{MAX_WRITE_ALIGNMENT_BYTES, RECYCLED_SEGMENTS_KEPT};
use crate::sabotage::{is_on, Sabotage};
use crate::stats::WalCounters;
use crate::storage::{Storage, StorageFile};

use super::segment::{self, install_segment, prepare_segment_file, Segment};

/// What the log keeps for making new segments; an operation takes it and gives it back.
#[derive(Debug, Default)]
pub(crate) struct Resources {
    /// Id the next installed segment gets.
    pub next_segment_id: u64,
    /// The next segment's file, being zero-filled in the background.
    pub spare: Option<JoinHandle<WalResult<PathBuf>>>,
    /// Files of purged segments kept for reuse (under temporary names), the most recently
    /// retired last: the next installation takes the last one.
    pub recycled: Vec<PathBuf>,
    /// Reused encoding buffer, so steady-state appends do not allocate a fresh one.
    pub encode_buffer: BytesMut,
}

/// Where the log's last segment takes its next record.
#[derive(Debug, Clone)]
pub(crate) struct Tail {
    pub file: Arc<dyn StorageFile>,
    pub segment_id: u64,
    pub end_offset: u64,
    pub capacity_bytes: u64,
}

impl Tail {
    pub fn of(segment: &Segment) -> Self {
        Self {
            file: Arc::clone(&segment.file),
            segment_id: segment.header.segment_id,
            end_offset: segment.end_offset,
            capacity_bytes: segment.header.segment_size_bytes,
        }
    }
}

/// One completed step of an operation, applied to the log's memory once the operation ends.
#[derive(Debug)]
pub(crate) enum Effect {
    /// Records were written to the end of the last segment.
    Appended {
        /// Byte offset of each new record.
        offsets: Vec<u32>,
        /// `(index, term)` of each new record whose term differs from the one before it (empty,
        /// and so not allocated, while the term stays the same).
        term_changes: Vec<(u64, u64)>,
        end_offset: u64,
    },
    /// Everything appended so far is durable.
    Synced,
    /// A new segment joined the log (a rotation).
    SegmentAdded(Segment),
    /// A new segment sealed the recovery cut: it supersedes whatever lay beyond the cut.
    Sealed(Segment),
    /// A new segment starting at `index + 1` superseded every entry after `index`.
    Truncated { index: u64, segment: Segment },
    /// A new segment declaring `index` the log's start superseded every entry.
    Reset { index: u64, segment: Segment },
    /// The oldest `count` segments left the log.
    Purged { count: usize },
}

/// The state an operation carries while its storage calls run.
#[derive(Debug)]
pub(crate) struct Operation<S: Storage + Clone> {
    pub storage: S,
    pub dir: Arc<Path>,
    pub segment_size_bytes: u64,
    pub counters: Arc<WalCounters>,
    pub resources: Resources,
    pub tail: Option<Tail>,
    pub next_index: u64,
    /// Term of the last entry appended, if any.
    pub last_term: Option<u64>,
    pub durable_index: u64,
    pub log_start_index: u64,
    pub unsynced: bool,
    pub effects: Vec<Effect>,
}

impl<S: Storage + Clone> Operation<S> {
    /// Appends `entries` (validated by the caller) in order, rotating segments as they fill,
    /// and syncs them when `durable`.
    pub async fn append(&mut self, entries: &[Entry], durable: bool) -> WalResult<()> {
        let started = durable.then(Instant::now);
        let mut rest = entries;
        while !rest.is_empty() {
            let fitting = self.entries_fitting(rest);
            if fitting == 0 {
                self.rotate().await?;
                continue;
            }
            let (chunk, remaining) = rest.split_at(fitting);
            self.write_chunk(chunk, durable && remaining.is_empty())
                .await?;
            rest = remaining;
        }
        if durable && self.unsynced {
            self.sync().await?;
        }
        let counters = &self.counters;
        counters.appends.increment();
        counters.entries.add(entries.len() as u64);
        let payload_bytes: usize = entries.iter().map(|entry| entry.payload.len()).sum();
        counters.payload_bytes.add(payload_bytes as u64);
        if let Some(started) = started {
            counters.durable_append_latency.record(started.elapsed());
        }
        Ok(())
    }

    /// How many of `entries` fit in the last segment; 0 if there is none.
    fn entries_fitting(&self, entries: &[Entry]) -> usize {
        let Some(tail) = &self.tail else {
            return 0;
        };
        let mut room = tail.capacity_bytes.saturating_sub(tail.end_offset);
        let mut count = 0;
        for entry in entries {
            let size = record_size(entry.payload.len()) as u64;
            if size > room {
                break;
            }
            room -= size;
            count += 1;
        }
        count
    }

    /// Encodes `chunk` and writes it to the end of the last segment in one write, synced with
    /// it when `sync_now`.
    async fn write_chunk(&mut self, chunk: &[Entry], sync_now: bool) -> WalResult<()> {
        let tail = self.tail.clone().expect("entries_fitting found a segment");
        let (data, offsets) = self.encode_chunk(&tail, chunk);
        let file = tail.file;
        let start = tail.end_offset;
        let length = data.len() as u64;
        let started = sync_now.then(Instant::now);
        if sync_now {
            file.write_at_and_sync(start, data).await?;
        } else {
            file.write_at(start, data).await?;
        }
        self.counters.written_bytes.add(length);
        let tail = self.tail.as_mut().expect("still there");
        tail.end_offset = start + length;
        let mut term_changes = Vec::new();
        for (index, entry) in (self.next_index..).zip(chunk) {
            if self.last_term != Some(entry.term) {
                term_changes.push((index, entry.term));
                self.last_term = Some(entry.term);
            }
        }
        self.effects.push(Effect::Appended {
            offsets,
            term_changes,
            end_offset: start + length,
        });
        self.next_index += chunk.len() as u64;
        self.unsynced = true;
        if let Some(started) = started {
            self.counters.syncs.increment();
            self.counters.sync_latency.record(started.elapsed());
            self.synced();
        }
        if is_on(Sabotage::AckBeforeFsync) {
            self.synced();
        }
        Ok(())
    }

    /// The bytes of one commit of `chunk` at the end of `tail`, padded to the file's write
    /// alignment, and the offset of each record.
    fn encode_chunk(&mut self, tail: &Tail, chunk: &[Entry]) -> (Bytes, Vec<u32>) {
        let mut buffer = std::mem::take(&mut self.resources.encode_buffer);
        buffer.clear();
        let mut offsets = Vec::with_capacity(chunk.len());
        let start = tail.end_offset;
        for entry in chunk {
            offsets.push((start + buffer.len() as u64) as u32);
            encode_record(&mut buffer, tail.segment_id, entry, self.durable_index);
        }
        let alignment = tail.file.write_alignment();
        assert!(
            alignment.is_power_of_two() && alignment <= MAX_WRITE_ALIGNMENT_BYTES as u64,
            "a storage file demands a write alignment of {alignment} bytes"
        );
        let end = start + buffer.len() as u64;
        match commit_padding(end, alignment, tail.capacity_bytes) {
            CommitPadding::None => {}
            CommitPadding::Record { payload_len } => {
                encode_padding(&mut buffer, tail.segment_id, payload_len);
            }
            CommitPadding::Zeros(length) => buffer.resize(buffer.len() + length, 0),
        }
        let data = buffer.split().freeze();
        self.resources.encode_buffer = buffer;
        (data, offsets)
    }

    /// Records that everything appended is durable.
    fn synced(&mut self) {
        self.durable_index = self.next_index - 1;
        self.unsynced = false;
        self.effects.push(Effect::Synced);
    }

    /// Makes every appended entry durable.
    pub async fn sync(&mut self) -> WalResult<()> {
        if !self.unsynced {
            return Ok(());
        }
        let file = Arc::clone(&self.tail.as_ref().expect("unsynced implies a segment").file);
        let started = Instant::now();
        file.sync().await?;
        self.counters.syncs.increment();
        self.counters.sync_latency.record(started.elapsed());
        self.synced();
        Ok(())
    }

    /// Closes the last segment (syncing it first, so everything appended is durable) and opens
    /// a new one for the next index.
    async fn rotate(&mut self) -> WalResult<()> {
        self.sync().await?;
        tracing::debug!(next_index = self.next_index, "rotating to a new segment");
        // A new log's first segment is installed here too; that is no rotation.
        let full_segment = self.tail.is_some();
        let segment = self
            .install_next_segment(self.next_index, self.log_start_index)
            .await?;
        self.effects.push(Effect::SegmentAdded(segment));
        if full_segment {
            self.counters.segments_rotated.increment();
        }
        Ok(())
    }

    /// Removes every entry after `index`: syncs what stays, installs a segment starting at
    /// `index + 1` that supersedes the rest, then removes the segment files it superseded.
    pub async fn truncate_after(&mut self, index: u64, superseded: &[PathBuf]) -> WalResult<()> {
        // Entries up to `index` stay and must be durable before a newer segment vouches for
        // the chain up to it.
        self.sync().await?;
        let segment = self
            .install_next_segment(index + 1, self.log_start_index)
            .await?;
        self.effects.push(Effect::Truncated { index, segment });
        self.next_index = index + 1;
        self.durable_index = self.durable_index.min(index);
        self.remove_files(superseded).await?;
        self.counters.truncations.increment();
        Ok(())
    }

    /// Empties the log so that the next entry must be `index`: a new segment declaring
    /// `log_start_index = index` supersedes all others, which are then removed.
    pub async fn reset_to(&mut self, index: u64, old: &[PathBuf]) -> WalResult<()> {
        tracing::info!(next_index = index, "resetting the log past a snapshot");
        let segment = self.install_next_segment(index, index).await?;
        self.effects.push(Effect::Reset { index, segment });
        self.log_start_index = index;
        self.next_index = index;
        self.durable_index = index - 1;
        self.unsynced = false;
        self.remove_files(old).await?;
        self.counters.purges.increment();
        Ok(())
    }

    /// Seals a recovery cut: a new segment starting at the next index supersedes whatever lies
    /// beyond the cut, then the segments it supersedes are removed.
    pub async fn seal_cut(&mut self, superseded: &[PathBuf]) -> WalResult<()> {
        let segment = self
            .install_next_segment(self.next_index, self.log_start_index)
            .await?;
        self.effects.push(Effect::Sealed(segment));
        self.remove_files(superseded).await
    }

    /// Takes the oldest segments, `purged` (path and size of each), out of the log, each
    /// durably before the next (a crash part-way leaves a contiguous log): a few are renamed to
    /// temporary names for reuse (recovery removes such files, so this is as final as a
    /// removal), the rest are removed.
    pub async fn purge(&mut self, purged: &[(PathBuf, u64)]) -> WalResult<()> {
        self.effects.push(Effect::Purged {
            count: purged.len(),
        });
        for (path, size_bytes) in purged {
            let reusable = self.resources.recycled.len() < RECYCLED_SEGMENTS_KEPT
                && *size_bytes == self.segment_size_bytes;
            if reusable {
                let spare = segment::temporary_path(&self.storage, &self.dir);
                self.storage.rename(path, &spare).await?;
                self.sync_dir().await?;
                tracing::debug!(path = %path.display(), "purged segment kept for reuse");
                self.resources.recycled.push(spare);
            } else {
                self.storage.remove(path).await?;
                self.sync_dir().await?;
            }
        }
        self.counters.purges.increment();
        Ok(())
    }

    /// Installs the next segment from a recycled file, the spare prepared in the background,
    /// or, failing both, a file zero-filled now, and makes it the one appended to. The segment
    /// id is reserved here, at installation, never earlier, so ids grow in the order segments
    /// join the log.
    async fn install_next_segment(
        &mut self,
        first_index: u64,
        log_start_index: u64,
    ) -> WalResult<Segment> {
        let (prepared, recycled) = match self.resources.recycled.pop() {
            Some(prepared) => (prepared, true),
            None => (self.take_spare().await?, false),
        };
        let segment_id = self.resources.next_segment_id;
        self.resources.next_segment_id += 1;
        if let Some(tail) = &self.tail {
            assert!(tail.segment_id < segment_id, "segment ids must grow");
        }
        let header = SegmentHeader {
            segment_id,
            first_index,
            log_start_index,
            segment_size_bytes: self.segment_size_bytes,
            recycled,
        };
        let segment = install_segment(&self.storage, &self.dir, &prepared, header).await?;
        if recycled {
            self.counters.segments_recycled.increment();
            tracing::debug!(
                segment_id,
                first_index,
                "new segment made from a purged segment's file"
            );
        }
        self.tail = Some(Tail::of(&segment));
        Ok(segment)
    }

    /// The spare file prepared in the background, or a new one prepared now when there is none
    /// or its preparation failed (a failed background preparation does not poison the log: only
    /// a failure here does).
    async fn take_spare(&mut self) -> WalResult<PathBuf> {
        if let Some(task) = self.resources.spare.take() {
            match task.await {
                Ok(Ok(prepared)) => return Ok(prepared),
                Ok(Err(error)) => {
                    tracing::warn!(%error, "background segment preparation failed; retrying now");
                }
                Err(join_error) => {
                    tracing::warn!(%join_error, "background segment preparation did not finish");
                }
            }
        }
        prepare_segment_file(&self.storage, &self.dir, self.segment_size_bytes).await
    }

    /// Removes segment files and syncs the directory after each removal, oldest first, so a
    /// crash part-way leaves a contiguous log.
    async fn remove_files(&mut self, paths: &[PathBuf]) -> WalResult<()> {
        for path in paths {
            self.storage.remove(path).await?;
            self.sync_dir().await?;
        }
        Ok(())
    }

    async fn sync_dir(&self) -> WalResult<()> {
        self.storage.sync_dir(&self.dir).await
    }
}
