//! The course's exercises: every reference solution passes its check, every
//! starter as shipped fails it (a check that cannot fail teaches nothing),
//! and the learner's side (work copy, progress) works on a scratch folder.
//! The learner's own `work/` is never read here.

use lab::course::{self, CHAPTERS, Kind, Standing};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_solution_passes_and_every_starter_fails_its_check() {
    for chapter in CHAPTERS {
        let name = chapter.name();
        let file = chapter.kind.file_name();
        let solution = course::check(
            chapter,
            chapter.solution,
            &format!("lab/solutions/{name}/{file}"),
        )
        .await
        .expect("the check runs");
        assert!(
            solution.passed(),
            "{name}: the solution fails:\n{:#?}\n{}",
            solution.failures,
            solution.transcript
        );
        assert!(
            solution.expectations > 0,
            "{name}: a check without expectations"
        );

        let starter = course::check(
            chapter,
            chapter.starter,
            &format!("lab/exercises/{name}/{file}"),
        )
        .await
        .expect("the check runs");
        assert!(
            !starter.passed(),
            "{name}: the untouched starter passes its check:\n{}",
            starter.transcript
        );
        // It fails on what the exercise is about, not on a broken file.
        assert!(
            starter
                .failures
                .iter()
                .all(|f| !f.contains("does not start")),
            "{name}: the starter does not even start: {:#?}",
            starter.failures
        );
    }
}

