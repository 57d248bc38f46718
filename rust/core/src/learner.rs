//! `Learner`: finishes draft sessions on a thread of its own, so that feeding the model store's
//! online part ([`DraftSession::finish`] with `learn`) stays off the caller's path.
//!
//! The caller hands over batches ([`Learner::learn`]) and goes on; the model store takes writes
//! from any thread while readers go on reading, so nothing else needs to stop, and what has been
//! learned shows in lookups as soon as it is published. The backlog is bounded: when more than
//! `max_backlog` sessions wait, [`Learner::learn`] first waits for the oldest batches (the caller
//! slows down to the learner's pace rather than holding ever more sessions). [`Learner::wait`]
//! waits for everything handed over. Errors of finished batches are kept and returned by the next
//! [`Learner::poll`] or `wait`. When no thread can be started, each batch is finished on
//! the caller's thread instead: the same result, only not in the background.

use std::collections::VecDeque;
use std::sync::mpsc::{channel, Receiver, Sender};
use std::thread::JoinHandle;

use crate::drafter::DraftSession;
use crate::error::{Error, Result};

/// The worker's end: batches in, one result per batch out.
#[derive(Debug)]
struct Worker {
    batches: Sender<Vec<DraftSession>>,
    results: Receiver<Result<()>>,
    thread: JoinHandle<()>,
}

/// Finishes sessions with learning in the background (see the module docs).
#[derive(Debug)]
pub struct Learner {
    worker: Option<Worker>,
    max_backlog: usize,
    /// Sizes of the batches handed over and not finished yet, oldest first.
    pending: VecDeque<usize>,
    /// The first error not reported yet.
    error: Option<Error>,
}

/// Finishes every session of `batch` with learning; the first error after finishing them all.
fn finish_all(batch: Vec<DraftSession>) -> Result<()> {
    let mut first = Ok(());
    for session in batch {
        let finished = session.finish(true);
        if first.is_ok() {
            first = finished;
        }
    }
    first
}

impl Learner {
    /// A learner with its own thread (or, when none can be started, one that finishes batches on
    /// the caller's thread), holding at most about `max_backlog` sessions not learned yet.
    pub fn new(max_backlog: usize) -> Self {
        let (batches, inbox) = channel::<Vec<DraftSession>>();
        let (outbox, results) = channel();
        let thread = std::thread::Builder::new()
            .name("hierdraft-learner".into())
            .spawn(move || {
                for batch in inbox {
                    if outbox.send(finish_all(batch)).is_err() {
                        break;
                    }
                }
            });
        Self {
            worker: thread.ok().map(|thread| Worker {
                batches,
                results,
                thread,
            }),
            max_backlog,
            pending: VecDeque::new(),
            error: None,
        }
    }

    /// True when batches are finished on a thread of their own.
    pub fn in_background(&self) -> bool {
        self.worker.is_some()
    }

    /// Sessions handed over and not learned yet.
    pub fn backlog(&self) -> usize {
        self.pending.iter().sum()
    }

    /// Hands `batch` over to be finished with learning (nothing for an empty batch), after
    /// waiting for old batches while the backlog would exceed its bound. Errors are kept for
    /// the next [`Learner::poll`] or [`Learner::wait`].
    pub fn learn(&mut self, batch: Vec<DraftSession>) {
        if !batch.is_empty() {
            while !self.pending.is_empty() && self.backlog() + batch.len() > self.max_backlog {
                self.receive_one(true);
            }
            let size = batch.len();
            let returned = match &self.worker {
                Some(worker) => worker.batches.send(batch).err().map(|e| e.0),
                None => Some(batch),
            };
            match returned {
                None => self.pending.push_back(size),
                // No worker (or it is gone, which it never is on its own): finish here.
                Some(batch) => self.keep(finish_all(batch)),
            }
        }
    }

    /// Takes note of the batches finished so far, without waiting; returns the first error not
    /// reported yet.
    pub fn poll(&mut self) -> Result<()> {
        while !self.pending.is_empty() && self.receive_one(false) {}
        self.error.take().map_or(Ok(()), Err)
    }

    /// Waits until every batch handed over is finished; returns the first error not reported yet.
    pub fn wait(&mut self) -> Result<()> {
        while !self.pending.is_empty() {
            self.receive_one(true);
        }
        self.poll()
    }

    /// Receives the result of the oldest pending batch (waiting for it when `block`); false when
    /// it is not finished yet.
    fn receive_one(&mut self, block: bool) -> bool {
        let received = match &self.worker {
            Some(worker) if block => worker.results.recv().ok(),
            Some(worker) => match worker.results.try_recv() {
                Ok(result) => Some(result),
                Err(std::sync::mpsc::TryRecvError::Empty) => return false,
                Err(std::sync::mpsc::TryRecvError::Disconnected) => None,
            },
            None => None,
        };
        self.pending.pop_front();
        self.keep(received.unwrap_or(Ok(())));
        true
    }

    fn keep(&mut self, result: Result<()>) {
        if let Err(e) = result {
            self.error.get_or_insert(e);
        }
    }
}

impl Drop for Learner {
    /// Lets the worker finish what it was handed, then joins it.
    fn drop(&mut self) {
        if let Some(worker) = self.worker.take() {
            drop(worker.batches);
            let _ = worker.thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::drafter::{DrafterConfig, HierarchicalDrafter};
    use crate::model_store::{ModelStore, ModelStoreConfig};
    use std::sync::Arc;

    fn drafter() -> (HierarchicalDrafter, Arc<ModelStore>) {
        let model = Arc::new(ModelStore::empty(ModelStoreConfig::default()).expect("config"));
        let d = HierarchicalDrafter::new(DrafterConfig::default(), Some(model.clone()), None)
            .expect("drafter");
        (d, model)
    }

    fn session(d: &HierarchicalDrafter, generated: &[u32]) -> DraftSession {
        let mut s = d.start(&[1, 2]).expect("start");
        s.accept(generated).expect("accept");
        s
    }

    #[test]
    fn batches_are_learned_by_the_time_wait_returns() {
        let (d, model) = drafter();
        let mut learner = Learner::new(5);
        assert!(learner.in_background());
        for round in 0..3u32 {
            let batch = (0..4u32)
                .map(|i| session(&d, &[50 + 10 * round + i, 7, 8 + i]))
                .collect();
            learner.learn(batch);
            // Batches of 4 under a bound of 5: the previous one was waited for first.
            assert!(learner.backlog() <= 5, "{}", learner.backlog());
        }
        learner.learn(Vec::new());
        learner.wait().expect("learned");
        assert_eq!(learner.backlog(), 0);
        for round in 0..3u32 {
            for i in 0..4u32 {
                let found = model.lookup(&[50 + 10 * round + i, 7], 4, 1);
                assert!(found.iter().any(|c| c.tokens == vec![8 + i]), "{round} {i}");
            }
        }
        assert!(learner.poll().is_ok());
    }
}
