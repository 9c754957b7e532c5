//! The compose stacks of `compose/`, brought up for real: the smoke test CI
//! runs (through `cargo test --workspace` in `.ci/run`).
//!
//! For each stack: the images are built as `lab images` builds them (tagged
//! `test`, from the binaries `cargo test --workspace` already built), then
//! `docker-compose up -d` with its own project name and free published ports,
//! a wait until the proxy answers, the stack's checks, and `down -v` always,
//! even when a check fails (then `docker-compose logs` is printed first).
//! Without Docker or a compose tool it prints `skipped: <reason>` and passes,
//! except with `CI=true`, where it fails.
//!
//! Also, without Docker: `compose/Dockerfile` (the ordinary multi-stage build
//! for a machine with a registry) builds the same binaries with the same
//! cargo command as `lab images`, into the same places.

use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use lab::LabClient;
use lab::client::get_https;
use lab::docker::{self, BinaryBuild, BuildOptions};

/// The images' tag, shared with lab/tests/docker.rs: `proxy-lab/NAME:test`.
const TAG: &str = "test";
/// How long a stack gets to answer after `up -d` returned.
const READY_TIMEOUT: Duration = Duration::from_secs(60);

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("lab/ sits in the workspace")
        .to_path_buf()
}

/// The compose tools here: Debian's `docker-compose` (1.29) and the v2
/// plugin (`docker compose`); every stack must work with both. `Err` says
/// why there is none, or, under `CI=true`, which one is missing.
fn compose_tools() -> Result<Vec<Vec<String>>, String> {
    let answers = |program: &str, args: &[&str]| {
        Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|status| status.success())
    };
    let mut tools = Vec::new();
    if answers("docker-compose", &["version"]) {
        tools.push(vec!["docker-compose".to_owned()]);
    } else if ci() {
        return Err("`docker-compose` (v1, Debian's) does not answer".to_owned());
    }
    if answers("docker", &["compose", "version"]) {
        tools.push(vec!["docker".to_owned(), "compose".to_owned()]);
    } else if ci() {
        return Err("`docker compose` (the v2 plugin) does not answer".to_owned());
    }
    if tools.is_empty() {
        return Err("neither `docker-compose` nor `docker compose` answers".to_owned());
    }
    Ok(tools)
}

fn ci() -> bool {
    std::env::var("CI").is_ok_and(|ci| ci == "true")
}

/// The compose tools when Docker and compose can run here: `None` (after
/// saying why) otherwise, except under `CI=true`, where that is a failure.
fn compose_or_skip() -> Option<Vec<Vec<String>>> {
    let found = docker::docker_available().and_then(|()| compose_tools());
    match found {
        Ok(tools) => {
            for tool in &tools {
                println!("with `{}`", tool.join(" "));
            }
            Some(tools)
        }
        Err(reason) if ci() => {
            panic!("Docker and compose are required when CI=true: {reason}")
        }
        Err(reason) => {
            println!("skipped: {reason}");
            None
        }
    }
}

/// The images, built once for every test of this file (they run in parallel).
async fn build_images_once() {
    static BUILT: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();
    BUILT
        .get_or_init(|| async {
            let build = BuildOptions {
                tag: TAG.into(),
                build: BinaryBuild::WorkspaceTests,
                ..BuildOptions::default()
            };
            tokio::task::spawn_blocking(move || docker::build_images(&build))
                .await
                .expect("the image build ran")
                .expect("the images build (as `cargo run -p lab -- images` does)");
        })
        .await;
}

/// A port nobody listens on now, on the host's loopback.
fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|listener| listener.local_addr())
        .expect("a free loopback port")
        .port()
}

