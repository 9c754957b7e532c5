//! The three binaries as a learner runs them: real processes, real ports.

mod common;

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use hyper::StatusCode;

/// Upper bound for a process to print a line or exit: generous, since it is
/// only there so a broken binary fails the test instead of hanging it.
const PATIENCE: Duration = Duration::from_secs(60);

/// A child process that is killed when the test ends, pass or fail.
struct Running {
    child: Child,
    stdout_lines: mpsc::Receiver<String>,
}

impl Running {
    /// Starts `program` with `LISTEN=127.0.0.1:0` plus `envs`, reading its
    /// stdout line by line on a helper thread.
    fn start(program: &str, args: &[&str], envs: &[(&str, &str)]) -> Self {
        let mut child = Command::new(program)
            .args(args)
            .env("LISTEN", "127.0.0.1:0")
            .env_remove("RUST_LOG")
            .envs(envs.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|err| panic!("cannot start {program}: {err}"));
        let stdout = child.stdout.take().expect("stdout is piped");
        let (send, stdout_lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if send.send(line).is_err() {
                    break;
                }
            }
        });
        Self {
            child,
            stdout_lines,
        }
    }

    fn next_line(&self) -> String {
        self.stdout_lines
            .recv_timeout(PATIENCE)
            .expect("the process prints its next line in time")
    }

    /// Waits for the process to exit by itself, killing it if it takes too long.
    fn wait_for_exit(&mut self) -> ExitStatus {
        let pid = self.child.id().to_string();
        let child = &mut self.child;
        std::thread::scope(|scope| {
            let (send, exited) = mpsc::channel();
            scope.spawn(move || send.send(child.wait()).ok());
            match exited.recv_timeout(PATIENCE) {
                Ok(status) => status.expect("the exit status is readable"),
                Err(_) => {
                    Command::new("kill").args(["-KILL", &pid]).status().ok();
                    panic!("the process did not exit in time");
                }
            }
        })
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        // Ignore errors: the process may have exited already.
        self.child.kill().ok();
        self.child.wait().ok();
    }
}

/// The address in a `... listening on http://ADDR` line.
fn listening_address<'a>(line: &'a str, prefix: &str) -> &'a str {
    line.strip_prefix(prefix)
        .and_then(|rest| rest.strip_prefix(" listening on http://"))
        .unwrap_or_else(|| panic!("unexpected line {line:?}"))
}

#[test]
fn tasks_api_exits_with_code_1_and_explains_why_when_the_database_is_garbage() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = dir.path().join("tasks.db");
    std::fs::write(
        &path,
        b"this is not a database, just some bytes. ".repeat(100),
    )
    .expect("the garbage file is written");

    let mut child = Command::new(env!("CARGO_BIN_EXE_tasks-api"))
        .env("LISTEN", "127.0.0.1:0")
        .env("DB_FILE_PATH", &path)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("tasks-api starts");
    // Read both pipes to the end (the process closes them when it exits) on
    // helper threads, so a process that does not exit fails by timeout.
    let (send, outcome) = mpsc::channel();
    let mut stdout = child.stdout.take().expect("stdout is piped");
    let mut stderr = child.stderr.take().expect("stderr is piped");
    std::thread::spawn(move || {
        let mut out = String::new();
        let mut err = String::new();
        stdout.read_to_string(&mut out).ok();
        stderr.read_to_string(&mut err).ok();
        send.send((out, err)).ok();
    });
    let (stdout, stderr) = match outcome.recv_timeout(PATIENCE) {
        Ok(output) => output,
        Err(_) => {
            child.kill().ok();
            panic!("tasks-api did not exit on a broken database");
        }
    };
    let status = child.wait().expect("tasks-api's status is readable");

    assert_eq!(status.code(), Some(1), "stderr: {stderr}");
    assert_eq!(stdout, "", "nothing is announced on stdout");
    let expected = format!(
        "tasks-api: database migration failed for {}: file is not a database; \
         move or delete the file, or point DB_FILE_PATH at another path\n",
        path.display()
    );
    assert!(stderr.ends_with(&expected), "stderr: {stderr}");
    assert!(!stderr.contains("panicked"), "stderr: {stderr}");
}

#[tokio::test]
async fn tasks_api_starts_with_a_fresh_database_and_announces_its_address() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = dir.path().join("data").join("tasks.db");
    let path_text = path.to_str().expect("the temporary path is UTF-8");

    let server = Running::start(
        env!("CARGO_BIN_EXE_tasks-api"),
        &[],
        &[("DB_FILE_PATH", path_text)],
    );

    assert_eq!(
        server.next_line(),
        format!(
            "tasks-api: database {path_text} at schema version {}",
            backends::tasks_api::LATEST_SCHEMA_VERSION
        )
    );
    let line = server.next_line();
    let addr = listening_address(&line, "tasks-api");
    assert!(addr.starts_with("127.0.0.1:"), "{line}");
    assert!(path.is_file(), "the database file was created");

    let reply = common::get(&format!("http://{addr}/tasks")).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.json(), serde_json::json!([]));
}

