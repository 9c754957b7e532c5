//! A short soak: what `lab soak` does for five minutes, done for a few
//! seconds, with a reload and a replica stop in that time. The real run is a
//! documented command (docs/hardening.md), not part of `cargo test`.

use std::time::Duration;

use lab::docker::{self, BinaryBuild, BuildOptions};
use lab::soak::{self, SoakOptions};

/// The proxy binary of this checkout, as `cargo test --workspace` builds it
/// (nothing to compile when that command is what runs this test).
fn proxy_binary() -> std::path::PathBuf {
    let build = BuildOptions {
        build: BinaryBuild::WorkspaceTests,
        ..BuildOptions::default()
    };
    docker::cargo_build(&build)
        .expect("cargo builds the workspace's binaries")
        .remove("proxy")
        .expect("one of them is the proxy")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_soak_has_no_errors_takes_every_reload_and_leaves_no_descriptor_open() {
    let bin = tokio::task::spawn_blocking(proxy_binary)
        .await
        .expect("the build ran");
    let options = SoakOptions {
        clients: 4,
        reload_every: Duration::from_secs(2),
        kill_every: Duration::from_secs(3),
        down_for: Duration::from_secs(2),
        sample_every: Duration::from_secs(2),
        ..SoakOptions::new(bin, Duration::from_secs(7))
    };
    let report = soak::run(&options).await.expect("the soak runs");
    println!("{}", report.render());

    assert_eq!(report.problems(), Vec::<String>::new());
    assert!(report.requests() > 100, "{}", report.render());
    assert_eq!(report.reloads, 3);
    assert_eq!(report.kills, 2);
    assert_eq!(report.samples.len(), 3);
    // Every kind of request of the mix was sent.
    assert_eq!(
        report.outcomes.keys().copied().collect::<Vec<_>>(),
        [
            "add-task",
            "cached",
            "https",
            "page",
            "tasks",
            "websocket",
            "whoami"
        ]
    );
    // The proxy logged each request it answered (and the reload checks).
    assert!(report.access_log_lines as u64 >= report.requests());
}
