//! The `lab` command.
//!
//! ```text
//! lab up                 # boot the stack behind the proxy on localhost:8080, until Ctrl-C
//! lab up --port 0 --tls-port 0 --admin-port 0   # ... on any free ports
//! lab scenario --all     # boot a fresh stack per scenario, run it, print its transcript
//! lab scenario round-robin failover   # some of them
//! lab scenario --file my.toml --trace # your own scenario file, with the proxy's decision trace
//! lab images && lab scenario --all --docker   # the same, on the stack as containers
//! lab bench              # direct, through the proxy, nginx, HAProxy: requests/s, latency, CPU, memory
//! lab images            # build the Docker images of Docker mode (no registry needed)
//! lab check 02          # check your solutions to chapter 02's exercises (lab hint 02, lab progress)
//! lab soak --release     # 5 minutes of mixed traffic, reloads and replica stops: errors, memory, fds
//! ```

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use lab::docker::{DockerOptions, DockerStack};
use lab::scenario::{self, RunOptions, Scenario};
use lab::stack::LabStack;
use lab::{Stack, StackOptions};

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
        /// The port of the proxy's metrics (its admin listener) on 127.0.0.1 (0 picks a free one).
        #[arg(long, default_value_t = 9090)]
        admin_port: u16,
        /// Keep tasks-api's database in this folder (default: a temporary one).
        #[arg(long, value_name = "DIR")]
        data_dir: Option<PathBuf>,
        /// Print the proxy configuration the lab generated.
        #[arg(long)]
        print_config: bool,
    },
    /// Run scripted scenarios (lab/scenarios/*.toml), each on a fresh stack, and print their transcripts.
    #[command(visible_alias = "tour")]
    Scenario {
        /// Scenarios to run: routing, host-routing, headers, round-robin, failover, https-redirect, rate-limit, cors, trace, debugging, rewrite, compression, caching, websocket.
        names: Vec<String>,
        /// Run every scenario.
        #[arg(long)]
        all: bool,
        /// Run a scenario file of your own (see lab/scenarios/ for the format).
        #[arg(long, value_name = "FILE")]
        file: Vec<PathBuf>,
        /// Ask the proxy why (X-Lab-Trace) and print its decision trace under every answer.
        #[arg(long)]
        trace: bool,
        /// Run on the stack as containers (images from `lab images`) instead of in this process.
        #[arg(long)]
        docker: bool,
    },
    /// Build the Docker images of Docker mode (proxy-lab/NAME:local) from this checkout, with no registry.
    Images {
        /// Build the binaries with --release (smaller images; a second full compile).
        #[arg(long)]
        release: bool,
    },
    /// Load a backend directly, through the proxy, nginx and HAProxy (when installed); print the figures, write JSON and a chart.
    Bench {
        /// Client connections (each with one request in flight).
        #[arg(long, default_value_t = 32)]
        connections: usize,
        /// Seconds each run lasts.
        #[arg(long, default_value_t = 5)]
        seconds: u64,
        /// Worker counts to compare at: proxy threads, nginx worker processes, HAProxy threads.
        #[arg(long, value_delimiter = ',', default_values_t = [1, 2])]
        workers: Vec<usize>,
        /// Idle keep-alive connections opened for the memory reading (0: skip).
        #[arg(long, default_value_t = 10_000)]
        idle: usize,
        /// Where to write bench.json and bench.svg.
        #[arg(long, value_name = "DIR", default_value = "target/lab-bench")]
        out: PathBuf,
        /// Measure nothing: print the table and redraw the chart of a bench.json written before.
        #[arg(long, value_name = "FILE")]
        from: Option<PathBuf>,
    },
    /// Keep the proxy binary busy with mixed traffic, reloads and replica stops; report errors, memory and file descriptors.
    Soak {
        /// Seconds the traffic runs (after a 2 s warm-up).
        #[arg(long, default_value_t = 300)]
        seconds: u64,
        /// Clients sending requests at once.
        #[arg(long, default_value_t = 16)]
        clients: usize,
        /// Build and run the proxy with --release.
        #[arg(long)]
        release: bool,
        /// Run this proxy binary instead of building one.
        #[arg(long, value_name = "FILE")]
        proxy_bin: Option<PathBuf>,
    },
    /// Check your solutions to a chapter's exercises (in work/NN-slug/, made from the starters on first use).
    Check {
        /// The chapter: 02, or 02-path-routing.
        chapter: String,
        /// Print every request and answer of the check, not only what failed.
        #[arg(long)]
        verbose: bool,
    },
    /// Print a hint for each of a chapter's exercises (the first; `lab hint 02 2` for the second, ...).
    Hint {
        /// The chapter: 02, or 02-path-routing.
        chapter: String,
        /// Which hint (1 is a nudge; the last is nearly the answer).
        #[arg(default_value_t = 1)]
        number: usize,
    },
    /// Show which chapters' exercises you have solved.
    Progress,
    /// (Used by `lab bench`.) Run its backend or its proxy; print the address; serve until stdin closes.
    #[command(hide = true)]
    BenchServe {
        /// `backend`, `proxy`, `proxy-l4` (a `[[stream]]`), `proxy-https` or
        /// `proxy-l4-tls` (the same two terminating TLS).
        role: String,
        /// The proxy's worker threads.
        #[arg(long, default_value_t = 1)]
        workers: usize,
        /// The proxy's upstream.
        #[arg(long)]
        upstream: Option<SocketAddr>,
        /// The local CA that issues the TLS roles' certificates.
        #[arg(long, value_name = "DIR")]
        ca_dir: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The bench's backend and proxy processes run their own runtimes.
    if let Command::BenchServe {
        role,
        workers,
        upstream,
        ca_dir,
    } = cli.command
    {
        return bench_serve(&role, workers, upstream, ca_dir);
    }
    match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime.block_on(run(cli.command)),
        Err(err) => {
            eprintln!("lab: cannot start the runtime: {err}");
            ExitCode::FAILURE
        }
    }
}

