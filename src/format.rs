//! Encoding and decoding of the on-disk format. docs/FORMAT.md specifies every byte; this module
//! is its executable form. All integers are little-endian and fixed width.

use bytes::{BufMut, Bytes, BytesMut};

use crate::limits::{
    HARD_MAX_ENTRY_SIZE_BYTES, MAX_LOG_INDEX, MAX_SEGMENT_ID, MAX_SEGMENT_SIZE_BYTES,
    MAX_WRITE_ALIGNMENT_BYTES, MIN_SEGMENT_SIZE_BYTES, RECORD_ALIGNMENT_BYTES,
    RECORD_HEADER_SIZE_BYTES, SEGMENT_HEADER_SIZE_BYTES,
};

/// Magic number at the start of every segment file.
pub const SEGMENT_MAGIC: [u8; 8] = *b"HLXWALSG";

/// Version of the segment and record format written by this crate.
pub const FORMAT_VERSION: u32 = 1;

/// Length of the meaningful part of the segment header, including its CRC; the rest of the
/// header block is zero.
pub const SEGMENT_HEADER_FIELDS_BYTES: usize = 56;

/// Extension of segment files. Names are `{segment_id:020}.wal`, so name order is log order.
pub const SEGMENT_EXTENSION: &str = "wal";

/// Suffix of segment files being prepared (zero-filled, not yet in the log).
pub const TEMPORARY_SUFFIX: &str = ".wal.tmp";

/// One log entry: a Raft (term, index) pair and an opaque payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Position in the log, starting at 1; contiguous.
    pub index: u64,
    /// Raft term; never decreases along the log.
    pub term: u64,
    /// The payload, at most `max_entry_size_bytes` long.
    pub payload: Bytes,
}

impl Entry {
    /// Builds an entry.
    pub fn new(index: u64, term: u64, payload: impl Into<Bytes>) -> Self {
        Self {
            index,
            term,
            payload: payload.into(),
        }
    }
}

/// The decoded fields of a segment header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentHeader {
    /// Unique, increasing id of the segment; also its file name.
    pub segment_id: u64,
    /// Index of the first entry this segment holds (or would hold, when empty).
    pub first_index: u64,
    /// No entry below this index belongs to the log any more (purged when the segment was
    /// created).
    pub log_start_index: u64,
    /// Size the segment was pre-written to.
    pub segment_size_bytes: u64,
    /// The file was recycled from a purged segment: the bytes after its records may hold the
    /// previous life's records (which never validate under this segment's id) instead of zeros.
    pub recycled: bool,
}

/// Header flag bit: the segment file was recycled (see [`SegmentHeader::recycled`]).
pub const SEGMENT_FLAG_RECYCLED: u32 = 1;

/// Why a segment header was rejected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderError {
    /// The file is shorter than a header.
    TooShort(usize),
    /// The magic number is not [`SEGMENT_MAGIC`]: not a helix-wal segment.
    BadMagic([u8; 8]),
    /// The format version is not one this crate reads.
    UnsupportedVersion(u32),
    /// The header's checksum does not match.
    ChecksumMismatch {
        /// Checksum stored in the header.
        stored: u32,
        /// Checksum computed over the header fields.
        computed: u32,
    },
    /// A field holds an impossible value.
    BadField(&'static str, u64),
}

impl std::fmt::Display for HeaderError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HeaderError::TooShort(len) => write!(
                f,
                "segment header is truncated: the file holds {len} bytes, a header needs \
                 {SEGMENT_HEADER_FIELDS_BYTES}"
            ),
            HeaderError::BadMagic(magic) => write!(
                f,
                "wrong magic number {magic:02x?} (expected {SEGMENT_MAGIC:02x?}): this is not a \
                 helix-wal segment; move foreign files out of the log directory"
            ),
            HeaderError::UnsupportedVersion(version) => write!(
                f,
                "segment format version {version} is not supported (this build reads version \
                 {FORMAT_VERSION}); open it with the helix-wal release that wrote it"
            ),
            HeaderError::ChecksumMismatch { stored, computed } => write!(
                f,
                "segment header checksum mismatch (stored {stored:#010x}, computed \
                 {computed:#010x})"
            ),
            HeaderError::BadField(field, value) => {
                write!(
                    f,
                    "segment header field {field} has impossible value {value}"
                )
            }
        }
    }
}

