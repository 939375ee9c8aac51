//! Configuration, one-shot faults, counters and crash reports of [`SimulatedStorage`].
//!
//! [`SimulatedStorage`]: super::SimulatedStorage

use std::path::Path;

use crate::error::{WalError, WalResult};
use crate::limits::MAX_WRITE_ALIGNMENT_BYTES;

/// A kind of fault the simulator can inject. Each has a rate in [`FaultConfig`] and can be
/// injected once (or N times) with [`OneShotFault`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FaultKind {
    /// `write_at` (and `set_len`) fails with EIO; nothing is written.
    WriteError,
    /// `write_at` applies a random non-empty proper prefix of the data, then fails with EIO
    /// (the OS wrote part of it and the continuation failed). Only writes of 2 or more bytes are
    /// eligible.
    ShortWrite,
    /// `sync` fails with EIO and, as Linux does, drops the dirty data and marks it clean: a
    /// random part of the unsynced writes reached the media, the rest never will.
    SyncError,
    /// `sync_dir` fails with EIO; the pending directory changes it covered are settled at
    /// random (some reach the media, the rest never will).
    SyncDirError,
    /// `read_at` fails with EIO.
    ReadError,
    /// `read_at` returns the data with one bit flipped (the stored data is unchanged). Only
    /// reads that return at least one byte are eligible.
    ReadBitFlip,
    /// A write fails with ENOSPC before writing anything. Which writes are eligible is chosen by
    /// [`FaultConfig::no_space_scope`].
    NoSpace,
    /// `open` fails with EIO.
    OpenError,
    /// `list` fails with EIO.
    ListError,
    /// `remove` fails with EIO; nothing is removed.
    RemoveError,
    /// `rename` fails with EIO; nothing is renamed.
    RenameError,
}

impl FaultKind {
    /// Every kind, in a fixed order.
    pub const ALL: [FaultKind; 11] = [
        FaultKind::WriteError,
        FaultKind::ShortWrite,
        FaultKind::SyncError,
        FaultKind::SyncDirError,
        FaultKind::ReadError,
        FaultKind::ReadBitFlip,
        FaultKind::NoSpace,
        FaultKind::OpenError,
        FaultKind::ListError,
        FaultKind::RemoveError,
        FaultKind::RenameError,
    ];
}

/// Which writes an injected ENOSPC ([`FaultKind::NoSpace`]) may hit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum NoSpaceScope {
    /// Only writes that extend the file (overwrites of allocated blocks need no new space).
    #[default]
    ExtendingWrites,
    /// Every write.
    AllWrites,
}

/// Per-operation fault probabilities. Each rate is a probability in `[0, 1]` that one eligible
/// operation fails that way; the default is 0 for all (no faults). Changeable at run time with
/// [`SimulatedStorage::set_faults`](super::SimulatedStorage::set_faults), so a test can turn
/// faults off before it verifies.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct FaultConfig {
    /// Probability that a `write_at` or `set_len` fails with EIO. Default 0.
    pub write_error_rate: f64,
    /// Probability that a `write_at` of 2+ bytes is applied in part and then fails. Default 0.
    pub short_write_rate: f64,
    /// Probability that a file `sync` fails (fsyncgate semantics). Default 0.
    pub sync_error_rate: f64,
    /// Probability that a `sync_dir` fails. Default 0.
    pub sync_dir_error_rate: f64,
    /// Probability that a `read_at` fails with EIO. Default 0.
    pub read_error_rate: f64,
    /// Probability that a non-empty `read_at` returns one flipped bit. Default 0.
    pub read_bit_flip_rate: f64,
    /// Probability that an eligible write fails with ENOSPC. Default 0.
    pub no_space_rate: f64,
    /// Which writes `no_space_rate` applies to. Default: extending writes only.
    pub no_space_scope: NoSpaceScope,
    /// Probability that an `open` fails with EIO. Default 0.
    pub open_error_rate: f64,
    /// Probability that a `list` fails with EIO. Default 0.
    pub list_error_rate: f64,
    /// Probability that a `remove` fails with EIO. Default 0.
    pub remove_error_rate: f64,
    /// Probability that a `rename` fails with EIO. Default 0.
    pub rename_error_rate: f64,
}

