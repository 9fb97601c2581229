//! The HTTP surface: router, handlers, JSON errors and the HTML page.
//!
//! Every error a client can see is JSON of the shape `{"error": "..."}`
//! (plus `"field"` for validation errors), including malformed bodies and
//! unknown routes, so API clients never have to parse axum's plain-text
//! rejections. The HTML page escapes everything that came from a user, and
//! has no inline style or script (its style is `/style.css`), so the
//! Content-Security-Policy of [`crate::limits`] can forbid them.

use std::fmt::Write as _;
use std::time::Duration;

use axum::extract::rejection::{FormRejection, JsonRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, FromRequest, Query, Request, State};
use axum::handler::Handler as _;
use axum::http::{Method, StatusCode, Uri, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Json, Router, middleware};
use serde::Deserialize;
use serde_json::json;
use sqlx::PgPool;

use crate::db::{self, Entry, MESSAGE_MAX_CHARS, NAME_MAX_CHARS};
use crate::limits::{self, Limits, WriteLimiter};
use crate::telemetry;
use crate::version::VERSION;

/// Entries shown on the home page and returned by default from the API.
pub const DEFAULT_LIMIT: i64 = 20;
/// Largest `?limit=` the API accepts; bounds the cost of one request.
pub const MAX_LIMIT: i64 = 100;
/// Longest sleep `/debug/slow` agrees to; longer than any drain timeout we use.
pub const MAX_DEBUG_SLEEP_MS: u64 = 30_000;

/// Shared state of all handlers. Cheap to clone: the pool is an `Arc` inside.
#[derive(Clone, Debug)]
pub struct AppState {
    /// Connection pool; may point at a database that is down.
    pub pool: PgPool,
    /// Mount `/debug/*` test hooks. Never enable in production.
    pub debug_routes: bool,
    /// Body size, timeout, write rate and proxy trust.
    pub limits: Limits,
}

impl AppState {
    /// State with debug routes disabled and the default limits (the write
    /// rate limit on).
    pub fn new(pool: PgPool) -> Self {
        Self { pool, debug_routes: false, limits: Limits::default() }
    }

    /// Replaces the limits.
    pub fn with_limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// Enables or disables the `/debug/*` routes.
    pub fn with_debug_routes(mut self, enabled: bool) -> Self {
        self.debug_routes = enabled;
        self
    }
}

/// Builds the service's router, with the access log and the limits.
///
/// Each router has write-rate buckets of its own. The layers, outermost
/// first: security headers (so every answer has them, errors included), the
/// access log (so it sees the 413s, 429s and 503s below), the timeout, the
/// body limit; the write rate limit wraps only the two write handlers.
pub fn router(state: AppState) -> Router {
    let limits = state.limits;
    let write_limit = middleware::from_fn_with_state(WriteLimiter::new(&limits), limits::limit_writes);
    let mut router = Router::new()
        .route("/", get(home))
        .route("/style.css", get(style_sheet))
        .route("/entries", post(create_entry_form.layer(write_limit.clone())))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/version", get(version))
        .route("/api/entries", get(list_entries).post(create_entry.layer(write_limit)));
    if state.debug_routes {
        router = router.route("/debug/slow", get(debug_slow));
    }
    router
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(limits::BODY_LIMIT_BYTES))
        .layer(middleware::from_fn(limits::reject_large_bodies))
        .layer(middleware::from_fn_with_state(limits.request_timeout, limits::time_limit))
        .layer(middleware::from_fn(telemetry::log_requests))
        .layer(middleware::from_fn_with_state(limits.trusted_proxy_hops, limits::security_headers))
        .with_state(state)
}

// ---------------------------------------------------------------------------
// Errors

/// An error response: a status and a JSON body naming the problem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    status: StatusCode,
    message: String,
    field: Option<&'static str>,
}

impl ApiError {
    /// An error with a status and message.
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self { status, message: message.into(), field: None }
    }

    /// A 422 for one invalid input field.
    pub fn invalid_field(field: &'static str, message: impl Into<String>) -> Self {
        Self { status: StatusCode::UNPROCESSABLE_ENTITY, message: message.into(), field: Some(field) }
    }

    /// The status code this error responds with.
    pub fn status(&self) -> StatusCode {
        self.status
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = match self.field {
            Some(field) => json!({ "error": self.message, "field": field }),
            None => json!({ "error": self.message }),
        };
        (self.status, Json(body)).into_response()
    }
}

/// Database failures: details go to the log, the client gets a generic
/// message (connection strings and SQL have no business in a response).
impl From<sqlx::Error> for ApiError {
    fn from(error: sqlx::Error) -> Self {
        if is_unavailable(&error) {
            tracing::warn!(error = %error, "database unavailable");
            Self::new(StatusCode::SERVICE_UNAVAILABLE, "database unavailable")
        } else {
            tracing::error!(error = %error, "database error");
            Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal error")
        }
    }
}

