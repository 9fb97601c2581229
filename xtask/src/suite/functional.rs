//! Functional tests of a running app at any base URL (`cargo xtask
//! functional-test --url URL`, and steps of `cargo xtask ci`): every route
//! the service has, asked over plain HTTP the way a client would, plus the
//! home page rendered by a real browser (headless Chromium) where one is
//! installed.
//!
//! The checks write to the app (an entry through the API, one through the
//! form), each with a unique marker so that the check reading them back finds
//! its own and never another run's: they are safe against an environment
//! that already has data, and they leave two entries behind. Every check
//! runs even after one fails, so one run shows everything that is broken;
//! a check that needs an earlier one's result (the listing needs the created
//! entry) is skipped when that result is missing.
//!
//! Without Chromium the browser check is skipped, not failed: the HTTP
//! checks already prove the page is served, and a developer's machine need
//! not have a browser. `.ci/run` installs it, so CI always runs it.

use std::{
    path::{Path, PathBuf},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use anyhow::{Context, Result, anyhow, bail};
use clap::Args;
use serde_json::{Value, json};

use crate::{
    http::{self, BaseUrl, Request, Response},
    support::{
        ctx::Ctx,
        exec::capture_within,
        steps::{Announce, OnFailure, Steps},
        ui::{self, Outcome},
    },
};

/// How long one request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How long headless Chromium may take to load and dump the page.
const BROWSER_TIMEOUT: Duration = Duration::from_secs(60);
/// The browsers tried, in order (Debian's package is `chromium`).
const CHROMIUM_NAMES: [&str; 3] = ["chromium", "chromium-browser", "google-chrome"];

/// Run the functional tests against a running app: every route over HTTP,
/// and the home page in headless Chromium (skipped when not installed)
#[derive(Debug, Args)]
pub struct FunctionalTest {
    /// The app's base URL, e.g. http://127.0.0.1:8080
    #[arg(long)]
    pub url: String,
    /// The commit `/version` and the home page must name (default: the one
    /// `/version` reports)
    #[arg(long, value_name = "SHA")]
    pub expect_sha: Option<String>,
    /// Skip the headless-Chromium check of the home page
    #[arg(long)]
    pub no_browser: bool,
}

impl FunctionalTest {
    pub fn run(self, ctx: &Ctx) -> Result<()> {
        let base = BaseUrl::parse(&self.url)?;
        let options = FunctionalOptions { expect_sha: self.expect_sha, browser: !self.no_browser };
        run_functional_tests(ctx, &base, &options)
    }
}

/// What the functional tests expect besides working routes.
#[derive(Debug, Clone, Default)]
pub struct FunctionalOptions {
    /// The commit the app must report; any non-empty one when `None`.
    pub expect_sha: Option<String>,
    /// Also load the home page in headless Chromium (when installed).
    pub browser: bool,
}

/// Runs every check against `base` and prints a summary; an error names the
/// checks that failed. Under `--dry-run` it only lists the checks.
pub fn run_functional_tests(ctx: &Ctx, base: &BaseUrl, options: &FunctionalOptions) -> Result<()> {
    ui::step(&format!("functional tests of {base}"));
    // Under --dry-run every check is listed, and none is run.
    let mut only_planned = false;
    for check in Check::ALL {
        only_planned = ctx.would(format_args!("check: {} {}", check.name(), check.expectation()));
    }
    if only_planned {
        return Ok(());
    }
    let mut session = Session::new(base.clone(), options.clone());
    // Checks are not announced: each that passes prints the expectation it met.
    let mut steps = Steps::new(format!("functional tests of {base}"), OnFailure::Continue).announce(Announce::Nothing);
    for check in Check::ALL {
        steps.check(check.name(), || {
            let outcome = session.run(check)?;
            if outcome == Outcome::Passed {
                let reported = match (check, &session.git_sha) {
                    (Check::Version, Some(git_sha)) => format!(" ({git_sha})"),
                    _ => String::new(),
                };
                ui::info(&format!("  {}: {}{reported}", check.name(), check.expectation()));
            }
            Ok(outcome)
        });
    }
    steps.finish().map_err(|end| match end.failed.as_slice() {
        [] => anyhow!("interrupted"),
        failed => anyhow!("{} functional check(s) failed against {base}: {}", failed.len(), failed.join(", ")),
    })
}

/// One functional check; `ALL` is the order they run in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Check {
    Healthz,
    Readyz,
    Version,
    HomePage,
    StyleSheet,
    ApiCreate,
    ApiList,
    ApiValidation,
    FormPost,
    UnknownRoute,
    Browser,
}

