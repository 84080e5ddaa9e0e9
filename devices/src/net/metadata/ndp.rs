//! Neighbor discovery for `fd00:ec2::254`: a guest that treats the
//! address as on-link asks for its MAC with a neighbor solicitation
//! (RFC 4861 §7.2.3), and gets an advertisement naming [`METADATA_MAC`].
//! IPv4 needs nothing of the kind: 169.254.169.254 is off the guest's
//! subnet, so it sends to its gateway's MAC, and the datapath catches the
//! frames by destination address whatever that MAC.

use std::net::Ipv6Addr;

use super::wire::{add_ipv6_pseudo_header, ipv6_header, Emitter, IPV6_HEADER_LEN, METADATA_IPV6};
use crate::net::checksum::Checksum;
use crate::net::frame::{ethernet_header, ETHERTYPE_IPV6, ETH_HEADER_LEN, IPPROTO_ICMPV6};
use crate::net::{MacAddr, DHCP_SERVER_MAC};

/// The MAC the service answers neighbor solicitations with: the
/// datapath's own (locally administered) address, which its DHCP replies
/// come from too. Frames to it never reach the tap: the datapath hands
/// them here by destination address.
pub const METADATA_MAC: MacAddr = DHCP_SERVER_MAC;

/// The solicited-node group of [`METADATA_IPV6`]: `ff02::1:ff` followed by
/// its last 24 bits.
pub(crate) const SOLICITED_NODE: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 1, 0xff00, 0x0254);

const NEIGHBOR_SOLICITATION: u8 = 135;
const NEIGHBOR_ADVERTISEMENT: u8 = 136;
/// Neighbor discovery messages travel one link: sent and accepted only
/// with hop limit 255 (RFC 4861 §7.1.1).
const NDP_HOP_LIMIT: u8 = 255;
/// Type (4), code, checksum, reserved (4), target (16).
const NS_LEN: usize = 24;
/// An advertisement: the solicitation's fields plus the target
/// link-layer address option (8).
const NA_LEN: usize = 32;

/// Whether `message` (ICMPv6, after the IPv6 header `ip`) is a neighbor
/// solicitation for [`METADATA_IPV6`] that should be answered.
pub(crate) fn is_solicitation(src: Ipv6Addr, dst: Ipv6Addr, hop_limit: u8, message: &[u8]) -> bool {
    let Some((&[kind, code], rest)) = message.split_first_chunk::<2>() else {
        return false;
    };
    if kind != NEIGHBOR_SOLICITATION || code != 0 || hop_limit != NDP_HOP_LIMIT {
        return false;
    }
    if message.len() < NS_LEN || (dst != METADATA_IPV6 && dst != SOLICITED_NODE) {
        return false;
    }
    // Duplicate address detection (from ::) is not answered: the address
    // is not the guest's to claim, and a reply would say it is taken.
    if src.is_unspecified() {
        return false;
    }
    let target = rest.get(6..22).and_then(|t| <[u8; 16]>::try_from(t).ok());
    if target.map(Ipv6Addr::from) != Some(METADATA_IPV6) {
        return false;
    }
    let mut sum = Checksum::new();
    add_ipv6_pseudo_header(&mut sum, src, dst, IPPROTO_ICMPV6, message.len());
    sum.add(message).finish() == 0
}

/// Sends the advertisement answering a solicitation from `to`.
pub(crate) fn advertise(tx: &mut Emitter<'_>, to: Ipv6Addr) {
    let len = ETH_HEADER_LEN + IPV6_HEADER_LEN + NA_LEN;
    let Some(frame) = tx.scratch.get_mut(..len) else {
        return;
    };
    frame[..ETH_HEADER_LEN].copy_from_slice(&ethernet_header(
        tx.guest_mac,
        METADATA_MAC,
        ETHERTYPE_IPV6,
    ));
    let na_len = u16::try_from(NA_LEN).unwrap_or(u16::MAX);
    frame[ETH_HEADER_LEN..ETH_HEADER_LEN + IPV6_HEADER_LEN].copy_from_slice(&ipv6_header(
        METADATA_IPV6,
        to,
        IPPROTO_ICMPV6,
        NDP_HOP_LIMIT,
        na_len,
    ));
    let na = &mut frame[ETH_HEADER_LEN + IPV6_HEADER_LEN..];
    na.fill(0);
    na[0] = NEIGHBOR_ADVERTISEMENT;
    // Solicited and Override, not Router.
    na[4] = 0x60;
    na[8..24].copy_from_slice(&METADATA_IPV6.octets());
    // Target link-layer address option: type 2, one 8-octet unit.
    na[24] = 2;
    na[25] = 1;
    na[26..32].copy_from_slice(&METADATA_MAC.octets());
    let mut sum = Checksum::new();
    add_ipv6_pseudo_header(&mut sum, METADATA_IPV6, to, IPPROTO_ICMPV6, NA_LEN);
    let checksum = sum.add(na).finish();
    na[2..4].copy_from_slice(&checksum.to_be_bytes());
    (tx.out)(frame);
}
