//! Queued delivery: workers that take due events from the store and bring
//! them to the app, for as long as it takes (SPEC "Queued delivery").
//!
//! One worker per queued route holds `delivery_concurrency` permits; it
//! leases as many due events as it has free permits, runs one attempt per
//! event in its own task (the permit covers the exchange with the app, not
//! the settle that records its result), and otherwise sleeps until the next
//! event is due, an ingest wakes it, or a second passes (another process —
//! the `events` CLI, another replica — may have changed the store). A lease lasts
//! `upstream.timeout` + 10 s: a worker or replica that dies leaves its
//! events to be taken again when their leases run out (at least once).
//!
//! Beside the workers: a task that refreshes the queue gauges and
//! `hookgate_store_up` every second, and one that purges delivered and
//! dead events past their retention every minute.

pub(crate) mod policy;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::forward::upstream::Upstream;
use crate::forward::{Attempt, UpstreamRequest};
use crate::load::{QueueSettings, Route};
use crate::observe::metrics::{AttemptLabels, Metrics, QueueLabels, RouteLabels, StoreMetrics};
use crate::store::now_ms;
use crate::store::{Lease, Millis, PurgePace, Retention, Settle, State, Store};
use policy::{Attempted, millis};

/// How long past `upstream.timeout` a lease lasts.
const LEASE_MARGIN: Duration = Duration::from_secs(10);
/// An attempt starts only while its lease has `upstream.timeout` plus this
/// left (an event leased ahead that waited too long is given back).
const START_MARGIN: Duration = Duration::from_secs(5);
/// The longest a worker sleeps before looking at the store again.
const POLL: Duration = Duration::from_secs(1);
/// How often the queue gauges are refreshed.
const GAUGES_EVERY: Duration = Duration::from_secs(1);
/// How often retention purges run.
const PURGE_EVERY: Duration = Duration::from_secs(60);

/// A purge waits this many times each chunk's time after it (at most a
/// quarter of the store's writer), for at most half of [`PURGE_EVERY`]
/// (then goes on without waiting, so it always keeps up); see
/// [`PurgePace`].
const PURGE_PACE: u32 = 3;

/// The store of a sidecar with a `[store]`, once it is open, and its
/// delivery workers. The store is opened in the background: one that cannot
/// be opened at start (missing directory, full disk, database down) leaves
/// queued routes answering 503 `store_unavailable` until it can.
#[derive(Debug)]
pub(crate) struct Queue {
    store: std::sync::OnceLock<Store>,
    deliveries: std::sync::OnceLock<Deliveries>,
    /// `store.timeout`: an ingest that takes longer answers 503.
    pub(crate) timeout: Duration,
    /// How the latest ingests went.
    pub(crate) health: Arc<IngestHealth>,
    config: crate::config::StoreConfig,
}

impl Queue {
    /// A queue for `config`, not open yet.
    pub(crate) fn new(config: crate::config::StoreConfig) -> Self {
        Self {
            store: std::sync::OnceLock::new(),
            deliveries: std::sync::OnceLock::new(),
            timeout: config.timeout,
            health: Arc::default(),
            config,
        }
    }

    /// The store, once open.
    pub(crate) fn store(&self) -> Option<&Store> {
        self.store.get()
    }

    /// Tells `route`'s worker that an event was stored.
    pub(crate) fn wake(&self, route: &str) {
        if let Some(d) = self.deliveries.get() {
            d.wake(route);
        }
    }

