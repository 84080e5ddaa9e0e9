//! `/v1/security-groups`: create, list, describe, delete; authorize and
//! revoke rules in either direction with EC2's `IpPermissions`.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::{now_rfc3339, App, Body, NoParams, Params, PathParam};
use crate::error::ApiError;
use crate::model::ids::{self, Kind};
use crate::model::security_group::{
    check_quota, permissions, Direction, IpPermission, RuleEntry, SecurityGroup, Source,
};
use crate::store::{Table, Tx};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateGroup {
    group_name: String,
    description: String,
}

/// A group as the API shows it: rules as EC2's permissions.
#[derive(Debug, Serialize)]
pub struct GroupView {
    group_id: String,
    group_name: String,
    description: String,
    ip_permissions: Vec<IpPermission>,
    ip_permissions_egress: Vec<IpPermission>,
    created_at: String,
}

impl From<SecurityGroup> for GroupView {
    fn from(g: SecurityGroup) -> Self {
        Self {
            ip_permissions: permissions(&g.ingress),
            ip_permissions_egress: permissions(&g.egress),
            group_id: g.group_id,
            group_name: g.group_name,
            description: g.description,
            created_at: g.created_at,
        }
    }
}

/// EC2's limits on names and descriptions: 1-255 characters of a plain
/// set, and a name may not start with `sg-` (ids do).
fn check_text(field: &str, text: &str) -> Result<(), ApiError> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || " ._-:/()#,@[]+=&;{}!$*".contains(c);
    if text.is_empty() || text.len() > 255 || !text.chars().all(allowed) {
        return Err(ApiError::invalid(format!(
            "{field} must be 1-255 characters of a-z, A-Z, 0-9, spaces and ._-:/()#,@[]+=&;{{}}!$*"
        )));
    }
    Ok(())
}

pub async fn create(
    State(app): State<Arc<App>>,
    Body(req): Body<CreateGroup>,
) -> Result<(StatusCode, Json<GroupView>), ApiError> {
    check_text("group_name", &req.group_name)?;
    check_text("description", &req.description)?;
    if req.group_name.to_ascii_lowercase().starts_with("sg-") {
        return Err(ApiError::invalid("group_name may not start with sg-"));
    }
    let group = SecurityGroup {
        group_id: ids::new(Kind::SecurityGroup),
        group_name: req.group_name,
        description: req.description,
        ingress: Vec::new(),
        egress: SecurityGroup::default_egress(),
        created_at: now_rfc3339(),
    };
    let group = app
        .write(move |tx| {
            if tx
                .id_by(Table::SecurityGroups, "group_name", &group.group_name)?
                .is_some()
            {
                return Err(ApiError::conflict(
                    "InvalidGroup.Duplicate",
                    format!("a security group named `{}` exists", group.group_name),
                ));
            }
            put(tx, &group)?;
            Ok(group)
        })
        .await?;
    tracing::info!(group_id = %group.group_id, "security group created");
    Ok((StatusCode::CREATED, Json(group.into())))
}

pub async fn list(
    State(app): State<Arc<App>>,
    Params(NoParams {}): Params<NoParams>,
) -> Result<Json<Value>, ApiError> {
    let groups: Vec<SecurityGroup> = app.read(|tx| Ok(tx.list(Table::SecurityGroups)?)).await?;
    let views: Vec<GroupView> = groups.into_iter().map(GroupView::from).collect();
    Ok(Json(json!({ "security_groups": views })))
}

fn checked_id(id: &str) -> Result<(), ApiError> {
    super::checked_id(Kind::SecurityGroup, "InvalidGroupId.Malformed", id)
}

/// Writes `group` (its name is the unique column).
fn put(tx: &Tx<'_>, group: &SecurityGroup) -> Result<(), ApiError> {
    Ok(tx.put(
        Table::SecurityGroups,
        &group.group_id,
        &[("group_name", &group.group_name)],
        group,
    )?)
}

fn load(tx: &Tx<'_>, id: &str) -> Result<SecurityGroup, ApiError> {
    tx.get(Table::SecurityGroups, id)?
        .ok_or_else(|| ApiError::not_found("InvalidGroup.NotFound", "security group", id))
}

