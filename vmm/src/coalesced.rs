//! Coalesced port-I/O: guest writes that KVM queues in a shared ring page
//! instead of exiting to userspace for each one.
//!
//! Under nested virtualization every exit is very expensive, and a Linux
//! console writes each character as an LSR read (which must exit, to learn
//! that the transmitter is empty) plus a THR write (which need not). Queuing
//! the THR writes halves the exits a console costs.
//!
//! Ordering is preserved: every vCPU exit first applies the queued writes,
//! so any access that does exit sees the effects of all earlier writes; and
//! when KVM finds the ring full it exits for the write instead. What changes
//! is only *when* a queued write takes effect: at the next exit, or at the
//! event loop's periodic drain, which bounds the delay for a guest that
//! waits (halted, in-kernel) for the transmit interrupt.

use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use kvm_bindings::{kvm_coalesced_mmio, kvm_coalesced_mmio_ring, KVM_COALESCED_MMIO_PAGE_OFFSET};
use std::os::fd::AsRawFd;

use kvm_ioctls::VcpuFd;
use stratus_devices::bus::Bus;

/// The shared ring page, consumed by whichever thread drains first.
#[derive(Debug)]
pub struct CoalescedRing {
    ring: NonNull<kvm_coalesced_mmio_ring>,
    page_size: usize,
    capacity: u32,
    pio: Arc<Bus>,
    mmio: Arc<Bus>,
    /// Serializes consumers: the ring has one consumer index.
    consumer: Mutex<()>,
}

// SAFETY: the ring page is a shared mapping whose producer is the kernel;
// consumers only touch it through `drain`, which holds `consumer`, and the
// index words are accessed atomically. The buses are `Send + Sync`.
unsafe impl Send for CoalescedRing {}
// SAFETY: as above; all access to the mapping is serialized by `consumer`
// or is an atomic load of the producer index.
unsafe impl Sync for CoalescedRing {}

impl CoalescedRing {
    /// Maps the VM's ring through one vCPU's file descriptor.
    pub fn map(vcpu: &VcpuFd, pio: Arc<Bus>, mmio: Arc<Bus>) -> std::io::Result<Self> {
        // SAFETY: sysconf has no memory-safety preconditions.
        let page_size = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) })
            .map_err(|_| std::io::Error::last_os_error())?;
        let offset = libc::off_t::try_from(KVM_COALESCED_MMIO_PAGE_OFFSET as usize * page_size)
            .map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
        // SAFETY: maps one page of the vCPU fd at the offset KVM documents
        // for the coalesced ring; the result is checked before use and
        // unmapped in `Drop`.
        let addr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                page_size,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                vcpu.as_raw_fd(),
                offset,
            )
        };
        if addr == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        let ring = NonNull::new(addr.cast::<kvm_coalesced_mmio_ring>())
            .ok_or_else(|| std::io::Error::from(std::io::ErrorKind::InvalidData))?;
        let entries = (page_size - std::mem::size_of::<kvm_coalesced_mmio_ring>())
            / std::mem::size_of::<kvm_coalesced_mmio>();
        Ok(Self {
            ring,
            page_size,
            capacity: u32::try_from(entries).unwrap_or(u32::MAX),
            pio,
            mmio,
            consumer: Mutex::new(()),
        })
    }

    fn first(&self) -> &AtomicU32 {
        // SAFETY: `first` is an aligned u32 in the live mapping; viewing it
        // as an atomic is how a shared-memory index must be read.
        unsafe { AtomicU32::from_ptr(std::ptr::addr_of_mut!((*self.ring.as_ptr()).first)) }
    }

    fn last(&self) -> &AtomicU32 {
        // SAFETY: as for `first`.
        unsafe { AtomicU32::from_ptr(std::ptr::addr_of_mut!((*self.ring.as_ptr()).last)) }
    }

    /// Whether writes are waiting; cheap, lock-free.
    pub fn has_pending(&self) -> bool {
        self.first().load(Ordering::Relaxed) != self.last().load(Ordering::Acquire)
    }

    /// Applies every queued write, oldest first. Returns how many.
    pub fn drain(&self) -> u64 {
        if !self.has_pending() {
            return 0;
        }
        let mut applied = 0;
        let _consumer = self.consumer.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            let first = self.first().load(Ordering::Relaxed);
            let last = self.last().load(Ordering::Acquire);
            // The kernel keeps both below the capacity; a value outside it
            // would mean a corrupted page, which we refuse to index with.
            if first == last || first >= self.capacity {
                return applied;
            }
            // SAFETY: `first` < capacity, so the entry lies inside the
            // mapped page; the Acquire load of `last` orders this read after
            // the kernel's write of the entry.
            let entry: kvm_coalesced_mmio = unsafe {
                let entries = std::ptr::addr_of!((*self.ring.as_ptr()).coalesced_mmio)
                    .cast::<kvm_coalesced_mmio>();
                entries.add(first as usize).read_volatile()
            };
            self.first()
                .store((first + 1) % self.capacity, Ordering::Release);
            let len = usize::try_from(entry.len)
                .unwrap_or(0)
                .min(entry.data.len());
            // SAFETY: both union members are plain u32s.
            let is_pio = unsafe { entry.__bindgen_anon_1.pio } != 0;
            let bus = if is_pio { &self.pio } else { &self.mmio };
            bus.write(entry.phys_addr, &entry.data[..len]);
            applied += 1;
        }
    }
}

impl Drop for CoalescedRing {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the page `map` mapped; no reference into it
        // outlives `self`.
        unsafe {
            libc::munmap(self.ring.as_ptr().cast(), self.page_size);
        }
    }
}
