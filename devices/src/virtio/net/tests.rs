//! The net device driven from both ends: virtio-queue's mock split queues
//! on plain guest memory as the driver, and a real tap (created for the
//! test, IPv6 off so the host kernel stays quiet on it) with a packet
//! socket on its interface as the host.
//!
//! Taps need root and `ip`; where they cannot be made the tests say so
//! and return, except under CI, where that is a failure.

#![allow(clippy::cast_possible_truncation)]

use std::os::unix::io::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

use virtio_bindings::virtio_ring::{VRING_DESC_F_NEXT, VRING_DESC_F_WRITE};
use virtio_queue::desc::split::Descriptor as SplitDescriptor;
use virtio_queue::desc::RawDescriptor;
use virtio_queue::mock::MockSplitQueue;
use virtio_queue::Queue;
use vm_memory::{Bytes, GuestAddress};

use super::rx::RxStop;
use super::tap::tests::TestTap;
use super::*;
use crate::net::{MacAddr, NicIdentity};
use crate::virtio::{GuestMemoryMmap, VirtioDevice};

const QSIZE: u16 = 64;
const RX_RING: u64 = 0;
const TX_RING: u64 = 0x1_0000;
const RX_BUFS: u64 = 0x10_0000;
const TX_BUFS: u64 = 0x20_0000;
const MEM_LEN: usize = 0x40_0000;
const HDR: usize = tap::VNET_HDR_LEN;

const GUEST_MAC: [u8; 6] = [2, 0, 10, 0, 0, 5];
const PEER_MAC: [u8; 6] = [2, 0, 10, 0, 0, 9];

fn identity() -> NicIdentity {
    NicIdentity {
        mac: MacAddr(GUEST_MAC),
        ipv4: "10.0.0.5".parse().unwrap(),
        prefix_len: 24,
        gateway: "10.0.0.1".parse().unwrap(),
        ipv6: None,
        dns: vec![],
        hostname: "ip-10-0-0-5".into(),
        domain: "compute.internal".into(),
        mtu: 1500,
        lease_secs: 3600,
        source_dest_check: true,
    }
}

/// A tap that is up, with IPv6 off on its interface, or `None` where taps
/// cannot be made (fatal under CI).
fn quiet_tap() -> Option<TestTap> {
    let Some(tap) = TestTap::create() else {
        assert!(
            std::env::var_os("CI").is_none(),
            "taps are required under CI"
        );
        return None;
    };
    let sysctl = format!("/proc/sys/net/ipv6/conf/{}/disable_ipv6", tap.name);
    let _ = std::fs::write(sysctl, "1");
    let up = std::process::Command::new("ip")
        .args(["link", "set", "dev", &tap.name, "up"])
        .status()
        .unwrap();
    assert!(up.success());
    Some(tap)
}

/// A raw packet socket on the tap's interface: what it sends comes out of
/// the tap fd (towards the guest); what the device writes to the tap fd
/// arrives here.
struct Wire {
    fd: OwnedFd,
}

impl Wire {
    fn on(name: &str) -> Self {
        let protocol = (libc::ETH_P_ALL as u16).to_be();
        // SAFETY: plain socket(2) call; the result is checked.
        let raw = unsafe {
            libc::socket(
                libc::AF_PACKET,
                libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                i32::from(protocol),
            )
        };
        assert!(raw >= 0, "{}", std::io::Error::last_os_error());
        // SAFETY: `raw` is a fresh fd we own.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let cname = std::ffi::CString::new(name).unwrap();
        // SAFETY: `cname` is a valid NUL-terminated string.
        let index = unsafe { libc::if_nametoindex(cname.as_ptr()) };
        assert!(index > 0);
        // SAFETY: zeroed sockaddr_ll is a valid value of the type.
        let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        addr.sll_family = libc::AF_PACKET as u16;
        addr.sll_protocol = protocol;
        addr.sll_ifindex = index as i32;
        // SAFETY: `addr` is a sockaddr_ll of the size passed.
        let rc = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                std::ptr::from_ref(&addr).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        assert_eq!(rc, 0, "{}", std::io::Error::last_os_error());
        Self { fd }
    }

