//! The terms of the log's entries, stored as runs: Raft terms change rarely, so a run per term
//! costs a few bytes where a term per entry would cost eight.

/// Runs of equal terms: `(first_index, term)` pairs, both strictly increasing.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct TermRuns {
    runs: Vec<(u64, u64)>,
}

impl TermRuns {
    /// Records that entry `index` has `term`. Indexes must be pushed in increasing order.
    pub fn push(&mut self, index: u64, term: u64) {
        match self.runs.last() {
            Some((_, last_term)) if *last_term == term => {}
            _ => self.runs.push((index, term)),
        }
    }

    /// The term of the last pushed entry.
    pub fn last_term(&self) -> Option<u64> {
        self.runs.last().map(|(_, term)| *term)
    }

    /// The term of entry `index`, which the caller knows is in the log.
    pub fn term_of(&self, index: u64) -> Option<u64> {
        let position = self.runs.partition_point(|(start, _)| *start <= index);
        position.checked_sub(1).map(|run| self.runs[run].1)
    }

    /// Forgets every entry above `index`.
    pub fn truncate_after(&mut self, index: u64) {
        let keep = self.runs.partition_point(|(start, _)| *start <= index);
        self.runs.truncate(keep);
    }

    /// Forgets every entry below `index`: the run covering `index` now starts there.
    pub fn purge_before(&mut self, index: u64) {
        let covering = self.runs.partition_point(|(start, _)| *start <= index);
        if covering == 0 {
            return;
        }
        self.runs.drain(..covering - 1);
        if let Some(first) = self.runs.first_mut() {
            first.0 = first.0.max(index);
        }
    }

    /// Forgets every entry.
    pub fn clear(&mut self) {
        self.runs.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Proves lookups, truncation and purge keep the right term for every index.
    #[test]
    fn runs_track_terms() {
        let mut runs = TermRuns::default();
        for (index, term) in [(1, 1), (2, 1), (3, 2), (4, 2), (5, 5)] {
            runs.push(index, term);
        }
        assert_eq!(runs.term_of(0), None);
        assert_eq!(runs.term_of(2), Some(1));
        assert_eq!(runs.term_of(4), Some(2));
        assert_eq!(runs.term_of(9), Some(5));
        runs.truncate_after(3);
        assert_eq!(runs.last_term(), Some(2));
        runs.purge_before(3);
        assert_eq!(runs.term_of(3), Some(2));
        assert_eq!(runs.runs, vec![(3, 2)]);
    }
}