    /// Tries once to open the store (bounded by `limit`) and, when it
    /// opens, starts the delivery workers. The sidecar calls this before it
    /// reports ready, so a store that can be opened serves from the first
    /// request.
    pub(crate) async fn open_once(
        &self,
        routes: &[Arc<Route>],
        upstream: &Arc<Upstream>,
        metrics: &Arc<Metrics>,
        limit: Duration,
    ) -> Result<(), String> {
        let opened = tokio::time::timeout(limit, Store::open(&self.config, metrics.store.as_ref()))
            .await
            .map_err(|_| format!("opening took longer than {limit:?}"))
            .and_then(|r| r.map_err(|e| e.to_string()));
        match opened {
            Ok(store) => {
                if let Some(m) = &metrics.store {
                    m.up.set(1);
                }
                let deliveries = Deliveries::start(
                    store.clone(),
                    routes,
                    upstream.clone(),
                    metrics.clone(),
                    self.health.clone(),
                );
                let _ = self.store.set(store);
                let _ = self.deliveries.set(deliveries);
                Ok(())
            }
            Err(e) => {
                if let Some(m) = &metrics.store {
                    m.up.set(0);
                }
                Err(e)
            }
        }
    }

    /// Keeps trying to open the store every 2 s until it opens or `stop`
    /// (a store that could not be opened at start).
    pub(crate) async fn keep_opening(
        &self,
        routes: &[Arc<Route>],
        upstream: Arc<Upstream>,
        metrics: Arc<Metrics>,
        stop: CancellationToken,
    ) {
        let limit = self.timeout.max(Duration::from_secs(5));
        let mut failures = 1u32;
        loop {
            tokio::select! {
                () = tokio::time::sleep(Duration::from_secs(2)) => {}
                () = stop.cancelled() => return,
            }
            match self.open_once(routes, &upstream, &metrics, limit).await {
                Ok(()) => {
                    tracing::info!(
                        engine = self.config.engine.as_str(),
                        "the event store is open"
                    );
                    return;
                }
                Err(e) => {
                    // A line a minute while it stays closed.
                    if failures.is_multiple_of(30) {
                        tracing::error!(
                            engine = self.config.engine.as_str(),
                            error = %e,
                            "cannot open the event store; queued routes answer 503 until it opens"
                        );
                    }
                    failures += 1;
                }
            }
        }
    }

    /// Stops the delivery workers (see [`Deliveries::shutdown`]).
    pub(crate) async fn shutdown(&self, grace: Duration) {
        if let Some(d) = self.deliveries.get() {
            d.shutdown(grace).await;
        }
    }
}

/// How the latest ingests went, for `hookgate_store_up`: a store that
/// answers small writes can still refuse events (a full disk refuses a
/// 60 KiB body and takes the probe's one row).
#[derive(Debug, Default)]
pub(crate) struct IngestHealth {
    /// Unix ms of the latest failed ingest (0: none).
    failed_at: std::sync::atomic::AtomicI64,
    /// Unix ms of the latest successful ingest.
    ok_at: std::sync::atomic::AtomicI64,
}

/// How long a failed ingest keeps `hookgate_store_up` at 0 when no ingest
/// succeeds after it (with no traffic, nothing tells otherwise).
const FAILED_INGEST_HOLD: Millis = 60_000;

impl IngestHealth {
    /// Records an ingest's result.
    pub(crate) fn record(&self, ok: bool) {
        let at = if ok { &self.ok_at } else { &self.failed_at };
        at.store(now_ms(), std::sync::atomic::Ordering::Relaxed);
    }

    /// Whether the latest ingests say the store takes events.
    fn taking(&self, now: Millis) -> bool {
        let failed = self.failed_at.load(std::sync::atomic::Ordering::Relaxed);
        let ok = self.ok_at.load(std::sync::atomic::Ordering::Relaxed);
        failed == 0 || ok >= failed || now - failed > FAILED_INGEST_HOLD
    }
}

/// The running delivery side of a sidecar with a store.
#[derive(Debug)]
pub(crate) struct Deliveries {
    /// Wakes a route's worker (an ingest just stored an event).
    wake: HashMap<Arc<str>, Arc<Notify>>,
    stop: CancellationToken,
    attempts: TaskTracker,
    background: TaskTracker,
}