// Format: segment header, at offset 0 of a segment file, then zeros up to
// SEGMENT_HEADER_SIZE_BYTES.
//   0  magic               [u8; 8]  "HLXWALSG"
//   8  format_version      u32
//  12  header_size_bytes   u32      SEGMENT_HEADER_SIZE_BYTES: records start here
//  16  segment_id          u64
//  24  first_index         u64
//  32  log_start_index     u64
//  40  segment_size_bytes  u64
//  48  flags               u32      bit 0: recycled; other bits zero
//  52  header_crc          u32      CRC32C of bytes [0, 52)
/// Encodes a segment header as the full, zero-padded header block.
pub fn encode_segment_header(header: &SegmentHeader) -> Bytes {
    let mut block = BytesMut::with_capacity(SEGMENT_HEADER_SIZE_BYTES);
    block.put_slice(&SEGMENT_MAGIC);
    block.put_u32_le(FORMAT_VERSION);
    block.put_u32_le(SEGMENT_HEADER_SIZE_BYTES as u32);
    block.put_u64_le(header.segment_id);
    block.put_u64_le(header.first_index);
    block.put_u64_le(header.log_start_index);
    block.put_u64_le(header.segment_size_bytes);
    block.put_u32_le(if header.recycled {
        SEGMENT_FLAG_RECYCLED
    } else {
        0
    });
    let crc = crc32c::crc32c(&block[..52]);
    block.put_u32_le(crc);
    debug_assert_eq!(block.len(), SEGMENT_HEADER_FIELDS_BYTES);
    block.resize(SEGMENT_HEADER_SIZE_BYTES, 0);
    block.freeze()
}

/// Decodes and validates a segment header from the first bytes of a segment file.
pub fn decode_segment_header(bytes: &[u8]) -> Result<SegmentHeader, HeaderError> {
    if bytes.len() < SEGMENT_HEADER_FIELDS_BYTES {
        return Err(HeaderError::TooShort(bytes.len()));
    }
    let magic: [u8; 8] = bytes[0..8].try_into().expect("slice of 8 bytes");
    if magic != SEGMENT_MAGIC {
        return Err(HeaderError::BadMagic(magic));
    }
    let stored = read_u32(bytes, 52);
    let computed = crc32c::crc32c(&bytes[..52]);
    if stored != computed {
        return Err(HeaderError::ChecksumMismatch { stored, computed });
    }
    let version = read_u32(bytes, 8);
    if version != FORMAT_VERSION {
        return Err(HeaderError::UnsupportedVersion(version));
    }
    let header_size = read_u32(bytes, 12);
    if header_size as usize != SEGMENT_HEADER_SIZE_BYTES {
        return Err(HeaderError::BadField(
            "header_size_bytes",
            u64::from(header_size),
        ));
    }
    let header = SegmentHeader {
        segment_id: read_u64(bytes, 16),
        first_index: read_u64(bytes, 24),
        log_start_index: read_u64(bytes, 32),
        segment_size_bytes: read_u64(bytes, 40),
        recycled: false,
    };
    let flags = read_u32(bytes, 48);
    if flags & !SEGMENT_FLAG_RECYCLED != 0 {
        return Err(HeaderError::BadField("flags", u64::from(flags)));
    }
    let header = SegmentHeader {
        recycled: flags & SEGMENT_FLAG_RECYCLED != 0,
        ..header
    };
    if header.first_index == 0 || header.first_index > MAX_LOG_INDEX {
        return Err(HeaderError::BadField("first_index", header.first_index));
    }
    if header.segment_id > MAX_SEGMENT_ID {
        return Err(HeaderError::BadField("segment_id", header.segment_id));
    }
    let size = header.segment_size_bytes;
    if !(MIN_SEGMENT_SIZE_BYTES..=MAX_SEGMENT_SIZE_BYTES).contains(&size) || size % 4096 != 0 {
        return Err(HeaderError::BadField("segment_size_bytes", size));
    }
    if header.log_start_index > header.first_index {
        return Err(HeaderError::BadField(
            "log_start_index",
            header.log_start_index,
        ));
    }
    Ok(header)
}

