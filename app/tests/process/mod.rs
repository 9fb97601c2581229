//! The built `app` binary: configuration errors, `migrate`, serving over
//! real TCP, and graceful shutdown on SIGTERM.

use std::process::Output;
use std::thread;
use std::time::{Duration, Instant};

use crate::support::app_process::{self, AppProcess};
use crate::support::db::{TestDb, unreachable_url};
use crate::support::http;

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Runs the binary in an empty directory (no `.env`).
fn run(args: &[&str], envs: &[(&str, &str)]) -> Output {
    let dir = testkit::ServiceDir::new("app-cli-test");
    app_process::run(dir.path(), args, envs)
}

// ---------------------------------------------------------------------------
// Configuration

#[test]
fn a_bad_port_stops_the_start_with_one_line_naming_it() {
    let output = run(&["serve"], &[("DATABASE_URL", "postgres://u:p@127.0.0.1/db"), ("PORT", "abc")]);
    assert_eq!(output.status.code(), Some(2), "stderr: {}", stderr(&output));
    assert_eq!(stderr(&output), "error: PORT=\"abc\" is not a port number (expected 1-65535)\n");
}

#[test]
fn missing_database_settings_stop_the_start() {
    // No arguments: `serve` is the default.
    let output = run(&[], &[]);
    assert_eq!(output.status.code(), Some(2));
    let err = stderr(&output);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.starts_with("error: DATABASE_URL is not set"), "{err}");

    let output = run(&["serve"], &[("DB_HOST", "db.internal"), ("DB_USER", "app")]);
    assert_eq!(output.status.code(), Some(2));
    assert!(stderr(&output).starts_with("error: DB_NAME is not set"), "{}", stderr(&output));
}

#[test]
fn dotenv_is_read_but_the_environment_wins() {
    let dir = testkit::ServiceDir::new("app-dotenv-test");
    std::fs::write(dir.path().join(".env"), "DATABASE_URL=postgres://u:p@127.0.0.1/db\nPORT=from-dotenv\n").unwrap();

    let output = app_process::run(dir.path(), &["serve"], &[]);
    assert_eq!(output.status.code(), Some(2));
    assert!(stderr(&output).contains("PORT=\"from-dotenv\""), "{}", stderr(&output));

    let output = app_process::run(dir.path(), &["serve"], &[("PORT", "from-env")]);
    assert_eq!(output.status.code(), Some(2));
    assert!(stderr(&output).contains("PORT=\"from-env\""), "{}", stderr(&output));
}

#[test]
fn unknown_commands_are_usage_errors() {
    let output = run(&["deploy"], &[]);
    assert_eq!(output.status.code(), Some(2));
    assert!(stderr(&output).starts_with("error: unknown command \"deploy\""));
}

#[test]
fn version_needs_no_configuration() {
    for flag in ["--version", "version"] {
        let output = run(&[flag], &[]);
        assert!(output.status.success());
        let out = stdout(&output);
        assert!(out.starts_with(&format!("app {} (git ", env!("CARGO_PKG_VERSION"))), "{out}");
        assert!(out.contains(app::VERSION.git_sha));
        assert!(out.contains(app::VERSION.build_time));
    }
}

// ---------------------------------------------------------------------------
// Migrations

#[test]
fn migrate_applies_once_and_is_idempotent() {
    let db = TestDb::create();
    let env = [("DATABASE_URL", db.url.as_str())];

    let first = run(&["migrate"], &env);
    assert!(first.status.success(), "stderr: {}", stderr(&first));
    assert_eq!(stdout(&first), "applied migration 1 (create entries)\ndatabase schema is at version 1\n");

    let second = run(&["migrate"], &env);
    assert!(second.status.success(), "stderr: {}", stderr(&second));
    assert_eq!(stdout(&second), "no pending migrations\ndatabase schema is at version 1\n");
}

#[test]
fn migrate_against_an_unreachable_database_fails_with_one_line() {
    let url = unreachable_url();
    let output = run(&["migrate"], &[("DATABASE_URL", url.as_str())]);
    assert_eq!(output.status.code(), Some(1));
    let err = stderr(&output);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.starts_with("error: could not connect to the database"), "{err}");
}

// ---------------------------------------------------------------------------
// Serving

#[test]
fn serves_over_tcp_and_logs_json_lines() {
    let db = TestDb::create();
    // Opt-in migrations on start, so this test also covers that path.
    let mut app = AppProcess::serve(&[("DATABASE_URL", db.url.as_str()), ("RUN_MIGRATIONS_ON_START", "true")]);

    assert_eq!(http::get(app.port, "/readyz").unwrap().status, 200);
    let created =
        http::request(app.port, "POST", "/api/entries", Some(r#"{"name":"Tess","message":"over <tcp>"}"#)).unwrap();
    assert_eq!(created.status, 201, "{}", created.body);
    assert_eq!(created.json()["name"], "Tess");

    let page = http::get(app.port, "/").unwrap();
    assert_eq!(page.status, 200);
    assert!(page.header("content-type").unwrap().starts_with("text/html"));
    assert!(page.body.contains("over &lt;tcp&gt;"));
    assert!(page.body.contains(app::VERSION.git_sha));

    let missing = http::get(app.port, "/nope").unwrap();
    assert_eq!(missing.status, 404);
    assert_eq!(missing.json()["error"], "no route for GET /nope");

    // Debug routes are off unless asked for.
    assert_eq!(http::get(app.port, "/debug/slow?ms=1").unwrap().status, 404);

    // stdout is a pipe, so logs are JSON: one object per line, one per request.
    app.wait_for_output("\"path\":\"/nope\"", Duration::from_secs(5));
    let log = app.stdout();
    let lines: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("log line is not JSON ({e}): {l}")))
        .collect();
    let post_line =
        lines.iter().find(|l| l["method"] == "POST" && l["path"] == "/api/entries").expect("a log line for the POST");
    assert_eq!(post_line["status"], 201);
    assert!(post_line["latency_ms"].is_number());
    assert!(lines.iter().any(|l| l["message"] == "applied migration"));

    app.signal("TERM");
    let status = app.wait(Duration::from_secs(10)).expect("exit after SIGTERM");
    assert!(status.success(), "{status}");
}

