//! The log's tracing events, captured by a small hand-written subscriber.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::io::{Seek, SeekFrom, Write};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use helix_wal::{Entry, Storage, TokioStorage, Wal};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Level, Metadata};

use crate::cases::config;
use crate::common::instrumented::Instrumented;

/// One captured event: its level and its fields (the message under "message").
#[derive(Debug, Clone)]
struct Captured {
    level: Level,
    fields: BTreeMap<&'static str, String>,
}

impl Captured {
    fn field(&self, name: &str) -> &str {
        self.fields.get(name).map_or("", String::as_str)
    }
}

/// The events one test keeps (those emitted on its thread).
#[derive(Clone, Default)]
struct Capture {
    events: Arc<Mutex<Vec<Captured>>>,
}

impl Capture {
    fn events(&self) -> Vec<Captured> {
        self.events.lock().unwrap().clone()
    }

    fn with_message(&self, message: &str) -> Vec<Captured> {
        self.events()
            .into_iter()
            .filter(|event| event.field("message") == message)
            .collect()
    }
}

struct Fields(BTreeMap<&'static str, String>);

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name(), value.to_owned());
    }

    fn record_debug(&mut self, field: &Field, value: &dyn Debug) {
        self.0.insert(field.name(), format!("{value:?}"));
    }
}

/// The one global subscriber: it hands each event to the capture registered for the thread that
/// emits it. Global rather than per thread, because tracing caches whether a callsite is wanted
/// when the callsite is first hit: hit first on a thread without a subscriber, it was cached
/// as unwanted and a per-thread subscriber on another thread then missed its events.
struct Router;

/// The capture of each thread that runs a test.
static CAPTURES: Mutex<Vec<(std::thread::ThreadId, Capture)>> = Mutex::new(Vec::new());

impl tracing::Subscriber for Router {
    fn enabled(&self, _metadata: &Metadata<'_>) -> bool {
        true
    }

    fn new_span(&self, _attributes: &Attributes<'_>) -> Id {
        Id::from_u64(1)
    }

