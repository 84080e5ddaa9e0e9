//! Register state machine tests with a dummy device.

#![allow(clippy::cast_possible_truncation)]

use super::*;
use crate::virtio::features::VIRTIO_RING_F_EVENT_IDX;
use crate::virtio::{ActivateError, DeviceEvents, VIRTIO_MMIO_INT_VRING};

#[derive(Debug)]
struct Dummy {
    events: DeviceEvents,
    acked: u64,
    active: bool,
    config: [u8; 8],
    fail_activate: bool,
    activated_queues: Vec<(u16, bool, bool)>,
}

impl Dummy {
    fn new() -> Self {
        Self {
            events: DeviceEvents::new(2).unwrap(),
            acked: 0,
            active: false,
            config: [1, 2, 3, 4, 5, 6, 7, 8],
            fail_activate: false,
            activated_queues: Vec::new(),
        }
    }
}

const OFFERED: u64 = 1 << VIRTIO_F_VERSION_1 | 1 << VIRTIO_RING_F_EVENT_IDX | 1;

impl VirtioDevice for Dummy {
    fn device_type(&self) -> u32 {
        2
    }
    fn queue_max_sizes(&self) -> &[u16] {
        &[16, 8]
    }
    fn events(&self) -> &DeviceEvents {
        &self.events
    }
    fn avail_features(&self) -> u64 {
        OFFERED
    }
    fn ack_features(&mut self, features: u64) {
        self.acked = features;
    }
    fn read_config(&self, offset: u64, data: &mut [u8]) {
        for (i, b) in data.iter_mut().enumerate() {
            *b = self.config.get(offset as usize + i).copied().unwrap_or(0);
        }
    }
    fn write_config(&mut self, offset: u64, data: &[u8]) {
        if let Some(b) = self.config.get_mut(offset as usize) {
            *b = data[0];
        }
    }
    fn activate(&mut self, _mem: GuestMemoryMmap, queues: Vec<Queue>) -> Result<(), ActivateError> {
        if self.fail_activate {
            return Err(ActivateError::InvalidQueue(0));
        }
        self.activated_queues = queues
            .iter()
            .map(|q| (q.size(), q.ready(), q.event_idx_enabled()))
            .collect();
        self.active = true;
        Ok(())
    }
    fn reset(&mut self) {
        self.active = false;
        self.acked = 0;
    }
    fn is_activated(&self) -> bool {
        self.active
    }
}

struct Harness {
    t: MmioTransport,
    dev: Arc<Mutex<Dummy>>,
}

impl Harness {
    fn new() -> Self {
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x10000)]).unwrap();
        let dev = Arc::new(Mutex::new(Dummy::new()));
        let t = MmioTransport::new(mem, dev.clone()).unwrap();
        Self { t, dev }
    }
    fn r(&mut self, off: u64) -> u32 {
        let mut b = [0u8; 4];
        self.t.read(0, off, &mut b);
        u32::from_le_bytes(b)
    }
    fn w(&mut self, off: u64, v: u32) {
        self.t.write(0, off, &v.to_le_bytes());
    }
    fn negotiate(&mut self, features: u64) {
        self.w(REG_STATUS, ACKNOWLEDGE);
        self.w(REG_STATUS, ACKNOWLEDGE | DRIVER);
        self.w(REG_DRIVER_FEATURES_SEL, 0);
        self.w(REG_DRIVER_FEATURES, features as u32);
        self.w(REG_DRIVER_FEATURES_SEL, 1);
        self.w(REG_DRIVER_FEATURES, (features >> 32) as u32);
        self.w(REG_STATUS, ACKNOWLEDGE | DRIVER | FEATURES_OK);
    }
    fn setup_queue(&mut self, sel: u32, size: u32, base: u64) {
        self.w(REG_QUEUE_SEL, sel);
        self.w(REG_QUEUE_NUM, size);
        self.w(REG_QUEUE_DESC_LOW, base as u32);
        self.w(REG_QUEUE_DESC_HIGH, (base >> 32) as u32);
        self.w(REG_QUEUE_DRIVER_LOW, (base + 0x1000) as u32);
        self.w(REG_QUEUE_DRIVER_HIGH, 0);
        self.w(REG_QUEUE_DEVICE_LOW, (base + 0x2000) as u32);
        self.w(REG_QUEUE_DEVICE_HIGH, 0);
        self.w(REG_QUEUE_READY, 1);
    }
    fn status(&mut self) -> u32 {
        self.r(REG_STATUS)
    }
}

const ALL_OK: u32 = ACKNOWLEDGE | DRIVER | FEATURES_OK | DRIVER_OK;

