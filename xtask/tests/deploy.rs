//! `deploy`, `status` and `rollback` against the sandbox: moto (with the
//! launcher that runs the service's tasks and RunTask's as real containers,
//! health-checked behind a load balancer on loopback, with the circuit
//! breaker), a real registry, Terraform and Docker. Every deploy here runs
//! the vulnerability gate and the smoke check. ECS answers the sandbox
//! cannot produce on purpose (throttling, a concurrent deployment by someone
//! else) are unit tests of `rollout`.

use std::{
    io::{BufRead, BufReader},
    process::Stdio,
};

use crate::{push::LocalImage, sandbox::TestSandbox, support::run};

/// The flags of every deploy here: the gate at its default threshold, with
/// an advisory database of no advisory (the machine has no copy of
/// RustSec's; `push::advisory_db` makes one that blocks), and the smoke
/// check on (deploy.toml's default).
fn deploy_flags(sandbox: &TestSandbox) -> Vec<String> {
    let database = sandbox.dir.path().join("advisory-db-empty");
    std::fs::create_dir_all(database.join("crates")).unwrap();
    ["--yes", "--allow-dirty", "--advisory-db"]
        .map(str::to_owned)
        .into_iter()
        .chain([database.display().to_string()])
        .collect()
}

fn deploy(sandbox: &TestSandbox, image: &LocalImage) -> String {
    let (output, stdout, stderr) =
        run(sandbox.xtask().arg("deploy").args(deploy_flags(sandbox)).args(["--image", &image.reference]));
    assert!(
        output.status.success(),
        "deploy of {} failed:\n{}",
        image.reference,
        crate::support::errors_first(&stderr)
    );
    for step in [
        "take the deploy lock",
        "build and push the image",
        "run the database migrations",
        "roll out",
        "wait for the rollout",
        "smoke check GET /version",
    ] {
        assert!(stderr.contains(step), "step {step:?} not announced:\n{stderr}");
    }
    assert!(stderr.contains("migrations applied (exit code 0)"), "{stderr}");
    // The migration task's output, from CloudWatch Logs: the sandbox ran
    // the image's `app migrate` against its real PostgreSQL and wrote the
    // container's lines to the stream, as the awslogs driver does.
    assert!(stderr.contains("  migrate | database schema is at version 1"), "{stderr}");
    assert!(stderr.contains("tracking deployment ecs-svc/"), "{stderr}");
    // The scratch image ECR cannot scan passed on the dependency check.
    assert!(
        stderr.contains("ECR cannot scan this image") && stderr.contains("the dependency check passed"),
        "{stderr}"
    );
    let deployed = stdout.lines().last().unwrap_or_default().to_owned();
    assert!(deployed.contains(&format!("{}/guestbook@sha256:", sandbox.registry)), "{stdout}");
    deployed
}

/// GET `path` from the environment's load balancer (the sandbox's, on the
/// loopback port its DNS name gives): status and body.
fn through_the_load_balancer(sandbox: &TestSandbox, path: &str) -> Option<(u16, String)> {
    let balancer =
        sandbox.aws(&["elbv2", "describe-load-balancers", "--query", "LoadBalancers[0].DNSName", "--output", "text"]);
    let port: u16 =
        balancer.trim().rsplit(':').next().and_then(|port| port.parse().ok()).unwrap_or_else(|| panic!("{balancer}"));
    crate::support::http_get(port, path)
}

