//! EC2's instance status check, answered from inside the NIC: every few
//! seconds the datapath asks the guest for its own address by ARP and
//! watches for the answer, as EC2's hypervisor does. A guest whose kernel
//! is alive and whose interface is up answers; a hung, crashed or
//! misconfigured one does not.
//!
//! The probe is an RFC 5227 ARP probe (sender address 0.0.0.0) sent to the
//! guest's MAC from the datapath's own MAC: a probe teaches the guest's
//! neighbour cache nothing (a request from the gateway's address would
//! overwrite the gateway's real MAC there), and operating systems answer
//! it with a reply to the prober's MAC, which the datapath takes out of
//! the guest's traffic instead of letting it reach the bridge.
//!
//! Nothing here reads a clock: the caller passes monotonic milliseconds,
//! so the timing is unit-tested without waiting.

use std::net::Ipv4Addr;

use super::datapath::{NicIdentity, MAX_LOCAL_FRAME};
use super::frame::{
    ethernet_header, Arp, FrameError, Writer, ARP_HTYPE_ETHERNET, ETHERTYPE_ARP, ETHERTYPE_IPV4,
};
use super::{MacAddr, DHCP_SERVER_MAC};

/// How often the guest is probed.
pub(crate) const PROBE_INTERVAL_MS: u64 = 5_000;

/// Probes in a row a reachable guest may leave unanswered: the one just
/// sent (its answer takes a moment) and one lost.
pub(crate) const UNANSWERED_LIMIT: u64 = 3;

/// The prober's MAC: the datapath's own (DHCP and metadata use it too).
pub(crate) const PROBE_MAC: MacAddr = DHCP_SERVER_MAC;

/// ARP operation codes (RFC 826).
const ARP_REQUEST: u16 = 1;
const ARP_REPLY: u16 = 2;

/// What the probes say about the guest right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reachability {
    /// It has never answered: still booting, or never will.
    NotYetAnswered,
    /// It answered one of the last [`UNANSWERED_LIMIT`] probes.
    Reachable,
    /// It answered before but not the last [`UNANSWERED_LIMIT`] probes.
    Unreachable,
}

/// The probing state of one NIC.
#[derive(Debug, Clone)]
pub(crate) struct Prober {
    next_probe_ms: u64,
    sent: u64,
    replies: u64,
    /// Probes sent since the last answer.
    unanswered: u64,
}

impl Prober {
    /// A prober whose first probe goes out one interval after `now_ms`:
    /// no guest answers in its first seconds.
    pub(crate) fn new(now_ms: u64) -> Self {
        Self {
            next_probe_ms: now_ms.saturating_add(PROBE_INTERVAL_MS),
            sent: 0,
            replies: 0,
            unanswered: 0,
        }
    }

    /// When the next probe is due (monotonic ms).
    pub(crate) fn next_deadline_ms(&self) -> u64 {
        self.next_probe_ms
    }

    /// Whether a probe is due at `now_ms`.
    pub(crate) fn due(&self, now_ms: u64) -> bool {
        now_ms >= self.next_probe_ms
    }

    /// Writes a probe for `identity`'s guest into `slot` and counts it;
    /// the next one is due an interval after `now_ms`. Returns the frame's
    /// length.
    pub(crate) fn write_probe(
        &mut self,
        now_ms: u64,
        identity: &NicIdentity,
        slot: &mut [u8; MAX_LOCAL_FRAME],
    ) -> Result<usize, FrameError> {
        self.next_probe_ms = now_ms.saturating_add(PROBE_INTERVAL_MS);
        let len = write_arp_probe(identity.mac, identity.ipv4, slot)?;
        self.sent = self.sent.saturating_add(1);
        self.unanswered = self.unanswered.saturating_add(1);
        Ok(len)
    }

