//! The `proxy` command: run the proxy, or check a configuration file.
//!
//! ```text
//! proxy --config proxy.toml          # run (same as `proxy run --config ...`)
//! proxy check --config proxy.toml    # validate only, like `nginx -t`
//! ```

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use proxy::{Config, ProxyServer};
use tracing_subscriber::EnvFilter;

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
    },
    /// Check a configuration file and print every problem found.
    Check {
        /// The configuration file.
        #[arg(long, short, value_name = "FILE")]
        config: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match (cli.command, cli.config) {
        (Some(Command::Check { config }), _) => check(&config),
        (Some(Command::Run { config }), _) | (None, Some(config)) => run(&config),
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

fn check(path: &Path) -> ExitCode {
    match load(path) {
        Ok(config) => {
            let routes: usize = config.servers.iter().map(|s| s.routes.len()).sum();
            println!(
                "proxy: {} is valid: {} listener(s), {} server(s), {} route(s), {} upstream(s)",
                path.display(),
                config.listeners.len(),
                config.servers.len(),
                routes,
                config.upstreams.len()
            );
            ExitCode::SUCCESS
        }
        Err(code) => code,
    }
}

fn run(path: &Path) -> ExitCode {
    let config = match load(path) {
        Ok(config) => config,
        Err(code) => return code,
    };
    // Logs go to stderr; stdout carries only the "listening on" lines.
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .init();

    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    if let Some(workers) = config.workers {
        runtime.worker_threads(workers);
    }
    let runtime = match runtime.enable_all().build() {
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
        for addr in server.local_addrs() {
            println!("proxy: listening on http://{addr}");
        }
        server.run(shutdown_signal()).await;
        ExitCode::SUCCESS
    })
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
