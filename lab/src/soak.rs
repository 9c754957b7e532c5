//! `lab soak`: the proxy kept busy for minutes the way it would be for days,
//! and then checked for what days would reveal: errors, memory that keeps
//! growing, file descriptors that are never closed.
//!
//! ```text
//!  clients ──► proxy (its own process) ──► frontend, tasks-api, whoami-1..3 (this process)
//!     ▲            ▲  SIGHUP every few seconds         ▲ one whoami replica stopped
//!     │            │  (a new config each time)         │ and restarted, in turn
//!     └ mixed traffic: pages, API reads and writes, cached, HTTPS, WebSockets
//! ```
//!
//! The proxy runs as the real `proxy` binary, so its memory (`VmRSS` in
//! `/proc/PID/status`) and its open file descriptors (`/proc/PID/fd`) are its
//! own. Both are sampled during the run. File descriptors are also counted
//! twice with nothing connected (no client, every service stopped for the
//! moment, which empties the proxy's upstream pools): after a short warm-up and
//! after the soak. The two counts must be equal: every connection the proxy
//! opened, to a client or to an upstream, was closed again.
//!
//! Each reload changes the `/welcome` answer, and the soak asks for it until
//! the new answer comes back, so a reload is counted only when it took effect.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Method;

use crate::client::{self, LabClient};
use crate::procstat::ProcessTree;
use crate::stack::{Stack, StackOptions, WHOAMI_REPLICAS};

/// What a soak run does and for how long.
#[derive(Debug, Clone)]
pub struct SoakOptions {
    /// The `proxy` binary to run.
    pub proxy_bin: PathBuf,
    /// How long the traffic runs (after a short warm-up).
    pub duration: Duration,
    /// Clients sending requests at once, each one request after another.
    pub clients: usize,
    /// How often the proxy is sent SIGHUP with a changed config.
    pub reload_every: Duration,
    /// How often a whoami replica is stopped (each in turn)...
    pub kill_every: Duration,
    /// ...and for how long, before it is started again on its address.
    pub down_for: Duration,
    /// How often memory and file descriptors are read.
    pub sample_every: Duration,
}

impl SoakOptions {
    /// The defaults of `lab soak`, for a run of `duration`.
    pub fn new(proxy_bin: PathBuf, duration: Duration) -> SoakOptions {
        SoakOptions {
            proxy_bin,
            duration,
            clients: 16,
            reload_every: Duration::from_secs(10),
            kill_every: Duration::from_secs(20),
            down_for: Duration::from_secs(5),
            sample_every: Duration::from_secs(10),
        }
    }
}

/// One reading of the proxy process.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    /// Time since the traffic started.
    pub at: Duration,
    /// Resident memory, KiB.
    pub rss_kib: u64,
    /// Open file descriptors.
    pub fds: usize,
    /// Requests answered so far.
    pub requests: u64,
}

/// What a soak run saw.
#[derive(Debug, Clone, Default)]
pub struct SoakReport {
    /// How long the traffic ran.
    pub elapsed: Duration,
    /// Per kind of request (`page`, `whoami`, ...): how it ended (`ok`, or
    /// the status or error that counts as a failure) and how often.
    pub outcomes: BTreeMap<&'static str, BTreeMap<String, u64>>,
    /// Reloads sent and seen to take effect.
    pub reloads: u32,
    /// Reloads sent whose new `/welcome` answer never came back.
    pub reloads_unconfirmed: u32,
    /// Replicas stopped (and started again).
    pub kills: u32,
    /// Readings over time.
    pub samples: Vec<Sample>,
    /// Open file descriptors with nothing connected, after the warm-up.
    pub fds_before: usize,
    /// The same, after the soak.
    pub fds_after: usize,
    /// Resident memory after the warm-up and at the end, KiB.
    pub rss_before_kib: u64,
    /// Resident memory at the end, KiB.
    pub rss_after_kib: u64,
    /// The proxy's peak resident memory, KiB.
    pub peak_rss_kib: u64,
    /// Lines of the proxy's error log at WARN or ERROR (the first 20).
    pub log_problems: Vec<String>,
    /// How many such lines there were in all.
    pub log_problem_count: usize,
    /// Lines in the proxy's access log.
    pub access_log_lines: usize,
}

impl SoakReport {
    /// Requests that succeeded.
    pub fn ok(&self) -> u64 {
        self.outcomes
            .values()
            .filter_map(|by_outcome| by_outcome.get("ok"))
            .sum()
    }

