//! Abuse limits and security headers: what keeps one client (or one bug in
//! a client) from hurting everyone else, and what tells browsers to refuse
//! the tricks a guestbook full of other people's text invites.
//!
//! - Request bodies are capped at [`BODY_LIMIT_BYTES`] (413): an entry is at
//!   most 64 + 500 characters, so anything larger is not an entry.
//! - Every request has a deadline (`REQUEST_TIMEOUT_SECONDS`, 503 on expiry),
//!   shorter than the shutdown drain, so a stuck request cannot hold a
//!   connection or a database slot for ever, nor outlive a deploy's drain.
//! - The write endpoints (`POST /api/entries`, `POST /entries`) have a token
//!   bucket per client (429 with `Retry-After`); reads are not limited, since
//!   they are cheap and what a load balancer's health checks and users do most.
//! - Every response carries a Content-Security-Policy without inline script
//!   or style, `nosniff`, `DENY` framing and no referrer; HSTS only when the
//!   request reached a trusted proxy over HTTPS, since a browser ignores it
//!   over plain HTTP and a local `http://` environment must stay usable.
//!
//! Who "a client" is depends on `TRUSTED_PROXY_HOPS`: with 0 it is the peer
//! address of the TCP connection, and `X-Forwarded-For` is never read (any
//! client can send one). Behind N proxies that each append the address they
//! saw, the N-th address from the right is the one the outermost trusted
//! proxy saw; everything left of it was written by the client.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::routes::ApiError;

/// Largest request body accepted. The longest valid entry (64 + 500
/// characters of 4-byte UTF-8, percent- or `\u`-escaped) is under 7 KiB.
pub const BODY_LIMIT_BYTES: usize = 16 * 1024;
/// Default `REQUEST_TIMEOUT_SECONDS`: well below the 20 s shutdown drain and
/// the ALB's 60 s idle timeout.
pub const DEFAULT_REQUEST_TIMEOUT_SECONDS: u64 = 10;
/// Default `WRITE_RATE_BURST`: writes a client may make at once.
pub const DEFAULT_WRITE_BURST: u32 = 10;
/// Default `WRITE_RATE_PER_SECOND`: one write per 10 s once the burst is spent.
pub const DEFAULT_WRITE_PER_SECOND: f64 = 0.1;
/// Clients whose buckets are remembered; bounds the limiter's memory (about
/// 50 bytes each) whatever the number of addresses a flood comes from.
pub const MAX_TRACKED_CLIENTS: usize = 10_000;
/// `Strict-Transport-Security` when served over HTTPS: one year.
const HSTS: &str = "max-age=31536000";
/// No inline script or style anywhere; the page's style is `/style.css`.
const CONTENT_SECURITY_POLICY: &str =
    "default-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'; object-src 'none'";

/// The limits of one server, read from the environment by [`crate::Config`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limits {
    /// Deadline of one request (`REQUEST_TIMEOUT_SECONDS`).
    pub request_timeout: Duration,
    /// The write endpoints' token bucket; `None` when `WRITE_RATE_LIMIT=off`.
    pub write_rate: Option<WriteRate>,
    /// Proxies in front of the app that append to `X-Forwarded-For` and set
    /// `X-Forwarded-Proto` (`TRUSTED_PROXY_HOPS`).
    pub trusted_proxy_hops: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            request_timeout: Duration::from_secs(DEFAULT_REQUEST_TIMEOUT_SECONDS),
            write_rate: Some(WriteRate::default()),
            trusted_proxy_hops: 0,
        }
    }
}

/// A token bucket's shape: `burst` tokens, refilled at `per_second`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WriteRate {
    pub burst: u32,
    pub per_second: f64,
}

impl Default for WriteRate {
    fn default() -> Self {
        Self { burst: DEFAULT_WRITE_BURST, per_second: DEFAULT_WRITE_PER_SECOND }
    }
}

/// The per-client buckets of the write endpoints; cheap to clone (shared).
#[derive(Debug, Clone)]
pub struct WriteLimiter {
    inner: Option<Arc<Buckets>>,
    trusted_proxy_hops: usize,
}

impl WriteLimiter {
    /// A limiter for `limits`; one that lets everything through when the
    /// write rate limit is off.
    pub fn new(limits: &Limits) -> Self {
        Self {
            inner: limits.write_rate.map(|rate| Arc::new(Buckets::new(rate, MAX_TRACKED_CLIENTS))),
            trusted_proxy_hops: limits.trusted_proxy_hops,
        }
    }
}

