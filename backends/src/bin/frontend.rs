//! The frontend binary: serves the lab's web page (see `backends::frontend`).
//!
//! Run with: `cargo run -p backends --bin frontend -- --listen 127.0.0.1:3000`

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
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    backends::init_tracing();

    let listener = TcpListener::bind(&args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let addr = listener.local_addr()?;
    let shutdown = backends::shutdown_signal();
    println!("frontend listening on http://{addr}");

    backends::serve(listener, frontend::app(), shutdown).await?;
    Ok(())
}
