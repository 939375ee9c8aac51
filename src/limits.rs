//! Every limit of the crate, in one place, with the reason for its value.
//!
//! Relations between limits are checked at compile time so that a change to one cannot silently
//! break another.

/// Size of the segment header block in bytes. The header itself is far smaller; the block is a
/// whole 4 KiB page so that records start page-aligned, which direct I/O (O_DIRECT) needs.
pub const SEGMENT_HEADER_SIZE_BYTES: usize = 4096;

/// Size of a record header in bytes (see docs/FORMAT.md).
pub const RECORD_HEADER_SIZE_BYTES: usize = 32;
/// Largest write alignment a storage file may demand (direct I/O writes whole blocks): the
/// segment header's size, so the first record of a segment starts on a boundary of any
/// accepted alignment.
pub const MAX_WRITE_ALIGNMENT_BYTES: usize = SEGMENT_HEADER_SIZE_BYTES;
/// Largest payload of a padding record: the one that ends a commit on an alignment boundary
/// is shorter than two alignment units.
pub const MAX_PADDING_PAYLOAD_BYTES: usize = 2 * MAX_WRITE_ALIGNMENT_BYTES;

/// How long opening a log waits for a directory lock held elsewhere before it fails with
/// `WalError::Locked`. A lock is held elsewhere either by a live writer (the wait only delays
/// the error) or by a process that just died, whose lock the io_uring backend keeps until the
/// kernel has finished the process's in-flight writes: milliseconds, or up to a second under
/// heavy load, so the successor rides that out instead of failing.
pub const LOCK_WAIT_MS: u64 = 2_000;
/// First pause between two attempts to take a directory lock held elsewhere; each pause
/// doubles, up to the next limit.
pub const LOCK_RETRY_INTERVAL_MS: u64 = 1;
/// Longest pause between two attempts to take a directory lock.
pub const LOCK_MAX_RETRY_INTERVAL_MS: u64 = 64;
const _: () = assert!(
    LOCK_RETRY_INTERVAL_MS > 0
        && LOCK_RETRY_INTERVAL_MS <= LOCK_MAX_RETRY_INTERVAL_MS
        && LOCK_MAX_RETRY_INTERVAL_MS < LOCK_WAIT_MS,
    "the lock wait retries from short to longer pauses, several times"
);

/// Records start at multiples of this alignment, so headers never straddle it and a scan for
/// records after damage only has to look at aligned offsets.
pub const RECORD_ALIGNMENT_BYTES: usize = 8;

/// Sector size of `SimulatedStorage`: the unit in which a crash keeps, loses or tears unsynced
/// writes. 512 bytes is the smallest sector real devices expose, so it gives the finest tearing.
pub const SIMULATED_SECTOR_SIZE_BYTES: usize = 512;

/// Largest file `SimulatedStorage` accepts: 1 GiB (the largest segment). Files live in memory,
/// so a stray huge offset must fail with EFBIG rather than allocate without bound.
pub const SIMULATED_MAX_FILE_SIZE_BYTES: u64 = 1 << 30;

/// Most storage calls `SimulatedStorage` keeps in flight at once (see
/// `SimulatedConfig::in_flight_rate`); while that many are, further calls complete at once. Each
/// in-flight operation completes at each later call with even odds, so a real run stays far
/// below it: the bound only keeps a caller that drops future after future from growing the list
/// without limit. 64 is a deep io_uring queue.
pub const SIMULATED_MAX_IN_FLIGHT_OPERATIONS: usize = 64;

/// Entry indexes stay below this bound (2^62), so that the index after the last entry, which
/// a new segment may start at, is at most this. Far beyond any real log; bounding it keeps index
/// arithmetic on values read from disk free of overflow.
pub const MAX_LOG_INDEX: u64 = 1 << 62;

/// Largest segment id (2^62), for the same reason.
pub const MAX_SEGMENT_ID: u64 = 1 << 62;

/// Default maximum payload of one entry: 1 MiB.
pub const DEFAULT_MAX_ENTRY_SIZE_BYTES: usize = 1 << 20;

