//! The database's production defaults, against real servers: the service's
//! own role has data rights only, and TLS is verified against the CA that
//! signed the server's certificate (`testkit::TestCa`, made with the openssl CLI).

use std::path::Path;
use std::process::Output;

use sqlx::{Connection as _, Executor as _, PgConnection};

use crate::support::app_process;
use crate::support::db::TestDb;

fn run(args: &[&str], envs: &[(&str, &str)]) -> Output {
    let dir = testkit::ServiceDir::new("app-db-test");
    app_process::run(dir.path(), args, envs)
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// `postgres://ROLE:PASSWORD@rest` from `postgres://user[:pw]@rest`.
fn as_role(url: &str, role: &str, password: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap();
    let (_, host_and_path) = rest.split_once('@').unwrap();
    format!("{scheme}://{role}:{password}@{host_and_path}")
}

fn unique_role() -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
    format!("app_{}_{nanos}", std::process::id())
}

#[tokio::test]
async fn the_app_role_reads_and_writes_but_cannot_change_the_schema() {
    let db = TestDb::create();
    // Migrations run as RDS's master user would: the database's owner, with
    // CREATEROLE, not a superuser (which could do anything anyway).
    let master = format!("{}_master", unique_role());
    let master_password = testkit::random_password();
    let mut admin = PgConnection::connect(&db.url).await.unwrap();
    admin
        .execute(
            format!("CREATE ROLE {master} WITH LOGIN CREATEROLE NOSUPERUSER PASSWORD '{master_password}'").as_str(),
        )
        .await
        .unwrap();
    let database: String = sqlx::query_scalar("SELECT current_database()").fetch_one(&mut admin).await.unwrap();
    admin.execute(format!("ALTER DATABASE {database} OWNER TO {master}").as_str()).await.unwrap();
    let _ = admin.close().await;
    let master_url = as_role(&db.url, &master, &master_password);

    let role = unique_role();
    let password = testkit::random_password();
    let envs =
        [("DATABASE_URL", master_url.as_str()), ("APP_DB_ROLE", role.as_str()), ("APP_DB_ROLE_PASSWORD", &password)];
    for _ in 0..2 {
        // Twice: the second run takes the ALTER ROLE path.
        let output = run(&["migrate"], &envs);
        assert!(output.status.success(), "{}", text(&output.stderr));
        assert!(
            text(&output.stdout).contains(&format!("role {role} has data rights only")),
            "{}",
            text(&output.stdout)
        );
        assert!(!text(&output.stdout).contains(&password) && !text(&output.stderr).contains(&password));
    }

    let mut conn = PgConnection::connect(&as_role(&db.url, &role, &password)).await.unwrap();
    conn.execute("INSERT INTO entries (name, message) VALUES ('a', 'b')").await.unwrap();
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM entries").fetch_one(&mut conn).await.unwrap();
    assert_eq!(count, 1);
    conn.execute("UPDATE entries SET message = 'c'").await.unwrap();
    conn.execute("DELETE FROM entries").await.unwrap();
    for (ddl, refusal) in [
        ("CREATE TABLE intruder (id int)", "permission denied for schema public"),
        ("DROP TABLE entries", "must be owner of table entries"),
        ("ALTER TABLE entries ADD COLUMN x int", "must be owner of table entries"),
        ("SELECT * FROM _sqlx_migrations", "permission denied for table _sqlx_migrations"),
        ("CREATE ROLE other", "permission denied to create role"),
    ] {
        let err = conn.execute(ddl).await.expect_err(ddl).to_string();
        assert!(err.contains(refusal), "{ddl}: {err}");
    }
    let _ = conn.close().await;

    // The service itself runs as that role.
    let mut app = app_process::AppProcess::serve(&[("DATABASE_URL", &as_role(&db.url, &role, &password))]);
    let response =
        crate::support::http::request(app.port, "POST", "/api/entries", Some(r#"{"name":"n","message":"m"}"#)).unwrap();
    assert_eq!(response.status, 201, "{}", response.body);
    app.signal("TERM");
    app.wait(std::time::Duration::from_secs(10));
}

fn encoded(path: &Path) -> String {
    path.display().to_string().replace('/', "%2F")
}

/// Starts a server of its own, from the host's PostgreSQL binaries with the
/// openssl CLI: tier 1 runs it; `test-docker` leaves it out by name (the
/// build image has neither), see `HOST_ONLY_APP_TESTS`.
#[test]
fn the_app_verifies_the_server_certificate_and_the_server_requires_tls() {
    let ca = testkit::TestCa::new("app-db-ca", "IP:127.0.0.1, DNS:localhost");
    let other_ca = testkit::TestCa::new("app-db-other-ca", "IP:127.0.0.1, DNS:localhost");
    let postgres = testkit::Postgres::start_with(testkit::PostgresOptions {
        tls: Some(testkit::TlsFiles { certificate: ca.path("server.pem"), key: ca.path("server.key") }),
        ..Default::default()
    });
    let base = postgres.url();

    let verified = format!("{base}?sslmode=verify-full&sslrootcert={}", encoded(&ca.path("ca.pem")));
    let output = run(&["migrate"], &[("DATABASE_URL", &verified)]);
    assert!(output.status.success(), "verify-full with the right CA: {}", text(&output.stderr));

    // The DB_* form (how ECS configures it) verifies by default.
    let port = postgres.port().to_string();
    let parts = [
        ("DB_HOST", "127.0.0.1"),
        ("DB_PORT", port.as_str()),
        ("DB_NAME", "postgres"),
        ("DB_USER", "postgres"),
        ("DB_PASSWORD", postgres.password()),
    ];
    let right_ca = ca.path("ca.pem");
    let output = run(&["migrate"], &[&parts[..], &[("DB_SSLROOTCERT", right_ca.to_str().unwrap())]].concat());
    assert!(output.status.success(), "DB_* with the right CA: {}", text(&output.stderr));

    // A certificate it cannot verify: refused, and said so.
    let wrong_ca = other_ca.path("ca.pem");
    let output = run(&["migrate"], &[&parts[..], &[("DB_SSLROOTCERT", wrong_ca.to_str().unwrap())]].concat());
    let stderr = text(&output.stderr);
    assert!(!output.status.success(), "connected with a certificate signed by another CA");
    assert!(stderr.to_lowercase().contains("certificate"), "{stderr}");

    // And the server refuses a client without TLS, as rds.force_ssl does.
    let output = run(&["migrate"], &[("DATABASE_URL", &format!("{base}?sslmode=disable"))]);
    let stderr = text(&output.stderr);
    assert!(!output.status.success(), "connected without TLS");
    assert!(stderr.contains("no encryption") || stderr.contains("pg_hba.conf"), "{stderr}");
}