pub async fn describe(
    State(app): State<Arc<App>>,
    PathParam(id): PathParam,
) -> Result<Json<GroupView>, ApiError> {
    checked_id(&id)?;
    app.read(move |tx| Ok(Json(load(tx, &id)?.into()))).await
}

pub async fn delete(
    State(app): State<Arc<App>>,
    PathParam(id): PathParam,
) -> Result<StatusCode, ApiError> {
    checked_id(&id)?;
    app.write(move |tx| {
        load(tx, &id)?;
        if let Some(user) =
            crate::supervisor::live_instances(tx)?.find(|i| i.security_group_ids.contains(&id))
        {
            return Err(ApiError::conflict(
                "DependencyViolation",
                format!("{id} is attached to instance {}", user.instance_id),
            ));
        }
        let groups: Vec<SecurityGroup> = tx.list(Table::SecurityGroups)?;
        if let Some(user) = groups
            .iter()
            .find(|g| g.group_id != id && g.referenced_groups().any(|r| r == id))
        {
            return Err(ApiError::conflict(
                "DependencyViolation",
                format!("{id} is referenced by a rule of {}", user.group_id),
            ));
        }
        tx.delete(Table::SecurityGroups, &id)?;
        Ok(StatusCode::NO_CONTENT)
    })
    .await
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Permissions {
    ip_permissions: Vec<IpPermission>,
}

/// Adds or removes the entries of `req` in `direction` of group `id`.
async fn change(
    app: Arc<App>,
    id: String,
    direction: Direction,
    authorize: bool,
    req: Permissions,
) -> Result<Json<GroupView>, ApiError> {
    checked_id(&id)?;
    if req.ip_permissions.is_empty() {
        return Err(ApiError::invalid("ip_permissions is empty"));
    }
    let mut entries: Vec<RuleEntry> = Vec::new();
    for p in &req.ip_permissions {
        entries.extend(p.entries().map_err(ApiError::invalid)?);
    }
    let group = app
        .write(move |tx| {
            let mut group = load(tx, &id)?;
            for e in &entries {
                if let Source::Group(g) = &e.source {
                    if tx.get::<SecurityGroup>(Table::SecurityGroups, g)?.is_none() {
                        return Err(ApiError::not_found(
                            "InvalidGroup.NotFound",
                            "security group",
                            g,
                        ));
                    }
                }
            }
            let rules = group.rules_mut(direction);
            for e in entries {
                let at = rules.iter().position(|r| *r == e);
                match (authorize, at) {
                    (true, None) => rules.push(e),
                    (true, Some(_)) => {
                        return Err(ApiError::conflict(
                            "InvalidPermission.Duplicate",
                            format!("the group already has the rule {e:?}"),
                        ))
                    }
                    (false, Some(i)) => {
                        rules.remove(i);
                    }
                    (false, None) => {
                        return Err(ApiError::new(
                            StatusCode::BAD_REQUEST,
                            "InvalidPermission.NotFound",
                            format!("the group has no rule {e:?}"),
                        ))
                    }
                }
            }
            check_quota(rules).map_err(|m| {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "RulesPerSecurityGroupLimitExceeded",
                    m,
                )
            })?;
            put(tx, &group)?;
            Ok(group)
        })
        .await?;
    // Live: every running instance the change touches gets it now.
    crate::supervisor::push_rules(&app).await;
    Ok(Json(group.into()))
}

/// The handler of one of the four rule routes: authorize (or revoke)
/// rules in `direction`.
pub fn rule_change(
    direction: Direction,
    authorize: bool,
) -> impl Fn(State<Arc<App>>, PathParam, Body<Permissions>) -> ChangeFuture + Clone + Send + Sync + 'static
{
    move |State(app), PathParam(id), Body(req)| Box::pin(change(app, id, direction, authorize, req))
}

/// What [`rule_change`]'s handlers return.
pub type ChangeFuture =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<Json<GroupView>, ApiError>> + Send>>;