impl FaultConfig {
    /// No faults at all (the default).
    pub fn none() -> Self {
        Self::default()
    }

    /// The same rate for every fault kind; handy for soak runs.
    pub fn uniform(rate: f64) -> Self {
        FaultKind::ALL
            .iter()
            .fold(Self::none(), |config, kind| config.with_rate(*kind, rate))
    }

    /// This configuration with the rate of `kind` set to `rate`.
    pub fn with_rate(mut self, kind: FaultKind, rate: f64) -> Self {
        *self.rate_mut(kind) = rate;
        self
    }

    /// The rate of `kind`.
    pub fn rate(&self, kind: FaultKind) -> f64 {
        match kind {
            FaultKind::WriteError => self.write_error_rate,
            FaultKind::ShortWrite => self.short_write_rate,
            FaultKind::SyncError => self.sync_error_rate,
            FaultKind::SyncDirError => self.sync_dir_error_rate,
            FaultKind::ReadError => self.read_error_rate,
            FaultKind::ReadBitFlip => self.read_bit_flip_rate,
            FaultKind::NoSpace => self.no_space_rate,
            FaultKind::OpenError => self.open_error_rate,
            FaultKind::ListError => self.list_error_rate,
            FaultKind::RemoveError => self.remove_error_rate,
            FaultKind::RenameError => self.rename_error_rate,
        }
    }

    fn rate_mut(&mut self, kind: FaultKind) -> &mut f64 {
        match kind {
            FaultKind::WriteError => &mut self.write_error_rate,
            FaultKind::ShortWrite => &mut self.short_write_rate,
            FaultKind::SyncError => &mut self.sync_error_rate,
            FaultKind::SyncDirError => &mut self.sync_dir_error_rate,
            FaultKind::ReadError => &mut self.read_error_rate,
            FaultKind::ReadBitFlip => &mut self.read_bit_flip_rate,
            FaultKind::NoSpace => &mut self.no_space_rate,
            FaultKind::OpenError => &mut self.open_error_rate,
            FaultKind::ListError => &mut self.list_error_rate,
            FaultKind::RemoveError => &mut self.remove_error_rate,
            FaultKind::RenameError => &mut self.rename_error_rate,
        }
    }

    /// Checks that every rate is a finite probability in `[0, 1]`.
    pub fn validate(&self) -> WalResult<()> {
        for kind in FaultKind::ALL {
            let rate = self.rate(kind);
            if !(0.0..=1.0).contains(&rate) {
                return Err(WalError::InvalidConfig {
                    field: rate_field_name(kind),
                    reason: format!("is {rate}; a fault rate must be a probability in [0, 1]"),
                });
            }
        }
        Ok(())
    }
}

fn rate_field_name(kind: FaultKind) -> &'static str {
    match kind {
        FaultKind::WriteError => "write_error_rate",
        FaultKind::ShortWrite => "short_write_rate",
        FaultKind::SyncError => "sync_error_rate",
        FaultKind::SyncDirError => "sync_dir_error_rate",
        FaultKind::ReadError => "read_error_rate",
        FaultKind::ReadBitFlip => "read_bit_flip_rate",
        FaultKind::NoSpace => "no_space_rate",
        FaultKind::OpenError => "open_error_rate",
        FaultKind::ListError => "list_error_rate",
        FaultKind::RemoveError => "remove_error_rate",
        FaultKind::RenameError => "rename_error_rate",
    }
}

/// A deterministic fault: the next `count` eligible operations of `kind` fail, optionally only
/// those whose path contains `path_contains`. One-shot faults fire before rates are consulted
/// and draw nothing from the random generator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OneShotFault {
    /// The fault to inject.
    pub kind: FaultKind,
    /// How many eligible operations fail (at least 1).
    pub count: u32,
    /// When set, only operations on a path whose display form contains this text are eligible
    /// (for `rename`, the source path).
    pub path_contains: Option<String>,
}

impl OneShotFault {
    /// The next eligible operation of `kind`, on any path, fails.
    pub fn next(kind: FaultKind) -> Self {
        Self {
            kind,
            count: 1,
            path_contains: None,
        }
    }

