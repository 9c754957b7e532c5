//! The admin listener: the proxy's own small HTTP server for operators, on
//! an address of its own (`admin = { addr = "127.0.0.1:9090" }`).
//!
//! - `GET /metrics`: the metrics in Prometheus' text format ([`crate::metrics`]);
//! - `GET /health`: `ok` while the proxy runs (for a load balancer or an
//!   orchestrator's liveness probe);
//! - anything else: 404.
//!
//! It never proxies and never shares a port with clients: what it shows
//! (routes, upstream servers, zones) is for the people running the proxy.
//! It stays the same across reloads; a changed `admin` address needs a
//! restart.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::proxy::Proxy;

/// How long a scraper may take to send its request head.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// Accepts admin connections on `listener` until `stop` turns true.
pub async fn serve(listener: TcpListener, proxy: Arc<Proxy>, mut stop: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = stop.changed() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let proxy = proxy.clone();
                    tokio::spawn(async move {
                        let service = service_fn(move |request| {
                            let answer = answer(&proxy, &request);
                            async move { Ok::<_, Infallible>(answer) }
                        });
                        let served = http1::Builder::new()
                            .timer(TokioTimer::new())
                            .header_read_timeout(HEADER_TIMEOUT)
                            .serve_connection(TokioIo::new(stream), service)
                            .await;
                        if let Err(err) = served {
                            tracing::debug!("admin connection ended with an error: {err}");
                        }
                    });
                }
                Err(err) => {
                    tracing::error!("admin accept failed: {err}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
        }
    }
}

/// The answer to one admin request.
fn answer(proxy: &Proxy, request: &Request<Incoming>) -> Response<Full<Bytes>> {
    let get = matches!(*request.method(), Method::GET | Method::HEAD);
    let (status, content_type, body) = match (request.uri().path(), get) {
        ("/metrics", true) => (
            StatusCode::OK,
            crate::metrics::CONTENT_TYPE,
            crate::metrics::render(&proxy.snapshot()),
        ),
        ("/health", true) => (StatusCode::OK, "text/plain; charset=utf-8", "ok\n".into()),
        ("/metrics" | "/health", false) => (
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain; charset=utf-8",
            "405 Method Not Allowed: use GET\n".into(),
        ),
        _ => (
            StatusCode::NOT_FOUND,
            "text/plain; charset=utf-8",
            "404 Not Found: the admin listener serves /metrics and /health\n".into(),
        ),
    };
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(content_type),
    );
    if status == StatusCode::METHOD_NOT_ALLOWED {
        response
            .headers_mut()
            .insert(header::ALLOW, header::HeaderValue::from_static("GET, HEAD"));
    }
    response
}
