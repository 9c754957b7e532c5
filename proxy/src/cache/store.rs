//! Where cached responses live: in memory, bounded in bytes, the least
//! recently used thrown out first when a new one does not fit.
//!
//! One *key* (scheme, host, path and query) can hold several *variants*: a
//! response with `Vary: Accept-Language` is kept once per language asked for.
//! Eviction works per key, with all its variants.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use http::StatusCode;
use http::header::{HeaderMap, HeaderName};
use lru::LruCache;
use tokio::time::Instant;

use super::policy;

/// A stored response and what the cache knows about its freshness.
#[derive(Debug)]
pub struct Entry {
    /// The status, e.g. 200.
    pub status: StatusCode,
    /// Its headers, without hop-by-hop headers, `Age` and `Content-Length`
    /// (both are written again when it is served).
    pub headers: HeaderMap,
    /// The whole body.
    pub body: Bytes,
    /// The request header values it was chosen by (`Vary`).
    pub vary: Vec<(HeaderName, Option<Vec<u8>>)>,
    /// When it arrived, on tokio's clock (tests pause and advance it).
    pub stored_at: Instant,
    /// How old it already was when it arrived (`Age`, `Date`).
    pub initial_age: Duration,
    /// How long it is fresh, counted from its origin (`max-age`, ...).
    pub lifetime: Duration,
    /// How long past its lifetime it may be served while being refreshed.
    pub stale_while_revalidate: Duration,
    /// `no-cache`: revalidated before every use.
    pub no_cache: bool,
    /// `must-revalidate` (and kin): never served stale.
    pub forbids_stale: bool,
    /// Set while one background refresh (stale-while-revalidate) runs, so
    /// that a crowd of requests starts only one.
    pub refreshing: AtomicBool,
}

impl Entry {
    /// Its age now: what it had on arrival plus the time it has been here.
    pub fn age(&self, now: Instant) -> Duration {
        self.initial_age + now.saturating_duration_since(self.stored_at)
    }

    /// Fresh: younger than its lifetime. A fresh response is served without
    /// asking the origin.
    pub fn is_fresh(&self, now: Instant) -> bool {
        self.age(now) < self.lifetime
    }

    /// Seconds of freshness left, negative once stale (`Cache-Status` `ttl`):
    /// the lifetime less the `Age` header it is served with.
    pub fn ttl(&self, now: Instant) -> i64 {
        let secs = |d: Duration| i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
        secs(self.lifetime).saturating_sub(secs(self.age(now)))
    }

    /// Stale, but within its stale-while-revalidate window, and allowed to
    /// be served stale at all.
    pub fn may_serve_stale(&self, now: Instant) -> bool {
        !self.no_cache
            && !self.forbids_stale
            && self.age(now) < self.lifetime + self.stale_while_revalidate
    }

    /// Whether this variant was stored for a request like `request`.
    pub fn matches(&self, request: &HeaderMap) -> bool {
        self.vary
            .iter()
            .all(|(name, value)| policy::vary_value(request, name) == *value)
    }

    /// The bytes it takes: body, headers, and a little for the bookkeeping.
    pub fn size(&self) -> u64 {
        let headers: usize = self
            .headers
            .iter()
            .map(|(name, value)| name.as_str().len() + value.len())
            .sum();
        (self.body.len() + headers + 128) as u64
    }

    /// Marks a background refresh as started; `false` when one already is.
    pub fn claim_refresh(&self) -> bool {
        !self.refreshing.swap(true, Ordering::AcqRel)
    }

    /// The refresh ended without replacing the entry: another may start.
    pub fn release_refresh(&self) {
        self.refreshing.store(false, Ordering::Release);
    }
}

/// What a lookup found.
#[derive(Debug)]
pub enum Found {
    /// A variant stored for a request like this one (fresh or stale).
    Entry(Arc<Entry>),
    /// Responses for this URL exist, but none for this request's `Vary`'d headers.
    VaryMiss,
    /// Nothing for this URL.
    UriMiss,
}

/// An in-memory store bounded in bytes.
#[derive(Debug)]
pub struct Store {
    max_size: u64,
    inner: Mutex<Inner>,
}

#[derive(Debug)]
struct Inner {
    keys: LruCache<String, Vec<Arc<Entry>>>,
    bytes: u64,
}