/// One compose stack, up; `down -v` when dropped, after printing its logs if
/// the test is failing.
struct Stack {
    tool: Vec<String>,
    file: PathBuf,
    project: String,
    env: Vec<(&'static str, String)>,
}

impl Stack {
    /// `up -d` of `compose/{name}/docker-compose.yml`, with `env` (the
    /// published ports) and `LAB_TAG=test`.
    fn up(tool: &[String], name: &str, env: &[(&'static str, u16)]) -> Stack {
        let project = format!(
            "labsmoke-{name}-{}-{}-{:x}",
            if tool.len() == 1 { "v1" } else { "v2" },
            std::process::id(),
            fastrand::u32(..)
        );
        let mut vars = vec![("LAB_TAG", TAG.to_owned())];
        vars.extend(env.iter().map(|(var, port)| (*var, port.to_string())));
        let stack = Stack {
            tool: tool.to_vec(),
            file: workspace()
                .join("compose")
                .join(name)
                .join("docker-compose.yml"),
            project,
            env: vars,
        };
        let started = Instant::now();
        let up = stack.run(&["up", "-d"]);
        assert!(
            up.status.success(),
            "{name}: `up -d` failed:\n{}",
            String::from_utf8_lossy(&up.stderr)
        );
        println!(
            "{name}: up -d in {:.1} s (project {})",
            started.elapsed().as_secs_f64(),
            stack.project
        );
        stack
    }

    fn run(&self, args: &[&str]) -> Output {
        let (program, first) = self.tool.split_first().expect("a compose command");
        Command::new(program)
            .args(first)
            .arg("-f")
            .arg(&self.file)
            .args(["-p", &self.project])
            .args(args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .output()
            .expect("the compose tool runs")
    }

    /// The id of the (first) container of `service`.
    fn container(&self, service: &str) -> String {
        let ps = self.run(&["ps", "-q", service]);
        let id = String::from_utf8_lossy(&ps.stdout)
            .lines()
            .next()
            .unwrap_or_default()
            .trim()
            .to_owned();
        assert!(!id.is_empty(), "no container for {service}");
        id
    }

    /// `docker-compose logs SERVICE`.
    fn logs(&self, service: &str) -> String {
        let logs = self.run(&["logs", "--no-color", service]);
        String::from_utf8_lossy(&logs.stdout).into_owned()
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let logs = self.run(&["logs", "--no-color"]);
            let ps = self.run(&["ps"]);
            eprintln!(
                "---- {} failed; `ps`:\n{}\n---- `logs`:\n{}{}",
                self.project,
                String::from_utf8_lossy(&ps.stdout),
                String::from_utf8_lossy(&logs.stdout),
                String::from_utf8_lossy(&logs.stderr)
            );
        }
        let down = self.run(&["down", "-v", "--remove-orphans"]);
        if !down.status.success() {
            eprintln!(
                "`down -v` of {} failed:\n{}",
                self.project,
                String::from_utf8_lossy(&down.stderr)
            );
        }
    }
}

/// Asks `path` of the proxy on `port` until it answers `want` (the services
/// are healthy by the time `up -d` returns, but the proxy needs a moment).
async fn wait_for(port: u16, path: &str, want: u16) -> lab::Exchange {
    let client = LabClient::new(SocketAddr::from((Ipv4Addr::LOCALHOST, port)));
    let started = Instant::now();
    loop {
        let last = match client.get("localhost", path).await {
            Ok(answer) if answer.status == want => {
                println!(
                    "{path} answered {want} after {:.1} s",
                    started.elapsed().as_secs_f64()
                );
                return answer;
            }
            Ok(answer) => format!("{} {}", answer.status, answer.text()),
            Err(err) => err.to_string(),
        };
        assert!(
            started.elapsed() < READY_TIMEOUT,
            "{path} on port {port} did not answer {want} within {READY_TIMEOUT:?}; last: {last}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Six requests to `path`: three distinct hostnames, each twice, in turn.
async fn six_requests_see_three_replicas(port: u16, path: &str) {
    let client = LabClient::new(SocketAddr::from((Ipv4Addr::LOCALHOST, port)));
    let mut seen = Vec::new();
    for _ in 0..6 {
        let answer = client.get("localhost", path).await.expect("whoami answers");
        assert_eq!(answer.status, 200, "{}", answer.text());
        let name = answer
            .header("x-served-by")
            .expect("whoami says who it is")
            .to_owned();
        let json = answer.json().expect("whoami answers JSON");
        assert_eq!(json["name"].as_str(), Some(name.as_str()), "{json}");
        seen.push(name);
    }
    println!("{path}: {seen:?}");
    let mut distinct = seen.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct.len(), 3, "three replicas: {seen:?}");
    assert_eq!(seen[..3], seen[3..], "round-robin, in turn: {seen:?}");
}

#[tokio::test]
async fn the_round_robin_stack_spreads_six_requests_over_three_replicas() {
    let Some(tools) = compose_or_skip() else {
        return;
    };
    build_images_once().await;
    for tool in &tools {
        let port = free_port();
        let stack = Stack::up(tool, "round-robin", &[("PROXY_PORT", port)]);
        wait_for(port, "/", 200).await;
        six_requests_see_three_replicas(port, "/").await;
        assert!(stack.logs("proxy").contains("servers now"));
    }
}

#[tokio::test]
async fn the_production_stack_routes_to_the_migrated_api_and_three_replicas() {
    let Some(tools) = compose_or_skip() else {
        return;
    };
    build_images_once().await;
    for tool in &tools {
        production_stack_works(tool).await;
    }
}

async fn production_stack_works(tool: &[String]) {
    let port = free_port();
    let stack = Stack::up(tool, "production", &[("PROXY_PORT", port)]);
    let status = wait_for(port, "/api/", 200).await;
    assert_eq!(status.json().expect("JSON")["status"], "ok");

    let client = LabClient::new(SocketAddr::from((Ipv4Addr::LOCALHOST, port)));
    // The tasks table exists: the migrations ran before the API listened.
    let tasks = client.get("localhost", "/api/tasks").await.expect("tasks");
    assert_eq!(tasks.status, 200, "{}", tasks.text());
    assert!(
        tasks.json().is_some_and(|json| json.is_array()),
        "{}",
        tasks.text()
    );
    let log = stack.logs("tasks-api");
    assert!(log.contains("at schema version"), "{log}");

    let page = client.get("localhost", "/").await.expect("the frontend");
    assert_eq!(page.status, 200);
    six_requests_see_three_replicas(port, "/api/whoami").await;
}

#[tokio::test]
async fn the_https_stack_redirects_http_and_serves_https_with_its_local_ca() {
    let Some(tools) = compose_or_skip() else {
        return;
    };
    build_images_once().await;
    for tool in &tools {
        https_stack_works(tool).await;
    }
}

async fn https_stack_works(tool: &[String]) {
    let http_port = free_port();
    let https_port = std::iter::repeat_with(free_port)
        .find(|port| *port != http_port)
        .expect("another free port");
    let stack = Stack::up(
        tool,
        "https",
        &[("PROXY_PORT", http_port), ("HTTPS_PORT", https_port)],
    );
    // Plain HTTP: a redirect to the same URL on https, on the port published
    // (the proxy listens on HTTPS_PORT inside too).
    let redirect = wait_for(http_port, "/hello?x=1", 301).await;
    assert_eq!(
        redirect.header("location"),
        Some(format!("https://localhost:{https_port}/hello?x=1").as_str())
    );

    // The CA the proxy made on the named volume, copied out as a user would.
    let copied = tempfile::tempdir().expect("a temporary folder");
    let root = copied.path().join("rootCA.pem");
    let cp = Command::new("docker")
        .arg("cp")
        .arg(format!(
            "{}:/etc/proxy-lab/ca/rootCA.pem",
            stack.container("proxy")
        ))
        .arg(&root)
        .output()
        .expect("docker cp runs");
    assert!(
        cp.status.success(),
        "{}",
        String::from_utf8_lossy(&cp.stderr)
    );
    let pem = std::fs::read_to_string(&root).expect("the root certificate");

    let tls = SocketAddr::from((Ipv4Addr::LOCALHOST, https_port));
    let answer = get_https(tls, "localhost", "/hello", Some(&pem))
        .await
        .expect("HTTPS answers, trusted through the stack's CA");
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert!(answer.header("x-served-by").is_some());
    // A client that was never told about the CA refuses the certificate.
    let untrusted = get_https(tls, "localhost", "/hello", None).await;
    assert!(untrusted.is_err(), "a certificate trusted with no CA");
}

/// `compose/Dockerfile` makes the images `lab images` makes: for each, a
/// stage named after it that copies the binary the release build made to
/// `/usr/local/bin/NAME`, with its entrypoint, port and environment; and the
/// build runs the cargo command of `lab images --release`.
#[test]
fn the_dockerfile_builds_the_same_binaries_as_lab_images() {
    let path = workspace().join("compose").join("Dockerfile");
    let text = std::fs::read_to_string(&path).expect("compose/Dockerfile");
    let instructions: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .collect();
    // No BuildKit-only syntax: the legacy builder must read it too.
    assert!(!text.contains("# syntax="), "no syntax line");
    assert!(!text.contains("--mount="), "no BuildKit mounts");

    let cargo = docker::cargo_command_line(BinaryBuild::Bins, true);
    let runs: Vec<&str> = instructions
        .iter()
        .filter_map(|line| line.strip_prefix("RUN "))
        .filter(|run| run.contains("cargo"))
        .collect();
    assert_eq!(runs, [cargo.as_str()], "the build stage runs `{cargo}`");

    let mut stages: Vec<(&str, Vec<&str>)> = Vec::new();
    for line in &instructions {
        if let Some(from) = line.strip_prefix("FROM ") {
            let name = from.split(" AS ").nth(1).unwrap_or_default().trim();
            stages.push((name, Vec::new()));
        } else if let Some((_, body)) = stages.last_mut() {
            body.push(line);
        }
    }
    for spec in &docker::IMAGES {
        let name = spec.name;
        let (_, body) = stages
            .iter()
            .find(|(stage, _)| *stage == name)
            .unwrap_or_else(|| panic!("no `FROM ... AS {name}` stage in {}", path.display()));
        let binary = format!("/usr/local/bin/{name}");
        let wanted = [
            format!("COPY --from=build /src/target/release/{name} {binary}"),
            format!("ENTRYPOINT [\"{binary}\"]"),
            format!("EXPOSE {}", spec.port),
        ];
        for line in wanted
            .iter()
            .cloned()
            .chain(spec.env.iter().map(|(k, v)| format!("ENV {k}={v}")))
        {
            assert!(
                body.contains(&line.as_str()),
                "stage {name} lacks `{line}`: {body:?}"
            );
        }
    }
    let stage_names: Vec<&str> = stages.iter().map(|(name, _)| *name).collect();
    assert_eq!(
        stage_names.len(),
        docker::IMAGES.len() + 2,
        "build, runtime, one stage per image: {stage_names:?}"
    );
}

/// Without Docker: every stack's proxy config is valid, and every compose
/// file publishes ports from the proxy only, each on 127.0.0.1 with a port
/// taken from the environment (so the smoke test, and a user, can move it).
#[test]
fn every_stack_has_a_valid_proxy_config_and_publishes_only_the_proxy() {
    let root = workspace().join("compose");
    let mut stacks = Vec::new();
    for entry in std::fs::read_dir(&root).expect("compose/") {
        let dir = entry.expect("a folder entry").path();
        if !dir.join("docker-compose.yml").is_file() {
            continue;
        }
        let name = dir
            .file_name()
            .and_then(|n| n.to_str())
            .expect("a folder name")
            .to_owned();
        let config = std::fs::read_to_string(dir.join("proxy.toml")).expect("proxy.toml");
        proxy::Config::parse(&config, &format!("compose/{name}/proxy.toml"))
            .unwrap_or_else(|errors| panic!("{errors}"));
        let text = std::fs::read_to_string(dir.join("docker-compose.yml")).expect("the file");
        let yaml: serde_norway::Value = serde_norway::from_str(&text).expect("valid YAML");
        assert!(yaml.get("version").is_none(), "{name}: no `version:` key");
        let services = yaml["services"].as_mapping().expect("services");
        for (service, body) in services {
            let service = service.as_str().expect("a service name");
            assert!(
                body.get("deploy").is_none(),
                "{name}/{service}: `deploy:` is ignored by v1"
            );
            let ports = body["ports"].as_sequence().map_or(&[][..], Vec::as_slice);
            if service != "proxy" {
                assert!(ports.is_empty(), "{name}/{service} publishes a port");
                continue;
            }
            assert!(!ports.is_empty(), "{name}: the proxy publishes nothing");
            for port in ports {
                let port = port.as_str().expect("short syntax");
                assert!(
                    port.starts_with("127.0.0.1:${") && port.contains(":-"),
                    "{name}: `{port}` is not on 127.0.0.1 with a port from the environment"
                );
            }
        }
        stacks.push(name);
    }
    stacks.sort();
    assert_eq!(stacks, ["https", "production", "round-robin"]);
}
