//! Load balancing: which server of a pool gets the next request.
//!
//! One file per algorithm, and this enum to dispatch between them, so the
//! choice is a plain `match` a learner can follow (no trait objects).

mod round_robin;

pub use round_robin::RoundRobin;

use crate::config::Balance;

/// A pool's balancer, built from its [`Balance`] setting.
#[derive(Debug)]
pub enum Balancer {
    /// Each request goes to the next server in turn.
    RoundRobin(RoundRobin),
}

impl Balancer {
    /// A balancer of `kind` over `servers` servers.
    pub fn new(kind: Balance, servers: usize) -> Balancer {
        match kind {
            Balance::RoundRobin => Balancer::RoundRobin(RoundRobin::new(servers)),
        }
    }

    /// The index of the server that gets the next request.
    pub fn pick(&self) -> usize {
        match self {
            Balancer::RoundRobin(rr) => rr.pick(),
        }
    }
}
