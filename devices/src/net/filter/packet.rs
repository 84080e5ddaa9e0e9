//! What the filter reads of a frame: addresses, protocol, ports or ICMP
//! type, fragment position, and for ICMP errors the header of the packet
//! they are about.
//!
//! Ethernet and the outer IPv4/IPv6 headers are read with
//! [`crate::net::frame`]'s views; the transport headers, the IPv6 fragment
//! and authentication headers and the (truncated, so leniently read)
//! packet inside an ICMP error are read here. Only headers are read:
//! offloaded frames carry incomplete payloads and partial checksums.
//! Every read is bounds-checked; nothing here panics or allocates.

use super::super::frame::{Ethernet, Ipv4, Ipv6, ETHERTYPE_IPV4, ETHERTYPE_IPV6, VLAN_ETHERTYPES};

pub(super) const IPPROTO_ICMP: u8 = 1;
pub(super) const IPPROTO_TCP: u8 = 6;
pub(super) const IPPROTO_UDP: u8 = 17;
pub(super) const IPPROTO_ICMPV6: u8 = 58;

/// TCP flag bits.
pub(super) const TCP_FIN: u8 = 0x01;
pub(super) const TCP_SYN: u8 = 0x02;
pub(super) const TCP_RST: u8 = 0x04;
pub(super) const TCP_ACK: u8 = 0x10;

/// Most IPv6 extension headers walked.
const MAX_IPV6_EXTENSIONS: usize = 8;

/// Where a packet sits in a fragmented datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Frag {
    /// Not fragmented.
    Whole,
    /// The first fragment (offset 0, more to come), with the datagram id.
    First(u32),
    /// A later fragment: no transport header.
    Later(u32),
}

/// The transport part of a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum L4<'a> {
    /// TCP or UDP (flags 0 for UDP).
    Ports { src: u16, dst: u16, flags: u8 },
    /// ICMP or ICMPv6: type, code, the identifier field (meaningful for
    /// queries) and what follows the 8-byte header.
    Icmp {
        ty: u8,
        code: u8,
        id: u16,
        body: &'a [u8],
    },
    /// Any other protocol: EC2 looks at addresses and protocol only.
    Other,
    /// A later fragment.
    None,
}

/// An IP packet, as the filter sees it. Addresses of IPv4 packets sit in
/// the low 32 bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Packet<'a> {
    pub v6: bool,
    pub src: u128,
    pub dst: u128,
    pub proto: u8,
    /// TTL or hop limit.
    pub hop_limit: u8,
    pub frag: Frag,
    pub l4: L4<'a>,
}

/// What a frame is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Parsed<'a> {
    /// Not IP (ARP, …): not the filter's business.
    NotIp,
    /// Carries a VLAN tag: the NIC is an untagged port.
    Vlan,
    /// IP with headers too short or inconsistent to judge.
    Malformed,
    Ip(Packet<'a>),
}

fn be16(b: &[u8], at: usize) -> Option<u16> {
    let pair = b.get(at..at + 2)?;
    Some(u16::from_be_bytes([pair[0], pair[1]]))
}

fn be32(b: &[u8], at: usize) -> Option<u32> {
    let quad: [u8; 4] = b.get(at..at + 4)?.try_into().ok()?;
    Some(u32::from_be_bytes(quad))
}

fn addr16(b: &[u8], at: usize) -> Option<u128> {
    let bytes: [u8; 16] = b.get(at..at + 16)?.try_into().ok()?;
    Some(u128::from_be_bytes(bytes))
}

/// Reads the frame.
pub(super) fn parse(frame: &[u8]) -> Parsed<'_> {
    let Ok(eth) = Ethernet::parse(frame) else {
        // Shorter than an Ethernet header: nothing to forward either.
        return Parsed::Malformed;
    };
    let packet = match eth.ethertype {
        ETHERTYPE_IPV4 => parse_ipv4(eth.payload),
        ETHERTYPE_IPV6 => parse_ipv6(eth.payload),
        t if VLAN_ETHERTYPES.contains(&t) => return Parsed::Vlan,
        _ => return Parsed::NotIp,
    };
    packet.map_or(Parsed::Malformed, Parsed::Ip)
}

fn parse_ipv4(bytes: &[u8]) -> Option<Packet<'_>> {
    let ip = Ipv4::parse(bytes).ok()?;
    let header = ip.header;
    let dst = be32(header, 16)?;
    let id = u32::from(be16(header, 4)?);
    let hop_limit = *header.get(8)?;
    let offset = ip.flags_fragment & 0x1fff;
    let more = ip.flags_fragment & 0x2000 != 0;
    let frag = match (offset, more) {
        (0, false) => Frag::Whole,
        (0, true) => Frag::First(id),
        _ => Frag::Later(id),
    };
    let l4 = if let Frag::Later(_) = frag {
        L4::None
    } else {
        transport(ip.protocol, ip.payload)?
    };
    Some(Packet {
        v6: false,
        src: u128::from(u32::from(ip.src)),
        dst: u128::from(dst),
        proto: ip.protocol,
        hop_limit,
        frag,
        l4,
    })
}

