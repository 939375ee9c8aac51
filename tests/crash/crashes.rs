//! The parent's side: runs a child writer, crashes it (SIGKILL, then for a power cut the loss
//! of what the file system had not sent to its device), checks the log against what the child
//! reported, and repeats on the same log.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::child::{
    Choices, CHILD_BACKEND, CHILD_DIR, CHILD_MODE, CHILD_SABOTAGE, CHILD_SEED, IDLE, MARK,
    SKIP_FSYNC,
};
use crate::loop_disk::LoopDisk;
use crate::model::{verify, Model};

/// Kills per backend.
const DEFAULT_KILLS: u64 = 200;
/// Power cuts per backend.
pub(crate) const DEFAULT_POWER_CUTS: u64 = 60;
/// The longest a child may take to open its log and say it is ready.
pub(crate) const READY_LIMIT: Duration = Duration::from_secs(30);
/// A child is killed this long after it is ready, at most (uniformly random below it).
const MAX_RUN_MS: u64 = 40;
/// Every this many kills (all of them of a plain child), the kill waits for the child to go idle
/// with unsynced entries, so that a power cut surely finds some to lose; the others land at
/// random moments.
const IDLE_KILL_EVERY: u64 = 4;
/// How long a kill waits for the child to go idle before it kills anyway.
const IDLE_WAIT_LIMIT: Duration = Duration::from_secs(5);

/// When a kill lands.
#[derive(Clone, Copy, Debug)]
enum KillAt {
    /// This long after the child is ready.
    Random { run_ms: u64 },
    /// At the first idle report the child makes this long after it is ready.
    Idle { run_ms: u64 },
}

/// This test binary, set to run the ignored `child_writer` case as a child writer.
pub(crate) fn child_command(backend: &str, mode: &str, dir: &Path, seed: u64) -> Command {
    let mut command = Command::new(std::env::current_exe().expect("test binary"));
    command
        .args([
            "--ignored",
            "--exact",
            "child_writer",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_BACKEND, backend)
        .env(CHILD_MODE, mode)
        .env(CHILD_DIR, dir)
        .env(CHILD_SEED, seed.to_string());
    command
}

/// Runs one child until the moment `at` says, kills it, and returns its report.
fn run_and_kill(
    backend: &str,
    mode: &str,
    dir: &Path,
    seed: u64,
    at: KillAt,
    sabotage: bool,
) -> Vec<String> {
    let mut command = child_command(backend, mode, dir, seed);
    if sabotage {
        command.env(CHILD_SABOTAGE, SKIP_FSYNC);
    }
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn the child writer");
    let stdout = child.stdout.take().expect("piped");
    let (lines_sender, lines) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let Some(fact) = line.strip_prefix(MARK) else {
                continue;
            };
            if lines_sender.send(fact.to_string()).is_err() {
                break;
            }
        }
    });
    let mut report = Vec::new();
    let deadline = Instant::now() + READY_LIMIT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            Ok(line) => {
                let ready = line.starts_with("READY");
                report.push(line);
                if ready {
                    break;
                }
            }
            Err(_) => {
                let _ = child.kill();
                let output = child.wait_with_output().expect("child output");
                reader.join().expect("reader");
                panic!(
                    "the child writer never became ready; stderr:\n{}",
                    String::from_utf8_lossy(&output.stderr)
                );
            }
        }
    }
    match at {
        KillAt::Random { run_ms } => std::thread::sleep(Duration::from_millis(run_ms)),
        KillAt::Idle { run_ms } => {
            std::thread::sleep(Duration::from_millis(run_ms));
            report.extend(lines.try_iter());
            let deadline = Instant::now() + IDLE_WAIT_LIMIT;
            loop {
                let left = deadline.saturating_duration_since(Instant::now());
                // A child that never goes idle in time is killed anyway (the tally counts the
                // kills that did land on an idle moment).
                let Ok(line) = lines.recv_timeout(left) else {
                    break;
                };
                let idle = line == IDLE;
                report.push(line);
                if idle {
                    break;
                }
            }
        }
    }
    child.kill().expect("SIGKILL the child");
    let output = child.wait_with_output().expect("reap the child");
    reader.join().expect("reader");
    report.extend(lines.try_iter());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !output.status.success() && !stderr.contains("panicked"),
        "the child writer failed before it was killed ({}):\n{stderr}",
        output.status
    );
    report
}

/// Reopens the log after a kill and checks it against the model; appends one durable entry;
/// How a child writer's life ends.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Crash {
    /// SIGKILL: the OS keeps everything the process wrote.
    Process,
    /// SIGKILL, then the file system loses what it had not sent to its device.
    Power,
}

