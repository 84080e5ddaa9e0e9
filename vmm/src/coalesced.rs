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
//!
//! "Applies the queued writes" must hold even when another thread is in the
//! middle of applying them, which is why a slot is released (the `first`
//! index advanced) only after its write has reached the device: see
//! [`CoalescedRing::has_pending`].

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
    page: Page,
    capacity: u32,
    pio: Arc<Bus>,
    mmio: Arc<Bus>,
    /// Serializes consumers: the ring has one consumer index.
    consumer: Mutex<()>,
}

/// Who owns the ring's page.
#[derive(Debug)]
enum Page {
    /// KVM's page mapped from a vCPU fd, `len` bytes; unmapped on drop.
    Mapped { len: usize },
    /// Plain memory standing in for KVM's page, `words` u64s allocated as a
    /// boxed slice; freed on drop.
    #[cfg(test)]
    Heap { words: usize },
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
        Ok(Self::over_page(
            ring,
            Page::Mapped { len: page_size },
            page_size,
            pio,
            mmio,
        ))
    }

    /// A consumer of the ring at `ring`, a page of `page_size` bytes.
    fn over_page(
        ring: NonNull<kvm_coalesced_mmio_ring>,
        page: Page,
        page_size: usize,
        pio: Arc<Bus>,
        mmio: Arc<Bus>,
    ) -> Self {
        // The same capacity KVM computes (KVM_COALESCED_MMIO_MAX).
        let entries = (page_size - std::mem::size_of::<kvm_coalesced_mmio_ring>())
            / std::mem::size_of::<kvm_coalesced_mmio>();
        Self {
            ring,
            page,
            capacity: u32::try_from(entries).unwrap_or(u32::MAX),
            pio,
            mmio,
            consumer: Mutex::new(()),
        }
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

    /// Whether writes are waiting or still being applied; cheap,
    /// lock-free.
    ///
    /// `false` means every write queued before the call has taken effect,
    /// including one another thread is applying right now: [`Self::drain`]
    /// releases a slot only after its write has reached the device, so a
    /// write in flight keeps `first != last`. That is why this need not
    /// also look at the consumer lock: a drain that holds the lock with
    /// nothing left in flight (between slots, or about to return) has no
    /// effect still to come. A caller that gets `true` drains, blocks on
    /// the lock behind the thread applying, and returns once the ring is
    /// empty, i.e. after that thread's writes.
    ///
    /// The Acquire load of `first` pairs with the Release store in `drain`,
    /// so whoever sees a slot released also sees the device state its write
    /// produced.
    pub fn has_pending(&self) -> bool {
        self.first().load(Ordering::Acquire) != self.last().load(Ordering::Acquire)
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
            self.apply(&entry);
            // Only now is the slot released: until this store, other
            // threads' `has_pending` sees the write as pending and waits
            // for it (see there). KVM, seeing the slot still taken, may
            // find the ring full meanwhile and exit for a write instead,
            // which is slower but in order.
            self.first()
                .store((first + 1) % self.capacity, Ordering::Release);
            applied += 1;
        }
    }

    /// Performs one queued write on its bus.
    fn apply(&self, entry: &kvm_coalesced_mmio) {
        let len = usize::try_from(entry.len)
            .unwrap_or(0)
            .min(entry.data.len());
        // SAFETY: both union members are plain u32s.
        let is_pio = unsafe { entry.__bindgen_anon_1.pio } != 0;
        let bus = if is_pio { &self.pio } else { &self.mmio };
        bus.write(entry.phys_addr, &entry.data[..len]);
    }
}

