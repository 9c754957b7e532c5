//! Test helpers: a proxy on a free loopback port, and upstreams that behave
//! well or badly on purpose. Nothing here uses a fixed port.

#![allow(dead_code)] // each test file uses a different subset

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Request, Response};
use http_body::{Body, Frame, SizeHint};
use http_body_util::{BodyExt, Full, combinators::BoxBody};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use proxy::{Config, ProxyServer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};

/// A proxy running in this test's runtime; stops when dropped.
pub struct TestProxy {
    /// The first listener's address.
    pub addr: SocketAddr,
    /// Every listener's address, in config order.
    pub addrs: Vec<SocketAddr>,
    _stop: oneshot::Sender<()>,
}

/// Starts a proxy for `config` (which should listen on `127.0.0.1:0`).
pub async fn start_proxy(config: &str) -> TestProxy {
    start_proxy_with_resolver(config, proxy::upstream::resolve::Resolver::System).await
}

/// Starts a proxy for `config` that looks upstream host names up in `resolver`.
pub async fn start_proxy_with_resolver(
    config: &str,
    resolver: proxy::upstream::resolve::Resolver,
) -> TestProxy {
    let config = match Config::parse(config, "test.toml") {
        Ok(config) => config,
        Err(errors) => panic!("test config is invalid:\n{errors}"),
    };
    let server = ProxyServer::bind_with_resolver(config, resolver)
        .await
        .expect("bind the proxy");
    let addrs = server.local_addrs();
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(server.run(async {
        let _ = stopped.await;
    }));
    TestProxy {
        addr: addrs[0],
        addrs,
        _stop: stop,
    }
}

/// A config with one listener, one server routing `/` to upstream `app`
/// made of `servers`, plus any extra TOML for the `app` upstream.
pub fn single_upstream_config(servers: &[SocketAddr], upstream_extra: &str) -> String {
    let list: Vec<String> = servers.iter().map(|s| format!("\"{s}\"")).collect();
    format!(
        r#"
[[listen]]
addr = "127.0.0.1:0"

[[servers]]
server_names = ["app.localhost"]
routes = [{{ path = "/", upstream = "app" }}]

[upstreams.app]
servers = [{}]
{upstream_extra}
"#,
        list.join(", ")
    )
}

/// An upstream that answers every request with JSON describing it, as the
/// upstream saw it. Counts the TCP connections it accepted.
///
/// `GET /pattern?bytes=N` instead streams N bytes of [`pattern_byte`].
/// Every response carries `x-upstream: NAME`.
pub struct EchoUpstream {
    pub addr: SocketAddr,
    pub connections: Arc<AtomicUsize>,
    /// Requests whose body arrived complete and were answered.
    pub completed: Arc<AtomicUsize>,
}

pub async fn echo_upstream(name: &'static str) -> EchoUpstream {
    echo_upstream_at(name, "127.0.0.1:0".parse().expect("addr")).await
}

/// An echo upstream listening on `addr` (e.g. `127.0.0.2:PORT`: every
/// 127.x.y.z address is loopback on Linux, so several upstreams can share a port).
pub async fn echo_upstream_at(name: &'static str, addr: SocketAddr) -> EchoUpstream {
    let listener = TcpListener::bind(addr).await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let connections = Arc::new(AtomicUsize::new(0));
    let completed = Arc::new(AtomicUsize::new(0));
    let counter = connections.clone();
    let done = completed.clone();
    tokio::spawn(async move {
        while let Ok((stream, peer)) = listener.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
            let done = done.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req| echo(name, peer, req, done.clone()));
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    EchoUpstream {
        addr,
        connections,
        completed,
    }
}

type TestBody = BoxBody<Bytes, Infallible>;

async fn echo(
    name: &'static str,
    peer: SocketAddr,
    req: Request<Incoming>,
    completed: Arc<AtomicUsize>,
) -> Result<Response<TestBody>, hyper::Error> {
    if req.uri().path() == "/pattern" {
        let bytes = req
            .uri()
            .query()
            .and_then(|q| q.strip_prefix("bytes="))
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        return Ok(Response::builder()
            .header("x-upstream", name)
            .body(PatternBody::new(bytes, false).boxed())
            .expect("response"));
    }
    let method = req.method().to_string();
    let uri = req.uri().to_string();
    let headers: Vec<(String, String)> = req
        .headers()
        .iter()
        .map(|(k, v)| (k.to_string(), String::from_utf8_lossy(v.as_bytes()).into()))
        .collect();
    let mut body = req.into_body();
    let mut length = 0u64;
    let mut crc = crc32fast::Hasher::new();
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame?.into_data() {
            length += data.len() as u64;
            crc.update(&data);
        }
    }
    completed.fetch_add(1, Ordering::SeqCst);
    let json = serde_json::json!({
        "upstream": name,
        "peer": peer.to_string(),
        "method": method,
        "uri": uri,
        "headers": headers,
        "body_bytes": length,
        "body_crc": format!("{:08x}", crc.finalize()),
    });
    Ok(Response::builder()
        .header("x-upstream", name)
        .header("content-type", "application/json")
        .header("connection", "keep-alive, x-upstream-secret")
        .header("x-upstream-secret", "hop-by-hop, must not reach the client")
        .body(Full::new(Bytes::from(json.to_string())).boxed())
        .expect("response"))
}

