//! The `proxy` binary as a user runs it: `proxy check` and `proxy --config`.

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::Command;

use common::*;

const PROXY: &str = PROXY_BINARY;

fn examples() -> Vec<std::path::PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("examples folder")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    files.sort();
    files
}

#[test]
fn every_example_config_passes_check() {
    let examples = examples();
    assert!(examples.len() >= 3, "examples are missing: {examples:?}");
    for example in examples {
        let out = Command::new(PROXY)
            .args(["check", "--deny-warnings", "--config"])
            .arg(&example)
            .output()
            .expect("run proxy check");
        assert!(
            out.status.success(),
            "{}:\n{}",
            example.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(String::from_utf8_lossy(&out.stdout).contains("is valid"));
    }
}

/// Runs `proxy check` on `config` written to `proxy.toml` in a temporary
/// folder, so the file name in messages is stable.
fn check(config: &str) -> (bool, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("proxy.toml"), config).expect("write config");
    let out = Command::new(PROXY)
        .args(["check", "--config", "proxy.toml"])
        .current_dir(dir.path())
        .output()
        .expect("run proxy check");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn check_reports_every_mistake_with_its_line_and_a_fix() {
    let (ok, stderr) = check(
        r#"
[[listen]]
addr = "localhost:8080"

[[servers]]
server_names = ["app.localhost"]
routes = [
  { path = "/", upstream = "frontend" },
  { path = "api/", upstream = "apii", strip_prefix = true },
]

[upstreams.frontend]
servers = ["http://127.0.0.1:3000/", "127.0.0.1:99999"]
"#,
    );
    assert!(!ok);
    insta::assert_snapshot!(stderr);
}

#[test]
fn check_reads_environment_variables_in_strings_and_names_a_missing_one() {
    let config = "[[listen]]\naddr = \"127.0.0.1:${LAB_TEST_PORT:-8080}\"\n\n[[listen]]\naddr = \"127.0.0.1:${LAB_TEST_TLS_PORT}\"\n\n[[servers]]\nroutes = [{ path = \"/\", upstream = \"app\" }]\n\n[upstreams.app]\nservers = [\"127.0.0.1:3000\"]\n";
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("proxy.toml"), config).expect("write config");
    let run = |tls_port: Option<&str>| {
        let mut command = Command::new(PROXY);
        command
            .args(["check", "--config", "proxy.toml"])
            .current_dir(dir.path())
            .env_remove("LAB_TEST_PORT");
        match tls_port {
            Some(port) => command.env("LAB_TEST_TLS_PORT", port),
            None => command.env_remove("LAB_TEST_TLS_PORT"),
        };
        let out = command.output().expect("run proxy check");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (ok, stderr) = run(Some("9443"));
    assert!(ok, "{stderr}");
    let (ok, stderr) = run(None);
    assert!(!ok);
    assert!(
        stderr.contains("proxy.toml:5:19") && stderr.contains("LAB_TEST_TLS_PORT is not set"),
        "{stderr}"
    );
    assert!(stderr.contains("${LAB_TEST_TLS_PORT:-VALUE}"), "{stderr}");
    // A value that makes the address wrong is named on its line, as put in.
    let (ok, stderr) = run(Some("x"));
    assert!(!ok);
    assert!(stderr.contains("127.0.0.1:x"), "{stderr}");
}

/// Runs `proxy check` with `args` on `config` written to `proxy.toml`:
/// (success, stdout, stderr).
fn check_with(config: &str, args: &[&str]) -> (bool, String, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("proxy.toml"), config).expect("write config");
    let out = Command::new(PROXY)
        .args(["check", "--config", "proxy.toml"])
        .args(args)
        .current_dir(dir.path())
        .output()
        .expect("run proxy check");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn check_prints_warnings_with_their_line_and_fails_on_them_only_when_asked() {
    let config = r#"[[listen]]
addr = "127.0.0.1:8080"

[[servers]]
routes = [
  { path = "/", upstream = "api" },
  { path = "/service1", upstream = "api", strip_prefix = true },
]

[upstreams.api]
servers = ["127.0.0.1:8000"]
"#;
    let (ok, stdout, stderr) = check_with(config, &[]);
    assert!(ok, "warnings alone do not fail the check:\n{stderr}");
    assert_eq!(
        stderr,
        "warning: `/service1/x` is sent upstream as `//x`: the prefix `/service1` has no trailing slash, but its replacement `/` has one
 --> proxy.toml:7:58
  |
7 |   { path = \"/service1\", upstream = \"api\", strip_prefix = true },
  |                                                          ^^^^
  = help: write path = \"/service1/\" (add slash_redirect = true if `/service1` itself should lead there)
"
    );
    assert!(
        stdout.contains("is valid") && stdout.contains("(1 warning)"),
        "{stdout}"
    );

    let (ok, _, stderr) = check_with(config, &["--deny-warnings"]);
    assert!(!ok, "--deny-warnings fails on a warning");
    assert!(stderr.contains(" --> proxy.toml:7:58"), "{stderr}");
    assert!(
        stderr.ends_with("proxy: proxy.toml has 1 warning (--deny-warnings)\n"),
        "{stderr}"
    );

    let fixed = config.replace("\"/service1\"", "\"/service1/\"");
    let (ok, _, stderr) = check_with(&fixed, &["--deny-warnings"]);
    assert!(ok && stderr.is_empty(), "{stderr}");
}

#[test]
fn check_reports_an_unknown_key() {
    let (ok, stderr) = check(
        r#"
[[listen]]
addr = "127.0.0.1:8080"
timeout = "5s"
"#,
    );
    assert!(!ok);
    insta::assert_snapshot!(stderr);
}

#[test]
fn a_missing_config_file_is_a_clear_error() {
    let out = Command::new(PROXY)
        .args(["check", "--config", "/nonexistent/proxy.toml"])
        .output()
        .expect("run proxy check");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("cannot read the configuration file"),
        "{stderr}"
    );
    assert!(stderr.contains("/nonexistent/proxy.toml"), "{stderr}");
}

#[test]
fn cert_init_and_issue_make_files_that_a_config_can_use() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = dir.path().join("ca");
    let out = Command::new(PROXY)
        .args(["cert", "init", "--dir"])
        .arg(&ca)
        .output()
        .expect("run proxy cert init");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("created a local CA"), "{stdout}");
    assert!(stdout.contains("curl --cacert"), "{stdout}");

    let out = Command::new(PROXY)
        .args(["cert", "issue", "app.localhost", "127.0.0.1", "--dir"])
        .arg(&ca)
        .arg("--out")
        .arg(dir.path())
        .output()
        .expect("run proxy cert issue");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(dir.path().join("app.localhost+1.pem").exists());
    assert!(dir.path().join("app.localhost+1-key.pem").exists());

    let config = r#"
