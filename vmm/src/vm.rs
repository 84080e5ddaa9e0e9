//! Building one VM from a [`VmConfig`] and running it to its end.
//!
//! Threads: the caller's thread becomes the event loop (console input, power
//! requests, vCPU failures); each vCPU gets a thread of its own. Devices
//! raise interrupts through irqfds, so no device path takes a lock shared
//! with a vCPU except the per-device register lock on the bus.

use std::fs::OpenOptions;
use std::io::{LineWriter, Write};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use event_manager::{EventManager, EventOps, Events, MutEventSubscriber, SubscriberOps};
use kvm_bindings::{
    kvm_pit_config, kvm_userspace_memory_region, KVM_MAX_CPUID_ENTRIES, KVM_PIT_SPEAKER_DUMMY,
};
use kvm_ioctls::{Cap, IoEventAddress, Kvm, VmFd};
use stratus_devices::bus::Bus;
use stratus_devices::disk::open_disk;
use stratus_devices::legacy::acpi_pm::{AcpiPowerManagement, ACPI_PM_PORT_BASE, ACPI_PM_PORT_LEN};
use stratus_devices::legacy::boot_timer::{BootTimer, BOOT_TIMER_ADDR, BOOT_TIMER_LEN};
use stratus_devices::legacy::i8042::{I8042, I8042_PORT_BASE, I8042_PORT_LEN};
use stratus_devices::legacy::serial::{
    SerialDevice, SerialOutput, COM1_IRQ, COM1_PORT_BASE, COM1_PORT_LEN,
};
use stratus_devices::power::{PowerRequest, PowerSignal, PowerTrigger};
use stratus_devices::virtio::block::Block;
use vm_memory::{GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};
use vmm_sys_util::epoll::EventSet;
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};
use vmm_sys_util::timerfd::TimerFd;

use crate::ami::{find_boot_files, DiskBoot, ReadAt};
use crate::arch::acpi::{self, AcpiPlatform};
use crate::boot;
use crate::coalesced::CoalescedRing;
use crate::config::{DiskConfig, SerialTarget, VmConfig};
use crate::console::StdinToSerial;
use crate::devices::VirtioDevices;
use crate::layout::ram_regions;
use crate::outcome::VmOutcome;
use crate::vcpu::{Vcpu, VcpuError, VcpuStop};

/// Where KVM keeps the (Intel-only) TSS and identity map: three pages just
/// below the BIOS ROM area, inside the MMIO hole and clear of the APICs.
const KVM_TSS_ADDR: usize = 0xfffb_d000;
const KVM_IDENTITY_MAP_ADDR: u64 = 0xfffb_c000;

