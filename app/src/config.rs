//! Service configuration, read from the environment.
//!
//! All parsing goes through [`Config::from_lookup`], which takes the lookup
//! function as an argument so tests never touch the (process-global, and
//! since Rust 2024 `unsafe` to mutate) environment. [`Config::from_env`] layers
//! the real environment over an optional development `.env` file without
//! writing the file into the environment.
//!
//! Every failure is a single line that names the setting and what was
//! expected; secrets (`DATABASE_URL`, `DB_PASSWORD`) are never echoed back.

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::PgConnectOptions;
use tracing_subscriber::EnvFilter;

use crate::limits::{self, Limits, WriteRate};

/// Default HTTP port; matches the container port in the task definition.
pub const DEFAULT_PORT: u16 = 8080;
/// Default Postgres port when composing the URL from `DB_*` settings.
pub const DEFAULT_DB_PORT: u16 = 5432;
/// `DB_SSLMODE` when unset (the `DB_*` form only; a `DATABASE_URL` says its own).
pub const DEFAULT_DB_SSLMODE: &str = "verify-full";
/// Default drain time; below ECS's default 30 s stop timeout so we finish
/// draining before the agent escalates to SIGKILL.
pub const DEFAULT_SHUTDOWN_DRAIN_SECONDS: u64 = 20;
/// Upper bound for the drain time: anything longer is almost certainly a typo
/// (ECS caps `stopTimeout` at 120 s anyway).
pub const MAX_SHUTDOWN_DRAIN_SECONDS: u64 = 3600;
/// Default log filter when `RUST_LOG` is unset.
pub const DEFAULT_LOG_FILTER: &str = "info";
/// Upper bound for `REQUEST_TIMEOUT_SECONDS`; more is almost certainly a typo.
pub const MAX_REQUEST_TIMEOUT_SECONDS: u64 = 3600;
/// Upper bound for `TRUSTED_PROXY_HOPS`: no real chain of proxies is longer.
pub const MAX_TRUSTED_PROXY_HOPS: usize = 10;

/// Everything the service needs to start.
#[derive(Clone, PartialEq)]
pub struct Config {
    /// Postgres connection URL, either `DATABASE_URL` or composed from `DB_*`.
    pub database_url: String,
    /// Address to listen on (`BIND_ADDR`).
    pub bind_addr: IpAddr,
    /// Port to listen on (`PORT`).
    pub port: u16,
    /// `tracing` filter directives (`RUST_LOG`).
    pub log_filter: String,
    /// How long in-flight requests may take to finish after SIGTERM/SIGINT.
    pub shutdown_drain: Duration,
    /// Run pending migrations before serving (`RUN_MIGRATIONS_ON_START`).
    pub run_migrations_on_start: bool,
    /// Mount the `/debug/*` test hooks (`APP_ENABLE_DEBUG_ROUTES`).
    pub enable_debug_routes: bool,
    /// Request timeout, write rate limit and proxy trust (see [`crate::limits`]).
    pub limits: Limits,
    /// The role `migrate` (run as the schema's owner) creates or updates for
    /// the service: data rights only, no DDL (`APP_DB_ROLE`,
    /// `APP_DB_ROLE_PASSWORD`).
    pub app_role: Option<AppRole>,
}

/// A login role of the service's own; `Debug` hides the password.
#[derive(Clone, PartialEq, Eq)]
pub struct AppRole {
    pub name: String,
    pub password: String,
}

impl fmt::Debug for AppRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AppRole").field("name", &self.name).field("password", &"***").finish()
    }
}

/// A missing or malformed setting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    setting: String,
    message: String,
}

impl ConfigError {
    fn new(setting: &str, message: impl Into<String>) -> Self {
        Self { setting: setting.to_owned(), message: message.into() }
    }

