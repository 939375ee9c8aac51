//! End-to-end tests of the `helix-wal` binary: real processes, real exit codes, real output.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use bytes::Bytes;
use helix_wal::{Entry, TokioStorage, Wal, WalConfig};

fn helix_wal(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_helix-wal"))
        .args(args)
        .output()
        .expect("run the helix-wal binary")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Writes a durable log of `count` entries of 3000 bytes in 64 KiB segments and returns the
/// segment paths.
fn make_log(dir: &Path, count: u64) -> Vec<PathBuf> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let config = WalConfig::new(dir)
            .segment_size_bytes(64 << 10)
            .max_entry_size_bytes(16 << 10);
        let mut wal = Wal::open(TokioStorage::new(), config).await.unwrap();
        let entries: Vec<Entry> = (1..=count)
            .map(|index| Entry::new(index, 1 + index / 10, Bytes::from(vec![index as u8; 3000])))
            .collect();
        wal.append_batch_durable(&entries).await.unwrap();
        let paths = wal
            .segments()
            .into_iter()
            .map(|segment| segment.path)
            .collect();
        wal.close().await.unwrap();
        paths
    })
}

// Proves `bench` runs every workload on every backend (and the C-level floors on
// single-durable) with a tiny duration, exits 0 and prints machine-readable JSON with a figure
// and ratios for each pair, and the ring's counters for each io_uring pair. This is the CI
// smoke run of the comparison: it fails on errors, never on timing.
#[test]
fn bench_runs_and_prints_json() {
    let temporary = tempfile::tempdir().unwrap();
    let dir = temporary.path().to_str().unwrap();
    let mut args = vec![
        "bench",
        "--dir",
        dir,
        "--seconds",
        "0.1",
        "--warmup-seconds",
        "0.02",
        "--runs",
        "1",
        "--partitions",
        "2",
        "--segment-mib",
        "1",
        "--variant",
        "slow:base=tokio,flush-ms=2",
        "--json",
    ];
    if cfg!(all(target_os = "linux", feature = "io-uring")) {
        args.extend(["--variant", "spin:spin-us=50,task-run=coop,max-batch=8"]);
    }
    let output = helix_wal(&args);
    assert!(output.status.success(), "stderr: {}", text(&output.stderr));
    let figures: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let figures = figures.as_array().unwrap();
    for workload in [
        "single-durable",
        "partitions-durable",
        "group-commit-1",
        "group-commit-n",
        "buffered-throughput",
    ] {
        let rows: Vec<_> = figures
            .iter()
            .filter(|f| f["workload"] == workload)
            .collect();
        assert!(rows.len() >= 2, "{workload}: {rows:?}");
        for row in rows {
            assert!(
                row["operations_per_second"].as_f64().unwrap() > 0.0,
                "{row}"
            );
            assert!(row["ratio_to_tokio"].as_f64().is_some(), "{row}");
            // The io_uring rows carry the ring's own counters; the others do not.
            let ring = &row["io_uring"];
            let backend = row["backend"].as_str().unwrap();
            if backend.starts_with("io-uring") || backend == "file-io-uring" {
                assert!(ring["sqes_submitted"].as_u64().unwrap() > 0, "{row}");
                assert!(ring["sqes_per_enter"].as_f64().unwrap() > 0.0, "{row}");
                assert!(ring["in_flight_peak"].as_u64().unwrap() >= 1, "{row}");
                assert!(
                    ring["operations"]["write"]["count"].as_u64().unwrap() > 0,
                    "{row}"
                );
            } else {
                assert!(ring.is_null(), "{row}");
            }
        }
    }
    // With io_uring compiled in, both of its modes run, and the C-level floors (raw and through
    // the shim) and the file-level loops run the single-durable workload (the CI smoke run of
    // every backend).
    if cfg!(all(target_os = "linux", feature = "io-uring")) {
        let backends: Vec<&str> = figures
            .iter()
            .filter(|f| f["workload"] == "single-durable")
            .filter_map(|f| f["backend"].as_str())
            .collect();
        for expected in [
            "tokio/slow",
            "io-uring/spin",
            "io-uring",
            "io-uring-buffered",
            "c-pwrite",
            "c-uring",
            "c-pwrite-direct",
            "c-uring-direct",
            "c-shim",
            "c-shim-direct",
            "c-shim-handoff",
            "c-shim-handoff-direct",
            "file-tokio",
            "file-io-uring",
        ] {
            assert!(
                backends.contains(&expected),
                "{expected} missing: {backends:?}"
            );
        }
        let floor = figures
            .iter()
            .find(|f| f["workload"] == "single-durable" && f["backend"] == "tokio")
            .unwrap();
        assert!(floor["ratio_to_floor"].as_f64().is_some(), "{floor}");
    }
}

