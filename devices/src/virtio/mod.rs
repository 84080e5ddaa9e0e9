//! Virtio 1.x devices and their MMIO transport.
//!
//! A device ([`VirtioDevice`]) knows its queues, features and config space;
//! the transport ([`mmio::MmioTransport`]) turns guest register accesses into
//! calls on it and owns the feature/status negotiation. Devices never see the
//! transport: they get guest memory and their queues when the driver sets
//! DRIVER_OK, and raise interrupts through the [`IrqTrigger`] in their
//! [`DeviceEvents`]. Each device also implements an event handler
//! (`event_manager::MutEventSubscriber`) that the VMM runs on the device's
//! own thread; it watches the activation eventfd first and the queues only
//! once the driver has activated the device.

pub mod block;
pub mod interrupt;
pub mod mmio;
pub mod net;

use std::fmt::Debug;

use virtio_queue::Queue;
use vm_memory::GuestMemoryMmap as GenericGuestMemoryMmap;
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

pub use interrupt::{IrqTrigger, VIRTIO_MMIO_INT_CONFIG, VIRTIO_MMIO_INT_VRING};

/// Guest memory as the devices see it (no dirty-page bitmap).
pub type GuestMemoryMmap = GenericGuestMemoryMmap<()>;

/// The low half of a 64-bit register value.
#[allow(clippy::cast_possible_truncation)] // dropping the high half is the point
pub(crate) fn low32(value: u64) -> u32 {
    value as u32
}

/// Device status bits (virtio 1.x, section 2.1).
pub mod status {
    /// The guest OS has noticed the device.
    pub const ACKNOWLEDGE: u32 = 1;
    /// The guest OS knows how to drive the device.
    pub const DRIVER: u32 = 2;
    /// The driver is set up and ready to drive the device.
    pub const DRIVER_OK: u32 = 4;
    /// The driver has acknowledged the features it understands.
    pub const FEATURES_OK: u32 = 8;
    /// The device hit an error it cannot recover from without a reset.
    pub const DEVICE_NEEDS_RESET: u32 = 64;
    /// The driver gave up on the device.
    pub const FAILED: u32 = 128;
}

/// Device-independent feature bits this crate uses.
pub mod features {
    /// Modern (virtio 1.x) device; mandatory for this transport.
    pub const VIRTIO_F_VERSION_1: u32 = 32;
    /// Indirect descriptor tables.
    pub const VIRTIO_RING_F_INDIRECT_DESC: u32 = 28;
    /// `used_event`/`avail_event` notification suppression.
    pub const VIRTIO_RING_F_EVENT_IDX: u32 = 29;
}

/// Virtio device type identifiers (virtio 1.x, section 5).
pub mod device_type {
    /// Network card.
    pub const NET: u32 = 1;
    /// Block device.
    pub const BLOCK: u32 = 2;
}

/// Adds `fd` to or removes it from a device handler's event set so that
/// it is watched exactly when `want`, tracking that in `watched`; `what`
/// names it in the error log (a device's fds come and go with activation,
/// reset and back-pressure, so every device needs this bookkeeping).
pub(crate) fn watch_fd(
    ops: &mut event_manager::EventOps,
    fd: std::os::unix::io::RawFd,
    watched: &mut bool,
    want: bool,
    what: &str,
) {
    if *watched == want {
        return;
    }
    let events = event_manager::Events::new_raw(fd, vmm_sys_util::epoll::EventSet::IN);
    let result = if want {
        ops.add(events)
    } else {
        ops.remove(events)
    };
    match result {
        Ok(()) => *watched = want,
        Err(e) => log::error!("cannot (un)watch the {what}: {e}"),
    }
}

/// Copies config-space bytes at `offset` into `data`; bytes past the end
/// of `config` read as zero.
pub(crate) fn read_config_bytes(config: &[u8], offset: u64, data: &mut [u8]) {
    data.fill(0);
    let Ok(start) = usize::try_from(offset) else {
        return;
    };
    if let Some(src) = config.get(start..) {
        let n = src.len().min(data.len());
        data[..n].copy_from_slice(&src[..n]);
    }
}

/// The driver's queues, checked for an activation: exactly `expected` of
/// them, each ready with its rings inside guest memory.
pub(crate) fn checked_queues(
    mem: &GuestMemoryMmap,
    queues: Vec<Queue>,
    expected: usize,
) -> Result<Vec<Queue>, ActivateError> {
    if queues.len() != expected {
        return Err(ActivateError::QueueCount {
            expected,
            got: queues.len(),
        });
    }
    use virtio_queue::QueueT;
    match queues.iter().position(|q| !q.is_valid(mem)) {
        Some(index) => Err(ActivateError::InvalidQueue(index)),
        None => Ok(queues),
    }
}

