//! `/v1/subnets`: a CIDR on a bridge of its own; create, list, describe,
//! delete.
//!
//! A change to the host is bracketed by the store: the subnet is
//! recorded `pending` before its bridge is made and `available` after;
//! `deleting` before its bridge is removed and gone after. An agent that
//! dies in between finds the record on its next start
//! ([`reconcile_bridges`]) and undoes or finishes the change, so no bridge
//! is left that the store does not name, and the agent never touches one
//! it did not make.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::{now_rfc3339, App, Body, NoParams, Params, PathParam};
use crate::error::ApiError;
use crate::host::bridge::{self, BridgeError};
use crate::model::cidr::Cidr;
use crate::model::ids::{self, Kind};
use crate::model::subnet::{bridge_name, check_cidr, usable_addresses, Subnet};
use crate::store::{Store, Table, Tx};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateSubnet {
    cidr_block: String,
}

fn internal(e: impl ToString) -> ApiError {
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "InternalError",
        e.to_string(),
    )
}

fn put(tx: &Tx<'_>, subnet: &Subnet) -> Result<(), ApiError> {
    Ok(tx.put(
        Table::Subnets,
        &subnet.subnet_id,
        &[("cidr_block", &subnet.cidr_block)],
        subnet,
    )?)
}

/// Runs a bridge change off the async threads.
async fn host_change(
    f: impl FnOnce() -> Result<(), BridgeError> + Send + 'static,
) -> Result<(), ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(internal)?
        .map_err(internal)
}

pub async fn create(
    State(app): State<Arc<App>>,
    Body(req): Body<CreateSubnet>,
) -> Result<(StatusCode, Json<Subnet>), ApiError> {
    let cidr = check_cidr(&req.cidr_block).map_err(ApiError::invalid)?;
    let subnet_id = ids::new(Kind::Subnet);
    let gateway = cidr.nth_v4(1).map(|g| g.to_string()).unwrap_or_default();
    let mut subnet = Subnet {
        bridge: bridge_name(&subnet_id),
        subnet_id,
        cidr_block: cidr.to_string(),
        gateway: gateway.clone(),
        available_ip_address_count: usable_addresses(&cidr),
        state: "pending".into(),
        created_at: now_rfc3339(),
    };
    // 1. Recorded as pending (so an overlapping request sees it).
    let mut subnet = app
        .write(move |tx| {
            let existing: Vec<Subnet> = tx.list(Table::Subnets)?;
            // Another id if the bridge name is taken (one chance in 2^44).
            while existing.iter().any(|o| o.bridge == subnet.bridge) {
                subnet.subnet_id = ids::new(Kind::Subnet);
                subnet.bridge = bridge_name(&subnet.subnet_id);
            }
            for other in &existing {
                let theirs: Cidr = other.cidr_block.parse().map_err(internal)?;
                if theirs.overlaps(&cidr) {
                    return Err(ApiError::conflict(
                        "InvalidSubnet.Conflict",
                        format!(
                            "{cidr} overlaps {} of {}",
                            other.cidr_block, other.subnet_id
                        ),
                    ));
                }
            }
            put(tx, &subnet)?;
            Ok(subnet)
        })
        .await?;
    // 2. The bridge; undone if it cannot be made.
    let (name, address) = (subnet.bridge.clone(), format!("{gateway}/{}", cidr.len));
    if let Err(e) = host_change(move || bridge::create(&name, &address)).await {
        let id = subnet.subnet_id.clone();
        app.write(move |tx| Ok(tx.delete(Table::Subnets, &id)?))
            .await?;
        return Err(e);
    }
    // 3. Available.
    subnet.state = "available".into();
    let subnet = app
        .write(move |tx| {
            put(tx, &subnet)?;
            Ok(subnet)
        })
        .await?;
    tracing::info!(subnet_id = %subnet.subnet_id, cidr = %subnet.cidr_block, bridge = %subnet.bridge, "subnet created");
    Ok((StatusCode::CREATED, Json(subnet)))
}

pub async fn list(
    State(app): State<Arc<App>>,
    Params(NoParams {}): Params<NoParams>,
) -> Result<Json<Value>, ApiError> {
    let subnets: Vec<Subnet> = app.read(|tx| Ok(tx.list(Table::Subnets)?)).await?;
    Ok(Json(json!({ "subnets": subnets })))
}

fn checked_id(id: &str) -> Result<(), ApiError> {
    super::checked_id(Kind::Subnet, "InvalidSubnetID.Malformed", id)
}

pub async fn describe(
    State(app): State<Arc<App>>,
    PathParam(id): PathParam,
) -> Result<Json<Subnet>, ApiError> {
    checked_id(&id)?;
    app.read(move |tx| {
        tx.get(Table::Subnets, &id)?
            .map(Json)
            .ok_or_else(|| ApiError::not_found("InvalidSubnetID.NotFound", "subnet", &id))
    })
    .await
}

pub async fn delete(
    State(app): State<Arc<App>>,
    PathParam(id): PathParam,
) -> Result<StatusCode, ApiError> {
    checked_id(&id)?;
    let subnet = app
        .write(move |tx| {
            let Some(mut subnet) = tx.get::<Subnet>(Table::Subnets, &id)? else {
                return Err(ApiError::not_found(
                    "InvalidSubnetID.NotFound",
                    "subnet",
                    &id,
                ));
            };
            if let Some(user) = crate::supervisor::live_instances(tx)?.find(|i| i.subnet_id == id) {
                return Err(ApiError::conflict(
                    "DependencyViolation",
                    format!("subnet {id} has instance {}", user.instance_id),
                ));
            }
            if subnet.state != "available" {
                return Err(ApiError::conflict(
                    "IncorrectState",
                    format!("subnet {id} is {}", subnet.state),
                ));
            }
            subnet.state = "deleting".into();
            put(tx, &subnet)?;
            Ok(subnet)
        })
        .await?;
    let name = subnet.bridge.clone();
    host_change(move || bridge::delete(&name)).await?;
    let id = subnet.subnet_id;
    app.write(move |tx| Ok(tx.delete(Table::Subnets, &id)?))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// On start: finishes or undoes what a previous run left half done, and
/// remakes a missing bridge of an available subnet (after a host reboot).
pub fn reconcile_bridges(store: &mut Store) -> Result<(), crate::AgentError> {
    let subnets: Vec<Subnet> = store.read(|tx| tx.list(Table::Subnets))?;
    for s in subnets {
        match s.state.as_str() {
            "available" => {
                if !bridge::exists(&s.bridge)? {
                    tracing::warn!(bridge = %s.bridge, subnet_id = %s.subnet_id, "making a missing bridge");
                    let len = s.cidr_block.rsplit('/').next().unwrap_or("24");
                    bridge::create(&s.bridge, &format!("{}/{len}", s.gateway))?;
                }
            }
            // A create that never answered, or a delete that did not end.
            _ => {
                tracing::warn!(subnet_id = %s.subnet_id, state = %s.state, "finishing a subnet change a previous run left");
                bridge::delete(&s.bridge)?;
                store.write(|tx| tx.delete(Table::Subnets, &s.subnet_id))?;
            }
        }
    }
    Ok(())
}
