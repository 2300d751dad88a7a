//! The conformance suite every [`Engine`] passes (tests only).
//!
//! Each case is a plain `async fn` over any engine, given a fresh, empty
//! store; [`engine_suite!`] turns the whole list into one `#[tokio::test]`
//! per case for an engine's own test module, with that engine's
//! constructor:
//!
//! ```ignore
//! mod conformance {
//!     crate::store::suite::engine_suite!(super::fresh_store());
//! }
//! ```
//!
//! Times are explicit Unix milliseconds from [`T0`]; nothing sleeps. The
//! cases pin the semantics written on [`Engine`]'s methods, including the
//! edges (an expiry or a lease that ends exactly at `now` has ended, `until`
//! is exclusive, a delivered event replays only with `force`).
//! [`leases_race`] needs two handles on one store, so it is not in the
//! macro: each engine calls it with its own pair.

use bytes::Bytes;
use uuid::Uuid;

use super::{
    DedupClaim, Engine, Filter, Ingested, Key, Lease, Millis, NewEvent, PurgePace, Record,
    Replayed, Retention, RouteStats, Settle, State,
};

/// The start of every case's clock (2023-11-14, Unix ms).
pub(crate) const T0: Millis = 1_700_000_000_000;

/// Runs every case below as its own `#[tokio::test]`. `$make` is an
/// expression giving a future of a fresh, empty store behind anything that
/// derefs to the engine (so it can hold a temp dir or a schema guard beside
/// it). Expand it inside a module of its own.
macro_rules! engine_suite {
    ($make:expr) => {
        $crate::store::suite::engine_suite!(@cases $make;
            ingest_stores_pending,
            ingest_of_nothing_is_nothing,
            duplicate_key_is_refused,
            duplicate_key_within_one_batch,
            expired_key_is_claimed_anew,
            dropped_event_keeps_its_key,
            seen_and_remember,
            lease_takes_only_due_events,
            lease_respects_limit,
            lease_counts_the_attempt,
            live_lease_is_exclusive,
            expired_lease_is_taken_again,
            settle_delivered,
            settle_retry,
            settle_dead,
            settle_untried,
            settle_after_replay_or_drop_is_lost,
            next_due_waits_for_leases,
            list_filters_newest_first,
            get_returns_exact_bytes,
            replay_ids_by_state,
            replay_matching_dead,
            drop_ids_and_matching,
            stats_counts_by_route,
            purge_respects_retention,
            purge_goes_past_one_chunk,
            purge_paced_waits_between_chunks,
            ping_answers,
        );
    };
    (@cases $make:expr; $($case:ident),+ $(,)?) => {
        $(
            #[tokio::test]
            async fn $case() {
                let fixture = $make.await;
                $crate::store::suite::$case(&*fixture).await;
            }
        )+
    };
}
pub(crate) use engine_suite;

const HEADERS: &[u8] = b"content-type: application/json\r\n";

/// An event of `route` received at `at`, without a dedup claim.
pub(crate) fn event(route: &str, at: Millis, body: &[u8]) -> NewEvent {
    NewEvent {
        id: Uuid::now_v7(),
        route: route.to_owned(),
        event: "popup.converted".to_owned(),
        received_at: at,
        body: Bytes::copy_from_slice(body),
        headers: Bytes::from_static(HEADERS),
        dedup: None,
    }
}

/// A key that differs by its first byte.
fn key(n: u8) -> Key {
    let mut k = [0x5a; 32];
    k[0] = n;
    k
}

/// [`event`] claiming `key(k)` until `expires_at`.
fn keyed(route: &str, at: Millis, body: &[u8], k: u8, expires_at: Millis) -> NewEvent {
    NewEvent {
        dedup: Some(DedupClaim {
            key: key(k),
            expires_at,
        }),
        ..event(route, at, body)
    }
}

/// [`event`] claiming a key derived from its body until `expires_at`.
pub(crate) fn keyed_event(route: &str, at: Millis, body: &[u8], expires_at: Millis) -> NewEvent {
    NewEvent {
        dedup: Some(DedupClaim {
            key: crate::dedup::key(route, body),
            expires_at,
        }),
        ..event(route, at, body)
    }
}

/// Stores one event and returns its id.
async fn put<E: Engine>(e: &E, ev: NewEvent) -> Uuid {
    let id = ev.id;
    assert_eq!(e.ingest(vec![ev]).await.unwrap(), vec![Ingested::Stored]);
    id
}

/// The record of a stored event.
async fn record<E: Engine>(e: &E, id: Uuid) -> Record {
    e.get(id, false).await.unwrap().unwrap().0
}

