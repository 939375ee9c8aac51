//! Shared test support: a harness per storage backend, and the macro that instantiates a list of
//! generic test cases once per backend, so every backend runs the same suite.
#![allow(dead_code)]

pub mod instrumented;
#[cfg(all(target_os = "linux", feature = "io-uring"))]
pub mod ring;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use helix_wal::{SimulatedStorage, Storage, TokioStorage};

/// Set (to anything but `0`) to make io_uring tests fail instead of skipping when the machine
/// refuses io_uring.
pub const REQUIRE_IO_URING_VARIABLE: &str = "HELIX_REQUIRE_IO_URING";

/// True when `HELIX_REQUIRE_IO_URING` is set to anything but `0`.
pub fn io_uring_required() -> bool {
    std::env::var(REQUIRE_IO_URING_VARIABLE).is_ok_and(|value| value != "0")
}

/// Block size of the direct-I/O harnesses.
pub const DIRECT_IO_BLOCK_BYTES: u64 = 4096;

/// Chance that a call of the in-flight simulated harness is left in flight: even odds mix calls
/// that complete at once with calls that overlap later ones.
pub const SIMULATED_IN_FLIGHT_RATE: f64 = 0.5;

/// Seed of `Harness::simulated` when `HELIX_SIM_SEED` is not set.
pub const DEFAULT_SIMULATION_SEED: u64 = 0x5EED_0000_0001;

/// The simulation seed: `HELIX_SIM_SEED` (decimal or 0x-prefixed hex) or the default.
pub fn simulation_seed() -> u64 {
    match std::env::var("HELIX_SIM_SEED") {
        Ok(text) => {
            let parsed = match text.strip_prefix("0x") {
                Some(hex) => u64::from_str_radix(hex, 16),
                None => text.parse(),
            };
            parsed.unwrap_or_else(|_| panic!("HELIX_SIM_SEED={text:?} is not a u64"))
        }
        Err(_) => DEFAULT_SIMULATION_SEED,
    }
}

