//! `/v1/key-pairs`: import a public key by name, list, describe, delete.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::{now_rfc3339, App, Body, NoParams, Params, PathParam};
use crate::error::ApiError;
use crate::model::ids::{self, Kind};
use crate::model::key_pair::{check_name, parse_public_key, KeyPair};
use crate::store::Table;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImportKeyPair {
    key_name: String,
    /// One OpenSSH public key line.
    public_key_material: String,
}

pub async fn import(
    State(app): State<Arc<App>>,
    Body(req): Body<ImportKeyPair>,
) -> Result<(StatusCode, Json<KeyPair>), ApiError> {
    check_name(&req.key_name).map_err(ApiError::invalid)?;
    let key = parse_public_key(&req.public_key_material)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "InvalidKey.Format", e))?;
    let pair = KeyPair {
        key_pair_id: ids::new(Kind::KeyPair),
        key_name: req.key_name,
        key_type: key.key_type,
        key_fingerprint: key.fingerprint,
        public_key: key.text,
        created_at: now_rfc3339(),
    };
    let pair = app
        .write(move |tx| {
            if tx
                .id_by(Table::KeyPairs, "key_name", &pair.key_name)?
                .is_some()
            {
                return Err(ApiError::conflict(
                    "InvalidKeyPair.Duplicate",
                    format!("a key pair named `{}` exists", pair.key_name),
                ));
            }
            tx.put(
                Table::KeyPairs,
                &pair.key_pair_id,
                &[("key_name", &pair.key_name)],
                &pair,
            )?;
            Ok(pair)
        })
        .await?;
    Ok((StatusCode::CREATED, Json(pair)))
}

pub async fn list(
    State(app): State<Arc<App>>,
    Params(NoParams {}): Params<NoParams>,
) -> Result<Json<Value>, ApiError> {
    let pairs: Vec<KeyPair> = app.read(|tx| Ok(tx.list(Table::KeyPairs)?)).await?;
    Ok(Json(json!({ "key_pairs": pairs })))
}

pub async fn describe(
    State(app): State<Arc<App>>,
    PathParam(name): PathParam,
) -> Result<Json<KeyPair>, ApiError> {
    app.read(move |tx| {
        let id = tx.id_by(Table::KeyPairs, "key_name", &name)?;
        let pair: Option<KeyPair> = match id {
            Some(id) => tx.get(Table::KeyPairs, &id)?,
            None => None,
        };
        pair.map(Json)
            .ok_or_else(|| ApiError::not_found("InvalidKeyPair.NotFound", "key pair", &name))
    })
    .await
}

pub async fn delete(
    State(app): State<Arc<App>>,
    PathParam(name): PathParam,
) -> Result<StatusCode, ApiError> {
    app.write(move |tx| {
        let Some(id) = tx.id_by(Table::KeyPairs, "key_name", &name)? else {
            return Err(ApiError::not_found(
                "InvalidKeyPair.NotFound",
                "key pair",
                &name,
            ));
        };
        tx.delete(Table::KeyPairs, &id)?;
        Ok(StatusCode::NO_CONTENT)
    })
    .await
}
