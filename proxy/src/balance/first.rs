//! First: always the first usable server in config order, so the others only
//! get traffic when it is down. This is failover, not balancing: a primary and
//! its standbys (nginx's `backup` servers, HAProxy's `balance first`).

use super::Peer;

/// The failover balancer; it keeps no state.
#[derive(Debug, Default, Clone, Copy)]
pub struct First;

impl First {
    /// The lowest usable index; `None` when none is usable.
    pub fn pick<P: AsRef<Peer>>(
        &self,
        peers: &[P],
        usable: impl Fn(usize) -> bool,
    ) -> Option<usize> {
        (0..peers.len()).find(|&i| usable(i))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_usable_server_gets_every_request() {
        let peers: Vec<Peer> = (0..3)
            .map(|i| Peer::new(&format!("10.0.0.{i}:80"), 1))
            .collect();
        assert_eq!(First.pick(&peers, |_| true), Some(0));
        assert_eq!(First.pick(&peers, |i| i != 0), Some(1));
        assert_eq!(First.pick(&peers, |i| i == 2), Some(2));
        assert_eq!(First.pick(&peers, |_| false), None);
    }
}
