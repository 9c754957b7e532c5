//! The lab harness: the proxy and the sample services as one stack, and
//! scripted runs against it whose transcripts chapters show and tests pin.
//!
//! Everything runs in one process on loopback ports chosen by the OS, so the
//! lab needs no Docker, no root and no free port in particular.
//!
//! # Layout
//! - [`stack`]: boots frontend, tasks-api, three whoami replicas and the proxy
//!   in front of them; stops and restarts a service on demand.
//! - [`client`]: sends requests to the proxy with the Host a browser would send.
//! - [`transcript`]: records requests and answers as normalised text.
//! - [`scenario`]: scenario files (`lab/scenarios/*.toml`): scripted runs
//!   (routing, host routing, headers, round-robin, failover, HTTPS, rate
//!   limits, WebSockets) with expectations, and the runner that prints their transcripts.
//! - [`docker`]: Docker mode: the same stack as containers built locally
//!   (`lab images`), with the same surface as [`stack`].
//! - [`course`], [`code_exercise`]: the course's exercises (a config to write,
//!   or a piece of Rust against a trait of `course-kit`) and `lab check`.

pub mod bench;
pub mod chart;
pub mod client;
pub mod code_exercise;
pub mod course;
pub mod docker;
pub mod haproxy;
pub mod load;
pub mod nginx;
pub mod procstat;
pub mod scenario;
pub mod soak;
pub mod stack;
pub mod transcript;

pub use client::{Exchange, LabClient};
pub use stack::{Stack, StackOptions};
pub use transcript::Transcript;
