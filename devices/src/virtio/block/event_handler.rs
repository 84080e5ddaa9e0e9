//! `event-manager` integration: the device subscribes to its own queue
//! `EventFd` from the moment it is added to the loop (the fd exists from
//! construction, so nothing needs registering at activation).
//!
//! The VMM shares the device with its MMIO transport as
//! `Arc<Mutex<Block>>`; `event_manager` implements its subscriber traits
//! for `Arc<Mutex<T: MutEventSubscriber>>`, so that handle can be added to
//! an `EventManager` as is. VMMs with their own loop call
//! [`Block::handle_queue_event`] instead.

use event_manager::{EventOps, Events, MutEventSubscriber};
use vmm_sys_util::epoll::EventSet;

use super::Block;
use crate::virtio::VirtioDevice;

impl MutEventSubscriber for Block {
    fn process(&mut self, events: Events, _ops: &mut EventOps) {
        let queue_fd = std::os::unix::io::AsRawFd::as_raw_fd(&self.queue_events()[0]);
        if events.fd() == queue_fd && events.event_set().contains(EventSet::IN) {
            self.handle_queue_event();
        }
    }

    fn init(&mut self, ops: &mut EventOps) {
        if let Err(e) = ops.add(Events::new(&self.queue_events()[0], EventSet::IN)) {
            log::error!("virtio-blk: cannot register the queue eventfd: {e}");
        }
    }
}
