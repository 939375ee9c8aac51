//! Measures recovery speed: builds a log of `HELIX_RECOVERY_BYTES` (default 1 GiB) of 4 KiB
//! entries, then reopens it several times with a warm page cache and prints the scan rate.
//!
//! `cargo run --release --example recovery_throughput [DIR]`

use std::time::Instant;

use bytes::Bytes;
use helix_wal::{Entry, TokioStorage, Wal, WalConfig};

const ENTRY_BYTES: usize = 4096;
const BATCH_ENTRIES: u64 = 256;
const REOPENS: usize = 5;

#[tokio::main]
async fn main() -> Result<(), helix_wal::WalError> {
    let total_bytes: u64 = std::env::var("HELIX_RECOVERY_BYTES")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(1 << 30);
    let temporary = tempfile::tempdir().expect("temporary directory");
    let dir = std::env::args()
        .nth(1)
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| temporary.path().join("log"));
    let config = WalConfig::new(&dir);
    let mut wal = Wal::open(TokioStorage::new(), config.clone()).await?;
    let payload = Bytes::from(vec![0x5Au8; ENTRY_BYTES]);
    let entries = total_bytes / ENTRY_BYTES as u64;
    let mut index = wal.last_index() + 1;
    let started = Instant::now();
    while index <= entries {
        let batch: Vec<Entry> = (index..(index + BATCH_ENTRIES).min(entries + 1))
            .map(|i| Entry::new(i, 1, payload.clone()))
            .collect();
        index += batch.len() as u64;
        wal.append_batch(&batch).await?;
    }
    wal.close().await?;
    println!(
        "wrote {} entries ({:.2} GiB of payload) in {:.1} s",
        entries,
        total_bytes as f64 / f64::from(1u32 << 30),
        started.elapsed().as_secs_f64()
    );
    drop(wal);
    let mut rates = Vec::new();
    for attempt in 0..REOPENS {
        let started = Instant::now();
        let wal = Wal::open(TokioStorage::new(), config.clone()).await?;
        let seconds = started.elapsed().as_secs_f64();
        let report = wal.recovery_report();
        let rate = report.bytes_read as f64 / seconds / 1e9;
        println!(
            "open {attempt}: {} entries, {} segments, {:.2} GB read in {:.3} s = {rate:.2} GB/s",
            report.entries_recovered,
            report.segments_scanned,
            report.bytes_read as f64 / 1e9,
            seconds
        );
        if attempt > 0 {
            rates.push(rate);
        }
    }
    rates.sort_by(f64::total_cmp);
    println!(
        "median warm recovery rate: {:.2} GB/s",
        rates[rates.len() / 2]
    );
    Ok(())
}
