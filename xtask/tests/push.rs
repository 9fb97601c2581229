//! `push`: against a sandbox (moto's ECR behind a real registry), with a
//! tiny image made by `docker import` so no image build is needed.

use std::{fs, process::Command};

use serde_json::{Value, json};
use testkit::ServiceDir;

use crate::{
    sandbox::{TestSandbox, xtask_without_aws},
    support::run,
};

/// A local one-file image, removed (with the tags push added) on drop.
pub struct LocalImage {
    pub reference: String,
    extra_tags: Vec<String>,
}

impl LocalImage {
    pub fn import(name: &str) -> LocalImage {
        let dir = ServiceDir::new("xtask-push-image");
        // Unique content: every test pushes an image of its own.
        fs::write(dir.path().join("hello.txt"), format!("{name} {}\n", std::process::id())).unwrap();
        let reference = format!("xtask-test:{name}-{}", std::process::id());
        let output = Command::new("sh")
            .args(["-c", "tar -C \"$1\" -c hello.txt | docker import - \"$2\"", "sh"])
            .arg(dir.path())
            .arg(&reference)
            .output()
            .expect("running docker import");
        assert!(output.status.success(), "docker import failed: {}", String::from_utf8_lossy(&output.stderr));
        LocalImage { reference, extra_tags: Vec::new() }
    }
}

impl LocalImage {
    /// The working tree's app image with one file added: an image of its
    /// own (its own digest) that really runs `app migrate`, now that the
    /// sandbox runs a task's container.
    pub fn app(name: &str) -> LocalImage {
        LocalImage::app_with(name, &[])
    }

    /// The app image with Dockerfile instructions applied (`docker commit
    /// --change`), e.g. `ENV BIND_ADDR=...` for an app that cannot serve.
    pub fn app_with(name: &str, changes: &[&str]) -> LocalImage {
        let base = &crate::local_deploy::built().id;
        let dir = ServiceDir::new("xtask-app-image");
        let marker = dir.path().join("sandbox-test.txt");
        fs::write(&marker, format!("{name} {}\n", std::process::id())).unwrap();
        let reference = format!("xtask-test:{name}-{}", std::process::id());
        let container = format!("xtask-test-{name}-{}", std::process::id());
        let docker = |args: &[&str]| {
            let output = Command::new("docker").args(args).output().expect("running docker");
            assert!(output.status.success(), "docker {args:?} failed: {}", String::from_utf8_lossy(&output.stderr));
        };
        docker(&["create", "--name", &container, base]);
        docker(&["cp", &marker.display().to_string(), &format!("{container}:/sandbox-test.txt")]);
        let mut commit = vec!["commit"];
        for change in changes {
            commit.extend(["--change", change]);
        }
        commit.extend([container.as_str(), reference.as_str()]);
        docker(&commit);
        docker(&["rm", &container]);
        LocalImage { reference, extra_tags: Vec::new() }
    }

    /// An image that answers HTTP 200 "ok" on every path (healthy to the
    /// load balancer) and whose `migrate` exits 0, labelled as built from
    /// this commit: a release that deploys but does not serve this commit,
    /// so the smoke check of /version fails. A static binary made by rustc.
    pub fn serves_another_commit(name: &str) -> LocalImage {
        let dir = ServiceDir::new("xtask-other-commit");
        fs::write(dir.path().join("main.rs"), OTHER_COMMIT_SERVER).unwrap();
        let compiled = Command::new("rustc")
            .args(["-C", "target-feature=+crt-static", "--target", "x86_64-unknown-linux-gnu", "-o", "app", "main.rs"])
            .current_dir(dir.path())
            .output()
            .expect("running rustc");
        assert!(compiled.status.success(), "rustc failed: {}", String::from_utf8_lossy(&compiled.stderr));
        let head = Command::new("git").args(["rev-parse", "HEAD"]).current_dir(crate::support::project_root()).output();
        let head = String::from_utf8_lossy(&head.unwrap().stdout).trim().to_owned();
        let reference = format!("xtask-test:{name}-{}", std::process::id());
        let output = Command::new("sh")
            .args([
                "-c",
                "tar -C \"$1\" -c app | docker import --change \"$3\" --change 'ENTRYPOINT [\"/app\"]' - \"$2\"",
                "sh",
            ])
            .arg(dir.path())
            .arg(&reference)
            .arg(format!("LABEL org.opencontainers.image.revision={head}"))
            .output()
            .expect("running docker import");
        assert!(output.status.success(), "docker import failed: {}", String::from_utf8_lossy(&output.stderr));
        LocalImage { reference, extra_tags: Vec::new() }
    }
}

