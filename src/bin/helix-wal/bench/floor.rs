//! The C-level floors of the single-durable workload: raw durable-write loops in C
//! (`helix_wal::run_c_floor`) and the same loop through a storage backend's file, writing, per
//! operation, exactly the bytes the log writes per durable append of the same payload.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use helix_wal::Storage;

use super::{Backend, Sample, Setup};
use crate::Failure;

/// The bytes the log writes for one durable append of `payload_bytes`: one record (a 32-byte
/// header, the payload, padding to 8 bytes), and in direct I/O mode a padding record up to the
/// next 4096-byte block (a whole extra block when the gap is too short for a record header).
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
        Backend::CShim => CFloorMode::ShimLinked,
        Backend::CShimDirect => CFloorMode::ShimDirect,
        Backend::CShimHandoff => CFloorMode::ShimHandoffLinked,
        Backend::CShimHandoffDirect => CFloorMode::ShimHandoffDirect,
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

/// One run of the file-level loop: `write_at_and_sync` of the log's commit bytes at
/// consecutive offsets of a fresh, pre-zeroed file the size of a segment, from one spawned task
/// (as the log workloads' writers), through `storage` (the Rust path of a backend without the
/// log).
pub(super) async fn file_loop(
    storage: Arc<dyn Storage>,
    setup: &Setup,
    duration: Duration,
) -> Result<Sample, Failure> {
    /// Zeros written per call while preparing the file.
    const CHUNK_BYTES: u64 = 1 << 20;
    let dir = setup.fresh_dir("file");
    storage.create_dir_all(&dir).await?;
    // Opened as the log opens its segments: direct I/O where the backend does it.
    let file = storage.open_direct(&dir.join("file.dat")).await?;
    let file_bytes = setup.segment_size_bytes;
    let zeros = Bytes::from(vec![0u8; CHUNK_BYTES as usize]);
    let mut offset = 0;
    while offset < file_bytes {
        let length = (file_bytes - offset).min(CHUNK_BYTES) as usize;
        file.write_at(offset, zeros.slice(..length)).await?;
        offset += length as u64;
    }
    file.sync().await?;
    let write_bytes = u64::from(commit_bytes(
        setup.payload.len(),
        file.write_alignment() > 1,
    ));
    let data = Bytes::from(vec![0xA5u8; write_bytes as usize]);
    let slots = (file_bytes / write_bytes).max(1);
    let cpu_before = super::process_cpu_time();
    let started = Instant::now();
    // A spawned task, as the log workloads' writers are: the same runtime threads take part.
    let writer = tokio::spawn(async move {
        let mut latencies_ns = Vec::new();
        // At least one write per run, however late the task starts.
        loop {
            let began = Instant::now();
            let offset = (latencies_ns.len() as u64 % slots) * write_bytes;
            file.write_at_and_sync(offset, data.clone()).await?;
            latencies_ns.push(began.elapsed().as_nanos() as u64);
            if started.elapsed() >= duration {
                break;
            }
        }
        Ok::<_, helix_wal::WalError>(latencies_ns)
    });
    let latencies_ns = writer
        .await
        .map_err(|error| Failure::usage(error.to_string()))??;
    let elapsed = started.elapsed();
    let cpu = super::process_cpu_time().saturating_sub(cpu_before);
    Ok(Sample::new(latencies_ns, setup.payload.len(), elapsed, cpu))
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