#[test]
fn identification_registers() {
    let mut h = Harness::new();
    assert_eq!(h.r(REG_MAGIC), 0x7472_6976);
    assert_eq!(h.r(REG_VERSION), 2);
    assert_eq!(h.r(REG_DEVICE_ID), 2);
    assert_eq!(h.r(REG_VENDOR_ID), VENDOR_ID);
    h.w(REG_DEVICE_FEATURES_SEL, 0);
    assert_eq!(h.r(REG_DEVICE_FEATURES), OFFERED as u32);
    h.w(REG_DEVICE_FEATURES_SEL, 1);
    assert_eq!(h.r(REG_DEVICE_FEATURES), (OFFERED >> 32) as u32);
    h.w(REG_DEVICE_FEATURES_SEL, 7);
    assert_eq!(h.r(REG_DEVICE_FEATURES), 0);
    // No shared memory regions.
    h.w(REG_SHM_SEL, 0);
    assert_eq!(h.r(REG_SHM_LEN_LOW), u32::MAX);
    assert_eq!(h.r(REG_SHM_LEN_HIGH), u32::MAX);
    assert_eq!(h.r(REG_CONFIG_GENERATION), 0);
    // Wrong access widths read as zero instead of reaching a register.
    let mut b = [0xffu8; 2];
    h.t.read(0, REG_MAGIC, &mut b);
    assert_eq!(b, [0, 0]);
}

#[test]
fn full_negotiation_activates_with_queues() {
    let mut h = Harness::new();
    let features = 1 << VIRTIO_F_VERSION_1 | 1 << VIRTIO_RING_F_EVENT_IDX;
    h.negotiate(features);
    assert_eq!(h.status(), ACKNOWLEDGE | DRIVER | FEATURES_OK);
    assert_eq!(h.dev.lock().unwrap().acked, features);
    h.w(REG_QUEUE_SEL, 0);
    assert_eq!(h.r(REG_QUEUE_NUM_MAX), 16);
    h.w(REG_QUEUE_SEL, 1);
    assert_eq!(h.r(REG_QUEUE_NUM_MAX), 8);
    h.w(REG_QUEUE_SEL, 2);
    assert_eq!(h.r(REG_QUEUE_NUM_MAX), 0);
    h.setup_queue(0, 8, 0x4000);
    assert_eq!(h.r(REG_QUEUE_READY), 1);
    h.w(REG_STATUS, ALL_OK);
    assert_eq!(h.status(), ALL_OK);
    let dev = h.dev.lock().unwrap();
    assert!(dev.active);
    assert_eq!(
        dev.activated_queues,
        vec![(8, true, true), (8, false, true)]
    );
}

#[test]
fn features_ok_requires_version_1_and_offered_bits() {
    let mut h = Harness::new();
    h.negotiate(1); // no VERSION_1
    assert_eq!(h.status(), ACKNOWLEDGE | DRIVER);
    let mut h = Harness::new();
    h.negotiate(1 << VIRTIO_F_VERSION_1 | 1 << 5); // bit 5 not offered
    assert_eq!(h.status(), ACKNOWLEDGE | DRIVER);
    assert_eq!(h.dev.lock().unwrap().acked, 0);
    // Features cannot change after FEATURES_OK.
    let mut h = Harness::new();
    h.negotiate(1 << VIRTIO_F_VERSION_1);
    h.w(REG_DRIVER_FEATURES_SEL, 0);
    h.w(REG_DRIVER_FEATURES, 1);
    assert_eq!(h.t.driver_features, 1 << VIRTIO_F_VERSION_1);
}

#[test]
fn out_of_order_status_writes_are_ignored() {
    let mut h = Harness::new();
    h.w(REG_STATUS, DRIVER);
    assert_eq!(h.status(), 0);
    h.w(REG_STATUS, ACKNOWLEDGE | DRIVER | FEATURES_OK | DRIVER_OK);
    assert_eq!(h.status(), 0);
    h.w(REG_STATUS, ACKNOWLEDGE);
    h.w(REG_STATUS, ACKNOWLEDGE | DRIVER_OK);
    assert_eq!(h.status(), ACKNOWLEDGE);
    // Clearing a bit without writing 0 is not a reset.
    h.w(REG_STATUS, ACKNOWLEDGE | DRIVER);
    h.w(REG_STATUS, DRIVER);
    assert_eq!(h.status(), ACKNOWLEDGE | DRIVER);
    // FAILED can be set at any time.
    h.w(REG_STATUS, ACKNOWLEDGE | DRIVER | FAILED);
    assert_eq!(h.status(), ACKNOWLEDGE | DRIVER | FAILED);
}

