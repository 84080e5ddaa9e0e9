//! The service manager's notification protocol (`sd_notify`), spoken
//! directly: one datagram to `$NOTIFY_SOCKET`. `READY=1` once the store
//! is open, running VMMs are re-adopted and the listener is bound;
//! `WATCHDOG=1` at half the interval systemd asks for; `STOPPING=1` on
//! the way out. Without `$NOTIFY_SOCKET` (not run by systemd) nothing is
//! sent.

use std::os::linux::net::SocketAddrExt as _;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::time::Duration;

/// Sends `message` (`KEY=VALUE` lines) to the service manager, if any.
pub fn notify(message: &str) {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let path = path.to_string_lossy().into_owned();
    // `@name` is a socket in the abstract namespace.
    let addr = match path.strip_prefix('@') {
        Some(name) => SocketAddr::from_abstract_name(name.as_bytes()),
        None => SocketAddr::from_pathname(&path),
    };
    let sent = addr.and_then(|addr| {
        let socket = UnixDatagram::unbound()?;
        socket.send_to_addr(message.as_bytes(), &addr)
    });
    if let Err(e) = sent {
        tracing::warn!(socket = %path, error = %e, "cannot notify the service manager");
    }
}

/// How often to send `WATCHDOG=1`: half of `$WATCHDOG_USEC`, when the
/// watchdog is on and meant for this process (`$WATCHDOG_PID` unset or
/// ours).
pub fn watchdog_interval() -> Option<Duration> {
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
    if let Ok(pid) = std::env::var("WATCHDOG_PID") {
        if pid.parse::<u32>().ok() != Some(std::process::id()) {
            return None;
        }
    }
    (usec > 0).then(|| Duration::from_micros(usec / 2))
}
