//! Every stop of the guided tour, run against a fresh in-process stack over
//! real loopback HTTP, with its transcript pinned as an insta snapshot.
//!
//! A changed transcript fails the test; review it with `cargo insta review`
//! (or read the `.snap.new` file) before accepting it.

use lab::{Stack, StackOptions, Tour};

async fn run(stop: Tour) -> String {
    let mut stack = Stack::boot(StackOptions::default())
        .await
        .expect("the stack boots");
    let transcript = stop.run(&mut stack).await.expect("the stop runs");
    stack.shutdown().await;
    transcript.render()
}

#[tokio::test]
async fn path_routing_sends_each_prefix_to_its_service() {
    insta::assert_snapshot!("routing", run(Tour::Routing).await);
}

#[tokio::test]
async fn host_routing_serves_two_names_on_one_address() {
    insta::assert_snapshot!("host-routing", run(Tour::HostRouting).await);
}

#[tokio::test]
async fn the_backend_sees_the_client_in_the_forwarding_headers() {
    insta::assert_snapshot!("headers", run(Tour::Headers).await);
}

#[tokio::test]
async fn round_robin_visits_the_three_replicas_in_turn() {
    insta::assert_snapshot!("round-robin", run(Tour::RoundRobin).await);
}

#[tokio::test]
async fn a_stopped_replica_fails_one_request_without_retries_and_none_with_them() {
    insta::assert_snapshot!("failover", run(Tour::Failover).await);
}

#[tokio::test]
async fn plain_http_is_redirected_and_https_uses_the_local_ca() {
    insta::assert_snapshot!("https-redirect", run(Tour::HttpsRedirect).await);
}

#[tokio::test]
async fn a_burst_over_the_rate_limit_gets_429_with_retry_after() {
    insta::assert_snapshot!("rate-limit", run(Tour::RateLimit).await);
}