    /// Only operations on paths containing `text` are eligible.
    pub fn on_path(mut self, text: impl Into<String>) -> Self {
        self.path_contains = Some(text.into());
        self
    }

    /// The next `count` eligible operations fail.
    pub fn times(mut self, count: u32) -> Self {
        self.count = count;
        self
    }

    pub(super) fn matches(&self, kind: FaultKind, path: &Path) -> bool {
        self.kind == kind
            && self.count > 0
            && self
                .path_contains
                .as_ref()
                .is_none_or(|text| path.to_string_lossy().contains(text.as_str()))
    }
}

/// Everything needed to build a [`SimulatedStorage`](super::SimulatedStorage).
#[derive(Debug, Clone, PartialEq)]
pub struct SimulatedConfig {
    /// Seed of every random choice (faults and crash outcomes).
    pub seed: u64,
    /// Total capacity in bytes: a write that would make the sum of the lengths of all linked
    /// files exceed it writes what fits and fails with ENOSPC. `None` (the default) is unlimited.
    pub capacity_bytes: Option<u64>,
    /// Fault rates. Default: none.
    pub faults: FaultConfig,
    /// 1 (the default): every file behaves as a buffered file. A power of two up to
    /// [`MAX_WRITE_ALIGNMENT_BYTES`](crate::constants::MAX_WRITE_ALIGNMENT_BYTES): files opened
    /// with [`Storage::open_direct`](crate::Storage::open_direct) behave as opened with
    /// `O_DIRECT | O_DSYNC`: a write whose offset or length is not a multiple of it fails with
    /// EINVAL, and a successful write is durable when it returns (with what was written before
    /// it). Files from `open` stay buffered.
    pub write_alignment_bytes: u64,
    /// Probability in `[0, 1]` that one storage call (any but `lock_dir`) is left in flight:
    /// its future returns `Pending` and the call takes effect at a later, seeded point, whether
    /// or not the future is still awaited, as a kernel finishes an I/O whose caller went away.
    /// Operations in flight complete out of order, so a write whose future was dropped can land
    /// after a later write to the same bytes. Default 0: every call completes in its first poll.
    /// Changeable at run time with
    /// [`SimulatedStorage::set_in_flight_rate`](super::SimulatedStorage::set_in_flight_rate).
    pub in_flight_rate: f64,
}

impl SimulatedConfig {
    /// A fault-free, unlimited configuration with the given seed.
    pub fn new(seed: u64) -> Self {
        Self {
            seed,
            capacity_bytes: None,
            faults: FaultConfig::none(),
            write_alignment_bytes: 1,
            in_flight_rate: 0.0,
        }
    }

    /// Checks every field.
    pub fn validate(&self) -> WalResult<()> {
        let alignment = self.write_alignment_bytes;
        if !alignment.is_power_of_two() || alignment > MAX_WRITE_ALIGNMENT_BYTES as u64 {
            return Err(WalError::InvalidConfig {
                field: "write_alignment_bytes",
                reason: format!(
                    "is {alignment}, must be a power of two up to {MAX_WRITE_ALIGNMENT_BYTES}"
                ),
            });
        }
        validate_in_flight_rate(self.in_flight_rate)?;
        self.faults.validate()
    }
}

/// Checks that `rate` is a probability in `[0, 1]` (NaN is not).
pub(super) fn validate_in_flight_rate(rate: f64) -> WalResult<()> {
    if (0.0..=1.0).contains(&rate) {
        return Ok(());
    }
    Err(WalError::InvalidConfig {
        field: "in_flight_rate",
        reason: format!("is {rate}; it must be a probability in [0, 1]"),
    })
}

