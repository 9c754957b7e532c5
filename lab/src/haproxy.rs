//! HAProxy as a child process, for side-by-side runs like [`crate::nginx`]:
//! `lab bench` and parity checks.
//!
//! HAProxy runs in the foreground (`-db`: no daemon, no master process, one
//! process with `nbthread` threads) with a config written into a temporary
//! folder, as the current user (no `user`, no `chroot`). It does not bind its
//! port itself: the lab binds `127.0.0.1:0` (the OS picks a free port) and
//! hands the listening socket over as HAProxy's stdin, which the config names
//! `bind fd@0`. Nothing can take the port between picking and binding, so
//! there is nothing to retry. HAProxy answers [`READY_URI`] itself
//! (`monitor-uri`); once it does, it runs. It is killed when the [`Haproxy`]
//! is dropped. It is found as `$HAPROXY_BIN`, else `haproxy` on `PATH`, else
//! `/usr/sbin/haproxy` (Debian: `apt-get install haproxy`).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

/// Connections HAProxy accepts at once (`maxconn`, global and per frontend).
///
/// HAProxy reserves two file descriptors per connection (client and server
/// side), so it asks for `2 × maxconn` + a few (40,014 with one thread). Where the hard
/// limit (`ulimit -Hn`) is lower it cannot raise it, and by default
/// (`strict-limits`) refuses to start; the config says `no strict-limits`,
/// so it warns and runs with the limit it has. An idle keep-alive client
/// needs one descriptor, a request in flight two, so 10,000 idle clients fit
/// under a limit of 20,000.
pub const MAXCONN: u32 = 20_000;

/// The path HAProxy answers itself with a 200 (`monitor-uri`), without
/// asking the upstream: how the lab knows it runs, as a load balancer in
/// front of HAProxy would.
pub const READY_URI: &str = "/__lab/ready";

/// How long HAProxy may take to answer [`READY_URI`].
const READY_WITHIN: Duration = Duration::from_secs(5);

/// The HAProxy binary: `$HAPROXY_BIN`, else `haproxy` on `PATH`, else
/// `/usr/sbin/haproxy`.
pub fn find_haproxy() -> Result<PathBuf, String> {
    crate::nginx::find_program("haproxy", "HAPROXY_BIN")
}

/// What HAProxy is asked to do: proxy everything to the upstream.
#[derive(Debug, Clone)]
pub struct HaproxySetup {
    /// `nbthread`: threads of the one HAProxy process (at least 1; Debian's
    /// build allows at most 64).
    pub threads: u32,
    /// Keep idle connections to the upstream and share them between clients
    /// (`http-reuse always`), like nginx's `keepalive 64`. Off: a new upstream
    /// connection per request (`option http-server-close`), nginx's default.
    /// Clients keep their connections alive either way.
    pub upstream_keepalive: bool,
}

impl Default for HaproxySetup {
    /// One thread, keep-alive to the upstream.
    fn default() -> Self {
        HaproxySetup {
            threads: 1,
            upstream_keepalive: true,
        }
    }
}

