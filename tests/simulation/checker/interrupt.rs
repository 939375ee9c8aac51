//! Interrupted operations: a caller drops a mutating call's future at a random await point (a
//! timeout, a `select!`), as real callers do. The model then allows either outcome of that call
//! and never a mix of the two: after the next call that settles the log, the log must show the
//! whole operation or none of it, and a crash in between may keep either.

use std::future::Future;
use std::task::Poll;

use helix_wal::Entry;

use super::{ensure, Buffered, Check, Crash, Flow, Log, Simulation, MAX_BATCH_ENTRIES};
use crate::model::Written;

/// Most polls an interrupted call gets before its future is dropped.
const MAX_POLLS_BEFORE_DROP: u64 = 6;

/// Polls `future` at most `polls` times and drops it if it is still pending: `None` then.
async fn interrupt<F: Future>(future: F, polls: u64) -> Option<F::Output> {
    let mut future = std::pin::pin!(future);
    let mut left = polls;
    std::future::poll_fn(move |context| match future.as_mut().poll(context) {
        Poll::Ready(output) => Poll::Ready(Some(output)),
        Poll::Pending => {
            left -= 1;
            if left == 0 {
                Poll::Ready(None)
            } else {
                Poll::Pending
            }
        }
    })
    .await
}

/// A mutating call whose future was dropped, with what either outcome means to the model.
#[derive(Debug)]
enum Dropped {
    /// Entries `first..` of a batch: all of them appended, or none.
    Append { first: u64, written: Vec<Written> },
    /// `truncate_after(index)`: done, or not.
    Truncate { index: u64 },
    /// `purge_before(index)`: done, or not.
    Purge { index: u64 },
    /// A sync or a flush: nothing to resolve but durability.
    Other,
    /// A close: dropped, the log stays open.
    Close,
}

impl Simulation {
    /// Records in the model that `dropped` may or may not have happened: what a crash before
    /// the log settled it may keep.
    fn either_outcome(&mut self, dropped: &Dropped) {
        match dropped {
            Dropped::Append { first, written } => {
                for (index, w) in (*first..).zip(written) {
                    self.model.candidates.entry(index).or_default().push(*w);
                }
            }
            Dropped::Truncate { index } => self.model.truncation_uncertain(*index),
            Dropped::Purge { index } => self.model.purge_uncertain(*index),
            Dropped::Other | Dropped::Close => {}
        }
    }

    /// Holds the log to exactly one outcome of `dropped`, given the first and last index it
    /// shows once settled.
    fn resolve(&mut self, dropped: Dropped, first: u64, last: u64) -> Check<()> {
        match dropped {
            Dropped::Append { first: at, written } => {
                let end = at + written.len() as u64 - 1;
                if last == end {
                    for (index, w) in (at..).zip(written) {
                        self.model.appended(index, w);
                    }
                } else {
                    ensure!(
                        last == at - 1,
                        "a dropped append of {at}..={end} left the log ending at {last}: a mix"
                    );
                    self.either_outcome(&Dropped::Append { first: at, written });
                }
            }
            Dropped::Truncate { index } => {
                if last == index.min(self.model.last()) {
                    self.model.truncated(index);
                } else {
                    ensure!(
                        last == self.model.last(),
                        "a dropped truncate_after({index}) left the log ending at {last}"
                    );
                }
            }
            Dropped::Purge { index } => {
                if first != self.model.first {
                    self.check_purge(index, first)?;
                    self.model.purged(first);
                }
            }
            Dropped::Other | Dropped::Close => {}
        }
        ensure!(
            (first, last) == (self.model.first, self.model.last()),
            "after a dropped call the log holds [{first}, {last}], the model [{}, {}]",
            self.model.first,
            self.model.last()
        );
        Ok(())
    }

