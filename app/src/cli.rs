//! Command-line entry point: argument parsing, exit codes and error lines.
//!
//! Parsing is by hand: three subcommands do not justify clap's compile time.
//! Exit codes: 0 success, 1 runtime failure, 2 usage or configuration error,
//! so a deploy script can tell "fix the task definition" from "retry".

use std::ffi::OsString;
use std::process::ExitCode;

use crate::config::Config;
use crate::version::VERSION;
use crate::{db, server, telemetry};

/// Exit code for failures while running (database down, bind failed, ...).
pub const EXIT_RUNTIME: u8 = 1;
/// Exit code for bad arguments or configuration.
pub const EXIT_CONFIG: u8 = 2;

const USAGE: &str = "usage: app [serve | migrate | version | help]

commands:
  serve     serve HTTP (the default)
  migrate   apply pending database migrations and exit
  version   print the version, git sha and build time

configuration (environment, or a .env file in the working directory):
  DATABASE_URL             postgres://USER:PASSWORD@HOST:PORT/DBNAME
  DB_HOST, DB_PORT, DB_NAME, DB_USER, DB_PASSWORD
                           used instead of DATABASE_URL when it is not set
  DB_SSLMODE               with DB_*: default verify-full
  DB_SSLROOTCERT           with DB_*: the CA bundle to verify the server with
  APP_DB_ROLE, APP_DB_ROLE_PASSWORD
                           migrate: create/update this role with data rights only
  PORT                     default 8080
  BIND_ADDR                default 0.0.0.0
  RUST_LOG                 default info
  SHUTDOWN_DRAIN_SECONDS   default 20
  RUN_MIGRATIONS_ON_START  default false
  REQUEST_TIMEOUT_SECONDS  default 10 (503 after)
  WRITE_RATE_LIMIT         default on: a token bucket per client on the writes (429)
  WRITE_RATE_BURST         default 10
  WRITE_RATE_PER_SECOND    default 0.1
  TRUSTED_PROXY_HOPS       default 0: proxies in front that append to X-Forwarded-For";

/// What the user asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Serve,
    Migrate,
    Version,
    Help,
}

/// Parses the arguments after the program name.
pub fn parse(args: &[String]) -> Result<Command, String> {
    let command = match args.first().map(String::as_str) {
        None | Some("serve") => Command::Serve,
        Some("migrate") => Command::Migrate,
        Some("version" | "--version" | "-V") => Command::Version,
        Some("help" | "--help" | "-h") => Command::Help,
        Some(other) => {
            return Err(format!("unknown command {other:?} (expected serve, migrate, version or help)"));
        }
    };
    if let Some(extra) = args.get(1) {
        return Err(format!("unexpected argument {extra:?} after {:?}", args[0]));
    }
    Ok(command)
}

/// Runs the program with the full argument list (including the program name).
pub fn main(args: impl IntoIterator<Item = OsString>) -> ExitCode {
    let args: Result<Vec<String>, OsString> = args.into_iter().skip(1).map(OsString::into_string).collect();
    let command = match args {
        Ok(args) => parse(&args),
        Err(arg) => Err(format!("argument {arg:?} is not valid UTF-8")),
    };
    let command = match command {
        Ok(command) => command,
        Err(message) => {
            eprintln!("error: {message}");
            eprintln!("{USAGE}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };

    match command {
        Command::Help => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Command::Version => {
            println!("{VERSION}");
            return ExitCode::SUCCESS;
        }
        Command::Serve | Command::Migrate => {}
    }

    let config = match Config::from_env() {
        Ok(config) => config,
        Err(error) => {
            eprintln!("error: {error}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };

    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: could not start the async runtime: {error}");
            return ExitCode::from(EXIT_RUNTIME);
        }
    };
    let result = match command {
        Command::Migrate => runtime.block_on(migrate(config)),
        _ => runtime.block_on(server::serve(config)),
    };
    // Do not wait for stray blocking tasks (e.g. a DNS lookup) on the way out.
    runtime.shutdown_background();

    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {}", one_line(&error));
            ExitCode::from(EXIT_RUNTIME)
        }
    }
}

async fn migrate(config: Config) -> anyhow::Result<()> {
    // stdout carries the outcome (printed below); logs are diagnostics.
    telemetry::init(&config.log_filter, telemetry::LogTarget::Stderr);
    let report = db::migrate(&config.database_url, config.app_role.as_ref()).await?;
    if report.applied.is_empty() {
        println!("no pending migrations");
    }
    for (version, description) in &report.applied {
        println!("applied migration {version} ({description})");
    }
    if !report.unknown_versions.is_empty() {
        let versions: Vec<String> = report.unknown_versions.iter().map(i64::to_string).collect();
        println!("note: the database has migrations this binary does not know (ignored): {}", versions.join(", "));
    }
    if let Some(role) = &config.app_role {
        println!("role {} has data rights only (no DDL)", role.name);
    }
    match report.current_version {
        Some(version) => println!("database schema is at version {version}"),
        None => println!("database schema has no migrations"),
    }
    Ok(())
}

/// Flattens an error and its causes into one line, for log scrapers and
/// humans alike (`a: b: c`).
fn one_line(error: &anyhow::Error) -> String {
    format!("{error:#}").split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn parses_commands() {
        assert_eq!(parse(&args(&[])), Ok(Command::Serve));
        assert_eq!(parse(&args(&["serve"])), Ok(Command::Serve));
        assert_eq!(parse(&args(&["migrate"])), Ok(Command::Migrate));
        for v in ["version", "--version", "-V"] {
            assert_eq!(parse(&args(&[v])), Ok(Command::Version));
        }
        for h in ["help", "--help", "-h"] {
            assert_eq!(parse(&args(&[h])), Ok(Command::Help));
        }
    }

    #[test]
    fn rejects_unknown_and_extra_arguments() {
        assert_eq!(
            parse(&args(&["deploy"])),
            Err("unknown command \"deploy\" (expected serve, migrate, version or help)".to_owned())
        );
        assert_eq!(parse(&args(&["migrate", "now"])), Err("unexpected argument \"now\" after \"migrate\"".to_owned()));
    }

    #[test]
    fn errors_are_flattened_to_one_line() {
        let error = anyhow::anyhow!("connection refused\n  (os error 111)").context("could not connect");
        assert_eq!(one_line(&error), "could not connect: connection refused (os error 111)");
    }
}
