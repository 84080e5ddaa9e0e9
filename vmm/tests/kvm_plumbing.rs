//! KVM plumbing on this machine's `/dev/kvm`, without a real guest kernel.
//!
//! A few hand-assembled real-mode instructions exercise the paths every
//! guest uses: port I/O to the COM1 model, MMIO reads and writes routed by
//! the bus, and `hlt` reaching userspace when there is no in-kernel
//! interrupt controller. These run on any KVM, including PVM hosts that
//! cannot boot a stock kernel.
//!
//! Without a usable `/dev/kvm` the tests say so and pass only outside CI;
//! under `CI` they fail, so a broken runner cannot look green.

use std::io::Write;
use std::sync::{Arc, Mutex};

use kvm_bindings::kvm_userspace_memory_region;
use kvm_ioctls::Kvm;
use stratus_devices::bus::{Bus, BusDevice};
use stratus_devices::legacy::serial::{SerialDevice, COM1_PORT_BASE, COM1_PORT_LEN};
use stratus_vmm::vcpu::{Vcpu, VcpuHandle, VcpuRun, VcpuStop, VcpuThreadConfig};
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

const CODE_ADDR: u64 = 0x1000;
const MEM_SIZE: usize = 0x2000;
const MMIO_WRITE_ADDR: u64 = 0x2000;
const MMIO_READ_ADDR: u16 = 0x3000;

/// Opens `/dev/kvm`, or explains why the test cannot run.
fn kvm_or_skip(test: &str) -> Option<Kvm> {
    match Kvm::new() {
        Ok(kvm) => Some(kvm),
        Err(e) if std::env::var_os("CI").is_some() => {
            panic!("{test}: /dev/kvm is required in CI but cannot be opened: {e}")
        }
        Err(e) => {
            eprintln!("SKIPPED {test}: /dev/kvm cannot be opened ({e})");
            None
        }
    }
}

#[derive(Clone, Default)]
struct Console(Arc<Mutex<Vec<u8>>>);

impl Write for Console {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Records MMIO writes and answers reads with a fixed byte.
#[derive(Default)]
struct Probe {
    writes: Vec<(u64, Vec<u8>)>,
    reads: usize,
}

impl BusDevice for Probe {
    fn read(&mut self, _base: u64, _offset: u64, data: &mut [u8]) {
        self.reads += 1;
        data.fill(b'!');
    }
    fn write(&mut self, base: u64, offset: u64, data: &[u8]) {
        self.writes.push((base + offset, data.to_vec()));
    }
}

struct TinyVm {
    vcpu: Vcpu,
    pio: Arc<Bus>,
    console: Console,
    probe: Arc<Mutex<Probe>>,
    // Keeps the VM and its memory alive while the vCPU runs.
    vm_fd: kvm_ioctls::VmFd,
    _mem: GuestMemoryMmap,
}

/// A VM with 8 KiB of RAM, `code` at 0x1000, COM1 on the PIO bus and a
/// probe device on the MMIO bus; the vCPU starts in real mode at the code.
fn tiny_vm(kvm: &Kvm, code: &[u8]) -> TinyVm {
    let vm = kvm.create_vm().unwrap();
    let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), MEM_SIZE)]).unwrap();
    mem.write_slice(code, GuestAddress(CODE_ADDR)).unwrap();
    let region = mem.iter().next().unwrap();
    let slot = kvm_userspace_memory_region {
        slot: 0,
        guest_phys_addr: 0,
        memory_size: region.len(),
        userspace_addr: region.as_ptr() as u64,
        flags: 0,
    };
    // SAFETY: `mem` is a live mapping kept in the returned `TinyVm` for as
    // long as the VM exists.
    unsafe { vm.set_user_memory_region(slot).unwrap() };

    let console = Console::default();
    let serial = SerialDevice::new(
        EventFd::new(EFD_NONBLOCK).unwrap(),
        Box::new(console.clone()),
    );
    let mut pio = Bus::new();
    pio.insert(Arc::new(Mutex::new(serial)), COM1_PORT_BASE, COM1_PORT_LEN)
        .unwrap();
    let probe = Arc::new(Mutex::new(Probe::default()));
    let mut mmio = Bus::new();
    mmio.insert(probe.clone(), MMIO_WRITE_ADDR, 0x2000).unwrap();

    let fd = vm.create_vcpu(0).unwrap();
    let mut sregs = fd.get_sregs().unwrap();
    sregs.cs.base = 0;
    sregs.cs.selector = 0;
    fd.set_sregs(&sregs).unwrap();
    let regs = kvm_bindings::kvm_regs {
        rip: CODE_ADDR,
        rflags: 2,
        ..Default::default()
    };
    fd.set_regs(&regs).unwrap();
    let pio = Arc::new(pio);
    TinyVm {
        vcpu: Vcpu::new(0, fd, pio.clone(), Arc::new(mmio)),
        pio,
        console,
        probe,
        vm_fd: vm,
        _mem: mem,
    }
}

