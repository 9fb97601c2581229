//! `deploy`, `rollback`, `status`, `down` and `dev` on the local Docker
//! environment, for real: images, containers, the proxy and a PostgreSQL
//! from the host's binaries.
//!
//! Each test has an environment of its own: a copy of the configuration
//! (XTASK_CONFIG) with an environment named after the test and this process,
//! on a free port, so its state lives in `target/local/<name>/` and nothing
//! clashes with another test or with a developer's `local`. A guard takes it
//! down with `--volumes` and removes the images the test made.
//!
//! The app image is built once (`build-image --offline`, cached by Docker
//! when the images tests built it already). A "second version" is that image
//! with the commit inside its binary replaced by another 40-character sha
//! (and the label to match): `/version` then reports another commit without
//! a second compile of the app.

use std::{
    fs,
    path::PathBuf,
    process::{Command, Stdio},
    sync::OnceLock,
    time::{Duration, Instant},
};

use crate::support::{http_get, process_alive, project_root, run, xtask};

/// What `/version` of the second version reports.
const SECOND_SHA: &str = "5ec0d0000000000000000000000000000000beef";

pub(crate) struct Built {
    pub id: String,
    pub git_sha: String,
}

static BUILT: OnceLock<Built> = OnceLock::new();

/// The working tree's image, built once for these tests (and the push
/// gate's).
pub(crate) fn built() -> &'static Built {
    BUILT.get_or_init(|| {
        let (output, _, stderr) = run(xtask().arg("builder-image"));
        assert!(output.status.success(), "builder-image failed:\n{}", crate::support::errors_first(&stderr));
        let (output, stdout, stderr) = run(xtask().args(["build-image", "--offline", "--json"]));
        assert!(output.status.success(), "build-image failed:\n{}", crate::support::errors_first(&stderr));
        let built = crate::support::json_result(&stdout);
        Built { id: built["id"].as_str().unwrap().to_owned(), git_sha: built["git_sha"].as_str().unwrap().to_owned() }
    })
}

/// A docker environment of its own; taken down (with its data) on drop.
struct Environment {
    name: String,
    config: PathBuf,
    host_port: u16,
    images: Vec<String>,
}

impl Environment {
    fn new(test: &str) -> Environment {
        let name = format!("lt-{test}-{}", std::process::id());
        let host_port = testkit::free_port();
        let config = std::env::temp_dir().join(format!("xtask-{name}.toml"));
        fs::write(
            &config,
            format!("[app]\nname = \"guestbook\"\nport = 8080\n\n[environments.{name}]\nkind = \"docker\"\nhost_port = {host_port}\n"),
        )
        .unwrap();
        let environment = Environment { name, config, host_port, images: Vec::new() };
        let _ = fs::remove_dir_all(environment.state_dir());
        environment
    }

    fn xtask(&self) -> Command {
        let mut command = xtask();
        command.env("XTASK_CONFIG", &self.config).args(["--env", &self.name]);
        command
    }

    /// Runs xtask with these arguments; stdout and stderr.
    fn run(&self, args: &[&str]) -> (bool, String, String) {
        let (output, stdout, stderr) = run(self.xtask().args(args));
        (output.status.success(), stdout, stderr)
    }

    fn state_dir(&self) -> PathBuf {
        project_root().join("target/local").join(&self.name)
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.host_port)
    }

    fn get(&self, path: &str) -> (u16, String) {
        http_get(self.host_port, path).unwrap_or_else(|| panic!("GET {}{path} got no answer", self.url()))
    }

    fn served_sha(&self) -> String {
        let (status, body) = self.get("/version");
        assert_eq!(status, 200, "{body}");
        let version: serde_json::Value = serde_json::from_str(&body).unwrap();
        version["git_sha"].as_str().unwrap().to_owned()
    }

    /// The environment's app containers: (name, running).
    fn containers(&self) -> Vec<(String, bool)> {
        let listing = docker(&[
            "ps",
            "--all",
            "--filter",
            &format!("label=com.example.xtask.environment={}", self.name),
            "--filter",
            "label=com.example.xtask.role=app",
            "--format",
            "{{.Names}} {{.State}}",
        ]);
        listing
            .lines()
            .map(|line| {
                let (name, state) = line.split_once(' ').unwrap();
                (name.to_owned(), state == "running")
            })
            .collect()
    }

    /// An image made by the test, removed with the environment.
    fn own_image(&mut self, tag: String) -> String {
        self.images.push(tag.clone());
        tag
    }
}

