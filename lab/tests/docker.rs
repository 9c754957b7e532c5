//! Docker mode end to end: the lab's stack as containers, reached only through
//! the proxy's ports published on 127.0.0.1.
//!
//! Builds the images first, as `lab images` does (cargo build, then `docker
//! import`; nothing is imported when nothing changed), tagged `test`. Without
//! Docker it prints `skipped: <reason>` and passes, except with `CI=true`,
//! where it fails.

use std::time::{Duration, Instant};

use lab::client::get_https;
use lab::docker::{self, BinaryBuild, BuildOptions, DockerOptions, DockerStack};
use lab::scenario::{self, RunOptions};
use lab::{Exchange, LabClient};

/// The images' tag: `proxy-lab/NAME:test`, made from this checkout's debug build.
const TAG: &str = "test";

/// Who answered: whoami's `x-served-by` header, checked against its JSON.
fn served_by(answer: &Exchange) -> String {
    let header = answer.header("x-served-by").unwrap_or("(none)").to_owned();
    let json = answer.json().expect("whoami answers JSON");
    assert_eq!(json["name"].as_str(), Some(header.as_str()), "{json}");
    header
}

/// The images, built once for every test of this file (they run in parallel).
async fn build_images_once() -> &'static [docker::BuiltImage] {
    static IMAGES: tokio::sync::OnceCell<Vec<docker::BuiltImage>> =
        tokio::sync::OnceCell::const_new();
    IMAGES
        .get_or_init(|| async {
            let build = BuildOptions {
                tag: TAG.into(),
                build: BinaryBuild::WorkspaceTests,
                ..BuildOptions::default()
            };
            tokio::task::spawn_blocking(move || docker::build_images(&build))
                .await
                .expect("the image build ran")
                .expect("the images build (as `cargo run -p lab -- images` does)")
        })
        .await
}

/// Whether Docker tests can run here: `false` (after saying why) without a
/// Docker daemon, except under `CI=true`, where that is a failure.
fn docker_or_skip() -> bool {
    match docker::docker_available() {
        Ok(()) => true,
        Err(reason) if std::env::var("CI").is_ok_and(|ci| ci == "true") => {
            panic!("Docker is required when CI=true, and it is not available: {reason}")
        }
        Err(reason) => {
            println!("skipped: {reason}");
            false
        }
    }
}

#[tokio::test]
async fn every_scenario_gives_the_same_transcript_in_containers_as_in_process() {
    if !docker_or_skip() {
        return;
    }
    build_images_once().await;
    for name in scenario::names() {
        let scenario = scenario::built_in(name).expect("the scenario parses");
        let mut local = lab::Stack::boot(lab::StackOptions::default())
            .await
            .expect("the in-process stack boots");
        let in_process = scenario::run(&scenario, &mut local, RunOptions::default())
            .await
            .expect("the scenario runs in-process");
        local.shutdown().await;
        let mut containers = DockerStack::boot(DockerOptions {
            tag: TAG.into(),
            ..DockerOptions::default()
        })
        .await
        .expect("the Docker stack boots");
        let in_docker = scenario::run(&scenario, &mut containers, RunOptions::default())
            .await
            .expect("the scenario runs in Docker");
        containers.shutdown().await;
        assert!(
            in_docker.failures.is_empty(),
            "{name}: {:?}",
            in_docker.failures
        );
        assert_eq!(
            in_docker.transcript.render(),
            in_process.transcript.render(),
            "scenario {name}: Docker (left) and in-process (right) differ"
        );
        println!("{name}: the same in Docker as in-process");
    }
}

