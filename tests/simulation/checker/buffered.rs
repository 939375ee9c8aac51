//! Operations on a `BufferedWal`: buffered and durable appends, concurrent appenders sharing
//! group commits, flushes, reads, truncation and purge.

use helix_wal::WalError;

use super::{ensure, Buffered, Check, Crash, Flow, Simulation, MAX_BATCH_ENTRIES};
use crate::model::Written;

impl Simulation {
    pub(super) async fn drive_buffered(&mut self, buffered: &Buffered) -> Check<Crash> {
        loop {
            if self.operations_left == 0 {
                return Ok(self.random_crash());
            }
            self.operations_left -= 1;
            self.operation += 1;
            self.summary.operations += 1;
            let flow = match self.rng.weighted(&[20, 10, 8, 6, 10, 6, 4, 4, 5, 4, 1, 6]) {
                0 => self.buffered_append(buffered, false).await?,
                1 => self.buffered_append(buffered, true).await?,
                2 => self.buffered_burst(buffered).await?,
                3 => {
                    self.note("flush".into());
                    match buffered.flush().await {
                        Ok(()) => {
                            self.model.acknowledge(buffered.durable_index());
                            ensure!(
                                buffered.durable_index() == self.model.last(),
                                "flush returned with the durable index at {}",
                                buffered.durable_index()
                            );
                            Flow::Continue
                        }
                        Err(error) => self.buffered_failure(buffered, error).await?,
                    }
                }
                4 => {
                    let index = self.index_to_read();
                    self.note(format!("read {index}"));
                    let result = buffered.read(index).await;
                    self.check_read(index, result)?;
                    Flow::Continue
                }
                5 => {
                    let from = self.index_to_read();
                    let to = self.rng.between(from, self.model.next + 2);
                    let max_bytes = self.rng.between(0, 32 << 10) as usize;
                    self.note(format!("read_range [{from}, {to}) max {max_bytes}"));
                    let result = buffered.read_range(from, to, max_bytes).await;
                    self.check_read_range(from, to, max_bytes, result)?;
                    Flow::Continue
                }
                6 => self.buffered_truncate(buffered).await?,
                7 => self.buffered_purge(buffered).await?,
                8 => {
                    let pause_ms = self.rng.between(1, 30);
                    self.note(format!("idle {pause_ms} ms"));
                    tokio::time::sleep(std::time::Duration::from_millis(pause_ms)).await;
                    self.model.acknowledge(buffered.durable_index());
                    Flow::Continue
                }
                9 => {
                    self.note("the process dies".into());
                    Flow::Crash(self.random_crash())
                }
                11 => self.buffered_interrupted(buffered).await?,
                _ => {
                    self.note("close".into());
                    match buffered.close().await {
                        Ok(()) => {
                            self.model.acknowledge(buffered.durable_index());
                            ensure!(
                                buffered.durable_index() == self.model.last(),
                                "close left entries not durable"
                            );
                            Flow::Crash(Crash::Process)
                        }
                        Err(error) => self.buffered_failure(buffered, error).await?,
                    }
                }
            };
            match flow {
                // A flush may have completed in the background meanwhile.
                Flow::Continue => self.model.acknowledge(buffered.durable_index()),
                Flow::Crash(crash) => return Ok(crash),
            }
        }
    }

    async fn buffered_append(&mut self, buffered: &Buffered, durable: bool) -> Check<Flow> {
        let index = self.model.next;
        let written = self.next_entry();
        self.note(format!(
            "buffered append at {index}{}",
            if durable { " durably" } else { "" }
        ));
        let result = if durable {
            buffered.append_durable(written.entry(index)).await
        } else {
            buffered.append(written.entry(index)).await
        };
        match result {
            Ok(got) => {
                ensure!(got == index, "append returned index {got} for {index}");
                self.model.appended(index, written);
                if durable {
                    ensure!(
                        buffered.durable_index() >= index,
                        "append_durable returned before its entry was durable"
                    );
                    self.model.acknowledge(index);
                }
                Ok(Flow::Continue)
            }
            Err(error) => {
                self.model
                    .candidates
                    .entry(index)
                    .or_default()
                    .push(written);
                self.buffered_failure(buffered, error).await
            }
        }
    }

