//! One segment file: its position index in memory, its creation, and the record scanner that
//! recovery uses.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use bytes::Bytes;

use crate::error::{WalError, WalResult};
use crate::format::{
    encode_segment_header, record_checksum_matches, segment_file_name, Entry, RecordHeader,
    SegmentHeader, PADDING_INDEX, TEMPORARY_SUFFIX,
};
use crate::limits::{
    MAX_PADDING_PAYLOAD_BYTES, MAX_TAIL_VERIFICATION_BYTES, RECORD_ALIGNMENT_BYTES,
    RECORD_HEADER_SIZE_BYTES, RECOVERY_READ_CHUNK_BYTES, SEGMENT_HEADER_SIZE_BYTES,
    ZERO_FILL_CHUNK_BYTES,
};
use crate::sabotage::{is_on, Sabotage};
use crate::storage::{Storage, StorageFile};

/// A segment of the log held open, with the byte offset of each of its records.
#[derive(Debug)]
pub(crate) struct Segment {
    /// The decoded header.
    pub header: SegmentHeader,
    /// The file's path.
    pub path: PathBuf,
    /// The open file.
    pub file: Arc<dyn StorageFile>,
    /// Byte offset of the record of index `header.first_index + i`. Offsets fit in `u32`
    /// because segments are at most `MAX_SEGMENT_SIZE_BYTES`.
    pub offsets: Vec<u32>,
    /// Offset just past the last live record: where the next record goes.
    pub end_offset: u64,
}

impl Segment {
    /// Index of the first entry this segment holds or would hold.
    pub fn first_index(&self) -> u64 {
        self.header.first_index
    }

    /// Number of live entries.
    pub fn len(&self) -> u64 {
        self.offsets.len() as u64
    }

    /// Index the next entry appended to this segment must have.
    pub fn next_index(&self) -> u64 {
        self.first_index() + self.len()
    }

    /// Byte range `[start, end)` of the records of indexes `[from, to)`, which must be inside
    /// this segment.
    pub fn byte_range(&self, from: u64, to: u64) -> (u64, u64) {
        assert!(self.first_index() <= from && from < to && to <= self.next_index());
        let start = u64::from(self.offsets[(from - self.first_index()) as usize]);
        let end = if to == self.next_index() {
            self.end_offset
        } else {
            u64::from(self.offsets[(to - self.first_index()) as usize])
        };
        (start, end)
    }

    /// Drops every entry above `index` from the position index (the bytes stay on disk; a newer
    /// segment makes them unreachable).
    pub fn truncate_after(&mut self, index: u64) {
        if index + 1 < self.next_index() {
            let keep = index.saturating_sub(self.first_index() - 1);
            let keep = keep.min(self.len());
            if keep < self.len() {
                self.end_offset = u64::from(self.offsets[keep as usize]);
            }
            self.offsets.truncate(keep as usize);
        }
    }

    /// Decodes the records in `bytes`, which were read from `start_offset` and cover the
    /// records of indexes `[from, from + count)`, validating each against the index.
    pub fn decode_records(
        &self,
        bytes: &Bytes,
        start_offset: u64,
        from: u64,
        count: u64,
        out: &mut Vec<Entry>,
    ) -> WalResult<()> {
        for index in from..from + count {
            let offset = u64::from(self.offsets[(index - self.first_index()) as usize]);
            let local = (offset - start_offset) as usize;
            let entry = decode_record_at(&self.path, self.header.segment_id, bytes, local)
                .map_err(|reason| WalError::corrupt(&self.path, offset, reason))?;
            if entry.index != index {
                return Err(WalError::corrupt(
                    &self.path,
                    offset,
                    format!(
                        "record holds index {} where {index} was expected",
                        entry.index
                    ),
                ));
            }
            out.push(entry);
        }
        Ok(())
    }
}

