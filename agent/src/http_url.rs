//! The one check of a plain `http://` URL that both the agent's
//! `--report-url` and the CLI's `--endpoint` need. Neither side has a TLS
//! stack, so `https://` is refused rather than sent in the clear, and a
//! URL holding credentials is refused without being repeated. Each caller
//! words the problem for its own flag.

use hyper::Uri;

/// What is wrong with a URL (wording is the caller's).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UrlProblem {
    /// Not parsable as a URI.
    NotAUrl,
    /// `https://`.
    Https,
    /// Another scheme.
    Scheme(String),
    /// No scheme at all.
    NoScheme,
    /// No host.
    NoHost,
    /// `user:password@` in the authority.
    UserInfo,
}

/// Parses `url` and accepts only `http://HOST[:PORT]…` without credentials.
pub fn check_http_url(url: &str) -> Result<Uri, UrlProblem> {
    let uri: Uri = url.parse().map_err(|_| UrlProblem::NotAUrl)?;
    match uri.scheme_str() {
        Some(s) if s.eq_ignore_ascii_case("http") => {}
        Some(s) if s.eq_ignore_ascii_case("https") => return Err(UrlProblem::Https),
        Some(s) => return Err(UrlProblem::Scheme(s.to_string())),
        None => return Err(UrlProblem::NoScheme),
    }
    let authority = uri.authority().ok_or(UrlProblem::NoHost)?;
    if authority.as_str().contains('@') {
        return Err(UrlProblem::UserInfo);
    }
    if authority.host().is_empty() {
        return Err(UrlProblem::NoHost);
    }
    Ok(uri)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_http_with_a_host_and_no_credentials() {
        assert!(check_http_url("http://127.0.0.1:9000/r").is_ok());
        assert_eq!(check_http_url("not a url"), Err(UrlProblem::NotAUrl));
        assert_eq!(check_http_url("HTTPS://x"), Err(UrlProblem::Https));
        assert_eq!(
            check_http_url("ftp://x"),
            Err(UrlProblem::Scheme("ftp".into()))
        );
        assert_eq!(check_http_url("/path"), Err(UrlProblem::NoScheme));
        assert_eq!(check_http_url("http://u:p@x"), Err(UrlProblem::UserInfo));
    }
}