/// The byte at offset `i` of every pattern body: not periodic at any power
/// of two, so a lost, repeated or reordered chunk changes the checksum.
pub fn pattern_byte(i: u64) -> u8 {
    (i.wrapping_mul(31).wrapping_add(i / 251) % 256) as u8
}

/// The pattern repeats every `PATTERN_PERIOD` bytes: a prime, so no frame or buffer
/// size (all powers of two) lines up with it, and a lost, repeated or
/// reordered frame changes the CRC. At least [`PATTERN_FRAME`], so a frame is one
/// slice of two periods.
pub const PATTERN_PERIOD: usize = 65_537;
const _: () = assert!(PATTERN_PERIOD >= PATTERN_FRAME);

/// The largest frame a pattern body produces.
pub const PATTERN_FRAME: usize = 64 * 1024;

/// Two periods of the pattern: any frame is a zero-copy slice of it, so
/// producing a body costs nothing per byte (a 1 GiB body included).
fn pattern() -> &'static Bytes {
    static PATTERN: OnceLock<Bytes> = OnceLock::new();
    PATTERN.get_or_init(|| {
        let period: Vec<u8> = (0..PATTERN_PERIOD as u64).map(pattern_byte).collect();
        Bytes::from([period.as_slice(), period.as_slice()].concat())
    })
}

/// The CRC-32 of the first `total` bytes of the pattern, without reading
/// them: CRCs of pieces combine (crc32fast's `combine`), so whole periods
/// are combined by doubling, then the rest is added.
pub fn expected_crc(total: u64) -> u32 {
    let period = PATTERN_PERIOD as u64;
    let mut one = crc32fast::Hasher::new();
    one.update(&pattern()[..PATTERN_PERIOD]);
    let (mut periods, rest) = (total / period, (total % period) as usize);
    let mut crc = crc32fast::Hasher::new();
    let mut power = one; // the CRC of 1, 2, 4, ... periods
    while periods > 0 {
        if periods & 1 == 1 {
            crc.combine(&power);
        }
        let twice = power.clone();
        power.combine(&twice);
        periods >>= 1;
    }
    let mut tail = crc32fast::Hasher::new();
    tail.update(&pattern()[..rest]);
    crc.combine(&tail);
    crc.finalize()
}

/// A body of `total` pattern bytes in frames of up to 64 KiB. With
/// `sized`, it says its length (hyper sends `Content-Length`); without, it
/// does not (HTTP/1.1 sends it chunked).
pub struct PatternBody {
    sent: u64,
    total: u64,
    sized: bool,
}

impl PatternBody {
    pub fn new(total: u64, sized: bool) -> PatternBody {
        PatternBody {
            sent: 0,
            total,
            sized,
        }
    }
}

