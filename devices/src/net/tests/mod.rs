//! Tests of [`Datapath`] as the virtio-net device sees it: frames built by
//! hand as bytes go in, verdicts, replies and counters come out. The
//! checksums of replies are checked with this module's own summing, not
//! the datapath's.

use std::collections::HashMap;
use std::net::{Ipv4Addr, Ipv6Addr};

use super::{Datapath, MacAddr, NicIdentity, MAX_LOCAL_FRAME};

mod dest_check;
mod dhcp;
mod hostile;
mod reachability;
mod source_check;

const GUEST_MAC: MacAddr = MacAddr([0x02, 0x00, 0x0a, 0x00, 0x00, 0x05]);
const OTHER_MAC: MacAddr = MacAddr([0x02, 0x00, 0x0a, 0x00, 0x00, 0x09]);
const GUEST_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 5);
const OTHER_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 9);
const GATEWAY: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);

const ETHERTYPE_IPV4: u16 = 0x0800;
const ETHERTYPE_ARP: u16 = 0x0806;
const ETHERTYPE_IPV6: u16 = 0x86dd;

fn guest_ipv6() -> Ipv6Addr {
    "2001:db8::5".parse().unwrap()
}

/// fe80::/64 + modified EUI-64 of [`GUEST_MAC`] (02 → 00, ff:fe inserted), spelled out.
fn guest_link_local() -> Ipv6Addr {
    "fe80::aff:fe00:5".parse().unwrap()
}

fn identity() -> NicIdentity {
    NicIdentity {
        mac: GUEST_MAC,
        ipv4: GUEST_IP,
        prefix_len: 24,
        gateway: GATEWAY,
        ipv6: Some(guest_ipv6()),
        dns: vec![Ipv4Addr::new(10, 0, 0, 2)],
        hostname: "ip-10-0-0-5".into(),
        domain: "ec2.internal".into(),
        mtu: 9001,
        lease_secs: 3600,
        source_dest_check: true,
    }
}

fn datapath() -> Datapath {
    Datapath::new(identity())
}

fn unchecked_datapath() -> Datapath {
    Datapath::new(NicIdentity {
        source_dest_check: false,
        ..identity()
    })
}

fn metrics(dp: &Datapath) -> HashMap<&'static str, u64> {
    let mut out = HashMap::new();
    dp.write_metrics(&mut |name, value| {
        assert!(out.insert(name, value).is_none(), "{name} reported twice");
    });
    out
}

/// The counters that are not zero.
fn nonzero(dp: &Datapath) -> Vec<(&'static str, u64)> {
    let mut v: Vec<_> = metrics(dp).into_iter().filter(|&(_, n)| n != 0).collect();
    v.sort_unstable();
    v
}

/// The one's-complement sum of `chunks` (each of even length but the
/// last), folded to 16 bits: 0xffff over data holding a right checksum.
fn ones_sum(chunks: &[&[u8]]) -> u16 {
    let bytes: Vec<u8> = chunks.concat();
    let mut sum: u32 = 0;
    let mut i = 0;
    while i < bytes.len() {
        let high = u32::from(bytes[i]) << 8;
        let low = bytes.get(i + 1).map_or(0, |&b| u32::from(b));
        sum += high | low;
        sum = (sum & 0xffff) + (sum >> 16);
        i += 2;
    }
    u16::try_from(sum).unwrap()
}

fn checksum(chunks: &[&[u8]]) -> u16 {
    !ones_sum(chunks)
}

fn eth(dst: MacAddr, src: MacAddr, ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&dst.0);
    f.extend_from_slice(&src.0);
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

fn ipv4_packet(src: Ipv4Addr, dst: Ipv4Addr, protocol: u8, payload: &[u8]) -> Vec<u8> {
    let total = u16::try_from(20 + payload.len()).unwrap();
    let mut p = vec![0x45, 0];
    p.extend_from_slice(&total.to_be_bytes());
    p.extend_from_slice(&[0x12, 0x34, 0, 0, 64, protocol, 0, 0]);
    p.extend_from_slice(&src.octets());
    p.extend_from_slice(&dst.octets());
    let sum = checksum(&[&p]);
    p[10..12].copy_from_slice(&sum.to_be_bytes());
    p.extend_from_slice(payload);
    p
}

