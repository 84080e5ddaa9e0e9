//! The API thread: hyper's HTTP/1.1 server on a current-thread tokio
//! runtime, listening on the Unix socket.
//!
//! The socket is created before any other thread starts, with mode 0600
//! (only the VMM's user may drive it), and removed when the server stops.
//! An existing file at the path is refused rather than replaced: it may be
//! another VMM's live socket.

use std::convert::Infallible;
use std::io::ErrorKind;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixListener as StdUnixListener;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, ACCEPT, CONTENT_TYPE};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;

use super::{route_request, ApiClient, ApiError, ApiResponse, MAX_BODY_BYTES};
use crate::runtime::MetricsSnapshot;

/// Errors setting up the API socket or thread.
#[derive(Debug, thiserror::Error)]
pub enum ApiServerError {
    /// Something already exists at the socket path.
    #[error("API socket {0} already exists (another VMM's socket, or a stale one to remove)")]
    Exists(PathBuf),
    /// The socket could not be created.
    #[error("cannot create API socket {path}: {source}")]
    Bind {
        /// The path.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The API thread or its runtime could not be started.
    #[error("cannot start the API thread: {0}")]
    Start(std::io::Error),
}

/// Creates the listening socket at `path` with mode 0600.
pub fn bind_api_socket(path: &Path) -> Result<StdUnixListener, ApiServerError> {
    if std::fs::symlink_metadata(path).is_ok() {
        return Err(ApiServerError::Exists(path.to_path_buf()));
    }
    let bind_err = |source| ApiServerError::Bind {
        path: path.to_path_buf(),
        source,
    };
    // The umask decides the mode bind() gives the socket; narrowing it
    // around the call leaves no window where the socket is more open than
    // 0600. This runs before any other thread exists, so changing the
    // process-wide umask races with nothing.
    // SAFETY: umask only swaps an integer in the process's state.
    let old = unsafe { libc::umask(0o177) };
    let listener = StdUnixListener::bind(path);
    // SAFETY: as above, restoring the previous value.
    unsafe { libc::umask(old) };
    let listener = listener.map_err(bind_err)?;
    // Belt and braces: the mode is what we promise whatever the umask did.
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(bind_err)?;
    listener.set_nonblocking(true).map_err(bind_err)?;
    Ok(listener)
}

/// The running API thread.
#[derive(Debug)]
pub struct ApiServer {
    path: PathBuf,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl ApiServer {
    /// Serves `listener` (bound at `path`) on a new thread, forwarding
    /// every request through `client`.
    pub fn spawn(
        path: PathBuf,
        listener: StdUnixListener,
        client: ApiClient,
    ) -> Result<Self, ApiServerError> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .enable_time()
            .build()
            .map_err(ApiServerError::Start)?;
        let (shutdown, stop) = tokio::sync::oneshot::channel();
        let thread = std::thread::Builder::new()
            .name("api".into())
            .spawn(move || runtime.block_on(serve(listener, Arc::new(client), stop)))
            .map_err(ApiServerError::Start)?;
        Ok(Self {
            path,
            shutdown: Some(shutdown),
            thread: Some(thread),
        })
    }

    /// Stops serving, joins the thread and removes the socket.
    pub fn stop(mut self) {
        self.shutdown_now();
    }

    fn shutdown_now(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(thread) = self.thread.take() {
            if thread.join().is_err() {
                log::error!("API thread panicked");
            }
        }
        match std::fs::remove_file(&self.path) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => log::warn!("cannot remove API socket {}: {e}", self.path.display()),
        }
    }
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        self.shutdown_now();
    }
}

