//! The C-level floors of the single-durable workload: raw durable-write loops in C
//! (`helix_wal::run_c_floor`) writing, per operation, exactly the bytes the log writes per
//! durable append of the same payload.

use std::time::Duration;

use super::{Backend, Sample, Setup};
use crate::Failure;

/// The bytes the log writes for one durable append of `payload_bytes`: one record (a 32-byte
/// header, the payload, padding to 8 bytes), and in direct I/O mode a padding record up to the
/// next 4096-byte block (a whole extra block when the gap is too short for a record header).
#[cfg_attr(not(all(target_os = "linux", feature = "io-uring")), allow(dead_code))]
fn commit_bytes(payload_bytes: usize, direct: bool) -> u32 {
    /// Record header, alignment of records, and of direct I/O writes (docs/FORMAT.md).
    const HEADER: usize = 32;
    const RECORD_ALIGNMENT: usize = 8;
    const BLOCK: usize = 4096;
    let record = (HEADER + payload_bytes).next_multiple_of(RECORD_ALIGNMENT);
    let bytes = if direct {
        let padded = record.next_multiple_of(BLOCK);
        match padded - record {
            gap if gap > 0 && gap < HEADER => padded + BLOCK,
            _ => padded,
        }
    } else {
        record
    };
    u32::try_from(bytes).unwrap_or(u32::MAX)
}

/// One run of a floor on a fresh file the size of a segment.
#[cfg(all(target_os = "linux", feature = "io-uring"))]
pub(super) async fn run(
    backend: Backend,
    setup: &Setup,
    duration: Duration,
) -> Result<Sample, Failure> {
    use helix_wal::CFloorMode;
    let mode = match backend {
        Backend::CPwrite => CFloorMode::PwriteFdatasync,
        Backend::CUring => CFloorMode::UringLinked,
        Backend::CPwriteDirect => CFloorMode::PwriteDirect,
        Backend::CUringDirect => CFloorMode::UringDirect,
        _ => return Err(Failure::usage("not a C-level floor")),
    };
    let dir = setup.fresh_dir("floor");
    std::fs::create_dir_all(&dir).map_err(|error| Failure::usage(error.to_string()))?;
    let path = dir.join("floor.dat");
    let write_bytes = commit_bytes(setup.payload.len(), mode.is_direct());
    let file_bytes = setup.segment_size_bytes;
    let cpu_before = super::process_cpu_time();
    let result = tokio::task::spawn_blocking(move || {
        helix_wal::run_c_floor(&path, mode, write_bytes, file_bytes, duration)
    })
    .await
    .map_err(|error| Failure::usage(error.to_string()))?;
    let cpu = super::process_cpu_time().saturating_sub(cpu_before);
    let run = result.map_err(|error| {
        Failure::usage(format!(
            "the C-level floor {} failed: {error}",
            backend.name()
        ))
    })?;
    Ok(Sample::new(
        run.latencies_ns,
        setup.payload.len(),
        run.elapsed,
        cpu,
    ))
}

#[cfg(not(all(target_os = "linux", feature = "io-uring")))]
pub(super) async fn run(
    backend: Backend,
    _setup: &Setup,
    _duration: Duration,
) -> Result<Sample, Failure> {
    Err(Failure::usage(format!(
        "the C-level floor {} needs the io-uring feature (Linux only)",
        backend.name()
    )))
}

#[cfg(test)]
mod tests {
    use super::commit_bytes;

    // Proves the floor writes what the log writes: a 4 KiB payload is a 4128-byte record, and
    // two blocks when padded for direct I/O; small payloads pad to one block.
    #[test]
    fn commit_bytes_match_the_format() {
        assert_eq!(commit_bytes(4096, false), 4128);
        assert_eq!(commit_bytes(4096, true), 8192);
        assert_eq!(commit_bytes(100, true), 4096);
        assert_eq!(commit_bytes(4048, true), 8192);
    }
}
