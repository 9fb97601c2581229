//! `deploy`, `status` and `rollback` against the sandbox: moto (with the
//! launcher that makes UpdateService start deployments and lets RunTask
//! run), a real registry, Terraform and Docker. The rollout decisions moto
//! cannot produce (circuit breaker, throttling, ...) are unit tests of
//! `rollout`.

use std::{
    io::{BufRead, BufReader},
    process::Stdio,
};

use crate::{push::LocalImage, sandbox::TestSandbox, support::run};

const DEPLOY_FLAGS: [&str; 5] = ["--yes", "--allow-dirty", "--fail-on-severity", "NONE", "--skip-smoke"];

fn deploy(sandbox: &TestSandbox, image: &LocalImage) -> String {
    let (output, stdout, stderr) =
        run(sandbox.xtask().arg("deploy").args(DEPLOY_FLAGS).args(["--image", &image.reference]));
    assert!(output.status.success(), "deploy of {} failed:\n{stderr}", image.reference);
    for step in [
        "take the deploy lock",
        "build and push the image",
        "run the database migrations",
        "roll out",
        "wait for the rollout",
    ] {
        assert!(stderr.contains(step), "step {step:?} not announced:\n{stderr}");
    }
    assert!(stderr.contains("migrations applied (exit code 0)"), "{stderr}");
    assert!(stderr.contains("tracking deployment ecs-svc/"), "{stderr}");
    let deployed = stdout.lines().last().unwrap_or_default().to_owned();
    assert!(deployed.contains(&format!("{}/guestbook@sha256:", sandbox.registry)), "{stdout}");
    deployed
}

fn live_image(sandbox: &TestSandbox) -> (String, String) {
    let (output, stdout, stderr) = run(sandbox.xtask().arg("status"));
    assert!(output.status.success(), "status failed:\n{stderr}");
    let live = stdout.lines().find(|line| line.contains(": live ")).unwrap_or_else(|| panic!("{stdout}")).to_owned();
    (live, stdout)
}

