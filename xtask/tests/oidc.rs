//! The GitHub deploy role of `infra/repositories`: its trust policy, as
//! Terraform plans it against the sandbox's moto, admits only this
//! repository's main branch and its deploy environments.

use std::process::Command;

use serde_json::Value;

use crate::support::project_root;

#[test]
fn the_deploy_role_trusts_only_main_and_the_deploy_environments() {
    let planned = plan_repositories_stage(&[
        "-var=github_repository=example/rust-path-to-production",
        "-var=github_environments=[\"dev\",\"qa\"]",
        "-var=terraform_state_bucket=tfstate-test",
    ]);
    let role = planned_resource(&planned, "aws_iam_role.github_deploy[0]").expect("no deploy role planned");
    let trust: Value = serde_json::from_str(role["assume_role_policy"].as_str().unwrap()).unwrap();
    let statements = trust["Statement"].as_array().unwrap();
    assert_eq!(statements.len(), 1, "{trust}");
    let statement = &statements[0];
    assert_eq!(statement["Effect"], "Allow");
    assert_eq!(statement["Action"], "sts:AssumeRoleWithWebIdentity");
    let provider = statement["Principal"]["Federated"].as_str().unwrap();
    assert!(provider.ends_with(":oidc-provider/token.actions.githubusercontent.com"), "{provider}");
    // Exact matches only: no StringLike, no wildcard a fork or a pull
    // request could match.
    let conditions = statement["Condition"].as_object().unwrap();
    assert_eq!(conditions.keys().collect::<Vec<_>>(), ["StringEquals"], "{trust}");
    let equals = &conditions["StringEquals"];
    assert_eq!(equals["token.actions.githubusercontent.com:aud"], "sts.amazonaws.com", "{trust}");
    assert_eq!(
        equals["token.actions.githubusercontent.com:sub"],
        serde_json::json!([
            "repo:example/rust-path-to-production:ref:refs/heads/main",
            "repo:example/rust-path-to-production:environment:dev",
            "repo:example/rust-path-to-production:environment:qa",
        ]),
        "{trust}"
    );
    assert!(!trust.to_string().contains('*'), "{trust}");
    let provider = planned_resource(&planned, "aws_iam_openid_connect_provider.github[0]").expect("no OIDC provider");
    assert_eq!(provider["url"], "https://token.actions.githubusercontent.com");
    assert_eq!(provider["client_id_list"], serde_json::json!(["sts.amazonaws.com"]));

    // Without a repository nothing of it exists.
    let disabled = plan_repositories_stage(&[]);
    assert!(planned_resource(&disabled, "aws_ecr_repository.app").is_some(), "the stage itself is planned");
    assert!(planned_resource(&disabled, "aws_iam_role.github_deploy[0]").is_none());
    assert!(planned_resource(&disabled, "aws_iam_openid_connect_provider.github[0]").is_none());
}

/// `terraform show -json` of a plan of infra/repositories with these
/// variables, against a moto server on loopback: a copy of the stage with a
/// local backend, providers from the machine's mirror.
fn plan_repositories_stage(variables: &[&str]) -> Value {
    let moto = testkit::Moto::start();
    testkit::assert_loopback_endpoint(&moto.endpoint_url());
    let dir = testkit::ServiceDir::new("xtask-repositories-plan");
    let stage = project_root().join("infra/repositories");
    for entry in std::fs::read_dir(&stage).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|extension| extension == "tf") {
            std::fs::copy(&path, dir.path().join(path.file_name().unwrap())).unwrap();
        }
    }
    // The stage's `backend "s3" {}` is configured by `cargo xtask infra`;
    // this plan needs no state.
    std::fs::write(dir.path().join("backend_override.tf"), "terraform {\n  backend \"local\" {}\n}\n").unwrap();
    std::fs::write(dir.path().join("terraformrc"), crate::sandbox::terraform_cli_config()).unwrap();
    let terraform = |args: &[&str]| {
        let mut command = Command::new("terraform");
        command
            .current_dir(dir.path())
            .args(args)
            .env("TF_CLI_CONFIG_FILE", dir.path().join("terraformrc"))
            .env("TF_IN_AUTOMATION", "1")
            .env_remove("AWS_PROFILE")
            .env_remove("AWS_SESSION_TOKEN")
            .envs(moto.aws_env());
        let output = command.output().unwrap_or_else(|err| panic!("running terraform {args:?}: {err}"));
        assert!(
            output.status.success(),
            "terraform {args:?} failed:\n{}",
            String::from_utf8_lossy(&[output.stdout.as_slice(), output.stderr.as_slice()].concat())
        );
        output.stdout
    };
    terraform(&["init", "-input=false", "-no-color"]);
    let mut plan = vec!["plan", "-input=false", "-no-color", "-lock=false", "-out=plan.bin", "-var=aws_max_retries=2"];
    plan.extend_from_slice(variables);
    terraform(&plan);
    serde_json::from_slice(&terraform(&["show", "-json", "plan.bin"])).unwrap()
}

/// The planned values of one resource of the root module, by address.
fn planned_resource(plan: &Value, address: &str) -> Option<Value> {
    plan["planned_values"]["root_module"]["resources"]
        .as_array()?
        .iter()
        .find(|resource| resource["address"] == address)
        .map(|resource| resource["values"].clone())
}