async fn serve(
    listener: StdUnixListener,
    client: Arc<ApiClient>,
    mut stop: tokio::sync::oneshot::Receiver<()>,
) {
    let listener = match tokio::net::UnixListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            log::error!("API socket unusable: {e}");
            return;
        }
    };
    let mut connections = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            _ = &mut stop => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let client = client.clone();
                    connections.spawn(async move {
                        let service = service_fn(move |req| handle(client.clone(), req));
                        if let Err(e) = http1::Builder::new()
                            .serve_connection(TokioIo::new(stream), service)
                            .await
                        {
                            log::debug!("API connection ended: {e}");
                        }
                    });
                }
                Err(e) => {
                    log::warn!("API socket accept failed: {e}");
                    tokio::task::yield_now().await;
                }
            },
            // Reap finished connections so the set does not grow.
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    // An answer already given (the 204 to the action that stops the VMM)
    // must still reach its client: open connections get a moment to write
    // it before they are dropped.
    let grace = tokio::time::sleep(STOP_GRACE);
    tokio::pin!(grace);
    while !connections.is_empty() {
        tokio::select! {
            _ = &mut grace => break,
            _ = connections.join_next() => {}
        }
    }
    connections.abort_all();
}

/// How long stopping waits for connections that are still writing.
const STOP_GRACE: std::time::Duration = std::time::Duration::from_millis(500);

/// Whether the client asked for JSON rather than Prometheus text.
fn wants_json(req: &Request<Incoming>) -> bool {
    req.headers()
        .get(ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("application/json"))
}

async fn handle(
    client: Arc<ApiClient>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let json_metrics = wants_json(&req);
    let method = req.method().as_str().to_owned();
    let path = req.uri().path().to_owned();
    let query = req.uri().query().map(str::to_owned);
    let body = match Limited::new(req.into_body(), MAX_BODY_BYTES)
        .collect()
        .await
    {
        Ok(collected) => collected.to_bytes(),
        Err(_) => {
            return Ok(error_response(&ApiError {
                status: 413,
                message: format!("request body larger than {MAX_BODY_BYTES} bytes"),
            }))
        }
    };
    let request = match route_request(&method, &path, query.as_deref(), &body) {
        Ok(r) => r,
        Err(e) => return Ok(error_response(&e)),
    };
    let answer = match client.send(request).await {
        Ok(answer) => answer,
        Err(_) => Err(ApiError {
            status: 503,
            message: "the VMM is shutting down".into(),
        }),
    };
    Ok(match answer {
        Ok(response) => ok_response(response, json_metrics),
        Err(e) => error_response(&e),
    })
}

fn with_type(status: StatusCode, content_type: &'static str, body: Bytes) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

fn ok_response(response: ApiResponse, json_metrics: bool) -> Response<Full<Bytes>> {
    match response {
        ApiResponse::NoContent => {
            let mut r = Response::new(Full::new(Bytes::new()));
            *r.status_mut() = StatusCode::NO_CONTENT;
            r
        }
        ApiResponse::Json(value) => with_type(
            StatusCode::OK,
            "application/json",
            Bytes::from(value.to_string()),
        ),
        ApiResponse::Metrics(snapshot) => metrics_response(&snapshot, json_metrics),
        ApiResponse::Console(bytes) => with_type(
            StatusCode::OK,
            "application/octet-stream",
            Bytes::from(bytes),
        ),
    }
}

fn metrics_response(snapshot: &MetricsSnapshot, json: bool) -> Response<Full<Bytes>> {
    if json {
        match serde_json::to_vec(snapshot) {
            Ok(body) => with_type(StatusCode::OK, "application/json", Bytes::from(body)),
            Err(e) => error_response(&ApiError::internal(format!("metrics: {e}"))),
        }
    } else {
        with_type(
            StatusCode::OK,
            "text/plain; version=0.0.4",
            Bytes::from(snapshot.to_prometheus()),
        )
    }
}

fn error_response(e: &ApiError) -> Response<Full<Bytes>> {
    let status = StatusCode::from_u16(e.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let body = serde_json::json!({ "fault_message": e.message }).to_string();
    with_type(status, "application/json", Bytes::from(body))
}