const OTHER_COMMIT_SERVER: &str = r#"
use std::io::{Read, Write};
fn main() {
    if std::env::args().any(|arg| arg == "migrate") {
        println!("nothing to migrate");
        return;
    }
    let port = std::env::var("PORT").unwrap_or_else(|_| "8080".to_owned());
    let listener = std::net::TcpListener::bind(format!("0.0.0.0:{port}")).unwrap();
    for stream in listener.incoming() {
        let Ok(mut stream) = stream else { continue };
        let mut request = [0u8; 4096];
        let _ = stream.read(&mut request);
        let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\nok\n");
    }
}
"#;

impl Drop for LocalImage {
    fn drop(&mut self) {
        let _ = Command::new("docker").arg("rmi").arg(&self.reference).args(&self.extra_tags).output();
    }
}

fn apply_repositories(sandbox: &TestSandbox) {
    let (output, stdout, stderr) = run(sandbox.xtask().args(["infra", "apply", "--stage", "repositories", "--yes"]));
    assert!(output.status.success(), "applying the repositories stage failed:\n{stdout}\n{stderr}");
}

/// The tag push will use (`git-<sha12>[-dirty]`), from a dry run.
fn tag_of_this_commit(sandbox: &TestSandbox, image: &LocalImage) -> String {
    let (output, stdout, stderr) = run(sandbox.xtask().args(["push", "--dry-run", "--image", &image.reference]));
    assert!(output.status.success(), "push --dry-run failed:\n{}", crate::support::errors_first(&stderr));
    let line =
        stdout.lines().find(|line| line.starts_with("would run: docker push ")).unwrap_or_else(|| panic!("{stdout}"));
    line.rsplit(':').next().unwrap().to_owned()
}

/// Scan findings moto returns for the tag once a scan ran.
fn set_scan_findings(sandbox: &TestSandbox, tag: &str, counts: Value) {
    sandbox.moto_api(
        "/moto-api/static/ecr/scan-finding-results",
        &json!({
            "region": "us-east-1",
            "results": [{
                "registryId": "123456789012",
                "repositoryName": "guestbook",
                "imageId": { "imageTag": tag },
                "imageScanStatus": { "status": "COMPLETE", "description": "The scan was completed successfully." },
                "imageScanFindings": { "findings": [], "findingSeverityCounts": counts },
            }],
        }),
    );
}

#[test]
fn push_verifies_the_digest_in_ecr_and_names_missing_repositories_and_rejected_logins() {
    let mut sandbox = TestSandbox::up("sandboxpush");
    let mut image = LocalImage::import("push");

    // (b) No repository yet: the error says which stage creates it.
    let (output, _, stderr) = run(sandbox.xtask().args(["push", "--image", &image.reference]));
    assert!(!output.status.success(), "push without a repository succeeded");
    assert!(stderr.contains("repository \"guestbook\" does not exist"), "{stderr}");
    assert!(stderr.contains("cargo xtask infra apply --env sandboxpush --stage repositories"), "{stderr}");

    apply_repositories(&sandbox);
    let tag = tag_of_this_commit(&sandbox, &image);
    set_scan_findings(&sandbox, &tag, json!({ "MEDIUM": 2, "LOW": 1 }));
    let (output, stdout, stderr) = run(sandbox.xtask().args(["push", "--json", "--image", &image.reference]));
    assert!(output.status.success(), "push failed:\n{stdout}\n{stderr}");
    let result: Value = crate::support::json_result(&stdout);
    let digest = result["digest"].as_str().unwrap().to_owned();
    let registry = &sandbox.registry;
    assert_eq!(result["image"], format!("{registry}/guestbook@{digest}"));
    assert_eq!(result["tag"], tag);
    assert_eq!(result["scan"]["severity_counts"], json!({ "MEDIUM": 2, "LOW": 1 }));
    assert!(stderr.contains(&format!("ECR reports {digest}")), "{stderr}");
    image.extra_tags.push(format!("{registry}/guestbook:{tag}"));
    // Docker's own record of the pushed digest agrees.
    let repo_digests = Command::new("docker")
        .args(["image", "inspect", "--format", "{{json .RepoDigests}}", &image.reference])
        .output()
        .unwrap();
    let repo_digests = String::from_utf8_lossy(&repo_digests.stdout);
    assert!(repo_digests.contains(&format!("{registry}/guestbook@{digest}")), "{repo_digests}");

    // Without --json the reference by digest is the last line.
    let (output, stdout, stderr) = run(sandbox.xtask().args(["push", "--image", &image.reference]));
    assert!(output.status.success(), "pushing again failed:\n{}", crate::support::errors_first(&stderr));
    assert_eq!(stdout.lines().last(), Some(format!("{registry}/guestbook@{digest}").as_str()), "{stdout}");

    // (a) A registry that refuses ECR's login: the error names it.
    let other = testkit::Registry::start("AWS", "not-the-ecr-password");
    let config = fs::read_to_string(&sandbox.config_path).unwrap().replace(registry.as_str(), &other.host());
    let other_config = sandbox.dir.path().join("other-registry.toml");
    fs::write(&other_config, config).unwrap();
    let (output, stdout, stderr) =
        run(sandbox.xtask().env("XTASK_CONFIG", &other_config).args(["push", "--image", &image.reference]));
    assert!(!output.status.success(), "push to a registry that rejects the login succeeded:\n{stdout}");
    assert!(stderr.contains(&format!("the registry {} rejected the login", other.host())), "{stderr}");
    assert!(stderr.contains("sandbox up"), "{stderr}");
    assert!(!stderr.contains("123456789012-auth-token"), "the password was printed:\n{stderr}");
    sandbox.down();
}