impl Drop for Environment {
    fn drop(&mut self) {
        let (output, stdout, stderr) = run(self.xtask().args(["down", "--volumes"]));
        if !output.status.success() {
            eprintln!("down --volumes failed:\n{stdout}{stderr}");
        }
        for image in &self.images {
            let _ = Command::new("docker").args(["image", "rm", "--force", image]).output();
        }
        let _ = fs::remove_dir_all(self.state_dir());
        let _ = fs::remove_file(&self.config);
    }
}

fn docker(args: &[&str]) -> String {
    let output = Command::new("docker").args(args).output().unwrap();
    assert!(output.status.success(), "docker {args:?} failed: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout).unwrap().trim().to_owned()
}

/// `base` with the commit in its binary (and its revision label) replaced
/// by `sha`, tagged `tag`.
fn image_reporting(base: &str, base_sha: &str, sha: &str, tag: &str) {
    assert_eq!(base_sha.len(), sha.len());
    let dir = testkit::ServiceDir::new("xtask-local-deploy-image");
    let binary = dir.path().join("app");
    let container = docker(&["create", base]);
    docker(&["cp", &format!("{container}:/app"), binary.to_str().unwrap()]);
    let bytes = fs::read(&binary).unwrap();
    let (from, to) = (base_sha.as_bytes(), sha.as_bytes());
    let mut patched = Vec::with_capacity(bytes.len());
    let (mut index, mut replaced) = (0, 0);
    while index < bytes.len() {
        if bytes[index..].starts_with(from) {
            patched.extend_from_slice(to);
            index += from.len();
            replaced += 1;
        } else {
            patched.push(bytes[index]);
            index += 1;
        }
    }
    assert!(replaced > 0, "{base_sha} is not in the binary of {base}");
    fs::write(&binary, patched).unwrap();
    docker(&["cp", binary.to_str().unwrap(), &format!("{container}:/app")]);
    docker(&["commit", "--change", &format!("LABEL org.opencontainers.image.revision={sha}"), &container, tag]);
    docker(&["rm", &container]);
}

/// `base` whose app exits at once (an unknown command): never ready.
fn broken_image(base: &str, tag: &str) {
    let container = docker(&["create", base]);
    docker(&["commit", "--change", r#"CMD ["bogus"]"#, &container, tag]);
    docker(&["rm", &container]);
}

fn line_value<'a>(stdout: &'a str, key: &str) -> Option<&'a str> {
    stdout.lines().find_map(|line| line.strip_prefix(key))
}

#[test]
fn deploy_builds_and_serves_the_commit_then_a_second_version_then_rolls_back_by_image_id() {
    let mut environment = Environment::new("deploy");

    // From nothing: build the working tree, start the database, the proxy
    // and the app; print the URL and the version last. This is the README's
    // first command as typed: no --offline, no XTASK_OFFLINE. A machine that
    // cannot pull the base image (ours) must fall back to building offline.
    let (output, stdout, stderr) = run(environment.xtask().env_remove("XTASK_OFFLINE").arg("deploy"));
    let ok = output.status.success();
    assert!(ok, "deploy failed:\n{}", crate::support::errors_first(&stderr));
    let pulled = Command::new("docker")
        .args(["image", "inspect", "rust:1.95-slim-bookworm", "--format", "{{.RepoDigests}}"])
        .output()
        .unwrap();
    if !String::from_utf8_lossy(&pulled.stdout).contains("sha256:") {
        assert!(
            stderr.contains("(offline, incremental)"),
            "the base image is not upstream, yet the build was not offline:\n{stderr}"
        );
    }
    // A deploy that builds compiles incrementally (see docker/Dockerfile).
    assert!(stderr.contains("incremental)"), "the deploy's build was not incremental:\n{stderr}");
    assert_eq!(line_value(&stdout, "url: "), Some(environment.url().as_str()), "{stdout}");
    let first_sha = line_value(&stdout, "version: ").expect("a version line").to_owned();
    let head = Command::new("git")
        .args(["rev-parse", "--verify", &format!("{first_sha}^{{commit}}")])
        .current_dir(project_root())
        .output()
        .unwrap();
    assert!(head.status.success(), "{first_sha} is not a commit of this repository");
    assert_eq!(environment.served_sha(), first_sha);
    let (status, page) = environment.get("/");
    assert_eq!(status, 200);
    assert!(page.contains(&first_sha), "the page does not show {first_sha}");
    assert!(stderr.contains("starting PostgreSQL") && stderr.contains("starting the proxy"), "{stderr}");
    let first_container = environment.containers();
    assert_eq!(first_container.len(), 1, "{first_container:?}");
    let first_id = docker(&["inspect", "--format", "{{.Config.Image}}", &first_container[0].0]);
    assert!(first_id.starts_with("sha256:"), "containers run image IDs, not tags: {first_id}");

    // The same command again: the environment serves this commit's image
    // already, so nothing is built, started or recorded.
    let ledger = fs::read_to_string(environment.state_dir().join("releases.jsonl")).unwrap();
    let started = Instant::now();
    let (output, stdout, stderr) = run(environment.xtask().env_remove("XTASK_OFFLINE").arg("deploy"));
    assert!(output.status.success(), "the same deploy again failed:\n{}", crate::support::errors_first(&stderr));
    assert!(stderr.contains("already runs") && stderr.contains("nothing to do"), "{stderr}");
    assert!(!stderr.contains("building "), "an unchanged commit was built again:\n{stderr}");
    assert_eq!(line_value(&stdout, "version: "), Some(first_sha.as_str()), "{stdout}");
    assert_eq!(environment.containers(), first_container, "a deploy that changed nothing touched the container");
    assert_eq!(fs::read_to_string(environment.state_dir().join("releases.jsonl")).unwrap(), ledger);
    eprintln!("the unchanged deploy took {:?}", started.elapsed());

    // A second version: the old container is replaced, not kept.
    let second = environment.own_image(format!("guestbook-localtest:second-{}", std::process::id()));
    image_reporting(&first_id, &first_sha, SECOND_SHA, &second);
    let (ok, stdout, stderr) = environment.run(&["deploy", "--image", &second]);
    assert!(ok, "the second deploy failed:\n{}", crate::support::errors_first(&stderr));
    assert_eq!(line_value(&stdout, "version: "), Some(SECOND_SHA));
    assert_eq!(environment.served_sha(), SECOND_SHA);
    let containers = environment.containers();
    assert_eq!(containers.len(), 1, "the old container is still there: {containers:?}");
    assert_ne!(containers[0].0, first_container[0].0);
    assert!(stderr.contains("no pending migrations"), "the migrations ran with the new image:\n{stderr}");
    // Unchanged again; --force starts a new container of the same image.
    let (ok, _, stderr) = environment.run(&["deploy", "--image", &second]);
    assert!(ok && stderr.contains("nothing to do"), "{stderr}");
    assert_eq!(environment.containers(), containers);
    let (ok, stdout, stderr) = environment.run(&["deploy", "--image", &second, "--force"]);
    assert!(ok, "deploy --force failed:\n{}", crate::support::errors_first(&stderr));
    assert_eq!(line_value(&stdout, "version: "), Some(SECOND_SHA));
    let forced = environment.containers();
    assert!(forced.len() == 1 && forced[0].0 != containers[0].0, "--force kept the container: {forced:?}");

    // Back to the first release.
    let (ok, stdout, stderr) = environment.run(&["rollback"]);
    assert!(ok, "rollback failed:\n{}", crate::support::errors_first(&stderr));
    assert_eq!(line_value(&stdout, "version: "), Some(first_sha.as_str()));
    assert_eq!(environment.served_sha(), first_sha);

    // Rolling back again returns to the second release, by its image ID:
    // moving its tag to another image changes nothing.
    docker(&["tag", &first_id, &second]);
    let (ok, _, stderr) = environment.run(&["rollback"]);
    assert!(ok, "the second rollback failed:\n{}", crate::support::errors_first(&stderr));
    assert_eq!(environment.served_sha(), SECOND_SHA, "the rollback followed the moved tag");

    let (ok, status, _) = environment.run(&["status"]);
    assert!(ok);
    assert!(status.contains(&format!("url: {}", environment.url())), "{status}");
    let live = status.lines().find(|line| line.starts_with("live: ")).unwrap();
    assert!(live.contains(&SECOND_SHA[..12]) && live.contains("running"), "{status}");
    let history: Vec<&str> =
        status.lines().filter(|line| line.contains("  deploy ") || line.contains("  rollback ")).collect();
    // deploy, deploy, deploy --force, rollback, rollback: the unchanged
    // deploys left no record.
    assert_eq!(history.len(), 5, "{status}");
    assert!(history[0].trim_start().starts_with("live") && history[0].contains("rollback"), "{status}");

    // down stops everything and keeps nothing running; twice is fine.
    let proxy_pid: u32 = fs::read_to_string(environment.state_dir().join("proxy.pid")).unwrap().trim().parse().unwrap();
    let postmaster = fs::read_to_string(environment.state_dir().join("postgres/data/postmaster.pid")).unwrap();
    let database_pid: u32 = postmaster.lines().next().unwrap().parse().unwrap();
    for _ in 0..2 {
        let (ok, _, stderr) = environment.run(&["down"]);
        assert!(ok, "down failed:\n{}", crate::support::errors_first(&stderr));
    }
    assert!(environment.containers().is_empty());
    assert!(!process_alive(proxy_pid), "the proxy survived down");
    assert!(!process_alive(database_pid), "the database survived down");
    assert!(http_get(environment.host_port, "/version").is_none(), "{} still answers", environment.url());
    assert!(environment.state_dir().join("postgres/data/PG_VERSION").exists(), "down without --volumes lost the data");
}

#[test]
fn a_release_that_never_gets_ready_is_removed_and_the_old_one_keeps_serving() {
    let built = built();
    let mut environment = Environment::new("broken");
    let (ok, _, stderr) = environment.run(&["deploy", "--image", &built.id]);
    assert!(ok, "deploy failed:\n{}", crate::support::errors_first(&stderr));
    let serving = environment.containers();

    let broken = environment.own_image(format!("guestbook-localtest:broken-{}", std::process::id()));
    broken_image(&built.id, &broken);
    // A client on the stable URL the whole time sees no failure.
    let port = environment.host_port;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let client = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut failures = 0;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                if http_get(port, "/version").is_none_or(|(status, _)| status != 200) {
                    failures += 1;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            failures
        })
    };
    let started = Instant::now();
    let (ok, stdout, stderr) = environment.run(&["deploy", "--image", &broken, "--timeout", "30s"]);
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    assert!(!ok, "deploying a broken image succeeded:\n{stdout}{stderr}");
    assert!(started.elapsed() < Duration::from_secs(30), "the failure took {:?}", started.elapsed());
    assert!(stderr.contains("exited with code 2 before it was ready"), "{stderr}");
    assert!(stderr.contains("unknown command \"bogus\""), "its last log lines are missing:\n{stderr}");
    assert!(stderr.contains("the old release keeps serving"), "{stderr}");
    assert_eq!(client.join().unwrap(), 0, "requests failed during the failed deploy");

    assert_eq!(environment.served_sha(), built.git_sha);
    assert_eq!(environment.containers(), serving, "the failed container was not removed");
    let (_, status, _) = environment.run(&["status"]);
    let failed = status.lines().find(|line| line.contains("FAILED")).unwrap_or_else(|| panic!("{status}"));
    assert!(failed.contains("exited with code 2"), "{failed}");
    assert!(status.lines().any(|line| line.trim_start().starts_with("live") && line.contains(&built.id)), "{status}");
}