#[tokio::test]
async fn whoami_binary_announces_its_name_and_answers_with_it() {
    let server = Running::start(
        env!("CARGO_BIN_EXE_whoami"),
        &["--name", "whoami-from-cli"],
        &[],
    );

    let line = server.next_line();
    let addr = listening_address(&line, "whoami whoami-from-cli");

    let reply = common::get(&format!("http://{addr}/hello")).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.json()["name"], "whoami-from-cli");
    assert_eq!(reply.header("x-served-by"), Some("whoami-from-cli"));
}

#[tokio::test]
async fn whoami_binary_takes_its_name_from_the_environment() {
    let server = Running::start(
        env!("CARGO_BIN_EXE_whoami"),
        &[],
        &[("WHOAMI_NAME", "whoami-from-env")],
    );

    let line = server.next_line();
    let addr = listening_address(&line, "whoami whoami-from-env");

    let reply = common::get(&format!("http://{addr}/")).await;
    assert_eq!(reply.json()["name"], "whoami-from-env");
}

#[tokio::test]
async fn frontend_binary_announces_its_address_and_serves_the_page() {
    let server = Running::start(env!("CARGO_BIN_EXE_frontend"), &[], &[]);

    let line = server.next_line();
    let addr = listening_address(&line, "frontend");

    let reply = common::get(&format!("http://{addr}/")).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert!(reply.text().contains("/api/whoami"));
}

#[cfg(unix)]
#[test]
fn whoami_binary_exits_cleanly_on_sigterm() {
    let mut server = Running::start(env!("CARGO_BIN_EXE_whoami"), &["--name", "stopping"], &[]);
    // The binary installs its signal handlers before it prints this line.
    let line = server.next_line();
    let addr = listening_address(&line, "whoami stopping").to_owned();
    let runtime = tokio::runtime::Runtime::new().expect("a tokio runtime");
    let reply = runtime.block_on(common::get(&format!("http://{addr}/health")));
    assert_eq!(reply.status, StatusCode::OK);

    let status = Command::new("kill")
        .args(["-TERM", &server.child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success());

    let status = server.wait_for_exit();
    assert!(status.success(), "whoami exited with {status}");
}

/// `BINARY --probe` with `LISTEN=listen`: its exit status and its one line.
fn probe(program: &str, listen: &str) -> (ExitStatus, String) {
    let output = Command::new(program)
        .arg("--probe")
        .env("LISTEN", listen)
        // A probe must not touch the database: this path cannot be created.
        .env("DB_FILE_PATH", "/nonexistent/dir/tasks.db")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|err| panic!("cannot run {program} --probe: {err}"));
    (
        output.status,
        String::from_utf8_lossy(&output.stdout).into_owned(),
    )
}

#[test]
fn every_binary_probes_a_running_copy_of_itself_as_healthy_and_a_closed_port_as_not() {
    let tasks_dir = tempfile::tempdir().expect("a temporary directory");
    let db = tasks_dir.path().join("tasks.db");
    let db_text = db.to_str().expect("the temporary path is UTF-8");
    for (program, prefix, envs) in [
        (env!("CARGO_BIN_EXE_frontend"), "frontend", vec![]),
        (
            env!("CARGO_BIN_EXE_whoami"),
            "whoami probed",
            vec![("WHOAMI_NAME", "probed")],
        ),
        (
            env!("CARGO_BIN_EXE_tasks-api"),
            "tasks-api",
            vec![("DB_FILE_PATH", db_text)],
        ),
    ] {
        let server = Running::start(program, &[], &envs);
        let mut line = server.next_line();
        if prefix == "tasks-api" {
            line = server.next_line(); // after the migration's line
        }
        let addr = listening_address(&line, prefix).to_owned();
        // As in a container: LISTEN=0.0.0.0:PORT is probed on 127.0.0.1.
        let port = addr.rsplit(':').next().expect("a port");
        let (status, said) = probe(program, &format!("0.0.0.0:{port}"));
        assert!(status.success(), "{prefix}: {status}: {said}");
        assert!(said.starts_with("healthy: GET /"), "{prefix}: {said}");
        drop(server);

        let (status, said) = probe(program, &addr);
        assert_eq!(status.code(), Some(1), "{prefix}: {said}");
        assert!(said.starts_with("unhealthy: "), "{prefix}: {said}");
    }
}