#[test]
fn push_fails_when_scan_findings_reach_the_threshold() {
    let mut sandbox = TestSandbox::up("sandboxscan");
    let image = LocalImage::import("push-scan");
    apply_repositories(&sandbox);
    let tag = tag_of_this_commit(&sandbox, &image);
    set_scan_findings(&sandbox, &tag, json!({ "CRITICAL": 2, "HIGH": 1, "LOW": 5 }));
    let (output, stdout, stderr) = run(sandbox.xtask().args(["push", "--image", &image.reference]));
    let _remote = LocalImage { reference: format!("{}/guestbook:{tag}", sandbox.registry), extra_tags: Vec::new() };
    assert!(!output.status.success(), "push with CRITICAL findings succeeded:\n{stdout}");
    assert!(stderr.contains("2 CRITICAL, 1 HIGH"), "the counts are not named:\n{stderr}");
    assert!(stderr.contains("at or above HIGH"), "{stderr}");
    assert!(stdout.is_empty(), "a failed push printed a result: {stdout}");

    // A deliberate threshold lets it through and says so.
    let (output, stdout, stderr) =
        run(sandbox.xtask().args(["push", "--fail-on-severity", "NONE", "--image", &image.reference]));
    assert!(output.status.success(), "{stderr}");
    assert!(stderr.contains("scan gate disabled"), "{stderr}");
    assert!(stdout.trim().contains("/guestbook@sha256:"), "{stdout}");
    sandbox.down();
}

/// A RustSec database of one advisory (critical, CVSS 9.8) against the
/// `anyhow` locked in Cargo.lock, fixed only in `patched`.
pub(crate) fn advisory_db(dir: &std::path::Path, patched: &str) -> std::path::PathBuf {
    let db = dir.join(format!("advisory-db-{}", patched.replace(|c: char| !c.is_ascii_alphanumeric(), "")));
    let folder = db.join("crates/anyhow");
    fs::create_dir_all(&folder).unwrap();
    let advisory = format!(
        "```toml\n[advisory]\nid = \"RUSTSEC-2099-0042\"\npackage = \"anyhow\"\ndate = \"2099-01-01\"\n\
         cvss = \"CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H\"\n\n[versions]\npatched = [\"{patched}\"]\n```\n\n\
         # A test advisory against anyhow\n"
    );
    fs::write(folder.join("RUSTSEC-2099-0042.md"), advisory).unwrap();
    db
}

