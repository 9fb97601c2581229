//! The boundary with AWS as values: an operation name and JSON parameters
//! in, JSON or an [`ApiError`] out. Deciders (the rollout watcher, the
//! ledger's store, the push gate) take `&mut dyn AwsApi`, so tests answer
//! them from a script and `--dry-run` can print what would be sent.

/// An AWS API error as the caller sees it: the wire's type, which
/// `xtask-aws` writes (see `client`).
pub use aws_wire::ApiError;
use serde_json::Value;

/// Something that answers AWS requests: the real `xtask-aws` process, or a
/// script in tests.
pub trait AwsApi {
    fn call(&mut self, op: &str, params: Value) -> Result<Value, ApiError>;
}

/// Operations that change nothing; `--dry-run` still performs them so the
/// plan it prints is based on the real state.
pub fn is_read_only(op: &str) -> bool {
    let name = op.split_once('.').map_or(op, |(_, name)| name);
    name.starts_with("describe_")
        || name.starts_with("list_")
        || name.starts_with("get_")
        || name == "batch_get_image"
        // DynamoDB's Query reads a partition (the release history).
        || name == "query"
}

/// Answers from a list of (operation, answer) pairs, in order; for tests of
/// decisions that moto cannot reproduce (rollouts, throttling).
#[cfg(test)]
pub struct ScriptedApi {
    pub script: std::collections::VecDeque<(String, Result<Value, ApiError>)>,
    pub calls: Vec<(String, Value)>,
}

#[cfg(test)]
impl AwsApi for ScriptedApi {
    fn call(&mut self, op: &str, params: Value) -> Result<Value, ApiError> {
        self.calls.push((op.to_owned(), params));
        let (expected, answer) = self.script.pop_front().unwrap_or_else(|| panic!("script exhausted at {op}"));
        assert_eq!(expected, op, "the script expected {expected} next");
        answer
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_and_writes_are_told_apart() {
        for op in [
            "ecr.describe_image",
            "ecs.describe_service",
            "ecr.get_authorization_token",
            "ecr.batch_get_image",
            "dynamodb.query",
            "dynamodb.get_item",
        ] {
            assert!(is_read_only(op), "{op}");
        }
        for op in ["ecr.put_image", "ecr.start_image_scan", "ecs.update_service", "ecs.run_task"] {
            assert!(!is_read_only(op), "{op}");
        }
    }
}
