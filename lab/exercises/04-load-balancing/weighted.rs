//! Chapter 04, in Rust: smooth weighted round-robin, the order in which
//! nginx (and this proxy) take turns among the servers of an upstream.
//!
//! Check it with `cargo run -p lab -- check 04`; the chapter is
//! docs/04-load-balancing.md, a hint is `cargo run -p lab -- hint 04`.
//!
//! With weights 2, 1, 1, server 0 must get half of the requests and the
//! others a quarter each. `0 0 1 2` gives those shares, but sends server 0
//! two requests back to back; nginx gives `0 1 2 0`, the heavy server's turns
//! spread out. Its algorithm keeps one running score per server:
//!
//! 1. every server that can be picked adds its weight to its score;
//! 2. the server with the highest score is picked (on a tie, the lowest index);
//! 3. the picked server's score goes down by the total of the weights added in step 1.
//!
//! Over `total` picks, each server wins exactly `weight` times, and never in
//! a clump. Servers that are down (and servers of weight 0) take no part:
//! they add nothing, and cannot be picked.

use course_kit::weighted::Picker;

/// A smooth weighted round-robin picker.
pub struct Weighted {
    // TODO: what must it remember between two picks? (the weights, and ...)
}

impl Picker for Weighted {
    fn new(weights: &[u32]) -> Self {
        // TODO: keep the weights and start every score at 0.
        todo!("Weighted::new for weights {weights:?}")
    }

    fn pick(&mut self, up: &[bool]) -> Option<usize> {
        // TODO: steps 1 to 3 above, over the servers with `up[i]` and a weight above 0.
        // None when there is no such server.
        todo!("Weighted::pick with up = {up:?}")
    }
}
