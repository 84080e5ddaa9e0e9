//! EC2's semantics, frame by frame.

use super::*;

fn all_out() -> serde_json::Value {
    json!([{"protocol": "-1", "cidrs": ["0.0.0.0/0", "::/0"]}])
}

#[test]
fn no_groups_let_nothing_in_or_out_but_arp_and_neighbor_discovery() {
    let mut fw = Firewall::new(&SecurityGroupsConfig::default()).unwrap();
    denied(
        fw.ingress(&tcp(REMOTE, 1000, GUEST, 22, SYN), 0),
        DenyReason::NoRule,
    );
    denied(
        fw.egress(&tcp(GUEST, 1000, REMOTE, 443, SYN), 0),
        DenyReason::NoRule,
    );
    denied(
        fw.egress(&udp(GUEST6, 1000, REMOTE6, 53), 0),
        DenyReason::NoRule,
    );
    denied(
        fw.ingress(&icmp(REMOTE, GUEST, 8, 0, 1), 0),
        DenyReason::NoRule,
    );
    denied(
        fw.egress(&ip_frame(GUEST, REMOTE, 47, &[0; 8]), 0),
        DenyReason::NoRule,
    );
    // ARP (and anything not IP) is not the filter's business.
    let mut arp = vec![0xff; 12];
    arp.extend_from_slice(&[0x08, 0x06]);
    arp.extend_from_slice(&[0; 28]);
    assert_eq!(fw.egress(&arp, 0), Verdict::Allow { flow: None });
    assert_eq!(fw.ingress(&arp, 0), Verdict::Allow { flow: None });
    // Neighbor discovery (hop limit 255) and MLD (hop limit 1, link-local).
    for ty in 133..=137 {
        let ns = ip_frame_with(
            "fe80::1",
            "ff02::1:ff00:5",
            58,
            &icmp_message(ty, 0, 0, &[0; 16]),
            255,
            None,
        );
        allowed(fw.ingress(&ns, 0));
        allowed(fw.egress(&ns, 0));
        let nd = |src: &str, dst: &str| {
            ip_frame_with(src, dst, 58, &icmp_message(ty, 0, 0, &[0; 16]), 255, None)
        };
        allowed(fw.egress(&nd(GUEST6, "fe80::1"), 0));
        allowed(fw.ingress(&nd("::", "ff02::1:ff00:5"), 0));
        // Global to global: not the link's control plane.
        denied(fw.ingress(&nd(REMOTE6, GUEST6), 0), DenyReason::NoRule);
        // Routed (hop limit below 255): not neighbor discovery.
        let routed = ip_frame_with(
            REMOTE6,
            GUEST6,
            58,
            &icmp_message(ty, 0, 0, &[0; 16]),
            254,
            None,
        );
        denied(fw.ingress(&routed, 0), DenyReason::NoRule);
    }
    for ty in [130, 131, 132, 143] {
        let mld = ip_frame_with(
            "fe80::5",
            "ff02::16",
            58,
            &icmp_message(ty, 0, 0, &[0; 16]),
            1,
            None,
        );
        allowed(fw.egress(&mld, 0));
        let unspecified = ip_frame_with(
            "::",
            "ff02::16",
            58,
            &icmp_message(ty, 0, 0, &[0; 16]),
            1,
            None,
        );
        allowed(fw.egress(&unspecified, 0));
        let global = ip_frame_with(
            GUEST6,
            "ff02::16",
            58,
            &icmp_message(ty, 0, 0, &[0; 16]),
            1,
            None,
        );
        denied(fw.egress(&global, 0), DenyReason::NoRule);
    }
    // Echo is not neighbor discovery.
    denied(
        fw.ingress(
            &ip_frame_with(
                "fe80::1",
                "fe80::5",
                58,
                &icmp_message(128, 0, 1, &[]),
                255,
                None,
            ),
            0,
        ),
        DenyReason::NoRule,
    );
    assert_eq!(metric(&fw, "sg_unfiltered"), 2 + 5 * 4 + 4 * 2);
    assert_eq!(metric(&fw, "sg_denied_ingress"), 2 + 5 * 2 + 1);
    assert_eq!(metric(&fw, "sg_denied_egress"), 3 + 4);
}

#[test]
fn vlan_tagged_and_malformed_frames_are_denied() {
    let mut fw = one_group(all_out(), all_out());
    let mut tagged = tcp(REMOTE, 1, GUEST, 2, SYN);
    tagged.splice(12..12, [0x81, 0x00, 0x00, 0x05]);
    denied(fw.ingress(&tagged, 0), DenyReason::VlanTagged);
    denied(fw.ingress(&[0; 10], 0), DenyReason::Malformed);
    let mut short = tcp(REMOTE, 1, GUEST, 2, SYN);
    short.truncate(14 + 20 + 10);
    short[16..18].copy_from_slice(&30u16.to_be_bytes());
    denied(fw.ingress(&short, 0), DenyReason::Malformed);
}

