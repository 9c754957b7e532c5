//! Every scenario in lab/scenarios/, run against a fresh in-process stack over
//! real loopback HTTP, with its transcript pinned as an insta snapshot.
//!
//! A changed transcript fails the test; review it with `cargo insta review`
//! (or read the `.snap.new` file) before accepting it. An answer that breaks
//! a scenario's `expect` fails it too, with the line marked `!!`.

use lab::scenario::{self, RunOptions};
use lab::{Stack, StackOptions};

async fn run(name: &str) -> String {
    let scenario = scenario::built_in(name).expect("the scenario parses");
    let mut stack = Stack::boot(StackOptions::default())
        .await
        .expect("the stack boots");
    let outcome = scenario::run(&scenario, &mut stack, RunOptions::default())
        .await
        .expect("the scenario runs");
    stack.shutdown().await;
    let text = outcome.transcript.render();
    assert!(
        outcome.failures.is_empty(),
        "{name}: {:#?}\n{text}",
        outcome.failures
    );
    text
}

#[tokio::test]
async fn routing() {
    insta::assert_snapshot!("routing", run("routing").await);
}

#[tokio::test]
async fn host_routing() {
    insta::assert_snapshot!("host-routing", run("host-routing").await);
}

#[tokio::test]
async fn headers() {
    insta::assert_snapshot!("headers", run("headers").await);
}

#[tokio::test]
async fn round_robin() {
    insta::assert_snapshot!("round-robin", run("round-robin").await);
}

#[tokio::test]
async fn failover() {
    insta::assert_snapshot!("failover", run("failover").await);
}

#[tokio::test]
async fn https_redirect() {
    insta::assert_snapshot!("https-redirect", run("https-redirect").await);
}

#[tokio::test]
async fn rate_limit() {
    insta::assert_snapshot!("rate-limit", run("rate-limit").await);
}

#[tokio::test]
async fn cors() {
    insta::assert_snapshot!("cors", run("cors").await);
}

#[tokio::test]
async fn caching() {
    insta::assert_snapshot!("caching", run("caching").await);
}

#[tokio::test]
async fn trace() {
    insta::assert_snapshot!("trace", run("trace").await);
}

#[tokio::test]
async fn debugging() {
    insta::assert_snapshot!("debugging", run("debugging").await);
}

#[tokio::test]
async fn compression() {
    insta::assert_snapshot!("compression", run("compression").await);
}

#[tokio::test]
async fn websocket() {
    insta::assert_snapshot!("websocket", run("websocket").await);
}

#[tokio::test]
async fn security() {
    insta::assert_snapshot!("security", run("security").await);
}

#[tokio::test]
async fn l4_vs_l7() {
    insta::assert_snapshot!("l4-vs-l7", run("l4-vs-l7").await);
}

/// The layer-4 steps' own checks can fail: an answer where none was
/// expected, a PROXY header naming someone else, and a stack without the
/// listener a step names.
#[tokio::test]
async fn layer4_expectations_fail_when_they_do_not_hold() {
    let text = r#"
title = "layer-4 expectations"
[[steps]]
request = "GET http://localhost/"
via = "l4"
expect = { no_answer = true }
[[steps]]
request = "GET http://localhost/"
via = "l4"
expect = { json = { "proxy_protocol.source" = "<client>" } }
[[steps]]
request = "GET https://secure.localhost/"
via = "l4-terminate"
expect = { status = 200 }
"#;
    let scenario = scenario::Scenario::parse(text, "inline.toml").expect("valid");
    let mut stack = Stack::boot(StackOptions::default())
        .await
        .expect("the stack boots");
    let outcome = scenario::run(&scenario, &mut stack, RunOptions::default()).await;
    stack.shutdown().await;
    // The terminating listener's certificate is for localhost: a client asking
    // for secure.localhost refuses it, and no answer was allowed for.
    let err = outcome
        .expect_err("a refused certificate stops the run")
        .to_string();
    assert!(err.contains("secure.localhost"), "{err}");

    let two = scenario::Scenario {
        title: scenario.title.clone(),
        steps: scenario.steps[..2].to_vec(),
    };
    let mut stack = Stack::boot(StackOptions::default())
        .await
        .expect("the stack boots");
    let outcome = scenario::run(&two, &mut stack, RunOptions::default())
        .await
        .expect("the scenario runs");
    stack.shutdown().await;
    assert_eq!(outcome.failures.len(), 2, "{:#?}", outcome.failures);
    assert!(
        outcome.failures[0].contains("expected no answer"),
        "{:#?}",
        outcome.failures
    );
    assert!(
        outcome.failures[1]
            .contains("expected proxy_protocol.source = \"<client>\" (it was \"(not received)\")"),
        "{:#?}",
        outcome.failures
    );

    // A stack booted with a configuration of its own has no layer-4 listener.
    let mut stack = Stack::boot(StackOptions {
        proxy_config: Some(lab::stack::ConfigTemplate {
            text: lab::stack::PROXY_CONFIG_TEMPLATE.to_owned(),
            file: "lab/stack/proxy.toml".to_owned(),
        }),
        ..StackOptions::default()
    })
    .await
    .expect("the stack boots");
    let err = scenario::run(&two, &mut stack, RunOptions::default())
        .await
        .expect_err("no listener l4")
        .to_string();
    stack.shutdown().await;
    assert!(err.contains("no layer-4 listener `l4`"), "{err}");
}

