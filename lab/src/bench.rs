//! `lab bench`: what a proxy hop costs, measured as a user would measure it.
//!
//! One small backend answers `GET /` with `ok` (2 bytes) and `GET /1mib`
//! with 1 MiB. The same load (see [`crate::load`]) is sent straight to it
//! (`direct`), through this proxy at layer 7 (`proxy`: it reads every
//! request), through this proxy at layer 4 (`proxy-l4`: a `[[stream]]` that
//! copies the bytes of each client connection to one backend connection,
//! unread; see `proxy::stream`), through the same two with TLS from the
//! client to the proxy (`proxy-https` and `proxy-l4-tls`: the proxy
//! terminates TLS with a certificate from a local CA made for the run, and
//! speaks plain HTTP/1.1 to the backend), and through nginx and HAProxy when
//! they are installed, each with keep-alive connections to the backend:
//!
//! 1. **closed loop**, 2 B and 1 MiB: the most each serves;
//! 2. **fixed rate**, 2 B, at half of nginx's closed-loop rate (of the
//!    proxy's without nginx): the latency each adds when it is not saturated;
//! 3. **idle connections**: `idle_connections` keep-alive client connections
//!    opened and left idle, and the memory each then holds.
//!
//! Each runs as its own process, so the table can say what each costs in CPU
//! and memory (see [`crate::procstat`]): the backend and the proxy are this
//! program again (`lab bench-serve backend|proxy`), with `workers` threads for
//! the proxy and as many `worker_processes` for nginx and `nbthread` for
//! HAProxy. The load generator runs in this process. On one machine all of
//! them share the cores, as they would in production on one host.
//!
//! Every client connection is HTTP/1.1 keep-alive, TLS ones included (ALPN
//! offers `http/1.1` only), so the rows differ by the hop alone. A TLS
//! connection shakes hands once and then carries thousands of requests: its
//! rows measure the cost of encrypting every request and answer, with the
//! handshake's cost spread thin.

use std::convert::Infallible;
use std::io::{BufRead as _, Write as _};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde::{Deserialize, Serialize};

use crate::chart::{Bar, BarChart, Group};
use crate::haproxy::{Haproxy, HaproxySetup, find_haproxy};
use crate::load::{self, ClientTls, LoadOptions, LoadReport};
use crate::nginx::{Nginx, NginxSetup, find_nginx};
use crate::procstat::{ProcessTree, Usage};

/// The backend's small answer (`GET /`) and its size label.
const SMALL: (&str, &str) = ("/", "2 B");
/// The backend's large answer (`GET /1mib`).
const LARGE: (&str, &str) = ("/1mib", "1 MiB");
const LARGE_BYTES: usize = 1 << 20;
/// The name the TLS targets' certificates are issued for, sent as SNI and
/// in `Host` by the load.
const HOST: &str = "bench.localhost";

/// How to run the comparison.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// Client connections of the loaded runs.
    pub connections: usize,
    /// How long each run lasts (after a short warm-up).
    pub duration: Duration,
    /// The worker counts to compare at: proxy threads, nginx
    /// `worker_processes`, HAProxy `nbthread`.
    pub workers: Vec<usize>,
    /// Idle keep-alive connections for the memory reading (0: none).
    pub idle_connections: usize,
    /// This program, run as `PROGRAM bench-serve backend|proxy` for the
    /// backend and the proxy processes.
    pub serve_with: PathBuf,
}

/// One run's figures for one target.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Row {
    /// `direct`, `proxy` (layer 7), `proxy-l4` (layer 4), `proxy-https`
    /// (layer 7, TLS), `proxy-l4-tls` (layer 4, TLS), `nginx` or `haproxy`.
    pub target: String,
    /// Proxy workers (nginx worker processes, HAProxy threads).
    pub workers: usize,
    /// `2 B` or `1 MiB`.
    pub body: String,
    /// Requests per second offered in fixed-rate runs; `None` for closed loop.
    pub offered_rate: Option<u64>,
    /// Successful requests per second.
    pub requests_per_second: f64,
    /// Median latency, microseconds.
    pub p50_us: u64,
    /// 99th percentile.
    pub p99_us: u64,
    /// 99.9th percentile.
    pub p999_us: u64,
    /// Failed requests.
    pub errors: u64,
    /// What went wrong the first time a request failed; absent without errors.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_error: Option<String>,
    /// CPU the target used during the run, in % of one core (`direct`: the backend's).
    pub cpu_percent: Option<f64>,
    /// The target's peak resident memory so far, MiB.
    pub peak_rss_mib: Option<f64>,
}