/// A container that runs but never answers: `sleep infinity` in the Debian
/// image that `builder-image` made (no migrations: it has no app).
fn hung_image(tag: &str) {
    let container = docker(&["create", "debian:bookworm-slim"]);
    docker(&["commit", "--change", r#"CMD ["sleep", "infinity"]"#, &container, tag]);
    docker(&["rm", &container]);
}

#[test]
fn a_release_that_times_out_or_is_interrupted_is_removed_and_recorded() {
    use std::io::{BufRead, BufReader};
    use std::os::unix::process::CommandExt;
    let built = built();
    let mut environment = Environment::new("hung");
    let (ok, _, stderr) = environment.run(&["deploy", "--image", &built.id]);
    assert!(ok, "deploy failed:\n{}", crate::support::errors_first(&stderr));
    let serving = environment.containers();
    let hung = environment.own_image(format!("guestbook-localtest:hung-{}", std::process::id()));
    hung_image(&hung);

    let started = Instant::now();
    let (ok, _, stderr) = environment.run(&["deploy", "--image", &hung, "--skip-migrate", "--timeout", "3s"]);
    assert!(!ok, "a release that never got ready succeeded");
    assert!(stderr.contains("was not ready within 3s"), "{stderr}");
    assert!(started.elapsed() < Duration::from_secs(20), "the timeout took {:?}", started.elapsed());
    assert_eq!(environment.containers(), serving, "the timed-out container was not removed");
    assert_eq!(environment.served_sha(), built.git_sha);

    // Ctrl-C while it waits: the new container goes, the attempt is
    // recorded as interrupted, the old release serves on.
    let mut child = environment
        .xtask()
        .args(["deploy", "--image", &hung, "--skip-migrate", "--timeout", "60s"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut seen = String::new();
    loop {
        let line = lines.next().unwrap_or_else(|| panic!("deploy ended before it waited:\n{seen}")).unwrap();
        seen.push_str(&line);
        seen.push('\n');
        if line.starts_with("waiting up to 60s") {
            break;
        }
    }
    assert!(Command::new("kill").args(["-INT", "--", &format!("-{}", child.id())]).status().unwrap().success());
    let status = child.wait().unwrap();
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    assert_eq!(status.code(), Some(130), "{seen}{}", rest.join("\n"));
    assert_eq!(environment.containers(), serving, "the interrupted release's container was left behind");
    assert_eq!(environment.served_sha(), built.git_sha);
    let (_, status, _) = environment.run(&["status"]);
    assert!(status.contains("FAILED: interrupted"), "{status}");
    assert!(status.contains("was not ready within 3s"), "{status}");
}

#[test]
fn dry_run_prints_the_plan_and_changes_nothing_and_down_is_idempotent() {
    let built = built();
    let environment = Environment::new("dry");
    let (ok, stdout, stderr) = environment.run(&["--dry-run", "deploy", "--image", &built.id]);
    assert!(ok, "{stdout}{stderr}");
    for expected in [
        "would start: PostgreSQL from the host's binaries",
        "local-proxy --listen 127.0.0.1:",
        &format!(
            "--network host --label com.example.xtask.app=guestbook --label com.example.xtask.environment={}",
            environment.name
        ),
        &format!("{} migrate", built.id),
        "would run: docker run --detach --name guestbook-",
        "--env BIND_ADDR=127.0.0.1",
        "--env TRUSTED_PROXY_HOPS=1",
        "--stop-timeout 15",
        "would wait: up to 120s for http://127.0.0.1:",
        "would write: 127.0.0.1:",
        &format!("url: {}", environment.url()),
    ] {
        assert!(stdout.contains(expected), "the dry run does not say {expected:?}:\n{stdout}");
    }
    assert!(!environment.state_dir().exists(), "the dry run made {}", environment.state_dir().display());
    assert!(environment.containers().is_empty());

    for _ in 0..2 {
        let (ok, _, stderr) = environment.run(&["down", "--volumes"]);
        assert!(ok, "down of an environment that never ran failed:\n{}", crate::support::errors_first(&stderr));
    }
    let (output, _, stderr) = run(xtask().args(["--env", "sandbox", "down"]));
    assert!(!output.status.success());
    assert!(stderr.contains("not a docker environment"), "{stderr}");
}

/// `dev` builds the app from source, serves it, and rebuilds and restarts
/// it when a watched file changes; Ctrl-C stops the app.
#[test]
fn dev_serves_from_source_and_restarts_on_a_change() {
    use std::io::{BufRead, BufReader};
    use std::os::unix::process::CommandExt;
    let environment = Environment::new("dev");
    let port = testkit::free_port();
    let mut child = environment
        .xtask()
        .args(["dev", "--port", &port.to_string()])
        // The outer `cargo test` holds the main target directory.
        .env("CARGO_TARGET_DIR", project_root().join("target/nested-dev"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .unwrap();
    let stderr_lines = {
        let stderr = child.stderr.take().unwrap();
        let (sender, receiver) = std::sync::mpsc::channel::<String>();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if sender.send(line).is_err() {
                    break;
                }
            }
        });
        receiver
    };
    let mut seen = String::new();
    let mut wait_for = |needle: &str, timeout: Duration| {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(line) = stderr_lines.recv_timeout(Duration::from_millis(200)) {
                seen.push_str(&line);
                seen.push('\n');
                if line.contains(needle) {
                    return;
                }
                assert!(!line.contains("the build failed"), "dev could not build the app:\n{seen}");
            }
        }
        panic!("dev did not print {needle:?} within {timeout:?}:\n{seen}");
    };
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        // A cold debug build of the app on two cores.
        wait_for("watching app/src", Duration::from_secs(600));
        let (status, body) = http_get(port, "/readyz").expect("dev serves nothing");
        assert_eq!(status, 200, "{body}");

        // A changed modification time is a change; the content stays, and
        // the time is put back afterwards so other builds see nothing new.
        let source = project_root().join("app/src/version.rs");
        let original = fs::metadata(&source).unwrap().modified().unwrap();
        let file = fs::File::options().append(true).open(&source).unwrap();
        file.set_modified(std::time::SystemTime::now()).unwrap();
        wait_for("app/src/version.rs changed: rebuilding", Duration::from_secs(10));
        file.set_modified(original).unwrap();
        wait_for("restarted on", Duration::from_secs(300));
        let (status, _) = http_get(port, "/healthz").expect("dev serves nothing after the restart");
        assert_eq!(status, 200);
    }));
    // Ctrl-C, as a terminal sends it: the app stops with dev.
    Command::new("kill").args(["-INT", "--", &format!("-{}", child.id())]).status().unwrap();
    let status = child.wait().unwrap();
    if let Err(panic) = result {
        std::panic::resume_unwind(panic);
    }
    assert_eq!(status.code(), Some(130));
    assert!(http_get(port, "/healthz").is_none(), "the app survived Ctrl-C");
}