/// Decodes and checks the record starting at `local` inside `bytes`.
fn decode_record_at(
    _path: &Path,
    segment_id: u64,
    bytes: &Bytes,
    local: usize,
) -> Result<Entry, String> {
    if bytes.len() < local + RECORD_HEADER_SIZE_BYTES {
        return Err("record header is cut short by the end of the file".into());
    }
    let header = RecordHeader::parse(&bytes[local..]);
    let payload_end = local + RECORD_HEADER_SIZE_BYTES + header.payload_len as usize;
    if bytes.len() < payload_end {
        return Err(format!(
            "record claims a {}-byte payload beyond the bytes read",
            header.payload_len
        ));
    }
    if !record_checksum_matches(segment_id, &header, &bytes[local..]) {
        return Err("record checksum mismatch".into());
    }
    Ok(Entry {
        index: header.index,
        term: header.term,
        payload: bytes.slice(local + RECORD_HEADER_SIZE_BYTES..payload_end),
    })
}

/// A shared buffer of zeros for pre-writing segments; cloning it costs a reference count.
fn zero_chunk() -> Bytes {
    static ZEROS: OnceLock<Bytes> = OnceLock::new();
    ZEROS
        .get_or_init(|| Bytes::from(vec![0u8; ZERO_FILL_CHUNK_BYTES]))
        .clone()
}

/// A fresh temporary name for a segment file being prepared or kept for reuse. The storage's
/// tag makes it unique in the process, so a preparation abandoned by a dropped log can never
/// write into the file that a newer log on the same directory prepares. It carries no segment
/// id: ids are given when a file is installed, so they always increase in the order segments
/// join the log.
pub(crate) fn temporary_path<S: Storage + ?Sized>(storage: &S, dir: &Path) -> PathBuf {
    dir.join(format!(
        "spare-{}{TEMPORARY_SUFFIX}",
        storage.temporary_file_tag()
    ))
}

/// Prepares the file of a future segment: writes it out to `size_bytes` of zeros under its
/// temporary name and syncs it, so that appends later overwrite blocks that are already
/// allocated and written. This is the slow part of creating a segment; the log runs it in the
/// background ahead of need. The file is opened with `open_direct`: the chunks are whole pages,
/// and direct I/O keeps the zeros out of the page cache.
pub(crate) async fn prepare_segment_file<S: Storage + ?Sized>(
    storage: &S,
    dir: &Path,
    size_bytes: u64,
) -> WalResult<PathBuf> {
    let temporary = temporary_path(storage, dir);
    let file = storage.open_direct(&temporary).await?;
    file.set_len(0).await?;
    let mut offset = 0;
    while offset < size_bytes {
        let chunk = (size_bytes - offset).min(ZERO_FILL_CHUNK_BYTES as u64);
        file.write_at(offset, zero_chunk().slice(..chunk as usize))
            .await?;
        offset += chunk;
    }
    file.sync().await?;
    Ok(temporary)
}

/// Turns a prepared file into segment `header.segment_id`, durably: writes the header, syncs,
/// renames the file into place and syncs the directory. A crash at any point leaves either no
/// segment (and a temporary file that the next recovery removes) or the complete one. The
/// segment is opened with `open_direct`: every write to it is a whole number of blocks of its
/// write alignment (the header is a page; commits are padded).
pub(crate) async fn install_segment<S: Storage + ?Sized>(
    storage: &S,
    dir: &Path,
    prepared: &Path,
    header: SegmentHeader,
) -> WalResult<Segment> {
    let path = dir.join(segment_file_name(header.segment_id));
    let file = storage.open_direct(prepared).await?;
    let size = file.size().await?;
    if size != header.segment_size_bytes {
        return Err(WalError::io(
            "prepare segment",
            prepared,
            std::io::Error::other(format!(
                "prepared file holds {size} bytes, expected {}",
                header.segment_size_bytes
            )),
        ));
    }
    file.write_at_and_sync(0, encode_segment_header(&header))
        .await?;
    drop(file);
    storage.rename(prepared, &path).await?;
    storage.sync_dir(dir).await?;
    let file = storage.open_direct(&path).await?;
    Ok(Segment {
        header,
        path,
        file,
        offsets: Vec::new(),
        end_offset: SEGMENT_HEADER_SIZE_BYTES as u64,
    })
}

/// Why the scan of a segment's records stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ScanStop {
    /// Reached the index bound set by the next segment.
    Bound,
    /// Found an all-zero record header: the unwritten part of the segment (or a torn tail that
    /// happens to start with zeros; the caller checks the rest).
    Zeros,
    /// No room for another record header before the end of the file.
    EndOfFile,
    /// A record failed validation.
    Damaged {
        /// Offset of the damaged record.
        offset: u64,
        /// What is wrong with it.
        reason: String,
    },
}

