//! `/v1/instances`: run, describe, stop, start, reboot, terminate, and
//! the console. Each instance is a VMM process the supervisor watches.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use stratus_devices::net::metadata::{HttpEndpoint, HttpTokens, MetadataOptions};

use super::{now_rfc3339, App, Body, Params, PathParam};
use crate::error::ApiError;
use crate::host::tap;
use crate::model::cidr::Cidr;
use crate::model::ids::{self, Kind};
use crate::model::image::Image;
use crate::model::instance::{mac_for, Event, Instance, State as St};
use crate::model::instance_groups::{self, GroupListError};
use crate::model::instance_type;
use crate::model::lease;
use crate::model::security_group::SecurityGroup;
use crate::model::subnet::Subnet;
use crate::store::{Table, Tx};
use crate::supervisor::{self, check_user_data, put};

/// Most instances one call may run.
const MAX_COUNT: u32 = 20;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetadataOptionsIn {
    #[serde(default)]
    http_tokens: Option<String>,
    #[serde(default)]
    http_endpoint: Option<String>,
    #[serde(default)]
    http_put_response_hop_limit: Option<u8>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunInstances {
    image_id: String,
    instance_type: String,
    subnet_id: String,
    #[serde(default)]
    security_group_ids: Vec<String>,
    #[serde(default)]
    private_ip_address: Option<String>,
    #[serde(default)]
    key_name: Option<String>,
    /// Base64.
    #[serde(default)]
    user_data: Option<String>,
    #[serde(default)]
    tags: BTreeMap<String, String>,
    #[serde(default)]
    metadata_options: Option<MetadataOptionsIn>,
    #[serde(default = "one")]
    count: u32,
    /// The same token returns the same instances, launching nothing.
    #[serde(default)]
    client_token: Option<String>,
}

fn one() -> u32 {
    1
}

/// EC2's rules for an interface's list of groups, as API errors.
fn check_groups(group_ids: &[String]) -> Result<(), ApiError> {
    instance_groups::check(group_ids).map_err(|e| match e {
        GroupListError::Malformed(_) => ApiError::new(
            StatusCode::BAD_REQUEST,
            "InvalidGroupId.Malformed",
            e.to_string(),
        ),
        GroupListError::Count(_) | GroupListError::Duplicate(_) => ApiError::invalid(e.to_string()),
    })
}

/// Refuses the first group of `group_ids` that does not exist.
fn groups_exist(tx: &Tx<'_>, group_ids: &[String]) -> Result<(), ApiError> {
    for g in group_ids {
        if tx.get::<SecurityGroup>(Table::SecurityGroups, g)?.is_none() {
            return Err(ApiError::not_found(
                "InvalidGroup.NotFound",
                "security group",
                g,
            ));
        }
    }
    Ok(())
}

fn metadata_options(m: Option<MetadataOptionsIn>) -> Result<MetadataOptions, ApiError> {
    let mut out = MetadataOptions::default();
    let Some(m) = m else { return Ok(out) };
    out.http_tokens = match m.http_tokens.as_deref() {
        None | Some("optional") => HttpTokens::Optional,
        Some("required") => HttpTokens::Required,
        Some(other) => {
            return Err(ApiError::invalid(format!(
                "http_tokens `{other}`: optional or required"
            )))
        }
    };
    out.http_endpoint = match m.http_endpoint.as_deref() {
        None | Some("enabled") => HttpEndpoint::Enabled,
        Some("disabled") => HttpEndpoint::Disabled,
        Some(other) => {
            return Err(ApiError::invalid(format!(
                "http_endpoint `{other}`: enabled or disabled"
            )))
        }
    };
    if let Some(h) = m.http_put_response_hop_limit {
        if !(1..=64).contains(&h) {
            return Err(ApiError::invalid(
                "http_put_response_hop_limit must be 1-64",
            ));
        }
        out.hop_limit = h;
    }
    Ok(out)
}

/// Refuses a client token given again with other parameters (EC2's
/// `IdempotentParameterMismatch`): the token names one launch, and a
/// caller that changed its request would otherwise be told its new
/// request was carried out.
fn same_launch(
    earlier: &[Instance],
    req: &RunInstances,
    options: &MetadataOptions,
) -> Result<(), ApiError> {
    let first = &earlier[0];
    let asked_ip_differs = req
        .private_ip_address
        .as_ref()
        .is_some_and(|ip| first.private_ip.as_ref().is_some_and(|had| had != ip));
    let differ: Vec<&str> = [
        ("image_id", first.image_id != req.image_id),
        ("instance_type", first.instance_type != req.instance_type),
        ("subnet_id", first.subnet_id != req.subnet_id),
        (
            "security_group_ids",
            first.security_group_ids != req.security_group_ids,
        ),
        ("key_name", first.key_name != req.key_name),
        ("user_data", first.user_data != req.user_data),
        ("tags", first.tags != req.tags),
        ("metadata_options", &first.metadata_options != options),
        ("count", earlier.len() != req.count as usize),
        ("private_ip_address", asked_ip_differs),
    ]
    .into_iter()
    .filter_map(|(field, differs)| differs.then_some(field))
    .collect();
    if differ.is_empty() {
        return Ok(());
    }
    Err(ApiError::new(
        StatusCode::BAD_REQUEST,
        "IdempotentParameterMismatch",
        format!(
            "client_token `{}` was used for a launch with other parameters ({})",
            req.client_token.as_deref().unwrap_or_default(),
            differ.join(", ")
        ),
    ))
}

pub async fn run(
    State(app): State<Arc<App>>,
    Body(mut req): Body<RunInstances>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let itype = instance_type::lookup(&req.instance_type).ok_or_else(|| {
        ApiError::invalid(format!(
            "instance_type `{}` is not offered on this host",
            req.instance_type
        ))
    })?;
    if req.count == 0 || req.count > MAX_COUNT {
        return Err(ApiError::invalid(format!("count must be 1-{MAX_COUNT}")));
    }
    if req.private_ip_address.is_some() && req.count != 1 {
        return Err(ApiError::invalid("private_ip_address needs count 1"));
    }
    super::checked_id(Kind::Image, "InvalidAMIID.Malformed", &req.image_id)?;
    super::checked_id(Kind::Subnet, "InvalidSubnetID.Malformed", &req.subnet_id)?;
    check_groups(&req.security_group_ids)?;
    if let Some(u) = &req.user_data {
        check_user_data(u).map_err(ApiError::invalid)?;
    }
    if req.tags.len() > 50
        || req
            .tags
            .iter()
            .any(|(k, v)| k.is_empty() || k.len() > 128 || v.len() > 256)
    {
        return Err(ApiError::invalid(
            "tags: at most 50, keys 1-128 and values 0-256 characters",
        ));
    }
    if req
        .client_token
        .as_ref()
        .is_some_and(|t| t.is_empty() || t.len() > 64)
    {
        return Err(ApiError::invalid("client_token must be 1-64 characters"));
    }
    let wanted_ip = match &req.private_ip_address {
        Some(ip) => Some(
            ip.parse()
                .map_err(|_| ApiError::invalid(format!("private_ip_address `{ip}` is not IPv4")))?,
        ),
        None => None,
    };
    let options = metadata_options(req.metadata_options.take())?;
    let capacity = crate::host::instance_memory_mib();
    let app2 = Arc::clone(&app);
    let instances = app
        .write(move |tx| {
            if let Some(token) = &req.client_token {
                let earlier: Vec<Instance> = tx.list_by(Table::Instances, "client_token", token)?;
                if !earlier.is_empty() {
                    same_launch(&earlier, &req, &options)?;
                    return Ok(earlier);
                }
            }
            if tx.get::<Image>(Table::Images, &req.image_id)?.is_none() {
                return Err(ApiError::not_found(
                    "InvalidAMIID.NotFound",
                    "image",
                    &req.image_id,
                ));
            }
            let subnet: Subnet = tx.get(Table::Subnets, &req.subnet_id)?.ok_or_else(|| {
                ApiError::not_found("InvalidSubnetID.NotFound", "subnet", &req.subnet_id)
            })?;
            if subnet.state != "available" {
                return Err(ApiError::conflict(
                    "IncorrectState",
                    format!("subnet {} is {}", subnet.subnet_id, subnet.state),
                ));
            }
            groups_exist(tx, &req.security_group_ids)?;
            if let Some(k) = &req.key_name {
                if tx.id_by(Table::KeyPairs, "key_name", k)?.is_none() {
                    return Err(ApiError::not_found(
                        "InvalidKeyPair.NotFound",
                        "key pair",
                        k,
                    ));
                }
            }
            let all: Vec<Instance> = tx.list(Table::Instances)?;
            let used_mib: u64 = all
                .iter()
                .filter(|i| {
                    matches!(
                        i.state,
                        St::Pending | St::Running | St::Stopping | St::ShuttingDown
                    )
                })
                .map(|i| u64::from(i.memory_mib))
                .sum();
            let need = u64::from(itype.memory_mib) * u64::from(req.count);
            if used_mib + need > capacity {
                return Err(ApiError::new(
                    StatusCode::CONFLICT,
                    "InsufficientInstanceCapacity",
                    format!(
                        "{need} MiB asked, {} MiB free of {capacity}",
                        capacity.saturating_sub(used_mib)
                    ),
                ));
            }
            let cidr: Cidr = subnet
                .cidr_block
                .parse()
                .map_err(|e| ApiError::invalid(format!("{e}")))?;
            let mut used = supervisor::leased(tx, &subnet.subnet_id)?;
            let mut made = Vec::new();
            for _ in 0..req.count {
                let ip = lease::allocate(&cidr, &used, wanted_ip).map_err(|e| match e {
                    lease::LeaseError::InUse(_) => {
                        ApiError::conflict("InvalidIPAddress.InUse", e.to_string())
                    }
                    lease::LeaseError::Exhausted(_) => {
                        ApiError::conflict("InsufficientFreeAddressesInSubnet", e.to_string())
                    }
                    _ => ApiError::invalid(e.to_string()),
                })?;
                used.insert(ip);
                let id = ids::new(Kind::Instance);
                let inst = Instance {
                    mac: mac_for(&id),
                    tap: tap::name(&id),
                    instance_id: id,
                    image_id: req.image_id.clone(),
                    instance_type: itype.name.into(),
                    vcpus: itype.vcpus,
                    memory_mib: itype.memory_mib,
                    subnet_id: subnet.subnet_id.clone(),
                    private_ip: Some(ip.to_string()),
                    security_group_ids: req.security_group_ids.clone(),
                    key_name: req.key_name.clone(),
                    user_data: req.user_data.clone(),
                    tags: req.tags.clone(),
                    metadata_options: options,
                    state: St::Pending,
                    state_reason: None,
                    generation: 1,
                    launch_time: now_rfc3339(),
                    client_token: req.client_token.clone(),
                    process: None,
                    restart_at: None,
                };
                // Recorded before anything is made on the host: a crash
                // from here on is settled when the agent starts again.
                put(tx, &inst)?;
                made.push(inst);
            }
            Ok(made)
        })
        .await?;
    // The VMMs start in the background (see `launcher`): the call
    // answers once the instances are recorded, as EC2's does.
    app2.launcher.wake();
    // New members: instances whose groups name theirs learn the addresses.
    supervisor::push_rules(&app2).await;
    Ok((StatusCode::CREATED, Json(json!({ "instances": instances }))))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Filters {
    #[serde(default)]
    state: Option<String>,
    #[serde(default)]
    subnet_id: Option<String>,
    /// `KEY=VALUE`.
    #[serde(default)]
    tag: Option<String>,
}

pub async fn list(
    State(app): State<Arc<App>>,
    Params(f): Params<Filters>,
) -> Result<Json<Value>, ApiError> {
    if let Some(s) = &f.state {
        if !St::ALL.iter().any(|st| st.name() == s) {
            return Err(ApiError::invalid(format!(
                "state `{s}` is not an instance state"
            )));
        }
    }
    let tag = match &f.tag {
        Some(t) => Some(
            t.split_once('=')
                .ok_or_else(|| ApiError::invalid("tag filter is KEY=VALUE"))?,
        ),
        None => None,
    };
    let all: Vec<Instance> = app.read(|tx| Ok(tx.list(Table::Instances)?)).await?;
    let out: Vec<&Instance> = all
        .iter()
        .filter(|i| f.state.as_deref().is_none_or(|s| i.state.name() == s))
        .filter(|i| f.subnet_id.as_deref().is_none_or(|s| i.subnet_id == s))
        .filter(|i| tag.is_none_or(|(k, v)| i.tags.get(k).is_some_and(|x| x == v)))
        .collect();
    Ok(Json(json!({ "instances": out })))
}

fn checked_id(id: &str) -> Result<(), ApiError> {
    super::checked_id(Kind::Instance, "InvalidInstanceID.Malformed", id)
}

fn not_found(id: &str) -> ApiError {
    ApiError::not_found("InvalidInstanceID.NotFound", "instance", id)
}

pub async fn describe(
    State(app): State<Arc<App>>,
    PathParam(id): PathParam,
) -> Result<Json<Instance>, ApiError> {
    checked_id(&id)?;
    app.read(move |tx| {
        tx.get(Table::Instances, &id)?
            .map(Json)
            .ok_or_else(|| not_found(&id))
    })
    .await
}

fn incorrect(inst: &Instance, action: &str) -> ApiError {
    ApiError::conflict(
        "IncorrectInstanceState",
        format!(
            "instance {} is {}; it cannot be {action}",
            inst.instance_id,
            inst.state.name()
        ),
    )
}

pub async fn stop(
    State(app): State<Arc<App>>,
    PathParam(id): PathParam,
) -> Result<Json<Instance>, ApiError> {
    checked_id(&id)?;
    let reboots = Arc::clone(&app.supervisor.reboots);
    let inst = app
        .write(move |tx| {
            let mut inst: Instance = tx
                .get(Table::Instances, &id)?
                .ok_or_else(|| not_found(&id))?;
            if inst.state == St::Stopped || inst.state == St::Stopping {
                return Ok(inst);
            }
            let between_vmms = inst.state == St::Running
                || (inst.state == St::Pending && inst.restart_at.is_some());
            if inst.process.is_none() && between_vmms {
                // Between two VMMs (a reboot loop's wait): nothing runs
                // to shut down, and the wait's restart sees it stopped.
                inst.apply(Event::Stop, None);
                inst.apply(
                    Event::Halted,
                    Some("Client.UserInitiatedShutdown: User initiated shutdown".into()),
                );
                put(tx, &inst)?;
                reboots.forget(&inst.instance_id);
                return Ok(inst);
            }
            if inst.process.is_none() || inst.apply(Event::Stop, None).is_none() {
                return Err(incorrect(&inst, "stopped"));
            }
            put(tx, &inst)?;
            Ok(inst)
        })
        .await?;
    if let (St::Stopping, Some(pid)) = (inst.state, inst.process) {
        supervisor::shut_down(&app, &inst.instance_id, pid);
    }
    Ok(Json(inst))
}

pub async fn start(
    State(app): State<Arc<App>>,
    PathParam(id): PathParam,
) -> Result<Json<Instance>, ApiError> {
    checked_id(&id)?;
    let reboots = Arc::clone(&app.supervisor.reboots);
    let inst = app
        .write(move |tx| {
            let mut inst: Instance = tx
                .get(Table::Instances, &id)?
                .ok_or_else(|| not_found(&id))?;
            if matches!(inst.state, St::Pending | St::Running) {
                return Ok(inst);
            }
            if inst.apply(Event::Start, None).is_none() {
                return Err(incorrect(&inst, "started"));
            }
            // Its VMM starts in the background, like a launch's, at once:
            // a reboot loop before the stop is over.
            put(tx, &inst)?;
            reboots.forget(&inst.instance_id);
            Ok(inst)
        })
        .await?;
    app.launcher.wake();
    Ok(Json(inst))
}

pub async fn reboot(
    State(app): State<Arc<App>>,
    PathParam(id): PathParam,
) -> Result<StatusCode, ApiError> {
    checked_id(&id)?;
    let inst: Instance = app
        .read(move |tx| tx.get(Table::Instances, &id)?.ok_or_else(|| not_found(&id)))
        .await?;
    if inst.state != St::Running {
        return Err(incorrect(&inst, "rebooted"));
    }
    // Ctrl-Alt-Del: the guest reboots cleanly; its VMM then exits with the
    // reboot status and the supervisor starts a new one on the same disk.
    let socket = app.supervisor.api_socket(&inst.instance_id);
    let body = Some(r#"{"action_type": "SendCtrlAltDel"}"#.to_string());
    match crate::vmm_client::call(&socket, "PUT", "/actions", body, Duration::from_secs(10)).await {
        Ok((204, _)) => Ok(StatusCode::NO_CONTENT),
        Ok((status, body)) => Err(ApiError::new(
            StatusCode::BAD_GATEWAY,
            "InternalError",
            format!("the VMM answered {status}: {body}"),
        )),
        Err(e) => Err(ApiError::new(
            StatusCode::BAD_GATEWAY,
            "InternalError",
            e.to_string(),
        )),
    }
}

pub async fn terminate(
    State(app): State<Arc<App>>,
    PathParam(id): PathParam,
) -> Result<Json<Value>, ApiError> {
    checked_id(&id)?;
    let sup = app.supervisor.clone();
    let (previous, inst) = app
        .write(move |tx| {
            let mut inst: Instance = tx
                .get(Table::Instances, &id)?
                .ok_or_else(|| not_found(&id))?;
            let previous = inst.state;
            if matches!(inst.state, St::Terminated | St::ShuttingDown) {
                return Ok((previous, inst));
            }
            if inst.apply(Event::Terminate, None).is_none() {
                return Err(incorrect(&inst, "terminated"));
            }
            if inst.process.is_none() {
                // Nothing runs: release now.
                supervisor::release(&sup, &inst);
                inst.private_ip = None;
                inst.apply(Event::Released, None);
            }
            put(tx, &inst)?;
            Ok((previous, inst))
        })
        .await?;
    if let (St::ShuttingDown, Some(pid)) = (inst.state, inst.process) {
        supervisor::shut_down(&app, &inst.instance_id, pid);
    } else if inst.state == St::Terminated {
        // Released at once: its groups lost a member.
        supervisor::push_rules(&app).await;
    }
    Ok(Json(json!({
        "instance_id": inst.instance_id,
        "previous_state": {"code": previous.code(), "name": previous.name()},
        "current_state": {"code": inst.state.code(), "name": inst.state.name()},
    })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModifySecurityGroups {
    security_group_ids: Vec<String>,
}

/// `PUT …/security-groups`: the instance's interface gets exactly these
/// groups (EC2's `ModifyInstanceAttribute --groups`). Committed before
/// the answer; then every VMM whose rules it changes gets them: the
/// instance's own, and those of instances whose rules name a group it
/// joined or left (its address joins or leaves that group's set). Its
/// own VMM also gets its metadata again (`security-groups`,
/// `security-group-ids`). Giving the groups it has already is a no-op.
pub async fn modify_security_groups(
    State(app): State<Arc<App>>,
    PathParam(id): PathParam,
    Body(req): Body<ModifySecurityGroups>,
) -> Result<Json<Instance>, ApiError> {
    checked_id(&id)?;
    check_groups(&req.security_group_ids)?;
    let (inst, changed) = app
        .write(move |tx| {
            let mut inst: Instance = tx
                .get(Table::Instances, &id)?
                .ok_or_else(|| not_found(&id))?;
            if !instance_groups::may_change(inst.state) {
                return Err(incorrect(&inst, "given other security groups"));
            }
            groups_exist(tx, &req.security_group_ids)?;
            if inst.security_group_ids == req.security_group_ids {
                return Ok((inst, false));
            }
            inst.security_group_ids = req.security_group_ids;
            inst.generation += 1;
            put(tx, &inst)?;
            Ok((inst, true))
        })
        .await?;
    if changed {
        tracing::info!(instance_id = %inst.instance_id, groups = ?inst.security_group_ids, "security groups changed");
        supervisor::push_rules(&app).await;
        if inst.process.is_some() {
            supervisor::push_metadata(&app, &inst.instance_id).await;
        }
    }
    Ok(Json(inst))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsoleQuery {
    #[serde(default)]
    bytes: Option<usize>,
}

pub async fn console(
    State(app): State<Arc<App>>,
    PathParam(id): PathParam,
    Params(q): Params<ConsoleQuery>,
) -> Result<Json<Value>, ApiError> {
    checked_id(&id)?;
    let want = q.bytes.unwrap_or(64 * 1024).clamp(1, 1 << 20);
    let id2 = id.clone();
    let inst: Instance = app
        .read(move |tx| {
            tx.get(Table::Instances, &id2)?
                .ok_or_else(|| not_found(&id2))
        })
        .await?;
    // The console file the VMM writes; its last `want` bytes.
    let text = match std::fs::read(app.supervisor.console_log(&inst.instance_id)) {
        Ok(bytes) => {
            String::from_utf8_lossy(&bytes[bytes.len().saturating_sub(want)..]).into_owned()
        }
        Err(_) => String::new(),
    };
    Ok(Json(
        json!({"instance_id": id, "timestamp": now_rfc3339(), "output": text}),
    ))
}
