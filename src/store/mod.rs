//! The event store behind queued delivery and store-backed deduplication.
//!
//! One model, two engines: [`sqlite`] (embedded, the default) and
//! [`postgres`] (shared by several replicas). Both implement [`Engine`];
//! the rest of hookgate holds a [`Store`], which dispatches to the engine
//! the config names. The shared conformance suite (`suite.rs`, tests only)
//! runs against both engines, so they keep the same semantics.
//!
//! The model (SPEC "Queued delivery", "Duplicates", "`hookgate events`"):
//!
//! - `events`: one row per stored event: UUIDv7 id, route, event name,
//!   state (`pending` | `delivered` | `dead`), attempts, `received_at`,
//!   `next_attempt_at`, the lease (`lease_until`, `lease_token`),
//!   `last_error`, `updated_at`, the exact body and the stored headers.
//! - `dedup_keys`: SHA-256 key → route, expiry. Separate from `events`, so a
//!   dropped or purged event keeps its key for the dedup window.
//! - a schema version, migrated at open (versioned, idempotent).
//!
//! Times are Unix milliseconds ([`Millis`]) everywhere: both engines store
//! them as 64-bit integers, and tests pass `now` explicitly.
//!
//! Nothing here ever logs a body, a header value or an email: errors carry
//! the engine's message and the operation, never the data.

pub(crate) mod batch;
pub(crate) mod postgres;
pub(crate) mod sqlite;
#[cfg(test)]
mod suite;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use prometheus_client::metrics::histogram::Histogram;
use uuid::Uuid;

use self::batch::Batcher;
use self::postgres::PgStore;
use self::sqlite::SqliteStore;

/// Unix time in milliseconds.
pub(crate) type Millis = i64;

/// Now, in Unix milliseconds.
pub(crate) fn now_ms() -> Millis {
    (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as Millis
}

/// A dedup key: SHA-256 over the route name, one zero byte, the raw body.
pub(crate) type Key = [u8; 32];

/// Where an event is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum State {
    /// Waiting for (or under) a delivery attempt.
    Pending,
    /// The app answered 2xx.
    Delivered,
    /// The app refused it, or it grew older than `max_delivery_age`.
    Dead,
}

impl State {
    /// The name used in the schema, the CLI and the metrics.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Delivered => "delivered",
            Self::Dead => "dead",
        }
    }

    /// Parses [`State::as_str`]'s output.
    pub(crate) fn parse(s: &str) -> Option<Self> {
        match s {
            "pending" => Some(Self::Pending),
            "delivered" => Some(Self::Delivered),
            "dead" => Some(Self::Dead),
            _ => None,
        }
    }

    /// All states, in display order.
    pub(crate) const ALL: [State; 3] = [Self::Pending, Self::Delivered, Self::Dead];
}

/// The dedup key an ingest claims, and until when.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct DedupClaim {
    /// SHA-256 over route, NUL, body.
    pub(crate) key: Key,
    /// Remembered until then (Unix ms).
    pub(crate) expires_at: Millis,
}

/// An event to store (queued delivery's ingest).
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct NewEvent {
    /// A UUIDv7, made by the caller.
    pub(crate) id: Uuid,
    /// The route's name.
    pub(crate) route: String,
    /// The event name (`popup.converted`, or an unknown one forwarded).
    pub(crate) event: String,
    /// When hookgate received it.
    pub(crate) received_at: Millis,
    /// The exact bytes the provider sent.
    pub(crate) body: Bytes,
    /// The normalized headers for the app, encoded by the caller (opaque
    /// to the store).
    pub(crate) headers: Bytes,
    /// Claim this key in the same transaction; if it is already claimed
    /// and not expired, store nothing and answer [`Ingested::Duplicate`].
    pub(crate) dedup: Option<DedupClaim>,
}

impl std::fmt::Debug for NewEvent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewEvent")
            .field("id", &self.id)
            .field("route", &self.route)
            .field("event", &self.event)
            .field("body_len", &self.body.len())
            .finish_non_exhaustive()
    }
}

