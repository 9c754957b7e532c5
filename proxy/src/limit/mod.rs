//! Traffic limits: how much a client may ask of the proxy.
//!
//! - [`rate`]: requests per second per key (nginx `limit_req`), a leaky bucket.
//! - [`conn`]: requests in progress at once per key (nginx `limit_conn`).

pub mod conn;
pub mod rate;

pub use conn::{ConnLimitZone, ConnPermit};
pub use rate::{Decision, RateLimitZone};