/// Whether a database error means "cannot reach the database" (retryable,
/// 503) rather than a bug (500).
fn is_unavailable(error: &sqlx::Error) -> bool {
    matches!(error, sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) | sqlx::Error::Tls(_))
}

/// Turns axum's plain-text JSON rejections into our JSON error shape.
impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        // The rejection's source is the serde error, which names the field
        // (axum uses serde_path_to_error) without axum's capitalised prefix.
        let detail =
            std::error::Error::source(&rejection).map(ToString::to_string).unwrap_or_else(|| rejection.body_text());
        let message = match rejection {
            JsonRejection::JsonDataError(_) => format!("invalid JSON body: {detail}"),
            JsonRejection::JsonSyntaxError(_) => format!("malformed JSON body: {detail}"),
            JsonRejection::MissingJsonContentType(_) => {
                "expected a JSON body with content-type: application/json".to_owned()
            }
            _ => format!("could not read the request body: {detail}"),
        };
        Self::new(rejection.status(), message)
    }
}

impl From<QueryRejection> for ApiError {
    fn from(rejection: QueryRejection) -> Self {
        // As above: the source is serde's message without axum's prefix.
        let detail =
            std::error::Error::source(&rejection).map(ToString::to_string).unwrap_or_else(|| rejection.body_text());
        Self::new(StatusCode::BAD_REQUEST, format!("invalid query string: {detail}"))
    }
}

/// `axum::Json` with [`ApiError`] as its rejection.
///
/// Implemented by hand because the `#[derive(FromRequest)]` shortcut needs
/// axum's `macros` feature, and a proc-macro costs more to compile than this.
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiJson<T>(pub T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    Json<T>: FromRequest<S, Rejection = JsonRejection>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let Json(value) = Json::<T>::from_request(request, state).await?;
        Ok(Self(value))
    }
}

async fn not_found(method: Method, uri: Uri) -> ApiError {
    // Only the path: the query string may carry tokens.
    ApiError::new(StatusCode::NOT_FOUND, format!("no route for {method} {}", uri.path()))
}

async fn method_not_allowed(method: Method, uri: Uri) -> ApiError {
    ApiError::new(StatusCode::METHOD_NOT_ALLOWED, format!("method {method} is not allowed for {}", uri.path()))
}

// ---------------------------------------------------------------------------
// Operational endpoints

/// Liveness: the process is up and the runtime is scheduling tasks. Never
/// touches the database, so a database outage does not get tasks killed.
async fn healthz() -> Json<serde_json::Value> {
    Json(json!({ "status": "ok" }))
}

/// Readiness: can we serve real traffic, i.e. is the database reachable.
async fn readyz(State(state): State<AppState>) -> Response {
    match db::ping(&state.pool).await {
        Ok(()) => Json(json!({ "status": "ready" })).into_response(),
        Err(error) => {
            tracing::warn!(error = %error, "readiness check failed");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(json!({ "status": "unavailable", "error": "database is unreachable" })),
            )
                .into_response()
        }
    }
}

async fn version() -> Json<crate::version::VersionInfo> {
    Json(VERSION)
}

#[derive(Debug, Deserialize)]
struct SlowParams {
    ms: Option<u64>,
}

/// Test hook: holds a request open so tests can observe graceful shutdown.
async fn debug_slow(params: Result<Query<SlowParams>, QueryRejection>) -> Result<Json<serde_json::Value>, ApiError> {
    let Query(params) = params?;
    let ms = params.ms.unwrap_or(1000).min(MAX_DEBUG_SLEEP_MS);
    tokio::time::sleep(Duration::from_millis(ms)).await;
    Ok(Json(json!({ "slept_ms": ms })))
}

// ---------------------------------------------------------------------------
// Entries API

#[derive(Debug, Deserialize)]
struct ListParams {
    // A string, not a number, so "abc" gets our error message rather than
    // serde's.
    limit: Option<String>,
}

async fn list_entries(
    State(state): State<AppState>,
    params: Result<Query<ListParams>, QueryRejection>,
) -> Result<Json<Vec<Entry>>, ApiError> {
    let Query(params) = params?;
    let limit = match params.limit.as_deref().map(str::trim) {
        None | Some("") => DEFAULT_LIMIT,
        Some(raw) => match raw.parse::<i64>() {
            Ok(n) if (1..=MAX_LIMIT).contains(&n) => n,
            _ => {
                return Err(ApiError::new(
                    StatusCode::BAD_REQUEST,
                    format!("limit must be an integer between 1 and {MAX_LIMIT}"),
                ));
            }
        },
    };
    Ok(Json(db::latest_entries(&state.pool, limit).await?))
}

