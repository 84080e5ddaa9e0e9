//! Host standard input → guest COM1, driven by the event loop.

use std::io::Read;
use std::os::fd::AsRawFd;
use std::sync::{Arc, Mutex};

use event_manager::{EventOps, Events, MutEventSubscriber};
use stratus_devices::legacy::serial::SerialDevice;
use vmm_sys_util::epoll::EventSet;

/// Forwards whatever arrives on stdin to the guest's serial port.
#[derive(Debug)]
pub struct StdinToSerial {
    serial: Arc<Mutex<SerialDevice>>,
    /// Bytes read from stdin that did not fit the UART's FIFO yet.
    pending: Vec<u8>,
}

impl StdinToSerial {
    /// Feeds `serial`.
    pub fn new(serial: Arc<Mutex<SerialDevice>>) -> Self {
        Self {
            serial,
            pending: Vec::with_capacity(64),
        }
    }
}

impl MutEventSubscriber for StdinToSerial {
    fn process(&mut self, events: Events, ops: &mut EventOps) {
        let stdin = std::io::stdin();
        if events.event_set().contains(EventSet::IN) {
            let mut serial = self.serial.lock().unwrap_or_else(|p| p.into_inner());
            let mut buf = [0u8; 64];
            // Only read what the guest can take now; the rest stays in the
            // kernel's pipe/tty buffer, which is the back-pressure we want.
            let room = serial.input_room().min(buf.len());
            if room > 0 {
                match stdin.lock().read(&mut buf[..room]) {
                    Ok(0) => {
                        // EOF: stop watching, or epoll reports it forever.
                        let _ = ops.remove(events);
                    }
                    Ok(n) => {
                        self.pending.extend_from_slice(&buf[..n]);
                        let taken = serial.enqueue_input(&self.pending);
                        self.pending.drain(..taken);
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        log::warn!("console: stdin unreadable, detaching: {e}");
                        let _ = ops.remove(events);
                    }
                }
            }
        } else if events
            .event_set()
            .intersects(EventSet::HANG_UP | EventSet::ERROR)
        {
            let _ = ops.remove(events);
        }
    }

    fn init(&mut self, ops: &mut EventOps) {
        let fd = std::io::stdin().as_raw_fd();
        if let Err(e) = ops.add(Events::new_raw(fd, EventSet::IN)) {
            // A regular file or /dev/null cannot be polled: no console input.
            log::debug!("console: stdin not pollable ({e}); guest input disabled");
        }
    }
}
