//! The crate's one error type.
//!
//! Every variant is structured: it names the file, the byte offset, the index or the limit
//! involved, and its message tells the operator what to do next. Callers match on variants (and
//! on [`std::io::ErrorKind`] inside [`WalError::Io`]), never on message text.

use std::fmt;
use std::io;
use std::path::PathBuf;
use std::sync::Arc;

/// Result alias used throughout the crate.
pub type WalResult<T> = Result<T, WalError>;

/// Everything that can go wrong in helix-wal.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WalError {
    /// An operating-system I/O call failed.
    #[error("{op} failed on {}: {source}", path.display())]
    Io {
        /// The operation that failed, e.g. `"write"`, `"fsync"`, `"open"`.
        op: &'static str,
        /// The file or directory the operation was applied to.
        path: PathBuf,
        /// The underlying OS error.
        #[source]
        source: io::Error,
    },

    /// A segment file holds bytes that are not a valid log: a bad checksum, an impossible length,
    /// a wrong magic number, an index out of sequence.
    #[error(
        "corrupt log data in {} at byte offset {offset}: {reason}; \
         run `helix-wal verify` on the directory, then restore it from a replica or reopen with \
         a more tolerant RecoveryMode if losing the damaged suffix is acceptable",
        segment.display()
    )]
    Corrupt {
        /// The segment file that holds the damaged bytes.
        segment: PathBuf,
        /// Byte offset inside that file where the damage starts.
        offset: u64,
        /// What exactly is wrong.
        reason: String,
    },

    /// An earlier write or fsync failed, so the log refuses every further write. After a failed
    /// fsync the kernel may have dropped dirty pages and marked them clean, so retrying could
    /// report success for data that is gone.
    #[error(
        "the log is poisoned by an earlier failure and refuses writes ({first_failure}); \
         data acknowledged as durable before that failure is safe: close the log, fix the cause \
         (disk full? failing device?) and reopen it, which recovers from what is on disk"
    )]
    Poisoned {
        /// The first failure, which poisoned the log.
        first_failure: Arc<WalError>,
    },

    /// The storage backend or the log has been shut down or closed.
    #[error("the {what} has been shut down; open a new one to continue")]
    Shutdown {
        /// What was shut down, e.g. `"io_uring storage"` or `"buffered log"`.
        what: &'static str,
    },

    /// Another log holds the directory's lock.
    #[error(
        "the log in {} is open elsewhere (another process, or another Wal in this one; \
         Wal::open waits up to {} ms for its lock); close it first: two writers would destroy \
         each other's segments",
        dir.display(),
        crate::limits::LOCK_WAIT_MS
    )]
    Locked {
        /// The log's directory.
        dir: PathBuf,
    },

    /// The log was opened read-only and refuses writes.
    #[error("the log in {} was opened read-only; open it with Wal::open to write", dir.display())]
    ReadOnly {
        /// The log's directory.
        dir: PathBuf,
    },

    /// A configuration value is out of bounds.
    #[error("invalid configuration: {field} {reason}")]
    InvalidConfig {
        /// The offending field, e.g. `"segment_size_bytes"`.
        field: &'static str,
        /// Why it is rejected, with the accepted range.
        reason: String,
    },

    /// An appended entry does not carry the next index of the log.
    #[error(
        "entry index {got} does not follow the last index {last}: the next entry must have index \
         {expected}; use truncate_after() first to replace a conflicting suffix"
    )]
    NonContiguousIndex {
        /// The index the log expected (`last + 1`).
        expected: u64,
        /// The last index currently in the log (0 when empty).
        last: u64,
        /// The index that was offered.
        got: u64,
    },

    /// An appended entry has a lower term than the entry before it.
    #[error(
        "entry {index} has term {term}, lower than term {previous_term} of the entry before it; \
         Raft terms never decrease along the log"
    )]
    TermRegression {
        /// Index of the offending entry.
        index: u64,
        /// Its term.
        term: u64,
        /// The term of the entry before it.
        previous_term: u64,
    },

    /// A payload is larger than the configured maximum entry size.
    #[error(
        "entry {index} has a {size}-byte payload, above the configured maximum of {max} bytes; \
         raise max_entry_size_bytes (hard limit {hard_max}) or split the payload"
    )]
    EntryTooLarge {
        /// Index of the offending entry.
        index: u64,
        /// Its payload size in bytes.
        size: usize,
        /// The configured maximum.
        max: usize,
        /// The hard maximum the configuration may be raised to.
        hard_max: usize,
    },

    /// An appended entry was removed by `truncate_after` before it became durable.
    #[error(
        "entry {index} was removed by truncate_after before it became durable; it is not in \
         the log (a newer leader's entry may hold that index now)"
    )]
    Truncated {
        /// The index of the removed entry.
        index: u64,
    },

    /// A read asked for an index that the log does not hold.
    #[error(
        "index {index} is not in the log, which holds [{first}, {last}] (empty when first > last)"
    )]
    IndexOutOfRange {
        /// The index that was asked for.
        index: u64,
        /// The first index the log holds.
        first: u64,
        /// The last index the log holds.
        last: u64,
    },

    /// An operation's arguments are inconsistent with the log (for example a purge beyond the
    /// last index).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),

    /// A mutating operation was stopped before it finished by something other than its caller
    /// (its task was cancelled, for example because the runtime shut down), so the log's memory
    /// may disagree with its disk. The log refuses writes from then on.
    #[error(
        "{operation} was interrupted before it finished (its task was cancelled); the log \
         refuses writes: close it and open it again to recover"
    )]
    Interrupted {
        /// The operation, e.g. `"truncate_after"`.
        operation: &'static str,
    },

    /// The io_uring backend could not start. The message names the cause and the fix.
    #[error("io_uring is unavailable: {cause}; {fix}")]
    IoUringUnavailable {
        /// What failed, e.g. `"io_uring_setup returned EPERM"`.
        cause: String,
        /// How the operator can make io_uring usable.
        fix: &'static str,
        /// The errno returned by the kernel, when there was one.
        errno: Option<i32>,
    },
}

