//! Group commit in front of any engine.
//!
//! An fsync costs milliseconds, so one commit per request would cap queued
//! delivery at a few hundred events a second. [`Batcher::ingest`] takes one
//! event: while a commit is in flight, the events that arrive wait in a
//! queue, and the next commit takes all of them (up to `max_batch`) in one
//! [`Engine::ingest`]. Each caller is answered from its own oneshot once
//! the commit that holds its event has returned: never before, so a
//! `Stored` answer is always durable.
//!
//! The commits run in a task of their own, started when the first event
//! arrives and ended when the queue is empty: a caller that gives up (its
//! `store.timeout` fired, its connection closed) drops only its own
//! receiver, and the batch goes on. A caller that gave up before its
//! commit began is left out of it: it was answered 503, so the provider
//! sends it again.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use prometheus_client::metrics::histogram::Histogram;
use tokio::sync::oneshot;

use super::{Engine, Ingested, NewEvent, StoreError};

/// Events one commit takes at most.
pub(crate) const DEFAULT_MAX_BATCH: usize = 256;

/// Group commit over the engine `E`. Cheap to clone: clones share the
/// engine and the queue.
pub(crate) struct Batcher<E: Engine> {
    shared: Arc<Shared<E>>,
}

impl<E: Engine> Clone for Batcher<E> {
    fn clone(&self) -> Self {
        Self {
            shared: self.shared.clone(),
        }
    }
}

impl<E: Engine + std::fmt::Debug> std::fmt::Debug for Batcher<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batcher")
            .field("engine", &self.shared.engine)
            .field("max_batch", &self.shared.max_batch)
            .finish_non_exhaustive()
    }
}

struct Shared<E> {
    engine: E,
    max_batch: usize,
    /// `hookgate_store_commit_seconds`: one observation per commit.
    commit_seconds: Option<Histogram>,
    /// `hookgate_store_batch_size`: events per commit.
    batch_size: Option<Histogram>,
    queue: Mutex<Queue>,
}

#[derive(Default)]
struct Queue {
    waiting: VecDeque<Waiter>,
    /// A commit task is running; it takes whatever `waiting` holds.
    committing: bool,
}

struct Waiter {
    event: NewEvent,
    answer: oneshot::Sender<Result<Ingested, StoreError>>,
}

impl<E: Engine> Batcher<E> {
    /// Group commit over `engine`, at most `max_batch` events a commit (at
    /// least 1), observing each commit's duration and size when given the
    /// histograms.
    pub(crate) fn new(
        engine: E,
        max_batch: usize,
        commit_seconds: Option<Histogram>,
        batch_size: Option<Histogram>,
    ) -> Self {
        Self {
            shared: Arc::new(Shared {
                engine,
                max_batch: max_batch.max(1),
                commit_seconds,
                batch_size,
                queue: Mutex::new(Queue::default()),
            }),
        }
    }

    /// The engine, for everything but ingest.
    pub(crate) fn engine(&self) -> &E {
        &self.shared.engine
    }

    /// Stores `event` in the next commit and answers once that commit has
    /// returned. [`StoreError::Closed`] if the commit task died (the
    /// engine panicked).
    pub(crate) async fn ingest(&self, event: NewEvent) -> Result<Ingested, StoreError> {
        let (answer, answered) = oneshot::channel();
        let start = {
            let mut queue = self.shared.lock();
            queue.waiting.push_back(Waiter { event, answer });
            !std::mem::replace(&mut queue.committing, true)
        };
        if start {
            tokio::spawn(commit_all(self.shared.clone()));
        }
        answered.await.map_err(|_| StoreError::Closed)?
    }
}

