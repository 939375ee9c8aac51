//! The storage conformance suite (feature `test-support`): every case of the contract written
//! in the [`Storage`] and [`StorageFile`](crate::StorageFile) docs, run against any backend,
//! this crate's and others'.
//!
//! ```no_run
//! # async fn example(my_storage: std::sync::Arc<dyn helix_wal::Storage>) {
//! use helix_wal::conformance::{run_all, Target};
//!
//! // An existing, empty directory on the file system the backend writes to.
//! let scratch = std::env::temp_dir().join("conformance-scratch");
//! run_all(&Target::new(my_storage, scratch)).await;
//! # }
//! ```
//!
//! Run it inside a multi-threaded tokio runtime with time enabled (`#[tokio::test(flavor =
//! "multi_thread")]`). A case that finds the contract broken panics, with a message naming the
//! clause; the case's name is printed to stderr before it runs, so a test harness that shows the
//! output of failed tests tells which case failed.

use std::future::Future;
use std::io::ErrorKind;
use std::path::PathBuf;
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::limits::{LOCK_RETRY_INTERVAL_MS, LOCK_WAIT_MS, MAX_WRITE_ALIGNMENT_BYTES};
use crate::{CheckedStorage, Storage, WalError};

/// How long [`run_all`] waits for a backend to report the failure of a write whose caller
/// stopped waiting: 10 s, far above any completion time of a healthy machine.
pub const ABANDONED_FAILURE_WAIT_MS: u64 = 10_000;

/// Interval between checks while waiting for that report: 10 ms.
const ABANDONED_FAILURE_POLL_INTERVAL_MS: u64 = 10;

/// An offset every file system refuses (past the largest file size, and negative as `off_t`):
/// a write there fails on every backend.
const IMPOSSIBLE_OFFSET: u64 = u64::MAX - 16;

/// Block size of the aligned writes in the `open_direct` cases when the file demands no
/// alignment.
const BLOCK_BYTES: u64 = 4096;

const _: () = assert!(MAX_WRITE_ALIGNMENT_BYTES as u64 <= BLOCK_BYTES);

type Crash = Box<dyn Fn() + Send + Sync>;

/// A backend under test, with the directory the suite works in.
pub struct Target {
    storage: Arc<dyn Storage>,
    scratch: PathBuf,
    crash: Option<Crash>,
}

impl Target {
    /// Tests `storage` in `scratch`: an existing, empty directory whose own entry is durable.
    /// Each case works in a subdirectory of its own, named after the case, so a scratch
    /// directory serves one run of each case.
    pub fn new(storage: Arc<dyn Storage>, scratch: impl Into<PathBuf>) -> Self {
        Self {
            storage,
            scratch: scratch.into(),
            crash: None,
        }
    }

    /// Adds the crash the backend can simulate (power loss, as
    /// [`SimulatedStorage::crash`](crate::SimulatedStorage::crash) does): the cases call it to
    /// check that what was synced survives, then reopen their files. Without it (a backend on
    /// a real file system) they check the same across reopening only.
    pub fn with_crash(mut self, crash: impl Fn() + Send + Sync + 'static) -> Self {
        self.crash = Some(Box::new(crash));
        self
    }
}

impl std::fmt::Debug for Target {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Target")
            .field("storage", &self.storage)
            .field("scratch", &self.scratch)
            .field("crash", &self.crash.is_some())
            .finish()
    }
}

/// One case's view of the target: the storage and the case's own directory, which does not
/// exist yet.
struct Case<'a> {
    storage: &'a Arc<dyn Storage>,
    dir: PathBuf,
    target: &'a Target,
}

impl Case<'_> {
    fn crash(&self) {
        if let Some(crash) = &self.target.crash {
            crash();
        }
    }

    /// Creates the case's directory and returns the path of `name` in it.
    async fn file_path(&self, name: &str) -> PathBuf {
        self.storage
            .create_dir_all(&self.dir)
            .await
            .unwrap_or_else(|error| panic!("create_dir_all({}): {error}", self.dir.display()));
        self.dir.join(name)
    }
}