/// How many faults of each kind were injected (by rate or one-shot), plus ENOSPC from the
/// capacity limit, calls left in flight, and crashes. A snapshot: later faults do not change it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FaultCounters {
    /// Injected write (and `set_len`) EIO errors.
    pub write_errors: u64,
    /// Injected partial writes that then failed.
    pub short_writes: u64,
    /// Injected fsync failures.
    pub sync_errors: u64,
    /// Injected directory fsync failures.
    pub sync_dir_errors: u64,
    /// Injected read errors.
    pub read_errors: u64,
    /// Reads returned with a flipped bit.
    pub read_bit_flips: u64,
    /// Injected ENOSPC errors.
    pub no_space_errors: u64,
    /// Injected open errors.
    pub open_errors: u64,
    /// Injected list errors.
    pub list_errors: u64,
    /// Injected remove errors.
    pub remove_errors: u64,
    /// Injected rename errors.
    pub rename_errors: u64,
    /// Writes refused with ENOSPC because the configured capacity was reached.
    pub capacity_exhausted: u64,
    /// Crashes of every kind.
    pub crashes: u64,
    /// Calls left in flight (see [`SimulatedConfig::in_flight_rate`]).
    pub in_flight_submitted: u64,
    /// Calls in flight whose future was dropped before they completed and which took effect
    /// afterwards (completed, or applied by a crash): the caller gave up, the kernel did not.
    pub in_flight_landed_after_drop: u64,
}

impl FaultCounters {
    /// The number of injected faults of `kind`.
    pub fn get(&self, kind: FaultKind) -> u64 {
        match kind {
            FaultKind::WriteError => self.write_errors,
            FaultKind::ShortWrite => self.short_writes,
            FaultKind::SyncError => self.sync_errors,
            FaultKind::SyncDirError => self.sync_dir_errors,
            FaultKind::ReadError => self.read_errors,
            FaultKind::ReadBitFlip => self.read_bit_flips,
            FaultKind::NoSpace => self.no_space_errors,
            FaultKind::OpenError => self.open_errors,
            FaultKind::ListError => self.list_errors,
            FaultKind::RemoveError => self.remove_errors,
            FaultKind::RenameError => self.rename_errors,
        }
    }

    pub(super) fn bump(&mut self, kind: FaultKind) {
        let counter = match kind {
            FaultKind::WriteError => &mut self.write_errors,
            FaultKind::ShortWrite => &mut self.short_writes,
            FaultKind::SyncError => &mut self.sync_errors,
            FaultKind::SyncDirError => &mut self.sync_dir_errors,
            FaultKind::ReadError => &mut self.read_errors,
            FaultKind::ReadBitFlip => &mut self.read_bit_flips,
            FaultKind::NoSpace => &mut self.no_space_errors,
            FaultKind::OpenError => &mut self.open_errors,
            FaultKind::ListError => &mut self.list_errors,
            FaultKind::RemoveError => &mut self.remove_errors,
            FaultKind::RenameError => &mut self.rename_errors,
        };
        *counter += 1;
    }
}

/// What one crash (or one failed sync's writeback) did to the unsynced state: how many pending
/// operations survived, were lost, or were torn, and what became of the calls in flight. Tests
/// use it to prove an outcome happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CrashReport {
    /// Unsynced writes that reached the media whole.
    pub writes_kept: u64,
    /// Unsynced writes lost whole.
    pub writes_lost: u64,
    /// Unsynced writes settled sector by sector (some sectors kept, lost or torn).
    pub writes_partial: u64,
    /// Sectors of partial writes that reached the media.
    pub sectors_kept: u64,
    /// Sectors of partial writes that were lost (the old bytes remain).
    pub sectors_lost: u64,
    /// Sectors left holding a prefix of the new data followed by the old bytes.
    pub sectors_torn_prefix: u64,
    /// Sectors left holding zeros where the new data was to go.
    pub sectors_torn_zeros: u64,
    /// Sectors left holding random garbage where the new data was to go.
    pub sectors_torn_garbage: u64,
    /// Unsynced `set_len` calls that took effect.
    pub set_lens_kept: u64,
    /// Unsynced `set_len` calls that were lost.
    pub set_lens_lost: u64,
    /// Unsynced directory changes (create, remove, rename, mkdir) that took effect.
    pub directory_changes_kept: u64,
    /// Unsynced directory changes that were lost.
    pub directory_changes_lost: u64,
    /// Calls in flight that the crash found applied (then settled like any unsynced change).
    pub in_flight_applied: u64,
    /// Calls in flight that the crash discarded: they never took effect.
    pub in_flight_discarded: u64,
}