/// What became of one [`NewEvent`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ingested {
    /// Committed and flushed to stable storage.
    Stored,
    /// Its dedup key was already claimed and not expired: nothing stored.
    Duplicate,
}

/// One stored event without its body (what `events list` shows).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub(crate) struct Record {
    /// UUIDv7.
    pub(crate) id: Uuid,
    /// The route's name.
    pub(crate) route: String,
    /// The event name.
    pub(crate) event: String,
    /// Pending (also while under lease), delivered or dead.
    pub(crate) state: State,
    /// Attempts made so far (a lease counts as one).
    pub(crate) attempts: u32,
    /// When hookgate received it (Unix ms).
    pub(crate) received_at: Millis,
    /// When the next attempt is due (pending only).
    pub(crate) next_attempt_at: Option<Millis>,
    /// Why the last attempt failed (status, or transport error kind); never
    /// a body.
    pub(crate) last_error: Option<String>,
    /// Last change of state (Unix ms).
    pub(crate) updated_at: Millis,
}

/// An event taken for one delivery attempt.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Lease {
    /// UUIDv7.
    pub(crate) id: Uuid,
    /// The route's name.
    pub(crate) route: String,
    /// The event name.
    pub(crate) event: String,
    /// When hookgate received it (Unix ms).
    pub(crate) received_at: Millis,
    /// The exact stored bytes.
    pub(crate) body: Bytes,
    /// The stored headers, as given at ingest.
    pub(crate) headers: Bytes,
    /// This attempt's number, from 1 (attempts after the lease).
    pub(crate) attempt: u32,
    /// Proves the lease is still this worker's when it settles.
    pub(crate) token: i64,
}

impl std::fmt::Debug for Lease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lease")
            .field("id", &self.id)
            .field("route", &self.route)
            .field("attempt", &self.attempt)
            .finish_non_exhaustive()
    }
}

/// How a leased attempt ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Settle {
    /// The app answered 2xx: delivered, no next attempt, `last_error`
    /// cleared.
    Delivered,
    /// Try again at `at` (Unix ms): stays pending, due at `at`,
    /// `last_error` = `error`.
    Retry {
        /// When.
        at: Millis,
        /// Why this attempt failed.
        error: String,
    },
    /// Never again (unless replayed): dead, no next attempt, `last_error`
    /// = `error`.
    Dead {
        /// Why.
        error: String,
    },
    /// The attempt was never made (an event leased ahead and given back:
    /// the worker stopped, or its lease ran too short to start): stays
    /// pending and due as it was, the lease's attempt uncounted.
    Untried,
}

/// Which events a list, replay or drop applies to. All set fields must match.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Filter {
    /// Only this route.
    pub(crate) route: Option<String>,
    /// Only this state.
    pub(crate) state: Option<State>,
    /// `received_at >= since`.
    pub(crate) since: Option<Millis>,
    /// `received_at < until`.
    pub(crate) until: Option<Millis>,
    /// At most this many (list only; newest first).
    pub(crate) limit: Option<u32>,
}

/// What a replay of one id did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Replayed {
    /// Back to pending, attempts 0, due now; the record after the change.
    Done(Record),
    /// No such id.
    NotFound,
    /// Delivered already, and `force` was not given: unchanged.
    Delivered(Record),
}

/// Retention for one route: delete delivered events `delivered` ms after
/// their last change, dead ones `dead` ms after.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Retention {
    /// The route's name.
    pub(crate) route: String,
    /// ms.
    pub(crate) delivered: Millis,
    /// ms.
    pub(crate) dead: Millis,
}

