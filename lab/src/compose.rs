//! A docker-compose file read without Docker: the rules of the production
//! stack (chapter 12), checked on the file's text, so `lab check 12` and
//! `cargo test` work on any machine.
//!
//! The stack the rules describe (`compose/production/docker-compose.yml`):
//!
//! ```text
//!  host ── 127.0.0.1:8080 ──► proxy ──┬──► frontend:3000    (healthy first)
//!         (the only published port)   ├──► tasks-api:8000   (migrated, data on a named volume)
//!                                     └──► whoami:5000 × 3  (one name, three containers)
//! ```
//!
//! Each rule ([`RULES`]) looks at the parsed YAML and says, in plain words,
//! what is wrong and how to fix it. The file is read as both compose tools
//! read it (Debian's `docker-compose` 1.29 and the `docker compose` plugin):
//! short and long syntax for ports, volumes and `depends_on`, list and map
//! forms of `environment`. What compose itself would refuse outright (an
//! undeclared named volume) is reported as a rule's failure too, so the
//! learner sees every problem at once.

use std::fmt::Write as _;
use std::path::Path;

use serde_norway::Value;

/// The services the stack must have, with the port each listens on.
pub const SERVICES: [(&str, u16); 4] = [
    ("proxy", 8080),
    ("frontend", 3000),
    ("tasks-api", 8000),
    ("whoami", 5000),
];
/// The services behind the proxy (every one but the proxy).
const BACKENDS: [&str; 3] = ["frontend", "tasks-api", "whoami"];
/// How many whoami replicas the stack runs.
pub const WHOAMI_REPLICAS: u64 = 3;
/// Where tasks-api keeps its database unless `DB_FILE_PATH` says otherwise
/// (the image's default).
const DEFAULT_DB_FILE: &str = "/data/tasks.db";
/// Where the proxy reads its config unless its `command` says otherwise.
const DEFAULT_PROXY_CONFIG: &str = "/etc/proxy-lab/proxy.toml";

/// One rule: what it is about, and the check.
pub struct Rule {
    /// A short sentence: what a good file does.
    pub about: &'static str,
    check: fn(&Compose) -> Vec<String>,
}

impl std::fmt::Debug for Rule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.about)
    }
}

/// Every rule, in the order they are reported.
pub const RULES: &[Rule] = &[
    Rule {
        about: "the stack has the services proxy, frontend, tasks-api and whoami",
        check: services_exist,
    },
    Rule {
        about: "only the proxy publishes a port to the host",
        check: only_the_proxy_publishes,
    },
    Rule {
        about: "the services listen on every interface of their container",
        check: services_listen_on_every_interface,
    },
    Rule {
        about: "every service behind the proxy has a healthcheck its image can run",
        check: healthchecks,
    },
    Rule {
        about: "the proxy starts once every service behind it is healthy",
        check: start_up_order,
    },
    Rule {
        about: "tasks-api keeps its database on a volume",
        check: database_on_a_volume,
    },
    Rule {
        about: "whoami runs three replicas, each with its own hostname",
        check: whoami_replicas,
    },
    Rule {
        about: "the proxy's config is mounted where the proxy reads it",
        check: proxy_config_mounted,
    },
    Rule {
        about: "the proxy shares a network with every service",
        check: shared_networks,
    },
];

/// What one rule found.
#[derive(Debug, Clone)]
pub struct RuleOutcome {
    /// The rule's sentence.
    pub about: &'static str,
    /// What is wrong, in plain words; empty when the rule holds.
    pub failures: Vec<String>,
}

/// What the check of a compose file found.
#[derive(Debug, Clone)]
pub struct Report {
    /// Each rule's outcome, in [`RULES`] order (none when the file does not parse).
    pub rules: Vec<RuleOutcome>,
    /// Why the file could not be read as a compose file, if it could not.
    pub unreadable: Option<String>,
}

impl Report {
    /// Every failure, rule after rule.
    pub fn failures(&self) -> Vec<String> {
        self.unreadable
            .iter()
            .cloned()
            .chain(self.rules.iter().flat_map(|r| r.failures.iter().cloned()))
            .collect()
    }

