//! The source check on frames from the guest.

use super::*;
use crate::net::{DropReason, FromGuest};

const TCP: u8 = 6;
const UDP: u8 = 17;
const ICMPV6: u8 = 58;

fn tcp_from(src: Ipv4Addr) -> Vec<u8> {
    ipv4_frame(src, Ipv4Addr::new(8, 8, 8, 8), TCP, &[0; 20])
}

#[test]
fn every_metric_is_reported_from_the_start() {
    let names: Vec<_> = {
        let mut m: Vec<_> = metrics(&datapath()).into_iter().collect();
        m.sort_unstable();
        m
    };
    let expected = [
        "arp_probe_replies",
        "arp_probes_sent",
        "dhcp_acks",
        "dhcp_declines",
        "dhcp_dropped",
        "dhcp_informs",
        "dhcp_naks",
        "dhcp_offers",
        "dhcp_releases",
        "local_frames_dropped",
        "multicast_groups_full",
        "rx_dropped_malformed",
        "rx_dropped_not_for_guest",
        "rx_dropped_security_group",
        "tx_dropped_arp_spoof",
        "tx_dropped_arp_unsupported",
        "tx_dropped_ethertype",
        "tx_dropped_malformed",
        "tx_dropped_no_metadata",
        "tx_dropped_security_group",
        "tx_dropped_source_ip",
        "tx_dropped_source_mac",
        "tx_dropped_vlan",
    ];
    assert_eq!(names, expected.iter().map(|&n| (n, 0)).collect::<Vec<_>>());
}

#[test]
fn source_mac_must_be_the_nics() {
    let mut dp = datapath();
    assert_eq!(dp.from_guest(&tcp_from(GUEST_IP)), FromGuest::Forward);
    let mut spoofed = tcp_from(GUEST_IP);
    spoofed[6..12].copy_from_slice(&OTHER_MAC.0);
    assert_eq!(
        dp.from_guest(&spoofed),
        FromGuest::Drop(DropReason::SourceMac)
    );
    // A group source address is no better.
    spoofed[6..12].copy_from_slice(&MacAddr::BROADCAST.0);
    assert_eq!(
        dp.from_guest(&spoofed),
        FromGuest::Drop(DropReason::SourceMac)
    );
    assert_eq!(nonzero(&dp), [("tx_dropped_source_mac", 2)]);

    let mut dp = unchecked_datapath();
    assert_eq!(dp.from_guest(&spoofed), FromGuest::Forward);
    assert!(nonzero(&dp).is_empty());
}

#[test]
fn vlan_tagged_frames_are_refused_with_or_without_the_check() {
    for mut dp in [datapath(), unchecked_datapath()] {
        for tpid in [0x8100u16, 0x88a8, 0x9100] {
            let mut payload = vec![0x00, 0x05];
            payload.extend_from_slice(&ETHERTYPE_IPV4.to_be_bytes());
            payload.extend_from_slice(&ipv4_packet(GUEST_IP, GATEWAY, TCP, &[0; 20]));
            let frame = eth(OTHER_MAC, GUEST_MAC, tpid, &payload);
            assert_eq!(
                dp.from_guest(&frame),
                FromGuest::Drop(DropReason::VlanTagged)
            );
        }
        assert_eq!(nonzero(&dp), [("tx_dropped_vlan", 3)]);
    }
}