    /// Several appenders at once, each assigned the next index and waiting for durability:
    /// group commit under concurrency.
    async fn buffered_burst(&mut self, buffered: &Buffered) -> Check<Flow> {
        let count = self.rng.between(2, MAX_BATCH_ENTRIES);
        let term = self.model.term;
        let written: Vec<Written> = (0..count)
            .map(|_| {
                let length = self.random_length();
                self.summary.entries_appended += 1;
                self.model.new_entry(length)
            })
            .collect();
        self.note(format!("{count} concurrent durable appenders"));
        let mut tasks = tokio::task::JoinSet::new();
        for w in &written {
            let buffered = buffered.clone();
            let w = *w;
            tasks.spawn(async move {
                let index = buffered.append_next(term, w.payload()).await?;
                buffered.wait_durable(index).await.map(|()| (index, w))
            });
        }
        let mut results = Vec::new();
        while let Some(joined) = tasks.join_next().await {
            results.push(joined.map_err(|error| format!("an appender panicked: {error}"))?);
        }
        // Appenders that waited for room in the buffer may take indexes in any order: each
        // entry may be at any index of the burst until the results say where it is.
        let first = self.model.next;
        let mut placed = Vec::new();
        let mut failure = None;
        for result in results {
            match result {
                Ok(done) => placed.push(done),
                Err(error) => failure = Some(error),
            }
        }
        if let Some(error) = failure {
            for index in first..first + count {
                let list = self.model.candidates.entry(index).or_default();
                list.extend(written.iter().copied());
            }
            return self.buffered_failure(buffered, error).await;
        }
        placed.sort_unstable_by_key(|(index, _)| *index);
        let indexes: Vec<u64> = placed.iter().map(|(index, _)| *index).collect();
        let expected: Vec<u64> = (first..first + count).collect();
        ensure!(
            indexes == expected,
            "concurrent appenders got indexes {indexes:?}, expected {expected:?}"
        );
        for (index, w) in placed {
            self.model.appended(index, w);
        }
        self.model.acknowledge(buffered.durable_index());
        ensure!(
            buffered.durable_index() >= first + count - 1,
            "appenders were told durable with the durable index at {}",
            buffered.durable_index()
        );
        Ok(Flow::Continue)
    }

    async fn buffered_truncate(&mut self, buffered: &Buffered) -> Check<Flow> {
        let low = self.model.first.saturating_sub(1);
        let index = self.rng.between(low, self.model.last().max(low));
        self.note(format!("buffered truncate_after {index}"));
        match buffered.truncate_after(index).await {
            Ok(()) => {
                self.model.truncated(index);
                self.model.term += self.rng.below(2);
                ensure!(
                    buffered.last_index() == self.model.last(),
                    "truncate_after({index}) left the last index at {}",
                    buffered.last_index()
                );
                Ok(Flow::Continue)
            }
            Err(error) => {
                self.model.truncation_uncertain(index);
                self.buffered_failure(buffered, error).await
            }
        }
    }

    async fn buffered_purge(&mut self, buffered: &Buffered) -> Check<Flow> {
        let index = self.purge_point();
        self.note(format!("buffered purge_before {index}"));
        match buffered.purge_before(index).await {
            Ok(()) => {
                let first = buffered.first_index();
                self.check_purge(index, first)?;
                self.model.purged(first);
                Ok(Flow::Continue)
            }
            Err(error) => {
                self.model.purge_uncertain(index);
                self.buffered_failure(buffered, error).await
            }
        }
    }

    /// As [`Simulation::after_failure`], for the buffered front: entries buffered but not yet
    /// durable may or may not reach the file, and the log must refuse appends.
    pub(super) async fn buffered_failure(
        &mut self,
        buffered: &Buffered,
        error: WalError,
    ) -> Check<Flow> {
        self.after_failure(None, error).await?;
        let refused = buffered
            .append_next(self.model.term, vec![2u8; 8].into())
            .await;
        ensure!(
            matches!(refused, Err(WalError::Poisoned { .. })),
            "a failed group commit left the buffered log accepting appends: {refused:?}"
        );
        Ok(Flow::Crash(self.random_crash()))
    }
}