/// `path` through the load balancer once it answers 200, or its last answer
/// after `patience`: a readiness wait, since a page that reads the database
/// answers 503 whenever the app's pool cannot connect within its 3 s, which
/// says nothing about which release serves; one that never connects still
/// fails.
fn once_served(sandbox: &TestSandbox, path: &str, patience: std::time::Duration) -> Option<(u16, String)> {
    let deadline = std::time::Instant::now() + patience;
    loop {
        let answer = through_the_load_balancer(sandbox, path);
        if answer.as_ref().is_some_and(|(status, _)| *status == 200) || std::time::Instant::now() >= deadline {
            return answer;
        }
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
}

/// A running deploy's stderr up to the first line containing `needle`.
fn read_until(lines: &mut impl Iterator<Item = std::io::Result<String>>, needle: &str) -> String {
    let mut log = String::new();
    for line in lines {
        let line = line.unwrap();
        log.push_str(&line);
        log.push('\n');
        if line.contains(needle) {
            break;
        }
    }
    log
}

fn live_image(sandbox: &TestSandbox) -> (String, String) {
    let (output, stdout, stderr) = run(sandbox.xtask().arg("status"));
    assert!(output.status.success(), "status failed:\n{}", crate::support::errors_first(&stderr));
    let live = stdout.lines().find(|line| line.contains(": live ")).unwrap_or_else(|| panic!("{stdout}")).to_owned();
    (live, stdout)
}

#[test]
fn deploy_status_no_drift_lock_rollback_and_ctrl_c_keep_the_digest() {
    let sandbox = TestSandbox::up("sandboxdep");
    let (output, _, stderr) = run(sandbox.xtask().args(["infra", "apply", "--yes"]));
    assert!(output.status.success(), "infra apply failed:\n{}", crate::support::errors_first(&stderr));

    let first = LocalImage::app("deploy-one");
    let second = LocalImage::app("deploy-two");

    let first_deployed = deploy(&sandbox, &first);
    let (live, history) = live_image(&sandbox);
    assert!(live.contains(&first_deployed), "{history}");
    // The migrations really ran, in the database the service's secret names.
    assert_eq!(
        sandbox.database_query("sandboxdep", "SELECT version FROM _sqlx_migrations WHERE success ORDER BY version"),
        "1"
    );

    // --dry-run: the plan on stdout, every change a `would` line, deploy.toml
    // read once (the verbose log says when), and nothing changed.
    let (output, stdout, stderr) = run(sandbox
        .xtask()
        .args(["--verbose", "--dry-run", "deploy"])
        .args(deploy_flags(&sandbox))
        .args(["--image", &second.reference]));
    assert!(output.status.success(), "dry-run deploy failed:\n{}", crate::support::errors_first(&stderr));
    for planned in [
        "would call: dynamodb.put_item (the deploy lock of sandboxdep",
        "would run: docker push ",
        "would call: dynamodb.put_item (release ",
        "would call: ecs.clone_task_definition ",
        "would call: ecs.update_service ",
        "would wait for the deployment of the new task definition",
    ] {
        assert!(stdout.contains(planned), "the dry-run plan lacks {planned:?}:\n{stdout}");
    }
    let reads = stderr.lines().filter(|line| line.starts_with("read ") && line.ends_with(" environments)")).count();
    assert_eq!(reads, 1, "deploy.toml was read {reads} times in one run:\n{stderr}");
    let (output, stdout, stderr) = run(sandbox.xtask().args(["--dry-run", "infra", "apply", "--yes"]));
    assert!(output.status.success(), "dry-run infra apply failed:\n{}", crate::support::errors_first(&stderr));
    assert!(stdout.lines().all(|line| line.starts_with("would ") || line.contains('\t')), "{stdout}");
    assert_eq!(live_image(&sandbox).0, live, "a dry run changed what runs");

    // Migrations on their own: a one-off task of the running image.
    let (output, _, stderr) = run(sandbox.xtask().arg("migrate"));
    assert!(output.status.success(), "migrate failed:\n{}", crate::support::errors_first(&stderr));
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
        .args(deploy_flags(&sandbox))
        .args(["--image", &second.reference, "--json"])
        .stderr(Stdio::piped())
        .stdout(std::fs::File::create(&holder_stdout).unwrap())
        .spawn()
        .unwrap();
    let mut holder_lines = BufReader::new(holder.stderr.take().unwrap()).lines();
    // Refused while the holder is tracking its rollout, not merely started.
    let mut holder_log = read_until(&mut holder_lines, "tracking deployment ecs-svc/");
    let (output, _, stderr) =
        run(sandbox.xtask().arg("deploy").args(deploy_flags(&sandbox)).args(["--image", &first.reference]));
    assert!(!output.status.success(), "a concurrent deploy was not refused");
    assert!(stderr.contains("is locked by another deploy") && stderr.contains(" since "), "{stderr}");
    holder_log.extend(holder_lines.map_while(Result::ok).map(|line| line + "\n"));
    assert!(holder.wait().unwrap().success(), "the lock holder's deploy failed:\n{holder_log}");
    // --json: NDJSON only: messages, one object per step, the result, and
    // the task's outcome last.
    let events: Vec<serde_json::Value> = std::fs::read_to_string(&holder_stdout)
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|err| panic!("not JSON ({err}): {line}")))
        .collect();
    assert!(
        events.iter().any(|e| e["event"] == "step" && e["step"] == "wait for the rollout" && e["seconds"].is_f64())
    );
    assert!(events.iter().any(|e| e["event"] == "deployed"), "{events:?}");
    let last = events.last().unwrap();
    assert!(last["event"] == "task" && last["task"] == "deploy" && last["outcome"] == "succeeded", "{last}");
    // Nothing of the infrastructure changed since the first deploy: no plan.
    let infra = events.iter().find(|e| e["step"] == "apply the infrastructure if its inputs changed").unwrap();
    assert_eq!(infra["outcome"], "skipped", "{events:?}");
    assert!(!holder_log.contains("terraform plan"), "an app-only deploy ran terraform:\n{holder_log}");

    let (live, history) = live_image(&sandbox);
    assert!(!live.contains(&first_deployed), "{history}");

    // Rollback returns to the last successful release, by digest.
    let (output, stdout, stderr) = run(sandbox.xtask().args(["rollback", "--yes"]));
    assert!(output.status.success(), "rollback failed:\n{}", crate::support::errors_first(&stderr));
    assert_eq!(stdout.lines().last().unwrap_or_default(), first_deployed, "{stdout}");
    let (live, history) = live_image(&sandbox);
    assert!(live.contains(&first_deployed), "{history}");
    assert!(history.contains("rollback"), "{history}");

    // What ECS runs serves this commit through the environment's URL (the
    // sandbox's load balancer in front of the real container).
    let head =
        String::from_utf8(std::process::Command::new("git").args(["rev-parse", "HEAD"]).output().unwrap().stdout)
            .unwrap();
    let answer = through_the_load_balancer(&sandbox, "/version");
    assert!(
        answer.as_ref().is_some_and(|(status, body)| *status == 200 && body.contains(head.trim())),
        "the load balancer does not serve {head}: {answer:?}"
    );

    // A failed smoke check rolls back to the last good release and fails:
    // a release that deploys and passes its health checks but does not
    // serve this commit.
    let other = LocalImage::serves_another_commit("other-commit");
    let (output, stdout, stderr) = run(sandbox.xtask().arg("deploy").args(deploy_flags(&sandbox)).args([
        "--image",
        &other.reference,
        "--smoke-timeout",
        "5s",
    ]));
    assert!(!output.status.success(), "a deploy whose smoke check failed succeeded:\n{stderr}");
    assert!(
        stderr.contains("smoke check") && stderr.contains(&format!("rolling back to {first_deployed}")),
        "{stderr}"
    );
    // stdout ends with what serves now: the release it rolled back to.
    assert!(
        !stderr.contains("ok: sandboxdep runs") && stdout.lines().last() == Some(first_deployed.as_str()),
        "a failure printed success:\n{stdout}{stderr}"
    );
    let (live, history) = live_image(&sandbox);
    assert!(live.contains(&first_deployed), "the smoke failure did not roll back:\n{history}");
    assert!(history.contains("FAILED: step \"smoke check GET /version\""), "{history}");

    // Ctrl-C in the middle of the rollout wait (the new task is starting
    // and being health-checked): the children stop, the lock is released,
    // the attempt is recorded as interrupted, and a re-run succeeds.
    let mut interrupted = {
        use std::os::unix::process::CommandExt;
        sandbox
            .xtask()
            .arg("deploy")
            .args(deploy_flags(&sandbox))
            .args(["--image", &second.reference])
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .process_group(0)
            .spawn()
            .unwrap()
    };
    let mut lines = BufReader::new(interrupted.stderr.take().unwrap()).lines();
    let mut log = read_until(&mut lines, "tracking deployment ecs-svc/");
    assert!(log.contains("tracking deployment"), "the deploy never reached the wait:\n{log}");
    // As a terminal does: SIGINT to the whole foreground process group.
    let group = format!("-{}", interrupted.id());
    assert!(std::process::Command::new("kill").args(["-INT", "--", &group]).status().unwrap().success());
    log.extend(lines.map_while(Result::ok).map(|line| line + "\n"));
    let status = interrupted.wait().unwrap();
    assert_eq!(status.code(), Some(130), "Ctrl-C did not end the deploy with 130:\n{log}");
    assert!(log.contains("cleanup: release the deploy lock of sandboxdep"), "{log}");
    assert!(!log.contains("could not release the deploy lock"), "{log}");
    // ECS goes on with the rollout the deploy stopped watching: the ledger
    // says unknown, and the next status reads what ECS did.
    let second_live = assert_unknown_then_settled(&sandbox, "interrupted while ECS rolled out", &first_deployed);
    // The lock went with the interrupted deploy.
    let (output, _, stderr) = run(sandbox.xtask().args(["unlock", "--yes"]));
    assert!(output.status.success() && stderr.contains("sandboxdep is not locked"), "{stderr}");

    // A wait that times out (the new task is still being health-checked):
    // the same, the deploy exiting non-zero with what it last saw.
    let (output, _, stderr) = run(sandbox.xtask().arg("deploy").args(deploy_flags(&sandbox)).args([
        "--image",
        &first.reference,
        "--timeout",
        "3s",
    ]));
    assert!(!output.status.success(), "a deploy whose wait timed out succeeded:\n{stderr}");
    assert!(
        stderr.contains("the rollout did not finish within 3s") && stderr.contains("tracking deployment"),
        "{stderr}"
    );
    // No `status` before the ledger is read: status settles an unknown
    // release, and under load ECS may have finished by then.
    assert_unknown_then_settled(&sandbox, "the wait timed out while ECS rolled out", &second_live);
}