impl Check {
    const ALL: [Check; 11] = [
        Check::Healthz,
        Check::Readyz,
        Check::Version,
        Check::HomePage,
        Check::StyleSheet,
        Check::ApiCreate,
        Check::ApiList,
        Check::ApiValidation,
        Check::FormPost,
        Check::UnknownRoute,
        Check::Browser,
    ];

    /// The name in the summary and in errors.
    fn name(self) -> &'static str {
        match self {
            Check::Healthz => "GET /healthz",
            Check::Readyz => "GET /readyz",
            Check::Version => "GET /version",
            Check::HomePage => "GET / (page)",
            Check::StyleSheet => "GET /style.css",
            Check::ApiCreate => "POST /api/entries",
            Check::ApiList => "GET /api/entries",
            Check::ApiValidation => "POST /api/entries (invalid)",
            Check::FormPost => "POST /entries (form)",
            Check::UnknownRoute => "GET unknown route",
            Check::Browser => "browser: headless Chromium",
        }
    }

    /// What passing means.
    fn expectation(self) -> &'static str {
        match self {
            Check::Healthz => "answers 200",
            Check::Readyz => "answers 200 (the database is reachable)",
            Check::Version => "answers JSON naming the expected git_sha",
            Check::HomePage => {
                "answers HTML with the form and the commit, under a CSP without inline style or script (and HSTS over HTTPS)"
            }
            Check::StyleSheet => "answers the page's style sheet as text/css",
            Check::ApiCreate => "creates an entry: 201 and the entry as JSON",
            Check::ApiList => "lists the created entry",
            Check::ApiValidation => "refuses an empty name with a 4xx JSON error naming the field",
            Check::FormPost => "redirects (or 200) and the entry shows on the page",
            Check::UnknownRoute => "answers 404",
            Check::Browser => "renders the page with the commit and the form",
        }
    }
}

/// The state checks share: what the app reported and what they created.
struct Session {
    base: BaseUrl,
    options: FunctionalOptions,
    /// Unique to this run: marks the entries it creates.
    marker: String,
    /// The commit the page must show: expected, else `/version`'s.
    git_sha: Option<String>,
    created_entry_id: Option<i64>,
}

