//! The frontend binary: serves the lab's web page (see `backends::frontend`).
//!
//! Run with: `cargo run -p backends --bin frontend -- --listen 127.0.0.1:3000`

use std::process::ExitCode;

use anyhow::Context;
use backends::frontend;
use clap::Parser;
use tokio::net::TcpListener;

/// Serves the proxy lab's web page at `/`.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Address to listen on, such as 127.0.0.1:3000 or 0.0.0.0:3000 (port 0 picks a free port).
    #[arg(
        long,
        env = "LISTEN",
        default_value = "127.0.0.1:3000",
        value_name = "ADDR"
    )]
    listen: String,
    /// Check that the copy listening on ADDR answers `GET /health` with a 2xx, then
    /// exit 0 (healthy) or 1: a container healthcheck for an image with no curl.
    #[arg(long)]
    probe: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<ExitCode> {
    let args = Args::parse();
    if args.probe {
        return Ok(backends::probe::probe(&args.listen, "/health"));
    }
    backends::init_tracing();

    let listener = TcpListener::bind(&args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let addr = listener.local_addr()?;
    let shutdown = backends::shutdown_signal();
    println!("frontend listening on http://{addr}");

    backends::serve(listener, frontend::app(), shutdown).await?;
    Ok(ExitCode::SUCCESS)
}
