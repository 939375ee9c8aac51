//! Counters and latency histograms: what the log and the io_uring backend report about
//! themselves.
//!
//! Recording is lock-free and allocation-free: a counter is one relaxed atomic add, a latency is
//! one relaxed add to a fixed bucket (plus a compare of the maximum). Relaxed ordering is
//! enough because nothing is synchronised through these values: a snapshot taken while
//! operations run may count an operation in one field and not yet in another, and is exact once
//! the operations it should count have returned.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use crate::limits::{LATENCY_BUCKETS, LATENCY_MAX_NANOS_LOG2, LATENCY_SUB_BUCKET_BITS};

/// A monotonic event counter.
#[derive(Debug, Default)]
pub(crate) struct Counter(AtomicU64);

impl Counter {
    pub(crate) fn add(&self, amount: u64) {
        self.0.fetch_add(amount, Ordering::Relaxed);
    }

    pub(crate) fn increment(&self) {
        self.add(1);
    }

    pub(crate) fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// The largest value seen so far.
#[derive(Debug, Default)]
pub(crate) struct Maximum(AtomicU64);

impl Maximum {
    pub(crate) fn observe(&self, value: u64) {
        // A plain load first: the read-modify-write happens only when the maximum moves.
        if value > self.0.load(Ordering::Relaxed) {
            self.0.fetch_max(value, Ordering::Relaxed);
        }
    }

    pub(crate) fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A fixed-size, log-bucketed histogram of latencies, recorded in nanoseconds (bucket layout in
/// `limits`: linear below 2^`LATENCY_SUB_BUCKET_BITS` ns, then 2^`LATENCY_SUB_BUCKET_BITS`
/// buckets per power of two).
pub(crate) struct LatencyRecorder {
    buckets: Box<[AtomicU64; LATENCY_BUCKETS]>,
    max_nanos: Maximum,
}

impl Default for LatencyRecorder {
    fn default() -> Self {
        Self {
            buckets: Box::new(std::array::from_fn(|_| AtomicU64::new(0))),
            max_nanos: Maximum::default(),
        }
    }
}

impl fmt::Debug for LatencyRecorder {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.snapshot(), formatter)
    }
}

impl LatencyRecorder {
    pub(crate) fn record(&self, elapsed: Duration) {
        self.record_nanos(u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX));
    }

    pub(crate) fn record_nanos(&self, nanos: u64) {
        self.max_nanos.observe(nanos);
        self.buckets[bucket_of(nanos)].fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self) -> LatencyHistogram {
        let buckets = self
            .buckets
            .iter()
            .map(|bucket| bucket.load(Ordering::Relaxed))
            .collect();
        LatencyHistogram::from_buckets(buckets, self.max_nanos.get())
    }
}

/// The bucket holding `nanos`.
fn bucket_of(nanos: u64) -> usize {
    let group_size = 1u64 << LATENCY_SUB_BUCKET_BITS;
    if nanos < group_size {
        return nanos as usize;
    }
    let power = 63 - nanos.leading_zeros();
    if power >= LATENCY_MAX_NANOS_LOG2 {
        return LATENCY_BUCKETS - 1;
    }
    let shift = power - LATENCY_SUB_BUCKET_BITS;
    let sub_bucket = (nanos >> shift) & (group_size - 1);
    let group = u64::from(shift + 1);
    ((group << LATENCY_SUB_BUCKET_BITS) | sub_bucket) as usize
}

/// The largest value bucket `index` holds (the last bucket also holds everything beyond).
fn bucket_upper_nanos(index: usize) -> u64 {
    let group_size = 1usize << LATENCY_SUB_BUCKET_BITS;
    if index < group_size {
        return index as u64;
    }
    let shift = (index >> LATENCY_SUB_BUCKET_BITS) - 1;
    let lower = ((group_size + (index & (group_size - 1))) as u64) << shift;
    lower + (1u64 << shift) - 1
}

/// Nanoseconds as whole microseconds, rounded up, so a non-zero latency never reads as 0.
fn nanos_to_us(nanos: u64) -> u64 {
    nanos.div_ceil(1000)
}

/// A snapshot of a latency histogram.
///
/// Percentiles are the upper bound of the bucket holding that rank (capped at the maximum), in
/// whole microseconds rounded up: they over-state the true value by at most 1/8 plus the
/// rounding. All zero when nothing was recorded.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LatencyHistogram {
    /// Operations recorded.
    pub count: u64,
    /// Median latency, in microseconds.
    pub p50_us: u64,
    /// 99th percentile, in microseconds.
    pub p99_us: u64,
    /// 99.9th percentile, in microseconds.
    pub p999_us: u64,
    /// Largest latency recorded, in microseconds (exact, rounded up).
    pub max_us: u64,
    /// Count per bucket (empty when nothing was recorded), for percentiles and merging.
    buckets: Vec<u64>,
    max_nanos: u64,
}

