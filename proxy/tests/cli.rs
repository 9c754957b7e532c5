//! The `proxy` binary as a user runs it: `proxy check` and `proxy --config`.

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};

use common::*;

const PROXY: &str = env!("CARGO_BIN_EXE_proxy");

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

/// Kills the child when the test ends, pass or fail.
struct Running(std::process::Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Waits for a blocking read of the child's output, failing instead of hanging.
async fn within_10s<T>(task: tokio::task::JoinHandle<T>) -> T {
    tokio::time::timeout(std::time::Duration::from_secs(10), task)
        .await
        .expect("the proxy binary did not print in time")
        .expect("join")
}

#[tokio::test]
async fn the_binary_proxies_traffic_to_a_running_backend() {
    let up = echo_upstream("backend").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("proxy.toml");
    std::fs::write(&config, single_upstream_config(&[up.addr], "")).expect("write");
    let mut child = Command::new(PROXY)
        .arg("--config")
        .arg(&config)
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the proxy");
    let stdout = child.stdout.take().expect("stdout");
    let stderr = child.stderr.take().expect("stderr");
    let _running = Running(child);

    let line = within_10s(tokio::task::spawn_blocking(move || {
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).map(|_| line)
    }))
    .await
    .expect("read stdout");
    let addr: std::net::SocketAddr = line
        .trim()
        .strip_prefix("proxy: listening on http://")
        .unwrap_or_else(|| panic!("unexpected first line: {line:?}"))
        .parse()
        .expect("an address");

    let (response, body) = get(&client(), addr, "app.localhost", "/through/the/binary").await;
    assert_eq!(response.status(), 200);
    assert_eq!(json(&body)["uri"], "/through/the/binary");

    // The access log line for that request, on stderr via tracing.
    let log_line = within_10s(tokio::task::spawn_blocking(move || {
        BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
            .find(|l| l.contains("proxy::access"))
    }))
    .await
    .expect("an access log line");
    assert!(
        log_line.contains("\"GET /through/the/binary HTTP/1.1\" 200 upstream="),
        "{log_line}"
    );
    // The request id the client got back names the same line.
    let id = response.headers()["x-request-id"].to_str().expect("ascii");
    assert!(log_line.contains(&format!(" id={id}")), "{log_line}");
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
    let mut child = Command::new(PROXY)
        .args(["run", "--config"])
        .arg(&config)
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the proxy");
    let stdout = child.stdout.take().expect("stdout");
    let stderr = child.stderr.take().expect("stderr");
    let _running = Running(child);

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
    let line = within_10s(tokio::task::spawn_blocking(move || {
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).map(|_| line)
    }))
    .await
    .expect("read stdout");
    assert!(line.starts_with("proxy: listening on http://"), "{line}");
}