impl Body for PatternBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if self.sent >= self.total {
            return Poll::Ready(None);
        }
        let at = (self.sent % PATTERN_PERIOD as u64) as usize;
        let n = (self.total - self.sent).min(PATTERN_FRAME as u64) as usize;
        self.sent += n as u64;
        Poll::Ready(Some(Ok(Frame::data(pattern().slice(at..at + n)))))
    }

    fn is_end_stream(&self) -> bool {
        self.sent >= self.total
    }

    fn size_hint(&self) -> SizeHint {
        if self.sized {
            SizeHint::with_exact(self.total - self.sent)
        } else {
            SizeHint::default()
        }
    }
}

/// Reads `body` to its end: its length and CRC-32.
pub async fn digest<B>(mut body: B) -> (u64, u32)
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: std::fmt::Debug,
{
    let (mut length, mut crc) = (0u64, crc32fast::Hasher::new());
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame.expect("the body arrives whole").into_data() {
            length += data.len() as u64;
            crc.update(&data);
        }
    }
    (length, crc.finalize())
}

/// The CRC-32 of the first `total` pattern bytes, as the echo upstream
/// reports it (`body_crc`).
pub fn pattern_crc_hex(total: u64) -> String {
    format!("{:08x}", expected_crc(total))
}

/// An upstream that accepts connections and then does `behaviour` with each.
pub async fn raw_upstream<F, Fut>(behaviour: F) -> SocketAddr
where
    F: Fn(tokio::net::TcpStream) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let behaviour = Arc::new(behaviour);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(behaviour(stream));
        }
    });
    addr
}

/// An upstream that reads the request head and never answers (nor reads
/// a body): a stalled server.
pub async fn silent_upstream() -> SocketAddr {
    raw_upstream(|mut stream| async move {
        read_head(&mut stream).await;
        std::future::pending::<()>().await;
        drop(stream);
    })
    .await
}

/// Reads a request head from `stream` (up to the blank line).
pub async fn read_head(stream: &mut tokio::net::TcpStream) {
    let mut seen = Vec::new();
    let mut buf = [0u8; 1024];
    while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => seen.extend_from_slice(&buf[..n]),
        }
    }
}

/// An address where nothing listens: bound once, then released.
pub async fn refused_addr() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    listener.local_addr().expect("addr")
}

/// A pooled HTTP/1.1 client for the tests.
pub type Client = hyper_util::client::legacy::Client<
    hyper_util::client::legacy::connect::HttpConnector,
    Full<Bytes>,
>;

pub fn client() -> Client {
    hyper_util::client::legacy::Client::builder(TokioExecutor::new()).build_http()
}

/// Sends a GET for `path` with `Host: host` to the proxy and returns the
/// response with its body read.
pub async fn get(
    client: &Client,
    proxy: SocketAddr,
    host: &str,
    path: &str,
) -> (Response<()>, Bytes) {
    let request = Request::get(format!("http://{proxy}{path}"))
        .header("host", host)
        .body(Full::new(Bytes::new()))
        .expect("request");
    send(client, request).await
}

pub async fn send(client: &Client, request: Request<Full<Bytes>>) -> (Response<()>, Bytes) {
    let response = client.request(request).await.expect("the proxy answers");
    let (parts, body) = response.into_parts();
    let body = body.collect().await.expect("read the body").to_bytes();
    (Response::from_parts(parts, ()), body)
}

/// Writes raw bytes to the proxy and reads until it closes the connection.
pub async fn raw_exchange(proxy: SocketAddr, request: &[u8]) -> String {
    let mut stream = tokio::net::TcpStream::connect(proxy)
        .await
        .expect("connect");
    stream.write_all(request).await.expect("write");
    let mut out = Vec::new();
    let _ = stream.read_to_end(&mut out).await;
    String::from_utf8_lossy(&out).into_owned()
}

pub fn json(body: &Bytes) -> serde_json::Value {
    serde_json::from_slice(body).expect("upstream answered JSON")
}

/// The value of `name` among the headers the echo upstream saw.
pub fn seen_header<'a>(echo: &'a serde_json::Value, name: &str) -> Option<&'a str> {
    echo["headers"]
        .as_array()?
        .iter()
        .find(|pair| pair[0] == name)
        .and_then(|pair| pair[1].as_str())
}

