//! nginx as a child process, for side-by-side runs: the parity tests
//! (`lab/tests/nginx_parity.rs`) and `lab bench`.
//!
//! nginx runs in the foreground from a temporary folder (`-p DIR`) holding
//! its config, pid file, logs and temp folders, on a loopback port picked
//! free just before, and is stopped (`nginx -s stop`, then a kill) when the
//! [`Nginx`] is dropped. It is found as `$NGINX_BIN`, else `nginx` on `PATH`,
//! else `/usr/sbin/nginx` (Debian: `apt-get install nginx`).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tokio::net::TcpStream;

/// The nginx binary: `$NGINX_BIN`, else `nginx` on `PATH`, else `/usr/sbin/nginx`.
pub fn find_nginx() -> Result<PathBuf, String> {
    find_program("nginx", "NGINX_BIN")
}

/// A reference server's binary `name` (as Debian installs it): the file
/// `$env_var` names, else `name` on `PATH`, else `/usr/sbin/NAME`; the error
/// says how to install it.
pub(crate) fn find_program(name: &str, env_var: &str) -> Result<PathBuf, String> {
    if let Some(bin) = std::env::var_os(env_var) {
        let bin = PathBuf::from(bin);
        return if bin.is_file() {
            Ok(bin)
        } else {
            Err(format!("{env_var}={} is not a file", bin.display()))
        };
    }
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join(name))
        .chain([Path::new("/usr/sbin").join(name)])
        .find(|bin| bin.is_file())
        .ok_or_else(|| {
            format!(
                "{name} is not installed (apt-get install {name}), neither on PATH nor at /usr/sbin/{name}"
            )
        })
}