impl LatencyHistogram {
    fn from_buckets(buckets: Vec<u64>, max_nanos: u64) -> Self {
        let count = buckets.iter().sum();
        if count == 0 {
            return Self::default();
        }
        let mut histogram = Self {
            count,
            buckets,
            max_nanos,
            ..Self::default()
        };
        histogram.p50_us = histogram.quantile_us(0.5);
        histogram.p99_us = histogram.quantile_us(0.99);
        histogram.p999_us = histogram.quantile_us(0.999);
        histogram.max_us = nanos_to_us(histogram.max_nanos);
        histogram
    }

    /// The latency at `quantile` (within `[0, 1]`), in microseconds, with the precision of the
    /// percentile fields; 0 when nothing was recorded.
    pub fn quantile_us(&self, quantile: f64) -> u64 {
        if self.count == 0 {
            return 0;
        }
        let rank = ((self.count as f64 * quantile.clamp(0.0, 1.0)).ceil() as u64).max(1);
        let mut seen = 0;
        for (index, bucket) in self.buckets.iter().enumerate() {
            seen += bucket;
            if seen >= rank {
                return nanos_to_us(bucket_upper_nanos(index).min(self.max_nanos));
            }
        }
        nanos_to_us(self.max_nanos)
    }

    /// Adds `other`'s recordings to this histogram (e.g. to sum the logs of many partitions).
    pub fn merge(&mut self, other: &LatencyHistogram) {
        if other.count == 0 {
            return;
        }
        let mut buckets = std::mem::take(&mut self.buckets);
        buckets.resize(LATENCY_BUCKETS, 0);
        for (total, added) in buckets.iter_mut().zip(&other.buckets) {
            *total += added;
        }
        *self = Self::from_buckets(buckets, self.max_nanos.max(other.max_nanos));
    }
}

/// What a [`BufferedWal`](crate::BufferedWal) adds to [`WalStats`]: its group commits.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct GroupCommitStats {
    /// Group commits that succeeded: each is one write and one sync of every entry buffered
    /// since the previous one.
    pub flushes: u64,
    /// Entries those flushes made durable (`entries / flushes` is the mean group size).
    pub flushed_entries: u64,
    /// The most entries one flush made durable.
    pub largest_flush_entries: u64,
}

/// A snapshot of a log's counters ([`Wal::stats`](crate::Wal::stats),
/// [`BufferedWal::stats`](crate::BufferedWal::stats)), counted since the log was opened.
///
/// Only operations that succeeded are counted, except `poisoned`. Taken while operations run, a
/// snapshot may count an operation in one field and not yet in another.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct WalStats {
    /// Append calls (`append`, `append_batch`, `append_batch_durable`; a `BufferedWal` makes
    /// one per flush, truncate or purge that writes buffered entries).
    pub appends: u64,
    /// Entries appended.
    pub entries: u64,
    /// Payload bytes of the entries appended.
    pub payload_bytes: u64,
    /// Bytes written to segments by appends: records with their headers, plus the padding that
    /// ends a commit on a block boundary for direct I/O.
    pub written_bytes: u64,
    /// Syncs of the log's data: `sync` calls that had writes to cover (rotation, truncation and
    /// `close` make them too) and durable writes (a write and its sync in one operation).
    pub syncs: u64,
    /// Latency of each of those syncs, the durable write's write included.
    pub sync_latency: LatencyHistogram,
    /// Latency of `append_batch_durable` calls, from call to return.
    pub durable_append_latency: LatencyHistogram,
    /// `truncate_after` calls that removed entries.
    pub truncations: u64,
    /// `purge_before` calls that removed segments or reset the log.
    pub purges: u64,
    /// Rotations: the last segment was full and a new one was started.
    pub segments_rotated: u64,
    /// New segments made from a purged segment's file instead of a freshly zero-filled one.
    pub segments_recycled: u64,
    /// A write or sync failed and the log refuses writes (see [`WalError::Poisoned`]).
    ///
    /// [`WalError::Poisoned`]: crate::WalError::Poisoned
    pub poisoned: bool,
    /// Group commits, for a [`BufferedWal`](crate::BufferedWal); `None` for a plain `Wal`.
    pub group_commit: Option<GroupCommitStats>,
}

