//! Where reports go: a plain `http://` URL, checked when the agent starts
//! (a typo should stop it at once, not show up as failed deliveries an
//! hour later), and one POST to it per report over hyper's connection-
//! level client, a connection per report as for the VMMs' API: at one
//! report every few seconds a pool would save nothing. Only plain HTTP:
//! the agent has no TLS stack, so an `https://` URL is refused rather
//! than sent in the clear.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::{Request, Uri};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::http_url::{check_http_url, UrlProblem};

/// Why a `--report-url` is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TargetError {
    #[error("--report-url {0:?} is not a URL")]
    NotAUrl(String),
    #[error(
        "--report-url {0:?}: https is not supported (the agent has no TLS stack); give an http:// URL"
    )]
    Https(String),
    #[error("--report-url {url:?}: scheme `{scheme}` is not supported; give an http:// URL")]
    Scheme { url: String, scheme: String },
    #[error("--report-url {0:?} has no scheme; give an http:// URL")]
    NoScheme(String),
    #[error("--report-url {0:?} has no host")]
    NoHost(String),
    /// The URL itself is not repeated: it holds a password.
    #[error("--report-url: credentials in the URL (user:password@) are not supported")]
    UserInfo,
}

/// A checked report URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    uri: Uri,
}

impl Target {
    /// Accepts `http://HOST[:PORT][/PATH][?QUERY]` only.
    pub fn parse(url: &str) -> Result<Self, TargetError> {
        let uri = check_http_url(url).map_err(|problem| match problem {
            UrlProblem::NotAUrl => TargetError::NotAUrl(url.to_string()),
            UrlProblem::Https => TargetError::Https(url.to_string()),
            UrlProblem::Scheme(scheme) => TargetError::Scheme {
                url: url.to_string(),
                scheme,
            },
            UrlProblem::NoScheme => TargetError::NoScheme(url.to_string()),
            UrlProblem::NoHost => TargetError::NoHost(url.to_string()),
            UrlProblem::UserInfo => TargetError::UserInfo,
        })?;
        Ok(Self { uri })
    }

    /// The URL as given (checked).
    pub fn url(&self) -> String {
        self.uri.to_string()
    }

    /// The host and port to connect to; an IPv6 host loses its brackets.
    fn host_port(&self) -> (String, u16) {
        let authority = self.uri.authority();
        let host = authority.map_or("", |a| a.host());
        let host = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        (
            host.to_string(),
            authority.and_then(|a| a.port_u16()).unwrap_or(80),
        )
    }
}

/// Why one delivery failed.
#[derive(Debug, thiserror::Error)]
pub enum PostError {
    #[error("cannot connect to {host}:{port}: {source}")]
    Connect {
        host: String,
        port: u16,
        source: std::io::Error,
    },
    #[error("HTTP: {0}")]
    Http(String),
    #[error("the receiver answered {status}: {body}")]
    Status { status: u16, body: String },
    #[error("no answer within {0:?}")]
    Timeout(Duration),
}

/// Most of a refusal's body kept for `last_error`: enough to say why.
const ERROR_BODY_CHARS: usize = 200;
/// Most of an answer's body read at all.
const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// POSTs `body` (JSON) to `target`; any 2xx is a delivery.
pub async fn post(target: &Target, body: Bytes, timeout: Duration) -> Result<(), PostError> {
    tokio::time::timeout(timeout, post_inner(target, body))
        .await
        .map_err(|_| PostError::Timeout(timeout))?
}

async fn post_inner(target: &Target, body: Bytes) -> Result<(), PostError> {
    let (host, port) = target.host_port();
    let stream = TcpStream::connect((host.as_str(), port))
        .await
        .map_err(|source| PostError::Connect {
            host: host.clone(),
            port,
            source,
        })?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| PostError::Http(e.to_string()))?;
    let connection = tokio::spawn(async move {
        let _ = conn.await;
    });
    let path = target
        .uri
        .path_and_query()
        .map_or("/", hyper::http::uri::PathAndQuery::as_str);
    let authority = target.uri.authority().map_or("", |a| a.as_str());
    let req = Request::builder()
        .method("POST")
        .uri(path)
        .header("Host", authority)
        .header("Content-Type", "application/json")
        .header(
            "User-Agent",
            concat!("stratus-agent/", env!("CARGO_PKG_VERSION")),
        )
        .body(Full::new(body))
        .map_err(|e| PostError::Http(e.to_string()))?;
    let result = async {
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| PostError::Http(e.to_string()))?;
        let status = resp.status();
        if status.is_success() {
            return Ok(());
        }
        // The body only to say why; a receiver that sends a lot or
        // never finishes does not hold the pusher (the timeout above).
        let text = match Limited::new(resp.into_body(), MAX_ANSWER_BYTES)
            .collect()
            .await
        {
            Ok(b) => String::from_utf8_lossy(&b.to_bytes()).into_owned(),
            Err(_) => String::new(),
        };
        let one_line: String = text
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
            .chars()
            .take(ERROR_BODY_CHARS)
            .collect();
        Err(PostError::Status {
            status: status.as_u16(),
            body: one_line,
        })
    }
    .await;
    connection.abort();
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_http_urls_with_a_host_are_taken() {
        let t = Target::parse("http://127.0.0.1:9000/v1/reports?host=a").unwrap();
        assert_eq!(t.host_port(), ("127.0.0.1".to_string(), 9000));
        assert_eq!(t.url(), "http://127.0.0.1:9000/v1/reports?host=a");
        assert_eq!(
            Target::parse("HTTP://collector").unwrap().host_port(),
            ("collector".to_string(), 80)
        );
        assert_eq!(
            Target::parse("http://[::1]:8080/").unwrap().host_port(),
            ("::1".to_string(), 8080)
        );
        assert!(matches!(
            Target::parse("https://collector/"),
            Err(TargetError::Https(_))
        ));
        assert!(matches!(
            Target::parse("ftp://x"),
            Err(TargetError::Scheme { .. })
        ));
        assert!(matches!(
            Target::parse("not a url"),
            Err(TargetError::NotAUrl(_))
        ));
        assert!(matches!(Target::parse(""), Err(TargetError::NotAUrl(_))));
        assert!(matches!(
            Target::parse("collector:8080"),
            Err(TargetError::NoScheme(_) | TargetError::Scheme { .. })
        ));
        assert!(matches!(
            Target::parse("/v1/reports"),
            Err(TargetError::NoScheme(_))
        ));
        assert!(Target::parse("http://").is_err());
        assert!(Target::parse("http:///path").is_err());
        let e = Target::parse("http://u:secret@collector/").unwrap_err();
        assert_eq!(e, TargetError::UserInfo);
        assert!(!e.to_string().contains("secret"));
        // Every message is one line, whatever was given.
        let e = Target::parse("http://a\nb").unwrap_err().to_string();
        assert!(!e.contains('\n'), "{e}");
    }
}
