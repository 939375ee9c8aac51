//! `--variant`: extra rows in the comparison, each a backend with tuned settings, run
//! interleaved with the others so that a setting's effect is a ratio from one run.
//!
//! Syntax: `NAME:KEY=VALUE[,KEY=VALUE...]`. `base` picks the backend (`io-uring`, the default;
//! `io-uring-buffered`; `tokio`); the io_uring keys are `sq-entries`, `max-batch`, `gather-us`,
//! `registered-buffers`, `registered-buffer-bytes`, `iowq-workers`, `sqpoll-ms`, `spin-us`,
//! `ring-cpu`,
//! `task-run` (`best`, `coop`, `plain`) and `direct` (`true`, `false`); `flush-ms` sets the
//! BufferedWal flush interval of the group-commit workloads (default: 0 where every append
//! waits, 10 for buffered-throughput); `compact=true` makes the durable-append workloads purge
//! as they go, so that segments are recycled.

use super::Backend;
use crate::Failure;

/// Settings a variant changes.
#[derive(Debug, Clone, Default)]
pub struct Tuning {
    /// io_uring settings, checked by name when parsed and applied when the backend is made.
    pub io_uring: Vec<(IoUringKey, u32)>,
    /// BufferedWal flush interval of the group-commit workloads.
    pub flush_interval_ms: Option<u64>,
    /// The durable-append workloads purge as they go (purged segments are recycled).
    pub compact: bool,
}

/// An io_uring setting a variant may change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IoUringKey {
    SqEntries,
    MaxBatch,
    GatherUs,
    RegisteredBuffers,
    RegisteredBufferBytes,
    IowqWorkers,
    SqpollMs,
    SpinUs,
    /// 0 best, 1 cooperative, 2 plain.
    TaskRun,
    /// 0 buffered, 1 direct.
    Direct,
    RingCpu,
}

/// One row of the comparison.
#[derive(Debug, Clone)]
pub struct Contender {
    pub backend: Backend,
    /// Row name: the backend's, or `base/NAME` for a variant (leaked: a handful per run).
    pub name: &'static str,
    pub tuning: Tuning,
}

impl Contender {
    pub fn plain(backend: Backend) -> Contender {
        Contender {
            backend,
            name: backend.name(),
            tuning: Tuning::default(),
        }
    }
}

/// Parses one `--variant` argument.
pub fn parse(text: &str) -> Result<Contender, Failure> {
    let usage = |why: String| Failure::usage(format!("--variant {text:?}: {why}"));
    let (name, settings) = text
        .split_once(':')
        .ok_or_else(|| usage("expected NAME:KEY=VALUE[,KEY=VALUE...]".into()))?;
    if name.is_empty() {
        return Err(usage("the name is empty".into()));
    }
    let mut backend = Backend::IoUring;
    let mut tuning = Tuning::default();
    for setting in settings.split(',').filter(|setting| !setting.is_empty()) {
        let (key, value) = setting
            .split_once('=')
            .ok_or_else(|| usage(format!("{setting:?} is not KEY=VALUE")))?;
        let number = || {
            value
                .parse::<u32>()
                .map_err(|_| usage(format!("{key} needs a number, not {value:?}")))
        };
        let io_uring_key = match key {
            "base" => {
                backend = match value {
                    "io-uring" => Backend::IoUring,
                    "io-uring-buffered" => Backend::IoUringBuffered,
                    "tokio" => Backend::Tokio,
                    other => return Err(usage(format!("unknown base {other:?}"))),
                };
                continue;
            }
            "flush-ms" => {
                tuning.flush_interval_ms = Some(u64::from(number()?));
                continue;
            }
            "compact" => {
                tuning.compact = match value {
                    "true" => true,
                    "false" => false,
                    other => return Err(usage(format!("compact is true or false, not {other:?}"))),
                };
                continue;
            }
            "sq-entries" => IoUringKey::SqEntries,
            "max-batch" => IoUringKey::MaxBatch,
            "gather-us" => IoUringKey::GatherUs,
            "registered-buffers" => IoUringKey::RegisteredBuffers,
            "registered-buffer-bytes" => IoUringKey::RegisteredBufferBytes,
            "iowq-workers" => IoUringKey::IowqWorkers,
            "sqpoll-ms" => IoUringKey::SqpollMs,
            "spin-us" => IoUringKey::SpinUs,
            "ring-cpu" => IoUringKey::RingCpu,
            "task-run" => {
                let mode = match value {
                    "best" => 0,
                    "coop" => 1,
                    "plain" => 2,
                    other => return Err(usage(format!("unknown task-run {other:?}"))),
                };
                tuning.io_uring.push((IoUringKey::TaskRun, mode));
                continue;
            }
            "direct" => {
                let direct = match value {
                    "true" => 1,
                    "false" => 0,
                    other => return Err(usage(format!("direct is true or false, not {other:?}"))),
                };
                tuning.io_uring.push((IoUringKey::Direct, direct));
                continue;
            }
            other => return Err(usage(format!("unknown key {other:?}"))),
        };
        tuning.io_uring.push((io_uring_key, number()?));
    }
    if backend == Backend::Tokio && !tuning.io_uring.is_empty() {
        return Err(usage("io_uring settings on the tokio base".into()));
    }
    let name: &'static str = Box::leak(format!("{}/{name}", backend.name()).into_boxed_str());
    Ok(Contender {
        backend,
        name,
        tuning,
    })
}

