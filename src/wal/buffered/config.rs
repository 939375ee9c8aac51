//! The configuration of a `BufferedWal`.

use crate::error::{WalError, WalResult};
use crate::limits::{
    DEFAULT_FLUSH_INTERVAL_MS, DEFAULT_MAX_BUFFERED_BYTES, DEFAULT_MAX_BUFFERED_ENTRIES,
    HARD_MAX_BUFFERED_BYTES, HARD_MAX_BUFFERED_ENTRIES, MAX_FLUSH_INTERVAL_MS,
};

/// Configuration of a [`BufferedWal`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BufferedWalConfig {
    /// Longest time an entry waits in the buffer before a flush, in milliseconds. Default 10;
    /// at most [`MAX_FLUSH_INTERVAL_MS`]. Zero flushes as soon as anything is buffered (every
    /// append is synced; concurrent appends share a sync).
    pub flush_interval_ms: u64,
    /// Buffered entries that trigger a flush before the interval elapses; appenders wait while
    /// the buffer is this full. Default 4096; within `[1, HARD_MAX_BUFFERED_ENTRIES]`.
    pub max_buffered_entries: usize,
    /// Buffered payload bytes that trigger a flush; appenders wait while the buffer is this
    /// full. Default 4 MiB; within `[1, HARD_MAX_BUFFERED_BYTES]`.
    pub max_buffered_bytes: usize,
}

impl Default for BufferedWalConfig {
    fn default() -> Self {
        Self {
            flush_interval_ms: DEFAULT_FLUSH_INTERVAL_MS,
            max_buffered_entries: DEFAULT_MAX_BUFFERED_ENTRIES,
            max_buffered_bytes: DEFAULT_MAX_BUFFERED_BYTES,
        }
    }
}

impl BufferedWalConfig {
    /// Checks every field against its bounds.
    pub fn validate(&self) -> WalResult<()> {
        if self.flush_interval_ms > MAX_FLUSH_INTERVAL_MS {
            return Err(WalError::InvalidConfig {
                field: "flush_interval_ms",
                reason: format!(
                    "is {}, must be at most {MAX_FLUSH_INTERVAL_MS}",
                    self.flush_interval_ms
                ),
            });
        }
        if !(1..=HARD_MAX_BUFFERED_ENTRIES).contains(&self.max_buffered_entries) {
            return Err(WalError::InvalidConfig {
                field: "max_buffered_entries",
                reason: format!(
                    "is {}, must be within [1, {HARD_MAX_BUFFERED_ENTRIES}]",
                    self.max_buffered_entries
                ),
            });
        }
        if !(1..=HARD_MAX_BUFFERED_BYTES).contains(&self.max_buffered_bytes) {
            return Err(WalError::InvalidConfig {
                field: "max_buffered_bytes",
                reason: format!(
                    "is {}, must be within [1, {HARD_MAX_BUFFERED_BYTES}]",
                    self.max_buffered_bytes
                ),
            });
        }
        Ok(())
    }
}
