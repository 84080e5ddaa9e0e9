//! One API call: HTTP/1.1 over one TCP connection with hyper's
//! connection-level client, as the agent itself calls VMMs and report
//! receivers (`vmm_client`, `report::target`): a command makes one or two
//! calls, so a pooled client would buy nothing, and no new HTTP client
//! enters the dependency tree.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::net::TcpStream;

use super::endpoint::Endpoint;
use super::error::CliError;
use super::table::clean;
use super::token::Token;

/// Most of an answer read: the largest the API sends is a 1 MiB console
/// tail in JSON (escapes can double it).
const MAX_ANSWER_BYTES: usize = 8 << 20;
/// Most of a non-JSON error body repeated in a message.
const ERROR_BODY_CHARS: usize = 200;

/// What the agent answered.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub body: String,
}

/// The agent's API at one endpoint.
#[derive(Debug)]
pub struct Client {
    endpoint: Endpoint,
    token: Option<Token>,
    timeout: Duration,
}

impl Client {
    pub fn new(endpoint: Endpoint, token: Option<Token>, timeout: Duration) -> Self {
        Self {
            endpoint,
            token,
            timeout,
        }
    }

    /// `method path` with an optional JSON body; any 2xx is the reply, any
    /// other status the API's error.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Reply, CliError> {
        let reply = tokio::time::timeout(self.timeout, self.exchange(method, path, body))
            .await
            .map_err(|_| CliError::Timeout {
                endpoint: self.endpoint.to_string(),
                secs: self.timeout.as_secs(),
            })??;
        if (200..300).contains(&reply.status) {
            return Ok(reply);
        }
        let message = error_message(&reply);
        Err(match (reply.status, &self.token) {
            (401, None) => CliError::NoToken {
                default: super::token::default_file().display().to_string(),
            },
            (401, Some(token)) => CliError::Unauthorized {
                message,
                origin: token.origin().to_string(),
            },
            (status, _) => CliError::Api { status, message },
        })
    }

    async fn exchange(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Reply, CliError> {
        let endpoint = || self.endpoint.to_string();
        let http = |e: &dyn std::fmt::Display| CliError::Http {
            endpoint: endpoint(),
            message: e.to_string(),
        };
        let stream = TcpStream::connect(self.endpoint.host_port())
            .await
            .map_err(|source| CliError::Connect {
                endpoint: endpoint(),
                source,
            })?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| http(&e))?;
        let connection = tokio::spawn(async move {
            let _ = conn.await;
        });
        let mut req = Request::builder()
            .method(method)
            .uri(self.endpoint.target(path))
            .header("Host", self.endpoint.authority())
            .header("Accept", "application/json")
            .header("User-Agent", concat!("stratus/", env!("CARGO_PKG_VERSION")));
        if let Some(token) = &self.token {
            req = req.header("Authorization", token.header());
        }
        let bytes = match body {
            Some(v) => {
                req = req.header("Content-Type", "application/json");
                Bytes::from(v.to_string())
            }
            None => Bytes::new(),
        };
        let req = req.body(Full::new(bytes)).map_err(|e| http(&e))?;
        let result = async {
            let resp = sender.send_request(req).await.map_err(|e| http(&e))?;
            let status = resp.status().as_u16();
            let body = Limited::new(resp.into_body(), MAX_ANSWER_BYTES)
                .collect()
                .await
                .map_err(|e| http(&e))?
                .to_bytes();
            Ok(Reply {
                status,
                body: String::from_utf8_lossy(&body).into_owned(),
            })
        }
        .await;
        connection.abort();
        result
    }
}

/// The message of an error answer: the API's `error.message`, else the
/// start of whatever body there is (a proxy's page), else the status's
/// reason phrase. One line, without control characters.
fn error_message(reply: &Reply) -> String {
    let api = serde_json::from_str::<Value>(&reply.body)
        .ok()
        .and_then(|v| v["error"]["message"].as_str().map(str::to_string));
    if let Some(message) = api {
        return clean(&message);
    }
    let text: String = reply
        .body
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .chars()
        .take(ERROR_BODY_CHARS)
        .collect();
    if text.is_empty() {
        hyper::StatusCode::from_u16(reply.status)
            .ok()
            .and_then(|s| s.canonical_reason())
            .unwrap_or("no message")
            .to_string()
    } else {
        clean(&text)
    }
}

/// A path segment or query value, percent-encoded: ids are plain, but a
/// key pair's name may hold any printable character, and a tag filter
/// holds `=`.
pub fn encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_messages_come_from_the_api_else_the_body() {
        let reply = |status, body: &str| Reply {
            status,
            body: body.to_string(),
        };
        let r = reply(
            404,
            r#"{"error": {"code": "X.NotFound", "message": "subnet `s` does not exist"}}"#,
        );
        assert_eq!(error_message(&r), "subnet `s` does not exist");
        assert_eq!(
            error_message(&reply(502, "<html>\n bad\tgateway </html>")),
            "<html> bad gateway </html>"
        );
        assert_eq!(error_message(&reply(503, "")), "Service Unavailable");
        let r = reply(400, r#"{"error": {"message": "a\u001b[2Jb"}}"#);
        assert_eq!(error_message(&r), "a [2Jb");
    }

    #[test]
    fn segments_are_percent_encoded() {
        assert_eq!(encode("sg-0123abc"), "sg-0123abc");
        assert_eq!(encode("my key/1"), "my%20key%2F1");
        assert_eq!(encode("Name=web 1"), "Name%3Dweb%201");
        assert_eq!(encode("é"), "%C3%A9");
    }
}
