//! The log: appends, reads, sync, truncation and purge over segment files.

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use tokio::task::JoinHandle;

use crate::error::{Poison, WalError, WalResult};
use crate::format::{
    commit_padding, encode_padding, encode_record, record_size, CommitPadding, Entry, SegmentHeader,
};
use crate::limits::{
    HARD_MAX_ENTRY_SIZE_BYTES, HARD_MAX_READ_RANGE_BYTES, LOCK_MAX_RETRY_INTERVAL_MS,
    LOCK_RETRY_INTERVAL_MS, LOCK_WAIT_MS, MAX_LOG_INDEX, MAX_WRITE_ALIGNMENT_BYTES,
    RECOVERY_READ_CHUNK_BYTES, RECYCLED_SEGMENTS_KEPT,
};
use crate::sabotage::{is_on, Sabotage};
use crate::stats::{WalCounters, WalStats};
use crate::storage::{DirLock, Storage};

pub(crate) mod buffered;
pub(crate) mod config;
pub(crate) mod recovery;
pub(crate) mod segment;
pub(crate) mod terms;

pub use buffered::{BufferedWal, BufferedWalConfig};
use config::WalConfig;
use recovery::RecoveryReport;
use segment::{install_segment, prepare_segment_file, Segment};
use terms::TermRuns;

/// A segmented, checksummed write-ahead log of `(term, index, payload)` entries.
///
/// One writer: mutating calls take `&mut self`. Reads take `&self` and go to storage through an
/// in-memory index of positions; the log is never held in memory whole.
///
/// Durability: [`Wal::append`] and [`Wal::append_batch`] write but do not sync; an entry is
/// durable once [`Wal::sync`] (or [`Wal::append_batch_durable`]) returns `Ok` after it was
/// appended. [`Wal::durable_index`] tells how far that is. After any failed write or sync the log
/// is poisoned: every later mutating call returns [`WalError::Poisoned`]; reads keep working.
#[derive(Debug)]
pub struct Wal<S: Storage + Clone> {
    storage: S,
    config: WalConfig,
    /// Live segments in index order; the last is the one appended to.
    segments: Vec<Segment>,
    terms: TermRuns,
    /// Index the next appended entry must carry.
    next_index: u64,
    /// Highest index covered by a successful sync (`next_index - 1` at most).
    durable_index: u64,
    /// Entries below this index were purged.
    log_start_index: u64,
    next_segment_id: u64,
    /// The last segment holds writes not yet synced.
    unsynced: bool,
    poison: Poison,
    closed: bool,
    report: RecoveryReport,
    /// Reused encoding buffer, so steady-state appends do not allocate a fresh one.
    encode_buffer: BytesMut,
    /// The next segment's file, being zero-filled in the background: its reserved id and the
    /// task preparing it.
    spare: Option<JoinHandle<WalResult<PathBuf>>>,
    /// Opened with [`Wal::open_read_only`].
    read_only: bool,
    /// Files of purged segments kept for reuse (under temporary names), newest last: reusing
    /// one costs a header write instead of zero-filling a new file.
    recycled: Vec<PathBuf>,
    /// Recovery cut the log and the disk had no room for the segment that seals the cut: the
    /// next write seals it first (see [`Wal::seal_cut`]).
    seal_pending: bool,
    /// Counters behind [`Wal::stats`], shared with a `BufferedWal` wrapping the log.
    counters: Arc<WalCounters>,
    /// The directory's lock, held until the log is closed or dropped.
    _lock: DirLock,
}

/// A summary of the log's shape, for inspection tools.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentInfo {
    /// The segment file.
    pub path: PathBuf,
    /// Its id.
    pub segment_id: u64,
    /// First index it holds (or would hold).
    pub first_index: u64,
    /// Number of live entries.
    pub entries: u64,
    /// Bytes used by the header and live records.
    pub used_bytes: u64,
    /// The size the segment was pre-written to.
    pub capacity_bytes: u64,
    /// The file was reused from a purged segment.
    pub recycled: bool,
}

