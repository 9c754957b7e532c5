//! Parity with nginx: the same traffic, sent to a real nginx and to our proxy
//! configured alike, in front of the same upstream, must get the same status
//! codes. Each case is one small config written twice (nginx.conf and the
//! proxy's TOML) and one burst of traffic; the test prints both sequences side
//! by side (`cargo test -p lab --test nginx_parity -- --nocapture`), asserts
//! that nginx gave what its documentation promises (so the test really drives
//! nginx as intended) and that the proxy gave exactly the same.
//!
//! nginx runs in the foreground from a temporary folder (`-p DIR`), with its
//! pid file, logs and temp folders inside, on a port picked free just before.
//! It is found as `$NGINX_BIN`, else `nginx` on `PATH`, else `/usr/sbin/nginx`.
//! Without it each case prints why it is skipped and passes, except when
//! `CI=true`: CI must really run it (`.ci/run` installs nginx first).
//!
//! nginx counts time on the wall clock, so every case sends its requests
//! within well under a second (the rate is 1r/s) and only the deliberate
//! delays take longer; the results do not depend on exact timing. Every
//! request uses a fresh HTTP/1.1 connection from 127.0.0.1, so both servers
//! see the same client address.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use lab::nginx::{Nginx, NginxSetup, find_nginx};
use tokio::net::{TcpListener, TcpStream};

// ---------------------------------------------------------------------------
// The cases
// ---------------------------------------------------------------------------