/// The on-disk size of a record with a payload of `payload_len` bytes, padding included.
pub fn record_size(payload_len: usize) -> usize {
    let unpadded = RECORD_HEADER_SIZE_BYTES + payload_len;
    unpadded.div_ceil(RECORD_ALIGNMENT_BYTES) * RECORD_ALIGNMENT_BYTES
}

// Format: record, 8-byte aligned inside a segment.
//   0  crc               u32  CRC32C of segment_id (u64 LE) followed by bytes [4, 32 + len)
//   4  payload_len       u32
//   8  index             u64
//  16  term              u64
//  24  durable_index     u64  highest index known durable when this record was written
//  32  payload           [u8; payload_len]
//      padding           zeros up to the next multiple of 8
/// Appends the encoded record for `entry` to `buffer`.
pub fn encode_record(buffer: &mut BytesMut, segment_id: u64, entry: &Entry, durable_index: u64) {
    let start = buffer.len();
    buffer.put_u32_le(0); // CRC placeholder, filled below.
    buffer.put_u32_le(entry.payload.len() as u32);
    buffer.put_u64_le(entry.index);
    buffer.put_u64_le(entry.term);
    buffer.put_u64_le(durable_index);
    buffer.put_slice(&entry.payload);
    let crc = record_crc(segment_id, &buffer[start + 4..]);
    buffer[start..start + 4].copy_from_slice(&crc.to_le_bytes());
    let padded = start + record_size(entry.payload.len());
    buffer.resize(padded, 0);
}

/// The index field of a padding record: never a valid entry index.
pub const PADDING_INDEX: u64 = 0;

// Format: padding record. A record with index 0, term 0, durable_index 0 and a zero payload of
// `payload_len` bytes, checksummed like any record. Recovery skips it; it holds no entry. It
// lets a commit end on an alignment boundary (direct I/O writes whole pages).
/// Appends a padding record of `payload_len` zero bytes (its total size is
/// `record_size(payload_len)`).
pub fn encode_padding(buffer: &mut BytesMut, segment_id: u64, payload_len: usize) {
    let filler = Entry {
        index: PADDING_INDEX,
        term: 0,
        payload: Bytes::from(vec![0u8; payload_len]),
    };
    encode_record(buffer, segment_id, &filler, 0);
}

/// What follows a commit so that the next one starts on an alignment boundary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommitPadding {
    /// The commit already ends on a boundary (or the storage demands no alignment).
    None,
    /// A padding record with a payload of this many bytes.
    Record { payload_len: usize },
    /// This many zero bytes: the gap to the boundary is too short for a record header and the
    /// segment has no room for one more block, so the segment ends here (zeros after the last
    /// record are what an unused segment holds anyway).
    Zeros(usize),
}

/// The padding after a commit ending at byte `end` (a multiple of 8) of a segment of
/// `capacity_bytes` (a multiple of `alignment`), for a storage file demanding `alignment`.
pub fn commit_padding(end: u64, alignment: u64, capacity_bytes: u64) -> CommitPadding {
    if alignment <= 1 {
        return CommitPadding::None;
    }
    let gap = (alignment - end % alignment) % alignment;
    let header = RECORD_HEADER_SIZE_BYTES as u64;
    if gap == 0 {
        CommitPadding::None
    } else if gap >= header {
        CommitPadding::Record {
            payload_len: (gap - header) as usize,
        }
    } else if end + gap + alignment <= capacity_bytes {
        CommitPadding::Record {
            payload_len: (gap + alignment - header) as usize,
        }
    } else {
        CommitPadding::Zeros(gap as usize)
    }
}

