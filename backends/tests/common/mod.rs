//! Helpers shared by the integration tests: serve an app on a loopback port
//! chosen by the operating system, and send it real HTTP requests.

// Each test file uses a different subset of these helpers.
#![allow(dead_code)]

use std::net::SocketAddr;

use axum::Router;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::header::HeaderMap;
use hyper::{Request, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// An app served by `backends::serve` on `127.0.0.1:<free port>`.
pub struct TestServer {
    pub addr: SocketAddr,
    stop: oneshot::Sender<()>,
    task: JoinHandle<std::io::Result<()>>,
}

impl TestServer {
    /// Binds port 0 and starts serving. The listener is bound before this
    /// returns, so requests sent right away queue up until they are accepted.
    pub async fn start(app: Router) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a loopback port is free");
        let addr = listener
            .local_addr()
            .expect("a bound listener has an address");
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(backends::serve(listener, app, async move {
            stopped.await.ok();
        }));
        Self { addr, stop, task }
    }

    /// `http://127.0.0.1:<port><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Asks for a graceful shutdown and waits until the server has stopped.
    pub async fn stop(self) {
        self.stop.send(()).ok();
        self.task
            .await
            .expect("the server task does not panic")
            .expect("the server stops without an I/O error");
    }
}

/// A response with its body read in full.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|err| {
            panic!(
                "expected a JSON body ({err}), got {:?}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    pub fn text(&self) -> String {
        String::from_utf8(self.body.to_vec()).expect("the body is UTF-8")
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(name)
            .map(|value| value.to_str().expect("the header value is text"))
    }
}

/// Sends one request with hyper's client and reads the whole response.
pub async fn send(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: impl Into<Bytes>,
) -> Reply {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let mut request = Request::builder().method(method).uri(url);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let request = request
        .body(Full::new(body.into()))
        .expect("the test builds a valid request");
    let response = client
        .request(request)
        .await
        .unwrap_or_else(|err| panic!("{method} {url} failed: {err}"));
    let (parts, body) = response.into_parts();
    let body = body
        .collect()
        .await
        .expect("the response body can be read")
        .to_bytes();
    Reply {
        status: parts.status,
        headers: parts.headers,
        body,
    }
}

pub async fn get(url: &str) -> Reply {
    send("GET", url, &[], Bytes::new()).await
}

/// Sends `json` as an `application/json` body.
pub async fn send_json(method: &str, url: &str, json: &serde_json::Value) -> Reply {
    send(
        method,
        url,
        &[("content-type", "application/json")],
        json.to_string(),
    )
    .await
}