impl<S: Storage + Clone> Wal<S> {
    /// Opens (creating if needed) the log in `config.dir` and recovers it according to
    /// `config.recovery_mode`. Recovery syncs what it keeps, so every recovered entry is durable
    /// when this returns.
    pub async fn open(storage: S, config: WalConfig) -> WalResult<Self> {
        Self::open_with(storage, config, false).await
    }

    /// Opens the log for reading only: recovery changes nothing on disk (no cut is sealed, no
    /// file is removed or synced), and every write returns [`WalError::ReadOnly`]. Its
    /// [`Wal::recovery_report`] tells what a writable open would do. For inspection tools.
    pub async fn open_read_only(storage: S, config: WalConfig) -> WalResult<Self> {
        Self::open_with(storage, config, true).await
    }

    async fn open_with(storage: S, config: WalConfig, read_only: bool) -> WalResult<Self> {
        config.validate()?;
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
            next_segment_id: recovered.next_segment_id,
            unsynced: false,
            poison: Poison::new(),
            closed: false,
            report: recovered.report,
            encode_buffer: BytesMut::new(),
            spare: None,
            read_only,
            recycled: Vec::new(),
            seal_pending: false,
            counters: Arc::default(),
            _lock: lock,
            config,
        };
        if read_only {
            return Ok(wal);
        }
        if recovered.needs_new_segment {
            match wal.seal_cut().await {
                Ok(()) => {}
                // Opening must not need free space: a full disk defers the seal to the first
                // write, which then fails cleanly until space returns. Until sealed, the cut
                // data stays on disk and every recovery cuts it again at the same place.
                Err(error) if error.io_kind() == Some(std::io::ErrorKind::StorageFull) => {
                    tracing::warn!(%error, "no space to seal the recovery cut; the first write will");
                    wal.seal_pending = true;
                }
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

    /// The configuration the log was opened with.
    pub fn config(&self) -> &WalConfig {
        &self.config
    }

    /// What recovery found and did when the log was opened.
    pub fn recovery_report(&self) -> &RecoveryReport {
        &self.report
    }

    /// The storage backend.
    pub fn storage(&self) -> &S {
        &self.storage
    }

    /// The first index in the log. When the log is empty this is `last_index() + 1`.
    pub fn first_index(&self) -> u64 {
        self.segments
            .iter()
            .find(|segment| segment.len() > 0)
            .map_or(self.next_index, |segment| segment.first_index())
    }

    /// The last index in the log (`first_index() - 1` when empty; 0 for a new log).
    pub fn last_index(&self) -> u64 {
        self.next_index - 1
    }

    /// The highest index covered by a successful sync.
    pub fn durable_index(&self) -> u64 {
        self.durable_index
    }

    /// True when the log holds no entries.
    pub fn is_empty(&self) -> bool {
        self.first_index() > self.last_index()
    }

    /// True once a write or sync failed; every later write is refused.
    pub fn is_poisoned(&self) -> bool {
        self.poison.is_poisoned()
    }

    /// A snapshot of the log's counters and latency histograms since it was opened. Cheap: a
    /// few dozen relaxed atomic loads and one small allocation per histogram.
    pub fn stats(&self) -> WalStats {
        self.counters.snapshot()
    }

    /// The live counters, for a `BufferedWal` to report without taking the log's lock.
    pub(crate) fn counters(&self) -> Arc<WalCounters> {
        Arc::clone(&self.counters)
    }

    /// Records `error` as the failure that poisons the log (the first one wins; it is logged at
    /// error level once) and returns it.
    fn fail(&self, error: WalError) -> WalError {
        let first = !self.poison.is_poisoned();
        let error = self.poison.poison(error);
        if first && self.poison.is_poisoned() {
            self.counters.poisoned.store(true, Ordering::Relaxed);
            tracing::error!(
                dir = %self.config.dir.display(),
                %error,
                "the log is poisoned: it refuses every write from now on; reopen it to recover"
            );
        }
        error
    }

    /// The term of entry `index`.
    pub fn term(&self, index: u64) -> WalResult<u64> {
        self.check_in_range(index)?;
        Ok(self
            .terms
            .term_of(index)
            .expect("every live index has a term"))
    }

    /// The segments of the log, oldest first.
    pub fn segments(&self) -> Vec<SegmentInfo> {
        self.segments
            .iter()
            .map(|segment| SegmentInfo {
                path: segment.path.clone(),
                segment_id: segment.header.segment_id,
                first_index: segment.first_index(),
                entries: segment.len(),
                used_bytes: segment.end_offset,
                capacity_bytes: segment.header.segment_size_bytes,
                recycled: segment.header.recycled,
            })
            .collect()
    }

    fn check_writable(&self) -> WalResult<()> {
        if self.read_only {
            return Err(WalError::ReadOnly {
                dir: self.config.dir.clone(),
            });
        }
        if self.closed {
            return Err(WalError::Shutdown { what: "log" });
        }
        self.poison.check()
    }

    fn check_in_range(&self, index: u64) -> WalResult<()> {
        if index < self.first_index() || index > self.last_index() {
            return Err(WalError::IndexOutOfRange {
                index,
                first: self.first_index(),
                last: self.last_index(),
            });
        }
        Ok(())
    }

    /// Checks that `entries` continue the log: contiguous indexes from `next_index`, terms that
    /// never decrease, payloads within the limit. Nothing is written if any entry fails.
    fn validate_batch(&self, entries: &[Entry]) -> WalResult<()> {
        let mut previous_term = self.terms.last_term().unwrap_or(0);
        if self.next_index + entries.len() as u64 > MAX_LOG_INDEX {
            return Err(WalError::InvalidArgument(format!(
                "indexes above {MAX_LOG_INDEX} are not supported"
            )));
        }
        for (expected, entry) in (self.next_index..).zip(entries) {
            if entry.index != expected {
                return Err(WalError::NonContiguousIndex {
                    expected,
                    last: expected - 1,
                    got: entry.index,
                });
            }
            if entry.term < previous_term {
                return Err(WalError::TermRegression {
                    index: entry.index,
                    term: entry.term,
                    previous_term,
                });
            }
            if entry.payload.len() > self.config.max_entry_size_bytes {
                return Err(WalError::EntryTooLarge {
                    index: entry.index,
                    size: entry.payload.len(),
                    max: self.config.max_entry_size_bytes,
                    hard_max: HARD_MAX_ENTRY_SIZE_BYTES,
                });
            }
            previous_term = entry.term;
        }
        Ok(())
    }

    /// Appends one entry (written, not yet durable). Returns its index.
    pub async fn append(&mut self, entry: Entry) -> WalResult<u64> {
        let index = entry.index;
        self.append_batch(std::slice::from_ref(&entry)).await?;
        Ok(index)
    }

    /// Appends entries in order (written, not yet durable), rotating segments as they fill,
    /// also in the middle of the batch. Either every entry is valid and written, or an invalid
    /// batch is refused before anything is written; a failed write poisons the log.
    pub async fn append_batch(&mut self, entries: &[Entry]) -> WalResult<()> {
        self.write_batch(entries, false).await
    }

    /// Appends entries and makes them durable with one write and one sync of the last segment
    /// (a linked write+fsync on io_uring). Returns once the sync succeeded.
    pub async fn append_batch_durable(&mut self, entries: &[Entry]) -> WalResult<()> {
        self.write_batch(entries, true).await
    }

    async fn write_batch(&mut self, entries: &[Entry], durable: bool) -> WalResult<()> {
        let started = durable.then(Instant::now);
        self.check_writable()?;
        self.validate_batch(entries)?;
        self.prepare_write().await?;
        let mut rest = entries;
        while !rest.is_empty() {
            let fitting = self.entries_fitting(rest);
            if fitting == 0 {
                self.rotate().await?;
                continue;
            }
            let (chunk, remaining) = rest.split_at(fitting);
            let sync_now = durable && remaining.is_empty();
            self.write_chunk(chunk, sync_now).await?;
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
        let Some(segment) = self.segments.last() else {
            return 0;
        };
        let mut room = segment.remaining_bytes();
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
        let segment = self
            .segments
            .last()
            .expect("entries_fitting found a segment");
        let segment_id = segment.header.segment_id;
        let mut buffer = std::mem::take(&mut self.encode_buffer);
        buffer.clear();
        let mut offsets = Vec::with_capacity(chunk.len());
        let start = segment.end_offset;
        for entry in chunk {
            offsets.push((start + buffer.len() as u64) as u32);
            encode_record(&mut buffer, segment_id, entry, self.durable_index);
        }
        let alignment = segment.file.write_alignment();
        assert!(
            alignment.is_power_of_two() && alignment <= MAX_WRITE_ALIGNMENT_BYTES as u64,
            "a storage file demands a write alignment of {alignment} bytes"
        );
        let end = start + buffer.len() as u64;
        match commit_padding(end, alignment, segment.header.segment_size_bytes) {
            CommitPadding::None => {}
            CommitPadding::Record { payload_len } => {
                encode_padding(&mut buffer, segment_id, payload_len);
            }
            CommitPadding::Zeros(length) => buffer.resize(buffer.len() + length, 0),
        }
        let data: Bytes = buffer.split().freeze();
        self.encode_buffer = buffer;
        let length = data.len() as u64;
        let file = segment.file.clone();
        let started = sync_now.then(Instant::now);
        let mut result = if sync_now && !is_on(Sabotage::SkipFsync) {
            file.write_at_and_sync(start, data).await
        } else {
            file.write_at(start, data).await
        };
        if result.is_err() && sync_now && is_on(Sabotage::RetryFailedFsync) {
            result = file.sync().await;
        }
        if let Err(error) = result {
            return Err(self.fail(error));
        }
        self.counters.written_bytes.add(length);
        if let Some(started) = started {
            self.counters.syncs.increment();
            self.counters.sync_latency.record(started.elapsed());
        }
        let segment = self.segments.last_mut().expect("still there");
        segment.offsets.extend(offsets);
        segment.end_offset = start + length;
        for entry in chunk {
            self.terms.push(entry.index, entry.term);
        }
        self.next_index += chunk.len() as u64;
        if sync_now {
            self.durable_index = self.next_index - 1;
            self.unsynced = false;
        } else {
            self.unsynced = true;
        }
        if is_on(Sabotage::AckBeforeFsync) {
            self.durable_index = self.next_index - 1;
        }
        Ok(())
    }

    /// Makes every appended entry durable.
    pub async fn sync(&mut self) -> WalResult<()> {
        self.check_writable()?;
        if !self.unsynced {
            return Ok(());
        }
        let file = self
            .segments
            .last()
            .expect("unsynced implies a segment")
            .file
            .clone();
        let started = Instant::now();
        let mut synced = if is_on(Sabotage::SkipFsync) {
            Ok(())
        } else {
            file.sync().await
        };
        if synced.is_err() && is_on(Sabotage::RetryFailedFsync) {
            synced = file.sync().await;
        }
        if let Err(error) = synced {
            return Err(self.fail(error));
        }
        self.counters.syncs.increment();
        self.counters.sync_latency.record(started.elapsed());
        self.unsynced = false;
        self.durable_index = self.next_index - 1;
        Ok(())
    }

    /// Closes the last segment (syncing it first, so everything appended is durable) and opens
    /// a new one for the next index.
    async fn rotate(&mut self) -> WalResult<()> {
        self.sync().await?;
        tracing::debug!(next_index = self.next_index, "rotating to a new segment");
        // A new log's first segment is installed here too; that is no rotation.
        let full_segment = !self.segments.is_empty();
        self.start_segment(self.next_index, self.log_start_index)
            .await?;
        if full_segment {
            self.counters.segments_rotated.increment();
        }
        Ok(())
    }

    /// Creates a new segment whose first index is `first_index` and makes it the last one,
    /// from the spare file prepared in the background when there is one.
    async fn start_segment(&mut self, first_index: u64, log_start_index: u64) -> WalResult<()> {
        let created = self
            .install_next_segment(first_index, log_start_index)
            .await;
        let segment = created.map_err(|error| self.fail(error))?;
        // Recovery orders segments by id: ids must grow in the order segments join the log.
        let previous_id = self.segments.last().map(|last| last.header.segment_id);
        assert!(previous_id.is_none_or(|previous| previous < segment.header.segment_id));
        self.segments.push(segment);
        self.prepare_spare();
        Ok(())
    }

    /// Installs the next segment from a recycled file, the spare prepared in the background,
    /// or, failing both, a file zero-filled now. The segment id is reserved here, at
    /// installation, never earlier.
    async fn install_next_segment(
        &mut self,
        first_index: u64,
        log_start_index: u64,
    ) -> WalResult<Segment> {
        let dir = self.config.dir.clone();
        let (prepared, recycled) = match self.recycled.pop() {
            Some(prepared) => (prepared, true),
            None => (self.take_spare().await?, false),
        };
        let header = SegmentHeader {
            segment_id: self.reserve_segment_id(),
            first_index,
            log_start_index,
            segment_size_bytes: self.config.segment_size_bytes,
            recycled,
        };
        let segment = install_segment(&self.storage, &dir, &prepared, header).await?;
        if recycled {
            self.counters.segments_recycled.increment();
            tracing::debug!(
                segment_id = segment.header.segment_id,
                first_index,
                "new segment made from a purged segment's file"
            );
        }
        Ok(segment)
    }

    /// The spare file prepared in the background, or a new one prepared now when there is none
    /// or its preparation failed (a failed background preparation does not poison the log: only
    /// a failure here does).
    async fn take_spare(&mut self) -> WalResult<PathBuf> {
        if let Some(task) = self.spare.take() {
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
        let size = self.config.segment_size_bytes;
        prepare_segment_file(&self.storage, &self.config.dir, size).await
    }

    /// Seals a recovery cut: a new segment starting at the next index supersedes whatever lies
    /// beyond the cut, then the segments it supersedes are removed.
    async fn seal_cut(&mut self) -> WalResult<()> {
        let segment = self
            .install_next_segment(self.next_index, self.log_start_index)
            .await?;
        let previous_id = self.segments.last().map(|last| last.header.segment_id);
        assert!(previous_id.is_none_or(|previous| previous < segment.header.segment_id));
        self.segments.push(segment);
        self.seal_pending = false;
        self.prepare_spare();
        let superseded = self.report.segments_removed.clone();
        self.remove_files(&superseded).await
    }

    /// Checks that the log takes writes, sealing a pending recovery cut first. A disk still
    /// full fails the write without poisoning (the seal fails while zero-filling its file, before
    /// anything in the directory changes), so the log works again once space returns; any other
    /// failure poisons.
    async fn prepare_write(&mut self) -> WalResult<()> {
        self.check_writable()?;
        if self.seal_pending {
            tracing::info!("sealing the recovery cut before the first write");
            match self.seal_cut().await {
                Ok(()) => {}
                Err(error) if error.io_kind() == Some(std::io::ErrorKind::StorageFull) => {
                    return Err(error)
                }
                Err(error) => return Err(self.fail(error)),
            }
        }
        Ok(())
    }

    fn reserve_segment_id(&mut self) -> u64 {
        let segment_id = self.next_segment_id;
        self.next_segment_id += 1;
        segment_id
    }

    /// Starts zero-filling the next segment's file in the background, so rotation only has to
    /// write a header and rename.
    fn prepare_spare(&mut self) {
        if self.spare.is_some() || !self.recycled.is_empty() {
            return;
        }
        let storage = self.storage.clone();
        let dir = self.config.dir.clone();
        let size = self.config.segment_size_bytes;
        let task = tokio::spawn(async move { prepare_segment_file(&storage, &dir, size).await });
        self.spare = Some(task);
    }

    /// Stops preparing the spare segment; its temporary file is removed by the next recovery.
    fn abandon_spare(&mut self) {
        if let Some(task) = self.spare.take() {
            task.abort();
        }
    }

    /// Removes segment files and syncs the directory after each removal, oldest first, so a
    /// crash part-way leaves a contiguous log.
    async fn remove_files(&mut self, paths: &[PathBuf]) -> WalResult<()> {
        for path in paths {
            let removed = async {
                self.storage.remove(path).await?;
                if is_on(Sabotage::SkipDirSync) {
                    return Ok(());
                }
                self.storage.sync_dir(&self.config.dir).await
            }
            .await;
            removed.map_err(|error| self.fail(error))?;
        }
        Ok(())
    }

    /// Reads entry `index` from storage, verifying its checksum.
    pub async fn read(&self, index: u64) -> WalResult<Entry> {
        self.check_in_range(index)?;
        let mut entries = self.read_range(index, index + 1, 0).await?;
        Ok(entries.pop().expect("a one-entry range yields one entry"))
    }

    /// Reads entries `[from, to)`, stopping early once their payloads would exceed `max_bytes`;
    /// at least one entry is returned when `from < to`. `to` is clamped to `last_index() + 1`.
    /// Each record's checksum is verified.
    pub async fn read_range(&self, from: u64, to: u64, max_bytes: usize) -> WalResult<Vec<Entry>> {
        let to = to.min(self.next_index);
        if from >= to {
            return Ok(Vec::new());
        }
        self.check_in_range(from)?;
        let max_bytes = max_bytes.min(HARD_MAX_READ_RANGE_BYTES);
        let mut entries = Vec::new();
        let mut payload_bytes = 0usize;
        let mut index = from;
        let first_segment = self.segment_position(from);
        for segment in &self.segments[first_segment..] {
            while index < to && index < segment.next_index() {
                let chunk_end = chunk_end(segment, index, to);
                let (start, end) = segment.byte_range(index, chunk_end);
                let bytes = segment.file.read_at(start, (end - start) as usize).await?;
                let before = entries.len();
                segment.decode_records(&bytes, start, index, chunk_end - index, &mut entries)?;
                for position in before..entries.len() {
                    payload_bytes += entries[position].payload.len();
                    if payload_bytes > max_bytes && position > 0 {
                        entries.truncate(position);
                        return Ok(entries);
                    }
                }
                index = chunk_end;
            }
            if index >= to {
                break;
            }
        }
        Ok(entries)
    }

    /// Position in `segments` of the segment holding `index`, which is in the log.
    fn segment_position(&self, index: u64) -> usize {
        let position = self
            .segments
            .partition_point(|segment| segment.first_index() <= index);
        position - 1
    }

    /// Removes every entry after `index`, durably: when this returns, no crash can bring them
    /// back. `index` may be `first_index() - 1` (empties the log); a no-op when `index >=
    /// last_index()`.
    pub async fn truncate_after(&mut self, index: u64) -> WalResult<()> {
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
        // Entries up to `index` stay and must be durable before a newer segment vouches for
        // the chain up to it.
        self.sync().await?;
        tracing::info!(
            after = index,
            last_index = self.last_index(),
            "truncating the log"
        );
        self.start_segment(index + 1, self.log_start_index).await?;
        let new_segment = self.segments.pop().expect("just created");
        let mut superseded = Vec::new();
        while self
            .segments
            .last()
            .is_some_and(|segment| segment.first_index() > index)
        {
            superseded.push(self.segments.pop().expect("checked").path);
        }
        if let Some(last) = self.segments.last_mut() {
            last.truncate_after(index);
        }
        self.segments.push(new_segment);
        self.terms.truncate_after(index);
        self.next_index = index + 1;
        self.durable_index = self.durable_index.min(index);
        self.remove_files(&superseded).await?;
        self.counters.truncations.increment();
        Ok(())
    }

    /// Removes whole segments whose entries all lie below `index` (a snapshot covers them).
    /// The segment being appended to is never removed, so entries below `index` may remain.
    /// When `index > last_index() + 1` the log is reset: every entry goes, and the next append
    /// must carry `index` (installing a snapshot on a follower).
    pub async fn purge_before(&mut self, index: u64) -> WalResult<()> {
        self.prepare_write().await?;
        if index > MAX_LOG_INDEX {
            return Err(WalError::InvalidArgument(format!(
                "cannot purge before {index}: indexes above {MAX_LOG_INDEX} are not supported"
            )));
        }
        if index > self.next_index {
            self.reset_to(index).await?;
            self.counters.purges.increment();
            return Ok(());
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
        let purged: Vec<Segment> = self.segments.drain(..removable).collect();
        tracing::info!(before = index, segments = purged.len(), "purging segments");
        self.terms.purge_before(self.first_index());
        self.retire_segments(purged).await?;
        self.counters.purges.increment();
        Ok(())
    }

    /// Takes purged segments out of the log, oldest first, each durably before the next (a
    /// crash part-way leaves a contiguous log): a few are renamed to temporary names for reuse
    /// (recovery removes such files, so this is as final as a removal), the rest are removed.
    async fn retire_segments(&mut self, purged: Vec<Segment>) -> WalResult<()> {
        for segment in purged {
            let reusable = self.recycled.len() < RECYCLED_SEGMENTS_KEPT
                && segment.header.segment_size_bytes == self.config.segment_size_bytes;
            let path = segment.path.clone();
            drop(segment);
            let retired = async {
                if reusable {
                    let spare = segment::temporary_path(&self.storage, &self.config.dir);
                    self.storage.rename(&path, &spare).await?;
                    if !is_on(Sabotage::SkipDirSync) {
                        self.storage.sync_dir(&self.config.dir).await?;
                    }
                    Ok(Some(spare))
                } else {
                    self.storage.remove(&path).await?;
                    if !is_on(Sabotage::SkipDirSync) {
                        self.storage.sync_dir(&self.config.dir).await?;
                    }
                    Ok(None)
                }
            }
            .await;
            match retired {
                Ok(Some(spare)) => {
                    tracing::debug!(path = %path.display(), "purged segment kept for reuse");
                    self.recycled.insert(0, spare);
                }
                Ok(None) => {}
                Err(error) => return Err(self.fail(error)),
            }
        }
        Ok(())
    }

    /// Empties the log so that the next entry must be `index`: a new segment declaring
    /// `log_start_index = index` supersedes all others, which are then removed.
    async fn reset_to(&mut self, index: u64) -> WalResult<()> {
        tracing::info!(next_index = index, "resetting the log past a snapshot");
        self.start_segment(index, index).await?;
        let new_segment = self.segments.pop().expect("just created");
        let old: Vec<PathBuf> = self
            .segments
            .drain(..)
            .map(|segment| segment.path)
            .collect();
        self.segments.push(new_segment);
        self.terms.clear();
        self.log_start_index = index;
        self.next_index = index;
        self.durable_index = index - 1;
        self.unsynced = false;
        self.remove_files(&old).await
    }

    /// Syncs and closes the log. Later calls return [`WalError::Shutdown`].
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
}

/// End (exclusive) of the next chunk of a range read inside `segment`: at most
/// `RECOVERY_READ_CHUNK_BYTES` of records, but at least one record.
fn chunk_end(segment: &Segment, from: u64, to: u64) -> u64 {
    let last = to.min(segment.next_index());
    let start = segment.byte_range(from, from + 1).0;
    let mut end = from + 1;
    while end < last {
        let (_, next_end) = segment.byte_range(end, end + 1);
        if next_end - start > RECOVERY_READ_CHUNK_BYTES as u64 {
            break;
        }
        end += 1;
    }
    end
}

impl<S: Storage + Clone> Drop for Wal<S> {
    fn drop(&mut self) {
        self.abandon_spare();
    }
}

/// Takes the directory lock, retrying for up to [`LOCK_WAIT_MS`] while it is held elsewhere:
/// a predecessor that just died may hold it until the kernel has finished its last writes.
async fn lock_patiently<S: Storage>(storage: &S, dir: &std::path::Path) -> WalResult<DirLock> {
    // Real time, and a pause on the blocking pool rather than a timer: opening a log needs no
    // time driver in the runtime, and a paused test clock cannot stretch the wait.
    let deadline = Instant::now() + std::time::Duration::from_millis(LOCK_WAIT_MS);
    // Short pauses first (a dead predecessor's lock comes free within milliseconds), longer
    // ones while it stays held.
    let mut pause = std::time::Duration::from_millis(LOCK_RETRY_INTERVAL_MS);
    loop {
        match storage.lock_dir(dir).await {
            Err(WalError::Locked { .. }) if Instant::now() < deadline => {
                // A join error means the runtime is shutting down: the next attempt decides.
                let _ = tokio::task::spawn_blocking(move || std::thread::sleep(pause)).await;
                pause =
                    (pause * 2).min(std::time::Duration::from_millis(LOCK_MAX_RETRY_INTERVAL_MS));
            }
            other => return other,
        }
    }
}