impl<E> Shared<E> {
    fn lock(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Commits batches until the queue is empty.
async fn commit_all<E: Engine>(shared: Arc<Shared<E>>) {
    // If this task dies (the engine panicked, the runtime shut down), the
    // guard fails the callers still queued and lets the next caller start
    // a new task.
    let mut guard = Stopped {
        shared: &shared,
        finished: false,
    };
    loop {
        let batch: Vec<Waiter> = {
            let mut queue = shared.lock();
            queue.waiting.retain(|w| !w.answer.is_closed());
            if queue.waiting.is_empty() {
                // From here on a new caller starts a new task.
                queue.committing = false;
                guard.finished = true;
                return;
            }
            let n = queue.waiting.len().min(shared.max_batch);
            queue.waiting.drain(..n).collect()
        };
        let (events, answers): (Vec<NewEvent>, Vec<_>) =
            batch.into_iter().map(|w| (w.event, w.answer)).unzip();
        if let Some(h) = &shared.batch_size {
            h.observe(events.len() as f64);
        }
        let started = Instant::now();
        let result = shared.engine.ingest(events).await;
        if let Some(h) = &shared.commit_seconds {
            h.observe(started.elapsed().as_secs_f64());
        }
        match result {
            Ok(outcomes) if outcomes.len() == answers.len() => {
                for (answer, outcome) in answers.into_iter().zip(outcomes) {
                    let _ = answer.send(Ok(outcome));
                }
            }
            Ok(outcomes) => {
                let e = StoreError::Backend {
                    op: "ingest",
                    message: format!(
                        "the engine answered {} of {} events",
                        outcomes.len(),
                        answers.len()
                    ),
                };
                for answer in answers {
                    let _ = answer.send(Err(e.clone()));
                }
            }
            Err(e) => {
                for answer in answers {
                    let _ = answer.send(Err(e.clone()));
                }
            }
        }
    }
}

/// Clears the queue when the commit task ends before emptying it.
struct Stopped<'a, E> {
    shared: &'a Shared<E>,
    /// The task emptied the queue and handed over: nothing to clear.
    finished: bool,
}

impl<E> Drop for Stopped<'_, E> {
    fn drop(&mut self) {
        if !self.finished {
            let mut queue = self.shared.lock();
            // Dropping the senders answers their callers `Closed`.
            queue.waiting.clear();
            queue.committing = false;
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};

    use bytes::Bytes;
    use tokio::sync::Semaphore;
    use uuid::Uuid;

    use super::*;
    use crate::store::suite::{T0, event};
    use crate::store::{
        Filter, Key, Lease, Millis, PurgePace, Record, Replayed, Retention, RouteStats, Settle,
    };

    /// An engine whose ingest waits for a permit per commit, records each
    /// batch's ids, and fails or panics on demand.
    struct Gated {
        permits: Semaphore,
        batches: Mutex<Vec<Vec<Uuid>>>,
        fail: AtomicBool,
        panic: AtomicBool,
    }

    impl Gated {
        fn new() -> Self {
            Self {
                permits: Semaphore::new(0),
                batches: Mutex::default(),
                fail: AtomicBool::new(false),
                panic: AtomicBool::new(false),
            }
        }

        fn batches(&self) -> Vec<Vec<Uuid>> {
            self.batches.lock().unwrap().clone()
        }
    }

    impl Engine for Gated {
        async fn ingest(&self, batch: Vec<NewEvent>) -> Result<Vec<Ingested>, StoreError> {
            self.batches
                .lock()
                .unwrap()
                .push(batch.iter().map(|e| e.id).collect());
            self.permits.acquire().await.unwrap().forget();
            if self.panic.swap(false, Ordering::SeqCst) {
                panic!("the engine broke");
            }
            if self.fail.load(Ordering::SeqCst) {
                return Err(StoreError::Backend {
                    op: "ingest",
                    message: "disk I/O error".into(),
                });
            }
            Ok(vec![Ingested::Stored; batch.len()])
        }
        async fn seen(&self, _: &Key, _: Millis) -> Result<bool, StoreError> {
            unreachable!("the batcher only ingests")
        }
        async fn remember(&self, _: &Key, _: &str, _: Millis) -> Result<(), StoreError> {
            unreachable!("the batcher only ingests")
        }
        async fn lease(
            &self,
            _: &str,
            _: Millis,
            _: Millis,
            _: u32,
        ) -> Result<Vec<Lease>, StoreError> {
            unreachable!("the batcher only ingests")
        }
        async fn next_due(&self, _: &str) -> Result<Option<Millis>, StoreError> {
            unreachable!("the batcher only ingests")
        }
        async fn settle(&self, _: Uuid, _: i64, _: Millis, _: Settle) -> Result<bool, StoreError> {
            unreachable!("the batcher only ingests")
        }
        async fn list(&self, _: &Filter) -> Result<Vec<Record>, StoreError> {
            unreachable!("the batcher only ingests")
        }
        async fn get(
            &self,
            _: Uuid,
            _: bool,
        ) -> Result<Option<(Record, Option<Bytes>)>, StoreError> {
            unreachable!("the batcher only ingests")
        }
        async fn replay_ids(
            &self,
            _: &[Uuid],
            _: bool,
            _: Millis,
        ) -> Result<Vec<Replayed>, StoreError> {
            unreachable!("the batcher only ingests")
        }
        async fn replay_matching(&self, _: &Filter, _: bool, _: Millis) -> Result<u64, StoreError> {
            unreachable!("the batcher only ingests")
        }
        async fn drop_ids(&self, _: &[Uuid]) -> Result<Vec<Option<Record>>, StoreError> {
            unreachable!("the batcher only ingests")
        }
        async fn drop_matching(&self, _: &Filter) -> Result<u64, StoreError> {
            unreachable!("the batcher only ingests")
        }
        async fn stats(&self) -> Result<Vec<RouteStats>, StoreError> {
            unreachable!("the batcher only ingests")
        }
        async fn purge(&self, _: Millis, _: &[Retention], _: PurgePace) -> Result<u64, StoreError> {
            unreachable!("the batcher only ingests")
        }
        async fn ping(&self) -> Result<(), StoreError> {
            unreachable!("the batcher only ingests")
        }
    }

    /// A histogram's observation count and sum, read from its text
    /// encoding (`count()` needs prometheus-client's `test-util`).
    pub(crate) fn observed(h: &Histogram) -> (u64, f64) {
        let mut registry = prometheus_client::registry::Registry::default();
        registry.register("h", "", h.clone());
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        let value = |name: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
                .unwrap()
                .to_owned()
        };
        (
            value("h_count").parse().unwrap(),
            value("h_sum").parse().unwrap(),
        )
    }

