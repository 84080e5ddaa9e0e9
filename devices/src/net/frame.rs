//! Bounds-checked, zero-copy views over the headers the datapath judges:
//! Ethernet II, ARP, IPv4, IPv6 (with the extension headers that precede
//! ICMPv6), UDP and ICMPv6.
//!
//! Every frame from the guest is hostile input, so each view is made by a
//! `parse` that checks every length it will later rely on and fails with a
//! [`FrameError`] instead of panicking. A view copies its few header
//! fields out (addresses, ports, types) and borrows its payload, so parsing
//! never allocates. Only headers are read: payloads of offloaded (TSO,
//! partial-checksum) frames are neither complete nor checksummed yet.

use std::net::{Ipv4Addr, Ipv6Addr};

use super::checksum::{internet_checksum, Checksum};
use super::MacAddr;

/// Length of an Ethernet II header (no VLAN tag, no FCS).
pub(crate) const ETH_HEADER_LEN: usize = 14;
/// Length of an IPv4 header without options.
pub(crate) const IPV4_HEADER_LEN: usize = 20;
/// Length of a UDP header.
pub(crate) const UDP_HEADER_LEN: usize = 8;

/// EtherType of IPv4.
pub(crate) const ETHERTYPE_IPV4: u16 = 0x0800;
/// EtherType of ARP.
pub(crate) const ETHERTYPE_ARP: u16 = 0x0806;
/// EtherType of IPv6.
pub(crate) const ETHERTYPE_IPV6: u16 = 0x86dd;
/// EtherTypes that announce a VLAN tag: 802.1Q, 802.1ad and the
/// pre-standard QinQ value.
pub(crate) const VLAN_ETHERTYPES: [u16; 3] = [0x8100, 0x88a8, 0x9100];

/// IP protocol number of IGMP.
pub(crate) const IPPROTO_IGMP: u8 = 2;
/// IP protocol number of UDP.
pub(crate) const IPPROTO_UDP: u8 = 17;
/// IPv6 next-header value of ICMPv6.
pub(crate) const IPPROTO_ICMPV6: u8 = 58;

/// ARP hardware type of Ethernet.
pub(crate) const ARP_HTYPE_ETHERNET: u16 = 1;

/// IPv6 extension headers walked to reach an ICMPv6 header: hop-by-hop
/// options (MLD's router alert lives there), routing and destination
/// options. All share the next-header/length-in-8-octets layout.
const IPV6_WALKED_EXTENSIONS: [u8; 3] = [0, 43, 60];
/// Most extension headers walked before giving up on a packet.
const MAX_IPV6_EXTENSIONS: usize = 8;

/// Why bytes are not the header they should be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum FrameError {
    /// Fewer bytes than the header needs.
    #[error("{layer} header truncated: needs {need} bytes, has {have}")]
    Truncated {
        /// Which header.
        layer: &'static str,
        /// Bytes it needs.
        need: usize,
        /// Bytes there are.
        have: usize,
    },
    /// A length field disagrees with the bytes present.
    #[error("{layer} length {len} does not fit the {have} bytes present")]
    BadLength {
        /// Which header.
        layer: &'static str,
        /// The length it claims.
        len: usize,
        /// Bytes there are.
        have: usize,
    },
    /// The IP version field is not the one of the EtherType.
    #[error("IP version {0} where another was expected")]
    BadVersion(u8),
    /// More IPv6 extension headers than anyone sends.
    #[error("more than {MAX_IPV6_EXTENSIONS} IPv6 extension headers")]
    TooManyExtensions,
    /// A frame being written does not fit its buffer.
    #[error("frame being built does not fit its {0}-byte buffer")]
    NoRoom(usize),
}

/// Splits `N` bytes off the front of `buf`.
fn take<'a, const N: usize>(
    buf: &'a [u8],
    layer: &'static str,
) -> Result<(&'a [u8; N], &'a [u8]), FrameError> {
    buf.split_first_chunk::<N>().ok_or(FrameError::Truncated {
        layer,
        need: N,
        have: buf.len(),
    })
}