/// Middleware of the write handlers: one token per request, or 429.
pub async fn limit_writes(State(limiter): State<WriteLimiter>, request: Request, next: Next) -> Response {
    let Some(buckets) = &limiter.inner else {
        return next.run(request).await;
    };
    let peer = request.extensions().get::<ConnectInfo<SocketAddr>>().map(|ConnectInfo(addr)| addr.ip());
    // Without a peer (a router driven in-process) all requests share one
    // bucket, which is the cautious choice.
    let client =
        client_ip(request.headers(), peer, limiter.trusted_proxy_hops).unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
    match buckets.take(client, Instant::now()) {
        Ok(()) => next.run(request).await,
        Err(wait) => {
            let seconds = retry_after_seconds(wait);
            tracing::info!(%client, retry_after = seconds, "write rate limited");
            let error = ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                format!("too many writes from this client; try again in {seconds} s"),
            );
            (StatusCode::TOO_MANY_REQUESTS, [(header::RETRY_AFTER, seconds.to_string())], error).into_response()
        }
    }
}

/// Middleware: answers 413 at once when `Content-Length` says the body is
/// too large. Chunked bodies are cut off by axum's `DefaultBodyLimit` in the
/// extractors, which answer 413 too.
pub async fn reject_large_bodies(request: Request, next: Next) -> Response {
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.trim().parse::<u64>().ok());
    if declared.is_some_and(|length| length > BODY_LIMIT_BYTES as u64) {
        return ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the request body is larger than {BODY_LIMIT_BYTES} bytes"),
        )
        .into_response();
    }
    next.run(request).await
}

/// Middleware: a 503 when the rest of the stack takes longer than `timeout`.
/// Dropping the handler's future cancels its database query too.
pub async fn time_limit(State(timeout): State<Duration>, request: Request, next: Next) -> Response {
    match tokio::time::timeout(timeout, next.run(request)).await {
        Ok(response) => response,
        Err(_) => {
            tracing::warn!(timeout_seconds = timeout.as_secs(), "request timed out");
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("the request took longer than {} s", timeout.as_secs()),
            )
            .into_response()
        }
    }
}

