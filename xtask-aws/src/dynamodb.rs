//! DynamoDB operations for the release ledger and the deploy lock. Items are
//! flat JSON objects of strings, numbers and booleans.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::AttributeValue;
use serde_json::{Map, Value, json};

use crate::{ApiError, optional_string, sdk_error, string_param};

/// Sends a PutItem or DeleteItem request with the call's optional
/// condition (`condition`, `values`) and answers `{}`. A macro: the SDK's
/// two fluent builders have the same setters but share no trait.
macro_rules! send_conditional {
    ($request:expr, $params:expr) => {{
        let (condition, values) = condition($params)?;
        $request
            .set_condition_expression(condition)
            .set_expression_attribute_values(values)
            .send()
            .await
            .map_err(sdk_error)?;
        Ok(json!({}))
    }};
}

pub async fn call(client: &aws_sdk_dynamodb::Client, name: &str, params: &Value) -> Result<Value, ApiError> {
    let table = string_param(params, "table")?;
    match name {
        "put_item" => {
            let request = client.put_item().table_name(table).set_item(Some(to_item(params.get("item"))?));
            send_conditional!(request, params)
        }
        "get_item" => {
            let key = to_item(params.get("key"))?;
            let output = client
                .get_item()
                .table_name(table)
                .set_key(Some(key))
                .consistent_read(true)
                .send()
                .await
                .map_err(sdk_error)?;
            Ok(json!({ "item": output.item().map(from_item) }))
        }
        "delete_item" => {
            let request = client.delete_item().table_name(table).set_key(Some(to_item(params.get("key"))?));
            send_conditional!(request, params)
        }
        "query" => {
            // Items of one partition, newest (highest sort key) first.
            let key_name = string_param(params, "key_name")?;
            let key_value = string_param(params, "key_value")?;
            let limit = params.get("limit").and_then(Value::as_i64).unwrap_or(20) as i32;
            let output = client
                .query()
                .table_name(table)
                .key_condition_expression("#k = :v")
                .expression_attribute_names("#k", key_name)
                .expression_attribute_values(":v", AttributeValue::S(key_value.to_owned()))
                .scan_index_forward(false)
                .limit(limit)
                .consistent_read(true)
                .send()
                .await
                .map_err(sdk_error)?;
            let items: Vec<Value> = output.items().iter().map(from_item).collect();
            Ok(json!({ "items": items }))
        }
        _ => Err(ApiError::new("UnknownOperation", format!("xtask-aws does not know dynamodb.{name}"))),
    }
}

/// Attribute values by name, as DynamoDB takes them.
type Values = HashMap<String, AttributeValue>;

/// A write's condition (`condition`) and the values it names (`values`).
fn condition(params: &Value) -> Result<(Option<String>, Option<Values>), ApiError> {
    let condition = optional_string(params, "condition");
    let values = params.get("values").map(to_values).transpose()?;
    Ok((condition, values))
}

fn to_item(value: Option<&Value>) -> Result<HashMap<String, AttributeValue>, ApiError> {
    let object = value
        .and_then(Value::as_object)
        .ok_or_else(|| ApiError::new("BadRequest", "an item or key must be a JSON object"))?;
    object.iter().map(|(name, value)| Ok((name.clone(), to_attribute(value)?))).collect()
}

fn to_values(value: &Value) -> Result<HashMap<String, AttributeValue>, ApiError> {
    to_item(Some(value))
}

fn to_attribute(value: &Value) -> Result<AttributeValue, ApiError> {
    match value {
        Value::String(text) => Ok(AttributeValue::S(text.clone())),
        Value::Number(number) => Ok(AttributeValue::N(number.to_string())),
        Value::Bool(flag) => Ok(AttributeValue::Bool(*flag)),
        _ => Err(ApiError::new("BadRequest", format!("unsupported attribute value {value}"))),
    }
}

fn from_item(item: &HashMap<String, AttributeValue>) -> Value {
    let mut object = Map::new();
    for (name, value) in item {
        let json = match value {
            AttributeValue::S(text) => json!(text),
            AttributeValue::N(number) => {
                number.parse::<i64>().map(Value::from).unwrap_or_else(|_| json!(number.parse::<f64>().unwrap_or(0.0)))
            }
            AttributeValue::Bool(flag) => json!(flag),
            _ => Value::Null,
        };
        object.insert(name.clone(), json);
    }
    Value::Object(object)
}