    /// The name of the offending setting, e.g. `PORT` (or `.env`).
    pub fn setting(&self) -> &str {
        &self.setting
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ConfigError {}

impl Config {
    /// Reads the configuration through `lookup` (a setting name to its value).
    ///
    /// Empty values count as unset: ECS task definitions and compose files
    /// make it easy to define a variable as `""` but impossible to unset it.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let get = |name: &str| lookup(name).filter(|v| !v.trim().is_empty());

        let database_url = database_url(&get)?;

        let port = match get("PORT") {
            None => DEFAULT_PORT,
            Some(raw) => parse_port("PORT", &raw)?,
        };

        let bind_addr = match get("BIND_ADDR") {
            None => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            Some(raw) => raw.trim().parse().map_err(|_| {
                ConfigError::new(
                    "BIND_ADDR",
                    format!("BIND_ADDR={raw:?} is not an IP address (expected e.g. 0.0.0.0, 127.0.0.1 or ::)"),
                )
            })?,
        };

        let log_filter = match get("RUST_LOG") {
            None => DEFAULT_LOG_FILTER.to_owned(),
            Some(raw) => {
                // Validate now so a typo is a config error, not a silent
                // "log nothing" at runtime.
                EnvFilter::try_new(&raw).map_err(|e| {
                    ConfigError::new(
                        "RUST_LOG",
                        format!("RUST_LOG={raw:?} is not a valid log filter (expected e.g. info or app=debug,sqlx=warn): {e}"),
                    )
                })?;
                raw
            }
        };

        let shutdown_drain = match get("SHUTDOWN_DRAIN_SECONDS") {
            None => Duration::from_secs(DEFAULT_SHUTDOWN_DRAIN_SECONDS),
            Some(raw) => match raw.trim().parse::<u64>() {
                Ok(secs) if secs <= MAX_SHUTDOWN_DRAIN_SECONDS => Duration::from_secs(secs),
                _ => {
                    return Err(ConfigError::new(
                        "SHUTDOWN_DRAIN_SECONDS",
                        format!(
                            "SHUTDOWN_DRAIN_SECONDS={raw:?} is not a whole number of seconds (expected 0-{MAX_SHUTDOWN_DRAIN_SECONDS})"
                        ),
                    ));
                }
            },
        };

        let run_migrations_on_start = parse_flag(&get, "RUN_MIGRATIONS_ON_START", false)?;
        let enable_debug_routes = parse_flag(&get, "APP_ENABLE_DEBUG_ROUTES", false)?;
        let limits = parse_limits(&get)?;
        let app_role = app_role(&get)?;

        Ok(Self {
            database_url,
            bind_addr,
            port,
            log_filter,
            shutdown_drain,
            run_migrations_on_start,
            enable_debug_routes,
            limits,
            app_role,
        })
    }

    /// Reads the process environment, falling back to `./.env` for settings
    /// the environment does not define. The environment is not modified.
    pub fn from_env() -> Result<Self, ConfigError> {
        let dotenv = read_dotenv(Path::new(".env"))?;
        Self::from_lookup(layered(|name| std::env::var(name).ok(), &dotenv))
    }

    /// The address the HTTP server binds to.
    pub fn socket_addr(&self) -> SocketAddr {
        SocketAddr::new(self.bind_addr, self.port)
    }
}

/// Hand-written so `{:?}` in a log line or panic cannot leak the password.
impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("database_url", &redact_url(&self.database_url))
            .field("bind_addr", &self.bind_addr)
            .field("port", &self.port)
            .field("log_filter", &self.log_filter)
            .field("shutdown_drain", &self.shutdown_drain)
            .field("run_migrations_on_start", &self.run_migrations_on_start)
            .field("enable_debug_routes", &self.enable_debug_routes)
            .field("limits", &self.limits)
            .finish()
    }
}

/// Combines two sources: the first wins, `fallback` fills the gaps.
pub fn layered<'a>(
    primary: impl Fn(&str) -> Option<String> + 'a,
    fallback: &'a HashMap<String, String>,
) -> impl Fn(&str) -> Option<String> + 'a {
    move |name| primary(name).or_else(|| fallback.get(name).cloned())
}