/// The number of bytes the log writes to a segment for one durable append of a single entry
/// with a `payload_bytes` payload, on a storage file that demands `write_alignment_bytes`
/// ([`StorageFile::write_alignment`](crate::StorageFile::write_alignment): 1 for a buffered
/// file, 4096 for the io_uring backend's direct I/O): the entry's record and, when the file
/// demands an alignment, the padding record that ends the commit on the next boundary
/// (docs/FORMAT.md, "Record"). This is the size of a commit that does not end its segment; the
/// last commit of a segment may end in zeros instead of a padding record.
///
/// For benchmarks that compare the log with raw writes of the same size.
///
/// # Panics
///
/// If `payload_bytes` is above
/// [`HARD_MAX_ENTRY_SIZE_BYTES`](crate::constants::HARD_MAX_ENTRY_SIZE_BYTES) (no log holds such
/// an entry), or `write_alignment_bytes` is not a power of two up to
/// [`MAX_WRITE_ALIGNMENT_BYTES`](crate::constants::MAX_WRITE_ALIGNMENT_BYTES).
pub fn durable_append_bytes(payload_bytes: usize, write_alignment_bytes: u64) -> u64 {
    assert!(
        payload_bytes <= HARD_MAX_ENTRY_SIZE_BYTES,
        "a payload of {payload_bytes} bytes is above the hard maximum entry size"
    );
    assert!(
        write_alignment_bytes.is_power_of_two()
            && write_alignment_bytes <= MAX_WRITE_ALIGNMENT_BYTES as u64,
        "a write alignment of {write_alignment_bytes} bytes is not a power of two up to \
         {MAX_WRITE_ALIGNMENT_BYTES}"
    );
    // Every commit starts on an alignment boundary (the one before it was padded to one), so
    // the record ends where it would at the start of the segment's first block.
    let record = record_size(payload_bytes) as u64;
    match commit_padding(record, write_alignment_bytes, MAX_SEGMENT_SIZE_BYTES) {
        CommitPadding::None => record,
        CommitPadding::Record { payload_len } => record + record_size(payload_len) as u64,
        CommitPadding::Zeros(_) => unreachable!("the largest segment has room for the padding"),
    }
}

// The largest record and its padding (under two alignment units) fit in the largest segment, so
// `durable_append_bytes` never meets the end of a segment.
const _: () = assert!(
    (RECORD_HEADER_SIZE_BYTES + HARD_MAX_ENTRY_SIZE_BYTES + 2 * MAX_WRITE_ALIGNMENT_BYTES) as u64
        <= MAX_SEGMENT_SIZE_BYTES
);

/// The checksum of a record: seeded with the segment id, so records left over from another
/// segment's life in the same bytes never validate.
fn record_crc(segment_id: u64, header_tail_and_payload: &[u8]) -> u32 {
    let seed = crc32c::crc32c(&segment_id.to_le_bytes());
    crc32c::crc32c_append(seed, header_tail_and_payload)
}

/// The fixed fields of a record header, before the payload is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordHeader {
    /// Stored checksum.
    pub crc: u32,
    /// Payload length in bytes.
    pub payload_len: u32,
    /// Entry index.
    pub index: u64,
    /// Entry term.
    pub term: u64,
    /// Highest index known durable when the record was written.
    pub durable_index: u64,
}

impl RecordHeader {
    /// Parses the 32 header bytes at the start of `bytes`.
    pub fn parse(bytes: &[u8]) -> RecordHeader {
        assert!(bytes.len() >= RECORD_HEADER_SIZE_BYTES);
        RecordHeader {
            crc: read_u32(bytes, 0),
            payload_len: read_u32(bytes, 4),
            index: read_u64(bytes, 8),
            term: read_u64(bytes, 16),
            durable_index: read_u64(bytes, 24),
        }
    }

    /// True when all header bytes are zero: the unwritten part of a pre-zeroed segment.
    pub fn is_zero(bytes: &[u8]) -> bool {
        bytes[..RECORD_HEADER_SIZE_BYTES]
            .iter()
            .all(|byte| *byte == 0)
    }

    /// The full on-disk size of this record.
    pub fn record_size(&self) -> usize {
        record_size(self.payload_len as usize)
    }
}

/// Checks a record's checksum. `record` holds the header and at least `payload_len` payload
/// bytes.
pub fn record_checksum_matches(segment_id: u64, header: &RecordHeader, record: &[u8]) -> bool {
    let end = RECORD_HEADER_SIZE_BYTES + header.payload_len as usize;
    record.len() >= end && record_crc(segment_id, &record[4..end]) == header.crc
}

