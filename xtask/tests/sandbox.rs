//! `sandbox up|down|status` and the AWS path it rehearses: `infra apply`
//! converging against the emulator, and the Terraform state lock.
//!
//! Each test runs its own sandbox on its own ports, from a copy of
//! deploy.toml (`XTASK_CONFIG`), and stops it in a guard, so the tests run
//! in parallel and leave nothing running. Every command that could reach
//! AWS gets its endpoint from the sandbox's exports, checked to be loopback
//! first.

use std::{
    fs,
    io::{BufRead, BufReader, Read, Write},
    net::TcpStream,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::{Arc, Mutex, OnceLock},
    time::{Duration, Instant},
};

use serde_json::Value;
use testkit::ServiceDir;

use crate::support::{process_alive, project_root, run, xtask};

/// A sandbox for one test: its config copy, its exports, its processes.
/// Dropping it runs `sandbox down` (with `--purge` unless the test failed,
/// so a failure leaves the logs).
pub struct TestSandbox {
    pub environment: String,
    pub registry: String,
    pub endpoint_url: String,
    pub exports: Vec<(String, String)>,
    pub config_path: PathBuf,
    pub dir: ServiceDir,
    stopped: bool,
}

impl TestSandbox {
    /// Writes the config copy (the environment's registry on a free port)
    /// and runs `sandbox up`.
    ///
    /// The registry's port is picked free here but bound only later, by
    /// `sandbox up`; with tests in parallel another process can take it in
    /// between. That race is this test harness's, not the product's: `up`
    /// then fails naming the port (and stops what it started), and the
    /// harness tries again on another port, twice at most.
    pub fn up(environment: &str) -> TestSandbox {
        let mut attempt = 1;
        loop {
            let sandbox = TestSandbox::configure(environment);
            let (output, stdout, stderr) = run(sandbox.xtask().args(["sandbox", "up"]));
            let lost_the_port =
                stderr.contains(&format!("listen tcp {}: bind: address already in use", sandbox.registry));
            if !output.status.success() && lost_the_port && attempt < 3 {
                eprintln!(
                    "the registry's port {} was taken before sandbox up bound it; again on another",
                    sandbox.registry
                );
                attempt += 1;
                continue;
            }
            assert!(output.status.success(), "sandbox up failed:\n{}", crate::support::errors_first(&stderr));
            return sandbox.with_exports(&stdout);
        }
    }

    /// The sandbox before `up`: nothing runs yet.
    pub fn configure(environment: &str) -> TestSandbox {
        assert!(environment.starts_with("sandbox"), "{environment}");
        let dir = ServiceDir::new(&format!("xtask-{environment}"));
        let registry = format!("127.0.0.1:{}", testkit::free_port());
        let config_path = dir.path().join("deploy.toml");
        fs::write(&config_path, config_with_registry(environment, &registry)).unwrap();
        fs::write(dir.path().join("terraformrc"), terraform_cli_config()).unwrap();
        fs::create_dir_all(dir.path().join("docker")).unwrap();
        TestSandbox {
            environment: environment.to_owned(),
            registry,
            endpoint_url: String::new(),
            exports: Vec::new(),
            config_path,
            dir,
            stopped: false,
        }
    }

    fn with_exports(mut self, stdout: &str) -> TestSandbox {
        self.exports = parse_exports(stdout);
        self.endpoint_url = self.export("AWS_ENDPOINT_URL");
        testkit::assert_loopback_endpoint(&self.endpoint_url);
        self
    }