/// The live counters behind [`WalStats`], shared by a `Wal` and the `BufferedWal` wrapping it.
#[derive(Debug, Default)]
pub(crate) struct WalCounters {
    pub(crate) appends: Counter,
    pub(crate) entries: Counter,
    pub(crate) payload_bytes: Counter,
    pub(crate) written_bytes: Counter,
    pub(crate) syncs: Counter,
    pub(crate) sync_latency: LatencyRecorder,
    pub(crate) durable_append_latency: LatencyRecorder,
    pub(crate) truncations: Counter,
    pub(crate) purges: Counter,
    pub(crate) segments_rotated: Counter,
    pub(crate) segments_recycled: Counter,
    pub(crate) poisoned: AtomicBool,
}

impl WalCounters {
    pub(crate) fn snapshot(&self) -> WalStats {
        WalStats {
            appends: self.appends.get(),
            entries: self.entries.get(),
            payload_bytes: self.payload_bytes.get(),
            written_bytes: self.written_bytes.get(),
            syncs: self.syncs.get(),
            sync_latency: self.sync_latency.snapshot(),
            durable_append_latency: self.durable_append_latency.snapshot(),
            truncations: self.truncations.get(),
            purges: self.purges.get(),
            segments_rotated: self.segments_rotated.get(),
            segments_recycled: self.segments_recycled.get(),
            poisoned: self.poisoned.load(Ordering::Relaxed),
            group_commit: None,
        }
    }
}

/// The live counters behind [`GroupCommitStats`].
#[derive(Debug, Default)]
pub(crate) struct GroupCommitCounters {
    flushes: Counter,
    flushed_entries: Counter,
    largest_flush_entries: Maximum,
}

impl GroupCommitCounters {
    /// A flush of `entries` entries succeeded.
    pub(crate) fn flushed(&self, entries: usize) {
        self.flushes.increment();
        self.flushed_entries.add(entries as u64);
        self.largest_flush_entries.observe(entries as u64);
    }

    pub(crate) fn snapshot(&self) -> GroupCommitStats {
        GroupCommitStats {
            flushes: self.flushes.get(),
            flushed_entries: self.flushed_entries.get(),
            largest_flush_entries: self.largest_flush_entries.get(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Proves every value lands in a bucket whose upper bound is at least the value and at most
    // 1/8 above it (below the clamp), and that bucket indexes grow with the value.
    #[test]
    fn buckets_bound_their_values_within_an_eighth() {
        let mut previous = 0;
        let mut values: Vec<u64> = (0..5000).collect();
        values.extend((13..LATENCY_MAX_NANOS_LOG2).flat_map(|power| {
            let base = 1u64 << power;
            [base - 1, base, base + 1, base + base / 3]
        }));
        values.sort_unstable();
        for value in values {
            let index = bucket_of(value);
            assert!(index >= previous, "{value}");
            previous = index;
            let upper = bucket_upper_nanos(index);
            assert!(upper >= value, "{value} in bucket {index} up to {upper}");
            assert!(upper - value <= value / 8, "{value}: bucket up to {upper}");
        }
        assert_eq!(bucket_of(u64::MAX), LATENCY_BUCKETS - 1);
        assert_eq!(bucket_of(1 << LATENCY_MAX_NANOS_LOG2), LATENCY_BUCKETS - 1);
    }

    // Proves percentiles pick the right rank and are capped by the exact maximum, and that
    // merging two histograms equals recording everything in one.
    #[test]
    fn percentiles_and_merge() {
        let recorder = LatencyRecorder::default();
        for micros in 1..=1000u64 {
            recorder.record(Duration::from_micros(micros));
        }
        let snapshot = recorder.snapshot();
        assert_eq!(snapshot.count, 1000);
        assert!((500..=563).contains(&snapshot.p50_us), "{snapshot:?}");
        assert!((990..=1000).contains(&snapshot.p99_us), "{snapshot:?}");
        assert_eq!(snapshot.p999_us, 1000);
        assert_eq!(snapshot.max_us, 1000);
        assert_eq!(
            LatencyRecorder::default().snapshot(),
            LatencyHistogram::default()
        );

        let (low, high) = (LatencyRecorder::default(), LatencyRecorder::default());
        for micros in 1..=500u64 {
            low.record(Duration::from_micros(micros));
            high.record(Duration::from_micros(micros + 500));
        }
        let mut merged = LatencyHistogram::default();
        merged.merge(&low.snapshot());
        merged.merge(&high.snapshot());
        assert_eq!(merged, snapshot);
    }
}