/// Body of `POST /api/entries` and of the HTML form. Fields are optional so
/// a missing one gets "name is required" instead of a serde message.
#[derive(Debug, Default, Deserialize)]
pub struct NewEntry {
    pub name: Option<String>,
    pub message: Option<String>,
}

/// A validated entry: trimmed, non-empty and within the length limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidEntry {
    pub name: String,
    pub message: String,
}

impl NewEntry {
    /// Reads the fields from a JSON object. Taking an object (not deriving
    /// from any JSON) rejects arrays, which serde would otherwise accept as
    /// a struct, and lets a wrong type name its field.
    pub fn from_json(object: &serde_json::Map<String, serde_json::Value>) -> Result<Self, ApiError> {
        let field = |name: &'static str| match object.get(name) {
            None | Some(serde_json::Value::Null) => Ok(None),
            Some(serde_json::Value::String(value)) => Ok(Some(value.clone())),
            Some(_) => Err(ApiError::invalid_field(name, format!("{name} must be a string"))),
        };
        Ok(Self { name: field("name")?, message: field("message")? })
    }

    /// Checks the fields in order and reports the first invalid one.
    pub fn validate(&self) -> Result<ValidEntry, ApiError> {
        Ok(ValidEntry {
            name: validate_field("name", self.name.as_deref(), NAME_MAX_CHARS)?,
            message: validate_field("message", self.message.as_deref(), MESSAGE_MAX_CHARS)?,
        })
    }
}

fn validate_field(field: &'static str, value: Option<&str>, max_chars: usize) -> Result<String, ApiError> {
    let Some(value) = value else {
        return Err(ApiError::invalid_field(field, format!("{field} is required")));
    };
    let value = value.trim();
    if value.is_empty() {
        return Err(ApiError::invalid_field(field, format!("{field} must not be empty")));
    }
    // Characters, not bytes: "ü" is one character of a 64-character name.
    if value.chars().count() > max_chars {
        return Err(ApiError::invalid_field(field, format!("{field} must be at most {max_chars} characters")));
    }
    Ok(value.to_owned())
}

async fn create_entry(
    State(state): State<AppState>,
    ApiJson(object): ApiJson<serde_json::Map<String, serde_json::Value>>,
) -> Result<(StatusCode, Json<Entry>), ApiError> {
    let valid = NewEntry::from_json(&object)?.validate()?;
    let entry = db::insert_entry(&state.pool, &valid.name, &valid.message).await?;
    tracing::info!(entry_id = entry.id, "entry created");
    Ok((StatusCode::CREATED, Json(entry)))
}

// ---------------------------------------------------------------------------
// HTML

/// The home page: the latest entries, a form, and the running version.
async fn home(State(state): State<AppState>) -> Response {
    match db::latest_entries(&state.pool, DEFAULT_LIMIT).await {
        Ok(entries) => Html(render_page(&entries, None, &NewEntry::default())).into_response(),
        Err(error) => html_error(error),
    }
}

/// The form on the home page posts here; on success we redirect back to `/`
/// (post/redirect/get, so a reload does not post twice).
async fn create_entry_form(State(state): State<AppState>, form: Result<Form<NewEntry>, FormRejection>) -> Response {
    let input = match form {
        Ok(Form(input)) => input,
        Err(rejection) => {
            return (rejection.status(), Html(render_message_page("could not read the form"))).into_response();
        }
    };
    let valid = match input.validate() {
        Ok(valid) => valid,
        Err(error) => {
            // Show the page again with the problem and what the user typed.
            let entries = db::latest_entries(&state.pool, DEFAULT_LIMIT).await.unwrap_or_default();
            let page = render_page(&entries, Some(&error.message), &input);
            return (error.status, Html(page)).into_response();
        }
    };
    match db::insert_entry(&state.pool, &valid.name, &valid.message).await {
        Ok(entry) => {
            tracing::info!(entry_id = entry.id, "entry created");
            Redirect::to("/").into_response()
        }
        Err(error) => html_error(error),
    }
}

fn html_error(error: sqlx::Error) -> Response {
    let status = ApiError::from(error).status;
    let text = if status == StatusCode::SERVICE_UNAVAILABLE {
        "the database is unavailable, please try again shortly"
    } else {
        "something went wrong"
    };
    (status, [(header::CACHE_CONTROL, "no-store")], Html(render_message_page(text))).into_response()
}

/// Escapes text for use in HTML element content and quoted attributes.
pub fn escape_html(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}

