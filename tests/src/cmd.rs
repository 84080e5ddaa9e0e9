//! Running helper programs (apt, dpkg-deb, xz, ldd, ...) with useful errors.

use std::process::{Command, Output};

use crate::error::{Error, Result};

/// How much of a failed command's stderr goes into the error message.
const STDERR_TAIL: usize = 2000;

/// Renders a command line for error messages and logs.
pub fn describe(cmd: &Command) -> String {
    let mut text = cmd.get_program().to_string_lossy().into_owned();
    for arg in cmd.get_args() {
        text.push(' ');
        text.push_str(&arg.to_string_lossy());
    }
    text
}

/// Runs `cmd` to completion, capturing its output; fails unless it exits 0.
pub fn output(cmd: &mut Command) -> Result<Output> {
    let out = cmd.output().map_err(|source| Error::Spawn {
        program: cmd.get_program().to_string_lossy().into_owned(),
        source,
    })?;
    if out.status.success() {
        Ok(out)
    } else {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let start = stderr.len().saturating_sub(STDERR_TAIL);
        let start = (start..stderr.len())
            .find(|&i| stderr.is_char_boundary(i))
            .unwrap_or(0);
        Err(Error::CommandFailed {
            command: describe(cmd),
            status: out.status.to_string(),
            stderr: stderr[start..].trim().to_owned(),
        })
    }
}

/// Runs `cmd` and returns its standard output as text.
pub fn stdout(cmd: &mut Command) -> Result<String> {
    let out = output(cmd)?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Runs `cmd` with its output going to ours (for long steps a person watches).
pub fn run_visible(cmd: &mut Command) -> Result<()> {
    let status = cmd.status().map_err(|source| Error::Spawn {
        program: cmd.get_program().to_string_lossy().into_owned(),
        source,
    })?;
    if status.success() {
        Ok(())
    } else {
        Err(Error::CommandFailed {
            command: describe(cmd),
            status: status.to_string(),
            stderr: "(see output above)".to_owned(),
        })
    }
}

/// Whether `program` can be found on `PATH`.
pub fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|dir| dir.join(program).is_file()))
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failure_reports_command_and_stderr() {
        let err = output(Command::new("sh").args(["-c", "echo boom >&2; exit 3"])).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("sh -c"), "{text}");
        assert!(text.contains("boom"), "{text}");
    }

    #[test]
    fn missing_program_is_a_spawn_error() {
        let err = output(&mut Command::new("/nonexistent/stratus-helper")).unwrap_err();
        assert!(matches!(err, Error::Spawn { .. }), "{err}");
    }
}
