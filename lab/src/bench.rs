//! `lab bench`: what a proxy hop costs, measured as a user would measure it.
//!
//! One small backend answers `ok`; the same closed-loop load (see
//! [`crate::load`]) is sent straight to it, through this proxy, and through
//! nginx when it is installed, each with keep-alive connections to the
//! backend. Each side runs on its own threads: the backend on one, the proxy
//! on `workers`, nginx with as many `worker_processes`, the load generator on
//! the rest, so they compete for the cores as they would on one machine.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde::Serialize;

use crate::load::{self, LoadOptions, LoadReport};
use crate::nginx::{Nginx, NginxSetup, find_nginx};

/// How to run the comparison.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// Client connections.
    pub connections: usize,
    /// How long each target is loaded (after a short warm-up).
    pub duration: Duration,
    /// Proxy worker threads, and nginx `worker_processes`.
    pub workers: usize,
}

/// One target's figures.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    /// `direct`, `proxy` or `nginx`.
    pub target: String,
    /// Successful requests per second.
    pub requests_per_second: f64,
    /// Latency percentiles, microseconds.
    pub p50_us: u64,
    /// 99th percentile.
    pub p99_us: u64,
    /// 99.9th percentile.
    pub p999_us: u64,
    /// Failed requests.
    pub errors: u64,
}

impl Row {
    fn new(target: &str, report: &LoadReport) -> Row {
        Row {
            target: target.to_owned(),
            requests_per_second: report.requests_per_second(),
            p50_us: report.p50_us,
            p99_us: report.p99_us,
            p999_us: report.p999_us,
            errors: report.errors,
        }
    }
}

/// The comparison's result: one row per target, and why a target is missing.
#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    /// Client connections.
    pub connections: usize,
    /// Seconds each target was loaded.
    pub seconds: f64,
    /// Proxy workers and nginx worker processes.
    pub workers: usize,
    /// The figures.
    pub rows: Vec<Row>,
    /// Targets left out, with the reason.
    pub skipped: Vec<String>,
}

impl BenchReport {
    /// The table, for a terminal.
    pub fn table(&self) -> String {
        let mut out = format!(
            "{} connections, {:.0} s each, {} worker(s)\n{:<8} {:>12} {:>9} {:>9} {:>9} {:>7}\n",
            self.connections,
            self.seconds,
            self.workers,
            "target",
            "requests/s",
            "p50 ms",
            "p99 ms",
            "p99.9 ms",
            "errors"
        );
        for row in &self.rows {
            out.push_str(&format!(
                "{:<8} {:>12.0} {:>9.3} {:>9.3} {:>9.3} {:>7}\n",
                row.target,
                row.requests_per_second,
                row.p50_us as f64 / 1000.0,
                row.p99_us as f64 / 1000.0,
                row.p999_us as f64 / 1000.0,
                row.errors
            ));
        }
        let rate = |name: &str| {
            self.rows
                .iter()
                .find(|r| r.target == name)
                .map(|r| r.requests_per_second)
        };
        if let (Some(proxy), Some(nginx)) = (rate("proxy"), rate("nginx")) {
            out.push_str(&format!(
                "proxy / nginx: {:.2}x the requests per second\n",
                proxy / nginx.max(1.0)
            ));
        }
        for reason in &self.skipped {
            out.push_str(&format!("skipped: {reason}\n"));
        }
        out
    }
}

/// Runs the comparison.
pub async fn run(options: &BenchOptions) -> Result<BenchReport, String> {
    let backend = start_on_own_thread("bench-backend", 1, backend)?;
    let proxy_config = format!(
        "workers = {}\n[[listen]]\naddr = \"127.0.0.1:0\"\n[[servers]]\nroutes = [{{ path = \"/\", upstream = \"backend\" }}]\n[upstreams.backend]\nservers = [\"{backend}\"]\n",
        options.workers.max(1)
    );
    let config = proxy::Config::parse(&proxy_config, "bench.toml").map_err(|e| e.to_string())?;
    let proxy = start_on_own_thread("bench-proxy", options.workers.max(1), move || async move {
        let server = proxy::ProxyServer::bind(config)
            .await
            .map_err(|e| e.to_string())?;
        let addr = server.local_addrs()[0];
        tokio::spawn(server.run(std::future::pending()));
        Ok(addr)
    })?;
    let load = LoadOptions {
        connections: options.connections,
        duration: options.duration,
        rate: None,
        host: "bench.localhost".into(),
        path: "/".into(),
    };
    let mut rows = Vec::new();
    let mut skipped = Vec::new();
    let measure = async |name: &str, addr: SocketAddr| {
        let warm_up = LoadOptions {
            duration: Duration::from_millis(500),
            ..load.clone()
        };
        load::run(addr, &warm_up).await;
        let report = load::run(addr, &load).await;
        Row::new(name, &report)
    };
    rows.push(measure("direct", backend).await);
    rows.push(measure("proxy", proxy).await);
    match find_nginx() {
        Ok(bin) => {
            let setup = NginxSetup {
                // nginx closes a client connection after 1,000 requests by
                // default; the load generator would count each as an error.
                http: "keepalive_requests 10000000;".into(),
                workers: u32::try_from(options.workers.max(1)).unwrap_or(1),
                upstream_keepalive: 64,
                ..NginxSetup::default()
            };
            let nginx = Nginx::start(&bin, &setup, backend).await?;
            rows.push(measure("nginx", nginx.addr).await);
        }
        Err(reason) => skipped.push(format!("nginx: {reason}")),
    }
    Ok(BenchReport {
        connections: options.connections,
        seconds: options.duration.as_secs_f64(),
        workers: options.workers,
        rows,
        skipped,
    })
}

/// The backend: `ok` to every request.
async fn backend() -> Result<SocketAddr, String> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| e.to_string())?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let _ = stream.set_nodelay(true);
            tokio::spawn(async move {
                let service = service_fn(|_request| async {
                    Ok::<_, Infallible>(hyper::Response::new(Full::new(Bytes::from_static(b"ok"))))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Ok(addr)
}

/// Runs `start` on a new runtime with `threads` workers on its own OS
/// thread, which lives as long as the process; returns what it returned.
fn start_on_own_thread<F, Fut>(name: &str, threads: usize, start: F) -> Result<SocketAddr, String>
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Result<SocketAddr, String>>,
{
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name(name.to_owned())
        .spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(threads)
                .enable_all()
                .build();
            match runtime {
                Ok(runtime) => runtime.block_on(async move {
                    let _ = tx.send(start().await);
                    std::future::pending::<()>().await;
                }),
                Err(e) => {
                    let _ = tx.send(Err(e.to_string()));
                }
            }
        })
        .map_err(|e| e.to_string())?;
    rx.recv().map_err(|e| e.to_string())?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_short_run_measures_direct_and_proxy_and_prints_a_table() {
        let report = run(&BenchOptions {
            connections: 2,
            duration: Duration::from_millis(300),
            workers: 1,
        })
        .await
        .expect("the bench runs");
        let targets: Vec<&str> = report.rows.iter().map(|r| r.target.as_str()).collect();
        assert_eq!(&targets[..2], ["direct", "proxy"]);
        assert_eq!(
            targets.len() + report.skipped.len(),
            3,
            "nginx ran or is skipped with a reason"
        );
        for row in &report.rows {
            assert!(row.requests_per_second > 0.0 && row.errors == 0, "{row:?}");
        }
        let table = report.table();
        assert!(
            table.contains("requests/s") && table.contains("direct") && table.contains("proxy"),
            "{table}"
        );
    }
}
