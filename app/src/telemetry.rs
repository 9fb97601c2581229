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

/// Installs the global subscriber. `filter` was validated by the config.
///
/// Safe to call more than once: later calls are ignored, which lets tests
/// and the CLI share the same entry points.
pub fn init(filter: &str) {
    let filter = EnvFilter::try_new(filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stdout);
    let result = if std::io::stdout().is_terminal() {
        builder.with_target(false).try_init()
    } else {
        builder
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