#[test]
fn every_exercise_has_hints_and_a_chapter_page() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    for chapter in CHAPTERS {
        assert!(
            chapter.hint_lines().len() >= 2,
            "{}: give at least two hints",
            chapter.name()
        );
        if chapter.kind == Kind::Config {
            chapter.check_scenario().expect("the check parses");
        }
        let page = std::fs::read_to_string(root.join(chapter.doc()))
            .unwrap_or_else(|e| panic!("{}: {e}", chapter.doc()));
        for section in ["## Exercise", "## Check it", "## Going further"] {
            assert!(
                page.contains(section),
                "{} has no `{section}` section",
                chapter.doc()
            );
        }
        let command = format!("cargo run -p lab -- check {:02}", chapter.number);
        assert!(
            page.contains(&command),
            "{} does not show `{command}`",
            chapter.doc()
        );
    }
    // Code exercises too, and the chapters that have only a code exercise.
    for exercise in lab::code_exercise::CODE_EXERCISES {
        assert!(
            exercise.hint_lines().len() >= 2,
            "{}: give at least two hints",
            exercise.id()
        );
        let page = std::fs::read_to_string(root.join(exercise.doc()))
            .unwrap_or_else(|e| panic!("{}: {e}", exercise.doc()));
        let command = format!("cargo run -p lab -- check {:02}", exercise.number);
        for needed in [
            "## Exercise",
            "## Check it",
            "## Going further",
            &command,
            &exercise.starter_path(),
            exercise.type_name,
        ] {
            assert!(
                page.contains(needed),
                "{} does not show `{needed}`",
                exercise.doc()
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_config_the_proxy_refuses_fails_with_the_proxys_message() {
    let chapter = course::chapter("02").expect("chapter 02");
    let broken = chapter
        .starter
        .replace("upstream = \"frontend\"", "upstream = \"frontnd\"");
    let verdict = course::check_config(chapter, &broken, "work/02-path-routing/proxy.toml")
        .await
        .expect("the check runs");
    assert!(!verdict.passed());
    let failure = verdict.failures.join("\n");
    assert!(
        failure.contains("work/02-path-routing/proxy.toml:"),
        "{failure}"
    );
    assert!(failure.contains("frontnd"), "{failure}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chapter_13s_starter_fails_for_its_three_reasons_and_the_trace_explains_two() {
    let chapter = course::chapter("13").expect("chapter 13");
    let file = "lab/exercises/13-observability/proxy.toml";
    let verdict = course::check_config(chapter, chapter.starter, file)
        .await
        .expect("the check runs");
    let failures = verdict.failures.join("\n");
    for reason in [
        "GET localhost/api/whoami: expected status 200, got 502 Bad Gateway",
        "GET localhost/api/tasks: expected status 200, got 404 Not Found",
        "the proxy sent no trace",
    ] {
        assert!(failures.contains(reason), "{reason}:\n{failures}");
    }
    // The 502 is a refused connection, every time, at the placeholder address.
    assert!(
        verdict.transcript.contains(
            "proxy-status: proxy-lab; error=connection_refused; details=\"upstream <closed>\""
        ),
        "{}",
        verdict.transcript
    );

    // With the trace on (step 1 of the exercise), the check shows why.
    let traced = chapter.starter.replacen(
        "local_ca_dir",
        "trace_from = [\"127.0.0.1/32\", \"::1/128\"]\nlocal_ca_dir",
        1,
    );
    let verdict = course::check_config(chapter, &traced, file)
        .await
        .expect("the check runs");
    assert!(!verdict.passed());
    assert!(
        !verdict.failures.join("\n").contains("no trace"),
        "{:#?}",
        verdict.failures
    );
    for line in [
        "| attempt 1: upstream `whoami-v1` has 1 server",
        "| <closed> failed after <ms>: the upstream refused the connection",
        "| path `/api/tasks`: no route of this server matches (its routes: `/api/whoami` (prefix))",
    ] {
        assert!(
            verdict.transcript.contains(line),
            "{line}:\n{}",
            verdict.transcript
        );
    }
}

#[test]
fn chapters_are_found_by_number_or_name_and_unknown_ones_are_listed() {
    for key in ["2", "02", "02-path-routing", "path-routing"] {
        assert_eq!(course::chapter(key).expect(key).number, 2);
    }
    let err = course::chapter("99")
        .expect_err("no chapter 99")
        .to_string();
    assert!(err.contains("02-path-routing"), "{err}");
}

#[test]
fn progress_follows_the_work_copy_and_forgets_a_pass_once_it_changes() {
    let root = tempfile::tempdir().expect("a scratch folder");
    let chapter = course::chapter("02").expect("chapter 02");
    let standing = |root| {
        course::progress(root)
            .into_iter()
            .find(|(c, _)| c.number == 2)
            .map(|(_, s)| s)
    };
    assert_eq!(standing(root.path()), Some(Standing::NotStarted));

    let (path, made) = course::work_copy(chapter, root.path()).expect("a work copy");
    assert!(made);
    assert_eq!(
        std::fs::read_to_string(&path).expect("read"),
        chapter.starter
    );
    assert_eq!(standing(root.path()), Some(Standing::InProgress));
    // A second call keeps the learner's edits.
    std::fs::write(&path, chapter.solution).expect("write");
    let (_, made) = course::work_copy(chapter, root.path()).expect("a work copy");
    assert!(!made);
    assert_eq!(
        std::fs::read_to_string(&path).expect("read"),
        chapter.solution
    );

    course::record_pass(chapter, root.path(), chapter.solution).expect("record");
    assert_eq!(standing(root.path()), Some(Standing::Solved));
    std::fs::write(&path, format!("{}\n# changed\n", chapter.solution)).expect("write");
    assert_eq!(standing(root.path()), Some(Standing::InProgress));
}

#[tokio::test]
async fn the_compose_starter_fails_on_each_mistake_in_plain_words_and_the_solution_passes() {
    let chapter = course::chapter("12").expect("chapter 12");
    assert_eq!(chapter.kind, Kind::Compose);
    assert!(
        chapter
            .work_file(std::path::Path::new("/repo"))
            .ends_with("work/12-containers/docker-compose.yml")
    );
    let verdict = course::check(
        chapter,
        chapter.starter,
        "work/12-containers/docker-compose.yml",
    )
    .await
    .expect("the check runs");
    let failures = verdict.failures.join("\n");
    for expected in [
        "service `whoami` publishes port 5000: only the proxy should be reachable from the host; remove its `ports:`",
        "service `frontend` publishes port 3000",
        "service `tasks-api` publishes port 8000",
        "service `tasks-api` listens on 127.0.0.1:8000 (LISTEN)",
        "service `frontend`'s healthcheck runs `curl`, which the image proxy-lab/frontend does not have",
        "service `tasks-api` has no healthcheck",
        "the proxy depends on `tasks-api` with no condition",
        "service `tasks-api` keeps its database (/data/tasks.db) in the container's writable layer",
        "service `whoami` sets `container_name: whoami`",
        "service `whoami` runs one container: add `scale: 3`",
    ] {
        assert!(
            failures.contains(expected),
            "missing {expected:?} in:\n{failures}"
        );
    }
    // The transcript lists every rule, each `ok` or `NO`.
    assert_eq!(
        verdict
            .transcript
            .lines()
            .filter(|l| l.starts_with("ok ") || l.starts_with("NO "))
            .count(),
        verdict.expectations,
        "{}",
        verdict.transcript
    );
    assert!(
        verdict
            .transcript
            .contains("ok   the proxy's config is mounted"),
        "{}",
        verdict.transcript
    );

    // A file that is not YAML fails with the file's name and the parser's place.
    let broken = course::check(
        chapter,
        "services:\n  proxy: [",
        "work/12-containers/docker-compose.yml",
    )
    .await
    .expect("the check runs");
    assert!(!broken.passed());
    assert!(
        broken.failures[0].starts_with("work/12-containers/docker-compose.yml: not valid YAML"),
        "{:?}",
        broken.failures
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chapter_06_a_redirect_alone_still_fails_on_hsts_sent_over_plain_http() {
    let chapter = course::chapter("06").expect("chapter 06");
    let half = chapter.starter.replace(
        "# TODO: HSTS over HTTPS only, and plain HTTP sent to HTTPS.",
        "redirect_https = true",
    );
    assert_ne!(half, chapter.starter, "the starter's TODO line moved");
    let verdict = course::check_config(chapter, &half, "work/06-https/proxy.toml")
        .await
        .expect("the check runs");
    // The redirect itself is right (the port is the HTTPS listener's) ...
    assert!(
        verdict
            .transcript
            .contains("location: https://apiclub.localhost:<https-port>/tasks?done=false"),
        "{}",
        verdict.transcript
    );
    // ... but the header rule still sends HSTS over plain HTTP.
    assert_eq!(
        verdict.failures,
        [
            "GET apiclub.localhost/tasks?done=false: expected strict-transport-security: (none), got 301 Moved Permanently"
        ],
        "{}",
        verdict.transcript
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chapter_10_a_route_alone_fails_when_the_proxy_closes_the_quiet_socket() {
    let chapter = course::chapter("10").expect("chapter 10");
    let route_only = format!(
        "{}\n[[servers.routes]]\npath = \"/ws\"\nexact = true\nupstream = \"whoami\"\n",
        chapter.starter
    );
    let verdict = course::check_config(chapter, &route_only, "work/10-websockets/proxy.toml")
        .await
        .expect("the check runs");
    // The handshake and the first message go through; the server's 1 s idle
    // timeout closes the tunnel during the 3 s of silence.
    assert!(
        verdict.transcript.contains("<- \"hello\"\n    .. silent for 3s\n    closed: the connection ended without a close frame"),
        "{}",
        verdict.transcript
    );
    assert_eq!(verdict.failures.len(), 1, "{:#?}", verdict.failures);
    assert!(
        verdict.failures[0].contains("expected the reply \"still there?\" to message 2"),
        "{:#?}",
        verdict.failures
    );
}