/// Checks that `config` is refused with an error containing `message` and
/// `help`, located in the file (`proxy.toml:LINE:COLUMN`).
pub fn assert_refused(config: &str, message: &str, help: &str) {
    let errors = match Config::parse(config, "proxy.toml") {
        Ok(_) => panic!("this config was accepted:\n{config}"),
        Err(errors) => errors.to_string(),
    };
    assert!(errors.contains(message), "no `{message}` in:\n{errors}");
    assert!(errors.contains(help), "no `{help}` in:\n{errors}");
    assert!(errors.contains("proxy.toml:"), "{errors}");
}

/// The head of the 101 a raw upstream sends for protocol `x-echo`.
pub const SWITCHED: &[u8] =
    b"HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: x-echo\r\n\r\n";

/// An upstream that switches every request to the made-up protocol `x-echo`
/// and then echoes raw bytes. Counts connections, and reports on `closed`
/// when a client's side of the tunnel reached its end.
pub async fn raw_echo_upstream() -> (SocketAddr, Arc<AtomicUsize>, mpsc::UnboundedReceiver<()>) {
    let connections = Arc::new(AtomicUsize::new(0));
    let (closed_tx, closed) = mpsc::unbounded_channel();
    let counter = connections.clone();
    let addr = raw_upstream(move |mut stream| {
        counter.fetch_add(1, Ordering::SeqCst);
        let closed_tx = closed_tx.clone();
        async move {
            read_head(&mut stream).await;
            if stream.write_all(SWITCHED).await.is_err() {
                return;
            }
            let mut buf = [0u8; 4096];
            loop {
                match stream.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if stream.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                }
            }
            let _ = closed_tx.send(());
        }
    })
    .await;
    (addr, connections, closed)
}

/// Opens a raw connection to the proxy and asks `path` to switch to
/// `x-echo`; returns the connection, positioned after the response head, and
/// that head.
pub async fn raw_upgrade(proxy: SocketAddr, path: &str) -> (TcpStream, String) {
    let mut stream = TcpStream::connect(proxy).await.expect("connect");
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: app.localhost\r\nConnection: Upgrade\r\nUpgrade: x-echo\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let n = stream.read(&mut byte).await.expect("read the head");
        assert_eq!(n, 1, "the proxy closed before a full head: {head:?}");
        head.push(byte[0]);
    }
    (stream, String::from_utf8_lossy(&head).into_owned())
}

pub async fn echo_through(stream: &mut TcpStream, bytes: &[u8]) {
    stream.write_all(bytes).await.expect("write");
    let mut got = vec![0u8; bytes.len()];
    stream.read_exact(&mut got).await.expect("read the echo");
    assert_eq!(got, bytes);
}

/// The `proxy` binary cargo built for these tests.
pub const PROXY_BINARY: &str = env!("CARGO_BIN_EXE_proxy");

/// A child process of the `proxy` binary; killed when the test ends, pass or fail.
pub struct Running(pub std::process::Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Running {
    /// The most memory the process has held at once (its peak resident set,
    /// `VmHWM` in `/proc/PID/status`), in bytes; `None` where there is no `/proc`.
    pub fn peak_rss(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.0.id())).ok()?;
        let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
        let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kib * 1024)
    }
}

/// Starts the binary with `args` (logging at info), waits for its first line,
/// `proxy: listening on http://ADDR`, and returns it running, ADDR and its
/// stdout and stderr (the log).
pub async fn start_binary(
    args: &[&std::ffi::OsStr],
) -> (
    Running,
    SocketAddr,
    std::io::BufReader<std::process::ChildStdout>,
    std::process::ChildStderr,
) {
    use std::io::BufRead;
    use std::process::{Command, Stdio};
    let mut child = Command::new(PROXY_BINARY)
        .args(args)
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the proxy");
    let stdout = child.stdout.take().expect("stdout");
    let stderr = child.stderr.take().expect("stderr");
    let running = Running(child);
    let (line, stdout) = within_10s(tokio::task::spawn_blocking(move || {
        let mut stdout = std::io::BufReader::new(stdout);
        let mut line = String::new();
        stdout.read_line(&mut line).map(|_| (line, stdout))
    }))
    .await
    .expect("read stdout");
    let addr = line
        .trim()
        .strip_prefix("proxy: listening on http://")
        .unwrap_or_else(|| panic!("unexpected first line: {line:?}"))
        .parse()
        .expect("an address");
    (running, addr, stdout, stderr)
}

