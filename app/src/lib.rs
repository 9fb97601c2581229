//! The guestbook service: an axum web app backed by Postgres.
//!
//! The binary (`src/main.rs`) only forwards to [`cli::main`]; everything lives
//! in this library so integration tests can build the [`router`] directly.
//!
//! ```no_run
//! # async fn demo(config: app::Config) -> Result<(), sqlx::Error> {
//! let pool = app::db::lazy_pool(&config.database_url)?;
//! let router = app::router(app::AppState::new(pool));
//! # drop(router);
//! # Ok(())
//! # }
//! ```

pub mod cli;
pub mod config;
pub mod db;
pub mod limits;
pub mod routes;
pub mod server;
pub mod telemetry;
pub mod version;

// Shared with build.rs; compiled here only to unit-test the date arithmetic.
#[cfg(test)]
mod rfc3339;

pub use config::{Config, ConfigError};
pub use routes::{AppState, router};
pub use version::{VERSION, VersionInfo};

#[cfg(test)]
mod rfc3339_tests {
    use super::rfc3339::{civil_from_days, format_unix_utc};
    use chrono::{DateTime, Datelike};

    #[test]
    fn known_timestamps() {
        assert_eq!(format_unix_utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(format_unix_utc(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(format_unix_utc(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(format_unix_utc(-1), "1969-12-31T23:59:59Z");
    }

    #[test]
    fn agrees_with_chrono_across_four_centuries() {
        // Every day (and a changing second of the day) from 1900 to 2300,
        // which covers the 100- and 400-year leap rules.
        let start: i64 = -25_567; // 1900-01-01
        for days in start..start + 146_097 {
            let secs = days * 86_400 + (days.rem_euclid(86_400));
            let expected = DateTime::from_timestamp(secs, 0).unwrap();
            assert_eq!(format_unix_utc(secs), expected.format("%Y-%m-%dT%H:%M:%SZ").to_string());
            let (y, m, d) = civil_from_days(days);
            assert_eq!((y, m, d), (i64::from(expected.year()), expected.month(), expected.day()));
        }
    }
}