/// The newest release's record says `unknown` (with `reason`), and `status`
/// settles it from what ECS does: the rollout completes, and the release
/// replaces `before` as live. Returns the live line `status` then prints.
fn assert_unknown_then_settled(sandbox: &TestSandbox, reason: &str, before: &str) -> String {
    let unknown = sandbox.aws(&[
        "dynamodb",
        "scan",
        "--table-name",
        "guestbook-releases",
        "--query",
        "Items[?outcome.S=='unknown'].reason.S",
        "--output",
        "text",
    ]);
    assert!(unknown.contains(reason), "no unknown release ({reason}) in the ledger: {unknown}");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    loop {
        let (output, stdout, stderr) = run(sandbox.xtask().arg("status"));
        assert!(output.status.success(), "status failed:\n{}", crate::support::errors_first(&stderr));
        if stderr.contains("ECS says succeeded") {
            let live = stdout.lines().find(|line| line.contains(": live ")).unwrap_or_default();
            assert!(!live.is_empty() && !before.contains(live.split_whitespace().nth(2).unwrap_or(before)), "{stdout}");
            return live.to_owned();
        }
        assert!(
            stderr.contains("is still rolling out in ECS") && std::time::Instant::now() < deadline,
            "status did not settle the unknown release:\n{stdout}\n{stderr}"
        );
        std::thread::sleep(std::time::Duration::from_secs(2));
    }
}

