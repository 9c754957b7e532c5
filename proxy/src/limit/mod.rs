//! Traffic limits: how much a client may ask of the proxy.
//!
//! - [`rate`]: requests per second per key (nginx `limit_req`), a leaky bucket.

pub mod rate;

pub use rate::{Decision, RateLimitZone};
