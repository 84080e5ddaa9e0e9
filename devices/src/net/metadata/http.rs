//! HTTP/1.1 for the metadata service: requests parsed with `httparse` out
//! of a connection's receive buffer, answered as EC2's IMDS answers, into
//! a [`Response`] that holds the status line and headers (and a token)
//! inline and shares its body.
//!
//! EC2's rules, in the order they are applied:
//!
//! 1. `http_endpoint = disabled`: 403 to everything.
//! 2. Methods other than GET, HEAD and PUT: 405.
//! 3. PUT `/latest/api/token`: 403 when it carries `X-Forwarded-For`,
//!    400 when `X-aws-ec2-metadata-token-ttl-seconds` is missing or not an
//!    integer in 1–21600, else 200 with the token as body and the TTL
//!    echoed in the same header. PUT to `/<version>/api/token` for another
//!    version: 403. PUT anywhere else: 405.
//! 4. GET or HEAD `/latest/api/token`: 405.
//! 5. GET or HEAD with `X-aws-ec2-metadata-token`: 401 unless the token
//!    is valid, whatever `http_tokens` says (EC2 checks a token that is
//!    present in `optional` mode too). Without one: 401 when
//!    `http_tokens = required`.
//! 6. The path: 200 with its body (HEAD: without it), or 404.
//!
//! Malformed requests get 400, headers beyond the receive buffer or
//! `httparse`'s header count 431; both then close the connection.

use std::io::Write as _;
use std::sync::Arc;

use super::document::{HttpEndpoint, HttpTokens, MetadataOptions};
use super::token::{Tokens, Verdict, MAX_TTL_SECS, TOKEN_LEN};
use super::tree::Tree;

/// Room for a response's status line, headers and inline body (a token).
pub(crate) const PREFIX_CAP: usize = 320;
/// Most headers a request may have.
const MAX_HEADERS: usize = 48;

const TTL_HEADER: &str = "X-aws-ec2-metadata-token-ttl-seconds";
const TOKEN_HEADER: &str = "X-aws-ec2-metadata-token";
const TOKEN_PATH: &str = "/latest/api/token";

/// An EC2-style error page for `$status` (`"404 - Not Found"`).
macro_rules! error_page {
    ($status:literal) => {
        concat!(
            "<?xml version=\"1.0\" encoding=\"iso-8859-1\"?>\n",
            "<!DOCTYPE html PUBLIC \"-//W3C//DTD XHTML 1.0 Transitional//EN\"\n",
            "\t\"http://www.w3.org/TR/xhtml1/DTD/xhtml1-transitional.dtd\">\n",
            "<html xmlns=\"http://www.w3.org/1999/xhtml\" xml:lang=\"en\" lang=\"en\">\n",
            " <head>\n",
            "  <title>",
            $status,
            "</title>\n",
            " </head>\n",
            " <body>\n",
            "  <h1>",
            $status,
            "</h1>\n",
            " </body>\n",
            "</html>\n"
        )
    };
}

/// Reason phrase and error page of the statuses the service sends.
fn status_text(status: u16) -> (&'static str, &'static str) {
    match status {
        200 => ("OK", ""),
        400 => ("Bad Request", error_page!("400 - Bad Request")),
        401 => ("Unauthorized", error_page!("401 - Unauthorized")),
        403 => ("Forbidden", error_page!("403 - Forbidden")),
        404 => ("Not Found", error_page!("404 - Not Found")),
        405 => (
            "Method Not Allowed",
            error_page!("405 - Method Not Allowed"),
        ),
        _ => (
            "Request Header Fields Too Large",
            error_page!("431 - Request Header Fields Too Large"),
        ),
    }
}

/// The bytes after a response's prefix.
#[derive(Debug, Clone, Default)]
pub(crate) enum Body {
    /// Nothing (HEAD, or everything fits the prefix).
    #[default]
    None,
    /// An error page.
    Static(&'static [u8]),
    /// A rendered path of the document.
    Shared(Arc<[u8]>),
}

impl Body {
    fn bytes(&self) -> &[u8] {
        match self {
            Body::None => &[],
            Body::Static(bytes) => bytes,
            Body::Shared(bytes) => bytes,
        }
    }
}

/// One response as a byte stream: `prefix` then `body`.
#[derive(Clone)]
pub(crate) struct Response {
    prefix: [u8; PREFIX_CAP],
    prefix_len: usize,
    body: Body,
}

impl std::fmt::Debug for Response {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Response")
            .field("len", &self.len())
            .finish_non_exhaustive()
    }
}

