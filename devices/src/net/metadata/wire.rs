//! The metadata service's view of the wire: a bounds-checked TCP header
//! view, its addresses, and the writer of every frame it sends (built in
//! one preallocated scratch buffer and handed to the caller's sink).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::super::checksum::Checksum;
use super::super::datapath::MAX_LOCAL_FRAME;
use super::super::frame::{
    ethernet_header, ipv4_header, FrameError, ETHERTYPE_IPV4, ETHERTYPE_IPV6, ETH_HEADER_LEN,
    IPV4_HEADER_LEN,
};
use super::super::MacAddr;

/// The IPv4 address of the metadata service.
pub const METADATA_IPV4: Ipv4Addr = Ipv4Addr::new(169, 254, 169, 254);
/// The IPv6 address of the metadata service, `fd00:ec2::254`.
pub const METADATA_IPV6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254);
/// The one TCP port the service listens on.
pub const METADATA_PORT: u16 = 80;

/// IP protocol number of TCP.
pub(crate) const IPPROTO_TCP: u8 = 6;
/// Length of a TCP header without options.
pub(crate) const TCP_HEADER_LEN: usize = 20;
/// Length of the fixed IPv6 header.
pub(crate) const IPV6_HEADER_LEN: usize = 40;

pub(crate) const FIN: u8 = 0x01;
pub(crate) const SYN: u8 = 0x02;
pub(crate) const RST: u8 = 0x04;
pub(crate) const PSH: u8 = 0x08;
pub(crate) const ACK: u8 = 0x10;

/// Largest TCP payload of a frame the service sends over IPv4 / IPv6: what
/// fits [`MAX_LOCAL_FRAME`], the size of the datapath's frame slots.
pub(crate) const MAX_MSS_V4: u16 = 1460;
pub(crate) const MAX_MSS_V6: u16 = 1440;
/// Smallest MSS honoured: the IPv4 default (RFC 9293 §3.7.1). A guest
/// asking for less gets this much anyway, so one ACK cannot make the
/// service write thousands of tiny frames.
pub(crate) const MIN_MSS: u16 = 536;

/// `a` is before `b` in sequence space (RFC 9293 §3.4, modulo 2^32).
pub(crate) fn seq_lt(a: u32, b: u32) -> bool {
    a != b && b.wrapping_sub(a) < 0x8000_0000
}

/// `a` is after `b` in sequence space.
pub(crate) fn seq_gt(a: u32, b: u32) -> bool {
    seq_lt(b, a)
}

/// `seq` advanced by `n` bytes (`n` is a segment or buffer length).
pub(crate) fn seq_add(seq: u32, n: usize) -> u32 {
    seq.wrapping_add(u32::try_from(n).unwrap_or(u32::MAX))
}

/// Bytes from `from` to `to` in sequence space (`to` not before `from`).
pub(crate) fn seq_diff(to: u32, from: u32) -> usize {
    usize::try_from(to.wrapping_sub(from)).unwrap_or(usize::MAX)
}

/// A TCP header with its MSS option and payload.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Tcp<'a> {
    pub src_port: u16,
    pub dst_port: u16,
    pub seq: u32,
    pub ack: u32,
    pub flags: u8,
    pub window: u16,
    /// The MSS option, on a SYN.
    pub mss: Option<u16>,
    pub payload: &'a [u8],
}

impl<'a> Tcp<'a> {
    /// Reads the TCP segment `segment` (the IP payload). The checksum is
    /// not checked: the guest offloads it, so it is partial on the way
    /// out of the guest, and nothing between guest and VMM corrupts.
    pub(crate) fn parse(segment: &'a [u8]) -> Result<Self, FrameError> {
        let Some((fixed, _)) = segment.split_first_chunk::<TCP_HEADER_LEN>() else {
            return Err(FrameError::Truncated {
                layer: "TCP",
                need: TCP_HEADER_LEN,
                have: segment.len(),
            });
        };
        let be16 = |i: usize| u16::from_be_bytes([fixed[i], fixed[i + 1]]);
        let be32 =
            |i: usize| u32::from_be_bytes([fixed[i], fixed[i + 1], fixed[i + 2], fixed[i + 3]]);
        let header_len = usize::from(fixed[12] >> 4) * 4;
        if header_len < TCP_HEADER_LEN || header_len > segment.len() {
            return Err(FrameError::BadLength {
                layer: "TCP header",
                len: header_len,
                have: segment.len(),
            });
        }
        let (header, payload) = segment.split_at(header_len);
        Ok(Self {
            src_port: be16(0),
            dst_port: be16(2),
            seq: be32(4),
            ack: be32(8),
            flags: fixed[13],
            window: be16(14),
            mss: mss_option(header.get(TCP_HEADER_LEN..).unwrap_or(&[])),
            payload,
        })
    }

    /// Sequence space the segment takes: payload, SYN and FIN.
    pub(crate) fn seq_len(&self) -> usize {
        self.payload.len() + usize::from(self.flags & SYN != 0) + usize::from(self.flags & FIN != 0)
    }

