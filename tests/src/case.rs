//! One command run inside a scenario ("a case"), and how its result travels
//! over the virtual host's serial console.
//!
//! The `stratus-case` binary runs the command inside the virtual host and
//! prints a framed, line-prefixed record of it; [`parse_cases`] turns the
//! serial log back into [`CaseResult`]s on the test side. Both sides use
//! the constants here, so the format is defined once.

use std::fmt;
use std::time::Duration;

/// First line of a case's record: `STRATUS-CASE-BEGIN name=<name>`.
pub const BEGIN: &str = "STRATUS-CASE-BEGIN name=";
/// Last line: `STRATUS-CASE-END name=<name> exit=<exit> wall_ms=<ms>`.
pub const END: &str = "STRATUS-CASE-END name=";

/// The prefix of a line the command wrote to stdout or stderr.
pub fn line_prefix(name: &str, stream: Stream) -> String {
    format!("[{name} {}] ", stream.tag())
}

/// Which output stream a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    /// Standard output (for a VMM: the guest's serial console).
    Stdout,
    /// Standard error (for a VMM: its own messages).
    Stderr,
}

impl Stream {
    fn tag(self) -> &'static str {
        match self {
            Stream::Stdout => "out",
            Stream::Stderr => "err",
        }
    }
}

/// How a case's command ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CaseExit {
    /// It exited with this code.
    Code(i32),
    /// A signal killed it.
    Signal(i32),
    /// It ran past the case's time limit and was killed.
    TimedOut,
    /// It could not be started.
    SpawnFailed,
}

impl fmt::Display for CaseExit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CaseExit::Code(code) => write!(f, "{code}"),
            CaseExit::Signal(sig) => write!(f, "signal:{sig}"),
            CaseExit::TimedOut => f.write_str("timeout"),
            CaseExit::SpawnFailed => f.write_str("spawn-failed"),
        }
    }
}

impl std::str::FromStr for CaseExit {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        match text {
            "timeout" => Ok(CaseExit::TimedOut),
            "spawn-failed" => Ok(CaseExit::SpawnFailed),
            _ => match text.strip_prefix("signal:") {
                Some(sig) => sig
                    .parse()
                    .map(CaseExit::Signal)
                    .map_err(|e| format!("{text}: {e}")),
                None => text
                    .parse()
                    .map(CaseExit::Code)
                    .map_err(|e| format!("{text}: {e}")),
            },
        }
    }
}

/// Renders the closing line of a case.
pub fn end_line(name: &str, exit: CaseExit, wall: Duration) -> String {
    format!(
        "{END}{name} exit={exit} wall_ms={:.3}",
        wall.as_secs_f64() * 1000.0
    )
}

/// The record of one case, parsed from the serial log.
#[derive(Debug, Clone, PartialEq)]
pub struct CaseResult {
    /// The case's name.
    pub name: String,
    /// How the command ended; `None` if the log ends before the case did.
    pub exit: Option<CaseExit>,
    /// Wall time from just before spawning the command to its exit.
    pub wall: Option<Duration>,
    /// Its standard output, line by line.
    pub stdout: Vec<String>,
    /// Its standard error, line by line.
    pub stderr: Vec<String>,
}

impl CaseResult {
    /// The value of the first `<key>=<value>` word on a stdout line that
    /// starts with `prefix`, e.g. `value("STRATUS-TINY", "nproc")`.
    pub fn value(&self, prefix: &str, key: &str) -> Option<&str> {
        let key = format!("{key}=");
        self.stdout.iter().find_map(|line| {
            let rest = line.strip_prefix(prefix)?.trim_start();
            rest.strip_prefix(&key)
        })
    }

    /// Whether some stdout line contains `text`.
    pub fn stdout_contains(&self, text: &str) -> bool {
        self.stdout.iter().any(|l| l.contains(text))
    }

