//! Active health checks (HAProxy's `option httpchk` with `fall` and `rise`).
//!
//! Passive health only learns that a server is down when a real request
//! fails on it. Active checks ask every server on their own, every
//! `interval`, with a `GET` to the check path: a 2xx or 3xx answer within
//! `timeout` is a success, anything else (an error status, a refused
//! connection, silence) a failure. `fall` failures in a row mark the server
//! down, `rise` successes in a row bring it back; a single odd result changes
//! nothing, so one slow answer does not flap a server out and in.

use std::sync::{Arc, Weak};

use http::{Request, header};

use super::{UpstreamPool, UpstreamServer};
use crate::body;
use crate::config::HealthCheck;

/// Starts checking `pool`'s servers in the background, for as long as the
/// pool exists.
pub fn start(pool: &Arc<UpstreamPool>, check: HealthCheck) {
    let task = tokio::spawn(run(Arc::downgrade(pool), check));
    pool.keep_task(task.abort_handle());
}

async fn run(pool: Weak<UpstreamPool>, check: HealthCheck) {
    let mut ticks = tokio::time::interval(check.interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let Some(pool) = pool.upgrade() else {
            return;
        };
        let mut checks = tokio::task::JoinSet::new();
        for server in pool.servers().iter() {
            let (pool, server, check) = (pool.clone(), server.clone(), check.clone());
            checks.spawn(async move {
                let ok = check_once(&pool, &server, &check).await;
                if let Some(up) = server.health.checked(ok, check.fall, check.rise) {
                    if up {
                        tracing::info!(upstream = %pool.name, server = %server.address,
                            "health check: server is up ({} good checks in a row)", check.rise);
                    } else {
                        tracing::warn!(upstream = %pool.name, server = %server.address,
                            "health check: server is down ({} failed checks in a row)", check.fall);
                    }
                }
            });
        }
        while checks.join_next().await.is_some() {}
    }
}

/// One check: does `GET path` answer 2xx or 3xx within the timeout?
async fn check_once(pool: &UpstreamPool, server: &UpstreamServer, check: &HealthCheck) -> bool {
    let Ok(request) = Request::get(check.path.as_str())
        .header(header::HOST, server.host.clone())
        .header(header::USER_AGENT, "proxy-lab health check")
        .body(body::empty())
    else {
        return false;
    };
    let attempt = async {
        // A GET without a body: it may go again if a kept connection was closed.
        let response = pool.send(server, request, Some(body::empty())).await.ok()?;
        let status = response.status();
        // Read the body so the connection can be reused.
        http_body_util::BodyExt::collect(response.into_body())
            .await
            .ok()?;
        Some(status.is_success() || status.is_redirection())
    };
    matches!(
        tokio::time::timeout(check.timeout, attempt).await,
        Ok(Some(true))
    )
}
