//! The `proxy` command: run the proxy, or check a configuration file.
//!
//! ```text
//! proxy --config proxy.toml          # run (same as `proxy run --config ...`)
//! proxy check --config proxy.toml    # validate only, like `nginx -t`, and lint
//! proxy check --deny-warnings -c proxy.toml   # warnings fail the check too
//! proxy run --config proxy.toml --pid-file proxy.pid
//! proxy reload --pid-file proxy.pid  # re-read the config, like `nginx -s reload` (or: kill -HUP PID)
//! proxy cert init                    # make the local CA (once)
//! proxy cert issue app.localhost     # a certificate signed by it, like mkcert
//! proxy import-nginx nginx.conf      # an nginx config as TOML (stdout), warnings on stderr
//! ```

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use proxy::local_ca::{LocalCa, file_base};
use proxy::{Config, ProxyServer};

#[derive(Parser)]
#[command(version, about = "A reverse proxy for learning, configured in TOML")]
#[command(args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// The configuration file (runs the proxy).
    #[arg(long, short, value_name = "FILE")]
    config: Option<PathBuf>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the proxy.
    Run {
        /// The configuration file.
        #[arg(long, short, value_name = "FILE")]
        config: PathBuf,
        /// Write the process id here, for `proxy reload` (removed at exit).
        #[arg(long, value_name = "FILE")]
        pid_file: Option<PathBuf>,
    },
    /// Make a running proxy re-read its configuration file (sends it SIGHUP).
    /// An invalid file is refused and the old configuration keeps serving.
    Reload {
        /// The pid file the proxy was started with (`proxy run --pid-file`).
        #[arg(long, value_name = "FILE")]
        pid_file: PathBuf,
        /// Check this configuration first, and send nothing if it has errors.
        #[arg(long, short, value_name = "FILE")]
        config: Option<PathBuf>,
    },
    /// Check a configuration file and print every problem found: errors,
    /// then warnings (valid settings that are almost certainly mistakes).
    Check {
        /// The configuration file.
        #[arg(long, short, value_name = "FILE")]
        config: PathBuf,
        /// Fail (exit non-zero) on warnings too, not only on errors.
        #[arg(long)]
        deny_warnings: bool,
    },
    /// Translate an nginx configuration into this proxy's TOML (stdout), with
    /// a warning on stderr for everything that differs.
    ImportNginx {
        /// The nginx configuration file.
        #[arg(value_name = "FILE")]
        file: PathBuf,
        /// Write the TOML here instead of to standard output.
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
    /// The local certificate authority, for HTTPS on your machine.
    #[command(subcommand)]
    Cert(CertCommand),
    /// Read a password from standard input and print its bcrypt hash, for
    /// `basic_auth = { users = { NAME = "HASH" } }`.
    HashPassword {
        /// bcrypt cost: each step doubles the work of checking (and of guessing).
        #[arg(long, default_value_t = 12, value_parser = clap::value_parser!(u32).range(4..=31))]
        cost: u32,
    },
}

