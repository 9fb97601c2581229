//! Database access: the connection pool, migrations and entry queries.
//!
//! Queries use the runtime-checked `sqlx::query*` functions rather than the
//! `query!` macros so building the crate never needs a live database.

use std::collections::BTreeSet;
use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::migrate::{Migrate, Migrator};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Connection, PgConnection, PgPool};

/// The migrations in `app/migrations`, embedded at compile time so the image
/// needs nothing but the binary.
///
/// Versions in the database that this binary does not know are ignored: after
/// an image rollback the older binary must still run `migrate` (as a no-op)
/// and serve against a schema a newer release already migrated. Migrations
/// are therefore written to be backwards compatible (expand, then contract).
pub fn migrator() -> Migrator {
    let mut migrator = sqlx::migrate!("./migrations");
    migrator.set_ignore_missing(true);
    migrator
}

/// How long a request waits for a pooled connection (including connecting)
/// before failing. Short, so `/readyz` and requests fail fast when the
/// database is down instead of piling up behind the load balancer timeout.
pub const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(3);

/// Upper bound on connections per task. Small: several tasks share one
/// database, and this service does little per request.
pub const MAX_CONNECTIONS: u32 = 10;

/// How long `app migrate` waits to connect before giving up.
pub const MIGRATE_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Maximum length of an entry's name, in characters.
pub const NAME_MAX_CHARS: usize = 64;
/// Maximum length of an entry's message, in characters.
pub const MESSAGE_MAX_CHARS: usize = 500;

/// A guestbook entry as stored and as returned by the API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct Entry {
    pub id: i64,
    pub name: String,
    pub message: String,
    pub created_at: DateTime<Utc>,
}

/// Parses a connection URL and tags connections with the binary's name, so
/// `pg_stat_activity` shows who is connected.
pub fn connect_options(database_url: &str) -> Result<PgConnectOptions, sqlx::Error> {
    Ok(PgConnectOptions::from_str(database_url)?.application_name(env!("CARGO_PKG_NAME")))
}

/// Creates a pool that connects on first use.
///
/// Lazy on purpose: the process starts (and `/healthz` answers) while the
/// database is unreachable; `/readyz` reports the outage instead of the task
/// crash-looping.
pub fn lazy_pool(database_url: &str) -> Result<PgPool, sqlx::Error> {
    Ok(PgPoolOptions::new()
        .max_connections(MAX_CONNECTIONS)
        .acquire_timeout(ACQUIRE_TIMEOUT)
        .connect_lazy_with(connect_options(database_url)?))
}

/// Runs `SELECT 1`: the readiness check.
pub async fn ping(pool: &PgPool) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT 1").execute(pool).await?;
    Ok(())
}

/// The newest `limit` entries, newest first.
pub async fn latest_entries(pool: &PgPool, limit: i64) -> Result<Vec<Entry>, sqlx::Error> {
    sqlx::query_as::<_, Entry>(
        "SELECT id, name, message, created_at FROM entries \
         ORDER BY created_at DESC, id DESC LIMIT $1",
    )
    .bind(limit)
    .fetch_all(pool)
    .await
}

/// Stores an entry (already validated) and returns it as stored.
pub async fn insert_entry(pool: &PgPool, name: &str, message: &str) -> Result<Entry, sqlx::Error> {
    sqlx::query_as::<_, Entry>(
        "INSERT INTO entries (name, message) VALUES ($1, $2) \
         RETURNING id, name, message, created_at",
    )
    .bind(name)
    .bind(message)
    .fetch_one(pool)
    .await
}