    /// Requests that failed (an error status, or no answer).
    pub fn errors(&self) -> u64 {
        self.requests() - self.ok()
    }

    /// Requests sent.
    pub fn requests(&self) -> u64 {
        self.outcomes.values().flat_map(|m| m.values()).sum()
    }

    /// What the run found wrong, in plain words; empty when it passed: every
    /// request answered, every reload taken, no file descriptor left open.
    /// (Memory is reported, not judged: an allocator keeps what it freed.)
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.errors() > 0 {
            problems.push(format!(
                "{} of {} requests failed",
                self.errors(),
                self.requests()
            ));
        }
        if self.reloads_unconfirmed > 0 {
            problems.push(format!(
                "{} reloads never took effect",
                self.reloads_unconfirmed
            ));
        }
        if self.fds_after != self.fds_before {
            problems.push(format!(
                "the proxy had {} file descriptors open with nothing connected after the warm-up, {} after the soak",
                self.fds_before, self.fds_after
            ));
        }
        problems
    }

    /// The report as a few lines of text.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let secs = self.elapsed.as_secs_f64();
        out.push_str(&format!(
            "soak: {:.0} s, {} requests ({:.0}/s), {} errors; {} reloads ({} unconfirmed), {} replica stops\n",
            secs,
            self.requests(),
            self.requests() as f64 / secs.max(0.001),
            self.errors(),
            self.reloads,
            self.reloads_unconfirmed,
            self.kills,
        ));
        out.push_str("\nrequests by kind:\n");
        for (kind, by_outcome) in &self.outcomes {
            let outcomes: Vec<String> = by_outcome
                .iter()
                .map(|(outcome, n)| format!("{outcome} {n}"))
                .collect();
            out.push_str(&format!("  {kind:<10} {}\n", outcomes.join(", ")));
        }
        out.push_str(
            "\nthe proxy process over time:\n     time    RSS (MiB)   open fds   requests\n",
        );
        for sample in &self.samples {
            out.push_str(&format!(
                "  {:>6.0} s  {:>9.1}  {:>9}  {:>9}\n",
                sample.at.as_secs_f64(),
                sample.rss_kib as f64 / 1024.0,
                sample.fds,
                sample.requests
            ));
        }
        out.push_str(&format!(
            "\nwith nothing connected: {} fds after the warm-up, {} after the soak ({:+}); \
             RSS {:.1} MiB then {:.1} MiB, peak {:.1} MiB\n",
            self.fds_before,
            self.fds_after,
            self.fds_after as i64 - self.fds_before as i64,
            self.rss_before_kib as f64 / 1024.0,
            self.rss_after_kib as f64 / 1024.0,
            self.peak_rss_kib as f64 / 1024.0,
        ));
        out.push_str(&format!(
            "access log: {} lines; error log: {} warnings or errors\n",
            self.access_log_lines, self.log_problem_count
        ));
        for line in &self.log_problems {
            out.push_str(&format!("  {line}\n"));
        }
        out
    }
}

/// Why a soak could not run.
#[derive(Debug, thiserror::Error)]
pub enum SoakError {
    /// The in-process services would not start.
    #[error(transparent)]
    Stack(#[from] crate::stack::StackError),
    /// The proxy binary would not start or said something unexpected.
    #[error("cannot run the proxy {bin}: {reason}")]
    Proxy {
        /// The binary.
        bin: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// A file of the run could not be written.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
}

/// The kinds of request the clients send, and how often: each client walks
/// this list, starting at its own place in it.
const MIX: [Kind; 20] = {
    use Kind::*;
    [
        Page, Whoami, Tasks, Cached, Whoami, Page, Whoami, AddTask, Tasks, Whoami, Page, Https,
        Whoami, Cached, Tasks, Whoami, Page, WebSocket, Whoami, Cached,
    ]
};

#[derive(Debug, Clone, Copy)]
enum Kind {
    /// The frontend page, compressed.
    Page,
    /// Round-robin over the whoami replicas (one is often down).
    Whoami,
    /// A read from tasks-api.
    Tasks,
    /// A write to tasks-api (its SQLite database).
    AddTask,
    /// A cached answer.
    Cached,
    /// The frontend over HTTPS, on a new TLS connection.
    Https,
    /// A WebSocket echo through whoami.
    WebSocket,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Page => "page",
            Kind::Whoami => "whoami",
            Kind::Tasks => "tasks",
            Kind::AddTask => "add-task",
            Kind::Cached => "cached",
            Kind::Https => "https",
            Kind::WebSocket => "websocket",
        }
    }
}