/// Declares the cases: [`CASES`] lists them and `dispatch` runs one by name.
macro_rules! suite {
    ($($case:ident),* $(,)?) => {
        /// The name of every case, in the order [`run_all`] runs them.
        pub const CASES: &[&str] = &[$(stringify!($case)),*];

        /// Runs the case called `name`; false if there is none.
        async fn dispatch(case: &Case<'_>, name: &str) -> bool {
            match name {
                $(stringify!($case) => $case(case).await,)*
                _ => return false,
            }
            true
        }
    };
}

suite!(
    write_then_read_back,
    sparse_write_zero_fills_gap,
    set_len_truncates_and_extends,
    write_and_sync_writes,
    reopen_keeps_synced_contents,
    directory_operations,
    missing_paths_are_errors,
    error_kinds_match_the_os,
    open_directory_is_refused,
    concurrent_writers_do_not_mix,
    open_read_only_reads_and_never_creates,
    huge_read_is_bounded_by_file_size,
    plain_open_takes_any_offset_and_length,
    open_direct_takes_aligned_blocks,
    evicting_the_cache_keeps_synced_data,
    lock_dir_excludes_a_second_lock,
    failed_write_poisons_a_checked_file,
    failure_of_an_abandoned_write_is_reported,
);

/// Runs every case in [`CASES`] on `target`, in order; panics at the first broken clause.
pub async fn run_all(target: &Target) {
    for name in CASES {
        run_case(target, name).await;
    }
}

/// Runs the case called `name` on `target`; panics if it finds the contract broken, or if
/// there is no such case.
pub async fn run_case(target: &Target, name: &str) {
    eprintln!("storage conformance: {name} on {}", target.storage.name());
    let scratch_exists = target.storage.is_dir(&target.scratch).await;
    assert!(
        matches!(scratch_exists, Ok(true)),
        "the scratch directory {} must exist: {scratch_exists:?}",
        target.scratch.display()
    );
    let case = Case {
        storage: &target.storage,
        dir: target.scratch.join(name),
        target,
    };
    assert!(
        dispatch(&case, name).await,
        "no storage conformance case is called {name:?}"
    );
}

// Proves a write is read back byte for byte at its offset, and that a read past the end is
// short rather than an error or zero-filled.
async fn write_then_read_back(case: &Case<'_>) {
    let file = case.storage.open(&case.file_path("a").await).await.unwrap();
    file.write_at(0, Bytes::from_static(b"hello world"))
        .await
        .unwrap();
    file.write_at(6, Bytes::from_static(b"WORLD"))
        .await
        .unwrap();
    assert_eq!(&file.read_at(0, 11).await.unwrap()[..], b"hello WORLD");
    assert_eq!(
        &file.read_at(6, 100).await.unwrap()[..],
        b"WORLD",
        "a read past the end returns the bytes up to the end"
    );
    assert!(file.read_at(11, 4).await.unwrap().is_empty());
    assert!(file.read_at(1000, 4).await.unwrap().is_empty());
    assert_eq!(file.size().await.unwrap(), 11);
}

// Proves writing past the end extends the file with zeros in the gap.
async fn sparse_write_zero_fills_gap(case: &Case<'_>) {
    let file = case.storage.open(&case.file_path("a").await).await.unwrap();
    file.write_at(8, Bytes::from_static(b"x")).await.unwrap();
    assert_eq!(&file.read_at(0, 9).await.unwrap()[..], b"\0\0\0\0\0\0\0\0x");
}

// Proves set_len truncates and extends with zeros.
async fn set_len_truncates_and_extends(case: &Case<'_>) {
    let file = case.storage.open(&case.file_path("a").await).await.unwrap();
    file.write_at(0, Bytes::from_static(b"abcdef"))
        .await
        .unwrap();
    file.set_len(3).await.unwrap();
    assert_eq!(&file.read_at(0, 10).await.unwrap()[..], b"abc");
    file.set_len(5).await.unwrap();
    assert_eq!(&file.read_at(0, 10).await.unwrap()[..], b"abc\0\0");
    assert_eq!(file.size().await.unwrap(), 5);
}