#[test]
fn tcp_and_udp_ports() {
    let mut fw = one_group(
        json!([{"protocol": "tcp", "from_port": 22, "to_port": 22, "cidrs": ["0.0.0.0/0"]},
               {"protocol": "udp", "from_port": 5000, "to_port": 5010, "cidrs": ["0.0.0.0/0"]},
               {"protocol": "6", "from_port": 8000, "to_port": 8080, "cidrs": ["0.0.0.0/0"]}]),
        json!([]),
    );
    allowed(fw.ingress(&tcp(REMOTE, 40000, GUEST, 22, SYN), 0));
    denied(
        fw.ingress(&tcp(REMOTE, 40000, GUEST, 23, SYN), 0),
        DenyReason::NoRule,
    );
    denied(
        fw.ingress(&tcp(REMOTE, 40000, GUEST, 21, SYN), 0),
        DenyReason::NoRule,
    );
    denied(
        fw.ingress(&udp(REMOTE, 40000, GUEST, 22), 0),
        DenyReason::NoRule,
    );
    for port in [5000, 5005, 5010] {
        allowed(fw.ingress(&udp(REMOTE, 40000, GUEST, port), 0));
    }
    denied(
        fw.ingress(&udp(REMOTE, 40000, GUEST, 4999), 0),
        DenyReason::NoRule,
    );
    denied(
        fw.ingress(&udp(REMOTE, 40000, GUEST, 5011), 0),
        DenyReason::NoRule,
    );
    denied(
        fw.ingress(&tcp(REMOTE, 40000, GUEST, 5005, SYN), 0),
        DenyReason::NoRule,
    );
    allowed(fw.ingress(&tcp(REMOTE, 40000, GUEST, 8080, SYN), 0));
    denied(
        fw.ingress(&tcp(REMOTE, 40000, GUEST, 8081, SYN), 0),
        DenyReason::NoRule,
    );
    // The source port does not matter to an ingress rule.
    allowed(fw.ingress(&tcp(REMOTE, 22, GUEST, 8000, SYN), 0));
    // Ingress rules say nothing about egress.
    denied(
        fw.egress(&tcp(GUEST, 40000, REMOTE, 22, SYN), 0),
        DenyReason::NoRule,
    );
}

#[test]
fn icmp_types_and_codes() {
    let mut fw = one_group(
        json!([{"protocol": "icmp", "from_port": 8, "to_port": -1, "cidrs": ["0.0.0.0/0"]},
               {"protocol": "icmp", "from_port": 3, "to_port": 4, "cidrs": ["0.0.0.0/0"]},
               {"protocol": "icmpv6", "from_port": 128, "to_port": 0, "cidrs": ["::/0"]},
               {"protocol": "58", "cidrs": ["2001:db8:ffff::/48"]}]),
        json!([]),
    );
    allowed(fw.ingress(&icmp(REMOTE, GUEST, 8, 0, 1), 0));
    allowed(fw.ingress(&icmp(REMOTE, GUEST, 8, 7, 2), 0));
    allowed(fw.ingress(&icmp(REMOTE, GUEST, 3, 4, 0), 0));
    denied(
        fw.ingress(&icmp(REMOTE, GUEST, 3, 3, 0), 0),
        DenyReason::NoRule,
    );
    denied(
        fw.ingress(&icmp(REMOTE, GUEST, 13, 0, 1), 0),
        DenyReason::NoRule,
    );
    allowed(fw.ingress(&icmp("2001:db8:1::1", GUEST6, 128, 0, 1), 0));
    denied(
        fw.ingress(&icmp("2001:db8:1::1", GUEST6, 128, 1, 2), 0),
        DenyReason::NoRule,
    );
    denied(
        fw.ingress(&icmp("2001:db8:1::1", GUEST6, 129, 0, 1), 0),
        DenyReason::NoRule,
    );
    // All ICMPv6 from one /48.
    allowed(fw.ingress(&icmp(REMOTE6, GUEST6, 129, 0, 1), 0));
    allowed(fw.ingress(&icmp(REMOTE6, GUEST6, 200, 9, 1), 0));
    // An icmp rule does not match ICMPv6, nor icmpv6 ICMP.
    denied(
        fw.ingress(&icmp(REMOTE, GUEST, 128, 0, 1), 0),
        DenyReason::NoRule,
    );
}

#[test]
fn all_protocols_and_protocol_numbers() {
    let mut fw = one_group(
        json!([{"protocol": "47", "from_port": 1, "to_port": 1, "cidrs": ["198.51.100.0/24"]},
               {"protocol": "all", "cidrs": ["203.0.113.0/24"]}]),
        json!([]),
    );
    // Ports mean nothing for protocol 47.
    allowed(fw.ingress(&ip_frame(REMOTE, GUEST, 47, &[0; 8]), 0));
    denied(
        fw.ingress(&ip_frame(REMOTE, GUEST, 50, &[0; 8]), 0),
        DenyReason::NoRule,
    );
    denied(
        fw.ingress(&tcp(REMOTE, 1, GUEST, 1, SYN), 0),
        DenyReason::NoRule,
    );
    for frame in [
        tcp("203.0.113.9", 1, GUEST, 65535, SYN),
        udp("203.0.113.9", 1, GUEST, 0),
        icmp("203.0.113.9", GUEST, 8, 0, 1),
        ip_frame("203.0.113.9", GUEST, 50, &[0; 8]),
        ip_frame("203.0.113.9", GUEST, 132, &[0; 8]),
    ] {
        allowed(fw.ingress(&frame, 0));
    }
    denied(
        fw.ingress(&udp("203.0.114.9", 1, GUEST, 0), 0),
        DenyReason::NoRule,
    );
}