impl Deliveries {
    /// Starts a worker for every queued route, the gauges and the purges.
    pub(crate) fn start(
        store: Store,
        routes: &[Arc<Route>],
        upstream: Arc<Upstream>,
        metrics: Arc<Metrics>,
        health: Arc<IngestHealth>,
    ) -> Self {
        let stop = CancellationToken::new();
        let attempts = TaskTracker::new();
        let background = TaskTracker::new();
        let mut wake = HashMap::new();
        let queued: Vec<Arc<Route>> = routes
            .iter()
            .filter(|r| r.queue.is_some())
            .cloned()
            .collect();
        for route in &queued {
            let notify = Arc::new(Notify::new());
            wake.insert(route.name.clone(), notify.clone());
            background.spawn(work(
                Worker {
                    store: store.clone(),
                    route: route.clone(),
                    upstream: upstream.clone(),
                    metrics: metrics.clone(),
                    attempts: attempts.clone(),
                },
                notify,
                stop.clone(),
            ));
        }
        background.spawn(gauges(store.clone(), metrics.clone(), health, stop.clone()));
        let retention: Vec<Retention> = queued
            .iter()
            .filter_map(|r| {
                let q = r.queue.as_ref()?;
                Some(Retention {
                    route: r.name.to_string(),
                    delivered: millis(q.retention_delivered),
                    dead: millis(q.retention_dead),
                })
            })
            .collect();
        background.spawn(purges(store, retention, stop.clone()));
        Self {
            wake,
            stop,
            attempts,
            background,
        }
    }

    /// Tells `route`'s worker that an event was stored.
    pub(crate) fn wake(&self, route: &str) {
        if let Some(n) = self.wake.get(route) {
            n.notify_one();
        }
    }

    /// Stops taking events and gives running attempts `grace` to finish;
    /// the rest stays stored (their leases run out) for the next start.
    pub(crate) async fn shutdown(&self, grace: Duration) {
        self.stop.cancel();
        self.background.close();
        self.background.wait().await;
        self.attempts.close();
        let running = self.attempts.len();
        if tokio::time::timeout(grace, self.attempts.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                running = self.attempts.len(),
                "shutdown_grace elapsed with delivery attempts running; they stay stored and are retried after their lease"
            );
        } else if running > 0 {
            tracing::info!(finished = running, "delivery attempts finished");
        }
    }
}

struct Worker {
    store: Store,
    route: Arc<Route>,
    upstream: Arc<Upstream>,
    metrics: Arc<Metrics>,
    attempts: TaskTracker,
}

