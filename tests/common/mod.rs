//! Shared test support: a harness per storage backend, and the macro that instantiates a list of
//! generic test cases once per backend, so every backend runs the same suite.
#![allow(dead_code)]

pub mod instrumented;

use std::path::PathBuf;
use std::sync::Arc;

use helix_wal::{Storage, TokioStorage};

/// One backend under test, with a private directory for its files.
pub struct Harness {
    /// The backend.
    pub storage: Arc<dyn Storage>,
    /// A directory private to this test.
    pub dir: PathBuf,
    /// Keeps the temporary directory alive for real-file backends.
    _temp: Option<tempfile::TempDir>,
}

impl Harness {
    /// TokioStorage on a fresh temporary directory.
    pub fn tokio() -> Harness {
        let temp = tempfile::tempdir().expect("create temporary directory");
        Harness {
            storage: Arc::new(TokioStorage::new()),
            dir: temp.path().join("log"),
            _temp: Some(temp),
        }
    }

    /// Simulates a process crash: for real-file backends the OS keeps every completed write (a
    /// process crash loses nothing the kernel already has); simulated backends also drop
    /// unsynced data here.
    pub async fn crash(&self) {}
}

/// Instantiates `$case(harness)` tests in a module per backend:
/// `for_each_backend!(module_name => cases::path; case_a, case_b, ...)`.
#[macro_export]
macro_rules! for_each_backend {
    ($cases:path; $($case:ident),* $(,)?) => {
        mod tokio_backend {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    use $cases as cases;
                    cases::$case($crate::common::Harness::tokio()).await;
                }
            )*
        }
    };
}
