//! Recovery: rebuilds the position index from the segment files, cuts what a crash left
//! half-written, and repairs what an interrupted rotation, truncation or purge left behind.
//!
//! The rules (docs/FORMAT.md, "Recovery"):
//! * Segments are ordered by id. A segment whose `first_index` is at or below the indexes of
//!   older segments supersedes them from that index on: truncation and tail cuts are made
//!   durable by creating such a segment, in one atomic step.
//! * No entry below the highest `log_start_index` of any header belongs to the log (purge).
//! * Each live segment must hold every index up to the next live segment's first index; a
//!   missing or damaged record there is corruption in the middle of the log.
//! * After the last valid record of the last segment there must be only zeros. Anything else is
//!   a torn tail, unless a valid record further on proves the damaged data was durable.

use std::path::{Path, PathBuf};

use crate::error::{WalError, WalResult};
use crate::format::{
    decode_segment_header, parse_segment_file_name, SegmentHeader, SEGMENT_HEADER_FIELDS_BYTES,
    TEMPORARY_SUFFIX,
};
use crate::sabotage::{is_on, Sabotage};
use crate::storage::{Storage, StorageFile, LOCK_FILE_NAME};
use crate::wal::config::{RecoveryMode, WalConfig};
use crate::wal::segment::{
    examine_tail, scan_records, Scan, ScanLimits, ScanStop, Segment, TailState,
};
use crate::wal::terms::TermRuns;

/// What recovery found and did; returned by [`Wal::recovery_report`](crate::Wal).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Segment files scanned.
    pub segments_scanned: usize,
    /// Entries recovered.
    pub entries_recovered: u64,
    /// Bytes read from segment files.
    pub bytes_read: u64,
    /// Where the log was cut, if it was: the file, the byte offset and why.
    pub cut: Option<RecoveryCut>,
    /// Segment files removed because they were superseded, purged or left after a cut.
    pub segments_removed: Vec<PathBuf>,
    /// Temporary files of interrupted segment creations that were removed.
    pub temporary_files_removed: Vec<PathBuf>,
    /// Files in the directory that are not part of the log and were left alone.
    pub foreign_files: Vec<PathBuf>,
}

/// A place where recovery discarded data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecoveryCut {
    /// The segment file.
    pub segment: PathBuf,
    /// Byte offset of the first discarded byte.
    pub offset: u64,
    /// The first index that is not in the recovered log.
    pub first_discarded_index: u64,
    /// Why.
    pub reason: String,
}

/// The state recovery hands to the log.
#[derive(Debug)]
pub(crate) struct Recovered {
    pub segments: Vec<Segment>,
    pub terms: TermRuns,
    pub next_index: u64,
    pub log_start_index: u64,
    pub next_segment_id: u64,
    /// Set when the last segment must not be appended to (a tail was cut): the log creates a
    /// fresh segment starting at `next_index`.
    pub needs_new_segment: bool,
    pub report: RecoveryReport,
}

/// A segment file found in the directory, with its header.
struct Found {
    path: PathBuf,
    file: std::sync::Arc<dyn StorageFile>,
    header: SegmentHeader,
    file_size: u64,
    /// Exclusive upper index bound set by the next live segment.
    bound: Option<u64>,
}

/// Lists the directory, removes leftovers of interrupted segment creation, and returns the
/// segment files with their ids, in id order.
async fn list_segments<S: Storage + ?Sized>(
    storage: &S,
    dir: &Path,
    read_only: bool,
    report: &mut RecoveryReport,
) -> WalResult<Vec<(u64, PathBuf)>> {
    let mut segments = Vec::new();
    for path in storage.list(dir).await? {
        let name = path
            .file_name()
            .map(|name| name.to_string_lossy().into_owned())
            .unwrap_or_default();
        if name == LOCK_FILE_NAME {
            continue;
        }
        if name.ends_with(TEMPORARY_SUFFIX) && !storage.is_dir(&path).await? {
            if !read_only {
                storage.remove(&path).await?;
            }
            report.temporary_files_removed.push(path);
        } else if let Some(id) = parse_segment_file_name(&name) {
            if storage.is_dir(&path).await? {
                return Err(WalError::corrupt(
                    &path,
                    0,
                    "a directory carries a segment file name; move it out of the log directory",
                ));
            }
            segments.push((id, path));
        } else {
            tracing::warn!(path = %path.display(), "ignoring a file that is not part of the log");
            report.foreign_files.push(path);
        }
    }
    if !read_only && !report.temporary_files_removed.is_empty() {
        storage.sync_dir(dir).await?;
    }
    segments.sort_by_key(|(id, _)| *id);
    Ok(segments)
}