    pub fn export(&self, name: &str) -> String {
        self.exports
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.clone())
            .unwrap_or_else(|| panic!("sandbox up printed no {name}: {:?}", self.exports))
    }

    /// xtask for this sandbox: its config, its environment, its AWS
    /// variables and nothing else of AWS, test-only Terraform settings
    /// (the provider mirror, fast-failing retries) and a private Docker
    /// config for the registry login.
    pub fn xtask(&self) -> Command {
        if !self.endpoint_url.is_empty() {
            testkit::assert_loopback_endpoint(&self.endpoint_url);
        }
        let mut command = xtask_without_aws();
        command
            .env("XTASK_CONFIG", &self.config_path)
            .env("XTASK_ENV", &self.environment)
            .env("TF_CLI_CONFIG_FILE", self.dir.path().join("terraformrc"))
            .env("TF_VAR_aws_max_retries", "2")
            .env("SECRETS_PASSWORD", "demo-password-change-me")
            .env("DOCKER_CONFIG", self.dir.path().join("docker"))
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .envs(self.exports.iter().map(|(key, value)| (key, value)));
        command
    }

    pub fn state_path(&self) -> PathBuf {
        project_root().join("target/sandbox").join(&self.environment).join("state.json")
    }

    pub fn state(&self) -> Value {
        let text = fs::read_to_string(self.state_path()).unwrap_or_else(|err| panic!("reading the state: {err}"));
        serde_json::from_str(&text).unwrap()
    }

    pub fn pids(&self) -> Vec<u32> {
        self.state()["components"].as_array().unwrap().iter().map(|c| c["pid"].as_u64().unwrap() as u32).collect()
    }

    /// The requests this sandbox rejected as AWS would (its
    /// rejected-requests.ndjson, one JSON object a line), which are then
    /// forgotten: `down` and the drop fail the test on any left.
    pub fn take_rejected_requests(&self) -> Vec<String> {
        let path = project_root().join("target/sandbox").join(&self.environment).join("rejected-requests.ndjson");
        let text = fs::read_to_string(&path).unwrap_or_default();
        let _ = fs::remove_file(&path);
        text.lines().map(str::to_owned).collect()
    }

    /// `sandbox down --purge`, checking that every process is gone.
    pub fn down(&mut self) {
        assert_none_rejected(&self.take_rejected_requests());
        let pids = self.pids();
        let (output, _, stderr) = run(self.xtask().args(["sandbox", "down", "--purge"]));
        self.stopped = true;
        assert!(output.status.success(), "sandbox down failed:\n{}", crate::support::errors_first(&stderr));
        for pid in pids {
            assert!(!process_alive(pid), "pid {pid} still runs after sandbox down");
        }
        assert!(!self.state_path().exists(), "the state file is left after down");
        // What moto started for its resources goes too: the database
        // servers behind RDS instances, the containers of RunTask.
        let rds_dir = project_root().join("target/sandbox").join(&self.environment).join("rds");
        let servers = processes_with(&["postgres", &rds_dir.display().to_string()]);
        assert!(servers.is_empty(), "database servers {servers:?} still run after sandbox down");
        let containers = Command::new("docker")
            .args(["ps", "-aq", "--filter", &format!("label=xtask-sandbox={}", self.environment)])
            .output()
            .expect("running docker ps");
        assert!(containers.stdout.is_empty(), "task containers are left after sandbox down");
        // Terraform's working data for the environment pointed at this
        // sandbox's bucket; it goes with it.
        let _ = fs::remove_dir_all(project_root().join("target/terraform").join(&self.environment));
    }

    /// The aws CLI against this sandbox (and nothing else: no AWS setting
    /// of the machine, no ~/.aws); returns stdout.
    pub fn aws(&self, args: &[&str]) -> String {
        testkit::assert_loopback_endpoint(&self.endpoint_url);
        let mut aws = Command::new(testkit::which("aws", "pip install awscli"));
        for (key, _) in std::env::vars() {
            if key.starts_with("AWS_") {
                aws.env_remove(key);
            }
        }
        // --endpoint-url as well: not every service of the v1 CLI reads
        // AWS_ENDPOINT_URL.
        let output = aws
            .arg("--endpoint-url")
            .arg(&self.endpoint_url)
            .args(args)
            .envs(self.exports.iter().map(|(key, value)| (key, value)))
            .env("AWS_DEFAULT_REGION", self.export("AWS_REGION"))
            .env("AWS_CONFIG_FILE", self.dir.path().join("aws-config"))
            .env("AWS_SHARED_CREDENTIALS_FILE", self.dir.path().join("aws-credentials"))
            .output()
            .expect("running the aws CLI");
        assert!(output.status.success(), "aws {args:?}: {}", String::from_utf8_lossy(&output.stderr));
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// `aws` with its JSON answer parsed.
    pub fn aws_json(&self, args: &[&str]) -> Value {
        let stdout = self.aws(&[args, &["--output", "json"]].concat());
        serde_json::from_str(&stdout).expect("aws printed JSON")
    }

    /// Runs SQL in an environment's database, the real PostgreSQL server
    /// behind the sandbox's RDS instance, connecting as the app does: with
    /// the connection from its Secrets Manager secret, over TLS, verifying
    /// the server's certificate and address against the sandbox's RDS CA
    /// (what offline images carry as their RDS bundle). Returns psql's
    /// unaligned output.
    pub fn database_query(&self, environment: &str, sql: &str) -> String {
        let secret = self.aws(&[
            "secretsmanager",
            "get-secret-value",
            "--secret-id",
            &format!("guestbook-{environment}/db"),
            "--query",
            "SecretString",
            "--output",
            "text",
        ]);
        let secret: Value = serde_json::from_str(secret.trim()).unwrap();
        let field = |name: &str| secret[name].as_str().unwrap_or_else(|| panic!("no {name} in the secret")).to_owned();
        let psql = which_psql();
        let output = Command::new(&psql)
            .arg(format!(
                "host={} port={} dbname={} user={} sslmode=verify-full sslrootcert={}",
                field("host"),
                field("port"),
                field("dbname"),
                field("username"),
                project_root().join("target/sandbox-rds-ca/ca.pem").display()
            ))
            .args(["--no-psqlrc", "--tuples-only", "--no-align", "--command", sql])
            .env("PGPASSWORD", field("password"))
            .output()
            .unwrap_or_else(|err| panic!("running {}: {err}", psql.display()));
        assert!(output.status.success(), "psql {sql:?}: {}", String::from_utf8_lossy(&output.stderr));
        String::from_utf8_lossy(&output.stdout).trim().to_owned()
    }

    /// POSTs JSON to moto's own API (test-only knobs such as scan findings).
    pub fn moto_api(&self, path: &str, body: &Value) {
        let address = self.endpoint_url.trim_start_matches("http://");
        let status = http_status(address, "POST", path, body.to_string().as_bytes());
        assert!((200..300).contains(&status), "POST {path} answered {status}");
    }
}

