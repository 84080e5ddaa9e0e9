//! The bearer token: from `--token-file`, else `STRATUS_TOKEN`, else the
//! file the agent writes on its first start (`<state-dir>/api-token`) if
//! this user can read it. Its text is never printed: messages name where
//! it came from instead.

use std::path::{Path, PathBuf};

use super::error::CliError;

/// A token and where it was found.
pub struct Token {
    value: String,
    origin: String,
}

/// Redacted: a `{:?}` in a panic or a log must not leak the token.
impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Token")
            .field("value", &"<redacted>")
            .field("origin", &self.origin)
            .finish()
    }
}

impl Token {
    /// The `Authorization` header's value.
    pub fn header(&self) -> String {
        format!("Bearer {}", self.value)
    }

    /// Where it was read from, for messages.
    pub fn origin(&self) -> &str {
        &self.origin
    }

    fn new(text: &str, origin: String) -> Result<Self, CliError> {
        let value = text.trim();
        if value.is_empty() {
            return Err(CliError::EmptyToken(origin));
        }
        // Anything else could not go in a header (or would split it).
        if !value.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(CliError::BadToken(origin));
        }
        Ok(Self {
            value: value.to_string(),
            origin,
        })
    }
}

/// The agent's token file in its default state directory.
pub fn default_file() -> PathBuf {
    Path::new(stratus_agent::config::DEFAULT_STATE_DIR).join("api-token")
}

/// The token, if there is one. A file named by `--token-file` must be
/// readable; the default file is only a fallback (absent or unreadable:
/// no token, and a route that wants one says so).
pub fn resolve(
    flag: Option<&Path>,
    env: Option<String>,
    default: &Path,
) -> Result<Option<Token>, CliError> {
    if let Some(path) = flag {
        let text = std::fs::read_to_string(path).map_err(|source| CliError::TokenFile {
            path: path.to_path_buf(),
            source,
        })?;
        return Token::new(&text, format!("--token-file {}", path.display())).map(Some);
    }
    if let Some(text) = env.filter(|t| !t.trim().is_empty()) {
        return Token::new(&text, "STRATUS_TOKEN".into()).map(Some);
    }
    match std::fs::read_to_string(default) {
        Ok(text) if !text.trim().is_empty() => {
            Token::new(&text, default.display().to_string()).map(Some)
        }
        _ => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flag_over_environment_over_default_file() {
        let dir = std::env::temp_dir().join(format!("stratus-cli-token-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (file, default) = (dir.join("flag"), dir.join("api-token"));
        std::fs::write(&file, "from-file\n").unwrap();
        std::fs::write(&default, "from-default\n").unwrap();
        let t = resolve(Some(&file), Some("from-env".into()), &default)
            .unwrap()
            .unwrap();
        assert_eq!(t.header(), "Bearer from-file");
        let t = resolve(None, Some("from-env".into()), &default)
            .unwrap()
            .unwrap();
        assert_eq!(
            (t.header().as_str(), t.origin()),
            ("Bearer from-env", "STRATUS_TOKEN")
        );
        let t = resolve(None, Some(" ".into()), &default).unwrap().unwrap();
        assert_eq!(t.header(), "Bearer from-default");
        assert!(!format!("{t:?}").contains("from-default"));
        // A missing default is no token; a missing named file is an error.
        assert!(resolve(None, None, &dir.join("none")).unwrap().is_none());
        assert!(matches!(
            resolve(Some(&dir.join("none")), None, &default),
            Err(CliError::TokenFile { .. })
        ));
        std::fs::write(&file, "\n").unwrap();
        assert!(matches!(
            resolve(Some(&file), None, &default),
            Err(CliError::EmptyToken(_))
        ));
        let e = resolve(None, Some("se cret".into()), &default).unwrap_err();
        assert!(matches!(e, CliError::BadToken(_)));
        assert!(!e.to_string().contains("cret"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
