//! The virtio-mmio transport, modern interface only (Version register = 2).
//!
//! One `MmioTransport` per device sits on the MMIO bus. It owns everything
//! the driver negotiates (features, status, queue addresses) and hands the
//! device its queues when the driver sets DRIVER_OK. Guest writes are
//! validated here: values the transport cannot accept are ignored or make
//! activation fail with DEVICE_NEEDS_RESET; nothing a guest writes panics.
//! Each refusal is counted in [`TransportMetrics`] and logged rate-limited.
//!
//! Locking: the transport itself is reached only from vCPU threads (behind
//! the bus's per-device lock). It copies what never changes (device type,
//! offered features, queue sizes, eventfds, interrupt) when it is built, so
//! ordinary register reads and QueueNotify never take the *device* lock,
//! which the device's own thread may hold while it works. The device lock
//! is taken only for config space, FEATURES_OK, activation and reset.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use virtio_queue::{Queue, QueueT};
use vm_memory::GuestAddress;
use vmm_sys_util::eventfd::EventFd;

use super::features::VIRTIO_F_VERSION_1;
use super::status::{ACKNOWLEDGE, DEVICE_NEEDS_RESET, DRIVER, DRIVER_OK, FAILED, FEATURES_OK};
use super::{GuestMemoryMmap, IrqTrigger, VirtioDevice, VIRTIO_MMIO_INT_CONFIG};
use crate::bus::BusDevice;
use crate::guest_warn;

/// Size of the MMIO window one transport occupies (registers + config).
pub const MMIO_REGION_SIZE: u64 = 0x1000;
/// Offset of QueueNotify: register one ioeventfd per queue here, with the
/// queue index as datamatch (4-byte write).
pub const QUEUE_NOTIFY_OFFSET: u64 = 0x50;

const MAGIC_VALUE: u32 = 0x7472_6976; // "virt"
const VERSION: u32 = 2;
const VENDOR_ID: u32 = 0x5354_5241; // arbitrary, shown by the guest only
const CONFIG_SPACE_OFFSET: u64 = 0x100;

// Register offsets (virtio 1.x, section 4.2.2).
const REG_MAGIC: u64 = 0x00;
const REG_VERSION: u64 = 0x04;
const REG_DEVICE_ID: u64 = 0x08;
const REG_VENDOR_ID: u64 = 0x0c;
const REG_DEVICE_FEATURES: u64 = 0x10;
const REG_DEVICE_FEATURES_SEL: u64 = 0x14;
const REG_DRIVER_FEATURES: u64 = 0x20;
const REG_DRIVER_FEATURES_SEL: u64 = 0x24;
const REG_QUEUE_SEL: u64 = 0x30;
const REG_QUEUE_NUM_MAX: u64 = 0x34;
const REG_QUEUE_NUM: u64 = 0x38;
const REG_QUEUE_READY: u64 = 0x44;
const REG_QUEUE_NOTIFY: u64 = QUEUE_NOTIFY_OFFSET;
const REG_INTERRUPT_STATUS: u64 = 0x60;
const REG_INTERRUPT_ACK: u64 = 0x64;
const REG_STATUS: u64 = 0x70;
const REG_QUEUE_DESC_LOW: u64 = 0x80;
const REG_QUEUE_DESC_HIGH: u64 = 0x84;
const REG_QUEUE_DRIVER_LOW: u64 = 0x90;
const REG_QUEUE_DRIVER_HIGH: u64 = 0x94;
const REG_QUEUE_DEVICE_LOW: u64 = 0xa0;
const REG_QUEUE_DEVICE_HIGH: u64 = 0xa4;
const REG_SHM_SEL: u64 = 0xac;
const REG_SHM_LEN_LOW: u64 = 0xb0;
const REG_SHM_LEN_HIGH: u64 = 0xb4;
const REG_SHM_BASE_LOW: u64 = 0xb8;
const REG_SHM_BASE_HIGH: u64 = 0xbc;
const REG_CONFIG_GENERATION: u64 = 0xfc;

/// Errors building a transport.
#[derive(Debug, thiserror::Error)]
pub enum MmioError {
    /// The interrupt `EventFd` could not be created.
    #[error("cannot create the interrupt eventfd: {0}")]
    Interrupt(std::io::Error),
    /// The device has a different number of queue eventfds than queues.
    #[error("device has {queues} queues but {events} queue eventfds")]
    QueueEventCount {
        /// Queues.
        queues: usize,
        /// Eventfds.
        events: usize,
    },
    /// An eventfd could not be duplicated.
    #[error("cannot duplicate a device eventfd: {0}")]
    CloneEventFd(std::io::Error),
    /// The device reported a queue maximum that is zero, above 32768 or not
    /// a power of two.
    #[error("device queue {index} has an invalid maximum size {max}")]
    InvalidQueueMax {
        /// Queue index.
        index: usize,
        /// The maximum the device reported.
        max: u16,
    },
}

