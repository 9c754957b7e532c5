//! The frontend service over real HTTP on a loopback port.

mod common;

use backends::frontend;
use common::{TestServer, get};
use hyper::StatusCode;

#[tokio::test]
async fn frontend_serves_the_page_as_html_that_calls_the_apis_by_relative_url() {
    let server = TestServer::start(frontend::app()).await;

    let reply = get(&server.url("/")).await;

    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(
        reply.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    let page = reply.text();
    assert!(page.starts_with("<!doctype html>"));
    assert!(
        page.contains("\"/api/whoami\""),
        "the page calls /api/whoami"
    );
    assert!(page.contains("\"/api/tasks\""), "the page calls /api/tasks");
    assert!(page.contains("x-forwarded-proto"));
    assert!(!page.contains("http://"), "no absolute http URL");
    assert!(!page.contains("https://"), "no absolute https URL");
    server.stop().await;
}

#[tokio::test]
async fn frontend_health_answers_ok() {
    let server = TestServer::start(frontend::app()).await;

    let reply = get(&server.url("/health")).await;

    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.text(), "ok");
    server.stop().await;
}

#[tokio::test]
async fn frontend_answers_404_for_other_paths() {
    let server = TestServer::start(frontend::app()).await;

    let reply = get(&server.url("/api/whoami")).await;

    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    server.stop().await;
}
