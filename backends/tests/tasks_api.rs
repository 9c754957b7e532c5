//! The tasks API over real HTTP on a loopback port, and its database on disk.

mod common;

use backends::tasks_api::{self, LATEST_SCHEMA_VERSION, Task};
use common::{TestServer, get, send, send_json};
use hyper::StatusCode;
use hyper::body::Bytes;
use serde_json::json;

async fn start_in_memory() -> TestServer {
    let db = tasks_api::open_in_memory().expect("an in-memory database opens");
    TestServer::start(tasks_api::app(db)).await
}

fn task_from(reply: &common::Reply) -> Task {
    serde_json::from_slice(&reply.body).expect("the body is a task")
}

/// Asserts an error answer: the status, and a JSON body with a non-empty
/// `error` string.
fn assert_json_error(reply: &common::Reply, status: StatusCode) -> String {
    assert_eq!(reply.status, status, "body: {}", reply.text());
    assert_eq!(reply.header("content-type"), Some("application/json"));
    let message = reply.json()["error"]
        .as_str()
        .expect("the error body has an error string")
        .to_owned();
    assert!(!message.is_empty());
    message
}

#[tokio::test]
async fn tasks_api_root_reports_status_ok() {
    let server = start_in_memory().await;

    let reply = get(&server.url("/")).await;

    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.json(), json!({ "status": "ok" }));
    server.stop().await;
}

#[tokio::test]
async fn tasks_api_supports_a_full_create_read_update_delete_round_trip() {
    let server = start_in_memory().await;

    // Empty at first.
    let reply = get(&server.url("/tasks")).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.json(), json!([]));

    // Create two.
    let reply = send_json(
        "POST",
        &server.url("/tasks"),
        &json!({ "title": "  buy milk " }),
    )
    .await;
    assert_eq!(reply.status, StatusCode::CREATED);
    let milk = task_from(&reply);
    assert_eq!(
        reply.header("location"),
        Some(format!("/tasks/{}", milk.id).as_str())
    );
    assert_eq!(milk.title, "buy milk", "the title is trimmed");
    assert!(!milk.done);
    assert!(!milk.created_at.is_empty());

    let reply = send_json(
        "POST",
        &server.url("/tasks"),
        &json!({ "title": "walk the dog" }),
    )
    .await;
    assert_eq!(reply.status, StatusCode::CREATED);
    let dog = task_from(&reply);
    assert!(dog.id > milk.id);

    // Read them back, in id order, as a list and one by one.
    let reply = get(&server.url("/tasks")).await;
    let listed: Vec<Task> = serde_json::from_slice(&reply.body).expect("a list of tasks");
    assert_eq!(listed, vec![milk.clone(), dog.clone()]);

    let reply = get(&server.url(&format!("/tasks/{}", milk.id))).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(task_from(&reply), milk);

    // Update: one field at a time leaves the other alone.
    let url = server.url(&format!("/tasks/{}", milk.id));
    let reply = send_json("PATCH", &url, &json!({ "done": true })).await;
    assert_eq!(reply.status, StatusCode::OK);
    let updated = task_from(&reply);
    assert!(updated.done);
    assert_eq!(updated.title, "buy milk");

    let reply = send_json("PATCH", &url, &json!({ "title": "buy oat milk" })).await;
    assert_eq!(reply.status, StatusCode::OK);
    let updated = task_from(&reply);
    assert_eq!(updated.title, "buy oat milk");
    assert!(updated.done, "done is unchanged");
    assert_eq!(updated.created_at, milk.created_at);
    assert_eq!(task_from(&get(&url).await), updated);

    // Delete: gone afterwards.
    let reply = send("DELETE", &url, &[], Bytes::new()).await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT);
    assert!(reply.body.is_empty());
    assert_json_error(&get(&url).await, StatusCode::NOT_FOUND);

    let reply = get(&server.url("/tasks")).await;
    let listed: Vec<Task> = serde_json::from_slice(&reply.body).expect("a list of tasks");
    assert_eq!(listed, vec![dog]);

    server.stop().await;
}

#[tokio::test]
async fn tasks_api_rejects_blank_and_overlong_titles_with_422_json() {
    let server = start_in_memory().await;
    let url = server.url("/tasks");

    let message = assert_json_error(
        &send_json("POST", &url, &json!({ "title": "" })).await,
        StatusCode::UNPROCESSABLE_ENTITY,
    );
    assert!(message.contains("empty"), "{message}");
    assert_json_error(
        &send_json("POST", &url, &json!({ "title": " \t\n " })).await,
        StatusCode::UNPROCESSABLE_ENTITY,
    );
    let message = assert_json_error(
        &send_json("POST", &url, &json!({ "title": "x".repeat(201) })).await,
        StatusCode::UNPROCESSABLE_ENTITY,
    );
    assert!(message.contains("200"), "{message}");

    // Exactly 200 characters is fine.
    let reply = send_json("POST", &url, &json!({ "title": "x".repeat(200) })).await;
    assert_eq!(reply.status, StatusCode::CREATED);

    // PATCH checks titles the same way.
    let task_url = server.url(&format!("/tasks/{}", task_from(&reply).id));
    assert_json_error(
        &send_json("PATCH", &task_url, &json!({ "title": "  " })).await,
        StatusCode::UNPROCESSABLE_ENTITY,
    );

    // Nothing invalid was stored.
    let listed = get(&url).await.json();
    assert_eq!(listed.as_array().map(Vec::len), Some(1));
    server.stop().await;
}

