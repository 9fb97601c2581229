//! The router, driven in-process with `tower::ServiceExt::oneshot`.
//!
//! Each test gets its own migrated database, so they run in parallel and in
//! any order.

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use http_body_util::BodyExt as _;
use serde_json::{Value, json};
use sqlx::PgPool;
use tower::ServiceExt as _;

use crate::support::db::{TestDb, unreachable_pool};

/// What a test looks at in a response.
struct Reply {
    status: StatusCode,
    content_type: String,
    location: Option<String>,
    body: String,
}

impl Reply {
    fn json(&self) -> Value {
        assert!(
            self.content_type.starts_with("application/json"),
            "expected JSON, got {:?}: {}",
            self.content_type,
            self.body
        );
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("invalid JSON ({e}): {}", self.body))
    }

    /// The `error` of a JSON error body (which every error must have).
    fn error(&self) -> String {
        self.json()["error"].as_str().unwrap_or_else(|| panic!("no \"error\" string in {}", self.body)).to_owned()
    }
}

async fn send(router: &Router, request: Request<Body>) -> Reply {
    let response = router.clone().oneshot(request).await.expect("router is infallible");
    let status = response.status();
    let header_text = |name| response.headers().get(name).map(|v: &header::HeaderValue| v.to_str().unwrap().to_owned());
    let content_type = header_text(header::CONTENT_TYPE).unwrap_or_default();
    let location = header_text(header::LOCATION);
    let bytes = response.into_body().collect().await.expect("body").to_bytes();
    Reply { status, content_type, location, body: String::from_utf8(bytes.to_vec()).expect("UTF-8 body") }
}

async fn get(router: &Router, uri: &str) -> Reply {
    send(router, Request::get(uri).body(Body::empty()).unwrap()).await
}

async fn post_raw(router: &Router, uri: &str, content_type: Option<&str>, body: &str) -> Reply {
    let mut request = Request::post(uri);
    if let Some(content_type) = content_type {
        request = request.header(header::CONTENT_TYPE, content_type);
    }
    send(router, request.body(Body::from(body.to_owned())).unwrap()).await
}

async fn post_json(router: &Router, body: Value) -> Reply {
    post_raw(router, "/api/entries", Some("application/json"), &body.to_string()).await
}

/// A router without the write rate limit: these tests post more entries
/// than a burst allows, and the limits have tests of their own (`limits`).
fn router_with(pool: PgPool) -> Router {
    let limits = app::limits::Limits { write_rate: None, ..app::limits::Limits::default() };
    app::router(app::AppState::new(pool).with_limits(limits))
}

/// A router on a fresh migrated database; keep the `TestDb` alive.
async fn app_with_db() -> (TestDb, Router) {
    let db = TestDb::create();
    let pool = db.migrated_pool().await;
    (db, router_with(pool))
}

// ---------------------------------------------------------------------------
// Operational endpoints

#[tokio::test]
async fn healthz_answers_without_a_database() {
    let router = router_with(unreachable_pool());
    let reply = get(&router, "/healthz").await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.json(), json!({ "status": "ok" }));
}

#[tokio::test]
async fn readyz_is_ok_when_the_database_answers() {
    let (_db, router) = app_with_db().await;
    let reply = get(&router, "/readyz").await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.json(), json!({ "status": "ready" }));
}

#[tokio::test]
async fn readyz_is_503_with_a_json_error_when_the_database_is_down() {
    let router = router_with(unreachable_pool());
    let reply = get(&router, "/readyz").await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(reply.json()["status"], "unavailable");
    assert_eq!(reply.error(), "database is unreachable");
}