/// Errors building or running a VM.
#[derive(Debug, thiserror::Error)]
pub enum VmError {
    /// `/dev/kvm` could not be opened.
    #[error("cannot open /dev/kvm: {0}")]
    OpenKvm(kvm_ioctls::Error),
    /// The host KVM lacks something this VMM needs.
    #[error("KVM lacks a required capability: {0:?}")]
    MissingCapability(Cap),
    /// A KVM VM-level ioctl failed.
    #[error("{what} failed: {source}")]
    Kvm {
        /// Which step.
        what: &'static str,
        /// The KVM error.
        source: kvm_ioctls::Error,
    },
    /// Guest memory could not be allocated.
    #[error("cannot allocate guest memory: {0}")]
    Memory(vm_memory::mmap::FromRangesError),
    /// The serial output file could not be opened.
    #[error("cannot open serial output {path}: {source}")]
    SerialFile {
        /// The file.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// An eventfd could not be created.
    #[error("cannot create an eventfd: {0}")]
    EventFd(std::io::Error),
    /// A device could not be placed on a bus.
    #[error("cannot place a device: {0}")]
    Bus(#[from] stratus_devices::bus::BusError),
    /// The ACPI tables could not be built.
    #[error(transparent)]
    Acpi(#[from] acpi::AcpiError),
    /// The kernel or initrd could not be loaded.
    #[error(transparent)]
    Boot(#[from] boot::BootError),
    /// A vCPU could not be set up.
    #[error(transparent)]
    Vcpu(#[from] VcpuError),
    /// The event loop failed.
    #[error("event loop: {0}")]
    EventLoop(event_manager::Error),
    /// The configuration asks for something this build cannot do yet.
    #[error("not supported yet: {0}")]
    Unsupported(&'static str),
    /// The root disk holds nothing bootable (or is not a readable image).
    #[error("cannot boot from disk {path}: {source}")]
    DiskBoot {
        /// The root disk.
        path: String,
        /// Why.
        source: DiskBootError,
    },
    /// A virtio device could not be set up.
    #[error(transparent)]
    Device(#[from] crate::devices::DeviceError),
    /// A vCPU thread could not be started.
    #[error("cannot start a vCPU thread: {0}")]
    Thread(std::io::Error),
}

fn kvm_err(what: &'static str) -> impl FnOnce(kvm_ioctls::Error) -> VmError {
    move |source| VmError::Kvm { what, source }
}

/// A VM ready to run.
#[derive(Debug)]
pub struct Vm {
    // Kept open for the VM's lifetime; vCPU fds depend on it.
    _vm_fd: VmFd,
    _mem: GuestMemoryMmap,
    vcpus: Vec<Vcpu>,
    serial: Arc<Mutex<SerialDevice>>,
    blocks: Vec<Arc<Mutex<Block>>>,
    coalesced: Option<Arc<CoalescedRing>>,
    power: Arc<PowerSignal>,
    feed_stdin: bool,
}

/// Why the root disk could not be booted from.
#[derive(Debug, thiserror::Error)]
pub enum DiskBootError {
    /// The image could not be opened.
    #[error(transparent)]
    Open(#[from] stratus_devices::disk::OpenError),
    /// The image holds no kernel we can find.
    #[error(transparent)]
    Find(#[from] crate::ami::AmiError),
}

/// Opens the root disk read-only with the same backend the guest will use
/// and finds the kernel and initrd in its root filesystem.
fn find_disk_boot(root: &DiskConfig) -> Result<DiskBoot, VmError> {
    let path = root.path.display().to_string();
    let wrap = |source: DiskBootError| VmError::DiskBoot {
        path: path.clone(),
        source,
    };
    let backend = open_disk(&root.path, root.format, true).map_err(|e| wrap(e.into()))?;
    let reader: Arc<dyn ReadAt> = Arc::new(Mutex::new(backend));
    let found = find_boot_files(reader).map_err(|e| wrap(e.into()))?;
    log::info!("boot from disk: {found:?}");
    Ok(found)
}

fn serial_output(target: &SerialTarget) -> Result<SerialOutput, VmError> {
    Ok(match target {
        SerialTarget::Stdout => Box::new(LineWriter::new(std::io::stdout())),
        SerialTarget::Off => Box::new(std::io::sink()),
        SerialTarget::File(path) => {
            let file = OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(|source| VmError::SerialFile {
                    path: path.display().to_string(),
                    source,
                })?;
            Box::new(LineWriter::new(file))
        }
    })
}

fn create_memory(vm: &VmFd, mem_bytes: u64) -> Result<GuestMemoryMmap, VmError> {
    let ranges: Vec<_> = ram_regions(mem_bytes)
        .into_iter()
        .map(|r| (r.start, usize::try_from(r.len).unwrap_or(usize::MAX)))
        .collect();
    let mem = GuestMemoryMmap::from_ranges(&ranges).map_err(VmError::Memory)?;
    for (slot, region) in (0u32..).zip(mem.iter()) {
        let host_addr = region.as_ptr() as u64;
        let mem_region = kvm_userspace_memory_region {
            slot,
            guest_phys_addr: region.start_addr().0,
            memory_size: region.len(),
            userspace_addr: host_addr,
            flags: 0,
        };
        // SAFETY: the region is a live anonymous mapping owned by `mem`,
        // which the returned value keeps alive as long as the VM (the `Vm`
        // holds both); the guest range does not overlap another slot.
        unsafe { vm.set_user_memory_region(mem_region) }
            .map_err(kvm_err("KVM_SET_USER_MEMORY_REGION"))?;
    }
    Ok(mem)
}

impl Vm {
    /// Creates the VM, its memory, devices and vCPUs, and loads the guest.
    /// `start` is when the VMM process started, for the boot timer.
    pub fn new(config: &VmConfig, start: Instant) -> Result<Self, VmError> {
        // Found before any KVM object exists: a disk we cannot boot from is
        // a configuration problem, not a VM failure.
        let disk_boot = match (config.boot_from_disk, config.disks.first()) {
            (true, Some(root)) => Some(find_disk_boot(root)?),
            (true, None) => return Err(VmError::Unsupported("--boot-from-disk without a disk")),
            (false, _) => None,
        };
        let (kernel, initrd, mut cmdline) = match (&disk_boot, &config.kernel) {
            (Some(found), _) => (
                found.kernel.as_path(),
                found.initrd.as_deref(),
                format!("{} {}", found.cmdline(), config.cmdline),
            ),
            (None, Some(kernel)) => (
                kernel.as_path(),
                config.initrd.as_deref(),
                config.cmdline.clone(),
            ),
            (None, None) => return Err(VmError::Unsupported("a VM without a kernel")),
        };
        let kvm = Kvm::new().map_err(VmError::OpenKvm)?;
        for cap in [
            Cap::Irqchip,
            Cap::UserMemory,
            Cap::Irqfd,
            Cap::Ioeventfd,
            Cap::Pit2,
        ] {
            if !kvm.check_extension(cap) {
                return Err(VmError::MissingCapability(cap));
            }
        }
        let vm = kvm.create_vm().map_err(kvm_err("KVM_CREATE_VM"))?;
        vm.set_tss_address(KVM_TSS_ADDR)
            .map_err(kvm_err("KVM_SET_TSS_ADDR"))?;
        vm.set_identity_map_address(KVM_IDENTITY_MAP_ADDR)
            .map_err(kvm_err("KVM_SET_IDENTITY_MAP_ADDR"))?;
        vm.create_irq_chip()
            .map_err(kvm_err("KVM_CREATE_IRQCHIP"))?;
        let pit = kvm_pit_config {
            flags: KVM_PIT_SPEAKER_DUMMY,
            ..Default::default()
        };
        vm.create_pit2(pit).map_err(kvm_err("KVM_CREATE_PIT2"))?;

        let mem = create_memory(&vm, config.memory_mib << 20)?;

        let power = PowerSignal::new().map_err(VmError::EventFd)?;
        let serial_irq = EventFd::new(EFD_NONBLOCK).map_err(VmError::EventFd)?;
        vm.register_irqfd(&serial_irq, COM1_IRQ)
            .map_err(kvm_err("KVM_IRQFD (COM1)"))?;
        let serial = Arc::new(Mutex::new(SerialDevice::new(
            serial_irq,
            serial_output(&config.serial)?,
        )));

        let mut pio = Bus::new();
        pio.insert(serial.clone(), COM1_PORT_BASE, COM1_PORT_LEN)?;
        let i8042 = I8042::new(PowerTrigger::new(power.clone(), PowerRequest::Reset));
        pio.insert(Arc::new(Mutex::new(i8042)), I8042_PORT_BASE, I8042_PORT_LEN)?;
        let pm = AcpiPowerManagement::new(power.clone());
        pio.insert(
            Arc::new(Mutex::new(pm)),
            ACPI_PM_PORT_BASE,
            ACPI_PM_PORT_LEN,
        )?;

        let mut mmio = Bus::new();
        let timer = BootTimer::new(
            start,
            Box::new(|elapsed| {
                eprintln!(
                    "stratus-vmm: boot complete in {:.3} ms",
                    elapsed.as_secs_f64() * 1000.0
                );
            }),
        );
        mmio.insert(Arc::new(Mutex::new(timer)), BOOT_TIMER_ADDR, BOOT_TIMER_LEN)?;

        let mut virtio = VirtioDevices::default();
        virtio.attach_disks(&vm, &mem, &mut mmio, &config.disks)?;

        let platform = AcpiPlatform {
            vcpus: config.vcpus,
            mmio_devices: virtio.acpi.clone(),
        };
        if config.wants_virtio_mmio_cmdline() {
            for arg in &virtio.cmdline_args {
                cmdline.push(' ');
                cmdline.push_str(arg);
            }
        }
        let rsdp = acpi::write_tables(&mem, &platform)?;
        let boot_info = boot::load(&mem, kernel, initrd, &cmdline, rsdp)?;
        log::info!(
            "guest loaded after {:.1} ms: {boot_info:?}",
            start.elapsed().as_secs_f64() * 1000.0
        );

        let supported_cpuid = kvm
            .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
            .map_err(kvm_err("KVM_GET_SUPPORTED_CPUID"))?;
        let (pio, mmio) = (Arc::new(pio), Arc::new(mmio));
        let mut vcpus = Vec::with_capacity(usize::from(config.vcpus));
        for index in 0..config.vcpus {
            let fd = vm
                .create_vcpu(u64::from(index))
                .map_err(kvm_err("KVM_CREATE_VCPU"))?;
            let vcpu = Vcpu::new(index, fd, pio.clone(), mmio.clone());
            vcpu.configure(&supported_cpuid, config.vcpus, &mem, boot_info.entry)?;
            vcpus.push(vcpu);
        }
        let coalesced = enable_coalesced_console(&kvm, &vm, &mut vcpus, &pio, &mmio);

        log::info!(
            "VM ready after {:.1} ms",
            start.elapsed().as_secs_f64() * 1000.0
        );
        Ok(Self {
            _vm_fd: vm,
            _mem: mem,
            vcpus,
            serial,
            blocks: virtio.blocks,
            coalesced,
            power,
            feed_stdin: config.serial == SerialTarget::Stdout,
        })
    }

    /// Runs the guest until it powers off, reboots or fails.
    pub fn run(self) -> Result<VmOutcome, VmError> {
        let stats: Vec<_> = self.vcpus.iter().map(|v| (v.index(), v.stats())).collect();
        let (stop_tx, stop_rx) = mpsc::channel::<(u8, VcpuStop)>();
        let vcpu_stopped = Arc::new(EventFd::new(EFD_NONBLOCK).map_err(VmError::EventFd)?);
        for mut vcpu in self.vcpus {
            let index = vcpu.index();
            let tx = stop_tx.clone();
            let wake = vcpu_stopped.clone();
            std::thread::Builder::new()
                .name(format!("vcpu{index}"))
                .spawn(move || {
                    let stop = vcpu.run_until_stop();
                    let _ = tx.send((index, stop));
                    let _ = wake.write(1);
                })
                .map_err(VmError::Thread)?;
        }

        let mut manager: EventManager<Arc<Mutex<dyn MutEventSubscriber + Send>>> =
            EventManager::new().map_err(VmError::EventLoop)?;
        let finished = Arc::new(AtomicBool::new(false));
        let watcher = Arc::new(Mutex::new(StopWatcher {
            power: self.power.clone(),
            vcpu_stopped: vcpu_stopped.clone(),
            finished: finished.clone(),
        }));
        manager.add_subscriber(watcher);
        if let Some(ring) = &self.coalesced {
            match RingDrainer::new(ring.clone()) {
                Ok(drainer) => {
                    manager.add_subscriber(Arc::new(Mutex::new(drainer)));
                }
                Err(e) => log::warn!("no periodic drain of the coalesced ring: {e}"),
            }
        }
        for block in &self.blocks {
            manager.add_subscriber(block.clone());
        }
        if self.feed_stdin {
            manager.add_subscriber(Arc::new(Mutex::new(StdinToSerial::new(
                self.serial.clone(),
            ))));
        }
        while !finished.load(Ordering::Acquire) {
            manager.run().map_err(VmError::EventLoop)?;
        }
        // Console bytes still queued in the ring are output too.
        if let Some(ring) = &self.coalesced {
            ring.drain();
        }
        self.serial
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .flush();
        let _ = std::io::stdout().flush();
        for (index, stats) in &stats {
            log::info!("vCPU {index} {stats}");
        }

        // A vCPU failure is reported even if a power request raced with it:
        // the failure is what needs explaining.
        if let Ok((index, stop)) = stop_rx.try_recv() {
            return Ok(VmOutcome::VcpuFailed { index, stop });
        }
        Ok(match self.power.pending() {
            Some(PowerRequest::PowerOff) => VmOutcome::PowerOff,
            Some(PowerRequest::Reset) | None => VmOutcome::Reboot,
        })
    }
}

/// Queues COM1 THR writes in KVM's coalesced ring (see [`crate::coalesced`])
/// when the host supports it; without support every write simply exits.
fn enable_coalesced_console(
    kvm: &Kvm,
    vm: &VmFd,
    vcpus: &mut [Vcpu],
    pio: &Arc<Bus>,
    mmio: &Arc<Bus>,
) -> Option<Arc<CoalescedRing>> {
    if !kvm.check_extension(Cap::CoalescedPio) {
        log::info!("KVM lacks coalesced port I/O; every console write exits");
        return None;
    }
    let first = vcpus.first()?;
    let ring = match CoalescedRing::map(first.fd(), pio.clone(), mmio.clone()) {
        Ok(ring) => Arc::new(ring),
        Err(e) => {
            log::warn!("coalesced I/O unavailable: {e}");
            return None;
        }
    };
    // Offset 0 of COM1 is THR (or the divisor latch): writes only, one byte.
    if let Err(e) = vm.register_coalesced_mmio(IoEventAddress::Pio(COM1_PORT_BASE), 1) {
        log::warn!("coalesced I/O unavailable: {e}");
        return None;
    }
    for vcpu in vcpus.iter_mut() {
        vcpu.set_coalesced_ring(ring.clone());
    }
    log::info!("COM1 transmit writes are coalesced");
    Some(ring)
}

/// How long a queued console write may wait when the guest makes no exit.
const RING_DRAIN_INTERVAL: std::time::Duration = std::time::Duration::from_millis(10);

/// Drains the coalesced ring periodically from the event loop, for guests
/// halted while waiting for a transmit interrupt that a queued write raises.
struct RingDrainer {
    ring: Arc<CoalescedRing>,
    timer: TimerFd,
}

impl RingDrainer {
    fn new(ring: Arc<CoalescedRing>) -> std::io::Result<Self> {
        let mut timer = TimerFd::new()?;
        timer.reset(RING_DRAIN_INTERVAL, Some(RING_DRAIN_INTERVAL))?;
        Ok(Self { ring, timer })
    }
}

impl MutEventSubscriber for RingDrainer {
    fn process(&mut self, _events: Events, _ops: &mut EventOps) {
        let _ = self.timer.wait();
        self.ring.drain();
    }

    fn init(&mut self, ops: &mut EventOps) {
        if let Err(e) = ops.add(Events::new(&self.timer, EventSet::IN)) {
            log::warn!("cannot schedule coalesced-ring drains: {e}");
        }
    }
}

/// Ends the event loop on a power request or a vCPU stop.
struct StopWatcher {
    power: Arc<PowerSignal>,
    vcpu_stopped: Arc<EventFd>,
    finished: Arc<AtomicBool>,
}

impl MutEventSubscriber for StopWatcher {
    fn process(&mut self, events: Events, _ops: &mut EventOps) {
        if events.event_set().contains(EventSet::IN) {
            self.finished.store(true, Ordering::Release);
        }
    }

    fn init(&mut self, ops: &mut EventOps) {
        for fd in [
            self.power.event().as_raw_fd(),
            self.vcpu_stopped.as_raw_fd(),
        ] {
            if let Err(e) = ops.add(Events::new_raw(fd, EventSet::IN)) {
                // Without these the VMM could never stop: fail loudly.
                log::error!("cannot watch for VM stop events: {e}");
                self.finished.store(true, Ordering::Release);
            }
        }
    }
}
