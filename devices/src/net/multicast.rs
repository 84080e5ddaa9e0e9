//! The multicast groups the guest listens to, learned by snooping the
//! membership reports it sends itself (IGMPv1/v2/v3 for IPv4, MLDv1/v2 for
//! IPv6).
//!
//! With the destination check on, a frame from the tap reaches the guest
//! only if it is addressed to the guest's MAC, to broadcast, or to a group
//! the guest joined. The guest tells the network which groups it wants
//! anyway (that is what reports are for), so the datapath reads those
//! reports on the way out instead of asking the VMM for a list.
//!
//! Groups are kept by IP address, not by MAC: 32 IPv4 groups share each
//! `01:00:5e` MAC, and leaving one of them must not deafen the guest to
//! the others. The set has a fixed capacity, so a guest cannot make the
//! VMM allocate by joining groups; joins past it are refused and counted.

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};

use super::frame::FrameError;
use super::MacAddr;

/// Most groups remembered per NIC.
pub(crate) const MAX_GROUPS: usize = 64;

/// `01:00:5e:00:00:01`, the MAC of 224.0.0.1 (all hosts).
pub(crate) const ALL_HOSTS_MAC: MacAddr = MacAddr([0x01, 0x00, 0x5e, 0x00, 0x00, 0x01]);
/// `33:33:00:00:00:01`, the MAC of ff02::1 (all nodes).
pub(crate) const ALL_NODES_MAC: MacAddr = MacAddr([0x33, 0x33, 0x00, 0x00, 0x00, 0x01]);

/// IGMPv1 membership report.
const IGMP_V1_REPORT: u8 = 0x12;
/// IGMPv2 membership report.
const IGMP_V2_REPORT: u8 = 0x16;
/// IGMPv2 leave group.
const IGMP_LEAVE: u8 = 0x17;
/// IGMPv3 membership report.
const IGMP_V3_REPORT: u8 = 0x22;

/// ICMPv6 type of an MLDv1 listener report.
pub(crate) const MLD_V1_REPORT: u8 = 131;
/// ICMPv6 type of an MLDv1 listener done.
pub(crate) const MLD_DONE: u8 = 132;
/// ICMPv6 type of an MLDv2 listener report.
pub(crate) const MLD_V2_REPORT: u8 = 143;

/// A multicast group, by IP address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Group {
    /// An IPv4 group (224.0.0.0/4).
    V4(Ipv4Addr),
    /// An IPv6 group (ff00::/8).
    V6(Ipv6Addr),
}

impl Group {
    /// The Ethernet address frames to this group are sent to (RFC 1112
    /// §6.4: `01:00:5e` and the low 23 bits; RFC 2464 §7: `33:33` and the
    /// low 32 bits).
    pub(crate) fn mac(self) -> MacAddr {
        match self {
            Group::V4(addr) => {
                let [_, b, c, d] = addr.octets();
                MacAddr([0x01, 0x00, 0x5e, b & 0x7f, c, d])
            }
            Group::V6(addr) => {
                let [.., a, b, c, d] = addr.octets();
                MacAddr([0x33, 0x33, a, b, c, d])
            }
        }
    }

    fn is_multicast(self) -> bool {
        match self {
            Group::V4(addr) => addr.is_multicast(),
            Group::V6(addr) => addr.is_multicast(),
        }
    }
}

/// The MAC of the solicited-node group of `addr` (ff02::1:ffXX:XXXX, RFC
/// 4291 §2.7.1), which neighbor solicitations for `addr` are sent to.
pub(crate) fn solicited_node_mac(addr: Ipv6Addr) -> MacAddr {
    let [.., a, b, c] = addr.octets();
    MacAddr([0x33, 0x33, 0xff, a, b, c])
}

/// A change a report makes to what the guest listens to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Membership {
    Join(Group),
    Leave(Group),
}

/// What snooping one report did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Snooped {
    /// Joins refused because the set was full.
    pub refused: u64,
}

/// The groups the guest joined, at most [`MAX_GROUPS`].
pub(crate) struct GroupSet {
    groups: [Group; MAX_GROUPS],
    len: usize,
}