    pub(crate) fn has(&self, flag: u8) -> bool {
        self.flags & flag != 0
    }
}

/// The MSS option among `options`, if well-formed.
fn mss_option(mut options: &[u8]) -> Option<u16> {
    loop {
        match *options {
            [] | [0, ..] => return None,
            [1, ref rest @ ..] => options = rest,
            [2, 4, hi, lo, ..] => return Some(u16::from_be_bytes([hi, lo])),
            [_, len, ..] if len >= 2 => options = options.get(usize::from(len)..)?,
            _ => return None,
        }
    }
}

/// Which guest connection: its address and port (the service's address
/// follows from the family, its port is always 80).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct ConnKey {
    pub guest_ip: IpAddr,
    pub guest_port: u16,
}

impl ConnKey {
    /// The largest MSS the service sends with on this connection.
    pub(crate) fn max_mss(&self) -> u16 {
        match self.guest_ip {
            IpAddr::V4(_) => MAX_MSS_V4,
            IpAddr::V6(_) => MAX_MSS_V6,
        }
    }
}

/// The header fields of a segment being sent.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Header {
    pub seq: u32,
    pub ack: u32,
    pub flags: u8,
    pub window: u16,
    /// An MSS option to send (SYN-ACK).
    pub mss: Option<u16>,
}

/// Writes frames to the guest through the caller's sink, one at a time
/// in a scratch buffer.
pub(crate) struct Emitter<'a> {
    pub scratch: &'a mut [u8; MAX_LOCAL_FRAME],
    pub out: &'a mut dyn FnMut(&[u8]),
    /// Ethernet destination of every frame.
    pub guest_mac: MacAddr,
    /// IPv4 TTL / IPv6 hop limit of TCP segments.
    pub hop_limit: u8,
}

impl std::fmt::Debug for Emitter<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Emitter")
            .field("guest_mac", &self.guest_mac)
            .field("hop_limit", &self.hop_limit)
            .finish_non_exhaustive()
    }
}

/// Adds the IPv6 pseudo-header of an upper-layer checksum (RFC 8200 §8.1).
pub(crate) fn add_ipv6_pseudo_header(
    sum: &mut Checksum,
    src: Ipv6Addr,
    dst: Ipv6Addr,
    next_header: u8,
    len: usize,
) {
    let len = u32::try_from(len).unwrap_or(u32::MAX);
    sum.add(&src.octets())
        .add(&dst.octets())
        .add(&len.to_be_bytes())
        .add(&[0, 0, 0, next_header]);
}

/// A fixed IPv6 header.
pub(crate) fn ipv6_header(
    src: Ipv6Addr,
    dst: Ipv6Addr,
    next_header: u8,
    hop_limit: u8,
    payload_len: u16,
) -> [u8; IPV6_HEADER_LEN] {
    let mut h = [0u8; IPV6_HEADER_LEN];
    h[0] = 0x60;
    h[4..6].copy_from_slice(&payload_len.to_be_bytes());
    h[6] = next_header;
    h[7] = hop_limit;
    h[8..24].copy_from_slice(&src.octets());
    h[24..40].copy_from_slice(&dst.octets());
    h
}

