//! Reads: entries come from storage through the in-memory position index, checksums verified.

use crate::error::WalResult;
use crate::format::Entry;
use crate::limits::{HARD_MAX_READ_RANGE_BYTES, RECOVERY_READ_CHUNK_BYTES};
use crate::storage::Storage;

use super::segment::Segment;
use super::Wal;

impl<S: Storage + Clone> Wal<S> {
    /// Reads entry `index` from storage, verifying its checksum.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: it changes nothing.
    pub async fn read(&self, index: u64) -> WalResult<Entry> {
        self.check_in_range(index)?;
        let mut entries = self.read_range(index, index + 1, 0).await?;
        Ok(entries.pop().expect("a one-entry range yields one entry"))
    }

    /// Reads entries `[from, to)`, stopping early once their payloads would exceed `max_bytes`;
    /// at least one entry is returned when `from < to`. `to` is clamped to `last_index() + 1`.
    /// Each record's checksum is verified.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: it changes nothing.
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