/// A UDP datagram with a zero ("none") checksum.
fn udp(src_port: u16, dst_port: u16, payload: &[u8]) -> Vec<u8> {
    let mut d = Vec::new();
    d.extend_from_slice(&src_port.to_be_bytes());
    d.extend_from_slice(&dst_port.to_be_bytes());
    d.extend_from_slice(&u16::try_from(8 + payload.len()).unwrap().to_be_bytes());
    d.extend_from_slice(&[0, 0]);
    d.extend_from_slice(payload);
    d
}

/// An IPv4 frame from the guest's MAC.
fn ipv4_frame(src: Ipv4Addr, dst: Ipv4Addr, protocol: u8, payload: &[u8]) -> Vec<u8> {
    eth(
        OTHER_MAC,
        GUEST_MAC,
        ETHERTYPE_IPV4,
        &ipv4_packet(src, dst, protocol, payload),
    )
}

fn ipv6_packet(src: Ipv6Addr, dst: Ipv6Addr, next: u8, payload: &[u8]) -> Vec<u8> {
    let mut p = vec![0x60, 0, 0, 0];
    p.extend_from_slice(&u16::try_from(payload.len()).unwrap().to_be_bytes());
    p.extend_from_slice(&[next, 1]);
    p.extend_from_slice(&src.octets());
    p.extend_from_slice(&dst.octets());
    p.extend_from_slice(payload);
    p
}

/// An IPv6 frame from the guest's MAC.
fn ipv6_frame(src: Ipv6Addr, next: u8, payload: &[u8]) -> Vec<u8> {
    let dst: Ipv6Addr = "ff02::16".parse().unwrap();
    eth(
        MacAddr([0x33, 0x33, 0, 0, 0, 0x16]),
        GUEST_MAC,
        ETHERTYPE_IPV6,
        &ipv6_packet(src, dst, next, payload),
    )
}

/// An MLDv2 report behind a hop-by-hop header with a router alert, as
/// Linux sends it: `(record type, group)` records without sources.
fn mld_v2_report(records: &[(u8, &str)]) -> Vec<u8> {
    let mut p = vec![58, 0, 5, 2, 0, 0, 1, 0]; // HBH: router alert, PadN
    p.extend_from_slice(&[143, 0, 0, 0, 0, 0]);
    p.extend_from_slice(&u16::try_from(records.len()).unwrap().to_be_bytes());
    for &(kind, group) in records {
        p.extend_from_slice(&[kind, 0, 0, 0]);
        p.extend_from_slice(&group.parse::<Ipv6Addr>().unwrap().octets());
    }
    p
}

/// An IGMPv2 message for `group`.
fn igmp(kind: u8, group: Ipv4Addr) -> Vec<u8> {
    let mut m = vec![kind, 0, 0, 0];
    m.extend_from_slice(&group.octets());
    let sum = checksum(&[&m]);
    m[2..4].copy_from_slice(&sum.to_be_bytes());
    m
}

fn arp_packet(htype: u16, oper: u16, sender: (MacAddr, Ipv4Addr), target_ip: Ipv4Addr) -> Vec<u8> {
    let mut p = Vec::new();
    p.extend_from_slice(&htype.to_be_bytes());
    p.extend_from_slice(&[0x08, 0x00, 6, 4]);
    p.extend_from_slice(&oper.to_be_bytes());
    p.extend_from_slice(&sender.0 .0);
    p.extend_from_slice(&sender.1.octets());
    p.extend_from_slice(&[0; 6]);
    p.extend_from_slice(&target_ip.octets());
    p
}

/// Drains the datapath's own frames.
fn local_frames(dp: &mut Datapath) -> Vec<Vec<u8>> {
    let mut frames = Vec::new();
    let mut buf = vec![0u8; MAX_LOCAL_FRAME];
    while dp.has_local_frames() {
        let n = dp.pop_local_frame(&mut buf).expect("a frame");
        frames.push(buf[..n].to_vec());
    }
    assert!(dp.pop_local_frame(&mut buf).is_none());
    frames
}

/// A small deterministic generator for hostile inputs.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    fn below(&mut self, n: usize) -> usize {
        usize::try_from(self.next() % u64::try_from(n).unwrap()).unwrap()
    }

    fn byte(&mut self) -> u8 {
        self.next().to_le_bytes()[0]
    }
}
