//! An address bus that routes guest port-I/O or MMIO accesses to devices.
//!
//! vCPU threads look up the device for an address and call it with the
//! offset inside that device's range. Lookups are a `BTreeMap` range query
//! (logarithmic), never a scan. Devices sit behind a `Mutex` because a device
//! may be reached from several vCPUs; the virtio fast path does not use the
//! bus at all (queue notifications arrive through ioeventfds, interrupts
//! leave through irqfds), so this lock is only taken on slow-path register
//! accesses.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

/// A device reachable through a [`Bus`].
pub trait BusDevice: Send {
    /// The guest reads `data.len()` bytes at `offset` inside the device range
    /// that starts at `base`. Unused bytes must be filled (with zeros or
    /// all-ones, as the device's hardware would).
    fn read(&mut self, base: u64, offset: u64, data: &mut [u8]);
    /// The guest writes `data` at `offset` inside the device range at `base`.
    fn write(&mut self, base: u64, offset: u64, data: &[u8]);
}

/// Errors from building a bus.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BusError {
    /// The new range is empty or wraps around the address space.
    #[error("invalid bus range at {base:#x} with length {len:#x}")]
    InvalidRange {
        /// First address of the rejected range.
        base: u64,
        /// Length of the rejected range.
        len: u64,
    },
    /// The new range overlaps one already on the bus.
    #[error("bus range at {base:#x} with length {len:#x} overlaps an existing device")]
    Overlap {
        /// First address of the rejected range.
        base: u64,
        /// Length of the rejected range.
        len: u64,
    },
}

/// A shared handle to a device on a bus.
pub type SharedBusDevice = Arc<Mutex<dyn BusDevice>>;

#[derive(Clone)]
struct BusEntry {
    len: u64,
    device: SharedBusDevice,
}

/// A set of non-overlapping address ranges, each owned by one device.
#[derive(Clone, Default)]
pub struct Bus {
    ranges: BTreeMap<u64, BusEntry>,
}

impl std::fmt::Debug for Bus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ranges: Vec<(u64, u64)> = self.ranges.iter().map(|(b, e)| (*b, e.len)).collect();
        f.debug_struct("Bus").field("ranges", &ranges).finish()
    }
}

impl Bus {
    /// An empty bus.
    pub fn new() -> Self {
        Self::default()
    }

    /// Places `device` at `[base, base + len)`.
    pub fn insert(&mut self, device: SharedBusDevice, base: u64, len: u64) -> Result<(), BusError> {
        if len == 0 || base.checked_add(len).is_none() {
            return Err(BusError::InvalidRange { base, len });
        }
        let end = base + len;
        // The closest range starting at or below the new end must end before `base`.
        if let Some((prev_base, prev)) = self.ranges.range(..end).next_back() {
            if prev_base + prev.len > base {
                return Err(BusError::Overlap { base, len });
            }
        }
        self.ranges.insert(base, BusEntry { len, device });
        Ok(())
    }

    /// The device covering `addr`, with the start of its range.
    fn resolve(&self, addr: u64) -> Option<(u64, &SharedBusDevice)> {
        let (base, entry) = self.ranges.range(..=addr).next_back()?;
        (addr - base < entry.len).then_some((*base, &entry.device))
    }

    /// Routes a guest read. Returns `false` when no device covers `addr`;
    /// the caller then answers as open bus.
    pub fn read(&self, addr: u64, data: &mut [u8]) -> bool {
        match self.resolve(addr) {
            Some((base, device)) => {
                lock_device(device).read(base, addr - base, data);
                true
            }
            None => false,
        }
    }

    /// Routes a guest write. Returns `false` when no device covers `addr`.
    pub fn write(&self, addr: u64, data: &[u8]) -> bool {
        match self.resolve(addr) {
            Some((base, device)) => {
                lock_device(device).write(base, addr - base, data);
                true
            }
            None => false,
        }
    }
}

/// Locks a device even if another thread panicked while holding it: a device
/// must keep answering the guest, and its state is plain registers.
fn lock_device(device: &SharedBusDevice) -> std::sync::MutexGuard<'_, dyn BusDevice + 'static> {
    device
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct Recorder {
        last_write: Option<(u64, u64, Vec<u8>)>,
    }

    impl BusDevice for Recorder {
        fn read(&mut self, _base: u64, offset: u64, data: &mut [u8]) {
            data.fill(u8::try_from(offset).unwrap_or(0xff));
        }
        fn write(&mut self, base: u64, offset: u64, data: &[u8]) {
            self.last_write = Some((base, offset, data.to_vec()));
        }
    }

    #[test]
    fn routes_to_the_covering_device_with_offsets() {
        let mut bus = Bus::new();
        let dev = Arc::new(Mutex::new(Recorder::default()));
        bus.insert(dev.clone(), 0x3f8, 8).unwrap();
        let mut buf = [0u8; 1];
        assert!(bus.read(0x3fd, &mut buf));
        assert_eq!(buf, [5]);
        assert!(bus.write(0x3f8, &[0x41]));
        assert_eq!(dev.lock().unwrap().last_write, Some((0x3f8, 0, vec![0x41])));
        assert!(!bus.read(0x3f7, &mut buf));
        assert!(!bus.read(0x400, &mut buf));
    }

    #[test]
    fn rejects_overlaps_and_bad_ranges() {
        let mut bus = Bus::new();
        let dev = Arc::new(Mutex::new(Recorder::default()));
        bus.insert(dev.clone(), 0x1000, 0x100).unwrap();
        assert!(matches!(
            bus.insert(dev.clone(), 0x10ff, 1),
            Err(BusError::Overlap { .. })
        ));
        assert!(matches!(
            bus.insert(dev.clone(), 0xf01, 0x100),
            Err(BusError::Overlap { .. })
        ));
        assert!(matches!(
            bus.insert(dev.clone(), 0x800, 0),
            Err(BusError::InvalidRange { .. })
        ));
        assert!(matches!(
            bus.insert(dev.clone(), u64::MAX, 2),
            Err(BusError::InvalidRange { .. })
        ));
        bus.insert(dev.clone(), 0x1100, 0x10).unwrap();
        bus.insert(dev, 0xf00, 0x100).unwrap();
    }
}
