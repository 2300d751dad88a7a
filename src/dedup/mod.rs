//! Duplicate detection: has this route already delivered these exact bytes?
//!
//! The key is SHA-256 over the route name, one zero byte, and the raw body
//! (SPEC "Duplicates"): the provider's retry of an event carries the same
//! bytes, a different event never does. Only the event types a route lists
//! in `dedup_events` are checked (`popup.converted` by default: two
//! `popup.shown` bodies can be byte-identical for two visitors, and both
//! are real).
//!
//! Keys live in memory ([`MemoryKeys`], bounded by `[dedup] max_keys`,
//! oldest evicted first) when there is no `[store]`, and in the store when
//! there is one, so they survive a restart and are shared by replicas.
//! [`InFlight`] makes copies that arrive while the first is still at the
//! app wait for its answer instead of reaching the app twice.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};

use prometheus_client::metrics::counter::Counter;
use sha2::{Digest, Sha256};
use tokio::sync::watch;

use crate::delivery::Queue;
use crate::store::StoreError;

/// SHA-256 over the route name, one zero byte, and the raw body.
pub(crate) type Key = [u8; 32];

/// Where a sidecar remembers keys, and the copies in flight.
#[derive(Debug)]
pub(crate) struct Dedup {
    memory: MemoryKeys,
    /// With a `[store]`: keys live there (shared by replicas, kept over a
    /// restart) once it is open; in memory until then.
    queue: Option<Arc<Queue>>,
    flights: Arc<InFlight>,
}

impl Dedup {
    /// Keys in memory, at most `max_keys`, or in the store of `queue`.
    pub(crate) fn new(max_keys: usize, evictions: Counter, queue: Option<Arc<Queue>>) -> Self {
        Self {
            memory: MemoryKeys::new(max_keys, evictions),
            queue,
            flights: Arc::default(),
        }
    }

    fn store(&self) -> Option<&crate::store::Store> {
        self.queue.as_ref().and_then(|q| q.store())
    }

    /// Whether `key` is remembered at `now` (Unix ms).
    pub(crate) async fn seen(&self, key: &Key, now: i64) -> Result<bool, StoreError> {
        match self.store() {
            Some(store) => store.seen(key, now).await,
            None => Ok(self.memory.seen(key, now)),
        }
    }

    /// Remembers `key` of `route` until `expires_at` (Unix ms).
    pub(crate) async fn remember(
        &self,
        key: &Key,
        route: &str,
        expires_at: i64,
        now: i64,
    ) -> Result<(), StoreError> {
        match self.store() {
            Some(store) => store.remember(key, route, expires_at).await,
            None => {
                self.memory.remember(key, expires_at, now);
                Ok(())
            }
        }
    }

    /// Joins the copies of `key` at the app.
    pub(crate) fn join(&self, key: Key) -> Flight {
        self.flights.join(key)
    }
}

/// The duplicate key of `body` on `route`.
pub(crate) fn key(route: &str, body: &[u8]) -> Key {
    let mut h = Sha256::new();
    h.update(route.as_bytes());
    h.update([0u8]);
    h.update(body);
    h.finalize().into()
}

/// Keys remembered in memory until they expire, at most `max_keys` of them;
/// past that the oldest is forgotten first (and counted in
/// `hookgate_dedup_evictions_total`).
///
/// Compact, since `max_keys` may be a million: a key is held as the first
/// 8 bytes of its SHA-256 ([`Short`]) and its expiry as whole Unix seconds,
/// rounded up (a key is remembered up to 999 ms longer than asked, never
/// shorter), so one entry is 12 bytes in the map and 12 in the order queue:
/// about 40 bytes a key with the map's spare capacity (`benches/load/
/// dedup_memory.sh`: about 100 before, with `u128` keys and `i64` ms).
/// 64 bits of SHA-256 make a new event's accidental match with one of a
/// million remembered keys about 5·10⁻¹⁴ likely.
#[derive(Debug)]
pub(crate) struct MemoryKeys {
    inner: Mutex<Inner>,
    max_keys: usize,
    evictions: Counter,
}

/// The first 8 bytes of a key, 4-byte aligned so that a `(Short, u32)`
/// entry takes 12 bytes, not 16.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(C, packed(4))]
struct Short(u64);