#[test]
fn deploy_status_no_drift_lock_rollback_and_promotion_keep_the_digest() {
    let sandbox = TestSandbox::up("sandboxdep");
    let (output, _, stderr) = run(sandbox.xtask().args(["infra", "apply", "--yes"]));
    assert!(output.status.success(), "infra apply failed:\n{stderr}");

    let first = LocalImage::import("deploy-one");
    let second = LocalImage::import("deploy-two");

    let first_deployed = deploy(&sandbox, &first);
    let (live, history) = live_image(&sandbox);
    assert!(live.contains(&first_deployed), "{history}");

    // Migrations on their own: a one-off task of the running image.
    let (output, _, stderr) = run(sandbox.xtask().arg("migrate"));
    assert!(output.status.success(), "migrate failed:\n{stderr}");
    assert!(stderr.contains("migrations applied (exit code 0)") && stderr.contains(&first_deployed), "{stderr}");

    // No drift: the plan reads the running image from the state.
    let (output, stdout, stderr) = run(sandbox.xtask().args(["infra", "plan"]));
    assert!(output.status.success(), "{stderr}");
    assert!(stdout.contains("infra/environments\tno changes"), "drift after a deploy:\n{stdout}\n{stderr}");

    // A second deploy while one holds the lock is refused, naming the holder.
    let holder_stdout = sandbox.dir.path().join("holder.ndjson");
    let mut holder = sandbox
        .xtask()
        .arg("deploy")
        .args(DEPLOY_FLAGS)
        .args(["--image", &second.reference, "--json"])
        .stderr(Stdio::piped())
        .stdout(std::fs::File::create(&holder_stdout).unwrap())
        .spawn()
        .unwrap();
    let mut holder_lines = BufReader::new(holder.stderr.take().unwrap()).lines();
    let mut holder_log = String::new();
    for line in holder_lines.by_ref() {
        let line = line.unwrap();
        holder_log.push_str(&line);
        holder_log.push('\n');
        if line.contains("build and push the image") {
            break;
        }
    }
    let (output, _, stderr) = run(sandbox.xtask().arg("deploy").args(DEPLOY_FLAGS).args(["--image", &first.reference]));
    assert!(!output.status.success(), "a concurrent deploy was not refused");
    assert!(stderr.contains("is locked by another deploy") && stderr.contains(" since "), "{stderr}");
    holder_log.extend(holder_lines.map_while(Result::ok).map(|line| line + "\n"));
    assert!(holder.wait().unwrap().success(), "the lock holder's deploy failed:\n{holder_log}");
    // --json: one object per step, then the result; nothing else on stdout.
    let events: Vec<serde_json::Value> = std::fs::read_to_string(&holder_stdout)
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|err| panic!("not JSON ({err}): {line}")))
        .collect();
    assert!(
        events.iter().any(|e| e["event"] == "step" && e["step"] == "wait for the rollout" && e["seconds"].is_f64())
    );
    assert_eq!(events.last().unwrap()["event"], "deployed", "{events:?}");

    let (live, history) = live_image(&sandbox);
    assert!(!live.contains(&first_deployed), "{history}");

    // Rollback returns to the last successful release, by digest.
    let (output, stdout, stderr) = run(sandbox.xtask().args(["rollback", "--yes"]));
    assert!(output.status.success(), "rollback failed:\n{stderr}");
    assert_eq!(stdout.lines().last().unwrap_or_default(), first_deployed, "{stdout}");
    let (live, history) = live_image(&sandbox);
    assert!(live.contains(&first_deployed), "{history}");
    assert!(history.contains("rollback"), "{history}");

    // Promotion: a second environment in the same sandbox takes the digest
    // live in the first, unchanged, without a build.
    let mut config = std::fs::read_to_string(&sandbox.config_path).unwrap();
    config.push_str(&format!(
        "\n[environments.sandboxqa]\nkind = \"aws\"\nregion = \"us-east-1\"\nstate_bucket = \"tfstate-sandbox\"\ns3_path_style = true\nregistry = \"{}\"\ntfvars = \"sandbox\"\nsmoke_check = false\npromote_from = \"sandboxdep\"\n",
        sandbox.registry
    ));
    std::fs::write(&sandbox.config_path, config).unwrap();
    let _qa_terraform = RemoveOnDrop(crate::support::project_root().join("target/terraform/sandboxqa"));
    let (output, _, stderr) = run(sandbox.xtask().args(["--env", "sandboxqa", "infra", "apply", "--yes"]));
    assert!(output.status.success(), "infra apply of sandboxqa failed:\n{stderr}");

    let (output, _, stderr) =
        run(sandbox.xtask().args(["promote", "--from", "sandboxqa", "--to", "sandboxdep", "--yes"]));
    assert!(!output.status.success(), "promotion against the chain was not refused");
    assert!(stderr.contains("sandboxdep takes releases from no environment"), "{stderr}");

    let (output, _, stderr) =
        run(sandbox.xtask().args(["promote", "--from", "sandboxdep", "--to", "sandboxqa", "--yes"]));
    assert!(output.status.success(), "promote failed:\n{stderr}");
    let digest = first_deployed.split_once('@').unwrap().1;
    assert!(stderr.contains(&format!("sandboxqa runs {digest}, the digest live in sandboxdep")), "{stderr}");
    assert!(!stderr.contains("build and push the image\n==> push"), "promotion rebuilt or pushed:\n{stderr}");
    let (output, stdout, _) = run(sandbox.xtask().args(["--env", "sandboxqa", "status"]));
    assert!(output.status.success());
    let live = stdout.lines().find(|line| line.contains(": live ")).unwrap_or_default();
    assert!(live.contains(digest) && stdout.contains("promotion"), "{stdout}");
}

struct RemoveOnDrop(std::path::PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
