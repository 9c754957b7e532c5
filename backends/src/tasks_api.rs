//! tasks-api: a small JSON API for a to-do list, stored in SQLite, that brings
//! its database schema up to date before it serves a single request.
//!
//! Real applications behind a proxy usually own a database, and their schema
//! changes over time. Each change is a numbered *migration*; the database
//! remembers the number of the last one applied (SQLite keeps it in the file
//! header as `user_version`), so at start-up the service applies only the
//! missing ones. If that fails the service refuses to start and says why: a
//! proxy in front of it then reports the backend as down, instead of the
//! service answering every request with an error.
//!
//! The routes are the classic create/read/update/delete set:
//!
//! | request                | answer                                        |
//! |------------------------|-----------------------------------------------|
//! | `GET /`                | `{"status":"ok"}`                              |
//! | `GET /tasks`           | every task, ordered by id                      |
//! | `POST /tasks`          | 201 with the new task and a `Location` header  |
//! | `GET /tasks/{id}`      | the task, or 404                               |
//! | `PATCH /tasks/{id}`    | the updated task, or 404                       |
//! | `DELETE /tasks/{id}`   | 204, or 404                                    |
//!
//! Every error is a JSON object `{"error": "..."}` with a fitting status.
//!
//! Run with: `cargo run -p backends --bin tasks-api -- --db data/tasks.db`

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::extract::rejection::{JsonRejection, PathRejection};
use axum::extract::{FromRequest, FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use rusqlite::{Connection, OptionalExtension, Row, params};
use rusqlite_migration::{M, MigrationDefinitionError, Migrations};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// The schema version a database has once every migration has run, which is
/// the number of migrations defined in this module (a unit test keeps the two
/// in step).
pub const LATEST_SCHEMA_VERSION: u32 = 3;

/// Longest accepted task title, in characters.
pub const MAX_TITLE_CHARS: usize = 200;

/// How long a query waits for a lock held by another connection (another
/// process using the same file, say) before giving up with "database is locked".
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// The schema's history, oldest first. Migration N takes the schema from
/// version N-1 to version N.
///
/// Never edit a migration that has shipped: databases out there already ran
/// it and will not run it again. Append a new one instead.
fn migrations() -> Migrations<'static> {
    Migrations::new(vec![
        // 1: the first release stored titles only.
        M::up(
            "CREATE TABLE tasks (
                id INTEGER PRIMARY KEY AUTOINCREMENT,
                title TEXT NOT NULL
            );",
        ),
        // 2: tasks can be ticked off. Existing rows take the default.
        M::up("ALTER TABLE tasks ADD COLUMN done INTEGER NOT NULL DEFAULT 0;"),
        // 3: tasks remember when they were created. SQLite cannot add a column
        // whose default is computed, so existing rows are backfilled instead.
        M::up(
            "ALTER TABLE tasks ADD COLUMN created_at TEXT NOT NULL DEFAULT '';
             UPDATE tasks SET created_at = datetime('now') WHERE created_at = '';",
        ),
    ])
}

/// What can go wrong between the service and its database.
///
/// The messages are meant for the person starting the service: each says what
/// failed, for which file, and what to do about it. Each message already
/// includes the underlying error, so that error is not also exposed as
/// `source()`: printing the whole chain would say it twice.
#[derive(Debug, thiserror::Error)]
pub enum TasksError {
    /// The directory that should hold the database file could not be created.
    #[error(
        "cannot create directory {} for the database: {reason}; create it yourself, or point DB_FILE_PATH at a writable path",
        .dir.display()
    )]
    CreateDir {
        /// The directory that could not be created.
        dir: PathBuf,
        /// Why.
        reason: std::io::Error,
    },

    /// SQLite could not open (or create) the database file.
    #[error(
        "cannot open database {}: {reason}; check that the path is a file you may write, or point DB_FILE_PATH at another path",
        .path.display()
    )]
    Open {
        /// The database file.
        path: PathBuf,
        /// Why.
        reason: rusqlite::Error,
    },

    /// Bringing the schema up to date failed; the service must not start.
    #[error(
        "database migration failed for {}: {}; {}",
        .path.display(),
        migration_problem(.reason),
        migration_hint(.reason)
    )]
    Migrate {
        /// The database file.
        path: PathBuf,
        /// Why.
        reason: rusqlite_migration::Error,
    },

    /// A query failed while the service was running.
    #[error("database query failed: {0}")]
    Query(rusqlite::Error),

    /// The background thread running a query panicked or was cancelled.
    #[error("database worker stopped unexpectedly: {0}")]
    Worker(tokio::task::JoinError),
}

