//! The HTTP/JSON API under `/v1` (axum): the routes, bearer-token
//! authentication, per-route metrics and error bodies. [`ROUTES`] lists
//! every route once; a test holds it equal to `openapi.json`.

mod health;
mod identity;
mod images;
mod instances;
mod key_pairs;
mod security_groups;
mod subnets;

pub use health::document as health_document;
pub use subnets::reconcile_bridges as reconcile;

use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, FromRequestParts, MatchedPath, Request, State};
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::Router;
use serde::de::DeserializeOwned;

use crate::error::ApiError;
use crate::metrics::ApiMetrics;
use crate::model::security_group::Direction;
use crate::store::{Reader, Store, Tx};

/// The OpenAPI document of this API.
pub const OPENAPI_JSON: &str = include_str!("openapi.json");

/// Every route: method and path template.
pub const ROUTES: &[(&str, &str)] = &[
    ("GET", "/v1/health"),
    ("GET", "/metrics"),
    ("GET", "/v1/images"),
    ("POST", "/v1/images"),
    ("GET", "/v1/images/{image_id}"),
    ("DELETE", "/v1/images/{image_id}"),
    ("GET", "/v1/subnets"),
    ("POST", "/v1/subnets"),
    ("GET", "/v1/subnets/{subnet_id}"),
    ("DELETE", "/v1/subnets/{subnet_id}"),
    ("GET", "/v1/key-pairs"),
    ("POST", "/v1/key-pairs"),
    ("GET", "/v1/key-pairs/{key_name}"),
    ("DELETE", "/v1/key-pairs/{key_name}"),
    ("GET", "/v1/security-groups"),
    ("POST", "/v1/security-groups"),
    ("GET", "/v1/security-groups/{group_id}"),
    ("DELETE", "/v1/security-groups/{group_id}"),
    ("POST", "/v1/security-groups/{group_id}/authorize-ingress"),
    ("POST", "/v1/security-groups/{group_id}/revoke-ingress"),
    ("POST", "/v1/security-groups/{group_id}/authorize-egress"),
    ("POST", "/v1/security-groups/{group_id}/revoke-egress"),
    ("GET", "/v1/instances"),
    ("POST", "/v1/instances"),
    ("GET", "/v1/instances/{instance_id}"),
    ("POST", "/v1/instances/{instance_id}/stop"),
    ("POST", "/v1/instances/{instance_id}/start"),
    ("POST", "/v1/instances/{instance_id}/reboot"),
    ("POST", "/v1/instances/{instance_id}/terminate"),
    ("GET", "/v1/instances/{instance_id}/console"),
    ("PUT", "/v1/instances/{instance_id}/security-groups"),
    ("GET", "/v1/identity-certificate"),
];

/// Routes anyone may call: a load balancer's or a monitor's probes, and
/// the public certificate guests check identity documents with (see
/// [`identity::certificate`]).
const OPEN_ROUTES: &[&str] = &["/v1/health", "/metrics", "/v1/identity-certificate"];

/// What every handler shares.
#[derive(Debug)]
pub struct App {
    /// Writes, and reads that guard a write.
    pub store: Arc<Mutex<Store>>,
    /// Reads alone (describes, health): never behind a writer.
    pub reader: Arc<Mutex<Reader>>,
    pub metrics: Mutex<ApiMetrics>,
    /// The bearer token; `None` only in tests of the API's own plumbing.
    pub token: Option<String>,
    pub started: Instant,
    pub supervisor: crate::supervisor::Supervisor,
    /// VMMs found running at start and watched again.
    pub adopted: std::sync::atomic::AtomicU64,
    /// Security-group documents handed to running VMMs.
    pub rule_pushes: std::sync::atomic::AtomicU64,
    /// When each instance's system check started failing.
    pub impaired_since: Mutex<std::collections::HashMap<String, String>>,
    /// Reporting upward, when a report URL is set.
    pub reporting: Option<Arc<crate::report::Reporting>>,
    /// Starts the VMMs of queued (`pending`) instances.
    pub launcher: crate::launcher::Launcher,
}

