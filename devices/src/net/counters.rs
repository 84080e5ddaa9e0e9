//! The datapath's counters, all in one place so the list of metric names
//! reads as documentation: one per drop reason and direction, one per
//! kind of DHCP message handled, and the bounded tables' overflows.

use super::datapath::DropReason;

/// Monotonic counters of one NIC's datapath.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Counters {
    pub tx_dropped_malformed: u64,
    pub tx_dropped_vlan: u64,
    pub tx_dropped_source_mac: u64,
    pub tx_dropped_source_ip: u64,
    pub tx_dropped_arp_spoof: u64,
    pub tx_dropped_arp_unsupported: u64,
    pub tx_dropped_ethertype: u64,
    pub tx_dropped_security_group: u64,
    pub tx_dropped_no_metadata: u64,
    pub rx_dropped_not_for_guest: u64,
    pub rx_dropped_security_group: u64,
    pub rx_dropped_malformed: u64,
    pub dhcp_offers: u64,
    pub dhcp_acks: u64,
    pub dhcp_naks: u64,
    pub dhcp_informs: u64,
    pub dhcp_releases: u64,
    pub dhcp_declines: u64,
    pub dhcp_dropped: u64,
    pub local_frames_dropped: u64,
    pub multicast_groups_full: u64,
}

/// Adds one to `counter`.
pub(crate) fn bump(counter: &mut u64) {
    *counter = counter.saturating_add(1);
}

impl Counters {
    /// Counts a frame from the guest dropped for `reason`.
    pub(crate) fn tx_drop(&mut self, reason: DropReason) {
        bump(match reason {
            // Only the destination check says "not for the guest"; were it
            // ever given for a frame from the guest, it is one nobody can
            // judge.
            DropReason::Malformed | DropReason::NotForGuest => &mut self.tx_dropped_malformed,
            DropReason::VlanTagged => &mut self.tx_dropped_vlan,
            DropReason::SourceMac => &mut self.tx_dropped_source_mac,
            DropReason::SourceIp => &mut self.tx_dropped_source_ip,
            DropReason::ArpSpoof => &mut self.tx_dropped_arp_spoof,
            DropReason::ArpUnsupported => &mut self.tx_dropped_arp_unsupported,
            DropReason::Ethertype => &mut self.tx_dropped_ethertype,
            DropReason::Dhcp => &mut self.dhcp_dropped,
            DropReason::SecurityGroup => &mut self.tx_dropped_security_group,
            DropReason::NoMetadata => &mut self.tx_dropped_no_metadata,
        });
    }

    /// Counts a frame for the guest dropped for `reason`.
    pub(crate) fn rx_drop(&mut self, reason: DropReason) {
        bump(match reason {
            DropReason::NotForGuest => &mut self.rx_dropped_not_for_guest,
            DropReason::SecurityGroup => &mut self.rx_dropped_security_group,
            // The destination check gives no other reason than these.
            DropReason::Malformed
            | DropReason::VlanTagged
            | DropReason::SourceMac
            | DropReason::SourceIp
            | DropReason::ArpSpoof
            | DropReason::ArpUnsupported
            | DropReason::Ethertype
            | DropReason::Dhcp
            | DropReason::NoMetadata => &mut self.rx_dropped_malformed,
        });
    }

    /// Reports every counter under its `snake_case` name.
    pub(crate) fn write(&self, out: &mut dyn FnMut(&'static str, u64)) {
        out("tx_dropped_malformed", self.tx_dropped_malformed);
        out("tx_dropped_vlan", self.tx_dropped_vlan);
        out("tx_dropped_source_mac", self.tx_dropped_source_mac);
        out("tx_dropped_source_ip", self.tx_dropped_source_ip);
        out("tx_dropped_arp_spoof", self.tx_dropped_arp_spoof);
        out(
            "tx_dropped_arp_unsupported",
            self.tx_dropped_arp_unsupported,
        );
        out("tx_dropped_ethertype", self.tx_dropped_ethertype);
        out("tx_dropped_security_group", self.tx_dropped_security_group);
        out("tx_dropped_no_metadata", self.tx_dropped_no_metadata);
        out("rx_dropped_not_for_guest", self.rx_dropped_not_for_guest);
        out("rx_dropped_security_group", self.rx_dropped_security_group);
        out("rx_dropped_malformed", self.rx_dropped_malformed);
        out("dhcp_offers", self.dhcp_offers);
        out("dhcp_acks", self.dhcp_acks);
        out("dhcp_naks", self.dhcp_naks);
        out("dhcp_informs", self.dhcp_informs);
        out("dhcp_releases", self.dhcp_releases);
        out("dhcp_declines", self.dhcp_declines);
        out("dhcp_dropped", self.dhcp_dropped);
        out("local_frames_dropped", self.local_frames_dropped);
        out("multicast_groups_full", self.multicast_groups_full);
    }
}
