//! `lab bench` end to end, on a short run: the backend and the proxy start as
//! processes of the `lab` binary, every target is loaded closed-loop (2 B and
//! 1 MiB) and at a fixed rate, idle connections are held, and the table,
//! JSON and chart come out. The TLS rows (`proxy-https`, `proxy-l4-tls`)
//! are loaded over real TLS handshakes against the run's own local CA. nginx and HAProxy take part when installed; under
//! CI (`CI=true`), where `.ci/run` installs them, they must.

use std::time::Duration;

use lab::bench::{BenchOptions, run, write_files};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_bench_measures_every_target_and_writes_its_files() {
    let report = run(&BenchOptions {
        connections: 2,
        duration: Duration::from_millis(300),
        workers: vec![1],
        idle_connections: 50,
        serve_with: env!("CARGO_BIN_EXE_lab").into(),
    })
    .await
    .expect("the bench runs");

    let in_ci = std::env::var("CI").is_ok_and(|v| v == "true");
    for reason in &report.skipped {
        assert!(!in_ci, "CI runs every target, but {reason}");
        eprintln!("skipped: {reason}");
    }
    // direct, proxy (L7), proxy-l4, proxy-https, proxy-l4-tls, nginx, haproxy.
    let targets = 7 - report.skipped.len();
    // Per target: 2 B and 1 MiB closed loop, then 2 B at a fixed rate.
    assert_eq!(report.rows.len(), 3 * targets, "{:#?}", report.rows);
    for row in &report.rows {
        assert!(row.requests_per_second > 0.0 && row.errors == 0, "{row:?}");
        assert!(
            row.p50_us <= row.p99_us && row.p99_us <= row.p999_us,
            "{row:?}"
        );
        let cpu = row
            .cpu_percent
            .expect("every target is a process we can read");
        assert!(cpu >= 0.0, "{row:?}");
        assert!(row.peak_rss_mib.is_some_and(|m| m > 1.0), "{row:?}");
    }
    // Both TLS rows served every load over TLS, without one failed request
    // (a failed handshake counts as an error, and no answer as 0 requests/s).
    for target in ["proxy-https", "proxy-l4-tls"] {
        let rows: Vec<_> = report.rows.iter().filter(|r| r.target == target).collect();
        assert_eq!(rows.len(), 3, "2 B, 1 MiB and fixed rate for {target}");
        for row in rows {
            assert!(row.requests_per_second > 0.0 && row.errors == 0, "{row:?}");
        }
    }
    let proxy_large = report
        .rows
        .iter()
        .find(|r| r.target == "proxy" && r.body == "1 MiB")
        .expect("a 1 MiB run through the proxy");
    assert!(proxy_large.requests_per_second > 0.0);
    let fixed: Vec<_> = report
        .rows
        .iter()
        .filter(|r| r.offered_rate.is_some())
        .collect();
    assert_eq!(fixed.len(), targets, "one fixed-rate run per target");
    assert_eq!(report.idle.len(), targets - 1, "idle memory of every proxy");
    assert!(
        report.idle.iter().any(|r| r.target == "proxy-l4-tls"),
        "{:#?}",
        report.idle
    );
    for idle in &report.idle {
        assert_eq!(idle.opened, 50, "{idle:?}");
        assert!(idle.rss_mib > 0.0, "{idle:?}");
    }

    let table = report.table();
    for word in [
        "requests/s",
        "direct",
        "proxy",
        "proxy-l4",
        "against direct, 2 B: L4",
        "proxy-https",
        "proxy-l4-tls",
        "TLS against plain, 2 B: L7",
        "closed loop",
        "idle keep-alive",
    ] {
        assert!(table.contains(word), "{word} in\n{table}");
    }
    if !report.skipped.iter().any(|s| s.starts_with("nginx")) {
        assert!(table.contains("proxy / nginx"), "{table}");
    }

    let dir = tempfile::tempdir().expect("a temporary folder");
    let written = write_files(&report, dir.path()).expect("the files are written");
    assert_eq!(written.len(), 2);
    let json: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("bench.json")).expect("bench.json"),
    )
    .expect("bench.json is JSON");
    assert_eq!(
        json["rows"].as_array().map(Vec::len),
        Some(report.rows.len())
    );
    let svg = std::fs::read_to_string(dir.path().join("bench.svg")).expect("bench.svg");
    assert!(
        svg.starts_with("<svg") && svg.contains("requests/s"),
        "{svg:.200}"
    );
}