impl Drop for TestSandbox {
    fn drop(&mut self) {
        if self.stopped {
            return;
        }
        let mut command = self.xtask();
        command.args(["sandbox", "down"]);
        let failed = std::thread::panicking();
        if !failed {
            command.arg("--purge");
        }
        let rejected = if failed { Vec::new() } else { self.take_rejected_requests() };
        let _ = command.output();
        assert_none_rejected(&rejected);
    }
}

/// Fails the test on a request the sandbox rejected because AWS would
/// (sandbox_validation.py): what the product sends must fit the services'
/// models.
fn assert_none_rejected(rejected: &[String]) {
    assert!(
        rejected.is_empty(),
        "the sandbox rejected {} request(s) that AWS would reject too:\n{}",
        rejected.len(),
        rejected.join("\n")
    );
}

fn which_psql() -> PathBuf {
    let on_path = Command::new("sh").args(["-c", "command -v psql"]).output().ok();
    match on_path.map(|output| String::from_utf8_lossy(&output.stdout).trim().to_owned()) {
        Some(path) if !path.is_empty() => PathBuf::from(path),
        _ => PathBuf::from("/usr/lib/postgresql/15/bin/psql"),
    }
}

/// xtask with no AWS or Terraform setting from the environment the tests
/// run in: a test adds the sandbox's, or none.
pub fn xtask_without_aws() -> Command {
    let mut command = xtask();
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("AWS_") || key.to_string_lossy().starts_with("TF_") {
            command.env_remove(key);
        }
    }
    command
}

