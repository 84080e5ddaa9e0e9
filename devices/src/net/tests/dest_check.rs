//! The destination check on frames for the guest, and the multicast
//! groups learned from the guest's reports.

use super::*;
use crate::net::{DropReason, FromGuest, ToGuest};

const IGMP: u8 = 2;

fn to(dst: MacAddr) -> Vec<u8> {
    eth(
        dst,
        OTHER_MAC,
        ETHERTYPE_IPV4,
        &ipv4_packet(GATEWAY, GUEST_IP, 6, &[0; 20]),
    )
}

fn v4_group_mac(group: Ipv4Addr) -> MacAddr {
    let [_, b, c, d] = group.octets();
    MacAddr([0x01, 0x00, 0x5e, b & 0x7f, c, d])
}

fn igmp_frame(src: Ipv4Addr, kind: u8, group: Ipv4Addr) -> Vec<u8> {
    let dst = if kind == 0x17 {
        Ipv4Addr::new(224, 0, 0, 2)
    } else {
        group
    };
    eth(
        v4_group_mac(dst),
        GUEST_MAC,
        ETHERTYPE_IPV4,
        &ipv4_packet(src, dst, IGMP, &igmp(kind, group)),
    )
}

#[test]
fn delivers_what_is_addressed_to_the_guest() {
    let mut dp = datapath();
    let always = [
        GUEST_MAC,
        MacAddr::BROADCAST,
        MacAddr([0x33, 0x33, 0, 0, 0, 1]),
        MacAddr([0x01, 0x00, 0x5e, 0, 0, 1]),
        // Solicited-node groups of fe80::ff:fe00:5 and 2001:db8::5: the
        // same low 24 bits here…
        MacAddr([0x33, 0x33, 0xff, 0x00, 0x00, 0x05]),
    ];
    for dst in always {
        assert_eq!(dp.to_guest(&to(dst)), ToGuest::Deliver, "{dst}");
    }
    let refused = [
        OTHER_MAC,
        MacAddr([0x33, 0x33, 0, 0, 0, 2]),
        MacAddr([0x33, 0x33, 0xff, 0x00, 0x00, 0x09]),
        MacAddr([0x01, 0x00, 0x5e, 0, 0, 0xfb]),
        MacAddr([0x01, 0x80, 0xc2, 0, 0, 0]),
    ];
    for dst in refused {
        assert_eq!(
            dp.to_guest(&to(dst)),
            ToGuest::Drop(DropReason::NotForGuest),
            "{dst}"
        );
    }
    assert_eq!(
        dp.to_guest(&to(GUEST_MAC)[..13]),
        ToGuest::Drop(DropReason::Malformed)
    );
    assert_eq!(
        nonzero(&dp),
        [("rx_dropped_malformed", 1), ("rx_dropped_not_for_guest", 5)]
    );

    // …and different ones when the addresses differ.
    let mut dp = Datapath::new(NicIdentity {
        ipv6: Some("2001:db8::1:2345:6789".parse().unwrap()),
        ..identity()
    });
    for dst in [
        [0x33, 0x33, 0xff, 0x00, 0x00, 0x05],
        [0x33, 0x33, 0xff, 0x45, 0x67, 0x89],
    ] {
        assert_eq!(dp.to_guest(&to(MacAddr(dst))), ToGuest::Deliver);
    }
}

#[test]
fn without_the_check_everything_well_formed_is_delivered() {
    let mut dp = unchecked_datapath();
    assert_eq!(dp.to_guest(&to(OTHER_MAC)), ToGuest::Deliver);
    assert_eq!(
        dp.to_guest(&to(MacAddr([0x01, 0x00, 0x5e, 0, 0, 0xfb]))),
        ToGuest::Deliver
    );
    assert_eq!(dp.to_guest(&[0; 14]), ToGuest::Deliver);
    assert_eq!(dp.to_guest(&[0; 5]), ToGuest::Drop(DropReason::Malformed));
}

#[test]
fn igmp_joins_and_leaves_open_and_close_groups() {
    let mut dp = datapath();
    let group = Ipv4Addr::new(239, 1, 2, 3);
    let mac = v4_group_mac(group);
    assert_eq!(
        dp.to_guest(&to(mac)),
        ToGuest::Drop(DropReason::NotForGuest)
    );
    assert_eq!(
        dp.from_guest(&igmp_frame(GUEST_IP, 0x16, group)),
        FromGuest::Forward
    );
    assert_eq!(dp.to_guest(&to(mac)), ToGuest::Deliver);
    assert_eq!(
        dp.from_guest(&igmp_frame(GUEST_IP, 0x17, group)),
        FromGuest::Forward
    );
    assert_eq!(
        dp.to_guest(&to(mac)),
        ToGuest::Drop(DropReason::NotForGuest)
    );
}