/// The result of scanning one segment's records.
#[derive(Debug)]
pub(crate) struct Scan {
    /// Offsets of the valid records, in index order.
    pub offsets: Vec<u32>,
    /// The terms of the valid records as runs: `(index, term)` for each record whose term
    /// differs from the one before it, in index order (empty when no record is valid).
    pub terms: Vec<(u64, u64)>,
    /// Offset just past the last valid record.
    pub end_offset: u64,
    /// Why the scan stopped.
    pub stop: ScanStop,
    /// Bytes read.
    pub bytes_read: u64,
}

/// What the scanner checks each record against.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ScanLimits {
    /// Index the first record must have.
    pub first_index: u64,
    /// Stop before this index (exclusive), if set.
    pub bound: Option<u64>,
    /// Lowest acceptable term of the first record (the term of the entry before it).
    pub min_term: u64,
    /// Largest acceptable payload.
    pub max_payload_bytes: usize,
    /// Size of the file.
    pub file_size: u64,
}

/// A window of a segment file read in large chunks.
struct Window {
    base: u64,
    bytes: Bytes,
}

impl Window {
    /// Makes sure `[offset, offset + len)` is in the window, reading a large chunk if not.
    async fn ensure(
        &mut self,
        file: &dyn StorageFile,
        offset: u64,
        len: usize,
        bytes_read: &mut u64,
    ) -> WalResult<&[u8]> {
        let inside =
            offset >= self.base && offset + len as u64 <= self.base + self.bytes.len() as u64;
        if !inside {
            let want = len.max(RECOVERY_READ_CHUNK_BYTES);
            self.bytes = file.read_at(offset, want).await?;
            self.base = offset;
            *bytes_read += self.bytes.len() as u64;
        }
        let local = (offset - self.base) as usize;
        let end = (local + len).min(self.bytes.len());
        Ok(&self.bytes[local..end])
    }
}

/// Scans the records of a segment from the first one, validating checksum, index sequence,
/// term order and lengths, and stops at the first record that fails, at zeros, at the end of
/// the file or at the bound.
pub(crate) async fn scan_records(
    file: &dyn StorageFile,
    segment_id: u64,
    limits: ScanLimits,
) -> WalResult<Scan> {
    let mut scan = Scan {
        offsets: Vec::new(),
        terms: Vec::new(),
        end_offset: SEGMENT_HEADER_SIZE_BYTES as u64,
        stop: ScanStop::EndOfFile,
        bytes_read: 0,
    };
    let mut window = Window {
        base: 0,
        bytes: Bytes::new(),
    };
    let mut expected = limits.first_index;
    let mut last_term = limits.min_term;
    loop {
        if limits.bound == Some(expected) {
            scan.stop = ScanStop::Bound;
            return Ok(scan);
        }
        let offset = scan.end_offset;
        if offset + RECORD_HEADER_SIZE_BYTES as u64 > limits.file_size {
            scan.stop = ScanStop::EndOfFile;
            return Ok(scan);
        }
        let header_bytes = window
            .ensure(file, offset, RECORD_HEADER_SIZE_BYTES, &mut scan.bytes_read)
            .await?;
        if header_bytes.len() < RECORD_HEADER_SIZE_BYTES {
            scan.stop = ScanStop::EndOfFile;
            return Ok(scan);
        }
        if RecordHeader::is_zero(header_bytes) {
            scan.stop = ScanStop::Zeros;
            return Ok(scan);
        }
        let header = RecordHeader::parse(header_bytes);
        let damaged = |reason: String| ScanStop::Damaged { offset, reason };
        // A padding record may be longer than an entry (it spans up to two alignment units).
        let max_payload_bytes = if header.index == PADDING_INDEX {
            limits.max_payload_bytes.max(MAX_PADDING_PAYLOAD_BYTES)
        } else {
            limits.max_payload_bytes
        };
        if header.payload_len as usize > max_payload_bytes {
            scan.stop = damaged(format!(
                "record claims a {}-byte payload, above max_entry_size_bytes {}",
                header.payload_len, max_payload_bytes
            ));
            return Ok(scan);
        }
        let size = header.record_size();
        if offset + size as u64 > limits.file_size {
            scan.stop = damaged(format!(
                "record of {size} bytes runs past the end of the file ({} bytes)",
                limits.file_size
            ));
            return Ok(scan);
        }
        let record = window
            .ensure(file, offset, size, &mut scan.bytes_read)
            .await?;
        let kept_torn = is_on(Sabotage::KeepTornTail) && header.index == expected;
        if !record_checksum_matches(segment_id, &header, record) && !kept_torn {
            scan.stop = damaged("record checksum mismatch".into());
            return Ok(scan);
        }
        if header.index == PADDING_INDEX {
            // Filler that ends a commit on an alignment boundary: no entry, skip it.
            scan.end_offset = offset + size as u64;
            continue;
        }
        if header.index != expected {
            scan.stop = damaged(format!(
                "record holds index {} where {expected} was expected",
                header.index
            ));
            return Ok(scan);
        }
        if header.term < last_term {
            scan.stop = damaged(format!(
                "record {} has term {}, lower than the term {last_term} before it",
                header.index, header.term
            ));
            return Ok(scan);
        }
        if scan.terms.last().map(|(_, term)| *term) != Some(header.term) {
            scan.terms.push((header.index, header.term));
        }
        scan.offsets.push(offset as u32);
        scan.end_offset = offset + size as u64;
        last_term = header.term;
        expected += 1;
    }
}

