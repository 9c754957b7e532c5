//! What one proxy hop costs: the same request sent straight to a backend and
//! through the proxy, over loopback with keep-alive connections on both legs,
//! for a 2-byte and a 1 MiB response. `cargo bench -p lab-benches --bench proxy_hop`.
//!
//! Through the proxy a request is parsed twice, routed, has its headers
//! rewritten and crosses a second connection; the 1 MiB body is streamed
//! through frame by frame, never held whole. The difference between the two
//! lines of each pair is the hop.

use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use http_body_util::{BodyExt, Empty, Full};
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

const LARGE: usize = 1024 * 1024;

/// A backend answering `/small` with 2 bytes and `/large` with 1 MiB.
async fn backend() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let large = Bytes::from(vec![b'x'; LARGE]);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let _ = stream.set_nodelay(true);
            let large = large.clone();
            tokio::spawn(async move {
                let service = service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
                    let body = if request.uri().path() == "/large" {
                        large.clone()
                    } else {
                        Bytes::from_static(b"ok")
                    };
                    async move { Ok::<_, Infallible>(hyper::Response::new(Full::new(body))) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

/// The proxy in front of `backend`, on a free port.
async fn proxy_in_front_of(backend: SocketAddr) -> SocketAddr {
    let config = format!(
        "[[listen]]\naddr = \"127.0.0.1:0\"\n\n[[servers]]\nserver_names = [\"bench.localhost\"]\nroutes = [{{ path = \"/\", upstream = \"backend\" }}]\n\n[upstreams.backend]\nservers = [\"{backend}\"]\n"
    );
    let config = proxy::Config::parse(&config, "bench.toml").expect("valid config");
    let server = proxy::ProxyServer::bind(config).await.expect("bind");
    let addr = server.local_addrs()[0];
    tokio::spawn(server.run(std::future::pending()));
    addr
}

fn hop(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let (direct, proxied) = runtime.block_on(async {
        let backend = backend().await;
        (backend, proxy_in_front_of(backend).await)
    });
    let client: Client<HttpConnector, Empty<Bytes>> =
        Client::builder(TokioExecutor::new()).build_http();
    let mut group = c.benchmark_group("hop");
    for (path, size) in [("/small", 2), ("/large", LARGE)] {
        group.throughput(Throughput::Bytes(size as u64));
        for (name, addr) in [("direct", direct), ("proxied", proxied)] {
            let uri: hyper::Uri = format!("http://{addr}{path}").parse().expect("uri");
            group.bench_function(format!("{name}{path}"), |b| {
                b.to_async(&runtime).iter(|| {
                    let request = hyper::Request::get(uri.clone())
                        .header("host", "bench.localhost")
                        .body(Empty::new())
                        .expect("request");
                    let client = client.clone();
                    async move {
                        let response = client.request(request).await.expect("response");
                        let body = response.into_body().collect().await.expect("body");
                        assert_eq!(body.to_bytes().len(), size);
                    }
                })
            });
        }
    }
    group.finish();
}

criterion_group!(benches, hop);
criterion_main!(benches);
