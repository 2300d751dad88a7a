//! The embedded engine: one SQLite file, shared by the sidecar and the
//! `hookgate events` CLI running beside it.
//!
//! - **Durable at commit**: WAL with `synchronous = FULL`, so every commit
//!   fsyncs the WAL before it returns; a crash or power cut after an `Ok`
//!   loses nothing.
//! - **Several processes**: every write is a `BEGIN IMMEDIATE` transaction
//!   (the write lock is taken first, so a lease sees no stale snapshot and
//!   two processes never lease the same event), and each connection waits
//!   up to [`BUSY_TIMEOUT`] for another process's write before failing with
//!   "database is locked".
//! - **Off the async runtime**: each [`SqliteStore`] owns two threads, each
//!   with its own connection: the writer runs every write in order (so the
//!   process's writes are serialized without a lock), the reader runs
//!   `get`, `list`, `stats`, `seen` and `next_due` beside it (WAL lets
//!   readers and one writer work at once). Async callers hand them jobs and
//!   await a oneshot. Dropping the store ends both threads and closes the
//!   connections. Settles that wait for the writer are recorded together,
//!   in one transaction per writer round (ingest has its own group commit
//!   in front of every engine, `super::batch`).
//! - **Versioned schema**: `PRAGMA user_version` holds the file's schema
//!   version and `PRAGMA application_id` marks the file as hookgate's; opening
//!   migrates step by step inside one transaction (idempotent, and safe when
//!   two processes open at once) and refuses a file from a newer hookgate or
//!   from another program.
//!
//! Errors never carry event data: SQLite's messages name tables and
//! constraints, not values, and every value is a bound parameter.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, mpsc};
use std::time::{Duration, Instant};

use bytes::Bytes;
use prometheus_client::metrics::histogram::Histogram;
use rusqlite::config::DbConfig;
use rusqlite::types::{FromSql, FromSqlError, FromSqlResult, ToSqlOutput, Value, ValueRef};
use rusqlite::{
    Connection, OpenFlags, OptionalExtension, Row, ToSql, Transaction, TransactionBehavior, params,
    params_from_iter,
};
use tokio::sync::oneshot;
use uuid::Uuid;

use super::{
    Engine, Filter, Ingested, Key, Lease, Millis, NewEvent, PurgePace, Record, Replayed, Retention,
    RouteStats, Settle, State, StoreError,
};

/// The schema version this binary writes (`PRAGMA user_version`).
const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// Marks the file as hookgate's (`PRAGMA application_id`): "hkgt".
const APPLICATION_ID: i64 = 0x686b_6774;

/// How long a connection waits for another process's write lock (the CLI
/// replaying many events, say) before the operation fails. Longer than the
/// default `store.timeout`, so the caller's timeout decides.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// The WAL is truncated back to this size after a checkpoint, so a burst
/// does not leave a large file behind.
const JOURNAL_SIZE_LIMIT: i64 = 64 * 1024 * 1024;

/// Rows one purge transaction deletes at most: writes queued behind a purge
/// wait for one chunk, not for the whole purge. 1,000 made ingests wait up
/// to ~250 ms behind a chunk in the soak (benches/RESULTS.md, "Soak");
/// 200 keeps that wait near one ordinary commit.
const PURGE_CHUNK: u64 = 200;

/// `MIGRATIONS[n]` takes the schema from version `n` to `n + 1`. Append
/// only; never edit a step that has shipped.
const MIGRATIONS: &[&str] = &[
    // 1: events (the body and headers last, so reading a record's other
    // columns never touches the blobs' overflow pages) and dedup keys.
    "CREATE TABLE IF NOT EXISTS events (
        id              BLOB    NOT NULL PRIMARY KEY,
        route           TEXT    NOT NULL,
        event           TEXT    NOT NULL,
        state           TEXT    NOT NULL CHECK (state IN ('pending', 'delivered', 'dead')),
        attempts        INTEGER NOT NULL DEFAULT 0,
        received_at     INTEGER NOT NULL,
        next_attempt_at INTEGER,
        lease_until     INTEGER,
        lease_token     INTEGER,
        last_error      TEXT,
        updated_at      INTEGER NOT NULL,
        body            BLOB    NOT NULL,
        headers         BLOB    NOT NULL
     ) STRICT;
     -- lease and next_due: the due pending events of a route
     CREATE INDEX IF NOT EXISTS events_due
        ON events (route, next_attempt_at) WHERE state = 'pending';
     -- purge (settled events of a route by last change) and stats (counts)
     CREATE INDEX IF NOT EXISTS events_settled ON events (route, state, updated_at);
     -- list, replay and drop by time, newest first
     CREATE INDEX IF NOT EXISTS events_received ON events (received_at);
     CREATE TABLE IF NOT EXISTS dedup_keys (
        key        BLOB    NOT NULL PRIMARY KEY,
        route      TEXT    NOT NULL,
        expires_at INTEGER NOT NULL
     ) STRICT, WITHOUT ROWID;
     CREATE INDEX IF NOT EXISTS dedup_keys_expiry ON dedup_keys (expires_at);",
];

/// The columns of a [`Record`], in [`record`]'s order.
const RECORD: &str =
    "id, route, event, state, attempts, received_at, next_attempt_at, last_error, updated_at";

/// The embedded engine. Cheap to share by reference; see the module doc.
pub(crate) struct SqliteStore {
    writer: Worker,
    reader: Worker,
    path: PathBuf,
    /// Settles waiting for the writer; see [`SqliteStore::settle`].
    settles: Arc<Mutex<Vec<PendingSettle>>>,
    /// Settles per transaction that recorded them (one per writer round):
    /// `hookgate_store_settle_batch_size` when the sidecar gave it
    /// ([`SqliteStore::observe_settles`]), else the store's own.
    settle_batches: Histogram,
}

