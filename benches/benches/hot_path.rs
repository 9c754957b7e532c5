//! The proxy's per-request work without sockets: routing, picking an upstream,
//! rewriting headers. `cargo bench -p lab-benches`.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use http::{HeaderMap, HeaderValue};
use lab_benches::{config_with_routes, linear_longest_prefix};
use proxy::balance::{Balancer, Peer, stable_hash};
use proxy::config::Balance;
use proxy::headers::{ClientInfo, add_forwarding_headers, remove_hop_by_hop};
use proxy::router::Router;

fn routing(c: &mut Criterion) {
    let mut group = c.benchmark_group("route");
    for routes in [10, 1_000] {
        let config = config_with_routes(routes);
        let router = Router::new(&config);
        let prefixes: Vec<String> = config.servers[0]
            .routes
            .iter()
            .map(|r| r.path.clone())
            .collect();
        let path = format!("/svc{}/x/x/x/page?q=1", routes / 2);
        group.bench_function(format!("router/{routes}"), |b| {
            b.iter(|| router.route(black_box(Some("App.localhost:8080")), black_box(&path)))
        });
        group.bench_function(format!("linear-baseline/{routes}"), |b| {
            b.iter(|| linear_longest_prefix(black_box(&prefixes), black_box(&path)))
        });
    }
    group.finish();
}

fn balancing(c: &mut Criterion) {
    let mut group = c.benchmark_group("balance");
    let kinds = [
        ("round_robin", Balance::RoundRobin),
        ("least_conn", Balance::LeastConn),
        ("random_two", Balance::RandomTwo),
        ("hash", Balance::Hash),
        ("first", Balance::First),
    ];
    for servers in [3, 10] {
        let peers: Vec<Peer> = (0..servers)
            .map(|i| Peer::new(&format!("10.0.0.{i}:8080"), 1))
            .collect();
        // Only `hash` reads the key; the others ignore it.
        let key = Some(stable_hash(b"203.0.113.7"));
        for (name, kind) in kinds {
            let balancer = Balancer::new(kind);
            group.bench_function(format!("{name}/{servers}"), |b| {
                b.iter(|| black_box(&balancer).pick(black_box(&peers), |_| true, black_box(key)))
            });
        }
    }
    group.finish();
}

fn headers(c: &mut Criterion) {
    let mut incoming = HeaderMap::new();
    for (name, value) in [
        ("host", "app.localhost"),
        ("user-agent", "curl/8.5.0"),
        ("accept", "*/*"),
        ("connection", "keep-alive"),
        ("x-forwarded-for", "203.0.113.7"),
    ] {
        incoming.insert(name, HeaderValue::from_static(value));
    }
    let host = HeaderValue::from_static("app.localhost");
    let client = ClientInfo {
        ip: "127.0.0.1".parse().expect("ip"),
        peer: "127.0.0.1".parse().expect("ip"),
        proto: "http",
        host: Some(&host),
    };
    c.bench_function("headers/rewrite", |b| {
        b.iter_batched_ref(
            || incoming.clone(),
            |headers| {
                remove_hop_by_hop(headers);
                add_forwarding_headers(headers, &client);
            },
            criterion::BatchSize::SmallInput,
        )
    });
}

criterion_group!(benches, routing, balancing, headers);
criterion_main!(benches);