/// Promotion, in a sandbox of its own (it runs beside the long test
/// above): a second environment in the same sandbox takes the digest live in
/// the first, unchanged, without a build; against the chain it is refused,
/// and `--dry-run` plans it.
#[test]
fn promotion_takes_the_digest_live_in_the_previous_environment_unchanged() {
    let sandbox = TestSandbox::up("sandboxpro");
    let (output, _, stderr) = run(sandbox.xtask().args(["infra", "apply", "--yes"]));
    assert!(output.status.success(), "infra apply failed:\n{}", crate::support::errors_first(&stderr));
    let deployed = deploy(&sandbox, &LocalImage::app("promote"));

    let mut config = std::fs::read_to_string(&sandbox.config_path).unwrap();
    config.push_str(&format!(
        "\n[environments.sandboxpqa]\nkind = \"aws\"\nregion = \"us-east-1\"\nstate_bucket = \"tfstate-sandbox\"\ns3_path_style = true\nregistry = \"{}\"\ntfvars = \"sandbox\"\npromote_from = \"sandboxpro\"\n",
        sandbox.registry
    ));
    std::fs::write(&sandbox.config_path, config).unwrap();
    let _qa_terraform = RemoveOnDrop(crate::support::project_root().join("target/terraform/sandboxpqa"));
    let (output, _, stderr) = run(sandbox.xtask().args(["--env", "sandboxpqa", "infra", "apply", "--yes"]));
    assert!(output.status.success(), "infra apply of sandboxpqa failed:\n{}", crate::support::errors_first(&stderr));

    let (output, _, stderr) =
        run(sandbox.xtask().args(["promote", "--from", "sandboxpqa", "--to", "sandboxpro", "--yes"]));
    assert!(!output.status.success(), "promotion against the chain was not refused");
    assert!(stderr.contains("sandboxpro takes releases from no environment"), "{stderr}");

    let (output, stdout, stderr) =
        run(sandbox.xtask().args(["--dry-run", "promote", "--from", "sandboxpro", "--to", "sandboxpqa", "--yes"]));
    assert!(output.status.success(), "dry-run promote failed:\n{}", crate::support::errors_first(&stderr));
    assert!(
        stdout.contains("would call: ecr.put_image ") && stdout.contains("would call: ecs.update_service "),
        "{stdout}"
    );
    assert!(stdout.contains("would check that sandboxpqa runs sha256:"), "{stdout}");
    let (output, _, stderr) =
        run(sandbox.xtask().args(["promote", "--from", "sandboxpro", "--to", "sandboxpqa", "--yes"]));
    assert!(output.status.success(), "promote failed:\n{}", crate::support::errors_first(&stderr));
    let digest = deployed.split_once('@').unwrap().1;
    assert!(stderr.contains(&format!("sandboxpqa runs {digest}, the digest live in sandboxpro")), "{stderr}");
    assert!(!stderr.contains("build and push the image\n==> push"), "promotion rebuilt or pushed:\n{stderr}");
    let (output, stdout, _) = run(sandbox.xtask().args(["--env", "sandboxpqa", "status"]));
    assert!(output.status.success());
    let live = stdout.lines().find(|line| line.contains(": live ")).unwrap_or_default();
    assert!(live.contains(digest) && stdout.contains("promotion"), "{stdout}");
}

