//! What the parent knows must be in the log (from the child's reports), and the check of the
//! log against it after each crash.

use std::collections::BTreeMap;
use std::path::Path;

use bytes::Bytes;
use helix_wal::{Entry, Wal};

use crate::child::{config, payload, storage_for};

/// What the parent knows must be in the log.
#[derive(Default)]
pub(crate) struct Model {
    /// Index -> (term, payload) of every entry reported durable and not removed since.
    pub(crate) durable: BTreeMap<u64, (u64, Bytes)>,
    /// The log never again starts below this (acknowledged purges).
    pub(crate) first_floor: u64,
    /// Index -> (term, payload) of every entry written (the write returned) but not reported
    /// durable since the last check: a process crash keeps them, a power cut may not.
    pub(crate) written: BTreeMap<u64, (u64, Bytes)>,
}

impl Model {
    /// Applies the child's report, in order. Durable reports of appenders may arrive after a
    /// purge that removed their entry, so purges apply again at the end. A completed
    /// truncation needs nothing more: its start already released the entries, and an entry
    /// appended after it at the same index is reported anew.
    pub(crate) fn apply(&mut self, lines: &[String]) {
        // Entries below the highest purge started are no longer required (purges only ever
        // remove a prefix, so applying the bound once at the end is exact).
        let mut purging = 0;
        for line in lines {
            let words: Vec<&str> = line.split_whitespace().collect();
            let number = |position: usize| words[position].parse::<u64>().expect("a number");
            match words.first().copied() {
                Some("DURABLE") => {
                    let entry = (number(2), payload(number(3), number(4) as usize));
                    self.written.remove(&number(1));
                    self.durable.insert(number(1), entry);
                }
                Some("WRITTEN") => {
                    let entry = (number(2), payload(number(3), number(4) as usize));
                    self.written.insert(number(1), entry);
                }
                // A truncation or purge under way may already have removed what it removes:
                // from then on those entries are no longer required.
                Some("TRUNCATING") => {
                    self.durable.split_off(&(number(1) + 1));
                    self.written.split_off(&(number(1) + 1));
                }
                Some("PURGING") => purging = purging.max(number(1)),
                Some("PURGED") => self.first_floor = self.first_floor.max(number(1)),
                _ => {}
            }
        }
        self.durable = self.durable.split_off(&purging.max(self.first_floor));
        self.written = self.written.split_off(&purging.max(self.first_floor));
    }
}

/// then makes the model the whole log (recovery made every entry in it durable). Returns how
/// many entries that were written but not reported durable are missing.
pub(crate) async fn verify(backend: &str, dir: &Path, model: &mut Model, kill: u64) -> usize {
    let storage = storage_for(backend);
    let mut wal = Wal::open(storage, config(dir))
        .await
        .unwrap_or_else(|error| {
            panic!("kill {kill}: the log does not reopen: {error}");
        });
    let (first, last) = (wal.first_index(), wal.last_index());
    assert!(
        first >= model.first_floor,
        "kill {kill}: purged entries came back"
    );
    let mut previous_term = 0;
    let mut present = BTreeMap::new();
    for index in first..=last {
        let entry = wal.read(index).await.unwrap_or_else(|error| {
            panic!("kill {kill}: entry {index} of [{first}, {last}] is unreadable: {error}")
        });
        assert!(
            entry.term >= previous_term,
            "kill {kill}: term decreases at {index}"
        );
        previous_term = entry.term;
        present.insert(index, entry);
    }
    for (index, (term, bytes)) in &model.durable {
        let entry = present.get(index).unwrap_or_else(|| {
            panic!("kill {kill}: durable entry {index} lost (log is [{first}, {last}])")
        });
        assert_eq!(entry.term, *term, "kill {kill}: entry {index}");
        assert_eq!(&entry.payload, bytes, "kill {kill}: entry {index}");
    }
    let lost_written = std::mem::take(&mut model.written)
        .into_iter()
        .filter(|(index, (term, bytes))| {
            present
                .get(index)
                .is_none_or(|entry| entry.term != *term || entry.payload != *bytes)
        })
        .count();
    let next = Entry::new(last + 1, previous_term.max(1), payload(u64::MAX - kill, 16));
    wal.append_batch_durable(std::slice::from_ref(&next))
        .await
        .unwrap_or_else(|error| panic!("kill {kill}: the log refuses appends: {error}"));
    wal.close().await.expect("close");
    model.durable = present
        .into_iter()
        .map(|(index, entry)| (index, (entry.term, entry.payload)))
        .collect();
    model.durable.insert(next.index, (next.term, next.payload));
    model.first_floor = first;
    lost_written
}
