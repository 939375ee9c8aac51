//! Write-class calls on tokio's blocking pool whose failures are never lost.
//!
//! A call handed to the blocking pool runs to its end even when its caller stops waiting. Its
//! result then goes nowhere, and a failed fsync nobody saw would let the next sync of the file
//! report success for data the kernel dropped. So a result nobody claimed is settled when it is
//! dropped: a failure is handed to the file's record of abandoned failures, which fails the
//! file's next write-class call (the storage contract: "Errors are reported, never lost").

use std::io;
use std::path::Path;

use crate::error::{WalError, WalResult};

/// The result of a blocking call until its caller claims it.
struct Unclaimed<T, R: FnOnce(io::Error)> {
    result: Option<io::Result<T>>,
    /// Records a failure nobody claimed.
    record: Option<R>,
}

impl<T, R: FnOnce(io::Error)> Unclaimed<T, R> {
    fn claim(mut self) -> io::Result<T> {
        self.record = None;
        self.result
            .take()
            .expect("a blocking call's result is claimed once")
    }
}

impl<T, R: FnOnce(io::Error)> Drop for Unclaimed<T, R> {
    fn drop(&mut self) {
        if let (Some(Err(source)), Some(record)) = (self.result.take(), self.record.take()) {
            record(source);
        }
    }
}

/// Runs `work` on tokio's blocking pool and maps its failure to [`WalError::Io`] naming `op`
/// and `path`. If the caller has stopped waiting when `work` fails, `record` gets the failure.
pub(crate) async fn run_reporting_abandoned<T, F, R>(
    op: &'static str,
    path: &Path,
    work: F,
    record: R,
) -> WalResult<T>
where
    T: Send + 'static,
    F: FnOnce() -> io::Result<T> + Send + 'static,
    R: FnOnce(io::Error) + Send + 'static,
{
    let unclaimed = run(op, path, move || {
        Ok(Unclaimed {
            result: Some(work()),
            record: Some(record),
        })
    })
    .await?;
    unclaimed
        .claim()
        .map_err(|source| WalError::io(op, path, source))
}

/// Runs `work` on tokio's blocking pool and maps its failure to [`WalError::Io`] naming `op`
/// and `path`. Its result is lost if the caller stops waiting: for reads, opens and namespace
/// calls, directory syncs included (whose failure only the caller can act on; the log never
/// abandons one, see the storage contract); file writes and syncs use
/// [`run_reporting_abandoned`].
pub(crate) async fn run<T, F>(op: &'static str, path: &Path, work: F) -> WalResult<T>
where
    T: Send + 'static,
    F: FnOnce() -> io::Result<T> + Send + 'static,
{
    let result = match tokio::task::spawn_blocking(work).await {
        Ok(result) => result,
        Err(join_error) => Err(io::Error::other(format!(
            "blocking task failed: {join_error}"
        ))),
    };
    result.map_err(|source| WalError::io(op, path, source))
}
