//! Building one VM from a [`VmConfig`], in the order a reader can follow:
//!
//! 1. [`BootSource::resolve`]: which kernel, initrd and command line
//!    (from the host, or found inside the root disk);
//! 2. [`create_kvm_vm`]: the KVM VM with its in-kernel IOAPIC, PIC, PIT;
//! 3. [`create_memory`]: guest RAM, registered with KVM;
//! 4. [`Platform::create`]: COM1, the i8042, the ACPI power registers, the
//!    boot timer, and the buses they sit on;
//! 5. [`DeviceManager::attach_disks`]: the virtio devices;
//! 6. ACPI tables and the kernel, initrd and command line in guest memory;
//! 7. [`create_vcpus`]: vCPUs with CPUID, MSRs, registers and LAPIC.
//!
//! [`Vm::run`] then starts the vCPU and device threads and hands everything
//! to the event loop ([`crate::runtime::Vmm`]).

use std::fs::OpenOptions;
use std::io::LineWriter;
use std::path::PathBuf;
use std::sync::mpsc;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use kvm_bindings::{
    kvm_pit_config, kvm_userspace_memory_region, KVM_MAX_CPUID_ENTRIES, KVM_PIT_SPEAKER_DUMMY,
};
use kvm_ioctls::{Cap, IoEventAddress, Kvm, VmFd};
use stratus_devices::bus::Bus;
use stratus_devices::disk::open_disk;
use stratus_devices::legacy::acpi_pm::{AcpiPowerManagement, ACPI_PM_PORT_BASE, ACPI_PM_PORT_LEN};
use stratus_devices::legacy::boot_timer::{BootTimer, BOOT_TIMER_ADDR, BOOT_TIMER_LEN};
use stratus_devices::legacy::i8042::{I8042, I8042_KBD_IRQ, I8042_PORT_BASE, I8042_PORT_LEN};
use stratus_devices::legacy::power_button::{PowerButton, POWER_BUTTON_GSI};
use stratus_devices::legacy::serial::{
    SerialDevice, SerialOutput, COM1_IRQ, COM1_PORT_BASE, COM1_PORT_LEN,
};
use stratus_devices::power::{PowerRequest, PowerSignal, PowerTrigger};
use vm_memory::{GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use crate::ami::{find_boot_files, DiskBoot, ReadAt};
use crate::api::{ApiInbox, ApiServer};
use crate::arch::acpi::{self, AcpiPlatform, PlatformDevices};
use crate::arch::smbios::{self, SmbiosIdentity};
use crate::boot;
use crate::coalesced::CoalescedRing;
use crate::config::{DiskConfig, SerialTarget, VmConfig};
use crate::console::{ConsoleRing, TeeOutput, CONSOLE_RING_BYTES};
use crate::device_manager::DeviceManager;
use crate::layout::ram_regions;
use crate::outcome::VmOutcome;
use crate::runtime::{RuntimeError, VmParts, Vmm};
use crate::vcpu::{Vcpu, VcpuControlError, VcpuError, VcpuHandle, VcpuThreadConfig};

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
    /// The power button could not be created.
    #[error(transparent)]
    PowerButton(stratus_devices::legacy::power_button::PowerButtonError),
    /// A device could not be placed on a bus.
    #[error("cannot place a device: {0}")]
    Bus(#[from] stratus_devices::bus::BusError),
    /// The ACPI tables could not be built.
    #[error(transparent)]
    Acpi(#[from] acpi::AcpiError),
    /// The SMBIOS tables could not be built.
    #[error(transparent)]
    Smbios(#[from] smbios::SmbiosError),
    /// The kernel or initrd could not be loaded.
    #[error(transparent)]
    Boot(#[from] boot::BootError),
    /// A vCPU could not be set up.
    #[error(transparent)]
    Vcpu(#[from] VcpuError),
    /// A vCPU thread could not be started or driven.
    #[error(transparent)]
    VcpuControl(#[from] VcpuControlError),
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
    Device(#[from] crate::device_manager::DeviceError),
    /// The event loop failed.
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
}

impl VmError {
    /// Whether the error is the user's configuration meeting the host
    /// (an unloadable kernel, a missing or busy tap): nothing ran, and the
    /// process exits as for any other bad configuration.
    pub fn is_bad_config(&self) -> bool {
        match self {
            VmError::Boot(boot::BootError::BadKernel { .. }) => true,
            VmError::Device(e) => e.is_bad_config(),
            _ => false,
        }
    }
}

fn kvm_err(what: &'static str) -> impl FnOnce(kvm_ioctls::Error) -> VmError {
    move |source| VmError::Kvm { what, source }
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

/// Step 1: the kernel, initrd and command line to boot.
#[derive(Debug)]
pub struct BootSource {
    kernel: PathBuf,
    initrd: Option<PathBuf>,
    cmdline: String,
    /// Keeps files staged out of the root disk alive until loaded.
    _disk_boot: Option<DiskBoot>,
}

impl BootSource {
    /// Takes the host kernel, or finds one inside the root disk. Runs
    /// before any KVM object exists: a disk we cannot boot from is a
    /// configuration problem, not a VM failure.
    pub fn resolve(config: &VmConfig) -> Result<Self, VmError> {
        match (config.boot_from_disk, config.disks.first(), &config.kernel) {
            (true, Some(root), _) => {
                let found = find_disk_boot(root)?;
                Ok(Self {
                    kernel: found.kernel.clone(),
                    initrd: found.initrd.clone(),
                    cmdline: format!("{} {}", found.cmdline(), config.cmdline),
                    _disk_boot: Some(found),
                })
            }
            (true, None, _) => Err(VmError::Unsupported("--boot-from-disk without a disk")),
            (false, _, Some(kernel)) => Ok(Self {
                kernel: kernel.clone(),
                initrd: config.initrd.clone(),
                cmdline: config.cmdline.clone(),
                _disk_boot: None,
            }),
            (false, _, None) => Err(VmError::Unsupported("a VM without a kernel")),
        }
    }
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

/// Step 2: a KVM VM with the in-kernel interrupt controllers and PIT.
pub fn create_kvm_vm() -> Result<(Kvm, VmFd), VmError> {
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
    Ok((kvm, vm))
}

/// Step 3: guest RAM around the MMIO hole, registered with KVM.
pub fn create_memory(vm: &VmFd, mem_bytes: u64) -> Result<GuestMemoryMmap, VmError> {
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

fn serial_sink(target: &SerialTarget) -> Result<SerialOutput, VmError> {
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

/// Step 4: the legacy platform devices and the buses vCPUs dispatch to.
#[derive(Debug)]
pub struct Platform {
    /// Port-I/O bus.
    pub pio: Bus,
    /// MMIO bus (virtio windows are added in step 5).
    pub mmio: Bus,
    /// COM1.
    pub serial: Arc<Mutex<SerialDevice>>,
    /// The last console bytes.
    pub console: Arc<Mutex<ConsoleRing>>,
    /// The keyboard controller.
    pub i8042: Arc<Mutex<I8042>>,
    /// The ACPI power button (a GED interrupt on [`POWER_BUTTON_GSI`]).
    pub power_button: PowerButton,
    /// Guest power requests.
    pub power: Arc<PowerSignal>,
    /// Set when the guest signals boot-complete.
    pub boot_time: Arc<OnceLock<Duration>>,
}

impl Platform {
    /// COM1 and the i8042 keyboard controller (irqfds on their ISA lines)
    /// and the ACPI power registers on the port bus, the boot timer on the
    /// MMIO bus.
    pub fn create(vm: &VmFd, config: &VmConfig, start: Instant) -> Result<Self, VmError> {
        let power = PowerSignal::new().map_err(VmError::EventFd)?;
        let serial_irq = EventFd::new(EFD_NONBLOCK).map_err(VmError::EventFd)?;
        vm.register_irqfd(&serial_irq, COM1_IRQ)
            .map_err(kvm_err("KVM_IRQFD (COM1)"))?;
        let console = Arc::new(Mutex::new(ConsoleRing::new(CONSOLE_RING_BYTES)));
        let output = TeeOutput::new(serial_sink(&config.serial)?, console.clone());
        let serial = Arc::new(Mutex::new(SerialDevice::new(serial_irq, Box::new(output))));

        let mut pio = Bus::new();
        pio.insert(serial.clone(), COM1_PORT_BASE, COM1_PORT_LEN)?;
        let kbd_irq = EventFd::new(EFD_NONBLOCK).map_err(VmError::EventFd)?;
        vm.register_irqfd(&kbd_irq, I8042_KBD_IRQ)
            .map_err(kvm_err("KVM_IRQFD (i8042)"))?;
        let i8042 = Arc::new(Mutex::new(I8042::with_interrupt(
            PowerTrigger::new(power.clone(), PowerRequest::Reset),
            kbd_irq,
        )));
        pio.insert(i8042.clone(), I8042_PORT_BASE, I8042_PORT_LEN)?;
        let power_button = PowerButton::new().map_err(VmError::PowerButton)?;
        vm.register_irqfd(power_button.irq_evt(), POWER_BUTTON_GSI)
            .map_err(kvm_err("KVM_IRQFD (power button)"))?;
        let pm = AcpiPowerManagement::new(power.clone());
        pio.insert(
            Arc::new(Mutex::new(pm)),
            ACPI_PM_PORT_BASE,
            ACPI_PM_PORT_LEN,
        )?;

        let mut mmio = Bus::new();
        let boot_time = Arc::new(OnceLock::new());
        let recorded = boot_time.clone();
        let timer = BootTimer::new(
            start,
            Box::new(move |elapsed: Duration| {
                let _ = recorded.set(elapsed);
                eprintln!(
                    "stratus-vmm: boot complete in {:.3} ms",
                    elapsed.as_secs_f64() * 1000.0
                );
            }),
        );
        mmio.insert(Arc::new(Mutex::new(timer)), BOOT_TIMER_ADDR, BOOT_TIMER_LEN)?;
        Ok(Self {
            pio,
            mmio,
            serial,
            console,
            i8042,
            power_button,
            power,
            boot_time,
        })
    }
}

/// Step 7: one configured vCPU per index.
pub fn create_vcpus(
    kvm: &Kvm,
    vm: &VmFd,
    mem: &GuestMemoryMmap,
    count: u8,
    entry: crate::arch::regs::EntryMode,
    pio: &Arc<Bus>,
    mmio: &Arc<Bus>,
) -> Result<Vec<Vcpu>, VmError> {
    let mut supported_cpuid = kvm
        .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
        .map_err(kvm_err("KVM_GET_SUPPORTED_CPUID"))?;
    crate::arch::cpuid::add_emulated(
        &mut supported_cpuid,
        kvm.check_extension(Cap::TscDeadlineTimer),
    );
    crate::arch::cpuid::add_brand_string(&mut supported_cpuid, crate::arch::cpuid::host_cpuid);
    let mut vcpus = Vec::with_capacity(usize::from(count));
    for index in 0..count {
        let fd = vm
            .create_vcpu(u64::from(index))
            .map_err(kvm_err("KVM_CREATE_VCPU"))?;
        let vcpu = Vcpu::new(index, fd, pio.clone(), mmio.clone());
        vcpu.configure(&supported_cpuid, count, mem, entry)?;
        vcpus.push(vcpu);
    }
    Ok(vcpus)
}

/// A VM ready to run.
#[derive(Debug)]
pub struct Vm {
    vm_fd: VmFd,
    mem: GuestMemoryMmap,
    vcpus: Vec<Vcpu>,
    platform: Platform,
    devices: DeviceManager,
    coalesced: Option<Arc<CoalescedRing>>,
    config: VmConfig,
    start: Instant,
}

impl Vm {
    /// Creates the VM, its memory, devices and vCPUs, and loads the guest.
    /// `start` is when the VMM process started, for the boot timer.
    pub fn new(config: &VmConfig, start: Instant) -> Result<Self, VmError> {
        let source = BootSource::resolve(config)?;
        let (kvm, vm) = create_kvm_vm()?;
        let mem = create_memory(&vm, config.memory_mib << 20)?;
        let mut platform = Platform::create(&vm, config, start)?;
        let mut devices = DeviceManager::default();
        devices.attach_disks(&vm, &mem, &mut platform.mmio, &config.disks)?;
        devices.attach_nics(&vm, &mem, &mut platform.mmio, &config.nets)?;

        let acpi_platform = AcpiPlatform {
            vcpus: config.vcpus,
            mmio_devices: devices.acpi_devices(),
        };
        let mut cmdline = source.cmdline.clone();
        if config.wants_virtio_mmio_cmdline() {
            for arg in devices.cmdline_args() {
                cmdline.push(' ');
                cmdline.push_str(&arg);
            }
        }
        let legacy = PlatformDevices {
            keyboard: true,
            power_button_gsi: Some(POWER_BUTTON_GSI),
        };
        let rsdp = acpi::write_tables_with(&mem, &acpi_platform, &legacy)?;
        smbios::write_tables(
            &mem,
            &SmbiosIdentity::for_instance(&config.id, config.instance_type()),
        )?;
        let boot_info = boot::load(
            &mem,
            &source.kernel,
            source.initrd.as_deref(),
            &cmdline,
            rsdp,
        )?;
        log::info!(
            "guest loaded after {:.1} ms: {boot_info:?}",
            start.elapsed().as_secs_f64() * 1000.0
        );

        // The buses are complete: from here on they are shared read-only.
        let pio = Arc::new(std::mem::take(&mut platform.pio));
        let mmio = Arc::new(std::mem::take(&mut platform.mmio));
        let mut vcpus = create_vcpus(&kvm, &vm, &mem, config.vcpus, boot_info.entry, &pio, &mmio)?;
        let coalesced = enable_coalesced_console(&kvm, &vm, &mut vcpus, &pio, &mmio);
        log::info!(
            "VM ready after {:.1} ms",
            start.elapsed().as_secs_f64() * 1000.0
        );
        Ok(Self {
            vm_fd: vm,
            mem,
            vcpus,
            platform,
            devices,
            coalesced,
            config: config.clone(),
            start,
        })
    }

    /// Starts the device and vCPU threads and runs the event loop until the
    /// guest powers off, reboots or fails, or the API ends it. Every thread
    /// is joined before this returns.
    pub fn run(self, api: Option<(ApiServer, ApiInbox)>) -> Result<VmOutcome, VmError> {
        let (api_server, api_inbox) = match api {
            Some((server, inbox)) => (Some(server), Some(inbox)),
            None => (None, None),
        };
        let device_threads = self.devices.start_threads()?;
        VcpuHandle::install_kick_handler()?;
        let (stop_tx, vcpu_stops) = mpsc::channel();
        let vcpu_stopped = Arc::new(EventFd::new(EFD_NONBLOCK).map_err(VmError::EventFd)?);
        let first_run = Arc::new(OnceLock::new());
        let thread_config = VcpuThreadConfig {
            stopped: stop_tx,
            wake: vcpu_stopped.clone(),
            start: self.start,
            first_run: first_run.clone(),
        };
        let mut vcpus = Vec::with_capacity(self.vcpus.len());
        for vcpu in self.vcpus {
            match VcpuHandle::spawn(vcpu, thread_config.clone()) {
                Ok(handle) => vcpus.push(handle),
                Err(e) => {
                    for handle in vcpus {
                        handle.exit_and_join();
                    }
                    for thread in device_threads {
                        thread.stop_and_join();
                    }
                    return Err(e.into());
                }
            }
        }
        let parts = VmParts {
            vm_fd: self.vm_fd,
            mem: self.mem,
            vcpus,
            vcpu_stops,
            vcpu_stopped,
            devices: self.devices,
            device_threads,
            serial: self.platform.serial,
            console: self.platform.console,
            feed_stdin: self.config.serial == SerialTarget::Stdout,
            coalesced: self.coalesced,
            power: self.platform.power,
            i8042: self.platform.i8042,
            power_button: self.platform.power_button,
            config: self.config,
            start: self.start,
            boot_time: self.platform.boot_time,
            first_run,
        };
        Ok(Vmm::new(parts, api_inbox).run(api_server)?)
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