/// What a run of crashes saw.
#[derive(Debug, Default)]
pub(crate) struct Tally {
    pub(crate) crashes: u64,
    /// Facts the children reported.
    reported: usize,
    /// Crashes whose last report was the child going idle with unsynced entries written.
    idle_kills: u64,
    /// Crashes that landed while a purge or truncation was under way (its start reported, not
    /// its end).
    mid_purge: u64,
    mid_truncate: u64,
    /// Entries written (the write returned) but not reported durable that recovery did not find.
    lost_written: usize,
    /// Crashes after which at least one such entry was missing.
    crashes_losing_written: u64,
}

/// Crashes the child writer `crashes` times on `backend`, alternating a plain Wal and a
/// BufferedWal, checking the log after each crash.
pub(crate) fn crash_repeatedly(backend: &str, crash: Crash, crashes: u64, sabotage: bool) -> Tally {
    let temporary = tempfile::tempdir().expect("temporary directory");
    let disk = match crash {
        Crash::Process => None,
        Crash::Power => match LoopDisk::create(temporary.path()) {
            Some(disk) => Some(disk),
            None => return Tally::default(),
        },
    };
    let dir = match &disk {
        Some(disk) => disk.mount_point.join("log"),
        None => temporary.path().join("log"),
    };
    let traced = std::env::var_os("HELIX_CRASH_TRACE").is_some();
    // A traced run keeps the log for inspection when it fails.
    let temporary = if traced {
        println!("log directory: {}", dir.display());
        std::mem::forget(temporary);
        None
    } else {
        Some(temporary)
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let mut model = Model::default();
    let mut choices = Choices(0x5EED ^ backend.len() as u64 ^ (crash as u64) << 8);
    let mut tally = Tally::default();
    let started = Instant::now();
    for kill in 0..crashes {
        let mode = if kill % 2 == 0 { "plain" } else { "buffered" };
        let run_ms = 1 + choices.below(MAX_RUN_MS);
        let at = if kill % IDLE_KILL_EVERY == 0 {
            KillAt::Idle { run_ms }
        } else {
            KillAt::Random { run_ms }
        };
        let report = run_and_kill(backend, mode, &dir, kill + 1, at, sabotage);
        tally.reported += report.len();
        tally.idle_kills += u64::from(report.last().is_some_and(|line| line == IDLE));
        match report
            .last()
            .and_then(|line| line.split_whitespace().next())
        {
            Some("PURGING") => tally.mid_purge += 1,
            Some("TRUNCATING") => tally.mid_truncate += 1,
            _ => {}
        }
        model.apply(&report);
        if let Some(disk) = &disk {
            disk.cut_power();
        }
        if traced {
            println!("{crash:?} crash {kill} ({mode}, {at:?}): {report:?}");
        }
        let lost = runtime.block_on(verify(backend, &dir, &mut model, kill));
        tally.lost_written += lost;
        tally.crashes_losing_written += u64::from(lost > 0);
        tally.crashes += 1;
    }
    drop(disk);
    drop(temporary);
    println!(
        "{backend}: {} {crash:?} crashes in {:.1} s ({} while idle with unsynced entries, {} \
         mid-purge, {} mid-truncate), {} facts reported by the children, none lost; {} \
         written-but-unsynced entries missing after {} crashes",
        tally.crashes,
        started.elapsed().as_secs_f64(),
        tally.idle_kills,
        tally.mid_purge,
        tally.mid_truncate,
        tally.reported,
        tally.lost_written,
        tally.crashes_losing_written,
    );
    assert!(
        tally.reported as u64 > crashes,
        "the children reported almost nothing"
    );
    tally
}

/// Kills the child writer HELIX_CRASH_KILLS times (default 200) on `backend`.
pub(crate) fn kill_repeatedly(backend: &str) {
    let kills = count_from_env("HELIX_CRASH_KILLS", DEFAULT_KILLS);
    let tally = crash_repeatedly(backend, Crash::Process, kills, false);
    assert_eq!(
        tally.lost_written, 0,
        "a process crash lost entries whose writes had returned"
    );
}

/// Cuts the power under the child writer HELIX_POWER_CUTS times (default 60) on `backend`.
/// `direct` says every completed write is durable on this backend.
pub(crate) fn cut_power_repeatedly(backend: &str, direct: bool) {
    let cuts = count_from_env("HELIX_POWER_CUTS", DEFAULT_POWER_CUTS);
    let tally = crash_repeatedly(backend, Crash::Power, cuts, false);
    if tally.crashes == 0 {
        return;
    }
    if direct {
        assert_eq!(
            tally.lost_written, 0,
            "with O_DIRECT | O_DSYNC a completed write is durable, yet a power cut lost some"
        );
    } else {
        assert!(
            tally.lost_written > 0,
            "{cuts} power cuts lost no unsynced write: the emulation loses nothing and proves \
             nothing"
        );
    }
}

fn count_from_env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .map(|text| {
            text.parse()
                .unwrap_or_else(|_| panic!("{name} is a number"))
        })
        .unwrap_or(default)
}
