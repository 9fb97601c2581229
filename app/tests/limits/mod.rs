//! The abuse limits and security headers (`app::limits`): in-process with a
//! peer address set by hand, and over real TCP with the `load` example.

use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{HeaderMap, Request, StatusCode, header};
use http_body_util::BodyExt as _;
use serde_json::json;
use tower::ServiceExt as _;

use app::limits::{Limits, WriteRate};

use crate::support::app_process::AppProcess;
use crate::support::db::{TestDb, unreachable_pool};

// The example's code, so the test runs the very loop people run by hand.
#[allow(dead_code)]
#[path = "../../examples/load.rs"]
mod load;

/// What a test looks at in a response.
struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: String,
}

impl Reply {
    fn header(&self, name: header::HeaderName) -> Option<&str> {
        self.headers.get(name).map(|value| value.to_str().expect("an ASCII header"))
    }
}

/// One request as it would come from `peer`, with extra headers.
struct Ask<'a> {
    method: &'a str,
    uri: &'a str,
    peer: &'a str,
    headers: &'a [(&'a str, &'a str)],
    content_type: Option<&'a str>,
    body: String,
}

impl<'a> Ask<'a> {
    fn get(uri: &'a str) -> Self {
        Ask { method: "GET", uri, peer: "192.0.2.1:40000", headers: &[], content_type: None, body: String::new() }
    }

    fn post_entry(peer: &'a str) -> Self {
        let body = json!({ "name": "limit", "message": "hello" }).to_string();
        Ask { method: "POST", uri: "/api/entries", peer, headers: &[], content_type: Some("application/json"), body }
    }

    fn headers(mut self, headers: &'a [(&'a str, &'a str)]) -> Self {
        self.headers = headers;
        self
    }

    async fn send(self, router: &Router) -> Reply {
        let mut request = Request::builder().method(self.method).uri(self.uri);
        if let Some(content_type) = self.content_type {
            request = request.header(header::CONTENT_TYPE, content_type);
        }
        for (name, value) in self.headers {
            request = request.header(*name, *value);
        }
        let mut request = request.body(Body::from(self.body)).unwrap();
        let peer: SocketAddr = self.peer.parse().unwrap();
        request.extensions_mut().insert(ConnectInfo(peer));
        let response = router.clone().oneshot(request).await.expect("router is infallible");
        let (parts, body) = response.into_parts();
        let bytes = body.collect().await.expect("body").to_bytes();
        Reply { status: parts.status, headers: parts.headers, body: String::from_utf8(bytes.to_vec()).unwrap() }
    }
}

async fn router_with_limits(limits: Limits) -> (TestDb, Router) {
    let db = TestDb::create();
    let pool = db.migrated_pool().await;
    (db, app::router(app::AppState::new(pool).with_limits(limits)))
}

fn burst_of(burst: u32, trusted_proxy_hops: usize) -> Limits {
    Limits { write_rate: Some(WriteRate { burst, per_second: 0.1 }), trusted_proxy_hops, ..Limits::default() }
}