/// Where the clients send their requests.
#[derive(Debug, Clone)]
struct Target {
    http: SocketAddr,
    https: SocketAddr,
    ca_root_pem: Arc<str>,
}

/// Counts of outcomes, shared by the clients.
#[derive(Debug, Default)]
struct Tally {
    outcomes: Mutex<BTreeMap<&'static str, BTreeMap<String, u64>>>,
    requests: AtomicU64,
}

impl Tally {
    fn record(&self, kind: Kind, outcome: String) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        let mut outcomes = self.outcomes.lock().expect("tally");
        *outcomes
            .entry(kind.name())
            .or_default()
            .entry(outcome)
            .or_default() += 1;
    }
}

/// Sends one request of `kind` and says how it ended: `ok`, or what failed.
async fn one_request(kind: Kind, client: &LabClient, target: &Target, n: u64) -> String {
    let answered = |result: Result<client::Exchange, client::RequestError>| match result {
        Ok(exchange) if exchange.status.is_success() || exchange.status.is_redirection() => {
            "ok".to_owned()
        }
        Ok(exchange) => exchange.status.as_u16().to_string(),
        Err(err) => format!("no answer: {}", short_error(&err)),
    };
    match kind {
        Kind::Page => answered(
            client
                .send(
                    Method::GET,
                    "localhost",
                    "/",
                    &[("accept-encoding", "gzip, br, zstd")],
                    Bytes::new(),
                )
                .await,
        ),
        Kind::Whoami => answered(client.get("localhost", "/api/whoami").await),
        Kind::Tasks => answered(client.get("localhost", "/api/tasks").await),
        Kind::AddTask => answered(
            client
                .send(
                    Method::POST,
                    "localhost",
                    "/api/tasks",
                    &[("content-type", "application/json")],
                    Bytes::from(format!("{{\"title\":\"soak task {n}\"}}")),
                )
                .await,
        ),
        Kind::Cached => answered(
            client
                .get("localhost", "/cached?cache_control=max-age=2")
                .await,
        ),
        Kind::Https => answered(
            client::get_https(
                target.https,
                "secure.localhost",
                "/",
                Some(&target.ca_root_pem),
            )
            .await,
        ),
        Kind::WebSocket => {
            let message = format!("soak {n}");
            match client::websocket(
                target.http,
                "localhost",
                "/ws",
                &[],
                std::slice::from_ref(&message),
                std::time::Duration::ZERO,
            )
            .await
            {
                Ok(talk)
                    if talk
                        .events
                        .contains(&client::WebSocketEvent::Received(message)) =>
                {
                    "ok".to_owned()
                }
                Ok(talk) if talk.handshake.status.as_u16() != 101 => {
                    talk.handshake.status.as_u16().to_string()
                }
                Ok(_) => "no echo".to_owned(),
                Err(err) => format!("no answer: {}", short_error(&err)),
            }
        }
    }
}

/// The innermost cause of a client error: "connection reset by peer", ...
fn short_error(err: &client::RequestError) -> String {
    let mut source: &dyn std::error::Error = err;
    while let Some(inner) = source.source() {
        source = inner;
    }
    source.to_string()
}

/// `clients` clients sending requests one after another until told to stop.
struct Traffic {
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Traffic {
    fn start(target: &Target, clients: usize, tally: &Arc<Tally>) -> Traffic {
        let stop = Arc::new(AtomicBool::new(false));
        let tasks = (0..clients)
            .map(|i| {
                let (stop, tally, target) = (stop.clone(), tally.clone(), target.clone());
                tokio::spawn(async move {
                    let client = LabClient::new(target.http);
                    let mut n = i as u64;
                    while !stop.load(Ordering::Relaxed) {
                        let kind = MIX[n as usize % MIX.len()];
                        let outcome = one_request(kind, &client, &target, n).await;
                        tally.record(kind, outcome);
                        n += 1;
                    }
                })
            })
            .collect();
        Traffic { stop, tasks }
    }

    /// Stops every client and waits until each has dropped its connections.
    async fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        for task in self.tasks {
            let _ = task.await;
        }
    }
}

/// The proxy binary, running; killed when dropped.
struct ProxyProcess {
    child: Child,
    tree: ProcessTree,
    config_path: PathBuf,
    config: String,
    log: Arc<Mutex<LogLines>>,
}

#[derive(Debug, Default)]
struct LogLines {
    problems: Vec<String>,
    count: usize,
}

impl Drop for ProxyProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The line of the original `/welcome` answer in lab/stack/proxy.toml.
const WELCOME: &str = "Welcome to the reverse proxy!\\n";