/// A settle waiting for the writer, and who waits for its answer.
struct PendingSettle {
    id: Uuid,
    token: i64,
    now: Millis,
    how: Settle,
    answer: oneshot::Sender<Result<bool, StoreError>>,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

/// Opens (creating the file if needed, never its directory) and migrates
/// the store at `path`. Every failure is [`StoreError::Open`] naming the
/// path.
pub(crate) async fn open(path: &Path) -> Result<SqliteStore, StoreError> {
    let writer = Worker::start("hookgate-store-writer", path, open_writer).await?;
    let reader = Worker::start("hookgate-store-reader", path, open_reader).await?;
    Ok(SqliteStore {
        writer,
        reader,
        path: path.to_owned(),
        settles: Arc::default(),
        settle_batches: crate::observe::metrics::batch_histogram(),
    })
}

impl SqliteStore {
    /// Observes the settles recorded per transaction in `histogram`
    /// (`hookgate_store_settle_batch_size`).
    pub(crate) fn observe_settles(mut self, histogram: Option<Histogram>) -> Self {
        if let Some(h) = histogram {
            self.settle_batches = h;
        }
        self
    }

    /// The file this store writes.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }
}

/// A unit of work for a store thread.
type Job = Box<dyn FnOnce(&mut Connection) + Send>;

/// One thread owning one connection, running jobs in the order they come.
struct Worker {
    jobs: mpsc::Sender<Job>,
}

impl Worker {
    /// Starts the thread, which opens its connection with `setup` and then
    /// serves jobs until the store is dropped. Answers once the connection
    /// is ready (or could not be opened).
    async fn start(
        name: &str,
        path: &Path,
        setup: fn(&Path) -> Result<Connection, StoreError>,
    ) -> Result<Self, StoreError> {
        let (jobs, queue) = mpsc::channel::<Job>();
        let (ready, opened) = oneshot::channel();
        let owned = path.to_owned();
        std::thread::Builder::new()
            .name(name.to_owned())
            .spawn(move || {
                let mut conn = match setup(&owned) {
                    Ok(conn) => {
                        let _ = ready.send(Ok(()));
                        conn
                    }
                    Err(e) => {
                        let _ = ready.send(Err(e));
                        return;
                    }
                };
                while let Ok(job) = queue.recv() {
                    job(&mut conn);
                }
            })
            .map_err(|e| {
                StoreError::Open(format!("{}: cannot start a thread: {e}", path.display()))
            })?;
        opened.await.map_err(|_| StoreError::Closed)??;
        Ok(Self { jobs })
    }

    /// Queues `job`, which answers its callers itself. Err if the thread
    /// is gone.
    fn submit(&self, job: Job) -> Result<(), StoreError> {
        self.jobs.send(job).map_err(|_| StoreError::Closed)
    }

    /// Runs `f` on this worker's connection and returns its answer. A
    /// panic inside `f` fails this call only; the thread goes on.
    async fn run<T: Send + 'static>(
        &self,
        op: &'static str,
        f: impl FnOnce(&mut Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T, StoreError> {
        let (answer, answered) = oneshot::channel();
        let job: Job = Box::new(move |conn| {
            let result = match catch_unwind(AssertUnwindSafe(|| f(conn))) {
                Ok(result) => result.map_err(|e| backend(op, &e)),
                Err(_) => Err(StoreError::Backend {
                    op,
                    message: "the store thread panicked".to_owned(),
                }),
            };
            let _ = answer.send(result);
        });
        self.jobs.send(job).map_err(|_| StoreError::Closed)?;
        answered.await.map_err(|_| StoreError::Closed)?
    }
}

/// The waiting settles; a panic while they were held leaves nothing half-done.
fn lock(settles: &Mutex<Vec<PendingSettle>>) -> MutexGuard<'_, Vec<PendingSettle>> {
    settles.lock().unwrap_or_else(PoisonError::into_inner)
}

/// An engine error as the contract wants it: the operation and SQLite's
/// message (which names tables and constraints, never values).
fn backend(op: &'static str, e: &rusqlite::Error) -> StoreError {
    StoreError::Backend {
        op,
        message: e.to_string(),
    }
}

/// The writer's connection: creates the file (owner-only: it holds
/// personal data), switches it to WAL, sets `synchronous = FULL` and
/// migrates the schema.
fn open_writer(path: &Path) -> Result<Connection, StoreError> {
    let failed = |e: rusqlite::Error| StoreError::Open(format!("{}: {e}", path.display()));
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty())
        && !dir.is_dir()
    {
        return Err(StoreError::Open(format!(
            "{}: the directory {} does not exist (hookgate creates the database file, not its directory)",
            path.display(),
            dir.display()
        )));
    }
    create_private(path)?;
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_CREATE
        | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let mut conn = Connection::open_with_flags(path, flags).map_err(failed)?;
    conn.busy_timeout(BUSY_TIMEOUT).map_err(failed)?;
    stable_plans(&conn).map_err(failed)?;
    let mode: String = conn
        .pragma_update_and_check(None, "journal_mode", "wal", |row| row.get(0))
        .map_err(failed)?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(StoreError::Open(format!(
            "{}: cannot use write-ahead logging (journal_mode stays {mode}); \
             the file must be on a local file system",
            path.display()
        )));
    }
    conn.pragma_update(None, "synchronous", "FULL")
        .map_err(failed)?;
    conn.pragma_update(None, "journal_size_limit", JOURNAL_SIZE_LIMIT)
        .map_err(failed)?;
    migrate(&mut conn, path)?;
    Ok(conn)
}

/// Creates an empty database file readable and writable by its owner only
/// (0600), unless it exists. SQLite treats an empty file as an empty
/// database, and gives the `-wal` and `-shm` files it creates the same
/// mode as the database file.
fn create_private(path: &Path) -> Result<(), StoreError> {
    use std::os::unix::fs::OpenOptionsExt;
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(StoreError::Open(format!(
            "{}: cannot create the database file: {e}",
            path.display()
        ))),
    }
}

/// The reader's connection: the file exists and is migrated by now; this
/// connection refuses writes.
fn open_reader(path: &Path) -> Result<Connection, StoreError> {
    let failed = |e: rusqlite::Error| StoreError::Open(format!("{}: {e}", path.display()));
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags).map_err(failed)?;
    conn.busy_timeout(BUSY_TIMEOUT).map_err(failed)?;
    stable_plans(&conn).map_err(failed)?;
    conn.pragma_update(None, "query_only", true)
        .map_err(failed)?;
    Ok(conn)
}

