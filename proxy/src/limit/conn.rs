//! Concurrency limits with nginx's `limit_conn` semantics: at most N requests
//! of one key (usually a client address) in progress at once.
//!
//! A request takes a slot when it passes the limit and gives it back when its
//! response has been sent completely (or the client went away), so a slow
//! download keeps its slot for as long as it runs. A request that finds every
//! slot taken is refused at once (503 by default), never queued.
//!
//! Only keys with requests in progress are remembered, so memory follows the
//! number of requests being served, whatever the number of clients.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::LimitKey;

/// A named set of counters, one per key.
#[derive(Debug)]
pub struct ConnLimitZone {
    /// The zone's name from the config.
    pub name: String,
    counts: Arc<Mutex<HashMap<LimitKey, u32>>>,
}

/// A slot taken in a [`ConnLimitZone`]; dropping it gives the slot back.
#[derive(Debug)]
pub struct ConnPermit {
    counts: Arc<Mutex<HashMap<LimitKey, u32>>>,
    key: LimitKey,
}

impl ConnLimitZone {
    /// An empty zone.
    pub fn new(name: &str) -> ConnLimitZone {
        ConnLimitZone {
            name: name.to_owned(),
            counts: Arc::default(),
        }
    }

    /// Takes a slot for `key` if fewer than `max` are taken.
    pub fn try_acquire(&self, key: LimitKey, max: u32) -> Option<ConnPermit> {
        // A poisoned lock means a panic elsewhere: fail open.
        let Ok(mut counts) = self.counts.lock() else {
            return Some(ConnPermit {
                counts: Arc::default(),
                key,
            });
        };
        let count = counts.entry(key).or_insert(0);
        if *count >= max {
            if *count == 0 {
                counts.remove(&key);
            }
            return None;
        }
        *count += 1;
        Some(ConnPermit {
            counts: self.counts.clone(),
            key,
        })
    }

    /// How many requests of `key` are in progress.
    pub fn in_progress(&self, key: LimitKey) -> u32 {
        self.counts
            .lock()
            .map_or(0, |c| c.get(&key).copied().unwrap_or(0))
    }

    /// How many keys have requests in progress.
    pub fn keys(&self) -> usize {
        self.counts.lock().map_or(0, |c| c.len())
    }
}

impl Drop for ConnPermit {
    fn drop(&mut self) {
        if let Ok(mut counts) = self.counts.lock()
            && let Some(count) = counts.get_mut(&self.key)
        {
            *count = count.saturating_sub(1);
            if *count == 0 {
                counts.remove(&self.key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(ip: &str) -> LimitKey {
        LimitKey::ip(ip.parse().expect("an IP address"))
    }

    #[test]
    fn slots_are_taken_up_to_the_limit_and_given_back_on_drop() {
        let zone = ConnLimitZone::new("addr");
        let a = zone.try_acquire(key("10.0.0.1"), 2).expect("first");
        let b = zone.try_acquire(key("10.0.0.1"), 2).expect("second");
        assert!(
            zone.try_acquire(key("10.0.0.1"), 2).is_none(),
            "third is refused"
        );
        assert!(
            zone.try_acquire(key("10.0.0.2"), 2).is_some(),
            "another key has its own slots"
        );
        drop(a);
        assert_eq!(zone.in_progress(key("10.0.0.1")), 1);
        let _c = zone
            .try_acquire(key("10.0.0.1"), 2)
            .expect("a slot came back");
        drop(b);
    }

    #[test]
    fn keys_without_requests_in_progress_are_forgotten() {
        let zone = ConnLimitZone::new("addr");
        for i in 0u32..10_000 {
            drop(zone.try_acquire(LimitKey::ip(std::net::Ipv4Addr::from(i).into()), 1));
        }
        assert_eq!(zone.keys(), 0);
        assert!(zone.try_acquire(LimitKey::hashed(b"x"), 0).is_none());
        assert_eq!(zone.keys(), 0);
    }
}