#[tokio::test]
async fn the_stack_in_containers_routes_balances_and_fails_over_like_in_process() {
    if !docker_or_skip() {
        return;
    }

    let started = Instant::now();
    // Its own tag, so the test never replaces images a user built (with
    // --release, say). The binaries as `cargo test --workspace` builds them:
    // run by it (as in CI), nothing is compiled again.
    let images = build_images_once().await;
    for image in images {
        let state = if image.imported {
            "imported"
        } else {
            "up to date"
        };
        println!("{} {state}", image.image);
    }
    println!("images ready in {:.1} s", started.elapsed().as_secs_f64());

    let booted = Instant::now();
    let mut stack = DockerStack::boot(DockerOptions {
        tag: TAG.into(),
        ..DockerOptions::default()
    })
    .await
    .expect("the Docker stack boots");
    println!(
        "stack booted in {:.1} s: proxy on {} and {}",
        booted.elapsed().as_secs_f64(),
        stack.proxy_addr,
        stack.proxy_tls_addr
    );
    assert!(stack.proxy_addr.ip().is_loopback());
    assert!(stack.proxy_tls_addr.ip().is_loopback());
    let services = stack.services();
    let names: Vec<&str> = services.iter().map(|(name, _)| name.as_str()).collect();
    assert_eq!(
        names,
        [
            "frontend",
            "tasks-api",
            "whoami-1",
            "whoami-2",
            "whoami-3",
            "whoami-l4"
        ]
    );
    // The layer-4 listeners too, each on a port of its own on loopback.
    let streams: Vec<&str> = stack.streams.iter().map(|(name, _)| *name).collect();
    assert_eq!(streams, lab::stack::STREAM_LISTENERS);
    assert!(
        stack
            .streams
            .iter()
            .all(|(_, addr)| addr.ip().is_loopback())
    );
    for (name, addr) in &services {
        println!("  {name:<10} {addr}");
    }
    let whoami_2 = stack
        .service_addr("whoami-2")
        .expect("whoami-2 is a service")
        .to_string();

    let client = LabClient::new(stack.proxy_addr);

    // An answer of the proxy itself.
    let welcome = client.get("localhost", "/welcome").await.expect("/welcome");
    assert_eq!(welcome.status, 200);
    assert_eq!(welcome.text(), "Welcome to the reverse proxy!\n");

    // Round-robin, in config order, each replica named by its container hostname.
    let mut turns = Vec::new();
    for _ in 0..3 {
        let who = client
            .get("localhost", "/api/whoami")
            .await
            .expect("/api/whoami");
        assert_eq!(who.status, 200);
        turns.push(served_by(&who));
    }
    assert_eq!(turns, ["whoami-1", "whoami-2", "whoami-3"]);

    // What stands for 127.0.0.1 in-process: the client seen through the
    // published port is the network's gateway; the TCP peer whoami sees is
    // the proxy's container.
    let who = client
        .get("localhost", "/api/whoami")
        .await
        .expect("/api/whoami");
    let seen = who.json().expect("JSON");
    assert_eq!(
        seen["headers"]["x-real-ip"].as_str(),
        Some(stack.gateway_ip.to_string().as_str()),
        "{seen}"
    );
    let peer = seen["remote_addr"].as_str().unwrap_or_default();
    assert!(
        peer.starts_with(&format!("{}:", stack.proxy_ip)),
        "{peer} vs {}",
        stack.proxy_ip
    );
    assert!(stack.as_loopback(peer).starts_with("127.0.0.1:"), "{peer}");

    // The decision trace is allowed for the host's clients, as in-process.
    let traced = client
        .send(
            http::Method::GET,
            "localhost",
            "/api/whoami",
            &[("x-lab-trace", "1")],
            bytes::Bytes::new(),
        )
        .await
        .expect("a traced request");
    // Its first line, rewritten as in-process: the client and the listener on loopback.
    let first = stack.as_loopback(traced.header("x-lab-trace-01").unwrap_or("(no trace)"));
    assert!(
        first.starts_with("request `GET /api/whoami HTTP/1.1` from 127.0.0.1:")
            && first.ends_with(&format!("on the http listener {}", stack.proxy_addr)),
        "{first}"
    );

    // Host routing to tasks-api.
    let api = client
        .get("api.localhost", "/")
        .await
        .expect("api.localhost");
    assert_eq!(api.status, 200, "{}", api.text());
    assert!(api.text().contains("ok"), "{}", api.text());
    let tasks = client
        .get("api.localhost", "/tasks")
        .await
        .expect("api.localhost/tasks");
    assert_eq!(tasks.status, 200, "{}", tasks.text());

    // HTTPS: the redirect names the published port, and the certificate comes
    // from the CA made on the host and copied into the proxy's container.
    let plain = client
        .get("secure.localhost", "/api/")
        .await
        .expect("secure.localhost over HTTP");
    assert_eq!(plain.status, 301);
    assert_eq!(
        plain.header("location"),
        Some(
            format!(
                "https://secure.localhost:{}/api/",
                stack.proxy_tls_addr.port()
            )
            .as_str()
        )
    );
    let secure = get_https(
        stack.proxy_tls_addr,
        "secure.localhost",
        "/api/whoami",
        Some(&stack.ca_root_pem),
    )
    .await
    .expect("HTTPS with the lab's CA");
    assert_eq!(secure.status, 200);
    assert_eq!(secure.version, http::Version::HTTP_2);

    // whoami-2's container stops; the proxy is not told. Retries hide it.
    stack.stop_service("whoami-2").await.expect("stop whoami-2");
    let stopped = Instant::now();
    for i in 0..6 {
        let who = client
            .get("localhost", "/api/whoami")
            .await
            .expect("/api/whoami");
        assert_eq!(who.status, 200, "request {i}: {}", who.text());
        assert_ne!(served_by(&who), "whoami-2", "request {i}");
    }
    println!(
        "6 requests with whoami-2 stopped in {:.2} s",
        stopped.elapsed().as_secs_f64()
    );

    // Without retries one client sees it, as in-process: refused at once (the
    // pod keeps the address), named by the address `services()` gives.
    let mut statuses = Vec::new();
    for _ in 0..4 {
        let answer = client
            .get("localhost", "/no-retry/whoami")
            .await
            .expect("/no-retry/whoami");
        statuses.push(answer.status.as_u16());
        if answer.status == 502 {
            assert_eq!(
                answer.header("proxy-status"),
                Some(
                    format!("proxy-lab; error=connection_refused; details=\"upstream {whoami_2}\"")
                        .as_str()
                )
            );
        }
    }
    assert_eq!(statuses, [200, 502, 200, 200]);

    // Started again, it is back once passive health lets it (fail_timeout = 10 s).
    stack
        .start_service("whoami-2")
        .await
        .expect("start whoami-2");
    let restarted = Instant::now();
    let deadline = restarted + Duration::from_secs(20);
    loop {
        let who = client
            .get("localhost", "/api/whoami")
            .await
            .expect("/api/whoami");
        assert_eq!(who.status, 200);
        if served_by(&who) == "whoami-2" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "whoami-2 did not come back within 20 s of its restart"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    println!(
        "whoami-2 back {:.1} s after its restart ({:.1} s after it stopped)",
        restarted.elapsed().as_secs_f64(),
        stopped.elapsed().as_secs_f64()
    );

    let shutting = Instant::now();
    stack.shutdown().await;
    println!(
        "shut down in {:.1} s; whole test {:.1} s",
        shutting.elapsed().as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
}