/// Plans each statement from its text alone (the query planner stability
/// guarantee). Without it SQLite marks a cached statement to be prepared
/// again whenever a parameter is bound that its plan looked at: the lease
/// (`LIMIT ?3`, and `route = ?1` beside the partial index) was parsed and
/// planned anew on every call, about 3 % of the process's CPU under queued
/// load. Every statement here names its state and index columns in its
/// text, so no plan needs a bound value.
fn stable_plans(conn: &Connection) -> rusqlite::Result<()> {
    conn.set_db_config(DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG, true)
        .map(drop)
}

/// Brings the schema to [`SCHEMA_VERSION`] in one `BEGIN IMMEDIATE`
/// transaction: a second process opening at the same time waits, then
/// finds nothing to do.
fn migrate(conn: &mut Connection, path: &Path) -> Result<(), StoreError> {
    let failed = |e: rusqlite::Error| StoreError::Open(format!("{}: {e}", path.display()));
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(failed)?;
    let app: i64 = tx
        .pragma_query_value(None, "application_id", |row| row.get(0))
        .map_err(failed)?;
    let version: i64 = tx
        .pragma_query_value(None, "user_version", |row| row.get(0))
        .map_err(failed)?;
    let tables: i64 = tx
        .query_row("SELECT count(*) FROM sqlite_schema", [], |row| row.get(0))
        .map_err(failed)?;
    let foreign = if app == 0 {
        version != 0 || tables != 0
    } else {
        app != APPLICATION_ID
    };
    if foreign {
        return Err(StoreError::Open(format!(
            "{}: not a hookgate store (another program's SQLite database); \
             point store.path at a new file",
            path.display()
        )));
    }
    let Ok(done) = usize::try_from(version) else {
        return Err(StoreError::Open(format!(
            "{}: schema version {version} is not one hookgate writes",
            path.display()
        )));
    };
    if version > SCHEMA_VERSION {
        return Err(StoreError::Open(format!(
            "{}: schema version {version} was written by a newer hookgate; \
             this one knows up to {SCHEMA_VERSION}: upgrade hookgate",
            path.display()
        )));
    }
    if version == SCHEMA_VERSION {
        return Ok(());
    }
    for (from, step) in MIGRATIONS.iter().enumerate().skip(done) {
        tx.execute_batch(step).map_err(|e| {
            StoreError::Open(format!(
                "{}: migrating the schema from version {from}: {e}",
                path.display()
            ))
        })?;
    }
    tx.pragma_update(None, "application_id", APPLICATION_ID)
        .map_err(failed)?;
    tx.pragma_update(None, "user_version", SCHEMA_VERSION)
        .map_err(failed)?;
    tx.commit().map_err(failed)
}

/// Runs `f` in a `BEGIN IMMEDIATE` transaction and commits it (rolled back
/// if `f` fails).
fn write<T>(
    conn: &mut Connection,
    f: impl FnOnce(&Transaction<'_>) -> rusqlite::Result<T>,
) -> rusqlite::Result<T> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let out = f(&tx)?;
    tx.commit()?;
    Ok(out)
}

/// Runs `f` with `synchronous = NORMAL`: its commit is not fsynced on its
/// own, and becomes durable with the next `FULL` commit (whose fsync of the
/// WAL file covers every frame before it) or checkpoint. Only for leases
/// and settles: losing one to a power cut means an attempt is made again,
/// which at-least-once delivery allows, and it spares delivery one fsync
/// per event on the single writer (`benches/queued/RESULTS.md`).
fn relaxed<T>(
    conn: &mut Connection,
    f: impl FnOnce(&mut Connection) -> rusqlite::Result<T>,
) -> rusqlite::Result<T> {
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    let out = f(conn);
    let restored = conn.pragma_update(None, "synchronous", "FULL");
    let out = out?;
    restored?;
    Ok(out)
}

impl ToSql for State {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::Borrowed(ValueRef::Text(
            self.as_str().as_bytes(),
        )))
    }
}

impl FromSql for State {
    fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
        State::parse(value.as_str()?).ok_or(FromSqlError::InvalidType)
    }
}

/// A [`Record`] from the [`RECORD`] columns.
fn record(row: &Row<'_>) -> rusqlite::Result<Record> {
    Ok(Record {
        id: row.get(0)?,
        route: row.get(1)?,
        event: row.get(2)?,
        state: row.get(3)?,
        attempts: row.get(4)?,
        received_at: row.get(5)?,
        next_attempt_at: row.get(6)?,
        last_error: row.get(7)?,
        updated_at: row.get(8)?,
    })
}

/// A blob column as [`Bytes`].
fn bytes(row: &Row<'_>, idx: usize) -> rusqlite::Result<Bytes> {
    Ok(Bytes::from(row.get::<_, Vec<u8>>(idx)?))
}

/// The `WHERE` clause of a filter (its `limit` aside) and its parameters.
fn matching(filter: &Filter) -> (String, Vec<Value>) {
    let mut sql = String::from(" WHERE 1 = 1");
    let mut args = Vec::new();
    if let Some(route) = &filter.route {
        sql.push_str(" AND route = ?");
        args.push(Value::Text(route.clone()));
    }
    if let Some(state) = filter.state {
        sql.push_str(" AND state = ?");
        args.push(Value::Text(state.as_str().to_owned()));
    }
    if let Some(since) = filter.since {
        sql.push_str(" AND received_at >= ?");
        args.push(Value::Integer(since));
    }
    if let Some(until) = filter.until {
        sql.push_str(" AND received_at < ?");
        args.push(Value::Integer(until));
    }
    (sql, args)
}

/// What a replay sets: pending, attempts 0, due and updated now, no lease.
const REPLAY: &str = "UPDATE events SET state = 'pending', attempts = 0, next_attempt_at = ?1, \
     lease_until = NULL, lease_token = NULL, updated_at = ?1";

