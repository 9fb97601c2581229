//! `cargo xtask ci` (its plan, through `--dry-run`: a real run is the whole
//! suite plus image builds, and would run this very test binary again) and
//! `cargo xtask functional-test` against a real app: the `app` binary built
//! from source, on a free port, with a throwaway Postgres; and against a
//! server that answers 500 to everything.

use std::{
    fs,
    io::{Read, Write},
    net::TcpListener,
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use crate::support::{http_get, project_root, run, xtask};

/// Runs `xtask --dry-run ci` with these arguments; stdout, which must be the
/// plan of a successful run.
fn ci_plan(args: &[&str]) -> String {
    let (output, stdout, stderr) = run(xtask()
        .args(["--dry-run", "ci"])
        .args(args)
        .env_remove("XTASK_CI_PUSH_ENV")
        .env_remove("XTASK_CI_DEPLOY_ENV"));
    assert!(output.status.success(), "ci --dry-run {args:?} failed:\n{stdout}\n{stderr}");
    stdout
}

#[test]
fn ci_never_deploys_a_pull_request_or_with_no_deploy() {
    // A same-repository pull request whose head branch is called main, as
    // GitHub describes it: only GITHUB_REF (refs/heads/main) means main.
    let (output, stdout, stderr) = run(xtask()
        .args(["--dry-run", "ci"])
        .env_remove("XTASK_CI_PUSH_ENV")
        .env_remove("XTASK_CI_DEPLOY_ENV")
        .env_remove("BRANCH_NAME")
        .env("GITHUB_REF", "refs/pull/7/merge")
        .env("GITHUB_REF_NAME", "7/merge")
        .env("GITHUB_HEAD_REF", "main"));
    assert!(output.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.starts_with("ci plan for branch main "), "{stdout}");
    assert!(!stdout.contains("deploy"), "a pull request from a branch called main was deployed:\n{stdout}");
    assert_eq!(step_number(&stdout, "tag guestbook:branch-main"), 5, "{stdout}");

    let pushed = run(xtask()
        .args(["--dry-run", "ci"])
        .env_remove("XTASK_CI_PUSH_ENV")
        .env_remove("XTASK_CI_DEPLOY_ENV")
        .env_remove("GITHUB_HEAD_REF")
        .env("GITHUB_REF", "refs/heads/main")
        .env("GITHUB_REF_NAME", "main"));
    assert!(pushed.0.status.success(), "{}\n{}", pushed.1, pushed.2);
    assert_eq!(step_number(&pushed.1, "deploy to local"), 5, "{}", pushed.1);

    let test_only = ci_plan(&["--branch", "main", "--no-deploy"]);
    assert!(!test_only.contains("deploy"), "--no-deploy planned a deploy:\n{test_only}");
    assert_eq!(step_number(&test_only, "functional tests: image"), 4, "{test_only}");
}

/// The 1-based position of a step in a printed plan.
fn step_number(plan: &str, title: &str) -> usize {
    plan.lines()
        .find_map(|line| {
            let (number, rest) = line.trim_start().split_once(". ")?;
            rest.starts_with(&format!("{title}  ")).then(|| number.parse().ok()).flatten()
        })
        .unwrap_or_else(|| panic!("no step {title:?} in the plan:\n{plan}"))
}

#[test]
fn ci_dry_run_plans_a_deploy_on_main_and_a_branch_image_elsewhere() {
    let main = ci_plan(&["--branch", "main"]);
    assert!(main.starts_with("ci plan for branch main (commit "), "{main}");
    let order = ["test-all", "build-image", "test-docker", "functional tests: image"];
    for (index, title) in order.iter().enumerate() {
        assert_eq!(step_number(&main, title), index + 1, "{main}");
    }
    // By default the environment of --env: local, which this machine has.
    assert_eq!(step_number(&main, "deploy to local"), 5, "{main}");
    assert_eq!(step_number(&main, "functional tests: local"), 6, "{main}");
    assert!(main.contains("deploy --image guestbook:git-"), "main deploys the image it tested:\n{main}");
    assert!(!main.contains("branch image"), "{main}");

    // A pipeline with an AWS account deploys main to the start of the
    // promotion chain.
    let dev = ci_plan(&["--branch", "main", "--deploy-env", "dev"]);
    assert_eq!(step_number(&dev, "deploy to dev"), 5, "{dev}");
    assert_eq!(step_number(&dev, "functional tests: dev"), 6, "{dev}");

    let local = ci_plan(&["--branch", "main", "--deploy-env", "local", "--skip", "test-all"]);
    assert_eq!(step_number(&local, "deploy to local"), 5, "{local}");
    assert!(local.contains("http://127.0.0.1:8080"), "{local}");
    let test_local = local.lines().find(|line| line.contains("1. test-all")).unwrap();
    assert!(test_local.contains("(skipped: --skip)"), "{local}");

    let feature = ci_plan(&["--branch", "feature/x"]);
    for (index, title) in order.iter().enumerate() {
        assert_eq!(step_number(&feature, title), index + 1, "{feature}");
    }
    assert_eq!(step_number(&feature, "tag guestbook:branch-feature-x"), 5, "{feature}");
    assert_eq!(step_number(&feature, "push the branch image"), 6, "{feature}");
    assert!(feature.contains("not pushed"), "{feature}");
    assert!(!feature.contains("deploy"), "a branch is not deployed:\n{feature}");
    // A dry run changes nothing: the branch image was not tagged.
    let inspect = Command::new("docker").args(["image", "inspect", "guestbook:branch-feature-x"]).output().unwrap();
    assert!(!inspect.status.success(), "--dry-run tagged guestbook:branch-feature-x");

    let pushed = ci_plan(&["--branch", "feature/x", "--push-env", "sandbox"]);
    assert!(pushed.contains("cargo xtask --env sandbox push --image guestbook:branch-feature-x"), "{pushed}");
    let (output, _, stderr) = run(xtask().args(["--dry-run", "ci", "--branch", "feature/x", "--push-env", "local"]));
    assert!(!output.status.success());
    assert!(stderr.contains("--push-env local: a docker environment has no registry"), "{stderr}");
}

/// The app binary, built from source into a target directory of its own
/// (the outer `cargo test` holds the main one; `dev`'s test shares it).
fn app_binary() -> PathBuf {
    let target_dir = project_root().join("target/nested-dev");
    let mut build = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned()));
    build.current_dir(project_root()).args(["build", "--quiet", "-p", "app"]).env("CARGO_TARGET_DIR", &target_dir);
    // The variables `cargo test` gives its tests would make the nested
    // cargo see another package and rebuild everything.
    for (key, _) in std::env::vars() {
        if key.starts_with("CARGO_") && key != "CARGO_HOME" && key != "CARGO_TARGET_DIR" {
            build.env_remove(key);
        }
    }
    let status = build.status().unwrap();
    assert!(status.success(), "cargo build -p app failed");
    target_dir.join("debug/app")
}

