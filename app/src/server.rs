//! Running the HTTP server, with graceful shutdown.
//!
//! On SIGTERM (what ECS sends on deploys and scale-in) or SIGINT we stop
//! accepting connections, let in-flight requests finish, and exit 0. If they
//! do not finish within `SHUTDOWN_DRAIN_SECONDS`, or a second signal arrives,
//! we give up and exit 1 before the orchestrator escalates to SIGKILL.

use std::future::IntoFuture;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context as _, anyhow};
use tokio::net::TcpListener;
use tokio::signal::unix::{Signal, SignalKind, signal};

use crate::config::Config;
use crate::routes::{AppState, router};
use crate::version::VERSION;
use crate::{db, telemetry};

/// Serves until a shutdown signal; `Ok` means a clean drain.
pub async fn serve(config: Config) -> anyhow::Result<()> {
    // Install the handlers first: a signal during startup (say, mid-migration)
    // is then remembered and handled as soon as we serve, instead of the
    // default action killing the process halfway through.
    let mut signals = Signals::install()?;

    telemetry::init(&config.log_filter, telemetry::LogTarget::Stdout);
    tracing::info!(
        version = VERSION.version,
        git_sha = VERSION.git_sha,
        build_time = VERSION.build_time,
        database = %crate::config::redact_url(&config.database_url),
        drain_seconds = config.shutdown_drain.as_secs(),
        request_timeout_seconds = config.limits.request_timeout.as_secs(),
        write_rate_burst = config.limits.write_rate.map(|rate| rate.burst),
        write_rate_per_second = config.limits.write_rate.map(|rate| rate.per_second),
        trusted_proxy_hops = config.limits.trusted_proxy_hops,
        "starting"
    );

    if config.run_migrations_on_start {
        let report = db::migrate(&config.database_url, config.app_role.as_ref()).await?;
        for (version, description) in &report.applied {
            tracing::info!(version, description, "applied migration");
        }
        tracing::info!(current_version = report.current_version, "migrations up to date");
    }

    let pool = db::lazy_pool(&config.database_url).context("invalid database url")?;
    if config.enable_debug_routes {
        tracing::warn!("debug routes are enabled (APP_ENABLE_DEBUG_ROUTES); never do this in production");
    }
    if config.limits.write_rate.is_none() {
        tracing::warn!("the write rate limit is off (WRITE_RATE_LIMIT)");
    }
    let state = AppState::new(pool.clone()).with_debug_routes(config.enable_debug_routes).with_limits(config.limits);
    let app = router(state);

    let addr = config.socket_addr();
    let listener = TcpListener::bind(addr).await.with_context(|| format!("could not listen on {addr}"))?;
    tracing::info!(addr = %listener.local_addr().unwrap_or(addr), "listening");

    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    // The peer address is the write rate limit's client when no proxy is trusted.
    let server = axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>())
        .with_graceful_shutdown(async move {
            let _ = stop_rx.await;
        })
        .into_future();
    tokio::pin!(server);

    let signal = tokio::select! {
        result = &mut server => {
            // Only an I/O error ends the server before we ask it to.
            return result.context("server failed");
        }
        signal = signals.recv() => signal,
    };

    let drain = config.shutdown_drain;
    tracing::info!(
        signal,
        drain_seconds = drain.as_secs(),
        "shutdown requested; no longer accepting connections, draining in-flight requests"
    );
    let _ = stop_tx.send(());

    tokio::select! {
        result = tokio::time::timeout(drain, &mut server) => match result {
            Ok(result) => {
                result.context("server failed while draining")?;
                // Bounded: closing politely talks to the database, which may
                // be the thing that is unwell.
                let _ = tokio::time::timeout(Duration::from_secs(2), pool.close()).await;
                tracing::info!("drained; shutdown complete");
                Ok(())
            }
            Err(_) => {
                tracing::error!(drain_seconds = drain.as_secs(), "drain timed out with requests still in flight");
                Err(anyhow!(
                    "shutdown drain timed out after {}s with requests still in flight",
                    drain.as_secs()
                ))
            }
        },
        signal = signals.recv() => {
            tracing::error!(signal, "second shutdown signal; exiting without waiting for in-flight requests");
            Err(anyhow!("received {signal} again while draining; exited without waiting for in-flight requests"))
        }
    }
}

/// The signals that ask us to shut down.
struct Signals {
    term: Signal,
    int: Signal,
}

impl Signals {
    fn install() -> anyhow::Result<Self> {
        Ok(Self {
            term: signal(SignalKind::terminate()).context("could not install the SIGTERM handler")?,
            int: signal(SignalKind::interrupt()).context("could not install the SIGINT handler")?,
        })
    }

    /// Waits for the next signal and returns its name.
    async fn recv(&mut self) -> &'static str {
        tokio::select! {
            _ = self.term.recv() => "SIGTERM",
            _ = self.int.recv() => "SIGINT",
        }
    }
}