    /// Schedules the next probe after a failed one (no room to queue it):
    /// it is not counted as sent, so it cannot make the guest look
    /// unreachable.
    pub(crate) fn skip(&mut self, now_ms: u64) {
        self.next_probe_ms = now_ms.saturating_add(PROBE_INTERVAL_MS);
    }

    /// Whether `arp`, sent by the guest, answers a probe: a reply to the
    /// prober's MAC and address 0.0.0.0 from the guest's own MAC and
    /// address. Counts it if so.
    pub(crate) fn take_reply(&mut self, arp: &Arp, identity: &NicIdentity) -> bool {
        let answers = arp.oper == ARP_REPLY
            && arp.target_mac == PROBE_MAC
            && arp.target_ip.is_unspecified()
            && arp.sender_mac == identity.mac
            && arp.sender_ip == identity.ipv4;
        if answers {
            self.replies = self.replies.saturating_add(1);
            self.unanswered = 0;
        }
        answers
    }

    /// What the probes say now.
    pub(crate) fn reachability(&self) -> Reachability {
        if self.replies == 0 {
            Reachability::NotYetAnswered
        } else if self.unanswered < UNANSWERED_LIMIT {
            Reachability::Reachable
        } else {
            Reachability::Unreachable
        }
    }

    /// Reports the counters (monotonic) under their metric names.
    pub(crate) fn write_counters(&self, out: &mut dyn FnMut(&'static str, u64)) {
        out("arp_probes_sent", self.sent);
        out("arp_probe_replies", self.replies);
    }

    /// Reports the current state (gauges) under their metric names.
    pub(crate) fn write_gauges(&self, out: &mut dyn FnMut(&'static str, u64)) {
        out(
            "guest_reachable",
            u64::from(self.reachability() == Reachability::Reachable),
        );
        out("arp_probes_unanswered", self.unanswered);
    }
}

/// An ARP probe (RFC 5227 §2.1.1: sender address 0.0.0.0, target hardware
/// address zero) for `target_ip`, sent to `target_mac` from [`PROBE_MAC`].
fn write_arp_probe(
    target_mac: MacAddr,
    target_ip: Ipv4Addr,
    slot: &mut [u8],
) -> Result<usize, FrameError> {
    let mut w = Writer::new(slot);
    w.put(&ethernet_header(target_mac, PROBE_MAC, ETHERTYPE_ARP))?;
    w.put(&ARP_HTYPE_ETHERNET.to_be_bytes())?;
    w.put(&ETHERTYPE_IPV4.to_be_bytes())?;
    w.put(&[6, 4])?;
    w.put(&ARP_REQUEST.to_be_bytes())?;
    w.put(&PROBE_MAC.0)?;
    w.put(&Ipv4Addr::UNSPECIFIED.octets())?;
    w.put(&[0; 6])?;
    w.put(&target_ip.octets())?;
    Ok(w.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::frame::{ArpKind, Ethernet};

    fn identity() -> NicIdentity {
        NicIdentity {
            mac: MacAddr([0x02, 0, 10, 0, 0, 5]),
            ipv4: Ipv4Addr::new(10, 0, 0, 5),
            prefix_len: 24,
            gateway: Ipv4Addr::new(10, 0, 0, 1),
            ipv6: None,
            dns: Vec::new(),
            hostname: "ip-10-0-0-5".into(),
            domain: "ec2.internal".into(),
            mtu: 1500,
            lease_secs: 3600,
            source_dest_check: true,
        }
    }

    fn probe(p: &mut Prober, now: u64) -> Vec<u8> {
        let mut slot = [0; MAX_LOCAL_FRAME];
        let n = p.write_probe(now, &identity(), &mut slot).unwrap();
        slot[..n].to_vec()
    }

    /// What Linux answers to a probe (`arp_process`, sender 0.0.0.0).
    fn linux_reply(id: &NicIdentity) -> Arp {
        Arp {
            oper: ARP_REPLY,
            sender_mac: id.mac,
            sender_ip: id.ipv4,
            target_mac: PROBE_MAC,
            target_ip: Ipv4Addr::UNSPECIFIED,
        }
    }

    #[test]
    fn the_probe_is_an_rfc_5227_probe_to_the_guest() {
        let mut p = Prober::new(0);
        let frame = probe(&mut p, 5_000);
        // An Ethernet header and an Ethernet/IPv4 ARP packet.
        assert_eq!(frame.len(), 14 + 28);
        let eth = Ethernet::parse(&frame).unwrap();
        assert_eq!(eth.dst, identity().mac);
        assert_eq!(eth.src, PROBE_MAC);
        assert_eq!(eth.ethertype, ETHERTYPE_ARP);
        assert!(ArpKind::parse(eth.payload).unwrap().is_ethernet_ipv4());
        let arp = Arp::parse(eth.payload).unwrap();
        assert_eq!(arp.oper, ARP_REQUEST);
        assert_eq!(arp.sender_mac, PROBE_MAC);
        assert!(arp.sender_ip.is_unspecified());
        assert_eq!(arp.target_mac, MacAddr([0; 6]));
        assert_eq!(arp.target_ip, identity().ipv4);
    }

    #[test]
    fn probes_go_out_once_per_interval_from_the_first_interval() {
        let mut p = Prober::new(1_000);
        assert!(!p.due(1_000));
        assert!(!p.due(5_999));
        assert!(p.due(6_000));
        probe(&mut p, 6_010);
        assert_eq!(p.next_deadline_ms(), 11_010);
        assert!(!p.due(11_000));
        p.skip(11_010);
        assert_eq!(p.next_deadline_ms(), 16_010);
        let mut sent = 0;
        p.write_counters(&mut |name, v| {
            if name == "arp_probes_sent" {
                sent = v;
            }
        });
        assert_eq!(sent, 1, "a skipped probe is not counted");
    }

    #[test]
    fn answered_within_the_limit_is_reachable_then_unreachable() {
        let id = identity();
        let mut p = Prober::new(0);
        assert_eq!(p.reachability(), Reachability::NotYetAnswered);
        for i in 1..=5 {
            probe(&mut p, i * PROBE_INTERVAL_MS);
        }
        // Five probes, never answered: still "not yet", not "unreachable".
        assert_eq!(p.reachability(), Reachability::NotYetAnswered);
        assert!(p.take_reply(&linux_reply(&id), &id));
        assert_eq!(p.reachability(), Reachability::Reachable);
        probe(&mut p, 30_000);
        probe(&mut p, 35_000);
        assert_eq!(p.reachability(), Reachability::Reachable);
        probe(&mut p, 40_000);
        assert_eq!(p.reachability(), Reachability::Unreachable);
        let mut gauges = Vec::new();
        p.write_gauges(&mut |name, v| gauges.push((name, v)));
        assert_eq!(
            gauges,
            [("guest_reachable", 0), ("arp_probes_unanswered", 3)]
        );
        assert!(p.take_reply(&linux_reply(&id), &id));
        assert_eq!(p.reachability(), Reachability::Reachable);
    }

    #[test]
    fn only_the_guests_own_reply_to_the_prober_counts() {
        let id = identity();
        let mut p = Prober::new(0);
        let good = linux_reply(&id);
        let variants = [
            Arp {
                oper: ARP_REQUEST,
                ..good
            },
            Arp {
                target_mac: MacAddr([2, 0, 0, 0, 0, 9]),
                ..good
            },
            Arp {
                target_ip: id.gateway,
                ..good
            },
            Arp {
                sender_ip: Ipv4Addr::new(10, 0, 0, 6),
                ..good
            },
            Arp {
                sender_mac: MacAddr([2, 0, 0, 0, 0, 7]),
                ..good
            },
        ];
        for arp in variants {
            assert!(!p.take_reply(&arp, &id), "{arp:?}");
        }
        assert_eq!(p.reachability(), Reachability::NotYetAnswered);
        assert!(p.take_reply(&good, &id));
    }
}