/// A deploy that builds this checkout, in a sandbox of its own (it runs
/// beside the long test above): the build compiles incrementally, the
/// migrations run once, the same checkout again changes nothing, `--force`
/// rolls out without migrating, `--force-migrate` migrates.
#[test]
fn a_deploy_that_builds_migrates_once_and_the_same_checkout_again_changes_nothing() {
    let mut sandbox = TestSandbox::up("sandboxbld");
    let (output, _, stderr) = run(sandbox.xtask().args(["infra", "apply", "--yes"]));
    assert!(output.status.success(), "infra apply failed:\n{}", crate::support::errors_first(&stderr));
    // A deploy that builds this checkout (incrementally) runs the
    // migrations once; the next one with the same migrations against the
    // same database skips the task, and says why.
    let (output, _, stderr) = run(sandbox.xtask().arg("deploy").args(deploy_flags(&sandbox)));
    assert!(output.status.success(), "a deploy that builds failed:\n{}", crate::support::errors_first(&stderr));
    assert!(stderr.contains("(offline, incremental)") || stderr.contains("(incremental)"), "{stderr}");
    assert!(stderr.contains("migrations applied (exit code 0)"), "{stderr}");
    // The same checkout again: ECS runs this digest already, so nothing is
    // registered, rolled out, migrated or recorded.
    let (_, before) = live_image(&sandbox);
    let (output, stdout, stderr) = run(sandbox.xtask().arg("deploy").args(deploy_flags(&sandbox)));
    assert!(output.status.success(), "the same deploy again failed:\n{}", crate::support::errors_first(&stderr));
    assert!(stderr.contains("roll out: skipped, sandboxbld already runs"), "{stderr}");
    assert!(!stderr.contains("tracking deployment") && !stderr.contains("migration task"), "{stderr}");
    assert!(stdout.lines().last().unwrap_or_default().contains("/guestbook@sha256:"), "{stdout}");
    let (_, after) = live_image(&sandbox);
    assert_eq!(before, after, "a deploy that changed nothing was recorded");
    // --force rolls it out again; the migrations stay skipped, and say why.
    let (output, _, stderr) = run(sandbox.xtask().arg("deploy").args(deploy_flags(&sandbox)).arg("--force"));
    assert!(output.status.success(), "deploy --force failed:\n{}", crate::support::errors_first(&stderr));
    assert!(stderr.contains("tracking deployment ecs-svc/"), "{stderr}");
    assert!(
        stderr.contains("run the database migrations: skipped, app/migrations is what the last deploy applied"),
        "{stderr}"
    );
    assert!(!stderr.contains("migration task"), "{stderr}");
    let (output, _, stderr) = run(sandbox.xtask().arg("deploy").args(deploy_flags(&sandbox)).arg("--force-migrate"));
    assert!(output.status.success() && stderr.contains("migrations applied (exit code 0)"), "{stderr}");

    // Two --allow-dirty deploys of one commit with different content both
    // ship: each dirty tree's image gets a tag of its own (ECR keeps tags
    // immutable), and the second serves its own change. In a clone, so
    // this checkout stays as it is.
    let clone = testkit::ServiceDir::new("xtask-dirty-clone");
    let checkout = clone.path().join("project");
    let cloned = std::process::Command::new("git")
        .args(["clone", "--quiet"])
        .arg(crate::support::project_root())
        .arg(&checkout)
        .status()
        .unwrap();
    assert!(cloned.success(), "git clone of the project failed");
    let routes = checkout.join("app/src/routes.rs");
    let original = std::fs::read_to_string(&routes).unwrap();
    let mut tags = Vec::new();
    for heading in ["Guestbook (dirty one)", "Guestbook (dirty two)"] {
        let edited = original.replace("<h1>Guestbook</h1>", &format!("<h1>{heading}</h1>"));
        assert_ne!(edited, original);
        std::fs::write(&routes, edited).unwrap();
        // The clone would make an RDS CA of its own for its offline image;
        // the sandbox's RDS presents certificates of this checkout's.
        let (output, _, stderr) = run(sandbox
            .xtask()
            .env("XTASK_PROJECT_ROOT", &checkout)
            .env("XTASK_RDS_CA_BUNDLE", crate::support::project_root().join("target/sandbox-rds-ca/ca.pem"))
            .current_dir(&checkout)
            .arg("deploy")
            .args(deploy_flags(&sandbox)));
        assert!(
            output.status.success(),
            "the dirty deploy {heading:?} failed:\n{}",
            crate::support::errors_first(&stderr)
        );
        let tag = stderr
            .lines()
            .find_map(|line| line.strip_prefix("ok: built "))
            .and_then(|line| line.split_whitespace().next())
            .unwrap_or_else(|| panic!("no image built:\n{stderr}"))
            .to_owned();
        assert!(tag.contains("-dirty-"), "{tag}");
        tags.push(tag);
        let page = once_served(&sandbox, "/", std::time::Duration::from_secs(20));
        assert!(page.as_ref().is_some_and(|(_, body)| body.contains(heading)), "{heading:?} is not served: {page:?}");
    }
    assert_ne!(tags[0], tags[1], "two different dirty trees took one tag");
    // Down stops the database server behind the RDS instance too.
    sandbox.down();
}