/// Applies a variant's io_uring settings to `config`.
#[cfg(all(target_os = "linux", feature = "io-uring"))]
pub fn apply(config: &mut helix_wal::IoUringConfig, settings: &[(IoUringKey, u32)]) {
    for &(key, value) in settings {
        match key {
            IoUringKey::SqEntries => config.sq_entries = value,
            IoUringKey::MaxBatch => config.max_batch = value,
            IoUringKey::GatherUs => config.gather_window_us = value,
            IoUringKey::RegisteredBuffers => config.registered_buffer_count = value,
            IoUringKey::RegisteredBufferBytes => config.registered_buffer_bytes = value,
            IoUringKey::IowqWorkers => config.iowq_max_workers = value,
            IoUringKey::SqpollMs => config.sqpoll_idle_ms = value,
            IoUringKey::SpinUs => config.idle_spin_us = value,
            IoUringKey::TaskRun => {
                config.task_run = match value {
                    1 => helix_wal::TaskRun::Cooperative,
                    2 => helix_wal::TaskRun::Plain,
                    _ => helix_wal::TaskRun::Best,
                }
            }
            IoUringKey::Direct => config.direct_io = value != 0,
            IoUringKey::RingCpu => config.ring_cpu = Some(value),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Proves the variant syntax: names, bases, every kind of value, and clear refusals.
    #[test]
    fn variants_parse_and_refuse() {
        let spin = parse("spin:spin-us=50,task-run=coop,flush-ms=2").unwrap();
        assert_eq!(spin.name, "io-uring/spin");
        assert_eq!(spin.backend, Backend::IoUring);
        assert_eq!(
            spin.tuning.io_uring,
            vec![(IoUringKey::SpinUs, 50), (IoUringKey::TaskRun, 1)]
        );
        assert_eq!(spin.tuning.flush_interval_ms, Some(2));
        let tokio = parse("slow:base=tokio,flush-ms=20,compact=true").unwrap();
        assert_eq!(tokio.name, "tokio/slow");
        assert!(tokio.tuning.compact && !spin.tuning.compact);
        for bad in [
            "nocolon",
            ":spin-us=1",
            "x:spin-us=fast",
            "x:warp=9",
            "x:base=tokio,spin-us=1",
            "x:direct=maybe",
            "x:compact=1",
        ] {
            let error = parse(bad).unwrap_err().message;
            assert!(error.contains("--variant"), "{bad}: {error}");
        }
    }
}