    fn send(&self, frame: &[u8]) {
        // SAFETY: `frame` is valid for its length.
        let n = unsafe { libc::send(self.fd.as_raw_fd(), frame.as_ptr().cast(), frame.len(), 0) };
        assert_eq!(
            n,
            frame.len() as isize,
            "{}",
            std::io::Error::last_os_error()
        );
    }

    /// Frames that arrived from the tap fd within `wait`, skipping the
    /// ones this socket sent itself.
    fn received(&self, wait: Duration) -> Vec<Vec<u8>> {
        let deadline = Instant::now() + wait;
        let mut out = Vec::new();
        let mut buf = vec![0u8; 70_000];
        while Instant::now() < deadline {
            // SAFETY: zeroed sockaddr_ll is a valid value of the type.
            let mut from: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
            let mut len = std::mem::size_of::<libc::sockaddr_ll>() as u32;
            // SAFETY: `buf` and `from` are valid for the sizes passed.
            let n = unsafe {
                libc::recvfrom(
                    self.fd.as_raw_fd(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                    0,
                    std::ptr::from_mut(&mut from).cast(),
                    &mut len,
                )
            };
            if n < 0 {
                std::thread::sleep(Duration::from_millis(5));
                continue;
            }
            if from.sll_pkttype != libc::PACKET_OUTGOING {
                out.push(buf[..n as usize].to_vec());
            }
        }
        out
    }
}

/// The driver's side: two mock queues on one guest memory.
struct Driver<'a> {
    mem: &'a GuestMemoryMmap,
    rx: MockSplitQueue<'a, GuestMemoryMmap>,
    tx: MockSplitQueue<'a, GuestMemoryMmap>,
    rx_next: u16,
    tx_next: u16,
    rx_used_seen: u16,
}

impl<'a> Driver<'a> {
    /// Activates `dev` with every offered feature, or without mergeable
    /// buffers.
    fn activate(mem: &'a GuestMemoryMmap, dev: &mut Net, mergeable: bool) -> Self {
        let mut features = dev.avail_features();
        if !mergeable {
            features &= !(1 << virtio_bindings::virtio_net::VIRTIO_NET_F_MRG_RXBUF);
        }
        dev.ack_features(features);
        let rx = MockSplitQueue::create(mem, GuestAddress(RX_RING), QSIZE);
        let tx = MockSplitQueue::create(mem, GuestAddress(TX_RING), QSIZE);
        let queues: Vec<Queue> = vec![rx.create_queue().unwrap(), tx.create_queue().unwrap()];
        dev.activate(mem.clone(), queues).unwrap();
        Self {
            mem,
            rx,
            tx,
            rx_next: 0,
            tx_next: 0,
            rx_used_seen: 0,
        }
    }

    /// Posts one RX chain of one writable buffer of `len` bytes.
    fn post_rx(&mut self, len: u32) {
        let i = self.rx_next;
        let addr = RX_BUFS + u64::from(i) * 0x1_0000;
        let desc = SplitDescriptor::new(addr, len, VRING_DESC_F_WRITE as u16, 0);
        self.rx
            .add_desc_chains(&[RawDescriptor::from(desc)], i)
            .unwrap();
        self.rx_next += 1;
    }

    /// Queues `frame` (a virtio-net header is put in front) for TX, split
    /// over two descriptors: the header, then the frame.
    fn send(&mut self, frame: &[u8]) {
        let i = self.tx_next;
        let addr = TX_BUFS + u64::from(i) * 0x1_0000;
        self.mem
            .write_slice(&[0u8; HDR], GuestAddress(addr))
            .unwrap();
        self.mem
            .write_slice(frame, GuestAddress(addr + HDR as u64))
            .unwrap();
        let descs = [
            SplitDescriptor::new(addr, HDR as u32, VRING_DESC_F_NEXT as u16, i + 1),
            SplitDescriptor::new(addr + HDR as u64, frame.len() as u32, 0, 0),
        ]
        .map(RawDescriptor::from);
        self.tx.add_desc_chains(&descs, i).unwrap();
        self.tx_next += 2;
    }

