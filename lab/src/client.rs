//! The lab's HTTP client: every request goes to the proxy, with the host name
//! the learner would type in a browser carried in the `Host` header.
//!
//! That is exactly what a browser does after DNS resolved `app.localhost` to
//! the proxy's address, so no `/etc/hosts` editing is needed.

use std::net::SocketAddr;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::{Client, connect::HttpConnector};
use hyper_util::rt::TokioExecutor;

/// A client bound to one proxy address.
#[derive(Debug, Clone)]
pub struct LabClient {
    proxy: SocketAddr,
    client: Client<HttpConnector, Full<Bytes>>,
}

/// One request and its complete response.
#[derive(Debug, Clone)]
pub struct Exchange {
    /// The request method.
    pub method: Method,
    /// The host name the request was for.
    pub host: String,
    /// The path and query.
    pub path: String,
    /// The response status.
    pub status: StatusCode,
    /// The response headers.
    pub headers: HeaderMap,
    /// The whole response body.
    pub body: Bytes,
}

/// A request could not be completed at all (no status came back).
#[derive(Debug, thiserror::Error)]
#[error("{method} http://{host}{path} failed: {source}")]
pub struct RequestError {
    method: Method,
    host: String,
    path: String,
    #[source]
    source: Box<dyn std::error::Error + Send + Sync>,
}

impl LabClient {
    /// A client that sends every request to `proxy`.
    pub fn new(proxy: SocketAddr) -> LabClient {
        LabClient {
            proxy,
            client: Client::builder(TokioExecutor::new()).build_http(),
        }
    }

    /// `GET http://{host}{path}` through the proxy.
    pub async fn get(&self, host: &str, path: &str) -> Result<Exchange, RequestError> {
        self.send(Method::GET, host, path, &[], Bytes::new()).await
    }

    /// Any request through the proxy, with extra headers and a body.
    pub async fn send(
        &self,
        method: Method,
        host: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Bytes,
    ) -> Result<Exchange, RequestError> {
        let fail = |source: Box<dyn std::error::Error + Send + Sync>| RequestError {
            method: method.clone(),
            host: host.to_owned(),
            path: path.to_owned(),
            source,
        };
        let mut request = Request::builder()
            .method(method.clone())
            .uri(format!("http://{}{path}", self.proxy))
            .header(http::header::HOST, host);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let request = request.body(Full::new(body)).map_err(|e| fail(e.into()))?;
        let response = self
            .client
            .request(request)
            .await
            .map_err(|e| fail(e.into()))?;
        let (parts, body) = response.into_parts();
        let body = body.collect().await.map_err(|e| fail(e.into()))?.to_bytes();
        Ok(Exchange {
            method,
            host: host.to_owned(),
            path: path.to_owned(),
            status: parts.status,
            headers: parts.headers,
            body,
        })
    }
}

impl Exchange {
    /// The body parsed as JSON, if it is JSON.
    pub fn json(&self) -> Option<serde_json::Value> {
        serde_json::from_slice(&self.body).ok()
    }

    /// A response header as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The body as text (lossy).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}