/// Opens a segment file and validates its header. A writable recovery opens it with `open`:
/// [`recover`] reopens the one appends continue in with `open_direct`.
async fn open_segment<S: Storage + ?Sized>(
    storage: &S,
    id: u64,
    path: PathBuf,
    read_only: bool,
) -> WalResult<Found> {
    let file = if read_only {
        storage.open_read_only(&path).await?
    } else {
        storage.open(&path).await?
    };
    let file_size = file.size().await?;
    let bytes = file.read_at(0, SEGMENT_HEADER_FIELDS_BYTES).await?;
    let header =
        decode_segment_header(&bytes).map_err(|error| WalError::corrupt(&path, 0, error))?;
    if header.segment_id != id {
        return Err(WalError::corrupt(
            &path,
            16,
            format!(
                "header names segment {} but the file name says {id}",
                header.segment_id
            ),
        ));
    }
    Ok(Found {
        path,
        file,
        header,
        file_size,
        bound: None,
    })
}

/// Orders the segments into the live chain: superseded and purged segments are set aside for
/// removal, each live segment gets the bound set by its successor.
fn build_chain(found: Vec<Found>, report: &mut RecoveryReport) -> (Vec<Found>, Vec<PathBuf>) {
    let log_start = found
        .iter()
        .map(|segment| segment.header.log_start_index)
        .max()
        .unwrap_or(1);
    let mut live: Vec<Found> = Vec::new();
    let mut dead = Vec::new();
    for mut segment in found {
        while live
            .last()
            .is_some_and(|last| last.header.first_index >= segment.header.first_index)
        {
            dead.push(live.pop().expect("checked non-empty").path);
        }
        if let Some(previous) = live.last_mut() {
            previous.bound = Some(segment.header.first_index);
        }
        segment.bound = None;
        live.push(segment);
    }
    // Segments wholly below the log start were purged; their removal may not have finished.
    while live.len() > 1 && live[0].bound.is_some_and(|bound| bound <= log_start) {
        dead.push(live.remove(0).path);
    }
    report.segments_scanned = live.len();
    (live, dead)
}

/// Creates the log directory if needed and makes its entry durable: syncs the parent of every
/// directory it had to create, and always the log directory's own parent, because a directory
/// left by a run that crashed before syncing it may exist now and vanish at the next power loss,
/// taking every segment in it along.
pub(crate) async fn create_log_dir<S: Storage + ?Sized>(storage: &S, dir: &Path) -> WalResult<()> {
    let mut missing = Vec::new();
    let mut current = Some(dir);
    while let Some(path) = current {
        if path.as_os_str().is_empty() || storage.exists(path).await? {
            break;
        }
        missing.push(path);
        current = path.parent();
    }
    storage.create_dir_all(dir).await?;
    if missing.is_empty() {
        missing.push(dir);
    }
    for created in missing.into_iter().rev() {
        let parent = match created.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => parent,
            _ => Path::new("."),
        };
        storage.sync_dir(parent).await?;
    }
    Ok(())
}