/// Reads a little-endian u32 at `offset`.
fn read_u32(bytes: &[u8], offset: usize) -> u32 {
    u32::from_le_bytes(bytes[offset..offset + 4].try_into().expect("4 bytes"))
}

/// Reads a little-endian u64 at `offset`.
fn read_u64(bytes: &[u8], offset: usize) -> u64 {
    u64::from_le_bytes(bytes[offset..offset + 8].try_into().expect("8 bytes"))
}

/// The file name of segment `segment_id`.
pub fn segment_file_name(segment_id: u64) -> String {
    format!("{segment_id:020}.{SEGMENT_EXTENSION}")
}

/// Parses a segment file name back into its id; `None` for any other name.
pub fn parse_segment_file_name(name: &str) -> Option<u64> {
    let stem = name.strip_suffix(".wal")?;
    if stem.len() != 20 || !stem.bytes().all(|byte| byte.is_ascii_digit()) {
        return None;
    }
    stem.parse().ok().filter(|id| *id <= MAX_SEGMENT_ID)
}

#[cfg(test)]
mod tests {
    use super::*;

    // Proves commit padding ends every commit on an alignment boundary with a padding record of
    // the exact gap, adds a whole block when the gap is too short for a record header, and
    // falls back to zeros only at the end of a segment; no padding without an alignment.
    #[test]
    fn commit_padding_reaches_the_next_boundary() {
        let capacity = 64 << 10;
        assert_eq!(commit_padding(4100, 1, capacity), CommitPadding::None);
        assert_eq!(commit_padding(8192, 4096, capacity), CommitPadding::None);
        for end in (4096u64..12288).step_by(8) {
            let gap = match commit_padding(end, 4096, capacity) {
                CommitPadding::None => 0,
                CommitPadding::Record { payload_len } => record_size(payload_len) as u64,
                CommitPadding::Zeros(_) => panic!("zeros in the middle of a segment at {end}"),
            };
            assert_eq!((end + gap) % 4096, 0, "end {end}");
            assert!(gap < 2 * 4096, "end {end}");
        }
        assert_eq!(
            commit_padding(capacity - 8, 4096, capacity),
            CommitPadding::Zeros(8)
        );
        assert_eq!(
            commit_padding(capacity - 40, 4096, capacity),
            CommitPadding::Record { payload_len: 8 }
        );
    }

    // Proves `durable_append_bytes` counts what the log writes for one entry: the record alone
    // without alignment; the record and its padding to the next 4096-byte block with direct
    // I/O, a whole extra block when the gap is too short for a padding record's header. The
    // figures are worked out by hand from docs/FORMAT.md.
    #[test]
    fn durable_append_bytes_follow_the_format() {
        // 32-byte header + 4096 payload bytes; 32 + 100 = 132, padded to 136.
        assert_eq!(durable_append_bytes(4096, 1), 4128);
        assert_eq!(durable_append_bytes(100, 1), 136);
        assert_eq!(durable_append_bytes(0, 1), 32);
        // 4128 leaves 4064 bytes to the next block: a padding record fits.
        assert_eq!(durable_append_bytes(4096, 4096), 8192);
        assert_eq!(durable_append_bytes(100, 4096), 4096);
        // 32 + 4048 = 4080 leaves 16 bytes, too short for a header: one more block.
        assert_eq!(durable_append_bytes(4048, 4096), 8192);
        // 32 + 4064 = 4096: already on a boundary, no padding.
        assert_eq!(durable_append_bytes(4064, 4096), 4096);
        assert_eq!(durable_append_bytes(100, 512), 512);
        // The same as encoding the commit: one record, then `commit_padding`'s record.
        for payload_bytes in (0..10_000).step_by(40) {
            let mut buffer = BytesMut::new();
            let entry = Entry::new(1, 1, vec![7u8; payload_bytes]);
            encode_record(&mut buffer, 1, &entry, 0);
            let end = buffer.len() as u64;
            if let CommitPadding::Record { payload_len } = commit_padding(end, 4096, 1 << 20) {
                encode_padding(&mut buffer, 1, payload_len);
            }
            assert_eq!(
                buffer.len() as u64,
                durable_append_bytes(payload_bytes, 4096)
            );
            assert_eq!(buffer.len() % 4096, 0);
        }
    }