fn ingest(conn: &mut Connection, batch: &[NewEvent]) -> rusqlite::Result<Vec<Ingested>> {
    write(conn, |tx| {
        // Claims the key unless it is held and not expired at receipt;
        // changes nothing (0 rows) when it is.
        let mut claim = tx.prepare_cached(
            "INSERT INTO dedup_keys (key, route, expires_at) VALUES (?1, ?2, ?3)
             ON CONFLICT (key) DO UPDATE
                SET route = excluded.route, expires_at = excluded.expires_at
                WHERE dedup_keys.expires_at <= ?4",
        )?;
        let mut insert = tx.prepare_cached(
            "INSERT INTO events (id, route, event, state, attempts, received_at,
                                 next_attempt_at, updated_at, body, headers)
             VALUES (?1, ?2, ?3, 'pending', 0, ?4, ?4, ?4, ?5, ?6)",
        )?;
        let mut out = Vec::with_capacity(batch.len());
        for ev in batch {
            if let Some(dedup) = &ev.dedup {
                let claimed = claim.execute(params![
                    &dedup.key[..],
                    ev.route,
                    dedup.expires_at,
                    ev.received_at
                ])?;
                if claimed == 0 {
                    out.push(Ingested::Duplicate);
                    continue;
                }
            }
            insert.execute(params![
                ev.id,
                ev.route,
                ev.event,
                ev.received_at,
                &ev.body[..],
                &ev.headers[..]
            ])?;
            out.push(Ingested::Stored);
        }
        Ok(out)
    })
}

/// The due events of a route, oldest due first.
const DUE: &str = "SELECT id FROM events
     WHERE route = ?1 AND state = 'pending' AND next_attempt_at <= ?2
       AND (lease_until IS NULL OR lease_until <= ?2)
     ORDER BY next_attempt_at LIMIT ?3";

fn lease(
    conn: &mut Connection,
    route: &str,
    now: Millis,
    lease_until: Millis,
    limit: u32,
) -> rusqlite::Result<Vec<Lease>> {
    write(conn, |tx| {
        let due: Vec<Uuid> = tx
            .prepare_cached(DUE)?
            .query_map(params![route, now, limit], |row| row.get(0))?
            .collect::<rusqlite::Result<_>>()?;
        let mut take = tx.prepare_cached(
            "UPDATE events SET attempts = attempts + 1, lease_token = ?2, lease_until = ?3
             WHERE id = ?1
             RETURNING route, event, received_at, attempts, body, headers",
        )?;
        let mut out = Vec::with_capacity(due.len());
        for id in due {
            // Only needs to differ from this event's earlier tokens.
            let token = fastrand::i64(..);
            out.push(take.query_row(params![id, token, lease_until], |row| {
                Ok(Lease {
                    id,
                    route: row.get(0)?,
                    event: row.get(1)?,
                    received_at: row.get(2)?,
                    attempt: row.get(3)?,
                    body: bytes(row, 4)?,
                    headers: bytes(row, 5)?,
                    token,
                })
            })?);
        }
        Ok(out)
    })
}

/// Records one attempt's result in `tx`, if `token` still holds the lease.
fn settle_in(
    tx: &Transaction<'_>,
    id: Uuid,
    token: i64,
    now: Millis,
    how: &Settle,
) -> rusqlite::Result<bool> {
    macro_rules! leased {
        () => {
            "lease_until = NULL, lease_token = NULL, updated_at = ?3
             WHERE id = ?1 AND lease_token = ?2 AND state = 'pending'"
        };
    }
    let changed = match how {
        Settle::Delivered => tx
            .prepare_cached(concat!(
                "UPDATE events SET state = 'delivered', next_attempt_at = NULL,
                 last_error = NULL, ",
                leased!()
            ))?
            .execute(params![id, token, now])?,
        Settle::Retry { at, error } => tx
            .prepare_cached(concat!(
                "UPDATE events SET next_attempt_at = ?4, last_error = ?5, ",
                leased!()
            ))?
            .execute(params![id, token, now, at, error])?,
        Settle::Dead { error } => tx
            .prepare_cached(concat!(
                "UPDATE events SET state = 'dead', next_attempt_at = NULL,
                 last_error = ?4, ",
                leased!()
            ))?
            .execute(params![id, token, now, error])?,
        Settle::Untried => tx
            .prepare_cached(concat!(
                "UPDATE events SET attempts = attempts - 1, ",
                leased!()
            ))?
            .execute(params![id, token, now])?,
    };
    Ok(changed == 1)
}

/// Records every waiting settle in one relaxed transaction and answers
/// each caller. If that transaction fails, each is tried in one of its own,
/// so one bad settle does not fail the others.
fn settle_all(conn: &mut Connection, batch: Vec<PendingSettle>, sizes: &Histogram) {
    let together = relaxed(conn, |conn| {
        write(conn, |tx| {
            batch
                .iter()
                .map(|s| settle_in(tx, s.id, s.token, s.now, &s.how))
                .collect::<rusqlite::Result<Vec<bool>>>()
        })
    });
    match together {
        Ok(changed) => {
            sizes.observe(batch.len() as f64);
            for (s, changed) in batch.into_iter().zip(changed) {
                let _ = s.answer.send(Ok(changed));
            }
        }
        Err(e) if batch.len() == 1 => {
            for s in batch {
                let _ = s.answer.send(Err(backend("settle", &e)));
            }
        }
        Err(_) => {
            for s in batch {
                let one = relaxed(conn, |conn| {
                    write(conn, |tx| settle_in(tx, s.id, s.token, s.now, &s.how))
                });
                if one.is_ok() {
                    sizes.observe(1.0);
                }
                let _ = s.answer.send(one.map_err(|e| backend("settle", &e)));
            }
        }
    }
}

fn replay_ids(
    conn: &mut Connection,
    ids: &[Uuid],
    force: bool,
    now: Millis,
) -> rusqlite::Result<Vec<Replayed>> {
    write(conn, |tx| {
        let mut find = tx.prepare_cached(&format!("SELECT {RECORD} FROM events WHERE id = ?1"))?;
        let mut back = tx.prepare_cached(&format!("{REPLAY} WHERE id = ?2 RETURNING {RECORD}"))?;
        let mut out = Vec::with_capacity(ids.len());
        for &id in ids {
            let answer = match find.query_row([id], record).optional()? {
                None => Replayed::NotFound,
                Some(rec) if rec.state == State::Delivered && !force => Replayed::Delivered(rec),
                Some(_) => Replayed::Done(back.query_row(params![now, id], record)?),
            };
            out.push(answer);
        }
        Ok(out)
    })
}

