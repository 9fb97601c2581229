//! `builder-image`, `build-image`, `test-docker`: the images, built for real
//! and offline, the way CI builds them.
//!
//! These are slow: the first build compiles the app inside Docker (minutes on
//! two cores). The tests share one build of the runtime image and take turns
//! (one lock), so no two Docker builds compete for the cores.

use std::{
    process::Command,
    sync::{Mutex, MutexGuard, OnceLock},
    time::{Duration, Instant},
};

use crate::support::{http_get, project_root, run, xtask};

static SERIAL: Mutex<()> = Mutex::new(());
static BUILT: OnceLock<serde_json::Value> = OnceLock::new();

fn one_at_a_time() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|poison| poison.into_inner())
}

/// The offline build needs the local base images; making them is a no-op
/// when they exist.
fn ensure_builder_image() {
    let (output, stdout, stderr) = run(xtask().arg("builder-image"));
    assert!(output.status.success(), "builder-image failed:\n{stdout}{stderr}");
}

/// `build-image --offline --json --smoke`, once for all tests.
fn built() -> &'static serde_json::Value {
    BUILT.get_or_init(|| {
        ensure_builder_image();
        let (output, stdout, stderr) = run(xtask().args(["build-image", "--offline", "--json", "--smoke"]));
        assert!(output.status.success(), "build-image failed:\n{}", crate::support::errors_first(&stderr));
        crate::support::json_result(&stdout)
    })
}

fn git(args: &[&str]) -> String {
    let output = Command::new("git").args(args).current_dir(project_root()).output().unwrap();
    assert!(output.status.success(), "git {args:?} failed");
    String::from_utf8(output.stdout).unwrap().trim().to_owned()
}

