//! Placing virtio-mmio devices: a register window in the MMIO hole, a GSI
//! wired to an irqfd, one ioeventfd per queue, a DSDT entry and, for
//! kernels that still parse them, a `virtio_mmio.device=` argument.

use std::sync::{Arc, Mutex};

use kvm_ioctls::{IoEventAddress, VmFd};
use stratus_devices::bus::Bus;
use stratus_devices::virtio::block::{Block, BlockOptions};
use stratus_devices::virtio::mmio::{MmioTransport, MMIO_REGION_SIZE, QUEUE_NOTIFY_OFFSET};
use stratus_devices::virtio::VirtioDevice;
use vm_memory::GuestMemoryMmap;

use crate::arch::acpi::MmioDeviceInfo;
use crate::config::DiskConfig;
use crate::layout::{virtio_mmio_addr, VIRTIO_MMIO_SIZE};

/// First GSI handed to virtio devices (0–4 are the legacy ISA lines we
/// use or reserve: PIT, keyboard, cascade, COM2, COM1).
pub const VIRTIO_FIRST_GSI: u32 = 5;
/// The in-kernel IOAPIC has 24 pins.
const IOAPIC_PINS: u32 = 24;

// A device's registers must fit the window the layout reserves for it.
const _: () = assert!(MMIO_REGION_SIZE <= VIRTIO_MMIO_SIZE);

/// Errors placing a device.
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    /// The disk image could not be opened as a block device.
    #[error("disk {path}: {source}")]
    Block {
        /// The image.
        path: String,
        /// Why.
        source: stratus_devices::virtio::block::BlockError,
    },
    /// The transport could not be built.
    #[error("virtio-mmio transport: {0}")]
    Transport(#[from] stratus_devices::virtio::mmio::MmioError),
    /// No interrupt line left.
    #[error("no free interrupt line for virtio device {0}")]
    NoIrq(u32),
    /// An eventfd could not be duplicated.
    #[error("cannot duplicate a queue eventfd: {0}")]
    EventFd(std::io::Error),
    /// KVM refused an irqfd or ioeventfd.
    #[error("{what} failed: {source}")]
    Kvm {
        /// Which registration.
        what: &'static str,
        /// The KVM error.
        source: kvm_ioctls::Error,
    },
    /// The bus refused the window.
    #[error(transparent)]
    Bus(#[from] stratus_devices::bus::BusError),
}

/// The virtio devices of one VM, as the rest of the VMM needs them.
#[derive(Debug, Default)]
pub struct VirtioDevices {
    /// Block devices, for the event loop.
    pub blocks: Vec<Arc<Mutex<Block>>>,
    /// What the DSDT must describe.
    pub acpi: Vec<MmioDeviceInfo>,
    /// `virtio_mmio.device=` arguments for the command line.
    pub cmdline_args: Vec<String>,
}

impl VirtioDevices {
    /// Opens every disk and places it on `mmio` with its interrupts and
    /// notifications wired into `vm`.
    pub fn attach_disks(
        &mut self,
        vm: &VmFd,
        mem: &GuestMemoryMmap,
        mmio: &mut Bus,
        disks: &[DiskConfig],
    ) -> Result<(), DeviceError> {
        for disk in disks {
            let options = BlockOptions {
                read_only: disk.readonly,
                serial: disk.serial.clone().unwrap_or_default(),
            };
            let block = Block::open(&disk.path, disk.format, options).map_err(|source| {
                DeviceError::Block {
                    path: disk.path.display().to_string(),
                    source,
                }
            })?;
            let block = Arc::new(Mutex::new(block));
            self.place(vm, mem, mmio, block.clone())?;
            self.blocks.push(block);
        }
        Ok(())
    }

    fn place(
        &mut self,
        vm: &VmFd,
        mem: &GuestMemoryMmap,
        mmio: &mut Bus,
        device: Arc<Mutex<dyn VirtioDevice>>,
    ) -> Result<(), DeviceError> {
        let index = u32::try_from(self.acpi.len()).unwrap_or(u32::MAX);
        let irq = VIRTIO_FIRST_GSI
            .checked_add(index)
            .filter(|&gsi| gsi < IOAPIC_PINS)
            .ok_or(DeviceError::NoIrq(index))?;
        let addr = virtio_mmio_addr(u64::from(index));
        let transport = MmioTransport::new(mem.clone(), device)?;
        let kvm_err = |what| move |source| DeviceError::Kvm { what, source };
        vm.register_irqfd(transport.interrupt().irq_evt(), irq)
            .map_err(kvm_err("KVM_IRQFD (virtio)"))?;
        let queue_events = transport.queue_events().map_err(DeviceError::EventFd)?;
        for (queue, evt) in (0u32..).zip(&queue_events) {
            // The driver writes the queue index (32-bit) to QueueNotify;
            // KVM completes that write in the kernel and signals `evt`.
            vm.register_ioevent(
                evt,
                &IoEventAddress::Mmio(addr + QUEUE_NOTIFY_OFFSET),
                queue,
            )
            .map_err(kvm_err("KVM_IOEVENTFD (virtio)"))?;
        }
        mmio.insert(Arc::new(Mutex::new(transport)), addr, MMIO_REGION_SIZE)?;
        self.acpi.push(MmioDeviceInfo {
            addr,
            len: MMIO_REGION_SIZE,
            irq,
        });
        self.cmdline_args
            .push(format!("virtio_mmio.device=4K@{addr:#x}:{irq}"));
        Ok(())
    }
}