/// deploy.toml with the environment's registry on another port; an
/// environment other than `sandbox` is added as a copy of it.
fn config_with_registry(environment: &str, registry: &str) -> String {
    let shipped = fs::read_to_string(project_root().join("deploy.toml")).unwrap();
    let shipped_registry = "registry = \"127.0.0.1:5055\"";
    assert!(shipped.contains(shipped_registry), "deploy.toml no longer has {shipped_registry}");
    if environment == "sandbox" {
        return shipped.replace(shipped_registry, &format!("registry = \"{registry}\""));
    }
    format!(
        "{shipped}\n[environments.{environment}]\nkind = \"aws\"\nregion = \"us-east-1\"\nstate_bucket = \"tfstate-sandbox\"\ns3_path_style = true\nregistry = \"{registry}\"\ntfvars = \"sandbox\"\n"
    )
}

fn parse_exports(stdout: &str) -> Vec<(String, String)> {
    stdout
        .lines()
        .filter_map(|line| line.strip_prefix("export "))
        .filter_map(|assignment| assignment.split_once('='))
        .map(|(key, value)| (key.to_owned(), value.to_owned()))
        .collect()
}

/// Terraform CLI settings for tests: providers from the local mirror only.
pub(crate) fn terraform_cli_config() -> String {
    format!("provider_installation {{\n  filesystem_mirror {{\n    path = \"{}\"\n  }}\n}}\n", mirror_root().display())
}

/// The folder above `registry.terraform.io` that holds hashicorp/aws.
fn mirror_root() -> &'static Path {
    static ROOT: OnceLock<PathBuf> = OnceLock::new();
    ROOT.get_or_init(|| {
        if Path::new("/opt/tf-plugins/registry.terraform.io/hashicorp/aws").is_dir() {
            return PathBuf::from("/opt/tf-plugins");
        }
        let output = Command::new("find")
            .args(["/", "-path", "/proc", "-prune", "-o", "-name", "terraform-provider-aws_*", "-print", "-quit"])
            .stderr(Stdio::null())
            .output()
            .expect("running find");
        let found = String::from_utf8_lossy(&output.stdout).trim().to_owned();
        let root = Path::new(&found)
            .ancestors()
            .find(|dir| dir.file_name().is_some_and(|name| name == "registry.terraform.io"))
            .and_then(Path::parent)
            .unwrap_or_else(|| {
                panic!("no Terraform AWS provider mirror found (searched /opt/tf-plugins and /): found {found:?}")
            });
        root.to_path_buf()
    })
}

/// A bare HTTP/1.1 request; returns the status code.
fn http_status(address: &str, method: &str, path: &str, body: &[u8]) -> u16 {
    http_request(address, method, path, body).0
}

/// A bare HTTP/1.1 request; returns the status code and the whole response.
fn http_request(address: &str, method: &str, path: &str, body: &[u8]) -> (u16, String) {
    http_request_with(address, method, path, "Content-Type: application/json\r\n", body)
}

/// `http_request` with other header lines (each ending in `\r\n`).
fn http_request_with(address: &str, method: &str, path: &str, headers: &str, body: &[u8]) -> (u16, String) {
    let mut stream = TcpStream::connect(address).unwrap_or_else(|err| panic!("connecting to {address}: {err}"));
    stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n{headers}Content-Length: {}\r\n\r\n",
        body.len()
    )
    .unwrap();
    stream.write_all(body).unwrap();
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    let status = response.split_whitespace().nth(1).and_then(|code| code.parse().ok()).unwrap_or(0);
    (status, response)
}

/// Whether the state bucket holds the lock file of an environment's state
/// (listed: moto refuses unsigned reads of objects, not of the listing).
fn lock_file_exists(sandbox: &TestSandbox, environment: &str) -> bool {
    let moto = sandbox.endpoint_url.trim_start_matches("http://");
    let key = format!("guestbook/{environment}/environment.tfstate.tflock");
    let (status, response) = http_request(moto, "GET", &format!("/tfstate-sandbox?list-type=2&prefix={key}"), b"");
    assert_eq!(status, 200, "listing the state bucket: {response}");
    response.contains(&format!("<Key>{key}</Key>"))
}

/// True when something accepts connections on the address.
fn answers(address: &str) -> bool {
    TcpStream::connect(address).is_ok()
}