#[test]
fn cidrs_of_both_families_and_address_sets() {
    let mut fw = firewall(json!({
        "groups": [{"id": "sg-1",
            "ingress": [{"protocol": "tcp", "from_port": 22, "to_port": 22,
                         "cidrs": ["10.0.0.0/16", "2001:db8::/32"], "source_groups": ["sg-web"]}],
            "egress": [{"protocol": "tcp", "from_port": 5432, "to_port": 5432, "source_groups": ["sg-db"]}]}],
        "address_sets": {"sg-web": ["10.0.99.6", "10.1.99.7", "2001:db9::7"],
                         "sg-db": ["192.168.1.0/24", "fd00::9"]}}));
    for src in [
        "10.0.0.1",
        "10.0.255.255",
        "10.1.99.7",
        "2001:db8::1",
        "2001:db8:ffff::1",
        "2001:db9::7",
    ] {
        let dst = if addr(src).is_ipv4() { GUEST } else { GUEST6 };
        allowed(fw.ingress(&tcp(src, 1000, dst, 22, SYN), 0));
    }
    for src in [
        "10.1.0.1",
        "11.0.0.1",
        "10.1.99.8",
        "2001:db9::8",
        "2001:db7::1",
    ] {
        let dst = if addr(src).is_ipv4() { GUEST } else { GUEST6 };
        denied(
            fw.ingress(&tcp(src, 1000, dst, 22, SYN), 0),
            DenyReason::NoRule,
        );
    }
    // Egress source groups are destinations.
    allowed(fw.egress(&tcp(GUEST, 1000, "192.168.1.77", 5432, SYN), 0));
    allowed(fw.egress(&tcp(GUEST6, 1000, "fd00::9", 5432, SYN), 0));
    denied(
        fw.egress(&tcp(GUEST, 1000, "192.168.2.77", 5432, SYN), 0),
        DenyReason::NoRule,
    );
    denied(
        fw.egress(&tcp("192.168.1.77", 5432, GUEST, 1000, SYN), 0),
        DenyReason::NoRule,
    );
}

#[test]
fn groups_combine_as_a_union() {
    let mut fw = firewall(json!({"groups": [
        {"id": "sg-ssh", "ingress": [{"protocol": "tcp", "from_port": 22, "to_port": 22, "cidrs": ["10.0.0.0/8"]}]},
        {"id": "sg-web", "ingress": [{"protocol": "tcp", "from_port": 443, "to_port": 443, "cidrs": ["0.0.0.0/0"]}]},
        {"id": "sg-empty"}]}));
    allowed(fw.ingress(&tcp("10.9.9.9", 1000, GUEST, 22, SYN), 0));
    allowed(fw.ingress(&tcp("10.9.9.9", 1000, GUEST, 443, SYN), 0));
    allowed(fw.ingress(&tcp(REMOTE, 1000, GUEST, 443, SYN), 0));
    denied(
        fw.ingress(&tcp(REMOTE, 1000, GUEST, 22, SYN), 0),
        DenyReason::NoRule,
    );
    let hits: Vec<_> = fw.rule_hits().map(|(r, n)| (r.group, n)).collect();
    assert_eq!(hits, [("sg-ssh", 1), ("sg-web", 2)]);
}

#[test]
fn replies_to_outbound_flows_need_no_inbound_rule() {
    let mut fw = one_group(json!([]), all_out());
    // TCP.
    allowed(fw.egress(&tcp(GUEST, 40000, REMOTE, 443, SYN), 0));
    allowed(fw.ingress(&tcp(REMOTE, 443, GUEST, 40000, SYN_ACK), 1));
    allowed(fw.egress(&tcp(GUEST, 40000, REMOTE, 443, ACK), 2));
    allowed(fw.ingress(&tcp(REMOTE, 443, GUEST, 40000, ACK), 3));
    // Not to another port, nor from another host.
    denied(
        fw.ingress(&tcp(REMOTE, 443, GUEST, 40001, ACK), 3),
        DenyReason::NoRule,
    );
    denied(
        fw.ingress(&tcp("198.51.100.8", 443, GUEST, 40000, ACK), 3),
        DenyReason::NoRule,
    );
    // UDP, both families.
    allowed(fw.egress(&udp(GUEST6, 5353, REMOTE6, 53), 0));
    allowed(fw.ingress(&udp(REMOTE6, 53, GUEST6, 5353), 1));
    denied(
        fw.ingress(&udp(REMOTE6, 54, GUEST6, 5353), 1),
        DenyReason::NoRule,
    );
    // ICMP echo: the reply with the same identifier.
    allowed(fw.egress(&icmp(GUEST, REMOTE, 8, 0, 77), 0));
    allowed(fw.ingress(&icmp(REMOTE, GUEST, 0, 0, 77), 1));
    denied(
        fw.ingress(&icmp(REMOTE, GUEST, 0, 0, 78), 1),
        DenyReason::NoRule,
    );
    // A request from the peer is not a reply.
    denied(
        fw.ingress(&icmp(REMOTE, GUEST, 8, 0, 77), 1),
        DenyReason::NoRule,
    );
    allowed(fw.egress(&icmp(GUEST6, REMOTE6, 128, 0, 9), 0));
    allowed(fw.ingress(&icmp(REMOTE6, GUEST6, 129, 0, 9), 1));
    // Other protocols: addresses and protocol only, either way.
    allowed(fw.egress(&ip_frame(GUEST, REMOTE, 47, &[0; 8]), 0));
    allowed(fw.ingress(&ip_frame(REMOTE, GUEST, 47, &[1; 8]), 1));
    denied(
        fw.ingress(&ip_frame(REMOTE, GUEST, 50, &[1; 8]), 1),
        DenyReason::NoRule,
    );
    assert_eq!(metric(&fw, "conntrack_flows"), 5);
    assert_eq!(metric(&fw, "sg_allowed_new"), 5);
    assert_eq!(metric(&fw, "sg_allowed_tracked"), 7);
}

#[test]
fn unsolicited_inbound_is_denied_with_only_outbound_rules() {
    let mut fw = one_group(json!([]), all_out());
    denied(
        fw.ingress(&tcp(REMOTE, 443, GUEST, 40000, SYN), 0),
        DenyReason::NoRule,
    );
    denied(
        fw.ingress(&udp(REMOTE, 53, GUEST, 5353), 0),
        DenyReason::NoRule,
    );
    denied(
        fw.ingress(&icmp(REMOTE, GUEST, 0, 0, 1), 0),
        DenyReason::NoRule,
    );
}