impl Default for Response {
    fn default() -> Self {
        Self {
            prefix: [0; PREFIX_CAP],
            prefix_len: 0,
            body: Body::None,
        }
    }
}

impl Response {
    /// Bytes in the stream.
    pub(crate) fn len(&self) -> usize {
        self.prefix_len + self.body.bytes().len()
    }

    /// Copies the stream from `offset` into `dst`, as much as fits;
    /// returns how much was copied.
    pub(crate) fn copy_at(&self, offset: usize, dst: &mut [u8]) -> usize {
        let prefix = self.prefix.get(..self.prefix_len).unwrap_or(&[]);
        let mut copied = 0;
        let mut pos = 0;
        for part in [prefix, self.body.bytes()] {
            let start = pos;
            pos += part.len();
            let from = offset + copied;
            if from >= pos {
                continue;
            }
            let src = part.get(from - start..).unwrap_or(&[]);
            let room = dst.len() - copied;
            let n = src.len().min(room);
            dst[copied..copied + n].copy_from_slice(&src[..n]);
            copied += n;
            if copied == dst.len() {
                break;
            }
        }
        copied
    }

    /// Drops the body, keeping the shared bytes no longer.
    pub(crate) fn clear(&mut self) {
        self.prefix_len = 0;
        self.body = Body::None;
    }
}

/// What a request did to the token counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TokenEvent {
    /// Nothing.
    None,
    /// A token was issued.
    Issued,
    /// The request was refused for its token (missing, expired, forged).
    Rejected,
}

/// Where parsing stands in a receive buffer, kept between segments so a
/// request trickled in a byte at a time is not re-parsed for each.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Scan {
    /// Bytes already searched for the end of the headers.
    searched: usize,
    /// Length of a request whose headers are parsed and whose body is
    /// still arriving (0: none).
    need: usize,
}

/// What the buffer held.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Step {
    /// Not a whole request yet.
    Incomplete,
    /// Empty lines before a request (RFC 9112 §2.2): drop this many bytes.
    Skip(usize),
    /// A request (or garbage) of `consumed` bytes was answered.
    Answered {
        /// Bytes of the buffer it took.
        consumed: usize,
        /// The status sent.
        status: u16,
        /// Whether the connection closes after this response.
        close: bool,
        /// Token counters to bump.
        token: TokenEvent,
    },
}

/// What a request is answered from.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Context<'a> {
    pub tree: &'a Tree,
    pub tokens: &'a Tokens,
    pub options: &'a MetadataOptions,
    pub now_ms: u64,
}

/// The end of the headers (index after the blank line), searching from
/// about `from`.
fn headers_end(buf: &[u8], from: usize) -> Option<usize> {
    let start = from.saturating_sub(3);
    let tail = buf.get(start..)?;
    tail.windows(2)
        .enumerate()
        .find_map(|(i, pair)| match pair {
            [b'\n', b'\n'] => Some(start + i + 2),
            [b'\n', b'\r'] if tail.get(i + 2) == Some(&b'\n') => Some(start + i + 3),
            _ => None,
        })
}

/// The value of header `name` (the first, if repeated).
fn header<'b>(headers: &[httparse::Header<'b>], name: &str) -> Option<&'b [u8]> {
    headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case(name))
        .map(|h| h.value)
}

/// Whether a comma-separated header value lists `token`.
fn lists(value: &[u8], token: &str) -> bool {
    value
        .split(|&b| b == b',')
        .any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
}

/// A TTL as EC2 takes it: decimal digits, 1–21600.
fn parse_ttl(value: &[u8]) -> Option<u32> {
    let value = value.trim_ascii();
    if value.is_empty() || value.len() > 5 || !value.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let ttl = value.iter().fold(0u32, |n, d| n * 10 + u32::from(d - b'0'));
    (1..=MAX_TTL_SECS).contains(&ttl).then_some(ttl)
}

/// The path of a request target: origin form, or absolute form cut to its
/// path; query and fragment cut.
fn target_path(target: &str) -> &str {
    let target = match target.strip_prefix("http://") {
        Some(rest) => rest.find('/').map_or("/", |i| &rest[i..]),
        None => target,
    };
    let end = target.find(['?', '#']).unwrap_or(target.len());
    &target[..end]
}

