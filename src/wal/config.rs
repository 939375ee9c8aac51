//! Configuration of the log and the recovery policy.

use std::path::PathBuf;

use crate::error::{WalError, WalResult};
use crate::format::record_size;
use crate::limits::{
    DEFAULT_MAX_ENTRY_SIZE_BYTES, DEFAULT_SEGMENT_SIZE_BYTES, HARD_MAX_ENTRY_SIZE_BYTES,
    MAX_SEGMENT_SIZE_BYTES, MIN_SEGMENT_SIZE_BYTES, SEGMENT_HEADER_SIZE_BYTES,
};

/// What recovery does when it finds damaged records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RecoveryMode {
    /// Cut a torn, zero-filled or garbage tail of the last segment (what a crash during an
    /// unsynced write leaves behind). Corruption anywhere else, or damage to a record that a
    /// later record proves was durable, is an error. The default.
    #[default]
    TolerateTailCorruption,
    /// Any damaged byte anywhere is an error, the tail included.
    AbsoluteConsistency,
    /// Stop at the first damaged record anywhere and discard it and everything after it: the log
    /// becomes the longest intact prefix. For Raft followers that re-replicate the rest from the
    /// leader.
    PointInTime,
}

/// Configuration of a [`Wal`](crate::Wal).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WalConfig {
    /// Directory holding the segment files; created if missing. One log per directory.
    pub dir: PathBuf,
    /// Size each segment file is pre-written to, in bytes. Default 64 MiB; bounds
    /// [`MIN_SEGMENT_SIZE_BYTES`], [`MAX_SEGMENT_SIZE_BYTES`], and large enough for one record of
    /// `max_entry_size_bytes` after the header.
    pub segment_size_bytes: u64,
    /// Largest accepted payload of one entry, in bytes. Default 1 MiB; at most
    /// [`HARD_MAX_ENTRY_SIZE_BYTES`]. Recovery treats a record claiming a larger payload as
    /// damaged, so never lower this below the largest entry already in a log.
    pub max_entry_size_bytes: usize,
    /// What recovery does about damaged records. Default
    /// [`RecoveryMode::TolerateTailCorruption`].
    pub recovery_mode: RecoveryMode,
}

impl WalConfig {
    /// The defaults for a log in `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            segment_size_bytes: DEFAULT_SEGMENT_SIZE_BYTES,
            max_entry_size_bytes: DEFAULT_MAX_ENTRY_SIZE_BYTES,
            recovery_mode: RecoveryMode::default(),
        }
    }

    /// Sets `segment_size_bytes`.
    pub fn segment_size_bytes(mut self, bytes: u64) -> Self {
        self.segment_size_bytes = bytes;
        self
    }

    /// Sets `max_entry_size_bytes`.
    pub fn max_entry_size_bytes(mut self, bytes: usize) -> Self {
        self.max_entry_size_bytes = bytes;
        self
    }

    /// Sets `recovery_mode`.
    pub fn recovery_mode(mut self, mode: RecoveryMode) -> Self {
        self.recovery_mode = mode;
        self
    }

    /// Checks every field against its bounds.
    pub fn validate(&self) -> WalResult<()> {
        if self.dir.as_os_str().is_empty() {
            return Err(WalError::InvalidConfig {
                field: "dir",
                reason: "must name a directory".into(),
            });
        }
        if !(MIN_SEGMENT_SIZE_BYTES..=MAX_SEGMENT_SIZE_BYTES).contains(&self.segment_size_bytes) {
            return Err(WalError::InvalidConfig {
                field: "segment_size_bytes",
                reason: format!(
                    "is {}, must be within [{MIN_SEGMENT_SIZE_BYTES}, {MAX_SEGMENT_SIZE_BYTES}]",
                    self.segment_size_bytes
                ),
            });
        }
        if self.segment_size_bytes % 4096 != 0 {
            return Err(WalError::InvalidConfig {
                field: "segment_size_bytes",
                reason: format!(
                    "is {}, must be a multiple of 4096 (whole pages)",
                    self.segment_size_bytes
                ),
            });
        }
        if self.max_entry_size_bytes == 0 || self.max_entry_size_bytes > HARD_MAX_ENTRY_SIZE_BYTES {
            return Err(WalError::InvalidConfig {
                field: "max_entry_size_bytes",
                reason: format!(
                    "is {}, must be within [1, {HARD_MAX_ENTRY_SIZE_BYTES}]",
                    self.max_entry_size_bytes
                ),
            });
        }
        let largest_segment_use =
            (SEGMENT_HEADER_SIZE_BYTES + record_size(self.max_entry_size_bytes)) as u64;
        if largest_segment_use > self.segment_size_bytes {
            return Err(WalError::InvalidConfig {
                field: "segment_size_bytes",
                reason: format!(
                    "is {}, too small for one entry of max_entry_size_bytes ({}): needs at \
                     least {largest_segment_use}",
                    self.segment_size_bytes, self.max_entry_size_bytes
                ),
            });
        }
        Ok(())
    }
}
