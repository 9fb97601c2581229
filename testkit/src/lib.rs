//! Real services for tests and for `cargo xtask test-local`.
//!
//! Every service starts on a free loopback port, is waited for until it
//! answers, and is stopped (and its temp directory removed) when the handle is
//! dropped. When the handle is dropped during a panic, the directory and the
//! log are kept and their path printed, so a failing test leaves evidence.
//!
//! A missing binary is a test failure with a message that says how to install
//! it: no test silently skips.

mod error;
mod moto;
mod postgres;
mod process;
mod registry;
mod tls;

pub use error::{Error, Result};
pub use moto::Moto;
pub use postgres::{
    DetachedPostgres, Postgres, PostgresOptions, TlsFiles, database_url, password_file, random_password, stop_postgres,
};
pub use process::{ServiceDir, free_port, free_ports, which};
pub use registry::Registry;
pub use tls::TestCa;

/// Refuses an AWS endpoint that is not on this machine.
///
/// Every test that talks to "AWS" calls this first, so that a stray
/// `AWS_ENDPOINT_URL` or a missing one can never make a test reach real AWS.
pub fn assert_loopback_endpoint(endpoint_url: &str) {
    assert!(
        is_loopback_url(endpoint_url),
        "refusing to run a test against AWS endpoint {endpoint_url:?}: tests only talk to a local emulator on 127.0.0.1/localhost"
    );
}

/// True when the URL's host is 127.0.0.0/8, ::1 or localhost.
pub fn is_loopback_url(url: &str) -> bool {
    let Some(rest) = url.strip_prefix("http://").or_else(|| url.strip_prefix("https://")) else {
        return false;
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    if authority.contains('@') {
        return false;
    }
    let host = if let Some(bracketed) = authority.strip_prefix('[') {
        bracketed.split(']').next().unwrap_or("")
    } else {
        authority.split(':').next().unwrap_or("")
    };
    match host.parse::<std::net::IpAddr>() {
        Ok(ip) => ip.is_loopback(),
        Err(_) => host.eq_ignore_ascii_case("localhost"),
    }
}

/// True when running under CI (`CI=true` or `CI=1`).
pub fn in_ci() -> bool {
    matches!(std::env::var("CI").as_deref(), Ok("true") | Ok("1"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_urls_are_recognised() {
        for url in ["http://127.0.0.1:5000", "http://127.0.0.9:1/", "http://localhost:4566", "https://[::1]:443/x"] {
            assert!(is_loopback_url(url), "{url}");
        }
        for url in [
            "https://ecr.us-east-1.amazonaws.com",
            "http://10.0.0.1:5000",
            "http://127.0.0.1.evil.example:80",
            "http://user@127.0.0.1@evil.example",
            "127.0.0.1:5000",
            "",
        ] {
            assert!(!is_loopback_url(url), "{url}");
        }
    }

    #[test]
    #[should_panic(expected = "refusing to run a test against AWS endpoint")]
    fn real_aws_is_refused() {
        assert_loopback_endpoint("https://ecs.eu-west-1.amazonaws.com");
    }
}
