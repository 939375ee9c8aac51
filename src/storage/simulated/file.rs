//! Contents of one simulated file: what reads see now (volatile), what survives a crash
//! (durable), and the writes and size changes made since the last sync (pending), in order.
//!
//! A crash settles each pending operation at random, in order, onto the durable image:
//! a write reaches the media whole, is lost whole, or is settled sector by sector (each sector of
//! it kept, lost, or torn: a prefix of the new bytes, zeros, or garbage). Bytes outside the
//! write's own range are never touched, so data made durable by an earlier sync always survives.

use bytes::Bytes;

use super::rng::SimRng;
use super::CrashReport;
use crate::limits::SIMULATED_SECTOR_SIZE_BYTES;

/// Chance that an unsynced `set_len` takes effect in a crash.
const SET_LEN_KEEP_PROBABILITY: f64 = 0.5;

/// Chance that a partially settled write that extends the file also extends its size on the
/// media. Without it the settled sectors past the old end are cut off; with it, lost sectors past
/// the old end read as zeros.
const SIZE_EXTENSION_KEEP_PROBABILITY: f64 = 0.5;

/// An operation not yet durable.
#[derive(Debug, Clone)]
pub(super) enum DataOp {
    /// `write_at(offset, data)`.
    Write { offset: u64, data: Bytes },
    /// `set_len(len)`.
    SetLen(u64),
}

/// One file's contents.
#[derive(Debug, Default, Clone)]
pub(super) struct FileNode {
    pub(super) volatile: Vec<u8>,
    pub(super) durable: Vec<u8>,
    pub(super) pending: Vec<DataOp>,
}

/// Converts a file offset to an index, which the caller has bounded by the maximum file size.
fn index(offset: u64) -> usize {
    usize::try_from(offset).expect("offsets are bounded by the maximum simulated file size")
}

fn write_into(image: &mut Vec<u8>, offset: u64, data: &[u8]) {
    let start = index(offset);
    let end = start + data.len();
    if image.len() < end {
        image.resize(end, 0);
    }
    image[start..end].copy_from_slice(data);
}

fn apply_exactly(image: &mut Vec<u8>, op: &DataOp) {
    match op {
        DataOp::Write { offset, data } => write_into(image, *offset, data),
        DataOp::SetLen(len) => image.resize(index(*len), 0),
    }
}

impl FileNode {
    /// Applies a write to what reads see and records it as pending.
    pub(super) fn write(&mut self, offset: u64, data: Bytes) {
        if data.is_empty() {
            return;
        }
        write_into(&mut self.volatile, offset, &data);
        self.pending.push(DataOp::Write { offset, data });
    }

    /// Applies a size change to what reads see and records it as pending.
    pub(super) fn set_len(&mut self, len: u64) {
        self.volatile.resize(index(len), 0);
        self.pending.push(DataOp::SetLen(len));
    }

    /// A successful sync: every pending operation becomes durable.
    pub(super) fn sync(&mut self) {
        for op in std::mem::take(&mut self.pending) {
            apply_exactly(&mut self.durable, &op);
        }
    }

    /// A crash, or the writeback of a failed fsync: each pending operation reaches the media
    /// wholly, partly or not at all, and none stays pending.
    pub(super) fn settle_randomly(&mut self, rng: &mut SimRng, report: &mut CrashReport) {
        for op in std::mem::take(&mut self.pending) {
            match op {
                DataOp::SetLen(len) => {
                    if rng.chance(SET_LEN_KEEP_PROBABILITY) {
                        self.durable.resize(index(len), 0);
                        report.set_lens_kept += 1;
                    } else {
                        report.set_lens_lost += 1;
                    }
                }
                DataOp::Write { offset, data } => match rng.below(3) {
                    0 => {
                        write_into(&mut self.durable, offset, &data);
                        report.writes_kept += 1;
                    }
                    1 => report.writes_lost += 1,
                    _ => {
                        settle_sectors(&mut self.durable, offset, &data, rng, report);
                        report.writes_partial += 1;
                    }
                },
            }
        }
    }

    /// After a crash: reads see exactly the durable contents.
    pub(super) fn restart_from_durable(&mut self) {
        assert!(self.pending.is_empty(), "restart with unsettled writes");
        self.volatile.clone_from(&self.durable);
    }

    /// Drops every pending operation (the deterministic worst case of a crash).
    pub(super) fn lose_pending(&mut self, report: &mut CrashReport) {
        for op in std::mem::take(&mut self.pending) {
            match op {
                DataOp::Write { .. } => report.writes_lost += 1,
                DataOp::SetLen(_) => report.set_lens_lost += 1,
            }
        }
    }
}

/// Settles one write sector by sector onto `image`. Sectors are aligned to absolute file
/// offsets, as on a disk; only the write's own bytes in each sector are affected.
fn settle_sectors(
    image: &mut Vec<u8>,
    offset: u64,
    data: &[u8],
    rng: &mut SimRng,
    report: &mut CrashReport,
) {
    let start = index(offset);
    let end = start + data.len();
    if end > image.len() && rng.chance(SIZE_EXTENSION_KEEP_PROBABILITY) {
        image.resize(end, 0);
    }
    let mut position = start;
    while position < end {
        let sector_end = (position / SIMULATED_SECTOR_SIZE_BYTES + 1) * SIMULATED_SECTOR_SIZE_BYTES;
        let piece_end = sector_end.min(end);
        let new_bytes = &data[position - start..piece_end - start];
        // Bytes past the durable size are invisible unless the size was extended above.
        let visible_end = piece_end.min(image.len());
        if position < visible_end {
            let target = &mut image[position..visible_end];
            let new_bytes = &new_bytes[..target.len()];
            settle_sector(target, new_bytes, rng, report);
        }
        position = piece_end;
    }
}

/// Settles the part of one sector that a write covered: kept 2/5, lost 2/5, torn 1/5 (a prefix
/// of the new bytes over the old ones, zeros, or garbage, equally likely).
fn settle_sector(target: &mut [u8], new_bytes: &[u8], rng: &mut SimRng, report: &mut CrashReport) {
    match rng.below(5) {
        0 | 1 => {
            target.copy_from_slice(new_bytes);
            report.sectors_kept += 1;
        }
        2 | 3 => report.sectors_lost += 1,
        _ => match rng.below(3) {
            0 => {
                // A proper, non-empty prefix when the piece allows one.
                let prefix = match new_bytes.len() {
                    0 | 1 => 0,
                    len => 1 + index(rng.below(len as u64 - 1)),
                };
                target[..prefix].copy_from_slice(&new_bytes[..prefix]);
                report.sectors_torn_prefix += 1;
            }
            1 => {
                target.fill(0);
                report.sectors_torn_zeros += 1;
            }
            _ => {
                rng.fill(target);
                report.sectors_torn_garbage += 1;
            }
        },
    }
}
