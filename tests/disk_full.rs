//! Disk full for real: the log on a small tmpfs (mounted for the test, which needs root) is
//! filled until an append fails. The failure must be a clean ENOSPC error, nothing acknowledged
//! may be lost, opening the full disk must work, and once space returns the log appends again.
//! Without root the test says loudly that it is skipped; `HELIX_REQUIRE_ROOT_TESTS=1` (set by
//! scripts/test.sh, which CI runs as root) turns that into a failure.

mod common;

use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use bytes::Bytes;
use helix_wal::{Entry, Storage, TokioStorage, Wal, WalConfig, WalError};

/// Size of the test filesystem.
const FILESYSTEM_BYTES: u64 = 2 << 20;
/// A file taking this much space is removed to give space back.
const BALLAST_BYTES: usize = 512 << 10;
/// Each segment: a few fit on the filesystem.
const SEGMENT_SIZE_BYTES: u64 = 256 << 10;
/// Payload of each entry.
const PAYLOAD_BYTES: usize = 1000;
/// More appends than could ever fit: reaching it means ENOSPC never came.
const MAX_APPENDS: u64 = 10_000;

/// A tmpfs mounted on a fresh directory, unmounted when dropped.
struct SmallDisk {
    mount_point: PathBuf,
    _parent: tempfile::TempDir,
}

impl SmallDisk {
    /// Mounts the filesystem, or returns `None` (after saying so loudly) when this process may
    /// not mount and the test is not required.
    fn mount() -> Option<SmallDisk> {
        let parent = tempfile::tempdir().expect("temporary directory");
        let mount_point = parent.path().join("disk");
        std::fs::create_dir(&mount_point).expect("mount point");
        let mounted = Command::new("mount")
            .args(["-t", "tmpfs", "-o"])
            .arg(format!("size={FILESYSTEM_BYTES}"))
            .arg("tmpfs")
            .arg(&mount_point)
            .output();
        match mounted {
            Ok(output) if output.status.success() => Some(SmallDisk {
                mount_point,
                _parent: parent,
            }),
            other => {
                let why = format!("cannot mount a tmpfs (root needed): {other:?}");
                let required =
                    std::env::var("HELIX_REQUIRE_ROOT_TESTS").is_ok_and(|value| value != "0");
                assert!(!required, "HELIX_REQUIRE_ROOT_TESTS is set but {why}");
                eprintln!("\n*** SKIPPED: disk-full test not run: {why}\n");
                None
            }
        }
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(&self.mount_point)
            .status();
    }
}

fn config(dir: &Path) -> WalConfig {
    WalConfig::new(dir)
        .segment_size_bytes(SEGMENT_SIZE_BYTES)
        .max_entry_size_bytes(PAYLOAD_BYTES)
}

fn entry(index: u64) -> Entry {
    Entry::new(index, 1, Bytes::from(vec![index as u8; PAYLOAD_BYTES]))
}

/// Fills a fresh small disk under a log on `storage`, then checks the failure, the reopen of the full
/// disk, and the recovery of the log once the ballast is removed.
async fn fill_and_recover(storage: Arc<dyn Storage>, name: &str) {
    let Some(disk) = SmallDisk::mount() else {
        return;
    };
    let ballast = disk.mount_point.join(format!("{name}.ballast"));
    std::fs::write(&ballast, vec![1u8; BALLAST_BYTES]).expect("ballast");
    let dir = disk.mount_point.join(name);
    let mut wal = Wal::open(storage.clone(), config(&dir)).await.unwrap();
    let mut acknowledged = 0;
    let error = loop {
        let next = acknowledged + 1;
        assert!(next < MAX_APPENDS, "{name}: the disk never filled up");
        match wal.append_batch_durable(&[entry(next)]).await {
            Ok(()) => acknowledged = next,
            Err(error) => break error,
        }
    };
    assert_eq!(
        error.io_kind(),
        Some(ErrorKind::StorageFull),
        "{name}: the failure is not a clean ENOSPC: {error}"
    );
    assert!(matches!(error, WalError::Io { .. }), "{name}: {error}");
    assert!(
        wal.append_batch_durable(&[entry(acknowledged + 1)])
            .await
            .is_err(),
        "{name}: a log that hit ENOSPC took the same append again"
    );
    drop(wal);
    // The disk is still full: opening must work and keep every acknowledged entry.
    let wal = Wal::open(storage.clone(), config(&dir)).await.unwrap();
    assert!(
        wal.last_index() >= acknowledged,
        "{name}: acknowledged entries lost"
    );
    for index in 1..=acknowledged {
        assert_eq!(
            wal.read(index).await.unwrap(),
            entry(index),
            "{name}: {index}"
        );
    }
    drop(wal);
    std::fs::remove_file(&ballast).expect("remove the ballast");
    let mut wal = Wal::open(storage.clone(), config(&dir)).await.unwrap();
    let next = wal.last_index() + 1;
    for index in next..next + 50 {
        wal.append_batch_durable(&[entry(index)])
            .await
            .unwrap_or_else(|error| {
                panic!("{name}: the log does not append once space returned: {error}")
            });
    }
    wal.close().await.unwrap();
    drop(wal);
    let wal = Wal::open(storage, config(&dir)).await.unwrap();
    assert_eq!(wal.last_index(), next + 49, "{name}");
    println!("{name}: {acknowledged} entries acknowledged before ENOSPC, none lost");
}

// Proves, on a real 2 MiB tmpfs, for TokioStorage and the io_uring backend: appends fail with
// a clean ENOSPC naming the file, nothing acknowledged is lost, the full disk opens, and the
// log appends again once space returns.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_fails_cleanly_and_recovers() {
    fill_and_recover(Arc::new(TokioStorage::new()), "tokio").await;
    #[cfg(all(target_os = "linux", feature = "io-uring"))]
    if let Some(harness) = common::Harness::io_uring_direct() {
        fill_and_recover(harness.storage, "io_uring").await;
    }
}
