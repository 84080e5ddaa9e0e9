//! HTTP method + path (+ query and body) → [`ApiRequest`].
//!
//! [`ROUTES`] lists every route once; the router matches against it and a
//! test holds it equal to the paths and methods of the checked-in OpenAPI
//! document, so neither can change without the other.

use serde::de::DeserializeOwned;

use super::{Action, ApiError, ApiRequest, DriveUpdate, VmStateChange};
use crate::console::CONSOLE_RING_BYTES;

/// A route: method and path template (`{name}` is one path segment).
pub type RouteTable = &'static [(&'static str, &'static str)];

/// Every route the API serves.
pub const ROUTES: RouteTable = &[
    ("GET", "/"),
    ("GET", "/vm/config"),
    ("PATCH", "/vm"),
    ("PUT", "/actions"),
    ("GET", "/metrics"),
    ("GET", "/console"),
    ("PATCH", "/drives/{drive_id}"),
    ("PUT", "/network-interfaces/{nic_id}/security-groups"),
    ("PUT", "/metadata"),
];

/// Matches `path` against a template; returns the `{…}` segment values.
fn match_template<'a>(template: &str, path: &'a str) -> Option<Vec<&'a str>> {
    let mut values = Vec::new();
    let mut t = template.split('/');
    let mut p = path.split('/');
    loop {
        match (t.next(), p.next()) {
            (None, None) => return Some(values),
            (Some(ts), Some(ps)) if ts.starts_with('{') && ts.ends_with('}') => {
                if ps.is_empty() {
                    return None;
                }
                values.push(ps);
            }
            (Some(ts), Some(ps)) if ts == ps => {}
            _ => return None,
        }
    }
}

fn json<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    if body.is_empty() {
        return Err(ApiError::bad_request("this request needs a JSON body"));
    }
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("invalid request body: {e}")))
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct StateBody {
    state: VmStateChange,
}

/// Firecracker action types that exist there but mean nothing here.
const FIRECRACKER_ONLY_ACTIONS: &[&str] = &["InstanceStart", "FlushMetrics"];

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ActionBody {
    action_type: String,
}

fn action(body: &[u8]) -> Result<Action, ApiError> {
    let body: ActionBody = json(body)?;
    match body.action_type.as_str() {
        "SendCtrlAltDel" => Ok(Action::SendCtrlAltDel),
        "Shutdown" => Ok(Action::Shutdown),
        "Reboot" => Ok(Action::Reboot),
        other if FIRECRACKER_ONLY_ACTIONS.contains(&other) => Err(ApiError::bad_request(format!(
            "action {other} is not supported: stratus-vmm starts the VM at launch and serves metrics on GET /metrics"
        ))),
        other => Err(ApiError::bad_request(format!(
            "unknown action_type {other:?}: expected SendCtrlAltDel, Shutdown or Reboot"
        ))),
    }
}

fn console_bytes(query: Option<&str>) -> Result<usize, ApiError> {
    let mut bytes = CONSOLE_RING_BYTES;
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        match pair.split_once('=') {
            Some(("bytes", n)) => {
                bytes = n.parse().map_err(|_| {
                    ApiError::bad_request(format!(
                        "bytes must be a non-negative integer, got {n:?}"
                    ))
                })?;
            }
            _ => {
                return Err(ApiError::bad_request(format!(
                    "unknown query parameter {pair:?} (only bytes=N)"
                )))
            }
        }
    }
    Ok(bytes)
}

