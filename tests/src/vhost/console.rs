//! Running a child process (QEMU, or a scenario in direct mode) while its
//! output is streamed live and recorded, with a hard time limit.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};

/// A line of output and when it arrived.
#[derive(Debug, Clone)]
pub struct Line {
    /// The text, without the line ending.
    pub text: String,
    /// When the harness read it.
    pub at: Instant,
}

/// What a finished child left behind.
#[derive(Debug)]
pub struct Transcript {
    /// How the child ended.
    pub status: ExitStatus,
    /// Its standard output, line by line (standard error is only logged).
    pub lines: Vec<Line>,
}

/// Kills the child if the harness unwinds (panic, error, timeout) before it
/// exited by itself, so no QEMU outlives its test.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// Time limits of one run.
#[derive(Debug, Clone, Copy)]
pub struct Limits<'a> {
    /// For the whole run.
    pub total: Duration,
    /// A stdout line containing this text must appear within this time
    /// ([`Error::NotReady`] otherwise), so that a machine that hangs while
    /// booting is noticed long before `total`.
    pub ready: Option<(&'a str, Duration)>,
}

/// Runs `cmd`, copying its stdout and stderr to `log` and (with `echo`) to
/// our stderr, each line prefixed with `tag`, within `limits`.
pub fn run(
    mut cmd: Command,
    tag: &str,
    limits: Limits,
    log: &Path,
    echo: bool,
) -> Result<Transcript> {
    let log_file = File::create(log).map_err(Error::io("create", log))?;
    let program = cmd.get_program().to_string_lossy().into_owned();
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| Error::Spawn { program, source })?;
    let mut child = KillOnDrop(child);

    let (tx, rx) = mpsc::channel::<(bool, Line)>();
    let stdout = child.0.stdout.take().map(|s| pump(s, true, tx.clone()));
    let stderr = child.0.stderr.take().map(|s| pump(s, false, tx));
    let mut log_file = std::io::BufWriter::new(log_file);
    let start = Instant::now();
    let deadline = start + limits.total;
    let mut ready = limits
        .ready
        .map(|(marker, within)| (marker, start + within));
    let mut lines = Vec::new();
    loop {
        let next_limit = ready.map_or(deadline, |(_, by)| by.min(deadline));
        let left = next_limit.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok((is_stdout, line)) => {
                let marker = if is_stdout { "" } else { "(stderr) " };
                let _ = writeln!(log_file, "{marker}{}", line.text);
                if echo && !is_noise(&line.text) {
                    let _ = writeln!(std::io::stderr().lock(), "{tag}| {marker}{}", line.text);
                }
                if is_stdout {
                    if ready.is_some_and(|(text, _)| line.text.contains(text)) {
                        ready = None;
                    }
                    lines.push(line);
                }
            }
            // Both pipes closed: the child has exited (or closed them).
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                let _ = log_file.flush();
                drop(child);
                let log = log.to_path_buf();
                return Err(match (ready, limits.ready) {
                    (Some(_), Some((_, within))) if Instant::now() < deadline => Error::NotReady {
                        seconds: within.as_secs(),
                        log,
                    },
                    _ => Error::Timeout {
                        seconds: limits.total.as_secs(),
                        log,
                    },
                });
            }
        }
    }
    let _ = log_file.flush();
    for pump in [stdout, stderr].into_iter().flatten() {
        let _ = pump.join();
    }
    let status = child.0.wait().map_err(Error::io("wait for", log))?;
    Ok(Transcript { status, lines })
}

/// QEMU's warnings about CPU features TCG cannot emulate (a dozen lines on
/// every boot with `-cpu EPYC`): harmless, kept in the log, not echoed.
fn is_noise(line: &str) -> bool {
    line.contains("TCG doesn't support requested feature")
}

/// Reads `input` line by line into `tx` (lossy UTF-8, `\r` stripped: a
/// serial console ends lines with `\r\n`).
fn pump(
    input: impl Read + Send + 'static,
    is_stdout: bool,
    tx: mpsc::Sender<(bool, Line)>,
) -> thread::JoinHandle<()> {
    thread::spawn(move || {
        let mut reader = BufReader::new(input);
        let mut raw = Vec::new();
        loop {
            raw.clear();
            match reader.read_until(b'\n', &mut raw) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    let text = String::from_utf8_lossy(&raw)
                        .trim_end_matches(['\n', '\r'])
                        .replace('\r', "");
                    if tx
                        .send((
                            is_stdout,
                            Line {
                                text,
                                at: Instant::now(),
                            },
                        ))
                        .is_err()
                    {
                        break;
                    }
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::TempDir;

    #[test]
    fn streams_lines_and_status() {
        let tmp = TempDir::new("stratus-console-test").unwrap();
        let log = tmp.path().join("log");
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "echo one; echo two >&2; printf 'three\\r\\n'; exit 4"]);
        let limits = Limits {
            total: Duration::from_secs(20),
            ready: None,
        };
        let t = run(cmd, "t", limits, &log, false).unwrap();
        let texts: Vec<_> = t.lines.iter().map(|l| l.text.as_str()).collect();
        assert_eq!(texts, ["one", "three"]);
        assert_eq!(t.status.code(), Some(4));
        let logged = std::fs::read_to_string(&log).unwrap();
        assert!(logged.contains("(stderr) two"), "{logged}");
    }

    #[test]
    fn times_out_and_kills() {
        let tmp = TempDir::new("stratus-console-test").unwrap();
        let mut cmd = Command::new("sleep");
        cmd.arg("30");
        let start = Instant::now();
        let limits = Limits {
            total: Duration::from_millis(300),
            ready: None,
        };
        let err = run(cmd, "t", limits, &tmp.path().join("log"), false).unwrap_err();
        assert!(matches!(err, Error::Timeout { .. }), "{err}");
        assert!(start.elapsed() < Duration::from_secs(10));
    }
}

#[cfg(test)]
mod ready_tests {
    use super::*;
    use crate::cache::TempDir;

    #[test]
    fn a_missing_ready_line_fails_early() {
        let tmp = TempDir::new("stratus-console-test").unwrap();
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "echo booting; sleep 30"]);
        let limits = Limits {
            total: Duration::from_secs(60),
            ready: Some(("READY", Duration::from_millis(500))),
        };
        let start = Instant::now();
        let err = run(cmd, "t", limits, &tmp.path().join("log"), false).unwrap_err();
        assert!(matches!(err, Error::NotReady { .. }), "{err}");
        assert!(start.elapsed() < Duration::from_secs(10));
    }

    #[test]
    fn a_seen_ready_line_lifts_the_early_limit() {
        let tmp = TempDir::new("stratus-console-test").unwrap();
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "echo READY now; sleep 1; echo done"]);
        let limits = Limits {
            total: Duration::from_secs(20),
            ready: Some(("READY", Duration::from_millis(300))),
        };
        let t = run(cmd, "t", limits, &tmp.path().join("log"), false).unwrap();
        assert_eq!(t.lines.last().map(|l| l.text.as_str()), Some("done"));
    }
}