async fn run(command: Command) -> ExitCode {
    match command {
        Command::Up {
            port,
            tls_port,
            admin_port,
            data_dir,
            print_config,
        } => up([port, tls_port, admin_port], data_dir, print_config).await,
        Command::Scenario {
            names,
            all,
            file,
            trace,
            docker,
        } => scenarios(&names, all, &file, RunOptions { trace }, docker).await,
        Command::Images { release } => images(release),
        Command::Bench {
            out,
            from: Some(json),
            ..
        } => bench_from(&json, &out),
        Command::Bench {
            connections,
            seconds,
            workers,
            idle,
            out,
            from: None,
        } => bench(connections, seconds, workers, idle, out).await,
        Command::Soak {
            seconds,
            clients,
            release,
            proxy_bin,
        } => soak(seconds, clients, release, proxy_bin).await,
        Command::Check { chapter, verbose } => check(&chapter, verbose).await,
        Command::Hint { chapter, number } => hint(&chapter, number),
        Command::Progress => progress(),
        Command::BenchServe { .. } => ExitCode::FAILURE,
    }
}

/// Where the learner's `work/` and `.lab-progress.txt` go: the repository,
/// or the folder `LAB_COURSE_ROOT` names (tests use a scratch one).
fn course_root() -> PathBuf {
    match std::env::var_os("LAB_COURSE_ROOT").filter(|v| !v.is_empty()) {
        Some(root) => PathBuf::from(root),
        None => PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/..")),
    }
}

/// `path` as the learner sees it: relative to `root` when below it.
fn shown(path: &std::path::Path, root: &std::path::Path) -> String {
    path.strip_prefix(root)
        .unwrap_or(path)
        .display()
        .to_string()
}

/// The chapters with an exercise of either kind, for an error message.
fn chapters_with_exercises() -> String {
    let mut names: Vec<String> = lab::course::CHAPTERS
        .iter()
        .map(lab::course::Chapter::name)
        .chain(
            lab::code_exercise::CODE_EXERCISES
                .iter()
                .map(lab::code_exercise::CodeExercise::chapter_name),
        )
        .collect();
    names.sort();
    names.dedup();
    names.join(", ")
}