#[test]
fn ipv4_source_must_be_the_nics() {
    let mut dp = datapath();
    assert_eq!(dp.from_guest(&tcp_from(GUEST_IP)), FromGuest::Forward);
    assert_eq!(
        dp.from_guest(&tcp_from(OTHER_IP)),
        FromGuest::Drop(DropReason::SourceIp)
    );
    // 0.0.0.0 is only for DHCP.
    assert_eq!(
        dp.from_guest(&tcp_from(Ipv4Addr::UNSPECIFIED)),
        FromGuest::Drop(DropReason::SourceIp)
    );
    let dns = ipv4_frame(
        OTHER_IP,
        Ipv4Addr::new(10, 0, 0, 2),
        UDP,
        &udp(5353, 53, &[0; 12]),
    );
    assert_eq!(dp.from_guest(&dns), FromGuest::Drop(DropReason::SourceIp));
    // DHCP ports from a foreign address are not an exception.
    let dhcp = ipv4_frame(OTHER_IP, GATEWAY, UDP, &udp(68, 67, &[0; 300]));
    assert_eq!(dp.from_guest(&dhcp), FromGuest::Drop(DropReason::SourceIp));
    // Neither are non-first fragments that look like DHCP.
    let mut fragment = ipv4_packet(
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::BROADCAST,
        UDP,
        &udp(68, 67, &[0; 300]),
    );
    fragment[6..8].copy_from_slice(&0x2000u16.to_be_bytes()); // more fragments
    let sum = checksum(&[&[&fragment[..10], &[0, 0], &fragment[12..20]].concat()]);
    fragment[10..12].copy_from_slice(&sum.to_be_bytes());
    let fragment = eth(MacAddr::BROADCAST, GUEST_MAC, ETHERTYPE_IPV4, &fragment);
    assert_eq!(
        dp.from_guest(&fragment),
        FromGuest::Drop(DropReason::SourceIp)
    );
    assert_eq!(nonzero(&dp), [("tx_dropped_source_ip", 5)]);

    let mut dp = unchecked_datapath();
    assert_eq!(dp.from_guest(&tcp_from(OTHER_IP)), FromGuest::Forward);
    assert_eq!(dp.from_guest(&fragment), FromGuest::Forward);
}

#[test]
fn ipv4_source_check_reads_past_options_and_ignores_padding() {
    let mut dp = datapath();
    // A 24-byte header (router alert option) and Ethernet padding.
    let mut p = ipv4_packet(GUEST_IP, GATEWAY, TCP, &[0; 20]);
    p[0] = 0x46;
    p[2..4].copy_from_slice(&48u16.to_be_bytes());
    p.splice(20..20, [0x94, 0x04, 0, 0]);
    p.extend_from_slice(&[0; 6]);
    assert_eq!(
        dp.from_guest(&eth(OTHER_MAC, GUEST_MAC, ETHERTYPE_IPV4, &p)),
        FromGuest::Forward
    );
    p[12..16].copy_from_slice(&OTHER_IP.octets());
    assert_eq!(
        dp.from_guest(&eth(OTHER_MAC, GUEST_MAC, ETHERTYPE_IPV4, &p)),
        FromGuest::Drop(DropReason::SourceIp)
    );
}

#[test]
fn large_offloaded_frames_are_judged_by_their_headers() {
    let mut dp = datapath();
    // A 64 KiB TSO frame with a partial TCP checksum: only headers count.
    let payload = vec![0xab; 65_535 - 20];
    let frame = ipv4_frame(GUEST_IP, Ipv4Addr::new(8, 8, 8, 8), TCP, &payload);
    assert_eq!(frame.len(), 14 + 65_535);
    assert_eq!(dp.from_guest(&frame), FromGuest::Forward);
}

#[test]
fn ipv6_source_must_be_the_nics() {
    let mut dp = datapath();
    let tcp = [0u8; 20];
    assert_eq!(
        dp.from_guest(&ipv6_frame(guest_link_local(), TCP, &tcp)),
        FromGuest::Forward
    );
    assert_eq!(
        dp.from_guest(&ipv6_frame(guest_ipv6(), TCP, &tcp)),
        FromGuest::Forward
    );
    for bad in ["fe80::1", "2001:db8::9", "fe80::ff:fe00:9", "::1"] {
        let frame = ipv6_frame(bad.parse().unwrap(), TCP, &tcp);
        assert_eq!(
            dp.from_guest(&frame),
            FromGuest::Drop(DropReason::SourceIp),
            "{bad}"
        );
    }
    // Without an IPv6 address, only the link-local address is the NIC's.
    let mut dp = Datapath::new(NicIdentity {
        ipv6: None,
        ..identity()
    });
    assert_eq!(
        dp.from_guest(&ipv6_frame(guest_link_local(), TCP, &tcp)),
        FromGuest::Forward
    );
    assert_eq!(
        dp.from_guest(&ipv6_frame(guest_ipv6(), TCP, &tcp)),
        FromGuest::Drop(DropReason::SourceIp)
    );
}