/// Leases the one due event of `route`.
async fn lease_one<E: Engine>(e: &E, route: &str, now: Millis, until: Millis) -> Lease {
    let mut got = e.lease(route, now, until, 10).await.unwrap();
    assert_eq!(got.len(), 1, "one due event expected");
    got.remove(0)
}

/// Stores an event received at `at` and settles its first attempt `how`.
async fn settled<E: Engine>(e: &E, route: &str, at: Millis, how: Settle) -> Uuid {
    let id = put(e, event(route, at, b"{}")).await;
    let lease = lease_one(e, route, at, at + 100).await;
    assert_eq!(lease.id, id);
    assert!(e.settle(id, lease.token, at, how).await.unwrap());
    id
}

fn dead(why: &str) -> Settle {
    Settle::Dead {
        error: why.to_owned(),
    }
}

fn ids(records: &[Record]) -> Vec<Uuid> {
    records.iter().map(|r| r.id).collect()
}

/// A stored event is pending, attempts 0, due and updated at its receipt.
pub(crate) async fn ingest_stores_pending<E: Engine>(e: &E) {
    let ev = event("signup", T0, br#"{"event":"popup.converted"}"#);
    let id = ev.id;
    assert_eq!(e.ingest(vec![ev]).await.unwrap(), vec![Ingested::Stored]);
    let (rec, body) = e.get(id, true).await.unwrap().unwrap();
    assert_eq!(
        rec,
        Record {
            id,
            route: "signup".into(),
            event: "popup.converted".into(),
            state: State::Pending,
            attempts: 0,
            received_at: T0,
            next_attempt_at: Some(T0),
            last_error: None,
            updated_at: T0,
        }
    );
    assert_eq!(
        body.as_deref(),
        Some(&br#"{"event":"popup.converted"}"#[..])
    );
}

/// An empty batch answers an empty list.
pub(crate) async fn ingest_of_nothing_is_nothing<E: Engine>(e: &E) {
    assert_eq!(e.ingest(Vec::new()).await.unwrap(), Vec::new());
    assert!(e.list(&Filter::default()).await.unwrap().is_empty());
}

/// A key claimed by a stored event makes a later copy a duplicate, and the
/// copy is not stored.
pub(crate) async fn duplicate_key_is_refused<E: Engine>(e: &E) {
    let first = put(e, keyed("r", T0, b"a", 1, T0 + 1_000)).await;
    let copy = keyed("r", T0 + 10, b"a", 1, T0 + 1_010);
    assert_eq!(
        e.ingest(vec![copy]).await.unwrap(),
        vec![Ingested::Duplicate]
    );
    assert_eq!(ids(&e.list(&Filter::default()).await.unwrap()), vec![first]);
    assert!(e.seen(&key(1), T0 + 10).await.unwrap());
    assert!(!e.seen(&key(2), T0 + 10).await.unwrap());
}

/// Within one batch the first copy of a key is stored, the second is a
/// duplicate, and the others are untouched by it.
pub(crate) async fn duplicate_key_within_one_batch<E: Engine>(e: &E) {
    let batch = vec![
        keyed("r", T0, b"a", 1, T0 + 1_000),
        keyed("r", T0, b"a", 1, T0 + 1_000),
        event("r", T0, b"b"),
        keyed("r", T0, b"c", 2, T0 + 1_000),
    ];
    let stored: Vec<Uuid> = [0, 2, 3].iter().map(|&i| batch[i].id).collect();
    assert_eq!(
        e.ingest(batch).await.unwrap(),
        vec![
            Ingested::Stored,
            Ingested::Duplicate,
            Ingested::Stored,
            Ingested::Stored
        ]
    );
    let mut listed = ids(&e.list(&Filter::default()).await.unwrap());
    listed.sort();
    let mut want = stored;
    want.sort();
    assert_eq!(listed, want);
}

/// A key whose expiry has come (`expires_at <= received_at`) is claimed
/// anew, with the new expiry.
pub(crate) async fn expired_key_is_claimed_anew<E: Engine>(e: &E) {
    put(e, keyed("r", T0, b"a", 1, T0 + 100)).await;
    let early = keyed("r", T0 + 99, b"a", 1, T0 + 199);
    assert_eq!(
        e.ingest(vec![early]).await.unwrap(),
        vec![Ingested::Duplicate]
    );
    put(e, keyed("r", T0 + 100, b"a", 1, T0 + 200)).await;
    assert!(e.seen(&key(1), T0 + 199).await.unwrap());
    assert!(!e.seen(&key(1), T0 + 200).await.unwrap());
    assert_eq!(e.list(&Filter::default()).await.unwrap().len(), 2);
}

/// Dropping an event keeps its key: the provider's retry is still a
/// duplicate.
pub(crate) async fn dropped_event_keeps_its_key<E: Engine>(e: &E) {
    let id = put(e, keyed("r", T0, b"a", 1, T0 + 1_000)).await;
    assert!(e.drop_ids(&[id]).await.unwrap()[0].is_some());
    let retry = keyed("r", T0 + 10, b"a", 1, T0 + 1_010);
    assert_eq!(
        e.ingest(vec![retry]).await.unwrap(),
        vec![Ingested::Duplicate]
    );
    assert!(e.list(&Filter::default()).await.unwrap().is_empty());
}

/// `remember` claims a key until its expiry (the later of two wins), `seen`
/// answers until then, and ingest shares the same keys.
pub(crate) async fn seen_and_remember<E: Engine>(e: &E) {
    assert!(!e.seen(&key(1), T0).await.unwrap());
    e.remember(&key(1), "r", T0 + 100).await.unwrap();
    assert!(e.seen(&key(1), T0).await.unwrap());
    assert!(e.seen(&key(1), T0 + 99).await.unwrap());
    assert!(!e.seen(&key(1), T0 + 100).await.unwrap());

    e.remember(&key(1), "r", T0 + 50).await.unwrap();
    assert!(
        e.seen(&key(1), T0 + 99).await.unwrap(),
        "the later expiry wins"
    );
    e.remember(&key(1), "r", T0 + 300).await.unwrap();
    assert!(e.seen(&key(1), T0 + 299).await.unwrap());

    let copy = keyed("r", T0 + 10, b"a", 1, T0 + 1_000);
    assert_eq!(
        e.ingest(vec![copy]).await.unwrap(),
        vec![Ingested::Duplicate]
    );
    put(e, keyed("r", T0, b"b", 2, T0 + 100)).await;
    e.remember(&key(2), "r", T0 + 500).await.unwrap();
    assert!(e.seen(&key(2), T0 + 499).await.unwrap());
}

/// A lease takes only pending events of its route that are due, and hands
/// over everything a delivery needs.
pub(crate) async fn lease_takes_only_due_events<E: Engine>(e: &E) {
    let due = event("r", T0, &[0xff, 0x00, b'x']);
    let due_id = due.id;
    put(e, due).await;
    let later = put(e, event("r", T0 + 1_000, b"later")).await;
    put(e, event("other", T0, b"other route")).await;

    let got = e.lease("r", T0 + 500, T0 + 10_000, 10).await.unwrap();
    assert_eq!(got.len(), 1);
    let lease = &got[0];
    assert_eq!(lease.id, due_id);
    assert_eq!(lease.route, "r");
    assert_eq!(lease.event, "popup.converted");
    assert_eq!(lease.received_at, T0);
    assert_eq!(&lease.body[..], &[0xff, 0x00, b'x']);
    assert_eq!(&lease.headers[..], HEADERS);
    assert_eq!(lease.attempt, 1);
    assert!(
        e.settle(due_id, lease.token, T0 + 600, Settle::Delivered)
            .await
            .unwrap()
    );

    let got = e.lease("r", T0 + 2_000, T0 + 10_000, 10).await.unwrap();
    assert_eq!(got.iter().map(|l| l.id).collect::<Vec<_>>(), vec![later]);
    assert!(
        e.lease("r", T0 + 2_000, T0 + 10_000, 10)
            .await
            .unwrap()
            .is_empty()
    );
}

/// A lease takes at most `limit` events, and each once.
pub(crate) async fn lease_respects_limit<E: Engine>(e: &E) {
    let mut all = Vec::new();
    for i in 0..5 {
        all.push(put(e, event("r", T0 + i, b"{}")).await);
    }
    assert!(e.lease("r", T0 + 10, T0 + 100, 0).await.unwrap().is_empty());
    let mut taken = Vec::new();
    for want in [2, 2, 1, 0] {
        let got = e.lease("r", T0 + 10, T0 + 100, 2).await.unwrap();
        assert_eq!(got.len(), want);
        taken.extend(got.into_iter().map(|l| l.id));
    }
    taken.sort();
    all.sort();
    assert_eq!(taken, all);
}

/// A lease counts as an attempt; the event is listed as pending meanwhile,
/// still due when it was.
pub(crate) async fn lease_counts_the_attempt<E: Engine>(e: &E) {
    let id = put(e, event("r", T0, b"{}")).await;
    let lease = lease_one(e, "r", T0 + 5, T0 + 100).await;
    assert_eq!(lease.attempt, 1);
    let rec = record(e, id).await;
    assert_eq!(rec.state, State::Pending);
    assert_eq!(rec.attempts, 1);
    assert_eq!(rec.next_attempt_at, Some(T0));
    assert_eq!(rec.updated_at, T0);
}

/// While a lease is live nobody else gets the event.
pub(crate) async fn live_lease_is_exclusive<E: Engine>(e: &E) {
    put(e, event("r", T0, b"{}")).await;
    lease_one(e, "r", T0, T0 + 100).await;
    assert!(
        e.lease("r", T0 + 99, T0 + 200, 10)
            .await
            .unwrap()
            .is_empty()
    );
}

/// A lease that ran out (`lease_until <= now`) is taken again with a new
/// token; the old token no longer settles, the new one does.
pub(crate) async fn expired_lease_is_taken_again<E: Engine>(e: &E) {
    let id = put(e, event("r", T0, b"{}")).await;
    let first = lease_one(e, "r", T0, T0 + 100).await;
    let second = lease_one(e, "r", T0 + 100, T0 + 200).await;
    assert_eq!(second.id, id);
    assert_eq!(second.attempt, 2);
    assert_ne!(second.token, first.token);

    let lost = e
        .settle(id, first.token, T0 + 150, Settle::Delivered)
        .await
        .unwrap();
    assert!(!lost, "the first worker's lease was lost");
    let rec = record(e, id).await;
    assert_eq!((rec.state, rec.attempts), (State::Pending, 2));

    assert!(
        e.settle(id, second.token, T0 + 150, Settle::Delivered)
            .await
            .unwrap()
    );
    assert_eq!(record(e, id).await.state, State::Delivered);
}

/// Delivered: no next attempt, no error, updated at settle time, and the
/// lease is gone (the same token cannot settle twice).
pub(crate) async fn settle_delivered<E: Engine>(e: &E) {
    let id = put(e, event("r", T0, b"{}")).await;
    let lease = lease_one(e, "r", T0, T0 + 100).await;
    assert!(
        e.settle(id, lease.token, T0 + 5, Settle::Delivered)
            .await
            .unwrap()
    );
    let rec = record(e, id).await;
    assert_eq!(rec.state, State::Delivered);
    assert_eq!(rec.attempts, 1);
    assert_eq!(rec.next_attempt_at, None);
    assert_eq!(rec.last_error, None);
    assert_eq!(rec.updated_at, T0 + 5);
    assert!(
        !e.settle(id, lease.token, T0 + 6, Settle::Delivered)
            .await
            .unwrap()
    );
    assert!(
        e.lease("r", T0 + 500, T0 + 600, 10)
            .await
            .unwrap()
            .is_empty()
    );
}

/// Retry: pending, due at `at` (not before), with the error; a later
/// delivery clears the error.
pub(crate) async fn settle_retry<E: Engine>(e: &E) {
    let id = put(e, event("r", T0, b"{}")).await;
    let lease = lease_one(e, "r", T0, T0 + 100).await;
    let retry = Settle::Retry {
        at: T0 + 1_000,
        error: "status 503".into(),
    };
    assert!(e.settle(id, lease.token, T0 + 10, retry).await.unwrap());
    let rec = record(e, id).await;
    assert_eq!(rec.state, State::Pending);
    assert_eq!(rec.next_attempt_at, Some(T0 + 1_000));
    assert_eq!(rec.last_error.as_deref(), Some("status 503"));
    assert_eq!(rec.updated_at, T0 + 10);

    assert!(
        e.lease("r", T0 + 999, T0 + 2_000, 10)
            .await
            .unwrap()
            .is_empty()
    );
    let again = lease_one(e, "r", T0 + 1_000, T0 + 2_000).await;
    assert_eq!(again.attempt, 2);
    assert!(
        e.settle(id, again.token, T0 + 1_001, Settle::Delivered)
            .await
            .unwrap()
    );
    assert_eq!(record(e, id).await.last_error, None);
}

/// Dead: no next attempt, the error kept, never leased again.
pub(crate) async fn settle_dead<E: Engine>(e: &E) {
    let id = put(e, event("r", T0, b"{}")).await;
    let lease = lease_one(e, "r", T0, T0 + 100).await;
    assert!(
        e.settle(id, lease.token, T0 + 10, dead("status 422"))
            .await
            .unwrap()
    );
    let rec = record(e, id).await;
    assert_eq!(rec.state, State::Dead);
    assert_eq!(rec.next_attempt_at, None);
    assert_eq!(rec.last_error.as_deref(), Some("status 422"));
    assert_eq!(rec.updated_at, T0 + 10);
    assert!(
        e.lease("r", T0 + 10_000, T0 + 20_000, 10)
            .await
            .unwrap()
            .is_empty()
    );
}

/// Untried (leased ahead, given back): pending and due as it was, the
/// lease's attempt uncounted, the last error kept, leasable again at once;
/// a stale token changes nothing.
pub(crate) async fn settle_untried<E: Engine>(e: &E) {
    let id = put(e, event("r", T0, b"{}")).await;
    let first = lease_one(e, "r", T0, T0 + 100).await;
    let retry = Settle::Retry {
        at: T0 + 50,
        error: "status 503".into(),
    };
    assert!(e.settle(id, first.token, T0 + 10, retry).await.unwrap());
    let ahead = lease_one(e, "r", T0 + 60, T0 + 10_000).await;
    assert_eq!(ahead.attempt, 2);
    assert!(
        !e.settle(id, first.token, T0 + 70, Settle::Untried)
            .await
            .unwrap(),
        "a stale token gives nothing back"
    );
    assert!(
        e.settle(id, ahead.token, T0 + 70, Settle::Untried)
            .await
            .unwrap()
    );
    let rec = record(e, id).await;
    assert_eq!(rec.state, State::Pending);
    assert_eq!(rec.attempts, 1, "the lease given back is not an attempt");
    assert_eq!(rec.next_attempt_at, Some(T0 + 50), "due as it was");
    assert_eq!(rec.last_error.as_deref(), Some("status 503"));
    let again = lease_one(e, "r", T0 + 71, T0 + 10_000).await;
    assert_eq!(again.attempt, 2, "numbered as if never leased ahead");
    assert!(
        !e.settle(id, ahead.token, T0 + 80, Settle::Untried)
            .await
            .unwrap(),
        "an untried lease's token is gone"
    );
}

/// A replay or a drop under a running attempt makes its settle a no-op;
/// so does an unknown id.
pub(crate) async fn settle_after_replay_or_drop_is_lost<E: Engine>(e: &E) {
    let a = put(e, event("r", T0, b"a")).await;
    let b = put(e, event("r", T0, b"b")).await;
    let leases = e.lease("r", T0, T0 + 100, 10).await.unwrap();
    assert_eq!(leases.len(), 2);
    let token = |id| leases.iter().find(|l| l.id == id).unwrap().token;

    e.replay_ids(&[a], false, T0 + 5).await.unwrap();
    assert!(
        !e.settle(a, token(a), T0 + 6, Settle::Delivered)
            .await
            .unwrap()
    );
    let rec = record(e, a).await;
    assert_eq!((rec.state, rec.attempts), (State::Pending, 0));

    e.drop_ids(&[b]).await.unwrap();
    assert!(!e.settle(b, token(b), T0 + 6, dead("gone")).await.unwrap());
    assert!(e.get(b, false).await.unwrap().is_none());

    assert!(
        !e.settle(Uuid::now_v7(), 1, T0, Settle::Delivered)
            .await
            .unwrap()
    );
}

/// `next_due`: the earliest due time among pending events of the route, a
/// live lease pushing its event's to the lease's end.
pub(crate) async fn next_due_waits_for_leases<E: Engine>(e: &E) {
    assert_eq!(e.next_due("r").await.unwrap(), None);
    put(e, event("r", T0, b"a")).await;
    put(e, event("r", T0 + 500, b"b")).await;
    put(e, event("other", T0 - 1_000, b"c")).await;
    assert_eq!(e.next_due("r").await.unwrap(), Some(T0));

    lease_one(e, "r", T0, T0 + 1_000).await;
    assert_eq!(e.next_due("r").await.unwrap(), Some(T0 + 500));

    let b = lease_one(e, "r", T0 + 500, T0 + 800).await;
    assert_eq!(e.next_due("r").await.unwrap(), Some(T0 + 800));
    assert!(
        e.settle(b.id, b.token, T0 + 600, Settle::Delivered)
            .await
            .unwrap()
    );
    assert_eq!(e.next_due("r").await.unwrap(), Some(T0 + 1_000));
}

/// `list`: every filter field, `until` exclusive, newest first, `limit`.
pub(crate) async fn list_filters_newest_first<E: Engine>(e: &E) {
    let b = settled(e, "r1", T0 + 10, dead("status 400")).await;
    let a = put(e, event("r1", T0, b"a")).await;
    let c = put(e, event("r1", T0 + 20, b"c")).await;
    let d = put(e, event("r2", T0 + 5, b"d")).await;
    let list = |f: Filter| async move { ids(&e.list(&f).await.unwrap()) };

    assert_eq!(list(Filter::default()).await, vec![c, b, d, a]);
    let r1 = || Filter {
        route: Some("r1".into()),
        ..Filter::default()
    };
    assert_eq!(list(r1()).await, vec![c, b, a]);
    let dead_only = Filter {
        state: Some(State::Dead),
        ..Filter::default()
    };
    assert_eq!(list(dead_only).await, vec![b]);
    let since = Filter {
        since: Some(T0 + 5),
        ..Filter::default()
    };
    assert_eq!(list(since).await, vec![c, b, d]);
    let until = Filter {
        until: Some(T0 + 10),
        ..Filter::default()
    };
    assert_eq!(list(until).await, vec![d, a]);
    let window = Filter {
        since: Some(T0 + 5),
        until: Some(T0 + 20),
        ..r1()
    };
    assert_eq!(list(window).await, vec![b]);
    let limited = Filter {
        limit: Some(2),
        ..Filter::default()
    };
    assert_eq!(list(limited).await, vec![c, b]);
    let none = Filter {
        route: Some("r2".into()),
        state: Some(State::Dead),
        ..Filter::default()
    };
    assert_eq!(list(none).await, Vec::<Uuid>::new());

    let listed = e.list(&Filter::default()).await.unwrap();
    let b_rec = listed.iter().find(|r| r.id == b).unwrap();
    assert_eq!(b_rec.last_error.as_deref(), Some("status 400"));
    assert_eq!(b_rec.attempts, 1);
}

/// `get` returns the exact bytes (not UTF-8, NUL, empty) only when asked;
/// an unknown id is `None`.
pub(crate) async fn get_returns_exact_bytes<E: Engine>(e: &E) {
    let body: &[u8] = &[0xff, 0xfe, 0x00, 0x80, b'{', 0xc3, 0x28, b'}', 0x00];
    let headers: &[u8] = &[b'x', 0x00, 0xff, b'\n'];
    let ev = NewEvent {
        headers: Bytes::copy_from_slice(headers),
        ..event("r", T0, body)
    };
    let id = put(e, ev).await;
    let (rec, got) = e.get(id, true).await.unwrap().unwrap();
    assert_eq!(rec.id, id);
    assert_eq!(got.as_deref(), Some(body));
    let (_, none) = e.get(id, false).await.unwrap().unwrap();
    assert_eq!(none, None);
    let lease = lease_one(e, "r", T0, T0 + 100).await;
    assert_eq!((&lease.body[..], &lease.headers[..]), (body, headers));

    let empty = NewEvent {
        headers: Bytes::new(),
        ..event("r", T0 + 1, b"")
    };
    let empty_id = put(e, empty).await;
    let (_, got) = e.get(empty_id, true).await.unwrap().unwrap();
    assert_eq!(got.as_deref(), Some(&b""[..]));
    let lease = lease_one(e, "r", T0 + 1, T0 + 100).await;
    assert!(lease.headers.is_empty());

    assert!(e.get(Uuid::now_v7(), true).await.unwrap().is_none());
}

/// `replay_ids`: one answer per id; dead and pending come back at attempts
/// 0, due now, lease cleared, error kept; delivered only with `force`.
pub(crate) async fn replay_ids_by_state<E: Engine>(e: &E) {
    let delivered = settled(e, "r", T0, Settle::Delivered).await;
    let dead_id = settled(e, "r", T0, dead("status 404")).await;
    let pending = put(e, event("r", T0, b"{}")).await;
    lease_one(e, "r", T0, T0 + 10_000).await;
    let unknown = Uuid::now_v7();
    let before = record(e, delivered).await;

    let now = T0 + 100;
    let got = e
        .replay_ids(&[delivered, dead_id, pending, unknown], false, now)
        .await
        .unwrap();
    let back = |id, last_error: Option<&str>| Record {
        id,
        route: "r".into(),
        event: "popup.converted".into(),
        state: State::Pending,
        attempts: 0,
        received_at: T0,
        next_attempt_at: Some(now),
        last_error: last_error.map(str::to_owned),
        updated_at: now,
    };
    assert_eq!(
        got,
        vec![
            Replayed::Delivered(before.clone()),
            Replayed::Done(back(dead_id, Some("status 404"))),
            Replayed::Done(back(pending, None)),
            Replayed::NotFound,
        ]
    );
    assert_eq!(record(e, delivered).await, before);

    let forced = e.replay_ids(&[delivered], true, now).await.unwrap();
    assert_eq!(forced, vec![Replayed::Done(back(delivered, None))]);

    let leases = e.lease("r", now, now + 100, 10).await.unwrap();
    assert_eq!(leases.len(), 3, "the live lease was cleared too");
    assert!(leases.iter().all(|l| l.attempt == 1));
}

/// `replay_matching`: by state and route, `limit` ignored, delivered only
/// with `force`.
pub(crate) async fn replay_matching_dead<E: Engine>(e: &E) {
    let d1 = settled(e, "r1", T0, dead("status 400")).await;
    let d2 = settled(e, "r1", T0 + 1, dead("status 400")).await;
    let done = settled(e, "r1", T0 + 2, Settle::Delivered).await;
    let other = settled(e, "r2", T0, dead("status 400")).await;

    let dead_r1 = Filter {
        route: Some("r1".into()),
        state: Some(State::Dead),
        limit: Some(1),
        ..Filter::default()
    };
    assert_eq!(
        e.replay_matching(&dead_r1, false, T0 + 50).await.unwrap(),
        2
    );
    for id in [d1, d2] {
        let rec = record(e, id).await;
        assert_eq!((rec.state, rec.attempts), (State::Pending, 0));
        assert_eq!(rec.next_attempt_at, Some(T0 + 50));
    }
    assert_eq!(record(e, other).await.state, State::Dead);

    let all_r1 = Filter {
        route: Some("r1".into()),
        ..Filter::default()
    };
    assert_eq!(e.replay_matching(&all_r1, false, T0 + 60).await.unwrap(), 2);
    assert_eq!(record(e, done).await.state, State::Delivered);
    assert_eq!(e.replay_matching(&all_r1, true, T0 + 70).await.unwrap(), 3);
    assert_eq!(record(e, done).await.state, State::Pending);

    let none = Filter {
        state: Some(State::Dead),
        since: Some(T0 + 1),
        ..Filter::default()
    };
    assert_eq!(e.replay_matching(&none, false, T0 + 80).await.unwrap(), 0);
}

/// `drop_ids` answers the records as they were (or `None`); `drop_matching`
/// deletes what matches, `limit` ignored.
pub(crate) async fn drop_ids_and_matching<E: Engine>(e: &E) {
    let a = put(e, event("r1", T0, b"a")).await;
    let b = put(e, event("r1", T0 + 10, b"b")).await;
    let c = put(e, event("r1", T0 + 20, b"c")).await;
    let d = put(e, event("r2", T0, b"d")).await;
    let d2 = put(e, event("r2", T0 + 1, b"d2")).await;
    let a_rec = record(e, a).await;

    let unknown = Uuid::now_v7();
    assert_eq!(
        e.drop_ids(&[a, unknown]).await.unwrap(),
        vec![Some(a_rec), None]
    );
    assert!(e.get(a, false).await.unwrap().is_none());

    let late_r1 = Filter {
        route: Some("r1".into()),
        since: Some(T0 + 20),
        ..Filter::default()
    };
    assert_eq!(e.drop_matching(&late_r1).await.unwrap(), 1);
    assert!(e.get(c, false).await.unwrap().is_none());
    let r2 = Filter {
        route: Some("r2".into()),
        limit: Some(1),
        ..Filter::default()
    };
    assert_eq!(e.drop_matching(&r2).await.unwrap(), 2);
    assert!(e.get(d, false).await.unwrap().is_none());
    assert!(e.get(d2, false).await.unwrap().is_none());
    assert_eq!(ids(&e.list(&Filter::default()).await.unwrap()), vec![b]);
}

/// `stats`: counts by route and state, the oldest pending receipt (dead or
/// delivered events do not count for it).
pub(crate) async fn stats_counts_by_route<E: Engine>(e: &E) {
    assert!(e.stats().await.unwrap().is_empty());
    settled(e, "r1", T0, dead("status 400")).await;
    settled(e, "r1", T0 + 1, Settle::Delivered).await;
    put(e, event("r1", T0 + 10, b"{}")).await;
    put(e, event("r1", T0 + 5, b"{}")).await;
    settled(e, "r2", T0, Settle::Delivered).await;

    let mut stats = e.stats().await.unwrap();
    stats.sort_by(|x, y| x.route.cmp(&y.route));
    assert_eq!(
        stats,
        vec![
            RouteStats {
                route: "r1".into(),
                pending: 2,
                delivered: 1,
                dead: 1,
                oldest_pending_received_at: Some(T0 + 5),
            },
            RouteStats {
                route: "r2".into(),
                pending: 0,
                delivered: 1,
                dead: 0,
                oldest_pending_received_at: None,
            },
        ]
    );
}

/// `purge`: delivered and dead events past their route's retention (from
/// their last change), never pending ones, never routes not listed; dedup
/// keys past their expiry, and only those.
pub(crate) async fn purge_respects_retention<E: Engine>(e: &E) {
    let retention = [Retention {
        route: "r1".into(),
        delivered: 100,
        dead: 1_000,
    }];
    let done = {
        let id = put(e, keyed("r1", T0, b"done", 3, T0 + 5_000)).await;
        let lease = lease_one(e, "r1", T0, T0 + 100).await;
        assert!(
            e.settle(id, lease.token, T0 + 10, Settle::Delivered)
                .await
                .unwrap()
        );
        id
    };
    let gone = settled(e, "r1", T0 + 10, dead("status 400")).await;
    let pending = put(e, event("r1", T0 - 1_000_000, b"old but pending")).await;
    let unlisted = settled(e, "r2", T0 + 10, Settle::Delivered).await;
    e.remember(&key(1), "r1", T0 + 50).await.unwrap();
    e.remember(&key(2), "r1", T0 + 5_000).await.unwrap();

    assert_eq!(
        e.purge(T0 + 109, &retention, PurgePace::flat_out())
            .await
            .unwrap(),
        1,
        "key 1"
    );
    assert!(!e.seen(&key(1), T0).await.unwrap(), "the row went");
    assert!(e.get(done, false).await.unwrap().is_some());

    assert_eq!(
        e.purge(T0 + 110, &retention, PurgePace::flat_out())
            .await
            .unwrap(),
        1
    );
    assert!(e.get(done, false).await.unwrap().is_none());
    assert!(e.get(gone, false).await.unwrap().is_some());

    assert_eq!(
        e.purge(T0 + 1_010, &retention, PurgePace::flat_out())
            .await
            .unwrap(),
        1
    );
    assert!(e.get(gone, false).await.unwrap().is_none());
    assert_eq!(
        e.purge(T0 + 1_010, &retention, PurgePace::flat_out())
            .await
            .unwrap(),
        0
    );

    assert!(e.get(pending, false).await.unwrap().is_some());
    assert!(e.get(unlisted, false).await.unwrap().is_some());
    assert!(e.seen(&key(2), T0 + 1_010).await.unwrap());
    let retry = keyed("r1", T0 + 1_010, b"done", 3, T0 + 6_000);
    assert_eq!(
        e.ingest(vec![retry]).await.unwrap(),
        vec![Ingested::Duplicate],
        "a purged event keeps its key"
    );
}

/// Stores 2,500 events whose keys expire at `T0 + 50`, more than two purge
/// chunks of either engine; returns the first one's key.
async fn expiring_keys<E: Engine>(e: &E) -> Key {
    let batch: Vec<NewEvent> = (0..2_500)
        .map(|i| keyed_event("r1", T0 + i, format!("{{\"n\":{i}}}").as_bytes(), T0 + 50))
        .collect();
    let first = batch[0].dedup.as_ref().map(|d| d.key).unwrap();
    let outcome = e.ingest(batch).await.unwrap();
    assert!(outcome.iter().all(|o| *o == Ingested::Stored));
    first
}

/// `purge` deletes in chunks (so writes queued behind it wait for one chunk
/// only) and keeps going until nothing is left: 2,500 expired keys all go
/// in one call, and a purge flat out never waits between its chunks.
pub(crate) async fn purge_goes_past_one_chunk<E: Engine>(e: &E) {
    let first = expiring_keys(e).await;
    assert!(e.seen(&first, T0).await.unwrap());
    let flat = PurgePace::flat_out();
    assert_eq!(e.purge(T0 + 100, &[], flat.clone()).await.unwrap(), 2_500);
    assert_eq!(flat.waited(), std::time::Duration::ZERO);
    assert!(!e.seen(&first, T0).await.unwrap(), "the first chunk went");
    assert_eq!(
        e.purge(T0 + 100, &[], PurgePace::flat_out()).await.unwrap(),
        0
    );
}

/// A paced purge waits between its chunks and still deletes everything in
/// one call.
pub(crate) async fn purge_paced_waits_between_chunks<E: Engine>(e: &E) {
    expiring_keys(e).await;
    let paced = PurgePace::new(1, std::time::Duration::from_secs(3600));
    assert_eq!(e.purge(T0 + 100, &[], paced.clone()).await.unwrap(), 2_500);
    assert!(paced.waited() > std::time::Duration::ZERO, "it waited");
}

/// `ping` answers on a healthy store.
pub(crate) async fn ping_answers<E: Engine>(e: &E) {
    e.ping().await.unwrap();
}

/// Two handles on one store (two processes, two replicas) lease the same
/// due events at the same time: each event is leased exactly once.
pub(crate) async fn leases_race<E: Engine>(a: &E, b: &E) {
    let mut all = Vec::new();
    for chunk in 0..4 {
        let batch: Vec<NewEvent> = (0..50)
            .map(|i| event("r", T0 + chunk * 50 + i, b"{}"))
            .collect();
        all.extend(batch.iter().map(|ev| ev.id));
        a.ingest(batch).await.unwrap();
    }
    let (from_a, from_b) = tokio::join!(lease_all(a), lease_all(b));
    let mut taken: Vec<Uuid> = from_a.iter().chain(&from_b).copied().collect();
    taken.sort();
    all.sort();
    assert_eq!(taken, all, "every event leased exactly once");
}

/// Leases due events of route `r`, two at a time, until none is left.
async fn lease_all<E: Engine>(store: &E) -> Vec<Uuid> {
    let mut got = Vec::new();
    loop {
        let leased = store.lease("r", T0 + 1_000, T0 + 60_000, 2).await.unwrap();
        if leased.is_empty() {
            return got;
        }
        got.extend(leased.into_iter().map(|l| l.id));
        tokio::task::yield_now().await;
    }
}
