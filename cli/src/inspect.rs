//! `verify`, `inspect` and `dump`: read-only views of a log directory.

use std::path::PathBuf;
use std::sync::Arc;

use clap::ValueEnum;
use helix_wal::{RecoveryMode, Storage, TokioStorage, Wal, WalConfig};
use serde::Serialize;

use crate::Failure;

/// Entries read per batch while dumping: bounds memory whatever the log's size.
const DUMP_BATCH_BYTES: usize = 4 << 20;

async fn open(
    dir: PathBuf,
    mode: RecoveryMode,
    max_entry_size_bytes: usize,
) -> Result<Wal<Arc<dyn Storage>>, Failure> {
    let config = WalConfig::new(dir)
        .recovery_mode(mode)
        .max_entry_size_bytes(max_entry_size_bytes)
        // Only new segments use this size; a read-only open creates none.
        .segment_size_bytes(helix_wal::constants::MAX_SEGMENT_SIZE_BYTES);
    let storage: Arc<dyn Storage> = Arc::new(TokioStorage::new());
    Ok(Wal::open_read_only(storage, config).await?)
}

/// Checks every record; corruption is exit code 1 with the file and offset.
pub async fn verify(
    dir: PathBuf,
    mode: RecoveryMode,
    max_entry_size_bytes: usize,
) -> Result<(), Failure> {
    let wal = open(dir.clone(), mode, max_entry_size_bytes).await?;
    let report = wal.recovery_report();
    println!(
        "{}: {} segments, {} entries [{}, {}], {} bytes read",
        dir.display(),
        report.segments_scanned,
        report.entries_recovered,
        wal.first_index(),
        wal.last_index(),
        report.bytes_read
    );
    for path in &report.segments_removed {
        println!(
            "superseded segment (a writable open removes it): {}",
            path.display()
        );
    }
    for path in &report.foreign_files {
        println!("foreign file (ignored): {}", path.display());
    }
    if let Some(cut) = &report.cut {
        // Damaged or torn records are a problem even where the mode would recover by cutting.
        return Err(Failure::damaged(format!(
            "recovery under {mode:?} would cut the log at {} offset {} and discard index {} and \
             everything after it: {}",
            cut.segment.display(),
            cut.offset,
            cut.first_discarded_index,
            cut.reason
        )));
    }
    println!("ok");
    Ok(())
}

#[derive(Serialize)]
struct SegmentView {
    path: String,
    segment_id: u64,
    first_index: u64,
    last_index: Option<u64>,
    entries: u64,
    first_term: Option<u64>,
    last_term: Option<u64>,
    used_bytes: u64,
    capacity_bytes: u64,
}

#[derive(Serialize)]
struct InspectView {
    dir: String,
    first_index: u64,
    last_index: u64,
    durable_index: u64,
    segments: Vec<SegmentView>,
    cut: Option<String>,
    superseded_segments: Vec<String>,
    temporary_files: Vec<String>,
    foreign_files: Vec<String>,
}

/// Prints the segments and what recovery would keep.
pub async fn inspect(
    dir: PathBuf,
    mode: RecoveryMode,
    max_entry_size_bytes: usize,
    json: bool,
) -> Result<(), Failure> {
    let wal = open(dir.clone(), mode, max_entry_size_bytes).await?;
    let report = wal.recovery_report();
    let display = |path: &PathBuf| path.display().to_string();
    let segments = wal
        .segments()
        .into_iter()
        .map(|segment| {
            let last_index =
                (segment.entries > 0).then(|| segment.first_index + segment.entries - 1);
            SegmentView {
                path: display(&segment.path),
                segment_id: segment.segment_id,
                first_index: segment.first_index,
                last_index,
                entries: segment.entries,
                first_term: last_index.and_then(|_| wal.term(segment.first_index).ok()),
                last_term: last_index.and_then(|last| wal.term(last).ok()),
                used_bytes: segment.used_bytes,
                capacity_bytes: segment.capacity_bytes,
            }
        })
        .collect();
    let view = InspectView {
        dir: display(&dir),
        first_index: wal.first_index(),
        last_index: wal.last_index(),
        durable_index: wal.durable_index(),
        segments,
        cut: report.cut.as_ref().map(|cut| {
            format!(
                "{} offset {} (first discarded index {}): {}",
                cut.segment.display(),
                cut.offset,
                cut.first_discarded_index,
                cut.reason
            )
        }),
        superseded_segments: report.segments_removed.iter().map(display).collect(),
        temporary_files: report.temporary_files_removed.iter().map(display).collect(),
        foreign_files: report.foreign_files.iter().map(display).collect(),
    };
    if json {
        let text =
            serde_json::to_string_pretty(&view).map_err(|e| Failure::usage(e.to_string()))?;
        println!("{text}");
        return Ok(());
    }
    print_inspect(&view);
    Ok(())
}