/// What the driver did that the transport refused, and lifecycle events;
/// shared with the VMM's metrics (atomics: read without the bus lock).
#[derive(Debug, Default)]
pub struct TransportMetrics {
    /// Register accesses of the wrong width or alignment, or to unknown
    /// registers.
    pub bad_accesses: AtomicU64,
    /// Status writes that skip or undo negotiation steps.
    pub bad_status_writes: AtomicU64,
    /// Driver feature sets refused at FEATURES_OK (or written too late).
    pub refused_features: AtomicU64,
    /// Queue register writes refused (wrong state, missing queue, bad value).
    pub bad_queue_writes: AtomicU64,
    /// QueueNotify writes naming a queue the device does not have.
    pub bad_notifies: AtomicU64,
    /// Successful activations (DRIVER_OK accepted).
    pub activations: AtomicU64,
    /// Activations refused (the device then asks for a reset).
    pub failed_activations: AtomicU64,
    /// Resets by the driver (Status = 0).
    pub resets: AtomicU64,
}

impl TransportMetrics {
    /// Calls `out` with each counter's name and value.
    pub fn write(&self, out: &mut dyn FnMut(&'static str, u64)) {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        out("transport_bad_accesses", get(&self.bad_accesses));
        out("transport_bad_status_writes", get(&self.bad_status_writes));
        out("transport_refused_features", get(&self.refused_features));
        out("transport_bad_queue_writes", get(&self.bad_queue_writes));
        out("transport_bad_notifies", get(&self.bad_notifies));
        out("transport_activations", get(&self.activations));
        out(
            "transport_failed_activations",
            get(&self.failed_activations),
        );
        out("transport_resets", get(&self.resets));
    }
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// A virtio device behind the virtio-mmio register interface.
pub struct MmioTransport {
    device: Arc<Mutex<dyn VirtioDevice>>,
    // Copied from the device at construction; see the module docs.
    device_type: u32,
    avail_features: u64,
    queue_events: Vec<EventFd>,
    activate_event: EventFd,
    interrupt: IrqTrigger,
    mem: GuestMemoryMmap,
    queues: Vec<Queue>,
    device_features_sel: u32,
    driver_features_sel: u32,
    driver_features: u64,
    queue_sel: u32,
    status: u32,
    /// The driver wrote a queue value we could not accept; activation
    /// must fail instead of running with values the driver did not mean.
    bad_queue_config: bool,
    metrics: Arc<TransportMetrics>,
}

impl std::fmt::Debug for MmioTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MmioTransport")
            .field("device_type", &self.device_type)
            .field("status", &self.status)
            .field("driver_features", &self.driver_features)
            .field("queues", &self.queues.len())
            .finish()
    }
}

impl MmioTransport {
    /// Wraps `device`; `mem` is used to check queue addresses and is handed
    /// to the device on activation.
    pub fn new(
        mem: GuestMemoryMmap,
        device: Arc<Mutex<dyn VirtioDevice>>,
    ) -> Result<Self, MmioError> {
        let (device_type, avail_features, queues, queue_events, activate_event, interrupt) = {
            let dev = lock(&device);
            let queues = dev
                .queue_max_sizes()
                .iter()
                .enumerate()
                .map(|(index, &max)| {
                    Queue::new(max).map_err(|_| MmioError::InvalidQueueMax { index, max })
                })
                .collect::<Result<Vec<_>, _>>()?;
            let events = dev.events();
            if events.queues.len() != queues.len() {
                return Err(MmioError::QueueEventCount {
                    queues: queues.len(),
                    events: events.queues.len(),
                });
            }
            let queue_events = events
                .queues
                .iter()
                .map(EventFd::try_clone)
                .collect::<Result<Vec<_>, _>>()
                .map_err(MmioError::CloneEventFd)?;
            let activate_event = events
                .activate
                .try_clone()
                .map_err(MmioError::CloneEventFd)?;
            (
                dev.device_type(),
                dev.avail_features(),
                queues,
                queue_events,
                activate_event,
                events.interrupt.clone(),
            )
        };
        Ok(Self {
            device,
            device_type,
            avail_features,
            queue_events,
            activate_event,
            interrupt,
            mem,
            queues,
            device_features_sel: 0,
            driver_features_sel: 0,
            driver_features: 0,
            queue_sel: 0,
            status: 0,
            bad_queue_config: false,
            metrics: Arc::default(),
        })
    }

