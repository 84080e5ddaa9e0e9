//! Placing virtio devices, whatever their type, through one path: a
//! virtio-mmio window in the MMIO hole, a GSI wired to an irqfd, one
//! ioeventfd per queue, a DSDT entry and, for kernels that still parse
//! them, a `virtio_mmio.device=` argument; then a thread of the device's
//! own for its event handler (see [`crate::device_thread`]).
//!
//! Type-specific code is limited to building a device (e.g. opening a
//! disk) and to the handles the API needs for type-specific operations
//! (a drive's rate limiter).

use std::sync::{Arc, Mutex};

use event_manager::MutEventSubscriber;
use kvm_ioctls::{IoEventAddress, VmFd};
use stratus_devices::bus::Bus;
use stratus_devices::legacy::power_button::POWER_BUTTON_GSI;
use stratus_devices::virtio::block::{Block, BlockOptions};
use stratus_devices::virtio::mmio::{
    MmioTransport, TransportMetrics, MMIO_REGION_SIZE, QUEUE_NOTIFY_OFFSET,
};
use stratus_devices::virtio::net::{Net, Tap, TapError};
use stratus_devices::virtio::{device_type, VirtioDevice};
use vm_memory::GuestMemoryMmap;

use crate::arch::acpi::MmioDeviceInfo;
use crate::config::{DiskConfig, NetConfig};
use crate::device_thread::{DeviceThread, DeviceThreadError, SharedHandler};
use crate::layout::{virtio_mmio_addr, VIRTIO_MMIO_SIZE};
use crate::nic_services::NicServices;
use stratus_devices::net::identity::IdentitySigner;

/// First GSI handed to virtio devices (0–4 are the legacy ISA lines we
/// use or reserve: PIT, keyboard, cascade, COM2, COM1).
pub const VIRTIO_FIRST_GSI: u32 = 5;
/// One past the last GSI virtio devices may take: the in-kernel IOAPIC has
/// 24 pins and the top one is the power button's.
const VIRTIO_GSI_END: u32 = POWER_BUTTON_GSI;

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
    /// A NIC's tap could not be opened.
    #[error("{nic}: {source}")]
    Tap {
        /// The NIC id.
        nic: String,
        /// Why.
        source: TapError,
    },
    /// A file the NIC's `sg=`, `metadata=` or `flow-log=` names is bad.
    #[error("{nic}: {why}")]
    NicServices {
        /// The NIC id.
        nic: String,
        /// Why.
        why: String,
    },
    /// A NIC could not be built.
    #[error("{nic}: {source}")]
    Net {
        /// The NIC id.
        nic: String,
        /// Why.
        source: stratus_devices::virtio::net::NetError,
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
    /// A device thread could not be started.
    #[error(transparent)]
    Thread(#[from] DeviceThreadError),
}

impl DeviceError {
    /// Whether the host refused what the configuration named (a tap that
    /// is missing, busy or not a tap), as opposed to a VMM or KVM failure.
    pub fn is_bad_config(&self) -> bool {
        matches!(self, DeviceError::NicServices { .. })
            || matches!(
                self,
                DeviceError::Tap {
                    source: TapError::BadName(_)
                        | TapError::Missing(_)
                        | TapError::NotTap(_)
                        | TapError::Busy(_),
                    ..
                }
            )
    }
}

/// One placed virtio device, as the event loop and the API see it.
pub struct VirtioSlot {
    /// Name in metrics and logs (a drive's id, later a NIC's).
    pub name: String,
    /// The device, for metrics.
    pub device: Arc<Mutex<dyn VirtioDevice>>,
    /// What the transport refused from the driver.
    pub transport: Arc<TransportMetrics>,
    /// Where the device lives.
    pub info: MmioDeviceInfo,
    handler: SharedHandler,
}

impl std::fmt::Debug for VirtioSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VirtioSlot")
            .field("name", &self.name)
            .field("info", &self.info)
            .finish_non_exhaustive()
    }
}

/// The metrics label for a virtio device type.
pub fn kind_name(device_type: u32) -> &'static str {
    match device_type {
        device_type::BLOCK => "block",
        device_type::NET => "net",
        _ => "other",
    }
}

/// A disk, for the API's drive operations.
#[derive(Debug)]
pub struct Drive {
    /// The drive id (`--disk …,id=NAME`; `disk0`, `disk1`, … by default).
    pub id: String,
    /// The device.
    pub block: Arc<Mutex<Block>>,
}

/// A network card, for the API's NIC operations.
#[derive(Debug)]
pub struct Nic {
    /// The NIC id (`--net …,id=NAME`; `net0`, `net1`, … by default).
    pub id: String,
    /// The device.
    pub net: Arc<Mutex<Net>>,
    /// What signs the NIC's identity documents, if it serves metadata
    /// with signatures.
    pub signer: Option<Arc<IdentitySigner>>,
}