#[test]
fn unspecified_ipv6_source_only_for_dad_and_mld() {
    let mut dp = datapath();
    let any = Ipv6Addr::UNSPECIFIED;
    // DAD neighbor solicitation for the guest's own tentative address.
    let mut ns = vec![135, 0, 0, 0, 0, 0, 0, 0];
    ns.extend_from_slice(&guest_ipv6().octets());
    assert_eq!(
        dp.from_guest(&ipv6_frame(any, ICMPV6, &ns)),
        FromGuest::Forward
    );
    // MLDv2 report behind a hop-by-hop header.
    let report = mld_v2_report(&[(4, "ff02::1:ff00:5")]);
    assert_eq!(
        dp.from_guest(&ipv6_frame(any, 0, &report)),
        FromGuest::Forward
    );
    // An MLDv1 report.
    let mut v1 = vec![131, 0, 0, 0, 0, 0, 0, 0];
    v1.extend_from_slice(&"ff02::fb".parse::<Ipv6Addr>().unwrap().octets());
    assert_eq!(
        dp.from_guest(&ipv6_frame(any, ICMPV6, &v1)),
        FromGuest::Forward
    );
    // Echo requests, neighbor advertisements and TCP may not.
    for (next, payload) in [
        (ICMPV6, vec![128, 0, 0, 0, 0, 0, 0, 0]),
        (ICMPV6, vec![136, 0, 0, 0, 0, 0, 0, 0]),
        (TCP, vec![0; 20]),
        (0, vec![6, 0, 1, 4, 0, 0, 0, 0]),
    ] {
        let frame = ipv6_frame(any, next, &payload);
        assert_eq!(dp.from_guest(&frame), FromGuest::Drop(DropReason::SourceIp));
    }
    assert_eq!(nonzero(&dp), [("tx_dropped_source_ip", 4)]);
}

#[test]
fn arp_must_speak_for_the_nic() {
    let mut dp = datapath();
    let me = (GUEST_MAC, GUEST_IP);
    let arp = |dp: &mut Datapath, packet: Vec<u8>| {
        dp.from_guest(&eth(MacAddr::BROADCAST, GUEST_MAC, ETHERTYPE_ARP, &packet))
    };
    assert_eq!(
        arp(&mut dp, arp_packet(1, 1, me, GATEWAY)),
        FromGuest::Forward
    );
    assert_eq!(
        arp(&mut dp, arp_packet(1, 2, me, GATEWAY)),
        FromGuest::Forward
    );
    // Gratuitous ARP and RFC 5227 probes.
    assert_eq!(
        arp(&mut dp, arp_packet(1, 1, me, GUEST_IP)),
        FromGuest::Forward
    );
    let probe = arp_packet(1, 1, (GUEST_MAC, Ipv4Addr::UNSPECIFIED), GUEST_IP);
    assert_eq!(arp(&mut dp, probe), FromGuest::Forward);
    // Padded to the Ethernet minimum.
    let mut padded = arp_packet(1, 1, me, GATEWAY);
    padded.extend_from_slice(&[0; 18]);
    assert_eq!(arp(&mut dp, padded), FromGuest::Forward);

    let spoofs = [
        arp_packet(1, 2, (GUEST_MAC, GATEWAY), OTHER_IP),
        arp_packet(1, 2, (OTHER_MAC, GUEST_IP), GATEWAY),
        arp_packet(1, 1, (OTHER_MAC, Ipv4Addr::UNSPECIFIED), GUEST_IP),
    ];
    for spoof in spoofs.clone() {
        assert_eq!(arp(&mut dp, spoof), FromGuest::Drop(DropReason::ArpSpoof));
    }
    let mut ieee802 = arp_packet(6, 1, me, GATEWAY);
    assert_eq!(
        arp(&mut dp, ieee802.clone()),
        FromGuest::Drop(DropReason::ArpUnsupported)
    );
    ieee802[0..2].copy_from_slice(&1u16.to_be_bytes());
    ieee802[2..4].copy_from_slice(&ETHERTYPE_IPV6.to_be_bytes());
    assert_eq!(
        arp(&mut dp, ieee802.clone()),
        FromGuest::Drop(DropReason::ArpUnsupported)
    );
    let truncated = arp_packet(1, 1, me, GATEWAY)[..27].to_vec();
    assert_eq!(
        arp(&mut dp, truncated.clone()),
        FromGuest::Drop(DropReason::Malformed)
    );
    assert_eq!(
        nonzero(&dp),
        [
            ("tx_dropped_arp_spoof", 3),
            ("tx_dropped_arp_unsupported", 2),
            ("tx_dropped_malformed", 1)
        ]
    );

    let mut dp = unchecked_datapath();
    for spoof in spoofs {
        assert_eq!(arp(&mut dp, spoof), FromGuest::Forward);
    }
    assert_eq!(arp(&mut dp, ieee802), FromGuest::Forward);
    assert_eq!(
        arp(&mut dp, truncated),
        FromGuest::Drop(DropReason::Malformed)
    );
}