/// Parses a dotenv file into a map; a missing file is an empty map.
///
/// We iterate instead of calling `dotenvy::dotenv()` because that would set
/// process environment variables, which is `unsafe` in a multi-threaded
/// program and would make the real environment harder to reason about.
pub fn read_dotenv(path: &Path) -> Result<HashMap<String, String>, ConfigError> {
    let shown = path.display();
    let iter = match dotenvy::from_path_iter(path) {
        Ok(iter) => iter,
        Err(e) if e.not_found() => return Ok(HashMap::new()),
        Err(e) => {
            return Err(ConfigError::new(".env", format!("{shown} could not be read: {e}")));
        }
    };
    let mut values = HashMap::new();
    for item in iter {
        match item {
            Ok((key, value)) => {
                values.insert(key, value);
            }
            Err(dotenvy::Error::LineParse(line, _)) => {
                // dotenvy's own message quotes the whole line, which may hold a
                // password; report the line number instead.
                let number = std::fs::read_to_string(path).ok().and_then(|text| {
                    let wanted = line.lines().next().unwrap_or("").trim();
                    text.lines().position(|l| l.trim() == wanted).map(|i| i + 1)
                });
                let at = number.map(|n| format!(" line {n}")).unwrap_or_default();
                return Err(ConfigError::new(".env", format!("{shown}{at} is malformed (expected KEY=value)")));
            }
            Err(e) => {
                return Err(ConfigError::new(".env", format!("{shown} could not be read: {e}")));
            }
        }
    }
    Ok(values)
}

/// `DATABASE_URL` if set, otherwise a URL composed from the `DB_*` settings
/// (how ECS injects the fields of a Secrets Manager secret).
fn database_url(get: &impl Fn(&str) -> Option<String>) -> Result<String, ConfigError> {
    if let Some(url) = get("DATABASE_URL") {
        let url = url.trim().to_owned();
        validate_database_url(&url)?;
        return Ok(url);
    }

    let Some(host) = get("DB_HOST") else {
        return Err(ConfigError::new(
            "DATABASE_URL",
            "DATABASE_URL is not set (expected postgres://USER:PASSWORD@HOST:PORT/DBNAME, or DB_HOST, DB_NAME, DB_USER and optionally DB_PORT, DB_PASSWORD)",
        ));
    };
    let required = |name: &str| {
        get(name).ok_or_else(|| {
            ConfigError::new(name, format!("{name} is not set (required with DB_HOST when DATABASE_URL is not set)"))
        })
    };
    let name = required("DB_NAME")?;
    let user = required("DB_USER")?;
    let port = match get("DB_PORT") {
        None => DEFAULT_DB_PORT,
        Some(raw) => parse_port("DB_PORT", &raw)?,
    };
    let password = get("DB_PASSWORD");

    let raw_host = host.trim();
    // An IPv6 literal needs brackets inside a URL authority.
    let host = if raw_host.contains(':') && !raw_host.starts_with('[') {
        format!("[{raw_host}]")
    } else {
        raw_host.to_owned()
    };
    let credentials = match password {
        // Secrets Manager generates passwords with `@`, `/`, `:` and friends,
        // which would otherwise be read as URL syntax.
        Some(password) => format!("{}:{}", percent_encode(&user), percent_encode(&password)),
        None => percent_encode(&user),
    };
    // TLS, verified, by default: the DB_* form is how ECS hands the app an
    // RDS endpoint, where a plaintext fallback (sqlx's default `prefer`)
    // would be silent. DB_SSLROOTCERT names the CA bundle (the RDS one in
    // the image); without it the built-in web roots are used.
    let sslmode = get("DB_SSLMODE").unwrap_or_else(|| DEFAULT_DB_SSLMODE.to_owned());
    let sslmode = sslmode.trim();
    if !["disable", "allow", "prefer", "require", "verify-ca", "verify-full"].contains(&sslmode) {
        return Err(ConfigError::new(
            "DB_SSLMODE",
            format!(
                "DB_SSLMODE={sslmode:?} is not an sslmode (expected verify-full, verify-ca, require, prefer, allow or disable)"
            ),
        ));
    }
    let mut query = format!("sslmode={sslmode}");
    if let Some(root_cert) = get("DB_SSLROOTCERT") {
        let root_cert = root_cert.trim();
        if !std::path::Path::new(root_cert).is_file() {
            return Err(ConfigError::new(
                "DB_SSLROOTCERT",
                format!(
                    "DB_SSLROOTCERT={root_cert:?} is not a file (the CA bundle that signed the database's certificate)"
                ),
            ));
        }
        query.push_str(&format!("&sslrootcert={}", percent_encode(root_cert)));
    }
    let url = format!("postgres://{credentials}@{host}:{port}/{}?{query}", percent_encode(&name));
    PgConnectOptions::from_str(&url).map_err(|_| {
        ConfigError::new(
            "DB_HOST",
            format!(
                "DB_HOST={raw_host:?} does not form a valid PostgreSQL address (expected a host name or IP address)"
            ),
        )
    })?;
    Ok(url)
}