    type Answer = tokio::task::JoinHandle<Result<Ingested, StoreError>>;

    /// Starts one caller and lets it queue its event.
    async fn caller(b: &Batcher<Gated>, ev: NewEvent) -> Answer {
        let b = b.clone();
        let task = tokio::spawn(async move { b.ingest(ev).await });
        settle_down().await;
        task
    }

    /// Lets every ready task run (the tests use the current-thread
    /// runtime, so this is deterministic).
    async fn settle_down() {
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
    }

    fn ev() -> NewEvent {
        event("r", T0, b"{}")
    }

    #[tokio::test]
    async fn callers_queued_during_a_commit_share_the_next() {
        let sizes = Histogram::new([1.0, 2.0, 4.0, 8.0]);
        let seconds = Histogram::new([0.001, 0.01, 0.1]);
        let b = Batcher::new(
            Gated::new(),
            DEFAULT_MAX_BATCH,
            Some(seconds.clone()),
            Some(sizes.clone()),
        );
        let first = ev();
        let first_id = first.id;
        let a = caller(&b, first).await;
        assert_eq!(b.engine().batches().len(), 1, "the first commit began");
        let later: Vec<NewEvent> = (0..5).map(|_| ev()).collect();
        let later_ids: Vec<Uuid> = later.iter().map(|e| e.id).collect();
        let mut rest = Vec::new();
        for e in later {
            rest.push(caller(&b, e).await);
        }
        assert!(!a.is_finished(), "nobody is answered before its commit");

        b.engine().permits.add_permits(2);
        assert_eq!(a.await.unwrap().unwrap(), Ingested::Stored);
        for r in rest {
            assert_eq!(r.await.unwrap().unwrap(), Ingested::Stored);
        }
        assert_eq!(b.engine().batches(), vec![vec![first_id], later_ids]);
        assert_eq!(observed(&sizes), (2, 6.0));
        assert_eq!(observed(&seconds).0, 2);
    }