/// A migration that fails in the task stops the deploy before anything
/// is rolled out: the container's own error line is shown, the exit code
/// and the stream named, the service keeps its task definition, and
/// nothing is recorded as live. The database is made unreachable the way
/// it can be on AWS: the RDS instance is stopped (the sandbox then stops
/// its PostgreSQL server), and the real image's `app migrate` cannot
/// connect.
#[test]
fn a_migration_that_fails_stops_the_deploy_before_the_rollout() {
    let sandbox = TestSandbox::up("sandboxmig");
    let (output, _, stderr) = run(sandbox.xtask().args(["infra", "apply", "--yes"]));
    assert!(output.status.success(), "infra apply failed:\n{}", crate::support::errors_first(&stderr));
    let service_task_definition = || {
        sandbox.aws(&[
            "ecs",
            "describe-services",
            "--cluster",
            "guestbook-sandboxmig",
            "--services",
            "guestbook-sandboxmig",
            "--query",
            "services[0].taskDefinition",
            "--output",
            "text",
        ])
    };
    let service_before = service_task_definition();
    let image = LocalImage::app("migfail");

    // The gate on (HIGH, the default) and an advisory against a locked
    // crate: the deploy stops before anything is pushed, and the attempt is
    // in the ledger as failed, with the reason.
    let vulnerable = crate::push::advisory_db(sandbox.dir.path(), ">= 999.0.0");
    let (output, _, stderr) = run(sandbox
        .xtask()
        .args(["deploy", "--yes", "--allow-dirty", "--image", &image.reference, "--advisory-db"])
        .arg(&vulnerable));
    assert!(!output.status.success(), "a deploy with a vulnerable dependency succeeded:\n{stderr}");
    assert!(stderr.contains("RUSTSEC-2099-0042") && stderr.contains("was NOT pushed"), "{stderr}");
    let (output, stdout, stderr) = run(sandbox.xtask().arg("status"));
    assert!(output.status.success(), "status failed:\n{}", crate::support::errors_first(&stderr));
    let attempt = stdout.lines().find(|line| line.contains("FAILED")).unwrap_or_else(|| panic!("{stdout}"));
    assert!(attempt.contains("(no image pushed)") && attempt.contains("deploy"), "{stdout}");
    assert!(!stdout.contains(": live "), "a failed deploy is live:\n{stdout}");

    sandbox.aws(&["rds", "stop-db-instance", "--db-instance-identifier", "guestbook-sandboxmig"]);
    let (output, _, stderr) =
        run(sandbox.xtask().arg("deploy").args(deploy_flags(&sandbox)).args(["--image", &image.reference]));
    assert!(!output.status.success(), "a deploy whose migration failed succeeded:\n{stderr}");
    assert!(stderr.contains("  migrate | error: could not connect to the database"), "{stderr}");
    assert!(stderr.contains("the migration task exited with 1: Essential container in task exited"), "{stderr}");
    assert!(stderr.contains("nothing was rolled out"), "{stderr}");
    assert!(!stderr.contains("tracking deployment"), "a rollout started:\n{stderr}");
    let service_after = service_task_definition();
    assert_eq!(service_after, service_before, "the service changed after a failed migration");
    let (output, stdout, _) = run(sandbox.xtask().arg("status"));
    assert!(!stdout.contains(": live "), "a failed deploy is live:\n{stdout} ({})", output.status);
}