/// Two bytes of `pair` as a big-endian number.
fn be16(pair: &[u8; 2]) -> u16 {
    u16::from_be_bytes(*pair)
}

/// Splits `buf` at `mid`, or reports the header `layer` as truncated.
fn split<'a>(
    buf: &'a [u8],
    mid: usize,
    layer: &'static str,
) -> Result<(&'a [u8], &'a [u8]), FrameError> {
    buf.split_at_checked(mid).ok_or(FrameError::Truncated {
        layer,
        need: mid,
        have: buf.len(),
    })
}

/// An Ethernet II header and what follows it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Ethernet<'a> {
    /// Destination address.
    pub dst: MacAddr,
    /// Source address.
    pub src: MacAddr,
    /// EtherType (or an 802.3 length, below 0x0600).
    pub ethertype: u16,
    /// Everything after the header.
    pub payload: &'a [u8],
}

impl<'a> Ethernet<'a> {
    /// Reads the header of `frame`.
    pub(crate) fn parse(frame: &'a [u8]) -> Result<Self, FrameError> {
        let (dst, rest) = take::<6>(frame, "Ethernet")?;
        let (src, rest) = take::<6>(rest, "Ethernet")?;
        let (ethertype, payload) = take::<2>(rest, "Ethernet")?;
        Ok(Self {
            dst: MacAddr(*dst),
            src: MacAddr(*src),
            ethertype: be16(ethertype),
            payload,
        })
    }

    /// Whether the frame carries a VLAN tag.
    pub(crate) fn is_vlan_tagged(&self) -> bool {
        VLAN_ETHERTYPES.contains(&self.ethertype)
    }
}

/// The fixed part of an ARP packet, which says what the rest holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ArpKind {
    /// Hardware type (1: Ethernet).
    pub htype: u16,
    /// Protocol type (an EtherType: 0x0800 for IPv4).
    pub ptype: u16,
    /// Hardware address length.
    pub hlen: u8,
    /// Protocol address length.
    pub plen: u8,
}

impl ArpKind {
    /// Reads the first six bytes of an ARP packet.
    pub(crate) fn parse(packet: &[u8]) -> Result<Self, FrameError> {
        let (fixed, _) = take::<6>(packet, "ARP")?;
        let [h0, h1, p0, p1, hlen, plen] = *fixed;
        Ok(Self {
            htype: u16::from_be_bytes([h0, h1]),
            ptype: u16::from_be_bytes([p0, p1]),
            hlen,
            plen,
        })
    }

    /// Ethernet hardware and IPv4 protocol addresses: the only ARP spoken.
    pub(crate) fn is_ethernet_ipv4(&self) -> bool {
        self.htype == ARP_HTYPE_ETHERNET
            && self.ptype == ETHERTYPE_IPV4
            && self.hlen == 6
            && self.plen == 4
    }
}

/// An Ethernet/IPv4 ARP packet (RFC 826).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Arp {
    /// Operation (1 request, 2 reply).
    pub oper: u16,
    /// Sender hardware address.
    pub sender_mac: MacAddr,
    /// Sender protocol address (0.0.0.0 in a probe).
    pub sender_ip: Ipv4Addr,
    /// Target hardware address.
    pub target_mac: MacAddr,
    /// Target protocol address.
    pub target_ip: Ipv4Addr,
}

impl Arp {
    /// Reads an ARP packet whose [`ArpKind`] is Ethernet/IPv4.
    pub(crate) fn parse(packet: &[u8]) -> Result<Self, FrameError> {
        let (_, rest) = take::<6>(packet, "ARP")?;
        let (oper, rest) = take::<2>(rest, "ARP")?;
        let (sender_mac, rest) = take::<6>(rest, "ARP")?;
        let (sender_ip, rest) = take::<4>(rest, "ARP")?;
        let (target_mac, rest) = take::<6>(rest, "ARP")?;
        let (target_ip, _) = take::<4>(rest, "ARP")?;
        Ok(Self {
            oper: be16(oper),
            sender_mac: MacAddr(*sender_mac),
            sender_ip: Ipv4Addr::from(*sender_ip),
            target_mac: MacAddr(*target_mac),
            target_ip: Ipv4Addr::from(*target_ip),
        })
    }
}

