//! Integration tests for the service, in one test binary (one link, one
//! shared Postgres server).
//!
//! - `routes`: the router driven in-process with `tower::ServiceExt::oneshot`.
//! - `process`: the built `app` binary driven over real TCP and signals.
//! - `database`: the service's role (data rights only) and verified TLS.
//! - `limits`: body size, timeout, write rate, security headers, and a short
//!   run of the `load` example against the built binary.
//!
//! They run against `DATABASE_URL` when it is set (e.g. a CI service
//! container), otherwise against a throwaway server from the local
//! PostgreSQL binaries. Each test gets its own database.

mod database;
mod limits;
mod process;
mod routes;
mod support;