/// Recovers the log in `config.dir`. With `read_only`, nothing on disk changes: the result
/// and the report say what a writable recovery would keep, cut and remove.
pub(crate) async fn recover<S: Storage + ?Sized>(
    storage: &S,
    config: &WalConfig,
    read_only: bool,
) -> WalResult<Recovered> {
    let dir = &config.dir;
    if read_only {
        if !storage.is_dir(dir).await? {
            return Err(WalError::io(
                "open",
                dir,
                std::io::Error::new(std::io::ErrorKind::NotFound, "no such log directory"),
            ));
        }
    } else {
        create_log_dir(storage, dir).await?;
    }
    let mut report = RecoveryReport::default();
    let listed = list_segments(storage, dir, read_only, &mut report).await?;
    let next_segment_id = listed.last().map_or(1, |(id, _)| id + 1);
    let mut found = Vec::with_capacity(listed.len());
    for (id, path) in listed {
        // A damaged header is an error in every mode, PointInTime included: its first index is
        // unknown, so recovery cannot tell which records of older segments it superseded (a
        // truncation's segment hides the truncated entries), and keeping the older segments
        // whole could bring truncated entries back.
        found.push(open_segment(storage, id, path, read_only).await?);
    }
    let (mut live, mut dead) = build_chain(found, &mut report);
    if !read_only {
        if let Some(last) = live.last_mut() {
            // Appends continue in the last segment: reopen it as the log writes segments
            // (with `open_direct`, so its writes may go straight to the device). The others
            // are only read.
            last.file = storage.open_direct(&last.path).await?;
        }
    }
    let log_start_index = live
        .iter()
        .map(|segment| segment.header.log_start_index)
        .max()
        .unwrap_or(1);
    let mut state = ChainScan {
        config,
        segments: Vec::with_capacity(live.len()),
        terms: TermRuns::default(),
        needs_new_segment: false,
        read_only,
        report,
    };
    let total = live.len();
    let mut live = live.into_iter();
    for (position, found) in live.by_ref().enumerate() {
        let is_last = position + 1 == total;
        if !state.scan_one(found, is_last).await? {
            break;
        }
    }
    // Everything after a cut is discarded.
    dead.extend(live.map(|found| found.path));
    let next_index = state
        .segments
        .last()
        .map_or(log_start_index, |segment| segment.next_index());
    if read_only {
        state.report.segments_removed = dead;
    } else {
        finish(storage, dir, &mut state, dead).await?;
    }
    Ok(Recovered {
        segments: state.segments,
        terms: state.terms,
        next_index,
        log_start_index,
        next_segment_id,
        needs_new_segment: state.needs_new_segment,
        report: state.report,
    })
}

/// Makes the recovered state durable: syncs the last live segment (its records may exist only
/// in the page cache after a process crash) and removes superseded segments.
async fn finish<S: Storage + ?Sized>(
    storage: &S,
    dir: &Path,
    state: &mut ChainScan<'_>,
    dead: Vec<PathBuf>,
) -> WalResult<()> {
    if let Some(last) = state.segments.last() {
        last.file.sync().await?;
    }
    if state.needs_new_segment {
        // The removal must wait until the segment that supersedes them exists; the log creates
        // it and then removes these. Keep them listed for it.
        state.report.segments_removed = dead;
    } else {
        for path in &dead {
            tracing::info!(path = %path.display(), "removing a superseded segment");
            storage.remove(path).await?;
        }
        state.report.segments_removed = dead;
    }
    // Always: a previous run may have been killed between renaming a segment into place (or
    // removing one) and syncing the directory. What recovery just read must be what a power
    // loss keeps before anything is appended to it.
    storage.sync_dir(dir).await
}

/// The scan of the live chain, segment by segment.
struct ChainScan<'a> {
    config: &'a WalConfig,
    segments: Vec<Segment>,
    terms: TermRuns,
    needs_new_segment: bool,
    /// Inspection only: change nothing, not even the page cache.
    read_only: bool,
    report: RecoveryReport,
}