/// An IPv4 header (options included) and its payload.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Ipv4<'a> {
    /// Source address.
    pub src: Ipv4Addr,
    /// Protocol of the payload.
    pub protocol: u8,
    /// Flags and fragment offset, as on the wire.
    pub flags_fragment: u16,
    /// The whole header, options included.
    pub header: &'a [u8],
    /// The payload, as long as the total length says (link padding cut).
    pub payload: &'a [u8],
}

impl<'a> Ipv4<'a> {
    /// Reads the IPv4 packet at the start of `packet`.
    pub(crate) fn parse(packet: &'a [u8]) -> Result<Self, FrameError> {
        let (fixed, _) = take::<IPV4_HEADER_LEN>(packet, "IPv4")?;
        let [version_ihl, _tos, l0, l1, _id0, _id1, f0, f1, _ttl, protocol, _c0, _c1, s0, s1, s2, s3, _, _, _, _] =
            *fixed;
        if version_ihl >> 4 != 4 {
            return Err(FrameError::BadVersion(version_ihl >> 4));
        }
        let header_len = usize::from(version_ihl & 0x0f) * 4;
        if header_len < IPV4_HEADER_LEN {
            return Err(FrameError::BadLength {
                layer: "IPv4 header",
                len: header_len,
                have: packet.len(),
            });
        }
        let total_len = usize::from(u16::from_be_bytes([l0, l1]));
        if total_len < header_len || total_len > packet.len() {
            return Err(FrameError::BadLength {
                layer: "IPv4 total",
                len: total_len,
                have: packet.len(),
            });
        }
        let (datagram, _padding) = split(packet, total_len, "IPv4")?;
        let (header, payload) = split(datagram, header_len, "IPv4")?;
        Ok(Self {
            src: Ipv4Addr::new(s0, s1, s2, s3),
            protocol,
            flags_fragment: u16::from_be_bytes([f0, f1]),
            header,
            payload,
        })
    }

    /// Whether this is a fragment (more fragments follow, or it is not the
    /// first): then the payload does not start with an L4 header.
    pub(crate) fn is_fragment(&self) -> bool {
        self.flags_fragment & 0x3fff != 0
    }

    /// Whether the header checksum is right.
    pub(crate) fn header_checksum_ok(&self) -> bool {
        Checksum::new().add(self.header).finish() == 0
    }
}

/// The fixed IPv6 header and its payload.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Ipv6<'a> {
    /// Source address.
    pub src: Ipv6Addr,
    /// Type of the header after the fixed one.
    pub next_header: u8,
    /// The payload (extension headers included), as long as the payload
    /// length says.
    pub payload: &'a [u8],
}

impl<'a> Ipv6<'a> {
    /// Reads the IPv6 packet at the start of `packet`.
    pub(crate) fn parse(packet: &'a [u8]) -> Result<Self, FrameError> {
        let (fixed, rest) = take::<8>(packet, "IPv6")?;
        let [version_class, _, _, _, l0, l1, next_header, _hop_limit] = *fixed;
        if version_class >> 4 != 6 {
            return Err(FrameError::BadVersion(version_class >> 4));
        }
        let (src, rest) = take::<16>(rest, "IPv6")?;
        let (_dst, rest) = take::<16>(rest, "IPv6")?;
        let payload_len = usize::from(u16::from_be_bytes([l0, l1]));
        let (payload, _padding) =
            rest.split_at_checked(payload_len)
                .ok_or(FrameError::BadLength {
                    layer: "IPv6 payload",
                    len: payload_len,
                    have: rest.len(),
                })?;
        Ok(Self {
            src: Ipv6Addr::from(*src),
            next_header,
            payload,
        })
    }