#[test]
fn igmpv3_report_from_no_address_is_learned_but_not_forwarded() {
    let mut dp = datapath();
    let group = Ipv4Addr::new(224, 0, 0, 251);
    // One EXCLUDE({}) record: join.
    let mut report = vec![0x22, 0, 0, 0, 0, 0, 0, 1, 4, 0, 0, 0];
    report.extend_from_slice(&group.octets());
    let dst = Ipv4Addr::new(224, 0, 0, 22);
    let frame = |src| {
        eth(
            v4_group_mac(dst),
            GUEST_MAC,
            ETHERTYPE_IPV4,
            &ipv4_packet(src, dst, IGMP, &report),
        )
    };
    assert_eq!(
        dp.from_guest(&frame(Ipv4Addr::UNSPECIFIED)),
        FromGuest::Drop(DropReason::SourceIp)
    );
    assert_eq!(dp.to_guest(&to(v4_group_mac(group))), ToGuest::Deliver);
    assert_eq!(dp.from_guest(&frame(GUEST_IP)), FromGuest::Forward);
}

#[test]
fn reports_from_spoofed_sources_teach_nothing() {
    let mut dp = datapath();
    let group = Ipv4Addr::new(239, 9, 9, 9);
    assert_eq!(
        dp.from_guest(&igmp_frame(OTHER_IP, 0x16, group)),
        FromGuest::Drop(DropReason::SourceIp)
    );
    let mut from_other_mac = igmp_frame(GUEST_IP, 0x16, group);
    from_other_mac[6..12].copy_from_slice(&OTHER_MAC.0);
    assert_eq!(
        dp.from_guest(&from_other_mac),
        FromGuest::Drop(DropReason::SourceMac)
    );
    let report = mld_v2_report(&[(4, "ff05::9")]);
    assert_eq!(
        dp.from_guest(&ipv6_frame("fe80::9".parse().unwrap(), 0, &report)),
        FromGuest::Drop(DropReason::SourceIp)
    );
    assert_eq!(
        dp.to_guest(&to(v4_group_mac(group))),
        ToGuest::Drop(DropReason::NotForGuest)
    );
    assert_eq!(
        dp.to_guest(&to(MacAddr([0x33, 0x33, 0, 0, 0, 9]))),
        ToGuest::Drop(DropReason::NotForGuest)
    );
}

#[test]
fn mld_reports_open_and_close_groups() {
    let mut dp = datapath();
    let mdns = MacAddr([0x33, 0x33, 0, 0, 0, 0xfb]);
    let join = mld_v2_report(&[(4, "ff02::fb"), (4, "ff02::1:ff12:3456")]);
    assert_eq!(
        dp.from_guest(&ipv6_frame(guest_link_local(), 0, &join)),
        FromGuest::Forward
    );
    assert_eq!(dp.to_guest(&to(mdns)), ToGuest::Deliver);
    assert_eq!(
        dp.to_guest(&to(MacAddr([0x33, 0x33, 0xff, 0x12, 0x34, 0x56]))),
        ToGuest::Deliver
    );
    let leave = mld_v2_report(&[(3, "ff02::fb")]);
    assert_eq!(
        dp.from_guest(&ipv6_frame(guest_ipv6(), 0, &leave)),
        FromGuest::Forward
    );
    assert_eq!(
        dp.to_guest(&to(mdns)),
        ToGuest::Drop(DropReason::NotForGuest)
    );
    // A truncated report is malformed.
    let cut = &join[..join.len() - 1];
    let mut frame = ipv6_frame(guest_link_local(), 0, cut);
    assert_eq!(
        dp.from_guest(&frame),
        FromGuest::Drop(DropReason::Malformed)
    );
    frame.truncate(frame.len() - 1);
    assert_eq!(
        dp.from_guest(&frame),
        FromGuest::Drop(DropReason::Malformed)
    );
}

#[test]
fn group_table_overflow_is_counted() {
    let mut dp = datapath();
    for i in 0..70u8 {
        let group = Ipv4Addr::new(239, 0, 1, i);
        assert_eq!(
            dp.from_guest(&igmp_frame(GUEST_IP, 0x16, group)),
            FromGuest::Forward
        );
    }
    assert_eq!(nonzero(&dp), [("multicast_groups_full", 6)]);
    assert_eq!(
        dp.to_guest(&to(v4_group_mac(Ipv4Addr::new(239, 0, 1, 63)))),
        ToGuest::Deliver
    );
    assert_eq!(
        dp.to_guest(&to(v4_group_mac(Ipv4Addr::new(239, 0, 1, 64)))),
        ToGuest::Drop(DropReason::NotForGuest)
    );
}
