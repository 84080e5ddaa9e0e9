//! `/v1/images`: register an AMI bundle, list, describe, deregister.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::{now_rfc3339, App, Body, NoParams, Params, PathParam};
use crate::error::ApiError;
use crate::model::ids::{self, Kind};
use crate::model::image::{read_bundle, Image};
use crate::store::Table;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegisterImage {
    /// Absolute path of the bundle's `manifest.json` on this host.
    manifest_path: String,
    /// A name of its own (default: the manifest's); unique on the host.
    #[serde(default)]
    name: Option<String>,
}

pub async fn register(
    State(app): State<Arc<App>>,
    Body(req): Body<RegisterImage>,
) -> Result<(StatusCode, Json<Image>), ApiError> {
    let bundle = read_bundle(&req.manifest_path).map_err(ApiError::invalid)?;
    let name = req.name.unwrap_or(bundle.name);
    if name.is_empty() || name.len() > 128 {
        return Err(ApiError::invalid("name must be 1-128 characters"));
    }
    let image = Image {
        image_id: ids::new(Kind::Image),
        name,
        manifest_path: bundle.manifest_path.to_string_lossy().into_owned(),
        architecture: bundle.architecture,
        root_device_image: bundle.root_device_image.to_string_lossy().into_owned(),
        root_device_format: bundle.root_device_format,
        boot_mode: bundle.boot_mode,
        kernel_cmdline: bundle.kernel_cmdline,
        state: "available".into(),
        created_at: now_rfc3339(),
    };
    let image = app
        .write(move |tx| {
            let existing: Vec<Image> = tx.list(Table::Images)?;
            if existing.iter().any(|i| i.name == image.name) {
                return Err(ApiError::conflict(
                    "InvalidAMIName.Duplicate",
                    format!("an image named `{}` is already registered", image.name),
                ));
            }
            tx.put(Table::Images, &image.image_id, &[], &image)?;
            Ok(image)
        })
        .await?;
    tracing::info!(image_id = %image.image_id, name = %image.name, "image registered");
    Ok((StatusCode::CREATED, Json(image)))
}

pub async fn list(
    State(app): State<Arc<App>>,
    Params(NoParams {}): Params<NoParams>,
) -> Result<Json<Value>, ApiError> {
    let images: Vec<Image> = app.read(|tx| Ok(tx.list(Table::Images)?)).await?;
    Ok(Json(json!({ "images": images })))
}

fn checked_id(id: &str) -> Result<(), ApiError> {
    super::checked_id(Kind::Image, "InvalidAMIID.Malformed", id)
}

pub async fn describe(
    State(app): State<Arc<App>>,
    PathParam(id): PathParam,
) -> Result<Json<Image>, ApiError> {
    checked_id(&id)?;
    app.read(move |tx| {
        tx.get(Table::Images, &id)?
            .map(Json)
            .ok_or_else(|| ApiError::not_found("InvalidAMIID.NotFound", "image", &id))
    })
    .await
}

pub async fn deregister(
    State(app): State<Arc<App>>,
    PathParam(id): PathParam,
) -> Result<StatusCode, ApiError> {
    checked_id(&id)?;
    app.write(move |tx| {
        if let Some(user) = crate::supervisor::live_instances(tx)?.find(|i| i.image_id == id) {
            return Err(ApiError::conflict(
                "InvalidAMIID.InUse",
                format!("image {id} is used by instance {}", user.instance_id),
            ));
        }
        if !tx.delete(Table::Images, &id)? {
            return Err(ApiError::not_found("InvalidAMIID.NotFound", "image", &id));
        }
        Ok(StatusCode::NO_CONTENT)
    })
    .await
}