/// How a purge spreads its chunks over time. After each chunk it waits
/// `ratio` times that chunk's own time, so it takes about `1 / (1 + ratio)`
/// of the store's writer (SQLite) or of a connection (PostgreSQL) and of
/// the core, instead of all of it for seconds: a minute's delivered events
/// and keys deleted back to back at 2,500 requests/s took 6.6–8 s and held
/// every answer for up to 1.6 s (`benches/RESULTS.md`, fourteenth round).
/// Once a pass has run `budget`, it stops waiting: a purge that cannot keep
/// up must not let the store grow without bound.
#[derive(Debug, Clone)]
pub(crate) struct PurgePace {
    ratio: u32,
    budget: Duration,
    started: Instant,
    /// Nanoseconds waited so far, shared by the clones (for the log line
    /// and the tests).
    waited: Arc<AtomicU64>,
}

impl PurgePace {
    /// A pass that started now.
    pub(crate) fn new(ratio: u32, budget: Duration) -> Self {
        Self {
            ratio,
            budget,
            started: Instant::now(),
            waited: Arc::default(),
        }
    }

    /// How long this pass (and its clones) has waited between chunks.
    pub(crate) fn waited(&self) -> Duration {
        Duration::from_nanos(self.waited.load(Ordering::Relaxed))
    }

    /// No waiting (tests, and a caller that wants the purge done now).
    pub(crate) fn flat_out() -> Self {
        Self::new(0, Duration::ZERO)
    }

    /// What to wait after a chunk that took `took`: nothing once the pass
    /// has run its budget.
    pub(crate) fn wait_after(&self, took: Duration) -> Duration {
        if self.started.elapsed() >= self.budget {
            return Duration::ZERO;
        }
        took * self.ratio
    }

    /// Waits [`PurgePace::wait_after`] a chunk that took `took`.
    pub(crate) async fn after_chunk(&self, took: Duration) {
        let wait = self.wait_after(took);
        if !wait.is_zero() {
            let nanos = u64::try_from(wait.as_nanos()).unwrap_or(u64::MAX);
            self.waited.fetch_add(nanos, Ordering::Relaxed);
            tokio::time::sleep(wait).await;
        }
    }
}

/// Counts for one route.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub(crate) struct RouteStats {
    /// The route's name.
    pub(crate) route: String,
    /// Pending events (including leased ones).
    pub(crate) pending: u64,
    /// Delivered events not yet purged.
    pub(crate) delivered: u64,
    /// Dead events not yet purged.
    pub(crate) dead: u64,
    /// `received_at` of the oldest pending event.
    pub(crate) oldest_pending_received_at: Option<Millis>,
}

/// Why a store operation failed. Never carries event data. `Clone`, so a
/// failed group commit can answer every caller in its batch.
#[derive(Debug, Clone, thiserror::Error)]
pub(crate) enum StoreError {
    /// The store could not be opened or migrated (path, permissions,
    /// connection, schema newer than this binary…).
    #[error("cannot open the store: {0}")]
    Open(String),
    /// The engine failed an operation (I/O, disk full, connection lost…).
    #[error("store {op} failed: {message}")]
    Backend {
        /// The operation (`ingest`, `lease`…).
        op: &'static str,
        /// The engine's message.
        message: String,
    },
    /// The store was closed (shutting down).
    #[error("the store is closed")]
    Closed,
}