#[tokio::test]
async fn an_https_step_sends_its_method_and_body() {
    let text = r#"
title = "https post"
[[steps]]
request = "POST https://secure.localhost/api/tasks"
headers = { content-type = "application/json" }
body = '{"title":"over TLS"}'
show = ["header:location"]
expect = { status = 201 }
"#;
    let scenario = scenario::Scenario::parse(text, "inline.toml").expect("valid");
    let mut stack = Stack::boot(StackOptions::default())
        .await
        .expect("the stack boots");
    let outcome = scenario::run(&scenario, &mut stack, RunOptions::default())
        .await
        .expect("the scenario runs");
    stack.shutdown().await;
    let text = outcome.transcript.render();
    assert!(
        outcome.failures.is_empty(),
        "{:?}\n{text}",
        outcome.failures
    );
    assert!(
        text.contains("POST https://secure.localhost/api/tasks -> 201 Created"),
        "{text}"
    );
}

#[test]
fn every_scenario_file_is_listed_and_tested() {
    let mut files: Vec<String> =
        std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/scenarios"))
            .expect("lab/scenarios")
            .filter_map(|entry| {
                let name = entry.ok()?.file_name().into_string().ok()?;
                name.strip_suffix(".toml").map(str::to_owned)
            })
            .collect();
    files.sort();
    let mut built_in: Vec<String> = scenario::names().iter().map(|n| n.to_string()).collect();
    built_in.sort();
    assert_eq!(
        files, built_in,
        "lab/scenarios/*.toml and scenario::BUILT_IN differ"
    );
    let tests = include_str!("scenarios.rs");
    for name in built_in {
        assert!(
            tests.contains(&format!("insta::assert_snapshot!(\"{name}\"")),
            "no snapshot test for scenario {name}"
        );
    }
}

#[tokio::test]
async fn rewrite() {
    insta::assert_snapshot!("rewrite", run("rewrite").await);
}

#[tokio::test]
async fn trace_contains_asks_for_the_trace_and_says_what_it_lacks() {
    let text = r#"
title = "trace expectations"
[[steps]]
request = "GET http://localhost/api/whoami"
expect = { status = 200, trace_contains = "round_robin chose <whoami-1>" }
[[steps]]
request = "GET http://localhost/api/whoami"
expect = { status = 200, trace_contains = "least_conn chose" }
"#;
    let scenario = scenario::Scenario::parse(text, "inline.toml").expect("valid");
    let mut stack = Stack::boot(StackOptions::default())
        .await
        .expect("the stack boots");
    let outcome = scenario::run(&scenario, &mut stack, RunOptions::default())
        .await
        .expect("the scenario runs");
    stack.shutdown().await;
    let text = outcome.transcript.render();
    assert_eq!(outcome.failures.len(), 1, "{:#?}\n{text}", outcome.failures);
    assert!(
        outcome.failures[0]
            .contains("expected a decision trace containing \"least_conn chose\", got 200 OK"),
        "{:#?}",
        outcome.failures
    );
}
