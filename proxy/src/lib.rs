//! A small, real reverse proxy, written to be read.
//!
//! A reverse proxy is the one address clients talk to; behind it sit the
//! services that do the work. For every request it **receives** the request,
//! **decides** where it goes (by host name and path), **forwards** it to an
//! upstream server, and **returns** the answer, adding what the upstream needs
//! to know (who the client is) and removing what must not cross (hop-by-hop
//! headers).
//!
//! Start with [`proxy`]: `Proxy::handle_request` reads top to bottom as the
//! life of one request, and each step it calls lives in its own module.
//!
//! This proxy is meant to be understood *and* used in front of a small real
//! service; it is not (yet) a replacement for a hardened edge proxy.
//!
//! # Layout
//! - [`config`]: the TOML file, parsed and validated into a typed [`Config`];
//!   errors point at file, line and column.
//! - [`env_vars`]: `${NAME:-default}` in the file's strings, from the environment.
//! - [`server`]: listening sockets, one task per connection, graceful shutdown.
//! - [`conn_timeouts`]: a client connection's header and keep-alive timeouts.
//! - [`proxy`]: the request path, step by step.
//! - [`request_head`]: a request head's size limits and its `Host`, checked first.
//! - [`path`]: one spelling for every path (`..`, `//`, escapes) before routing.
//! - [`router`]: host and path matching, pure functions.
//! - [`balance`]: load-balancing algorithms, one file each.
//! - [`cache`]: response caching (RFC 9111): fresh, stale, revalidated, `Cache-Status`.
//! - [`cors`]: which other sites' pages may call this one, preflights answered here.
//! - [`access`]: the client's address (trusted proxies) and allow/deny lists.
//! - [`limit`]: request-rate limits (nginx `limit_req`), a leaky bucket per key.
//! - [`upstream`]: upstream pools, their servers' health (passive and active),
//!   DNS re-resolution, and pooled keep-alive connections.
//! - [`headers`]: forwarding headers and hop-by-hop headers.
//! - [`upgrade`]: WebSocket and other protocol switches: a 101, then a byte pipe.
//! - [`stream`]: layer 4: `[[stream]]` listeners copy TCP bytes to an upstream, unread;
//!   the PROXY protocol, SNI read without decrypting.
//! - [`tls`]: TLS termination, certificates chosen by SNI, ALPN.
//! - [`nginx`]: `proxy import-nginx`, an nginx config rewritten as this proxy's TOML.
//! - [`local_ca`]: a root CA of your own for local HTTPS (the lab's mkcert).
//! - [`error`]: failures and the status each becomes, with `Proxy-Status`.
//! - [`body`]: the streamed body type.
//! - [`trace`]: the decision trace, `X-Lab-Trace: 1`: why the proxy did what it did.

pub mod access;
pub mod access_log;
pub mod admin;
pub mod balance;
pub mod body;
pub mod cache;
pub mod compress;
pub mod config;
pub mod conn_timeouts;
pub mod cors;
pub mod env_vars;
pub mod error;
pub mod header_rules;
pub mod headers;
pub mod limit;
pub mod lint;
pub mod local_ca;
pub mod logging;
pub mod metrics;
pub mod nginx;
pub mod path;
pub mod proxy;
pub mod request_head;
pub mod request_id;
pub mod rewrite;
pub mod router;
pub mod server;
pub mod stream;
pub mod tls;
pub mod trace;
pub mod upgrade;
pub mod upstream;

pub use config::{Config, ConfigErrors, Diagnostic, Severity};

/// Sends logs to stderr (stdout stays free for what scripts read), filtered by
/// `RUST_LOG` (default `info`), in colour only when stderr is a terminal.
pub fn init_logging() {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
}
pub use proxy::Proxy;

/// The runtime the proxy runs on, for `workers` threads (`None`: one per core).
///
/// One worker is one single-threaded event loop, like one nginx worker
/// process: every connection's task runs on the thread that accepted it, so
/// waking a task is a local queue push, with no locks or work stealing
/// between threads. In `lab bench` this serves about a third more requests
/// per second than tokio's multi-threaded scheduler given one thread. Several
/// workers share the connections with tokio's work-stealing scheduler.
pub fn build_runtime(workers: Option<usize>) -> std::io::Result<tokio::runtime::Runtime> {
    match workers {
        Some(1) => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build(),
        Some(n) => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(n)
            .enable_all()
            .build(),
        None => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build(),
    }
}
pub use server::ProxyServer;

#[cfg(test)]
mod tests {
    use tokio::runtime::RuntimeFlavor;

    #[test]
    fn one_worker_is_one_event_loop_and_more_share_the_work() {
        let flavor = |workers| {
            super::build_runtime(workers)
                .expect("a runtime")
                .handle()
                .runtime_flavor()
        };
        assert_eq!(flavor(Some(1)), RuntimeFlavor::CurrentThread);
        assert_eq!(flavor(Some(2)), RuntimeFlavor::MultiThread);
        assert_eq!(flavor(None), RuntimeFlavor::MultiThread);
    }
}