#[tokio::test]
async fn bodies_over_16_kib_are_refused_with_413() {
    let router = app::router(app::AppState::new(unreachable_pool()));
    let big = format!(r#"{{"name":"n","message":"{}"}}"#, "x".repeat(17 * 1024));
    // With a Content-Length the middleware answers before any handler runs.
    let declared = big.len().to_string();
    let mut ask = Ask::post_entry("192.0.2.1:1");
    ask.body = big.clone();
    let reply = ask.headers(&[("content-length", &declared)]).send(&router).await;
    assert_eq!(reply.status, StatusCode::PAYLOAD_TOO_LARGE, "{}", reply.body);
    assert!(reply.body.contains("larger than 16384 bytes"), "{}", reply.body);
    // Without one (a streamed body) the extractor's limit answers 413 too.
    for (uri, content_type) in [("/api/entries", "application/json"), ("/entries", "application/x-www-form-urlencoded")]
    {
        let mut ask = Ask::post_entry("192.0.2.1:1");
        ask.uri = uri;
        ask.content_type = Some(content_type);
        ask.body = big.clone();
        assert_eq!(ask.send(&router).await.status, StatusCode::PAYLOAD_TOO_LARGE, "{uri}");
    }
}

#[tokio::test]
async fn writes_past_the_burst_get_429_with_retry_after_and_reads_do_not() {
    let (_db, router) = router_with_limits(Limits::default()).await;
    for n in 0..10 {
        let reply = Ask::post_entry("198.51.100.1:5000").send(&router).await;
        assert_eq!(reply.status, StatusCode::CREATED, "write {n}: {}", reply.body);
    }
    let refused = Ask::post_entry("198.51.100.1:5001").send(&router).await;
    assert_eq!(refused.status, StatusCode::TOO_MANY_REQUESTS);
    // One token per 10 s: the next one is 10 s away.
    assert_eq!(refused.header(header::RETRY_AFTER), Some("10"));
    assert!(refused.body.contains("too many writes"), "{}", refused.body);
    // The form shares the client's bucket.
    let mut form = Ask::post_entry("198.51.100.1:5002");
    form.uri = "/entries";
    form.content_type = Some("application/x-www-form-urlencoded");
    form.body = "name=a&message=b".to_owned();
    assert_eq!(form.send(&router).await.status, StatusCode::TOO_MANY_REQUESTS);
    // Reads from the same client are not limited.
    for _ in 0..50 {
        let mut read = Ask::get("/api/entries");
        read.peer = "198.51.100.1:5003";
        assert_eq!(read.send(&router).await.status, StatusCode::OK);
    }
    // Another client has its own burst.
    assert_eq!(Ask::post_entry("198.51.100.2:5000").send(&router).await.status, StatusCode::CREATED);
}

#[tokio::test]
async fn x_forwarded_for_names_the_client_only_behind_trusted_proxies() {
    // No trusted proxy: the header is the client's word and is ignored.
    let (_db, direct) = router_with_limits(burst_of(1, 0)).await;
    let first = Ask::post_entry("10.0.0.9:1").headers(&[("x-forwarded-for", "203.0.113.1")]).send(&direct).await;
    assert_eq!(first.status, StatusCode::CREATED);
    let spoofed = Ask::post_entry("10.0.0.9:2").headers(&[("x-forwarded-for", "203.0.113.2")]).send(&direct).await;
    assert_eq!(spoofed.status, StatusCode::TOO_MANY_REQUESTS);

    // One trusted proxy (the peer): its last entry is the client.
    let (_db, proxied) = router_with_limits(burst_of(1, 1)).await;
    for client in ["203.0.113.1", "6.6.6.6, 203.0.113.2"] {
        let reply = Ask::post_entry("10.0.0.9:1").headers(&[("x-forwarded-for", client)]).send(&proxied).await;
        assert_eq!(reply.status, StatusCode::CREATED, "{client}");
    }
    // Whatever the client puts in front of its real address does not help.
    let again =
        Ask::post_entry("10.0.0.9:1").headers(&[("x-forwarded-for", "7.7.7.7, 203.0.113.2")]).send(&proxied).await;
    assert_eq!(again.status, StatusCode::TOO_MANY_REQUESTS);
}

#[tokio::test]
async fn every_response_has_the_security_headers() {
    let (_db, router) = router_with_limits(burst_of(1, 0)).await;
    Ask::post_entry("192.0.2.1:1").send(&router).await;
    let replies = [
        ("/", Ask::get("/").send(&router).await),
        ("/api/entries", Ask::get("/api/entries").send(&router).await),
        ("/style.css", Ask::get("/style.css").send(&router).await),
        ("a 404", Ask::get("/nope").send(&router).await),
        ("a 429", Ask::post_entry("192.0.2.1:1").send(&router).await),
    ];
    assert_eq!(replies[4].1.status, StatusCode::TOO_MANY_REQUESTS);
    for (what, reply) in &replies {
        let csp = reply.header(header::CONTENT_SECURITY_POLICY).unwrap_or_else(|| panic!("{what}: no CSP"));
        assert!(csp.contains("default-src 'self'"), "{what}: {csp}");
        assert!(csp.contains("frame-ancestors 'none'"), "{what}: {csp}");
        assert!(!csp.contains("unsafe-inline"), "{what}: {csp}");
        assert_eq!(reply.header(header::X_CONTENT_TYPE_OPTIONS), Some("nosniff"), "{what}");
        assert_eq!(reply.header(header::X_FRAME_OPTIONS), Some("DENY"), "{what}");
        assert_eq!(reply.header(header::REFERRER_POLICY), Some("no-referrer"), "{what}");
        assert_eq!(reply.header(header::STRICT_TRANSPORT_SECURITY), None, "{what}: HSTS over plain HTTP");
    }
    // The page obeys its own policy: no inline style or script.
    let page = &replies[0].1.body;
    assert!(!page.contains("<style") && !page.contains("<script") && !page.contains("style="), "{page}");
    assert!(page.contains(r#"<link rel="stylesheet" href="/style.css">"#), "{page}");
    let css = &replies[2].1;
    assert_eq!(css.status, StatusCode::OK);
    assert_eq!(css.header(header::CONTENT_TYPE), Some("text/css; charset=utf-8"));
    assert!(css.body.contains("font-family"), "{}", css.body);
}

#[tokio::test]
async fn hsts_only_when_a_trusted_proxy_says_https() {
    let https: &[(&str, &str)] = &[("x-forwarded-proto", "https")];
    let direct = app::router(app::AppState::new(unreachable_pool()));
    let reply = Ask::get("/healthz").headers(https).send(&direct).await;
    assert_eq!(reply.header(header::STRICT_TRANSPORT_SECURITY), None, "the client's own claim");

    let proxied = app::router(app::AppState::new(unreachable_pool()).with_limits(burst_of(10, 1)));
    let reply = Ask::get("/healthz").headers(https).send(&proxied).await;
    assert_eq!(reply.header(header::STRICT_TRANSPORT_SECURITY), Some("max-age=31536000"));
    let reply = Ask::get("/healthz").headers(&[("x-forwarded-proto", "http")]).send(&proxied).await;
    assert_eq!(reply.header(header::STRICT_TRANSPORT_SECURITY), None);
}

#[tokio::test]
async fn a_request_past_the_timeout_gets_503() {
    let limits = Limits { request_timeout: Duration::from_secs(1), ..Limits::default() };
    let router = app::router(app::AppState::new(unreachable_pool()).with_debug_routes(true).with_limits(limits));
    let reply = Ask::get("/debug/slow?ms=3000").send(&router).await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(reply.body.contains("took longer than 1 s"), "{}", reply.body);
    assert_eq!(Ask::get("/debug/slow?ms=10").send(&router).await.status, StatusCode::OK);
}

/// The `load` example in a small, fixed size against the built binary over
/// real TCP (so the peer address is the client): 429s, never a 5xx.
#[test]
fn a_loopback_load_meets_429s_and_no_5xx() {
    let db = TestDb::create();
    let app = AppProcess::serve(&[("DATABASE_URL", db.url.as_str()), ("RUN_MIGRATIONS_ON_START", "true")]);
    let options = load::LoadOptions {
        authority: format!("127.0.0.1:{}", app.port),
        reads: 2_000,
        writes: 40,
        connections: 4,
        burst: 10,
    };
    let report = load::run(&options);
    eprintln!("{}", report.summary());
    assert_eq!(report.problems(&options), Vec::<String>::new(), "{:?}", report.samples);
    assert!(report.writes_created >= 10, "{}", report.summary());
    assert!(report.writes_limited > 0, "{}", report.summary());
    assert_eq!(report.writes_created + report.writes_limited, 40, "{}", report.summary());
}