// Proves write_at_and_sync writes the data (its durability is proven by the crash of
// reopen_keeps_synced_contents on backends that can simulate power loss).
async fn write_and_sync_writes(case: &Case<'_>) {
    let file = case.storage.open(&case.file_path("a").await).await.unwrap();
    file.write_at_and_sync(4, Bytes::from_static(b"data"))
        .await
        .unwrap();
    file.sync().await.unwrap();
    assert_eq!(&file.read_at(4, 4).await.unwrap()[..], b"data");
}

// Proves reopening a file keeps its contents (open does not truncate) and that a synced write,
// in a file whose directory entries were synced, survives a crash of the target.
async fn reopen_keeps_synced_contents(case: &Case<'_>) {
    let storage = case.storage;
    let path = case.file_path("a").await;
    let file = storage.open(&path).await.unwrap();
    file.write_at_and_sync(0, Bytes::from_static(b"durable"))
        .await
        .unwrap();
    storage.sync_dir(&case.dir).await.unwrap();
    // The case's directory was created here: its entry is durable only after a sync of its
    // parent.
    storage.sync_dir(&case.target.scratch).await.unwrap();
    drop(file);
    case.crash();
    let file = storage.open(&path).await.unwrap();
    assert_eq!(
        &file.read_at(0, 7).await.unwrap()[..],
        b"durable",
        "a synced write must survive a crash"
    );
}

// Proves list returns full paths sorted by name, exists and is_dir tell files from
// directories, and remove and rename do what they say.
async fn directory_operations(case: &Case<'_>) {
    let (storage, dir) = (case.storage, &case.dir);
    storage.create_dir_all(&dir.join("sub")).await.unwrap();
    for name in ["c", "a", "b"] {
        storage.open(&dir.join(name)).await.unwrap();
    }
    let listed = storage.list(dir).await.unwrap();
    let names: Vec<String> = listed
        .iter()
        .map(|path| path.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["a", "b", "c", "sub"], "list sorts by file name");
    assert!(listed[0].starts_with(dir), "list returns full paths");
    assert!(storage.is_dir(&dir.join("sub")).await.unwrap());
    assert!(!storage.is_dir(&dir.join("a")).await.unwrap());
    assert!(!storage.is_dir(&dir.join("missing")).await.unwrap());
    storage.remove(&dir.join("a")).await.unwrap();
    assert!(!storage.exists(&dir.join("a")).await.unwrap());
    storage
        .rename(&dir.join("b"), &dir.join("d"))
        .await
        .unwrap();
    assert!(!storage.exists(&dir.join("b")).await.unwrap());
    assert!(storage.exists(&dir.join("d")).await.unwrap());
    storage.sync_dir(dir).await.unwrap();
}

// Proves operations on missing paths fail with an Io error naming the path, not a panic.
async fn missing_paths_are_errors(case: &Case<'_>) {
    let missing = case.dir.join("nope");
    match case.storage.list(&missing).await {
        Err(WalError::Io { path, .. }) => assert_eq!(path, missing),
        other => panic!("list of a missing directory: expected an Io error, got {other:?}"),
    }
    assert!(case.storage.remove(&missing).await.is_err());
    assert!(!case.storage.exists(&missing).await.unwrap());
}

/// The `io::ErrorKind` of an Io error.
fn kind(error: WalError) -> ErrorKind {
    error
        .io_kind()
        .unwrap_or_else(|| panic!("expected an Io error, got {error:?}"))
}