// Proves `verify` accepts a clean log (exit 0) and, after one byte of a record in the first
// segment is damaged, exits 1 naming that segment file and the record's byte offset.
#[test]
fn verify_clean_and_corrupt() {
    let temporary = tempfile::tempdir().unwrap();
    let dir = temporary.path().join("log");
    let segments = make_log(&dir, 60);
    let dir_text = dir.to_str().unwrap();
    let clean = helix_wal(&["verify", dir_text]);
    assert!(clean.status.success(), "stderr: {}", text(&clean.stderr));
    assert!(
        text(&clean.stdout).contains("60 entries"),
        "{}",
        text(&clean.stdout)
    );
    // Damage the payload of the second record of the first segment: it starts at 4096 plus
    // one record of 32 + 3000 bytes (already 8-byte aligned).
    let offset = 4096 + 3032;
    let mut bytes = std::fs::read(&segments[0]).unwrap();
    bytes[offset + 100] ^= 0x01;
    std::fs::write(&segments[0], bytes).unwrap();
    let corrupt = helix_wal(&["verify", dir_text]);
    assert_eq!(
        corrupt.status.code(),
        Some(1),
        "stdout: {}",
        text(&corrupt.stdout)
    );
    let message = text(&corrupt.stderr);
    assert!(message.contains(segments[0].to_str().unwrap()), "{message}");
    assert!(message.contains(&format!("offset {offset}")), "{message}");
    assert!(!message.contains("panicked"), "{message}");
    // PointInTime would keep the intact prefix; verify still reports the damage, with the cut.
    let lenient = helix_wal(&["verify", "--mode", "point-in-time", dir_text]);
    assert_eq!(lenient.status.code(), Some(1));
    let message = text(&lenient.stderr);
    assert!(message.contains("would cut"), "{message}");
    assert!(message.contains(&format!("offset {offset}")), "{message}");
}

// Proves `inspect` lists every segment with its index range and terms, as text and as JSON.
#[test]
fn inspect_lists_segments() {
    let temporary = tempfile::tempdir().unwrap();
    let dir = temporary.path().join("log");
    let segments = make_log(&dir, 60);
    let output = helix_wal(&["inspect", dir.to_str().unwrap()]);
    assert!(output.status.success(), "stderr: {}", text(&output.stderr));
    let shown = text(&output.stdout);
    assert!(shown.contains("entries [1, 60]"), "{shown}");
    for segment in &segments {
        let name = segment.file_name().unwrap().to_str().unwrap();
        assert!(shown.contains(name), "{name} missing from {shown}");
    }
    let json = helix_wal(&["inspect", "--json", dir.to_str().unwrap()]);
    let view: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(view["last_index"], 60);
    let listed = view["segments"].as_array().unwrap();
    assert_eq!(listed.len(), segments.len());
    assert_eq!(listed[0]["first_index"], 1);
    assert_eq!(listed[0]["first_term"], 1);
}

// Proves `dump` prints the requested entries with previews in hex or base64, as text or JSON
// lines, and rejects a range outside the log with exit code 2 and one sentence.
#[test]
fn dump_prints_entries() {
    let temporary = tempfile::tempdir().unwrap();
    let dir = temporary.path().join("log");
    make_log(&dir, 30);
    let dir_text = dir.to_str().unwrap();
    let output = helix_wal(&[
        "dump",
        dir_text,
        "--from",
        "5",
        "--to",
        "7",
        "--preview-bytes",
        "2",
    ]);
    assert!(output.status.success(), "stderr: {}", text(&output.stderr));
    let lines: Vec<String> = text(&output.stdout).lines().map(str::to_owned).collect();
    assert_eq!(lines.len(), 3);
    assert_eq!(lines[0], "index=5 term=1 bytes=3000 hex=0505...");
    let json = helix_wal(&[
        "dump",
        dir_text,
        "--from",
        "12",
        "--to",
        "12",
        "--json",
        "--encoding",
        "base64",
        "--preview-bytes",
        "3",
    ]);
    let entry: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(entry["index"], 12);
    assert_eq!(entry["term"], 2);
    assert_eq!(entry["preview"], "DAwM");
    let all = helix_wal(&["dump", dir_text]);
    assert_eq!(text(&all.stdout).lines().count(), 30);
    let outside = helix_wal(&["dump", dir_text, "--from", "1", "--to", "99"]);
    assert_eq!(outside.status.code(), Some(2));
    assert!(text(&outside.stderr).contains("outside the log"));
}

// Proves a missing directory is a clear error with exit code 2, not a panic, and that every
// subcommand has --help.
#[test]
fn errors_and_help() {
    let output = helix_wal(&["verify", "/definitely/not/a/log"]);
    assert_eq!(output.status.code(), Some(2));
    let message = text(&output.stderr);
    assert!(message.starts_with("helix-wal: "), "{message}");
    assert!(!message.contains("panicked"), "{message}");
    for subcommand in ["bench", "verify", "inspect", "dump"] {
        let help = helix_wal(&[subcommand, "--help"]);
        assert!(help.status.success());
        assert!(text(&help.stdout).contains("Usage"), "{subcommand}");
    }
}
