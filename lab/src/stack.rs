//! The whole stack in one process: the proxy in front of the sample services,
//! every one on its own loopback port.
//!
//! ```text
//!                       ┌──────────► frontend      (/)
//!  client ──► proxy ────┼──────────► tasks-api     (/api/, api.localhost)
//!                       └─ round ──► whoami-1, whoami-2, whoami-3  (/api/whoami)
//!                          robin
//!  client ──► proxy, layer 4 ([[stream]]) ──► whoami-l4  (bytes copied unread)
//! ```
//!
//! Services bind port 0, so the OS picks free ports and several stacks can run
//! side by side (tests do). The proxy's config is `lab/stack/proxy.toml` with
//! the chosen addresses filled in.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;

use backends::{frontend, tasks_api, whoami};
use proxy::{Config, ConfigErrors, ProxyServer};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// The proxy configuration template, with `{{name}}` placeholders.
pub const PROXY_CONFIG_TEMPLATE: &str = include_str!("../stack/proxy.toml");

/// The layer-4 part the in-process stack adds to [`PROXY_CONFIG_TEMPLATE`]:
/// the `[[stream]]` listeners of [`STREAM_LISTENERS`], in that order, in
/// front of `whoami-l4` (a whoami that reads PROXY protocol headers).
pub const LAYER4_CONFIG_TEMPLATE: &str = include_str!("../stack/layer4.toml");

/// The in-process stack's layer-4 listeners, in the order of
/// `lab/stack/layer4.toml`: the names scenarios send through (`via = "l4"`)
/// and transcripts print (`<proxy-l4>`).
pub const STREAM_LISTENERS: [&str; 4] =
    ["l4", "l4-proxy-protocol", "l4-passthrough", "l4-terminate"];

/// The whoami behind the layer-4 listeners: it reads a PROXY protocol header
/// when a connection starts with one.
pub const WHOAMI_L4: &str = "whoami-l4";

/// The whoami replicas, in the order the proxy's round-robin visits them.
pub const WHOAMI_REPLICAS: [&str; 3] = ["whoami-1", "whoami-2", "whoami-3"];

/// How to boot a [`Stack`].
#[derive(Debug, Clone)]
pub struct StackOptions {
    /// Where the proxy listens for plain HTTP; port 0 picks a free port.
    pub proxy_listen: SocketAddr,
    /// Where the proxy listens for HTTPS; port 0 picks a free port.
    pub proxy_listen_tls: SocketAddr,
    /// Where the proxy serves its metrics (`admin`, when the template has
    /// `{{admin}}`); port 0 picks a free port.
    pub proxy_admin: SocketAddr,
    /// The local CA that issues the HTTPS certificate; `None` makes one in the
    /// stack's data folder (a temporary one unless `data_dir` is set).
    pub ca_dir: Option<PathBuf>,
    /// Where tasks-api keeps its SQLite file; `None` uses a temporary folder
    /// that is removed with the stack.
    pub data_dir: Option<PathBuf>,
    /// The proxy configuration template to boot with, instead of
    /// `lab/stack/proxy.toml` (a course exercise boots the learner's file).
    pub proxy_config: Option<ConfigTemplate>,
}

/// A proxy configuration with `{{name}}` placeholders for the services'
/// addresses (`{{frontend}}`, `{{tasks-api}}`, `{{whoami-1}}`, ...,
/// `{{listen}}`, `{{listen-tls}}`, `{{ca-dir}}`, and `{{closed}}`: an address
/// where nothing listens, see [`ClosedPort`]), and the file it came from.
#[derive(Debug, Clone)]
pub struct ConfigTemplate {
    /// The template's text.
    pub text: String,
    /// The file it came from, named in errors.
    pub file: String,
}

impl Default for StackOptions {
    fn default() -> Self {
        StackOptions {
            proxy_listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            proxy_listen_tls: SocketAddr::from(([127, 0, 0, 1], 0)),
            proxy_admin: SocketAddr::from(([127, 0, 0, 1], 0)),
            ca_dir: None,
            data_dir: None,
            proxy_config: None,
        }
    }
}