#[test]
fn readyz_is_503_while_the_database_is_down() {
    let url = unreachable_url();
    let mut app = AppProcess::serve(&[("DATABASE_URL", url.as_str())]);
    assert_eq!(http::get(app.port, "/healthz").unwrap().status, 200);
    let ready = http::get(app.port, "/readyz").unwrap();
    assert_eq!(ready.status, 503);
    assert_eq!(ready.json()["error"], "database is unreachable");
    app.signal("INT");
    assert!(app.wait(Duration::from_secs(10)).expect("exit after SIGINT").success());
}

#[test]
fn sigterm_lets_in_flight_requests_finish_and_refuses_new_ones() {
    let url = unreachable_url();
    let mut app = AppProcess::serve(&[
        ("DATABASE_URL", url.as_str()),
        ("APP_ENABLE_DEBUG_ROUTES", "1"),
        ("SHUTDOWN_DRAIN_SECONDS", "10"),
    ]);
    let port = app.port;

    let started = Instant::now();
    let slow = thread::spawn(move || http::get(port, "/debug/slow?ms=1500"));
    // Let the request reach the handler before the signal.
    thread::sleep(Duration::from_millis(300));
    app.signal("TERM");
    let signalled = Instant::now();

    app.wait_for_output("shutdown requested", Duration::from_secs(5));
    thread::sleep(Duration::from_millis(100));
    assert_no_response(port);

    let reply = slow.join().expect("slow request thread").expect("slow request completes");
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.json()["slept_ms"], 1500);
    assert!(started.elapsed() >= Duration::from_millis(1500));

    let status = app.wait(Duration::from_secs(10)).expect("exit within the drain time");
    assert_eq!(status.code(), Some(0), "stderr: {}", app.stderr());
    assert!(signalled.elapsed() < Duration::from_secs(10));
    app.wait_for_output("shutdown complete", Duration::from_secs(1));

    // Still nothing listening once the process is gone.
    assert_no_response(port);
}

#[test]
fn shutdown_gives_up_after_the_drain_timeout() {
    let url = unreachable_url();
    let mut app = AppProcess::serve(&[
        ("DATABASE_URL", url.as_str()),
        ("APP_ENABLE_DEBUG_ROUTES", "1"),
        ("SHUTDOWN_DRAIN_SECONDS", "1"),
    ]);
    // The request is sent from this thread before the signal, on a
    // connection of its own: a client thread that had not connected yet on
    // a busy machine could reach nothing, or another test's server that
    // took the freed port, and see an answer.
    let mut stuck = std::net::TcpStream::connect(("127.0.0.1", app.port)).unwrap();
    stuck.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    std::io::Write::write_all(
        &mut stuck,
        b"GET /debug/slow?ms=20000 HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
    )
    .unwrap();
    let stuck = thread::spawn(move || {
        let mut answer = Vec::new();
        std::io::Read::read_to_end(&mut stuck, &mut answer).map(|_| answer)
    });
    thread::sleep(Duration::from_millis(300));

    let signalled = Instant::now();
    app.signal("TERM");
    let status = app.wait(Duration::from_secs(10)).expect("exit after the drain timeout");
    let took = signalled.elapsed();
    assert_eq!(status.code(), Some(1), "stderr: {}", app.stderr());
    assert!((Duration::from_millis(900)..Duration::from_secs(5)).contains(&took), "exited after {took:?}");
    assert!(app.stderr().contains("error: shutdown drain timed out after 1s"), "{}", app.stderr());
    // The abandoned request gets no response: the connection is closed
    // (or reset) without a byte.
    let answer = stuck.join().unwrap();
    assert!(answer.as_ref().map_or(true, |bytes| bytes.is_empty()), "{answer:?}");
}

#[test]
fn a_second_signal_stops_draining_at_once() {
    let url = unreachable_url();
    let mut app = AppProcess::serve(&[
        ("DATABASE_URL", url.as_str()),
        ("APP_ENABLE_DEBUG_ROUTES", "1"),
        ("SHUTDOWN_DRAIN_SECONDS", "30"),
    ]);
    let port = app.port;
    let stuck = thread::spawn(move || http::get(port, "/debug/slow?ms=20000"));
    thread::sleep(Duration::from_millis(300));

    app.signal("TERM");
    app.wait_for_output("shutdown requested", Duration::from_secs(5));
    let signalled = Instant::now();
    app.signal("INT");
    let status = app.wait(Duration::from_secs(5)).expect("exit after the second signal");
    assert_eq!(status.code(), Some(1));
    assert!(signalled.elapsed() < Duration::from_secs(3));
    assert!(app.stderr().contains("error: received SIGINT again while draining"), "{}", app.stderr());
    assert!(stuck.join().unwrap().is_err());
}

/// Asserts that a new connection is refused, or accepted by nobody and
/// closed without an HTTP response.
fn assert_no_response(port: u16) {
    match http::get(port, "/healthz") {
        Err(_) => {}
        Ok(reply) => panic!("a new connection was served after SIGTERM: {reply:?}"),
    }
}