impl ProxyProcess {
    fn start(bin: &Path, dir: &Path, stack_config: &str) -> Result<ProxyProcess, SoakError> {
        let fail = |reason: String| SoakError::Proxy {
            bin: bin.to_owned(),
            reason,
        };
        if !stack_config.contains(WELCOME) {
            return Err(fail(format!(
                "lab/stack/proxy.toml has no route answering {WELCOME:?}: the soak changes that answer to see its reloads take effect"
            )));
        }
        // Top-level keys come before the first table.
        let access_log = dir.join("access.log");
        let config = format!(
            "access_log = {{ path = {:?} }}\n{stack_config}",
            access_log.display().to_string()
        );
        let config_path = dir.join("proxy.toml");
        write(&config_path, &config)?;
        let mut child = Command::new(bin)
            .args(["run", "--config"])
            .arg(&config_path)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|err| fail(err.to_string()))?;
        let tree = ProcessTree { pid: child.id() };
        let log = Arc::new(Mutex::new(LogLines::default()));
        let stderr = child.stderr.take().expect("piped stderr");
        let problems = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let mut log = problems.lock().expect("log lines");
                log.count += 1;
                if log.problems.len() < 20 {
                    log.problems.push(line);
                }
            }
        });
        Ok(ProxyProcess {
            child,
            tree,
            config_path,
            config,
            log,
        })
    }

    /// Reads the proxy's first lines: where it listens.
    fn addresses(&mut self) -> Result<(SocketAddr, SocketAddr), String> {
        let stdout = self.child.stdout.take().ok_or("stdout already read")?;
        let mut lines = BufReader::new(stdout).lines();
        let mut next = |scheme: &str| -> Result<SocketAddr, String> {
            let line = lines
                .next()
                .ok_or("it exited before saying where it listens")?
                .map_err(|err| err.to_string())?;
            line.strip_prefix(&format!("proxy: listening on {scheme}://"))
                .and_then(|addr| addr.trim().parse().ok())
                .ok_or_else(|| format!("unexpected line: {line:?}"))
        };
        let addrs = (next("http")?, next("https")?);
        // Keep reading, so the pipe never fills.
        std::thread::spawn(move || lines.for_each(drop));
        Ok(addrs)
    }

    /// Writes the config with reload number `n` in its `/welcome` answer and
    /// sends SIGHUP.
    fn reload(&self, n: u32) -> Result<(), SoakError> {
        let changed = self.config.replace(
            WELCOME,
            &format!("Welcome to the reverse proxy! (reload {n})\\n"),
        );
        write(&self.config_path, &changed)?;
        let pid = rustix::process::Pid::from_raw(self.tree.pid as i32).expect("a child's pid");
        rustix::process::kill_process(pid, rustix::process::Signal::HUP).map_err(|err| {
            SoakError::Proxy {
                bin: self.config_path.clone(),
                reason: format!("cannot send SIGHUP: {err}"),
            }
        })
    }

    /// Open file descriptors now.
    fn fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.tree.pid)).map_or(0, |dir| dir.count())
    }

    fn rss_kib(&self) -> (u64, u64) {
        self.tree
            .usage()
            .map_or((0, 0), |usage| (usage.rss_kib, usage.peak_rss_kib))
    }
}

fn write(path: &Path, text: &str) -> Result<(), SoakError> {
    std::fs::write(path, text).map_err(|source| SoakError::Write {
        path: path.to_owned(),
        source,
    })
}