#[derive(Debug, Default)]
struct Inner {
    /// Key → expiry (Unix seconds, rounded up).
    expires: HashMap<Short, u32>,
    /// Keys in the order they were remembered, with the expiry they were
    /// remembered with (an entry whose expiry no longer matches `expires`
    /// was renewed later and is skipped).
    order: VecDeque<(Short, u32)>,
}

fn short(key: &Key) -> Short {
    let mut b = [0u8; 8];
    b.copy_from_slice(&key[..8]);
    Short(u64::from_le_bytes(b))
}

/// Unix ms → whole Unix seconds, rounded up (0 before 1970, `u32::MAX` from
/// 2106 on).
fn secs_up(ms: i64) -> u32 {
    let s = (ms.max(0) as u64).div_ceil(1000);
    u32::try_from(s).unwrap_or(u32::MAX)
}

/// Whether an expiry in seconds is past at `now` (Unix ms).
fn expired(until: u32, now: i64) -> bool {
    i64::from(until) * 1000 <= now
}

impl MemoryKeys {
    /// An empty set holding at most `max_keys` keys; evictions are counted
    /// on `evictions`.
    pub(crate) fn new(max_keys: usize, evictions: Counter) -> Self {
        Self {
            inner: Mutex::default(),
            max_keys: max_keys.max(1),
            evictions,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether `key` is remembered and not expired at `now` (Unix ms).
    pub(crate) fn seen(&self, key: &Key, now: i64) -> bool {
        self.lock()
            .expires
            .get(&short(key))
            .is_some_and(|&until| !expired(until, now))
    }

    /// Remembers `key` until `expires_at` (Unix ms; never shortening a
    /// longer memory), forgetting expired keys and, past `max_keys`, the
    /// oldest.
    pub(crate) fn remember(&self, key: &Key, expires_at: i64, now: i64) {
        let k = short(key);
        let expires_at = secs_up(expires_at);
        let mut inner = self.lock();
        let until = inner.expires.entry(k).or_insert(expires_at);
        *until = (*until).max(expires_at);
        let until = *until;
        inner.order.push_back((k, until));
        // Forget from the oldest end: expired keys, renewed entries, and
        // whatever is past the bound.
        while let Some(&(front, front_until)) = inner.order.front() {
            let current = inner.expires.get(&front).copied();
            let stale = current != Some(front_until);
            let expired = expired(front_until, now);
            let over = inner.expires.len() > self.max_keys;
            if !(stale || expired || over) {
                break;
            }
            inner.order.pop_front();
            if !stale {
                inner.expires.remove(&front);
                if over && !expired {
                    self.evictions.inc();
                }
            }
        }
    }

    /// How many keys are remembered.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().expires.len()
    }
}

/// Copies of one key that are at the app right now.
#[derive(Debug, Default)]
pub(crate) struct InFlight {
    flights: Mutex<HashMap<Key, watch::Receiver<Option<bool>>>>,
}

/// Who a request is among the copies of its key.
pub(crate) enum Flight {
    /// The first copy: it goes to the app and tells the others how it went.
    Leader(Leader),
    /// A later copy: wait for the leader's answer (`Some(true)`: the app
    /// took it).
    Follower(watch::Receiver<Option<bool>>),
}

/// The copy at the app; tells waiting copies the outcome when finished (or
/// "not delivered" when dropped unfinished).
pub(crate) struct Leader {
    key: Key,
    owner: Arc<InFlight>,
    tx: watch::Sender<Option<bool>>,
}

impl InFlight {
    /// Joins the flight of `key`: the first copy leads, the others follow.
    pub(crate) fn join(self: &Arc<Self>, key: Key) -> Flight {
        let mut flights = self.flights.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(rx) = flights.get(&key) {
            return Flight::Follower(rx.clone());
        }
        let (tx, rx) = watch::channel(None);
        flights.insert(key, rx);
        Flight::Leader(Leader {
            key,
            owner: self.clone(),
            tx,
        })
    }
}

impl Leader {
    /// Tells the followers whether the app took the event (2xx).
    pub(crate) fn finish(self, delivered: bool) {
        self.tx.send_replace(Some(delivered));
        // Drop removes the flight.
    }
}

impl Drop for Leader {
    fn drop(&mut self) {
        self.owner
            .flights
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&self.key);
        if self.tx.borrow().is_none() {
            self.tx.send_replace(Some(false));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_covers_route_and_exact_bytes() {
        let a = key("coolpopup", b"{\"a\":1}");
        assert_eq!(a, key("coolpopup", b"{\"a\":1}"));
        assert_ne!(a, key("leads", b"{\"a\":1}"), "per route");
        assert_ne!(a, key("coolpopup", b"{\"a\": 1}"), "exact bytes");
        // The zero byte keeps route and body apart.
        assert_ne!(key("ab", b"c"), key("a", b"bc"));
    }

    #[test]
    fn keys_expire_and_are_renewed_not_shortened() {
        let keys = MemoryKeys::new(10, Counter::default());
        let k = key("r", b"x");
        assert!(!keys.seen(&k, 0));
        keys.remember(&k, 1_000, 0);
        assert!(keys.seen(&k, 999));
        assert!(!keys.seen(&k, 1_000), "expired at its time");
        keys.remember(&k, 500, 0);
        assert!(keys.seen(&k, 999), "a shorter memory does not shorten it");
        keys.remember(&k, 2_000, 0);
        assert!(keys.seen(&k, 1_999));
    }

    #[test]
    fn oldest_keys_are_evicted_past_the_bound_and_counted() {
        let evictions = Counter::default();
        let keys = MemoryKeys::new(3, evictions.clone());
        let ks: Vec<Key> = (0..5u8).map(|i| key("r", &[i])).collect();
        for k in &ks {
            keys.remember(k, 10_000, 0);
        }
        assert_eq!(keys.len(), 3);
        assert_eq!(evictions.get(), 2);
        assert!(!keys.seen(&ks[0], 1) && !keys.seen(&ks[1], 1));
        assert!(ks[2..].iter().all(|k| keys.seen(k, 1)));
        // Expired keys go without counting as evictions.
        keys.remember(&key("r", b"late"), 20_000, 10_000);
        assert_eq!(keys.len(), 1);
        assert_eq!(evictions.get(), 2);
    }

    #[test]
    fn expiry_is_kept_in_seconds_rounded_up() {
        let keys = MemoryKeys::new(10, Counter::default());
        let k = key("r", b"x");
        // 1.001 s is kept as 2 s: remembered a little longer, never shorter.
        keys.remember(&k, 1_001, 0);
        assert!(keys.seen(&k, 1_001) && keys.seen(&k, 1_999));
        assert!(!keys.seen(&k, 2_000));
        assert_eq!(secs_up(-5), 0);
        assert_eq!(secs_up(i64::MAX), u32::MAX);
    }

    #[test]
    fn an_entry_takes_12_bytes() {
        assert_eq!(std::mem::size_of::<(Short, u32)>(), 12);
    }

    #[test]
    fn many_keys_are_all_held_and_told_apart() {
        let keys = MemoryKeys::new(200_000, Counter::default());
        let ks: Vec<Key> = (0..200_000u32)
            .map(|i| key("r", &i.to_le_bytes()))
            .collect();
        for k in &ks {
            assert!(!keys.seen(k, 0), "no accidental match among distinct keys");
            keys.remember(k, 60_000, 0);
        }
        assert_eq!(keys.len(), 200_000);
        assert!(ks.iter().step_by(997).all(|k| keys.seen(k, 1)));
    }

    #[tokio::test]
    async fn followers_learn_the_leaders_outcome() {
        let flights = Arc::new(InFlight::default());
        let k = key("r", b"x");
        let Flight::Leader(leader) = flights.join(k) else {
            panic!("the first copy leads")
        };
        let Flight::Follower(mut rx) = flights.join(k) else {
            panic!("the second copy follows")
        };
        leader.finish(true);
        assert_eq!(*rx.wait_for(Option::is_some).await.unwrap(), Some(true));
        assert!(matches!(flights.join(k), Flight::Leader(_)), "flight over");
        // A leader dropped unfinished says "not delivered".
        let Flight::Leader(leader) = flights.join(k) else {
            panic!()
        };
        let Flight::Follower(mut rx) = flights.join(k) else {
            panic!()
        };
        drop(leader);
        assert_eq!(*rx.wait_for(Option::is_some).await.unwrap(), Some(false));
    }
}