impl App {
    /// Runs `f` in a write transaction, off the async threads (a commit
    /// waits for the disk).
    pub async fn write<T: Send + 'static>(
        self: &Arc<Self>,
        f: impl FnOnce(&mut Tx<'_>) -> Result<T, ApiError> + Send + 'static,
    ) -> Result<T, ApiError> {
        let store = Arc::clone(&self.store);
        off_async_threads(move || lock(&store).write(f)).await
    }

    /// Runs `f` in a read transaction on the reading connection: it sees
    /// every write committed before it began and waits for none.
    pub async fn read<T: Send + 'static>(
        self: &Arc<Self>,
        f: impl FnOnce(&mut Tx<'_>) -> Result<T, ApiError> + Send + 'static,
    ) -> Result<T, ApiError> {
        let reader = Arc::clone(&self.reader);
        off_async_threads(move || lock(&reader).read(f)).await
    }
}

/// Runs `f` on tokio's blocking pool: database calls wait for the disk
/// (and for each other), which must not stall the threads serving requests.
async fn off_async_threads<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f).await.map_err(|e| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalError",
            e.to_string(),
        )
    })?
}

/// A database connection's lock; a panic while it was held leaves the
/// connection in a valid state (SQLite rolls back an unfinished
/// transaction).
pub fn lock<C>(store: &Mutex<C>) -> std::sync::MutexGuard<'_, C> {
    store
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A JSON body whose rejections (not JSON, wrong fields, unknown fields)
/// are 400s in the API's error format.
#[derive(Debug)]
pub struct Body<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for Body<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(v)) => Ok(Body(v)),
            Err(e) => Err(rejection(e)),
        }
    }
}

fn rejection(e: JsonRejection) -> ApiError {
    let status = match e {
        JsonRejection::MissingJsonContentType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
        JsonRejection::BytesRejection(_) => StatusCode::PAYLOAD_TOO_LARGE,
        _ => StatusCode::BAD_REQUEST,
    };
    ApiError::new(status, "InvalidRequest", e.body_text())
}

/// A query string whose rejections (a parameter the route does not take,
/// a value of the wrong type, bytes that are not UTF-8) are 400s in the
/// API's error format; axum's own `Query` answers those in plain text.
#[derive(Debug)]
pub struct Params<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for Params<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(v)) => Ok(Params(v)),
            Err(e) => Err(ApiError::new(e.status(), "InvalidRequest", e.body_text())),
        }
    }
}

/// The query of a route that takes no parameters: any is refused (as
/// the routes with parameters refuse ones they do not know), so that a
/// misspelt filter is not silently ignored and answered with everything.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NoParams {}

/// The one path parameter of a route, as text, whose rejection (bytes
/// that are not UTF-8 once percent-decoded) is a 400 in the API's error
/// format; axum's own `Path` answers it in plain text.
#[derive(Debug)]
pub struct PathParam(pub String);

impl<S: Send + Sync> FromRequestParts<S> for PathParam {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Path::<String>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(v)) => Ok(PathParam(v)),
            // 400 for the client's bytes; a route wired wrongly stays 500.
            Err(e) => Err(ApiError::new(e.status(), "InvalidRequest", e.body_text())),
        }
    }
}