/// The AWS documentation's example: SSH from one address is tracked,
/// HTTP from anywhere with all traffic out is not, ICMP always is.
fn aws_example() -> SecurityGroupsConfig {
    config(json!({"groups": [{"id": "sg-1",
        "ingress": [{"protocol": "tcp", "from_port": 22, "to_port": 22, "cidrs": ["203.0.113.1/32"]},
                    {"protocol": "tcp", "from_port": 80, "to_port": 80, "cidrs": ["0.0.0.0/0", "::/0"]},
                    {"protocol": "icmp", "from_port": -1, "to_port": -1, "cidrs": ["0.0.0.0/0"]}],
        "egress": [{"protocol": "-1", "cidrs": ["0.0.0.0/0", "::/0"]}]}]}))
}

#[test]
fn the_aws_example_tracks_ssh_and_icmp_but_not_http() {
    let mut fw = Firewall::new(&aws_example()).unwrap();
    allowed(fw.ingress(&tcp("203.0.113.1", 50000, GUEST, 22, SYN), 0));
    assert_eq!(fw.flows(), 1);
    allowed(fw.egress(&tcp(GUEST, 22, "203.0.113.1", 50000, SYN_ACK), 0));
    assert_eq!(metric(&fw, "sg_allowed_tracked"), 1);
    for (src, dst) in [(REMOTE, GUEST), (REMOTE6, GUEST6)] {
        allowed(fw.ingress(&tcp(src, 50001, dst, 80, SYN), 0));
        allowed(fw.egress(&tcp(dst, 80, src, 50001, SYN_ACK), 0));
        allowed(fw.ingress(&tcp(src, 50001, dst, 80, ACK), 0));
    }
    assert_eq!(fw.flows(), 1);
    assert_eq!(metric(&fw, "sg_allowed_untracked"), 6);
    allowed(fw.ingress(&icmp(REMOTE, GUEST, 8, 0, 5), 0));
    assert_eq!(fw.flows(), 2);
    // Outbound connections are tracked: no inbound rule allows all ports.
    allowed(fw.egress(&tcp(GUEST, 40000, REMOTE, 443, SYN), 0));
    assert_eq!(fw.flows(), 3);
}

#[test]
fn all_open_both_ways_tracks_no_tcp_or_udp_but_still_icmp() {
    let mut fw = one_group(all_out(), all_out());
    allowed(fw.egress(&tcp(GUEST, 40000, REMOTE, 443, SYN), 0));
    allowed(fw.ingress(&tcp(REMOTE, 443, GUEST, 40000, SYN_ACK), 0));
    allowed(fw.ingress(&udp(REMOTE6, 53, GUEST6, 5353), 0));
    assert_eq!(fw.flows(), 0);
    allowed(fw.egress(&icmp(GUEST, REMOTE, 8, 0, 1), 0));
    allowed(fw.egress(&ip_frame(GUEST, REMOTE, 47, &[0; 8]), 0));
    assert_eq!(fw.flows(), 2);
}

#[test]
fn a_port_range_covering_everything_counts_as_all_ports() {
    // Inbound UDP 53 from anywhere; outbound UDP 0-65535 to anywhere, in
    // two rules: DNS served by the guest is untracked.
    let mut fw = one_group(
        json!([{"protocol": "udp", "from_port": 53, "to_port": 53, "cidrs": ["0.0.0.0/0"]}]),
        json!([{"protocol": "udp", "from_port": 0, "to_port": 1023, "cidrs": ["0.0.0.0/0"]},
               {"protocol": "17", "from_port": 1024, "to_port": 65535, "cidrs": ["0.0.0.0/0"]}]),
    );
    allowed(fw.ingress(&udp(REMOTE, 5353, GUEST, 53), 0));
    allowed(fw.egress(&udp(GUEST, 53, REMOTE, 5353), 0));
    assert_eq!(fw.flows(), 0);
    // The guest's own queries out are tracked: inbound is not all ports.
    allowed(fw.egress(&udp(GUEST, 5353, REMOTE, 53), 0));
    assert_eq!(fw.flows(), 1);
    // The rules are IPv4 only.
    denied(
        fw.egress(&udp(GUEST6, 5353, REMOTE6, 53), 0),
        DenyReason::NoRule,
    );
}

#[test]
fn a_narrower_rule_in_the_other_direction_keeps_flows_tracked() {
    // /0 in, but only /1 halves out: not "all traffic".
    let mut fw = one_group(
        json!([{"protocol": "tcp", "from_port": 80, "to_port": 80, "cidrs": ["0.0.0.0/0"]}]),
        json!([{"protocol": "-1", "cidrs": ["0.0.0.0/1", "128.0.0.0/1"]}]),
    );
    allowed(fw.ingress(&tcp(REMOTE, 50000, GUEST, 80, SYN), 0));
    assert_eq!(fw.flows(), 1);
}