impl Row {
    /// The load, as the table's column shows it: `closed loop` or `RATE/s`.
    fn load(&self) -> String {
        match self.offered_rate {
            Some(rate) => format!("{rate}/s"),
            None => "closed loop".into(),
        }
    }
}

/// Memory held with many idle keep-alive connections open.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct IdleRow {
    /// Any target but `direct`.
    pub target: String,
    /// Connections asked for.
    pub connections: usize,
    /// Connections that opened and got an answer.
    pub opened: usize,
    /// Resident memory before opening them, MiB.
    pub rss_before_mib: f64,
    /// Resident memory with them open, MiB.
    pub rss_mib: f64,
}

/// The comparison's result.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BenchReport {
    /// Client connections of the loaded runs.
    pub connections: usize,
    /// Seconds each run lasted.
    pub seconds: f64,
    /// Whether this was an optimised build (debug figures mean little).
    pub release_build: bool,
    /// The figures of the loaded runs.
    pub rows: Vec<Row>,
    /// The idle-connection memory readings.
    pub idle: Vec<IdleRow>,
    /// Targets left out, with the reason.
    pub skipped: Vec<String>,
}

/// Runs the comparison.
pub async fn run(options: &BenchOptions) -> Result<BenchReport, String> {
    let idle_connections = idle_within_file_limit(options.idle_connections);
    let backend = Served::start(&options.serve_with, &["backend"])?;
    let mut report = BenchReport {
        connections: options.connections,
        seconds: options.duration.as_secs_f64(),
        release_build: !cfg!(debug_assertions),
        rows: Vec::new(),
        idle: Vec::new(),
        skipped: Vec::new(),
    };
    let nginx_bin = find_nginx().map_err(|reason| report.skipped.push(format!("nginx: {reason}")));
    let haproxy_bin =
        find_haproxy().map_err(|reason| report.skipped.push(format!("haproxy: {reason}")));
    // A local CA for this run only: the TLS targets get their certificates
    // from it (`auto_local`), and the load trusts its root.
    let ca = BenchCa::new()?;
    for (i, &workers) in options.workers.iter().enumerate() {
        let workers = workers.max(1);
        let threads = u32::try_from(workers).unwrap_or(1);
        let serve = |role: &str, ca_dir: Option<&str>| {
            let (workers, upstream) = (workers.to_string(), backend.addr.to_string());
            let mut args = vec![role, "--workers", &workers, "--upstream", &upstream];
            args.extend(ca_dir.iter().flat_map(|dir| ["--ca-dir", *dir]));
            Served::start(&options.serve_with, &args)
        };
        let proxy = serve("proxy", None)?;
        let stream = serve("proxy-l4", None)?;
        let https = serve("proxy-https", Some(&ca.dir_arg))?;
        let stream_tls = serve("proxy-l4-tls", Some(&ca.dir_arg))?;
        let mut targets = vec![
            Target::new("direct", backend.addr, Some(backend.pid())),
            Target::new("proxy", proxy.addr, Some(proxy.pid())),
            Target::new("proxy-l4", stream.addr, Some(stream.pid())),
            Target::new("proxy-https", https.addr, Some(https.pid())).with_tls(&ca.client),
            Target::new("proxy-l4-tls", stream_tls.addr, Some(stream_tls.pid()))
                .with_tls(&ca.client),
        ];
        let nginx = match &nginx_bin {
            Ok(bin) => Some(Nginx::start(bin, &nginx_setup(threads, options), backend.addr).await?),
            Err(()) => None,
        };
        if let Some(nginx) = &nginx {
            targets.push(Target::new("nginx", nginx.addr, nginx.pid()));
        }
        let haproxy = match &haproxy_bin {
            Ok(bin) => {
                let setup = HaproxySetup {
                    threads,
                    upstream_keepalive: true,
                };
                Some(Haproxy::start(bin, &setup, backend.addr).await?)
            }
            Err(()) => None,
        };
        if let Some(haproxy) = &haproxy {
            targets.push(Target::new("haproxy", haproxy.addr, haproxy.pid()));
        }

        for (path, body) in [SMALL, LARGE] {
            for target in &targets {
                let load = options.load(target, path, None);
                report
                    .rows
                    .push(measure(target, workers, body, &load, options.duration).await);
            }
        }
        // Half of nginx's peak (else of the proxy's), 2 B answers.
        let peak = |name: &str| {
            report
                .rows
                .iter()
                .find(|r| r.target == name && r.workers == workers && r.body == SMALL.1)
                .map(|r| r.requests_per_second)
        };
        let rate = (peak("nginx").or(peak("proxy")).unwrap_or(1000.0) / 2.0).max(10.0) as u64;
        for target in &targets {
            let load = options.load(target, SMALL.0, Some(rate));
            report
                .rows
                .push(measure(target, workers, SMALL.1, &load, options.duration).await);
        }
        // Memory with idle connections: once, at the first worker count.
        if i == 0 && idle_connections > 0 {
            for target in targets.iter().filter(|t| t.name != "direct") {
                report
                    .idle
                    .push(idle_memory(target, options, idle_connections).await);
            }
        }
    }
    Ok(report)
}