fn replay_matching(
    conn: &mut Connection,
    filter: &Filter,
    force: bool,
    now: Millis,
) -> rusqlite::Result<u64> {
    let (mut cond, args) = matching(filter);
    if !force {
        cond.push_str(" AND state <> 'delivered'");
    }
    // `REPLAY` binds ?1 first, so SQLite numbers the filter's plain `?`s
    // from 2 on, in the order of `args`.
    write(conn, |tx| {
        let changed = tx.execute(
            &format!("{REPLAY}{cond}"),
            params_from_iter(std::iter::once(Value::Integer(now)).chain(args)),
        )?;
        Ok(changed as u64)
    })
}

fn drop_ids(conn: &mut Connection, ids: &[Uuid]) -> rusqlite::Result<Vec<Option<Record>>> {
    write(conn, |tx| {
        let mut delete = tx.prepare_cached(&format!(
            "DELETE FROM events WHERE id = ?1 RETURNING {RECORD}"
        ))?;
        ids.iter()
            .map(|&id| delete.query_row([id], record).optional())
            .collect()
    })
}

fn drop_matching(conn: &mut Connection, filter: &Filter) -> rusqlite::Result<u64> {
    let (cond, args) = matching(filter);
    write(conn, |tx| {
        let changed = tx.execute(&format!("DELETE FROM events{cond}"), params_from_iter(args))?;
        Ok(changed as u64)
    })
}

fn list(conn: &mut Connection, filter: &Filter) -> rusqlite::Result<Vec<Record>> {
    let (cond, mut args) = matching(filter);
    args.push(Value::Integer(filter.limit.map_or(-1, i64::from)));
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {RECORD} FROM events{cond} ORDER BY received_at DESC, id DESC LIMIT ?"
    ))?;
    stmt.query_map(params_from_iter(args), record)?.collect()
}

fn get(
    conn: &mut Connection,
    id: Uuid,
    body: bool,
) -> rusqlite::Result<Option<(Record, Option<Bytes>)>> {
    if body {
        conn.prepare_cached(&format!("SELECT {RECORD}, body FROM events WHERE id = ?1"))?
            .query_row([id], |row| Ok((record(row)?, Some(bytes(row, 9)?))))
            .optional()
    } else {
        conn.prepare_cached(&format!("SELECT {RECORD} FROM events WHERE id = ?1"))?
            .query_row([id], |row| Ok((record(row)?, None)))
            .optional()
    }
}

fn stats(conn: &mut Connection) -> rusqlite::Result<Vec<RouteStats>> {
    let mut stmt = conn.prepare_cached(
        "SELECT route, state, count(*), min(received_at) FROM events
         GROUP BY route, state ORDER BY route",
    )?;
    let mut rows = stmt.query([])?;
    let mut out: Vec<RouteStats> = Vec::new();
    while let Some(row) = rows.next()? {
        let route: String = row.get(0)?;
        let state: State = row.get(1)?;
        let count: u64 = row.get::<_, i64>(2)?.try_into().unwrap_or(0);
        let oldest: Millis = row.get(3)?;
        if out.last().is_none_or(|last| last.route != route) {
            out.push(RouteStats {
                route,
                ..RouteStats::default()
            });
        }
        let Some(entry) = out.last_mut() else {
            continue;
        };
        match state {
            State::Pending => {
                entry.pending = count;
                entry.oldest_pending_received_at = Some(oldest);
            }
            State::Delivered => entry.delivered = count,
            State::Dead => entry.dead = count,
        }
    }
    Ok(out)
}

/// Deletes up to [`PURGE_CHUNK`] settled events of one route and state
/// last changed at or before `cutoff`.
fn purge_events(
    conn: &mut Connection,
    route: &str,
    state: State,
    cutoff: Millis,
) -> rusqlite::Result<u64> {
    write(conn, |tx| {
        let n = tx
            .prepare_cached(
                "DELETE FROM events WHERE rowid IN (
                    SELECT rowid FROM events
                    WHERE route = ?1 AND state = ?2 AND updated_at <= ?3 LIMIT ?4)",
            )?
            .execute(params![route, state, cutoff, PURGE_CHUNK as i64])?;
        Ok(n as u64)
    })
}

/// Deletes up to [`PURGE_CHUNK`] dedup keys expired at `now`.
fn purge_keys(conn: &mut Connection, now: Millis) -> rusqlite::Result<u64> {
    write(conn, |tx| {
        let n = tx
            .prepare_cached(
                "DELETE FROM dedup_keys WHERE key IN (
                    SELECT key FROM dedup_keys WHERE expires_at <= ?1 LIMIT ?2)",
            )?
            .execute(params![now, PURGE_CHUNK as i64])?;
        Ok(n as u64)
    })
}

impl Engine for SqliteStore {
    async fn ingest(&self, batch: Vec<NewEvent>) -> Result<Vec<Ingested>, StoreError> {
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        self.writer
            .run("ingest", move |conn| ingest(conn, &batch))
            .await
    }

    async fn seen(&self, key: &Key, now: Millis) -> Result<bool, StoreError> {
        let key = *key;
        self.reader
            .run("seen", move |conn| {
                conn.prepare_cached(
                    "SELECT EXISTS (SELECT 1 FROM dedup_keys WHERE key = ?1 AND expires_at > ?2)",
                )?
                .query_row(params![&key[..], now], |row| row.get(0))
            })
            .await
    }

    async fn remember(&self, key: &Key, route: &str, expires_at: Millis) -> Result<(), StoreError> {
        let key = *key;
        let route = route.to_owned();
        self.writer
            .run("remember", move |conn| {
                write(conn, |tx| {
                    tx.prepare_cached(
                        "INSERT INTO dedup_keys (key, route, expires_at) VALUES (?1, ?2, ?3)
                         ON CONFLICT (key) DO UPDATE
                            SET expires_at = max(dedup_keys.expires_at, excluded.expires_at)",
                    )?
                    .execute(params![&key[..], route, expires_at])?;
                    Ok(())
                })
            })
            .await
    }