/// The app on a free port of 127.0.0.1; killed on drop.
struct App {
    child: Child,
    port: u16,
    dir: testkit::ServiceDir,
}

impl App {
    fn start(database_url: &str) -> App {
        let binary = app_binary();
        let port = testkit::free_port();
        // A directory of its own: the app reads a `.env` where it runs.
        let dir = testkit::ServiceDir::new("xtask-ci-app");
        let log = fs::File::create(dir.path().join("app.log")).unwrap();
        let child = Command::new(binary)
            .current_dir(dir.path())
            .env("DATABASE_URL", database_url)
            .env("PORT", port.to_string())
            .env("BIND_ADDR", "127.0.0.1")
            .env("RUN_MIGRATIONS_ON_START", "true")
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let app = App { child, port, dir };
        let deadline = Instant::now() + Duration::from_secs(60);
        while http_get(port, "/healthz").is_none_or(|(status, _)| status != 200) {
            assert!(Instant::now() < deadline, "the app did not answer /healthz within 60s:\n{}", app.log());
            std::thread::sleep(Duration::from_millis(200));
        }
        app
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("app.log")).unwrap_or_default()
    }
}

impl Drop for App {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The outcome (`pass`, `FAIL`, `skip`) and the rest of a check's row in
/// the summary table.
fn summary_row<'a>(stderr: &'a str, check: &str) -> &'a str {
    stderr
        .lines()
        .find_map(|line| {
            let rest = line.strip_prefix("  ")?.strip_prefix(check)?;
            let rest = rest.trim_start();
            ["pass", "FAIL", "skip"].iter().any(|label| rest.starts_with(label)).then_some(rest)
        })
        .unwrap_or_else(|| panic!("no summary row for {check:?}:\n{stderr}"))
}