/// A route's worker. `slots` bound the events leased and not yet done with
/// the app: `delivery_concurrency` running plus, when the store leases
/// ahead ([`Store::lease_ahead_rounds`]), that many rounds of as many
/// waiting for a permit. Leasing ahead, the worker leases once at least
/// half the slots are free, as many events as there are free slots, so a
/// lease takes several events even when permits come back one at a time
/// (with a fast app, a store round trip per event was most of delivery's
/// cost on SQLite). An event waiting for a permit waits at most that many
/// exchanges (each bounded by `upstream.timeout`), so its lease lasts that
/// much longer; it starts only while `upstream.timeout` + 5 s of it remain
/// (else it is given back, as are the waiting events when the worker
/// stops). Without leasing ahead, a lease takes the free permits' worth as
/// soon as one is free, for `upstream.timeout` + 10 s.
async fn work(w: Worker, wake: Arc<Notify>, stop: CancellationToken) {
    let Some(q) = w.route.queue.clone() else {
        return;
    };
    let concurrency = q.concurrency;
    let permits = Arc::new(Semaphore::new(concurrency));
    let rounds = w.store.lease_ahead_rounds();
    let total = concurrency * (rounds + 1);
    let slots = Arc::new(Semaphore::new(total));
    let at_once = if rounds == 0 { 1 } else { total.div_ceil(2) };
    let at_once = u32::try_from(at_once).unwrap_or(1);
    let lease_for = millis(w.upstream.timeout() * (rounds as u32 + 1) + LEASE_MARGIN);
    let w = Arc::new(w);
    loop {
        let mut free = tokio::select! {
            p = slots.clone().acquire_many_owned(at_once) => {
                match p { Ok(p) => p, Err(_) => return }
            }
            () = stop.cancelled() => return,
        };
        while let Ok(p) = slots.clone().try_acquire_owned() {
            free.merge(p);
        }
        let now = now_ms();
        let limit = free.num_permits();
        let lease_until = now + lease_for;
        let wait = match w
            .store
            .lease(&w.route.name, now, lease_until, limit as u32)
            .await
        {
            Ok(leases) => {
                let full = leases.len() == limit;
                for lease in leases {
                    let Some(slot) = free.split(1) else { break };
                    let taken = Taken {
                        lease,
                        lease_until,
                        slot,
                    };
                    let (w, q, permits, stop) =
                        (w.clone(), q.clone(), permits.clone(), stop.clone());
                    w.attempts.clone().spawn(async move {
                        attempt(&w, &q, taken, &permits, &stop).await;
                    });
                }
                drop(free);
                if full {
                    continue;
                }
                match w.store.next_due(&w.route.name).await {
                    Ok(Some(at)) => {
                        Duration::from_millis(at.saturating_sub(now_ms()).max(0) as u64).min(POLL)
                    }
                    _ => POLL,
                }
            }
            Err(e) => {
                drop(free);
                tracing::warn!(route = %w.route.name, error = %e, "cannot take due events from the store");
                POLL
            }
        };
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = wake.notified() => {}
            () = stop.cancelled() => return,
        }
    }
}

/// A leased event, until its attempt is done with the app.
struct Taken {
    lease: Lease,
    /// When its lease runs out (Unix ms).
    lease_until: Millis,
    /// Its place among the worker's leased events.
    slot: OwnedSemaphorePermit,
}

/// One delivery attempt, settled in the store, once a permit is free. The
/// permit (and the event's slot) is given back once the app has answered,
/// before the settle: the next lease can then share a writer round with
/// this settle instead of waiting behind it (under full ingest every write
/// waits behind a group commit's fsync). An event whose worker stops, or
/// whose lease has less than `upstream.timeout` + 5 s left when a permit
/// comes, is given back untried instead.
async fn attempt(
    w: &Worker,
    q: &QueueSettings,
    taken: Taken,
    permits: &Arc<Semaphore>,
    stop: &CancellationToken,
) {
    let Taken {
        lease,
        lease_until,
        slot,
    } = taken;
    let permit = tokio::select! {
        biased;
        () = stop.cancelled() => None,
        p = permits.clone().acquire_owned() => p.ok(),
    };
    let why = match permit {
        None => "the worker stopped",
        Some(permit) => {
            if lease_until - now_ms() >= millis(w.upstream.timeout() + START_MARGIN) {
                return attempt_now(w, q, lease, permit, slot).await;
            }
            drop(permit);
            "its lease ran too short while it waited for the app"
        }
    };
    drop(slot);
    give_back(w, &lease, why).await;
}

/// Gives a leased event back untried: pending and due as before, the
/// lease's attempt uncounted. If that fails, the lease runs out instead.
async fn give_back(w: &Worker, lease: &Lease, why: &'static str) {
    match w
        .store
        .settle(lease.id, lease.token, now_ms(), Settle::Untried)
        .await
    {
        Ok(_) => tracing::debug!(
            id = %lease.id,
            route = %w.route.name,
            why,
            "leased event given back untried"
        ),
        Err(e) => tracing::warn!(
            id = %lease.id,
            route = %w.route.name,
            why,
            error = %e,
            "cannot give back a leased event; it is taken again when its lease runs out"
        ),
    }
}