#[test]
fn tracked_flows_survive_revoking_their_rule() {
    let open = config(json!({"groups": [{"id": "sg-1",
        "ingress": [{"protocol": "tcp", "from_port": 22, "to_port": 22, "cidrs": ["198.51.100.0/24"]},
                    {"protocol": "udp", "from_port": 123, "to_port": 123, "cidrs": ["198.51.100.0/24"]},
                    {"protocol": "icmp", "cidrs": ["0.0.0.0/0"]}],
        "egress": [{"protocol": "-1", "cidrs": ["0.0.0.0/0"]}]}]}));
    let closed = config(json!({"groups": [{"id": "sg-1",
        "egress": [{"protocol": "-1", "cidrs": ["0.0.0.0/0"]}]}]}));
    let mut fw = Firewall::new(&open).unwrap();
    allowed(fw.ingress(&tcp(REMOTE, 50000, GUEST, 22, SYN), 0));
    allowed(fw.egress(&tcp(GUEST, 22, REMOTE, 50000, SYN_ACK), 0));
    allowed(fw.ingress(&tcp(REMOTE, 50000, GUEST, 22, ACK), 0));
    allowed(fw.ingress(&udp(REMOTE, 40000, GUEST, 123), 0));
    allowed(fw.ingress(&icmp(REMOTE, GUEST, 8, 0, 3), 0));
    fw.replace_rules(&closed).unwrap();
    allowed(fw.ingress(&tcp(REMOTE, 50000, GUEST, 22, ACK), 1000));
    allowed(fw.ingress(&udp(REMOTE, 40000, GUEST, 123), 1000));
    allowed(fw.ingress(&icmp(REMOTE, GUEST, 8, 0, 3), 1000));
    // New flows are judged by the new rules.
    denied(
        fw.ingress(&tcp(REMOTE, 50001, GUEST, 22, SYN), 1000),
        DenyReason::NoRule,
    );
    denied(
        fw.ingress(&icmp(REMOTE, GUEST, 8, 0, 4), 1000),
        DenyReason::NoRule,
    );
    // Until they idle out.
    denied(
        fw.ingress(&icmp(REMOTE, GUEST, 8, 0, 3), 1000 + 30 * SEC),
        DenyReason::NoRule,
    );
    denied(
        fw.ingress(&udp(REMOTE, 40000, GUEST, 123), 1000 + 30 * SEC),
        DenyReason::NoRule,
    );
    allowed(fw.ingress(&tcp(REMOTE, 50000, GUEST, 22, ACK), 1000 + 400_000 * SEC));
}

#[test]
fn untracked_flows_are_cut_at_once_by_revoking_their_rule() {
    let open = aws_example();
    let mut closed = aws_example();
    closed.groups[0].ingress.remove(1);
    let mut fw = Firewall::new(&open).unwrap();
    allowed(fw.ingress(&tcp(REMOTE, 50000, GUEST, 80, SYN), 0));
    allowed(fw.egress(&tcp(GUEST, 80, REMOTE, 50000, SYN_ACK), 0));
    allowed(fw.ingress(&tcp(REMOTE, 50000, GUEST, 80, ACK), 0));
    fw.replace_rules(&closed).unwrap();
    denied(
        fw.ingress(&tcp(REMOTE, 50000, GUEST, 80, ACK), 1),
        DenyReason::NoRule,
    );
    // The guest's next segment out is allowed by the egress rule but
    // tracks nothing, so it cannot reopen the way in.
    allowed(fw.egress(&tcp(GUEST, 80, REMOTE, 50000, ACK), 2));
    denied(
        fw.ingress(&tcp(REMOTE, 50000, GUEST, 80, ACK), 3),
        DenyReason::NoRule,
    );
    assert_eq!(fw.flows(), 0);
}

#[test]
fn tcp_timeouts_follow_the_state() {
    let mut fw = firewall(json!({"groups": [{"id": "sg-1",
        "egress": [{"protocol": "tcp", "from_port": 0, "to_port": 65535, "cidrs": ["0.0.0.0/0"]}]}],
        "connection_tracking": {"tcp_established_timeout": 3600}}));
    let reply = |fw: &mut Firewall, sp: u16, flags: u8, now: u64| {
        fw.ingress(&tcp(REMOTE, 443, GUEST, sp, flags), now)
    };
    // SYN only: 120 s.
    allowed(fw.egress(&tcp(GUEST, 1, REMOTE, 443, SYN), 0));
    allowed(reply(&mut fw, 1, SYN_ACK, 119 * SEC));
    denied(
        reply(&mut fw, 1, ACK, 119 * SEC + 120 * SEC),
        DenyReason::NoRule,
    );
    // Established: the configured hour.
    allowed(fw.egress(&tcp(GUEST, 2, REMOTE, 443, SYN), 0));
    allowed(reply(&mut fw, 2, SYN_ACK, 0));
    allowed(fw.egress(&tcp(GUEST, 2, REMOTE, 443, ACK), 0));
    allowed(reply(&mut fw, 2, ACK, 3599 * SEC));
    allowed(reply(&mut fw, 2, ACK, 2 * 3599 * SEC));
    denied(
        reply(&mut fw, 2, ACK, 2 * 3599 * SEC + 3600 * SEC),
        DenyReason::NoRule,
    );
    // FIN: 120 s.
    allowed(fw.egress(&tcp(GUEST, 3, REMOTE, 443, SYN), 0));
    allowed(reply(&mut fw, 3, SYN_ACK, 0));
    allowed(fw.egress(&tcp(GUEST, 3, REMOTE, 443, ACK), 0));
    allowed(fw.egress(&tcp(GUEST, 3, REMOTE, 443, FIN_ACK), 0));
    allowed(reply(&mut fw, 3, FIN_ACK, 119 * SEC));
    denied(reply(&mut fw, 3, ACK, 239 * SEC), DenyReason::NoRule);
    // RST: 10 s.
    allowed(fw.egress(&tcp(GUEST, 4, REMOTE, 443, SYN), 0));
    allowed(reply(&mut fw, 4, SYN_ACK, 0));
    allowed(fw.egress(&tcp(GUEST, 4, REMOTE, 443, ACK), 0));
    allowed(reply(&mut fw, 4, RST, 0));
    allowed(reply(&mut fw, 4, RST, 9 * SEC));
    denied(reply(&mut fw, 4, RST, 19 * SEC), DenyReason::NoRule);
}