#[tokio::test]
async fn version_reports_the_build() {
    let router = router_with(unreachable_pool());
    let reply = get(&router, "/version").await;
    assert_eq!(reply.status, StatusCode::OK);
    let v = reply.json();
    assert_eq!(v["name"], "app");
    assert_eq!(v["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(v["git_sha"], app::VERSION.git_sha);
    assert_eq!(v["build_time"], app::VERSION.build_time);
    assert!(
        chrono::DateTime::parse_from_rfc3339(v["build_time"].as_str().unwrap()).is_ok(),
        "build_time is not RFC 3339: {v}"
    );
}

// ---------------------------------------------------------------------------
// Entries API

#[tokio::test]
async fn created_entries_are_listed_latest_first() {
    let (_db, router) = app_with_db().await;

    let empty = get(&router, "/api/entries").await;
    assert_eq!(empty.status, StatusCode::OK);
    assert_eq!(empty.json(), json!([]));

    let first = post_json(&router, json!({ "name": "  Ada ", "message": "\thello\n" })).await;
    assert_eq!(first.status, StatusCode::CREATED, "{}", first.body);
    let first = first.json();
    assert_eq!(first["name"], "Ada", "fields are trimmed");
    assert_eq!(first["message"], "hello");
    assert!(first["id"].is_i64());
    let created_at = first["created_at"].as_str().expect("created_at string");
    assert!(chrono::DateTime::parse_from_rfc3339(created_at).is_ok(), "{created_at}");

    let second = post_json(&router, json!({ "name": "Grace", "message": "hi" })).await;
    assert_eq!(second.status, StatusCode::CREATED);
    let second = second.json();

    let list = get(&router, "/api/entries").await.json();
    assert_eq!(list, json!([second, first]));

    let limited = get(&router, "/api/entries?limit=1").await.json();
    assert_eq!(limited, json!([second]));
}

#[tokio::test]
async fn list_defaults_to_20_and_caps_at_the_limit() {
    let (_db, router) = app_with_db().await;
    for i in 0..25 {
        let reply = post_json(&router, json!({ "name": format!("n{i}"), "message": "m" })).await;
        assert_eq!(reply.status, StatusCode::CREATED);
    }
    let default = get(&router, "/api/entries").await.json();
    assert_eq!(default.as_array().unwrap().len(), 20);
    assert_eq!(default[0]["name"], "n24");
    let all = get(&router, "/api/entries?limit=100").await.json();
    assert_eq!(all.as_array().unwrap().len(), 25);
}

#[tokio::test]
async fn limit_out_of_range_is_a_json_400() {
    let (_db, router) = app_with_db().await;
    for limit in ["0", "101", "-1", "abc", "1.5"] {
        let reply = get(&router, &format!("/api/entries?limit={limit}")).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "limit={limit}");
        assert_eq!(reply.error(), "limit must be an integer between 1 and 100");
    }
}

#[tokio::test]
async fn each_invalid_field_is_named() {
    let (_db, router) = app_with_db().await;
    let long_name = "x".repeat(65);
    let long_message = "x".repeat(501);
    let cases = [
        (json!({ "message": "m" }), "name", "name is required"),
        (json!({ "name": null, "message": "m" }), "name", "name is required"),
        (json!({ "name": "", "message": "m" }), "name", "name must not be empty"),
        (json!({ "name": " \t\n", "message": "m" }), "name", "name must not be empty"),
        (json!({ "name": long_name, "message": "m" }), "name", "name must be at most 64 characters"),
        (json!({ "name": "n" }), "message", "message is required"),
        (json!({ "name": "n", "message": "" }), "message", "message must not be empty"),
        (json!({ "name": "n", "message": "   " }), "message", "message must not be empty"),
        (json!({ "name": "n", "message": long_message }), "message", "message must be at most 500 characters"),
    ];
    for (body, field, message) in cases {
        let reply = post_json(&router, body.clone()).await;
        assert_eq!(reply.status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
        assert_eq!(reply.json(), json!({ "error": message, "field": field }), "{body}");
    }
    // The limits are inclusive, and count characters rather than bytes.
    let at_limit = post_json(&router, json!({ "name": "ü".repeat(64), "message": "ü".repeat(500) })).await;
    assert_eq!(at_limit.status, StatusCode::CREATED, "{}", at_limit.body);

    // Nothing invalid was stored.
    let list = get(&router, "/api/entries").await.json();
    assert_eq!(list.as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn malformed_bodies_get_json_errors() {
    let (_db, router) = app_with_db().await;

    let syntax = post_raw(&router, "/api/entries", Some("application/json"), "{\"name\": ").await;
    assert_eq!(syntax.status, StatusCode::BAD_REQUEST);
    assert!(syntax.error().starts_with("malformed JSON body"), "{}", syntax.body);

    for (body, field) in
        [(json!({ "name": 5, "message": "m" }), "name"), (json!({ "name": "n", "message": ["m"] }), "message")]
    {
        let wrong_type = post_json(&router, body).await;
        assert_eq!(wrong_type.status, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(wrong_type.json(), json!({ "error": format!("{field} must be a string"), "field": field }));
    }

    let not_an_object = post_json(&router, json!(["a"])).await;
    assert_eq!(not_an_object.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(not_an_object.error().starts_with("invalid JSON body"), "{}", not_an_object.body);

    let no_content_type = post_raw(&router, "/api/entries", None, "{}").await;
    assert_eq!(no_content_type.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert!(no_content_type.error().contains("application/json"));
}

#[tokio::test]
async fn entries_api_is_503_when_the_database_is_down() {
    let router = router_with(unreachable_pool());
    let list = get(&router, "/api/entries").await;
    assert_eq!(list.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(list.error(), "database unavailable");
    let create = post_json(&router, json!({ "name": "n", "message": "m" })).await;
    assert_eq!(create.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(create.error(), "database unavailable");
}

// ---------------------------------------------------------------------------
// HTML

#[tokio::test]
async fn home_page_shows_the_version_and_escaped_entries() {
    let (_db, router) = app_with_db().await;

    let empty = get(&router, "/").await;
    assert_eq!(empty.status, StatusCode::OK);
    assert!(empty.content_type.starts_with("text/html"), "{}", empty.content_type);
    assert!(empty.body.contains("No entries yet"));
    assert!(empty.body.contains(app::VERSION.git_sha), "sha missing from page");

    let attack = json!({ "name": "<b>Mallory</b>", "message": "<script>alert(\"x\")</script> & 'co'" });
    assert_eq!(post_json(&router, attack).await.status, StatusCode::CREATED);

    let page = get(&router, "/").await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.body.contains(app::VERSION.git_sha));
    assert!(page.body.contains("&lt;b&gt;Mallory&lt;/b&gt;"), "{}", page.body);
    assert!(
        page.body.contains("&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; &#39;co&#39;"),
        "{}",
        page.body
    );
    assert!(!page.body.contains("<script>"), "unescaped user content:\n{}", page.body);
    assert!(!page.body.contains("<b>Mallory"), "unescaped user content");
}

#[tokio::test]
async fn home_page_shows_the_latest_20_entries() {
    let (_db, router) = app_with_db().await;
    for i in 0..22 {
        post_json(&router, json!({ "name": format!("name-{i}"), "message": "m" })).await;
    }
    let page = get(&router, "/").await;
    assert_eq!(page.body.matches("<li>").count(), 20);
    assert!(page.body.contains("name-21"));
    assert!(!page.body.contains("name-1<"), "oldest entries should be cut off");
}

#[tokio::test]
async fn home_page_is_503_when_the_database_is_down() {
    let router = router_with(unreachable_pool());
    let page = get(&router, "/").await;
    assert_eq!(page.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(page.content_type.starts_with("text/html"));
    assert!(page.body.contains("database is unavailable"));
    assert!(page.body.contains(app::VERSION.git_sha));
}

#[tokio::test]
async fn the_html_form_creates_entries_and_redirects() {
    let (_db, router) = app_with_db().await;
    let form = "application/x-www-form-urlencoded";

    let created = post_raw(&router, "/entries", Some(form), "name=Ada&message=hello+there").await;
    assert_eq!(created.status, StatusCode::SEE_OTHER);
    assert_eq!(created.location.as_deref(), Some("/"));
    let page = get(&router, "/").await;
    assert!(page.body.contains("<strong>Ada</strong>"));
    assert!(page.body.contains("hello there"));

    // Invalid input: the page again, with the error and the (escaped) input.
    let invalid = post_raw(&router, "/entries", Some(form), "name=%3Ci%3E&message=").await;
    assert_eq!(invalid.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(invalid.content_type.starts_with("text/html"));
    assert!(invalid.body.contains("message must not be empty"));
    assert!(invalid.body.contains("value=\"&lt;i&gt;\""), "{}", invalid.body);

    let unreadable = post_raw(&router, "/entries", Some("application/json"), "{}").await;
    assert_eq!(unreadable.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert!(unreadable.body.contains("could not read the form"));
}

// ---------------------------------------------------------------------------
// Routing

#[tokio::test]
async fn unknown_routes_and_methods_get_json_errors() {
    let router = router_with(unreachable_pool());

    let missing = get(&router, "/nope?token=secret").await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert_eq!(missing.error(), "no route for GET /nope");

    let wrong_method = send(&router, Request::delete("/api/entries").body(Body::empty()).unwrap()).await;
    assert_eq!(wrong_method.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(wrong_method.error(), "method DELETE is not allowed for /api/entries");
}

#[tokio::test]
async fn debug_routes_exist_only_when_enabled() {
    let disabled = router_with(unreachable_pool());
    assert_eq!(get(&disabled, "/debug/slow?ms=1").await.status, StatusCode::NOT_FOUND);

    let enabled = app::router(app::AppState::new(unreachable_pool()).with_debug_routes(true));
    let started = std::time::Instant::now();
    let reply = get(&enabled, "/debug/slow?ms=50").await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.json(), json!({ "slept_ms": 50 }));
    assert!(started.elapsed() >= std::time::Duration::from_millis(50));

    let bad = get(&enabled, "/debug/slow?ms=soon").await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert_eq!(bad.error(), "invalid query string: ms: invalid digit found in string");
}