/// `APP_DB_ROLE` and `APP_DB_ROLE_PASSWORD`, both or neither. The name is
/// a plain identifier so that it never needs quoting rules to be right.
fn app_role(get: &impl Fn(&str) -> Option<String>) -> Result<Option<AppRole>, ConfigError> {
    match (get("APP_DB_ROLE"), get("APP_DB_ROLE_PASSWORD")) {
        (None, None) => Ok(None),
        (Some(name), Some(password)) => {
            let name = name.trim().to_owned();
            let valid = name.len() <= 63
                && name.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
                && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
            if !valid {
                return Err(ConfigError::new(
                    "APP_DB_ROLE",
                    format!(
                        "APP_DB_ROLE={name:?} is not a role name (expected lower-case letters, digits and _, at most 63)"
                    ),
                ));
            }
            if password.len() < 16 {
                return Err(ConfigError::new(
                    "APP_DB_ROLE_PASSWORD",
                    "APP_DB_ROLE_PASSWORD is shorter than 16 characters",
                ));
            }
            Ok(Some(AppRole { name, password }))
        }
        (Some(_), None) => {
            Err(ConfigError::new("APP_DB_ROLE_PASSWORD", "APP_DB_ROLE is set but APP_DB_ROLE_PASSWORD is not"))
        }
        (None, Some(_)) => Err(ConfigError::new("APP_DB_ROLE", "APP_DB_ROLE_PASSWORD is set but APP_DB_ROLE is not")),
    }
}

fn validate_database_url(url: &str) -> Result<(), ConfigError> {
    // Never print the value: it normally contains the password.
    let invalid = || {
        ConfigError::new(
            "DATABASE_URL",
            "DATABASE_URL is not a valid PostgreSQL URL (expected postgres://USER:PASSWORD@HOST:PORT/DBNAME)",
        )
    };
    if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
        return Err(invalid());
    }
    PgConnectOptions::from_str(url).map_err(|_| invalid())?;
    Ok(())
}

fn parse_port(setting: &str, raw: &str) -> Result<u16, ConfigError> {
    match raw.trim().parse::<u16>() {
        Ok(port) if port != 0 => Ok(port),
        _ => Err(ConfigError::new(setting, format!("{setting}={raw:?} is not a port number (expected 1-65535)"))),
    }
}