fn docker(args: &[&str]) -> String {
    let output = Command::new("docker").args(args).output().unwrap();
    assert!(output.status.success(), "docker {args:?} failed: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout).unwrap().trim().to_owned()
}

fn inspect(image: &str, format: &str) -> String {
    docker(&["image", "inspect", "--format", format, image])
}

/// A file from an image, copied out of a container that is created, never
/// started.
fn file_in_image(image: &str, path: &str) -> String {
    let dir = testkit::ServiceDir::new("xtask-images-test");
    let copy = dir.path().join("file");
    let container = docker(&["create", image]);
    let copied = Command::new("docker").arg("cp").arg(format!("{container}:{path}")).arg(&copy).output().unwrap();
    docker(&["rm", &container]);
    assert!(copied.status.success(), "docker cp {path}: {}", String::from_utf8_lossy(&copied.stderr));
    std::fs::read_to_string(&copy).unwrap()
}

#[test]
fn build_image_offline_tags_labels_sbom_and_smoke_test() {
    let _turn = one_at_a_time();
    let built = built();
    // The commit the build saw (others may commit while the tests run).
    let head = built["git_sha"].as_str().unwrap().to_owned();
    assert_eq!(git(&["rev-parse", "--verify", &format!("{head}^{{commit}}")]), head);
    let id = built["id"].as_str().unwrap();
    let image = built["image"].as_str().unwrap();
    let tags: Vec<&str> = built["tags"].as_array().unwrap().iter().map(|tag| tag.as_str().unwrap()).collect();

    assert!(image.starts_with(&format!("guestbook:git-{}", &head[..12])), "{image}");
    assert_eq!(image.contains("-dirty-"), built["dirty"].as_bool().unwrap(), "{image}");
    assert_eq!(tags[0], image);
    if let Ok(branch) = Command::new("git").args(["symbolic-ref", "--short", "-q", "HEAD"]).output() {
        let branch = String::from_utf8_lossy(&branch.stdout).trim().to_owned();
        if !branch.is_empty() {
            assert!(tags.iter().any(|tag| tag.starts_with("guestbook:branch-")), "no branch tag in {tags:?}");
        }
    }
    for tag in &tags {
        assert_eq!(inspect(tag, "{{.Id}}"), id, "{tag} points elsewhere");
    }

    // Labels, and the config a platform relies on.
    let labels: serde_json::Value = serde_json::from_str(&inspect(id, "{{json .Config.Labels}}")).unwrap();
    let created = built["created"].as_str().unwrap();
    assert_eq!(labels["org.opencontainers.image.revision"], head.as_str());
    assert_eq!(labels["org.opencontainers.image.created"], created);
    assert!(labels["org.opencontainers.image.source"].as_str().unwrap().starts_with("https://"));
    assert!(!labels["org.opencontainers.image.version"].as_str().unwrap().is_empty());
    assert_eq!(labels["com.example.sbom"], "/sbom/app.cdx.json");
    assert_eq!(inspect(id, "{{.Config.User}}"), "10001:10001");
    assert_eq!(inspect(id, "{{json .Config.Entrypoint}} {{json .Config.Cmd}}"), r#"["/app"] ["serve"]"#);
    assert!(inspect(id, "{{json .Config.ExposedPorts}}").contains("8080/tcp"));
    // Reproducible: the config carries the commit time, not the build time.
    let commit_time: i64 = git(&["log", "-1", "--format=%ct", &head]).parse().unwrap();
    assert_eq!(built["source_date_epoch"].as_i64().unwrap(), commit_time);
    assert_eq!(inspect(id, "{{.Created}}"), created);
    assert_eq!(inspect(id, "{{len .RootFS.Layers}}"), "1", "the scratch image should be one layer");

    // The SBOM lists the crates in the binary, with purls.
    let sbom: serde_json::Value = serde_json::from_str(&file_in_image(id, "/sbom/app.cdx.json")).unwrap();
    assert_eq!(sbom["bomFormat"], "CycloneDX");
    assert_eq!(sbom["metadata"]["component"]["name"], "app");
    let purls: Vec<&str> =
        sbom["components"].as_array().unwrap().iter().map(|component| component["purl"].as_str().unwrap()).collect();
    for name in ["tokio", "axum", "sqlx-postgres"] {
        assert!(
            purls.iter().any(|purl| purl.starts_with(&format!("pkg:cargo/{name}@"))),
            "{name} missing from the SBOM"
        );
    }
    assert!(!purls.iter().any(|purl| purl.starts_with("pkg:cargo/clap@")), "the SBOM lists xtask's dependencies");
    assert!(file_in_image(id, "/etc/passwd").contains(":10001:10001:"));
    assert!(file_in_image(id, "/etc/ssl/certs/ca-certificates.crt").contains("BEGIN CERTIFICATE"));
    // An offline build carries the host's RDS CA bundle: without
    // XTASK_RDS_CA_BUNDLE, the sandbox's RDS CA (the app verifies RDS with it).
    let sandbox_rds_ca = project_root().join("target/sandbox-rds-ca/ca.pem");
    assert_eq!(
        file_in_image(id, "/etc/ssl/certs/rds-global-bundle.pem"),
        std::fs::read_to_string(&sandbox_rds_ca).unwrap_or_else(|err| panic!("{}: {err}", sandbox_rds_ca.display()))
    );

    // --smoke ran the image: healthy, the right commit, exit 0 on SIGTERM.
    let smoke = &built["smoke"];
    assert_eq!(smoke["git_sha"], head.as_str());
    assert_eq!(smoke["exit_code"], 0);
}

/// The smoke test again, from the outside and with the signal sent by hand:
/// SIGTERM, then `docker wait` for the exit code.
#[test]
fn the_image_serves_reports_its_commit_and_exits_0_on_sigterm() {
    let _turn = one_at_a_time();
    let id = built()["id"].as_str().unwrap().to_owned();
    let postgres = testkit::Postgres::start();
    let port = testkit::free_port();
    let name = format!("xtask-images-test-{}", std::process::id());
    let _ = Command::new("docker").args(["rm", "--force", &name]).output();
    docker(&[
        "run",
        "--detach",
        "--name",
        &name,
        "--network",
        "host",
        "--env",
        &format!("PORT={port}"),
        "--env",
        "BIND_ADDR=127.0.0.1",
        "--env",
        &format!("DATABASE_URL={}", postgres.url()),
        "--env",
        "RUN_MIGRATIONS_ON_START=true",
        &id,
    ]);
    let result = std::panic::catch_unwind(|| {
        let deadline = Instant::now() + Duration::from_secs(30);
        while http_get(port, "/healthz").is_none_or(|(status, _)| status != 200) {
            assert!(Instant::now() < deadline, "no healthy /healthz within 30s");
            std::thread::sleep(Duration::from_millis(200));
        }
        let (status, body) = http_get(port, "/version").unwrap();
        assert_eq!(status, 200);
        let version: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(version["git_sha"], built()["git_sha"]);
        let stopping = Instant::now();
        docker(&["kill", "--signal", "TERM", &name]);
        assert_eq!(docker(&["wait", &name]), "0", "exit code after SIGTERM");
        assert!(stopping.elapsed() < Duration::from_secs(20), "the drain took {:?}", stopping.elapsed());
    });
    if result.is_err() {
        let logs = Command::new("docker").args(["logs", &name]).output().unwrap();
        eprintln!("{}{}", String::from_utf8_lossy(&logs.stdout), String::from_utf8_lossy(&logs.stderr));
    }
    docker(&["rm", "--force", &name]);
    if let Err(panic) = result {
        std::panic::resume_unwind(panic);
    }
}

#[test]
fn test_docker_runs_the_suite_in_a_container_and_leaves_nothing_behind() {
    let _turn = one_at_a_time();
    ensure_builder_image();
    let (output, stdout, stderr) = run(xtask().args(["test-docker", "--offline", "--postgres", "host"]));
    assert!(output.status.success(), "test-docker failed:\n{stdout}{stderr}");
    assert!(stdout.contains("test result: ok"), "no cargo test results in:\n{stdout}");
    let leftovers = docker(&["ps", "--all", "--quiet", "--filter", "name=guestbook-test-"]);
    assert!(leftovers.is_empty(), "containers left behind: {leftovers}");
    assert!(stderr.contains("started a throwaway Postgres"), "{stderr}");
}

#[test]
fn dry_run_prints_the_docker_commands_and_changes_nothing() {
    let _turn = one_at_a_time();
    ensure_builder_image();
    let name = "xtask-dry-run-test";
    let rust_image_before = inspect("rust:1.95-slim-bookworm", "{{.Id}}");
    let (output, stdout, stderr) =
        run(xtask().args(["--dry-run", "build-image", "--offline", "--smoke", "--name", name]));
    assert!(output.status.success(), "{stdout}{stderr}");
    let head = git(&["rev-parse", "HEAD"]);
    for expected in [
        "would run: ",
        "build --file docker/Dockerfile --target runtime",
        &format!("--build-arg GIT_SHA={head}"),
        "--build-arg SOURCE_DATE_EPOCH=",
        "--build-arg CRATES=vendored",
        "--network none",
        "cargo vendor --locked",
        "docker save",
        "docker load",
        &format!("{name}:git-{}", &head[..12]),
        "docker run --detach",
        "docker stop",
    ] {
        assert!(stdout.contains(expected), "dry-run output lacks {expected:?}:\n{stdout}");
    }
    assert!(docker(&["image", "ls", "--quiet", name]).is_empty(), "dry-run made an image");
    assert!(docker(&["ps", "--all", "--quiet", "--filter", "name=xtask-smoke-"]).is_empty());

    let (output, stdout, stderr) = run(xtask().args(["--dry-run", "builder-image", "--force"]));
    assert!(output.status.success(), "{stdout}{stderr}");
    assert!(stdout.contains("docker import"), "{stdout}");
    let (output, stdout, stderr) = run(xtask().args(["--dry-run", "test-docker", "--offline", "--postgres", "host"]));
    assert!(output.status.success(), "{stdout}{stderr}");
    assert!(stdout.contains("--target test") && stdout.contains("docker run --rm"), "{stdout}");
    assert_eq!(inspect("rust:1.95-slim-bookworm", "{{.Id}}"), rust_image_before, "dry-run replaced the builder image");
}