#[test]
fn queue_registers_only_between_features_ok_and_driver_ok() {
    let mut h = Harness::new();
    h.w(REG_QUEUE_SEL, 0);
    h.w(REG_QUEUE_NUM, 4);
    h.w(REG_QUEUE_READY, 1);
    assert_eq!(h.r(REG_QUEUE_READY), 0);
    assert_eq!(h.t.queues[0].size(), 16);
    h.negotiate(1 << VIRTIO_F_VERSION_1);
    h.setup_queue(0, 4, 0x4000);
    h.w(REG_STATUS, ALL_OK);
    h.w(REG_QUEUE_SEL, 0);
    h.w(REG_QUEUE_READY, 0);
    assert_eq!(h.r(REG_QUEUE_READY), 1);
}

#[test]
fn invalid_queue_size_fails_activation_with_needs_reset() {
    for size in [0, 3, 32, 0x1_0000] {
        let mut h = Harness::new();
        h.negotiate(1 << VIRTIO_F_VERSION_1);
        h.setup_queue(0, size, 0x4000);
        h.w(REG_STATUS, ALL_OK);
        assert_eq!(
            h.status(),
            ACKNOWLEDGE | DRIVER | FEATURES_OK | DEVICE_NEEDS_RESET,
            "size {size}"
        );
        assert!(!h.dev.lock().unwrap().active);
        assert_eq!(h.r(REG_INTERRUPT_STATUS), VIRTIO_MMIO_INT_CONFIG);
    }
}

#[test]
fn misaligned_or_out_of_memory_rings_fail_activation() {
    let mut h = Harness::new();
    h.negotiate(1 << VIRTIO_F_VERSION_1);
    h.setup_queue(0, 16, 0x4001);
    h.w(REG_STATUS, ALL_OK);
    assert_ne!(h.status() & DEVICE_NEEDS_RESET, 0);

    let mut h = Harness::new();
    h.negotiate(1 << VIRTIO_F_VERSION_1);
    h.setup_queue(0, 16, 0xf000); // used ring at 0x11000, past memory
    h.w(REG_STATUS, ALL_OK);
    assert_ne!(h.status() & DEVICE_NEEDS_RESET, 0);

    let mut h = Harness::new();
    h.negotiate(1 << VIRTIO_F_VERSION_1);
    h.setup_queue(0, 16, 0x1_0000_4000); // high half beyond memory
    h.w(REG_STATUS, ALL_OK);
    assert_ne!(h.status() & DEVICE_NEEDS_RESET, 0);
    assert!(!h.dev.lock().unwrap().active);
}

#[test]
fn device_activation_failure_sets_needs_reset() {
    let mut h = Harness::new();
    h.dev.lock().unwrap().fail_activate = true;
    h.negotiate(1 << VIRTIO_F_VERSION_1);
    h.setup_queue(0, 16, 0x4000);
    h.w(REG_STATUS, ALL_OK);
    assert_eq!(
        h.status() & (DRIVER_OK | DEVICE_NEEDS_RESET),
        DEVICE_NEEDS_RESET
    );
    // The driver echoing the status back does not clear NEEDS_RESET.
    let s = h.status();
    h.w(REG_STATUS, s & !DEVICE_NEEDS_RESET);
    assert_ne!(h.status() & DEVICE_NEEDS_RESET, 0);
}

#[test]
fn writing_zero_resets_everything() {
    let mut h = Harness::new();
    h.negotiate(1 << VIRTIO_F_VERSION_1);
    h.setup_queue(0, 8, 0x4000);
    h.w(REG_STATUS, ALL_OK);
    h.t.interrupt().trigger(VIRTIO_MMIO_INT_VRING);
    h.w(REG_STATUS, 0);
    assert_eq!(h.status(), 0);
    assert_eq!(h.r(REG_INTERRUPT_STATUS), 0);
    assert!(!h.dev.lock().unwrap().active);
    h.w(REG_QUEUE_SEL, 0);
    assert_eq!(h.r(REG_QUEUE_READY), 0);
    assert_eq!(h.t.queues[0].size(), 16);
    // And the device can be brought up again.
    h.negotiate(1 << VIRTIO_F_VERSION_1);
    h.setup_queue(0, 16, 0x4000);
    h.w(REG_STATUS, ALL_OK);
    assert_eq!(h.status(), ALL_OK);
}