/// Why a device refused to start.
#[derive(Debug, thiserror::Error)]
pub enum ActivateError {
    /// The driver handed over a different number of queues than the device has.
    #[error("expected {expected} queues, got {got}")]
    QueueCount {
        /// Queues the device needs.
        expected: usize,
        /// Queues it was given.
        got: usize,
    },
    /// A queue the device needs was not marked ready, or its rings are not
    /// inside guest memory.
    #[error("queue {0} is not ready or its rings are outside guest memory")]
    InvalidQueue(usize),
    /// Activation was attempted on a device that is already running.
    #[error("device is already active")]
    AlreadyActive,
}

/// The file descriptors every virtio device carries from construction,
/// so the VMM can wire them into KVM and the transport can answer the
/// guest without taking the device lock.
#[derive(Debug)]
pub struct DeviceEvents {
    /// One per queue, signalled when the driver notifies the queue. The
    /// VMM registers them as ioeventfds (at transport base + 0x50 with
    /// datamatch = queue index); a QueueNotify write that reaches the bus
    /// instead is forwarded to the same `EventFd`.
    pub queues: Vec<EventFd>,
    /// Signalled by the transport when the device was activated or reset
    /// (on a vCPU thread). The device's event handler watches
    /// only this until then and (un)registers its queue and backend fds
    /// when it fires, so nothing is polled before the driver is ready.
    pub activate: EventFd,
    /// The device's interrupt: status bits, config generation and irqfd.
    pub interrupt: IrqTrigger,
}

impl DeviceEvents {
    /// Fresh non-blocking eventfds for a device with `queues` queues.
    pub fn new(queues: usize) -> std::io::Result<Self> {
        Ok(Self {
            queues: (0..queues)
                .map(|_| EventFd::new(EFD_NONBLOCK))
                .collect::<Result<_, _>>()?,
            activate: EventFd::new(EFD_NONBLOCK)?,
            interrupt: IrqTrigger::new()?,
        })
    }
}

/// A virtio device model that can sit behind a transport.
///
/// The transport calls these with the device lock held, from a vCPU
/// thread, only for config space, feature acknowledgement, activation and
/// reset; everything else it answers from values it copied at
/// construction ([`Self::device_type`], [`Self::queue_max_sizes`],
/// [`Self::avail_features`], [`Self::events`]), so a device busy on its
/// own thread never stalls a vCPU reading an ordinary register.
pub trait VirtioDevice: Send + Debug {
    /// The virtio device type, see [`device_type`]. Fixed for the device's
    /// lifetime.
    fn device_type(&self) -> u32;

    /// Maximum size of each queue; the length is the number of queues.
    /// Fixed for the device's lifetime.
    fn queue_max_sizes(&self) -> &[u16];

    /// The device's eventfds and interrupt, see [`DeviceEvents`].
    fn events(&self) -> &DeviceEvents;

    /// Feature bits the device offers (64-bit). Fixed for the device's
    /// lifetime.
    fn avail_features(&self) -> u64;

    /// The subset of [`Self::avail_features`] the driver accepted. Called
    /// once when the driver sets FEATURES_OK; the transport has already
    /// checked that the set is a subset and contains `VIRTIO_F_VERSION_1`.
    fn ack_features(&mut self, features: u64);

    /// Reads device config space at `offset`; bytes past the end read as 0.
    fn read_config(&self, offset: u64, data: &mut [u8]);

    /// Writes device config space. Devices with a read-only config ignore it.
    fn write_config(&mut self, offset: u64, data: &[u8]);

    /// Takes the queues the driver configured. Runs on a vCPU thread: the
    /// device only stores them; the transport then signals
    /// [`DeviceEvents::activate`] and the device's event handler starts the
    /// work on its own thread. No I/O here.
    fn activate(&mut self, mem: GuestMemoryMmap, queues: Vec<Queue>) -> Result<(), ActivateError>;

    /// Stops the device and drops the queues; it may be activated again.
    /// When this returns the device no longer touches guest memory through
    /// the old queues (in-flight work is finished or cancelled).
    fn reset(&mut self);

    /// Whether [`Self::activate`] succeeded and no reset happened since.
    fn is_activated(&self) -> bool;

    /// Reports the device's counters, for the VMM's metrics. Names are
    /// `snake_case`; values only grow.
    fn write_metrics(&self, _out: &mut dyn FnMut(&'static str, u64)) {}

    /// Reports the device's current state (values that go up and down),
    /// for the VMM's metrics. Names are `snake_case`.
    fn write_gauges(&self, _out: &mut dyn FnMut(&'static str, u64)) {}
}
