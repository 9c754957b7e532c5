//! The guided tour: short scripted runs against a fresh [`Stack`], each showing
//! one thing a reverse proxy does, as a [`Transcript`].
//!
//! `lab tour` prints them; `lab/tests/tour.rs` pins them as snapshots, so a
//! chapter that quotes a transcript is checked on every `cargo test`.

use bytes::Bytes;
use http::Method;

use crate::client::{Exchange, LabClient, RequestError, get_https};
use crate::stack::{Stack, StackError};
use crate::transcript::Transcript;

/// One stop of the tour.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tour {
    /// Path routing: `/` to the frontend, `/api/` to the API (stripped), a fixed answer.
    Routing,
    /// Host routing: two names on one address, and the default server.
    HostRouting,
    /// The forwarding headers as the backend saw them, and hop-by-hop removal.
    Headers,
    /// Round-robin across three whoami replicas, proved by their names.
    RoundRobin,
    /// A replica goes down: without retries its next turn fails (502 with
    /// `Proxy-Status`) and passive health takes it out; with retries no client sees it.
    Failover,
    /// HTTPS: plain HTTP redirected, TLS with a certificate from the local CA, HSTS.
    HttpsRedirect,
    /// A burst against a rate limit: accepted, then refused with 429 and Retry-After.
    RateLimit,
}