    /// The VMM's reported boot time, from its
    /// `stratus-vmm: boot complete in <ms> ms` line on stderr.
    pub fn boot_complete(&self) -> Option<Duration> {
        self.stderr.iter().find_map(|line| {
            let ms = line
                .split("boot complete in ")
                .nth(1)?
                .strip_suffix(" ms")?;
            ms.trim()
                .parse::<f64>()
                .ok()
                .filter(|ms| ms.is_finite() && *ms >= 0.0)
                .map(|ms| Duration::from_secs_f64(ms / 1000.0))
        })
    }

    /// A readable dump for assertion messages.
    pub fn describe(&self) -> String {
        let mut text = format!(
            "case {}: exit {:?}, wall {:?}\n",
            self.name, self.exit, self.wall
        );
        for line in &self.stdout {
            text.push_str(&format!("  out| {line}\n"));
        }
        for line in &self.stderr {
            text.push_str(&format!("  err| {line}\n"));
        }
        text
    }
}

/// Collects every case record in a serial log, in order.
pub fn parse_cases<'a>(lines: impl IntoIterator<Item = &'a str>) -> Vec<CaseResult> {
    let mut cases: Vec<CaseResult> = Vec::new();
    for line in lines {
        if let Some(name) = line.strip_prefix(BEGIN) {
            cases.push(CaseResult {
                name: name.trim().to_owned(),
                exit: None,
                wall: None,
                stdout: Vec::new(),
                stderr: Vec::new(),
            });
        } else if let Some(rest) = line.strip_prefix(END) {
            let mut words = rest.split_whitespace();
            let name = words.next().unwrap_or_default();
            if let Some(case) = cases.iter_mut().rev().find(|c| c.name == name) {
                for word in words {
                    if let Some(exit) = word.strip_prefix("exit=") {
                        case.exit = exit.parse().ok();
                    } else if let Some(ms) = word.strip_prefix("wall_ms=") {
                        case.wall = ms
                            .parse::<f64>()
                            .ok()
                            .map(|ms| Duration::from_secs_f64(ms / 1000.0));
                    }
                }
            }
        } else {
            // A line may carry console noise before the prefix (a kernel
            // message without a newline), so look for the prefix anywhere.
            for case in cases.iter_mut().rev().filter(|c| c.exit.is_none()) {
                let out = line_prefix(&case.name, Stream::Stdout);
                let err = line_prefix(&case.name, Stream::Stderr);
                if let Some((_, text)) = line.split_once(&out) {
                    case.stdout.push(text.to_owned());
                    break;
                } else if let Some((_, text)) = line.split_once(&err) {
                    case.stderr.push(text.to_owned());
                    break;
                }
            }
        }
    }
    cases
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_through_a_log() {
        let log = [
            "kernel noise".to_owned(),
            format!("{BEGIN}one"),
            format!("{}STRATUS-TINY nproc=2", line_prefix("one", Stream::Stdout)),
            format!(
                "junk{}stratus-vmm: boot complete in 12.500 ms",
                line_prefix("one", Stream::Stderr)
            ),
            end_line("one", CaseExit::Code(3), Duration::from_millis(1500)),
            format!("{BEGIN}two"),
            end_line("two", CaseExit::Signal(9), Duration::from_millis(1)),
            format!("{BEGIN}three"),
        ];
        let cases = parse_cases(log.iter().map(String::as_str));
        assert_eq!(cases.len(), 3);
        assert_eq!(cases[0].exit, Some(CaseExit::Code(3)));
        assert_eq!(cases[0].wall, Some(Duration::from_millis(1500)));
        assert_eq!(cases[0].value("STRATUS-TINY", "nproc"), Some("2"));
        assert_eq!(
            cases[0].boot_complete(),
            Some(Duration::from_micros(12_500))
        );
        assert_eq!(cases[1].exit, Some(CaseExit::Signal(9)));
        assert_eq!(cases[2].exit, None, "unfinished case");
    }

    #[test]
    fn exit_round_trips_as_text() {
        for exit in [
            CaseExit::Code(0),
            CaseExit::Code(-1),
            CaseExit::Signal(9),
            CaseExit::TimedOut,
            CaseExit::SpawnFailed,
        ] {
            assert_eq!(exit.to_string().parse::<CaseExit>(), Ok(exit));
        }
    }
}
