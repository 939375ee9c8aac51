//! The portable build: without the `io-uring` feature, `create_storage` picks TokioStorage
//! (there is no io_uring to fall back from), and a log on it works. scripts/test.sh also runs
//! this file with `--no-default-features`; under `--all-features` it checks the opposite.

use bytes::Bytes;
use helix_wal::{create_storage_with, Entry, StorageOptions, Wal, WalConfig};

// Proves the factory's choice matches the build: TokioStorage with no fallback reason when the
// io-uring feature is compiled out (io_uring when it is in and the kernel allows it), and that
// a log on the chosen backend appends durably and reopens.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_storage_matches_the_build() {
    let choice = create_storage_with(&StorageOptions::default());
    if cfg!(all(target_os = "linux", feature = "io-uring")) {
        let refused = choice.fallback_reason.is_some();
        assert!(
            choice.backend == "io_uring" || refused,
            "with io_uring compiled in, a fallback must say why"
        );
    } else {
        assert_eq!(choice.backend, "tokio");
        assert!(
            choice.fallback_reason.is_none(),
            "{:?}",
            choice.fallback_reason
        );
    }
    let temporary = tempfile::tempdir().unwrap();
    let config = WalConfig::new(temporary.path().join("log"))
        .segment_size_bytes(64 << 10)
        .max_entry_size_bytes(1024);
    let mut wal = Wal::open(choice.storage.clone(), config.clone())
        .await
        .unwrap();
    let entry = Entry::new(1, 1, Bytes::from_static(b"portable"));
    wal.append_batch_durable(std::slice::from_ref(&entry))
        .await
        .unwrap();
    wal.close().await.unwrap();
    drop(wal);
    let wal = Wal::open(choice.storage, config).await.unwrap();
    assert_eq!(wal.read(1).await.unwrap(), entry);
}