    // Proves `durable_append_bytes` refuses a payload above the hard maximum: no log writes it.
    #[test]
    #[should_panic(expected = "hard maximum")]
    fn durable_append_bytes_refuse_an_impossible_payload() {
        durable_append_bytes(HARD_MAX_ENTRY_SIZE_BYTES + 1, 1);
    }

    // Proves `durable_append_bytes` refuses an alignment no storage file may demand.
    #[test]
    #[should_panic(expected = "not a power of two")]
    fn durable_append_bytes_refuse_an_impossible_alignment() {
        durable_append_bytes(100, 3000);
    }

    // Proves a header survives an encode/decode round trip and that a flipped byte anywhere in
    // its fields is caught.
    #[test]
    fn segment_header_round_trip_and_corruption() {
        let header = SegmentHeader {
            segment_id: 7,
            first_index: 100,
            log_start_index: 1,
            segment_size_bytes: 1 << 20,
            recycled: true,
        };
        let block = encode_segment_header(&header);
        assert_eq!(block.len(), SEGMENT_HEADER_SIZE_BYTES);
        assert_eq!(decode_segment_header(&block), Ok(header));
        for position in 0..SEGMENT_HEADER_FIELDS_BYTES {
            let mut damaged = block.to_vec();
            damaged[position] ^= 0x10;
            assert!(
                decode_segment_header(&damaged).is_err(),
                "flip at byte {position} went unnoticed"
            );
        }
    }

    // Proves CRC-valid headers with out-of-bounds fields (an index or id that index arithmetic
    // could overflow, an impossible segment size) are rejected as damage, not trusted.
    #[test]
    fn out_of_bounds_header_fields_are_damage() {
        let good = SegmentHeader {
            segment_id: 7,
            first_index: 100,
            log_start_index: 1,
            segment_size_bytes: 1 << 20,
            recycled: false,
        };
        let cases = [
            SegmentHeader {
                first_index: u64::MAX,
                ..good
            },
            SegmentHeader {
                first_index: MAX_LOG_INDEX + 1,
                ..good
            },
            SegmentHeader {
                segment_id: u64::MAX,
                ..good
            },
            SegmentHeader {
                segment_size_bytes: 1 << 40,
                ..good
            },
            SegmentHeader {
                segment_size_bytes: (1 << 20) + 1,
                ..good
            },
            SegmentHeader {
                segment_size_bytes: 0,
                ..good
            },
            SegmentHeader {
                log_start_index: 101,
                ..good
            },
        ];
        for bad in cases {
            let block = encode_segment_header(&bad);
            assert!(
                matches!(
                    decode_segment_header(&block),
                    Err(HeaderError::BadField(..))
                ),
                "{bad:?}"
            );
        }
        assert_eq!(parse_segment_file_name("18446744073709551615.wal"), None);
    }

    // Proves a record validates under its own segment id and fails under another, and that the
    // padded size is a multiple of the alignment.
    #[test]
    fn record_checksum_is_bound_to_segment() {
        let entry = Entry::new(5, 2, Bytes::from_static(b"hello"));
        let mut buffer = BytesMut::new();
        encode_record(&mut buffer, 9, &entry, 4);
        assert_eq!(buffer.len(), record_size(5));
        assert_eq!(buffer.len() % RECORD_ALIGNMENT_BYTES, 0);
        let header = RecordHeader::parse(&buffer);
        assert_eq!((header.index, header.term, header.durable_index), (5, 2, 4));
        assert!(record_checksum_matches(9, &header, &buffer));
        assert!(!record_checksum_matches(10, &header, &buffer));
    }

    // Proves only well-formed segment names parse.
    #[test]
    fn segment_names() {
        assert_eq!(parse_segment_file_name(&segment_file_name(42)), Some(42));
        assert_eq!(parse_segment_file_name("42.wal"), None);
        assert_eq!(parse_segment_file_name("0000000000000000004x.wal"), None);
        assert_eq!(
            parse_segment_file_name(&format!("{}.tmp", segment_file_name(1))),
            None
        );
    }
}