impl BenchOptions {
    fn load(&self, target: &Target, path: &str, rate: Option<u64>) -> LoadOptions {
        LoadOptions {
            connections: self.connections,
            duration: self.duration,
            rate,
            host: HOST.into(),
            path: path.into(),
            tls: target.tls.clone(),
        }
    }
}

/// The run's own certificate authority, in a temporary folder removed at
/// the end: `lab bench-serve proxy-https|proxy-l4-tls --ca-dir DIR` issue
/// their certificates from it, and the load trusts its root.
struct BenchCa {
    /// `--ca-dir`'s value.
    dir_arg: String,
    /// How the load speaks TLS to the targets: trusting the root, asking for [`HOST`].
    client: ClientTls,
    /// Kept so the folder lives as long as the bench.
    _dir: tempfile::TempDir,
}

impl BenchCa {
    fn new() -> Result<BenchCa, String> {
        let dir =
            tempfile::tempdir().map_err(|e| format!("cannot make a folder for the CA: {e}"))?;
        let ca_dir = dir.path().join("ca");
        // Made here, once, so the two TLS processes only open it.
        let (ca, _) = proxy::local_ca::LocalCa::open_or_create(&ca_dir)
            .map_err(|e| format!("cannot make the bench's CA: {e}"))?;
        Ok(BenchCa {
            dir_arg: ca_dir.display().to_string(),
            client: ClientTls::new(ca.root_cert_pem(), HOST)?,
            _dir: dir,
        })
    }
}

/// nginx as the proxy is run: keep-alive to the backend, no access log
/// (the proxy writes none in the bench either), room for the idle connections.
fn nginx_setup(workers: u32, options: &BenchOptions) -> NginxSetup {
    NginxSetup {
        // nginx closes a client connection after 1,000 requests by default;
        // the load generator would count each as an error.
        http: "keepalive_requests 10000000;\n    access_log off;".into(),
        workers,
        upstream_keepalive: 64,
        worker_connections: u32::try_from(options.idle_connections + 1024).unwrap_or(u32::MAX),
        ..NginxSetup::default()
    }
}

/// Something to load: its name, address, process, and TLS if it speaks it.
struct Target {
    name: &'static str,
    addr: SocketAddr,
    process: Option<ProcessTree>,
    tls: Option<ClientTls>,
}

impl Target {
    fn new(name: &'static str, addr: SocketAddr, pid: Option<u32>) -> Target {
        Target {
            name,
            addr,
            process: pid.map(|pid| ProcessTree { pid }),
            tls: None,
        }
    }

    /// The same target, spoken to over TLS.
    fn with_tls(self, tls: &ClientTls) -> Target {
        Target {
            tls: Some(tls.clone()),
            ..self
        }
    }

    fn usage(&self) -> Option<Usage> {
        self.process.and_then(|p| p.usage())
    }
}

/// A warm-up, then the run, with the target's CPU time read around it.
async fn measure(
    target: &Target,
    workers: usize,
    body: &str,
    load: &LoadOptions,
    duration: Duration,
) -> Row {
    let warm_up = LoadOptions {
        duration: Duration::from_millis(500).min(duration),
        ..load.clone()
    };
    load::run(target.addr, &warm_up).await;
    let before = target.usage();
    let report: LoadReport = load::run(target.addr, load).await;
    let after = target.usage();
    let cpu_percent = before.zip(after).map(|(b, a)| {
        100.0 * (a.cpu_seconds - b.cpu_seconds) / report.elapsed.as_secs_f64().max(f64::EPSILON)
    });
    Row {
        target: target.name.to_owned(),
        workers,
        body: body.to_owned(),
        offered_rate: load.rate,
        requests_per_second: report.requests_per_second(),
        p50_us: report.p50_us,
        p99_us: report.p99_us,
        p999_us: report.p999_us,
        errors: report.errors,
        first_error: report.first_error,
        cpu_percent,
        peak_rss_mib: after.map(|u| mib(u.peak_rss_kib)),
    }
}