impl From<rusqlite::Error> for TasksError {
    fn from(error: rusqlite::Error) -> Self {
        Self::Query(error)
    }
}

impl From<tokio::task::JoinError> for TasksError {
    fn from(error: tokio::task::JoinError) -> Self {
        Self::Worker(error)
    }
}

/// The part of a migration error worth showing: the SQLite message itself
/// (such as "file is not a database") rather than the SQL that hit it.
fn migration_problem(error: &rusqlite_migration::Error) -> String {
    match error {
        rusqlite_migration::Error::RusqliteError { err, .. } => err.to_string(),
        rusqlite_migration::Error::MigrationDefinition(
            MigrationDefinitionError::DatabaseTooFarAhead,
        ) => format!(
            "its schema is newer than this tasks-api knows (version {LATEST_SCHEMA_VERSION})"
        ),
        other => other.to_string(),
    }
}

/// What the person starting the service can do about a failed migration.
fn migration_hint(error: &rusqlite_migration::Error) -> &'static str {
    match error {
        rusqlite_migration::Error::MigrationDefinition(
            MigrationDefinitionError::DatabaseTooFarAhead,
        ) => "run the newer tasks-api that created it, or point DB_FILE_PATH at another path",
        _ => "move or delete the file, or point DB_FILE_PATH at another path",
    }
}

/// A handle on the tasks database, cheap to clone and share between requests.
///
/// A SQLite connection is blocking and serves one query at a time, so it sits
/// behind a mutex and every query runs on tokio's blocking thread pool, where
/// waiting on disk does not stall the tasks serving other requests.
#[derive(Clone)]
pub struct Db {
    conn: Arc<Mutex<Connection>>,
}

impl std::fmt::Debug for Db {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Db").finish_non_exhaustive()
    }
}

/// Opens (creating if needed) the database at `path` and migrates it to
/// [`LATEST_SCHEMA_VERSION`]. The parent directory is created if missing.
///
/// Migrations that already ran are not run again, so opening the same file
/// twice is safe.
pub fn open(path: &Path) -> Result<Db, TasksError> {
    if let Some(dir) = path.parent().filter(|dir| !dir.as_os_str().is_empty()) {
        fs::create_dir_all(dir).map_err(|reason| TasksError::CreateDir {
            dir: dir.to_owned(),
            reason,
        })?;
    }
    let conn = Connection::open(path).map_err(|reason| TasksError::Open {
        path: path.to_owned(),
        reason,
    })?;
    Db::prepare(conn, path)
}

/// Opens a fresh, migrated database that lives in memory and disappears with
/// the [`Db`]: handy for tests and for trying the API out.
pub fn open_in_memory() -> Result<Db, TasksError> {
    let path = Path::new(":memory:");
    let conn = Connection::open_in_memory().map_err(|reason| TasksError::Open {
        path: path.to_owned(),
        reason,
    })?;
    Db::prepare(conn, path)
}

