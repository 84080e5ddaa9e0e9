//! [`Datapath`]: what happens to each frame of one NIC.

use std::net::{Ipv4Addr, Ipv6Addr};

use super::MacAddr;

/// Largest frame the datapath generates itself (an untagged Ethernet
/// frame at the default MTU, without FCS).
pub const MAX_LOCAL_FRAME: usize = 1514;

/// Who the NIC is, as the VMM was told at launch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NicIdentity {
    /// The guest's MAC address.
    pub mac: MacAddr,
    /// The guest's IPv4 address.
    pub ipv4: Ipv4Addr,
    /// Its prefix length (the subnet's netmask), 1..=30.
    pub prefix_len: u8,
    /// The subnet's router.
    pub gateway: Ipv4Addr,
    /// The guest's IPv6 address, if it has one (besides its link-local
    /// address, which is derived from the MAC).
    pub ipv6: Option<Ipv6Addr>,
    /// DNS servers offered by DHCP (none: the option is left out).
    pub dns: Vec<Ipv4Addr>,
    /// Host name offered by DHCP (EC2's `ip-10-0-0-5` form by default).
    pub hostname: String,
    /// Domain name offered by DHCP.
    pub domain: String,
    /// Interface MTU offered by DHCP.
    pub mtu: u16,
    /// DHCP lease time in seconds.
    pub lease_secs: u32,
    /// Whether the source/destination check is on (EC2's default).
    pub source_dest_check: bool,
}

/// What to do with a frame the guest sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FromGuest {
    /// Send it to the tap.
    Forward,
    /// The datapath answered or absorbed it (DHCP); nothing goes to the tap.
    Consumed,
    /// Drop it (already counted).
    Drop(DropReason),
}

/// What to do with a frame from the tap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ToGuest {
    /// Put it in the guest's RX queue.
    Deliver,
    /// Drop it (already counted).
    Drop(DropReason),
}

/// Why a frame was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// Too short or malformed to judge.
    Malformed,
}

/// One NIC's datapath state.
#[derive(Debug)]
pub struct Datapath {
    identity: NicIdentity,
}

impl Datapath {
    /// A datapath for the NIC `identity` describes.
    pub fn new(identity: NicIdentity) -> Self {
        Self { identity }
    }

    /// Who the NIC is.
    pub fn identity(&self) -> &NicIdentity {
        &self.identity
    }

    /// Judges an Ethernet frame (no virtio-net header) the guest sent.
    pub fn from_guest(&mut self, frame: &[u8]) -> FromGuest {
        if frame.len() < 14 {
            return FromGuest::Drop(DropReason::Malformed);
        }
        FromGuest::Forward
    }

    /// Judges an Ethernet frame (no virtio-net header) from the tap.
    pub fn to_guest(&mut self, frame: &[u8]) -> ToGuest {
        if frame.len() < 14 {
            return ToGuest::Drop(DropReason::Malformed);
        }
        ToGuest::Deliver
    }

    /// Whether the datapath has frames of its own for the guest.
    pub fn has_local_frames(&self) -> bool {
        false
    }

    /// Copies the oldest frame of the datapath's own into `buf` (at least
    /// [`MAX_LOCAL_FRAME`] bytes) and returns its length.
    pub fn pop_local_frame(&mut self, _buf: &mut [u8]) -> Option<usize> {
        None
    }

    /// Reports the datapath's counters (`snake_case`, only growing).
    pub fn write_metrics(&self, _out: &mut dyn FnMut(&'static str, u64)) {}
}