impl fmt::Debug for GroupSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.joined()).finish()
    }
}

impl GroupSet {
    /// An empty set.
    pub(crate) fn new() -> Self {
        Self {
            groups: [Group::V4(Ipv4Addr::UNSPECIFIED); MAX_GROUPS],
            len: 0,
        }
    }

    fn joined(&self) -> &[Group] {
        self.groups.get(..self.len).unwrap_or(&[])
    }

    /// How many groups the guest is in.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Whether `group` is in the set.
    #[cfg(test)]
    pub(crate) fn contains(&self, group: Group) -> bool {
        self.joined().contains(&group)
    }

    /// Whether frames to `mac` belong to a group the guest joined.
    pub(crate) fn has_mac(&self, mac: MacAddr) -> bool {
        self.joined().iter().any(|group| group.mac() == mac)
    }

    /// Adds `group`; `false` if the set is full (a group already in it is
    /// fine, and addresses that are not multicast are ignored).
    fn join(&mut self, group: Group) -> bool {
        if !group.is_multicast() || self.joined().contains(&group) {
            return true;
        }
        match self.groups.get_mut(self.len) {
            Some(slot) => {
                *slot = group;
                self.len += 1;
                true
            }
            None => false,
        }
    }

    /// Removes `group` if it is in the set.
    fn leave(&mut self, group: Group) {
        if let Some(at) = self.joined().iter().position(|g| *g == group) {
            let last = self.len - 1;
            self.groups.swap(at, last);
            self.len = last;
        }
    }

    fn apply(&mut self, change: Membership, snooped: &mut Snooped) {
        match change {
            Membership::Join(group) => {
                if !self.join(group) {
                    snooped.refused += 1;
                }
            }
            Membership::Leave(group) => self.leave(group),
        }
    }

    /// Learns from the IGMP message `message` the guest sent. Other IGMP
    /// messages than reports and leaves change nothing. A malformed
    /// report changes nothing either.
    pub(crate) fn snoop_igmp(&mut self, message: &[u8]) -> Result<Snooped, FrameError> {
        walk_igmp(message, &mut |_| {})?;
        let mut snooped = Snooped::default();
        walk_igmp(message, &mut |change| self.apply(change, &mut snooped))?;
        Ok(snooped)
    }

    /// Learns from the MLD message (an ICMPv6 message) the guest sent.
    /// Other ICMPv6 messages change nothing; neither does a malformed
    /// report.
    pub(crate) fn snoop_mld(&mut self, message: &[u8]) -> Result<Snooped, FrameError> {
        walk_mld(message, &mut |_| {})?;
        let mut snooped = Snooped::default();
        walk_mld(message, &mut |change| self.apply(change, &mut snooped))?;
        Ok(snooped)
    }
}

fn truncated(layer: &'static str, need: usize, have: usize) -> FrameError {
    FrameError::Truncated { layer, need, have }
}

/// Splits `N` bytes off the front of `buf`.
fn take<'a, const N: usize>(
    buf: &'a [u8],
    layer: &'static str,
) -> Result<(&'a [u8; N], &'a [u8]), FrameError> {
    buf.split_first_chunk::<N>()
        .ok_or(truncated(layer, N, buf.len()))
}

/// Calls `each` for the membership changes of an IGMP message (RFC 1112,
/// RFC 2236, RFC 3376 §4.2).
fn walk_igmp(message: &[u8], each: &mut dyn FnMut(Membership)) -> Result<(), FrameError> {
    let Some(&kind) = message.first() else {
        return Err(truncated("IGMP", 8, 0));
    };
    if ![IGMP_V1_REPORT, IGMP_V2_REPORT, IGMP_LEAVE, IGMP_V3_REPORT].contains(&kind) {
        return Ok(());
    }
    let (&[_, _, _, _, b0, b1, b2, b3], records) = take::<8>(message, "IGMP")?;
    match kind {
        IGMP_V1_REPORT | IGMP_V2_REPORT => {
            each(Membership::Join(Group::V4(Ipv4Addr::new(b0, b1, b2, b3))))
        }
        IGMP_LEAVE => each(Membership::Leave(Group::V4(Ipv4Addr::new(b0, b1, b2, b3)))),
        _ => {
            // Version 3: bytes 4..6 reserved, 6..8 the number of records.
            let count = u16::from_be_bytes([b2, b3]);
            walk_records::<4>(records, count, "IGMPv3 record", &mut |record, group| {
                each_change(record, Group::V4(Ipv4Addr::from(group)), each)
            })?;
        }
    }
    Ok(())
}