impl Db {
    /// Migrates a freshly opened connection, then tunes it for a web service.
    fn prepare(mut conn: Connection, path: &Path) -> Result<Self, TasksError> {
        let open_error = |reason| TasksError::Open {
            path: path.to_owned(),
            reason,
        };
        conn.busy_timeout(BUSY_TIMEOUT).map_err(open_error)?;

        migrations()
            .to_latest(&mut conn)
            .map_err(|reason| TasksError::Migrate {
                path: path.to_owned(),
                reason,
            })?;

        // Write-ahead logging lets readers carry on while a write is in
        // progress. An in-memory database answers "memory" and stays as it is.
        let mode: String = conn
            .pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))
            .map_err(open_error)?;
        tracing::debug!("database {} uses journal mode {mode}", path.display());

        Ok(Self {
            conn: Arc::new(Mutex::new(conn)),
        })
    }

    /// The schema version recorded in the database: [`LATEST_SCHEMA_VERSION`]
    /// once [`open`] has succeeded.
    pub fn schema_version(&self) -> Result<u32, TasksError> {
        let conn = self.conn.lock().unwrap_or_else(PoisonError::into_inner);
        Ok(conn.pragma_query_value(None, "user_version", |row| row.get(0))?)
    }

    /// Every task, ordered by id.
    pub async fn list_tasks(&self) -> Result<Vec<Task>, TasksError> {
        self.call(|conn| {
            let mut statement =
                conn.prepare("SELECT id, title, done, created_at FROM tasks ORDER BY id")?;
            let tasks = statement.query_map([], Task::from_row)?;
            tasks.collect()
        })
        .await
    }

    /// Stores a new task that is not done yet. The title is stored as given:
    /// checking it is the HTTP layer's job.
    pub async fn create_task(&self, title: String) -> Result<Task, TasksError> {
        self.call(move |conn| {
            conn.query_row(
                "INSERT INTO tasks (title, created_at) VALUES (?1, datetime('now'))
                 RETURNING id, title, done, created_at",
                params![title],
                Task::from_row,
            )
        })
        .await
    }

    /// The task with this id, or `None` if there is none.
    pub async fn get_task(&self, id: i64) -> Result<Option<Task>, TasksError> {
        self.call(move |conn| {
            conn.query_row(
                "SELECT id, title, done, created_at FROM tasks WHERE id = ?1",
                params![id],
                Task::from_row,
            )
            .optional()
        })
        .await
    }

    /// Applies the given changes, leaving out the fields that are `None`, and
    /// returns the updated task, or `None` if there is no task with this id.
    pub async fn update_task(
        &self,
        id: i64,
        changes: TaskChanges,
    ) -> Result<Option<Task>, TasksError> {
        self.call(move |conn| {
            conn.query_row(
                "UPDATE tasks SET title = COALESCE(?2, title), done = COALESCE(?3, done)
                 WHERE id = ?1
                 RETURNING id, title, done, created_at",
                params![id, changes.title, changes.done],
                Task::from_row,
            )
            .optional()
        })
        .await
    }

    /// Deletes the task; `false` if there was no task with this id.
    pub async fn delete_task(&self, id: i64) -> Result<bool, TasksError> {
        self.call(move |conn| conn.execute("DELETE FROM tasks WHERE id = ?1", params![id]))
            .await
            .map(|deleted| deleted > 0)
    }

    /// Runs `query` on the blocking thread pool with the connection locked.
    async fn call<T, F>(&self, query: F) -> Result<T, TasksError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    {
        let conn = Arc::clone(&self.conn);
        let result = tokio::task::spawn_blocking(move || {
            // A panic in an earlier query poisons the mutex, but the
            // connection itself is still usable: SQLite rolled back whatever
            // that query left unfinished.
            let conn = conn.lock().unwrap_or_else(PoisonError::into_inner);
            query(&conn)
        })
        .await?;
        Ok(result?)
    }
}

/// A task as stored and as sent over the API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Task {
    /// Assigned by the database, never reused.
    pub id: i64,
    /// What to do, 1 to [`MAX_TITLE_CHARS`] characters.
    pub title: String,
    /// Whether it has been done.
    pub done: bool,
    /// When it was created, in UTC, as SQLite writes it: `YYYY-MM-DD HH:MM:SS`.
    pub created_at: String,
}