    /// One line per rule, `ok` or `NO`, without the failures (which
    /// [`Report::failures`] lists).
    pub fn summary(&self) -> String {
        let mut out = String::new();
        if self.unreadable.is_some() {
            out.push_str("NO   the file is a compose file\n");
        }
        for rule in &self.rules {
            let mark = if rule.failures.is_empty() { "ok" } else { "NO" };
            let _ = writeln!(out, "{mark:<4} {}", rule.about);
        }
        out
    }

    /// One line per rule, `ok` or `NO`, each failure under its rule.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if let Some(reason) = &self.unreadable {
            let _ = writeln!(out, "NO   the file is a compose file\n       - {reason}");
        }
        for rule in &self.rules {
            let mark = if rule.failures.is_empty() { "ok" } else { "NO" };
            let _ = writeln!(out, "{mark:<4} {}", rule.about);
            for failure in &rule.failures {
                let _ = writeln!(out, "       - {failure}");
            }
        }
        out
    }
}

/// Checks the compose file `text` (named `file` in messages) against [`RULES`].
pub fn check(text: &str, file: &str) -> Report {
    match Compose::parse(text) {
        Ok(compose) => Report {
            rules: RULES
                .iter()
                .map(|rule| RuleOutcome {
                    about: rule.about,
                    failures: (rule.check)(&compose),
                })
                .collect(),
            unreadable: None,
        },
        Err(reason) => Report {
            rules: Vec::new(),
            unreadable: Some(format!("{file}: {reason}")),
        },
    }
}

/// A parsed compose file: its YAML, with the few accessors the rules share.
#[derive(Debug)]
pub struct Compose {
    root: Value,
}

impl Compose {
    /// Reads `text` as YAML whose top level has a `services:` map.
    pub fn parse(text: &str) -> Result<Compose, String> {
        let root: Value =
            serde_norway::from_str(text).map_err(|err| format!("not valid YAML: {err}"))?;
        if !root.is_mapping() {
            return Err("the top level is not a map of keys (`services:`, `volumes:`, ...)".into());
        }
        if !root.get("services").is_some_and(Value::is_mapping) {
            return Err("there is no `services:` map at the top level".into());
        }
        Ok(Compose { root })
    }

    /// The service named `name`, if the file has it.
    fn service(&self, name: &str) -> Option<&Value> {
        self.root.get("services")?.get(name)
    }

    /// Every service's name, in file order.
    fn service_names(&self) -> Vec<String> {
        self.root
            .get("services")
            .and_then(Value::as_mapping)
            .map(|services| services.keys().filter_map(text).collect())
            .unwrap_or_default()
    }

    /// Whether a top-level `volumes:` entry declares `name`.
    fn declares_volume(&self, name: &str) -> bool {
        self.root
            .get("volumes")
            .and_then(Value::as_mapping)
            .is_some_and(|volumes| volumes.keys().any(|k| text(k).as_deref() == Some(name)))
    }
}

/// A scalar as text (strings, numbers, booleans), as compose reads them.
fn text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// A list of scalars as text (a single scalar is a list of one).
fn texts(value: Option<&Value>) -> Vec<String> {
    match value {
        Some(Value::Sequence(items)) => items.iter().filter_map(text).collect(),
        Some(other) => text(other).into_iter().collect(),
        None => Vec::new(),
    }
}

/// A service's environment variable, from the map or the `KEY=value` list form.
fn env_var(service: &Value, key: &str) -> Option<String> {
    match service.get("environment")? {
        Value::Mapping(map) => map
            .iter()
            .find(|(k, _)| text(k).as_deref() == Some(key))
            .and_then(|(_, v)| text(v)),
        Value::Sequence(items) => items.iter().filter_map(text).find_map(|item| {
            let (k, v) = item.split_once('=')?;
            (k == key).then(|| v.to_owned())
        }),
        _ => None,
    }
}