// Proves misuse of paths fails with the io::ErrorKind the OS gives, identically on every
// backend: a path through a file, removing a directory, renaming a file over a directory,
// creating a directory where a file is, listing a file, renaming a missing file.
async fn error_kinds_match_the_os(case: &Case<'_>) {
    let (storage, dir) = (case.storage, &case.dir);
    storage.create_dir_all(&dir.join("sub")).await.unwrap();
    storage.open(&dir.join("file")).await.unwrap();
    let through_file = dir.join("file").join("x");
    let open_through = storage.open(&through_file).await.unwrap_err();
    assert_eq!(kind(open_through), ErrorKind::NotADirectory);
    let exists_through = storage.exists(&through_file).await.unwrap_err();
    assert_eq!(kind(exists_through), ErrorKind::NotADirectory);
    let list_file = storage.list(&dir.join("file")).await.unwrap_err();
    assert_eq!(kind(list_file), ErrorKind::NotADirectory);
    let open_dir = storage.open(&dir.join("sub")).await.unwrap_err();
    assert_eq!(kind(open_dir), ErrorKind::IsADirectory);
    let remove_dir = storage.remove(&dir.join("sub")).await.unwrap_err();
    assert_eq!(kind(remove_dir), ErrorKind::IsADirectory);
    let over_dir = storage.rename(&dir.join("file"), &dir.join("sub")).await;
    assert_eq!(kind(over_dir.unwrap_err()), ErrorKind::IsADirectory);
    let missing = storage
        .rename(&dir.join("missing"), &dir.join("other"))
        .await;
    assert_eq!(kind(missing.unwrap_err()), ErrorKind::NotFound);
    let into_missing = storage.open(&dir.join("missing").join("x")).await;
    assert_eq!(kind(into_missing.unwrap_err()), ErrorKind::NotFound);
    let over_file = storage.create_dir_all(&dir.join("file")).await;
    assert_eq!(kind(over_file.unwrap_err()), ErrorKind::AlreadyExists);
    let sync_missing = storage.sync_dir(&dir.join("missing")).await.unwrap_err();
    assert_eq!(kind(sync_missing), ErrorKind::NotFound);
}

// Proves opening a directory as a file is refused, by open and by open_direct.
async fn open_directory_is_refused(case: &Case<'_>) {
    let dir = case.file_path("d").await;
    case.storage.create_dir_all(&dir).await.unwrap();
    assert!(case.storage.open(&dir).await.is_err());
    assert!(case.storage.open_direct(&dir).await.is_err());
}

// Proves many concurrent writers on many files each read back exactly their own data: no
// completion is lost or delivered to the wrong caller.
async fn concurrent_writers_do_not_mix(case: &Case<'_>) {
    const FILES: u8 = 8;
    const SLOTS: u8 = 16;
    const SLOT_BYTES: usize = 512;
    let mut tasks = Vec::new();
    for file_number in 0..FILES {
        let path = case.file_path(&format!("f{file_number}")).await;
        let file = case.storage.open(&path).await.unwrap();
        for slot in 0..SLOTS {
            let file = Arc::clone(&file);
            tasks.push(tokio::spawn(async move {
                let data = Bytes::from(vec![file_number ^ slot; SLOT_BYTES]);
                let offset = u64::from(slot) * SLOT_BYTES as u64;
                file.write_at(offset, data).await.unwrap();
            }));
        }
    }
    for task in tasks {
        task.await.expect("a concurrent writer failed");
    }
    for file_number in 0..FILES {
        let path = case.dir.join(format!("f{file_number}"));
        let file = case.storage.open(&path).await.unwrap();
        let contents = file
            .read_at(0, usize::from(SLOTS) * SLOT_BYTES)
            .await
            .unwrap();
        for (slot, chunk) in contents.chunks(SLOT_BYTES).enumerate() {
            assert!(
                chunk.iter().all(|byte| *byte == file_number ^ slot as u8),
                "file {file_number} slot {slot} holds another writer's bytes"
            );
        }
    }
}

// Proves open_read_only reads an existing file's contents, and neither creates a missing file
// nor opens a directory.
async fn open_read_only_reads_and_never_creates(case: &Case<'_>) {
    let storage = case.storage;
    let path = case.file_path("a").await;
    let file = storage.open(&path).await.unwrap();
    file.write_at_and_sync(0, Bytes::from_static(b"kept"))
        .await
        .unwrap();
    drop(file);
    let reader = storage.open_read_only(&path).await.unwrap();
    assert_eq!(&reader.read_at(0, 4).await.unwrap()[..], b"kept");
    assert_eq!(reader.size().await.unwrap(), 4);
    let missing = case.dir.join("missing");
    let refused = storage.open_read_only(&missing).await.unwrap_err();
    assert_eq!(kind(refused), ErrorKind::NotFound);
    assert!(
        !storage.exists(&missing).await.unwrap(),
        "open_read_only must not create a file"
    );
    let dir = case.file_path("d").await;
    storage.create_dir_all(&dir).await.unwrap();
    assert!(
        storage.open_read_only(&dir).await.is_err(),
        "open_read_only must refuse a directory"
    );
}