impl Task {
    fn from_row(row: &Row<'_>) -> rusqlite::Result<Self> {
        Ok(Self {
            id: row.get(0)?,
            title: row.get(1)?,
            done: row.get(2)?,
            created_at: row.get(3)?,
        })
    }
}

/// Body of `POST /tasks`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewTask {
    /// The new task's title.
    pub title: String,
}

/// Body of `PATCH /tasks/{id}`: only the fields present are changed.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskChanges {
    /// New title, if it changes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// New done state, if it changes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub done: Option<bool>,
}

/// The tasks API over the database `db`.
pub fn app(db: Db) -> Router {
    Router::new()
        .route("/", get(status))
        .route("/tasks", get(list_tasks).post(create_task))
        .route(
            "/tasks/{id}",
            get(get_task).patch(update_task).delete(delete_task),
        )
        .fallback(no_such_route)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(db)
}

async fn status() -> Json<serde_json::Value> {
    Json(serde_json::json!({ "status": "ok" }))
}

async fn list_tasks(State(db): State<Db>) -> Result<Json<Vec<Task>>, ApiError> {
    Ok(Json(db.list_tasks().await?))
}

async fn create_task(
    State(db): State<Db>,
    ApiJson(new): ApiJson<NewTask>,
) -> Result<Response, ApiError> {
    let title = checked_title(&new.title)?;
    let task = db.create_task(title).await?;
    // Location tells the client where the new resource lives. It is a path
    // on this service: a proxy that mounts the API under a prefix must
    // rewrite it, or the client will look in the wrong place.
    let location = format!("/tasks/{}", task.id);
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        Json(task),
    )
        .into_response())
}

async fn get_task(State(db): State<Db>, ApiPath(id): ApiPath<i64>) -> Result<Json<Task>, ApiError> {
    let task = db
        .get_task(id)
        .await?
        .ok_or_else(|| ApiError::no_task(id))?;
    Ok(Json(task))
}

async fn update_task(
    State(db): State<Db>,
    ApiPath(id): ApiPath<i64>,
    ApiJson(mut changes): ApiJson<TaskChanges>,
) -> Result<Json<Task>, ApiError> {
    if let Some(title) = &changes.title {
        changes.title = Some(checked_title(title)?);
    }
    let task = db
        .update_task(id, changes)
        .await?
        .ok_or_else(|| ApiError::no_task(id))?;
    Ok(Json(task))
}

async fn delete_task(
    State(db): State<Db>,
    ApiPath(id): ApiPath<i64>,
) -> Result<StatusCode, ApiError> {
    if db.delete_task(id).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::no_task(id))
    }
}

async fn no_such_route(method: Method, uri: Uri) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        format!("no route for {method} {}", uri.path()),
    )
}

async fn method_not_allowed(method: Method, uri: Uri) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("{method} is not allowed on {}", uri.path()),
    )
}

/// Trims the title and checks that it is neither blank nor too long.
fn checked_title(title: &str) -> Result<String, ApiError> {
    let title = title.trim();
    if title.is_empty() {
        return Err(ApiError::unprocessable(
            "title must not be empty".to_owned(),
        ));
    }
    let length = title.chars().count();
    if length > MAX_TITLE_CHARS {
        return Err(ApiError::unprocessable(format!(
            "title must be at most {MAX_TITLE_CHARS} characters, got {length}"
        )));
    }
    Ok(title.to_owned())
}

/// An error answer: a status and a JSON body `{"error": message}`.
#[derive(Debug)]
struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, message: String) -> Self {
        Self { status, message }
    }

    fn unprocessable(message: String) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, message)
    }

    fn no_task(id: i64) -> Self {
        Self::new(StatusCode::NOT_FOUND, format!("no task with id {id}"))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({ "error": self.message });
        (self.status, Json(body)).into_response()
    }
}