/// Turns an HTTP request into an [`ApiRequest`], or the 4xx to answer.
pub fn route_request(
    method: &str,
    path: &str,
    query: Option<&str>,
    body: &[u8],
) -> Result<ApiRequest, ApiError> {
    let mut path_known = false;
    for &(route_method, template) in ROUTES {
        let Some(values) = match_template(template, path) else {
            continue;
        };
        path_known = true;
        if route_method != method {
            continue;
        }
        if template != "/console" && query.is_some_and(|q| !q.is_empty()) {
            return Err(ApiError::bad_request(format!(
                "{path} takes no query parameters"
            )));
        }
        return match template {
            "/" => Ok(ApiRequest::Describe),
            "/vm/config" => Ok(ApiRequest::GetConfig),
            "/vm" => json::<StateBody>(body).map(|b| ApiRequest::ChangeState(b.state)),
            "/actions" => action(body).map(ApiRequest::Act),
            "/metrics" => Ok(ApiRequest::Metrics),
            "/console" => console_bytes(query).map(|bytes| ApiRequest::Console { bytes }),
            "/network-interfaces/{nic_id}/security-groups" => {
                let id = values.first().copied().unwrap_or_default().to_string();
                Ok(ApiRequest::SetSecurityGroups {
                    id,
                    config: Box::new(json(body)?),
                })
            }
            "/metadata" => Ok(ApiRequest::SetMetadata(Box::new(json(body)?))),
            "/drives/{drive_id}" => {
                let id = values.first().copied().unwrap_or_default().to_string();
                let update: DriveUpdate = json(body)?;
                if update.drive_id.as_deref().is_some_and(|d| d != id) {
                    return Err(ApiError::bad_request(format!(
                        "drive_id in the body ({:?}) differs from the path ({id:?})",
                        update.drive_id.unwrap_or_default()
                    )));
                }
                Ok(ApiRequest::UpdateDrive { id, update })
            }
            _ => Err(ApiError::internal(format!(
                "route {template} has no handler"
            ))),
        };
    }
    if path_known {
        Err(ApiError {
            status: 405,
            message: format!("method {method} is not allowed on {path}"),
        })
    } else {
        Err(ApiError::not_found(format!("no such resource: {path}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    fn route(method: &str, path: &str, body: &str) -> Result<ApiRequest, ApiError> {
        route_request(method, path, None, body.as_bytes())
    }

    #[test]
    fn routes_firecrackers_paths_and_shapes() {
        assert_eq!(route("GET", "/", ""), Ok(ApiRequest::Describe));
        assert_eq!(
            route("PATCH", "/vm", r#"{"state": "Paused"}"#),
            Ok(ApiRequest::ChangeState(VmStateChange::Paused))
        );
        assert_eq!(
            route("PATCH", "/vm", r#"{"state": "Resumed"}"#),
            Ok(ApiRequest::ChangeState(VmStateChange::Resumed))
        );
        assert_eq!(
            route("PUT", "/actions", r#"{"action_type": "SendCtrlAltDel"}"#),
            Ok(ApiRequest::Act(Action::SendCtrlAltDel))
        );
        assert_eq!(
            route_request("GET", "/console", Some("bytes=10"), b""),
            Ok(ApiRequest::Console { bytes: 10 })
        );
        assert!(matches!(
            route("PATCH", "/drives/rootfs", r#"{"drive_id": "rootfs"}"#),
            Ok(ApiRequest::UpdateDrive { id, .. }) if id == "rootfs"
        ));
    }

    #[test]
    fn bad_requests_are_4xx_with_a_reason() {
        let status = |r: Result<ApiRequest, ApiError>| r.unwrap_err().status;
        assert_eq!(status(route("GET", "/nope", "")), 404);
        assert_eq!(status(route("DELETE", "/vm", "")), 405);
        assert_eq!(status(route("PATCH", "/vm", "")), 400);
        assert_eq!(status(route("PATCH", "/vm", r#"{"state": "Off"}"#)), 400);
        assert_eq!(
            status(route("PATCH", "/vm", r#"{"state": "Paused", "x": 1}"#)),
            400
        );
        assert_eq!(status(route("PUT", "/actions", "{")), 400);
        assert_eq!(
            status(route(
                "PUT",
                "/actions",
                r#"{"action_type": "InstanceStart"}"#
            )),
            400
        );
        assert_eq!(
            status(route_request("GET", "/console", Some("bytes=-1"), b"")),
            400
        );
        assert_eq!(
            status(route_request("GET", "/console", Some("lines=3"), b"")),
            400
        );
        assert_eq!(status(route_request("GET", "/", Some("a=b"), b"")), 400);
        assert_eq!(
            status(route(
                "PATCH",
                "/drives/a",
                r#"{"drive_id": "b", "rate_limiter": null}"#
            )),
            400
        );
        assert_eq!(status(route("PATCH", "/drives/", "{}")), 404);
        let e = route("PATCH", "/vm", r#"{"state": "Off"}"#).unwrap_err();
        assert!(e.message.contains("unknown variant"), "{}", e.message);
    }

    /// The checked-in OpenAPI document and the router agree route for route.
    #[test]
    fn openapi_document_matches_the_routes() {
        let doc: serde_json::Value = serde_json::from_str(super::super::OPENAPI_JSON).unwrap();
        let mut documented = BTreeSet::new();
        for (path, item) in doc["paths"].as_object().expect("paths") {
            for method in item.as_object().expect("path item").keys() {
                if ["get", "put", "patch", "post", "delete", "head"].contains(&method.as_str()) {
                    documented.insert((method.to_uppercase(), path.clone()));
                }
            }
        }
        let served: BTreeSet<(String, String)> = ROUTES
            .iter()
            .map(|(m, p)| (m.to_string(), p.to_string()))
            .collect();
        assert_eq!(documented, served, "openapi.json and ROUTES disagree");
        // Every documented operation routes to a handler (no "no handler").
        for (method, path) in &served {
            let concrete = path.replace("{drive_id}", "d");
            if let Err(e) = route_request(method, &concrete, None, b"") {
                assert_ne!(e.status, 500, "{method} {path}: {}", e.message);
            }
        }
    }
}