fn print_inspect(view: &InspectView) {
    println!("log {}", view.dir);
    println!(
        "  entries [{}, {}], durable through {}",
        view.first_index, view.last_index, view.durable_index
    );
    println!(
        "  {:<28} {:>10} {:>12} {:>12} {:>9} {:>9} {:>12} {:>12}",
        "segment", "id", "first", "last", "term lo", "term hi", "used", "capacity"
    );
    for segment in &view.segments {
        let name = segment.path.rsplit('/').next().unwrap_or(&segment.path);
        let or_dash = |value: Option<u64>| value.map_or("-".to_string(), |v| v.to_string());
        println!(
            "  {:<28} {:>10} {:>12} {:>12} {:>9} {:>9} {:>12} {:>12}",
            name,
            segment.segment_id,
            segment.first_index,
            or_dash(segment.last_index),
            or_dash(segment.first_term),
            or_dash(segment.last_term),
            segment.used_bytes,
            segment.capacity_bytes
        );
    }
    if let Some(cut) = &view.cut {
        println!("  a writable open would cut: {cut}");
    }
    for path in &view.superseded_segments {
        println!("  superseded segment (removed by a writable open): {path}");
    }
    for path in &view.temporary_files {
        println!("  temporary file (removed by a writable open): {path}");
    }
    for path in &view.foreign_files {
        println!("  foreign file (ignored): {path}");
    }
}

/// How payload previews are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PayloadEncoding {
    /// Lowercase hexadecimal.
    Hex,
    /// Standard base64 with padding.
    Base64,
}

/// What `dump` prints.
pub struct DumpOptions {
    pub from: Option<u64>,
    pub to: Option<u64>,
    pub preview_bytes: usize,
    pub encoding: PayloadEncoding,
    pub json: bool,
}

#[derive(Serialize)]
struct EntryView<'a> {
    index: u64,
    term: u64,
    payload_bytes: usize,
    preview: &'a str,
    encoding: &'static str,
}

/// Prints entries `[from, to]`, reading them in bounded batches.
pub async fn dump(
    dir: PathBuf,
    mode: RecoveryMode,
    max_entry_size_bytes: usize,
    options: DumpOptions,
) -> Result<(), Failure> {
    let wal = open(dir, mode, max_entry_size_bytes).await?;
    let from = options.from.unwrap_or(wal.first_index());
    let to = options.to.unwrap_or(wal.last_index());
    if wal.is_empty() || from > to {
        return Ok(());
    }
    if from < wal.first_index() || to > wal.last_index() {
        return Err(Failure::usage(format!(
            "the range [{from}, {to}] is outside the log, which holds [{}, {}]",
            wal.first_index(),
            wal.last_index()
        )));
    }
    let mut next = from;
    while next <= to {
        let entries = wal.read_range(next, to + 1, DUMP_BATCH_BYTES).await?;
        for entry in &entries {
            let shown = &entry.payload[..entry.payload.len().min(options.preview_bytes)];
            let (preview, encoding) = match options.encoding {
                PayloadEncoding::Hex => (hex(shown), "hex"),
                PayloadEncoding::Base64 => (base64(shown), "base64"),
            };
            if options.json {
                let view = EntryView {
                    index: entry.index,
                    term: entry.term,
                    payload_bytes: entry.payload.len(),
                    preview: &preview,
                    encoding,
                };
                let line =
                    serde_json::to_string(&view).map_err(|e| Failure::usage(e.to_string()))?;
                println!("{line}");
            } else {
                let more = if shown.len() < entry.payload.len() {
                    "..."
                } else {
                    ""
                };
                println!(
                    "index={} term={} bytes={} {encoding}={preview}{more}",
                    entry.index,
                    entry.term,
                    entry.payload.len()
                );
            }
        }
        next = entries.last().map_or(to + 1, |entry| entry.index + 1);
    }
    Ok(())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// Standard base64 (RFC 4648) with padding.
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let group = (u32::from(chunk[0]) << 16)
            | (u32::from(*chunk.get(1).unwrap_or(&0)) << 8)
            | u32::from(*chunk.get(2).unwrap_or(&0));
        for position in 0..4 {
            if position <= chunk.len() {
                out.push(ALPHABET[(group >> (18 - 6 * position) & 0x3F) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    // Proves the base64 encoder matches RFC 4648's test vectors.
    #[test]
    fn base64_vectors() {
        let vectors = [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ];
        for (input, expected) in vectors {
            assert_eq!(base64(input.as_bytes()), expected);
        }
    }
}