/// Processes whose command line contains every one of `needles`.
fn processes_with(needles: &[&str]) -> Vec<u32> {
    fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let command_line = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let command_line = String::from_utf8_lossy(&command_line).replace('\0', " ");
            needles.iter().all(|needle| command_line.contains(needle)) && process_alive(*pid)
        })
        .collect()
}

#[test]
fn sandbox_up_status_down_and_up_again_is_idempotent() {
    let sandbox = TestSandbox::configure("sandboxlife");
    let (output, stdout, stderr) = run(sandbox.xtask().args(["sandbox", "up", "--dry-run"]));
    assert!(output.status.success(), "{stderr}");
    for expected in
        ["would start moto", "MOTO_IAM_LOAD_MANAGED_POLICIES=true", "would start sync", "would start registry"]
    {
        assert!(stdout.contains(expected), "dry-run does not say {expected:?}:\n{stdout}");
    }
    assert!(!sandbox.state_path().exists(), "dry-run wrote the state");

    let (output, stdout, stderr) = run(sandbox.xtask().args(["sandbox", "up"]));
    assert!(output.status.success(), "sandbox up failed:\n{}", crate::support::errors_first(&stderr));
    let mut sandbox = sandbox.with_exports(&stdout);
    assert_eq!(sandbox.export("AWS_ACCESS_KEY_ID"), "test");
    assert_eq!(sandbox.export("AWS_REGION"), "us-east-1");
    let pids = sandbox.pids();
    assert_eq!(pids.len(), 3, "{}", sandbox.state());
    assert!(pids.iter().all(|pid| process_alive(*pid)));
    // The registry runs where the config says, asking for credentials.
    assert_eq!(http_status(&sandbox.registry, "GET", "/v2/", b""), 401);
    // The state bucket exists.
    let moto = sandbox.endpoint_url.trim_start_matches("http://").to_owned();
    assert_eq!(http_status(&moto, "GET", "/tfstate-sandbox", b""), 200);

    let (output, again, stderr) = run(sandbox.xtask().args(["sandbox", "up"]));
    assert!(output.status.success(), "{stderr}");
    assert!(stderr.contains("already up"), "{stderr}");
    assert_eq!(parse_exports(&again), sandbox.exports, "a second up prints other exports");
    assert_eq!(sandbox.pids(), pids, "a second up started other processes");

    let (output, stdout, stderr) = run(sandbox.xtask().args(["sandbox", "status"]));
    assert!(output.status.success(), "{stderr}");
    for component in ["moto", "sync", "registry"] {
        assert!(stdout.lines().any(|line| line.starts_with(component) && line.contains(" up ")), "{stdout}");
    }
    assert!(stdout.contains(&sandbox.registry) && stdout.contains(&sandbox.endpoint_url), "{stdout}");

    // A request AWS would refuse is refused: UpdateService without its
    // required `service`, a desired count that is text, a value of
    // propagateTags outside its enum, sent as the SDKs send (AWS's JSON 1.1
    // protocol, the operation in X-Amz-Target, a SigV4 credential scope
    // naming the service), which check none of this first (the CLI would).
    let headers = "Content-Type: application/x-amz-json-1.1\r\n\
                   X-Amz-Target: AmazonEC2ContainerServiceV20141113.UpdateService\r\n\
                   Authorization: AWS4-HMAC-SHA256 Credential=test/20261205/us-east-1/ecs/aws4_request, SignedHeaders=host, Signature=0\r\n";
    let body = br#"{"cluster": "guestbook-sandboxlife", "desiredCount": "2", "propagateTags": "EVERYWHERE"}"#;
    let (status, response) = http_request_with(&moto, "POST", "/", headers, body);
    assert_eq!(status, 400, "{response}");
    for expected in [
        "ValidationException",
        "3 validation errors detected",
        "Value null at 'service' failed to satisfy constraint: Member must not be null",
        "Value '2' at 'desiredCount' failed to satisfy constraint",
        "Member must satisfy enum value set: [",
    ] {
        assert!(response.contains(expected), "the rejection does not say {expected:?}:\n{response}");
    }
    let (output, _, stderr) = run(sandbox.xtask().args(["sandbox", "status"]));
    assert!(output.status.success(), "{stderr}");
    assert!(stderr.contains("1 request(s) were rejected as AWS would reject them"), "{stderr}");
    let rejected = sandbox.take_rejected_requests();
    assert!(rejected.len() == 1 && rejected[0].contains(r#""operation": "UpdateService""#), "{rejected:?}");

    let dir = sandbox.state_path().parent().unwrap().to_path_buf();
    sandbox.down();
    assert!(!dir.exists(), "down --purge left {}", dir.display());
    let (output, _, stderr) = run(sandbox.xtask().args(["sandbox", "status"]));
    assert!(!output.status.success(), "status succeeds after down");
    assert!(stderr.contains("not up"), "{stderr}");
}

#[test]
fn sandbox_refuses_environments_that_are_not_sandboxes() {
    let sandbox = TestSandbox::configure("sandboxrefuse");
    for environment in ["dev", "local", "prod"] {
        let (output, stdout, stderr) = run(sandbox.xtask().args(["sandbox", "up", "--dry-run", "--env", environment]));
        assert!(!output.status.success(), "sandbox up --env {environment} succeeded:\n{stdout}");
        assert!(stderr.contains("only runs environments whose name starts with \"sandbox\""), "{stderr}");
        assert!(stdout.is_empty(), "{stdout}");
    }
}

#[test]
fn sandbox_up_stops_what_it_started_when_a_later_step_fails() {
    // An htpasswd that fails: moto is up by the time it runs.
    let sandbox = TestSandbox::configure("sandboxfail");
    let bin = sandbox.dir.path().join("bin");
    fs::create_dir_all(&bin).unwrap();
    // Written by a child process: a file this process had open for
    // writing could be inherited by a concurrent test's fork, and running
    // it would fail with "text file busy".
    let status = Command::new("sh")
        .args([
            "-c",
            "printf '#!/bin/sh\\necho \"htpasswd: broken on purpose\" >&2\\nexit 3\\n' > \"$1\" && chmod 755 \"$1\"",
            "sh",
        ])
        .arg(bin.join("htpasswd"))
        .status()
        .unwrap();
    assert!(status.success());
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default());

    let (output, _, stderr) = run(sandbox.xtask().env("PATH", path).args(["sandbox", "up"]));
    assert!(!output.status.success(), "sandbox up succeeded with a broken htpasswd");
    assert!(stderr.contains("broken on purpose"), "{stderr}");
    let moto_address = stderr
        .lines()
        .find_map(|line| line.strip_prefix("==> starting moto on "))
        .unwrap_or_else(|| panic!("moto never started:\n{stderr}"))
        .trim()
        .to_owned();
    let port = moto_address.rsplit(':').next().unwrap();
    assert!(processes_with(&["moto_launcher.py", "-p", port]).is_empty(), "moto on {moto_address} still runs");
    assert!(!answers(&moto_address), "something still answers on {moto_address}");
    assert!(!sandbox.state_path().exists(), "a failed up wrote the state");
}

/// The issue's "done when": an environment applies from scratch against
/// the sandbox, a second apply converges (moto drops a few fields on
/// create), and the plan after it is empty.
#[test]
fn infra_apply_against_the_sandbox_creates_everything_and_converges() {
    let existing = project_root().join("target/sandbox/sandbox/state.json");
    assert!(
        !existing.exists(),
        "this test uses the environment `sandbox`, and a sandbox is up in this checkout ({}): `cargo xtask sandbox down` first",
        existing.display()
    );
    let mut sandbox = TestSandbox::up("sandbox");
    let started = Instant::now();
    let (output, stdout, stderr) = run(sandbox.xtask().args(["infra", "apply", "--yes"]));
    let all = format!("{stdout}{stderr}");
    assert!(output.status.success(), "first apply failed:\n{all}");
    for resource in
        ["aws_ecr_repository.app", "aws_vpc.main", "aws_lb.app", "aws_ecs_service.app", "aws_db_instance.main"]
    {
        assert!(all.contains(&format!("{resource}: Creation complete")), "{resource} not created:\n{all}");
    }
    // Nothing init records changed: the second apply and the plan skip it,
    // and --reinit runs it anyway.
    let (output, _, stderr) = run(sandbox.xtask().args(["infra", "apply", "--yes"]));
    assert!(output.status.success(), "second apply failed:\n{}", crate::support::errors_first(&stderr));
    assert!(!stderr.contains("==> terraform init"), "init ran again with nothing changed:\n{stderr}");
    let (output, stdout, stderr) = run(sandbox.xtask().args(["infra", "plan", "--reinit"]));
    assert!(output.status.success(), "plan failed:\n{}", crate::support::errors_first(&stderr));
    assert!(stderr.contains("==> terraform init infra/repositories"), "--reinit did not init:\n{stderr}");
    assert!(stdout.contains("infra/repositories\tno changes"), "{stdout}\n{stderr}");
    assert!(stdout.contains("infra/environments\tno changes"), "the environment did not converge:\n{stdout}\n{stderr}");
    eprintln!("apply, apply, plan: {:?}", started.elapsed());
    the_service_and_the_migration_get_different_database_credentials(&sandbox);
    sandbox.down();
}

/// Least privilege as applied: the service's tasks read only the service
/// role's secret (data rights only), through an execution role that cannot
/// read the master's; the migration task reads the master's and is told the
/// service role and its password, which `app migrate` applies.
fn the_service_and_the_migration_get_different_database_credentials(sandbox: &TestSandbox) {
    let describe = |family: &str| {
        sandbox.aws_json(&["ecs", "describe-task-definition", "--task-definition", family])["taskDefinition"].clone()
    };
    let secrets = |definition: &Value| -> Vec<(String, String)> {
        definition["containerDefinitions"][0]["secrets"]
            .as_array()
            .unwrap()
            .iter()
            .map(|secret| {
                (secret["name"].as_str().unwrap().to_owned(), secret["valueFrom"].as_str().unwrap().to_owned())
            })
            .collect()
    };
    let service = describe("guestbook-sandbox");
    let migration = describe("guestbook-sandbox-migrate");
    for (name, from) in secrets(&service) {
        assert!(from.contains(":secret:guestbook-sandbox/db-app"), "the service's {name} comes from {from}");
    }
    let migration_secrets = secrets(&migration);
    let password = migration_secrets.iter().find(|(name, _)| name == "DB_PASSWORD").unwrap();
    assert!(!password.1.contains("/db-app"), "the migration does not run as the master: {password:?}");
    let role_password = migration_secrets.iter().find(|(name, _)| name == "APP_DB_ROLE_PASSWORD").unwrap();
    assert!(role_password.1.contains("/db-app") && role_password.1.ends_with(":password::"), "{role_password:?}");
    let environment = migration["containerDefinitions"][0]["environment"].as_array().unwrap();
    assert!(environment.iter().any(|pair| pair["name"] == "APP_DB_ROLE" && pair["value"] == "guestbook_app"));
    assert_ne!(service["executionRoleArn"], migration["executionRoleArn"]);
    let app_secret =
        sandbox.aws_json(&["secretsmanager", "get-secret-value", "--secret-id", "guestbook-sandbox/db-app"]);
    let app_secret: Value = serde_json::from_str(app_secret["SecretString"].as_str().unwrap()).unwrap();
    assert_eq!(app_secret["username"], "guestbook_app");
    let policy = |role: &str, name: &str| {
        let policy = sandbox.aws_json(&["iam", "get-role-policy", "--role-name", role, "--policy-name", name]);
        policy["PolicyDocument"].to_string()
    };
    let service_policy = policy("guestbook-sandbox-execution", "read-db-secret");
    assert!(service_policy.contains("guestbook-sandbox/db-app"), "{service_policy}");
    assert!(
        !service_policy.replace("guestbook-sandbox/db-app", "").contains("guestbook-sandbox/db"),
        "the service's execution role can read the master's secret: {service_policy}"
    );
}

/// A second apply while one holds the state lock fails naming the holder;
/// Ctrl-C on the first releases the lock (no force-unlock needed).
#[test]
fn concurrent_apply_fails_on_the_lock_and_ctrl_c_releases_it() {
    use std::os::unix::process::CommandExt;
    // No tfvars for this environment: the defaults include autoscaling,
    // which moto never finishes creating, so the apply runs until stopped.
    let mut sandbox = TestSandbox::up("sandboxlock");
    let mut first = sandbox
        .xtask()
        .args(["infra", "apply", "--yes"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .expect("starting the first apply");
    let first_pid = first.id();
    // Whatever happens, the first apply does not outlive the test.
    let _stop_first = KillOnDrop(first_pid);
    let seen = Arc::new(Mutex::new(String::new()));
    let readers: Vec<_> =
        [Box::new(first.stdout.take().unwrap()) as Box<dyn Read + Send>, Box::new(first.stderr.take().unwrap())]
            .into_iter()
            .map(|stream| {
                let seen = seen.clone();
                std::thread::spawn(move || {
                    for line in BufReader::new(stream).lines().map_while(Result::ok) {
                        let mut seen = seen.lock().unwrap();
                        seen.push_str(&line);
                        seen.push('\n');
                    }
                })
            })
            .collect();
    // A resource of the environment stage being created: the apply holds
    // the environment's lock.
    let deadline = Instant::now() + Duration::from_secs(240);
    while !seen.lock().unwrap().contains("aws_vpc.main: Creating...") {
        if let Some(status) = first.try_wait().unwrap() {
            panic!("the first apply ended ({status}) before creating the environment:\n{}", seen.lock().unwrap());
        }
        assert!(
            Instant::now() < deadline,
            "the first apply never started creating the environment:\n{}",
            seen.lock().unwrap()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(lock_file_exists(&sandbox, "sandboxlock"), "no lock file in the state bucket during the apply");

    let (output, stdout, stderr) = run(sandbox.xtask().args(["infra", "apply", "--yes"]));
    assert!(!output.status.success(), "a concurrent apply succeeded:\n{stdout}\n{stderr}");
    let all = format!("{stdout}{stderr}");
    assert!(all.contains("Error acquiring the state lock"), "no lock error:\n{all}");
    for holder_field in ["Lock Info:", "ID:", "Path:", "Operation:", "Who:"] {
        assert!(all.contains(holder_field), "the lock error does not name the holder ({holder_field}):\n{all}");
    }
    assert!(all.contains("guestbook/sandboxlock/environment.tfstate"), "{all}");

    // Ctrl-C: SIGINT to the whole process group, as a terminal sends it.
    let interrupted_at = Instant::now();
    let _ = Command::new("kill").args(["-INT", "--", &format!("-{first_pid}")]).status();
    let status = loop {
        if let Some(status) = first.try_wait().unwrap() {
            break status;
        }
        assert!(interrupted_at.elapsed() < Duration::from_secs(90), "the first apply ignores Ctrl-C");
        std::thread::sleep(Duration::from_millis(100));
    };
    for reader in readers {
        reader.join().unwrap();
    }
    assert!(!status.success(), "an interrupted apply succeeded");
    let text = seen.lock().unwrap().clone();
    // Terraform got the interrupt itself (not a kill), and stopped cleanly.
    assert!(text.contains("to stop cleanly") && text.contains("Gracefully shutting down"), "{text}");
    eprintln!("the interrupted apply stopped {:?} after SIGINT", interrupted_at.elapsed());
    assert!(!lock_file_exists(&sandbox, "sandboxlock"), "the lock file is left in the bucket:\n{text}");

    let (output, stdout, stderr) = run(sandbox.xtask().args(["infra", "plan", "--stage", "environment"]));
    assert!(output.status.success(), "plan after Ctrl-C failed (lock left behind?):\n{stdout}\n{stderr}");
    assert!(!stderr.contains("state lock"), "{stderr}");
    sandbox.down();
}

/// Kills a process group when dropped (a failing test must not leave an
/// apply running).
struct KillOnDrop(u32);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if process_alive(self.0) {
            let _ = Command::new("kill").args(["-KILL", "--", &format!("-{}", self.0)]).status();
        }
    }
}