/// Writes the head of a response into `resp` (and `inline` after it).
fn write_response(
    resp: &mut Response,
    status: u16,
    head_only: bool,
    close: bool,
    ttl: Option<u32>,
    inline: &[u8],
    body: Body,
) {
    let (reason, page) = status_text(status);
    let (content_type, body) = if status == 200 {
        ("text/plain", body)
    } else {
        ("text/html", Body::Static(page.as_bytes()))
    };
    let content_length = inline.len() + body.bytes().len();
    let mut cursor = &mut resp.prefix[..];
    let written = (|| -> std::io::Result<()> {
        write!(
            cursor,
            "HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\nAccept-Ranges: none\r\n"
        )?;
        if let Some(ttl) = ttl {
            write!(cursor, "{TTL_HEADER}: {ttl}\r\n")?;
        }
        if status == 405 {
            cursor.write_all(b"Allow: GET, HEAD, PUT\r\n")?;
        }
        write!(cursor, "Content-Length: {content_length}\r\n")?;
        if close {
            cursor.write_all(b"Connection: close\r\n")?;
        }
        cursor.write_all(b"Server: EC2ws\r\n\r\n")?;
        if !head_only {
            cursor.write_all(inline)?;
        }
        Ok(())
    })();
    let left = cursor.len();
    debug_assert!(written.is_ok(), "response head overflows its buffer");
    resp.prefix_len = PREFIX_CAP - left;
    resp.body = if head_only { Body::None } else { body };
}

/// Parses the first request in `buf` and, if whole, answers it into
/// `resp`. `cap` is the buffer's capacity: a request that cannot fit it
/// is refused.
pub(crate) fn serve(
    buf: &[u8],
    cap: usize,
    scan: &mut Scan,
    ctx: &Context<'_>,
    resp: &mut Response,
) -> Step {
    let blank = buf
        .iter()
        .take_while(|&&b| b == b'\r' || b == b'\n')
        .count();
    if blank > 0 && scan.need == 0 {
        *scan = Scan::default();
        return Step::Skip(blank);
    }
    if scan.need > buf.len() {
        return Step::Incomplete;
    }
    let Some(end) = headers_end(buf, scan.searched) else {
        scan.searched = buf.len();
        if buf.len() >= cap {
            return refuse(buf.len(), 431, resp, scan);
        }
        return Step::Incomplete;
    };
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(&buf[..end]) {
        Ok(httparse::Status::Complete(_)) => {}
        Err(httparse::Error::TooManyHeaders) => return refuse(end, 431, resp, scan),
        Ok(httparse::Status::Partial) | Err(_) => return refuse(end, 400, resp, scan),
    }
    let (Some(method), Some(target), Some(version)) = (req.method, req.path, req.version) else {
        return refuse(end, 400, resp, scan);
    };
    // Bodies are not read, only skipped: chunked ones cannot be.
    if header(req.headers, "Transfer-Encoding").is_some() {
        return refuse(end, 400, resp, scan);
    }
    let body_len = match header(req.headers, "Content-Length") {
        None => 0,
        Some(v) => match std::str::from_utf8(v)
            .ok()
            .and_then(|v| v.trim().parse::<usize>().ok())
        {
            Some(n) => n,
            None => return refuse(end, 400, resp, scan),
        },
    };
    let total = end.saturating_add(body_len);
    if total > cap {
        return refuse(end, 400, resp, scan);
    }
    if total > buf.len() {
        scan.need = total;
        return Step::Incomplete;
    }
    *scan = Scan::default();

    let connection = header(req.headers, "Connection");
    let close = match version {
        0 => !connection.is_some_and(|v| lists(v, "keep-alive")),
        _ => connection.is_some_and(|v| lists(v, "close")),
    };
    let path = target_path(target);
    let head_only = method == "HEAD";
    let mut token_buf = [0u8; TOKEN_LEN];
    let mut ttl_echo = None;
    let mut inline: &[u8] = &[];
    let mut body = Body::None;
    let mut token = TokenEvent::None;
    let status = if ctx.options.http_endpoint == HttpEndpoint::Disabled {
        403
    } else {
        match method {
            "PUT" if path == TOKEN_PATH => {
                if header(req.headers, "X-Forwarded-For").is_some() {
                    403
                } else if let Some(ttl) = header(req.headers, TTL_HEADER).and_then(parse_ttl) {
                    let expiry = ctx.now_ms.saturating_add(u64::from(ttl) * 1000);
                    token_buf.copy_from_slice(&ctx.tokens.issue(&ctx.tree.instance_id, expiry));
                    inline = &token_buf;
                    ttl_echo = Some(ttl);
                    token = TokenEvent::Issued;
                    200
                } else {
                    400
                }
            }
            "PUT" if is_dated_token_path(path) => 403,
            "GET" | "HEAD" if path == TOKEN_PATH => 405,
            "GET" | "HEAD" => {
                let verdict = header(req.headers, TOKEN_HEADER)
                    .map(|t| ctx.tokens.check(&ctx.tree.instance_id, t, ctx.now_ms));
                let allowed = match (verdict, ctx.options.http_tokens) {
                    (Some(Verdict::Valid), _) | (None, HttpTokens::Optional) => true,
                    (Some(Verdict::Expired | Verdict::Forged), _)
                    | (None, HttpTokens::Required) => false,
                };
                if !allowed {
                    token = TokenEvent::Rejected;
                    401
                } else if let Some(bytes) = ctx.tree.lookup(path) {
                    body = Body::Shared(Arc::clone(bytes));
                    200
                } else {
                    404
                }
            }
            _ => 405,
        }
    };
    write_response(resp, status, head_only, close, ttl_echo, inline, body);
    Step::Answered {
        consumed: total,
        status,
        close,
        token,
    }
}