/// The image's name without registry and tag (`proxy-lab/whoami:local` ->
/// `whoami`), when it is one of the lab's images.
fn lab_image(service: &Value) -> Option<String> {
    let image = text(service.get("image")?)?;
    let rest = image.strip_prefix("proxy-lab/")?;
    Some(rest.split(':').next().unwrap_or(rest).to_owned())
}

/// `a:b:c` split at the colons that separate fields: not those inside
/// `${VAR:-default}` or an IPv6 address's `[...]`.
fn split_colons(text: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut depth, mut start) = (0usize, 0);
    for (i, c) in text.char_indices() {
        match c {
            '{' | '[' => depth += 1,
            '}' | ']' => depth = depth.saturating_sub(1),
            ':' if depth == 0 => {
                parts.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&text[start..]);
    parts
}

/// One `ports:` entry: what it says, and the container port it publishes.
struct Published {
    written: String,
    container_port: Option<u16>,
    host_ip: Option<String>,
}

fn published_ports(service: &Value) -> Vec<Published> {
    let Some(Value::Sequence(entries)) = service.get("ports") else {
        return Vec::new();
    };
    entries
        .iter()
        .map(|entry| match entry {
            Value::Mapping(_) => Published {
                written: format!(
                    "target {}",
                    entry.get("target").and_then(text).unwrap_or_default()
                ),
                container_port: entry
                    .get("target")
                    .and_then(text)
                    .and_then(|t| t.parse().ok()),
                host_ip: entry.get("host_ip").and_then(text),
            },
            other => {
                let written = text(other).unwrap_or_default();
                // [HOST_IP:][HOST_PORT:]CONTAINER_PORT[/PROTOCOL]
                let bare = written.split('/').next().unwrap_or_default();
                let parts = split_colons(bare);
                Published {
                    container_port: parts.last().and_then(|p| p.parse().ok()),
                    host_ip: (parts.len() == 3).then(|| parts[0].to_owned()),
                    written,
                }
            }
        })
        .collect()
}

/// One mount of `volumes:`: its source (None for an anonymous volume) and target.
struct Mount {
    source: Option<String>,
    target: String,
}

impl Mount {
    /// A named volume's name (a bind mount's source is a path).
    fn volume_name(&self) -> Option<&str> {
        let source = self.source.as_deref()?;
        let path = source.starts_with(['.', '/', '~']) || source.starts_with("${");
        (!path).then_some(source)
    }
}

fn mounts(service: &Value) -> Vec<Mount> {
    let Some(Value::Sequence(entries)) = service.get("volumes") else {
        return Vec::new();
    };
    entries
        .iter()
        .filter_map(|entry| match entry {
            Value::Mapping(_) => Some(Mount {
                source: entry.get("source").and_then(text),
                target: entry.get("target").and_then(text)?,
            }),
            other => {
                let written = text(other)?;
                let parts = split_colons(&written);
                match parts.as_slice() {
                    [target] => Some(Mount {
                        source: None,
                        target: (*target).to_owned(),
                    }),
                    [source, target, ..] => Some(Mount {
                        source: Some((*source).to_owned()),
                        target: (*target).to_owned(),
                    }),
                    [] => None,
                }
            }
        })
        .collect()
}

/// The networks a service is on (`default` when it names none).
fn networks(service: &Value) -> Vec<String> {
    match service.get("networks") {
        Some(Value::Mapping(map)) => map.keys().filter_map(text).collect(),
        Some(list @ Value::Sequence(_)) => texts(Some(list)),
        _ => vec!["default".to_owned()],
    }
}

// ---------------------------------------------------------------------------
// The rules

fn services_exist(compose: &Compose) -> Vec<String> {
    SERVICES
        .iter()
        .filter(|(name, _)| compose.service(name).is_none())
        .map(|(name, _)| {
            format!(
                "there is no service `{name}`: the stack needs proxy, frontend, tasks-api and whoami \
                 (services now: {})",
                compose.service_names().join(", ")
            )
        })
        .collect()
}

fn only_the_proxy_publishes(compose: &Compose) -> Vec<String> {
    let mut failures = Vec::new();
    for name in compose.service_names() {
        let Some(service) = compose.service(&name) else {
            continue;
        };
        let ports = published_ports(service);
        if name == "proxy" {
            if !ports.iter().any(|p| p.container_port == Some(8080)) {
                failures.push(
                    "the proxy publishes no port to its port 8080: the host cannot reach the stack; \
                     add `ports: [\"127.0.0.1:8080:8080\"]` to the proxy"
                        .to_owned(),
                );
            }
            for port in ports.iter().filter(|p| p.host_ip.is_none()) {
                let container = port
                    .container_port
                    .map_or_else(|| "8080".to_owned(), |p| p.to_string());
                failures.push(format!(
                    "the proxy publishes `{}` on every interface of the host, so anyone on your \
                     network reaches it: on your machine, publish on loopback only \
                     (`127.0.0.1:8080:{container}`)",
                    port.written
                ));
            }
            continue;
        }
        for port in ports {
            let mut failure = format!(
                "service `{name}` publishes port {}: only the proxy should be reachable from the host; \
                 remove its `ports:` (the proxy reaches it by name on the compose network)",
                port.container_port
                    .map_or_else(|| format!("`{}`", port.written), |p| p.to_string())
            );
            if name == "whoami" {
                failure.push_str(
                    "; besides, three replicas cannot all publish the same host port: the second \
                     would fail with `port is already allocated`",
                );
            }
            failures.push(failure);
        }
    }
    failures
}

fn services_listen_on_every_interface(compose: &Compose) -> Vec<String> {
    let mut failures = Vec::new();
    for (name, port) in SERVICES {
        let Some(listen) = compose.service(name).and_then(|s| env_var(s, "LISTEN")) else {
            continue; // the images listen on 0.0.0.0 by default
        };
        let host = listen.rsplit_once(':').map_or(listen.as_str(), |(h, _)| h);
        if matches!(host, "127.0.0.1" | "localhost" | "[::1]" | "::1") {
            failures.push(format!(
                "service `{name}` listens on {listen} (LISTEN): inside a container, {host} is that \
                 container alone, so the proxy's connections from its own container are refused (a 502); \
                 listen on every interface: `LISTEN: \"0.0.0.0:{port}\"`"
            ));
        }
    }
    failures
}

fn healthchecks(compose: &Compose) -> Vec<String> {
    let mut failures = Vec::new();
    for name in BACKENDS {
        let Some(service) = compose.service(name) else {
            continue;
        };
        let probe = format!("[\"CMD\", \"/usr/local/bin/{name}\", \"--probe\"]");
        let Some(check) = service.get("healthcheck") else {
            failures.push(format!(
                "service `{name}` has no healthcheck: Docker calls it healthy as soon as its process \
                 starts, before it listens (for tasks-api, before its migrations ran); add \
                 `healthcheck: {{ test: {probe}, interval: 2s }}`"
            ));
            continue;
        };
        let test = check.get("test");
        let words = texts(test);
        let disabled = check.get("disable").and_then(Value::as_bool) == Some(true)
            || words.first().map(String::as_str) == Some("NONE");
        if disabled || words.is_empty() {
            failures.push(format!(
                "service `{name}`'s healthcheck is empty or disabled: give it `test: {probe}`"
            ));
            continue;
        }
        let Some(image) = lab_image(service) else {
            continue; // another image: its own tools are unknown here
        };
        let shell = matches!(test, Some(Value::String(_)))
            || words.first().map(String::as_str) == Some("CMD-SHELL");
        let program = if shell { None } else { words.get(1).cloned() };
        let own_binary = format!("/usr/local/bin/{image}");
        if shell {
            failures.push(format!(
                "service `{name}`'s healthcheck runs through a shell (`CMD-SHELL` or a string), and \
                 the image proxy-lab/{image} has no shell (it holds the binary and nothing else); \
                 use the exec form `test: {probe}`"
            ));
        } else if program.as_deref() != Some(own_binary.as_str()) {
            let program = program.unwrap_or_default();
            failures.push(format!(
                "service `{name}`'s healthcheck runs `{program}`, which the image proxy-lab/{image} \
                 does not have (it holds {own_binary} and nothing else); the binary probes itself: \
                 `test: {probe}`"
            ));
        } else if !words.iter().any(|w| w == "--probe") {
            failures.push(format!(
                "service `{name}`'s healthcheck starts a second {image} instead of asking the running \
                 one: add `--probe` (`test: {probe}`)"
            ));
        }
    }
    failures
}

fn start_up_order(compose: &Compose) -> Vec<String> {
    let Some(proxy) = compose.service("proxy") else {
        return Vec::new();
    };
    let conditions: Vec<(String, Option<String>)> = match proxy.get("depends_on") {
        Some(Value::Mapping(map)) => map
            .iter()
            .filter_map(|(k, v)| Some((text(k)?, v.get("condition").and_then(text))))
            .collect(),
        Some(list @ Value::Sequence(_)) => {
            texts(Some(list)).into_iter().map(|n| (n, None)).collect()
        }
        _ => Vec::new(),
    };
    let mut failures = Vec::new();
    for name in BACKENDS {
        match conditions.iter().find(|(n, _)| n == name) {
            None => failures.push(format!(
                "the proxy does not depend on `{name}`: compose may start the proxy first, and its \
                 first requests to {name} fail; add `depends_on: {{ {name}: {{ condition: service_healthy }} }}`"
            )),
            Some((_, condition)) if condition.as_deref() != Some("service_healthy") => {
                let now = condition.as_deref().map_or_else(
                    || "no condition, which only waits for the container to start".to_owned(),
                    |c| format!("`condition: {c}`"),
                );
                failures.push(format!(
                    "the proxy depends on `{name}` with {now}: the proxy may start before {name} \
                     answers{}; use `condition: service_healthy`",
                    if name == "tasks-api" {
                        " (while tasks-api still runs its migrations)"
                    } else {
                        ""
                    }
                ));
            }
            Some(_) => {}
        }
    }
    failures
}

fn database_on_a_volume(compose: &Compose) -> Vec<String> {
    let Some(api) = compose.service("tasks-api") else {
        return Vec::new();
    };
    let db = env_var(api, "DB_FILE_PATH").unwrap_or_else(|| DEFAULT_DB_FILE.to_owned());
    let folder = Path::new(&db)
        .parent()
        .map_or_else(|| "/".to_owned(), |p| p.display().to_string());
    let all = mounts(api);
    let holding: Vec<&Mount> = all
        .iter()
        .filter(|m| Path::new(&folder).starts_with(&m.target) && m.target != "/")
        .collect();
    let Some(mount) = holding.last() else {
        return vec![format!(
            "service `tasks-api` keeps its database ({db}) in the container's writable layer: it is \
             lost when the container is recreated (`docker-compose down`, a new image); mount a \
             named volume on {folder} (`volumes: [\"tasks-data:{folder}\"]` in the service, and \
             `tasks-data: {{}}` under the top-level `volumes:`)"
        )];
    };
    match (mount.source.as_deref(), mount.volume_name()) {
        (None, _) => vec![format!(
            "service `tasks-api` mounts an anonymous volume on {}: it has no name to find it by, and \
             `docker-compose down` leaves it behind unnamed; name it (`tasks-data:{}`) and declare it \
             under the top-level `volumes:`",
            mount.target, mount.target
        )],
        (Some(_), Some(volume)) if !compose.declares_volume(volume) => vec![format!(
            "service `tasks-api` mounts the named volume `{volume}`, which the top-level `volumes:` \
             does not declare (compose refuses the file); add `volumes: {{ {volume}: {{}} }}` at the top level"
        )],
        _ => Vec::new(),
    }
}

fn whoami_replicas(compose: &Compose) -> Vec<String> {
    let Some(whoami) = compose.service("whoami") else {
        return Vec::new();
    };
    let mut failures = Vec::new();
    if let Some(name) = whoami.get("container_name").and_then(text) {
        failures.push(format!(
            "service `whoami` sets `container_name: {name}`: only one container can have that name, \
             so compose cannot run replicas of it; remove `container_name` (the replicas are found \
             by the service name `whoami`)"
        ));
    }
    if let Some(name) = whoami.get("hostname").and_then(text) {
        failures.push(format!(
            "service `whoami` sets `hostname: {name}`: every replica would answer with the same \
             name, and you could not tell them apart (the tutorial's PID problem again); remove it, \
             each container's hostname is then its own id"
        ));
    }
    let scale = whoami.get("scale").and_then(Value::as_u64).or_else(|| {
        whoami
            .get("deploy")
            .and_then(|d| d.get("replicas"))
            .and_then(Value::as_u64)
    });
    match scale {
        Some(WHOAMI_REPLICAS) => {}
        Some(n) => failures.push(format!(
            "service `whoami` runs {n} replica(s): the chapter's stack runs {WHOAMI_REPLICAS} (`scale: {WHOAMI_REPLICAS}`)"
        )),
        None => failures.push(format!(
            "service `whoami` runs one container: add `scale: {WHOAMI_REPLICAS}` (what \
             `docker-compose up --scale whoami={WHOAMI_REPLICAS}` does, written in the file)"
        )),
    }
    failures
}

fn proxy_config_mounted(compose: &Compose) -> Vec<String> {
    let Some(proxy) = compose.service("proxy") else {
        return Vec::new();
    };
    let command = texts(proxy.get("command"));
    let config = command
        .iter()
        .position(|w| w == "--config")
        .and_then(|i| command.get(i + 1))
        .cloned()
        .unwrap_or_else(|| DEFAULT_PROXY_CONFIG.to_owned());
    let mounted = mounts(proxy)
        .iter()
        .any(|m| Path::new(&config).starts_with(&m.target) && m.target != "/");
    if mounted {
        Vec::new()
    } else {
        vec![format!(
            "the proxy reads {config}, and nothing is mounted there: the container has no config \
             and exits; mount yours read-only (`volumes: [\"./proxy.toml:{config}:ro\"]`)"
        )]
    }
}

fn shared_networks(compose: &Compose) -> Vec<String> {
    let Some(proxy) = compose.service("proxy") else {
        return Vec::new();
    };
    let proxy_networks = networks(proxy);
    BACKENDS
        .iter()
        .filter_map(|name| {
            let service = compose.service(name)?;
            let theirs = networks(service);
            (!theirs.iter().any(|n| proxy_networks.contains(n))).then(|| {
                format!(
                    "the proxy ({}) and `{name}` ({}) share no network: the proxy cannot resolve or \
                     reach `{name}`; put both on one network",
                    proxy_networks.join(", "),
                    theirs.join(", ")
                )
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = include_str!("../../compose/production/docker-compose.yml");

    /// The production file with `from` replaced by `to` (which must be there).
    fn edited(from: &str, to: &str) -> String {
        assert!(GOOD.contains(from), "the production file has no {from:?}");
        GOOD.replace(from, to)
    }

    fn failures(text: &str) -> Vec<String> {
        check(text, "test.yml").failures()
    }

    #[test]
    fn the_production_stack_keeps_every_rule() {
        let report = check(GOOD, "compose/production/docker-compose.yml");
        assert_eq!(
            report.failures(),
            Vec::<String>::new(),
            "{}",
            report.render()
        );
        assert_eq!(report.rules.len(), RULES.len());
    }

    #[test]
    fn the_production_proxy_config_is_valid_and_names_services_not_localhost() {
        let text = include_str!("../../compose/production/proxy.toml");
        let config = proxy::Config::parse(text, "compose/production/proxy.toml")
            .unwrap_or_else(|errors| panic!("{errors}"));
        for (name, port) in SERVICES.iter().skip(1) {
            let upstream = config
                .upstreams
                .iter()
                .find(|u| u.name == *name)
                .unwrap_or_else(|| panic!("no upstream {name}"));
            let servers: Vec<&str> = upstream
                .servers
                .iter()
                .map(|s| s.address.as_str())
                .collect();
            assert_eq!(servers, [format!("{name}:{port}")]);
        }
    }

    #[test]
    fn a_file_that_is_not_yaml_or_has_no_services_is_named_in_the_failure() {
        let f = failures("services: [unclosed");
        assert!(f[0].starts_with("test.yml: not valid YAML"), "{f:?}");
        let f = failures("volumes: {}\n");
        assert!(f[0].contains("no `services:`"), "{f:?}");
    }

    #[test]
    fn a_published_backend_port_is_named_with_its_service() {
        let text = edited(
            "    image: proxy-lab/whoami:${LAB_TAG:-local}\n",
            "    image: proxy-lab/whoami:${LAB_TAG:-local}\n    ports: [\"5000:5000\"]\n",
        );
        let f = failures(&text);
        assert_eq!(f.len(), 1, "{f:?}");
        assert!(
            f[0].starts_with("service `whoami` publishes port 5000: only the proxy"),
            "{f:?}"
        );
        let long = edited(
            "    image: proxy-lab/frontend:${LAB_TAG:-local}\n",
            "    image: proxy-lab/frontend:${LAB_TAG:-local}\n    ports:\n      - target: 3000\n        published: 3000\n",
        );
        assert!(failures(&long)[0].contains("`frontend` publishes port 3000"));
    }

    #[test]
    fn depends_on_as_a_list_waits_for_no_health() {
        let text = edited(
            "    depends_on:\n      frontend:\n        condition: service_healthy\n",
            "    depends_on:\n      frontend:\n        condition: service_started\n",
        );
        let f = failures(&text);
        assert_eq!(f.len(), 1, "{f:?}");
        assert!(f[0].contains("`condition: service_started`"), "{f:?}");
    }

    #[test]
    fn colons_inside_variables_and_ipv6_addresses_do_not_split() {
        assert_eq!(
            split_colons("127.0.0.1:${PROXY_PORT:-8080}:8080"),
            ["127.0.0.1", "${PROXY_PORT:-8080}", "8080"]
        );
        assert_eq!(split_colons("[::1]:80:8080"), ["[::1]", "80", "8080"]);
        assert_eq!(
            split_colons("tasks-data:/data:rw"),
            ["tasks-data", "/data", "rw"]
        );
        assert_eq!(split_colons("8080"), ["8080"]);
        let open = edited("127.0.0.1:${PROXY_PORT:-8080}:8080", "8080:8080");
        let f = failures(&open);
        assert_eq!(f.len(), 1, "{f:?}");
        assert!(f[0].contains("`8080:8080` on every interface"), "{f:?}");
    }

    #[test]
    fn environment_lists_and_maps_are_both_read() {
        let service: Value = serde_norway::from_str(
            "environment:\n  - LISTEN=127.0.0.1:8000\n  - DB_FILE_PATH=/srv/db/t.db\n",
        )
        .expect("yaml");
        assert_eq!(
            env_var(&service, "LISTEN").as_deref(),
            Some("127.0.0.1:8000")
        );
        let service: Value =
            serde_norway::from_str("environment: { LISTEN: \"0.0.0.0:1\" }").expect("yaml");
        assert_eq!(env_var(&service, "LISTEN").as_deref(), Some("0.0.0.0:1"));
        assert_eq!(env_var(&service, "DB_FILE_PATH"), None);
    }

    #[test]
    fn the_database_folder_follows_db_file_path_and_a_bind_mount_also_persists() {
        let moved = edited(
            "DB_FILE_PATH: /data/tasks.db",
            "DB_FILE_PATH: /srv/tasks.db",
        );
        let f = failures(&moved);
        assert!(
            f.iter()
                .any(|f| f.contains("(/srv/tasks.db) in the container's writable layer")),
            "{f:?}"
        );
        let bind = edited("- tasks-data:/data", "- ./data:/data");
        assert_eq!(failures(&bind), Vec::<String>::new());
        let undeclared = edited("  tasks-data: {}\n", "");
        assert!(failures(&undeclared)[0].contains("does not declare"));
    }
}