impl Drop for CoalescedRing {
    fn drop(&mut self) {
        match self.page {
            Page::Mapped { len } => {
                // SAFETY: unmaps exactly the page `map` mapped; no reference
                // into it outlives `self`.
                unsafe {
                    libc::munmap(self.ring.as_ptr().cast(), len);
                }
            }
            #[cfg(test)]
            Page::Heap { words } => {
                // SAFETY: `on_heap` made the pointer with `Box::into_raw` of
                // a boxed slice of `words` u64s, and nothing else frees it.
                drop(unsafe {
                    Box::from_raw(std::ptr::slice_from_raw_parts_mut(
                        self.ring.as_ptr().cast::<u64>(),
                        words,
                    ))
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::sync::{mpsc, OnceLock, Weak};
    use std::time::Duration;

    use stratus_devices::bus::BusDevice;

    const PAGE_SIZE: usize = 4096;
    const COM1: u64 = 0x3f8;

    impl CoalescedRing {
        /// A ring over zeroed heap memory laid out like KVM's page.
        fn on_heap(pio: Arc<Bus>, mmio: Arc<Bus>) -> Self {
            let words = PAGE_SIZE / 8;
            let page = Box::into_raw(vec![0u64; words].into_boxed_slice());
            let ring = NonNull::new(page.cast::<kvm_coalesced_mmio_ring>()).unwrap();
            Self::over_page(ring, Page::Heap { words }, PAGE_SIZE, pio, mmio)
        }

        /// Queues a write the way KVM does: entry first, then `last`.
        fn push(&self, phys_addr: u64, data: &[u8], pio: bool) {
            let last = self.last().load(Ordering::Relaxed);
            let mut entry = kvm_coalesced_mmio {
                phys_addr,
                len: u32::try_from(data.len()).unwrap(),
                ..Default::default()
            };
            entry.__bindgen_anon_1.pio = u32::from(pio);
            entry.data[..data.len()].copy_from_slice(data);
            // SAFETY: `last` < capacity keeps the slot inside the page.
            unsafe {
                let entries = std::ptr::addr_of_mut!((*self.ring.as_ptr()).coalesced_mmio)
                    .cast::<kvm_coalesced_mmio>();
                entries.add(last as usize).write_volatile(entry);
            }
            self.last()
                .store((last + 1) % self.capacity, Ordering::Release);
        }

        /// Starts producer and consumer at `index`, as after many writes.
        fn start_at(&self, index: u32) {
            self.first().store(index, Ordering::Relaxed);
            self.last().store(index, Ordering::Relaxed);
        }
    }

    /// Records writes; optionally checks, while a write is being applied,
    /// what another vCPU's `has_pending` would say, and signals and stalls
    /// mid-write.
    #[derive(Default)]
    struct Uart {
        writes: Vec<(u64, Vec<u8>)>,
        ring: Arc<OnceLock<Weak<CoalescedRing>>>,
        pending_during_write: Vec<bool>,
        entered: Option<mpsc::Sender<()>>,
        completed: Arc<AtomicUsize>,
    }

    impl BusDevice for Uart {
        fn read(&mut self, _base: u64, _offset: u64, data: &mut [u8]) {
            data.fill(0);
        }
        fn write(&mut self, _base: u64, offset: u64, data: &[u8]) {
            if let Some(ring) = self.ring.get().and_then(Weak::upgrade) {
                self.pending_during_write.push(ring.has_pending());
            }
            if let Some(entered) = &self.entered {
                let _ = entered.send(());
                std::thread::sleep(Duration::from_millis(100));
            }
            self.writes.push((offset, data.to_vec()));
            self.completed.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// A ring with `uart` at COM1 on the port bus and `mmio_dev` at 0x1000
    /// on the MMIO bus.
    fn ring_with(uart: &Arc<Mutex<Uart>>, mmio_dev: &Arc<Mutex<Uart>>) -> Arc<CoalescedRing> {
        let mut pio = Bus::new();
        pio.insert(uart.clone(), COM1, 8).unwrap();
        let mut mmio = Bus::new();
        mmio.insert(mmio_dev.clone(), 0x1000, 0x100).unwrap();
        Arc::new(CoalescedRing::on_heap(Arc::new(pio), Arc::new(mmio)))
    }

    #[test]
    fn drains_in_order_across_the_wrap_to_the_right_bus() {
        let uart = Arc::new(Mutex::new(Uart::default()));
        let other = Arc::new(Mutex::new(Uart::default()));
        let ring = ring_with(&uart, &other);
        assert_eq!(ring.capacity, 170);
        assert!(!ring.has_pending());
        assert_eq!(ring.drain(), 0);
        ring.start_at(ring.capacity - 2);
        for byte in b"abc" {
            ring.push(COM1, &[*byte], true);
        }
        ring.push(0x1004, &[1, 2, 3, 4], false);
        assert!(ring.has_pending());
        assert_eq!(ring.drain(), 4);
        assert!(!ring.has_pending());
        assert_eq!(ring.first().load(Ordering::Relaxed), 2);
        let got = &uart.lock().unwrap().writes;
        assert_eq!(
            got,
            &[(0, b"a".to_vec()), (0, b"b".to_vec()), (0, b"c".to_vec())]
        );
        assert_eq!(other.lock().unwrap().writes, [(4, vec![1, 2, 3, 4])]);
    }

    #[test]
    fn a_write_being_applied_still_counts_as_pending() {
        let uart = Arc::new(Mutex::new(Uart::default()));
        let other = Arc::new(Mutex::new(Uart::default()));
        let ring = ring_with(&uart, &other);
        let slot = uart.lock().unwrap().ring.clone();
        slot.set(Arc::downgrade(&ring)).unwrap();
        ring.push(COM1, b"x", true);
        ring.push(COM1, b"y", true);
        assert_eq!(ring.drain(), 2);
        // Including the last one: its slot is released only afterwards.
        assert_eq!(uart.lock().unwrap().pending_during_write, [true, true]);
        assert!(!ring.has_pending());
    }

    #[test]
    fn a_second_drain_returns_only_after_the_write_in_flight() {
        let uart = Arc::new(Mutex::new(Uart::default()));
        let other = Arc::new(Mutex::new(Uart::default()));
        let (entered_tx, entered_rx) = mpsc::channel();
        let completed = uart.lock().unwrap().completed.clone();
        uart.lock().unwrap().entered = Some(entered_tx);
        let ring = ring_with(&uart, &other);
        ring.push(COM1, b"z", true);
        // vCPU A starts applying the write and stalls inside the device.
        let a = std::thread::spawn({
            let ring = ring.clone();
            move || ring.drain()
        });
        entered_rx.recv().unwrap();
        // vCPU B exits meanwhile: its drain must not return before A's
        // write has taken effect, or B would run ahead of it.
        assert_eq!(ring.drain(), 0);
        assert_eq!(completed.load(Ordering::SeqCst), 1);
        assert_eq!(a.join().unwrap(), 1);
    }
}