/// The settings of [`crate::limits`]; the write rate limit is on unless
/// `WRITE_RATE_LIMIT` turns it off.
fn parse_limits(get: &impl Fn(&str) -> Option<String>) -> Result<Limits, ConfigError> {
    let request_timeout_seconds = match get("REQUEST_TIMEOUT_SECONDS") {
        None => limits::DEFAULT_REQUEST_TIMEOUT_SECONDS,
        Some(raw) => match raw.trim().parse::<u64>() {
            Ok(secs) if (1..=MAX_REQUEST_TIMEOUT_SECONDS).contains(&secs) => secs,
            _ => {
                return Err(ConfigError::new(
                    "REQUEST_TIMEOUT_SECONDS",
                    format!(
                        "REQUEST_TIMEOUT_SECONDS={raw:?} is not a whole number of seconds (expected 1-{MAX_REQUEST_TIMEOUT_SECONDS})"
                    ),
                ));
            }
        },
    };
    let burst = match get("WRITE_RATE_BURST") {
        None => limits::DEFAULT_WRITE_BURST,
        Some(raw) => match raw.trim().parse::<u32>() {
            Ok(burst) if burst >= 1 => burst,
            _ => {
                return Err(ConfigError::new(
                    "WRITE_RATE_BURST",
                    format!("WRITE_RATE_BURST={raw:?} is not a whole number of writes (expected 1 or more)"),
                ));
            }
        },
    };
    let per_second = match get("WRITE_RATE_PER_SECOND") {
        None => limits::DEFAULT_WRITE_PER_SECOND,
        Some(raw) => match raw.trim().parse::<f64>() {
            // The lower bound keeps Retry-After within a day.
            Ok(rate) if rate.is_finite() && rate >= 1.0 / 86_400.0 => rate,
            _ => {
                return Err(ConfigError::new(
                    "WRITE_RATE_PER_SECOND",
                    format!("WRITE_RATE_PER_SECOND={raw:?} is not a positive number (expected e.g. 0.1 or 5)"),
                ));
            }
        },
    };
    let write_rate_limit = parse_flag(get, "WRITE_RATE_LIMIT", true)?;
    let trusted_proxy_hops = match get("TRUSTED_PROXY_HOPS") {
        None => 0,
        Some(raw) => match raw.trim().parse::<usize>() {
            Ok(hops) if hops <= MAX_TRUSTED_PROXY_HOPS => hops,
            _ => {
                return Err(ConfigError::new(
                    "TRUSTED_PROXY_HOPS",
                    format!(
                        "TRUSTED_PROXY_HOPS={raw:?} is not a number of proxies (expected 0-{MAX_TRUSTED_PROXY_HOPS})"
                    ),
                ));
            }
        },
    };
    Ok(Limits {
        request_timeout: Duration::from_secs(request_timeout_seconds),
        write_rate: write_rate_limit.then_some(WriteRate { burst, per_second }),
        trusted_proxy_hops,
    })
}

fn parse_flag(get: &impl Fn(&str) -> Option<String>, setting: &str, default: bool) -> Result<bool, ConfigError> {
    let Some(raw) = get(setting) else {
        return Ok(default);
    };
    match raw.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" => Ok(false),
        _ => Err(ConfigError::new(
            setting,
            format!("{setting}={raw:?} is not a boolean (expected true/false, 1/0, yes/no or on/off)"),
        )),
    }
}

/// Percent-encodes everything but RFC 3986 unreserved characters, which is
/// always safe in the userinfo and path of a URL.
fn percent_encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// Replaces the password in a connection URL with `***`, for logs.
pub fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return "***".to_owned();
    };
    let rest_start = scheme_end + 3;
    let authority_end = url[rest_start..].find(['/', '?', '#']).map_or(url.len(), |i| rest_start + i);
    let authority = &url[rest_start..authority_end];
    let Some(at) = authority.rfind('@') else {
        return url.to_owned();
    };
    let userinfo = &authority[..at];
    let Some(colon) = userinfo.find(':') else {
        return url.to_owned();
    };
    format!("{}{}:***{}", &url[..rest_start], &userinfo[..colon], &url[rest_start + at..])
}

#[cfg(test)]
mod tests {
    use super::*;

    const URL: &str = "postgres://app:secret@db.internal:5432/app";