/// One storage engine. Every method is atomic (one transaction; the SQLite
/// engine records settles that wait for its writer together, in one);
/// every write is durable (flushed to stable storage) when its future
/// returns `Ok`, except leases and settles, which an engine may commit
/// without a flush of their own: they become durable with its next
/// durable commit, and losing one only means an attempt is made again.
pub(crate) trait Engine: Send + Sync + 'static {
    /// Stores a batch in **one** transaction (group commit), claiming each
    /// event's dedup key atomically with its insert. The answer has one
    /// entry per event, in order. A key claimed twice within the batch: the
    /// first is stored, the second is a duplicate. An expired key
    /// (`expires_at <=` the event's `received_at`) is claimed anew. A stored
    /// event is pending, attempts 0, due and updated at its `received_at`.
    fn ingest(
        &self,
        batch: Vec<NewEvent>,
    ) -> impl Future<Output = Result<Vec<Ingested>, StoreError>> + Send;

    /// Whether `key` is claimed and not expired at `now` (direct routes
    /// with a store).
    fn seen(&self, key: &Key, now: Millis)
    -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Claims `key` for `route` until `expires_at` (overwrites an existing
    /// claim's expiry with the later of the two).
    fn remember(
        &self,
        key: &Key,
        route: &str,
        expires_at: Millis,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Takes up to `limit` due events of `route`: pending, `next_attempt_at
    /// <= now`, and not under a live lease (`lease_until` null or `<= now`).
    /// Each gets `attempts + 1`, a fresh `token` and `lease_until`. Across
    /// processes and replicas, one event is under at most one live lease.
    fn lease(
        &self,
        route: &str,
        now: Millis,
        lease_until: Millis,
        limit: u32,
    ) -> impl Future<Output = Result<Vec<Lease>, StoreError>> + Send;

    /// The earliest `next_attempt_at` (or `lease_until`, if later) among
    /// pending events of `route`, so a worker can sleep until then.
    fn next_due(
        &self,
        route: &str,
    ) -> impl Future<Output = Result<Option<Millis>, StoreError>> + Send;

    /// Ends the attempt `token` on `id`. `Ok(false)`: the lease was lost
    /// (expired and taken by another worker, replayed, or dropped):
    /// nothing changed. Clears the lease either way it succeeds, and sets
    /// `updated_at` to `now` (a lease that ran out but was not taken again
    /// still settles).
    fn settle(
        &self,
        id: Uuid,
        token: i64,
        now: Millis,
        how: Settle,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Events matching `filter`, newest first, never bodies.
    fn list(&self, filter: &Filter)
    -> impl Future<Output = Result<Vec<Record>, StoreError>> + Send;

    /// One event, with its body when `body` is set.
    fn get(
        &self,
        id: Uuid,
        body: bool,
    ) -> impl Future<Output = Result<Option<(Record, Option<Bytes>)>, StoreError>> + Send;

    /// Back to pending, attempts 0, due and updated at `now`, lease cleared
    /// (`last_error` kept until the next attempt). A delivered event only
    /// with `force`; a dead or pending one always.
    fn replay_ids(
        &self,
        ids: &[Uuid],
        force: bool,
        now: Millis,
    ) -> impl Future<Output = Result<Vec<Replayed>, StoreError>> + Send;

    /// [`Engine::replay_ids`] on every event matching `filter` (its `limit`
    /// ignored); returns how many.
    fn replay_matching(
        &self,
        filter: &Filter,
        force: bool,
        now: Millis,
    ) -> impl Future<Output = Result<u64, StoreError>> + Send;

    /// Deletes these events (their dedup keys stay). One entry per id: the
    /// record as it was, or `None` for an unknown id.
    fn drop_ids(
        &self,
        ids: &[Uuid],
    ) -> impl Future<Output = Result<Vec<Option<Record>>, StoreError>> + Send;

    /// Deletes every event matching `filter` (its `limit` ignored); returns
    /// how many.
    fn drop_matching(
        &self,
        filter: &Filter,
    ) -> impl Future<Output = Result<u64, StoreError>> + Send;

    /// Counts by route and state, every route that has events.
    fn stats(&self) -> impl Future<Output = Result<Vec<RouteStats>, StoreError>> + Send;

    /// Deletes delivered/dead events past their route's retention (events
    /// of routes not listed are kept) and dedup keys past their expiry.
    /// Returns how many rows went. On Postgres one replica at a time. May
    /// take several short transactions (each deletion stands on its own),
    /// so ingest does not wait behind a long purge; `pace` spaces them.
    fn purge(
        &self,
        now: Millis,
        retention: &[Retention],
        pace: PurgePace,
    ) -> impl Future<Output = Result<u64, StoreError>> + Send;

    /// A cheap round trip, for `hookgate_store_up`.
    fn ping(&self) -> impl Future<Output = Result<(), StoreError>> + Send;
}

/// The store the rest of hookgate holds: the engine the config names, with
/// group commit ([`Batcher`]) in front of its ingest. Cheap to clone: every
/// variant holds its engine behind an `Arc`, so clones share it.
#[derive(Debug, Clone)]
pub(crate) enum Store {
    /// The embedded engine.
    Sqlite(Batcher<SqliteStore>),
    /// The shared engine: several replicas on one PostgreSQL schema.
    Postgres(Batcher<PgStore>),
}

/// Evaluates `$call` with `$b` bound to the [`Batcher`] of whichever engine
/// `$store` holds. A new engine adds its arm here and in
/// [`Store::engine_name`].
macro_rules! dispatch {
    ($store:expr, $b:ident => $call:expr) => {
        match $store {
            Store::Sqlite($b) => $call,
            Store::Postgres($b) => $call,
        }
    };
}

/// Inherent async methods with [`Engine`]'s signatures, each calling the
/// engine's method of the same name.
macro_rules! forward {
    ($($(#[$doc:meta])* fn $name:ident(&self $(, $arg:ident: $ty:ty)*) -> $ret:ty;)*) => {
        $(
            $(#[$doc])*
            pub(crate) async fn $name(&self $(, $arg: $ty)*) -> Result<$ret, StoreError> {
                dispatch!(self, b => b.engine().$name($($arg),*).await)
            }
        )*
    };
}

impl Store {
    /// The embedded engine behind group commit, observing each commit's
    /// duration (`hookgate_store_commit_seconds`) and size
    /// (`hookgate_store_batch_size`) when given the histograms.
    pub(crate) fn sqlite(
        engine: SqliteStore,
        commit_seconds: Option<Histogram>,
        batch_size: Option<Histogram>,
    ) -> Self {
        Self::Sqlite(Batcher::new(
            engine,
            batch::DEFAULT_MAX_BATCH,
            commit_seconds,
            batch_size,
        ))
    }

    /// Opens (and migrates) the store `config` names. `metrics`: the
    /// sidecar's store metrics (the CLI passes none).
    pub(crate) async fn open(
        config: &crate::config::StoreConfig,
        metrics: Option<&crate::observe::metrics::StoreMetrics>,
    ) -> Result<Self, StoreError> {
        let commit = metrics.map(|m| m.commit_seconds.clone());
        let sizes = metrics.map(|m| m.batch_size.clone());
        let settles = metrics.map(|m| m.settle_batch_size.clone());
        match config.engine {
            crate::config::StoreEngine::Sqlite => Ok(Self::sqlite(
                sqlite::open(&config.path).await?.observe_settles(settles),
                commit,
                sizes,
            )),
            crate::config::StoreEngine::Postgres => {
                let url = match (&config.url, &config.url_file) {
                    (Some(url), _) => postgres::SecretUrl::new(url.clone()),
                    (None, Some(file)) => postgres::SecretUrl::from_file(file)?,
                    (None, None) => {
                        return Err(StoreError::Open(
                            "store.url_file (or HOOKGATE_STORE__URL) is required".to_owned(),
                        ));
                    }
                };
                let mut opts = postgres::PgOptions::new(url);
                opts.tls = match config.tls {
                    crate::config::PgTlsMode::Disable => postgres::PgTls::Disable,
                    crate::config::PgTlsMode::Require => postgres::PgTls::Require,
                    crate::config::PgTlsMode::VerifyFull => postgres::PgTls::VerifyFull,
                };
                opts.ca_file.clone_from(&config.ca_file);
                opts.schema.clone_from(&config.schema);
                opts.max_connections = config.max_connections;
                Ok(Self::postgres(
                    postgres::PgStore::connect(opts).await?,
                    commit,
                    sizes,
                ))
            }
        }
    }

    /// The PostgreSQL engine behind group commit, with the same histograms
    /// as [`Store::sqlite`].
    pub(crate) fn postgres(
        engine: PgStore,
        commit_seconds: Option<Histogram>,
        batch_size: Option<Histogram>,
    ) -> Self {
        Self::Postgres(Batcher::new(
            engine,
            batch::DEFAULT_MAX_BATCH,
            commit_seconds,
            batch_size,
        ))
    }

    /// The engine's name as the config spells it (`store.engine`).
    pub(crate) fn engine_name(&self) -> &'static str {
        match self {
            Self::Sqlite(_) => "sqlite",
            Self::Postgres(_) => "postgres",
        }
    }

    /// How many rounds of `delivery_concurrency` events a delivery worker
    /// leases ahead of its running attempts. SQLite: 3 (one writer round
    /// trip then serves 8–16 events; delivery on its own +55 %). PostgreSQL:
    /// none, as before: leased ahead, its events' settles (one round trip
    /// and one transaction each) crowded the pool and the database's core,
    /// and ingest bursts fell from 8,185 to 3,698 events/s
    /// (`benches/RESULTS.md`, thirteenth round).
    pub(crate) fn lease_ahead_rounds(&self) -> usize {
        match self {
            Self::Sqlite(_) => 3,
            Self::Postgres(_) => 0,
        }
    }

    /// Stores one event in the next group commit; answers once that commit
    /// is durable (see [`Batcher::ingest`]).
    pub(crate) async fn ingest_one(&self, event: NewEvent) -> Result<Ingested, StoreError> {
        dispatch!(self, b => b.ingest(event).await)
    }

    forward! {
        /// [`Engine::ingest`]: a batch in one transaction of its own (no
        /// group commit).
        fn ingest(&self, batch: Vec<NewEvent>) -> Vec<Ingested>;
        /// [`Engine::seen`].
        fn seen(&self, key: &Key, now: Millis) -> bool;
        /// [`Engine::remember`].
        fn remember(&self, key: &Key, route: &str, expires_at: Millis) -> ();
        /// [`Engine::lease`].
        fn lease(&self, route: &str, now: Millis, lease_until: Millis, limit: u32) -> Vec<Lease>;
        /// [`Engine::next_due`].
        fn next_due(&self, route: &str) -> Option<Millis>;
        /// [`Engine::settle`].
        fn settle(&self, id: Uuid, token: i64, now: Millis, how: Settle) -> bool;
        /// [`Engine::list`].
        fn list(&self, filter: &Filter) -> Vec<Record>;
        /// [`Engine::get`].
        fn get(&self, id: Uuid, body: bool) -> Option<(Record, Option<Bytes>)>;
        /// [`Engine::replay_ids`].
        fn replay_ids(&self, ids: &[Uuid], force: bool, now: Millis) -> Vec<Replayed>;
        /// [`Engine::replay_matching`].
        fn replay_matching(&self, filter: &Filter, force: bool, now: Millis) -> u64;
        /// [`Engine::drop_ids`].
        fn drop_ids(&self, ids: &[Uuid]) -> Vec<Option<Record>>;
        /// [`Engine::drop_matching`].
        fn drop_matching(&self, filter: &Filter) -> u64;
        /// [`Engine::stats`].
        fn stats(&self) -> Vec<RouteStats>;
        /// [`Engine::purge`].
        fn purge(&self, now: Millis, retention: &[Retention], pace: PurgePace) -> u64;
        /// [`Engine::ping`].
        fn ping(&self) -> ();
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::PurgePace;

    /// Within its budget a pass waits `ratio` times each chunk's time;
    /// past it, and when flat out, not at all.
    #[test]
    fn purge_pace_waits_ratio_times_a_chunk_within_its_budget() {
        let chunk = Duration::from_millis(8);
        let paced = PurgePace::new(3, Duration::from_secs(3600));
        assert_eq!(paced.wait_after(chunk), Duration::from_millis(24));
        let spent = PurgePace::new(3, Duration::ZERO);
        assert_eq!(spent.wait_after(chunk), Duration::ZERO);
        assert_eq!(PurgePace::flat_out().wait_after(chunk), Duration::ZERO);
    }
}