// Proves a read allocation is bounded by the file, not by the requested length.
async fn huge_read_is_bounded_by_file_size(case: &Case<'_>) {
    let file = case.storage.open(&case.file_path("a").await).await.unwrap();
    file.write_at(0, Bytes::from_static(b"abc")).await.unwrap();
    let read = file.read_at(0, usize::MAX / 2).await.unwrap();
    assert_eq!(&read[..], b"abc");
}

// Proves a file from open takes writes of any length at any offset, plain and durable ones,
// and says so (write_alignment 1), whatever the backend does for open_direct.
async fn plain_open_takes_any_offset_and_length(case: &Case<'_>) {
    let file = case.storage.open(&case.file_path("a").await).await.unwrap();
    assert_eq!(
        file.write_alignment(),
        1,
        "a file from open must take writes at any offset"
    );
    file.write_at(3, Bytes::from_static(b"odd")).await.unwrap();
    file.write_at_and_sync(4099, Bytes::from_static(b"unaligned"))
        .await
        .unwrap();
    file.write_at(6, Bytes::from(vec![7u8; 4093]))
        .await
        .unwrap();
    let contents = file.read_at(0, 8192).await.unwrap();
    assert_eq!(contents.len(), 4108);
    assert_eq!(&contents[..6], b"\0\0\0odd");
    assert!(contents[6..4099].iter().all(|byte| *byte == 7));
    assert_eq!(&contents[4099..], b"unaligned");
    file.sync().await.unwrap();
}

// Proves a file from open_direct reports a power-of-two alignment within the limit and takes
// whole aligned blocks (plain and durable writes, set_len to a block boundary, sync), and that
// what it wrote reads back through it and through a file from open.
async fn open_direct_takes_aligned_blocks(case: &Case<'_>) {
    let path = case.file_path("a").await;
    let file = case.storage.open_direct(&path).await.unwrap();
    let alignment = file.write_alignment();
    assert!(
        alignment.is_power_of_two() && alignment <= MAX_WRITE_ALIGNMENT_BYTES as u64,
        "write_alignment {alignment} must be a power of two up to {MAX_WRITE_ALIGNMENT_BYTES}"
    );
    let block = BLOCK_BYTES.max(alignment);
    let first = Bytes::from(vec![1u8; block as usize]);
    let second = Bytes::from(vec![2u8; 2 * block as usize]);
    file.write_at(0, first.clone()).await.unwrap();
    file.write_at_and_sync(block, second.clone()).await.unwrap();
    file.set_len(4 * block).await.unwrap();
    file.sync().await.unwrap();
    let mut expected = first.to_vec();
    expected.extend_from_slice(&second);
    expected.resize(4 * block as usize, 0);
    assert_eq!(file.read_at(0, 8 * block as usize).await.unwrap(), expected);
    let plain = case.storage.open(&path).await.unwrap();
    assert_eq!(
        plain.read_at(0, 8 * block as usize).await.unwrap(),
        expected,
        "a file from open must see what a file from open_direct wrote"
    );
}

// Proves evict_cache keeps what was synced readable (it drops only clean cached pages).
async fn evicting_the_cache_keeps_synced_data(case: &Case<'_>) {
    let file = case.storage.open(&case.file_path("a").await).await.unwrap();
    file.write_at_and_sync(0, Bytes::from_static(b"synced"))
        .await
        .unwrap();
    file.evict_cache().await.unwrap();
    assert_eq!(&file.read_at(0, 6).await.unwrap()[..], b"synced");
}

// Proves lock_dir is exclusive: while a lock on a directory is held, another lock_dir of it
// fails with Locked; once it is dropped, the directory can be locked again within
// LOCK_WAIT_MS (a backend may release a lock in the background, as the log's open allows). A
// backend that takes no locks (DirLock::none) fails: two logs could then write one directory.
async fn lock_dir_excludes_a_second_lock(case: &Case<'_>) {
    case.storage.create_dir_all(&case.dir).await.unwrap();
    let lock = case.storage.lock_dir(&case.dir).await.unwrap();
    assert!(lock.is_held(), "lock_dir returned no lock");
    match case.storage.lock_dir(&case.dir).await {
        Err(WalError::Locked { dir }) => assert_eq!(dir, case.dir),
        other => panic!("a second lock_dir while the first is held: {other:?}"),
    }
    drop(lock);
    let deadline = Instant::now() + Duration::from_millis(LOCK_WAIT_MS);
    loop {
        match case.storage.lock_dir(&case.dir).await {
            Ok(lock) => break assert!(lock.is_held()),
            Err(WalError::Locked { .. }) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(LOCK_RETRY_INTERVAL_MS)).await;
            }
            Err(error) => panic!("lock_dir after the lock was dropped: {error}"),
        }
    }
}

