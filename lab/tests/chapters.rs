//! Every command a chapter tells the learner to type works on a fresh clone.
//!
//! The test reads each ```sh block of the numbered chapters (docs/NN-*.md)
//! and the set-up blocks at the top of README.md, and runs every command in it, in order, the way a
//! learner copying it would, with only what a test must change:
//!
//! - `cargo run [--release] -p lab -- ARGS` and `cargo run -p proxy -- ARGS`
//!   run the binaries this build made (no nested cargo);
//! - `lab up` starts in the background on free ports, and the `curl` lines of
//!   the same page talk to it (8080, 8443 and 9090, its metrics, become the
//!   ports it got);
//! - `lab check NN` works in a scratch folder (`LAB_COURSE_ROOT`), never in
//!   the repository's own `work/`; an untouched exercise fails its check,
//!   so there it must fail, saying what is wrong;
//! - benchmarks and soaks run for a second instead of many;
//! - the local CA goes to a scratch folder (`~/.local/share` in a command is
//!   that folder);
//! - Docker commands run only when a Docker daemon answers (skipped with the
//!   reason printed otherwise; with CI set they must run); a compose
//!   stack's published port is a free one (`PROXY_PORT`), and the page's
//!   `curl` lines go to it while the stack is up;
//! - `cargo test` lines are what runs this test (and the tests it names).
//!
//! A command this test does not know fails it: teach it here, so no page can
//! show a command nobody ran.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// One command of a page, as the learner would copy it.
#[derive(Debug)]
struct PageCommand {
    /// `docs/04-load-balancing.md:97`.
    place: String,
    /// The command line (continuation lines joined).
    text: String,
}

/// The commands in `page`'s first `blocks` ```sh blocks.
fn commands(file: &str, page: &str, blocks: usize) -> Vec<PageCommand> {
    let mut out = Vec::new();
    let mut in_block = false;
    let mut seen = 0;
    let mut pending: Option<(usize, String)> = None;
    for (index, line) in page.lines().enumerate() {
        let trimmed = line.trim();
        if !in_block {
            in_block = trimmed == "```sh" && seen < blocks;
            seen += usize::from(in_block);
            continue;
        }
        if trimmed.starts_with("```") {
            in_block = false;
            continue;
        }
        if pending.is_none() && (trimmed.is_empty() || trimmed.starts_with('#')) {
            continue;
        }
        let (start, mut text) = pending.take().unwrap_or((index + 1, String::new()));
        match trimmed.strip_suffix('\\') {
            Some(head) => {
                text.push_str(head.trim_end());
                text.push(' ');
                pending = Some((start, text));
            }
            None => {
                text.push_str(trimmed);
                out.push(PageCommand {
                    place: format!("{file}:{start}"),
                    text,
                });
            }
        }
    }
    out
}