    fn tx_used(&self) -> u16 {
        self.tx.used().idx().load()
    }

    /// The frames the device put in the RX queue since the last call:
    /// (virtio-net header, frame), each reassembled from its buffers.
    fn received(&mut self) -> Vec<([u8; HDR], Vec<u8>)> {
        let mut out = Vec::new();
        let end = self.rx.used().idx().load();
        while self.rx_used_seen != end {
            let elem = self
                .rx
                .used()
                .ring()
                .ref_at(usize::from(self.rx_used_seen % QSIZE))
                .unwrap()
                .load();
            let addr = RX_BUFS + u64::from(elem.id()) * 0x1_0000;
            let mut first = vec![0u8; elem.len() as usize];
            self.mem.read_slice(&mut first, GuestAddress(addr)).unwrap();
            self.rx_used_seen += 1;
            let count = u16::from_le_bytes([first[10], first[11]]);
            let mut data = first[HDR..].to_vec();
            for _ in 1..count {
                let elem = self
                    .rx
                    .used()
                    .ring()
                    .ref_at(usize::from(self.rx_used_seen % QSIZE))
                    .unwrap()
                    .load();
                let addr = RX_BUFS + u64::from(elem.id()) * 0x1_0000;
                let mut more = vec![0u8; elem.len() as usize];
                self.mem.read_slice(&mut more, GuestAddress(addr)).unwrap();
                data.extend(more);
                self.rx_used_seen += 1;
            }
            let mut hdr = [0u8; HDR];
            hdr.copy_from_slice(&first[..HDR]);
            out.push((hdr, data));
        }
        out
    }
}

/// An Ethernet + IPv4 + UDP frame with `payload`.
fn udp_frame(
    dst: [u8; 6],
    src: [u8; 6],
    ip_src: [u8; 4],
    ip_dst: [u8; 4],
    payload: &[u8],
) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend(dst);
    f.extend(src);
    f.extend([0x08, 0x00]);
    let total = (20 + 8 + payload.len()) as u16;
    let mut ip = vec![0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, 17, 0, 0];
    ip[2..4].copy_from_slice(&total.to_be_bytes());
    ip.extend(ip_src);
    ip.extend(ip_dst);
    let sum = crate::net::checksum::internet_checksum(&ip);
    ip[10..12].copy_from_slice(&sum.to_be_bytes());
    f.extend(ip);
    let ulen = (8 + payload.len()) as u16;
    f.extend([0x30, 0x39, 0x30, 0x39]);
    f.extend(ulen.to_be_bytes());
    f.extend([0, 0]); // no UDP checksum (allowed for IPv4)
    f.extend(payload);
    f
}

/// The device on `tap`, once the host kernel has noticed the tap is
/// attached: until its link-watch work runs (it may take a second) frames
/// sent to the interface are dropped, which would make the tests flaky.
fn device(tap: &TestTap) -> Net {
    let dev = Net::new(Tap::open(&tap.name).unwrap(), identity()).unwrap();
    let operstate = format!("/sys/class/net/{}/operstate", tap.name);
    let deadline = Instant::now() + Duration::from_secs(5);
    while std::fs::read_to_string(&operstate)
        .unwrap_or_default()
        .trim()
        != "up"
    {
        assert!(Instant::now() < deadline, "{} never came up", tap.name);
        std::thread::sleep(Duration::from_millis(10));
    }
    dev
}