[[listen]]
addr = "127.0.0.1:8443"
tls = true

[[servers]]
server_names = ["app.localhost"]
tls = { cert = "app.localhost+1.pem", key = "app.localhost+1-key.pem" }
routes = [{ path = "/", return = { status = 200 } }]
"#;
    std::fs::write(dir.path().join("proxy.toml"), config).expect("write");
    let out = Command::new(PROXY)
        .args(["check", "--config"])
        .arg(dir.path().join("proxy.toml"))
        .output()
        .expect("run proxy check");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn cert_issue_without_a_ca_says_to_run_init() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = Command::new(PROXY)
        .args(["cert", "issue", "app.localhost", "--dir"])
        .arg(dir.path())
        .output()
        .expect("run proxy cert issue");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("run `proxy cert init` first"), "{stderr}");
}

#[tokio::test]
async fn the_binary_proxies_traffic_to_a_running_backend() {
    let up = echo_upstream("backend").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("proxy.toml");
    std::fs::write(&config, single_upstream_config(&[up.addr], "")).expect("write");
    let (_running, addr, mut stdout, _) =
        start_binary(&["--config".as_ref(), config.as_os_str()]).await;

    let request = http::Request::get(format!("http://{addr}/through/the/binary"))
        .header("host", "app.localhost")
        .header("user-agent", "lab-test/1.0")
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .expect("request");
    let (response, body) = send(&client(), request).await;
    assert_eq!(response.status(), 200);
    assert_eq!(json(&body)["uri"], "/through/the/binary");

    // The access log line for that request: nginx's combined format on
    // stdout, then the upstream, the request id and how it ended.
    let log_line = within_10s(tokio::task::spawn_blocking(move || {
        let mut line = String::new();
        stdout.read_line(&mut line).map(|_| line)
    }))
    .await
    .expect("an access log line");
    let id = response.headers()["x-request-id"].to_str().expect("ascii");
    let combined = format!(
        "\"GET /through/the/binary HTTP/1.1\" 200 {} \"-\" \"lab-test/1.0\" rt=",
        body.len()
    );
    assert!(log_line.starts_with("127.0.0.1 - - ["), "{log_line}");
    assert!(log_line.contains(&combined), "{log_line}");
    assert!(
        log_line.contains(&format!(
            " upstream={} upstream_status=200 upstream_time=",
            up.addr
        )),
        "{log_line}"
    );
    assert!(
        log_line.trim_end().ends_with(&format!(" id={id} end=done")),
        "{log_line}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_json_access_log_file_says_how_requests_ended_and_reopens_on_sigusr1() {
    let up = echo_upstream("backend").await;
    let refused = refused_addr().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let (config, log) = (dir.path().join("proxy.toml"), dir.path().join("access.log"));
    let text = format!(
        "access_log = {{ path = \"access.log\", format = \"json\" }}\n{}",
        single_upstream_config(&[up.addr], "")
    )
    .replace(
        "routes = [{ path = \"/\", upstream = \"app\" }]",
        "routes = [{ path = \"/\", upstream = \"app\" }, { path = \"/down\", upstream = \"down\" }]",
    ) + &format!("\n[upstreams.down]\nservers = [\"{refused}\"]\nnext_upstream = [\"off\"]\n");
    std::fs::write(&config, text).expect("write");
    let (running, addr, _, _) = start_binary(&["--config".as_ref(), config.as_os_str()]).await;
    let lines = json_lines;

    let client = client();
    let (ok, body) = get(&client, addr, "app.localhost", "/a").await;
    let (failed, _) = get(&client, addr, "app.localhost", "/down").await;
    assert_eq!((ok.status().as_u16(), failed.status().as_u16()), (200, 502));
    // A client that goes away before a big answer is sent.
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    tokio::io::AsyncWriteExt::write_all(
        &mut stream,
        b"GET /pattern?bytes=50000000 HTTP/1.1\r\nHost: app.localhost\r\n\r\n",
    )
    .await
    .expect("write");
    let mut some = [0u8; 1024];
    let _ = tokio::io::AsyncReadExt::read(&mut stream, &mut some).await;
    drop(stream);

    let logged = lines(&log, 3);
    assert_eq!(logged[0]["request"], "GET /a HTTP/1.1");
    assert_eq!(logged[0]["status"], 200);
    assert_eq!(logged[0]["bytes_sent"], body.len());
    assert_eq!(logged[0]["upstream"], up.addr.to_string());
    assert_eq!(logged[0]["upstream_status"], 200);
    assert_eq!(
        logged[0]["request_id"],
        ok.headers()["x-request-id"].to_str().expect("ascii")
    );
    assert_eq!(logged[0]["end"], "done");
    assert_eq!(logged[1]["status"], 502);
    assert_eq!(logged[1]["upstream_status"], serde_json::Value::Null);
    assert_eq!(logged[1]["end"], "connection_refused");
    assert_eq!(logged[2]["request"], "GET /pattern?bytes=50000000 HTTP/1.1");
    assert_eq!(logged[2]["end"], "client_closed");
    assert!(logged[2]["bytes_sent"].as_u64().expect("bytes") < 50_000_000);

    // logrotate: rename, SIGUSR1, and the next lines go to a new file.
    let rotated = dir.path().join("access.log.1");
    std::fs::rename(&log, &rotated).expect("rotate");
    let pid =
        rustix::process::Pid::from_raw(i32::try_from(running.0.id()).expect("pid")).expect("a pid");
    rustix::process::kill_process(pid, rustix::process::Signal::USR1).expect("SIGUSR1");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !log.exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "the log was not reopened"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    get(&client, addr, "app.localhost", "/after").await;
    assert_eq!(lines(&log, 1)[0]["request"], "GET /after HTTP/1.1");
    assert_eq!(lines(&rotated, 3).len(), 3);
}

/// The JSON lines of the log at `path`, once it has at least `n` (waiting at
/// most 10 s: lines are written when each request is over).
fn json_lines(path: &Path, n: usize) -> Vec<serde_json::Value> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).expect("a JSON line"))
            .collect();
        if lines.len() >= n {
            return lines;
        }
        assert!(std::time::Instant::now() < deadline, "{n} lines: {text}");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// Behind a layer-4 proxy that sends PROXY headers (`accept_proxy_protocol`
