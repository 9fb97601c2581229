//! The request/response protocol against a real moto server.

use std::{
    io::{BufRead, BufReader, Write},
    process::{Command, Stdio},
};

use serde_json::{Value, json};

#[test]
fn answers_ecr_and_ecs_requests_from_moto() {
    let moto = testkit::Moto::start();
    testkit::assert_loopback_endpoint(&moto.endpoint_url());
    let mut child = Command::new(env!("CARGO_BIN_EXE_xtask-aws"))
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .envs(moto.aws_env())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("starting xtask-aws");
    let mut stdin = child.stdin.take().unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut call = |id: u64, op: &str, params: Value| -> Value {
        writeln!(stdin, "{}", json!({ "id": id, "op": op, "params": params })).unwrap();
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        let response: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(response["id"], id, "{response}");
        response
    };

    let token = call(1, "ecr.get_authorization_token", json!({}));
    let token = token["ok"]["token"].as_str().expect("a token");
    assert!(!token.is_empty());

    let missing = call(2, "ecr.describe_repository", json!({ "repository": "does-not-exist" }));
    assert_eq!(missing["error"]["code"], "RepositoryNotFoundException", "{missing}");

    let bad = call(3, "ecr.describe_image", json!({ "repository": "x" }));
    assert_eq!(bad["error"]["code"], "BadRequest", "{bad}");

    let unknown = call(4, "s3.list_buckets", json!({}));
    assert_eq!(unknown["error"]["code"], "UnknownOperation", "{unknown}");

    let no_service = call(5, "ecs.describe_service", json!({ "cluster": "nope", "service": "nope" }));
    assert!(no_service["error"]["code"].as_str().is_some_and(|code| !code.is_empty()), "{no_service}");

    drop(stdin);
    assert!(child.wait().unwrap().success());
}