/// Creates the service's role when missing, and sets its password and
/// rights: SELECT, INSERT, UPDATE and DELETE on the schema's tables (present
/// and future, through default privileges of the owner running this),
/// sequences for identity columns, and nothing else: no CREATE on the schema,
/// no rights on the migrations table, no superuser, database or role
/// creation. Run as the owner, after the migrations.
pub async fn ensure_app_role(conn: &mut PgConnection, role: &crate::config::AppRole) -> anyhow::Result<()> {
    use anyhow::Context as _;
    use sqlx::Executor as _;

    let exists: bool = sqlx::query_scalar("SELECT EXISTS (SELECT FROM pg_roles WHERE rolname = $1)")
        .bind(&role.name)
        .fetch_one(&mut *conn)
        .await
        .context("looking up the app role")?;
    // format() with %I and %L quotes the name and the password as
    // PostgreSQL itself would; DDL takes no bind parameters.
    // The attributes are set when the role is made. On RDS the master user
    // is not a superuser, and PostgreSQL lets only a superuser name the
    // SUPERUSER, REPLICATION or BYPASSRLS attributes in ALTER ROLE, even to
    // turn them off: an existing role only gets its password again.
    let role_statement = if exists {
        "format('ALTER ROLE %I WITH LOGIN PASSWORD %L', $1::text, $2::text)"
    } else {
        "format('CREATE ROLE %I WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS PASSWORD %L', $1::text, $2::text)"
    };
    let statements: Vec<String> = sqlx::query_scalar(&format!(
        "SELECT unnest(ARRAY[
            {role_statement},
            format('GRANT CONNECT ON DATABASE %I TO %I', current_database(), $1::text),
            'REVOKE CREATE ON SCHEMA public FROM PUBLIC',
            format('REVOKE CREATE ON SCHEMA public FROM %I', $1::text),
            format('GRANT USAGE ON SCHEMA public TO %I', $1::text),
            format('GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO %I', $1::text),
            format('REVOKE ALL ON _sqlx_migrations FROM %I', $1::text),
            format('GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO %I', $1::text),
            format('ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO %I', $1::text),
            format('ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT USAGE, SELECT ON SEQUENCES TO %I', $1::text)
        ])"
    ))
    .bind(&role.name)
    .bind(&role.password)
    .fetch_all(&mut *conn)
    .await
    .context("preparing the app role's statements")?;
    for statement in statements {
        // Never in an error message: the first statement holds the password.
        let shown = statement.split(" PASSWORD ").next().unwrap_or_default().to_owned();
        conn.execute(statement.as_str()).await.with_context(|| format!("running {shown}"))?;
    }
    Ok(())
}

/// What `migrate` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MigrationReport {
    /// Migrations applied by this run: (version, description).
    pub applied: Vec<(i64, String)>,
    /// Highest version recorded in the database afterwards.
    pub current_version: Option<i64>,
    /// Versions in the database that this binary does not know about.
    pub unknown_versions: Vec<i64>,
}

/// Applies pending migrations over a single connection.
///
/// A dedicated connection (not the pool) makes an unreachable database fail
/// immediately rather than after the pool's connect retries.
pub async fn migrate(database_url: &str, app_role: Option<&crate::config::AppRole>) -> anyhow::Result<MigrationReport> {
    use anyhow::Context as _;

    let options = connect_options(database_url).context("invalid database url")?;
    let mut conn = tokio::time::timeout(MIGRATE_CONNECT_TIMEOUT, PgConnection::connect_with(&options))
        .await
        .map_err(|_| {
            anyhow::anyhow!("could not connect to the database within {}s", MIGRATE_CONNECT_TIMEOUT.as_secs())
        })?
        .context("could not connect to the database")?;

    let before = applied_versions(&mut conn).await?;

    let migrator = migrator();
    migrator.run(&mut conn).await.context("migration failed")?;

    let after = applied_versions(&mut conn).await?;
    if let Some(role) = app_role {
        ensure_app_role(&mut conn, role).await?;
    }
    let _ = conn.close().await;

    let applied = migrator
        .iter()
        .filter(|m| m.migration_type.is_up_migration())
        .filter(|m| after.contains(&m.version) && !before.contains(&m.version))
        .map(|m| (m.version, m.description.to_string()))
        .collect();
    let unknown_versions = after.iter().copied().filter(|v| !migrator.iter().any(|m| m.version == *v)).collect();
    Ok(MigrationReport { applied, current_version: after.last().copied(), unknown_versions })
}

async fn applied_versions(conn: &mut PgConnection) -> anyhow::Result<BTreeSet<i64>> {
    use anyhow::Context as _;
    conn.ensure_migrations_table().await.context("could not create the migrations table")?;
    let applied = conn.list_applied_migrations().await.context("could not list applied migrations")?;
    Ok(applied.into_iter().map(|m| m.version).collect())
}