/// Hard maximum payload of one entry: 64 MiB. `max_entry_size_bytes` may not exceed it, so a
/// corrupt length field can never make a reader allocate more than this.
pub const HARD_MAX_ENTRY_SIZE_BYTES: usize = 64 << 20;

/// Default target size of a segment file: 64 MiB.
pub const DEFAULT_SEGMENT_SIZE_BYTES: u64 = 64 << 20;

/// Smallest accepted segment size: 64 KiB (tests use small segments to exercise rotation).
pub const MIN_SEGMENT_SIZE_BYTES: u64 = 64 << 10;

/// Largest accepted segment size: 1 GiB. Offsets inside a segment fit in a `u32` index entry.
pub const MAX_SEGMENT_SIZE_BYTES: u64 = 1 << 30;

/// Size of the chunks recovery reads segments in: large sequential reads keep recovery at
/// disk or memory bandwidth.
pub const RECOVERY_READ_CHUNK_BYTES: usize = 4 << 20;

/// Bytes recovery may read, beyond the chunks it scans, to check candidate records past the tail
/// of the last segment: 64 MiB. Only crafted data needs more; then the tail is taken for torn.
pub const MAX_TAIL_VERIFICATION_BYTES: u64 = 64 << 20;

/// Size of the zero-filled buffer used to pre-write new segments.
pub const ZERO_FILL_CHUNK_BYTES: usize = 1 << 20;

/// Purged segment files kept for reuse instead of removed: reusing one overwrites blocks the
/// file system has already allocated, where a new segment must be written out with zeros first.
pub const RECYCLED_SEGMENTS_KEPT: usize = 2;

/// Default interval between group commits of `BufferedWal`: 10 ms.
pub const DEFAULT_FLUSH_INTERVAL_MS: u64 = 10;

/// Largest accepted flush interval: 10 s. Longer intervals leave too much acknowledged-but-not-
/// durable data behind and are almost certainly a unit mistake.
pub const MAX_FLUSH_INTERVAL_MS: u64 = 10_000;

/// Default number of buffered entries that triggers a flush before the interval elapses.
pub const DEFAULT_MAX_BUFFERED_ENTRIES: usize = 4096;

/// Default number of buffered payload bytes that triggers a flush: 4 MiB.
pub const DEFAULT_MAX_BUFFERED_BYTES: usize = 4 << 20;

/// Upper bound for `max_buffered_entries`; the buffer is allocated for this many entries at most.
pub const HARD_MAX_BUFFERED_ENTRIES: usize = 1 << 20;

/// Upper bound for `max_buffered_bytes`: 1 GiB.
pub const HARD_MAX_BUFFERED_BYTES: usize = 1 << 30;

/// Truncations a `BufferedWal` remembers for its durable waiters. A waiter older than this many
/// truncations is told its entry may have been truncated.
pub const TRUNCATION_HISTORY: usize = 64;

/// Largest `max_bytes` a single `read_range` call may ask for: 256 MiB.
pub const HARD_MAX_READ_RANGE_BYTES: usize = 256 << 20;

/// Sub-buckets per power of two in a latency histogram, as a power of two: 2^3 = 8, so a reported
/// percentile (the upper bound of its bucket) over-states the true value by at most 1/8.
pub const LATENCY_SUB_BUCKET_BITS: u32 = 3;

/// Latencies are bucketed in nanoseconds up to 2^36 ns (about 69 s); longer ones share the last
/// bucket (the maximum is still kept exactly). No disk operation the log waits for takes longer.
pub const LATENCY_MAX_NANOS_LOG2: u32 = 36;

/// Buckets of one latency histogram: a linear group below 2^`LATENCY_SUB_BUCKET_BITS` ns, then
/// one group of 2^`LATENCY_SUB_BUCKET_BITS` per power of two up to 2^`LATENCY_MAX_NANOS_LOG2`.
/// Each histogram is this many 8-byte atomics, allocated when its owner is created.
pub const LATENCY_BUCKETS: usize =
    ((LATENCY_MAX_NANOS_LOG2 - LATENCY_SUB_BUCKET_BITS + 1) as usize) << LATENCY_SUB_BUCKET_BITS;

