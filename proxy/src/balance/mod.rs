//! Load balancing: which server of a pool gets the next request.
//!
//! One file per algorithm, and the [`Balancer`] enum to dispatch between
//! them, so the choice is a plain `match` a learner can follow (no trait
//! objects):
//!
//! - [`round_robin`]: in turn, in proportion to each server's `weight`
//!   (nginx's smooth weighted round-robin, its default);
//! - [`least_conn`]: the server with the fewest requests in progress, for
//!   its weight (nginx `least_conn`);
//! - [`random_two`]: two servers at random, the less busy one wins (the
//!   "power of two choices", nginx `random two least_conn`);
//! - [`hash`]: the same key (client address, header, cookie) always goes to
//!   the same server, and adding or removing a server moves only the keys it
//!   gains or loses (consistent hashing, nginx `hash ... consistent`);
//! - [`first`]: the first server that is up, in config order (failover).
//!
//! A balancer only chooses among servers the caller calls *usable*: the pool
//! leaves out servers that are down (health checks) and servers this request
//! already tried (retries). When none is usable, there is no choice.

pub mod first;
pub mod hash;
pub mod least_conn;
pub mod random_two;
pub mod round_robin;

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

pub use first::First;
pub use hash::ConsistentHash;
pub use least_conn::LeastConn;
pub use random_two::RandomTwo;
pub use round_robin::RoundRobin;

use crate::config::Balance;

/// One server as a balancer sees it: where it is, its share, and how busy it
/// is right now.
#[derive(Debug)]
pub struct Peer {
    /// `host:port`; also the server's identity for [`hash`].
    pub address: Arc<str>,
    /// Its share of the requests relative to the others (nginx `weight=`), at least 1.
    pub weight: u32,
    /// A fixed hash of `address`, so that [`hash`] maps keys the same way in
    /// every process and after every restart.
    pub id: u64,
    in_flight: AtomicU32,
}

impl Peer {
    /// A server at `address` with `weight` (0 is taken as 1).
    pub fn new(address: &str, weight: u32) -> Peer {
        Peer {
            address: Arc::from(address),
            weight: weight.max(1),
            id: stable_hash(address.as_bytes()),
            in_flight: AtomicU32::new(0),
        }
    }

    /// Requests sent to this server whose responses have not ended yet.
    pub fn in_flight(&self) -> u32 {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Counts a request as in progress until the returned guard is dropped.
    pub fn begin_request(self: &Arc<Self>) -> PeerRequest {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        PeerRequest(self.clone())
    }
}

impl AsRef<Peer> for Peer {
    fn as_ref(&self) -> &Peer {
        self
    }
}

/// A request in progress on a [`Peer`]; dropping it ends the request.
#[derive(Debug)]
pub struct PeerRequest(Arc<Peer>);

impl Drop for PeerRequest {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Helpers for the balancers' tests.
#[cfg(test)]
pub(crate) mod test_support {
    use std::sync::Arc;

    use super::{Peer, PeerRequest};

    /// Servers `10.0.0.0:80`, `10.0.0.1:80`, ... with these weights.
    pub fn peers(weights: &[u32]) -> Vec<Arc<Peer>> {
        weights
            .iter()
            .enumerate()
            .map(|(i, &w)| Arc::new(Peer::new(&format!("10.0.0.{i}:80"), w)))
            .collect()
    }

    /// Starts `n` requests on `peer`; they last as long as the returned guards.
    pub fn busy(peer: &Arc<Peer>, n: usize) -> Vec<PeerRequest> {
        (0..n).map(|_| peer.begin_request()).collect()
    }
}

/// FNV-1a, 64 bits: a hash that is the same on every machine and in every
/// release, unlike the standard library's, so consistent hashing maps a key
/// to the same server wherever the proxy runs.
pub fn stable_hash(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for &byte in bytes {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

/// A pool's balancer, built from its [`Balance`] setting.
#[derive(Debug)]
pub enum Balancer {
    /// In turn, by weight.
    RoundRobin(RoundRobin),
    /// Fewest requests in progress, by weight.
    LeastConn(LeastConn),
    /// The less busy of two random servers.
    RandomTwo(RandomTwo),
    /// By a hash of a request key; consistent.
    Hash(ConsistentHash),
    /// The first usable server.
    First(First),
}

impl Balancer {
    /// A balancer of `kind`.
    pub fn new(kind: Balance) -> Balancer {
        match kind {
            Balance::RoundRobin => Balancer::RoundRobin(RoundRobin::new()),
            Balance::LeastConn => Balancer::LeastConn(LeastConn::new()),
            Balance::RandomTwo => Balancer::RandomTwo(RandomTwo::new()),
            Balance::Hash => Balancer::Hash(ConsistentHash::new()),
            Balance::First => Balancer::First(First),
        }
    }

    /// The index in `peers` of the server that gets the next request, among
    /// those for which `usable(index)` is true; `None` when there is none.
    ///
    /// `key` is the request's hash key ([`stable_hash`] of the client address,
    /// header or cookie); only [`hash`] reads it, and falls back to
    /// round-robin without one (nginx does the same for an empty key).
    pub fn pick<P: AsRef<Peer>>(
        &self,
        peers: &[P],
        usable: impl Fn(usize) -> bool,
        key: Option<u64>,
    ) -> Option<usize> {
        match self {
            Balancer::RoundRobin(b) => b.pick(peers, usable),
            Balancer::LeastConn(b) => b.pick(peers, usable),
            Balancer::RandomTwo(b) => b.pick(peers, usable),
            Balancer::Hash(b) => b.pick(peers, usable, key),
            Balancer::First(b) => b.pick(peers, usable),
        }
    }
}