    /// The upper-layer protocol and its bytes, past the hop-by-hop,
    /// routing and destination-options headers. Stops at any other header
    /// (a fragment header, ESP, …) and returns that one.
    pub(crate) fn upper_layer(&self) -> Result<(u8, &'a [u8]), FrameError> {
        let mut next = self.next_header;
        let mut rest = self.payload;
        for _ in 0..MAX_IPV6_EXTENSIONS {
            if !IPV6_WALKED_EXTENSIONS.contains(&next) {
                return Ok((next, rest));
            }
            let (&[header_next, len_units], _) = take::<2>(rest, "IPv6 extension")?;
            let len = (usize::from(len_units) + 1) * 8;
            let (_, after) = split(rest, len, "IPv6 extension")?;
            next = header_next;
            rest = after;
        }
        if IPV6_WALKED_EXTENSIONS.contains(&next) {
            return Err(FrameError::TooManyExtensions);
        }
        Ok((next, rest))
    }
}

/// A UDP header (the payload is taken separately: the length field of an
/// offloaded datagram need not match the frame).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct UdpHeader {
    /// Source port.
    pub src_port: u16,
    /// Destination port.
    pub dst_port: u16,
    /// Length of header and payload.
    pub length: u16,
}

impl UdpHeader {
    /// Reads the UDP header at the start of `segment`.
    pub(crate) fn parse(segment: &[u8]) -> Result<Self, FrameError> {
        let (header, _) = take::<UDP_HEADER_LEN>(segment, "UDP")?;
        let [s0, s1, d0, d1, l0, l1, _, _] = *header;
        Ok(Self {
            src_port: u16::from_be_bytes([s0, s1]),
            dst_port: u16::from_be_bytes([d0, d1]),
            length: u16::from_be_bytes([l0, l1]),
        })
    }

    /// The payload of the datagram whose header starts `segment`, as long
    /// as the length field says (which must fit in `segment`).
    pub(crate) fn payload<'a>(&self, segment: &'a [u8]) -> Result<&'a [u8], FrameError> {
        let len = usize::from(self.length);
        if len < UDP_HEADER_LEN || len > segment.len() {
            return Err(FrameError::BadLength {
                layer: "UDP",
                len,
                have: segment.len(),
            });
        }
        let (datagram, _) = split(segment, len, "UDP")?;
        let (_, payload) = split(datagram, UDP_HEADER_LEN, "UDP")?;
        Ok(payload)
    }
}

/// The type of the ICMPv6 message `message`.
pub(crate) fn icmpv6_type(message: &[u8]) -> Result<u8, FrameError> {
    message.first().copied().ok_or(FrameError::Truncated {
        layer: "ICMPv6",
        need: 1,
        have: 0,
    })
}

/// Appends bytes to a caller's buffer, refusing (not panicking) when full.
#[derive(Debug)]
pub(crate) struct Writer<'a> {
    buf: &'a mut [u8],
    pos: usize,
}

impl<'a> Writer<'a> {
    /// A writer at the start of `buf`.
    pub(crate) fn new(buf: &'a mut [u8]) -> Self {
        Self { buf, pos: 0 }
    }

    /// Bytes written so far.
    pub(crate) fn len(&self) -> usize {
        self.pos
    }

    /// Appends `bytes`.
    pub(crate) fn put(&mut self, bytes: &[u8]) -> Result<(), FrameError> {
        let room = self.buf.len();
        let end = self
            .pos
            .checked_add(bytes.len())
            .ok_or(FrameError::NoRoom(room))?;
        self.buf
            .get_mut(self.pos..end)
            .ok_or(FrameError::NoRoom(room))?
            .copy_from_slice(bytes);
        self.pos = end;
        Ok(())
    }

    /// Appends `n` zero bytes.
    pub(crate) fn zeros(&mut self, n: usize) -> Result<(), FrameError> {
        let room = self.buf.len();
        let end = self.pos.checked_add(n).ok_or(FrameError::NoRoom(room))?;
        self.buf
            .get_mut(self.pos..end)
            .ok_or(FrameError::NoRoom(room))?
            .fill(0);
        self.pos = end;
        Ok(())
    }
}

