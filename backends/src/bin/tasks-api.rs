//! The tasks-api binary: migrates the database, then serves the tasks API
//! (see `backends::tasks_api`).
//!
//! If the migration fails it prints one line, `tasks-api: <what went wrong>`,
//! to stderr and exits with status 1 without serving anything: a container
//! orchestrator sees the failure at once, and the reason is in the logs.
//!
//! Run with: `cargo run -p backends --bin tasks-api -- --db data/tasks.db`

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use backends::tasks_api;
use clap::Parser;
use tokio::net::TcpListener;

/// A tasks CRUD JSON API on SQLite that migrates its schema at start-up.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Address to listen on, such as 127.0.0.1:8000 or 0.0.0.0:8000 (port 0 picks a free port).
    #[arg(
        long,
        env = "LISTEN",
        default_value = "127.0.0.1:8000",
        value_name = "ADDR"
    )]
    listen: String,

    /// SQLite database file, created with its parent directory if missing; a
    /// relative path is relative to the working directory.
    #[arg(
        long = "db",
        env = "DB_FILE_PATH",
        default_value = "data/tasks.db",
        value_name = "PATH"
    )]
    db: PathBuf,
    /// Check that the copy listening on ADDR answers `GET /` with a 2xx, then
    /// exit 0 (healthy) or 1: a container healthcheck for an image with no curl.
    #[arg(long)]
    probe: bool,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    if args.probe {
        // Before the database is touched: a probe must not migrate anything.
        return backends::probe::probe(&args.listen, "/");
    }
    backends::init_tracing();

    match run(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("tasks-api: {err:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    // Migrate before listening: a service that cannot use its database
    // should not accept connections at all.
    let db = tasks_api::open(&args.db)?;
    let version = db.schema_version()?;
    println!(
        "tasks-api: database {} at schema version {version}",
        args.db.display()
    );

    let listener = TcpListener::bind(&args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let addr = listener.local_addr()?;
    let shutdown = backends::shutdown_signal();
    println!("tasks-api listening on http://{addr}");

    backends::serve(listener, tasks_api::app(db), shutdown).await?;
    Ok(())
}