/// What running one command means here.
#[derive(Debug, PartialEq)]
enum Plan {
    /// Run this shell line; it must exit with 0.
    Run(String),
    /// `lab check NN`: run it on a scratch folder; it must fail, saying why.
    Check(String),
    /// `lab up`: start it in the background (once per page).
    Up,
    /// A `curl` line: needs `lab up` running; the ports are rewritten.
    Curl(String),
    /// Needs a Docker daemon.
    Docker(String),
    /// Not run, for the reason given.
    Skip(&'static str),
}

/// Decides how to run `text`; `None` for a command this test does not know.
fn plan(text: &str) -> Option<Plan> {
    let text = text.replace("~/.local/share/", "\"$XDG_DATA_HOME\"/");
    let words: Vec<&str> = text.split_whitespace().collect();
    let lab_args = ["cargo run -p lab -- ", "cargo run --release -p lab -- "]
        .iter()
        .find_map(|prefix| text.strip_prefix(prefix));
    if let Some(args) = lab_args {
        let sub = words.get(if words[2] == "--release" { 6 } else { 5 })?;
        let args = shorten(args);
        return Some(match *sub {
            "up" => Plan::Up,
            "check" => Plan::Check(format!("\"$LAB\" {args}")),
            "images" => Plan::Docker(format!("\"$LAB\" {args}")),
            _ if args.contains("--docker") => Plan::Docker(format!("\"$LAB\" {args}")),
            _ => Plan::Run(format!("\"$LAB\" {args}")),
        });
    }
    if let Some(args) = text.strip_prefix("cargo run -p proxy -- ") {
        return Some(Plan::Run(format!("\"$PROXY\" {args}")));
    }
    // `echo WORDS | cargo run -p proxy -- ARGS`: the proxy reading a line
    // (`hash-password`), fed as the page shows.
    if let Some((input, command)) = text.split_once(" | ")
        && input.starts_with("echo ")
        && !input.contains(['|', ';', '&', '`', '$', '>', '<'])
        && let Some(args) = command.strip_prefix("cargo run -p proxy -- ")
    {
        return Some(Plan::Run(format!("{input} | \"$PROXY\" {args}")));
    }
    if text.starts_with("cargo test") {
        return Some(Plan::Skip(
            "`cargo test --workspace`, which runs this test, runs that test too",
        ));
    }
    if words.first() == Some(&"curl") {
        return Some(Plan::Curl(text.clone()));
    }
    if matches!(words.first(), Some(&"docker") | Some(&"docker-compose")) {
        return Some(Plan::Docker(text.clone()));
    }
    None
}

/// Benchmarks and soaks for a second: the command is what is checked here,
/// not the figures.
fn shorten(args: &str) -> String {
    let mut words: Vec<String> = args.split_whitespace().map(str::to_owned).collect();
    let long = matches!(words.first().map(String::as_str), Some("bench" | "soak"));
    if long {
        match words.iter().position(|w| w == "--seconds") {
            Some(i) if i + 1 < words.len() => words[i + 1] = "1".to_owned(),
            _ => words.extend(["--seconds".to_owned(), "1".to_owned()]),
        }
    }
    words.join(" ")
}

/// The repository's root.
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The pages whose commands are checked, each with how many of its ```sh
/// blocks: the numbered chapters, all of them; README.md, its set-up (the
/// two commands, then the `curl` lines to try); the rest of the README is a
/// reference, not a lesson to follow in order.
fn pages() -> Vec<(String, usize)> {
    let mut pages: Vec<(String, usize)> = std::fs::read_dir(root().join("docs"))
        .expect("docs/ is readable")
        .filter_map(|entry| {
            let name = entry.ok()?.file_name().into_string().ok()?;
            let numbered = name.len() > 3 && name.as_bytes()[..2].iter().all(u8::is_ascii_digit);
            (numbered && name.ends_with(".md")).then(|| (format!("docs/{name}"), usize::MAX))
        })
        .collect();
    pages.sort();
    pages.insert(0, ("README.md".to_owned(), 2));
    pages
}

#[test]
fn every_page_command_is_one_this_test_knows() {
    let mut unknown = Vec::new();
    for (page, blocks) in pages() {
        let text = std::fs::read_to_string(root().join(&page)).expect("the page is readable");
        for command in commands(&page, &text, blocks) {
            if plan(&command.text).is_none() {
                unknown.push(format!("{}: `{}`", command.place, command.text));
            }
        }
    }
    assert!(
        unknown.is_empty(),
        "commands this test cannot run (teach lab/tests/chapters.rs, or change the page):\n{}",
        unknown.join("\n")
    );
}

/// The binaries of this build, and scratch folders for what the commands write.
struct Setting {
    lab: PathBuf,
    proxy: PathBuf,
    data_home: tempfile::TempDir,
    course_root: tempfile::TempDir,
    docker: Result<(), String>,
    curl: Result<(), String>,
}

impl Setting {
    fn new() -> Setting {
        let lab = PathBuf::from(env!("CARGO_BIN_EXE_lab"));
        Setting {
            proxy: proxy_binary(),
            lab,
            data_home: tempfile::tempdir().expect("a scratch folder"),
            course_root: tempfile::tempdir().expect("a scratch folder"),
            docker: docker_answers(),
            curl: match Command::new("curl").arg("--version").output() {
                Ok(_) => Ok(()),
                Err(err) => Err(format!("there is no `curl` command ({err})")),
            },
        }
    }

    /// `sh -c line` from the repository root, with the setting's variables.
    fn shell(&self, line: &str) -> Command {
        let mut command = Command::new("sh");
        command
            .arg("-c")
            .arg(line)
            .current_dir(root())
            .env("LAB", &self.lab)
            .env("PROXY", &self.proxy)
            .env("XDG_DATA_HOME", self.data_home.path())
            .env("LAB_COURSE_ROOT", self.course_root.path())
            .env_remove("PROXY_LAB_CA_DIR")
            .stdin(Stdio::null());
        command
    }
}

/// The proxy's binary next to the lab's (`cargo test --workspace` builds it;
/// built here when only this package's tests run).
fn proxy_binary() -> PathBuf {
    let bin = Path::new(env!("CARGO_BIN_EXE_lab")).with_file_name("proxy");
    if !bin.exists() {
        let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .args(["build", "-p", "proxy", "--bin", "proxy"])
            .current_dir(root())
            .status()
            .expect("cargo runs");
        assert!(status.success(), "cargo build -p proxy failed");
    }
    bin
}

/// A loopback port nothing listens on (the OS's pick).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// Whether a Docker daemon answers, and if not why.
fn docker_answers() -> Result<(), String> {
    match Command::new("docker")
        .arg("info")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
    {
        Ok(status) if status.success() => Ok(()),
        Ok(_) => Err("no Docker daemon answers `docker info`".to_owned()),
        Err(err) => Err(format!("no `docker` command ({err})")),
    }
}

/// What a finished command did.
struct Outcome {
    code: Option<i32>,
    output: String,
}

/// Runs `command` to its end, at most `limit`.
fn run(mut command: Command, limit: Duration) -> Outcome {
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("sh starts");
    let stdout = drain(child.stdout.take());
    let stderr = drain(child.stderr.take());
    let deadline = Instant::now() + limit;
    let code = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status.code();
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let output = format!(
        "{}{}",
        stdout.join().unwrap_or_default(),
        stderr.join().unwrap_or_default()
    );
    Outcome { code, output }
}

fn drain<R: Read + Send + 'static>(pipe: Option<R>) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut text = String::new();
        if let Some(mut pipe) = pipe {
            let mut bytes = Vec::new();
            let _ = pipe.read_to_end(&mut bytes);
            text = String::from_utf8_lossy(&bytes).into_owned();
        }
        text
    })
}

/// `lab up` on free ports, stopped when dropped.
struct Up {
    child: Child,
    port: u16,
    tls_port: u16,
    admin_port: u16,
}

impl Up {
    fn start(setting: &Setting) -> Up {
        let mut child = setting
            .shell("exec \"$LAB\" up --port 0 --tls-port 0 --admin-port 0")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("lab up starts");
        // Its log (every request) is read and dropped, or shown if it fails.
        let log = drain(child.stderr.take());
        let mut reader = std::io::BufReader::new(child.stdout.take().expect("stdout"));
        let mut port = None;
        let mut tls_port = None;
        let mut admin_port = None;
        let mut line = String::new();
        while port.is_none() || tls_port.is_none() || admin_port.is_none() {
            line.clear();
            let n = std::io::BufRead::read_line(&mut reader, &mut line).expect("read");
            if n == 0 {
                let log = log.join().unwrap_or_default();
                panic!("lab up ended before printing its URLs:\n{log}");
            }
            let port_after = |scheme: &str| {
                let rest = &line[line.find(scheme)? + scheme.len()..];
                let rest = &rest[rest.find(':')? + 1..];
                let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
                digits.parse::<u16>().ok()
            };
            if line.contains("/metrics") {
                admin_port = admin_port.or_else(|| port_after("http://"));
                continue;
            }
            port = port.or_else(|| port_after("http://"));
            tls_port = tls_port.or_else(|| port_after("https://"));
        }
        // Keep draining, so the server never blocks on a full pipe.
        std::thread::spawn(move || std::io::copy(&mut reader, &mut std::io::sink()));
        Up {
            child,
            port: port.expect("a port"),
            tls_port: tls_port.expect("a TLS port"),
            admin_port: admin_port.expect("a metrics port"),
        }
    }
}

impl Drop for Up {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn every_page_command_works_on_a_fresh_clone() {
    let setting = Setting::new();
    let mut failures = Vec::new();
    for (page, blocks) in pages() {
        let text = std::fs::read_to_string(root().join(&page)).expect("the page is readable");
        let mut up: Option<Up> = None;
        // While a compose stack of this page is up, its proxy's port: the
        // page's `curl` lines go there (PROXY_PORT is the stacks' published
        // port, 8080 unless set; here a free one).
        let compose_port = free_port();
        let mut compose_up = false;
        for command in commands(&page, &text, blocks) {
            let Some(plan) = plan(&command.text) else {
                continue; // every_page_command_is_one_this_test_knows says so
            };
            let (line, must_pass) = match plan {
                Plan::Skip(reason) => {
                    println!("{}: skipped `{}`: {reason}", command.place, command.text);
                    continue;
                }
                Plan::Up => {
                    up.get_or_insert_with(|| Up::start(&setting));
                    println!("{}: `{}` is up", command.place, command.text);
                    continue;
                }
                Plan::Docker(line) => match &setting.docker {
                    Ok(()) => {
                        let compose =
                            line.contains("docker-compose") || line.contains("docker compose");
                        if compose && line.contains(" up") {
                            compose_up = true;
                        }
                        if compose && line.contains(" down") {
                            compose_up = false;
                        }
                        (line, true)
                    }
                    Err(reason) => {
                        assert!(
                            std::env::var_os("CI").is_none(),
                            "CI is set and {reason}: .ci/run must start Docker"
                        );
                        println!("{}: skipped `{}`: {reason}", command.place, command.text);
                        continue;
                    }
                },
                Plan::Curl(line) => {
                    if let Err(reason) = &setting.curl {
                        assert!(
                            std::env::var_os("CI").is_none(),
                            "CI is set and {reason}: install curl"
                        );
                        println!("{}: skipped `{}`: {reason}", command.place, command.text);
                        continue;
                    }
                    let line = if compose_up {
                        line.replace("8080", &compose_port.to_string())
                    } else {
                        let up = up.get_or_insert_with(|| Up::start(&setting));
                        line.replace("8080", &up.port.to_string())
                            .replace("8443", &up.tls_port.to_string())
                            .replace("9090", &up.admin_port.to_string())
                    };
                    (line.replacen("curl ", "curl --max-time 20 ", 1), true)
                }
                Plan::Check(line) => (line, false),
                Plan::Run(line) => (line, true),
            };
            let mut shell = setting.shell(&line);
            shell.env("PROXY_PORT", compose_port.to_string());
            let outcome = run(shell, Duration::from_secs(600));
            println!(
                "{}: `{line}` exited {:?}\n{}",
                command.place, outcome.code, outcome.output
            );
            let ok = match (must_pass, outcome.code) {
                (true, Some(0)) => true,
                // An untouched exercise fails its check, and says what is wrong.
                (false, Some(1)) => outcome.output.contains("hint"),
                _ => false,
            };
            if !ok {
                failures.push(format!(
                    "{}: `{}` (run as `{line}`) exited {:?}:\n{}",
                    command.place, command.text, outcome.code, outcome.output
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn commands_are_read_from_sh_blocks_with_continuations_and_without_comments() {
    let page = "text\n```sh\n# a comment\ncargo run -p lab -- scenario \\\n  routing\n\ncurl http://localhost:8080/  # why\n```\n```toml\nx = 1\n```\n";
    let found = commands("p.md", page, usize::MAX);
    assert_eq!(commands("p.md", page, 0).len(), 0);
    let texts: Vec<&str> = found.iter().map(|c| c.text.as_str()).collect();
    assert_eq!(
        texts,
        [
            "cargo run -p lab -- scenario routing",
            "curl http://localhost:8080/  # why"
        ]
    );
    assert_eq!(found[0].place, "p.md:4");
    assert_eq!(
        plan("cargo run --release -p lab -- bench --seconds 30"),
        Some(Plan::Run("\"$LAB\" bench --seconds 1".to_owned()))
    );
    assert_eq!(plan("cargo run -p lab -- up --port 0"), Some(Plan::Up));
    assert_eq!(
        plan("cargo run -p lab -- check 04"),
        Some(Plan::Check("\"$LAB\" check 04".to_owned()))
    );
    assert_eq!(
        plan("echo open-sesame | cargo run -p proxy -- hash-password"),
        Some(Plan::Run(
            "echo open-sesame | \"$PROXY\" hash-password".to_owned()
        ))
    );
    assert_eq!(plan("echo x | rm -rf /"), None);
    assert_eq!(plan("rm -rf /"), None);
}