    fn record(&self, _span: &Id, _values: &Record<'_>) {}

    fn record_follows_from(&self, _span: &Id, _follows: &Id) {}

    fn event(&self, event: &Event<'_>) {
        let thread = std::thread::current().id();
        let capture = CAPTURES
            .lock()
            .unwrap()
            .iter()
            .find(|(id, _)| *id == thread)
            .map(|(_, capture)| capture.clone());
        let Some(capture) = capture else {
            return;
        };
        let mut fields = Fields(BTreeMap::new());
        event.record(&mut fields);
        capture.events.lock().unwrap().push(Captured {
            level: *event.metadata().level(),
            fields: fields.0,
        });
    }

    fn enter(&self, _span: &Id) {}

    fn exit(&self, _span: &Id) {}
}

/// Runs `test` on a current-thread runtime with `capture` keeping this thread's events (the
/// log's events are emitted on this thread).
fn capturing<F: std::future::Future<Output = ()>>(capture: &Capture, test: F) {
    static INSTALLED: std::sync::Once = std::sync::Once::new();
    INSTALLED.call_once(|| {
        tracing::subscriber::set_global_default(Router).expect("no other global subscriber");
    });
    let thread = std::thread::current().id();
    CAPTURES.lock().unwrap().push((thread, capture.clone()));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(test);
    CAPTURES.lock().unwrap().retain(|(id, _)| *id != thread);
}

fn entry(index: u64) -> Entry {
    Entry::new(index, 1, Bytes::from_static(b"ten bytes!"))
}

// Proves a recovery cut is reported by a warning naming the segment file and the offset of the
// cut (those of the recovery report), and that the open's info event names the backend and the
// directory and mentions the cut.
#[test]
fn a_recovery_cut_is_logged_with_file_and_offset() {
    let temporary = tempfile::tempdir().unwrap();
    let dir = temporary.path().join("log");
    let storage: Arc<dyn Storage> = Arc::new(TokioStorage::new());
    let capture = Capture::default();
    capturing(&capture, async {
        let mut wal = Wal::open(storage.clone(), config(&dir)).await.unwrap();
        wal.append_batch_durable(&[entry(1), entry(2)])
            .await
            .unwrap();
        let segment = wal.segments()[0].clone();
        wal.close().await.unwrap();
        drop(wal);
        // Garbage past the last record: a torn tail, cut under the default mode.
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .open(&segment.path)
            .unwrap();
        file.seek(SeekFrom::Start(segment.used_bytes + 200))
            .unwrap();
        file.write_all(&[0xAB; 333]).unwrap();
        file.sync_all().unwrap();

        let wal = Wal::open(storage.clone(), config(&dir)).await.unwrap();
        let cut = wal.recovery_report().cut.clone().expect("the tail was cut");
        assert_eq!(
            (&cut.segment, cut.offset),
            (&segment.path, segment.used_bytes)
        );
        let warnings = capture.with_message("recovery cut the log");
        assert_eq!(warnings.len(), 1, "{:#?}", capture.events());
        let warning = &warnings[0];
        assert_eq!(warning.level, Level::WARN);
        assert_eq!(warning.field("segment"), segment.path.display().to_string());
        assert_eq!(warning.field("offset"), segment.used_bytes.to_string());
        assert_eq!(warning.field("first_discarded_index"), "3");
        let opened = capture.with_message("opened the log");
        let last = opened.last().expect("an open event");
        assert_eq!(last.level, Level::INFO);
        assert_eq!(last.field("backend"), "tokio");
        assert_eq!(last.field("dir"), dir.display().to_string());
        assert!(last.field("cut").contains("offset"), "{last:?}");
    });
}

// Proves the first failure that poisons the log is logged once at error level with its cause
// (the fsync error), and that later refused writes log nothing more at error level.
#[test]
fn poisoning_is_logged_once_at_error_level() {
    let temporary = tempfile::tempdir().unwrap();
    let dir = temporary.path().join("log");
    let instrumented = Instrumented::new(Arc::new(TokioStorage::new()));
    let probe = instrumented.probe.clone();
    let storage: Arc<dyn Storage> = Arc::new(instrumented);
    let capture = Capture::default();
    capturing(&capture, async {
        let mut wal = Wal::open(storage, config(&dir)).await.unwrap();
        wal.append(entry(1)).await.unwrap();
        probe.fail_syncs.store(true, Ordering::SeqCst);
        assert!(wal.sync().await.is_err());
        assert!(wal.sync().await.is_err());
        assert!(wal.append(entry(2)).await.is_err());
        let errors: Vec<Captured> = capture
            .events()
            .into_iter()
            .filter(|event| event.level == Level::ERROR)
            .collect();
        assert_eq!(errors.len(), 1, "{errors:#?}");
        assert!(
            errors[0].field("message").contains("poisoned"),
            "{errors:?}"
        );
        assert!(errors[0].field("error").contains("fsync"), "{errors:?}");
        assert_eq!(errors[0].field("dir"), dir.display().to_string());
    });
}

// Proves truncation and purge each log one info event with their bounds, and that appends and
// syncs log nothing at info level or above.
#[test]
fn truncation_and_purge_are_logged_and_appends_are_not() {
    let temporary = tempfile::tempdir().unwrap();
    let dir = temporary.path().join("log");
    let capture = Capture::default();
    capturing(&capture, async {
        let storage: Arc<dyn Storage> = Arc::new(TokioStorage::new());
        let mut wal = Wal::open(storage, config(&dir)).await.unwrap();
        let opened = capture.events().len();
        for index in 1..=50 {
            wal.append_batch_durable(&[entry(index)]).await.unwrap();
        }
        let loud = |events: &[Captured]| {
            events
                .iter()
                .filter(|event| event.level <= Level::INFO)
                .count()
        };
        assert_eq!(loud(&capture.events()[opened..]), 0);
        wal.truncate_after(40).await.unwrap();
        wal.purge_before(41).await.unwrap();
        let truncations = capture.with_message("truncating the log");
        assert_eq!(truncations.len(), 1);
        assert_eq!(truncations[0].field("after"), "40");
        assert_eq!(truncations[0].level, Level::INFO);
        let purges = capture.with_message("purging segments");
        assert_eq!(purges.len(), 1);
        assert_eq!(purges[0].field("before"), "41");
    });
}