    /// The device behind this transport.
    pub fn device(&self) -> &Arc<Mutex<dyn VirtioDevice>> {
        &self.device
    }

    /// The device's interrupt; register `interrupt().irq_evt()` as the
    /// irqfd for this device's GSI.
    pub fn interrupt(&self) -> &IrqTrigger {
        &self.interrupt
    }

    /// What the driver did wrong, and lifecycle counts.
    pub fn metrics(&self) -> Arc<TransportMetrics> {
        self.metrics.clone()
    }

    /// Duplicates of the device's queue `EventFd`s, index = queue index,
    /// for registering ioeventfds at base + [`QUEUE_NOTIFY_OFFSET`].
    pub fn queue_events(&self) -> std::io::Result<Vec<EventFd>> {
        self.queue_events.iter().map(EventFd::try_clone).collect()
    }

    /// The Status register as the driver sees it.
    pub fn status(&self) -> u32 {
        if self.interrupt.needs_reset() {
            self.status | DEVICE_NEEDS_RESET
        } else {
            self.status
        }
    }

    fn selected_queue(&mut self) -> Option<&mut Queue> {
        self.queues.get_mut(self.queue_sel as usize)
    }

    /// Queue registers may only change between FEATURES_OK and DRIVER_OK.
    fn queue_config_allowed(&self) -> bool {
        self.status & (FEATURES_OK | DRIVER_OK | FAILED | DEVICE_NEEDS_RESET) == FEATURES_OK
    }

    fn read_register(&self, offset: u64) -> u32 {
        let queue = self.queues.get(self.queue_sel as usize);
        match offset {
            REG_MAGIC => MAGIC_VALUE,
            REG_VERSION => VERSION,
            REG_DEVICE_ID => self.device_type,
            REG_VENDOR_ID => VENDOR_ID,
            REG_DEVICE_FEATURES => match self.device_features_sel {
                0 => super::low32(self.avail_features),
                1 => super::low32(self.avail_features >> 32),
                _ => 0,
            },
            REG_QUEUE_NUM_MAX => queue.map_or(0, |q| u32::from(q.max_size())),
            REG_QUEUE_READY => queue.map_or(0, |q| u32::from(q.ready())),
            REG_INTERRUPT_STATUS => self.interrupt.status(),
            REG_STATUS => self.status(),
            // No shared memory regions: length reads as all ones.
            REG_SHM_LEN_LOW | REG_SHM_LEN_HIGH => u32::MAX,
            REG_SHM_BASE_LOW | REG_SHM_BASE_HIGH => 0,
            REG_CONFIG_GENERATION => self.interrupt.config_generation(),
            _ => {
                bump(&self.metrics.bad_accesses);
                log::debug!("virtio-mmio: read of unknown register {offset:#x}");
                0
            }
        }
    }

    fn write_register(&mut self, offset: u64, value: u32) {
        match offset {
            REG_DEVICE_FEATURES_SEL => self.device_features_sel = value,
            REG_DRIVER_FEATURES_SEL => self.driver_features_sel = value,
            REG_DRIVER_FEATURES => self.write_driver_features(value),
            REG_QUEUE_SEL => self.queue_sel = value,
            REG_QUEUE_NOTIFY => self.notify_queue(value),
            REG_INTERRUPT_ACK => self.interrupt.ack(value),
            REG_STATUS => self.write_status(value),
            REG_SHM_SEL => {}
            REG_QUEUE_NUM
            | REG_QUEUE_READY
            | REG_QUEUE_DESC_LOW
            | REG_QUEUE_DESC_HIGH
            | REG_QUEUE_DRIVER_LOW
            | REG_QUEUE_DRIVER_HIGH
            | REG_QUEUE_DEVICE_LOW
            | REG_QUEUE_DEVICE_HIGH => self.write_queue_register(offset, value),
            _ => {
                bump(&self.metrics.bad_accesses);
                log::debug!("virtio-mmio: write of {value:#x} to register {offset:#x} ignored");
            }
        }
    }

