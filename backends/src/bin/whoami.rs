//! The whoami binary: one replica of the echo service (see `backends::whoami`).
//!
//! Run with: `cargo run -p backends --bin whoami -- --name whoami-1 --listen 127.0.0.1:5001`

use std::process::ExitCode;

use anyhow::Context;
use backends::whoami::{self, Identity};
use clap::Parser;
use tokio::net::TcpListener;

/// Echoes every request back as JSON, tagged with this replica's name.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Address to listen on, such as 127.0.0.1:5000 or 0.0.0.0:5000 (port 0 picks a free port).
    #[arg(
        long,
        env = "LISTEN",
        default_value = "127.0.0.1:5000",
        value_name = "ADDR"
    )]
    listen: String,

    /// Name reported in every answer [default: $HOSTNAME, then /etc/hostname, then "whoami"].
    #[arg(long, env = "WHOAMI_NAME", value_name = "NAME")]
    name: Option<String>,
    /// Check that the copy listening on ADDR answers `GET /health` with a 2xx, then
    /// exit 0 (healthy) or 1: a container healthcheck for an image with no curl.
    #[arg(long)]
    probe: bool,
    /// Accept an optional PROXY protocol header (v1 or v2) at the start of each
    /// connection, and report what it said in the reply's `proxy_protocol`.
    #[arg(long, env = "WHOAMI_PROXY_PROTOCOL")]
    proxy_protocol: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<ExitCode> {
    let args = Args::parse();
    if args.probe {
        return Ok(backends::probe::probe(&args.listen, "/health"));
    }
    backends::init_tracing();

    let identity = Identity::new(args.name);
    let listener = TcpListener::bind(&args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let addr = listener.local_addr()?;
    let shutdown = backends::shutdown_signal();
    println!("whoami {} listening on http://{addr}", identity.name);

    if args.proxy_protocol {
        println!("accepting an optional PROXY protocol header on each connection");
        backends::serve_accepting_proxy_protocol(listener, whoami::app(identity), shutdown).await?;
    } else {
        backends::serve(listener, whoami::app(identity), shutdown).await?;
    }
    Ok(ExitCode::SUCCESS)
}