impl WalError {
    /// Builds a [`WalError::Io`].
    pub fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        WalError::Io {
            op,
            path: path.into(),
            source,
        }
    }

    /// Builds a [`WalError::Corrupt`].
    pub fn corrupt(segment: impl Into<PathBuf>, offset: u64, reason: impl fmt::Display) -> Self {
        WalError::Corrupt {
            segment: segment.into(),
            offset,
            reason: reason.to_string(),
        }
    }

    /// The OS error kind when this is an I/O error.
    pub fn io_kind(&self) -> Option<io::ErrorKind> {
        match self {
            WalError::Io { source, .. } => Some(source.kind()),
            _ => None,
        }
    }

    /// True for [`WalError::Poisoned`].
    pub fn is_poisoned(&self) -> bool {
        matches!(self, WalError::Poisoned { .. })
    }

    /// True for [`WalError::Corrupt`].
    pub fn is_corrupt(&self) -> bool {
        matches!(self, WalError::Corrupt { .. })
    }
}

/// Records the first failure of a writer and turns every later call into
/// [`WalError::Poisoned`] naming it.
///
/// The log and the storage backends share this helper so that "after a failed write or fsync,
/// every later write fails" is implemented once.
#[derive(Debug, Default)]
pub struct Poison {
    first_failure: std::sync::OnceLock<Arc<WalError>>,
}

impl Poison {
    /// A healthy, unpoisoned state.
    pub fn new() -> Self {
        Self::default()
    }

    /// Fails with [`WalError::Poisoned`] if a failure was recorded.
    pub fn check(&self) -> WalResult<()> {
        match self.first_failure.get() {
            Some(first) => Err(WalError::Poisoned {
                first_failure: Arc::clone(first),
            }),
            None => Ok(()),
        }
    }

    /// True once a failure has been recorded.
    pub fn is_poisoned(&self) -> bool {
        self.first_failure.get().is_some()
    }

    /// Records `error` as the poisoning failure (the first one wins) and returns it to the
    /// caller unchanged, so the first caller sees the real cause and later ones see
    /// [`WalError::Poisoned`] naming it.
    pub fn poison(&self, error: WalError) -> WalError {
        if let WalError::Poisoned { first_failure } = &error {
            let _ = self.first_failure.set(Arc::clone(first_failure));
            return error;
        }
        let _ = self.first_failure.set(Arc::new(error.duplicate()));
        error
    }
}

impl WalError {
    /// A copy of this error for keeping as a poisoning cause. `io::Error` is not `Clone`, so an
    /// OS error is rebuilt from its errno (or kind and message).
    pub(crate) fn duplicate(&self) -> WalError {
        match self {
            WalError::Io { op, path, source } => WalError::Io {
                op,
                path: path.clone(),
                source: duplicate_io_error(source),
            },
            WalError::Corrupt {
                segment,
                offset,
                reason,
            } => WalError::Corrupt {
                segment: segment.clone(),
                offset: *offset,
                reason: reason.clone(),
            },
            WalError::Poisoned { first_failure } => WalError::Poisoned {
                first_failure: Arc::clone(first_failure),
            },
            WalError::Shutdown { what } => WalError::Shutdown { what },
            WalError::ReadOnly { dir } => WalError::ReadOnly { dir: dir.clone() },
            WalError::Locked { dir } => WalError::Locked { dir: dir.clone() },
            WalError::InvalidConfig { field, reason } => WalError::InvalidConfig {
                field,
                reason: reason.clone(),
            },
            WalError::NonContiguousIndex {
                expected,
                last,
                got,
            } => WalError::NonContiguousIndex {
                expected: *expected,
                last: *last,
                got: *got,
            },
            WalError::TermRegression {
                index,
                term,
                previous_term,
            } => WalError::TermRegression {
                index: *index,
                term: *term,
                previous_term: *previous_term,
            },
            WalError::EntryTooLarge {
                index,
                size,
                max,
                hard_max,
            } => WalError::EntryTooLarge {
                index: *index,
                size: *size,
                max: *max,
                hard_max: *hard_max,
            },
            WalError::Truncated { index } => WalError::Truncated { index: *index },
            WalError::IndexOutOfRange { index, first, last } => WalError::IndexOutOfRange {
                index: *index,
                first: *first,
                last: *last,
            },
            WalError::InvalidArgument(message) => WalError::InvalidArgument(message.clone()),
            WalError::Interrupted { operation } => WalError::Interrupted { operation },
            WalError::IoUringUnavailable { cause, fix, errno } => WalError::IoUringUnavailable {
                cause: cause.clone(),
                fix,
                errno: *errno,
            },
        }
    }
}

/// Rebuilds an `io::Error` with the same errno, or the same kind and message.
pub(crate) fn duplicate_io_error(error: &io::Error) -> io::Error {
    match error.raw_os_error() {
        Some(errno) => io::Error::from_raw_os_error(errno),
        None => io::Error::new(error.kind(), error.to_string()),
    }
}