/// `lab check NN`: checks the learner's copy of each of the chapter's
/// exercises (a config, a piece of Rust, or both), making each from its
/// starter first if there is none; says what passed, what did not, and
/// where the hints are.
async fn check(key: &str, verbose: bool) -> ExitCode {
    let root = course_root();
    let config = lab::course::chapter(key).ok();
    let code = lab::code_exercise::for_chapter(key);
    if config.is_none() && code.is_empty() {
        eprintln!(
            "lab: no exercise for chapter `{key}`; the exercises are: {}",
            chapters_with_exercises()
        );
        return ExitCode::FAILURE;
    }
    let mut passed = Vec::new();
    if let Some(chapter) = config {
        passed.push(check_config(chapter, &root, verbose).await);
    }
    for exercise in code {
        if !passed.is_empty() {
            println!();
        }
        passed.push(check_code(exercise, &root));
    }
    if passed.len() > 1 {
        let solved = passed.iter().filter(|p| **p).count();
        println!(
            "
Chapter {key}: {solved} of {} exercises solved.",
            passed.len()
        );
    }
    if passed.iter().all(|p| *p) {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// Checks the learner's copy of a chapter's config exercise; `true` when it passes.
async fn check_config(
    chapter: &lab::course::Chapter,
    root: &std::path::Path,
    verbose: bool,
) -> bool {
    let (path, made) = match lab::course::work_copy(chapter, root) {
        Ok(copy) => copy,
        Err(err) => {
            eprintln!("lab: {err}");
            return false;
        }
    };
    let shown = shown(&path, root);
    if made {
        println!("Made {shown} from the starter: edit it, then run this again.\n");
    }
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(err) => {
            eprintln!("lab: {shown}: {err}");
            return false;
        }
    };
    println!(
        "Chapter {:02}, {}: checking {shown}",
        chapter.number, chapter.title
    );
    let verdict = match lab::course::check(chapter, &text, &shown).await {
        Ok(verdict) => verdict,
        Err(err) => {
            eprintln!("lab: {err}");
            return false;
        }
    };
    if verbose || !verdict.passed() {
        println!("\n{}", verdict.transcript);
    }
    if verdict.passed() {
        println!("PASSED: all {} expectations met.", verdict.expectations);
        if let Err(err) = lab::course::record_pass(chapter, root, &text) {
            eprintln!("lab: could not record it: {err}");
        }
        println!("Read the \"Going further\" part of {} next.", chapter.doc());
        true
    } else {
        println!("NOT YET. What is still wrong:");
        for failure in &verdict.failures {
            println!("  - {failure}");
        }
        println!(
            "\nThe chapter: {}. A hint: `cargo run -p lab -- hint {:02}`.",
            chapter.doc(),
            chapter.number
        );
        false
    }
}

/// Checks the learner's copy of a code exercise (cargo builds it with the
/// course's check and runs it; both print as they go); `true` when it passes.
fn check_code(exercise: &lab::code_exercise::CodeExercise, root: &std::path::Path) -> bool {
    use lab::code_exercise::CodeVerdict;
    let (path, made) = match exercise.work_copy(root) {
        Ok(copy) => copy,
        Err(err) => {
            eprintln!("lab: {err}");
            return false;
        }
    };
    let shown = shown(&path, root);
    if made {
        println!(
            "Made {shown} from the starter: write the parts marked TODO, then run this again.\n"
        );
    }
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(err) => {
            eprintln!("lab: {shown}: {err}");
            return false;
        }
    };
    println!(
        "Chapter {:02}, {} (code): building {shown} with its check",
        exercise.number, exercise.summary
    );
    let hint = format!("cargo run -p lab -- hint {:02}", exercise.number);
    match exercise.check(root) {
        Ok(CodeVerdict::Passed) => {
            println!("PASSED: {shown} does all the check asks.");
            if let Err(err) = exercise.record_pass(root, &text) {
                eprintln!("lab: could not record it: {err}");
            }
            println!(
                "Read the \"Going further\" part of {} next.",
                exercise.doc()
            );
            true
        }
        Ok(CodeVerdict::Failed) => {
            println!(
                "NOT YET: the lines marked FAILED above say what {shown} does not do yet.\n\
                 The chapter: {}. A hint: `{hint}`.",
                exercise.doc()
            );
            false
        }
        Ok(CodeVerdict::DoesNotCompile) => {
            println!(
                "NOT YET: {shown} does not compile. Fix the errors above in that file, then check again.\n\
                 The chapter: {}. A hint: `{hint}`.",
                exercise.doc()
            );
            false
        }
        Err(err) => {
            eprintln!("lab: {err}");
            false
        }
    }
}