/// on a listener, the sender in `trusted_proxies`), the access log names the
/// client the header gave, not the proxy in front.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_access_log_names_the_client_a_proxy_header_gave() {
    let up = echo_upstream("backend").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let (config, log) = (dir.path().join("proxy.toml"), dir.path().join("access.log"));
    let text = format!(
        "trusted_proxies = [\"127.0.0.1\"]\naccess_log = {{ path = \"access.log\", format = \"json\" }}\n{}",
        single_upstream_config(&[up.addr], "")
    )
    .replace(
        "addr = \"127.0.0.1:0\"",
        "addr = \"127.0.0.1:0\"\naccept_proxy_protocol = true",
    );
    std::fs::write(&config, text).expect("write");
    let (_running, addr, _, _) = start_binary(&["--config".as_ref(), config.as_os_str()]).await;
    let request = "GET /who HTTP/1.1\r\nHost: app.localhost\r\nConnection: close\r\n\r\n";
    let v1 = format!(
        "PROXY TCP4 203.0.113.7 127.0.0.1 51000 {}\r\n{request}",
        addr.port()
    );
    let answer = raw_exchange(addr, v1.as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let logged = json_lines(&log, 1);
    assert_eq!(logged[0]["remote_addr"], "203.0.113.7", "{:?}", logged[0]);
    assert_eq!(logged[0]["request"], "GET /who HTTP/1.1");
}