#[test]
fn port_io_reaches_the_serial_device_and_hlt_stops_the_vcpu() {
    let Some(kvm) = kvm_or_skip("port_io_reaches_the_serial_device") else {
        return;
    };
    let code = [
        0xba, 0xf8, 0x03, // mov dx, 0x3f8
        0xb0, b'H', // mov al, 'H'
        0xee, // out dx, al
        0xb0, b'i', // mov al, 'i'
        0xee, // out dx, al
        0xf4, // hlt
    ];
    let mut vm = tiny_vm(&kvm, &code);
    assert_eq!(vm.vcpu.run_until_stop(), VcpuStop::Halted);
    assert_eq!(vm.console.0.lock().unwrap().as_slice(), b"Hi");
}

#[test]
fn mmio_reads_and_writes_go_through_the_bus() {
    let Some(kvm) = kvm_or_skip("mmio_reads_and_writes_go_through_the_bus") else {
        return;
    };
    let [read_lo, read_hi] = MMIO_READ_ADDR.to_le_bytes();
    let code = [
        0xc6, 0x06, 0x00, 0x20, 0xab, // mov byte [0x2000], 0xab
        0xa0, read_lo, read_hi, // mov al, [MMIO_READ_ADDR]
        0xba, 0xf8, 0x03, // mov dx, 0x3f8
        0xee, // out dx, al   (echo the MMIO value to the console)
        0xf4, // hlt
    ];
    let mut vm = tiny_vm(&kvm, &code);
    assert_eq!(vm.vcpu.run_until_stop(), VcpuStop::Halted);
    let probe = vm.probe.lock().unwrap();
    assert_eq!(probe.writes, vec![(MMIO_WRITE_ADDR, vec![0xab])]);
    assert_eq!(probe.reads, 1);
    assert_eq!(vm.console.0.lock().unwrap().as_slice(), b"!");
}

#[test]
fn unclaimed_ports_read_as_open_bus() {
    let Some(kvm) = kvm_or_skip("unclaimed_ports_read_as_open_bus") else {
        return;
    };
    let code = [
        0xba, 0x80, 0x02, // mov dx, 0x280 (nothing there)
        0xec, // in al, dx
        0xba, 0xf8, 0x03, // mov dx, 0x3f8
        0xee, // out dx, al
        0xf4, // hlt
    ];
    let mut vm = tiny_vm(&kvm, &code);
    assert_eq!(vm.vcpu.run_until_stop(), VcpuStop::Halted);
    assert_eq!(vm.console.0.lock().unwrap().as_slice(), &[0xff]);
}