#[test]
fn other_ethertypes_are_refused() {
    let lldp = eth(OTHER_MAC, GUEST_MAC, 0x88cc, &[0; 40]);
    let stp = eth(OTHER_MAC, GUEST_MAC, 39, &[0x42, 0x42, 0x03, 0, 0, 0]); // 802.3 length
    let mut dp = datapath();
    assert_eq!(dp.from_guest(&lldp), FromGuest::Drop(DropReason::Ethertype));
    assert_eq!(dp.from_guest(&stp), FromGuest::Drop(DropReason::Ethertype));
    assert_eq!(nonzero(&dp), [("tx_dropped_ethertype", 2)]);
    let mut dp = unchecked_datapath();
    assert_eq!(dp.from_guest(&lldp), FromGuest::Forward);
    assert_eq!(dp.from_guest(&stp), FromGuest::Forward);
}

#[test]
fn malformed_frames_are_dropped_with_or_without_the_check() {
    let good = tcp_from(GUEST_IP);
    let mut bad_version = good.clone();
    bad_version[14] = 0x55;
    let mut short_total = good.clone();
    short_total[16..18].copy_from_slice(&10u16.to_be_bytes());
    let mut long_total = good.clone();
    long_total[16..18].copy_from_slice(&1000u16.to_be_bytes());
    let mut ipv6_long = ipv6_frame(guest_link_local(), TCP, &[0; 20]);
    ipv6_long[18..20].copy_from_slice(&21u16.to_be_bytes());
    let udp_short = ipv4_frame(GUEST_IP, GATEWAY, UDP, &[0; 7]);
    let malformed = [
        vec![],
        good[..13].to_vec(),
        good[..14 + 19].to_vec(),
        bad_version,
        short_total,
        long_total,
        ipv6_frame(guest_link_local(), TCP, &[])[..14 + 39].to_vec(),
        ipv6_long,
        udp_short,
        ipv6_frame(guest_link_local(), ICMPV6, &[]),
    ];
    for mut dp in [datapath(), unchecked_datapath()] {
        for (i, frame) in malformed.iter().enumerate() {
            assert_eq!(
                dp.from_guest(frame),
                FromGuest::Drop(DropReason::Malformed),
                "#{i}"
            );
        }
        assert_eq!(nonzero(&dp), [("tx_dropped_malformed", 10)]);
    }
}