/// Waits until the tap fd has something to read (the host sent a frame).
fn wait_readable(dev: &Net) {
    let mut pfd = libc::pollfd {
        fd: dev.tap.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd.
    let n = unsafe { libc::poll(&mut pfd, 1, 2000) };
    assert_eq!(n, 1, "nothing arrived on the tap");
}

#[test]
fn guest_frames_reach_the_host_and_forged_ones_do_not() {
    let Some(t) = quiet_tap() else { return };
    let wire = Wire::on(&t.name);
    let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), MEM_LEN)]).unwrap();
    let mut dev = device(&t);
    let mut drv = Driver::activate(&mem, &mut dev, true);

    let good = udp_frame(
        PEER_MAC,
        GUEST_MAC,
        [10, 0, 0, 5],
        [10, 0, 0, 9],
        b"hello host",
    );
    let forged = udp_frame(
        PEER_MAC,
        GUEST_MAC,
        [10, 0, 0, 77],
        [10, 0, 0, 9],
        b"forged",
    );
    drv.send(&good);
    drv.send(&forged);
    dev.transmit();

    assert_eq!(drv.tx_used(), 2, "both chains are returned");
    let got = wire.received(Duration::from_millis(300));
    assert_eq!(got, vec![good], "only the genuine frame leaves");
    let m = dev.metrics();
    assert_eq!((m.tx_frames, m.datapath_drops), (1, 1));
}

#[test]
fn host_frames_reach_the_guest_buffers() {
    let Some(t) = quiet_tap() else { return };
    let wire = Wire::on(&t.name);
    let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), MEM_LEN)]).unwrap();
    let mut dev = device(&t);
    let mut drv = Driver::activate(&mem, &mut dev, true);
    drv.post_rx(2048);

    let frame = udp_frame(
        GUEST_MAC,
        PEER_MAC,
        [10, 0, 0, 9],
        [10, 0, 0, 5],
        b"hello guest",
    );
    wire.send(&frame);
    // Not for this NIC: the destination check drops it.
    wire.send(&udp_frame(
        [2, 0, 0, 0, 0, 0x77],
        PEER_MAC,
        [10, 0, 0, 9],
        [10, 0, 0, 77],
        b"x",
    ));
    wait_readable(&dev);
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(dev.receive(true), RxStop::Idle);

    let got = drv.received();
    assert_eq!(got.len(), 1);
    let (hdr, data) = &got[0];
    assert_eq!(u16::from_le_bytes([hdr[10], hdr[11]]), 1, "num_buffers");
    assert_eq!(data, &frame);
    assert_eq!(dev.metrics().datapath_drops, 1);
}

#[test]
fn a_full_rx_queue_pauses_and_more_buffers_resume_without_loss() {
    let Some(t) = quiet_tap() else { return };
    let wire = Wire::on(&t.name);
    let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), MEM_LEN)]).unwrap();
    let mut dev = device(&t);
    let mut drv = Driver::activate(&mem, &mut dev, true);

    let frame = udp_frame(
        GUEST_MAC,
        PEER_MAC,
        [10, 0, 0, 9],
        [10, 0, 0, 5],
        &[0xab; 1400],
    );
    wire.send(&frame);
    wait_readable(&dev);
    // No buffers at all: the device stops and says so.
    assert_eq!(dev.receive(true), RxStop::NoRoom);
    assert_eq!(dev.metrics().rx_paused, 1);
    // Buffers too small for the frame: with mergeable buffers it spans
    // three of them once the third arrives.
    drv.post_rx(600);
    drv.post_rx(600);
    assert_eq!(dev.receive(true), RxStop::NoRoom);
    assert!(drv.received().is_empty());
    drv.post_rx(600);
    assert_eq!(dev.receive(true), RxStop::Idle);
    let got = drv.received();
    assert_eq!(got.len(), 1);
    assert_eq!(u16::from_le_bytes([got[0].0[10], got[0].0[11]]), 3);
    assert_eq!(got[0].1, frame);
}