const _: () = assert!(SEGMENT_HEADER_SIZE_BYTES % RECORD_ALIGNMENT_BYTES == 0);
const _: () = assert!(MAX_WRITE_ALIGNMENT_BYTES.is_power_of_two());
// Segment sizes are whole pages, so a segment ends on a boundary of every accepted alignment.
const _: () = assert!(4096 % MAX_WRITE_ALIGNMENT_BYTES == 0);
// Segments are zero-filled through `open_direct` in chunks of this size (the last one a whole
// number of pages), so every chunk is aligned for direct I/O; so is the header.
const _: () = assert!(ZERO_FILL_CHUNK_BYTES % MAX_WRITE_ALIGNMENT_BYTES == 0);
const _: () = assert!(SEGMENT_HEADER_SIZE_BYTES % MAX_WRITE_ALIGNMENT_BYTES == 0);
const _: () = assert!(RECORD_HEADER_SIZE_BYTES % RECORD_ALIGNMENT_BYTES == 0);
const _: () = assert!(DEFAULT_MAX_ENTRY_SIZE_BYTES <= HARD_MAX_ENTRY_SIZE_BYTES);
// The default segment holds many maximum-size entries.
const _: () = assert!(
    DEFAULT_SEGMENT_SIZE_BYTES
        >= (SEGMENT_HEADER_SIZE_BYTES
            + 16 * (RECORD_HEADER_SIZE_BYTES + DEFAULT_MAX_ENTRY_SIZE_BYTES)) as u64
);
const _: () = assert!(MIN_SEGMENT_SIZE_BYTES <= DEFAULT_SEGMENT_SIZE_BYTES);
const _: () = assert!(DEFAULT_SEGMENT_SIZE_BYTES <= MAX_SEGMENT_SIZE_BYTES);
// In-segment offsets are stored as u32.
const _: () = assert!(MAX_SEGMENT_SIZE_BYTES <= u32::MAX as u64);
// The largest record, even with the hard maximum payload, fits in the largest segment.
const _: () = assert!(
    (SEGMENT_HEADER_SIZE_BYTES + RECORD_HEADER_SIZE_BYTES + HARD_MAX_ENTRY_SIZE_BYTES) as u64
        <= MAX_SEGMENT_SIZE_BYTES
);
// Segment headers fill whole simulated sectors, so tearing never straddles header and records.
const _: () = assert!(SEGMENT_HEADER_SIZE_BYTES % SIMULATED_SECTOR_SIZE_BYTES == 0);
const _: () = assert!(MAX_SEGMENT_SIZE_BYTES <= SIMULATED_MAX_FILE_SIZE_BYTES);
const _: () = assert!(DEFAULT_FLUSH_INTERVAL_MS <= MAX_FLUSH_INTERVAL_MS);
const _: () = assert!(DEFAULT_MAX_BUFFERED_ENTRIES <= HARD_MAX_BUFFERED_ENTRIES);
const _: () = assert!(DEFAULT_MAX_BUFFERED_BYTES <= HARD_MAX_BUFFERED_BYTES);
const _: () = assert!(HARD_MAX_ENTRY_SIZE_BYTES <= HARD_MAX_READ_RANGE_BYTES);
// An index or id at the maximum plus a full segment of the smallest records never overflows.
const _: () = assert!(MAX_LOG_INDEX.checked_add(MAX_SEGMENT_SIZE_BYTES).is_some());
const _: () = assert!(MAX_SEGMENT_ID < u64::MAX);
// The histogram's groups: at least one power of two above the linear group, and shifts of a u64.
const _: () = assert!(LATENCY_SUB_BUCKET_BITS < LATENCY_MAX_NANOS_LOG2);
const _: () = assert!(LATENCY_MAX_NANOS_LOG2 < 64);
// A histogram stays small (a few KiB): the log holds a handful of them.
const _: () = assert!(LATENCY_BUCKETS <= 512);