    #[tokio::test]
    async fn a_commit_takes_at_most_max_batch() {
        let b = Batcher::new(Gated::new(), 4, None, None);
        let mut all = vec![caller(&b, ev()).await];
        for _ in 0..9 {
            all.push(caller(&b, ev()).await);
        }
        b.engine().permits.add_permits(10);
        for a in all {
            assert_eq!(a.await.unwrap().unwrap(), Ingested::Stored);
        }
        let sizes: Vec<usize> = b.engine().batches().iter().map(Vec::len).collect();
        assert_eq!(sizes, vec![1, 4, 4, 1]);
    }

    #[tokio::test]
    async fn a_failed_commit_fails_every_caller_in_it() {
        let b = Batcher::new(Gated::new(), DEFAULT_MAX_BATCH, None, None);
        b.engine().fail.store(true, Ordering::SeqCst);
        let a = caller(&b, ev()).await;
        let x = caller(&b, ev()).await;
        let y = caller(&b, ev()).await;
        b.engine().permits.add_permits(2);
        for r in [a, x, y] {
            let err = r.await.unwrap().unwrap_err();
            assert!(
                matches!(err, StoreError::Backend { op: "ingest", .. }),
                "{err}"
            );
        }
        let sizes: Vec<usize> = b.engine().batches().iter().map(Vec::len).collect();
        assert_eq!(sizes, vec![1, 2]);

        b.engine().fail.store(false, Ordering::SeqCst);
        let again = caller(&b, ev()).await;
        b.engine().permits.add_permits(1);
        assert_eq!(again.await.unwrap().unwrap(), Ingested::Stored);
    }

    #[tokio::test]
    async fn dropped_callers_do_not_break_the_batch() {
        let b = Batcher::new(Gated::new(), DEFAULT_MAX_BATCH, None, None);
        let in_flight = caller(&b, ev()).await;
        let kept = ev();
        let kept_id = kept.id;
        let stays = caller(&b, kept).await;
        let gave_up = caller(&b, ev()).await;

        in_flight.abort();
        gave_up.abort();
        settle_down().await;
        b.engine().permits.add_permits(2);
        assert_eq!(stays.await.unwrap().unwrap(), Ingested::Stored);
        let batches = b.engine().batches();
        assert_eq!(batches.len(), 2, "the in-flight commit finished");
        assert_eq!(
            batches[1],
            vec![kept_id],
            "a caller gone before its commit is left out"
        );
    }

    #[tokio::test]
    async fn a_panicking_engine_closes_its_batch_only() {
        let b = Batcher::new(Gated::new(), DEFAULT_MAX_BATCH, None, None);
        b.engine().panic.store(true, Ordering::SeqCst);
        let a = caller(&b, ev()).await;
        let queued = caller(&b, ev()).await;
        b.engine().permits.add_permits(1);
        assert!(matches!(a.await.unwrap(), Err(StoreError::Closed)));
        assert!(matches!(queued.await.unwrap(), Err(StoreError::Closed)));

        let after = caller(&b, ev()).await;
        b.engine().permits.add_permits(1);
        assert_eq!(after.await.unwrap().unwrap(), Ingested::Stored);
    }
}
