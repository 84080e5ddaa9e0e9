//! The last bytes of serial output, kept in memory for `GET /console`
//! (the agent's console-output feature), whatever the configured sink.

use std::io::Write;
use std::sync::{Arc, Mutex};

use stratus_devices::legacy::serial::SerialOutput;

/// How much console output is kept: EC2's console output returns the most
/// recent 64 KiB.
pub const CONSOLE_RING_BYTES: usize = 64 * 1024;

/// A fixed-size ring of the most recent console bytes. Written by the vCPU
/// that transmits (under the UART's own lock already), read by the event
/// loop on an API request: contention is rare and brief.
#[derive(Debug)]
pub struct ConsoleRing {
    buf: Box<[u8]>,
    /// Next write position.
    head: usize,
    /// Bytes ever written, so readers know whether the ring wrapped.
    total: u64,
}

impl ConsoleRing {
    /// An empty ring holding up to `capacity` bytes.
    pub fn new(capacity: usize) -> Self {
        Self {
            buf: vec![0; capacity.max(1)].into_boxed_slice(),
            head: 0,
            total: 0,
        }
    }

    /// Appends `data`, overwriting the oldest bytes when full.
    pub fn push(&mut self, mut data: &[u8]) {
        self.total += data.len() as u64;
        let cap = self.buf.len();
        if data.len() > cap {
            data = &data[data.len() - cap..];
        }
        let first = data.len().min(cap - self.head);
        self.buf[self.head..self.head + first].copy_from_slice(&data[..first]);
        let rest = &data[first..];
        self.buf[..rest.len()].copy_from_slice(rest);
        self.head = (self.head + data.len()) % cap;
    }

    /// The last `n` bytes written (fewer if fewer were), oldest first.
    pub fn tail(&self, n: usize) -> Vec<u8> {
        let cap = self.buf.len();
        let held = usize::try_from(self.total).map_or(cap, |t| t.min(cap));
        let n = n.min(held);
        let start = (self.head + cap - n) % cap;
        let mut out = Vec::with_capacity(n);
        let first = n.min(cap - start);
        out.extend_from_slice(&self.buf[start..start + first]);
        out.extend_from_slice(&self.buf[..n - first]);
        out
    }

    /// Bytes written since the VM started.
    pub fn total(&self) -> u64 {
        self.total
    }
}

/// Serial output that goes to the configured sink and into the ring.
pub struct TeeOutput {
    sink: SerialOutput,
    ring: Arc<Mutex<ConsoleRing>>,
}

impl std::fmt::Debug for TeeOutput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TeeOutput").finish_non_exhaustive()
    }
}

impl TeeOutput {
    /// Writes to `sink` and keeps a copy in `ring`.
    pub fn new(sink: SerialOutput, ring: Arc<Mutex<ConsoleRing>>) -> Self {
        Self { sink, ring }
    }
}

impl Write for TeeOutput {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.ring
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(buf);
        // A sink that fails (a full disk, a closed pipe) must not stop the
        // guest's console or the ring: the bytes are dropped there only.
        if let Err(e) = self.sink.write_all(buf) {
            log::debug!("console sink write failed: {e}");
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.sink.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_most_recent_bytes() {
        let mut ring = ConsoleRing::new(8);
        assert_eq!(ring.tail(4), b"");
        ring.push(b"abc");
        assert_eq!(ring.tail(10), b"abc");
        assert_eq!(ring.tail(2), b"bc");
        ring.push(b"defghij");
        assert_eq!(ring.tail(100), b"cdefghij");
        ring.push(b"0123456789ABC");
        assert_eq!(ring.tail(8), b"56789ABC");
        assert_eq!(ring.total(), 23);
    }

    #[test]
    fn tee_writes_both() {
        let ring = Arc::new(Mutex::new(ConsoleRing::new(16)));
        let mut tee = TeeOutput::new(Box::new(std::io::sink()), ring.clone());
        tee.write_all(b"hello").unwrap();
        assert_eq!(ring.lock().unwrap().tail(16), b"hello");
    }
}