    /// A mutating call on a plain log, dropped after a few polls unless it finishes first.
    /// Dropped, the process either dies at once or carries on with a sync, which finishes the
    /// dropped operation first.
    pub(super) async fn plain_interrupted(&mut self, wal: &mut Log) -> Check<Flow> {
        let polls = self.rng.between(1, MAX_POLLS_BEFORE_DROP);
        let (dropped, outcome) = match self.rng.below(7) {
            kind @ 0..=2 => {
                let count = if kind == 0 {
                    1
                } else {
                    self.rng.between(1, MAX_BATCH_ENTRIES)
                };
                let first = self.model.next;
                let written: Vec<Written> = (0..count).map(|_| self.next_entry()).collect();
                let entries: Vec<Entry> =
                    (first..).zip(&written).map(|(i, w)| w.entry(i)).collect();
                self.note(format!(
                    "append {count} at {first} (kind {kind}), drop after {polls}"
                ));
                let outcome = match kind {
                    0 => interrupt(wal.append(entries[0].clone()), polls)
                        .await
                        .map(|result| result.map(|_| ())),
                    1 => interrupt(wal.append_batch(&entries), polls).await,
                    _ => interrupt(wal.append_batch_durable(&entries), polls).await,
                };
                (Dropped::Append { first, written }, outcome)
            }
            3 => {
                self.note(format!("sync, drop after {polls}"));
                (Dropped::Other, interrupt(wal.sync(), polls).await)
            }
            4 => {
                let low = self.model.first.saturating_sub(1);
                let index = self.rng.between(low, self.model.last().max(low));
                self.note(format!("truncate_after {index}, drop after {polls}"));
                let outcome = interrupt(wal.truncate_after(index), polls).await;
                (Dropped::Truncate { index }, outcome)
            }
            5 => {
                let index = self.purge_point();
                self.note(format!("purge_before {index}, drop after {polls}"));
                let outcome = interrupt(wal.purge_before(index), polls).await;
                (Dropped::Purge { index }, outcome)
            }
            _ => {
                self.note(format!("close, drop after {polls}"));
                (Dropped::Close, interrupt(wal.close(), polls).await)
            }
        };
        match outcome {
            Some(Ok(())) => {
                let closed = matches!(dropped, Dropped::Close);
                let (first, last) = (wal.first_index(), wal.last_index());
                self.resolve(dropped, first, last)?;
                self.model.acknowledge(wal.durable_index());
                ensure!(!wal.is_poisoned(), "a call returned Ok on a poisoned log");
                if closed {
                    ensure!(
                        wal.durable_index() == last,
                        "close left entries not durable"
                    );
                    return Ok(Flow::Crash(Crash::Process));
                }
                Ok(Flow::Continue)
            }
            Some(Err(error)) => {
                self.either_outcome(&dropped);
                self.after_failure(Some(wal), error).await
            }
            None => self.after_plain_drop(wal, dropped).await,
        }
    }

    async fn after_plain_drop(&mut self, wal: &mut Log, dropped: Dropped) -> Check<Flow> {
        self.note("dropped".into());
        if self.rng.one_in(4) {
            self.either_outcome(&dropped);
            self.note("the process dies with the call in flight".into());
            return Ok(Flow::Crash(self.random_crash()));
        }
        self.note("sync".into());
        match wal.sync().await {
            Ok(()) => {
                let (first, last) = (wal.first_index(), wal.last_index());
                self.resolve(dropped, first, last)?;
                ensure!(
                    wal.durable_index() == last,
                    "a sync after a dropped call left the durable index at {}",
                    wal.durable_index()
                );
                self.model.acknowledge(last);
                Ok(Flow::Continue)
            }
            Err(error) => {
                self.either_outcome(&dropped);
                self.after_failure(Some(wal), error).await
            }
        }
    }

    /// A call on a buffered log dropped after a few polls unless it finishes first; then the
    /// process dies, or a flush settles it.
    pub(super) async fn buffered_interrupted(&mut self, buffered: &Buffered) -> Check<Flow> {
        let polls = self.rng.between(1, MAX_POLLS_BEFORE_DROP);
        let (dropped, outcome) = match self.rng.below(4) {
            0 => {
                let index = self.model.next;
                let written = self.next_entry();
                self.note(format!(
                    "buffered append_durable at {index}, drop after {polls}"
                ));
                let outcome = interrupt(buffered.append_durable(written.entry(index)), polls)
                    .await
                    .map(|result| result.map(|_| ()));
                let dropped = Dropped::Append {
                    first: index,
                    written: vec![written],
                };
                (dropped, outcome)
            }
            1 => {
                self.note(format!("buffered flush, drop after {polls}"));
                (Dropped::Other, interrupt(buffered.flush(), polls).await)
            }
            2 => {
                let low = self.model.first.saturating_sub(1);
                let index = self.rng.between(low, self.model.last().max(low));
                self.note(format!(
                    "buffered truncate_after {index}, drop after {polls}"
                ));
                let outcome = interrupt(buffered.truncate_after(index), polls).await;
                (Dropped::Truncate { index }, outcome)
            }
            _ => {
                let index = self.purge_point();
                self.note(format!("buffered purge_before {index}, drop after {polls}"));
                let outcome = interrupt(buffered.purge_before(index), polls).await;
                (Dropped::Purge { index }, outcome)
            }
        };
        match outcome {
            Some(Ok(())) => {
                let (first, last) = (buffered.first_index(), buffered.last_index());
                self.resolve(dropped, first, last)?;
                self.model.acknowledge(buffered.durable_index());
                Ok(Flow::Continue)
            }
            Some(Err(error)) => {
                self.either_outcome(&dropped);
                self.buffered_failure(buffered, error).await
            }
            None => {
                self.note("dropped".into());
                if self.rng.one_in(4) {
                    self.either_outcome(&dropped);
                    self.note("the process dies with the call in flight".into());
                    return Ok(Flow::Crash(self.random_crash()));
                }
                self.note("flush".into());
                match buffered.flush().await {
                    Ok(()) => {
                        let (first, last) = (buffered.first_index(), buffered.last_index());
                        self.resolve(dropped, first, last)?;
                        ensure!(
                            buffered.durable_index() >= last,
                            "a flush after a dropped call left the durable index at {}",
                            buffered.durable_index()
                        );
                        self.model.acknowledge(last);
                        Ok(Flow::Continue)
                    }
                    Err(error) => {
                        self.either_outcome(&dropped);
                        self.buffered_failure(buffered, error).await
                    }
                }
            }
        }
    }
}