    async fn lease(
        &self,
        route: &str,
        now: Millis,
        lease_until: Millis,
        limit: u32,
    ) -> Result<Vec<Lease>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let route = route.to_owned();
        self.writer
            .run("lease", move |conn| {
                relaxed(conn, |conn| lease(conn, &route, now, lease_until, limit))
            })
            .await
    }

    async fn next_due(&self, route: &str) -> Result<Option<Millis>, StoreError> {
        let route = route.to_owned();
        self.reader
            .run("next_due", move |conn| {
                conn.prepare_cached(
                    "SELECT min(max(next_attempt_at, coalesce(lease_until, next_attempt_at)))
                     FROM events WHERE route = ?1 AND state = 'pending'",
                )?
                .query_row([route], |row| row.get(0))
            })
            .await
    }

    async fn settle(
        &self,
        id: Uuid,
        token: i64,
        now: Millis,
        how: Settle,
    ) -> Result<bool, StoreError> {
        // Settles that arrive while the writer is busy (under load: behind
        // an ingest commit's fsync) wait here and are recorded together in
        // one transaction when the writer gets to them: one job in the
        // writer's queue at a time, taking all that waited.
        let (answer, answered) = oneshot::channel();
        let first = {
            let mut waiting = lock(&self.settles);
            waiting.push(PendingSettle {
                id,
                token,
                now,
                how,
                answer,
            });
            waiting.len() == 1
        };
        if first {
            let settles = self.settles.clone();
            let sizes = self.settle_batches.clone();
            let job: Job = Box::new(move |conn| {
                let batch = std::mem::take(&mut *lock(&settles));
                // A panic drops the batch's senders: each caller gets Closed.
                let _ = catch_unwind(AssertUnwindSafe(|| settle_all(conn, batch, &sizes)));
            });
            if let Err(e) = self.writer.submit(job) {
                // No writer: nobody will take them.
                lock(&self.settles).clear();
                return Err(e);
            }
        }
        answered.await.map_err(|_| StoreError::Closed)?
    }

    async fn list(&self, filter: &Filter) -> Result<Vec<Record>, StoreError> {
        let filter = filter.clone();
        self.reader
            .run("list", move |conn| list(conn, &filter))
            .await
    }

    async fn get(
        &self,
        id: Uuid,
        body: bool,
    ) -> Result<Option<(Record, Option<Bytes>)>, StoreError> {
        self.reader
            .run("get", move |conn| get(conn, id, body))
            .await
    }

    async fn replay_ids(
        &self,
        ids: &[Uuid],
        force: bool,
        now: Millis,
    ) -> Result<Vec<Replayed>, StoreError> {
        let ids = ids.to_vec();
        self.writer
            .run("replay", move |conn| replay_ids(conn, &ids, force, now))
            .await
    }

    async fn replay_matching(
        &self,
        filter: &Filter,
        force: bool,
        now: Millis,
    ) -> Result<u64, StoreError> {
        let filter = filter.clone();
        self.writer
            .run("replay", move |conn| {
                replay_matching(conn, &filter, force, now)
            })
            .await
    }

    async fn drop_ids(&self, ids: &[Uuid]) -> Result<Vec<Option<Record>>, StoreError> {
        let ids = ids.to_vec();
        self.writer
            .run("drop", move |conn| drop_ids(conn, &ids))
            .await
    }

    async fn drop_matching(&self, filter: &Filter) -> Result<u64, StoreError> {
        let filter = filter.clone();
        self.writer
            .run("drop", move |conn| drop_matching(conn, &filter))
            .await
    }

    async fn stats(&self) -> Result<Vec<RouteStats>, StoreError> {
        self.reader.run("stats", stats).await
    }

    async fn purge(
        &self,
        now: Millis,
        retention: &[Retention],
        pace: PurgePace,
    ) -> Result<u64, StoreError> {
        let mut total = 0;
        for r in retention {
            for (state, keep) in [(State::Delivered, r.delivered), (State::Dead, r.dead)] {
                let cutoff = now.saturating_sub(keep);
                loop {
                    let route = r.route.clone();
                    let started = Instant::now();
                    let n = self
                        .writer
                        .run("purge", move |conn| {
                            purge_events(conn, &route, state, cutoff)
                        })
                        .await?;
                    total += n;
                    if n < PURGE_CHUNK {
                        break;
                    }
                    pace.after_chunk(started.elapsed()).await;
                }
            }
        }
        loop {
            let started = Instant::now();
            let n = self
                .writer
                .run("purge", move |conn| purge_keys(conn, now))
                .await?;
            total += n;
            if n < PURGE_CHUNK {
                return Ok(total);
            }
            pace.after_chunk(started.elapsed()).await;
        }
    }

    async fn ping(&self) -> Result<(), StoreError> {
        // Reads the file's header through the writer, the connection that
        // queued routes depend on; a newer hookgate that migrated the file
        // under this one makes the store unusable here, so it says so.
        let version = self
            .writer
            .run("ping", |conn| {
                conn.pragma_query_value(None, "user_version", |row| row.get::<_, i64>(0))
            })
            .await?;
        if version == SCHEMA_VERSION {
            Ok(())
        } else {
            Err(StoreError::Backend {
                op: "ping",
                message: format!(
                    "schema version is now {version}; this hookgate knows {SCHEMA_VERSION}"
                ),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use std::ops::Deref;

    use tempfile::TempDir;

    use super::*;
    use crate::store::Store;
    use crate::store::batch::tests::observed;
    use crate::store::suite::{self, T0};
    use prometheus_client::metrics::histogram::Histogram;

    /// A fresh store in its own temp dir (kept as long as the store).
    struct Fresh {
        store: SqliteStore,
        dir: TempDir,
    }

    impl Deref for Fresh {
        type Target = SqliteStore;
        fn deref(&self) -> &SqliteStore {
            &self.store
        }
    }

    async fn fresh() -> Fresh {
        let dir = tempfile::tempdir().unwrap();
        let store = open(&dir.path().join("events.db")).await.unwrap();
        Fresh { store, dir }
    }

    mod conformance {
        crate::store::suite::engine_suite!(super::fresh());
    }

    /// A lease is prepared once (SQLite re-prepared it on every call for its
    /// bound values unless told to plan from the text: `stable_plans`), and
    /// still walks the partial index of due events.
    #[test]
    fn leases_reuse_their_prepared_statements() {
        let dir = tempfile::tempdir().unwrap();
        let mut conn = open_writer(&dir.path().join("events.db")).unwrap();
        let batch: Vec<NewEvent> = (0..8).map(|_| suite::event("r", T0, b"{}")).collect();
        ingest(&mut conn, &batch).unwrap();
        for (n, limit) in [(0, 1), (1, 3), (2, 2)] {
            let now = T0 + n;
            let got = relaxed(&mut conn, |c| lease(c, "r", now, now + 60_000, limit)).unwrap();
            assert_eq!(got.len(), limit as usize);
        }
        let due = conn.prepare_cached(DUE).unwrap();
        assert_eq!(due.get_status(rusqlite::StatementStatus::RePrepare), 0);
        drop(due);
        let plan: String = conn
            .query_row(
                &format!("EXPLAIN QUERY PLAN {DUE}"),
                params!["r", T0, 1],
                |r| r.get(3),
            )
            .unwrap();
        assert!(plan.contains("USING INDEX events_due"), "{plan}");
    }

    #[tokio::test]
    async fn two_stores_on_one_file_lease_each_event_once() {
        let one = fresh().await;
        let two = open(one.path()).await.unwrap();
        suite::leases_race(&*one, &two).await;
        let _ = &one.dir;
    }

    #[tokio::test]
    async fn files_are_private() {
        use std::os::unix::fs::PermissionsExt;
        let store = fresh().await;
        store
            .ingest(vec![suite::event("r", T0, b"{}")])
            .await
            .unwrap();
        for suffix in ["", "-wal", "-shm"] {
            let file = format!("{}{suffix}", store.path().display());
            let mode = std::fs::metadata(&file).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "{file}");
        }
    }

    #[tokio::test]
    async fn two_processes_opening_a_new_file_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.db");
        let (one, two) = tokio::join!(open(&path), open(&path));
        let (one, two) = (one.unwrap(), two.unwrap());
        let ev = suite::event("r", T0, b"{}");
        let id = ev.id;
        one.ingest(vec![ev]).await.unwrap();
        assert!(two.get(id, false).await.unwrap().is_some());
    }

    /// Run by `waits_for_another_process_write` as a child process: holds
    /// the write lock of the file named by `HOOKGATE_TEST_HOLD_LOCK` for
    /// 300 ms. A no-op when run as a test of its own.
    #[test]
    fn child_holds_the_write_lock() {
        use std::io::Write;
        let Some(path) = std::env::var_os("HOOKGATE_TEST_HOLD_LOCK") else {
            return;
        };
        let conn = Connection::open(path).unwrap();
        conn.execute_batch("BEGIN IMMEDIATE").unwrap();
        // libtest prints "test NAME ... " first, on the same line.
        println!("write lock held");
        std::io::stdout().flush().unwrap();
        std::thread::sleep(Duration::from_millis(300));
        conn.execute_batch("COMMIT").unwrap();
    }

    /// Another process (the CLI replaying, say) holds the write lock: a
    /// write here waits for it (`busy_timeout`) instead of failing with
    /// "database is locked".
    #[tokio::test]
    async fn waits_for_another_process_write() {
        use std::io::BufRead;
        let store = fresh().await;
        let mut child = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "store::sqlite::tests::child_holds_the_write_lock",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("HOOKGATE_TEST_HOLD_LOCK", store.path())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let mut lines = std::io::BufReader::new(stdout).lines();
        let locked = lines
            .by_ref()
            .any(|line| line.unwrap().ends_with("write lock held"));
        assert!(locked, "the child took the lock");

        let started = std::time::Instant::now();
        let ev = suite::event("r", T0, b"{}");
        assert_eq!(
            store.ingest(vec![ev]).await.unwrap(),
            vec![Ingested::Stored]
        );
        assert!(
            started.elapsed() >= Duration::from_millis(100),
            "the write waited for the child's lock"
        );
        lines.for_each(drop);
        assert!(child.wait().unwrap().success());
    }

    #[tokio::test]
    async fn reopen_keeps_data() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.db");
        let store = open(&path).await.unwrap();
        let ev = suite::event("r", T0, &[0xff, 0x00, 0x01]);
        let id = ev.id;
        assert_eq!(
            store.ingest(vec![ev]).await.unwrap(),
            vec![Ingested::Stored]
        );
        drop(store);

        let again = open(&path).await.unwrap();
        let (rec, body) = again.get(id, true).await.unwrap().unwrap();
        assert_eq!(rec.state, State::Pending);
        assert_eq!(body.as_deref(), Some(&[0xff, 0x00, 0x01][..]));
    }

    #[tokio::test]
    async fn missing_directory_is_an_open_error_naming_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("absent").join("events.db");
        let err = open(&path).await.unwrap_err();
        let StoreError::Open(message) = &err else {
            panic!("want Open, got {err:?}");
        };
        assert!(message.contains(&path.display().to_string()), "{message}");
        assert!(message.contains("does not exist"), "{message}");
        assert!(
            !path.parent().unwrap().exists(),
            "the directory is not created"
        );
    }

    #[tokio::test]
    async fn newer_schema_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.db");
        drop(open(&path).await.unwrap());
        let conn = Connection::open(&path).unwrap();
        conn.pragma_update(None, "user_version", SCHEMA_VERSION + 1)
            .unwrap();
        drop(conn);

        let err = open(&path).await.unwrap_err();
        let StoreError::Open(message) = &err else {
            panic!("want Open, got {err:?}");
        };
        assert!(message.contains("newer hookgate"), "{message}");
        assert!(message.contains(&path.display().to_string()), "{message}");
    }

    #[tokio::test]
    async fn migration_is_idempotent() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.db");
        let first = open(&path).await.unwrap();
        let id = suite::event("r", T0, b"{}");
        let want = id.id;
        first.ingest(vec![id]).await.unwrap();
        let second = open(&path).await.unwrap();
        assert!(second.get(want, false).await.unwrap().is_some());
        drop((first, second));

        let conn = Connection::open(&path).unwrap();
        let version: i64 = conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap();
        assert_eq!(version, SCHEMA_VERSION);
        let mode: String = conn
            .pragma_query_value(None, "journal_mode", |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
    }

    #[tokio::test]
    async fn another_programs_database_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("other.db");
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch("CREATE TABLE t (x)").unwrap();
        drop(conn);
        let err = open(&path).await.unwrap_err();
        assert!(err.to_string().contains("not a hookgate store"), "{err}");

        let junk = dir.path().join("junk.db");
        std::fs::write(
            &junk,
            b"this is not a database, just some bytes of junk text",
        )
        .unwrap();
        let err = open(&junk).await.unwrap_err();
        let StoreError::Open(message) = &err else {
            panic!("want Open, got {err:?}");
        };
        assert!(message.contains(&junk.display().to_string()), "{message}");
        assert!(message.contains("not a database"), "{message}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_ingests_share_commits() {
        let fresh = fresh().await;
        let sizes = Histogram::new([1.0, 16.0, 256.0]);
        let seconds = Histogram::new([0.001, 0.01, 0.1]);
        let engine = open(fresh.path()).await.unwrap();
        let store = Store::sqlite(engine, Some(seconds.clone()), Some(sizes.clone()));
        let callers: Vec<_> = (0..200)
            .map(|i| {
                let store = store.clone();
                tokio::spawn(
                    async move { store.ingest_one(suite::event("r", T0 + i, b"{}")).await },
                )
            })
            .collect();
        for caller in callers {
            assert_eq!(caller.await.unwrap().unwrap(), Ingested::Stored);
        }
        let (commits, events) = observed(&sizes);
        assert_eq!(events, 200.0);
        assert!(commits < 200, "{commits} commits for 200 events");
        assert_eq!(observed(&seconds).0, commits);
        let all = store.list(&Filter::default()).await.unwrap();
        assert_eq!(all.len(), 200);
        assert_eq!(fresh.list(&Filter::default()).await.unwrap().len(), 200);
    }

    /// Settles that wait for the writer together are recorded in one
    /// transaction, and a settle whose token no longer holds the lease
    /// changes nothing without failing the others in its transaction.
    #[tokio::test]
    async fn concurrent_settles_share_commits() {
        let fresh = fresh().await;
        let store = Arc::new(open(fresh.path()).await.unwrap());
        let events: Vec<_> = (0..200).map(|i| suite::event("r", T0 + i, b"{}")).collect();
        store.ingest(events).await.unwrap();
        let leases = store
            .lease("r", T0 + 1_000, T0 + 60_000, 200)
            .await
            .unwrap();
        assert_eq!(leases.len(), 200);
        let settles: Vec<_> = leases
            .iter()
            .enumerate()
            .map(|(i, lease)| {
                let store = store.clone();
                let (id, token) = (lease.id, lease.token);
                // Every tenth with a token that does not hold the lease.
                let token = if i % 10 == 0 {
                    token.wrapping_add(1)
                } else {
                    token
                };
                tokio::spawn(
                    async move { store.settle(id, token, T0 + 2_000, Settle::Delivered).await },
                )
            })
            .collect();
        for (i, settle) in settles.into_iter().enumerate() {
            assert_eq!(settle.await.unwrap().unwrap(), i % 10 != 0, "settle {i}");
        }
        // Every settle was recorded, in fewer transactions than settles.
        let commits = store.settle_batches.count();
        assert_eq!(store.settle_batches.sum(), 200.0);
        assert!(commits < 200, "{commits} commits for 200 settles");
        let delivered = Filter {
            state: Some(State::Delivered),
            ..Filter::default()
        };
        assert_eq!(store.list(&delivered).await.unwrap().len(), 180);
        let pending = Filter {
            state: Some(State::Pending),
            ..Filter::default()
        };
        assert_eq!(store.list(&pending).await.unwrap().len(), 20);
    }

    #[tokio::test]
    async fn store_dispatches_to_sqlite() {
        let fresh = fresh().await;
        let store = Store::sqlite(open(fresh.path()).await.unwrap(), None, None);
        assert_eq!(store.engine_name(), "sqlite");
        store.ping().await.unwrap();
        let ev = suite::keyed_event("r", T0, b"{}", T0 + 100);
        let key = ev.dedup.unwrap().key;
        let id = ev.id;
        assert_eq!(
            store.ingest_one(ev.clone()).await.unwrap(),
            Ingested::Stored
        );
        assert_eq!(store.ingest_one(ev).await.unwrap(), Ingested::Duplicate);
        assert!(store.seen(&key, T0).await.unwrap());
        let lease = store.lease("r", T0, T0 + 10, 5).await.unwrap();
        assert_eq!(lease.len(), 1);
        assert!(
            store
                .settle(id, lease[0].token, T0 + 1, Settle::Delivered)
                .await
                .unwrap()
        );
        assert_eq!(store.stats().await.unwrap()[0].delivered, 1);
        assert_eq!(
            store.clone().get(id, false).await.unwrap().unwrap().0.state,
            State::Delivered
        );
    }

    #[tokio::test]
    async fn closed_after_the_threads_are_gone() {
        let store = fresh().await;
        store.ping().await.unwrap();
        let (tx, _) = mpsc::channel::<Job>();
        let closed = SqliteStore {
            writer: Worker { jobs: tx.clone() },
            reader: Worker { jobs: tx },
            path: store.path().to_owned(),
            settles: Arc::default(),
            settle_batches: crate::observe::metrics::batch_histogram(),
        };
        assert!(matches!(closed.ping().await, Err(StoreError::Closed)));
        // A settle, which goes through its own queue, is Closed too, twice
        // (nothing is left waiting from the first).
        for _ in 0..2 {
            assert!(matches!(
                closed.settle(Uuid::nil(), 1, T0, Settle::Delivered).await,
                Err(StoreError::Closed)
            ));
        }
    }
}