    fn write_driver_features(&mut self, value: u32) {
        // Features are fixed once FEATURES_OK is set.
        if self.status & (DRIVER | FEATURES_OK) != DRIVER {
            bump(&self.metrics.refused_features);
            guest_warn!(
                "virtio-mmio: driver features written in status {:#x}",
                self.status
            );
            return;
        }
        let value = u64::from(value);
        match self.driver_features_sel {
            0 => self.driver_features = (self.driver_features & !0xffff_ffff) | value,
            1 => self.driver_features = (self.driver_features & 0xffff_ffff) | (value << 32),
            // Selectors past 1 name features nobody defines; writing zero
            // there is harmless, anything else can never be accepted.
            _ if value == 0 => {}
            _ => self.driver_features |= 1 << 63 | (1 << 62),
        }
    }

    fn write_queue_register(&mut self, offset: u64, value: u32) {
        if !self.queue_config_allowed() {
            bump(&self.metrics.bad_queue_writes);
            guest_warn!(
                "virtio-mmio: queue register {offset:#x} written in status {:#x}",
                self.status
            );
            return;
        }
        let Some(queue) = self.selected_queue() else {
            bump(&self.metrics.bad_queue_writes);
            guest_warn!("virtio-mmio: queue register {offset:#x} written for a missing queue");
            return;
        };
        let result = match offset {
            REG_QUEUE_NUM => match u16::try_from(value) {
                Ok(size) => queue.try_set_size(size).is_ok(),
                Err(_) => false,
            },
            REG_QUEUE_READY => {
                queue.set_ready(value == 1);
                value <= 1
            }
            REG_QUEUE_DESC_LOW | REG_QUEUE_DESC_HIGH => {
                let addr = merge_half(queue.desc_table(), offset == REG_QUEUE_DESC_HIGH, value);
                queue.try_set_desc_table_address(GuestAddress(addr)).is_ok()
            }
            REG_QUEUE_DRIVER_LOW | REG_QUEUE_DRIVER_HIGH => {
                let addr = merge_half(queue.avail_ring(), offset == REG_QUEUE_DRIVER_HIGH, value);
                queue.try_set_avail_ring_address(GuestAddress(addr)).is_ok()
            }
            REG_QUEUE_DEVICE_LOW | REG_QUEUE_DEVICE_HIGH => {
                let addr = merge_half(queue.used_ring(), offset == REG_QUEUE_DEVICE_HIGH, value);
                queue.try_set_used_ring_address(GuestAddress(addr)).is_ok()
            }
            _ => true,
        };
        if !result {
            bump(&self.metrics.bad_queue_writes);
            guest_warn!("virtio-mmio: invalid value {value:#x} for queue register {offset:#x}");
            self.bad_queue_config = true;
        }
    }

    fn notify_queue(&mut self, index: u32) {
        match self.queue_events.get(index as usize) {
            Some(evt) => {
                // Fails only when the counter would overflow: the queue
                // is notified already.
                let _ = evt.write(1);
            }
            None => {
                bump(&self.metrics.bad_notifies);
                guest_warn!("virtio-mmio: notify for missing queue {index}");
            }
        }
    }

    fn write_status(&mut self, value: u32) {
        if value == 0 {
            self.reset();
            return;
        }
        let old = self.status();
        // DEVICE_NEEDS_RESET belongs to the device; the driver echoing it
        // back changes nothing.
        let value = value & !DEVICE_NEEDS_RESET | (old & DEVICE_NEEDS_RESET);
        if value & old != old {
            bump(&self.metrics.bad_status_writes);
            guest_warn!("virtio-mmio: status {value:#x} clears bits of {old:#x} without a reset");
            return;
        }
        let added = value & !old;
        if added & FAILED != 0 {
            self.status |= FAILED;
        }
        let added = added & !FAILED;
        let progress = old & !(FAILED | DEVICE_NEEDS_RESET);
        match (added, progress) {
            (0, _) => {}
            (ACKNOWLEDGE, 0) | (DRIVER, ACKNOWLEDGE) => self.status |= added,
            (FEATURES_OK, p) if p == ACKNOWLEDGE | DRIVER => self.try_features_ok(),
            (DRIVER_OK, p) if p == ACKNOWLEDGE | DRIVER | FEATURES_OK => self.activate(),
            _ => {
                bump(&self.metrics.bad_status_writes);
                guest_warn!("virtio-mmio: invalid status transition {old:#x} -> {value:#x}");
            }
        }
    }

