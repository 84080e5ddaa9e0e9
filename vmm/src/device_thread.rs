//! A thread of a device's own, running an event loop with just that
//! device's handler, so that one device's work (a disk drain, a NIC's
//! datapath) never delays another's, the console or the API.
//!
//! Which devices get one: every virtio device does (virtio-blk today; the
//! NIC next). A device that does blocking I/O must not share a loop with
//! anything latency-sensitive, and per-device threads also give each
//! device its own seccomp filter later. Legacy devices (COM1, i8042, ACPI
//! registers) have no handler of their own: vCPU threads serve them.

use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use event_manager::{EventManager, EventOps, Events, MutEventSubscriber, SubscriberOps};
use vmm_sys_util::epoll::EventSet;
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

/// An event handler that can run on any thread.
pub type SharedHandler = Arc<Mutex<dyn MutEventSubscriber + Send>>;

/// Errors starting a device thread.
#[derive(Debug, thiserror::Error)]
pub enum DeviceThreadError {
    /// The stop eventfd could not be created.
    #[error("cannot create a device thread's stop eventfd: {0}")]
    EventFd(std::io::Error),
    /// The thread could not be started.
    #[error("cannot start device thread {name}: {source}")]
    Spawn {
        /// The thread's name.
        name: String,
        /// Why.
        source: std::io::Error,
    },
}

/// A running device thread.
#[derive(Debug)]
pub struct DeviceThread {
    name: String,
    stop: EventFd,
    thread: Option<JoinHandle<()>>,
}

/// Ends the loop when the stop eventfd fires.
struct StopOnEvent {
    stop: EventFd,
    stopped: bool,
}

impl MutEventSubscriber for StopOnEvent {
    fn process(&mut self, _events: Events, _ops: &mut EventOps) {
        let _ = self.stop.read();
        self.stopped = true;
    }

    fn init(&mut self, ops: &mut EventOps) {
        if let Err(e) = ops.add(Events::new(&self.stop, EventSet::IN)) {
            log::error!("device thread cannot watch its stop eventfd: {e}");
            self.stopped = true;
        }
    }
}

impl DeviceThread {
    /// Starts a thread named `name` serving `handler`.
    pub fn spawn(name: String, handler: SharedHandler) -> Result<Self, DeviceThreadError> {
        let stop = EventFd::new(EFD_NONBLOCK).map_err(DeviceThreadError::EventFd)?;
        let watcher = Arc::new(Mutex::new(StopOnEvent {
            stop: stop.try_clone().map_err(DeviceThreadError::EventFd)?,
            stopped: false,
        }));
        let thread = std::thread::Builder::new()
            .name(name.clone())
            .spawn(move || run_loop(handler, &watcher))
            .map_err(|source| DeviceThreadError::Spawn {
                name: name.clone(),
                source,
            })?;
        Ok(Self {
            name,
            stop,
            thread: Some(thread),
        })
    }

    /// Stops the loop and waits for the thread.
    pub fn stop_and_join(mut self) {
        let _ = self.stop.write(1);
        if let Some(thread) = self.thread.take() {
            if thread.join().is_err() {
                log::error!("device thread {} panicked", self.name);
            }
        }
    }
}

fn run_loop(handler: SharedHandler, watcher: &Arc<Mutex<StopOnEvent>>) {
    let mut manager: EventManager<SharedHandler> = match EventManager::new() {
        Ok(m) => m,
        Err(e) => {
            log::error!("device thread cannot create its event loop: {e}");
            return;
        }
    };
    manager.add_subscriber(watcher.clone());
    manager.add_subscriber(handler);
    loop {
        if let Err(e) = manager.run() {
            log::error!("device event loop failed: {e}");
            return;
        }
        if watcher.lock().unwrap_or_else(|p| p.into_inner()).stopped {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    struct Counter {
        evt: EventFd,
        seen: Arc<AtomicU32>,
    }

    impl MutEventSubscriber for Counter {
        fn process(&mut self, _events: Events, _ops: &mut EventOps) {
            let _ = self.evt.read();
            self.seen.fetch_add(1, Ordering::SeqCst);
        }
        fn init(&mut self, ops: &mut EventOps) {
            ops.add(Events::new(&self.evt, EventSet::IN)).unwrap();
        }
    }

    #[test]
    fn serves_its_handler_until_stopped() {
        let evt = EventFd::new(EFD_NONBLOCK).unwrap();
        let seen = Arc::new(AtomicU32::new(0));
        let handler = Arc::new(Mutex::new(Counter {
            evt: evt.try_clone().unwrap(),
            seen: seen.clone(),
        }));
        let thread = DeviceThread::spawn("test-dev".into(), handler).unwrap();
        evt.write(1).unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while seen.load(Ordering::SeqCst) == 0 && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        assert_eq!(seen.load(Ordering::SeqCst), 1);
        thread.stop_and_join();
    }
}
