//! `xtask-aws`: answers AWS API requests for xtask, one JSON object per line.
//!
//! xtask keeps all the logic (what to call, when, how to judge the answer)
//! and stays cheap to compile; this process only translates a request into an
//! AWS SDK call and the response back into JSON. Requests are values, so
//! `--dry-run` can print them and tests can script the answers.
//!
//! Protocol, on stdin/stdout: the lines of the `aws_wire` crate, which xtask
//! shares (`Request` in, `Response` out, errors as `ApiError`).

mod dynamodb;
mod ecr;
mod ecs;
mod logs;

use std::io::{BufRead, Write};

use anyhow::{Context, Result};
use aws_smithy_http_client::tls::{self, rustls_provider::CryptoMode};
pub use aws_wire::ApiError;
use aws_wire::{Request, Response};
use serde_json::{Value, json};

/// An SDK failure as xtask sees it. `SdkError` is the same smithy type in
/// every aws-sdk crate, so one conversion serves ECR, ECS, DynamoDB and Logs
/// (`.map_err(sdk_error)`; `ApiError` is the wire's type, so no `From`).
pub fn sdk_error<E, R>(err: aws_sdk_ecr::error::SdkError<E, R>) -> ApiError
where
    E: aws_sdk_ecr::error::ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
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
        return transport_error(message);
    }
    ApiError::new(&code, message)
}

/// An error without an AWS error body (a proxy's HTML page, a dropped
/// connection): the SDK's debug text of the raw response is long and
/// unhelpful, so keep its first sentence.
fn transport_error(text: String) -> ApiError {
    let short = text.split(" (ResponseError").next().unwrap_or(&text);
    let short: String = short.chars().take(300).collect();
    ApiError::new("TransportError", short)
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
                // Throttling is judged here, from the code, for every error.
                let result = dispatch(&clients, &request.op, &request.params)
                    .await
                    .map_err(|err| ApiError { throttling: is_throttling(&err.code), ..err });
                Response { id: request.id, result }
            }
            Err(err) => Response { id: 0, result: Err(ApiError::new("BadRequest", err)) },
        };
        writeln!(stdout, "{}", response.to_line()).context("writing a response")?;
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