/// The page's style sheet: a file of its own, since the
/// Content-Security-Policy forbids inline style.
async fn style_sheet() -> Response {
    ([(header::CONTENT_TYPE, "text/css; charset=utf-8"), (header::CACHE_CONTROL, "public, max-age=300")], STYLE)
        .into_response()
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;max-width:40rem;margin:2rem auto;padding:0 1rem;color:#222}\
form{display:grid;gap:.5rem;margin-bottom:2rem}input,textarea,button{font:inherit;padding:.4rem}\
ol{list-style:none;padding:0}li{border-top:1px solid #ddd;padding:.75rem 0}li p{margin:.25rem 0 0;white-space:pre-wrap}\
time{color:#777;font-size:.85rem}.error{color:#a00}footer{margin-top:2rem;color:#777;font-size:.8rem}";

fn page_shell(body: &str) -> String {
    format!(
        "<!doctype html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>Guestbook</title>\n<link rel=\"stylesheet\" href=\"/style.css\">\n</head>\n<body>\n<main>\n<h1>Guestbook</h1>\n{body}</main>\n\
         <footer>{} {} &middot; git <code>{}</code> &middot; built <time>{}</time></footer>\n</body>\n</html>\n",
        escape_html(VERSION.name),
        escape_html(VERSION.version),
        escape_html(VERSION.git_sha),
        escape_html(VERSION.build_time),
    )
}

fn render_message_page(message: &str) -> String {
    page_shell(&format!("<p class=\"error\">{}</p>\n<p><a href=\"/\">Back</a></p>\n", escape_html(message)))
}

fn render_page(entries: &[Entry], error: Option<&str>, input: &NewEntry) -> String {
    let mut body = String::new();
    if let Some(error) = error {
        let _ = writeln!(body, "<p class=\"error\" role=\"alert\">{}</p>", escape_html(error));
    }
    let _ = write!(
        body,
        "<form method=\"post\" action=\"/entries\">\n\
         <input name=\"name\" placeholder=\"Your name\" maxlength=\"{NAME_MAX_CHARS}\" required value=\"{}\">\n\
         <textarea name=\"message\" placeholder=\"Say hello\" maxlength=\"{MESSAGE_MAX_CHARS}\" rows=\"3\" required>{}</textarea>\n\
         <button type=\"submit\">Sign the guestbook</button>\n</form>\n",
        escape_html(input.name.as_deref().unwrap_or("")),
        escape_html(input.message.as_deref().unwrap_or("")),
    );
    if entries.is_empty() {
        body.push_str("<p>No entries yet. Be the first!</p>\n");
    } else {
        body.push_str("<ol>\n");
        for entry in entries {
            let _ = writeln!(
                body,
                "<li><strong>{}</strong> <time datetime=\"{}\">{}</time><p>{}</p></li>",
                escape_html(&entry.name),
                entry.created_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                entry.created_at.format("%Y-%m-%d %H:%M UTC"),
                escape_html(&entry.message),
            );
        }
        body.push_str("</ol>\n");
    }
    page_shell(&body)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(name: Option<&str>, message: Option<&str>) -> NewEntry {
        NewEntry { name: name.map(str::to_owned), message: message.map(str::to_owned) }
    }

    #[test]
    fn escape_html_escapes_all_special_characters() {
        assert_eq!(
            escape_html(r#"<script>alert("x&y")</script>'"#),
            "&lt;script&gt;alert(&quot;x&amp;y&quot;)&lt;/script&gt;&#39;"
        );
        assert_eq!(escape_html("plain ü"), "plain ü");
    }

    #[test]
    fn validation_trims_and_checks_lengths_in_characters() {
        let valid = input(Some("  Ada "), Some("\thi\n")).validate().unwrap();
        assert_eq!(valid, ValidEntry { name: "Ada".into(), message: "hi".into() });

        let name = "ü".repeat(64);
        assert!(input(Some(&name), Some("m")).validate().is_ok());
        let e = input(Some(&format!("{name}ü")), Some("m")).validate().unwrap_err();
        assert_eq!(e.field, Some("name"));
        assert_eq!(e.message, "name must be at most 64 characters");
    }

    #[test]
    fn validation_names_the_field() {
        let cases = [
            (input(None, Some("m")), "name", "name is required"),
            (input(Some("   "), Some("m")), "name", "name must not be empty"),
            (input(Some("n"), None), "message", "message is required"),
            (input(Some("n"), Some("")), "message", "message must not be empty"),
            (input(Some("n"), Some(&"x".repeat(501))), "message", "message must be at most 500 characters"),
        ];
        for (input, field, message) in cases {
            let e = input.validate().unwrap_err();
            assert_eq!(e.status, StatusCode::UNPROCESSABLE_ENTITY);
            assert_eq!(e.field, Some(field));
            assert_eq!(e.message, message);
        }
    }
}