#[test]
fn without_mergeable_buffers_a_frame_too_big_for_one_buffer_is_dropped() {
    let Some(t) = quiet_tap() else { return };
    let wire = Wire::on(&t.name);
    let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), MEM_LEN)]).unwrap();
    let mut dev = device(&t);
    let mut drv = Driver::activate(&mem, &mut dev, false);
    drv.post_rx(600);
    let big = udp_frame(
        GUEST_MAC,
        PEER_MAC,
        [10, 0, 0, 9],
        [10, 0, 0, 5],
        &[1; 1400],
    );
    let small = udp_frame(GUEST_MAC, PEER_MAC, [10, 0, 0, 9], [10, 0, 0, 5], &[2; 100]);
    wire.send(&big);
    wire.send(&small);
    wait_readable(&dev);
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(dev.receive(true), RxStop::Idle);
    let got = drv.received();
    assert_eq!(
        got.len(),
        1,
        "the small frame uses the buffer the big one could not"
    );
    assert_eq!(got[0].1, small);
    assert_eq!(dev.metrics().rx_too_big, 1);
}

#[test]
fn dhcp_is_answered_inside_the_device() {
    let Some(t) = quiet_tap() else { return };
    let wire = Wire::on(&t.name);
    let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), MEM_LEN)]).unwrap();
    let mut dev = device(&t);
    let mut drv = Driver::activate(&mem, &mut dev, true);
    drv.post_rx(2048);

    // A minimal DHCPDISCOVER from the guest.
    let mut bootp = vec![0u8; 240];
    bootp[0] = 1; // BOOTREQUEST
    bootp[1] = 1; // Ethernet
    bootp[2] = 6;
    bootp[4..8].copy_from_slice(&[0xde, 0xad, 0xbe, 0xef]);
    bootp[28..34].copy_from_slice(&GUEST_MAC);
    bootp[236..240].copy_from_slice(&[99, 130, 83, 99]);
    bootp.extend([53, 1, 1, 255]);
    let mut discover = udp_frame([0xff; 6], GUEST_MAC, [0; 4], [255; 4], &bootp);
    discover[34..38].copy_from_slice(&[0, 68, 0, 67]);
    drv.send(&discover);
    dev.transmit();
    assert!(
        wire.received(Duration::from_millis(200)).is_empty(),
        "DHCP never reaches the host"
    );
    assert_eq!(dev.receive(false), RxStop::Idle);
    let got = drv.received();
    assert_eq!(got.len(), 1, "an offer came back");
    let offer = &got[0].1;
    assert_eq!(&offer[0..6], &GUEST_MAC);
    // yiaddr
    assert_eq!(&offer[14 + 20 + 8 + 16..14 + 20 + 8 + 20], &[10, 0, 0, 5]);
    assert_eq!(dev.metrics().rx_local_frames, 1);
}

#[test]
fn a_hostile_tx_queue_costs_the_guest_its_device_not_the_vmm() {
    let Some(t) = quiet_tap() else { return };
    let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), MEM_LEN)]).unwrap();
    let mut dev = device(&t);
    let drv = Driver::activate(&mem, &mut dev, true);
    // A chain pointing outside guest memory, one writable (wrong
    // direction), one too short for a header: all returned, none sent.
    let descs = [
        SplitDescriptor::new(MEM_LEN as u64 + 0x1000, 100, 0, 0),
        SplitDescriptor::new(TX_BUFS, 100, VRING_DESC_F_WRITE as u16, 0),
        SplitDescriptor::new(TX_BUFS, 4, 0, 0),
    ]
    .map(RawDescriptor::from);
    drv.tx.add_desc_chains(&descs, 0).unwrap();
    dev.transmit();
    assert_eq!(drv.tx_used(), 3);
    assert_eq!(dev.metrics().tx_bad_chains, 3);
    // An avail index far beyond the queue: the queue is broken, the device
    // asks for a reset and stops touching it.
    drv.tx.avail().idx().store(1000);
    dev.transmit();
    assert_eq!(dev.metrics().queue_errors, 1);
    assert!(dev.events().interrupt.needs_reset());
}
