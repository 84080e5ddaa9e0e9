//! EC2's source/destination check, as rules over parsed headers: a guest
//! may only send as itself (its MAC, its IPv4 address, its IPv6
//! addresses) and only receives what is addressed to it.
//!
//! Without the check, a guest could impersonate its neighbours (ARP and
//! neighbor-discovery spoofing) or act as a router for addresses it does
//! not own; EC2 turns the check off per NIC for NAT instances and
//! appliances, and so does `NicIdentity::source_dest_check`.
//!
//! The rules live apart from [`super::Datapath`] so each one reads as a
//! plain predicate over addresses; the datapath parses, asks, counts.

use std::net::{Ipv4Addr, Ipv6Addr};

use super::datapath::{DropReason, NicIdentity};
use super::frame::Arp;
use super::multicast::{solicited_node_mac, GroupSet, ALL_HOSTS_MAC, ALL_NODES_MAC};
use super::MacAddr;

/// ICMPv6 router solicitation: RFC 4861 §4.1 lets a host without an
/// address send it from `::`.
const ICMPV6_ROUTER_SOLICIT: u8 = 133;
/// ICMPv6 neighbor solicitation: sent from `::` during duplicate address
/// detection (RFC 4862 §5.4.2).
const ICMPV6_NEIGHBOR_SOLICIT: u8 = 135;
/// ICMPv6 types a host sends from `::` before it owns an address: DAD
/// neighbor solicitations, router solicitations, and MLD reports (RFC
/// 3810 §5.2.13) and dones.
const FROM_UNSPECIFIED_ICMPV6: [u8; 5] = [
    ICMPV6_NEIGHBOR_SOLICIT,
    ICMPV6_ROUTER_SOLICIT,
    super::multicast::MLD_V1_REPORT,
    super::multicast::MLD_DONE,
    super::multicast::MLD_V2_REPORT,
];

/// The link-local address a NIC with `mac` configures by default: fe80::/64
/// with the modified EUI-64 interface id (RFC 4291 appendix A: the
/// universal/local bit flipped, ff:fe in the middle).
pub(crate) fn link_local(mac: MacAddr) -> Ipv6Addr {
    let [a, b, c, d, e, f] = mac.0;
    Ipv6Addr::from([
        0xfe,
        0x80,
        0,
        0,
        0,
        0,
        0,
        0,
        a ^ 0x02,
        b,
        c,
        0xff,
        0xfe,
        d,
        e,
        f,
    ])
}

/// The addresses a NIC owns.
#[derive(Debug, Clone)]
pub(crate) struct Owned {
    /// Its MAC.
    pub mac: MacAddr,
    /// Its IPv4 address.
    pub ipv4: Ipv4Addr,
    /// Its EUI-64 link-local address.
    pub link_local: Ipv6Addr,
    /// Its other IPv6 address, if any.
    pub ipv6: Option<Ipv6Addr>,
    /// Group MACs it always listens to: IPv4 all-hosts, IPv6 all-nodes,
    /// and the solicited-node groups of its IPv6 addresses.
    fixed_groups: [MacAddr; 4],
}

impl Owned {
    /// The addresses of the NIC `identity` describes.
    pub(crate) fn new(identity: &NicIdentity) -> Self {
        let link_local = link_local(identity.mac);
        let ll_solicited = solicited_node_mac(link_local);
        Self {
            mac: identity.mac,
            ipv4: identity.ipv4,
            link_local,
            ipv6: identity.ipv6,
            fixed_groups: [
                ALL_HOSTS_MAC,
                ALL_NODES_MAC,
                ll_solicited,
                identity.ipv6.map_or(ll_solicited, solicited_node_mac),
            ],
        }
    }

    /// Whether the guest may send a packet from IPv4 `src` (DHCP aside).
    pub(crate) fn ipv4_source_ok(&self, src: Ipv4Addr) -> bool {
        src == self.ipv4
    }

    /// Whether `src` is the guest's IPv4 address or 0.0.0.0: where DHCP
    /// client traffic (before it has an address, or while renewing it)
    /// and IGMP reports may come from.
    pub(crate) fn own_or_unspecified_ipv4(&self, src: Ipv4Addr) -> bool {
        src == self.ipv4 || src.is_unspecified()
    }

    /// Whether the guest may send an IPv6 packet from `src`;
    /// `icmpv6_type` is the ICMPv6 type if the packet is ICMPv6.
    pub(crate) fn ipv6_source_ok(&self, src: Ipv6Addr, icmpv6_type: Option<u8>) -> bool {
        if src == self.link_local || Some(src) == self.ipv6 {
            return true;
        }
        src.is_unspecified()
            && icmpv6_type.is_some_and(|kind| FROM_UNSPECIFIED_ICMPV6.contains(&kind))
    }

    /// Whether the guest may send `arp`: as its own MAC and its own IPv4
    /// address, or 0.0.0.0 in an address probe (RFC 5227).
    pub(crate) fn check_arp(&self, arp: &Arp) -> Result<(), DropReason> {
        if arp.sender_mac != self.mac
            || !(arp.sender_ip == self.ipv4 || arp.sender_ip.is_unspecified())
        {
            return Err(DropReason::ArpSpoof);
        }
        Ok(())
    }

    /// Whether a frame to `dst` from the network is for the guest: its
    /// MAC, broadcast, a group it always listens to, or one it joined.
    pub(crate) fn receives(&self, dst: MacAddr, groups: &GroupSet) -> bool {
        dst == self.mac
            || dst == MacAddr::BROADCAST
            || (dst.is_multicast() && (self.fixed_groups.contains(&dst) || groups.has_mac(dst)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_local_is_modified_eui_64() {
        let mac = MacAddr([0x02, 0x00, 0x0a, 0x00, 0x00, 0x05]);
        assert_eq!(
            link_local(mac),
            "fe80::aff:fe00:5".parse::<Ipv6Addr>().unwrap()
        );
        let mac = MacAddr([0x52, 0x54, 0x00, 0x12, 0x34, 0x56]);
        assert_eq!(
            link_local(mac),
            "fe80::5054:ff:fe12:3456".parse::<Ipv6Addr>().unwrap()
        );
    }
}