/// What lies after the last valid record of the last segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum TailState {
    /// Only zeros: the unwritten part of a pre-zeroed segment.
    Clean,
    /// Non-zero bytes in a recycled segment, none of them a valid record of this segment: what
    /// the file's previous life left behind. As good as clean.
    Stale,
    /// Bytes a torn write left: non-zero bytes in a segment that was zero-filled, or a valid
    /// record of this segment past the last one that continues the log.
    Torn {
        /// First non-zero byte.
        first_nonzero_offset: u64,
    },
    /// A valid record further on says that index `durable_index` (at or above the first
    /// missing index) was durable: the damage hit acknowledged data, not an unsynced tail.
    DurableDataDamaged {
        /// Offset of the record that proves it.
        witness_offset: u64,
        /// The durable index that record carries.
        durable_index: u64,
    },
}

/// What a look for valid records past the tail found.
enum Evidence {
    /// A valid record of this segment, written after the last one that recovery kept.
    Record,
    /// Such a record that also proves the missing index was durable.
    Witness { offset: u64, durable_index: u64 },
}

/// Examines the bytes from `start` to the end of the last segment: clean, stale (recycled
/// file), a torn tail, or damage to data that a later valid record proves was durable.
/// `missing_index` is the first index that did not validate.
pub(crate) async fn examine_tail(
    file: &dyn StorageFile,
    header: &SegmentHeader,
    start: u64,
    missing_index: u64,
    limits: &ScanLimits,
) -> WalResult<TailState> {
    let mut first_nonzero = None;
    let mut later_record = false;
    let mut verification_budget = MAX_TAIL_VERIFICATION_BYTES;
    let mut offset = start;
    while offset < limits.file_size {
        let chunk = file.read_at(offset, RECOVERY_READ_CHUNK_BYTES).await?;
        if chunk.is_empty() {
            break;
        }
        if let Some(position) = chunk.iter().position(|byte| *byte != 0) {
            first_nonzero.get_or_insert(offset + position as u64);
            let found = find_later_record(
                file,
                header.segment_id,
                offset,
                &chunk,
                missing_index,
                limits,
                &mut verification_budget,
            )
            .await?;
            match found {
                Some(Evidence::Witness {
                    offset,
                    durable_index,
                }) => {
                    return Ok(TailState::DurableDataDamaged {
                        witness_offset: offset,
                        durable_index,
                    })
                }
                Some(Evidence::Record) => later_record = true,
                None => {}
            }
        }
        offset += chunk.len() as u64;
    }
    Ok(match first_nonzero {
        None => TailState::Clean,
        Some(_) if header.recycled && !later_record => TailState::Stale,
        Some(first_nonzero_offset) => TailState::Torn {
            first_nonzero_offset,
        },
    })
}