#[test]
fn tcp_flows_open_only_with_a_syn_and_reopen_judged_anew() {
    let egress =
        json!([{"protocol": "tcp", "from_port": 443, "to_port": 443, "cidrs": ["0.0.0.0/0"]}]);
    let mut fw = one_group(json!([]), egress);
    // A mid-stream segment allowed by a rule tracks nothing.
    allowed(fw.egress(&tcp(GUEST, 5, REMOTE, 443, ACK), 0));
    denied(
        fw.ingress(&tcp(REMOTE, 443, GUEST, 5, ACK), 0),
        DenyReason::NoRule,
    );
    assert_eq!(fw.flows(), 0);
    // A closed flow, then a SYN on the same ports after the rule is gone.
    allowed(fw.egress(&tcp(GUEST, 6, REMOTE, 443, SYN), 0));
    allowed(fw.ingress(&tcp(REMOTE, 443, GUEST, 6, SYN_ACK), 0));
    allowed(fw.egress(&tcp(GUEST, 6, REMOTE, 443, RST), 0));
    fw.replace_rules(&SecurityGroupsConfig::default()).unwrap();
    denied(
        fw.egress(&tcp(GUEST, 6, REMOTE, 443, SYN), SEC),
        DenyReason::NoRule,
    );
    // Late segments of the old connection still pass.
    allowed(fw.ingress(&tcp(REMOTE, 443, GUEST, 6, ACK), SEC));
}

#[test]
fn udp_single_transaction_versus_stream() {
    let mut fw = firewall(json!({"groups": [{"id": "sg-1",
        "egress": [{"protocol": "udp", "from_port": 0, "to_port": 65535, "cidrs": ["0.0.0.0/0"]}]}],
        "connection_tracking": {"udp_timeout": 40, "udp_stream_timeout": 150}}));
    let out = |fw: &mut Firewall, sp: u16, now: u64| fw.egress(&udp(GUEST, sp, REMOTE, 53), now);
    let back = |fw: &mut Firewall, sp: u16, now: u64| fw.ingress(&udp(REMOTE, 53, GUEST, sp), now);
    // One way only: udp_timeout.
    allowed(out(&mut fw, 1, 0));
    allowed(out(&mut fw, 1, 39 * SEC));
    denied(back(&mut fw, 1, 79 * SEC), DenyReason::NoRule);
    // One request-response transaction: still udp_timeout.
    allowed(out(&mut fw, 2, 0));
    allowed(back(&mut fw, 2, SEC));
    allowed(back(&mut fw, 2, 40 * SEC));
    denied(back(&mut fw, 2, 80 * SEC), DenyReason::NoRule);
    // Two transactions: a stream, udp_stream_timeout.
    allowed(out(&mut fw, 3, 0));
    allowed(back(&mut fw, 3, 0));
    allowed(out(&mut fw, 3, 0));
    allowed(back(&mut fw, 3, 0));
    allowed(back(&mut fw, 3, 149 * SEC));
    denied(back(&mut fw, 3, 299 * SEC), DenyReason::NoRule);
}

#[test]
fn other_protocols_and_icmp_time_out() {
    let mut fw = one_group(json!([]), all_out());
    allowed(fw.egress(&ip_frame(GUEST, REMOTE, 47, &[0; 8]), 0));
    allowed(fw.ingress(&ip_frame(REMOTE, GUEST, 47, &[0; 8]), 599 * SEC));
    denied(
        fw.ingress(&ip_frame(REMOTE, GUEST, 47, &[0; 8]), 1199 * SEC),
        DenyReason::NoRule,
    );
    allowed(fw.egress(&icmp(GUEST, REMOTE, 8, 0, 1), 0));
    allowed(fw.ingress(&icmp(REMOTE, GUEST, 0, 0, 1), 29 * SEC));
    denied(
        fw.ingress(&icmp(REMOTE, GUEST, 0, 0, 1), 59 * SEC),
        DenyReason::NoRule,
    );
}

#[test]
fn a_full_table_drops_new_flows_and_counts_them() {
    let mut fw = firewall(json!({"groups": [{"id": "sg-1",
        "egress": [{"protocol": "udp", "from_port": 0, "to_port": 65535, "cidrs": ["0.0.0.0/0"]}]}],
        "connection_tracking": {"max_flows": 8}}));
    for sp in 0..8 {
        allowed(fw.egress(&udp(GUEST, sp, REMOTE, 53), 0));
    }
    denied(
        fw.egress(&udp(GUEST, 8, REMOTE, 53), 0),
        DenyReason::ConntrackFull,
    );
    assert_eq!(metric(&fw, "conntrack_allowance_exceeded"), 1);
    assert_eq!(metric(&fw, "sg_denied_egress"), 1);
    assert_eq!(metric(&fw, "conntrack_flows"), 8);
    // Existing flows go on.
    allowed(fw.ingress(&udp(REMOTE, 53, GUEST, 3), 0));
    // Once they idle out, the sweep makes room.
    assert_eq!(fw.expire(30 * SEC, 1000), 8);
    assert_eq!(metric(&fw, "conntrack_flows"), 0);
    assert_eq!(metric(&fw, "conntrack_expired"), 8);
    for sp in 100..108 {
        allowed(fw.egress(&udp(GUEST, sp, REMOTE, 53), 30 * SEC));
    }
    // Or without a sweep: a new flow takes the place of an expired one.
    for sp in 200..300 {
        allowed(fw.egress(
            &udp(GUEST, sp, REMOTE, 53),
            100 * SEC + u64::from(sp) * 30 * SEC,
        ));
    }
    assert!(metric(&fw, "conntrack_flows") <= 8);
    assert_eq!(metric(&fw, "conntrack_allowance_exceeded"), 1);
}