#[test]
fn the_index_lists_every_chapter_from_01_to_15_in_order() {
    let index = std::fs::read_to_string(root().join("docs/README.md")).expect("docs/README.md");
    let chapters: Vec<String> = pages()
        .into_iter()
        .filter_map(|(page, _)| page.strip_prefix("docs/").map(str::to_owned))
        .collect();
    let numbers: Vec<String> = chapters.iter().map(|c| c[..2].to_owned()).collect();
    let expected: Vec<String> = (1..=15).map(|n| format!("{n:02}")).collect();
    assert_eq!(
        numbers, expected,
        "the course is chapters 01 to 15, one file each"
    );
    let mut last = 0;
    for chapter in &chapters {
        let link = format!("]({chapter})");
        let at = index
            .find(&link)
            .unwrap_or_else(|| panic!("docs/README.md does not link to {chapter}"));
        assert!(at > last, "docs/README.md lists {chapter} out of order");
        last = at;
    }
}

#[test]
fn every_chapter_ends_with_a_link_to_the_next() {
    let chapters: Vec<String> = pages()
        .into_iter()
        .filter_map(|(page, _)| page.strip_prefix("docs/").map(str::to_owned))
        .collect();
    for pair in chapters.windows(2) {
        let page = std::fs::read_to_string(root().join("docs").join(&pair[0])).expect("the page");
        let tail: Vec<&str> = page.lines().rev().take(3).collect();
        let link = format!("]({})", pair[1]);
        assert!(
            tail.iter().any(|line| line.contains(&link)),
            "docs/{} does not end with `Next: [...]({})`",
            pair[0],
            pair[1]
        );
    }
}