/// The switch benchmark's short version: keep-alive clients, POSTs among
/// their requests, two release switches under them; not one request may
/// fail, and no client connection may be closed under its feet (the proxy
/// owns them). The benchmark's speed figures are not asserted here.
#[test]
fn keep_alive_clients_lose_no_request_across_two_switches() {
    let built = built();
    let (output, stdout, stderr) =
        run(xtask().env("XTASK_BENCH_IMAGE", &built.id).env("XTASK_BENCH_SHORT", "1").args(["bench", "local-switch"]));
    assert!(output.status.success(), "bench local-switch failed:\n{}", crate::support::errors_first(&stderr));
    let row = |name: &str| {
        let line =
            stdout.lines().find(|line| line.starts_with(name)).unwrap_or_else(|| panic!("no {name:?} row:\n{stdout}"));
        line[name.len()..].trim().to_owned()
    };
    let failed = row("failed requests across 2 switches (4 keep-alive clients)");
    let numbers: Vec<u64> = failed
        .split(|c: char| !c.is_ascii_digit())
        .filter(|word| !word.is_empty())
        .map(|word| word.parse().unwrap())
        .collect();
    let (failures, requests, posts) = (numbers[0], numbers[1], numbers[2]);
    assert_eq!(failures, 0, "requests failed across the switches:\n{stdout}\n{stderr}");
    assert!(requests >= 200, "too few requests to tell anything ({requests}):\n{stdout}");
    assert!(posts >= 10, "too few POSTs were stored ({posts}):\n{stdout}");
    let reconnects = row("client reconnects (a closed keep-alive connection)");
    assert!(reconnects.starts_with("0 "), "clients lost their connections: {reconnects}\n{stdout}");
}
