//! The `lab` command.
//!
//! ```text
//! lab up                 # boot the stack behind the proxy on localhost:8080, until Ctrl-C
//! lab up --port 0 --tls-port 0   # ... on any free ports
//! lab tour               # boot, run every guided stop, print the transcripts, exit
//! lab tour round-robin   # one stop
//! ```

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use lab::{Stack, StackOptions, Tour};

#[derive(Parser)]
#[command(
    version,
    about = "The reverse proxy lab: the proxy and its sample services, on your machine"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Boot the proxy and every sample service, print the URLs, run until Ctrl-C.
    Up {
        /// The proxy's plain-HTTP port on 127.0.0.1 (0 picks a free one).
        #[arg(long, default_value_t = 8080)]
        port: u16,
        /// The proxy's HTTPS port on 127.0.0.1 (0 picks a free one).
        #[arg(long, default_value_t = 8443)]
        tls_port: u16,
        /// Keep tasks-api's database in this folder (default: a temporary one).
        #[arg(long, value_name = "DIR")]
        data_dir: Option<PathBuf>,
        /// Print the proxy configuration the lab generated.
        #[arg(long)]
        print_config: bool,
    },
    /// Boot a fresh stack for each guided stop, run it and print its transcript.
    Tour {
        /// Stops to run (default: all): routing, host-routing, headers, round-robin, failover, https-redirect, rate-limit.
        names: Vec<String>,
    },
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Up {
            port,
            tls_port,
            data_dir,
            print_config,
        } => up(port, tls_port, data_dir, print_config).await,
        Command::Tour { names } => tour(&names).await,
    }
}

async fn up(port: u16, tls_port: u16, data_dir: Option<PathBuf>, print_config: bool) -> ExitCode {
    proxy::init_logging();
    let options = StackOptions {
        proxy_listen: SocketAddr::from(([127, 0, 0, 1], port)),
        proxy_listen_tls: SocketAddr::from(([127, 0, 0, 1], tls_port)),
        // The per-user CA, so that trusting its root once lasts across runs.
        ca_dir: proxy::local_ca::LocalCa::default_dir().ok(),
        data_dir,
    };
    let stack = match Stack::boot(options).await {
        Ok(stack) => stack,
        Err(err) => {
            eprintln!("lab: {err}");
            if port != 0 || tls_port != 0 {
                eprintln!("  = help: `lab up --port 0 --tls-port 0` picks free ports");
            }
            return ExitCode::FAILURE;
        }
    };
    if print_config {
        println!("{}", stack.proxy_config);
    }
    let port = stack.proxy_addr.port();
    let tls_port = stack.proxy_tls_addr.port();
    println!("The lab is up. Everything below goes through the proxy:");
    for (url, what) in [
        ("http://localhost:{port}/", "the frontend page"),
        (
            "http://localhost:{port}/api/",
            "tasks-api's status ({\"status\":\"ok\"})",
        ),
        (
            "http://localhost:{port}/api/tasks",
            "the task list (POST JSON to add)",
        ),
        (
            "http://localhost:{port}/api/whoami",
            "whoami, round-robin across 3 replicas",
        ),
        (
            "http://localhost:{port}/welcome",
            "an answer the proxy gives itself",
        ),
        (
            "http://api.localhost:{port}/tasks",
            "the API under a second host name",
        ),
        (
            "http://secure.localhost:{port}/",
            "redirected to HTTPS (301)",
        ),
        (
            "https://secure.localhost:{tls_port}/",
            "the site over HTTPS, HTTP/2 when offered",
        ),
    ] {
        let url = url
            .replace("{port}", &port.to_string())
            .replace("{tls_port}", &tls_port.to_string());
        println!("  {url:<40} {what}");
    }
    println!("Behind it, each service on its own port (direct, skipping the proxy):");
    for (name, addr) in stack.services() {
        println!("  {name:<10} http://{addr}/");
    }
    let root = stack.ca_dir.join(proxy::local_ca::ROOT_CERT_FILE);
    println!(
        "HTTPS certificates come from the local CA in {}.",
        stack.ca_dir.display()
    );
    println!(
        "Trust it with curl --cacert {} (or import it in a browser).",
        root.display()
    );
    println!("Try: curl -i http://localhost:{port}/api/whoami   (run it a few times)");
    println!("Press Ctrl-C to stop.");

    let _ = tokio::signal::ctrl_c().await;
    println!("\nStopping the lab...");
    stack.shutdown().await;
    ExitCode::SUCCESS
}

async fn tour(names: &[String]) -> ExitCode {
    let mut stops = Vec::new();
    for name in names {
        match Tour::from_name(name) {
            Some(stop) => stops.push(stop),
            None => {
                let known: Vec<&str> = Tour::ALL.iter().map(|t| t.name()).collect();
                eprintln!(
                    "lab: no tour stop named `{name}`\n  = help: use one of: {}",
                    known.join(", ")
                );
                return ExitCode::from(2);
            }
        }
    }
    if stops.is_empty() {
        stops = Tour::ALL.to_vec();
    }
    for stop in stops {
        let mut stack = match Stack::boot(StackOptions::default()).await {
            Ok(stack) => stack,
            Err(err) => {
                eprintln!("lab: {err}");
                return ExitCode::FAILURE;
            }
        };
        let result = stop.run(&mut stack).await;
        stack.shutdown().await;
        match result {
            Ok(transcript) => println!("{}", transcript.render()),
            Err(err) => {
                eprintln!("lab: the {} stop failed: {err}", stop.name());
                return ExitCode::FAILURE;
            }
        }
    }
    ExitCode::SUCCESS
}