/// Calls `each` for the membership changes of an MLD message (RFC 2710,
/// RFC 3810 §5.2).
fn walk_mld(message: &[u8], each: &mut dyn FnMut(Membership)) -> Result<(), FrameError> {
    let Some(&kind) = message.first() else {
        return Err(truncated("ICMPv6", 1, 0));
    };
    match kind {
        MLD_V1_REPORT | MLD_DONE => {
            let (_, rest) = take::<8>(message, "MLD")?;
            let (group, _) = take::<16>(rest, "MLD")?;
            let group = Group::V6(Ipv6Addr::from(*group));
            each(if kind == MLD_DONE {
                Membership::Leave(group)
            } else {
                Membership::Join(group)
            });
        }
        MLD_V2_REPORT => {
            let (&[.., c0, c1], records) = take::<8>(message, "MLDv2")?;
            let count = u16::from_be_bytes([c0, c1]);
            walk_records::<16>(records, count, "MLDv2 record", &mut |record, group| {
                each_change(record, Group::V6(Ipv6Addr::from(group)), each)
            })?;
        }
        _ => {}
    }
    Ok(())
}

/// The record type and source count of a version-3 report record.
#[derive(Debug, Clone, Copy)]
struct RecordHead {
    kind: u8,
    sources: u16,
}

/// Walks `count` IGMPv3/MLDv2 group records whose addresses are `A`
/// bytes long: type, aux length (in 32-bit words), source count, group
/// address, sources, aux data.
fn walk_records<const A: usize>(
    records: &[u8],
    count: u16,
    layer: &'static str,
    each: &mut dyn FnMut(RecordHead, [u8; A]),
) -> Result<(), FrameError> {
    let mut rest = records;
    for _ in 0..count {
        let (&[kind, aux_words, s0, s1], after) = take::<4>(rest, layer)?;
        let (group, after) = take::<A>(after, layer)?;
        let sources = u16::from_be_bytes([s0, s1]);
        let skip = usize::from(sources) * A + usize::from(aux_words) * 4;
        rest = after
            .get(skip..)
            .ok_or(truncated(layer, skip, after.len()))?;
        each(RecordHead { kind, sources }, *group);
    }
    Ok(())
}

