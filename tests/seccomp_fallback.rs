//! Fallback under a real seccomp filter: a child process (this test binary, re-executed to run
//! the ignored `child_under_seccomp` case) installs a filter that makes `io_uring_setup` fail
//! with EPERM, as Docker's default profile does, then asks `create_storage_with` for a backend
//! and runs a log on what it gets.
#![cfg(all(target_os = "linux", feature = "io-uring"))]

mod common;

use std::collections::BTreeMap;
use std::process::Command;

use bytes::Bytes;
use helix_wal::{create_storage_with, Entry, StorageOptions, Wal, WalConfig, WalError};
use seccompiler::{BpfProgram, SeccompAction, SeccompFilter, TargetArch};

/// Set in the child's environment.
const CHILD_VARIABLE: &str = "HELIX_SECCOMP_CHILD";
/// The line the child prints when everything it checked held.
const SUCCESS: &str = "FALLBACK-OK";

/// Makes `io_uring_setup` fail with EPERM for this thread and the threads it creates later.
fn block_io_uring_setup() {
    let arch = if cfg!(target_arch = "aarch64") {
        TargetArch::aarch64
    } else {
        TargetArch::x86_64
    };
    let rules = BTreeMap::from([(libc::SYS_io_uring_setup, Vec::new())]);
    let filter = SeccompFilter::new(
        rules,
        SeccompAction::Allow,
        SeccompAction::Errno(libc::EPERM as u32),
        arch,
    )
    .expect("a valid seccomp filter");
    let program: BpfProgram = filter.try_into().expect("a compilable filter");
    seccompiler::apply_filter(&program).expect("install the seccomp filter");
}

// The child's side: not a test on its own (ignored); `io_uring_blocked_by_seccomp_falls_back`
// runs it in a child process, because a seccomp filter cannot be removed once installed.
#[test]
#[ignore = "runs in a child process under a seccomp filter"]
fn child_under_seccomp() {
    assert!(
        std::env::var_os(CHILD_VARIABLE).is_some(),
        "child_under_seccomp runs only as the child of io_uring_blocked_by_seccomp_falls_back"
    );
    block_io_uring_setup();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let choice = create_storage_with(&StorageOptions::default());
        assert_eq!(choice.backend, "tokio", "io_uring was not refused");
        match &choice.fallback_reason {
            Some(WalError::IoUringUnavailable { errno, fix, .. }) => {
                assert_eq!(*errno, Some(libc::EPERM));
                assert!(
                    fix.contains("seccomp"),
                    "the fix does not name seccomp: {fix}"
                );
            }
            other => panic!("the fallback names no io_uring refusal: {other:?}"),
        }
        let temporary = tempfile::tempdir().expect("temporary directory");
        let config = WalConfig::new(temporary.path().join("log"))
            .segment_size_bytes(64 << 10)
            .max_entry_size_bytes(1024);
        let mut wal = Wal::open(choice.storage.clone(), config.clone())
            .await
            .expect("open on the fallback backend");
        let entry = Entry::new(1, 1, Bytes::from_static(b"durable without io_uring"));
        wal.append_batch_durable(std::slice::from_ref(&entry))
            .await
            .expect("durable append on the fallback backend");
        wal.close().await.expect("close");
        drop(wal);
        let wal = Wal::open(choice.storage, config).await.expect("reopen");
        assert_eq!(wal.read(1).await.expect("read"), entry);
        let reason = choice.fallback_reason.map(|reason| reason.to_string());
        println!("\n{SUCCESS} {}", reason.unwrap_or_default());
    });
}

// Proves that with io_uring_setup blocked by a real seccomp filter (EPERM), create_storage
// falls back to TokioStorage, names the cause (errno EPERM) and a fix that mentions seccomp,
// and that a log on the fallback appends durably and reopens with its entry.
#[test]
fn io_uring_blocked_by_seccomp_falls_back() {
    // Without io_uring on this machine there is nothing to block; the harness says so loudly.
    if common::Harness::io_uring().is_none() {
        return;
    }
    let output = Command::new(std::env::current_exe().expect("test binary"))
        .args([
            "--ignored",
            "--exact",
            "child_under_seccomp",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_VARIABLE, "1")
        .output()
        .expect("run the child");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && stdout.contains(SUCCESS),
        "the child under seccomp failed ({}):\n{stdout}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    let reason = stdout
        .lines()
        .find_map(|line| line.strip_prefix(SUCCESS))
        .unwrap_or_default();
    println!("fallback reason: {reason}");
}
