//! `xtask-aws`: answers AWS API requests for xtask, one JSON object per line.
//!
//! xtask keeps all the logic (what to call, when, how to judge the answer)
//! and stays cheap to compile; this process only translates a request into an
//! AWS SDK call and the response back into JSON. Requests are values, so
//! `--dry-run` can print them and tests can script the answers.
//!
//! Protocol, on stdin/stdout:
//! `{"id":1,"op":"ecr.describe_images","params":{...}}` →
//! `{"id":1,"ok":{...}}` or `{"id":1,"error":{"code":"...","message":"...","throttling":false}}`

mod dynamodb;
mod ecr;
mod ecs;
mod logs;

use std::io::{BufRead, Write};

use anyhow::{Context, Result};
use aws_smithy_http_client::tls::{self, rustls_provider::CryptoMode};
use serde_json::{Value, json};

/// One request line. Read by hand rather than with serde's derive: the
/// derive would be the only user of serde_derive and a second `syn` in this
/// crate's cold build.
#[derive(Debug)]
struct Request {
    id: u64,
    op: String,
    params: Value,
}

impl Request {
    fn parse(line: &str) -> Result<Request, String> {
        let mut value: Value = serde_json::from_str(line).map_err(|err| err.to_string())?;
        let id = value["id"].as_u64().ok_or("missing numeric field `id`")?;
        let op = value["op"].as_str().ok_or("missing string field `op`")?.to_owned();
        let params = value.get_mut("params").map(Value::take).unwrap_or(Value::Null);
        Ok(Request { id, op, params })
    }
}

/// An API failure as xtask sees it. `SdkError` is the same smithy type in
/// every aws-sdk crate, so one conversion serves ECR, ECS, DynamoDB and Logs.
#[derive(Debug)]
pub struct ApiError {
    pub code: String,
    pub message: String,
}

impl ApiError {
    pub fn new(code: &str, message: impl Into<String>) -> ApiError {
        ApiError { code: code.to_owned(), message: message.into() }
    }

    /// An error without an AWS error body (a proxy's HTML page, a dropped
    /// connection): the SDK's debug text of the raw response is long and
    /// unhelpful, so keep its first sentence.
    pub fn transport(text: String) -> ApiError {
        let short = text.split(" (ResponseError").next().unwrap_or(&text);
        let short: String = short.chars().take(300).collect();
        ApiError { code: "TransportError".to_owned(), message: short }
    }
}

impl<E, R> From<aws_sdk_ecr::error::SdkError<E, R>> for ApiError
where
    E: aws_sdk_ecr::error::ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    fn from(err: aws_sdk_ecr::error::SdkError<E, R>) -> ApiError {
        use aws_sdk_ecr::error::ProvideErrorMetadata;
        let code = err.code().unwrap_or("").to_owned();
        let message = err.message().map(str::to_owned).unwrap_or_else(|| {
            // Transport errors carry their cause in the source chain.
            let mut text = err.to_string();
            let mut source = std::error::Error::source(&err);
            while let Some(cause) = source {
                text.push_str(": ");
                text.push_str(&cause.to_string());
                source = cause.source();
            }
            text
        });
        if code.is_empty() {
            return ApiError::transport(message);
        }
        ApiError { code, message }
    }
}

pub struct Clients {
    pub dynamodb: aws_sdk_dynamodb::Client,
    pub ecr: aws_sdk_ecr::Client,
    pub ecs: aws_sdk_ecs::Client,
    pub logs: aws_sdk_cloudwatchlogs::Client,
}

fn main() -> Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().context("starting tokio")?;
    runtime.block_on(serve())
}

async fn serve() -> Result<()> {
    let http_client =
        aws_smithy_http_client::Builder::new().tls_provider(tls::Provider::Rustls(CryptoMode::Ring)).build_https();
    let config = aws_config::defaults(aws_config::BehaviorVersion::latest()).http_client(http_client).load().await;
    let clients = Clients {
        dynamodb: aws_sdk_dynamodb::Client::new(&config),
        ecr: aws_sdk_ecr::Client::new(&config),
        ecs: aws_sdk_ecs::Client::new(&config),
        logs: aws_sdk_cloudwatchlogs::Client::new(&config),
    };

    let stdin = std::io::stdin();
    let mut stdout = std::io::stdout().lock();
    for line in stdin.lock().lines() {
        let line = line.context("reading a request from stdin")?;
        if line.trim().is_empty() {
            continue;
        }
        let response = match Request::parse(&line) {
            Ok(request) => {
                let result = dispatch(&clients, &request.op, &request.params).await;
                match result {
                    Ok(ok) => json!({ "id": request.id, "ok": ok }),
                    Err(err) => json!({
                        "id": request.id,
                        "error": {
                            "code": err.code,
                            "message": err.message,
                            "throttling": is_throttling(&err.code),
                        }
                    }),
                }
            }
            Err(err) => {
                json!({ "id": 0, "error": { "code": "BadRequest", "message": err.to_string(), "throttling": false } })
            }
        };
        serde_json::to_writer(&mut stdout, &response).context("writing a response")?;
        stdout.write_all(b"\n").context("writing a response")?;
        stdout.flush().context("flushing a response")?;
    }
    Ok(())
}

async fn dispatch(clients: &Clients, op: &str, params: &Value) -> Result<Value, ApiError> {
    match op.split_once('.') {
        Some(("ecr", name)) => ecr::call(&clients.ecr, name, params).await,
        Some(("ecs", name)) => ecs::call(&clients.ecs, name, params).await,
        Some(("dynamodb", name)) => dynamodb::call(&clients.dynamodb, name, params).await,
        Some(("logs", name)) => logs::call(&clients.logs, name, params).await,
        _ => Err(ApiError::new("UnknownOperation", format!("xtask-aws does not know {op:?}"))),
    }
}

fn is_throttling(code: &str) -> bool {
    matches!(
        code,
        "Throttling"
            | "ThrottlingException"
            | "ThrottledException"
            | "RequestLimitExceeded"
            | "TooManyRequestsException"
    )
}

/// A required string parameter.
pub fn string_param<'a>(params: &'a Value, name: &str) -> Result<&'a str, ApiError> {
    params
        .get(name)
        .and_then(Value::as_str)
        .ok_or_else(|| ApiError::new("BadRequest", format!("missing string parameter {name:?}")))
}

pub fn optional_string(params: &Value, name: &str) -> Option<String> {
    params.get(name).and_then(Value::as_str).map(str::to_owned)
}

pub fn epoch_seconds(date: Option<&aws_smithy_types::DateTime>) -> Value {
    date.map(|date| json!(date.secs())).unwrap_or(Value::Null)
}
