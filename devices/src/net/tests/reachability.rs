//! The instance status check's ARP probes, through the datapath: the probe
//! reaches the guest's RX path, the guest's answer is taken out of its
//! traffic and counted, and probes never pile up in the local queue.

use super::*;
use crate::net::{FromGuest, Reachability, DHCP_SERVER_MAC};

/// The ARP reply Linux sends to a probe (sender 0.0.0.0): to the
/// prober's MAC and address 0.0.0.0, from the guest's own.
fn reply_to_probe(sender: (MacAddr, Ipv4Addr), to: MacAddr) -> Vec<u8> {
    let mut p = Vec::new();
    p.extend_from_slice(&[0, 1, 0x08, 0x00, 6, 4, 0, 2]);
    p.extend_from_slice(&sender.0 .0);
    p.extend_from_slice(&sender.1.octets());
    p.extend_from_slice(&to.0);
    p.extend_from_slice(&Ipv4Addr::UNSPECIFIED.octets());
    eth(to, sender.0, ETHERTYPE_ARP, &p)
}

fn gauges(dp: &Datapath) -> Vec<(&'static str, u64)> {
    let mut v = Vec::new();
    dp.write_gauges(&mut |name, n| v.push((name, n)));
    v
}

#[test]
fn the_guests_answer_makes_it_reachable_and_stays_off_the_wire() {
    let mut dp = datapath();
    assert_eq!(dp.reachability(), Reachability::NotYetAnswered);
    dp.probe_now();
    let frames = local_frames(&mut dp);
    assert_eq!(frames.len(), 1);
    let probe = &frames[0];
    assert_eq!(&probe[..6], &GUEST_MAC.0, "unicast to the guest");
    assert_eq!(&probe[6..12], &DHCP_SERVER_MAC.0);
    assert_eq!(&probe[12..14], &ETHERTYPE_ARP.to_be_bytes());
    assert_eq!(&probe[28..32], &[0, 0, 0, 0], "sender address 0.0.0.0");
    assert_eq!(&probe[38..42], &GUEST_IP.octets());

    let answer = reply_to_probe((GUEST_MAC, GUEST_IP), DHCP_SERVER_MAC);
    assert_eq!(dp.from_guest(&answer), FromGuest::Consumed);
    assert_eq!(dp.reachability(), Reachability::Reachable);
    assert_eq!(
        gauges(&dp),
        [("guest_reachable", 1), ("arp_probes_unanswered", 0)]
    );
    assert_eq!(
        nonzero(&dp),
        [("arp_probe_replies", 1), ("arp_probes_sent", 1)]
    );

    // The guest's other ARP replies still go out.
    let to_gateway = reply_to_probe((GUEST_MAC, GUEST_IP), OTHER_MAC);
    assert_eq!(dp.from_guest(&to_gateway), FromGuest::Forward);
}

#[test]
fn a_spoofed_answer_is_dropped_not_counted() {
    let mut dp = datapath();
    dp.probe_now();
    local_frames(&mut dp);
    let spoof = reply_to_probe((OTHER_MAC, GUEST_IP), DHCP_SERVER_MAC);
    assert_eq!(
        dp.from_guest(&spoof),
        FromGuest::Drop(crate::net::DropReason::SourceMac)
    );
    assert_eq!(dp.reachability(), Reachability::NotYetAnswered);
}

#[test]
fn probes_wait_for_the_guest_to_take_the_last_one() {
    let mut dp = datapath();
    dp.probe_now();
    // The guest posts no RX buffers: nothing is taken from the queue.
    for _ in 0..100 {
        dp.probe_now();
    }
    assert_eq!(local_frames(&mut dp).len(), 1);
    assert_eq!(
        nonzero(&dp),
        [("arp_probes_sent", 1)],
        "skipped probes are neither sent nor counted as unanswered"
    );
    assert_eq!(
        gauges(&dp),
        [("guest_reachable", 0), ("arp_probes_unanswered", 1)]
    );
}