/// HAProxy running in the foreground; killed when dropped.
#[derive(Debug)]
pub struct Haproxy {
    /// Where it listens.
    pub addr: SocketAddr,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl Haproxy {
    /// Starts HAProxy `bin` with `setup` in front of `upstream`, on a free
    /// loopback port, and waits until it answers [`READY_URI`].
    pub async fn start(
        bin: &Path,
        setup: &HaproxySetup,
        upstream: SocketAddr,
    ) -> Result<Haproxy, String> {
        let mut haproxy = Haproxy::spawn(bin, setup, upstream)?;
        let deadline = Instant::now() + READY_WITHIN;
        loop {
            // On an error return `haproxy` is dropped, which kills the child.
            if let Some(child) = haproxy.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                haproxy.child = None;
                return Err(format!(
                    "haproxy exited before it was ready ({status}):\n{}",
                    haproxy.logs()
                ));
            }
            if answers_ready(haproxy.addr).await {
                return Ok(haproxy);
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "haproxy did not answer {READY_URI} within {} s:\n{}",
                    READY_WITHIN.as_secs(),
                    haproxy.logs()
                ));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The process id of HAProxy (one process; its threads share it).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// What HAProxy printed on stderr so far: its start-up notices and
    /// warnings (it logs nothing else; the config has no `log`).
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("stderr.log")).unwrap_or_default()
    }

    /// Binds the port and starts HAProxy on it. Within a Tokio runtime: the
    /// socket is made with Tokio's `TcpSocket`, which sets the backlog.
    fn spawn(bin: &Path, setup: &HaproxySetup, upstream: SocketAddr) -> Result<Haproxy, String> {
        let failed = |what: &str, e: std::io::Error| format!("{what}: {e}");
        let dir = tempfile::Builder::new()
            .prefix("proxy-lab-haproxy-")
            .tempdir()
            .map_err(|e| failed("a temporary folder for haproxy", e))?;
        // HAProxy keeps the backlog the socket was given (binding itself it
        // would ask for `maxconn`; Linux caps it at `net.core.somaxconn`);
        // std's `TcpListener::bind` gives 128, too few for bursts of connects.
        let socket =
            tokio::net::TcpSocket::new_v4().map_err(|e| failed("a socket for haproxy", e))?;
        socket
            .bind(SocketAddr::from(([127, 0, 0, 1], 0)))
            .map_err(|e| failed("a loopback port for haproxy", e))?;
        let listener = socket
            .listen(MAXCONN)
            .and_then(tokio::net::TcpListener::into_std)
            .map_err(|e| failed("listen on the port", e))?;
        let addr = listener
            .local_addr()
            .map_err(|e| failed("the port's address", e))?;
        let conf = dir.path().join("haproxy.cfg");
        std::fs::write(&conf, config(setup, upstream))
            .map_err(|e| failed("write haproxy.cfg", e))?;
        let stderr = std::fs::File::create(dir.path().join("stderr.log"))
            .map_err(|e| failed("haproxy's stderr", e))?;
        // The listener becomes the child's fd 0; the `Command` (and with it
        // our copy) is gone after this statement, so only HAProxy holds it.
        let child = Command::new(bin)
            .arg("-db")
            .arg("-f")
            .arg(&conf)
            .stdin(Stdio::from(std::os::fd::OwnedFd::from(listener)))
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .map_err(|e| failed(&format!("start {}", bin.display()), e))?;
        Ok(Haproxy {
            addr,
            dir,
            child: Some(child),
        })
    }

    /// HAProxy's stderr and the config it was given.
    fn logs(&self) -> String {
        format!(
            "--- stderr\n{}\n--- haproxy.cfg\n{}",
            self.stderr(),
            std::fs::read_to_string(self.dir.path().join("haproxy.cfg")).unwrap_or_default()
        )
    }
}

/// The config: one frontend on the inherited socket, one backend with the
/// upstream. No `log` lines: HAProxy logs nothing.
///
/// Client side, HAProxy keeps connections alive in either case; idle ones
/// are closed after `timeout client` (30 s; nginx's `keepalive_timeout` is
/// 75 s). Upstream side, `http-reuse always` lets any client's request use
/// any idle upstream connection (HAProxy's default, `safe`, does so only for
/// a client's second and later requests); idle upstream connections are not
/// capped in number and are closed gradually (`pool-purge-delay`, 5 s).
fn config(setup: &HaproxySetup, upstream: SocketAddr) -> String {
    let (server_side, reuse) = if setup.upstream_keepalive {
        ("option http-keep-alive", "always")
    } else {
        ("option http-server-close", "never")
    };
    format!(
        "# Written by the lab (lab/src/haproxy.rs) for one run.
global
    nbthread {threads}
    maxconn {MAXCONN}
    # Run even where the fd limit is below 2 x maxconn (see MAXCONN).
    no strict-limits

defaults
    mode http
    maxconn {MAXCONN}
    timeout connect 5s
    timeout client 30s
    timeout server 30s
    {server_side}
    http-reuse {reuse}

frontend lab
    # The listening socket the lab passed as stdin.
    bind fd@0
    monitor-uri {READY_URI}
    default_backend upstream

backend upstream
    server app {upstream}
",
        threads = setup.threads.max(1),
    )
}

/// One `GET READY_URI` on a fresh connection: true on a 200. The socket
/// listens before HAProxy runs (the kernel queues connections), so until
/// HAProxy accepts, no answer comes and the try gives up after 200 ms.
async fn answers_ready(addr: SocketAddr) -> bool {
    let exchange = async {
        let mut stream = TcpStream::connect(addr).await.ok()?;
        let request = format!("GET {READY_URI} HTTP/1.1\r\nHost: lab\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.ok()?;
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).await.ok()?;
        Some(answer.starts_with(b"HTTP/1.1 200"))
    };
    matches!(
        tokio::time::timeout(Duration::from_millis(200), exchange).await,
        Ok(Some(true))
    )
}

