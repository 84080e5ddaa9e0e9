//! `stratus-report-sink LISTEN_ADDR LOG_FILE DOWN_FLAG_FILE`
//!
//! The report receiver of the virtual-host fleet scenario: a plain HTTP
//! server that takes the health reports `stratus-agent --report-url`
//! pushes, one request per connection, and appends one line per report
//! to `LOG_FILE`:
//!
//! `taken|refused at_ms=.. seq=.. reason=.. pending=.. running=.. stopped=.. terminated=..`
//!
//! While `DOWN_FLAG_FILE` exists it answers 503 (and logs the report as
//! `refused`), so a scenario can take the receiver "down" and see the
//! agent catch up once it is back. The lines are short on purpose: the
//! scenario prints them on the virtual host's serial console.
//! Exits 2 on bad usage or when it cannot listen.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::Value;

/// A report larger than this is refused unread (a health document of a
/// full host is a few hundred KiB at most).
const MAX_BODY: usize = 8 << 20;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [listen, log, down] = args.as_slice() else {
        eprintln!("usage: stratus-report-sink LISTEN_ADDR LOG_FILE DOWN_FLAG_FILE");
        std::process::exit(2);
    };
    let listener = match TcpListener::bind(listen) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("stratus-report-sink: cannot listen on {listen}: {e}");
            std::process::exit(2);
        }
    };
    let (log, down) = (PathBuf::from(log), PathBuf::from(down));
    for stream in listener.incoming().flatten() {
        if let Err(e) = serve(stream, &log, &down) {
            eprintln!("stratus-report-sink: {e}");
        }
    }
}

/// Takes one request on `stream` and answers it.
fn serve(stream: TcpStream, log: &Path, down: &Path) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut length = 0usize;
    let mut line = String::new();
    loop {
        line.clear();
        if reader.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let header = line.trim_end();
        if header.is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':') {
            if name.eq_ignore_ascii_case("content-length") {
                length = value.trim().parse().unwrap_or(usize::MAX);
            }
        }
    }
    let mut out = stream;
    if length > MAX_BODY {
        return answer(&mut out, "413 Payload Too Large");
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body)?;
    let refused = down.exists();
    let summary = summarize(&body);
    let at_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    let verdict = if refused { "refused" } else { "taken" };
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)?;
    writeln!(file, "{verdict} at_ms={at_ms} {summary}")?;
    if refused {
        answer(&mut out, "503 Service Unavailable")
    } else {
        answer(&mut out, "200 OK")
    }
}

fn answer(out: &mut TcpStream, status: &str) -> std::io::Result<()> {
    write!(
        out,
        "HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )?;
    out.flush()
}

/// `seq=.. reason=.. pending=.. running=.. stopped=.. terminated=..` of a
/// report, or `unparsable` for a body that is not one.
fn summarize(body: &[u8]) -> String {
    let Ok(report) = serde_json::from_slice::<Value>(body) else {
        return "unparsable".to_owned();
    };
    let count = |state: &str| report["health"]["instances"][state].as_u64().unwrap_or(0);
    format!(
        "seq={} reason={} pending={} running={} stopped={} terminated={}",
        report["sequence"],
        report["reason"].as_str().unwrap_or("-"),
        count("pending"),
        count("running"),
        count("stopped"),
        count("terminated"),
    )
}