/// `limit_req_zone $binary_remote_addr zone=one:1m rate=1r/s;` and ours.
const NGINX_RATE_ZONE: &str = "limit_req_zone $binary_remote_addr zone=one:1m rate=1r/s;";
const PROXY_RATE_ZONE: &str = r#"
[limit_req_zones.one]
key = "client_ip"
rate = "1r/s"
size = "1m"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn case_1_without_burst_a_second_request_within_the_second_gets_503() {
    let setup = Setup {
        nginx_http: NGINX_RATE_ZONE.into(),
        nginx_server: "limit_req zone=one;".into(),
        proxy_top: PROXY_RATE_ZONE.into(),
        proxy_server: r#"limit_req = { zone = "one" }"#.into(),
        ..Setup::default()
    };
    let title = "case 1 rate=1r/s burst=0, 3 one after another";
    let requests = vec![Req::get("/"); 3];
    let Some(both) = compare(title, &setup, |t| one_after_another(t, requests.clone())).await
    else {
        return;
    };
    both.print_in_order(title);
    both.assert_in_order(&[200, 503, 503]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn case_2_nodelay_serves_the_burst_at_once_and_refuses_the_rest() {
    let setup = Setup {
        nginx_http: NGINX_RATE_ZONE.into(),
        nginx_server: "limit_req zone=one burst=5 nodelay;".into(),
        proxy_top: PROXY_RATE_ZONE.into(),
        proxy_server: r#"limit_req = { zone = "one", burst = 5, nodelay = true }"#.into(),
        ..Setup::default()
    };
    let title = "case 2 burst=5 nodelay, 8 one after another";
    let requests = vec![Req::get("/"); 8];
    let Some(both) = compare(title, &setup, |t| one_after_another(t, requests.clone())).await
    else {
        return;
    };
    both.print_in_order(title);
    both.assert_in_order(&[200, 200, 200, 200, 200, 200, 503, 503]);
    for (name, replies) in both.named() {
        let slowest = slowest_ok(replies);
        assert!(
            slowest < Duration::from_millis(900),
            "{name}: nodelay must not delay, but a 200 took {slowest:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn case_3_a_burst_is_delayed_to_the_rate_and_the_excess_refused() {
    let setup = Setup {
        nginx_http: NGINX_RATE_ZONE.into(),
        nginx_server: "limit_req zone=one burst=5;".into(),
        proxy_top: PROXY_RATE_ZONE.into(),
        proxy_server: r#"limit_req = { zone = "one", burst = 5 }"#.into(),
        ..Setup::default()
    };
    let title = "case 3 burst=5 (delayed), 7 at once";
    let Some(both) = compare(title, &setup, |t| all_at_once(t, Req::get("/"), 7)).await else {
        return;
    };
    both.print_sorted(title);
    both.assert_sorted(&[200, 200, 200, 200, 200, 200, 503]);
    // The fifth request of the burst waits 5 s for its turn at 1r/s.
    for (name, replies) in both.named() {
        let slowest = slowest_ok(replies);
        assert!(
            slowest >= Duration::from_millis(4000),
            "{name}: the burst should have been spread over about 5 s, but the slowest 200 took {slowest:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn case_4_two_stage_limiting_serves_the_first_excess_at_once_and_delays_the_rest() {
    let setup = Setup {
        nginx_http: NGINX_RATE_ZONE.into(),
        nginx_server: "limit_req zone=one burst=5 delay=2;".into(),
        proxy_top: PROXY_RATE_ZONE.into(),
        proxy_server: r#"limit_req = { zone = "one", burst = 5, delay = 2 }"#.into(),
        ..Setup::default()
    };
    let title = "case 4 burst=5 delay=2, 7 at once";
    let Some(both) = compare(title, &setup, |t| all_at_once(t, Req::get("/"), 7)).await else {
        return;
    };
    both.print_sorted(title);
    both.assert_sorted(&[200, 200, 200, 200, 200, 200, 503]);
    // Three excess requests are delayed, the last by about 3 s.
    for (name, replies) in both.named() {
        let slowest = slowest_ok(replies);
        assert!(
            slowest >= Duration::from_millis(2000),
            "{name}: the last delayed request should wait about 3 s, but the slowest 200 took {slowest:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn case_5_limit_req_status_429() {
    let setup = Setup {
        nginx_http: NGINX_RATE_ZONE.into(),
        nginx_server: "limit_req zone=one;\nlimit_req_status 429;".into(),
        proxy_top: PROXY_RATE_ZONE.into(),
        proxy_server: r#"limit_req = { zone = "one", status = 429 }"#.into(),
        ..Setup::default()
    };
    let title = "case 5 rate=1r/s burst=0 status 429, 3 one after another";
    let requests = vec![Req::get("/"); 3];
    let Some(both) = compare(title, &setup, |t| one_after_another(t, requests.clone())).await
    else {
        return;
    };
    both.print_in_order(title);
    both.assert_in_order(&[200, 429, 429]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn case_6_limit_conn_refuses_a_second_request_in_progress() {
    let setup = Setup {
        nginx_http: "limit_conn_zone $binary_remote_addr zone=addr:1m;".into(),
        nginx_server: "limit_conn addr 1;".into(),
        proxy_top: "[limit_conn_zones.addr]\nkey = \"client_ip\"\n".into(),
        proxy_server: r#"limit_conn = { zone = "addr", max = 1 }"#.into(),
        ..Setup::default()
    };
    let title = "case 6 limit_conn 1, two /slow at once";
    let Some(both) = compare(title, &setup, |target| async move {
        // The first request is sent, and the second only once the upstream
        // is working on the first: its slot is surely taken by then.
        let started = target.slow_started.load(Ordering::SeqCst);
        let first = tokio::spawn(send(target.addr, Req::get("/slow")));
        let deadline = Instant::now() + Duration::from_secs(10);
        while target.slow_started.load(Ordering::SeqCst) == started {
            assert!(
                Instant::now() < deadline,
                "the first /slow request never reached the upstream"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let second = send(target.addr, Req::get("/slow")).await;
        vec![first.await.expect("the first request"), second]
    })
    .await
    else {
        return;
    };
    both.print_in_order(title);
    both.assert_in_order(&[200, 503]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn case_7_a_body_over_client_max_body_size_gets_413() {
    let setup = Setup {
        nginx_server: "client_max_body_size 10;".into(),
        proxy_server: r#"max_body_size = "10""#.into(),
        ..Setup::default()
    };
    let title = "case 7 max body 10 bytes, POST 11 then 10 bytes";
    let requests = vec![
        Req::post("/upload", b"eleven byte"),
        Req::post("/upload", b"ten bytes!"),
    ];
    let Some(both) = compare(title, &setup, |t| one_after_another(t, requests.clone())).await
    else {
        return;
    };
    both.print_in_order(title);
    both.assert_in_order(&[413, 200]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn case_8_allow_and_deny_decide_by_the_client_address() {
    let cases = [
        ("case 8a allow 10.0.0.0/8, deny all", "10.0.0.0/8", 403),
        ("case 8b allow 127.0.0.1, deny all", "127.0.0.1", 200),
    ];
    for (title, allowed, expected) in cases {
        let setup = Setup {
            nginx_server: format!("allow {allowed};\ndeny all;"),
            proxy_server: format!(r#"access = ["allow {allowed}", "deny all"]"#),
            ..Setup::default()
        };
        let Some(both) =
            compare(title, &setup, |t| one_after_another(t, vec![Req::get("/")])).await
        else {
            return;
        };
        both.print_in_order(title);
        both.assert_in_order(&[expected]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn case_9_basic_auth_wants_the_right_password() {
    use base64::Engine as _;
    // Cost 4, the lowest, keeps the test fast: nginx runs crypt(3) on its
    // event loop, and the cost does not change what is accepted.
    let hash = bcrypt::hash("open sesame", 4).expect("a bcrypt hash");
    assert!(hash.starts_with("$2b$"), "{hash}");
    let setup = Setup {
        nginx_server: "auth_basic \"lab\";\nauth_basic_user_file \"{dir}/htpasswd\";".into(),
        nginx_files: vec![("htpasswd", format!("user:{hash}\n"))],
        proxy_server: format!(r#"basic_auth = {{ realm = "lab", users = {{ user = "{hash}" }} }}"#),
        ..Setup::default()
    };
    let basic = |credentials: &str| {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(credentials)
        )
    };
    let requests = vec![
        Req::get("/"),
        Req::get("/").header("authorization", basic("user:wrong password")),
        Req::get("/").header("authorization", basic("user:open sesame")),
    ];
    let title = "case 9 basic auth ($2b$ bcrypt): none, wrong, right password";
    let Some(both) = compare(title, &setup, |t| one_after_another(t, requests.clone())).await
    else {
        return;
    };
    both.print_in_order(title);
    both.assert_in_order(&[401, 401, 200]);
}

// ---------------------------------------------------------------------------
// Running one case against both servers
// ---------------------------------------------------------------------------

/// One case's configuration, for nginx and for the proxy. Both put it on the
/// one server, which sends everything to the upstream.
#[derive(Default)]
struct Setup {
    /// Directives in nginx's `http {}` block (zones).
    nginx_http: String,
    /// Directives in nginx's `server {}` block; `{dir}` is nginx's folder.
    nginx_server: String,
    /// Files written into nginx's folder: (name, contents).
    nginx_files: Vec<(&'static str, String)>,
    /// Top-level TOML for the proxy (zones).
    proxy_top: String,
    /// Keys of the proxy's `[[servers]]` table.
    proxy_server: String,
}

/// Where the traffic goes, and how many `/slow` requests the upstream began.
#[derive(Clone)]
struct Target {
    addr: SocketAddr,
    slow_started: Arc<AtomicUsize>,
}

/// What each server answered to the same traffic.
struct Both {
    nginx: Vec<Reply>,
    proxy: Vec<Reply>,
}

/// Runs `traffic` against nginx, then against the proxy, each configured by
/// `setup` in front of the same upstream. `None` when nginx is missing and
/// the case is skipped.
async fn compare<F, Fut>(title: &str, setup: &Setup, traffic: F) -> Option<Both>
where
    F: Fn(Target) -> Fut,
    Fut: Future<Output = Vec<Reply>>,
{
    let bin = nginx_or_skip(title)?;
    let upstream = Upstream::start().await;
    let target = |addr| Target {
        addr,
        slow_started: upstream.slow_started.clone(),
    };

    let nginx_setup = NginxSetup {
        http: setup.nginx_http.clone(),
        server: setup.nginx_server.clone(),
        files: setup
            .nginx_files
            .iter()
            .map(|(name, text)| ((*name).to_owned(), text.clone()))
            .collect(),
        workers: 1,
        upstream_keepalive: 0,
        worker_connections: 0,
    };
    let nginx = Nginx::start(&bin, &nginx_setup, upstream.addr)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let from_nginx = traffic(target(nginx.addr)).await;
    drop(nginx);

    let proxy = Proxy::start(setup, upstream.addr).await;
    let from_proxy = traffic(target(proxy.addr)).await;
    drop(proxy);

    Some(Both {
        nginx: from_nginx,
        proxy: from_proxy,
    })
}

impl Both {
    fn named(&self) -> [(&'static str, &[Reply]); 2] {
        [("nginx", &self.nginx), ("proxy", &self.proxy)]
    }

    fn print_in_order(&self, title: &str) {
        println!(
            "{title}: nginx {} proxy {}",
            list(&statuses(&self.nginx)),
            list(&statuses(&self.proxy))
        );
    }

    /// For concurrent requests: the statuses sorted, and the slowest 200.
    fn print_sorted(&self, title: &str) {
        let show = |replies: &[Reply]| {
            format!(
                "{} (slowest 200 after {:.2} s)",
                list(&sorted(replies)),
                slowest_ok(replies).as_secs_f64()
            )
        };
        println!(
            "{title}: nginx {} proxy {}",
            show(&self.nginx),
            show(&self.proxy)
        );
    }

    fn assert_in_order(&self, nginx_documents: &[u16]) {
        let (nginx, proxy) = (statuses(&self.nginx), statuses(&self.proxy));
        assert_eq!(
            nginx, nginx_documents,
            "nginx itself did not answer as documented: is the case driving it as intended?"
        );
        assert_eq!(proxy, nginx, "the proxy's statuses differ from nginx's");
    }

    fn assert_sorted(&self, nginx_documents: &[u16]) {
        let (nginx, proxy) = (sorted(&self.nginx), sorted(&self.proxy));
        assert_eq!(
            nginx, nginx_documents,
            "nginx itself did not answer as documented: is the case driving it as intended?"
        );
        assert_eq!(proxy, nginx, "the proxy's statuses differ from nginx's");
    }
}

fn statuses(replies: &[Reply]) -> Vec<u16> {
    replies.iter().map(|r| r.status).collect()
}

fn sorted(replies: &[Reply]) -> Vec<u16> {
    let mut statuses = statuses(replies);
    statuses.sort_unstable();
    statuses
}

/// `[200,503]`
fn list(statuses: &[u16]) -> String {
    let items: Vec<String> = statuses.iter().map(u16::to_string).collect();
    format!("[{}]", items.join(","))
}

/// How long the slowest 200 took.
fn slowest_ok(replies: &[Reply]) -> Duration {
    replies
        .iter()
        .filter(|r| r.status == 200)
        .map(|r| r.took)
        .max()
        .unwrap_or_default()
}

// ---------------------------------------------------------------------------
// The client
// ---------------------------------------------------------------------------

/// One request to send.
#[derive(Clone)]
struct Req {
    method: &'static str,
    path: &'static str,
    headers: Vec<(&'static str, String)>,
    body: &'static [u8],
}

impl Req {
    fn get(path: &'static str) -> Req {
        Req {
            method: "GET",
            path,
            headers: Vec::new(),
            body: b"",
        }
    }

    fn post(path: &'static str, body: &'static [u8]) -> Req {
        Req {
            method: "POST",
            body,
            ..Req::get(path)
        }
    }

    fn header(mut self, name: &'static str, value: String) -> Req {
        self.headers.push((name, value));
        self
    }
}

/// A response's status, and how long the request took.
#[derive(Debug, Clone, Copy)]
struct Reply {
    status: u16,
    took: Duration,
}

/// Sends `req` on a fresh HTTP/1.1 connection from 127.0.0.1 and reads the
/// whole response.
async fn send(addr: SocketAddr, req: Req) -> Reply {
    let start = Instant::now();
    let exchange = async {
        let stream = TcpStream::connect(addr).await.expect("connect");
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .expect("HTTP/1.1 handshake");
        tokio::spawn(connection);
        let mut request = http::Request::builder()
            .method(req.method)
            .uri(req.path)
            .header("host", "localhost");
        for (name, value) in &req.headers {
            request = request.header(*name, value.as_str());
        }
        let request = request
            .body(Full::new(Bytes::from_static(req.body)))
            .expect("a valid request");
        let response = sender.send_request(request).await.expect("a response");
        let status = response.status().as_u16();
        response
            .into_body()
            .collect()
            .await
            .expect("the response body");
        status
    };
    let status = tokio::time::timeout(Duration::from_secs(20), exchange)
        .await
        .expect("an answer within 20 s");
    Reply {
        status,
        took: start.elapsed(),
    }
}

/// Each request once the previous one was answered.
async fn one_after_another(target: Target, requests: Vec<Req>) -> Vec<Reply> {
    let mut replies = Vec::new();
    for req in requests {
        replies.push(send(target.addr, req).await);
    }
    replies
}

/// `n` copies of `req`, all sent at once.
async fn all_at_once(target: Target, req: Req, n: usize) -> Vec<Reply> {
    let tasks: Vec<_> = (0..n)
        .map(|_| tokio::spawn(send(target.addr, req.clone())))
        .collect();
    let mut replies = Vec::new();
    for task in tasks {
        replies.push(task.await.expect("a request task"));
    }
    replies
}

// ---------------------------------------------------------------------------
// The upstream both servers forward to
// ---------------------------------------------------------------------------

/// Answers 200 `ok` to anything; `/slow` after a second.
struct Upstream {
    addr: SocketAddr,
    slow_started: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Upstream {
    async fn start() -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the upstream");
        let addr = listener.local_addr().expect("the upstream's address");
        let slow_started = Arc::new(AtomicUsize::new(0));
        let counter = slow_started.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let counter = counter.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                        let counter = counter.clone();
                        async move {
                            if req.uri().path() == "/slow" {
                                counter.fetch_add(1, Ordering::SeqCst);
                                tokio::time::sleep(Duration::from_secs(1)).await;
                            }
                            // Read the body, as a real service would.
                            let _ = req.into_body().collect().await;
                            Ok::<_, Infallible>(http::Response::new(Full::new(Bytes::from_static(
                                b"ok",
                            ))))
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Upstream {
            addr,
            slow_started,
            task,
        }
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

// ---------------------------------------------------------------------------
// Our proxy, in-process
// ---------------------------------------------------------------------------

struct Proxy {
    addr: SocketAddr,
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl Proxy {
    async fn start(setup: &Setup, upstream: SocketAddr) -> Proxy {
        let text = format!(
            r#"
[[listen]]
addr = "127.0.0.1:0"
{top}
[[servers]]
{server}
routes = [{{ path = "/", upstream = "app" }}]

[upstreams.app]
servers = ["{upstream}"]
"#,
            top = setup.proxy_top,
            server = setup.proxy_server,
        );
        let config = match proxy::Config::parse(&text, "parity.toml") {
            Ok(config) => config,
            Err(errors) => panic!("the proxy's config is invalid:\n{errors}\n{text}"),
        };
        let server = proxy::server::ProxyServer::bind(config)
            .await
            .expect("bind the proxy");
        let addr = *server.local_addrs().first().expect("a listener");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(server.run(async {
            let _ = stopped.await;
        }));
        Proxy { addr, _stop: stop }
    }
}

// ---------------------------------------------------------------------------
// nginx, as a child process
// ---------------------------------------------------------------------------

/// The nginx binary, or `None` after saying why the case is skipped. With
/// `CI=true` a missing nginx fails instead: CI must really compare.
fn nginx_or_skip(title: &str) -> Option<PathBuf> {
    match find_nginx() {
        Ok(bin) => Some(bin),
        Err(reason) => {
            let ci = std::env::var("CI").is_ok_and(|v| v.eq_ignore_ascii_case("true") || v == "1");
            assert!(
                !ci,
                "{title}: CI=true but {reason}; CI must run the nginx parity test (.ci/run installs nginx)"
            );
            println!("{title}: skipped: {reason}");
            None
        }
    }
}