/// The change a version-3 record makes (RFC 3376 §4.2.12, RFC 3810
/// §5.2.12). Filtering is by MAC here, so source lists only matter in
/// that an empty INCLUDE means "not listening".
fn each_change(record: RecordHead, group: Group, each: &mut dyn FnMut(Membership)) {
    match record.kind {
        // MODE_IS_INCLUDE / CHANGE_TO_INCLUDE_MODE with no sources: leave.
        1 | 3 if record.sources == 0 => each(Membership::Leave(group)),
        // Any include list, EXCLUDE (any-source) or ALLOW_NEW_SOURCES.
        1..=5 => each(Membership::Join(group)),
        // BLOCK_OLD_SOURCES may or may not empty the list: keep listening.
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v4(s: &str) -> Group {
        Group::V4(s.parse().unwrap())
    }

    fn v6(s: &str) -> Group {
        Group::V6(s.parse().unwrap())
    }

    fn igmp_v2(kind: u8, group: &str) -> Vec<u8> {
        let mut m = vec![kind, 0, 0, 0];
        m.extend_from_slice(&group.parse::<Ipv4Addr>().unwrap().octets());
        m
    }

    /// An IGMPv3 report of `(record type, group, sources)` records.
    fn igmp_v3(records: &[(u8, &str, u16)]) -> Vec<u8> {
        let mut m = vec![IGMP_V3_REPORT, 0, 0, 0, 0, 0];
        m.extend_from_slice(&u16::try_from(records.len()).unwrap().to_be_bytes());
        for &(kind, group, sources) in records {
            m.extend_from_slice(&[kind, 1]);
            m.extend_from_slice(&sources.to_be_bytes());
            m.extend_from_slice(&group.parse::<Ipv4Addr>().unwrap().octets());
            for i in 0..sources {
                m.extend_from_slice(&[10, 0, 0, u8::try_from(i).unwrap()]);
            }
            m.extend_from_slice(&[0xee; 4]); // one word of aux data
        }
        m
    }

    fn mld_v1(kind: u8, group: &str) -> Vec<u8> {
        let mut m = vec![kind, 0, 0, 0, 0, 0, 0, 0];
        m.extend_from_slice(&group.parse::<Ipv6Addr>().unwrap().octets());
        m
    }

    fn mld_v2(records: &[(u8, &str, u16)]) -> Vec<u8> {
        let mut m = vec![MLD_V2_REPORT, 0, 0, 0, 0, 0];
        m.extend_from_slice(&u16::try_from(records.len()).unwrap().to_be_bytes());
        for &(kind, group, sources) in records {
            m.extend_from_slice(&[kind, 0]);
            m.extend_from_slice(&sources.to_be_bytes());
            m.extend_from_slice(&group.parse::<Ipv6Addr>().unwrap().octets());
            for _ in 0..sources {
                m.extend_from_slice(&"2001:db8::1".parse::<Ipv6Addr>().unwrap().octets());
            }
        }
        m
    }

    #[test]
    fn group_macs() {
        assert_eq!(
            v4("224.0.0.251").mac().0,
            [0x01, 0x00, 0x5e, 0x00, 0x00, 0xfb]
        );
        // The 24th bit from the end is dropped.
        assert_eq!(
            v4("239.129.2.3").mac().0,
            [0x01, 0x00, 0x5e, 0x01, 0x02, 0x03]
        );
        assert_eq!(v6("ff02::fb").mac().0, [0x33, 0x33, 0x00, 0x00, 0x00, 0xfb]);
        assert_eq!(
            v6("ff05::1:3").mac().0,
            [0x33, 0x33, 0x00, 0x01, 0x00, 0x03]
        );
        assert_eq!(
            solicited_node_mac("fe80::ff:fe12:3456".parse().unwrap()).0,
            [0x33, 0x33, 0xff, 0x12, 0x34, 0x56]
        );
    }

    #[test]
    fn igmp_v2_join_and_leave() {
        let mut set = GroupSet::new();
        set.snoop_igmp(&igmp_v2(IGMP_V2_REPORT, "239.1.2.3"))
            .unwrap();
        set.snoop_igmp(&igmp_v2(IGMP_V1_REPORT, "224.0.0.251"))
            .unwrap();
        assert!(set.contains(v4("239.1.2.3")) && set.contains(v4("224.0.0.251")));
        assert!(set.has_mac(MacAddr([0x01, 0x00, 0x5e, 0x01, 0x02, 0x03])));
        set.snoop_igmp(&igmp_v2(IGMP_LEAVE, "239.1.2.3")).unwrap();
        assert!(!set.has_mac(MacAddr([0x01, 0x00, 0x5e, 0x01, 0x02, 0x03])));
        assert_eq!(set.len(), 1);
        // Queries and unknown types change nothing; unicast "groups" neither.
        set.snoop_igmp(&igmp_v2(0x11, "239.9.9.9")).unwrap();
        set.snoop_igmp(&igmp_v2(IGMP_V2_REPORT, "10.0.0.1"))
            .unwrap();
        assert_eq!(set.len(), 1);
    }

    #[test]
    fn groups_sharing_a_mac_are_kept_apart() {
        let mut set = GroupSet::new();
        set.snoop_igmp(&igmp_v2(IGMP_V2_REPORT, "239.1.2.3"))
            .unwrap();
        set.snoop_igmp(&igmp_v2(IGMP_V2_REPORT, "224.1.2.3"))
            .unwrap();
        set.snoop_igmp(&igmp_v2(IGMP_LEAVE, "224.1.2.3")).unwrap();
        assert!(set.has_mac(v4("239.1.2.3").mac()));
    }

    #[test]
    fn igmp_v3_records() {
        let mut set = GroupSet::new();
        let report = igmp_v3(&[
            (2, "239.0.0.1", 0),
            (1, "239.0.0.2", 2),
            (5, "239.0.0.3", 1),
            (6, "239.0.0.4", 1),
        ]);
        set.snoop_igmp(&report).unwrap();
        assert!(set.contains(v4("239.0.0.1")));
        assert!(set.contains(v4("239.0.0.2")));
        assert!(set.contains(v4("239.0.0.3")));
        assert!(!set.contains(v4("239.0.0.4")));
        // TO_IN({}) leaves; BLOCK keeps.
        set.snoop_igmp(&igmp_v3(&[(3, "239.0.0.1", 0), (6, "239.0.0.2", 2)]))
            .unwrap();
        assert!(!set.contains(v4("239.0.0.1")));
        assert!(set.contains(v4("239.0.0.2")));
    }

    #[test]
    fn truncated_reports_change_nothing() {
        let report = igmp_v3(&[(2, "239.0.0.1", 0), (4, "239.0.0.2", 3)]);
        for len in 0..report.len() {
            let mut set = GroupSet::new();
            assert!(set.snoop_igmp(&report[..len]).is_err(), "{len}");
            assert_eq!(set.len(), 0, "{len}");
        }
        let report = mld_v2(&[(2, "ff02::fb", 0), (4, "ff05::2", 2)]);
        for len in 0..report.len() {
            let mut set = GroupSet::new();
            assert!(set.snoop_mld(&report[..len]).is_err(), "{len}");
            assert_eq!(set.len(), 0, "{len}");
        }
        // A record count far beyond the bytes present.
        let mut report = igmp_v3(&[(2, "239.0.0.1", 0)]);
        report[6..8].copy_from_slice(&u16::MAX.to_be_bytes());
        assert!(GroupSet::new().snoop_igmp(&report).is_err());
    }

    #[test]
    fn mld_v1_and_v2() {
        let mut set = GroupSet::new();
        set.snoop_mld(&mld_v1(MLD_V1_REPORT, "ff02::fb")).unwrap();
        set.snoop_mld(&mld_v2(&[(4, "ff02::1:ff00:5", 0), (2, "ff05::1:3", 0)]))
            .unwrap();
        assert_eq!(set.len(), 3);
        assert!(set.has_mac(MacAddr([0x33, 0x33, 0xff, 0x00, 0x00, 0x05])));
        set.snoop_mld(&mld_v1(MLD_DONE, "ff02::fb")).unwrap();
        set.snoop_mld(&mld_v2(&[(3, "ff05::1:3", 0)])).unwrap();
        assert_eq!(set.len(), 1);
        // Not MLD: nothing happens.
        set.snoop_mld(&[135, 0, 0, 0]).unwrap();
        assert_eq!(set.len(), 1);
    }

    #[test]
    fn joins_past_capacity_are_refused() {
        let mut set = GroupSet::new();
        for i in 0..MAX_GROUPS {
            let group = format!("239.0.0.{i}");
            assert_eq!(
                set.snoop_igmp(&igmp_v2(IGMP_V2_REPORT, &group))
                    .unwrap()
                    .refused,
                0
            );
        }
        // Joining a group already there is fine; a new one is refused.
        assert_eq!(
            set.snoop_igmp(&igmp_v2(IGMP_V2_REPORT, "239.0.0.0"))
                .unwrap()
                .refused,
            0
        );
        let full = set
            .snoop_mld(&mld_v2(&[(2, "ff02::fb", 0), (2, "ff02::fc", 0)]))
            .unwrap();
        assert_eq!(full.refused, 2);
        assert_eq!(set.len(), MAX_GROUPS);
        assert!(!set.has_mac(v6("ff02::fb").mac()));
        // Leaving makes room again.
        set.snoop_igmp(&igmp_v2(IGMP_LEAVE, "239.0.0.7")).unwrap();
        assert_eq!(
            set.snoop_mld(&mld_v1(MLD_V1_REPORT, "ff02::fb"))
                .unwrap()
                .refused,
            0
        );
        assert!(set.has_mac(v6("ff02::fb").mac()));
    }
}