#[test]
fn coalesced_console_writes_are_applied_in_order_at_the_next_exit() {
    let Some(kvm) = kvm_or_skip("coalesced_console_writes") else {
        return;
    };
    assert!(
        kvm.check_extension(kvm_ioctls::Cap::CoalescedPio),
        "this host's KVM lacks KVM_CAP_COALESCED_PIO; the VMM falls back to exits"
    );
    let code = [
        0xba, 0xf8, 0x03, // mov dx, 0x3f8
        0xb0, b'O', // mov al, 'O'
        0xee, // out dx, al      (queued, no exit)
        0xb0, b'K', // mov al, 'K'
        0xee, // out dx, al      (queued, no exit)
        0xc6, 0x06, 0x00, 0x20, 0x01, // mov byte [0x2000], 1  (MMIO exit)
        0xf4, // hlt
    ];
    let mut vm = tiny_vm(&kvm, &code);
    vm.vm_fd
        .register_coalesced_mmio(kvm_ioctls::IoEventAddress::Pio(COM1_PORT_BASE), 1)
        .unwrap();
    let ring = stratus_vmm::coalesced::CoalescedRing::map(
        vm.vcpu.fd(),
        vm.pio.clone(),
        Arc::new(Bus::new()),
    )
    .unwrap();
    let ring = Arc::new(ring);
    vm.vcpu.set_coalesced_ring(ring.clone());

    // The first exit is the MMIO write: by the time it is handled, both
    // queued characters must have reached the console.
    assert_eq!(vm.vcpu.run_once(), VcpuRun::Continue);
    assert_eq!(vm.console.0.lock().unwrap().as_slice(), b"OK");
    assert_eq!(vm.probe.lock().unwrap().writes.len(), 1);
    assert!(!ring.has_pending());
    assert_eq!(vm.vcpu.run_until_stop(), VcpuStop::Halted);
}

#[test]
fn a_spinning_vcpu_is_kicked_paused_resumed_and_joined() {
    let Some(kvm) = kvm_or_skip("a_spinning_vcpu_is_kicked_paused_resumed_and_joined") else {
        return;
    };
    const COUNTER: u64 = 0x1800;
    let code = [
        0xff, 0x06, 0x00, 0x18, // inc word [0x1800]
        0xeb, 0xfa, // jmp back to the inc: never exits on its own
    ];
    let vm = tiny_vm(&kvm, &code);
    let mem = vm._mem.clone();
    let counter = || mem.read_obj::<u16>(GuestAddress(COUNTER)).unwrap();
    let (stopped, stops) = std::sync::mpsc::channel();
    let first_run = Arc::new(std::sync::OnceLock::new());
    let config = VcpuThreadConfig {
        stopped,
        wake: Arc::new(EventFd::new(EFD_NONBLOCK).unwrap()),
        start: std::time::Instant::now(),
        first_run: first_run.clone(),
    };
    VcpuHandle::install_kick_handler().unwrap();
    let handle = VcpuHandle::spawn(vm.vcpu, config).unwrap();
    let wait_for_progress = |from: u16| {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while counter() == from {
            assert!(
                std::time::Instant::now() < deadline,
                "the guest made no progress"
            );
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
    };
    wait_for_progress(0);
    assert!(
        first_run.get().is_some(),
        "vCPU 0 records its first KVM_RUN"
    );

    handle.request_pause().unwrap();
    handle.wait_paused().unwrap();
    let frozen = counter();
    std::thread::sleep(std::time::Duration::from_millis(200));
    assert_eq!(counter(), frozen, "a paused vCPU must not run the guest");
    assert!(
        handle
            .stats()
            .interrupted
            .load(std::sync::atomic::Ordering::Relaxed)
            >= 1
    );

    handle.request_resume().unwrap();
    handle.wait_resumed().unwrap();
    wait_for_progress(frozen);

    // Exit reaches a vCPU that never leaves the guest by itself.
    handle.exit_and_join();
    assert!(
        stops.try_recv().is_err(),
        "the vCPU did not stop on its own"
    );
    drop(vm.vm_fd);
}