/// A tour stop failed to run (not: a request got an error status, which is
/// part of the transcript).
#[derive(Debug, thiserror::Error)]
pub enum TourError {
    /// A request got no response at all.
    #[error(transparent)]
    Request(#[from] RequestError),
    /// The stack could not do what the tour asked.
    #[error(transparent)]
    Stack(#[from] StackError),
}

impl Tour {
    /// Every stop, in the order `lab tour` runs them.
    pub const ALL: [Tour; 7] = [
        Tour::Routing,
        Tour::HostRouting,
        Tour::Headers,
        Tour::RoundRobin,
        Tour::Failover,
        Tour::HttpsRedirect,
        Tour::RateLimit,
    ];

    /// The stop's name, as `lab tour NAME` takes it.
    pub fn name(self) -> &'static str {
        match self {
            Tour::Routing => "routing",
            Tour::HostRouting => "host-routing",
            Tour::Headers => "headers",
            Tour::RoundRobin => "round-robin",
            Tour::Failover => "failover",
            Tour::HttpsRedirect => "https-redirect",
            Tour::RateLimit => "rate-limit",
        }
    }

    /// The stop called `name`.
    pub fn from_name(name: &str) -> Option<Tour> {
        Tour::ALL.into_iter().find(|t| t.name() == name)
    }

    /// Runs this stop against `stack` (which it may change: `Failover`
    /// stops a replica) and returns its transcript.
    pub async fn run(self, stack: &mut Stack) -> Result<Transcript, TourError> {
        match self {
            Tour::Routing => routing(stack).await,
            Tour::HostRouting => host_routing(stack).await,
            Tour::Headers => headers(stack).await,
            Tour::RoundRobin => round_robin(stack).await,
            Tour::Failover => failover(stack).await,
            Tour::HttpsRedirect => https_redirect(stack).await,
            Tour::RateLimit => rate_limit(stack).await,
        }
    }
}

async fn routing(stack: &mut Stack) -> Result<Transcript, TourError> {
    let client = LabClient::new(stack.proxy_addr);
    let mut t = Transcript::new(
        "routing: one entry point, the path picks the service",
        stack,
    );
    t.note("The longest matching prefix wins: /api/whoami beats /api/, which beats /.");

    let page = client.get("localhost", "/").await?;
    t.exchange(&page);
    detail_header(&mut t, &page, "content-type");
    t.detail("page title", &page_title(&page));

    t.gap();
    t.note("/api/ has strip_prefix: tasks-api receives / and answers its status.");
    let status = client.get("localhost", "/api/").await?;
    t.exchange(&status);
    t.detail("body", status.text().trim());

    let created = client
        .send(
            Method::POST,
            "localhost",
            "/api/tasks",
            &[("content-type", "application/json")],
            Bytes::from_static(br#"{"title":"Learn how a reverse proxy routes"}"#),
        )
        .await?;
    t.exchange(&created);
    detail_header(&mut t, &created, "location");
    t.note("The API answers with its own path (/tasks/1): it never saw the /api/ prefix.");

    let list = client.get("localhost", "/api/tasks").await?;
    t.exchange(&list);
    t.detail("tasks", &task_titles(&list));

    t.gap();
    t.note("/api/whoami has no strip_prefix: whoami sees the path unchanged.");
    let who = client.get("localhost", "/api/whoami").await?;
    t.exchange(&who);
    served_by(&mut t, &who);
    t.detail("path seen by whoami", &echo_field(&who, "path"));

    t.gap();
    t.note("/welcome is answered by the proxy itself, and only that exact path.");
    let welcome = client.get("localhost", "/welcome").await?;
    t.exchange(&welcome);
    t.detail("body", welcome.text().trim());
    let more = client.get("localhost", "/welcome/more").await?;
    t.exchange(&more);
    t.note("exact = true: /welcome/more fell through to / (the frontend), which has no such page.");
    Ok(t)
}

async fn host_routing(stack: &mut Stack) -> Result<Transcript, TourError> {
    let client = LabClient::new(stack.proxy_addr);
    let mut t = Transcript::new("host-routing: two names, one address", stack);
    t.note("Every request goes to the same address; only the Host header differs.");

    let app = client.get("app.localhost", "/api/").await?;
    t.exchange(&app);
    t.detail("body", app.text().trim());

    let api = client.get("api.localhost", "/").await?;
    t.exchange(&api);
    t.detail("body", api.text().trim());
    t.note("api.localhost is a second server in the config with the same upstream.");

    let tasks = client.get("api.localhost", "/tasks").await?;
    t.exchange(&tasks);
    t.detail("tasks", &task_titles(&tasks));
    let prefixed = client.get("api.localhost", "/api/tasks").await?;
    t.exchange(&prefixed);
    t.note("That server's route is / without strip_prefix: /api/tasks is not an API path there.");

    t.gap();
    t.note("A name no server lists goes to the default server (the main site).");
    for host in ["unknown.localhost", "127.0.0.1"] {
        let other = client.get(host, "/").await?;
        t.exchange(&other);
        t.detail("page title", &page_title(&other));
    }
    Ok(t)
}

async fn headers(stack: &mut Stack) -> Result<Transcript, TourError> {
    let client = LabClient::new(stack.proxy_addr);
    let mut t = Transcript::new("headers: what the backend learns about the client", stack);
    t.note("The client claims an X-Forwarded-For and names a header in Connection.");
    let sent = [
        ("x-forwarded-for", "203.0.113.7"),
        ("connection", "x-lab-secret"),
        ("x-lab-secret", "for the proxy only"),
    ];
    let who = client
        .send(
            Method::GET,
            "app.localhost:8080",
            "/api/whoami",
            &sent,
            Bytes::new(),
        )
        .await?;
    for (name, value) in sent {
        t.detail("sent", &format!("{name}: {value}"));
    }
    t.exchange(&who);
    served_by(&mut t, &who);
    let seen = who.json().unwrap_or_default();
    for name in [
        "host",
        "x-real-ip",
        "x-forwarded-for",
        "x-forwarded-proto",
        "x-forwarded-host",
        "connection",
        "x-lab-secret",
    ] {
        let value = seen["headers"][name].as_str().unwrap_or("(not received)");
        t.detail(&format!("whoami saw {name}"), value);
    }
    t.detail("whoami's TCP peer", &echo_field(&who, "remote_addr"));
    t.note(
        "The TCP peer is the proxy; X-Real-IP and the last X-Forwarded-For entry carry the client.",
    );
    t.note("The client's own X-Forwarded-For entry is kept but unverified: only the last one is the proxy's.");
    t.note("Connection and the headers it names are hop-by-hop: they stop at the proxy.");
    Ok(t)
}

async fn round_robin(stack: &mut Stack) -> Result<Transcript, TourError> {
    let client = LabClient::new(stack.proxy_addr);
    let mut t = Transcript::new("round-robin: three replicas, taken in turn", stack);
    t.note("Each replica answers with its own name. A PID could not tell them apart");
    t.note("(in containers every main process is PID 1); a name can.");
    for _ in 0..6 {
        let who = client.get("localhost", "/api/whoami").await?;
        t.exchange(&who);
        served_by(&mut t, &who);
    }
    Ok(t)
}

async fn failover(stack: &mut Stack) -> Result<Transcript, TourError> {
    let client = LabClient::new(stack.proxy_addr);
    let mut t = Transcript::new("failover: one of three replicas stops", stack);
    for _ in 0..3 {
        let who = client.get("localhost", "/api/whoami").await?;
        t.exchange(&who);
        served_by(&mut t, &who);
    }
    t.gap();
    stack.stop_service("whoami-2").await?;
    t.note("whoami-2 is stopped. The proxy is not told.");
    t.note("/no-retry/whoami: the same replicas, next_upstream = [\"off\"], max_fails = 1.");
    whoami_turns(&client, &mut t, "/no-retry/whoami", 4).await?;
    t.note("One client got 502 Bad Gateway (Proxy-Status says which upstream failed and how);");
    t.note("that failure took whoami-2 out for fail_timeout, so the next requests skip it.");
    t.gap();
    t.note("/api/whoami: nginx's defaults, next_upstream = [\"error\", \"timeout\"].");
    whoami_turns(&client, &mut t, "/api/whoami", 4).await?;
    t.note("No client sees an error: the refused connection went on to the next replica");
    t.note("(safe even for a POST: the request never reached whoami-2), and whoami-2 is out.");
    Ok(t)
}

/// `n` GETs of `path`: who served each, or why it failed.
async fn whoami_turns(
    client: &LabClient,
    t: &mut Transcript,
    path: &str,
    n: usize,
) -> Result<(), TourError> {
    for _ in 0..n {
        let who = client.get("localhost", path).await?;
        t.exchange(&who);
        if who.status.is_success() {
            served_by(t, &who);
        } else {
            detail_header(t, &who, "proxy-status");
        }
    }
    Ok(())
}

async fn https_redirect(stack: &mut Stack) -> Result<Transcript, TourError> {
    let client = LabClient::new(stack.proxy_addr);
    let mut t = Transcript::new("https-redirect: plain HTTP is sent to HTTPS", stack);
    t.note("secure.localhost has redirect_https: over plain HTTP it answers only with a redirect.");
    let plain = client
        .get("secure.localhost", "/api/tasks?done=false")
        .await?;
    t.exchange(&plain);
    detail_header(&mut t, &plain, "location");
    t.note("Path and query are kept; the port is the proxy's HTTPS listener.");

    t.gap();
    t.note("The client follows it. The certificate was issued for secure.localhost by the lab's");
    t.note("local CA (tls = { auto_local = true }), and this client trusts that CA's root.");
    let root = Some(stack.ca_root_pem.as_str());
    let secure = get_https(
        stack.proxy_tls_addr,
        "secure.localhost",
        "/api/tasks?done=false",
        root,
    )
    .await?;
    t.exchange(&secure);
    t.detail(
        "protocol",
        &format!("{:?} (chosen by ALPN)", secure.version),
    );
    detail_header(&mut t, &secure, "strict-transport-security");
    t.detail("tasks", &task_titles(&secure));
    let who = get_https(
        stack.proxy_tls_addr,
        "secure.localhost",
        "/api/whoami",
        root,
    )
    .await?;
    t.exchange(&who);
    let seen = who.json().unwrap_or_default();
    for name in ["x-forwarded-proto", "host"] {
        t.detail(
            &format!("whoami saw {name}"),
            seen["headers"][name].as_str().unwrap_or("(not received)"),
        );
    }
    t.note("TLS ends at the proxy: whoami speaks plain HTTP and learns the scheme from X-Forwarded-Proto.");

    t.gap();
    t.note("A client that was never told to trust the lab's CA refuses the certificate:");
    match get_https(stack.proxy_tls_addr, "secure.localhost", "/", None).await {
        Ok(answer) => t.exchange(&answer),
        Err(err) => t.line(&format!(
            "GET https://secure.localhost/ -> refused: {}",
            root_cause(&err)
        )),
    }
    t.gap();
    t.note("localhost has no redirect_https: it still answers over plain HTTP, without HSTS.");
    let local = client.get("localhost", "/api/").await?;
    t.exchange(&local);
    detail_header(&mut t, &local, "strict-transport-security");
    Ok(t)
}

async fn rate_limit(stack: &mut Stack) -> Result<Transcript, TourError> {
    let client = LabClient::new(stack.proxy_addr);
    let mut t = Transcript::new("rate-limit: 1 request per second, and a burst of 2", stack);
    t.note("/limited/ has limit_req { zone = \"one\", burst = 2, nodelay = true, status = 429 };");
    t.note("zone one allows 1r/s per client address. Five requests, as fast as the client can:");
    for _ in 0..5 {
        let answer = client.get("localhost", "/limited/").await?;
        t.exchange(&answer);
        if answer.status.is_success() {
            served_by(&mut t, &answer);
        } else {
            detail_header(&mut t, &answer, "retry-after");
            t.detail("body", answer.text().trim());
        }
    }
    t.note("The first request is within the rate; the burst lets two more through at once");
    t.note("(nodelay; without it they would wait 1 s and 2 s). The rest are refused until the");
    t.note("bucket drains at 1 per second: Retry-After says when.");
    t.gap();
    t.note("Other routes have no limit: /api/ still answers.");
    let other = client.get("localhost", "/api/").await?;
    t.exchange(&other);
    Ok(t)
}

/// The innermost cause of an error: for a TLS failure, what rustls said.
fn root_cause(err: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = err;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}

fn detail_header(t: &mut Transcript, exchange: &Exchange, name: &str) {
    t.detail(name, exchange.header(name).unwrap_or("(none)"));
}

fn served_by(t: &mut Transcript, exchange: &Exchange) {
    t.detail(
        "served by",
        exchange.header("x-served-by").unwrap_or("(unknown)"),
    );
}

fn echo_field(exchange: &Exchange, field: &str) -> String {
    exchange
        .json()
        .and_then(|json| json[field].as_str().map(str::to_owned))
        .unwrap_or_else(|| "(not JSON)".into())
}

fn page_title(exchange: &Exchange) -> String {
    let text = exchange.text();
    text.split_once("<title>")
        .and_then(|(_, rest)| rest.split_once("</title>"))
        .map(|(title, _)| title.trim().to_owned())
        .unwrap_or_else(|| "(no title)".into())
}

/// The tasks in a `GET /tasks` answer, without their timestamps (which change
/// every run): `#1 "Title" (open)`.
fn task_titles(exchange: &Exchange) -> String {
    let Some(serde_json::Value::Array(tasks)) = exchange.json() else {
        return format!("(not a task list: {})", exchange.text().trim());
    };
    if tasks.is_empty() {
        return "(none)".into();
    }
    tasks
        .iter()
        .map(|task| {
            format!(
                "#{} {} ({})",
                task["id"],
                task["title"],
                if task["done"] == true { "done" } else { "open" }
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}
