//! The C-level floors of the single-durable workload: raw durable-write loops in C
//! (`crate::c_floor::run_c_floor`) and the same loop through a storage backend's file, writing,
//! per operation, exactly the bytes the log writes per durable append of the same payload
//! (`helix_wal::durable_append_bytes`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use helix_wal::Storage;

use super::{Backend, Sample, Setup};
use crate::Failure;

/// One run of a floor on a fresh file the size of a segment.
#[cfg(all(target_os = "linux", feature = "io-uring"))]
pub(super) async fn run(
    backend: Backend,
    setup: &Setup,
    duration: Duration,
) -> Result<Sample, Failure> {
    use crate::c_floor::{run_c_floor, CFloorMode};
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
    // The direct modes write as the io_uring backend's direct I/O files demand.
    let write_alignment_bytes = if mode.is_direct() {
        u64::from(helix_wal::io_uring_limits::DIRECT_IO_ALIGNMENT_BYTES)
    } else {
        1
    };
    let write_bytes = helix_wal::durable_append_bytes(setup.payload.len(), write_alignment_bytes);
    let write_bytes = u32::try_from(write_bytes)
        .map_err(|_| Failure::usage("the payload is too large for a C-level floor"))?;
    let file_bytes = setup.segment_size_bytes;
    let cpu_before = super::process_cpu_time();
    let result = tokio::task::spawn_blocking(move || {
        run_c_floor(&path, mode, write_bytes, file_bytes, duration)
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
    let write_bytes = helix_wal::durable_append_bytes(setup.payload.len(), file.write_alignment());
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