#[derive(Subcommand)]
enum CertCommand {
    /// Make the local root CA (or show the one that exists).
    Init {
        /// The CA's folder (default: $PROXY_LAB_CA_DIR, else ~/.local/share/proxy-lab/ca).
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
    /// Issue a certificate for host names and IP addresses, signed by the local CA.
    Issue {
        /// Host names (app.localhost, *.app.localhost) and IP addresses (127.0.0.1).
        #[arg(required = true, value_name = "NAME")]
        names: Vec<String>,
        /// The CA's folder (default as for `init`).
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
        /// Where to write NAME.pem and NAME-key.pem (default: the current folder).
        #[arg(long, value_name = "DIR", default_value = ".")]
        out: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match (cli.command, cli.config) {
        (
            Some(Command::Check {
                config,
                deny_warnings,
            }),
            _,
        ) => check(&config, deny_warnings),
        (Some(Command::Cert(command)), _) => cert(command),
        (Some(Command::HashPassword { cost }), _) => hash_password(cost),
        (Some(Command::Reload { pid_file, config }), _) => reload(&pid_file, config.as_deref()),
        (Some(Command::Run { config, pid_file }), _) => run(&config, pid_file.as_deref()),
        (None, Some(config)) => run(&config, None),
        (Some(Command::ImportNginx { file, out }), _) => import_nginx(&file, out.as_deref()),
        (None, None) => {
            eprintln!(
                "proxy: no configuration given\n  = help: proxy --config proxy.toml (see proxy/examples/)"
            );
            ExitCode::from(2)
        }
    }
}

fn load(path: &Path) -> Result<Config, ExitCode> {
    Config::from_file(path).map_err(|errors| {
        eprint!("{errors}");
        let n = errors.0.len();
        eprintln!(
            "proxy: {} has {n} error{}",
            path.display(),
            if n == 1 { "" } else { "s" }
        );
        ExitCode::FAILURE
    })
}

fn check(path: &Path, deny_warnings: bool) -> ExitCode {
    match load(path) {
        Ok(config) => {
            let warnings = proxy::lint::lint_file(&config, path);
            for (i, warning) in warnings.iter().enumerate() {
                if i > 0 {
                    eprintln!();
                }
                eprint!("{warning}");
            }
            let routes: usize = config.servers.iter().map(|s| s.routes.len()).sum();
            let n = warnings.len();
            let and_warnings = match n {
                0 => String::new(),
                1 => " (1 warning)".to_owned(),
                n => format!(" ({n} warnings)"),
            };
            println!(
                "proxy: {} is valid: {} listener(s), {} server(s), {} route(s), {} upstream(s){}{and_warnings}",
                path.display(),
                config.listeners.len(),
                config.servers.len(),
                routes,
                config.upstreams.len(),
                match config.streams.len() {
                    0 => String::new(),
                    n => format!(", {n} stream(s)"),
                }
            );
            if deny_warnings && n > 0 {
                eprintln!(
                    "proxy: {} has {n} warning{} (--deny-warnings)",
                    path.display(),
                    if n == 1 { "" } else { "s" }
                );
                return ExitCode::FAILURE;
            }
            ExitCode::SUCCESS
        }
        Err(code) => code,
    }
}

fn run(path: &Path, pid_file: Option<&Path>) -> ExitCode {
    let config = match load(path) {
        Ok(config) => config,
        Err(code) => return code,
    };
    let access_log = match proxy::logging::init(&config.access_log) {
        Ok(file) => file,
        Err(err) => {
            eprintln!("proxy: cannot set up the logs: {err}");
            return ExitCode::FAILURE;
        }
    };
    // Warnings do not stop the proxy: it runs the config as written.
    log_warnings(&config, path);

    let runtime = match proxy::build_runtime(config.workers) {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("proxy: cannot start the runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async {
        let server = match ProxyServer::bind(config).await {
            Ok(server) => server,
            Err(err) => {
                eprintln!("proxy: {err}");
                return ExitCode::FAILURE;
            }
        };
        for url in server.urls() {
            println!("proxy: listening on {url}");
        }
        for addr in server.stream_addrs() {
            println!("proxy: listening on tcp://{addr} (stream, layer 4)");
        }
        if let Some(pid_file) = pid_file
            && let Err(err) = std::fs::write(pid_file, format!("{}\n", std::process::id()))
        {
            eprintln!(
                "proxy: cannot write the pid file {}: {err}",
                pid_file.display()
            );
            return ExitCode::FAILURE;
        }
        tokio::spawn(reload_on_hangup(path.to_owned(), server.reload_handle()));
        if let Some(file) = access_log {
            tokio::spawn(reopen_on_usr1(file));
        }
        server.run(shutdown_signal()).await;
        if let Some(pid_file) = pid_file {
            let _ = std::fs::remove_file(pid_file);
        }
        ExitCode::SUCCESS
    })
}

/// Logs the lint warnings of a configuration about to serve (see `proxy check`).
fn log_warnings(config: &Config, path: &Path) {
    for warning in proxy::lint::lint_file(config, path) {
        match &warning.at {
            Some(at) => tracing::warn!(
                "config warning: {}:{}:{}: {} (help: {})",
                warning.file,
                at.line,
                at.column,
                warning.message,
                warning.help.as_deref().unwrap_or("")
            ),
            None => tracing::warn!("config warning: {}: {}", warning.file, warning.message),
        }
    }
}

/// On every SIGHUP, reads the configuration file again and swaps it in; an
/// invalid file is refused with its errors logged, and the old configuration
/// keeps serving (nginx does the same on `nginx -s reload`).
async fn reload_on_hangup(path: PathBuf, handle: proxy::server::ReloadHandle) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let Ok(mut hangups) = signal(SignalKind::hangup()) else {
            tracing::warn!("cannot listen for SIGHUP: reloading is off");
            return;
        };
        while hangups.recv().await.is_some() {
            tracing::info!("SIGHUP: reading {} again", path.display());
            let config = match Config::from_file(&path) {
                Ok(config) => config,
                Err(errors) => {
                    tracing::error!(
                        "reload refused: {} has {} error(s); the old configuration keeps serving\n{errors}",
                        path.display(),
                        errors.0.len()
                    );
                    continue;
                }
            };
            log_warnings(&config, &path);
            if let Err(err) = handle.reload(config).await {
                tracing::error!("reload refused: {err}; the old configuration keeps serving");
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = (path, handle);
    }
}

/// On every SIGUSR1, opens the access-log file again under its name (log
/// rotation: `logrotate` renamed it and asks for a new one).
async fn reopen_on_usr1(file: std::sync::Arc<proxy::logging::LogFile>) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let Ok(mut signals) = signal(SignalKind::user_defined1()) else {
            tracing::warn!("cannot listen for SIGUSR1: the access log will not be reopened");
            return;
        };
        while signals.recv().await.is_some() {
            match file.reopen() {
                Ok(()) => tracing::info!("SIGUSR1: reopened {}", file.path().display()),
                Err(err) => tracing::error!("SIGUSR1: {err}; lines go on to the old file"),
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = file;
    }
}

/// `proxy reload`: checks the new configuration if asked, then sends the
/// running proxy SIGHUP.
fn reload(pid_file: &Path, config: Option<&Path>) -> ExitCode {
    if let Some(config) = config
        && let Err(code) = load(config)
    {
        eprintln!("proxy: not reloading: fix the errors above first");
        return code;
    }
    let pid = match std::fs::read_to_string(pid_file) {
        Ok(text) => text.trim().parse::<i32>().ok(),
        Err(err) => {
            eprintln!(
                "proxy: cannot read {}: {err}\n  = help: start the proxy with `proxy run --config FILE --pid-file {}`",
                pid_file.display(),
                pid_file.display()
            );
            return ExitCode::FAILURE;
        }
    };
    let Some(pid) = pid.and_then(rustix::process::Pid::from_raw) else {
        eprintln!("proxy: {} does not hold a process id", pid_file.display());
        return ExitCode::FAILURE;
    };
    match rustix::process::kill_process(pid, rustix::process::Signal::HUP) {
        Ok(()) => {
            println!(
                "proxy: asked process {} to reload; its log says whether the new configuration was taken",
                pid.as_raw_nonzero()
            );
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!(
                "proxy: cannot signal process {}: {err} (is the proxy still running?)",
                pid.as_raw_nonzero()
            );
            ExitCode::FAILURE
        }
    }
}

fn cert(command: CertCommand) -> ExitCode {
    let result = match command {
        CertCommand::Init { dir } => ca_dir(dir).and_then(|dir| {
            let (ca, created) = LocalCa::open_or_create(&dir)?;
            let root = ca.root_cert_path();
            if created {
                println!("proxy: created a local CA in {}", dir.display());
            } else {
                println!("proxy: the local CA in {} already exists", dir.display());
            }
            println!("Trust it where you test:");
            println!(
                "  curl --cacert {} https://app.localhost:8443/",
                root.display()
            );
            println!(
                "  browsers: import {} as a trusted authority",
                root.display()
            );
            println!("  (Firefox: Settings > Certificates > Authorities > Import;");
            println!(
                "   Chrome/Chromium on Linux: chrome://certificate-manager > Custom > Import)"
            );
            println!(
                "Keep {} secret: it can sign for any site.",
                dir.join(proxy::local_ca::ROOT_KEY_FILE).display()
            );
            Ok(())
        }),
        CertCommand::Issue { names, dir, out } => ca_dir(dir).and_then(|dir| {
            let ca = LocalCa::open(&dir)?;
            let (cert, key) = ca.issue(&names)?.write(&out, &file_base(&names))?;
            println!("proxy: issued a certificate for {}", names.join(", "));
            println!("  certificate: {}", cert.display());
            println!("  key:         {} (mode 0600)", key.display());
            println!(
                "Use them in a server: tls = {{ cert = {:?}, key = {:?} }}",
                cert.display().to_string(),
                key.display().to_string()
            );
            Ok(())
        }),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("proxy: {err}");
            ExitCode::FAILURE
        }
    }
}

fn import_nginx(file: &Path, out: Option<&Path>) -> ExitCode {
    let text = match std::fs::read_to_string(file) {
        Ok(text) => text,
        Err(err) => {
            eprintln!("proxy: cannot read {}: {err}", file.display());
            return ExitCode::FAILURE;
        }
    };
    let name = file.display().to_string();
    let imported = match proxy::nginx::import(&text, &name) {
        Ok(imported) => imported,
        Err(err) => {
            eprintln!("{name}:{}: error: {}", err.line, err.message);
            eprintln!("proxy: {name} is not a valid nginx configuration; nothing was written");
            return ExitCode::FAILURE;
        }
    };
    for warning in &imported.warnings {
        eprintln!(
            "{}",
            proxy::nginx::Located {
                file: &name,
                warning
            }
        );
    }
    match out {
        None => print!("{}", imported.toml),
        Some(path) => {
            if let Err(err) = std::fs::write(path, &imported.toml) {
                eprintln!("proxy: cannot write {}: {err}", path.display());
                return ExitCode::FAILURE;
            }
            eprintln!(
                "proxy: wrote {}; check it with `proxy check --config {}`",
                path.display(),
                path.display()
            );
        }
    }
    ExitCode::SUCCESS
}

fn hash_password(cost: u32) -> ExitCode {
    if std::io::IsTerminal::is_terminal(&std::io::stdin()) {
        eprintln!("password (then Enter):");
    }
    let mut line = String::new();
    if let Err(err) = std::io::stdin().read_line(&mut line) {
        eprintln!("proxy: cannot read the password: {err}");
        return ExitCode::FAILURE;
    }
    let password = line.trim_end_matches(['\r', '\n']);
    if password.is_empty() {
        eprintln!(
            "proxy: the password is empty\n  = help: echo 'my password' | proxy hash-password"
        );
        return ExitCode::FAILURE;
    }
    match bcrypt::hash(password, cost) {
        Ok(hash) => {
            println!("{hash}");
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("proxy: cannot hash the password: {err}");
            ExitCode::FAILURE
        }
    }
}

fn ca_dir(dir: Option<PathBuf>) -> Result<PathBuf, proxy::local_ca::CaError> {
    match dir {
        Some(dir) => Ok(dir),
        None => LocalCa::default_dir(),
    }
}

/// Completes on Ctrl-C or SIGTERM (what `docker stop` sends).
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = terminate => {}
    }
}