// Proves the backend reports a failed write as an error (an impossible offset), and that
// through CheckedStorage every later write, set_len, sync and durable write of that file fails
// with Poisoned naming the first failure while reads keep working; a file opened afresh is not
// poisoned.
async fn failed_write_poisons_a_checked_file(case: &Case<'_>) {
    let storage = CheckedStorage::new(Arc::clone(case.storage));
    let path = case.file_path("a").await;
    let file = storage.open(&path).await.unwrap();
    file.write_at(0, Bytes::from_static(b"kept")).await.unwrap();
    let failure = file
        .write_at(IMPOSSIBLE_OFFSET, Bytes::from_static(b"refused"))
        .await;
    assert!(
        matches!(failure, Err(WalError::Io { .. })),
        "a write at an impossible offset must fail with an Io error: {failure:?}"
    );
    let refusals = [
        file.write_at(4, Bytes::from_static(b"x")).await,
        file.set_len(2).await,
        file.sync().await,
        file.write_at_and_sync(4, Bytes::from_static(b"x")).await,
    ];
    for refusal in refusals {
        match refusal {
            Err(WalError::Poisoned { first_failure }) => {
                assert!(
                    matches!(*first_failure, WalError::Io { .. }),
                    "Poisoned must name the failed write: {first_failure:?}"
                );
            }
            other => panic!("a call after a failed write must be refused as Poisoned: {other:?}"),
        }
    }
    assert_eq!(
        &file.read_at(0, 4).await.unwrap()[..],
        b"kept",
        "reads keep working on a poisoned file"
    );
    let fresh = storage.open(&path).await.unwrap();
    fresh.write_at(4, Bytes::from_static(b"!")).await.unwrap();
}

// Proves a failed write whose caller stopped waiting is not lost: a write at an impossible
// offset is polled once and dropped, and through CheckedStorage a later write or sync of the
// file is refused as Poisoned within ABANDONED_FAILURE_WAIT_MS (the backend carried it out and
// reported its failure at the next call, or failed it before the caller left). Reads keep
// working.
async fn failure_of_an_abandoned_write_is_reported(case: &Case<'_>) {
    let storage = CheckedStorage::new(Arc::clone(case.storage));
    let file = storage.open(&case.file_path("a").await).await.unwrap();
    file.write_at(0, Bytes::from_static(b"kept")).await.unwrap();
    poll_once_then_drop(file.write_at(IMPOSSIBLE_OFFSET, Bytes::from_static(b"lost"))).await;
    let deadline = Instant::now() + Duration::from_millis(ABANDONED_FAILURE_WAIT_MS);
    loop {
        match file.write_at(0, Bytes::from_static(b"kept")).await {
            Err(WalError::Poisoned { .. }) => break,
            Ok(()) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(ABANDONED_FAILURE_POLL_INTERVAL_MS)).await;
            }
            Ok(()) => panic!(
                "the failure of an abandoned write was not reported within \
                 {ABANDONED_FAILURE_WAIT_MS} ms: later writes still succeed"
            ),
            Err(other) => panic!("a write after an abandoned failed one: {other:?}"),
        }
    }
    assert!(file.sync().await.unwrap_err().is_poisoned());
    assert_eq!(&file.read_at(0, 4).await.unwrap()[..], b"kept");
}

/// Polls `future` once, as a caller that gives up at once does, and drops it.
async fn poll_once_then_drop<F: Future>(future: F) {
    let mut future = std::pin::pin!(future);
    std::future::poll_fn(|context| {
        let _ = future.as_mut().poll(context);
        Poll::Ready(())
    })
    .await;
}
