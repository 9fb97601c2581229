//! The PostgreSQL the images run against: the sidecar image used when this
//! machine has it, and a throwaway server from the host's binaries (what the
//! smoke test and `test-docker` use where no Postgres image can be pulled).

use std::time::Instant;

use anyhow::{Context, Result};

use crate::support::{cleanup, ctx::Ctx, ui};

/// The Postgres image the app's containers run against, used only when it
/// is already on this machine (`test-docker`'s sidecar, a local
/// environment's database).
pub const POSTGRES_IMAGE: &str = "postgres:16-alpine";

/// A throwaway PostgreSQL from the host's binaries on 127.0.0.1, stopped and
/// deleted when dropped and when xtask is interrupted.
pub struct HostPostgres {
    pub port: u16,
    password: String,
    _stop: cleanup::CleanupGuard,
}

impl HostPostgres {
    /// `start`, or with `--dry-run` only the line saying it would.
    pub fn start_unless_dry_run(ctx: &Ctx) -> Result<Option<HostPostgres>> {
        if ctx.would("start: a throwaway Postgres from the local binaries on 127.0.0.1") {
            return Ok(None);
        }
        HostPostgres::start().map(Some)
    }

    pub fn start() -> Result<HostPostgres> {
        let started = Instant::now();
        let options = testkit::PostgresOptions {
            // A container on the host's network reaches this address; a
            // container on a bridge network would need the bridge's.
            listen_addresses: Some("127.0.0.1".to_owned()),
            ..Default::default()
        };
        let postgres = testkit::Postgres::try_start_with(options).context("starting a throwaway Postgres")?;
        let port = postgres.port();
        let password = postgres.password().to_owned();
        ui::info(&format!(
            "started a throwaway Postgres on 127.0.0.1:{port} in {}",
            crate::support::time::format_duration(started.elapsed())
        ));
        let slot = std::sync::Mutex::new(Some(postgres));
        let stop = cleanup::register("stop the throwaway Postgres", move || {
            if let Some(postgres) = slot.lock().unwrap_or_else(|poison| poison.into_inner()).take() {
                postgres.stop();
            }
        });
        Ok(HostPostgres { port, password, _stop: stop })
    }

    /// The server's URL as seen from `host` (a container on the host's
    /// network says 127.0.0.1 or localhost).
    pub fn url(&self, host: &str) -> String {
        testkit::database_url(host, self.port, &self.password, "postgres")
    }
}