/// `/<something>/api/token` other than the one token path.
fn is_dated_token_path(path: &str) -> bool {
    path.strip_suffix("/api/token")
        .and_then(|version| version.strip_prefix('/'))
        .is_some_and(|version| !version.is_empty() && !version.contains('/'))
}

/// Answers garbage with `status` and closes.
fn refuse(consumed: usize, status: u16, resp: &mut Response, scan: &mut Scan) -> Step {
    *scan = Scan::default();
    write_response(resp, status, false, true, None, &[], Body::None);
    Step::Answered {
        consumed,
        status,
        close: true,
        token: TokenEvent::None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_end_finds_both_line_endings() {
        assert_eq!(headers_end(b"GET / HTTP/1.1\r\n\r\n", 0), Some(18));
        assert_eq!(headers_end(b"GET / HTTP/1.1\n\nrest", 0), Some(16));
        assert_eq!(headers_end(b"GET / HTTP/1.1\r\nA: b\r\n", 0), None);
        // Found even when the search resumes inside the terminator.
        assert_eq!(headers_end(b"GET / HTTP/1.1\r\n\r\n", 16), Some(18));
    }

    #[test]
    fn ttl_parsing() {
        assert_eq!(parse_ttl(b"21600"), Some(21600));
        assert_eq!(parse_ttl(b" 1 "), Some(1));
        for bad in [
            &b"0"[..],
            b"21601",
            b"-1",
            b"+5",
            b"",
            b"1e3",
            b"999999",
            b"abc",
        ] {
            assert_eq!(parse_ttl(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn targets() {
        assert_eq!(target_path("/latest/meta-data/?x=1"), "/latest/meta-data/");
        assert_eq!(target_path("http://169.254.169.254/latest"), "/latest");
        assert_eq!(target_path("http://169.254.169.254"), "/");
        assert!(is_dated_token_path("/2021-03-23/api/token"));
        assert!(!is_dated_token_path("/api/token"));
        assert!(!is_dated_token_path("/a/b/api/token"));
    }

    #[test]
    fn response_streams_prefix_then_body() {
        let mut r = Response::default();
        write_response(
            &mut r,
            200,
            false,
            false,
            None,
            b"",
            Body::Shared(Arc::from(&b"hello"[..])),
        );
        let mut whole = vec![0; r.len()];
        assert_eq!(r.copy_at(0, &mut whole), r.len());
        assert!(whole.ends_with(b"\r\n\r\nhello"));
        for offset in 0..r.len() {
            for len in 0..8 {
                let mut part = vec![0; len];
                let n = r.copy_at(offset, &mut part);
                assert_eq!(&part[..n], &whole[offset..(offset + len).min(whole.len())]);
            }
        }
    }
}