/// `lab hint NN [K]`: the K-th hint of each of a chapter's exercises.
fn hint(key: &str, number: usize) -> ExitCode {
    let root = course_root();
    let mut exercises: Vec<(String, Vec<&'static str>)> = Vec::new();
    if let Ok(chapter) = lab::course::chapter(key) {
        exercises.push((
            shown(&chapter.work_file(&root), &root),
            chapter.hint_lines(),
        ));
    }
    for exercise in lab::code_exercise::for_chapter(key) {
        exercises.push((
            shown(&exercise.work_file(&root), &root),
            exercise.hint_lines(),
        ));
    }
    if exercises.is_empty() {
        eprintln!(
            "lab: no exercise for chapter `{key}`; the exercises are: {}",
            chapters_with_exercises()
        );
        return ExitCode::FAILURE;
    }
    let chapter = key.split('-').next().unwrap_or(key);
    let mut found = false;
    let mut more = false;
    for (file, hints) in &exercises {
        match number.checked_sub(1).and_then(|i| hints.get(i)) {
            Some(text) => {
                found = true;
                more |= number < hints.len();
                println!("Hint {number} of {} for {file}: {text}", hints.len());
            }
            None => println!("{file} has hints 1 to {}.", hints.len()),
        }
    }
    if more {
        println!(
            "(the next one: `cargo run -p lab -- hint {chapter} {}`)",
            number + 1
        );
    }
    if found {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// `lab progress`: which exercises are solved, config and code, in chapter order.
fn progress() -> ExitCode {
    use lab::course::Standing;
    let root = course_root();
    let mut rows: Vec<(u8, String, Standing)> = lab::course::progress(&root)
        .into_iter()
        .map(|(chapter, standing)| (chapter.number, chapter.title.to_owned(), standing))
        .collect();
    for (exercise, standing) in lab::code_exercise::progress(&root) {
        rows.push((
            exercise.number,
            format!("{} (code: {})", exercise.title, exercise.file()),
            standing,
        ));
    }
    // Stable: a chapter's config exercise before its code exercises.
    rows.sort_by_key(|(number, _, _)| *number);
    let solved = rows
        .iter()
        .filter(|(_, _, s)| *s == Standing::Solved)
        .count();
    let width = rows
        .iter()
        .map(|(_, t, _)| t.chars().count())
        .max()
        .unwrap_or(0);
    for (number, title, standing) in &rows {
        let mark = match standing {
            Standing::Solved => "solved",
            Standing::InProgress => "started",
            Standing::NotStarted => "-",
        };
        println!("{number:02} {title:<width$}  {mark}");
    }
    println!("{solved} of {} exercises solved", rows.len());
    ExitCode::SUCCESS
}

/// `lab soak`: builds the proxy binary (unless given one), runs the soak,
/// prints the report; fails when the report names a problem.
async fn soak(seconds: u64, clients: usize, release: bool, proxy_bin: Option<PathBuf>) -> ExitCode {
    let proxy_bin = match proxy_bin {
        Some(bin) => bin,
        None => {
            let options = lab::docker::BuildOptions {
                release,
                ..Default::default()
            };
            match lab::docker::cargo_build(&options).map(|mut bins| bins.remove("proxy")) {
                Ok(Some(bin)) => bin,
                Ok(None) => {
                    eprintln!("lab: cargo built no `proxy` binary");
                    return ExitCode::FAILURE;
                }
                Err(err) => {
                    eprintln!("lab: {err}");
                    return ExitCode::FAILURE;
                }
            }
        }
    };
    let mut options = lab::soak::SoakOptions::new(proxy_bin, Duration::from_secs(seconds));
    options.clients = clients;
    println!(
        "soak: {} for {seconds} s with {clients} clients; a reload every {} s, a replica stopped every {} s for {} s",
        options.proxy_bin.display(),
        options.reload_every.as_secs(),
        options.kill_every.as_secs(),
        options.down_for.as_secs()
    );
    match lab::soak::run(&options).await {
        Ok(report) => {
            print!("{}", report.render());
            let problems = report.problems();
            for problem in &problems {
                eprintln!("lab: soak failed: {problem}");
            }
            if problems.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(err) => {
            eprintln!("lab: {err}");
            ExitCode::FAILURE
        }
    }
}

/// `lab bench-serve backend|proxy|...`: one process of the bench.
fn bench_serve(
    role: &str,
    workers: usize,
    upstream: Option<SocketAddr>,
    ca_dir: Option<PathBuf>,
) -> ExitCode {
    use lab::bench::ServeRole;
    let role = match (role, upstream, ca_dir) {
        ("backend", _, _) => ServeRole::Backend,
        ("proxy", Some(upstream), None) => ServeRole::Proxy {
            workers,
            upstream,
            tls_ca_dir: None,
        },
        ("proxy-l4", Some(upstream), None) => ServeRole::Stream {
            workers,
            upstream,
            tls_ca_dir: None,
        },
        ("proxy-https", Some(upstream), Some(dir)) => ServeRole::Proxy {
            workers,
            upstream,
            tls_ca_dir: Some(dir),
        },
        ("proxy-l4-tls", Some(upstream), Some(dir)) => ServeRole::Stream {
            workers,
            upstream,
            tls_ca_dir: Some(dir),
        },
        _ => {
            eprintln!(
                "lab: bench-serve backend, bench-serve proxy|proxy-l4 --upstream ADDR, \
                 or bench-serve proxy-https|proxy-l4-tls --upstream ADDR --ca-dir DIR"
            );
            return ExitCode::from(2);
        }
    };
    match lab::bench::serve(role) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("lab: bench-serve: {err}");
            ExitCode::FAILURE
        }
    }
}

/// `lab images`: cargo build, then one `docker import` per image.
fn images(release: bool) -> ExitCode {
    let started = std::time::Instant::now();
    let options = lab::docker::BuildOptions {
        release,
        ..lab::docker::BuildOptions::default()
    };
    match lab::docker::build_images(&options) {
        Ok(images) => {
            for image in images {
                let state = if image.imported {
                    "imported"
                } else {
                    "up to date"
                };
                println!(
                    "  {:<28} {state:<10} {:>4} MB  from {}",
                    image.image,
                    image.bytes / 1_000_000,
                    image.binary.display()
                );
            }
            println!(
                "The lab's images are ready ({:.1} s). Use them: cargo run -p lab -- scenario --all --docker",
                started.elapsed().as_secs_f64()
            );
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("lab: {err}");
            ExitCode::FAILURE
        }
    }
}

/// `lab up`: the stack on `ports` (plain HTTP, HTTPS, metrics) until Ctrl-C.
async fn up(ports: [u16; 3], data_dir: Option<PathBuf>, print_config: bool) -> ExitCode {
    proxy::init_logging();
    let [port, tls_port, admin_port] = ports;
    let options = StackOptions {
        proxy_listen: SocketAddr::from(([127, 0, 0, 1], port)),
        proxy_listen_tls: SocketAddr::from(([127, 0, 0, 1], tls_port)),
        proxy_admin: SocketAddr::from(([127, 0, 0, 1], admin_port)),
        // The per-user CA, so that trusting its root once lasts across runs.
        ca_dir: proxy::local_ca::LocalCa::default_dir().ok(),
        data_dir,
        proxy_config: None,
    };
    let stack = match Stack::boot(options).await {
        Ok(stack) => stack,
        Err(err) => {
            eprintln!("lab: {err}");
            if ports.iter().any(|p| *p != 0) {
                eprintln!(
                    "  = help: `lab up --port 0 --tls-port 0 --admin-port 0` picks free ports"
                );
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
    if let Some(admin) = stack.admin_addr {
        println!("The proxy's own metrics (chapter 13): http://{admin}/metrics");
    }
    println!("Layer 4 ([[stream]]: bytes copied unread; chapter 14, `lab scenario l4-vs-l7`):");
    for (name, addr) in &stack.streams {
        println!("  {name:<18} {addr}");
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
    println!(
        "Ask the proxy why: curl -si -H 'X-Lab-Trace: 1' http://localhost:{port}/api/whoami | grep x-lab-trace"
    );
    println!("Press Ctrl-C to stop.");

    let _ = tokio::signal::ctrl_c().await;
    println!("\nStopping the lab...");
    stack.shutdown().await;
    ExitCode::SUCCESS
}

/// `lab bench --from FILE`: the table and the chart of earlier figures.
fn bench_from(json: &std::path::Path, out: &std::path::Path) -> ExitCode {
    let report = std::fs::read_to_string(json)
        .map_err(|e| format!("cannot read {}: {e}", json.display()))
        .and_then(|text| {
            serde_json::from_str::<lab::bench::BenchReport>(&text)
                .map_err(|e| format!("{} is not a bench.json: {e}", json.display()))
        });
    let written = report.and_then(|report| {
        print!("{}", report.table());
        lab::bench::write_files(&report, out)
    });
    say_written(written)
}

/// Names the files `lab bench` wrote, or says why it could not.
fn say_written(written: Result<Vec<String>, String>) -> ExitCode {
    match written {
        Ok(written) => {
            println!("written: {}", written.join(", "));
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("lab: bench: {err}");
            ExitCode::FAILURE
        }
    }
}

/// `lab bench`: the comparison table, then the JSON and the chart in `out`.
async fn bench(
    connections: usize,
    seconds: u64,
    workers: Vec<usize>,
    idle: usize,
    out: PathBuf,
) -> ExitCode {
    let serve_with = match std::env::current_exe() {
        Ok(exe) => exe,
        Err(err) => {
            eprintln!("lab: bench: cannot find this program to start its backend: {err}");
            return ExitCode::FAILURE;
        }
    };
    let options = lab::bench::BenchOptions {
        connections,
        duration: std::time::Duration::from_secs(seconds.max(1)),
        workers,
        idle_connections: idle,
        serve_with,
    };
    if cfg!(debug_assertions) {
        println!("A debug build: for real figures, cargo run --release -p lab -- bench");
    }
    let report = match lab::bench::run(&options).await {
        Ok(report) => report,
        Err(err) => {
            eprintln!("lab: bench: {err}");
            return ExitCode::FAILURE;
        }
    };
    print!("{}", report.table());
    say_written(lab::bench::write_files(&report, &out))
}

/// Runs `scenario` on a freshly booted stack, then stops the stack.
async fn run_on<S: LabStack, E: std::fmt::Display>(
    booted: Result<S, E>,
    scenario: &Scenario,
    options: RunOptions,
) -> Result<scenario::Outcome, String> {
    let mut stack = booted.map_err(|e| e.to_string())?;
    let result = scenario::run(scenario, &mut stack, options).await;
    stack.shutdown().await;
    result.map_err(|e| e.to_string())
}

/// Runs scenarios by name or file; the exit code says whether every
/// expectation held (1 when one did not, 2 for a bad name or file).
async fn scenarios(
    names: &[String],
    all: bool,
    files: &[PathBuf],
    options: RunOptions,
    docker: bool,
) -> ExitCode {
    let mut chosen: Vec<(String, Scenario)> = Vec::new();
    let mut wanted: Vec<String> = names.to_vec();
    if all {
        wanted.extend(scenario::names().iter().map(|n| n.to_string()));
    }
    for name in &wanted {
        match scenario::built_in(name) {
            Ok(s) => chosen.push((name.clone(), s)),
            Err(err) => {
                eprintln!("lab: {err}");
                return ExitCode::from(2);
            }
        }
    }
    for file in files {
        let parsed = std::fs::read_to_string(file)
            .map_err(|e| format!("cannot read {}: {e}", file.display()))
            .and_then(|text| {
                Scenario::parse(&text, &file.display().to_string()).map_err(|e| e.to_string())
            });
        match parsed {
            Ok(s) => chosen.push((file.display().to_string(), s)),
            Err(err) => {
                eprintln!("lab: {err}");
                return ExitCode::from(2);
            }
        }
    }
    if chosen.is_empty() {
        eprintln!(
            "lab: which scenario?\n  = help: name some ({}), or use --all or --file FILE",
            scenario::names().join(", ")
        );
        return ExitCode::from(2);
    }
    let mut failed = false;
    for (name, scenario) in chosen {
        let result = if docker {
            run_on(
                DockerStack::boot(DockerOptions::default()).await,
                &scenario,
                options,
            )
            .await
        } else {
            run_on(
                Stack::boot(StackOptions::default()).await,
                &scenario,
                options,
            )
            .await
        };
        match result {
            Ok(outcome) => {
                println!("{}", outcome.transcript.render());
                for failure in &outcome.failures {
                    eprintln!("lab: {name}: {failure}");
                    failed = true;
                }
            }
            Err(err) => {
                eprintln!("lab: scenario {name} could not run: {err}");
                return ExitCode::FAILURE;
            }
        }
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