impl Emitter<'_> {
    /// The largest payload a segment to `key` can carry.
    pub(crate) fn room(key: &ConnKey, with_mss_option: bool) -> usize {
        let ip = match key.guest_ip {
            IpAddr::V4(_) => IPV4_HEADER_LEN,
            IpAddr::V6(_) => IPV6_HEADER_LEN,
        };
        MAX_LOCAL_FRAME - ETH_HEADER_LEN - ip - TCP_HEADER_LEN - 4 * usize::from(with_mss_option)
    }

    /// Sends a TCP segment from the service to `key`, Ethernet source
    /// `local_mac`, whose payload of `len` bytes `fill` writes (it returns
    /// how many it wrote; fewer shortens the segment). Nothing is sent if
    /// the frame would not fit (callers size payloads by [`Self::room`]).
    pub(crate) fn tcp(
        &mut self,
        key: &ConnKey,
        local_mac: MacAddr,
        header: Header,
        len: usize,
        fill: impl FnOnce(&mut [u8]) -> usize,
    ) {
        let tcp_header_len = TCP_HEADER_LEN + if header.mss.is_some() { 4 } else { 0 };
        let (ethertype, ip_len) = match key.guest_ip {
            IpAddr::V4(_) => (ETHERTYPE_IPV4, IPV4_HEADER_LEN),
            IpAddr::V6(_) => (ETHERTYPE_IPV6, IPV6_HEADER_LEN),
        };
        let tcp_at = ETH_HEADER_LEN + ip_len;
        let payload_at = tcp_at + tcp_header_len;
        let Some(payload) = self
            .scratch
            .get_mut(payload_at..payload_at.saturating_add(len))
        else {
            return;
        };
        let len = fill(payload).min(len);
        let end = payload_at + len;
        let tcp_len = tcp_header_len + len;
        let Ok(tcp_len16) = u16::try_from(tcp_len) else {
            return;
        };
        let frame = &mut self.scratch[..end];
        frame[..ETH_HEADER_LEN].copy_from_slice(&ethernet_header(
            self.guest_mac,
            local_mac,
            ethertype,
        ));
        {
            let tcp = &mut frame[tcp_at..payload_at];
            tcp[0..2].copy_from_slice(&METADATA_PORT.to_be_bytes());
            tcp[2..4].copy_from_slice(&key.guest_port.to_be_bytes());
            tcp[4..8].copy_from_slice(&header.seq.to_be_bytes());
            tcp[8..12].copy_from_slice(&header.ack.to_be_bytes());
            // Data offset in 32-bit words: 5, or 6 with the MSS option.
            tcp[12] = if header.mss.is_some() { 0x60 } else { 0x50 };
            tcp[13] = header.flags;
            tcp[14..16].copy_from_slice(&header.window.to_be_bytes());
            tcp[16..20].fill(0);
            if let Some(mss) = header.mss {
                tcp[20..22].copy_from_slice(&[2, 4]);
                tcp[22..24].copy_from_slice(&mss.to_be_bytes());
            }
        }
        let mut sum = Checksum::new();
        match key.guest_ip {
            IpAddr::V4(guest) => {
                let Ok(ip) =
                    ipv4_header(METADATA_IPV4, guest, IPPROTO_TCP, self.hop_limit, tcp_len16)
                else {
                    return;
                };
                frame[ETH_HEADER_LEN..tcp_at].copy_from_slice(&ip);
                sum.add_ipv4_pseudo_header(METADATA_IPV4, guest, IPPROTO_TCP, tcp_len16);
            }
            IpAddr::V6(guest) => {
                frame[ETH_HEADER_LEN..tcp_at].copy_from_slice(&ipv6_header(
                    METADATA_IPV6,
                    guest,
                    IPPROTO_TCP,
                    self.hop_limit,
                    tcp_len16,
                ));
                add_ipv6_pseudo_header(&mut sum, METADATA_IPV6, guest, IPPROTO_TCP, tcp_len);
            }
        }
        let checksum = sum.add(&frame[tcp_at..end]).finish();
        frame[tcp_at + 16..tcp_at + 18].copy_from_slice(&checksum.to_be_bytes());
        (self.out)(frame);
    }

    /// Sends a segment without payload.
    pub(crate) fn control(&mut self, key: &ConnKey, local_mac: MacAddr, header: Header) {
        self.tcp(key, local_mac, header, 0, |_| 0);
    }

    /// Answers a segment that belongs to no connection with a reset
    /// (RFC 9293 §3.10.7.1); a reset is never answered.
    pub(crate) fn reset_for(&mut self, key: &ConnKey, local_mac: MacAddr, seg: &Tcp<'_>) {
        if seg.has(RST) {
            return;
        }
        let header = if seg.has(ACK) {
            Header {
                seq: seg.ack,
                ack: 0,
                flags: RST,
                window: 0,
                mss: None,
            }
        } else {
            Header {
                seq: 0,
                ack: seq_add(seg.seq, seg.seq_len()),
                flags: RST | ACK,
                window: 0,
                mss: None,
            }
        };
        self.control(key, local_mac, header);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequence_arithmetic_wraps() {
        assert!(seq_lt(0xffff_fff0, 5));
        assert!(seq_gt(5, 0xffff_fff0));
        assert!(!seq_lt(7, 7));
        assert_eq!(seq_add(0xffff_ffff, 2), 1);
        assert_eq!(seq_diff(1, 0xffff_ffff), 2);
    }

    #[test]
    fn options_are_walked_safely() {
        assert_eq!(mss_option(&[1, 1, 2, 4, 5, 0xb4]), Some(1460));
        assert_eq!(mss_option(&[3, 3, 7, 2, 4, 0x05, 0x00]), Some(1280));
        assert_eq!(mss_option(&[0, 2, 4, 5, 0xb4]), None);
        assert_eq!(mss_option(&[8, 0, 2, 4, 5, 0xb4]), None);
        assert_eq!(mss_option(&[8, 40]), None);
        assert_eq!(mss_option(&[2, 4, 5]), None);
        assert_eq!(mss_option(&[2]), None);
    }

    #[test]
    fn tcp_header_lengths_are_checked() {
        let mut seg = [0u8; 24];
        seg[12] = 0x60;
        seg[20..24].copy_from_slice(&[2, 4, 0x05, 0xb4]);
        let tcp = Tcp::parse(&seg).unwrap();
        assert_eq!(tcp.mss, Some(1460));
        assert!(tcp.payload.is_empty());
        for len in 0..24 {
            assert!(Tcp::parse(&seg[..len]).is_err(), "{len}");
        }
        seg[12] = 0x40;
        assert!(Tcp::parse(&seg).is_err());
    }
}