/// An upstream that answers every request after `delay`, with `slow` in the body.
async fn slow_upstream(delay: std::time::Duration) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |_req| async move {
                    tokio::time::sleep(delay).await;
                    Ok::<_, std::convert::Infallible>(http::Response::new(
                        http_body_util::Full::new(bytes::Bytes::from_static(b"slow")),
                    ))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

/// The running binary's config: answers carry `x-config: NAME`; `/slow` is slow.
fn named_config(upstream: std::net::SocketAddr, slow: std::net::SocketAddr, name: &str) -> String {
    format!(
        r#"
[[listen]]
addr = "127.0.0.1:0"

[[servers]]
server_names = ["app.localhost"]
response_headers = {{ set = {{ "X-Config" = "{name}" }} }}
routes = [{{ path = "/", upstream = "app" }}, {{ path = "/slow", upstream = "slow" }}]

[upstreams.app]
servers = ["{upstream}"]

[upstreams.slow]
servers = ["{slow}"]
"#
    )
}

async fn served_config(addr: std::net::SocketAddr) -> String {
    let (response, _) = get(&client(), addr, "app.localhost", "/").await;
    response.headers()["x-config"]
        .to_str()
        .expect("ascii")
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_re_reads_the_file_refuses_a_broken_one_and_sigterm_drains_requests() {
    use std::sync::{Arc, Mutex};
    let up = echo_upstream("backend").await;
    let slow = slow_upstream(std::time::Duration::from_millis(800)).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let (config, pid_file) = (dir.path().join("proxy.toml"), dir.path().join("proxy.pid"));
    std::fs::write(&config, named_config(up.addr, slow, "a")).expect("write");
    let args = [
        "run".as_ref(),
        "--config".as_ref(),
        config.as_os_str(),
        "--pid-file".as_ref(),
        pid_file.as_os_str(),
    ];
    let (mut running, addr, _, stderr) = start_binary(&args).await;
    let log = Arc::new(Mutex::new(String::new()));
    let log_writer = log.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            log_writer.lock().expect("lock").push_str(&(line + "\n"));
        }
    });
    assert_eq!(served_config(addr).await, "a");
    let reload = |check: bool| {
        let mut command = Command::new(PROXY);
        command.arg("reload").arg("--pid-file").arg(&pid_file);
        if check {
            command.arg("--config").arg(&config);
        }
        command.output().expect("run proxy reload")
    };
    let until = |what: &'static str, done: &dyn Fn() -> bool| {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !done() {
            assert!(
                std::time::Instant::now() < deadline,
                "waited 10 s for {what}"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    };

    // A changed file, then `proxy reload`: the new configuration serves.
    std::fs::write(&config, named_config(up.addr, slow, "b")).expect("write");
    let out = reload(true);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    until("configuration reloaded", &|| {
        log.lock().expect("lock").contains("configuration reloaded")
    });
    assert_eq!(served_config(addr).await, "b");

    // A broken file: `proxy reload --config` refuses to send anything...
    std::fs::write(&config, "[[servers]]\nroutes = 1\n").expect("write");
    let out = reload(true);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not reloading"));
    // ...and a plain SIGHUP is refused by the proxy, which keeps serving.
    assert!(reload(false).status.success());
    until("reload refused", &|| {
        log.lock().expect("lock").contains("reload refused")
    });
    assert!(
        log.lock().expect("lock").contains("proxy.toml:2"),
        "the errors are logged with their place"
    );
    assert_eq!(served_config(addr).await, "b");

    // SIGTERM while a request is running: it finishes, new connections are
    // refused, and the process exits 0 and removes its pid file.
    let in_flight =
        tokio::spawn(async move { get(&client(), addr, "app.localhost", "/slow").await });
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let pid =
        rustix::process::Pid::from_raw(i32::try_from(running.0.id()).expect("pid")).expect("a pid");
    rustix::process::kill_process(pid, rustix::process::Signal::TERM).expect("SIGTERM");
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "no new connections after SIGTERM"
    );
    let (response, body) = in_flight.await.expect("join");
    assert_eq!((response.status().as_u16(), &body[..]), (200, &b"slow"[..]));
    let status = within_10s(tokio::task::spawn_blocking(move || running.0.wait()))
        .await
        .expect("wait");
    assert!(status.success(), "exit status {status}");
    assert!(!pid_file.exists(), "the pid file is removed at exit");
}

#[tokio::test]
async fn run_logs_the_warnings_and_starts_anyway() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("proxy.toml");
    std::fs::write(
        &config,
        r#"[[listen]]
addr = "127.0.0.1:0"
[[servers]]
routes = [{ path = "/service1", upstream = "api", strip_prefix = true }]
[upstreams.api]
servers = ["127.0.0.1:9"]
"#,
    )
    .expect("write");
    // The proxy starts (start_binary waits for its `listening on` line)...
    let (_running, _, _, stderr) =
        start_binary(&["run".as_ref(), "--config".as_ref(), config.as_os_str()]).await;

    // ...and its log carries the warning.
    let warning = within_10s(tokio::task::spawn_blocking(move || {
        BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
            .find(|l| l.contains("config warning"))
    }))
    .await
    .expect("a warning in the log");
    assert!(warning.contains(" WARN "), "{warning}");
    assert!(
        warning.contains("proxy.toml:4:66: `/service1/x` is sent upstream as `//x`"),
        "{warning}"
    );
}