impl From<TasksError> for ApiError {
    /// Database trouble is the service's fault, not the client's: log the
    /// details for the operator and give the client a 500 without them.
    fn from(error: TasksError) -> Self {
        tracing::error!("{error}");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "database error; the details are in the tasks-api log".to_owned(),
        )
    }
}

impl From<JsonRejection> for ApiError {
    /// Keeps axum's status (400 for broken JSON, 422 for JSON of the wrong
    /// shape, 415 without a JSON content type) but answers in JSON.
    fn from(rejection: JsonRejection) -> Self {
        Self::new(rejection.status(), rejection.body_text())
    }
}

impl From<PathRejection> for ApiError {
    fn from(rejection: PathRejection) -> Self {
        Self::new(rejection.status(), rejection.body_text())
    }
}

/// `axum::Json`, but a body that cannot be read as `T` is answered with a JSON
/// error instead of axum's plain-text one.
struct ApiJson<T>(T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let Json(value) = Json::<T>::from_request(request, state).await?;
        Ok(Self(value))
    }
}

/// `axum::extract::Path`, but a segment that does not parse (such as
/// `/tasks/abc`) is answered with a JSON error.
struct ApiPath<T>(T);

impl<S, T> FromRequestParts<S> for ApiPath<T>
where
    S: Send + Sync,
    T: DeserializeOwned + Send,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let axum::extract::Path(value) =
            axum::extract::Path::<T>::from_request_parts(parts, state).await?;
        Ok(Self(value))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_migrations_are_valid_and_counted_in_the_latest_version() {
        let migrations = migrations();
        migrations
            .validate()
            .expect("migrations apply to an empty database");
        let mut conn = Connection::open_in_memory().expect("in-memory database opens");
        migrations.to_latest(&mut conn).expect("migrations apply");
        let version: u32 = conn
            .pragma_query_value(None, "user_version", |row| row.get(0))
            .expect("user_version is readable");
        assert_eq!(version, LATEST_SCHEMA_VERSION);
    }

    #[test]
    fn rows_written_by_the_first_schema_survive_the_later_migrations() {
        let mut conn = Connection::open_in_memory().expect("in-memory database opens");
        migrations()
            .to_version(&mut conn, 1)
            .expect("first migration applies");
        conn.execute("INSERT INTO tasks (title) VALUES ('from version 1')", [])
            .expect("version 1 accepts a title-only row");

        let db = Db::prepare(conn, Path::new(":memory:")).expect("later migrations apply");
        assert_eq!(
            db.schema_version().expect("version readable"),
            LATEST_SCHEMA_VERSION
        );
        let conn = db.conn.lock().expect("no other user of the mutex");
        let task = conn
            .query_row(
                "SELECT id, title, done, created_at FROM tasks",
                [],
                Task::from_row,
            )
            .expect("the old row is still there");
        assert_eq!(task.title, "from version 1");
        assert!(!task.done);
        assert!(
            !task.created_at.is_empty(),
            "created_at was backfilled by migration 3"
        );
    }

    #[test]
    fn titles_are_trimmed_and_checked() {
        assert_eq!(
            checked_title("  buy milk ").expect("a normal title passes"),
            "buy milk"
        );
        assert!(checked_title("   ").is_err());
        assert!(checked_title(&"é".repeat(MAX_TITLE_CHARS)).is_ok());
        assert!(checked_title(&"x".repeat(MAX_TITLE_CHARS + 1)).is_err());
    }

    #[test]
    fn a_database_from_a_newer_version_is_refused_with_advice() {
        let conn = Connection::open_in_memory().expect("in-memory database opens");
        conn.pragma_update(None, "user_version", LATEST_SCHEMA_VERSION + 1)
            .expect("user_version is writable");
        let Err(error) = Db::prepare(conn, Path::new("data/tasks.db")) else {
            panic!("a database ahead of the code must be refused");
        };
        let message = error.to_string();
        assert!(
            message.starts_with("database migration failed for data/tasks.db: its schema is newer"),
            "{message}"
        );
        assert!(message.contains("run the newer tasks-api"), "{message}");
    }
}