/// Whether this process runs as root (then nginx's workers would switch to
/// an unprivileged user that cannot read our temporary folder).
fn running_as_root() -> bool {
    use std::os::unix::fs::MetadataExt as _;
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// A port nothing listens on now: bound, read and released.
fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// What nginx is asked to do: proxy everything to `upstream`.
#[derive(Debug, Clone, Default)]
pub struct NginxSetup {
    /// Directives in the `http {}` block (zones, ...).
    pub http: String,
    /// Directives in the `server {}` block; `{dir}` is nginx's folder.
    pub server: String,
    /// Files written into nginx's folder: (name, contents).
    pub files: Vec<(String, String)>,
    /// `worker_processes`.
    pub workers: u32,
    /// Idle keep-alive connections kept to the upstream (`keepalive N`; 0: none,
    /// nginx's default of a new connection per request).
    pub upstream_keepalive: u32,
    /// `worker_connections` (0: 4096). Each client connection and each
    /// upstream connection counts; the worker may open twice as many files.
    pub worker_connections: u32,
}

/// nginx running in the foreground; stopped when dropped.
#[derive(Debug)]
pub struct Nginx {
    /// Where it listens.
    pub addr: SocketAddr,
    bin: PathBuf,
    conf: PathBuf,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

/// How a start attempt ended.
#[derive(Debug)]
enum Started {
    Ready,
    Exited(String),
    TimedOut(String),
}

impl Nginx {
    /// Starts nginx `bin` with `setup` in front of `upstream`, on a free
    /// loopback port, and waits until it accepts connections.
    pub async fn start(
        bin: &Path,
        setup: &NginxSetup,
        upstream: SocketAddr,
    ) -> Result<Nginx, String> {
        // The free port may be taken again before nginx binds it; then nginx
        // says so and exits, and another port is tried.
        for attempt in 1..=3 {
            let mut nginx = Nginx::spawn(bin, setup, upstream)?;
            match nginx.wait_until_ready().await {
                Started::Ready => return Ok(nginx),
                Started::Exited(log) if attempt < 3 && log.contains("Address already in use") => {
                    continue;
                }
                Started::Exited(log) => {
                    return Err(format!("nginx exited before accepting connections:\n{log}"));
                }
                Started::TimedOut(log) => {
                    return Err(format!(
                        "nginx did not accept connections within 15 s:\n{log}"
                    ));
                }
            }
        }
        Err("no free port for nginx after 3 tries".into())
    }

    /// The process id of nginx's master (its workers are its children).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    fn spawn(bin: &Path, setup: &NginxSetup, upstream: SocketAddr) -> Result<Nginx, String> {
        let failed = |what: &str, e: std::io::Error| format!("{what}: {e}");
        let dir = tempfile::Builder::new()
            .prefix("proxy-lab-nginx-")
            .tempdir()
            .map_err(|e| failed("a temporary folder for nginx", e))?;
        let path = dir
            .path()
            .to_str()
            .ok_or("the temporary folder's path is not UTF-8")?
            .to_owned();
        let addr = SocketAddr::from((
            [127, 0, 0, 1],
            free_port().map_err(|e| failed("a free port", e))?,
        ));
        for (name, contents) in &setup.files {
            std::fs::write(dir.path().join(name), contents)
                .map_err(|e| failed("write a file for nginx", e))?;
        }
        let keepalive = match setup.upstream_keepalive {
            0 => String::new(),
            n => format!("keepalive {n};"),
        };
        // Keep-alive to the upstream needs HTTP/1.1 and no `Connection: close`.
        let proxy_http = if setup.upstream_keepalive > 0 {
            "proxy_http_version 1.1;\n            proxy_set_header Connection \"\";"
        } else {
            ""
        };
        let connections = match setup.worker_connections {
            0 => 4096,
            n => n,
        };
        let user = if running_as_root() { "user root;" } else { "" };
        let conf_text = format!(
            r#"
{user}
worker_processes {workers};
worker_rlimit_nofile {files};
pid "{path}/nginx.pid";
lock_file "{path}/nginx.lock";
error_log "{path}/error.log" info;

events {{
    worker_connections {connections};
}}

http {{
    access_log "{path}/access.log";
    client_body_temp_path "{path}/client_body_temp";
    proxy_temp_path "{path}/proxy_temp";
    fastcgi_temp_path "{path}/fastcgi_temp";
    uwsgi_temp_path "{path}/uwsgi_temp";
    scgi_temp_path "{path}/scgi_temp";

    {http}

    upstream app {{
        server {upstream};
        {keepalive}
    }}

    server {{
        listen {addr};
        {server}

        location / {{
            proxy_pass http://app;
            {proxy_http}
        }}
    }}
}}
"#,
            http = setup.http,
            server = setup.server.replace("{dir}", &path),
            workers = setup.workers.max(1),
            files = 2 * connections + 64,
        );
        let conf = dir.path().join("nginx.conf");
        std::fs::write(&conf, conf_text).map_err(|e| failed("write nginx.conf", e))?;
        let stderr = std::fs::File::create(dir.path().join("stderr.log"))
            .map_err(|e| failed("nginx's stderr", e))?;
        let child = Command::new(bin)
            .args(Nginx::args(dir.path(), &conf))
            .args(["-g", "daemon off;"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .map_err(|e| failed(&format!("start {}", bin.display()), e))?;
        Ok(Nginx {
            addr,
            bin: bin.to_owned(),
            conf,
            dir,
            child: Some(child),
        })
    }

    /// `-p DIR -e DIR/error.log -c CONF`: nothing outside the folder.
    fn args(dir: &Path, conf: &Path) -> Vec<std::ffi::OsString> {
        vec![
            "-p".into(),
            dir.into(),
            "-e".into(),
            dir.join("error.log").into(),
            "-c".into(),
            conf.into(),
        ]
    }

    /// Ready once nginx wrote its pid file (it has bound the port by then)
    /// and accepts a connection.
    async fn wait_until_ready(&mut self) -> Started {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                self.child = None;
                return Started::Exited(format!("{status}\n{}", self.logs()));
            }
            if self.dir.path().join("nginx.pid").exists()
                && TcpStream::connect(self.addr).await.is_ok()
            {
                return Started::Ready;
            }
            if Instant::now() > deadline {
                return Started::TimedOut(self.logs());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// nginx's stderr and error log, and the config it was given.
    fn logs(&self) -> String {
        let read = |name: &str| std::fs::read_to_string(self.dir.path().join(name));
        format!(
            "--- stderr\n{}\n--- error.log\n{}\n--- nginx.conf\n{}",
            read("stderr.log").unwrap_or_default(),
            read("error.log").unwrap_or_default(),
            std::fs::read_to_string(&self.conf).unwrap_or_default()
        )
    }
}

impl Drop for Nginx {
    /// `nginx -s stop` (the master stops its workers too), then a kill if
    /// it is still running after 5 s.
    fn drop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if !matches!(child.try_wait(), Ok(None)) {
            return;
        }
        let _ = Command::new(&self.bin)
            .args(Nginx::args(self.dir.path(), &self.conf))
            .args(["-s", "stop"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if !matches!(child.try_wait(), Ok(None)) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}