#[test]
fn max_flows_changes_live() {
    let cfg = |max: u32| {
        config(json!({"groups": [{"id": "sg-1",
            "egress": [{"protocol": "udp", "from_port": 0, "to_port": 65535, "cidrs": ["0.0.0.0/0"]}]}],
            "connection_tracking": {"max_flows": max}}))
    };
    let mut fw = Firewall::new(&cfg(4)).unwrap();
    for sp in 0..4 {
        allowed(fw.egress(&udp(GUEST, sp, REMOTE, 53), 0));
    }
    fw.replace_rules(&cfg(2)).unwrap();
    denied(
        fw.egress(&udp(GUEST, 9, REMOTE, 53), 0),
        DenyReason::ConntrackFull,
    );
    allowed(fw.ingress(&udp(REMOTE, 53, GUEST, 3), 0));
    fw.replace_rules(&cfg(100)).unwrap();
    for sp in 0..4 {
        allowed(fw.ingress(&udp(REMOTE, 53, GUEST, sp), 0));
    }
    for sp in 10..106 {
        allowed(fw.egress(&udp(GUEST, sp, REMOTE, 53), 0));
    }
    denied(
        fw.egress(&udp(GUEST, 999, REMOTE, 53), 0),
        DenyReason::ConntrackFull,
    );
}

#[test]
fn icmp_errors_of_tracked_flows_pass() {
    let mut fw = one_group(json!([]), all_out());
    let syn = tcp(GUEST, 40000, REMOTE, 443, SYN);
    allowed(fw.egress(&syn, 0));
    // From a router on the way, not the peer.
    for (ty, code) in [(3, 4), (3, 1), (11, 0), (12, 0)] {
        allowed(fw.ingress(&icmp_error_frame("192.0.2.1", GUEST, ty, code, &syn), 1));
    }
    assert_eq!(metric(&fw, "sg_allowed_tracked"), 4);
    // About a packet of no flow: denied.
    let other = tcp(GUEST, 40001, REMOTE, 443, SYN);
    denied(
        fw.ingress(&icmp_error_frame("192.0.2.1", GUEST, 3, 4, &other), 1),
        DenyReason::NoRule,
    );
    // About a packet the guest did not send (the error goes to its sender).
    let reversed = tcp(REMOTE, 443, GUEST, 40000, SYN_ACK);
    denied(
        fw.ingress(&icmp_error_frame("192.0.2.1", GUEST, 3, 4, &reversed), 1),
        DenyReason::NoRule,
    );
    // Not an error type: judged by rules.
    denied(
        fw.ingress(&icmp_error_frame("192.0.2.1", GUEST, 5, 0, &syn), 1),
        DenyReason::NoRule,
    );
    // UDP over IPv6: packet too big.
    let dgram = udp(GUEST6, 5000, REMOTE6, 4789);
    allowed(fw.egress(&dgram, 0));
    allowed(fw.ingress(&icmp_error_frame("2001:db8:1::1", GUEST6, 2, 0, &dgram), 1));
    allowed(fw.ingress(&icmp_error_frame("2001:db8:1::1", GUEST6, 1, 4, &dgram), 1));
    // Echo: time exceeded about the guest's request (traceroute).
    let ping = icmp(GUEST, REMOTE, 8, 0, 1234);
    allowed(fw.egress(&ping, 0));
    allowed(fw.ingress(&icmp_error_frame("192.0.2.1", GUEST, 11, 0, &ping), 1));
    // The guest's own errors about inbound flows pass out the same way.
    let mut fw = one_group(
        json!([{"protocol": "udp", "from_port": 53, "to_port": 53, "cidrs": ["198.51.100.0/24"]}]),
        json!([]),
    );
    let query = udp(REMOTE, 5353, GUEST, 53);
    allowed(fw.ingress(&query, 0));
    allowed(fw.egress(&icmp_error_frame(GUEST, REMOTE, 3, 3, &query), 1));
    // Truncated quotes judge by rules.
    let cut = &icmp_error_frame(GUEST, REMOTE, 3, 3, &query)[..14 + 20 + 8 + 20];
    let mut cut = cut.to_vec();
    cut[16..18].copy_from_slice(&48u16.to_be_bytes());
    denied(fw.egress(&cut, 1), DenyReason::NoRule);
}

#[test]
fn fragments_follow_their_first_fragment() {
    let mut fw = one_group(
        json!([{"protocol": "udp", "from_port": 4789, "to_port": 4789, "cidrs": ["0.0.0.0/0", "::/0"]}]),
        json!([]),
    );
    for (src, dst) in [(REMOTE, GUEST), (REMOTE6, GUEST6)] {
        let first = ip_frame_with(
            src,
            dst,
            17,
            &udp_datagram(1000, 4789),
            64,
            Some((7, 0, true)),
        );
        let later = ip_frame_with(src, dst, 17, &[0xee; 64], 64, Some((7, 2, true)));
        let last = ip_frame_with(src, dst, 17, &[0xee; 16], 64, Some((7, 10, false)));
        // A later fragment before its first: dropped.
        denied(fw.ingress(&later, 0), DenyReason::Fragment);
        allowed(fw.ingress(&first, 0));
        match fw.ingress(&later, 1) {
            Verdict::Allow { flow: Some(f) } => assert_eq!((f.src_port, f.dst_port), (1000, 4789)),
            v => panic!("{v:?}"),
        }
        allowed(fw.ingress(&last, 2));
        // Another datagram id, or another direction: no.
        let stranger = ip_frame_with(src, dst, 17, &[0xee; 16], 64, Some((8, 10, false)));
        denied(fw.ingress(&stranger, 2), DenyReason::Fragment);
        denied(fw.egress(&later, 2), DenyReason::Fragment);
        // And not after the reassembly timeout.
        denied(fw.ingress(&last, 31 * SEC), DenyReason::Fragment);
        // A denied first fragment vouches for nothing.
        let first = ip_frame_with(
            src,
            dst,
            17,
            &udp_datagram(1000, 4790),
            64,
            Some((9, 0, true)),
        );
        let later = ip_frame_with(src, dst, 17, &[0xee; 16], 64, Some((9, 1, false)));
        denied(fw.ingress(&first, 0), DenyReason::NoRule);
        denied(fw.ingress(&later, 0), DenyReason::Fragment);
        // A first fragment too short for its ports is malformed.
        let tiny = ip_frame_with(src, dst, 6, &[0, 80], 64, Some((10, 0, true)));
        denied(fw.ingress(&tiny, 0), DenyReason::Malformed);
    }
    // The table is bounded: many datagrams push old ones out, nothing grows.
    for id in 100..10_000u32 {
        let first = ip_frame_with(
            REMOTE,
            GUEST,
            17,
            &udp_datagram(1000, 4789),
            64,
            Some((id, 0, true)),
        );
        allowed(fw.ingress(&first, 5));
    }
}