impl Drop for Haproxy {
    /// Kills HAProxy (its threads go with it) and waits for it, so no
    /// zombie stays behind; the folder is removed after.
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use bytes::Bytes;
    use http_body_util::{BodyExt as _, Empty, Full};
    use hyper::client::conn::http1::SendRequest;
    use hyper::service::service_fn;
    use hyper_util::rt::TokioIo;

    use super::*;

    /// The HAProxy binary, or `None` after saying why the test is skipped.
    /// With `CI=true` a missing HAProxy fails instead: CI must really run it.
    fn haproxy_or_skip() -> Option<PathBuf> {
        match find_haproxy() {
            Ok(bin) => Some(bin),
            Err(reason) => {
                let ci =
                    std::env::var("CI").is_ok_and(|v| v.eq_ignore_ascii_case("true") || v == "1");
                assert!(!ci, "CI=true but {reason}; CI must run the HAProxy tests");
                eprintln!("skipped: {reason}");
                None
            }
        }
    }

    /// A backend answering `ok`, and how many connections it accepted.
    async fn backend() -> (SocketAddr, Arc<AtomicUsize>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a loopback port for the backend");
        let addr = listener.local_addr().expect("the backend's address");
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let service = service_fn(|_request| async {
                        Ok::<_, Infallible>(hyper::Response::new(Full::new(Bytes::from_static(
                            b"ok",
                        ))))
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        (addr, accepted)
    }

    /// One client connection to `addr`.
    async fn connect(addr: SocketAddr) -> SendRequest<Empty<Bytes>> {
        let stream = TcpStream::connect(addr).await.expect("connect to haproxy");
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .expect("an HTTP/1.1 handshake");
        tokio::spawn(connection);
        sender
    }

    /// Sends `n` requests one after another over one client connection and
    /// checks each gets 200 `ok` and leaves the connection open for the next.
    async fn requests_over_one_connection(addr: SocketAddr, n: usize) {
        let mut sender = connect(addr).await;
        for i in 1..=n {
            sender
                .ready()
                .await
                .unwrap_or_else(|e| panic!("request {i}: the connection was closed: {e}"));
            let request = hyper::Request::get("/")
                .header(hyper::header::HOST, "lab")
                .body(Empty::<Bytes>::new())
                .expect("a valid request");
            let response = sender
                .send_request(request)
                .await
                .unwrap_or_else(|e| panic!("request {i}: {e}"));
            assert_eq!(response.status(), 200, "request {i}");
            assert!(
                response.headers().get(hyper::header::CONNECTION).is_none(),
                "request {i}: haproxy asked to close: {:?}",
                response.headers()
            );
            let body = response
                .into_body()
                .collect()
                .await
                .expect("the body")
                .to_bytes();
            assert_eq!(body, Bytes::from_static(b"ok"), "request {i}");
        }
        assert!(!sender.is_closed(), "the connection was closed after {n}");
    }

    #[tokio::test]
    async fn keeps_the_client_and_the_upstream_connection_alive() {
        let Some(bin) = haproxy_or_skip() else {
            return;
        };
        let (upstream, accepted) = backend().await;
        let setup = HaproxySetup {
            threads: 1,
            upstream_keepalive: true,
        };
        let haproxy = Haproxy::start(&bin, &setup, upstream)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(haproxy.pid().is_some());
        requests_over_one_connection(haproxy.addr, 3).await;
        assert_eq!(
            accepted.load(Ordering::SeqCst),
            1,
            "three requests should share one upstream connection"
        );
    }

    #[tokio::test]
    async fn without_upstream_keepalive_each_request_opens_an_upstream_connection() {
        let Some(bin) = haproxy_or_skip() else {
            return;
        };
        let (upstream, accepted) = backend().await;
        let setup = HaproxySetup {
            threads: 1,
            upstream_keepalive: false,
        };
        let haproxy = Haproxy::start(&bin, &setup, upstream)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        requests_over_one_connection(haproxy.addr, 3).await;
        assert_eq!(accepted.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn a_bad_config_is_reported_with_haproxys_stderr() {
        let Some(bin) = haproxy_or_skip() else {
            return;
        };
        let (upstream, _) = backend().await;
        // Debian's HAProxy allows at most 64 threads.
        let setup = HaproxySetup {
            threads: 100_000,
            upstream_keepalive: true,
        };
        let error = Haproxy::start(&bin, &setup, upstream)
            .await
            .expect_err("haproxy should refuse 100000 threads");
        assert!(error.contains("exited before it was ready"), "{error}");
        assert!(error.contains("nbthread"), "{error}");
        assert!(error.contains("--- haproxy.cfg"), "{error}");
    }
}
