//! Round-robin: server 0, 1, 2, 0, 1, 2, ... — every server gets the same share.
//!
//! This is nginx's default for an `upstream` block, and what the classic
//! tutorial proves by asking three replicas for their host names in turn.
//! One atomic counter shared by all worker threads: no lock on the hot path.

use std::sync::atomic::{AtomicUsize, Ordering};

/// A round-robin balancer over a fixed number of servers.
#[derive(Debug)]
pub struct RoundRobin {
    next: AtomicUsize,
    servers: usize,
}

impl RoundRobin {
    /// A balancer over `servers` servers, starting with the first.
    pub fn new(servers: usize) -> RoundRobin {
        RoundRobin {
            next: AtomicUsize::new(0),
            servers: servers.max(1),
        }
    }

    /// The next server's index. The counter wraps around at `usize::MAX`,
    /// which only breaks the rotation once in 2^64 requests.
    pub fn pick(&self) -> usize {
        self.next.fetch_add(1, Ordering::Relaxed) % self.servers
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn servers_are_picked_in_turn() {
        let rr = RoundRobin::new(3);
        let picks: Vec<usize> = (0..7).map(|_| rr.pick()).collect();
        assert_eq!(picks, vec![0, 1, 2, 0, 1, 2, 0]);
    }

    #[test]
    fn a_single_server_is_always_picked() {
        let rr = RoundRobin::new(1);
        assert!((0..5).all(|_| rr.pick() == 0));
    }
}