fn parse_ipv6(bytes: &[u8]) -> Option<Packet<'_>> {
    let ip = Ipv6::parse(bytes).ok()?;
    // parse() checked the 40-byte fixed header is there.
    let hop_limit = *bytes.get(7)?;
    let dst = addr16(bytes, 24)?;
    let (proto, frag, upper) = ipv6_upper(ip.next_header, ip.payload)?;
    let l4 = if let Frag::Later(_) = frag {
        L4::None
    } else {
        transport(proto, upper)?
    };
    Some(Packet {
        v6: true,
        src: u128::from(ip.src),
        dst,
        proto,
        hop_limit,
        frag,
        l4,
    })
}

/// Walks IPv6 extension headers (hop-by-hop, routing, destination
/// options, fragment, authentication) to the upper-layer protocol. A
/// later fragment stops the walk: its "protocol" is the fragment header's
/// next header.
fn ipv6_upper(mut next: u8, mut rest: &[u8]) -> Option<(u8, Frag, &[u8])> {
    let mut frag = Frag::Whole;
    for _ in 0..MAX_IPV6_EXTENSIONS {
        let len = match next {
            0 | 43 | 60 => (usize::from(*rest.get(1)?) + 1) * 8,
            51 => (usize::from(*rest.get(1)?) + 2) * 4,
            44 => {
                let offset = be16(rest, 2)? >> 3;
                let more = be16(rest, 2)? & 1 != 0;
                let id = be32(rest, 4)?;
                if offset != 0 {
                    return Some((*rest.first()?, Frag::Later(id), rest.get(8..)?));
                }
                if more {
                    frag = Frag::First(id);
                }
                8
            }
            _ => return Some((next, frag, rest)),
        };
        next = *rest.first()?;
        rest = rest.get(len..)?;
    }
    None
}

/// Reads the transport header of `proto` at the start of `segment`.
fn transport(proto: u8, segment: &[u8]) -> Option<L4<'_>> {
    Some(match proto {
        IPPROTO_TCP => L4::Ports {
            src: be16(segment, 0)?,
            dst: be16(segment, 2)?,
            flags: *segment.get(13)?,
        },
        IPPROTO_UDP => {
            segment.get(..8)?;
            L4::Ports {
                src: be16(segment, 0)?,
                dst: be16(segment, 2)?,
                flags: 0,
            }
        }
        IPPROTO_ICMP | IPPROTO_ICMPV6 => L4::Icmp {
            ty: *segment.first()?,
            code: *segment.get(1)?,
            id: be16(segment, 4)?,
            body: segment.get(8..)?,
        },
        _ => L4::Other,
    })
}

/// The header of the packet an ICMP error is about: enough to find its
/// flow. Its total length is not checked (the error carries only the
/// start of it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Embedded {
    pub src: u128,
    pub dst: u128,
    pub proto: u8,
    /// Ports (TCP/UDP), or ICMP type in `dst` and identifier in `src`
    /// (queries); 0 for other protocols.
    pub l4: EmbeddedL4,
}

/// The transport part of an [`Embedded`] packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum EmbeddedL4 {
    Ports { src: u16, dst: u16 },
    Icmp { ty: u8, id: u16 },
    Other,
}

/// Reads the packet inside an ICMP error `body` (after the 8-byte ICMP
/// header). `None` if it is cut before its ports, is a later fragment, or
/// is of the other family.
pub(super) fn embedded(v6: bool, body: &[u8]) -> Option<Embedded> {
    let (src, dst, proto, upper) = if v6 {
        if body.first()? >> 4 != 6 {
            return None;
        }
        let (proto, frag, upper) = ipv6_upper(*body.get(6)?, body.get(40..)?)?;
        if let Frag::Later(_) = frag {
            return None;
        }
        (addr16(body, 8)?, addr16(body, 24)?, proto, upper)
    } else {
        let first = *body.first()?;
        let header_len = usize::from(first & 0x0f) * 4;
        if first >> 4 != 4 || header_len < 20 || be16(body, 6)? & 0x1fff != 0 {
            return None;
        }
        (
            u128::from(be32(body, 12)?),
            u128::from(be32(body, 16)?),
            *body.get(9)?,
            body.get(header_len..)?,
        )
    };
    let l4 = match proto {
        IPPROTO_TCP | IPPROTO_UDP => EmbeddedL4::Ports {
            src: be16(upper, 0)?,
            dst: be16(upper, 2)?,
        },
        IPPROTO_ICMP | IPPROTO_ICMPV6 => EmbeddedL4::Icmp {
            ty: *upper.first()?,
            id: be16(upper, 4)?,
        },
        _ => EmbeddedL4::Other,
    };
    Some(Embedded {
        src,
        dst,
        proto,
        l4,
    })
}