/// Middleware: the security headers of every response.
pub async fn security_headers(State(trusted_proxy_hops): State<usize>, request: Request, next: Next) -> Response {
    let https = came_over_https(request.headers(), trusted_proxy_hops);
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    let fixed: [(HeaderName, &'static str); 4] = [
        (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::REFERRER_POLICY, "no-referrer"),
    ];
    for (name, value) in fixed {
        headers.insert(name, HeaderValue::from_static(value));
    }
    if https {
        headers.insert(header::STRICT_TRANSPORT_SECURITY, HeaderValue::from_static(HSTS));
    }
    response
}

/// The client's address: the peer, or with `trusted_proxy_hops = N > 0` the
/// N-th address from the right of `X-Forwarded-For` (the peer when the
/// header has fewer entries, i.e. the request did not pass all the proxies).
pub fn client_ip(headers: &HeaderMap, peer: Option<IpAddr>, trusted_proxy_hops: usize) -> Option<IpAddr> {
    if trusted_proxy_hops == 0 {
        return peer;
    }
    let entries = header_list(headers, "x-forwarded-for");
    let Some(index) = entries.len().checked_sub(trusted_proxy_hops) else {
        return peer;
    };
    parse_forwarded_ip(&entries[index]).or(peer)
}

/// Whether the nearest trusted proxy says the client used HTTPS. Proxies set
/// `X-Forwarded-Proto` rather than append to it, so the last value is the
/// nearest proxy's; without a trusted proxy the header is the client's word.
pub fn came_over_https(headers: &HeaderMap, trusted_proxy_hops: usize) -> bool {
    trusted_proxy_hops > 0
        && header_list(headers, "x-forwarded-proto").last().is_some_and(|proto| proto.eq_ignore_ascii_case("https"))
}

/// `Retry-After` in whole seconds, rounded up, at least 1.
pub fn retry_after_seconds(wait: Duration) -> u64 {
    (wait.as_secs_f64().ceil() as u64).max(1)
}

/// The comma-separated entries of every line of a header, in order.
fn header_list(headers: &HeaderMap, name: &str) -> Vec<String> {
    headers
        .get_all(name)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(|entry| entry.trim().to_owned())
        .filter(|entry| !entry.is_empty())
        .collect()
}

/// An address as proxies write it: `1.2.3.4`, `2001:db8::1`, or with a port.
fn parse_forwarded_ip(entry: &str) -> Option<IpAddr> {
    entry.parse::<IpAddr>().ok().or_else(|| entry.parse::<SocketAddr>().ok().map(|addr| addr.ip()))
}

/// Token buckets by client address, at most `max_clients` of them.
#[derive(Debug)]
struct Buckets {
    rate: WriteRate,
    max_clients: usize,
    map: Mutex<HashMap<IpAddr, Bucket>>,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    updated: Instant,
}

impl Bucket {
    fn refilled(self, rate: WriteRate, now: Instant) -> f64 {
        let elapsed = now.saturating_duration_since(self.updated).as_secs_f64();
        (self.tokens + elapsed * rate.per_second).min(f64::from(rate.burst))
    }
}

impl Buckets {
    fn new(rate: WriteRate, max_clients: usize) -> Self {
        Self { rate, max_clients, map: Mutex::new(HashMap::new()) }
    }

    /// Takes a token of `client`'s bucket, or says how long until one is there.
    fn take(&self, client: IpAddr, now: Instant) -> Result<(), Duration> {
        // A panic while holding the lock cannot leave a bucket half-updated
        // in a harmful way, so a poisoned map is still usable.
        let mut map = self.map.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if !map.contains_key(&client) && map.len() >= self.max_clients {
            self.make_room(&mut map, now);
        }
        let full = Bucket { tokens: f64::from(self.rate.burst), updated: now };
        let bucket = map.entry(client).or_insert(full);
        let tokens = bucket.refilled(self.rate, now);
        *bucket = Bucket { tokens, updated: now };
        if tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - tokens) / self.rate.per_second))
        }
    }

    /// Forgets the buckets that have refilled (a new one would be the same),
    /// and if that is not enough, the eighth least recently used: a flood
    /// from many addresses then costs one sort per `max_clients / 8` new
    /// clients, not one per request.
    fn make_room(&self, map: &mut HashMap<IpAddr, Bucket>, now: Instant) {
        let burst = f64::from(self.rate.burst);
        map.retain(|_, bucket| bucket.refilled(self.rate, now) < burst);
        if map.len() < self.max_clients {
            return;
        }
        let mut updated: Vec<Instant> = map.values().map(|bucket| bucket.updated).collect();
        let cut = (self.max_clients / 8).max(1).min(updated.len() - 1);
        let (_, threshold, _) = updated.select_nth_unstable(cut);
        let threshold = *threshold;
        map.retain(|_, bucket| bucket.updated > threshold);
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.map.lock().unwrap().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    fn forwarded(values: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for value in values {
            headers.append("x-forwarded-for", HeaderValue::from_str(value).unwrap());
        }
        headers
    }

    #[test]
    fn the_burst_is_spent_then_tokens_come_back_at_the_rate() {
        let buckets = Buckets::new(WriteRate { burst: 3, per_second: 0.5 }, 100);
        let start = Instant::now();
        let client = ip("192.0.2.1");
        for _ in 0..3 {
            buckets.take(client, start).unwrap();
        }
        assert_eq!(buckets.take(client, start), Err(Duration::from_secs(2)));
        // Another client has a bucket of its own.
        buckets.take(ip("192.0.2.2"), start).unwrap();
        assert!(buckets.take(client, start + Duration::from_millis(1500)).is_err());
        buckets.take(client, start + Duration::from_secs(2)).unwrap();
        assert!(buckets.take(client, start + Duration::from_secs(2)).is_err());
    }

    #[test]
    fn retry_after_rounds_up_to_whole_seconds() {
        assert_eq!(retry_after_seconds(Duration::from_millis(100)), 1);
        assert_eq!(retry_after_seconds(Duration::from_secs(10)), 10);
        assert_eq!(retry_after_seconds(Duration::from_millis(10_001)), 11);
        assert_eq!(retry_after_seconds(Duration::ZERO), 1);
    }

    #[test]
    fn the_map_never_holds_more_than_the_cap() {
        let buckets = Buckets::new(WriteRate { burst: 2, per_second: 0.001 }, 64);
        let start = Instant::now();
        for i in 0..10_000u32 {
            let client = IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i));
            buckets.take(client, start + Duration::from_micros(u64::from(i))).unwrap();
            assert!(buckets.len() <= 64);
        }
        // Refilled buckets go first: after a long pause every one is full.
        buckets.take(ip("192.0.2.9"), start + Duration::from_secs(100_000)).unwrap();
        assert_eq!(buckets.len(), 1);
    }

    #[test]
    fn x_forwarded_for_is_read_only_behind_trusted_proxies() {
        let peer = Some(ip("10.0.0.5"));
        let headers = forwarded(&["6.6.6.6, 203.0.113.7"]);
        assert_eq!(client_ip(&headers, peer, 0), peer, "never trusted without proxies");
        assert_eq!(client_ip(&headers, peer, 1), Some(ip("203.0.113.7")));
        assert_eq!(client_ip(&headers, peer, 2), Some(ip("6.6.6.6")));
        assert_eq!(client_ip(&headers, peer, 3), peer, "fewer entries than proxies");
        // Several header lines form one list; ports and IPv6 are understood.
        let split = forwarded(&["6.6.6.6", "[2001:db8::1]:4711"]);
        assert_eq!(client_ip(&split, peer, 1), Some(ip("2001:db8::1")));
        assert_eq!(client_ip(&forwarded(&["nonsense"]), peer, 1), peer);
        assert_eq!(client_ip(&HeaderMap::new(), peer, 1), peer);
    }

    #[test]
    fn https_is_believed_only_from_a_trusted_proxy() {
        let mut headers = HeaderMap::new();
        headers.insert("x-forwarded-proto", HeaderValue::from_static("https"));
        assert!(!came_over_https(&headers, 0));
        assert!(came_over_https(&headers, 1));
        headers.insert("x-forwarded-proto", HeaderValue::from_static("https, http"));
        assert!(!came_over_https(&headers, 1));
    }
}
