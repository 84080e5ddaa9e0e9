//! Where the agent is: `http://HOST[:PORT][/PREFIX]`, or `HOST:PORT` as
//! the agent's own `--listen` is written (so the value of one can be
//! pasted into the other). Plain HTTP only: the agent serves no TLS and
//! the client has no TLS stack, so an `https://` URL is refused rather
//! than tried in the clear.

use stratus_agent::http_url::{check_http_url, UrlProblem};

/// Why an endpoint is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EndpointError {
    #[error("{0:?} is not a URL")]
    NotAUrl(String),
    #[error("{0:?}: https is not supported (the agent serves plain HTTP); give http://")]
    Https(String),
    #[error("{url:?}: scheme `{scheme}` is not supported; give http://")]
    Scheme { url: String, scheme: String },
    #[error("{0:?} has no host")]
    NoHost(String),
    /// The URL is not repeated: it holds a password.
    #[error("credentials in the URL (user:password@) are not supported")]
    UserInfo,
    #[error("{0:?}: a query string has no meaning here")]
    Query(String),
}

/// A checked endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// Host to connect to (an IPv6 address without its brackets).
    host: String,
    port: u16,
    /// The `Host` header: the authority as given.
    authority: String,
    /// A path prefix (no trailing slash; empty for none), for an agent
    /// behind a reverse proxy.
    prefix: String,
}

/// The endpoint when neither `--endpoint` nor `STRATUS_ENDPOINT` is given:
/// the agent's default `--listen`.
pub const DEFAULT: &str = "http://127.0.0.1:8470";

impl Endpoint {
    pub fn parse(text: &str) -> Result<Self, EndpointError> {
        let text = text.trim();
        let url = if text.contains("://") {
            text.to_string()
        } else {
            format!("http://{text}")
        };
        let uri = check_http_url(&url).map_err(|problem| match problem {
            UrlProblem::NotAUrl | UrlProblem::NoScheme => EndpointError::NotAUrl(text.to_string()),
            UrlProblem::Https => EndpointError::Https(text.to_string()),
            UrlProblem::Scheme(scheme) => EndpointError::Scheme {
                url: text.to_string(),
                scheme,
            },
            UrlProblem::NoHost => EndpointError::NoHost(text.to_string()),
            UrlProblem::UserInfo => EndpointError::UserInfo,
        })?;
        let authority = uri
            .authority()
            .ok_or_else(|| EndpointError::NoHost(text.to_string()))?;
        if uri.query().is_some() {
            return Err(EndpointError::Query(text.to_string()));
        }
        let host = authority.host();
        let host = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        if host.is_empty() {
            return Err(EndpointError::NoHost(text.to_string()));
        }
        Ok(Self {
            host: host.to_string(),
            port: authority.port_u16().unwrap_or(80),
            authority: authority.as_str().to_string(),
            prefix: uri.path().trim_end_matches('/').to_string(),
        })
    }

    /// The host and port to connect to.
    pub fn host_port(&self) -> (&str, u16) {
        (&self.host, self.port)
    }

    /// The `Host` header's value.
    pub fn authority(&self) -> &str {
        &self.authority
    }

    /// The request target of an API path (`/v1/…`).
    pub fn target(&self, path: &str) -> String {
        format!("{}{path}", self.prefix)
    }
}

/// As messages name it.
impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "http://{}{}", self.authority, self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_and_listen_addresses_are_taken() {
        let e = Endpoint::parse(DEFAULT).unwrap();
        assert_eq!(e.host_port(), ("127.0.0.1", 8470));
        assert_eq!(e.target("/v1/health"), "/v1/health");
        assert_eq!(e.to_string(), "http://127.0.0.1:8470");
        let e = Endpoint::parse("127.0.0.1:8470").unwrap();
        assert_eq!(e.to_string(), "http://127.0.0.1:8470");
        let e = Endpoint::parse("HTTP://agent.example/stratus/").unwrap();
        assert_eq!(e.host_port(), ("agent.example", 80));
        assert_eq!(e.authority(), "agent.example");
        assert_eq!(e.target("/v1/images"), "/stratus/v1/images");
        let e = Endpoint::parse("http://[::1]:9000").unwrap();
        assert_eq!(e.host_port(), ("::1", 9000));
        assert_eq!(e.authority(), "[::1]:9000");
    }

    #[test]
    fn what_cannot_be_used_is_refused() {
        assert!(matches!(
            Endpoint::parse("https://agent:8470"),
            Err(EndpointError::Https(_))
        ));
        assert!(matches!(
            Endpoint::parse("ftp://agent"),
            Err(EndpointError::Scheme { .. })
        ));
        assert!(matches!(
            Endpoint::parse("not a url"),
            Err(EndpointError::NotAUrl(_))
        ));
        assert!(Endpoint::parse("http://").is_err());
        assert!(matches!(
            Endpoint::parse("http://agent/?x=1"),
            Err(EndpointError::Query(_))
        ));
        let e = Endpoint::parse("http://u:secret@agent/").unwrap_err();
        assert_eq!(e, EndpointError::UserInfo);
        assert!(!e.to_string().contains("secret"));
    }
}