impl Session {
    fn new(base: BaseUrl, options: FunctionalOptions) -> Session {
        let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |elapsed| elapsed.as_nanos());
        let marker = format!("ft{:x}{:x}", std::process::id(), nanos);
        let git_sha = options.expect_sha.clone();
        Session { base, options, marker, git_sha, created_entry_id: None }
    }

    fn send(&self, request: &Request) -> Result<Response> {
        http::send(&self.base, request, REQUEST_TIMEOUT)
    }

    fn run(&mut self, check: Check) -> Result<Outcome> {
        match check {
            Check::Healthz => self.expect_status(&Request::get("/healthz"), 200),
            Check::Readyz => self.expect_status(&Request::get("/readyz"), 200),
            Check::Version => self.version(),
            Check::HomePage => self.home_page(),
            Check::StyleSheet => self.style_sheet(),
            Check::ApiCreate => self.api_create(),
            Check::ApiList => self.api_list(),
            Check::ApiValidation => self.api_validation(),
            Check::FormPost => self.form_post(),
            Check::UnknownRoute => self.expect_status(&Request::get(&format!("/no-such-route-{}", self.marker)), 404),
            Check::Browser => self.browser(),
        }
    }

    fn expect_status(&self, request: &Request, status: u16) -> Result<Outcome> {
        let response = self.send(request)?;
        if response.status != status {
            bail!("{request} answered {}, expected {status}: {}", response.status, snippet(&response.body));
        }
        Ok(Outcome::Passed)
    }

    fn version(&mut self) -> Result<Outcome> {
        let response = self.send(&Request::get("/version"))?;
        let reported = http::version_sha(&response)?;
        if reported.trim().is_empty() {
            bail!("/version reports an empty git_sha: {}", response.body.trim());
        }
        match &self.options.expect_sha {
            Some(expected) if !same_commit(&reported, expected) => {
                bail!("/version reports git_sha {reported}, expected {expected}")
            }
            Some(_) => {}
            None => self.git_sha = Some(reported),
        }
        Ok(Outcome::Passed)
    }

    fn home_page(&self) -> Result<Outcome> {
        let response = self.send(&Request::get("/"))?;
        if response.status != 200 {
            bail!("GET / answered {}: {}", response.status, snippet(&response.body));
        }
        let content_type = response.header("content-type").unwrap_or_default();
        if !content_type.starts_with("text/html") {
            bail!("GET / answered content-type {content_type:?}, expected text/html");
        }
        check_page(&response.body, self.git_sha.as_deref())?;
        check_security_headers(&response)?;
        if self.base.tls {
            check_strict_transport_security(&response)?;
        }
        Ok(Outcome::Passed)
    }

    fn style_sheet(&self) -> Result<Outcome> {
        let response = self.send(&Request::get("/style.css"))?;
        if response.status != 200 {
            bail!("GET /style.css answered {}: {}", response.status, snippet(&response.body));
        }
        let content_type = response.header("content-type").unwrap_or_default();
        if !content_type.starts_with("text/css") {
            bail!("GET /style.css answered content-type {content_type:?}, expected text/css");
        }
        Ok(Outcome::Passed)
    }

    fn api_create(&mut self) -> Result<Outcome> {
        let message = format!("api {}", self.marker);
        let body = json!({ "name": "functional test", "message": message }).to_string();
        let response = self.send(&Request::post("/api/entries", "application/json", body))?;
        if response.status != 201 {
            bail!("POST /api/entries answered {}, expected 201: {}", response.status, snippet(&response.body));
        }
        let entry: Value = serde_json::from_str(&response.body)
            .with_context(|| format!("POST /api/entries answered {:?}, not JSON", snippet(&response.body)))?;
        let id = entry["id"].as_i64().with_context(|| format!("the created entry has no numeric id: {entry}"))?;
        if entry["name"] != "functional test" || entry["message"] != message.as_str() {
            bail!("the created entry is not what was sent: {entry}");
        }
        self.created_entry_id = Some(id);
        Ok(Outcome::Passed)
    }

    fn api_list(&self) -> Result<Outcome> {
        let Some(id) = self.created_entry_id else {
            return Ok(Outcome::Skipped("no entry was created to look for".to_owned()));
        };
        // The newest entries come first; another client's writes between
        // the two requests cannot push ours beyond the largest page.
        let response = self.send(&Request::get("/api/entries?limit=100"))?;
        if response.status != 200 {
            bail!("GET /api/entries answered {}: {}", response.status, snippet(&response.body));
        }
        let entries: Vec<Value> = serde_json::from_str(&response.body)
            .with_context(|| format!("GET /api/entries answered {:?}, not a JSON array", snippet(&response.body)))?;
        let message = format!("api {}", self.marker);
        if !entries.iter().any(|entry| entry["id"].as_i64() == Some(id) && entry["message"] == message.as_str()) {
            bail!("GET /api/entries does not list the entry {id} just created ({} entries)", entries.len());
        }
        Ok(Outcome::Passed)
    }

    fn api_validation(&self) -> Result<Outcome> {
        let body = json!({ "name": "", "message": "an entry without a name" }).to_string();
        let response = self.send(&Request::post("/api/entries", "application/json", body))?;
        if !(400..500).contains(&response.status) {
            bail!("an empty name answered {}, expected a 4xx: {}", response.status, snippet(&response.body));
        }
        let error: Value = serde_json::from_str(&response.body)
            .with_context(|| format!("the error is not JSON: {:?}", snippet(&response.body)))?;
        if !error["error"].is_string() || error["field"] != "name" {
            bail!("the error does not name the field: {error}");
        }
        Ok(Outcome::Passed)
    }

    fn form_post(&self) -> Result<Outcome> {
        let message = format!("form {}", self.marker);
        let body = format!("name=functional+test&message={}", message.replace(' ', "+"));
        let response = self.send(&Request::post("/entries", "application/x-www-form-urlencoded", body))?;
        match response.status {
            200 => {}
            301 | 302 | 303 | 307 | 308 => {
                let location = response.header("location").unwrap_or_default();
                if location != "/" && location != self.base.join("/") {
                    bail!("the form redirected to {location:?}, expected the home page");
                }
            }
            status => bail!("POST /entries answered {status}: {}", snippet(&response.body)),
        }
        let page = self.send(&Request::get("/"))?;
        if !page.body.contains(&message) {
            bail!("the entry posted through the form does not show on the home page");
        }
        Ok(Outcome::Passed)
    }

    fn browser(&self) -> Result<Outcome> {
        if !self.options.browser {
            return Ok(Outcome::Skipped("--no-browser".to_owned()));
        }
        let Some(chromium) = find_chromium() else {
            return Ok(Outcome::Skipped("chromium not installed".to_owned()));
        };
        let dom = dump_dom(&chromium, &self.base.join("/"))?;
        check_page(&dom, self.git_sha.as_deref()).context("the page Chromium rendered")?;
        Ok(Outcome::Passed)
    }
}

