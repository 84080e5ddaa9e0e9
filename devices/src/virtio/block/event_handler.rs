//! `event-manager` integration.
//!
//! Until the driver activates the device, the handler watches only the
//! activation eventfd: a queue notification before then has nothing to
//! act on. When the transport signals an activation, the handler adds the
//! queue eventfd and serves whatever the driver already queued; when it
//! signals a reset, the handler removes it again.
//!
//! The VMM shares the device with its MMIO transport as
//! `Arc<Mutex<Block>>`; `event_manager` implements its subscriber traits
//! for `Arc<Mutex<T: MutEventSubscriber>>`, so that handle can be added to
//! an `EventManager` as is.

use std::os::unix::io::AsRawFd;

use event_manager::{EventOps, Events, MutEventSubscriber};
use vmm_sys_util::epoll::EventSet;

use super::Block;
use crate::virtio::VirtioDevice;

impl Block {
    fn on_activation_change(&mut self, ops: &mut EventOps) {
        let _ = self.events().activate.read();
        let queue = Events::new(&self.events().queues[0], EventSet::IN);
        match (self.is_activated(), self.queue_registered) {
            (true, false) => match ops.add(queue) {
                Ok(()) => {
                    self.queue_registered = true;
                    // Requests the driver queued before we listened.
                    self.process_queue();
                }
                Err(e) => log::error!("virtio-blk: cannot watch the queue eventfd: {e}"),
            },
            (false, true) => {
                if let Err(e) = ops.remove(queue) {
                    log::error!("virtio-blk: cannot stop watching the queue eventfd: {e}");
                }
                self.queue_registered = false;
            }
            _ => {}
        }
    }
}

impl MutEventSubscriber for Block {
    fn process(&mut self, events: Events, ops: &mut EventOps) {
        if !events.event_set().contains(EventSet::IN) {
            return;
        }
        let fd = events.fd();
        if fd == self.events().activate.as_raw_fd() {
            self.on_activation_change(ops);
        } else if fd == self.events().queues[0].as_raw_fd() {
            self.handle_queue_event();
        }
    }

    fn init(&mut self, ops: &mut EventOps) {
        if let Err(e) = ops.add(Events::new(&self.events().activate, EventSet::IN)) {
            log::error!("virtio-blk: cannot watch the activation eventfd: {e}");
        }
    }
}