/// Why the stack could not start or a service could not be stopped.
#[derive(Debug, thiserror::Error)]
pub enum StackError {
    /// A service could not bind its loopback port.
    #[error("cannot start {service}: {source}")]
    Bind {
        /// The service's name.
        service: String,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// The proxy could not start (most often: the port is taken).
    #[error("cannot start the proxy: {0}")]
    ProxyStart(#[from] proxy::server::StartError),
    /// tasks-api's database could not be opened or migrated.
    #[error("cannot start tasks-api: {0}")]
    Database(#[from] tasks_api::TasksError),
    /// The temporary data folder could not be made, or the CA's root read.
    #[error("cannot create or read the lab's data folder: {0}")]
    DataDir(std::io::Error),
    /// The rendered proxy config is invalid.
    #[error("the proxy config is invalid:\n{0}")]
    ProxyConfig(#[from] ConfigErrors),
    /// The proxy config template lacks something the stack needs.
    #[error("{file} must define {what}")]
    Template {
        /// The template's file.
        file: String,
        /// What it lacks.
        what: &'static str,
    },
    /// No service of that name runs in the stack.
    #[error("no service named `{0}` in the stack")]
    UnknownService(String),
}

/// A running service: its address and how to stop it.
#[derive(Debug)]
struct Service {
    name: String,
    addr: SocketAddr,
    /// Reads a PROXY protocol header in front of a connection (whoami-l4).
    reads_proxy_protocol: bool,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<std::io::Result<()>>>,
}

/// The proxy and the sample services, running in this process.
#[derive(Debug)]
pub struct Stack {
    /// Where the proxy listens for plain HTTP: every request of the lab goes here.
    pub proxy_addr: SocketAddr,
    /// Where the proxy listens for HTTPS.
    pub proxy_tls_addr: SocketAddr,
    /// Where the proxy serves `/metrics` and `/health` (its `admin`
    /// listener), when its configuration has one.
    pub admin_addr: Option<SocketAddr>,
    /// The local CA's root certificate (PEM): what an HTTPS client must trust.
    pub ca_root_pem: String,
    /// The local CA's folder.
    pub ca_dir: PathBuf,
    /// The proxy configuration, as it was rendered and loaded.
    pub proxy_config: String,
    /// The layer-4 listeners by name ([`STREAM_LISTENERS`]); none when the
    /// stack boots a configuration of its own (a course exercise).
    pub streams: Vec<(&'static str, SocketAddr)>,
    services: Vec<Service>,
    /// `{{closed}}`: a port that refuses every connection while the stack lives.
    closed: ClosedPort,
    /// tasks-api's database, for restarting it.
    db: tasks_api::Db,
    proxy_stop: Option<oneshot::Sender<()>>,
    proxy_task: Option<JoinHandle<()>>,
    /// Kept so the temporary database lives as long as the stack.
    _data_dir: Option<tempfile::TempDir>,
}

impl Stack {
    /// Boots every service on a free loopback port, then the proxy in front of them.
    pub async fn boot(options: StackOptions) -> Result<Stack, StackError> {
        let (data_path, temp_dir) = match options.data_dir {
            Some(dir) => (dir, None),
            None => {
                let temp = tempfile::tempdir().map_err(StackError::DataDir)?;
                (temp.path().to_path_buf(), Some(temp))
            }
        };
        let db = tasks_api::open(&data_path.join("tasks.db"))?;

        let mut services = vec![
            start_service("frontend", frontend::app()).await?,
            start_service("tasks-api", tasks_api::app(db.clone())).await?,
        ];
        for name in WHOAMI_REPLICAS {
            let identity = whoami::Identity::new(Some(name.to_owned()));
            services.push(start_service(name, whoami::app(identity)).await?);
        }
        let identity = whoami::Identity::new(Some(WHOAMI_L4.to_owned()));
        let any_port = SocketAddr::from(([127, 0, 0, 1], 0));
        services.push(start_service_at(WHOAMI_L4, any_port, whoami::app(identity), true).await?);

        let mut addresses: HashMap<&str, String> = services
            .iter()
            .map(|s| (s.name.as_str(), s.addr.to_string()))
            .collect();
        let closed = ClosedPort::reserve().map_err(|source| StackError::Bind {
            service: "the closed port ({{closed}})".to_owned(),
            source,
        })?;
        addresses.insert("closed", closed.addr().to_string());
        let ca_dir = options.ca_dir.unwrap_or_else(|| data_path.join("ca"));
        addresses.insert("listen", options.proxy_listen.to_string());
        addresses.insert("admin", options.proxy_admin.to_string());
        addresses.insert("ca-dir", ca_dir.display().to_string());
        for name in STREAM_LISTENERS {
            addresses.insert(name, "127.0.0.1:0".to_owned());
        }
        let with_layer4 = options.proxy_config.is_none();
        let template = options.proxy_config.unwrap_or_else(|| ConfigTemplate {
            text: format!("{PROXY_CONFIG_TEMPLATE}{LAYER4_CONFIG_TEMPLATE}"),
            file: "lab/stack/proxy.toml".to_owned(),
        });

        // The layer-4 passthrough names the HTTPS listener as an upstream, so
        // its port must be known before the proxy binds it: a free one is
        // picked first, and picked again if another program took it meanwhile.
        let mut tries = 0;
        let (server, proxy_config) = loop {
            tries += 1;
            let tls_listen = match options.proxy_listen_tls.port() {
                0 => free_port(options.proxy_listen_tls).map_err(|source| StackError::Bind {
                    service: "the proxy's HTTPS listener".to_owned(),
                    source,
                })?,
                _ => options.proxy_listen_tls,
            };
            addresses.insert("listen-tls", tls_listen.to_string());
            addresses.insert("https-listener", tls_listen.to_string());
            let proxy_config = render_template(&template.text, &addresses);
            let config = Config::parse(&proxy_config, &template.file)?;
            match ProxyServer::bind(config).await {
                Ok(server) => break (server, proxy_config),
                Err(_) if tries < 3 && options.proxy_listen_tls.port() == 0 => continue,
                Err(err) => return Err(err.into()),
            }
        };
        let (proxy_addr, proxy_tls_addr) = match server.local_addrs()[..] {
            [plain, tls, ..] => (plain, tls),
            _ => {
                return Err(StackError::Template {
                    file: template.file,
                    what: "two [[listen]] addresses (plain HTTP at {{listen}}, HTTPS at {{listen-tls}})",
                });
            }
        };
        let admin_addr = server.admin_addr();
        let streams = match server.stream_addrs()[..] {
            _ if !with_layer4 => Vec::new(),
            ref addrs if addrs.len() == STREAM_LISTENERS.len() => STREAM_LISTENERS
                .into_iter()
                .zip(addrs.iter().copied())
                .collect(),
            _ => {
                return Err(StackError::Template {
                    file: template.file,
                    what: "the [[stream]] listeners of lab/stack/layer4.toml, in order",
                });
            }
        };
        let ca_root_pem = std::fs::read_to_string(ca_dir.join(proxy::local_ca::ROOT_CERT_FILE))
            .map_err(StackError::DataDir)?;
        let (proxy_stop, stopped) = oneshot::channel::<()>();
        let proxy_task = tokio::spawn(server.run(async {
            let _ = stopped.await;
        }));

        Ok(Stack {
            proxy_addr,
            proxy_tls_addr,
            admin_addr,
            ca_root_pem,
            ca_dir,
            proxy_config,
            streams,
            services,
            closed,
            db,
            proxy_stop: Some(proxy_stop),
            proxy_task: Some(proxy_task),
            _data_dir: temp_dir,
        })
    }

    /// The proxy configuration for a second proxy in front of the same
    /// services (`lab soak` runs one as a process): as loaded, but with
    /// every listener on a free port again, the HTTPS one too (the layer-4
    /// passthrough had to know its port in advance).
    pub fn proxy_config_on_free_ports(&self) -> String {
        let mut text = self.proxy_config.clone();
        for bound in [self.proxy_addr, self.proxy_tls_addr]
            .into_iter()
            .chain(self.admin_addr)
        {
            text = text.replace(&format!("addr = \"{bound}\""), "addr = \"127.0.0.1:0\"");
        }
        text
    }

    /// The address `{{closed}}` stands for: every connection to it is refused.
    pub fn closed_addr(&self) -> SocketAddr {
        self.closed.addr()
    }

    /// Every service's name and address (running or not), in boot order.
    pub fn services(&self) -> impl Iterator<Item = (&str, SocketAddr)> {
        self.services.iter().map(|s| (s.name.as_str(), s.addr))
    }

    /// The address of the service called `name`.
    pub fn service_addr(&self, name: &str) -> Option<SocketAddr> {
        self.services
            .iter()
            .find(|s| s.name == name)
            .map(|s| s.addr)
    }

    /// Stops one service and waits until its port is closed, as if its
    /// container had been stopped. The proxy is not told: it finds out.
    pub async fn stop_service(&mut self, name: &str) -> Result<(), StackError> {
        let service = self
            .services
            .iter_mut()
            .find(|s| s.name == name)
            .ok_or_else(|| StackError::UnknownService(name.to_owned()))?;
        if let Some(stop) = service.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = service.task.take() {
            let _ = task.await;
        }
        Ok(())
    }

    /// Starts a stopped service again, on the same address, as if its
    /// container had been restarted. Starting a running service does nothing.
    pub async fn start_service(&mut self, name: &str) -> Result<(), StackError> {
        let service = self
            .services
            .iter_mut()
            .find(|s| s.name == name)
            .ok_or_else(|| StackError::UnknownService(name.to_owned()))?;
        if service.task.is_some() {
            return Ok(());
        }
        let app = match name {
            "frontend" => frontend::app(),
            "tasks-api" => tasks_api::app(self.db.clone()),
            whoami_name => whoami::app(whoami::Identity::new(Some(whoami_name.to_owned()))),
        };
        let restarted =
            start_service_at(name, service.addr, app, service.reads_proxy_protocol).await?;
        *service = restarted;
        Ok(())
    }

    /// Stops the proxy (gracefully) and then every service.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.proxy_stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.proxy_task.take() {
            let _ = task.await;
        }
        let names: Vec<String> = self.services.iter().map(|s| s.name.clone()).collect();
        for name in names {
            let _ = self.stop_service(&name).await;
        }
    }
}

/// What a scenario needs of a running stack, in this process ([`Stack`]) or
/// in Docker (`docker::DockerStack`): where the proxy listens, the CA to
/// trust, which addresses to print as service names, and stopping and
/// starting a service.
pub trait LabStack {
    /// Where the proxy listens for plain HTTP, from this machine.
    fn proxy_addr(&self) -> SocketAddr;
    /// Where the proxy listens for HTTPS, from this machine.
    fn proxy_tls_addr(&self) -> SocketAddr;
    /// The local CA's root certificate (PEM).
    fn ca_root_pem(&self) -> &str;
    /// `(address, name)` pairs a transcript prints as `<name>`: every
    /// address a service or the proxy may appear under.
    fn transcript_names(&self) -> Vec<(String, String)>;
    /// The layer-4 listeners by name, in the order of [`STREAM_LISTENERS`];
    /// none where the stack has none (a course exercise's stack has only
    /// the listeners of the learner's file).
    fn streams(&self) -> &[(&'static str, SocketAddr)] {
        &[]
    }
    /// The address of the layer-4 listener called `name`, if the stack has it.
    fn stream_addr(&self, name: &str) -> Option<SocketAddr> {
        self.streams()
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, addr)| *addr)
    }
    /// The address the proxy's layer-4 listener `via` accepted the latest
    /// connection from, when it is not the client's own end of it: `None`
    /// in-process, where nothing stands between the client and the proxy.
    /// A scenario asks once for each connection it makes `via` a listener,
    /// after the connection is over, and names the answer `<client>`.
    fn client_seen_by_proxy(
        &self,
        via: &str,
    ) -> impl Future<Output = Result<Option<SocketAddr>, LabStackError>> {
        let _ = via;
        async { Ok(None) }
    }
    /// Stops a service; the proxy is not told.
    fn stop_service(&mut self, name: &str) -> impl Future<Output = Result<(), LabStackError>>;
    /// Starts a stopped service again.
    fn start_service(&mut self, name: &str) -> impl Future<Output = Result<(), LabStackError>>;
    /// Stops everything and cleans up.
    fn shutdown(self) -> impl Future<Output = ()>;
}

/// A stack could not stop or start a service.
pub type LabStackError = Box<dyn std::error::Error + Send + Sync>;

/// The names a transcript uses for the proxy's own addresses.
pub fn proxy_names(proxy_addr: SocketAddr, proxy_tls_addr: SocketAddr) -> Vec<(String, String)> {
    vec![
        (proxy_addr.to_string(), "<proxy>".into()),
        (proxy_tls_addr.to_string(), "<proxy-https>".into()),
        // The HTTPS port as it appears in redirects: `https://name:PORT/`.
        (
            format!(":{}/", proxy_tls_addr.port()),
            ":<https-port>/".into(),
        ),
    ]
}

impl LabStack for Stack {
    fn proxy_addr(&self) -> SocketAddr {
        self.proxy_addr
    }

    fn proxy_tls_addr(&self) -> SocketAddr {
        self.proxy_tls_addr
    }

    fn ca_root_pem(&self) -> &str {
        &self.ca_root_pem
    }

    fn transcript_names(&self) -> Vec<(String, String)> {
        let mut names: Vec<(String, String)> = self
            .services()
            .map(|(name, addr)| (addr.to_string(), format!("<{name}>")))
            .collect();
        names.push((self.closed.addr().to_string(), "<closed>".into()));
        names.extend(
            self.streams
                .iter()
                .map(|(name, addr)| (addr.to_string(), format!("<proxy-{name}>"))),
        );
        names.extend(proxy_names(self.proxy_addr, self.proxy_tls_addr));
        names
    }

    fn streams(&self) -> &[(&'static str, SocketAddr)] {
        &self.streams
    }

    async fn stop_service(&mut self, name: &str) -> Result<(), LabStackError> {
        Ok(Stack::stop_service(self, name).await?)
    }

    async fn start_service(&mut self, name: &str) -> Result<(), LabStackError> {
        Ok(Stack::start_service(self, name).await?)
    }

    async fn shutdown(self) {
        Stack::shutdown(self).await;
    }
}

/// A loopback port where nothing listens, for `{{closed}}`: the address a
/// course exercise gives a pool by mistake, so that the proxy meets a
/// refused connection (a 502 with `Proxy-Status: ...; error=connection_refused`),
/// as it would with a typo in a port or a service that is down.
///
/// Picking a free port and letting it go would not do: another program may
/// take it in between, and then the "closed" port answers. Instead the port
/// stays *bound* by a socket that never listens. The OS refuses (RST) every
/// connection to a port with no listening socket, and nothing else can bind
/// it while this socket holds it (it does not set `SO_REUSEADDR`), so the
/// refusal is certain for as long as the stack lives.
#[derive(Debug)]
pub struct ClosedPort {
    /// Held, never read: while it lives, the port is bound and closed.
    _socket: tokio::net::TcpSocket,
    addr: SocketAddr,
}

impl ClosedPort {
    /// Binds a free loopback port and never listens on it.
    pub fn reserve() -> std::io::Result<ClosedPort> {
        let socket = tokio::net::TcpSocket::new_v4()?;
        socket.bind(SocketAddr::from(([127, 0, 0, 1], 0)))?;
        let addr = socket.local_addr()?;
        Ok(ClosedPort {
            _socket: socket,
            addr,
        })
    }

    /// Its address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

/// Replaces each `{{name}}` in `template` with its value.
pub fn render_template(template: &str, values: &HashMap<&str, String>) -> String {
    let mut out = template.to_owned();
    for (name, value) in values {
        out = out.replace(&format!("{{{{{name}}}}}"), value);
    }
    out
}

async fn start_service(name: &str, app: backends::Router) -> Result<Service, StackError> {
    start_service_at(name, SocketAddr::from(([127, 0, 0, 1], 0)), app, false).await
}

/// A free port at `addr`'s address, found by binding port 0 and letting it go.
fn free_port(addr: SocketAddr) -> std::io::Result<SocketAddr> {
    std::net::TcpListener::bind(addr)?.local_addr()
}

/// Starts `app` on `addr`; with `reads_proxy_protocol`, each connection may
/// start with a PROXY protocol header (whoami's `--proxy-protocol`).
async fn start_service_at(
    name: &str,
    addr: SocketAddr,
    app: backends::Router,
    reads_proxy_protocol: bool,
) -> Result<Service, StackError> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| StackError::Bind {
            service: name.to_owned(),
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| StackError::Bind {
        service: name.to_owned(),
        source,
    })?;
    let (stop, stopped) = oneshot::channel::<()>();
    let stopped = async {
        let _ = stopped.await;
    };
    let task = if reads_proxy_protocol {
        tokio::spawn(backends::serve_accepting_proxy_protocol(
            listener, app, stopped,
        ))
    } else {
        tokio::spawn(backends::serve(listener, app, stopped))
    };
    Ok(Service {
        name: name.to_owned(),
        addr,
        reads_proxy_protocol,
        stop: Some(stop),
        task: Some(task),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_template_renders_to_a_valid_config_with_no_placeholder_left() {
        let mut values: HashMap<&str, String> = HashMap::new();
        values.insert("ca-dir", "/tmp/lab-ca".into());
        for (i, name) in [
            "closed",
            "listen",
            "listen-tls",
            "https-listener",
            "frontend",
            "tasks-api",
            "whoami-1",
            "whoami-2",
            "whoami-3",
            WHOAMI_L4,
            "admin",
        ]
        .into_iter()
        .chain(STREAM_LISTENERS)
        .enumerate()
        {
            values.insert(name, format!("127.0.0.1:{}", 9000 + i));
        }
        let text = render_template(
            &format!("{PROXY_CONFIG_TEMPLATE}{LAYER4_CONFIG_TEMPLATE}"),
            &values,
        );
        assert!(!text.contains("{{"), "placeholder left:\n{text}");
        match Config::parse(&text, "lab/stack/proxy.toml") {
            // The lab's config is the one learners copy: no lint may fire on it.
            Ok(config) => {
                let warnings = proxy::lint::lint(&config, &text, "lab/stack/proxy.toml");
                assert!(
                    warnings.is_empty(),
                    "{}",
                    warnings.iter().map(ToString::to_string).collect::<String>()
                );
            }
            Err(errors) => panic!("{errors}"),
        }
    }

    #[tokio::test]
    async fn the_closed_port_refuses_every_connection_and_cannot_be_taken() {
        let closed = ClosedPort::reserve().expect("a free loopback port");
        assert!(closed.addr().ip().is_loopback());
        assert_ne!(closed.addr().port(), 0);
        for _ in 0..3 {
            let err = tokio::net::TcpStream::connect(closed.addr())
                .await
                .expect_err("nothing listens on the closed port");
            assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused, "{err}");
        }
        // A service that asks for this very port does not get it.
        assert!(TcpListener::bind(closed.addr()).await.is_err());
        assert_eq!(
            closed._socket.local_addr().expect("still bound"),
            closed.addr()
        );
    }
}
