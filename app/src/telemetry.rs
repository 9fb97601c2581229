//! Logging setup and the per-request access log.
//!
//! Containers write JSON (one object per line, what CloudWatch Logs Insights
//! can query); a terminal gets the human-readable format instead.

use std::io::IsTerminal;
use std::time::Instant;

use axum::extract::Request;
use axum::middleware::Next;
use axum::response::Response;
use tracing_subscriber::EnvFilter;

/// Where log lines go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogTarget {
    /// The server's log stream (what the container runtime collects).
    Stdout,
    /// For one-shot commands whose stdout is their result (`app migrate`).
    Stderr,
}

/// Postgres NOTICEs ("relation already exists, skipping") arrive at INFO and
/// are noise; quieted unless the filter says something about sqlx itself.
const QUIET_NOTICES: &str = "sqlx::postgres::notice=warn";

/// Installs the global subscriber. `filter` was validated by the config.
///
/// Safe to call more than once: later calls are ignored, which lets tests
/// and the CLI share the same entry points.
pub fn init(filter: &str, target: LogTarget) {
    let mut env_filter = EnvFilter::try_new(filter).unwrap_or_else(|_| EnvFilter::new("info"));
    if !filter.contains("sqlx")
        && let Ok(directive) = QUIET_NOTICES.parse()
    {
        env_filter = env_filter.add_directive(directive);
    }
    let builder = tracing_subscriber::fmt().with_env_filter(env_filter);
    let is_terminal = match target {
        LogTarget::Stdout => std::io::stdout().is_terminal(),
        LogTarget::Stderr => std::io::stderr().is_terminal(),
    };
    let make_writer = move || -> Box<dyn std::io::Write> {
        match target {
            LogTarget::Stdout => Box::new(std::io::stdout()),
            LogTarget::Stderr => Box::new(std::io::stderr()),
        }
    };
    let result = if is_terminal {
        builder.with_writer(make_writer).with_target(false).try_init()
    } else {
        builder
            .with_writer(make_writer)
            .with_ansi(false)
            .json()
            // Fields at the top level (not under "fields") keep queries short.
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .try_init()
    };
    // An error only means a subscriber is already installed.
    drop(result);
}

/// Logs one line per request: method, path, status and latency.
///
/// The query string is left out on purpose: it is where tokens and personal
/// data end up, and the path is enough to find the handler.
pub async fn log_requests(request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let response = next.run(request).await;
    let status = response.status().as_u16();
    let latency_ms = started.elapsed().as_secs_f64() * 1000.0;
    if status >= 500 {
        tracing::warn!(%method, %path, status, latency_ms, "request");
    } else {
        tracing::info!(%method, %path, status, latency_ms, "request");
    }
    response
}
