//! Upstream servers found by name: `servers = ["whoami:5000"]`.
//!
//! A name can stand for several machines, and the set can change: `docker
//! compose up --scale whoami=3` gives the service three containers, and
//! Docker's DNS answers the name `whoami` with all three addresses. So the
//! proxy looks every name up again each `resolve_interval`, and every address
//! becomes a server of the pool, like nginx's `server whoami:5000 resolve`.
//! Servers that stay keep their health and in-flight counts; the set's
//! changes are logged. A failed lookup keeps the last known addresses, so a
//! DNS hiccup never empties a pool.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, Weak};

use super::{UpstreamPool, UpstreamServer};
use crate::config::UpstreamServerConfig;

/// Where host names are looked up.
#[derive(Debug, Clone, Default)]
pub enum Resolver {
    /// The system's resolver (`getaddrinfo`: `/etc/hosts`, then the DNS
    /// servers of `/etc/resolv.conf`; in a container, Docker's DNS).
    #[default]
    System,
    /// A fixed table the program (a test, a lab scenario) edits.
    Table(Arc<Mutex<HashMap<String, Vec<IpAddr>>>>),
}

impl Resolver {
    /// An empty table; fill it with [`Resolver::set`].
    pub fn table() -> Resolver {
        Resolver::Table(Arc::default())
    }

    /// In a table resolver, makes `host` resolve to `ips` (none: it fails).
    pub fn set(&self, host: &str, ips: &[IpAddr]) {
        if let Resolver::Table(table) = self {
            table
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(host.to_ascii_lowercase(), ips.to_vec());
        }
    }

    /// The addresses of `host`, with `port`, sorted (so the pool's order, and
    /// round-robin's, does not depend on the order DNS answered in).
    pub async fn lookup(&self, host: &str, port: u16) -> std::io::Result<Vec<SocketAddr>> {
        let mut addrs: Vec<SocketAddr> = match self {
            Resolver::System => tokio::net::lookup_host((host, port)).await?.collect(),
            Resolver::Table(table) => table
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get(&host.to_ascii_lowercase())
                .map(|ips| ips.iter().map(|ip| SocketAddr::new(*ip, port)).collect())
                .unwrap_or_default(),
        };
        addrs.sort();
        addrs.dedup();
        if addrs.is_empty() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!("{host} has no address"),
            ));
        }
        Ok(addrs)
    }
}

/// The host and port of a configured server whose host is a name, not an IP.
fn named(server: &UpstreamServerConfig) -> Option<(&str, u16)> {
    let (host, port) = server.address.rsplit_once(':')?;
    let port = port.parse().ok()?;
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    bare.parse::<IpAddr>().is_err().then_some((host, port))
}

/// Starts looking up `pool`'s named servers every `resolve_interval`, for as
/// long as the pool exists; does nothing when every server is an IP address.
pub fn start(pool: &Arc<UpstreamPool>, resolver: Resolver) {
    if !pool.config.servers.iter().any(|s| named(s).is_some()) {
        return;
    }
    let task = tokio::spawn(run(Arc::downgrade(pool), resolver));
    pool.keep_task(task.abort_handle());
}

async fn run(pool: Weak<UpstreamPool>, resolver: Resolver) {
    let Some(interval) = pool.upgrade().map(|p| p.config.resolve_interval) else {
        return;
    };
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let Some(pool) = pool.upgrade() else {
            return;
        };
        refresh(&pool, &resolver).await;
    }
}

/// Looks every named server up once and updates the pool's servers.
async fn refresh(pool: &UpstreamPool, resolver: &Resolver) {
    let current = pool.servers();
    let mut next: Vec<Arc<UpstreamServer>> = Vec::new();
    for configured in &pool.config.servers {
        // An address already in the pool keeps its health and counters.
        let reuse = |address: &str| {
            current
                .iter()
                .find(|s| &*s.address == address)
                .cloned()
                .or_else(|| UpstreamServer::new(address, configured).map(Arc::new))
        };
        let Some((host, port)) = named(configured) else {
            next.extend(reuse(&configured.address));
            continue;
        };
        match resolver.lookup(host, port).await {
            Ok(addrs) => next.extend(addrs.iter().filter_map(|a| reuse(&a.to_string()))),
            Err(err) => {
                // Keep what this name gave last time (or the name itself).
                let before: Vec<_> = current
                    .iter()
                    .filter(|s| s.host.as_bytes() == configured.address.as_bytes())
                    .cloned()
                    .collect();
                tracing::warn!(upstream = %pool.name, "cannot resolve {}: {err}; keeping {} server(s)", configured.address, before.len());
                next.extend(before);
            }
        }
    }
    let names = |list: &[Arc<UpstreamServer>]| -> Vec<String> {
        list.iter().map(|s| s.address.to_string()).collect()
    };
    let (old, new) = (names(&current), names(&next));
    if old != new {
        let added: Vec<&String> = new.iter().filter(|a| !old.contains(a)).collect();
        let removed: Vec<&String> = old.iter().filter(|a| !new.contains(a)).collect();
        tracing::info!(
            upstream = %pool.name,
            "servers now {} (added {:?}, removed {:?})",
            new.join(", "),
            added,
            removed
        );
        pool.replace_servers(next);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ip_addresses_are_not_looked_up_names_are() {
        let server = |address: &str| UpstreamServerConfig {
            address: address.to_owned(),
            weight: 1,
        };
        assert_eq!(named(&server("127.0.0.1:80")), None);
        assert_eq!(named(&server("[::1]:8443")), None);
        assert_eq!(named(&server("whoami:5000")), Some(("whoami", 5000)));
    }

    #[tokio::test]
    async fn a_table_resolver_answers_sorted_and_fails_for_unknown_names() {
        let resolver = Resolver::table();
        let ips: Vec<IpAddr> = ["10.0.0.2", "10.0.0.1"]
            .iter()
            .map(|ip| ip.parse().expect("ip"))
            .collect();
        resolver.set("Api", &ips);
        let addrs = resolver.lookup("api", 80).await.expect("resolves");
        assert_eq!(
            addrs.iter().map(ToString::to_string).collect::<Vec<_>>(),
            ["10.0.0.1:80", "10.0.0.2:80"]
        );
        assert!(resolver.lookup("other", 80).await.is_err());
    }

    #[tokio::test]
    async fn the_system_resolver_finds_localhost() {
        let addrs = Resolver::System
            .lookup("localhost", 80)
            .await
            .expect("localhost resolves");
        assert!(addrs.iter().all(|a| a.ip().is_loopback()), "{addrs:?}");
    }
}