#[tokio::test]
async fn tasks_api_answers_bad_bodies_with_json_errors() {
    let server = start_in_memory().await;
    let url = server.url("/tasks");
    let json_type = [("content-type", "application/json")];

    // Not JSON at all.
    let reply = send("POST", &url, &json_type, "{\"title\": ").await;
    assert_json_error(&reply, StatusCode::BAD_REQUEST);

    // JSON of the wrong shape.
    let reply = send_json("POST", &url, &json!({ "title": 5 })).await;
    assert_json_error(&reply, StatusCode::UNPROCESSABLE_ENTITY);
    let reply = send_json("POST", &url, &json!({ "name": "typo" })).await;
    assert_json_error(&reply, StatusCode::UNPROCESSABLE_ENTITY);
    let reply = send_json("PATCH", &server.url("/tasks/1"), &json!({ "done": "yes" })).await;
    assert_json_error(&reply, StatusCode::UNPROCESSABLE_ENTITY);

    // No JSON content type.
    let reply = send("POST", &url, &[], "{\"title\": \"x\"}").await;
    assert_json_error(&reply, StatusCode::UNSUPPORTED_MEDIA_TYPE);

    server.stop().await;
}

#[tokio::test]
async fn tasks_api_answers_404_json_for_an_unknown_task_id() {
    let server = start_in_memory().await;
    let url = server.url("/tasks/999");

    let message = assert_json_error(&get(&url).await, StatusCode::NOT_FOUND);
    assert_eq!(message, "no task with id 999");
    assert_json_error(
        &send_json("PATCH", &url, &json!({ "done": true })).await,
        StatusCode::NOT_FOUND,
    );
    assert_json_error(
        &send("DELETE", &url, &[], Bytes::new()).await,
        StatusCode::NOT_FOUND,
    );

    server.stop().await;
}

#[tokio::test]
async fn tasks_api_answers_json_errors_for_bad_ids_unknown_routes_and_methods() {
    let server = start_in_memory().await;

    assert_json_error(
        &get(&server.url("/tasks/abc")).await,
        StatusCode::BAD_REQUEST,
    );
    assert_json_error(
        &get(&server.url("/nothing/here")).await,
        StatusCode::NOT_FOUND,
    );
    let reply = send("PUT", &server.url("/tasks"), &[], Bytes::new()).await;
    assert_json_error(&reply, StatusCode::METHOD_NOT_ALLOWED);

    server.stop().await;
}

#[tokio::test]
async fn tasks_api_handles_concurrent_creates() {
    let server = start_in_memory().await;
    let url = server.url("/tasks");

    let creates = (0..20).map(|i| {
        let url = url.clone();
        tokio::spawn(async move {
            send_json("POST", &url, &json!({ "title": format!("task {i}") })).await
        })
    });
    let mut ids = Vec::new();
    for create in creates.collect::<Vec<_>>() {
        let reply = create.await.expect("the request task does not panic");
        assert_eq!(reply.status, StatusCode::CREATED);
        ids.push(task_from(&reply).id);
    }
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 20, "every task got its own id");

    let listed = get(&url).await.json();
    assert_eq!(listed.as_array().map(Vec::len), Some(20));
    server.stop().await;
}

#[test]
fn a_new_database_reaches_the_latest_schema_version() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    // The parent directories do not exist yet: open creates them.
    let path = dir.path().join("nested").join("data").join("tasks.db");

    let db = tasks_api::open(&path).expect("a new database opens");

    assert!(path.is_file());
    assert_eq!(
        db.schema_version().expect("the version is readable"),
        LATEST_SCHEMA_VERSION
    );
    let in_memory = tasks_api::open_in_memory().expect("an in-memory database opens");
    assert_eq!(
        in_memory.schema_version().expect("the version is readable"),
        LATEST_SCHEMA_VERSION
    );
}

#[tokio::test]
async fn reopening_a_database_keeps_its_tasks_and_does_not_migrate_again() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = dir.path().join("tasks.db");

    let db = tasks_api::open(&path).expect("a new database opens");
    let server = TestServer::start(tasks_api::app(db)).await;
    let reply = send_json(
        "POST",
        &server.url("/tasks"),
        &json!({ "title": "survive a restart" }),
    )
    .await;
    assert_eq!(reply.status, StatusCode::CREATED);
    let created = task_from(&reply);
    server.stop().await;

    // Migration 1 creates the tasks table without IF NOT EXISTS: if it ran
    // again, opening would fail with "table tasks already exists".
    let db = tasks_api::open(&path).expect("the database opens again");
    assert_eq!(
        db.schema_version().expect("the version is readable"),
        LATEST_SCHEMA_VERSION
    );
    let server = TestServer::start(tasks_api::app(db)).await;
    let reply = get(&server.url("/tasks")).await;
    let listed: Vec<Task> = serde_json::from_slice(&reply.body).expect("a list of tasks");
    assert_eq!(listed, vec![created]);
    server.stop().await;
}

#[test]
fn opening_a_file_that_is_not_a_database_explains_the_problem() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = dir.path().join("tasks.db");
    std::fs::write(&path, vec![0x5a_u8; 4096]).expect("the garbage file is written");

    let Err(error) = tasks_api::open(&path) else {
        panic!("a file of garbage must not open as a database");
    };

    let message = error.to_string();
    assert!(
        message.starts_with(&format!(
            "database migration failed for {}: file is not a database;",
            path.display()
        )),
        "{message}"
    );
    assert!(message.contains("DB_FILE_PATH"), "{message}");
}
