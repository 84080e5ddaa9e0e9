//! A small blocking client for the agent's HTTP/JSON API, for programs
//! that run inside the virtual host (the agent benchmark): std's
//! `TcpStream`, HTTP/1.1, one request per connection, as `curl` would
//! make them. The agent's server is the real one; this side only needs to
//! send a request and read one JSON answer.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use serde_json::Value;

use crate::error::{Error, Result};

/// How long a single call may take before it counts as failed.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// The agent at `addr`, with its bearer token.
#[derive(Debug, Clone)]
pub struct AgentClient {
    addr: SocketAddr,
    token: String,
}

impl AgentClient {
    pub fn new(addr: SocketAddr, token: &str) -> Self {
        AgentClient {
            addr,
            token: token.trim().to_owned(),
        }
    }

    /// `method path` with an optional JSON body: the status and the JSON
    /// answer (`Value::Null` for an empty body).
    pub fn call(&self, method: &str, path: &str, body: Option<&Value>) -> Result<(u16, Value)> {
        let body = body.map(Value::to_string).unwrap_or_default();
        let io = |e: std::io::Error| Error::msg(format!("{method} {path}: {e}"));
        let mut stream = TcpStream::connect_timeout(&self.addr, CALL_TIMEOUT).map_err(io)?;
        stream.set_read_timeout(Some(CALL_TIMEOUT)).map_err(io)?;
        stream.set_write_timeout(Some(CALL_TIMEOUT)).map_err(io)?;
        let request = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {}\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            self.addr,
            self.token,
            body.len()
        );
        stream.write_all(request.as_bytes()).map_err(io)?;
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).map_err(io)?;
        let (status, body) = parse_response(&raw)
            .ok_or_else(|| Error::msg(format!("{method} {path}: malformed HTTP answer")))?;
        let value = if body.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&body)
                .map_err(|e| Error::msg(format!("{method} {path}: answer is not JSON: {e}")))?
        };
        Ok((status, value))
    }

    /// Like [`AgentClient::call`], but any status other than `want` is an
    /// error naming the agent's answer.
    pub fn expect(
        &self,
        want: u16,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value> {
        let (status, value) = self.call(method, path, body)?;
        if status == want {
            Ok(value)
        } else {
            Err(Error::msg(format!(
                "{method} {path}: {status} (expected {want}): {value}"
            )))
        }
    }
}

/// Status and body of a complete HTTP/1.1 answer (`Content-Length`,
/// chunked, or up to the end of the connection).
fn parse_response(raw: &[u8]) -> Option<(u16, Vec<u8>)> {
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&raw[..split]).ok()?;
    let rest = &raw[split + 4..];
    let mut lines = head.split("\r\n");
    let status = lines.next()?.split_whitespace().nth(1)?.parse().ok()?;
    let chunked = lines.any(|l| {
        let l = l.to_ascii_lowercase();
        l.starts_with("transfer-encoding:") && l.contains("chunked")
    });
    let body = if chunked {
        dechunk(rest)?
    } else {
        rest.to_vec()
    };
    Some((status, body))
}

/// The payload of a chunked body.
fn dechunk(mut rest: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let eol = rest.windows(2).position(|w| w == b"\r\n")?;
        let size_text = std::str::from_utf8(&rest[..eol]).ok()?;
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        rest = &rest[eol + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(rest.get(..size)?);
        rest = rest.get(size + 2..)?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_plain_and_chunked_answers() {
        let plain = b"HTTP/1.1 201 Created\r\ncontent-length: 7\r\n\r\n{\"a\":1}";
        assert_eq!(parse_response(plain), Some((201, b"{\"a\":1}".to_vec())));
        let chunked =
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\n{\"a\r\n4\r\n\":1}\r\n0\r\n\r\n";
        assert_eq!(parse_response(chunked), Some((200, b"{\"a\":1}".to_vec())));
        assert_eq!(parse_response(b"HTTP/1.1 200"), None);
        // A chunk size past the end of the data is refused, not read past.
        assert_eq!(
            parse_response(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nff\r\nab"),
            None
        );
    }
}
