//! helix-wal: a crash-safe, segmented, checksummed write-ahead log for Raft-based systems.
//!
//! The crate has two layers with a clean line between them:
//!
//! * the log ([`Wal`], [`BufferedWal`]): entries, segments, recovery, truncation and purge;
//! * storage backends behind the [`Storage`] / [`StorageFile`] traits: [`TokioStorage`] (portable
//!   default), [`SimulatedStorage`] (in memory, deterministic faults and crashes) and, with the
//!   `io-uring` feature on Linux, the io_uring backend.
//!
//! Durability is the product: no entry is reported durable before a successful fsync covers it,
//! and after a failed write or fsync the log refuses further writes.
#![warn(missing_docs)]

#[cfg(feature = "test-support")]
pub mod conformance;
mod error;
mod format;
mod limits;
#[cfg(feature = "metrics")]
mod metrics_export;
#[cfg(feature = "sabotage")]
#[doc(hidden)]
pub mod sabotage;
#[cfg(not(feature = "sabotage"))]
#[allow(dead_code)]
mod sabotage;
mod stats;
mod storage;
mod wal;

pub use error::{WalError, WalResult};
pub use format::{durable_append_bytes, Entry};
#[cfg(feature = "metrics")]
pub use metrics_export::{export_metrics, METRIC_LABEL};
pub use stats::{GroupCommitStats, LatencyHistogram, WalStats};
pub use storage::{
    create_storage, create_storage_with, CheckedFile, CheckedStorage, CrashReport, DirLock,
    FaultConfig, FaultCounters, FaultKind, NoSpaceScope, OneShotFault, SimRng, SimulatedConfig,
    SimulatedStorage, Storage, StorageChoice, StorageFile, StorageOptions, TokioStorage,
    LOCK_FILE_NAME,
};
#[cfg(all(target_os = "linux", feature = "io-uring"))]
pub use storage::{io_uring_limits, IoUringConfig, IoUringStats, IoUringWorkerStorage, TaskRun};
pub use wal::config::{RecoveryMode, WalConfig};
pub use wal::recovery::{RecoveryCut, RecoveryReport};
pub use wal::{BufferedWal, BufferedWalConfig, SegmentInfo, Wal};

/// Limits and defaults, as named constants.
pub mod constants {
    pub use crate::limits::*;
}

/// The README's examples, compiled and run as doc-tests.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