/// An Ethernet II header.
pub(crate) fn ethernet_header(dst: MacAddr, src: MacAddr, ethertype: u16) -> [u8; ETH_HEADER_LEN] {
    let mut header = [0; ETH_HEADER_LEN];
    header[..6].copy_from_slice(&dst.0);
    header[6..12].copy_from_slice(&src.0);
    header[12..].copy_from_slice(&ethertype.to_be_bytes());
    header
}

/// An IPv4 header without options, checksum filled in, for a
/// `payload_len`-byte payload that must not be fragmented.
pub(crate) fn ipv4_header(
    src: Ipv4Addr,
    dst: Ipv4Addr,
    protocol: u8,
    ttl: u8,
    payload_len: u16,
) -> Result<[u8; IPV4_HEADER_LEN], FrameError> {
    let total = payload_len
        .checked_add(20)
        .ok_or(FrameError::NoRoom(usize::from(u16::MAX)))?;
    let mut header = [0; IPV4_HEADER_LEN];
    header[0] = 0x45;
    header[2..4].copy_from_slice(&total.to_be_bytes());
    // Identification 0 with Don't Fragment set (RFC 6864 §4.1).
    header[6] = 0x40;
    header[8] = ttl;
    header[9] = protocol;
    header[12..16].copy_from_slice(&src.octets());
    header[16..20].copy_from_slice(&dst.octets());
    let sum = internet_checksum(&header);
    header[10..12].copy_from_slice(&sum.to_be_bytes());
    Ok(header)
}

