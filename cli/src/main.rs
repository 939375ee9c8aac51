//! `helix-wal`: benchmark the storage backends on this machine's disk, and look inside a log.
//!
//! Exit codes: 0 success; 1 the log is damaged (verify found corruption); 2 usage or I/O error.

mod bench;
#[cfg(all(target_os = "linux", feature = "io-uring"))]
mod c_floor;
mod inspect;
mod naive_tokio;
mod ring_report;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use helix_wal::RecoveryMode;

/// helix-wal: a crash-safe write-ahead log for Raft. Benchmark its storage backends and inspect
/// logs.
#[derive(Debug, Parser)]
#[command(name = "helix-wal", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Compare the storage backends side by side on durable appends (the main job).
    Bench(bench::BenchArgs),
    /// Check every segment and record of a log; exit 1 and name the file and offset of the first
    /// problem when any record is damaged or torn (an error under the mode, or a cut it would
    /// make). Changes nothing on disk.
    Verify {
        /// The log directory.
        dir: PathBuf,
        /// Recovery mode to judge the log by.
        #[arg(long, value_enum, default_value_t = Mode::Tolerate)]
        mode: Mode,
        /// Largest payload the log may hold, in bytes.
        #[arg(long, default_value_t = helix_wal::constants::DEFAULT_MAX_ENTRY_SIZE_BYTES)]
        max_entry_size_bytes: usize,
    },
    /// Show segments with index ranges, terms and sizes, and what a recovery would keep.
    /// Changes nothing on disk.
    Inspect {
        /// The log directory.
        dir: PathBuf,
        /// Recovery mode to recover by.
        #[arg(long, value_enum, default_value_t = Mode::Tolerate)]
        mode: Mode,
        /// Largest payload the log may hold, in bytes.
        #[arg(long, default_value_t = helix_wal::constants::DEFAULT_MAX_ENTRY_SIZE_BYTES)]
        max_entry_size_bytes: usize,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Print entries, one per line or as JSON lines. Changes nothing on disk.
    Dump {
        /// The log directory.
        dir: PathBuf,
        /// First index to print (default: the log's first).
        #[arg(long)]
        from: Option<u64>,
        /// Last index to print, inclusive (default: the log's last).
        #[arg(long)]
        to: Option<u64>,
        /// Payload bytes to show per entry.
        #[arg(long, default_value_t = 32)]
        preview_bytes: usize,
        /// How payload previews are encoded.
        #[arg(long, value_enum, default_value_t = inspect::PayloadEncoding::Hex)]
        encoding: inspect::PayloadEncoding,
        /// Print JSON lines instead of text.
        #[arg(long)]
        json: bool,
        /// Recovery mode to recover by.
        #[arg(long, value_enum, default_value_t = Mode::Tolerate)]
        mode: Mode,
        /// Largest payload the log may hold, in bytes.
        #[arg(long, default_value_t = helix_wal::constants::DEFAULT_MAX_ENTRY_SIZE_BYTES)]
        max_entry_size_bytes: usize,
    },
}

/// Recovery modes, as command-line values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Mode {
    /// Cut a torn tail of the last segment; other damage is an error.
    Tolerate,
    /// Any damage is an error.
    Absolute,
    /// Keep the intact prefix.
    PointInTime,
}

impl From<Mode> for RecoveryMode {
    fn from(mode: Mode) -> Self {
        match mode {
            Mode::Tolerate => RecoveryMode::TolerateTailCorruption,
            Mode::Absolute => RecoveryMode::AbsoluteConsistency,
            Mode::PointInTime => RecoveryMode::PointInTime,
        }
    }
}

/// A failure the tool reports as one sentence and an exit code.
#[derive(Debug)]
pub struct Failure {
    message: String,
    code: u8,
}

impl Failure {
    /// Damaged log data (exit code 1).
    pub fn damaged(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            code: 1,
        }
    }

    /// A usage or I/O failure (exit code 2).
    pub fn usage(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            code: 2,
        }
    }
}

impl From<helix_wal::WalError> for Failure {
    fn from(error: helix_wal::WalError) -> Self {
        let code = if error.is_corrupt() { 1 } else { 2 };
        Self {
            message: error.to_string(),
            code,
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("helix-wal: cannot start the async runtime: {error}");
            return ExitCode::from(2);
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Bench(args) => bench::run(args).await,
            Command::Verify {
                dir,
                mode,
                max_entry_size_bytes,
            } => inspect::verify(dir, mode.into(), max_entry_size_bytes).await,
            Command::Inspect {
                dir,
                mode,
                max_entry_size_bytes,
                json,
            } => inspect::inspect(dir, mode.into(), max_entry_size_bytes, json).await,
            Command::Dump {
                dir,
                from,
                to,
                preview_bytes,
                encoding,
                json,
                mode,
                max_entry_size_bytes,
            } => {
                let options = inspect::DumpOptions {
                    from,
                    to,
                    preview_bytes,
                    encoding,
                    json,
                };
                inspect::dump(dir, mode.into(), max_entry_size_bytes, options).await
            }
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            eprintln!("helix-wal: {}", failure.message);
            ExitCode::from(failure.code)
        }
    }
}