/// Asks for `/welcome` until it names reload `n`, for at most 5 seconds.
async fn reload_took_effect(client: &LabClient, n: u32) -> bool {
    let expected = format!("(reload {n})");
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if let Ok(answer) = client.get("localhost", "/welcome").await
            && answer.text().contains(&expected)
        {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

/// The proxy's open file descriptors with no connection to anything: every
/// service is stopped for the reading (which closes the upstream connections
/// idle in the proxy's pools), then started again on its address.
async fn fds_with_no_connection(
    stack: &mut Stack,
    proxy: &ProxyProcess,
) -> Result<usize, SoakError> {
    let names: Vec<String> = stack.services().map(|(name, _)| name.to_owned()).collect();
    for name in &names {
        stack.stop_service(name).await?;
    }
    let fds = settled_fds(proxy).await;
    for name in &names {
        stack.start_service(name).await?;
    }
    Ok(fds)
}

/// Waits until the proxy's file descriptor count stops changing (closed
/// connections take a moment to be noticed), and returns it.
async fn settled_fds(proxy: &ProxyProcess) -> usize {
    let mut last = proxy.fds();
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = proxy.fds();
        if now == last {
            return now;
        }
        last = now;
    }
    last
}

/// The replicas stopped in turn: whoami-2 and whoami-3. whoami-1 is also the
/// only server of the cached route's upstream, and stopping a pool's only
/// server fails its requests by design, which is not what the soak looks for.
const STOPPED_IN_TURN: [&str; 2] = [WHOAMI_REPLICAS[1], WHOAMI_REPLICAS[2]];

/// Runs a soak: boots the services in this process and the proxy binary in
/// front of them, warms up, then sends traffic for `options.duration` while
/// reloading the proxy and stopping replicas, and reports.
pub async fn run(options: &SoakOptions) -> Result<SoakReport, SoakError> {
    let mut stack = Stack::boot(StackOptions::default()).await?;
    let dir = tempfile::tempdir().map_err(|source| SoakError::Write {
        path: std::env::temp_dir(),
        source,
    })?;
    let mut proxy = ProxyProcess::start(
        &options.proxy_bin,
        dir.path(),
        &stack.proxy_config_on_free_ports(),
    )?;
    let (http, https) = proxy.addresses().map_err(|reason| SoakError::Proxy {
        bin: options.proxy_bin.clone(),
        reason,
    })?;
    let target = Target {
        http,
        https,
        ca_root_pem: stack.ca_root_pem.as_str().into(),
    };

    // Warm-up: fill the upstream pools and caches, then count with no client.
    let warm_up = Arc::new(Tally::default());
    let traffic = Traffic::start(&target, options.clients, &warm_up);
    tokio::time::sleep(Duration::from_secs(2)).await;
    traffic.stop().await;
    let mut report = SoakReport {
        fds_before: fds_with_no_connection(&mut stack, &proxy).await?,
        rss_before_kib: proxy.rss_kib().0,
        ..SoakReport::default()
    };

    let tally = Arc::new(Tally::default());
    let traffic = Traffic::start(&target, options.clients, &tally);
    let checker = LabClient::new(http);
    let started = tokio::time::Instant::now();
    let end = started + options.duration;
    let mut sample = tokio::time::interval_at(started + options.sample_every, options.sample_every);
    let mut reload = tokio::time::interval_at(started + options.reload_every, options.reload_every);
    let mut kill = tokio::time::interval_at(started + options.kill_every, options.kill_every);
    let mut down: Option<(&str, tokio::time::Instant)> = None;
    loop {
        let restart_at = down.map_or(end, |(_, at)| at.min(end));
        tokio::select! {
            _ = tokio::time::sleep_until(end) => break,
            _ = sample.tick() => {
                let (rss_kib, _) = proxy.rss_kib();
                report.samples.push(Sample {
                    at: started.elapsed(),
                    rss_kib,
                    fds: proxy.fds(),
                    requests: tally.requests.load(Ordering::Relaxed),
                });
            }
            _ = reload.tick() => {
                let n = report.reloads + report.reloads_unconfirmed + 1;
                proxy.reload(n)?;
                if reload_took_effect(&checker, n).await {
                    report.reloads += 1;
                } else {
                    report.reloads_unconfirmed += 1;
                }
            }
            _ = kill.tick(), if down.is_none() => {
                let name = STOPPED_IN_TURN[report.kills as usize % STOPPED_IN_TURN.len()];
                stack.stop_service(name).await?;
                report.kills += 1;
                down = Some((name, tokio::time::Instant::now() + options.down_for));
            }
            _ = tokio::time::sleep_until(restart_at), if down.is_some() => {
                if let Some((name, _)) = down.take() {
                    stack.start_service(name).await?;
                }
            }
        }
    }
    report.elapsed = started.elapsed();
    traffic.stop().await;
    drop(checker);
    if let Some((name, _)) = down.take() {
        stack.start_service(name).await?;
    }

    report.fds_after = fds_with_no_connection(&mut stack, &proxy).await?;
    (report.rss_after_kib, report.peak_rss_kib) = proxy.rss_kib();
    report.outcomes = std::mem::take(&mut *tally.outcomes.lock().expect("tally"));
    report.access_log_lines = std::fs::read_to_string(dir.path().join("access.log"))
        .map_or(0, |text| text.lines().count());
    {
        let log = proxy.log.lock().expect("log lines");
        report.log_problems = log.problems.clone();
        report.log_problem_count = log.count;
    }
    drop(proxy);
    stack.shutdown().await;
    Ok(report)
}
