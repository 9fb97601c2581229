//! ECR operations: login token, image lookup, scan findings, retagging by
//! manifest (promotion without a rebuild).

use aws_sdk_ecr::types::{ImageIdentifier, ScanStatus};
use serde_json::{Map, Value, json};

use crate::{ApiError, epoch_seconds, optional_string, sdk_error, string_param};

pub async fn call(client: &aws_sdk_ecr::Client, name: &str, params: &Value) -> Result<Value, ApiError> {
    match name {
        "get_authorization_token" => {
            let output = client.get_authorization_token().send().await.map_err(sdk_error)?;
            let data = output
                .authorization_data()
                .first()
                .ok_or_else(|| ApiError::new("EmptyResponse", "ECR returned no authorization data"))?;
            Ok(json!({
                "token": data.authorization_token(),
                "proxy_endpoint": data.proxy_endpoint(),
                "expires_at": epoch_seconds(data.expires_at()),
            }))
        }
        "describe_repository" => {
            let repository = string_param(params, "repository")?;
            let output = client.describe_repositories().repository_names(repository).send().await.map_err(sdk_error)?;
            let repository = output
                .repositories()
                .first()
                .ok_or_else(|| ApiError::new("RepositoryNotFoundException", "no repository returned"))?;
            Ok(json!({
                "name": repository.repository_name(),
                "uri": repository.repository_uri(),
                "registry_id": repository.registry_id(),
                "scan_on_push": repository.image_scanning_configuration().map(|c| c.scan_on_push()),
                "tag_mutability": repository.image_tag_mutability().map(|m| m.as_str().to_owned()),
            }))
        }
        "describe_image" => {
            let repository = string_param(params, "repository")?;
            let output = client
                .describe_images()
                .repository_name(repository)
                .image_ids(image_id(params)?)
                .send()
                .await
                .map_err(sdk_error)?;
            let image = output
                .image_details()
                .first()
                .ok_or_else(|| ApiError::new("ImageNotFoundException", "no image returned"))?;
            Ok(json!({
                "digest": image.image_digest(),
                "tags": image.image_tags(),
                "pushed_at": epoch_seconds(image.image_pushed_at()),
                "size_bytes": image.image_size_in_bytes(),
                "scan_status": image.image_scan_status().and_then(|s| s.status()).map(|s| s.as_str().to_owned()),
            }))
        }
        "start_image_scan" => {
            let repository = string_param(params, "repository")?;
            let output = client
                .start_image_scan()
                .repository_name(repository)
                .image_id(image_id(params)?)
                .send()
                .await
                .map_err(sdk_error)?;
            Ok(json!({
                "status": output.image_scan_status().and_then(|s| s.status()).map(|s| s.as_str().to_owned()),
            }))
        }
        "describe_image_scan_findings" => {
            let repository = string_param(params, "repository")?;
            let output = client
                .describe_image_scan_findings()
                .repository_name(repository)
                .image_id(image_id(params)?)
                .send()
                .await
                .map_err(sdk_error)?;
            let status = output.image_scan_status();
            let mut counts = Map::new();
            if let Some(findings) = output.image_scan_findings() {
                for (severity, count) in findings.finding_severity_counts().into_iter().flatten() {
                    counts.insert(severity.as_str().to_owned(), json!(count));
                }
            }
            Ok(json!({
                "status": status.and_then(|s| s.status()).map(|s| s.as_str().to_owned()),
                "description": status.and_then(|s| s.description()),
                "complete": status.and_then(|s| s.status()) == Some(&ScanStatus::Complete),
                "severity_counts": counts,
            }))
        }
        "batch_get_image" => {
            let repository = string_param(params, "repository")?;
            let output = client
                .batch_get_image()
                .repository_name(repository)
                .image_ids(image_id(params)?)
                .send()
                .await
                .map_err(sdk_error)?;
            if let Some(failure) = output.failures().first() {
                return Err(ApiError::new(
                    failure.failure_code().map(|code| code.as_str()).unwrap_or("ImageNotFound"),
                    failure.failure_reason().unwrap_or("image not found"),
                ));
            }
            let image =
                output.images().first().ok_or_else(|| ApiError::new("ImageNotFoundException", "no image returned"))?;
            Ok(json!({
                "manifest": image.image_manifest(),
                "media_type": image.image_manifest_media_type(),
                "digest": image.image_id().and_then(|id| id.image_digest()),
            }))
        }
        "put_image" => {
            let repository = string_param(params, "repository")?;
            let manifest = string_param(params, "manifest")?;
            let tag = string_param(params, "tag")?;
            let mut request = client.put_image().repository_name(repository).image_manifest(manifest).image_tag(tag);
            if let Some(media_type) = optional_string(params, "media_type") {
                request = request.image_manifest_media_type(media_type);
            }
            // The digest the manifest is known by elsewhere (a registry);
            // AWS checks it against the manifest, emulators may just take it.
            if let Some(digest) = optional_string(params, "digest") {
                request = request.image_digest(digest);
            }
            let output = request.send().await.map_err(sdk_error)?;
            let image = output.image();
            Ok(json!({ "digest": image.and_then(|image| image.image_id()).and_then(|id| id.image_digest()) }))
        }
        _ => Err(ApiError::new("UnknownOperation", format!("xtask-aws does not know ecr.{name}"))),
    }
}

fn image_id(params: &Value) -> Result<ImageIdentifier, ApiError> {
    let digest = optional_string(params, "digest");
    let tag = optional_string(params, "tag");
    if digest.is_none() && tag.is_none() {
        return Err(ApiError::new("BadRequest", "an image is named by \"digest\" or \"tag\""));
    }
    Ok(ImageIdentifier::builder().set_image_digest(digest).set_image_tag(tag).build())
}
