//! CloudWatch Logs: what a one-off task (the migrations) printed, read
//! while it runs so the deploy can show it.

use serde_json::{Value, json};

use crate::{ApiError, optional_string, sdk_error, string_param};

pub async fn call(client: &aws_sdk_cloudwatchlogs::Client, name: &str, params: &Value) -> Result<Value, ApiError> {
    match name {
        "get_log_events" => {
            // From the start of the stream, then onwards from `next_token`.
            let group = string_param(params, "log_group")?;
            let stream = string_param(params, "log_stream")?;
            let output = client
                .get_log_events()
                .log_group_name(group)
                .log_stream_name(stream)
                .start_from_head(true)
                .set_next_token(optional_string(params, "next_token"))
                .send()
                .await
                .map_err(sdk_error)?;
            let events: Vec<Value> = output
                .events()
                .iter()
                .map(|event| json!({ "timestamp": event.timestamp(), "message": event.message() }))
                .collect();
            Ok(json!({ "events": events, "next_token": output.next_forward_token() }))
        }
        _ => Err(ApiError::new("UnknownOperation", format!("xtask-aws does not know logs.{name}"))),
    }
}
