//! Writing scenario scripts (busybox `sh`) without quoting mistakes.

use std::fmt::Write;

/// A scenario script under construction.
#[derive(Debug, Clone, Default)]
pub struct Script {
    text: String,
}

impl Script {
    /// An empty script.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends a raw shell line.
    pub fn line(&mut self, line: &str) -> &mut Self {
        self.text.push_str(line);
        self.text.push('\n');
        self
    }

    /// Appends a command with each argument quoted.
    pub fn command<S: AsRef<str>>(&mut self, argv: &[S]) -> &mut Self {
        let line = argv
            .iter()
            .map(|a| quote(a.as_ref()))
            .collect::<Vec<_>>()
            .join(" ");
        self.line(&line)
    }

    /// Appends a case: `argv` run by `stratus-case` under `name` with a time
    /// limit, its output and status recorded on the console.
    pub fn case<S: AsRef<str>>(&mut self, name: &str, timeout_secs: u64, argv: &[S]) -> &mut Self {
        let mut line = format!("stratus-case {} {timeout_secs}", quote(name));
        for arg in argv {
            let _ = write!(line, " {}", quote(arg.as_ref()));
        }
        self.line(&line)
    }

    /// The script text.
    pub fn text(&self) -> &str {
        &self.text
    }
}

/// Quotes `arg` for `sh` (single quotes; a quote inside becomes `'\''`).
pub fn quote(arg: &str) -> String {
    if !arg.is_empty()
        && arg
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./=:,+@".contains(&b))
    {
        return arg.to_owned();
    }
    format!("'{}'", arg.replace('\'', "'\\''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_only_when_needed() {
        assert_eq!(quote("images/tiny/kernel"), "images/tiny/kernel");
        assert_eq!(quote("a b"), "'a b'");
        assert_eq!(quote("it's"), "'it'\\''s'");
        assert_eq!(quote(""), "''");
    }

    #[test]
    fn case_line() {
        let mut script = Script::new();
        script.case(
            "one",
            60,
            &["stratus-vmm", "--cmdline", "console=ttyS0 quiet"],
        );
        assert_eq!(
            script.text(),
            "stratus-case one 60 stratus-vmm --cmdline 'console=ttyS0 quiet'\n"
        );
    }
}
