//! `event-manager` integration.
//!
//! Until the driver activates the device, the handler watches only the
//! activation eventfd: a queue notification before then has nothing to
//! act on. When the transport signals an activation, the handler adds the
//! queue eventfd, the engine's completion eventfd (io_uring only) and the
//! rate limiter's timerfd (if any) and serves whatever the driver already
//! queued; when it signals a reset, the handler removes them again (the
//! reset itself already waited for the I/O in flight). New rate limits
//! signal the same eventfd, so a limiter created live is watched too.
//!
//! The VMM shares the device with its MMIO transport as
//! `Arc<Mutex<Block>>`; `event_manager` implements its subscriber traits
//! for `Arc<Mutex<T: MutEventSubscriber>>`, so that handle can be added to
//! an `EventManager` as is.

use std::os::unix::io::AsRawFd;

use event_manager::{EventOps, Events, MutEventSubscriber};
use vmm_sys_util::epoll::EventSet;

use super::Block;
use crate::virtio::{watch_fd as watch, VirtioDevice};

/// Which fds the handler registered besides the activation eventfd.
#[derive(Debug, Default)]
pub(super) struct Watching {
    queue: bool,
    completions: bool,
    limiter: bool,
}

impl Block {
    /// The activation eventfd fired: the transport activated or reset the
    /// device, or new rate limits were set. Watches exactly what the
    /// device needs now and serves what waits.
    fn on_activation_change(&mut self, ops: &mut EventOps) {
        let _ = self.events.activate.read();
        let active = self.is_activated();
        let queue_fd = self.events.queues[0].as_raw_fd();
        watch(
            ops,
            queue_fd,
            &mut self.watching.queue,
            active,
            "queue eventfd",
        );
        if let Some(fd) = self.io.engine.completion_fd().map(AsRawFd::as_raw_fd) {
            let watched = &mut self.watching.completions;
            watch(ops, fd, watched, active, "completion eventfd");
        }
        if let Some(fd) = self.rate_limiter.as_ref().map(AsRawFd::as_raw_fd) {
            watch(
                ops,
                fd,
                &mut self.watching.limiter,
                active,
                "rate limiter timerfd",
            );
        }
        if active && self.watching.queue {
            // Requests the driver queued before we listened, or that the
            // old limits held back.
            self.process_queue();
        }
    }
}

impl MutEventSubscriber for Block {
    fn process(&mut self, events: Events, ops: &mut EventOps) {
        if !events.event_set().contains(EventSet::IN) {
            return;
        }
        let fd = events.fd();
        if fd == self.events.activate.as_raw_fd() {
            self.on_activation_change(ops);
        } else if fd == self.events.queues[0].as_raw_fd() {
            self.handle_queue_event();
        } else if Some(fd) == self.io.engine.completion_fd().map(AsRawFd::as_raw_fd) {
            self.handle_completion_event();
        } else if Some(fd) == self.rate_limiter.as_ref().map(AsRawFd::as_raw_fd) {
            self.handle_rate_limiter_event();
        }
    }

    fn init(&mut self, ops: &mut EventOps) {
        if let Err(e) = ops.add(Events::new(&self.events.activate, EventSet::IN)) {
            log::error!("virtio-blk: cannot watch the activation eventfd: {e}");
        }
    }
}
