//! The reference model the checker holds the log to: what the running log must show, what a
//! recovery must keep, and what a recovery may legitimately find at each index.

use std::collections::BTreeMap;

use bytes::Bytes;
use helix_wal::Entry;

use crate::rng::Rng;

/// One entry the checker appended, identified by a nonce that no other entry shares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Written {
    pub term: u64,
    pub nonce: u64,
    pub length: usize,
}

impl Written {
    pub fn payload(&self) -> Bytes {
        Bytes::from(Rng::payload(self.nonce, self.length))
    }

    pub fn entry(&self, index: u64) -> Entry {
        Entry::new(index, self.term, self.payload())
    }

    /// True when `entry` is this entry at `index`, byte for byte.
    pub fn matches(&self, index: u64, entry: &Entry) -> bool {
        entry.index == index
            && entry.term == self.term
            && entry.payload.len() == self.length
            && entry.payload == self.payload()
    }
}

/// What the model knows.
///
/// * `current`: the log as the running process must present it, `first..next`.
/// * `acked`: entries the log reported durable and no acknowledged operation has removed since;
///   every recovery must return them byte for byte.
/// * `candidates`: everything a recovery may find at an index: entries appended there that no
///   acknowledged truncation, purge or earlier recovery has ruled out. Anything else is a
///   phantom or a resurrection.
/// * `first_floor`: the lowest first index a recovery may report (raised by acknowledged purges
///   and by each recovery: purged entries never come back).
#[derive(Debug, Default)]
pub struct Model {
    pub current: BTreeMap<u64, Written>,
    pub first: u64,
    pub next: u64,
    pub term: u64,
    pub acked: BTreeMap<u64, Written>,
    pub candidates: BTreeMap<u64, Vec<Written>>,
    pub first_floor: u64,
    next_nonce: u64,
}

impl Model {
    pub fn new(seed: u64) -> Self {
        Self {
            first: 1,
            next: 1,
            term: 1,
            first_floor: 1,
            // Nonces differ between seeds too, so a payload identifies its run.
            next_nonce: seed.wrapping_mul(1 << 20),
            ..Self::default()
        }
    }

    pub fn last(&self) -> u64 {
        self.next - 1
    }

    /// A new, never-seen entry for the next index, with the model's current term.
    pub fn new_entry(&mut self, length: usize) -> Written {
        self.next_nonce += 1;
        Written {
            term: self.term,
            nonce: self.next_nonce,
            length,
        }
    }

    /// A new, never-seen entry with the length and term of `lost` (an entry a recovery cut),
    /// whatever the model's current term: its record is exactly as long as the lost one's.
    pub fn new_entry_like(&mut self, lost: Written) -> Written {
        self.next_nonce += 1;
        Written {
            term: lost.term,
            nonce: self.next_nonce,
            length: lost.length,
        }
    }

    /// The log accepted `written` at `index` (buffered or written, not yet durable).
    pub fn appended(&mut self, index: u64, written: Written) {
        assert_eq!(index, self.next, "the model appends in order");
        self.current.insert(index, written);
        self.candidates.entry(index).or_default().push(written);
        self.next = index + 1;
    }

    /// The log reported everything up to `durable_index` durable.
    pub fn acknowledge(&mut self, durable_index: u64) {
        for (index, written) in self.current.range(..=durable_index) {
            self.acked.insert(*index, *written);
        }
    }

    /// An acknowledged `truncate_after(index)`: later entries are gone for good.
    pub fn truncated(&mut self, index: u64) {
        self.current.split_off(&(index + 1));
        self.acked.split_off(&(index + 1));
        self.candidates.split_off(&(index + 1));
        self.next = self.next.min(index + 1);
    }

    /// A `truncate_after(index)` that failed: later entries may or may not survive, so none
    /// of them must, but any of them may.
    pub fn truncation_uncertain(&mut self, index: u64) {
        self.acked.split_off(&(index + 1));
    }

    /// An acknowledged purge that left the log starting at `first`; for a reset past the end,
    /// `first` is the next index and the log is empty.
    pub fn purged(&mut self, first: u64) {
        self.current = self.current.split_off(&first);
        self.acked = self.acked.split_off(&first);
        self.candidates = self.candidates.split_off(&first);
        self.first = first;
        self.first_floor = first;
        self.next = self.next.max(first);
    }

    /// A `purge_before(index)` that failed: entries below `index` may be gone.
    pub fn purge_uncertain(&mut self, index: u64) {
        self.acked = self.acked.split_off(&index);
    }

    /// The log recovered `entries` (contiguous from `first`) and reports them all durable:
    /// from now on they are the log, everything after them is gone for good.
    pub fn recovered(&mut self, first: u64, entries: &[(u64, Written)]) {
        let next = first + entries.len() as u64;
        self.current = entries.iter().copied().collect();
        self.acked = self.current.clone();
        self.candidates = self.candidates.split_off(&first);
        self.candidates.split_off(&next);
        for (index, written) in entries {
            self.candidates.insert(*index, vec![*written]);
        }
        self.first = first;
        self.first_floor = first;
        self.next = next;
        if let Some((_, last)) = entries.last() {
            self.term = self.term.max(last.term);
        }
    }
}
