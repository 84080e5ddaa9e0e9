//! `event-manager` integration.
//!
//! Until the driver activates the device, the handler watches only the
//! activation eventfd. Once active it watches both queue eventfds, and the
//! tap only while frames can go somewhere: when the guest's RX buffers run
//! out the tap is unwatched (frames wait in its queue), and the RX queue
//! notification that brings new buffers watches it again.

use std::os::unix::io::AsRawFd;
use std::time::Duration;

use event_manager::{EventOps, Events, MutEventSubscriber};
use vmm_sys_util::epoll::EventSet;

use super::rx::RxStop;
use super::{Net, RX_QUEUE, TX_QUEUE};
use crate::virtio::{watch_fd as watch, VirtioDevice};

/// Which fds the handler registered besides the activation eventfd.
#[derive(Debug, Default)]
pub(super) struct Watching {
    queues: bool,
    tap: bool,
    timer: bool,
}

impl Net {
    fn on_activation_change(&mut self, ops: &mut EventOps) {
        let _ = self.events.activate.read();
        let active = self.is_activated();
        if self.watching.queues != active {
            for (index, what) in [(RX_QUEUE, "RX queue"), (TX_QUEUE, "TX queue")] {
                let fd = self.events.queues[index].as_raw_fd();
                let mut watched = self.watching.queues;
                watch(ops, fd, &mut watched, active, what);
            }
            self.watching.queues = active;
        }
        let offloads = if active { self.tap_offloads() } else { 0 };
        if let Err(e) = self.tap.set_offload(offloads) {
            log::warn!(
                "virtio-net: tap {} refused offloads {offloads:#x}: {e}",
                self.tap.name()
            );
        }
        let fd = self.timer.as_raw_fd();
        watch(ops, fd, &mut self.watching.timer, active, "datapath timer");
        if !active {
            // A frame waiting for the old driver's buffers is dropped.
            self.rx_len = None;
            let fd = self.tap.as_raw_fd();
            watch(ops, fd, &mut self.watching.tap, false, "tap");
            return;
        }
        // Frames the driver queued before we listened.
        self.transmit();
        self.pump_rx(ops);
    }

    /// Receives what can be received and watches the tap accordingly.
    fn pump_rx(&mut self, ops: &mut EventOps) {
        let stop = self.receive(true);
        let want_tap = self.is_activated() && stop != RxStop::NoRoom;
        let fd = self.tap.as_raw_fd();
        watch(ops, fd, &mut self.watching.tap, want_tap, "tap");
    }

    /// The timer fired: the datapath's time-driven work, then whatever it
    /// queued for the guest.
    fn on_timer(&mut self, ops: &mut EventOps) {
        // Readable, so this does not block; the count does not matter.
        let _ = self.timer.wait();
        self.timer_deadline = None;
        self.datapath.poll();
        self.pump_rx(ops);
    }

    /// Arms the timer for the datapath's next deadline, if it moved.
    fn rearm_timer(&mut self) {
        let want = if self.is_activated() {
            self.datapath.next_deadline_ms()
        } else {
            None
        };
        if want == self.timer_deadline {
            return;
        }
        // Zero disarms a timerfd; anything due now fires in a millisecond.
        let delay = want.map_or(Duration::ZERO, |t| {
            Duration::from_millis(t.saturating_sub(self.datapath.now_ms()).max(1))
        });
        match self.timer.reset(delay, None) {
            Ok(()) => self.timer_deadline = want,
            Err(e) => log::error!("virtio-net: cannot arm the datapath timer: {e}"),
        }
    }
}

impl MutEventSubscriber for Net {
    fn process(&mut self, events: Events, ops: &mut EventOps) {
        if !events.event_set().contains(EventSet::IN) {
            return;
        }
        let fd = events.fd();
        if fd == self.events.activate.as_raw_fd() {
            self.on_activation_change(ops);
        } else if fd == self.events.queues[TX_QUEUE].as_raw_fd() {
            let _ = self.events.queues[TX_QUEUE].read();
            self.transmit();
            if self.datapath.has_local_frames() {
                // Answers (DHCP) go out at once.
                self.pump_rx(ops);
            }
        } else if fd == self.events.queues[RX_QUEUE].as_raw_fd() {
            let _ = self.events.queues[RX_QUEUE].read();
            self.pump_rx(ops);
        } else if fd == self.tap.as_raw_fd() {
            self.pump_rx(ops);
        } else if fd == self.timer.as_raw_fd() {
            self.on_timer(ops);
        }
        self.rearm_timer();
    }

    fn init(&mut self, ops: &mut EventOps) {
        if let Err(e) = ops.add(Events::new(&self.events.activate, EventSet::IN)) {
            log::error!("virtio-net: cannot watch the activation eventfd: {e}");
        }
    }
}