/// The home page has the title, the form and, when known, the commit.
fn check_page(html: &str, git_sha: Option<&str>) -> Result<()> {
    for (needle, what) in
        [("<h1>Guestbook</h1>", "heading"), ("<form", "form"), ("action=\"/entries\"", "form posting to /entries")]
    {
        if !html.contains(needle) {
            bail!("the page has no {what} ({needle}): {}", snippet(html));
        }
    }
    let Some(git_sha) = git_sha else {
        bail!("the page's commit cannot be checked: /version named none");
    };
    if !html.contains(git_sha) {
        bail!("the page does not show the commit {git_sha}");
    }
    Ok(())
}

/// The page may load nothing from elsewhere, run no inline script or style,
/// and not be framed (the app's `limits.rs`); the browser check then proves
/// the page still renders under that policy.
fn check_security_headers(response: &Response) -> Result<()> {
    let Some(policy) = response.header("content-security-policy") else {
        bail!("GET / has no Content-Security-Policy header");
    };
    for needed in ["default-src 'self'", "frame-ancestors 'none'"] {
        if !policy.contains(needed) {
            bail!("the Content-Security-Policy {policy:?} lacks {needed:?}");
        }
    }
    if policy.contains("'unsafe-inline'") {
        bail!("the Content-Security-Policy {policy:?} allows inline script or style");
    }
    if response.header("x-content-type-options") != Some("nosniff") {
        bail!("GET / has no X-Content-Type-Options: nosniff");
    }
    Ok(())
}

/// Over HTTPS the page tells browsers to keep to HTTPS: a
/// Strict-Transport-Security header with a max-age of a day at least (the
/// app sends a year).
fn check_strict_transport_security(response: &Response) -> Result<()> {
    let Some(policy) = response.header("strict-transport-security") else {
        bail!("GET / over HTTPS has no Strict-Transport-Security header");
    };
    let max_age = policy
        .split(';')
        .find_map(|directive| directive.trim().strip_prefix("max-age="))
        .and_then(|seconds| seconds.trim_matches('"').parse::<u64>().ok());
    match max_age {
        Some(seconds) if seconds >= 86_400 => Ok(()),
        _ => bail!("the Strict-Transport-Security header {policy:?} has no max-age of a day or more"),
    }
}

/// A full sha and an abbreviation of it (7 characters at least) name the
/// same commit.
fn same_commit(reported: &str, expected: &str) -> bool {
    let (reported, expected) = (reported.trim(), expected.trim());
    reported == expected
        || (expected.len() >= 7 && reported.starts_with(expected))
        || (reported.len() >= 7 && expected.starts_with(reported))
}

/// The start of a body, for error messages.
fn snippet(body: &str) -> String {
    let flat = body.trim().replace(['\r', '\n'], " ");
    if flat.chars().count() > 200 { format!("{}...", flat.chars().take(200).collect::<String>()) } else { flat }
}

fn find_chromium() -> Option<PathBuf> {
    CHROMIUM_NAMES.iter().find_map(|name| which::which(name).ok())
}

