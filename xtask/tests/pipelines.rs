//! The CI pipelines (.github/workflows/*.yml, Jenkinsfile) are valid, and
//! they only call `cargo xtask`: every check lives in a task, so a pipeline
//! can be replaced without losing one.
//!
//! Validators (installed by .ci/run, so these tests never skip):
//! - GitHub workflows: `check-jsonschema --builtin-schema
//!   vendor.github-workflows` (PyPI `check-jsonschema`; the schema ships with
//!   it, so it works offline). Its YAML parser, ruamel.yaml, also turns each
//!   workflow into JSON for the step checks.
//! - Jenkinsfile: Groovy (Debian `groovy`) parses it to an AST, so a syntax
//!   error fails, and lists every method call in it: the declarative
//!   directives and the steps, with their arguments.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use serde_json::Value;

use crate::support::project_root;

const WORKFLOWS: [&str; 2] = [".github/workflows/ci.yml", ".github/workflows/promote.yml"];

/// The only actions a workflow may use besides `run: cargo xtask ...`.
const ALLOWED_ACTIONS: [&str; 2] = ["actions/checkout@", "actions/cache@"];

/// The declarative directives and steps the Jenkinsfile may use: structure,
/// checkout and `sh 'cargo xtask ...'`. No `script {}`, no `when {}`, no
/// other step: logic belongs in a task.
const ALLOWED_JENKINS_CALLS: [&str; 12] = [
    "pipeline",
    "agent",
    "options",
    "timeout",
    "disableConcurrentBuilds",
    "environment",
    "credentials",
    "stages",
    "stage",
    "steps",
    "checkout",
    "sh",
];

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
                        "{workflow}: job {job_name} uses {action}; only checkout and cache are allowed"
                    ),
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
fn ci_workflow_runs_the_ci_task_on_push_and_pull_requests_with_a_cache() {
    let document = yaml_as_json(&project_root().join(".github/workflows/ci.yml"));
    assert!(document["on"].get("push").is_some() && document["on"].get("pull_request").is_some(), "{document}");
    let steps = document["jobs"]["ci"]["steps"].as_array().unwrap();
    let cache = steps.iter().find(|step| step["uses"].as_str().is_some_and(|uses| uses.starts_with("actions/cache@")));
    let cache = cache.expect("ci.yml caches nothing");
    assert!(cache["with"]["key"].as_str().unwrap().contains("hashFiles('**/Cargo.lock')"), "{cache}");
    let paths = cache["with"]["path"].as_str().unwrap();
    assert!(paths.contains("~/.cargo/registry") && paths.lines().any(|line| line.trim() == "target"), "{paths}");
    let run = steps.iter().find(|step| step.get("run").is_some()).unwrap();
    assert_eq!(run["run"], "cargo xtask ci");
    // The variable the secrets code reads, fed from the repository secret.
    let password_variable = secrets_password_variable();
    assert_eq!(run["env"][&password_variable], format!("${{{{ secrets.{password_variable} }}}}"), "{run}");
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
    let run = steps.iter().find(|step| step.get("run").is_some()).unwrap();
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
    assert!(calls.iter().any(|(method, argument)| method == "sh" && argument.as_deref() == Some("cargo xtask ci")));
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

/// Every method call in a Jenkinsfile, in order: (name, its argument when
/// that is a single string literal).
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
        def literal = arguments.size() == 1 && arguments[0] instanceof ConstantExpression && arguments[0].value instanceof String
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