async fn attempt_now(
    w: &Worker,
    q: &QueueSettings,
    lease: Lease,
    permit: OwnedSemaphorePermit,
    slot: OwnedSemaphorePermit,
) {
    let Lease {
        id,
        received_at,
        body,
        headers,
        attempt,
        token,
        ..
    } = lease;
    let mut status = None;
    let settle = if policy::expired(q, received_at, now_ms()) {
        Settle::Dead {
            error: "older than max_delivery_age".to_owned(),
        }
    } else {
        let numbered = Attempt {
            id,
            number: attempt,
            received_at,
        };
        match UpstreamRequest::from_stored(&headers, body, numbered, &w.route, &w.upstream) {
            Err(e) => Settle::Dead {
                error: e.to_string(),
            },
            Ok(request) => {
                let result = match w.upstream.send(request).await {
                    Ok(answer) => {
                        status = Some(answer.status().as_u16());
                        Attempted::Answer(
                            answer.status(),
                            answer.headers().get(http::header::RETRY_AFTER).cloned(),
                        )
                    }
                    Err(e) => Attempted::Failed(e),
                };
                policy::decide(q, attempt, &result, now_ms(), fastrand::f64())
            }
        }
    };
    // The app is done with this event; its lease keeps it from being taken
    // again until the settle below has committed.
    drop(permit);
    drop(slot);
    let result = policy::label(&settle);
    let (next_attempt_at, error) = match &settle {
        Settle::Delivered => (None, None),
        Settle::Retry { at, error } => (Some(*at), Some(error.clone())),
        Settle::Dead { error } => (None, Some(error.clone())),
        Settle::Untried => (None, None),
    };
    match w.store.settle(id, token, now_ms(), settle).await {
        Ok(true) => {
            if let Some(m) = &w.metrics.store {
                m.delivery_attempts
                    .get_or_create(&AttemptLabels {
                        route: w.route.name.clone(),
                        result,
                    })
                    .inc();
            }
            let level_warn = result == "dead";
            macro_rules! line {
                ($level:expr) => {
                    tracing::event!(
                        $level,
                        id = %id,
                        route = %w.route.name,
                        attempt,
                        result,
                        status,
                        next_attempt_at,
                        error = error.as_deref(),
                        "delivery attempt"
                    )
                };
            }
            if level_warn {
                line!(tracing::Level::WARN);
            } else {
                line!(tracing::Level::INFO);
            }
        }
        Ok(false) => tracing::info!(
            id = %id,
            route = %w.route.name,
            attempt,
            "delivery attempt ended after its lease was lost (replayed, dropped or taken over); not recorded"
        ),
        Err(e) => tracing::warn!(
            id = %id,
            route = %w.route.name,
            attempt,
            error = %e,
            "cannot record a delivery attempt; the event is taken again when its lease runs out"
        ),
    }
}

/// Refreshes `hookgate_store_up` and the queue gauges, every second, or
/// less often when counting takes longer (see [`gauges_pause`]).
async fn gauges(
    store: Store,
    metrics: Arc<Metrics>,
    health: Arc<IngestHealth>,
    stop: CancellationToken,
) {
    let Some(m) = &metrics.store else { return };
    loop {
        let started = Instant::now();
        let counting = refresh(&store, m, &health).await;
        tokio::select! {
            () = tokio::time::sleep(gauges_pause(started.elapsed(), counting)) => {}
            () = stop.cancelled() => return,
        }
    }
}

/// The pause after a refresh of the gauges that took `took`, of which
/// `counting` for the count: the rest of [`GAUGES_EVERY`], and at least
/// 19 × `counting`, so that counting takes at most a twentieth of the
/// time. The count covers every stored event, the delivered ones kept for
/// `retention_delivered` included, so it grows with the store (on
/// PostgreSQL, from the partial indexes: 46 ms at 400,000 delivered
/// events; 130–310 ms at 100,000 when it read the table): every second, it
/// would take a growing share of the database.
fn gauges_pause(took: Duration, counting: Duration) -> Duration {
    GAUGES_EVERY.saturating_sub(took).max(counting * 19)
}