/// The DOM of `url` after Chromium loaded it (`--dump-dom`), with a profile
/// of its own (parallel runs would fight over one) and a deadline: a
/// browser that hangs is killed with its whole process group.
fn dump_dom(chromium: &Path, url: &str) -> Result<String> {
    let profile = testkit::ServiceDir::new("xtask-chromium");
    let sh = xshell::Shell::new().context("creating a shell to run Chromium")?;
    let cmd = sh
        .cmd(chromium)
        // --no-sandbox: CI containers run as root, where Chromium's sandbox
        // refuses to start.
        .args(["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run"])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(["--dump-dom", url]);
    let Some(output) = capture_within("headless Chromium", cmd, BROWSER_TIMEOUT)? else {
        bail!("Chromium did not dump {url} within {}s", BROWSER_TIMEOUT.as_secs());
    };
    let dom = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() || dom.trim().is_empty() {
        let errors = String::from_utf8_lossy(&output.stderr);
        let last_lines: Vec<&str> = errors.lines().rev().take(5).collect();
        bail!(
            "Chromium could not load {url} ({}): {}",
            output.status,
            last_lines.into_iter().rev().collect::<Vec<_>>().join(" | ")
        );
    }
    Ok(dom.into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checks_have_distinct_names_and_run_health_first_and_the_browser_last() {
        let names: std::collections::BTreeSet<_> = Check::ALL.iter().map(|check| check.name()).collect();
        assert_eq!(names.len(), Check::ALL.len());
        assert_eq!(Check::ALL[0], Check::Healthz);
        assert_eq!(Check::ALL[Check::ALL.len() - 1], Check::Browser);
    }

    #[test]
    fn abbreviated_commits_match_their_full_sha() {
        let full = "0123456789abcdef0123456789abcdef01234567";
        assert!(same_commit(full, full));
        assert!(same_commit(full, "0123456789ab"));
        assert!(!same_commit(full, "0123"));
        assert!(!same_commit(full, "fedcba9876543210fedcba9876543210fedcba98"));
    }

    #[test]
    fn the_page_must_forbid_inline_code_and_framing() {
        let page = |policy: &str| Response {
            status: 200,
            headers: vec![
                ("content-security-policy".to_owned(), policy.to_owned()),
                ("x-content-type-options".to_owned(), "nosniff".to_owned()),
            ],
            body: String::new(),
        };
        check_security_headers(&page("default-src 'self'; frame-ancestors 'none'")).unwrap();
        let err = check_security_headers(&page("default-src 'self'")).unwrap_err().to_string();
        assert!(err.contains("lacks \"frame-ancestors 'none'\""), "{err}");
        let lax = page("default-src 'self' 'unsafe-inline'; frame-ancestors 'none'");
        assert!(check_security_headers(&lax).unwrap_err().to_string().contains("allows inline"));
        let bare = Response { status: 200, headers: Vec::new(), body: String::new() };
        assert!(check_security_headers(&bare).unwrap_err().to_string().contains("no Content-Security-Policy"));
    }

    #[test]
    fn over_https_the_page_must_keep_browsers_on_https() {
        let page = |policy: Option<&str>| Response {
            status: 200,
            headers: policy
                .map(|policy| ("strict-transport-security".to_owned(), policy.to_owned()))
                .into_iter()
                .collect(),
            body: String::new(),
        };
        check_strict_transport_security(&page(Some("max-age=31536000; includeSubDomains"))).unwrap();
        let err = check_strict_transport_security(&page(Some("max-age=60"))).unwrap_err().to_string();
        assert!(err.contains("no max-age of a day or more"), "{err}");
        let err = check_strict_transport_security(&page(None)).unwrap_err().to_string();
        assert!(err.contains("no Strict-Transport-Security"), "{err}");
    }

    #[test]
    fn the_page_must_show_the_form_and_the_commit() {
        let page = "<h1>Guestbook</h1><form method=\"post\" action=\"/entries\"></form><code>abc1234</code>";
        check_page(page, Some("abc1234")).unwrap();
        let err = check_page(page, Some("def5678")).unwrap_err().to_string();
        assert!(err.contains("does not show the commit def5678"), "{err}");
        let err = check_page("<h1>Guestbook</h1>", Some("abc1234")).unwrap_err().to_string();
        assert!(err.contains("the page has no form"), "{err}");
        assert!(check_page(page, None).is_err());
    }
}
