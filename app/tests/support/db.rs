//! One Postgres server per test binary, and a fresh database per test.
//!
//! The server is `DATABASE_URL` when set (its database is only used to run
//! `CREATE DATABASE`), otherwise a `testkit::Postgres` started on first use.

use std::io::Write as _;
use std::os::unix::process::CommandExt as _;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sqlx::postgres::PgPoolOptions;
use sqlx::{Connection as _, PgConnection, PgPool};

/// The shared server: an admin URL plus, for a local server, what keeps it
/// alive.
struct Server {
    admin_url: String,
    _local: Option<LocalServer>,
}

struct LocalServer {
    _postgres: testkit::Postgres,
    // Never waited for on purpose: the reaper outlives this process.
    _reaper: Mutex<Child>,
    // Write end of the reaper's stdin; see `start_local`.
    _reaper_stdin: Mutex<ChildStdin>,
}

static SERVER: OnceLock<Server> = OnceLock::new();

fn server() -> &'static Server {
    SERVER.get_or_init(|| match std::env::var("DATABASE_URL") {
        Ok(url) if !url.trim().is_empty() => Server { admin_url: url, _local: None },
        _ => start_local(),
    })
}

/// Starts a throwaway server (panicking with install instructions when the
/// PostgreSQL binaries are missing: tests never skip silently).
///
/// A `static` is never dropped, so `testkit::Postgres`'s own cleanup would not
/// run at exit. Instead a small reaper shell waits for EOF on a pipe whose
/// only writer is this process: when the test binary exits, however it
/// exits (even SIGKILL), the pipe closes and the reaper stops postgres and
/// removes its directory.
fn start_local() -> Server {
    let postgres = testkit::Postgres::start();
    let dir = postgres.data_dir().parent().expect("the data dir lives in a temp dir").to_path_buf();
    let script = r#"cat >/dev/null
kill -INT "$1" 2>/dev/null
i=0
while kill -0 "$1" 2>/dev/null && [ "$i" -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
rm -rf "$2""#;
    let mut reaper = Command::new("sh")
        .args(["-c", script, "pg-reaper"])
        .arg(postgres.pid().to_string())
        .arg(&dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        // Own process group: a Ctrl-C aimed at `cargo test` must not kill the
        // reaper before it has cleaned up.
        .process_group(0)
        .spawn()
        .expect("starting the postgres reaper (sh)");
    let mut stdin = reaper.stdin.take().expect("reaper stdin is piped");
    // Nothing to say; writing proves the pipe is open.
    stdin.write_all(b"").expect("writing to the reaper");
    Server {
        admin_url: postgres.url(),
        _local: Some(LocalServer {
            _postgres: postgres,
            _reaper: Mutex::new(reaper),
            _reaper_stdin: Mutex::new(stdin),
        }),
    }
}

/// An empty database of its own for one test; dropped with the value.
pub struct TestDb {
    pub url: String,
    name: String,
}

impl TestDb {
    /// Creates `t_<unique>` on the shared server.
    pub fn create() -> TestDb {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let nanos = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().subsec_nanos();
        let name = format!("t_{}_{}_{nanos}", std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed));
        let admin_url = &server().admin_url;
        admin_sql(admin_url, format!("CREATE DATABASE {name}"))
            .unwrap_or_else(|e| panic!("creating test database {name}: {e}"));
        TestDb { url: with_database(admin_url, &name), name }
    }

    /// A pool on this database.
    pub async fn pool(&self) -> PgPool {
        PgPoolOptions::new()
            .max_connections(4)
            .acquire_timeout(Duration::from_secs(10))
            .connect(&self.url)
            .await
            .unwrap_or_else(|e| panic!("connecting to {}: {e}", self.name))
    }

    /// A pool on this database with the app's migrations applied.
    pub async fn migrated_pool(&self) -> PgPool {
        let pool = self.pool().await;
        app::db::migrator().run(&pool).await.expect("running migrations");
        pool
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        // Matters with an external DATABASE_URL, which would otherwise fill
        // up with test databases. FORCE disconnects pools still open.
        let _ = admin_sql(&server().admin_url, format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name));
    }
}

/// A lazy pool to a port nothing listens on: the "database is down" case.
pub fn unreachable_pool() -> PgPool {
    PgPoolOptions::new()
        .acquire_timeout(Duration::from_millis(300))
        .connect_lazy(&unreachable_url())
        .expect("a valid url")
}

/// A database URL that refuses connections.
pub fn unreachable_url() -> String {
    format!("postgres://postgres@127.0.0.1:{}/nowhere", testkit::free_port())
}

/// Runs one statement over a fresh connection, on its own thread and
/// runtime so it works from both sync tests and inside `#[tokio::test]`.
fn admin_sql(admin_url: &str, sql: String) -> Result<(), String> {
    let url = admin_url.to_owned();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| e.to_string())?;
        runtime.block_on(async {
            let mut conn = PgConnection::connect(&url).await.map_err(|e| e.to_string())?;
            // Simple protocol: CREATE/DROP DATABASE refuse transaction blocks.
            sqlx::raw_sql(&sql).execute(&mut conn).await.map_err(|e| e.to_string())?;
            let _ = conn.close().await;
            Ok(())
        })
    })
    .join()
    .map_err(|_| "admin thread panicked".to_owned())?
}

/// Replaces the database (path) of a postgres URL, keeping its query.
fn with_database(url: &str, database: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let authority_start = base.find("://").map_or(0, |i| i + 3);
    let path_start = base[authority_start..].find('/').map_or(base.len(), |i| authority_start + i);
    let mut out = format!("{}/{database}", &base[..path_start]);
    if let Some(query) = query {
        out.push('?');
        out.push_str(query);
    }
    out
}

#[test]
fn with_database_replaces_only_the_path() {
    assert_eq!(with_database("postgres://u:p@h:5432/postgres", "t_1"), "postgres://u:p@h:5432/t_1");
    assert_eq!(with_database("postgres://u@h?sslmode=disable", "t_1"), "postgres://u@h/t_1?sslmode=disable");
}