const CHECKS: [&str; 10] = [
    "GET /healthz",
    "GET /readyz",
    "GET /version",
    "GET / (page)",
    "GET /style.css",
    "POST /api/entries",
    "GET /api/entries",
    "POST /api/entries (invalid)",
    "POST /entries (form)",
    "GET unknown route",
];
const BROWSER_CHECK: &str = "browser: headless Chromium";

#[test]
fn functional_tests_pass_against_the_app_and_fail_on_a_wrong_commit() {
    let postgres = testkit::Postgres::start();
    let app = App::start(&postgres.url());
    let (status, version) = http_get(app.port, "/version").unwrap();
    assert_eq!(status, 200);
    let git_sha = serde_json::from_str::<serde_json::Value>(&version).unwrap()["git_sha"].as_str().unwrap().to_owned();

    let (output, _, stderr) = run(xtask().args(["functional-test", "--url", &app.url(), "--expect-sha", &git_sha]));
    assert!(output.status.success(), "functional-test failed against a working app:\n{stderr}\n{}", app.log());
    assert!(stderr.contains(&format!("functional tests of {}", app.url())), "{stderr}");
    for check in CHECKS {
        assert!(summary_row(&stderr, check).starts_with("pass"), "{check} did not pass:\n{stderr}");
    }
    let browser = summary_row(&stderr, BROWSER_CHECK);
    if which::which("chromium").is_ok() {
        assert!(browser.starts_with("pass"), "the browser check did not pass:\n{stderr}");
    } else {
        assert!(browser.starts_with("skip") && browser.contains("chromium not installed"), "{stderr}");
    }
    // The checks really wrote: one entry through the API, one through the form.
    let (_, entries) = http_get(app.port, "/api/entries").unwrap();
    assert!(entries.contains("\"message\":\"api ft") && entries.contains("\"message\":\"form ft"), "{entries}");

    // Another commit than the one running: /version, the page and the
    // browser fail and are named; the rest still passes.
    let other = "0000000000000000000000000000000000000000";
    let (output, _, stderr) = run(xtask().args(["functional-test", "--url", &app.url(), "--expect-sha", other]));
    assert!(!output.status.success(), "functional-test passed with a wrong --expect-sha:\n{stderr}");
    assert!(summary_row(&stderr, "GET /version").starts_with("FAIL"), "{stderr}");
    assert!(stderr.contains(&format!("/version reports git_sha {git_sha}, expected {other}")), "{stderr}");
    assert!(summary_row(&stderr, "GET / (page)").starts_with("FAIL"), "{stderr}");
    assert!(summary_row(&stderr, "GET /healthz").starts_with("pass"), "{stderr}");
    assert!(stderr.contains("functional check(s) failed against") && stderr.contains("GET /version"), "{stderr}");
}

#[test]
fn functional_tests_fail_against_a_server_that_answers_500() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    // Answers every connection until the test binary exits.
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut request = [0u8; 4096];
            let _ = stream.read(&mut request);
            let _ = stream.write_all(b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 4\r\n\r\noops");
        }
    });
    let url = format!("http://127.0.0.1:{port}");

    let (output, stdout, _) = run(xtask().args(["--dry-run", "functional-test", "--url", &url]));
    assert!(output.status.success());
    assert!(stdout.contains("would check: GET /healthz answers 200"), "{stdout}");

    let (output, _, stderr) =
        run(xtask().args(["functional-test", "--url", &url, "--no-browser"]).stdin(Stdio::null()));
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("GET /healthz: GET /healthz answered 500, expected 200: oops"), "{stderr}");
    assert!(summary_row(&stderr, "GET /healthz").starts_with("FAIL"), "{stderr}");
    assert!(summary_row(&stderr, "GET /api/entries").starts_with("skip"), "{stderr}");
    assert!(summary_row(&stderr, BROWSER_CHECK).starts_with("skip  ") && stderr.contains("--no-browser"), "{stderr}");
    let last = stderr.lines().last().unwrap_or_default();
    assert!(last.starts_with("error: ") && last.contains("GET /healthz") && last.contains("GET /readyz"), "{stderr}");
}