/// The vulnerability gate on the image we ship: ECR cannot scan a FROM
/// scratch image (the sandbox answers as ECR does), so the dependency check
/// decides. An advisory against a locked crate version blocks the push
/// before anything is pushed, naming crate, version, advisory and fix; the
/// same image passes when the advisory is fixed in its version.
#[test]
fn the_vulnerability_gate_checks_the_image_dependencies_when_ecr_cannot_scan_it() {
    let built = crate::local_deploy::built();
    let sandbox = TestSandbox::up("sandboxgate");
    apply_repositories(&sandbox);
    let lock = fs::read_to_string(crate::support::project_root().join("Cargo.lock")).unwrap();
    let anyhow = lock.split("[[package]]").find(|block| block.contains("name = \"anyhow\"")).unwrap();
    let version = anyhow.lines().find_map(|line| line.strip_prefix("version = ")).unwrap().trim_matches('"');

    let vulnerable = advisory_db(sandbox.dir.path(), ">= 999.0.0");
    let (output, stdout, stderr) =
        run(sandbox.xtask().args(["push", "--image", &built.id, "--advisory-db"]).arg(&vulnerable));
    assert!(!output.status.success(), "a push with a vulnerable dependency succeeded:\n{stdout}");
    assert!(stderr.contains("was NOT pushed"), "{stderr}");
    assert!(
        stderr.contains(&format!("anyhow {version}: RUSTSEC-2099-0042 (CRITICAL)"))
            && stderr.contains("fixed in >= 999.0.0"),
        "the finding is not named:\n{stderr}"
    );
    assert!(!stderr.contains("docker push"), "the image was pushed anyway:\n{stderr}");

    let fixed = advisory_db(sandbox.dir.path(), &format!(">= {version}"));
    let (output, stdout, stderr) =
        run(sandbox.xtask().args(["push", "--json", "--image", &built.id, "--advisory-db"]).arg(&fixed));
    assert!(output.status.success(), "the real image did not pass the gate:\n{stderr}");
    assert!(
        stderr.contains("ECR cannot scan this image") && stderr.contains("the dependency check passed"),
        "{stderr}"
    );
    // The repository scans on push (infra/repositories), so ECR had started
    // the scan itself: the push did not have to.
    assert!(!stderr.contains("starting one (ecr.start_image_scan)"), "ECR did not scan on push:\n{stderr}");
    let result: Value = crate::support::json_result(&stdout);
    assert_eq!(result["scan"]["status"], "UNSUPPORTED_IMAGE", "{result}");
    assert_eq!(result["scan"]["dependencies"]["status"], "PASSED", "{result}");
    let _remote = LocalImage {
        reference: format!("{}/guestbook:{}", sandbox.registry, result["tag"].as_str().unwrap()),
        extra_tags: Vec::new(),
    };
    // An image we did not build (no revision label) that ECR cannot scan is
    // not waved through.
    let foreign = LocalImage::import("push-foreign");
    let (output, _, stderr) = run(sandbox.xtask().args(["push", "--image", &foreign.reference]));
    assert!(!output.status.success(), "an unscanned foreign image passed:\n{stderr}");
    assert!(stderr.contains("NOT scanned") && stderr.contains("UnsupportedImageError"), "{stderr}");
}

#[test]
fn push_names_a_missing_local_image_and_an_unreachable_docker_daemon() {
    // Both are found before anything talks to AWS; the endpoint is still
    // pinned to a closed loopback port so nothing could.
    let push = |extra_env: &[(&str, &str)]| {
        run(xtask_with_a_closed_aws_endpoint().envs(extra_env.iter().copied()).args([
            "push",
            "--env",
            "sandbox",
            "--image",
            "xtask-test-no-such-image:1",
        ]))
    };
    let (output, _, stderr) = push(&[]);
    assert!(!output.status.success());
    assert!(stderr.contains("no local image \"xtask-test-no-such-image:1\""), "{stderr}");
    assert!(stderr.contains("docker images"), "{stderr}");

    let (output, _, stderr) = push(&[("DOCKER_HOST", "unix:///nonexistent/docker.sock")]);
    assert!(!output.status.success());
    assert!(stderr.contains("Docker daemon is unreachable"), "{stderr}");

    // The sandbox's registry is local: so must its AWS endpoint be.
    let (output, _, stderr) = push(&[("AWS_ENDPOINT_URL", "")]);
    assert!(!output.status.success());
    assert!(stderr.contains("AWS_ENDPOINT_URL is not set") && stderr.contains("sandbox up"), "{stderr}");
}

#[test]
fn an_image_carrying_the_sandboxs_rds_ca_is_pushed_to_sandboxes_only() {
    // The working tree's offline image: its RDS CA bundle is the sandbox's
    // RDS CA (no XTASK_RDS_CA_BUNDLE here), which no real RDS presents.
    let image = LocalImage::app("rds-ca");
    let (output, _, stderr) = run(xtask_with_a_closed_aws_endpoint().env_remove("XTASK_RDS_CA_BUNDLE").args([
        "push",
        "--env",
        "dev",
        "--image",
        &image.reference,
    ]));
    assert!(!output.status.success(), "pushed to dev:\n{stderr}");
    assert!(stderr.contains("carries the sandbox's RDS CA") && stderr.contains("XTASK_RDS_CA_BUNDLE"), "{stderr}");
}

/// xtask with test credentials and AWS_ENDPOINT_URL on a closed loopback
/// port: for checks that must fail before anything talks to AWS.
fn xtask_with_a_closed_aws_endpoint() -> Command {
    let endpoint_url = format!("http://127.0.0.1:{}", testkit::free_port());
    testkit::assert_loopback_endpoint(&endpoint_url);
    let mut command = xtask_without_aws();
    command
        .env("AWS_ENDPOINT_URL", &endpoint_url)
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("AWS_REGION", "us-east-1");
    command
}