#[test]
fn interrupt_ack_and_notify() {
    let mut h = Harness::new();
    h.t.interrupt()
        .trigger(VIRTIO_MMIO_INT_VRING | VIRTIO_MMIO_INT_CONFIG);
    assert_eq!(h.r(REG_INTERRUPT_STATUS), 3);
    h.w(REG_INTERRUPT_ACK, VIRTIO_MMIO_INT_VRING);
    assert_eq!(h.r(REG_INTERRUPT_STATUS), VIRTIO_MMIO_INT_CONFIG);

    h.w(REG_QUEUE_NOTIFY, 1);
    assert_eq!(h.dev.lock().unwrap().events.queues[1].read().unwrap(), 1);
    assert!(h.dev.lock().unwrap().events.queues[0].read().is_err());
    h.w(REG_QUEUE_NOTIFY, 9); // missing queue: ignored
    let evts = h.t.queue_events().unwrap();
    assert_eq!(evts.len(), 2);
}

#[test]
fn config_space_is_delegated() {
    let mut h = Harness::new();
    let mut b = [0u8; 2];
    h.t.read(0, 0x102, &mut b);
    assert_eq!(b, [3, 4]);
    h.t.write(0, 0x100, &[9]);
    let mut b = [0u8; 1];
    h.t.read(0, 0x100, &mut b);
    assert_eq!(b, [9]);
    let mut b = [0xffu8; 4];
    h.t.read(0, 0x200, &mut b);
    assert_eq!(b, [0; 4]);
    h.dev
        .lock()
        .unwrap()
        .events
        .interrupt
        .notify_config_change(true);
    assert_eq!(h.r(REG_CONFIG_GENERATION), 1);
    assert_eq!(h.r(REG_INTERRUPT_STATUS), VIRTIO_MMIO_INT_CONFIG);
}

#[test]
fn activation_and_reset_signal_the_device_handler() {
    let mut h = Harness::new();
    let activate = h.dev.lock().unwrap().events.activate.try_clone().unwrap();
    h.negotiate(1 << VIRTIO_F_VERSION_1);
    h.setup_queue(0, 8, 0x4000);
    assert!(activate.read().is_err(), "nothing before DRIVER_OK");
    h.w(REG_STATUS, ALL_OK);
    assert_eq!(activate.read().unwrap(), 1);
    h.w(REG_STATUS, 0);
    assert_eq!(activate.read().unwrap(), 1);
    // A reset of a device that never ran wakes nobody.
    h.w(REG_STATUS, 0);
    assert!(activate.read().is_err());
    let m = h.t.metrics();
    assert_eq!(m.activations.load(Ordering::Relaxed), 1);
    assert_eq!(m.resets.load(Ordering::Relaxed), 2);
}

#[test]
fn ordinary_registers_do_not_wait_for_a_busy_device() {
    let mut h = Harness::new();
    let dev = h.dev.clone();
    let (locked_tx, locked_rx) = std::sync::mpsc::channel();
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    // The device's own thread holds its lock, as during a long disk drain.
    let holder = std::thread::spawn(move || {
        let _guard = dev.lock().unwrap();
        locked_tx.send(()).unwrap();
        let _ = done_rx.recv();
    });
    locked_rx.recv().unwrap();
    assert_eq!(h.r(REG_MAGIC), MAGIC_VALUE);
    assert_eq!(h.r(REG_DEVICE_ID), 2);
    assert_eq!(h.r(REG_DEVICE_FEATURES), OFFERED as u32);
    h.w(REG_QUEUE_SEL, 1);
    assert_eq!(h.r(REG_QUEUE_NUM_MAX), 8);
    assert_eq!(h.r(REG_INTERRUPT_STATUS), 0);
    assert_eq!(h.r(REG_STATUS), 0);
    h.w(REG_QUEUE_NOTIFY, 0);
    h.w(REG_INTERRUPT_ACK, 1);
    done_tx.send(()).unwrap();
    holder.join().unwrap();
}

#[test]
fn guest_errors_are_counted() {
    let mut h = Harness::new();
    let mut b = [0u8; 2];
    h.t.read(0, REG_MAGIC, &mut b);
    h.t.write(0, REG_STATUS, &[1]);
    h.w(REG_QUEUE_NOTIFY, 7);
    h.w(REG_STATUS, DRIVER);
    h.w(REG_QUEUE_NUM, 4);
    let m = h.t.metrics();
    assert_eq!(m.bad_accesses.load(Ordering::Relaxed), 2);
    assert_eq!(m.bad_notifies.load(Ordering::Relaxed), 1);
    assert_eq!(m.bad_status_writes.load(Ordering::Relaxed), 1);
    assert_eq!(m.bad_queue_writes.load(Ordering::Relaxed), 1);
}