/// Looks at every aligned offset of `chunk` for a valid record of this segment that could
/// follow the kept ones (index at or above `missing_index`); returns a witness as soon as one
/// proves `missing_index` durable.
/// Records that lie inside `chunk` are checked in place; others are read, and the bytes read
/// this way are charged to `budget`: when it runs out (only crafted data gets there), the tail is
/// taken for torn, which cuts and seals it and loses nothing that was valid.
async fn find_later_record(
    file: &dyn StorageFile,
    segment_id: u64,
    chunk_offset: u64,
    chunk: &[u8],
    missing_index: u64,
    limits: &ScanLimits,
    budget: &mut u64,
) -> WalResult<Option<Evidence>> {
    // A record written after the kept ones has an index above them, and no more of them fit
    // in the file than its size over the smallest record.
    let index_span = limits.file_size / RECORD_HEADER_SIZE_BYTES as u64;
    let first_aligned =
        (chunk_offset as usize).next_multiple_of(RECORD_ALIGNMENT_BYTES) - chunk_offset as usize;
    let mut found = None;
    let mut local = first_aligned;
    while local + RECORD_HEADER_SIZE_BYTES <= chunk.len() {
        let candidate = &chunk[local..];
        local += RECORD_ALIGNMENT_BYTES;
        if RecordHeader::is_zero(candidate) {
            continue;
        }
        let header = RecordHeader::parse(candidate);
        let offset = chunk_offset + (local - RECORD_ALIGNMENT_BYTES) as u64;
        let plausible = header.index >= missing_index
            && header.index - missing_index < index_span
            && header.durable_index < header.index
            && header.payload_len as usize <= limits.max_payload_bytes
            && offset + header.record_size() as u64 <= limits.file_size;
        if !plausible {
            continue;
        }
        let start = local - RECORD_ALIGNMENT_BYTES;
        let valid = if start + header.record_size() <= chunk.len() {
            record_checksum_matches(segment_id, &header, &chunk[start..])
        } else {
            let Some(left) = budget.checked_sub(header.record_size() as u64) else {
                return Ok(Some(Evidence::Record));
            };
            *budget = left;
            let record = file.read_at(offset, header.record_size()).await?;
            record_checksum_matches(segment_id, &header, &record)
        };
        if !valid {
            continue;
        }
        if header.durable_index >= missing_index {
            return Ok(Some(Evidence::Witness {
                offset,
                durable_index: header.durable_index,
            }));
        }
        found = Some(Evidence::Record);
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::{encode_padding, encode_record};
    use crate::storage::SimulatedStorage;
    use bytes::BytesMut;

    // Proves the scanner skips a padding record between two entries (the filler an aligned
    // commit may end with) and reads on after it, and that padding never counts as an entry.
    #[tokio::test(flavor = "current_thread")]
    async fn scan_skips_padding_records() {
        let storage = SimulatedStorage::new(7);
        let file = storage.open(Path::new("/segment")).await.unwrap();
        let mut buffer = BytesMut::new();
        encode_record(&mut buffer, 3, &Entry::new(1, 1, &b"first"[..]), 0);
        encode_padding(&mut buffer, 3, 100);
        encode_record(&mut buffer, 3, &Entry::new(2, 1, &b"second"[..]), 1);
        let length = buffer.len() as u64;
        let base = SEGMENT_HEADER_SIZE_BYTES as u64;
        file.write_at(base, buffer.freeze()).await.unwrap();
        file.set_len(base + 4096).await.unwrap();
        let limits = ScanLimits {
            first_index: 1,
            bound: None,
            min_term: 0,
            max_payload_bytes: 1024,
            file_size: base + 4096,
        };
        let scan = scan_records(file.as_ref(), 3, limits).await.unwrap();
        assert_eq!(scan.offsets.len(), 2);
        assert_eq!(scan.stop, ScanStop::Zeros);
        assert_eq!(scan.end_offset, base + length);
        // A padding record written under another segment's id is damage, not filler.
        let mut foreign = BytesMut::new();
        encode_padding(&mut foreign, 4, 100);
        file.write_at(base + length, foreign.freeze())
            .await
            .unwrap();
        let scan = scan_records(file.as_ref(), 3, limits).await.unwrap();
        assert!(matches!(scan.stop, ScanStop::Damaged { .. }));
    }
}