/// Opens `count` keep-alive connections to `target`, one request on each,
/// and reads the target's memory while they sit idle.
async fn idle_memory(target: &Target, options: &BenchOptions, count: usize) -> IdleRow {
    let before = target.usage().map_or(0.0, |u| mib(u.rss_kib));
    let held = load::hold_idle(target.addr, count, &options.load(target, SMALL.0, None)).await;
    // Let the target settle (buffers freed after the answers went out).
    tokio::time::sleep(Duration::from_millis(500)).await;
    let with = target.usage().map_or(0.0, |u| mib(u.rss_kib));
    let opened = held.len();
    drop(held);
    IdleRow {
        target: target.name.to_owned(),
        connections: count,
        opened,
        rss_before_mib: before,
        rss_mib: with,
    }
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// Lifts this process's open-file limit to what `idle` connections need (its
/// children, the proxy and the backend, inherit it), as far as the hard limit allows.
/// Raises this process's open-file limit (inherited by the targets it
/// starts) for `idle` idle connections, and returns how many fit: a target
/// at layer 4 holds two descriptors per connection (the client's and its
/// backend's), plus some of its own. Where the hard limit is lower, fewer
/// connections are held, and the bench says so: a target out of descriptors
/// stops accepting, and its clients would wait for nothing.
fn idle_within_file_limit(idle: usize) -> usize {
    const SPARE: u64 = 4096;
    let wanted = u64::try_from(idle)
        .unwrap_or(u64::MAX)
        .saturating_mul(2)
        .saturating_add(SPARE);
    let limit = match rlimit::increase_nofile_limit(wanted) {
        Ok(limit) => limit,
        Err(err) => {
            eprintln!("lab bench: cannot raise the open-file limit: {err}");
            rlimit::getrlimit(rlimit::Resource::NOFILE).map_or(1024, |(soft, _)| soft)
        }
    };
    let fits = usize::try_from(limit.saturating_sub(SPARE) / 2).unwrap_or(usize::MAX);
    if fits < idle {
        eprintln!(
            "lab bench: the open-file limit is {limit} (ulimit -n): holding {fits} idle connections instead of {idle}"
        );
    }
    idle.min(fits)
}

impl BenchReport {
    /// The table, for a terminal.
    pub fn table(&self) -> String {
        let mut out = format!(
            "{} connections, {:.0} s per run{}\n",
            self.connections,
            self.seconds,
            if self.release_build {
                ""
            } else {
                " (debug build: cargo run --release for real figures)"
            }
        );
        let mut workers: Vec<usize> = self.rows.iter().map(|r| r.workers).collect();
        workers.dedup();
        for w in workers {
            out.push_str(&format!(
                "\nworkers {w}\n{:<12} {:<6} {:<13} {:>10} {:>8} {:>8} {:>8} {:>6} {:>6} {:>9}\n",
                "target",
                "body",
                "load",
                "requests/s",
                "p50 ms",
                "p99 ms",
                "p99.9 ms",
                "errors",
                "CPU %",
                "peak MiB"
            ));
            for row in self.rows.iter().filter(|r| r.workers == w) {
                let opt = |v: Option<f64>, precision: usize| {
                    v.map_or("-".into(), |v| format!("{v:.precision$}"))
                };
                out.push_str(&format!(
                    "{:<12} {:<6} {:<13} {:>10.0} {:>8.3} {:>8.3} {:>8.3} {:>6} {:>6} {:>9}\n",
                    row.target,
                    row.body,
                    row.load(),
                    row.requests_per_second,
                    ms(row.p50_us),
                    ms(row.p99_us),
                    ms(row.p999_us),
                    row.errors,
                    opt(row.cpu_percent, 0),
                    opt(row.peak_rss_mib, 1)
                ));
            }
            for row in self.rows.iter().filter(|r| r.workers == w && r.errors > 0) {
                out.push_str(&format!(
                    "{} {} {}: {} failed, the first: {}\n",
                    row.target,
                    row.body,
                    row.load(),
                    row.errors,
                    row.first_error.as_deref().unwrap_or("(not recorded)")
                ));
            }
            for line in self.comparisons(w) {
                out.push_str(&format!("{line}\n"));
            }
        }
        if let Some(first) = self.idle.first() {
            out.push_str(&format!(
                "\n{} idle keep-alive connections\n{:<12} {:>7} {:>12} {:>10} {:>15}\n",
                first.connections, "target", "opened", "RSS before", "RSS with", "KiB/connection"
            ));
            for row in &self.idle {
                let per = (row.rss_mib - row.rss_before_mib) * 1024.0 / row.opened.max(1) as f64;
                out.push_str(&format!(
                    "{:<12} {:>7} {:>8.1} MiB {:>6.1} MiB {:>15.1}\n",
                    row.target, row.opened, row.rss_before_mib, row.rss_mib, per
                ));
            }
        }
        for reason in &self.skipped {
            out.push_str(&format!("skipped: {reason}\n"));
        }
        out
    }

    /// The proxy against each reference at `workers`: throughput ratios and
    /// the fixed-rate p99s.
    fn comparisons(&self, workers: usize) -> Vec<String> {
        let find = |target: &str, body: &str, fixed: bool| {
            self.rows.iter().find(|r| {
                r.target == target
                    && r.workers == workers
                    && r.body == body
                    && r.offered_rate.is_some() == fixed
            })
        };
        let mut lines = Vec::new();
        // What each hop costs against no hop: layer 4 against layer 7.
        let against_direct = |target: &str| {
            let (t, d) = (
                find(target, SMALL.1, false)?,
                find("direct", SMALL.1, false)?,
            );
            Some(t.requests_per_second / d.requests_per_second.max(1.0))
        };
        if let (Some(l4), Some(l7)) = (against_direct("proxy-l4"), against_direct("proxy")) {
            let mut line = format!("against direct, 2 B: L4 {l4:.2}x the requests/s, L7 {l7:.2}x");
            if let (Some(d), Some(l4), Some(l7)) = (
                find("direct", SMALL.1, true),
                find("proxy-l4", SMALL.1, true),
                find("proxy", SMALL.1, true),
            ) {
                line.push_str(&format!(
                    "; p99 at {}/s: direct {:.3} ms, L4 {:.3} ms, L7 {:.3} ms",
                    d.offered_rate.unwrap_or(0),
                    ms(d.p99_us),
                    ms(l4.p99_us),
                    ms(l7.p99_us)
                ));
            }
            lines.push(line);
        }
        // What terminating TLS costs, against the same hop in plain text.
        let against_plain = |tls: &str, plain: &str, body: &str| {
            let (t, p) = (find(tls, body, false)?, find(plain, body, false)?);
            Some(t.requests_per_second / p.requests_per_second.max(1.0))
        };
        if let (Some(l7), Some(l4)) = (
            against_plain("proxy-https", "proxy", SMALL.1),
            against_plain("proxy-l4-tls", "proxy-l4", SMALL.1),
        ) {
            let mut line =
                format!("TLS against plain, 2 B: L7 {l7:.2}x the requests/s, L4 {l4:.2}x");
            if let (Some(l7), Some(l4)) = (
                against_plain("proxy-https", "proxy", LARGE.1),
                against_plain("proxy-l4-tls", "proxy-l4", LARGE.1),
            ) {
                line.push_str(&format!("; 1 MiB: L7 {l7:.2}x, L4 {l4:.2}x"));
            }
            let p99 = |target: &str| find(target, SMALL.1, true);
            if let (Some(l7), Some(l7_tls), Some(l4), Some(l4_tls)) = (
                p99("proxy"),
                p99("proxy-https"),
                p99("proxy-l4"),
                p99("proxy-l4-tls"),
            ) {
                line.push_str(&format!(
                    "; p99 at {}/s: L7 {:.3} -> {:.3} ms, L4 {:.3} -> {:.3} ms",
                    l7.offered_rate.unwrap_or(0),
                    ms(l7.p99_us),
                    ms(l7_tls.p99_us),
                    ms(l4.p99_us),
                    ms(l4_tls.p99_us)
                ));
            }
            lines.push(line);
        }
        for reference in ["nginx", "haproxy"] {
            let ratio = |body: &str| {
                let (p, r) = (find("proxy", body, false)?, find(reference, body, false)?);
                Some(p.requests_per_second / r.requests_per_second.max(1.0))
            };
            let (Some(small), Some(large)) = (ratio(SMALL.1), ratio(LARGE.1)) else {
                continue;
            };
            let mut line = format!(
                "proxy / {reference}: {small:.2}x the requests/s with 2 B, {large:.2}x with 1 MiB"
            );
            if let (Some(p), Some(r)) =
                (find("proxy", SMALL.1, true), find(reference, SMALL.1, true))
            {
                line.push_str(&format!(
                    "; p99 at {}/s: {:.3} ms against {:.3} ms",
                    p.offered_rate.unwrap_or(0),
                    ms(p.p99_us),
                    ms(r.p99_us)
                ));
            }
            lines.push(line);
        }
        lines
    }

    /// The figures as charts: requests/s for 2 B and for 1 MiB (one chart
    /// each, their scales differ a hundredfold), p99 at the fixed rate, and
    /// memory with idle connections.
    pub fn charts(&self) -> Vec<BarChart> {
        let mut workers: Vec<usize> = self.rows.iter().map(|r| r.workers).collect();
        workers.dedup();
        let plural = |w: usize| if w == 1 { "" } else { "s" };
        let chart = |title: String, unit: &str, fixed: bool, body: &str, value: fn(&Row) -> f64| {
            let groups = workers
                .iter()
                .filter_map(|&w| {
                    let rows: Vec<&Row> = self
                        .rows
                        .iter()
                        .filter(|r| {
                            r.workers == w && r.body == body && r.offered_rate.is_some() == fixed
                        })
                        .collect();
                    let first = rows.first()?;
                    let rate = first
                        .offered_rate
                        .map(|r| format!("{r}/s, "))
                        .unwrap_or_default();
                    Some(Group {
                        label: format!("{rate}{w} worker{}", plural(w)),
                        bars: rows
                            .iter()
                            .map(|r| Bar {
                                series: r.target.clone(),
                                value: value(r),
                            })
                            .collect(),
                    })
                })
                .collect();
            BarChart {
                title,
                unit: unit.into(),
                groups,
            }
        };
        let closed = |body: &str| {
            format!(
                "Closed loop, {body} answers, {} connections",
                self.connections
            )
        };
        let mut charts = vec![
            chart(closed(SMALL.1), "requests/s", false, SMALL.1, |r| {
                r.requests_per_second
            }),
            chart(closed(LARGE.1), "requests/s", false, LARGE.1, |r| {
                r.requests_per_second
            }),
            chart(
                "p99 latency at a fixed rate (half of nginx's peak), 2 B answers".into(),
                "ms",
                true,
                SMALL.1,
                |r| ms(r.p99_us),
            ),
        ];
        charts.retain(|c| !c.groups.is_empty());
        if let Some(first) = self.idle.first() {
            charts.push(BarChart {
                title: format!(
                    "Resident memory with {} idle keep-alive connections",
                    first.connections
                ),
                unit: "MiB".into(),
                groups: vec![Group {
                    label: format!("{} connections", first.connections),
                    bars: self
                        .idle
                        .iter()
                        .map(|r| Bar {
                            series: r.target.clone(),
                            value: r.rss_mib,
                        })
                        .collect(),
                }],
            });
        }
        charts
    }
}

/// Writes `bench.json` (the figures) and `bench.svg` (the charts) into
/// `dir`, creating it; returns the paths written.
pub fn write_files(report: &BenchReport, dir: &std::path::Path) -> Result<Vec<String>, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let json = serde_json::to_string_pretty(report).map_err(|e| e.to_string())?;
    let svg = crate::chart::to_svg(&report.charts())?;
    let mut written = Vec::new();
    for (name, text) in [("bench.json", json), ("bench.svg", svg)] {
        let path = dir.join(name);
        std::fs::write(&path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        written.push(path.display().to_string());
    }
    Ok(written)
}

fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

/// A backend or proxy process (`lab bench-serve ...`), stopped when dropped.
/// It prints its address on its first line of output, and exits by itself
/// when its standard input closes, so it never outlives the bench.
struct Served {
    addr: SocketAddr,
    child: Child,
}

impl Served {
    fn start(program: &std::path::Path, args: &[&str]) -> Result<Served, String> {
        let mut child = Command::new(program)
            .arg("bench-serve")
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("cannot start {} bench-serve: {e}", program.display()))?;
        let mut line = String::new();
        if let Some(stdout) = child.stdout.take() {
            let _ = std::io::BufReader::new(stdout).read_line(&mut line);
        }
        match line.trim().parse() {
            Ok(addr) => Ok(Served { addr, child }),
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                Err(format!(
                    "{} bench-serve {} did not start (it printed {line:?})",
                    program.display(),
                    args.join(" ")
                ))
            }
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What `lab bench-serve` runs.
#[derive(Debug, Clone)]
pub enum ServeRole {
    /// The backend: `ok` at `/`, 1 MiB at `/1mib`, on one thread.
    Backend,
    /// The proxy in front of `upstream` with `workers` threads.
    Proxy {
        /// Worker threads.
        workers: usize,
        /// The backend's address.
        upstream: SocketAddr,
        /// HTTPS instead of HTTP, with a certificate for `bench.localhost`
        /// from the local CA in this folder (`proxy-https`).
        tls_ca_dir: Option<PathBuf>,
    },
    /// The proxy at layer 4: a `[[stream]]` to `upstream`, `workers` threads.
    Stream {
        /// Worker threads.
        workers: usize,
        /// The backend's address.
        upstream: SocketAddr,
        /// TLS terminated by the stream, with a certificate for
        /// `bench.localhost` from the local CA in this folder (`proxy-l4-tls`).
        tls_ca_dir: Option<PathBuf>,
    },
}

/// `lab bench-serve`: runs a backend or the proxy on 127.0.0.1 (any free
/// port), prints the address as the first line, and serves until standard
/// input closes (the bench ended or died).
pub fn serve(role: ServeRole) -> Result<(), String> {
    // The proxy's runtime is the one the `proxy` command would use.
    let threads = match role {
        ServeRole::Backend => 1,
        ServeRole::Proxy { workers, .. } | ServeRole::Stream { workers, .. } => workers.max(1),
    };
    let runtime = proxy::build_runtime(Some(threads)).map_err(|e| e.to_string())?;
    // Everything runs inside `block_on`: a one-thread runtime runs its tasks
    // only there.
    runtime.block_on(async {
        let addr = match role {
            ServeRole::Backend => backend().await,
            ServeRole::Proxy {
                workers,
                upstream,
                tls_ca_dir,
            } => proxy(workers, upstream, tls_ca_dir.as_deref()).await,
            ServeRole::Stream {
                workers,
                upstream,
                tls_ca_dir,
            } => stream(workers, upstream, tls_ca_dir.as_deref()).await,
        }?;
        let mut stdout = std::io::stdout();
        writeln!(stdout, "{addr}").map_err(|e| e.to_string())?;
        stdout.flush().map_err(|e| e.to_string())?;
        // Serve until stdin reaches its end.
        let _ = tokio::task::spawn_blocking(|| {
            std::io::copy(&mut std::io::stdin(), &mut std::io::sink())
        })
        .await;
        Ok::<(), String>(())
    })?;
    runtime.shutdown_timeout(Duration::from_millis(100));
    Ok(())
}

/// The proxy, configured like nginx and HAProxy in the bench: one route to
/// the backend, keep-alive to it, no access log. With `tls_ca_dir`, its
/// listener speaks HTTPS with a certificate for [`HOST`] issued by that CA.
async fn proxy(
    workers: usize,
    upstream: SocketAddr,
    tls_ca_dir: Option<&std::path::Path>,
) -> Result<SocketAddr, String> {
    let (ca, listen_tls, server_tls) = match tls_ca_dir {
        None => (String::new(), "", String::new()),
        Some(dir) => (
            local_ca_line(dir),
            "tls = true\n",
            format!("server_names = [\"{HOST}\"]\ntls = {{ auto_local = true }}\n"),
        ),
    };
    let server = bind(format!(
        "workers = {workers}\n{ca}[[listen]]\naddr = \"127.0.0.1:0\"\n{listen_tls}\
         [[servers]]\n{server_tls}routes = [{{ path = \"/\", upstream = \"backend\" }}]\n\
         [upstreams.backend]\nservers = [\"{upstream}\"]\n"
    ))
    .await?;
    let addr = server
        .local_addrs()
        .first()
        .copied()
        .ok_or("the proxy has no listener")?;
    tokio::spawn(server.run(std::future::pending()));
    Ok(addr)
}

/// The proxy at layer 4: one `[[stream]]` to the backend, no access log.
/// Each client connection gets a backend connection of its own for as long
/// as it lasts: the load's keep-alive connections are the backend's too.
/// With `tls_ca_dir`, the stream terminates TLS with a certificate for
/// [`HOST`] issued by that CA, and copies the decrypted bytes.
async fn stream(
    workers: usize,
    upstream: SocketAddr,
    tls_ca_dir: Option<&std::path::Path>,
) -> Result<SocketAddr, String> {
    let (ca, tls) = match tls_ca_dir {
        None => (String::new(), String::new()),
        Some(dir) => (
            local_ca_line(dir),
            format!("tls = {{ auto_local = true, names = [\"{HOST}\"] }}\n"),
        ),
    };
    let server = bind(format!(
        "workers = {workers}\n{ca}[[stream]]\nlisten = \"127.0.0.1:0\"\nupstream = \"backend\"\n{tls}\
         [upstreams.backend]\nservers = [\"{upstream}\"]\n"
    ))
    .await?;
    let addr = server
        .stream_addrs()
        .first()
        .copied()
        .ok_or("the proxy has no stream listener")?;
    tokio::spawn(server.run(std::future::pending()));
    Ok(addr)
}

/// `local_ca_dir = "DIR"`, the folder quoted as TOML quotes it.
fn local_ca_line(dir: &std::path::Path) -> String {
    let dir = toml::Value::String(dir.display().to_string());
    format!("local_ca_dir = {dir}\n")
}

/// Parses a bench config and binds its listeners.
async fn bind(text: String) -> Result<proxy::ProxyServer, String> {
    let config = proxy::Config::parse(&text, "bench.toml").map_err(|e| e.to_string())?;
    proxy::ProxyServer::bind(config)
        .await
        .map_err(|e| e.to_string())
}

/// The backend: `ok` to `GET /`, 1 MiB to `GET /1mib`.
async fn backend() -> Result<SocketAddr, String> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| e.to_string())?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let large = Bytes::from(vec![b'x'; LARGE_BYTES]);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let _ = stream.set_nodelay(true);
            let large = large.clone();
            tokio::spawn(async move {
                let service = service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
                    let body = if request.uri().path() == LARGE.0 {
                        large.clone()
                    } else {
                        Bytes::from_static(b"ok")
                    };
                    async move { Ok::<_, Infallible>(hyper::Response::new(Full::new(body))) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Ok(addr)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idle_connections_are_cut_to_what_the_open_file_limit_holds() {
        // Far more than any machine allows: cut so a layer-4 target (two
        // descriptors per connection) stays under the limit.
        let asked = 1 << 40;
        let held = idle_within_file_limit(asked);
        assert!(held < asked);
        let (soft, _) = rlimit::getrlimit(rlimit::Resource::NOFILE).expect("the limit");
        let needed = u64::try_from(held).expect("fits") * 2 + 4096;
        assert!(
            needed <= soft,
            "{held} idle connections need {needed}, limit {soft}"
        );
        // A few always fit as asked.
        assert_eq!(idle_within_file_limit(10), 10);
    }

    #[test]
    fn the_table_says_what_failed_first_and_files_without_it_still_read() {
        let row = |target: &str, errors: u64, first_error: Option<&str>| {
            let mut row = serde_json::json!({
                "target": target, "workers": 1, "body": "1 MiB", "offered_rate": null,
                "requests_per_second": 500.0, "p50_us": 3000, "p99_us": 6000,
                "p999_us": 7000, "errors": errors, "cpu_percent": 60.0, "peak_rss_mib": 22.0,
            });
            if let Some(why) = first_error {
                row["first_error"] = why.into();
            }
            serde_json::from_value::<Row>(row).expect("a row")
        };
        let report = BenchReport {
            connections: 2,
            seconds: 1.0,
            release_build: true,
            rows: vec![
                row("proxy", 0, None),
                row("proxy-https", 1, Some("the request: connection closed")),
                // A bench.json written before rows had `first_error`.
                row("nginx", 3, None),
            ],
            idle: Vec::new(),
            skipped: Vec::new(),
        };
        let table = report.table();
        assert!(
            table.contains(
                "proxy-https 1 MiB closed loop: 1 failed, the first: the request: connection closed\n"
            ),
            "{table}"
        );
        assert!(
            table.contains("nginx 1 MiB closed loop: 3 failed, the first: (not recorded)\n"),
            "{table}"
        );
        assert!(!table.contains("proxy 1 MiB closed loop:"), "{table}");
        // Written without the field when nothing failed.
        let json = serde_json::to_value(&report.rows[0]).expect("JSON");
        assert!(json.get("first_error").is_none(), "{json}");
    }
}