/// Waits for a blocking read of the child's output, failing instead of hanging.
pub async fn within_10s<T>(task: tokio::task::JoinHandle<T>) -> T {
    tokio::time::timeout(std::time::Duration::from_secs(10), task)
        .await
        .expect("the proxy binary did not print in time")
        .expect("join")
}

/// An echo upstream (see [`echo_upstream`]) that can be stopped like a
/// killed process: its listener closes and every connection it holds, idle
/// or busy, is dropped at once. Dropping it stops it too.
pub struct StoppableUpstream {
    pub addr: SocketAddr,
    /// Requests whose body arrived complete and were answered.
    pub completed: Arc<AtomicUsize>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

/// Starts an echo upstream at `addr` that [`StoppableUpstream::stop`] can kill;
/// a new one can then listen on the same port (a restart).
pub async fn stoppable_upstream(name: &'static str, addr: SocketAddr) -> StoppableUpstream {
    let listener = TcpListener::bind(addr).await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let completed = Arc::new(AtomicUsize::new(0));
    let done = completed.clone();
    let (stop, mut stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let mut connections = tokio::task::JoinSet::new();
        loop {
            tokio::select! {
                accepted = listener.accept() => {
                    let Ok((stream, peer)) = accepted else { break };
                    let done = done.clone();
                    connections.spawn(async move {
                        let service = service_fn(move |req| echo(name, peer, req, done.clone()));
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(TokioIo::new(stream), service)
                            .await;
                    });
                }
                _ = &mut stopped => break,
            }
        }
        // Dropping the listener and aborting the connections' tasks closes
        // every socket, as the kernel does when a process dies.
        drop(listener);
        connections.shutdown().await;
    });
    StoppableUpstream {
        addr,
        completed,
        stop: Some(stop),
        task: Some(task),
    }
}

impl StoppableUpstream {
    /// Stops it and waits until its port and connections are closed.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for StoppableUpstream {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

/// Closes `stream` with a TCP reset (RST) instead of an orderly close (FIN):
/// what a crashed process or a firewall does to a connection.
pub fn reset(stream: TcpStream) {
    let _ = stream.set_zero_linger();
    drop(stream);
}

/// A proxy running stream listeners; stops when dropped.
pub struct StreamProxy {
    /// Every stream listener's bound address, in config order.
    pub streams: Vec<SocketAddr>,
    pub proxy: Arc<proxy::Proxy>,
    pub reload: proxy::server::ReloadHandle,
    _stop: oneshot::Sender<()>,
}

impl StreamProxy {
    pub async fn start(config: &str) -> StreamProxy {
        let config = match Config::parse(config, "test.toml") {
            Ok(config) => config,
            Err(errors) => panic!("test config is invalid:\n{errors}"),
        };
        let server = ProxyServer::bind(config).await.expect("bind the proxy");
        let streams = server.stream_addrs();
        let proxy = server.proxy();
        let reload = server.reload_handle();
        let (stop, stopped) = oneshot::channel::<()>();
        tokio::spawn(server.run(async {
            let _ = stopped.await;
        }));
        StreamProxy {
            streams,
            proxy,
            reload,
            _stop: stop,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.streams[0]
    }

    /// `proxy_stream_connections_total` for the first stream's connections that ended with `end`.
    pub fn ended(&self, end: &str) -> u64 {
        let text = proxy::metrics::render(&self.proxy.snapshot());
        let listen = format!("listen=\"{}\"", self.addr());
        text.lines()
            .filter(|l| l.starts_with("proxy_stream_connections_total{"))
            .filter(|l| l.contains(&listen) && l.contains(&format!("end=\"{end}\"")))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum()
    }

    /// Waits (at most 10 s) until `n` connections ended with `end`.
    pub async fn wait_ended(&self, end: &str, n: u64) {
        for _ in 0..1000 {
            if self.ended(end) >= n {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        panic!("{n} connection(s) never ended with {end}");
    }
}