struct RemoveOnDrop(std::path::PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A deploy killed with SIGKILL leaves its lock behind: the next deploy
/// names the holder, its host and its age; `unlock` shows the same and
/// breaks it; and an abandoned lease also ends by itself (a short lease
/// here, XTASK_LOCK_LEASE_SECONDS; 120 s by default).
#[test]
fn a_killed_deploy_leaves_a_lock_that_names_its_holder_and_unlock_or_its_lease_frees() {
    use std::os::unix::process::CommandExt;
    let sandbox = TestSandbox::up("sandboxunlock");
    let (output, _, stderr) = run(sandbox.xtask().args(["infra", "apply", "--stage", "repositories", "--yes"]));
    assert!(
        output.status.success(),
        "applying the repositories stage failed:\n{}",
        crate::support::errors_first(&stderr)
    );
    // Named by digest, so nothing is built or pushed before the lock (the
    // lock comes after the push), and never run (the deploys stop at the
    // lock, or fail before the migrations: no environment stage here), so
    // it need not exist.
    let image = format!("127.0.0.1:9/guestbook@sha256:{}", "0".repeat(64));

    let (output, _, stderr) = run(sandbox.xtask().args(["unlock", "--yes"]));
    assert!(output.status.success() && stderr.contains("sandboxunlock is not locked"), "{stderr}");

    let kill_after_lock = |lease_seconds: &str| {
        let mut holder = sandbox
            .xtask()
            .env("XTASK_LOCK_LEASE_SECONDS", lease_seconds)
            .arg("deploy")
            .args(deploy_flags(&sandbox))
            .args(["--image", &image])
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .process_group(0)
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(holder.stderr.take().unwrap()).lines();
        // The step after the lock has begun: the lock is taken.
        let log = read_until(&mut lines, "apply the infrastructure");
        assert!(log.contains("take the deploy lock"), "{log}");
        // SIGKILL: no Ctrl-C handler runs, the lock stays.
        unsafe { libc_kill(-(holder.id() as i32), 9) };
        let _ = holder.wait();
    };
    kill_after_lock("120");
    let deploy = || {
        // --skip-infra: past the lock the deploy may fail fast (this
        // sandbox has no environment stage); only the lock matters here.
        run(sandbox.xtask().arg("deploy").args(deploy_flags(&sandbox)).args(["--skip-infra", "--image", &image]))
    };
    let (output, _, stderr) = deploy();
    assert!(!output.status.success(), "a deploy took a lock another deploy holds");
    assert!(stderr.contains("is locked by another deploy") && stderr.contains(" ago)"), "{stderr}");
    assert!(stderr.contains("cargo xtask unlock --env sandboxunlock"), "{stderr}");
    // Without a terminal, unlock asks for --yes; with it, it breaks the lock.
    let (output, _, stderr) = run(sandbox.xtask().arg("unlock").stdin(Stdio::null()));
    assert!(!output.status.success() && stderr.contains("--yes"), "{stderr}");
    assert!(stderr.contains("held by") && stderr.contains(" since "), "unlock does not show the holder:\n{stderr}");
    let (output, _, stderr) = run(sandbox.xtask().args(["unlock", "--yes"]));
    assert!(output.status.success() && stderr.contains("is broken"), "{stderr}");
    let (output, _, stderr) = run(sandbox.xtask().args(["unlock", "--yes"]));
    assert!(output.status.success() && stderr.contains("not locked"), "{stderr}");

    // A short lease, not renewed once its holder is dead, ends by itself.
    kill_after_lock("2");
    std::thread::sleep(std::time::Duration::from_secs(3));
    let (_, _, stderr) = deploy();
    assert!(!stderr.contains("is locked by another deploy"), "an expired lease still held the lock:\n{stderr}");
    assert!(stderr.contains("take the deploy lock"), "{stderr}");
}

unsafe extern "C" {
    #[link_name = "kill"]
    fn libc_kill(pid: i32, signal: i32) -> i32;
}

/// Releases that cannot serve, against real containers: one whose app
/// exits at start (it cannot bind its address) and one that starts but
/// never answers the load balancer's health check (it listens on the
/// container's loopback only). For each, the deployment circuit breaker
/// fails the deployment after 3 stopped tasks and rolls the service back;
/// the deploy exits non-zero naming why the tasks stopped (the exit code,
/// or the failed health check) and the container's last log lines; the
/// previous release stays live, in `status` and in what ECS runs.
#[test]
fn a_release_that_crashes_or_fails_its_health_check_is_rolled_back_by_the_circuit_breaker() {
    let sandbox = TestSandbox::up("sandboxcb");
    let (output, _, stderr) = run(sandbox.xtask().args(["infra", "apply", "--yes"]));
    assert!(output.status.success(), "infra apply failed:\n{}", crate::support::errors_first(&stderr));
    let good = deploy(&sandbox, &LocalImage::app("cb-good"));
    let runs = || {
        sandbox.aws(&[
            "ecs",
            "describe-services",
            "--cluster",
            "guestbook-sandboxcb",
            "--services",
            "guestbook-sandboxcb",
            "--query",
            "services[0].taskDefinition",
            "--output",
            "text",
        ])
    };
    let good_revision = runs();

    let crashing = LocalImage::app_with("cb-crash", &["ENV BIND_ADDR=192.0.2.123"]);
    let unhealthy = LocalImage::app_with("cb-unhealthy", &["ENV BIND_ADDR=127.0.0.1"]);
    for (image, why, log_line) in [
        (
            &crashing,
            "Essential container in task exited; container guestbook exited 1",
            "could not listen on 192.0.2.123:8080",
        ),
        (&unhealthy, "Task failed ELB health checks in (target-group ", "\"addr\":\"127.0.0.1:8080\""),
    ] {
        let (output, stdout, stderr) =
            run(sandbox.xtask().arg("deploy").args(deploy_flags(&sandbox)).args(["--image", &image.reference]));
        assert!(!output.status.success(), "a deploy of {} succeeded:\n{stderr}", image.reference);
        assert!(
            stderr.contains("failed and ECS rolled the service back to") && stderr.contains("circuit breaker"),
            "{stderr}"
        );
        assert!(stderr.contains(&format!("The last task stopped: {why}")), "the stop reason is not named:\n{stderr}");
        assert!(stderr.contains("the last log lines of task ") && stderr.contains(log_line), "{stderr}");
        // stdout ends with what serves now: the release ECS went back to.
        assert_eq!(stdout.lines().last(), Some(good.as_str()), "{stdout}");
        assert!(stderr.contains(&format!("ECS rolled the service back: {good} serves again")), "{stderr}");
        let (live, history) = live_image(&sandbox);
        assert!(live.contains(&good), "the previous release is not live after the rollback:\n{history}");
        assert_eq!(runs(), good_revision, "ECS does not run the previous revision after the rollback");
    }
}

/// EC2 capacity (`capacity = "ec2"`: an Auto Scaling group as the
/// cluster's capacity provider) behind HTTPS: the migration task runs with
/// the service's capacity provider strategy on a container instance of the
/// group (the sandbox registers the group's instances as their ECS agents
/// would), and the service's task serves the release over TLS with a
/// certificate of a CA the test makes, imported into ACM as a team imports
/// its own (`certificate_arn`). The smoke check and the functional tests
/// trust that CA through `SSL_CERT_FILE`, refuse the server without it, and
/// port 80 redirects to HTTPS.
#[test]
fn a_deploy_with_migrations_runs_on_ec2_capacity_and_serves_https() {
    let mut sandbox = TestSandbox::up("sandboxec2");
    let ca = testkit::TestCa::new("xtask-sandboxec2-ca", "IP:127.0.0.1, DNS:localhost");
    let file = |name: &str| format!("fileb://{}", ca.path(name).display());
    let certificate = sandbox.aws(&[
        "acm",
        "import-certificate",
        "--certificate",
        &file("server.pem"),
        "--private-key",
        &file("server.key"),
        "--certificate-chain",
        &file("ca.pem"),
        "--query",
        "CertificateArn",
        "--output",
        "text",
    ]);
    sandbox.exports.push(("TF_VAR_certificate_arn".to_owned(), certificate.trim().to_owned()));
    sandbox.exports.push(("SSL_CERT_FILE".to_owned(), ca.path("ca.pem").display().to_string()));
    let xtask = || {
        let mut command = sandbox.xtask();
        command.env("TF_VAR_capacity", "ec2");
        command
    };
    let (output, _, stderr) = run(xtask().args(["infra", "apply", "--yes"]));
    assert!(output.status.success(), "infra apply on EC2 capacity failed:\n{}", crate::support::errors_first(&stderr));
    for resource in ["aws_autoscaling_group.ecs[0]", "aws_ecs_capacity_provider.ec2[0]", "aws_lb_listener.https[0]"] {
        assert!(stderr.contains(resource), "{resource} not applied:\n{stderr}");
    }
    let image = LocalImage::app("ec2");
    let (output, stdout, stderr) =
        run(xtask().arg("deploy").args(deploy_flags(&sandbox)).args(["--image", &image.reference]));
    assert!(output.status.success(), "deploy on EC2 capacity failed:\n{}", crate::support::errors_first(&stderr));
    assert!(
        stderr.contains("migrations applied (exit code 0)") && stderr.contains("smoke check GET /version"),
        "{stderr}"
    );
    assert!(stdout.lines().last().unwrap_or_default().contains("/guestbook@sha256:"), "{stdout}");
    let task = stderr
        .lines()
        .find_map(|line| line.trim().strip_prefix("migration task ").and_then(|rest| rest.split_whitespace().next()))
        .unwrap_or_else(|| panic!("no migration task in:\n{stderr}"));
    let placed = sandbox.aws(&[
        "ecs",
        "describe-tasks",
        "--cluster",
        "guestbook-sandboxec2",
        "--tasks",
        task,
        "--query",
        "tasks[0].[launchType, containerInstanceArn]",
        "--output",
        "text",
    ]);
    assert!(
        placed.starts_with("EC2") && placed.contains(":container-instance/"),
        "the migration did not run on EC2: {placed}"
    );

    // The smoke check above passed over HTTPS; every route does too, and the
    // page carries HSTS (the app sees X-Forwarded-Proto: https).
    let balancer =
        sandbox.aws(&["elbv2", "describe-load-balancers", "--query", "LoadBalancers[0].DNSName", "--output", "text"]);
    let url = format!("https://{}", balancer.trim());
    let (output, _, stderr) = run(xtask().args(["functional-test", "--no-browser", "--url", &url]));
    assert!(
        output.status.success(),
        "the functional tests over HTTPS failed:\n{}",
        crate::support::errors_first(&stderr)
    );
    assert!(stderr.contains("(and HSTS over HTTPS)"), "{stderr}");
    // Without the CA the client refuses the server.
    let (output, _, stderr) =
        run(xtask().env_remove("SSL_CERT_FILE").args(["functional-test", "--no-browser", "--url", &url]));
    assert!(!output.status.success(), "a server of an unknown CA was trusted:\n{stderr}");
    assert!(stderr.contains("the TLS handshake failed"), "{stderr}");
    // Plain HTTP (port 80's listener) is redirected to HTTPS, path kept.
    let port = balancer.trim().rsplit(':').next().unwrap_or_default();
    let head = crate::support::http_head(port.parse().unwrap(), "/version?check=1");
    assert!(head.starts_with("HTTP/1.1 301") || head.starts_with("HTTP/1.0 301"), "{head}");
    assert!(head.contains(&format!("Location: https://127.0.0.1:{port}/version?check=1\r\n")), "{head}");
}