    fn lookup<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |name| pairs.iter().find(|(k, _)| *k == name).map(|(_, v)| (*v).to_owned())
    }

    fn err(pairs: &[(&str, &str)]) -> ConfigError {
        Config::from_lookup(lookup(pairs)).expect_err("config should be rejected")
    }

    #[test]
    fn defaults_apply_with_only_a_database_url() {
        let config = Config::from_lookup(lookup(&[("DATABASE_URL", URL)])).unwrap();
        assert_eq!(config.database_url, URL);
        assert_eq!(config.port, 8080);
        assert_eq!(config.bind_addr, IpAddr::V4(Ipv4Addr::UNSPECIFIED));
        assert_eq!(config.log_filter, "info");
        assert_eq!(config.shutdown_drain, Duration::from_secs(20));
        assert!(!config.run_migrations_on_start);
        assert!(!config.enable_debug_routes);
        assert_eq!(config.limits, Limits::default());
        assert_eq!(config.limits.write_rate, Some(WriteRate { burst: 10, per_second: 0.1 }));
        assert_eq!(config.limits.trusted_proxy_hops, 0);
        assert_eq!(config.limits.request_timeout, Duration::from_secs(10));
        assert_eq!(config.socket_addr().to_string(), "0.0.0.0:8080");
    }

    #[test]
    fn every_setting_is_read() {
        let config = Config::from_lookup(lookup(&[
            ("DATABASE_URL", URL),
            ("PORT", "9000"),
            ("BIND_ADDR", "::1"),
            ("RUST_LOG", "app=debug,sqlx=warn"),
            ("SHUTDOWN_DRAIN_SECONDS", "5"),
            ("RUN_MIGRATIONS_ON_START", "true"),
            ("APP_ENABLE_DEBUG_ROUTES", "1"),
            ("REQUEST_TIMEOUT_SECONDS", "3"),
            ("WRITE_RATE_BURST", "50"),
            ("WRITE_RATE_PER_SECOND", "2.5"),
            ("TRUSTED_PROXY_HOPS", "1"),
        ]))
        .unwrap();
        assert_eq!(
            config.limits,
            Limits {
                request_timeout: Duration::from_secs(3),
                write_rate: Some(WriteRate { burst: 50, per_second: 2.5 }),
                trusted_proxy_hops: 1,
            }
        );
        assert_eq!(config.socket_addr().to_string(), "[::1]:9000");
        assert_eq!(config.log_filter, "app=debug,sqlx=warn");
        assert_eq!(config.shutdown_drain, Duration::from_secs(5));
        assert!(config.run_migrations_on_start);
        assert!(config.enable_debug_routes);
    }

    #[test]
    fn bad_port_names_the_setting_and_the_range() {
        for bad in ["abc", "0", "65536", "-1", "80.5"] {
            let e = err(&[("DATABASE_URL", URL), ("PORT", bad)]);
            assert_eq!(e.setting(), "PORT");
            assert_eq!(e.to_string(), format!("PORT={bad:?} is not a port number (expected 1-65535)"));
        }
    }

    #[test]
    fn missing_database_settings_name_database_url() {
        let e = err(&[]);
        assert_eq!(e.setting(), "DATABASE_URL");
        assert!(e.to_string().starts_with("DATABASE_URL is not set"), "{e}");
        assert!(e.to_string().contains("DB_HOST"), "{e}");
    }

    #[test]
    fn empty_values_count_as_unset() {
        let e = err(&[("DATABASE_URL", "  ")]);
        assert_eq!(e.setting(), "DATABASE_URL");
        let config = Config::from_lookup(lookup(&[("DATABASE_URL", URL), ("PORT", "")])).unwrap();
        assert_eq!(config.port, DEFAULT_PORT);
    }

    #[test]
    fn invalid_database_url_is_rejected_without_echoing_it() {
        for bad in ["mysql://u:hunter2@h/db", "hunter2", "postgres://u:hunter2@h:notaport/db"] {
            let e = err(&[("DATABASE_URL", bad)]);
            assert_eq!(e.setting(), "DATABASE_URL");
            assert!(!e.to_string().contains("hunter2"), "{e}");
        }
    }

    #[test]
    fn db_parts_compose_an_encoded_url() {
        let config = Config::from_lookup(lookup(&[
            ("DB_HOST", "db.internal"),
            ("DB_NAME", "guest book"),
            ("DB_USER", "app@prod"),
            ("DB_PASSWORD", "p@ss:w/rd?#%"),
        ]))
        .unwrap();
        assert_eq!(
            config.database_url,
            "postgres://app%40prod:p%40ss%3Aw%2Frd%3F%23%25@db.internal:5432/guest%20book?sslmode=verify-full"
        );
        // The composed URL round-trips through the driver's own parser.
        let options = PgConnectOptions::from_str(&config.database_url).unwrap();
        assert!(matches!(options.get_ssl_mode(), sqlx::postgres::PgSslMode::VerifyFull));
        assert_eq!(options.get_host(), "db.internal");
        assert_eq!(options.get_port(), 5432);
        assert_eq!(options.get_username(), "app@prod");
        assert_eq!(options.get_database(), Some("guest book"));
    }

    #[test]
    fn db_parts_accept_a_port_ipv6_and_no_password() {
        let config = Config::from_lookup(lookup(&[
            ("DB_HOST", "::1"),
            ("DB_PORT", "6543"),
            ("DB_NAME", "app"),
            ("DB_USER", "app"),
        ]))
        .unwrap();
        assert_eq!(config.database_url, "postgres://app@[::1]:6543/app?sslmode=verify-full");
    }

    #[test]
    fn db_parts_take_an_sslmode_and_a_ca_bundle_that_exists() {
        let base = [("DB_HOST", "db.internal"), ("DB_NAME", "app"), ("DB_USER", "app")];
        let with = |extra: &[(&str, &str)]| Config::from_lookup(lookup(&[&base[..], extra].concat()));
        let config = with(&[("DB_SSLMODE", "require"), ("DB_SSLROOTCERT", "/etc/hostname")]).unwrap();
        assert_eq!(
            config.database_url,
            "postgres://app@db.internal:5432/app?sslmode=require&sslrootcert=%2Fetc%2Fhostname"
        );
        let options = PgConnectOptions::from_str(&config.database_url).unwrap();
        assert!(matches!(options.get_ssl_mode(), sqlx::postgres::PgSslMode::Require));
        let err = with(&[("DB_SSLMODE", "yes")]).unwrap_err();
        assert_eq!(err.setting(), "DB_SSLMODE");
        let err = with(&[("DB_SSLROOTCERT", "/nonexistent/rds.pem")]).unwrap_err();
        assert_eq!(err.setting(), "DB_SSLROOTCERT");
        assert!(err.to_string().contains("/nonexistent/rds.pem"), "{err}");
    }

    #[test]
    fn the_app_role_needs_both_settings_a_plain_name_and_a_long_password() {
        let url = ("DATABASE_URL", URL);
        let role = Config::from_lookup(lookup(&[
            url,
            ("APP_DB_ROLE", "guestbook_app"),
            ("APP_DB_ROLE_PASSWORD", "0123456789abcdef"),
        ]))
        .unwrap()
        .app_role
        .unwrap();
        assert_eq!(role.name, "guestbook_app");
        assert!(!format!("{role:?}").contains("0123456789abcdef"));
        for (settings, bad) in [
            (&[url, ("APP_DB_ROLE", "guestbook_app")][..], "APP_DB_ROLE_PASSWORD"),
            (&[url, ("APP_DB_ROLE_PASSWORD", "0123456789abcdef")], "APP_DB_ROLE"),
            (&[url, ("APP_DB_ROLE", "App; DROP"), ("APP_DB_ROLE_PASSWORD", "0123456789abcdef")], "APP_DB_ROLE"),
            (&[url, ("APP_DB_ROLE", "guestbook_app"), ("APP_DB_ROLE_PASSWORD", "short")], "APP_DB_ROLE_PASSWORD"),
        ] {
            assert_eq!(Config::from_lookup(lookup(settings)).unwrap_err().setting(), bad, "{settings:?}");
        }
    }

    #[test]
    fn database_url_wins_over_db_parts() {
        let config = Config::from_lookup(lookup(&[("DATABASE_URL", URL), ("DB_HOST", "elsewhere")])).unwrap();
        assert_eq!(config.database_url, URL);
    }

    #[test]
    fn incomplete_db_parts_name_the_missing_one() {
        let e = err(&[("DB_HOST", "h"), ("DB_USER", "u")]);
        assert_eq!(e.setting(), "DB_NAME");
        assert!(e.to_string().starts_with("DB_NAME is not set"), "{e}");
        let e = err(&[("DB_HOST", "h"), ("DB_NAME", "n")]);
        assert_eq!(e.setting(), "DB_USER");
        let e = err(&[("DB_HOST", "h"), ("DB_NAME", "n"), ("DB_USER", "u"), ("DB_PORT", "x")]);
        assert_eq!(e.setting(), "DB_PORT");
        let e = err(&[("DB_HOST", "bad host"), ("DB_NAME", "n"), ("DB_USER", "u")]);
        assert_eq!(e.setting(), "DB_HOST");
        assert!(e.to_string().starts_with("DB_HOST=\"bad host\" "), "{e}");
    }

    #[test]
    fn other_malformed_settings_are_named() {
        let cases = [
            ("BIND_ADDR", "localhost"),
            ("RUST_LOG", "app=loud"),
            ("SHUTDOWN_DRAIN_SECONDS", "soon"),
            ("SHUTDOWN_DRAIN_SECONDS", "99999"),
            ("RUN_MIGRATIONS_ON_START", "maybe"),
            ("APP_ENABLE_DEBUG_ROUTES", "2"),
            ("REQUEST_TIMEOUT_SECONDS", "0"),
            ("REQUEST_TIMEOUT_SECONDS", "1.5"),
            ("WRITE_RATE_LIMIT", "sometimes"),
            ("WRITE_RATE_BURST", "0"),
            ("WRITE_RATE_BURST", "ten"),
            ("WRITE_RATE_PER_SECOND", "0"),
            ("WRITE_RATE_PER_SECOND", "-1"),
            ("WRITE_RATE_PER_SECOND", "NaN"),
            ("WRITE_RATE_PER_SECOND", "inf"),
            ("TRUSTED_PROXY_HOPS", "-1"),
            ("TRUSTED_PROXY_HOPS", "11"),
        ];
        for (setting, value) in cases {
            let e = err(&[("DATABASE_URL", URL), (setting, value)]);
            assert_eq!(e.setting(), setting);
            let text = e.to_string();
            assert!(text.starts_with(&format!("{setting}={value:?} ")), "{text}");
            assert!(!text.contains('\n'), "{text}");
        }
    }

    #[test]
    fn the_write_rate_limit_can_be_turned_off() {
        for off in ["off", "false", "0"] {
            let config = Config::from_lookup(lookup(&[("DATABASE_URL", URL), ("WRITE_RATE_LIMIT", off)])).unwrap();
            assert_eq!(config.limits.write_rate, None);
        }
        let config = Config::from_lookup(lookup(&[("DATABASE_URL", URL), ("WRITE_RATE_LIMIT", "on")])).unwrap();
        assert!(config.limits.write_rate.is_some());
    }

    #[test]
    fn debug_output_redacts_the_password() {
        let config = Config::from_lookup(lookup(&[("DATABASE_URL", URL)])).unwrap();
        let shown = format!("{config:?}");
        assert!(!shown.contains("secret"), "{shown}");
        assert!(shown.contains("postgres://app:***@db.internal:5432/app"), "{shown}");
    }

    #[test]
    fn redact_url_handles_odd_shapes() {
        assert_eq!(redact_url("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(redact_url("postgres://h/db"), "postgres://h/db");
        assert_eq!(redact_url("postgres://u:p@ss@h/db"), "postgres://u:***@h/db");
        assert_eq!(redact_url("no scheme"), "***");
    }

    #[test]
    fn environment_wins_over_dotenv() {
        let dotenv =
            HashMap::from([("PORT".to_owned(), "7000".to_owned()), ("DATABASE_URL".to_owned(), URL.to_owned())]);
        let env = lookup(&[("PORT", "9000")]);
        let config = Config::from_lookup(layered(env, &dotenv)).unwrap();
        assert_eq!(config.port, 9000);
        assert_eq!(config.database_url, URL);
    }

    #[test]
    fn dotenv_files_are_parsed_without_touching_the_environment() {
        let dir = std::env::temp_dir().join(format!("app-config-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();

        let good = dir.join("good.env");
        std::fs::write(&good, "# comment\nPORT=7000\nAPP_TEST_ONLY_KEY=\"quoted value\"\n").unwrap();
        let values = read_dotenv(&good).unwrap();
        assert_eq!(values["PORT"], "7000");
        assert_eq!(values["APP_TEST_ONLY_KEY"], "quoted value");
        assert!(std::env::var_os("APP_TEST_ONLY_KEY").is_none());

        let bad = dir.join("bad.env");
        std::fs::write(&bad, "PORT=7000\nDB_PASSWORD hunter2\n").unwrap();
        let e = read_dotenv(&bad).unwrap_err();
        assert_eq!(e.setting(), ".env");
        assert!(e.to_string().contains("line 2 is malformed"), "{e}");
        assert!(!e.to_string().contains("hunter2"), "{e}");

        assert!(read_dotenv(&dir.join("missing.env")).unwrap().is_empty());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
