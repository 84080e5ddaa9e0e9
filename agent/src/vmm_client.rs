//! The agent's side of a VMM's control API: one HTTP/1.1 request per
//! connection over the VMM's Unix socket (hyper's client), with a
//! deadline. The agent reaches a VMM only this way and through its
//! process.

use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::Request;
use hyper_util::rt::TokioIo;
use tokio::net::UnixStream;

/// A failed call.
#[derive(Debug, thiserror::Error)]
pub enum VmmCallError {
    #[error("VMM API socket: {0}")]
    Connect(std::io::Error),
    #[error("VMM API: {0}")]
    Http(String),
    #[error("VMM API: no answer within {0:?}")]
    Timeout(Duration),
}

/// One call: (status, body).
pub async fn call(
    socket: &Path,
    method: &str,
    path: &str,
    body: Option<String>,
    timeout: Duration,
) -> Result<(u16, String), VmmCallError> {
    tokio::time::timeout(timeout, call_inner(socket, method, path, body))
        .await
        .map_err(|_| VmmCallError::Timeout(timeout))?
}

async fn call_inner(
    socket: &Path,
    method: &str,
    path: &str,
    body: Option<String>,
) -> Result<(u16, String), VmmCallError> {
    let stream = UnixStream::connect(socket)
        .await
        .map_err(VmmCallError::Connect)?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| VmmCallError::Http(e.to_string()))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let mut req = Request::builder()
        .method(method)
        .uri(path)
        .header("Host", "localhost")
        .header("Accept", "application/json");
    if body.is_some() {
        req = req.header("Content-Type", "application/json");
    }
    let req = req
        .body(Full::new(Bytes::from(body.unwrap_or_default())))
        .map_err(|e| VmmCallError::Http(e.to_string()))?;
    let resp = sender
        .send_request(req)
        .await
        .map_err(|e| VmmCallError::Http(e.to_string()))?;
    let status = resp.status().as_u16();
    let bytes = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| VmmCallError::Http(e.to_string()))?
        .to_bytes();
    Ok((status, String::from_utf8_lossy(&bytes).into_owned()))
}