#[test]
fn rule_hits_credit_the_longest_prefix() {
    let mut fw = firewall(json!({"groups": [
        {"id": "sg-a", "ingress": [{"protocol": "tcp", "from_port": 0, "to_port": 65535, "cidrs": ["10.0.0.0/8"]}]},
        {"id": "sg-b", "ingress": [{"protocol": "tcp", "from_port": 22, "to_port": 22, "cidrs": ["10.1.0.0/16"]},
                                   {"protocol": "-1", "cidrs": ["10.1.2.3/32"]}]}]}));
    allowed(fw.ingress(&tcp("10.1.9.9", 1, GUEST, 22, SYN), 0));
    allowed(fw.ingress(&tcp("10.1.9.9", 2, GUEST, 23, SYN), 0));
    allowed(fw.ingress(&tcp("10.1.2.3", 3, GUEST, 22, SYN), 0));
    allowed(fw.ingress(&tcp("10.2.0.1", 4, GUEST, 22, SYN), 0));
    // Tracked packets are not credited.
    allowed(fw.ingress(&tcp("10.2.0.1", 4, GUEST, 22, ACK), 0));
    let hits: Vec<_> = fw.rule_hits().map(|(r, n)| (r.group, r.rule, n)).collect();
    assert_eq!(hits, [("sg-a", 0, 2), ("sg-b", 0, 1), ("sg-b", 1, 1)]);
    let mut names = Vec::new();
    fw.write_metrics(&mut |name, _| names.push(name));
    assert_eq!(
        names,
        [
            "sg_allowed_new",
            "sg_allowed_tracked",
            "sg_allowed_untracked",
            "sg_denied_ingress",
            "sg_denied_egress",
            "sg_unfiltered",
            "conntrack_flows",
            "conntrack_allowance_exceeded",
            "conntrack_expired"
        ]
    );
}

#[test]
fn flow_keys_name_the_packet() {
    let mut fw = one_group(json!([]), all_out());
    let v = fw.egress(&tcp(GUEST, 40000, REMOTE, 443, SYN), 0);
    let expected = FlowKey {
        src: addr(GUEST),
        dst: addr(REMOTE),
        src_port: 40000,
        dst_port: 443,
        protocol: 6,
    };
    assert_eq!(
        v,
        Verdict::Allow {
            flow: Some(expected)
        }
    );
    let tuple: crate::net::flow_log::FlowTuple = expected.into();
    assert_eq!(tuple.dst_port, 443);
    let v = fw.ingress(&icmp(REMOTE6, GUEST6, 128, 0, 1), 0);
    let Verdict::Deny { flow: Some(f), .. } = v else {
        panic!("{v:?}")
    };
    assert_eq!((f.src_port, f.dst_port, f.protocol), (0, 0, 58));
}

/// The end-to-end test's server, in miniature: a tracked CIDR rule and an
/// untracked `/0` rule revoked together while sessions run.
#[test]
fn revoking_a_cidr_rule_refuses_new_connections_from_that_cidr() {
    let with = |revocable: bool| {
        let mut ingress = vec![
            json!({"protocol": "tcp", "from_port": 8080, "to_port": 8080, "source_groups": ["sg-a"]}),
            json!({"protocol": "udp", "from_port": 9090, "to_port": 9090, "cidrs": ["198.51.100.7/32"]}),
        ];
        if revocable {
            ingress.insert(0, json!({"protocol": "tcp", "from_port": 9000, "to_port": 9000, "cidrs": ["0.0.0.0/0"]}));
            ingress.insert(0, json!({"protocol": "tcp", "from_port": 8081, "to_port": 8081, "cidrs": ["198.51.100.0/24"]}));
        }
        config(
            json!({"groups": [{"id": "sg-b", "ingress": ingress, "egress": all_out()}],
            "address_sets": {"sg-a": [REMOTE]}}),
        )
    };
    let mut fw = Firewall::new(&with(true)).unwrap();
    for (sp, dp) in [(40000, 8081), (40001, 9000)] {
        allowed(fw.ingress(&tcp(REMOTE, sp, GUEST, dp, SYN), 0));
        allowed(fw.egress(&tcp(GUEST, dp, REMOTE, sp, SYN_ACK), 0));
        allowed(fw.ingress(&tcp(REMOTE, sp, GUEST, dp, ACK), 0));
    }
    fw.replace_rules(&with(false)).unwrap();
    allowed(fw.ingress(&tcp(REMOTE, 40000, GUEST, 8081, ACK), 10));
    denied(
        fw.ingress(&tcp(REMOTE, 40001, GUEST, 9000, ACK), 10),
        DenyReason::NoRule,
    );
    denied(
        fw.ingress(&tcp(REMOTE, 40002, GUEST, 8081, SYN), 10),
        DenyReason::NoRule,
    );
    allowed(fw.ingress(&tcp(REMOTE, 40003, GUEST, 8080, SYN), 10));
}