/// The key of the store's write probe (one row, rewritten every second).
const PROBE_KEY: [u8; 32] = *b"hookgate store write probe 00000";

/// Returns how long the count took (`hookgate_store_stats_seconds`; the
/// probe's write is not part of it).
async fn refresh(store: &Store, m: &StoreMetrics, health: &IngestHealth) -> Duration {
    // A store that reads but cannot write (a full disk, a read-only
    // replica) is down for ingest: probe with a one-row write that expires
    // at once (purged with the other expired keys).
    let now = now_ms();
    let probe = store.remember(&PROBE_KEY, "-", now).await;
    let counting = Instant::now();
    let stats = store.stats().await;
    let took = counting.elapsed();
    m.stats_seconds.set(took.as_secs_f64());
    match stats.and_then(|stats| probe.map(|()| stats)) {
        Ok(stats) => {
            m.up.set(i64::from(health.taking(now)));
            let now = now_ms();
            for s in stats {
                let route: Arc<str> = s.route.into();
                for (state, n) in [
                    (State::Pending, s.pending),
                    (State::Delivered, s.delivered),
                    (State::Dead, s.dead),
                ] {
                    m.queue_events
                        .get_or_create(&QueueLabels {
                            route: route.clone(),
                            state: state.as_str(),
                        })
                        .set(i64::try_from(n).unwrap_or(i64::MAX));
                }
                let age = s
                    .oldest_pending_received_at
                    .map_or(0.0, |t| (now - t).max(0) as f64 / 1000.0);
                m.oldest_pending_age
                    .get_or_create(&RouteLabels { route })
                    .set(age);
            }
        }
        Err(e) => {
            if m.up.get() != 0 {
                tracing::warn!(error = %e, "the event store does not answer");
            }
            m.up.set(0);
        }
    }
    took
}

/// Deletes delivered and dead events past their retention, and expired
/// dedup keys.
async fn purges(store: Store, retention: Vec<Retention>, stop: CancellationToken) {
    let mut tick = tokio::time::interval(PURGE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = stop.cancelled() => return,
        }
        let started = Instant::now();
        let pace = PurgePace::new(PURGE_PACE, PURGE_EVERY / 2);
        // SIGTERM does not wait for a paced purge (tens of seconds under
        // load): a chunk already with the store finishes on its own, and
        // what is left is deleted by the next process's first purge.
        let outcome = tokio::select! {
            outcome = store.purge(now_ms(), &retention, pace.clone()) => outcome,
            () = stop.cancelled() => return,
        };
        match outcome {
            Ok(0) => {}
            Ok(n) => tracing::info!(
                deleted = n,
                elapsed_ms = started.elapsed().as_millis() as u64,
                paced_ms = pace.waited().as_millis() as u64,
                "retention purge"
            ),
            Err(e) => tracing::warn!(error = %e, "retention purge failed; retried in a minute"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A quick count keeps the one-second rhythm; a slow one is repeated
    /// only after 19 times its own length.
    #[test]
    fn slow_counts_are_refreshed_less_often() {
        let ms = Duration::from_millis;
        let pause = |t| gauges_pause(t, t);
        assert_eq!(pause(ms(0)), ms(1000));
        assert_eq!(pause(ms(10)), ms(990));
        assert_eq!(pause(ms(50)), ms(950));
        assert_eq!(pause(ms(100)), ms(1900));
        assert_eq!(pause(ms(150)), ms(2850));
        assert_eq!(pause(Duration::from_secs(3)), Duration::from_secs(57));
        // The probe's write counts toward the second, not toward the bound.
        assert_eq!(gauges_pause(ms(40), ms(10)), ms(960));
        assert_eq!(gauges_pause(ms(400), ms(100)), ms(1900));
    }
}