/// A UDP header over IPv4 with its checksum computed over `payload`.
pub(crate) fn udp_header(
    src: Ipv4Addr,
    dst: Ipv4Addr,
    src_port: u16,
    dst_port: u16,
    payload: &[u8],
) -> Result<[u8; UDP_HEADER_LEN], FrameError> {
    let len = payload
        .len()
        .checked_add(UDP_HEADER_LEN)
        .and_then(|len| u16::try_from(len).ok())
        .ok_or(FrameError::NoRoom(usize::from(u16::MAX)))?;
    let mut header = [0; UDP_HEADER_LEN];
    header[..2].copy_from_slice(&src_port.to_be_bytes());
    header[2..4].copy_from_slice(&dst_port.to_be_bytes());
    header[4..6].copy_from_slice(&len.to_be_bytes());
    let sum = Checksum::new()
        .add_ipv4_pseudo_header(src, dst, IPPROTO_UDP, len)
        .add(&header)
        .add(payload)
        .finish();
    // 0 means "no checksum" in UDP over IPv4; its other spelling is sent.
    let sum = if sum == 0 { 0xffff } else { sum };
    header[6..].copy_from_slice(&sum.to_be_bytes());
    Ok(header)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ipv4_packet(protocol: u8, payload: &[u8]) -> Vec<u8> {
        let len = u16::try_from(payload.len()).unwrap();
        let mut p = ipv4_header(
            Ipv4Addr::new(10, 0, 0, 5),
            Ipv4Addr::new(10, 0, 0, 1),
            protocol,
            64,
            len,
        )
        .unwrap()
        .to_vec();
        p.extend_from_slice(payload);
        p
    }

    #[test]
    fn ethernet_needs_fourteen_bytes() {
        let frame: Vec<u8> = (0..20).collect();
        let eth = Ethernet::parse(&frame).unwrap();
        assert_eq!(eth.dst.0, [0, 1, 2, 3, 4, 5]);
        assert_eq!(eth.src.0, [6, 7, 8, 9, 10, 11]);
        assert_eq!(eth.ethertype, 0x0c0d);
        assert_eq!(eth.payload, &frame[14..]);
        for len in 0..14 {
            assert!(Ethernet::parse(&frame[..len]).is_err(), "{len}");
        }
        assert!(Ethernet::parse(&frame[..14]).unwrap().payload.is_empty());
    }

    #[test]
    fn vlan_tags_are_recognised() {
        for tpid in VLAN_ETHERTYPES {
            let mut frame = [0u8; 18];
            frame[12..14].copy_from_slice(&tpid.to_be_bytes());
            assert!(Ethernet::parse(&frame).unwrap().is_vlan_tagged());
        }
        let mut frame = [0u8; 14];
        frame[12..14].copy_from_slice(&ETHERTYPE_IPV4.to_be_bytes());
        assert!(!Ethernet::parse(&frame).unwrap().is_vlan_tagged());
    }

    #[test]
    fn ipv4_reads_fields_and_cuts_padding() {
        let mut p = ipv4_packet(IPPROTO_UDP, &[1, 2, 3, 4]);
        p.extend_from_slice(&[0; 10]); // Ethernet minimum-size padding
        let ip = Ipv4::parse(&p).unwrap();
        assert_eq!(ip.src, Ipv4Addr::new(10, 0, 0, 5));
        assert_eq!(ip.protocol, IPPROTO_UDP);
        assert_eq!(ip.payload, &[1, 2, 3, 4]);
        assert!(ip.header_checksum_ok());
        assert!(!ip.is_fragment());
        p[8] ^= 1;
        assert!(!Ipv4::parse(&p).unwrap().header_checksum_ok());
    }

    #[test]
    fn ipv4_with_options() {
        // IHL 6: one 4-byte option (router alert), total length 28.
        let mut p = ipv4_packet(IPPROTO_IGMP, &[]);
        p[0] = 0x46;
        p[2..4].copy_from_slice(&28u16.to_be_bytes());
        p.extend_from_slice(&[0x94, 0x04, 0, 0, 0xaa, 0xbb, 0xcc, 0xdd]);
        let ip = Ipv4::parse(&p).unwrap();
        assert_eq!(ip.header.len(), 24);
        assert_eq!(ip.payload, &[0xaa, 0xbb, 0xcc, 0xdd]);
    }

    #[test]
    fn ipv4_refuses_bad_lengths_and_versions() {
        let p = ipv4_packet(IPPROTO_UDP, &[0; 8]);
        for len in 0..p.len() {
            assert!(Ipv4::parse(&p[..len]).is_err(), "truncated to {len}");
        }
        for ihl in 0..5u8 {
            let mut bad = p.clone();
            bad[0] = 0x40 | ihl;
            assert!(Ipv4::parse(&bad).is_err(), "ihl {ihl}");
        }
        let mut bad = p.clone();
        bad[0] = 0x4f; // 60-byte header in a 28-byte packet
        assert!(Ipv4::parse(&bad).is_err());
        let mut bad = p.clone();
        bad[0] = 0x65;
        assert_eq!(Ipv4::parse(&bad).unwrap_err(), FrameError::BadVersion(6));
        let mut bad = p.clone();
        bad[2..4].copy_from_slice(&19u16.to_be_bytes());
        assert!(Ipv4::parse(&bad).is_err());
    }

    #[test]
    fn ipv4_fragments() {
        let mut p = ipv4_packet(IPPROTO_UDP, &[0; 8]);
        p[6] = 0x20; // more fragments
        assert!(Ipv4::parse(&p).unwrap().is_fragment());
        p[6] = 0x00;
        p[7] = 0x01; // offset 8
        assert!(Ipv4::parse(&p).unwrap().is_fragment());
        p[6] = 0x40;
        p[7] = 0x00; // DF only
        assert!(!Ipv4::parse(&p).unwrap().is_fragment());
    }

    fn ipv6_packet(next: u8, payload: &[u8]) -> Vec<u8> {
        let mut p = vec![0x60, 0, 0, 0];
        p.extend_from_slice(&u16::try_from(payload.len()).unwrap().to_be_bytes());
        p.extend_from_slice(&[next, 255]);
        p.extend_from_slice(&"fe80::1".parse::<Ipv6Addr>().unwrap().octets());
        p.extend_from_slice(&"ff02::16".parse::<Ipv6Addr>().unwrap().octets());
        p.extend_from_slice(payload);
        p
    }

    #[test]
    fn ipv6_walks_to_icmpv6() {
        // Hop-by-hop with router alert (8 bytes), then ICMPv6 type 143.
        let payload = [58, 0, 5, 2, 0, 0, 1, 0, 143, 0, 0, 0];
        let p = ipv6_packet(0, &payload);
        let ip = Ipv6::parse(&p).unwrap();
        assert_eq!(ip.src, "fe80::1".parse::<Ipv6Addr>().unwrap());
        let (proto, upper) = ip.upper_layer().unwrap();
        assert_eq!(proto, IPPROTO_ICMPV6);
        assert_eq!(icmpv6_type(upper).unwrap(), 143);
        for len in 0..p.len() {
            let ok = Ipv6::parse(&p[..len]).and_then(|ip| ip.upper_layer());
            assert!(ok.is_err(), "truncated to {len}");
        }
    }

    #[test]
    fn ipv6_stops_at_fragment_headers_and_loops() {
        let p = ipv6_packet(44, &[58, 0, 0, 0, 0, 0, 0, 0]);
        let (proto, rest) = Ipv6::parse(&p).unwrap().upper_layer().unwrap();
        assert_eq!((proto, rest.len()), (44, 8));
        // Nine destination-options headers in a row.
        let mut chain = Vec::new();
        for _ in 0..9 {
            chain.extend_from_slice(&[60, 0, 0, 0, 0, 0, 0, 0]);
        }
        let p = ipv6_packet(60, &chain);
        assert_eq!(
            Ipv6::parse(&p).unwrap().upper_layer().unwrap_err(),
            FrameError::TooManyExtensions
        );
        let mut bad = ipv6_packet(58, &[128]);
        bad[0] = 0x40;
        assert!(Ipv6::parse(&bad).is_err());
    }

    #[test]
    fn udp_payload_follows_the_length_field() {
        let seg = [0, 68, 0, 67, 0, 10, 0, 0, 0xaa, 0xbb, 0xcc];
        let udp = UdpHeader::parse(&seg).unwrap();
        assert_eq!((udp.src_port, udp.dst_port, udp.length), (68, 67, 10));
        assert_eq!(udp.payload(&seg).unwrap(), &[0xaa, 0xbb]);
        for bad_len in [0u16, 7, 12, 0xffff] {
            let mut seg = seg;
            seg[4..6].copy_from_slice(&bad_len.to_be_bytes());
            let udp = UdpHeader::parse(&seg).unwrap();
            assert!(udp.payload(&seg).is_err(), "{bad_len}");
        }
        assert!(UdpHeader::parse(&seg[..7]).is_err());
    }

    #[test]
    fn arp_fields() {
        let mut p = vec![0, 1, 8, 0, 6, 4, 0, 1];
        p.extend_from_slice(&[2, 0, 0, 0, 0, 5, 10, 0, 0, 5]);
        p.extend_from_slice(&[0, 0, 0, 0, 0, 0, 10, 0, 0, 1]);
        let kind = ArpKind::parse(&p).unwrap();
        assert!(kind.is_ethernet_ipv4());
        let arp = Arp::parse(&p).unwrap();
        assert_eq!(arp.oper, 1);
        assert_eq!(arp.sender_mac.0, [2, 0, 0, 0, 0, 5]);
        assert_eq!(arp.sender_ip, Ipv4Addr::new(10, 0, 0, 5));
        assert_eq!(arp.target_ip, Ipv4Addr::new(10, 0, 0, 1));
        assert_eq!(arp.target_mac, MacAddr::default());
        for len in 0..28 {
            assert!(Arp::parse(&p[..len]).is_err(), "{len}");
        }
        p[1] = 6; // IEEE 802 hardware type
        assert!(!ArpKind::parse(&p).unwrap().is_ethernet_ipv4());
    }

    #[test]
    fn writer_refuses_overflow() {
        let mut buf = [0u8; 4];
        let mut w = Writer::new(&mut buf);
        w.put(&[1, 2, 3]).unwrap();
        assert!(w.put(&[4, 5]).is_err());
        assert!(w.zeros(2).is_err());
        w.zeros(1).unwrap();
        assert_eq!(w.len(), 4);
        assert_eq!(buf, [1, 2, 3, 0]);
    }
}