/// The router with every route, authentication and metrics.
pub fn router(app: Arc<App>) -> Router {
    let v1 = Router::new()
        .route("/v1/health", get(health::health))
        .route("/metrics", get(health::metrics))
        .route("/v1/images", get(images::list).post(images::register))
        .route(
            "/v1/images/{image_id}",
            get(images::describe).delete(images::deregister),
        )
        .route("/v1/subnets", get(subnets::list).post(subnets::create))
        .route(
            "/v1/subnets/{subnet_id}",
            get(subnets::describe).delete(subnets::delete),
        )
        .route(
            "/v1/key-pairs",
            get(key_pairs::list).post(key_pairs::import),
        )
        .route(
            "/v1/key-pairs/{key_name}",
            get(key_pairs::describe).delete(key_pairs::delete),
        )
        .route(
            "/v1/security-groups",
            get(security_groups::list).post(security_groups::create),
        )
        .route(
            "/v1/security-groups/{group_id}",
            get(security_groups::describe).delete(security_groups::delete),
        )
        .route(
            "/v1/security-groups/{group_id}/authorize-ingress",
            post(security_groups::rule_change(Direction::Ingress, true)),
        )
        .route(
            "/v1/security-groups/{group_id}/revoke-ingress",
            post(security_groups::rule_change(Direction::Ingress, false)),
        )
        .route(
            "/v1/security-groups/{group_id}/authorize-egress",
            post(security_groups::rule_change(Direction::Egress, true)),
        )
        .route(
            "/v1/security-groups/{group_id}/revoke-egress",
            post(security_groups::rule_change(Direction::Egress, false)),
        )
        .route("/v1/instances", get(instances::list).post(instances::run))
        .route("/v1/instances/{instance_id}", get(instances::describe))
        .route("/v1/instances/{instance_id}/stop", post(instances::stop))
        .route("/v1/instances/{instance_id}/start", post(instances::start))
        .route(
            "/v1/instances/{instance_id}/reboot",
            post(instances::reboot),
        )
        .route(
            "/v1/instances/{instance_id}/terminate",
            post(instances::terminate),
        )
        .route(
            "/v1/instances/{instance_id}/console",
            get(instances::console),
        )
        .route(
            "/v1/instances/{instance_id}/security-groups",
            put(instances::modify_security_groups),
        )
        .route("/v1/identity-certificate", get(identity::certificate));
    v1.fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(
            Arc::clone(&app),
            authenticate,
        ))
        .layer(middleware::from_fn_with_state(Arc::clone(&app), measure))
        .layer(axum::extract::DefaultBodyLimit::max(1 << 20))
        .with_state(app)
}

async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "UnknownRoute", "no such route")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "UnsupportedOperation",
        "this route does not take that method",
    )
}

/// Refuses requests without the bearer token (but on [`OPEN_ROUTES`]).
async fn authenticate(State(app): State<Arc<App>>, req: Request, next: Next) -> Response {
    let open = OPEN_ROUTES.contains(&req.uri().path());
    if let (Some(token), false) = (&app.token, open) {
        let given = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        if !given.is_some_and(|g| constant_time_eq(g.as_bytes(), token.as_bytes())) {
            return ApiError::new(
                StatusCode::UNAUTHORIZED,
                "AuthFailure",
                "missing or wrong bearer token (Authorization: Bearer …)",
            )
            .into_response();
        }
    }
    next.run(req).await
}

/// Equality that takes as long whatever the first differing byte.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Counts requests and their durations by route template.
async fn measure(State(app): State<Arc<App>>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", MatchedPath::as_str)
        .to_string();
    let start = Instant::now();
    let response = next.run(req).await;
    let seconds = start.elapsed().as_secs_f64();
    app.metrics
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .record(&route, response.status().as_u16(), seconds);
    response
}

/// Refuses `id` unless it has the form of an id of `kind`, with EC2's
/// `….Malformed` code for it.
pub fn checked_id(
    kind: crate::model::ids::Kind,
    code: &'static str,
    id: &str,
) -> Result<(), ApiError> {
    if crate::model::ids::is_valid(kind, id) {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            code,
            format!("`{id}` is not an id of the form {}…", kind.prefix()),
        ))
    }
}

/// Today's date and time in RFC 3339 (UTC), for `created_at`.
pub fn now_rfc3339() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (h, m, s) = (rem / 3600, rem % 3600 / 60, rem % 60);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = i64::try_from(days).unwrap_or(0) + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{d:02}T{h:02}:{m:02}:{s:02}Z")
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    #[test]
    fn openapi_document_matches_the_routes() {
        let doc: serde_json::Value = serde_json::from_str(OPENAPI_JSON).unwrap();
        let mut documented = BTreeSet::new();
        for (path, item) in doc["paths"].as_object().expect("paths") {
            for method in item.as_object().expect("path item").keys() {
                if ["get", "put", "patch", "post", "delete"].contains(&method.as_str()) {
                    documented.insert((method.to_uppercase(), path.clone()));
                }
            }
        }
        let served: BTreeSet<(String, String)> = ROUTES
            .iter()
            .map(|(m, p)| (m.to_string(), p.to_string()))
            .collect();
        assert_eq!(documented, served, "openapi.json and ROUTES disagree");
    }

    #[test]
    fn dates_are_rfc3339() {
        let now = now_rfc3339();
        assert_eq!(now.len(), 20, "{now}");
        assert!(now.starts_with("20") && now.ends_with('Z'), "{now}");
    }
}