/// The virtio devices of one VM.
#[derive(Debug, Default)]
pub struct DeviceManager {
    slots: Vec<VirtioSlot>,
    drives: Vec<Drive>,
    nics: Vec<Nic>,
}

impl DeviceManager {
    /// Places `device` on `mmio` with its interrupt and queue notifications
    /// wired into `vm`. Its handler starts on its own thread in
    /// [`Self::start_threads`].
    pub fn attach<D>(
        &mut self,
        vm: &VmFd,
        mem: &GuestMemoryMmap,
        mmio: &mut Bus,
        name: String,
        device: Arc<Mutex<D>>,
    ) -> Result<(), DeviceError>
    where
        D: VirtioDevice + MutEventSubscriber + 'static,
    {
        let index = u32::try_from(self.slots.len()).unwrap_or(u32::MAX);
        let irq = VIRTIO_FIRST_GSI
            .checked_add(index)
            .filter(|&gsi| gsi < VIRTIO_GSI_END)
            .ok_or(DeviceError::NoIrq(index))?;
        let addr = virtio_mmio_addr(u64::from(index));
        let transport = MmioTransport::new(mem.clone(), device.clone())?;
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
        let metrics = transport.metrics();
        mmio.insert(Arc::new(Mutex::new(transport)), addr, MMIO_REGION_SIZE)?;
        self.slots.push(VirtioSlot {
            name,
            device: device.clone(),
            transport: metrics,
            info: MmioDeviceInfo {
                addr,
                len: MMIO_REGION_SIZE,
                irq,
            },
            handler: device,
        });
        Ok(())
    }

    /// Opens every disk and attaches it.
    pub fn attach_disks(
        &mut self,
        vm: &VmFd,
        mem: &GuestMemoryMmap,
        mmio: &mut Bus,
        disks: &[DiskConfig],
    ) -> Result<(), DeviceError> {
        for (index, disk) in disks.iter().enumerate() {
            let options = BlockOptions {
                read_only: disk.readonly,
                serial: disk.serial.clone().unwrap_or_default(),
                io_engine: disk.io_engine,
                rate_limiter: disk.rate_limiter,
            };
            let block = Block::open(&disk.path, disk.format, options).map_err(|source| {
                DeviceError::Block {
                    path: disk.path.display().to_string(),
                    source,
                }
            })?;
            let block = Arc::new(Mutex::new(block));
            let id = disk.drive_id(index);
            self.attach(vm, mem, mmio, id.clone(), block.clone())?;
            self.drives.push(Drive { id, block });
        }
        Ok(())
    }

    /// Opens every NIC's tap and attaches the NIC.
    pub fn attach_nics(
        &mut self,
        vm: &VmFd,
        mem: &GuestMemoryMmap,
        mmio: &mut Bus,
        nets: &[NetConfig],
    ) -> Result<(), DeviceError> {
        for (index, config) in nets.iter().enumerate() {
            let id = config.nic_id(index);
            let tap = Tap::open(&config.tap).map_err(|source| DeviceError::Tap {
                nic: id.clone(),
                source,
            })?;
            let mut net = Net::new(tap, config.identity()).map_err(|source| DeviceError::Net {
                nic: id.clone(),
                source,
            })?;
            let services = NicServices::load(config).map_err(|why| DeviceError::NicServices {
                nic: id.clone(),
                why,
            })?;
            let signer = services.signer.clone();
            services.install(net.datapath_mut());
            let net = Arc::new(Mutex::new(net));
            self.attach(vm, mem, mmio, id.clone(), net.clone())?;
            self.nics.push(Nic { id, net, signer });
        }
        Ok(())
    }

    /// The network cards, in configuration order.
    pub fn nics(&self) -> &[Nic] {
        &self.nics
    }

    /// What the DSDT must describe.
    pub fn acpi_devices(&self) -> Vec<MmioDeviceInfo> {
        self.slots.iter().map(|s| s.info).collect()
    }

    /// `virtio_mmio.device=` arguments for the kernel command line.
    pub fn cmdline_args(&self) -> Vec<String> {
        self.slots
            .iter()
            .map(|s| format!("virtio_mmio.device=4K@{:#x}:{}", s.info.addr, s.info.irq))
            .collect()
    }

    /// The placed devices.
    pub fn slots(&self) -> &[VirtioSlot] {
        &self.slots
    }

    /// The disks, in configuration order.
    pub fn drives(&self) -> &[Drive] {
        &self.drives
    }

    /// Starts one thread per device for its event handler.
    pub fn start_threads(&self) -> Result<Vec<DeviceThread>, DeviceError> {
        let mut threads = Vec::with_capacity(self.slots.len());
        for slot in &self.slots {
            let name = format!("dev-{}", slot.name);
            match DeviceThread::spawn(name, slot.handler.clone()) {
                Ok(t) => threads.push(t),
                Err(e) => {
                    for t in threads {
                        t.stop_and_join();
                    }
                    return Err(e.into());
                }
            }
        }
        Ok(threads)
    }
}