/// One backend under test, with a private directory for its files.
pub struct Harness {
    /// The backend.
    pub storage: Arc<dyn Storage>,
    /// A directory private to this test.
    pub dir: PathBuf,
    /// The simulated machine, when the backend is `SimulatedStorage` (a second handle to the
    /// one in `storage`, for crashing and fault injection).
    pub simulated: Option<SimulatedStorage>,
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
            simulated: None,
            _temp: Some(temp),
        }
    }

    /// The io_uring backend with buffered writes (linked write + fsync; the default
    /// configuration otherwise) on a fresh temporary directory, or `None`
    /// after saying loudly on stderr that the test is skipped because this machine refuses
    /// io_uring. With `HELIX_REQUIRE_IO_URING=1` in the environment a refusal fails the test
    /// instead, so CI on a machine known to support io_uring can never pass by skipping.
    #[cfg(all(target_os = "linux", feature = "io-uring"))]
    pub fn io_uring() -> Option<Harness> {
        let buffered = helix_wal::IoUringConfig {
            direct_io: false,
            ..helix_wal::IoUringConfig::default()
        };
        Self::io_uring_with(buffered).map(|(harness, _storage)| harness)
    }

    /// Like [`Harness::io_uring`] with a configuration; also returns the concrete backend (for
    /// its counters and test hooks).
    #[cfg(all(target_os = "linux", feature = "io-uring"))]
    pub fn io_uring_with(
        config: helix_wal::IoUringConfig,
    ) -> Option<(Harness, helix_wal::IoUringWorkerStorage)> {
        let storage = match helix_wal::IoUringWorkerStorage::with_config(config) {
            Ok(storage) => storage,
            Err(error) => {
                if io_uring_required() {
                    panic!("io_uring is required ({REQUIRE_IO_URING_VARIABLE}) but: {error}");
                }
                eprintln!(
                    "\n*** SKIPPED: io_uring test not run: {error}\n*** (set \
                     {REQUIRE_IO_URING_VARIABLE}=1 to make this a failure)\n"
                );
                return None;
            }
        };
        let temp = tempfile::tempdir().expect("create temporary directory");
        let harness = Harness {
            storage: Arc::new(storage.clone()),
            dir: temp.path().join("log"),
            simulated: None,
            _temp: Some(temp),
        };
        Some((harness, storage))
    }

    /// The io_uring backend in its default configuration: direct I/O (`O_DIRECT | O_DSYNC`
    /// writes) for files from `open_direct`, like [`Harness::io_uring`] otherwise.
    #[cfg(all(target_os = "linux", feature = "io-uring"))]
    pub fn io_uring_direct() -> Option<Harness> {
        Self::io_uring_with(helix_wal::IoUringConfig::default()).map(|(harness, _storage)| harness)
    }

    /// SimulatedStorage seeded by [`simulation_seed`]. Like a fresh temporary directory, the
    /// parent of `dir` exists durably; `dir` itself does not exist yet.
    pub fn simulated() -> Harness {
        Self::simulated_with(helix_wal::SimulatedConfig::new(simulation_seed()))
    }

    /// SimulatedStorage whose files from `open_direct` behave as direct I/O (`O_DIRECT |
    /// O_DSYNC`): writes must be whole aligned blocks and are durable on return. Otherwise like
    /// [`Harness::simulated`].
    pub fn simulated_direct() -> Harness {
        Self::simulated_with(helix_wal::SimulatedConfig {
            write_alignment_bytes: DIRECT_IO_BLOCK_BYTES,
            ..helix_wal::SimulatedConfig::new(simulation_seed())
        })
    }

    /// SimulatedStorage that leaves half of all calls in flight (each returns `Pending` and
    /// completes at a later, seeded point). Otherwise like [`Harness::simulated`].
    pub fn simulated_in_flight() -> Harness {
        Self::simulated_with(helix_wal::SimulatedConfig {
            in_flight_rate: SIMULATED_IN_FLIGHT_RATE,
            ..helix_wal::SimulatedConfig::new(simulation_seed())
        })
    }

    fn simulated_with(config: helix_wal::SimulatedConfig) -> Harness {
        let seed = config.seed;
        // Printed so that a failing run names its seed (cargo shows output of failed tests).
        eprintln!("simulated storage seed: {seed:#x} (replay with HELIX_SIM_SEED={seed:#x})");
        let simulated = SimulatedStorage::with_config(config).expect("a valid configuration");
        let parent = Path::new("/sim");
        simulated
            .create_dir_all_durably(parent)
            .expect("create the simulated test directory");
        Harness {
            storage: Arc::new(simulated.clone()),
            dir: parent.join("log"),
            simulated: Some(simulated),
            _temp: None,
        }
    }

    /// Simulates a crash: for real-file backends a process crash, where the OS keeps every
    /// completed write (a process crash loses nothing the kernel already has); for the simulated
    /// backend a power loss, which keeps only what was synced and tears the rest at random.
    /// Files opened before the crash must be reopened.
    pub async fn crash(&self) {
        if let Some(simulated) = &self.simulated {
            simulated.crash();
        }
    }
}

/// One module of `$case(harness)` tests on the backend `$harness` gives: an
/// `Option<Harness>`, `None` when the backend is refused here (the harness has said so loudly).
#[macro_export]
macro_rules! backend_module {
    ($module:ident, $harness:expr, $cases:path; $($case:ident),*) => {
        mod $module {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    use $cases as cases;
                    let Some(harness) = $harness else {
                        return;
                    };
                    cases::$case(harness).await;
                }
            )*
        }
    };
}

/// Instantiates `$case(harness)` tests in a module per backend:
/// `for_each_backend!(cases::path; case_a, case_b, ...)`.
#[macro_export]
macro_rules! for_each_backend {
    ($cases:path; $($case:ident),* $(,)?) => {
        $crate::backend_module!(
            tokio_backend, Some($crate::common::Harness::tokio()), $cases; $($case),*
        );
        $crate::backend_module!(
            simulated_backend, Some($crate::common::Harness::simulated()), $cases; $($case),*
        );
        #[cfg(all(target_os = "linux", feature = "io-uring"))]
        $crate::backend_module!(
            io_uring_backend, $crate::common::Harness::io_uring(), $cases; $($case),*
        );
    };
}

/// Like [`for_each_backend!`], plus the backends whose files use direct I/O (aligned writes
/// only), for the suites of the log, which must pad its commits on them.
#[macro_export]
macro_rules! for_each_log_backend {
    ($cases:path; $($case:ident),* $(,)?) => {
        $crate::for_each_backend!($cases; $($case),*);
        $crate::backend_module!(
            simulated_direct_backend,
            Some($crate::common::Harness::simulated_direct()),
            $cases;
            $($case),*
        );
        #[cfg(all(target_os = "linux", feature = "io-uring"))]
        $crate::backend_module!(
            io_uring_direct_backend,
            $crate::common::Harness::io_uring_direct(),
            $cases;
            $($case),*
        );
    };
}
