//! Tests of the firewall on hand-built frames.

use std::net::IpAddr;

use serde_json::json;

use super::packet::{TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN};
use super::*;

mod config;
mod hostile;
mod property;
mod semantics;

const SYN: u8 = TCP_SYN;
const SYN_ACK: u8 = TCP_SYN | TCP_ACK;
const ACK: u8 = TCP_ACK;
const FIN_ACK: u8 = TCP_FIN | TCP_ACK;
const RST: u8 = TCP_RST;

const GUEST: &str = "10.0.0.5";
const GUEST6: &str = "2001:db8::5";
const REMOTE: &str = "198.51.100.7";
const REMOTE6: &str = "2001:db8:ffff::7";

fn addr(text: &str) -> IpAddr {
    text.parse().unwrap()
}

/// An Ethernet frame carrying an IP packet from `src` to `dst` (the family
/// of the addresses) with transport bytes `l4`.
fn ip_frame(src: &str, dst: &str, proto: u8, l4: &[u8]) -> Vec<u8> {
    ip_frame_with(src, dst, proto, l4, 64, None)
}

/// [`ip_frame`] with a TTL/hop limit and, for fragments, `(id, offset in
/// 8-byte units, more fragments)`.
fn ip_frame_with(
    src: &str,
    dst: &str,
    proto: u8,
    l4: &[u8],
    hop_limit: u8,
    fragment: Option<(u32, u16, bool)>,
) -> Vec<u8> {
    let mut f = vec![0x02, 0, 0, 0, 0, 1, 0x02, 0, 0, 0, 0, 2];
    match (addr(src), addr(dst)) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            f.extend_from_slice(&[0x08, 0x00]);
            let total = u16::try_from(20 + l4.len()).unwrap();
            let (id, flags) = match fragment {
                Some((id, offset, more)) => (
                    u16::try_from(id).unwrap(),
                    offset | if more { 0x2000 } else { 0 },
                ),
                None => (0x1234, 0x4000),
            };
            f.extend_from_slice(&[0x45, 0]);
            f.extend_from_slice(&total.to_be_bytes());
            f.extend_from_slice(&id.to_be_bytes());
            f.extend_from_slice(&flags.to_be_bytes());
            f.extend_from_slice(&[hop_limit, proto, 0, 0]);
            f.extend_from_slice(&s.octets());
            f.extend_from_slice(&d.octets());
            f.extend_from_slice(l4);
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            f.extend_from_slice(&[0x86, 0xdd]);
            let (next, ext) = match fragment {
                Some((id, offset, more)) => {
                    let mut ext = vec![proto, 0];
                    ext.extend_from_slice(&(offset << 3 | u16::from(more)).to_be_bytes());
                    ext.extend_from_slice(&id.to_be_bytes());
                    (44, ext)
                }
                None => (proto, Vec::new()),
            };
            let len = u16::try_from(ext.len() + l4.len()).unwrap();
            f.extend_from_slice(&[0x60, 0, 0, 0]);
            f.extend_from_slice(&len.to_be_bytes());
            f.extend_from_slice(&[next, hop_limit]);
            f.extend_from_slice(&s.octets());
            f.extend_from_slice(&d.octets());
            f.extend_from_slice(&ext);
            f.extend_from_slice(l4);
        }
        _ => panic!("mixed families"),
    }
    f
}

fn tcp_segment(sp: u16, dp: u16, flags: u8) -> Vec<u8> {
    let mut s = Vec::new();
    s.extend_from_slice(&sp.to_be_bytes());
    s.extend_from_slice(&dp.to_be_bytes());
    s.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0, 0x50, flags, 0xff, 0xff, 0, 0, 0, 0]);
    s
}

fn udp_datagram(sp: u16, dp: u16) -> Vec<u8> {
    let mut s = Vec::new();
    s.extend_from_slice(&sp.to_be_bytes());
    s.extend_from_slice(&dp.to_be_bytes());
    s.extend_from_slice(&[0, 12, 0, 0, 1, 2, 3, 4]);
    s
}

fn icmp_message(ty: u8, code: u8, id: u16, body: &[u8]) -> Vec<u8> {
    let mut s = vec![ty, code, 0, 0];
    s.extend_from_slice(&id.to_be_bytes());
    s.extend_from_slice(&[0, 1]);
    s.extend_from_slice(body);
    s
}

fn tcp(src: &str, sp: u16, dst: &str, dp: u16, flags: u8) -> Vec<u8> {
    ip_frame(src, dst, 6, &tcp_segment(sp, dp, flags))
}

fn udp(src: &str, sp: u16, dst: &str, dp: u16) -> Vec<u8> {
    ip_frame(src, dst, 17, &udp_datagram(sp, dp))
}

/// ICMP (IPv4 addresses) or ICMPv6 (IPv6 addresses).
fn icmp(src: &str, dst: &str, ty: u8, code: u8, id: u16) -> Vec<u8> {
    let proto = if addr(src).is_ipv4() { 1 } else { 58 };
    ip_frame(src, dst, proto, &icmp_message(ty, code, id, &[0xaa; 8]))
}

/// An ICMP error from `from` to `to` carrying the IP packet of `inner`
/// (an Ethernet frame built by the helpers above).
fn icmp_error_frame(from: &str, to: &str, ty: u8, code: u8, inner: &[u8]) -> Vec<u8> {
    let proto = if addr(from).is_ipv4() { 1 } else { 58 };
    // The error quotes the header and the first bytes of the packet.
    let quoted = &inner[14..inner.len().min(14 + 48 + 8)];
    ip_frame(from, to, proto, &icmp_message(ty, code, 0, quoted))
}

fn config(value: serde_json::Value) -> SecurityGroupsConfig {
    serde_json::from_value(value).unwrap()
}

fn firewall(value: serde_json::Value) -> Firewall {
    Firewall::new(&config(value)).unwrap()
}

/// A firewall with one group of these rules.
fn one_group(ingress: serde_json::Value, egress: serde_json::Value) -> Firewall {
    firewall(json!({"groups": [{"id": "sg-1", "ingress": ingress, "egress": egress}]}))
}

fn metric(fw: &Firewall, name: &str) -> u64 {
    let mut found = None;
    fw.write_metrics(&mut |n, v| {
        if n == name {
            found = Some(v);
        }
    });
    found.unwrap_or_else(|| panic!("no metric {name}"))
}

#[track_caller]
fn allowed(v: Verdict) {
    assert!(v.is_allowed(), "{v:?}");
}

#[track_caller]
fn denied(v: Verdict, reason: DenyReason) {
    match v {
        Verdict::Deny { reason: r, .. } => assert_eq!(r, reason, "{v:?}"),
        Verdict::Allow { .. } => panic!("allowed, expected {reason:?}"),
    }
}

const SEC: u64 = 1000;

/// A deterministic xorshift64* generator.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[usize::try_from(self.below(items.len() as u64)).unwrap()]
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}