    fn try_features_ok(&mut self) {
        let offered = self.avail_features;
        let unknown = self.driver_features & !offered;
        if unknown != 0 || self.driver_features & (1 << VIRTIO_F_VERSION_1) == 0 {
            // Leaving FEATURES_OK clear tells the driver the set is refused.
            bump(&self.metrics.refused_features);
            guest_warn!(
                "virtio-mmio: refusing driver features {:#x} (offered {offered:#x})",
                self.driver_features
            );
            return;
        }
        lock(&self.device).ack_features(self.driver_features);
        self.status |= FEATURES_OK;
    }

    fn activate(&mut self) {
        let mut ok = !self.bad_queue_config;
        for (i, q) in self.queues.iter().enumerate() {
            if q.ready() && !q.is_valid(&self.mem) {
                guest_warn!("virtio-mmio: queue {i} is outside guest memory");
                ok = false;
            }
        }
        if ok {
            let event_idx =
                self.driver_features & (1 << super::features::VIRTIO_RING_F_EVENT_IDX) != 0;
            // The device gets its own copies; the transport keeps the
            // registers so the driver can read them back.
            let queues: Result<Vec<Queue>, _> = self
                .queues
                .iter()
                .map(|q| {
                    let mut state = q.state();
                    state.event_idx_enabled = event_idx;
                    Queue::try_from(state)
                })
                .collect();
            let result = match queues {
                Ok(queues) => lock(&self.device)
                    .activate(self.mem.clone(), queues)
                    .map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            };
            if let Err(e) = result {
                guest_warn!("virtio-mmio: device activation failed: {e}");
                ok = false;
            }
        }
        if ok {
            self.status |= DRIVER_OK;
            bump(&self.metrics.activations);
            self.signal_activation_change();
        } else {
            bump(&self.metrics.failed_activations);
            self.status |= DEVICE_NEEDS_RESET;
            self.interrupt.trigger(VIRTIO_MMIO_INT_CONFIG);
        }
    }

    /// Wakes the device's event handler to (un)register its queue and
    /// backend fds.
    fn signal_activation_change(&self) {
        // Fails only when the counter would overflow: already pending.
        let _ = self.activate_event.write(1);
    }

    fn reset(&mut self) {
        bump(&self.metrics.resets);
        let was_active = self.status & DRIVER_OK != 0;
        lock(&self.device).reset();
        if was_active {
            self.signal_activation_change();
        }
        for q in &mut self.queues {
            q.reset();
        }
        self.interrupt.clear();
        self.device_features_sel = 0;
        self.driver_features_sel = 0;
        self.driver_features = 0;
        self.queue_sel = 0;
        self.status = 0;
        self.bad_queue_config = false;
    }
}

impl BusDevice for MmioTransport {
    fn read(&mut self, _base: u64, offset: u64, data: &mut [u8]) {
        if offset >= CONFIG_SPACE_OFFSET {
            lock(&self.device).read_config(offset - CONFIG_SPACE_OFFSET, data);
            return;
        }
        if data.len() != 4 || !offset.is_multiple_of(4) {
            bump(&self.metrics.bad_accesses);
            guest_warn!(
                "virtio-mmio: {}-byte read at {offset:#x} ignored",
                data.len()
            );
            data.fill(0);
            return;
        }
        data.copy_from_slice(&self.read_register(offset).to_le_bytes());
    }

    fn write(&mut self, _base: u64, offset: u64, data: &[u8]) {
        if offset >= CONFIG_SPACE_OFFSET {
            lock(&self.device).write_config(offset - CONFIG_SPACE_OFFSET, data);
            return;
        }
        let Ok(bytes) = <[u8; 4]>::try_from(data) else {
            bump(&self.metrics.bad_accesses);
            guest_warn!(
                "virtio-mmio: {}-byte write at {offset:#x} ignored",
                data.len()
            );
            return;
        };
        if !offset.is_multiple_of(4) {
            bump(&self.metrics.bad_accesses);
            guest_warn!("virtio-mmio: unaligned write at {offset:#x} ignored");
            return;
        }
        self.write_register(offset, u32::from_le_bytes(bytes));
    }
}

/// Replaces the low or high 32 bits of a 64-bit queue address.
fn merge_half(old: u64, high: bool, value: u32) -> u64 {
    if high {
        (old & 0xffff_ffff) | (u64::from(value) << 32)
    } else {
        (old & !0xffff_ffff) | u64::from(value)
    }
}

/// Locks the device even if a previous holder panicked: the transport must
/// keep answering the guest.
fn lock(device: &Arc<Mutex<dyn VirtioDevice>>) -> MutexGuard<'_, dyn VirtioDevice + 'static> {
    device.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests;