impl Store {
    /// An empty store that keeps at most `max_size` bytes.
    pub fn new(max_size: u64) -> Store {
        Store {
            max_size,
            inner: Mutex::new(Inner {
                keys: LruCache::unbounded(),
                bytes: 0,
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic elsewhere cannot leave the map half-updated in a way that
        // matters more than losing the cache: keep serving.
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The variant of `key` stored for `request`, marking the key as recently used.
    pub fn get(&self, key: &str, request: &HeaderMap) -> Found {
        let mut inner = self.lock();
        match inner.keys.get(key) {
            None => Found::UriMiss,
            Some(variants) => variants
                .iter()
                .find(|e| e.matches(request))
                .map_or(Found::VaryMiss, |e| Found::Entry(e.clone())),
        }
    }

    /// Stores `entry` under `key`, replacing the variant with the same
    /// `Vary`'d values, then throws out least recently used keys until the
    /// store fits in its size again.
    pub fn insert(&self, key: String, entry: Entry) {
        let size = entry.size();
        let mut inner = self.lock();
        let mut freed = 0;
        let variants = inner.keys.get_or_insert_mut(key, Vec::new);
        variants.retain(|old| {
            let same = old.vary == entry.vary;
            if same {
                freed += old.size();
            }
            !same
        });
        variants.push(Arc::new(entry));
        inner.bytes = inner.bytes.saturating_sub(freed) + size;
        while inner.bytes > self.max_size {
            let Some((_, evicted)) = inner.keys.pop_lru() else {
                break;
            };
            let evicted: u64 = evicted.iter().map(|e| e.size()).sum();
            inner.bytes = inner.bytes.saturating_sub(evicted);
        }
    }

    /// Forgets every variant of `key`.
    pub fn remove(&self, key: &str) {
        let mut inner = self.lock();
        if let Some(variants) = inner.keys.pop(key) {
            let freed: u64 = variants.iter().map(|e| e.size()).sum();
            inner.bytes = inner.bytes.saturating_sub(freed);
        }
    }

    /// Bytes in use.
    pub fn bytes(&self) -> u64 {
        self.lock().bytes
    }

    /// Keys stored.
    pub fn len(&self) -> usize {
        self.lock().keys.len()
    }

    /// Whether nothing is stored.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn entry(body: usize, language: Option<&str>) -> Entry {
        Entry {
            status: StatusCode::OK,
            headers: HeaderMap::new(),
            body: Bytes::from(vec![b'x'; body]),
            vary: vec![(
                http::header::ACCEPT_LANGUAGE,
                language.map(|l| l.as_bytes().to_vec()),
            )],
            stored_at: Instant::now(),
            initial_age: Duration::ZERO,
            lifetime: Duration::from_secs(10),
            stale_while_revalidate: Duration::ZERO,
            no_cache: false,
            forbids_stale: false,
            refreshing: AtomicBool::new(false),
        }
    }

    fn asking(language: &str) -> HeaderMap {
        let mut map = HeaderMap::new();
        map.insert(
            http::header::ACCEPT_LANGUAGE,
            HeaderValue::from_str(language).expect("value"),
        );
        map
    }

    #[tokio::test]
    async fn variants_are_chosen_by_their_vary_values() {
        let store = Store::new(1 << 20);
        assert!(matches!(store.get("k", &asking("fr")), Found::UriMiss));
        store.insert("k".into(), entry(10, Some("fr")));
        store.insert("k".into(), entry(20, Some("de")));
        let Found::Entry(fr) = store.get("k", &asking("fr")) else {
            panic!("fr is stored");
        };
        assert_eq!(fr.body.len(), 10);
        assert!(matches!(store.get("k", &asking("en")), Found::VaryMiss));
        assert!(matches!(store.get("k", &HeaderMap::new()), Found::VaryMiss));
        // Replacing a variant frees the old one's bytes.
        store.insert("k".into(), entry(30, Some("fr")));
        assert_eq!(store.bytes(), 20 + 128 + 30 + 128);
    }

    #[tokio::test]
    async fn the_least_recently_used_key_goes_first() {
        let store = Store::new(3 * (100 + 128));
        store.insert("a".into(), entry(100, None));
        store.insert("b".into(), entry(100, None));
        store.insert("c".into(), entry(100, None));
        let _ = store.get("a", &HeaderMap::new());
        store.insert("d".into(), entry(100, None));
        assert!(matches!(store.get("b", &HeaderMap::new()), Found::UriMiss));
        assert!(matches!(store.get("a", &HeaderMap::new()), Found::Entry(_)));
        assert_eq!(store.len(), 3);
        assert_eq!(store.bytes(), 3 * 228);
        store.remove("a");
        assert_eq!(store.bytes(), 2 * 228);
    }

    #[tokio::test(start_paused = true)]
    async fn freshness_runs_on_the_tokio_clock() {
        let mut e = entry(1, None);
        e.initial_age = Duration::from_secs(2);
        e.stale_while_revalidate = Duration::from_secs(5);
        let start = Instant::now();
        assert!(e.is_fresh(start));
        assert_eq!(e.ttl(start), 8);
        let later = start + Duration::from_secs(9);
        assert!(!e.is_fresh(later));
        assert_eq!(e.ttl(later), -1);
        assert!(e.may_serve_stale(later));
        assert!(!e.may_serve_stale(start + Duration::from_secs(13)));
        assert!(e.claim_refresh());
        assert!(!e.claim_refresh());
        e.release_refresh();
        assert!(e.claim_refresh());
    }
}