impl ChainScan<'_> {
    /// Scans one live segment and decides what its end means. Returns false when the log ends
    /// here (a cut): later segments are discarded.
    async fn scan_one(&mut self, found: Found, is_last: bool) -> WalResult<bool> {
        let first_index = found.header.first_index;
        if let Some(previous) = self.segments.last() {
            // The previous segment stopped at its bound, which is this segment's first index.
            assert_eq!(
                previous.next_index(),
                first_index,
                "recovery chain out of order"
            );
        }
        if is_last {
            // The segment appends continue in: a failed fsync of a previous run may have left
            // pages that the cache serves but the device never got. Sync, then drop the cache,
            // so the scan reads what is really durable. A read-only open cannot sync, but it
            // drops the clean pages too (dirty ones stay, as a sync would make them durable),
            // so it sees what recovery would.
            if !self.read_only {
                found.file.sync().await?;
            }
            found.file.evict_cache().await?;
        }
        let limits = ScanLimits {
            first_index,
            bound: found.bound,
            min_term: self.terms.last_term().unwrap_or(0),
            max_payload_bytes: self.config.max_entry_size_bytes,
            // Bytes past the size the header declares are not part of the segment.
            file_size: found.file_size.min(found.header.segment_size_bytes),
        };
        let scan = scan_records(found.file.as_ref(), found.header.segment_id, limits).await?;
        self.report.bytes_read += scan.bytes_read;
        self.report.entries_recovered += scan.offsets.len() as u64;
        let (stop, end_offset) = (scan.stop.clone(), scan.end_offset);
        let missing_index = first_index + scan.offsets.len() as u64;
        self.push(found, scan);
        match stop {
            ScanStop::Bound => Ok(true),
            _ if !is_last => {
                // A non-last segment must reach its bound; the next segment will report the
                // gap, but the reason is better told here.
                let reason = match stop {
                    ScanStop::Damaged { reason, .. } => reason,
                    _ => "the segment ends before the index the next segment starts at".into(),
                };
                let path = self.segments.last().expect("just pushed").path.clone();
                self.cut_or_fail(path, end_offset, missing_index, reason)
            }
            ScanStop::EndOfFile => Ok(true),
            ScanStop::Zeros | ScanStop::Damaged { .. } => {
                self.check_tail(end_offset, missing_index, stop).await
            }
        }
    }

    /// Adds a scanned segment to the recovered state.
    fn push(&mut self, found: Found, scan: Scan) {
        for (index, term) in scan.terms {
            self.terms.push(index, term);
        }
        self.segments.push(Segment {
            header: found.header,
            path: found.path,
            file: found.file,
            offsets: scan.offsets,
            end_offset: scan.end_offset,
        });
    }

    /// Decides what the bytes after the last valid record of the last segment mean.
    async fn check_tail(
        &mut self,
        start: u64,
        missing_index: u64,
        stop: ScanStop,
    ) -> WalResult<bool> {
        let segment = self.segments.last().expect("scanned");
        let limits = ScanLimits {
            first_index: segment.first_index(),
            bound: None,
            min_term: 0,
            max_payload_bytes: self.config.max_entry_size_bytes,
            file_size: segment
                .file
                .size()
                .await?
                .min(segment.header.segment_size_bytes),
        };
        let tail = examine_tail(
            segment.file.as_ref(),
            &segment.header,
            start,
            missing_index,
            &limits,
        )
        .await?;
        let path = segment.path.clone();
        let damage = match &stop {
            ScanStop::Damaged { reason, .. } => reason.clone(),
            _ => "non-zero bytes after the last record".into(),
        };
        match tail {
            TailState::Clean | TailState::Stale => Ok(true),
            TailState::Torn { .. } => {
                if self.config.recovery_mode == RecoveryMode::AbsoluteConsistency {
                    return Err(WalError::corrupt(
                        &path,
                        start,
                        format!("{damage} (a torn tail; AbsoluteConsistency refuses to cut it)"),
                    ));
                }
                self.cut(path, start, missing_index, format!("torn tail: {damage}"));
                Ok(false)
            }
            TailState::DurableDataDamaged {
                witness_offset,
                durable_index,
            } => {
                let reason = format!(
                    "{damage}; the valid record at offset {witness_offset} shows index \
                     {durable_index} was durable, so acknowledged data is damaged"
                );
                self.cut_or_fail(path, start, missing_index, reason)
            }
        }
    }

    /// Under PointInTime, cuts the log here; otherwise fails with a Corrupt error.
    fn cut_or_fail(
        &mut self,
        segment: PathBuf,
        offset: u64,
        first_discarded_index: u64,
        reason: String,
    ) -> WalResult<bool> {
        if self.config.recovery_mode == RecoveryMode::PointInTime {
            self.cut(segment, offset, first_discarded_index, reason);
            Ok(false)
        } else {
            Err(WalError::corrupt(segment, offset, reason))
        }
    }

    /// Records a cut: the log ends before `first_discarded_index`, and the next append must go
    /// to a fresh segment that supersedes whatever lies beyond.
    fn cut(&mut self, segment: PathBuf, offset: u64, first_discarded_index: u64, reason: String) {
        tracing::warn!(
            segment = %segment.display(),
            offset,
            first_discarded_index,
            %reason,
            "recovery cut the log"
        );
        // The segment holding the cut may have kept entries past it in memory (a gap found
        // at the next segment): drop them.
        if let Some(last) = self.segments.last_mut() {
            last.truncate_after(first_discarded_index - 1);
        }
        self.terms.truncate_after(first_discarded_index - 1);
        self.needs_new_segment = !is_on(Sabotage::LeaveCutUnsealed);
        self.report.cut = Some(RecoveryCut {
            segment,
            offset,
            first_discarded_index,
            reason,
        });
    }
}
