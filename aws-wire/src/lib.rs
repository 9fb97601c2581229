//! The wire between `xtask` and `xtask-aws`: one JSON object per line, a
//! [`Request`] on the child's stdin, its [`Response`] on its stdout.
//!
//! `{"id":1,"op":"ecr.describe_images","params":{...}}` →
//! `{"id":1,"ok":{...}}` or `{"id":1,"error":{"code":"...","message":"...","throttling":false}}`
//!
//! Both sides write and read the lines through these types, so the envelope
//! and [`ApiError`] are defined once. The JSON is built and taken apart by
//! hand rather than with serde's derive: the derive would be xtask-aws's
//! only user of serde_derive. Nothing here may depend on the AWS SDK:
//! xtask's everyday build compiles this crate.

use std::fmt;

use serde_json::{Value, json};

/// One call: the operation (`service.operation_name`, as in
/// `ecr.describe_images`) and its parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    pub id: u64,
    pub op: String,
    pub params: Value,
}

/// The answer to the request with the same `id`: the operation's JSON
/// result, or the error AWS (or `xtask-aws`) gave.
#[derive(Debug, Clone, PartialEq)]
pub struct Response {
    pub id: u64,
    pub result: Result<Value, ApiError>,
}

/// An AWS API error as xtask sees it: the AWS error code (or one of
/// xtask-aws's own, such as `TransportError` or `BadRequest`), its message,
/// and whether it asks the caller to slow down.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub code: String,
    pub message: String,
    pub throttling: bool,
}

impl Request {
    /// The request as one line of JSON, without the newline.
    pub fn to_line(&self) -> String {
        json!({ "id": self.id, "op": self.op, "params": self.params }).to_string()
    }

    /// Reads a request line; the error says what is wrong with it. Missing
    /// `params` are null.
    pub fn parse(line: &str) -> Result<Request, String> {
        let mut value: Value = serde_json::from_str(line).map_err(|err| err.to_string())?;
        let id = value["id"].as_u64().ok_or("missing numeric field `id`")?;
        let op = value["op"].as_str().ok_or("missing string field `op`")?.to_owned();
        let params = value.get_mut("params").map(Value::take).unwrap_or(Value::Null);
        Ok(Request { id, op, params })
    }
}

impl Response {
    /// The response as one line of JSON, without the newline.
    pub fn to_line(&self) -> String {
        let value = match &self.result {
            Ok(ok) => json!({ "id": self.id, "ok": ok }),
            Err(err) => json!({
                "id": self.id,
                "error": { "code": err.code, "message": err.message, "throttling": err.throttling },
            }),
        };
        value.to_string()
    }

    /// Reads a response line. Leniently: a missing `ok` is null, an error
    /// without a code is `Unknown`, one without a message or `throttling`
    /// has an empty message and is not throttling.
    pub fn parse(line: &str) -> Result<Response, serde_json::Error> {
        let mut value: Value = serde_json::from_str(line)?;
        let id = value["id"].as_u64().unwrap_or(0);
        let result = match value.get("error") {
            Some(error) => Err(ApiError {
                code: error["code"].as_str().unwrap_or("Unknown").to_owned(),
                message: error["message"].as_str().unwrap_or("").to_owned(),
                throttling: error["throttling"].as_bool().unwrap_or(false),
            }),
            None => Ok(value.get_mut("ok").map(Value::take).unwrap_or(Value::Null)),
        };
        Ok(Response { id, result })
    }
}

impl ApiError {
    /// An error that is not throttling.
    pub fn new(code: &str, message: impl Into<String>) -> ApiError {
        ApiError { code: code.to_owned(), message: message.into(), throttling: false }
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl std::error::Error for ApiError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_and_responses_survive_the_wire() {
        let request = Request { id: 7, op: "ecr.describe_images".to_owned(), params: json!({ "repository": "app" }) };
        assert_eq!(Request::parse(&request.to_line()).unwrap(), request);
        let ok = Response { id: 7, result: Ok(json!({ "digest": "sha256:0" })) };
        assert_eq!(Response::parse(&ok.to_line()).unwrap(), ok);
        let throttled =
            ApiError { code: "ThrottlingException".to_owned(), message: "slow down".to_owned(), throttling: true };
        let error = Response { id: 8, result: Err(throttled) };
        assert_eq!(Response::parse(&error.to_line()).unwrap(), error);
    }

    #[test]
    fn the_lines_are_the_documented_envelope() {
        let line = |text: String| -> Value {
            assert!(!text.contains('\n'), "{text}");
            serde_json::from_str(&text).unwrap()
        };
        let request = Request { id: 1, op: "ecs.run_task".to_owned(), params: json!({}) };
        assert_eq!(line(request.to_line()), json!({ "id": 1, "op": "ecs.run_task", "params": {} }));
        let ok = Response { id: 1, result: Ok(json!([1])) };
        assert_eq!(line(ok.to_line()), json!({ "id": 1, "ok": [1] }));
        let error = Response { id: 1, result: Err(ApiError::new("BadRequest", "no")) };
        assert_eq!(
            line(error.to_line()),
            json!({ "id": 1, "error": { "code": "BadRequest", "message": "no", "throttling": false } })
        );
    }

    #[test]
    fn bad_requests_say_what_is_missing_and_responses_are_read_leniently() {
        assert_eq!(Request::parse(r#"{"op":"ecr.x"}"#).unwrap_err(), "missing numeric field `id`");
        assert_eq!(Request::parse(r#"{"id":1}"#).unwrap_err(), "missing string field `op`");
        assert_eq!(Request::parse(r#"{"id":1,"op":"ecr.x"}"#).unwrap().params, Value::Null);
        assert!(Request::parse("not json").is_err());
        assert_eq!(Response::parse(r#"{"id":2}"#).unwrap().result, Ok(Value::Null));
        let error = Response::parse(r#"{"id":2,"error":{}}"#).unwrap().result.unwrap_err();
        assert_eq!(error, ApiError { code: "Unknown".to_owned(), message: String::new(), throttling: false });
    }
}
