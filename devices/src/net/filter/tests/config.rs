//! The document: parsing, defaults, quotas and every validation error.

use super::*;

fn example() -> serde_json::Value {
    json!({ "groups": [ { "id": "sg-0a1b",
        "ingress": [ {"protocol": "tcp", "from_port": 22, "to_port": 22,
                      "cidrs": ["10.0.0.0/16", "2001:db8::/32"], "source_groups": ["sg-web"]} ],
        "egress":  [ {"protocol": "-1", "cidrs": ["0.0.0.0/0", "::/0"]} ] } ],
      "address_sets": { "sg-web": ["10.0.99.6", "10.0.99.7"] },
      "connection_tracking": { "tcp_established_timeout": 432000, "udp_stream_timeout": 180,
                               "udp_timeout": 30, "max_flows": 262144 } })
}

#[test]
fn the_documented_example_parses_and_round_trips() {
    let c = config(example());
    assert_eq!(c.groups.len(), 1);
    assert_eq!(c.groups[0].ingress[0].from_port, Some(22));
    assert_eq!(c.address_sets["sg-web"].len(), 2);
    assert_eq!(c.connection_tracking, ConnectionTracking::default());
    c.validate().unwrap();
    let text = serde_json::to_string(&c).unwrap();
    let back: SecurityGroupsConfig = serde_json::from_str(&text).unwrap();
    assert_eq!(back, c);
    let fw = Firewall::new(&c).unwrap();
    // 2 CIDRs + 1 source group, then 2 CIDRs: five rules to count.
    let refs: Vec<_> = fw.rule_hits().map(|(r, _)| r).collect();
    assert_eq!(refs.len(), 5);
    assert_eq!(
        refs[2],
        RuleRef {
            group: "sg-0a1b",
            direction: Direction::Ingress,
            rule: 0,
            peer: 2
        }
    );
    assert_eq!(refs[4].direction, Direction::Egress);
}

#[test]
fn defaults_and_unknown_fields() {
    let c = config(json!({}));
    assert!(c.groups.is_empty());
    assert_eq!(c.connection_tracking.max_flows, DEFAULT_MAX_FLOWS);
    let c = config(json!({"connection_tracking": {"udp_timeout": 45}}));
    assert_eq!(c.connection_tracking.udp_timeout, 45);
    assert_eq!(c.connection_tracking.tcp_established_timeout, 432_000);
    for bad in [
        json!({"group": []}),
        json!({"groups": [{"id": "sg-1", "ingres": []}]}),
        json!({"groups": [{"id": "sg-1", "ingress": [{"protocol": "tcp", "port": 22}]}]}),
        json!({"connection_tracking": {"tcp_timeout": 60}}),
        json!({"groups": [{"ingress": []}]}),
    ] {
        assert!(
            serde_json::from_value::<SecurityGroupsConfig>(bad.clone()).is_err(),
            "{bad}"
        );
    }
}

fn err(value: serde_json::Value) -> FilterError {
    let c = config(value);
    let e = Firewall::new(&c).unwrap_err();
    assert_eq!(c.validate().unwrap_err(), e);
    // Every error says something readable.
    assert!(!e.to_string().is_empty());
    e
}

fn rule_err(rule: serde_json::Value) -> FilterError {
    err(json!({"groups": [{"id": "sg-1", "ingress": [rule]}]}))
}

fn at() -> RuleLocation {
    RuleLocation {
        group: "sg-1".into(),
        direction: Direction::Ingress,
        rule: 0,
    }
}

#[test]
fn protocols_ports_and_icmp_are_validated() {
    assert_eq!(
        rule_err(json!({"protocol": "gre", "cidrs": ["10.0.0.0/8"]})),
        FilterError::UnknownProtocol {
            at: at(),
            protocol: "gre".into()
        }
    );
    for bad in ["256", "-2", "", "+6", "1000"] {
        assert!(matches!(
            rule_err(json!({"protocol": bad, "cidrs": ["10.0.0.0/8"]})),
            FilterError::UnknownProtocol { .. }
        ));
    }
    for (from, to) in [(Some(22), None), (None, Some(22)), (None, None)] {
        assert_eq!(
            rule_err(
                json!({"protocol": "udp", "from_port": from, "to_port": to, "cidrs": ["10.0.0.0/8"]})
            ),
            FilterError::MissingPorts { at: at() }
        );
    }
    assert_eq!(
        rule_err(json!({"protocol": "6", "cidrs": ["10.0.0.0/8"]})),
        FilterError::MissingPorts { at: at() }
    );
    for (from, to) in [(23, 22), (-1, -1), (0, 65536), (-5, 10)] {
        assert_eq!(
            rule_err(
                json!({"protocol": "tcp", "from_port": from, "to_port": to, "cidrs": ["10.0.0.0/8"]})
            ),
            FilterError::InvalidPortRange { at: at(), from, to }
        );
    }
    for (ty, code) in [(-1, 0), (256, 0), (8, 256), (8, -2), (-2, -1)] {
        assert_eq!(
            rule_err(
                json!({"protocol": "icmp", "from_port": ty, "to_port": code, "cidrs": ["10.0.0.0/8"]})
            ),
            FilterError::InvalidIcmp {
                at: at(),
                icmp_type: ty,
                code
            }
        );
    }
    // Ports mean nothing to other protocols, as in EC2.
    config(json!({"groups": [{"id": "sg-1", "ingress": [
        {"protocol": "47", "from_port": 99999, "to_port": -7, "cidrs": ["10.0.0.0/8"]},
        {"protocol": "-1", "from_port": 5, "cidrs": ["10.0.0.0/8"]},
        {"protocol": "ALL", "cidrs": ["10.0.0.0/8"]},
        {"protocol": "ICMPv6", "cidrs": ["::/0"]},
        {"protocol": "tcp", "from_port": 0, "to_port": 65535, "cidrs": ["10.0.0.0/8"]}]}]}))
    .validate()
    .unwrap();
}

#[test]
fn peers_are_validated() {
    assert_eq!(
        rule_err(json!({"protocol": "tcp", "from_port": 1, "to_port": 2})),
        FilterError::NoPeer { at: at() }
    );
    for bad in [
        "10.0.0.1/16",
        "10.0.0.0",
        "10.0.0.0/33",
        "10.0.0.0/",
        "10.0.0.0/+8",
        "2001:db8::1/32",
        "::/129",
        "banana/8",
    ] {
        assert_eq!(
            rule_err(
                json!({"protocol": "tcp", "from_port": 1, "to_port": 2, "cidrs": ["10.0.0.0/8", bad]})
            ),
            FilterError::InvalidCidr {
                at: at(),
                cidr: bad.into()
            },
            "{bad}"
        );
    }
    assert_eq!(
        rule_err(
            json!({"protocol": "tcp", "from_port": 1, "to_port": 2, "source_groups": ["sg-x"]})
        ),
        FilterError::UnknownAddressSet {
            at: at(),
            name: "sg-x".into()
        }
    );
    assert_eq!(
        err(json!({"address_sets": {"sg-x": ["10.0.0.1", "nope"]}})),
        FilterError::InvalidAddress {
            set: "sg-x".into(),
            address: "nope".into()
        }
    );
    // Sets take addresses and CIDR blocks of both families.
    config(json!({"address_sets": {"sg-x": ["10.0.0.1", "10.1.0.0/16", "2001:db8::1", "2001:db8:1::/48"]}}))
        .validate()
        .unwrap();
}

#[test]
fn groups_are_validated() {
    assert_eq!(
        err(json!({"groups": [{"id": "sg-1"}, {"id": ""}]})),
        FilterError::EmptyGroupId { index: 1 }
    );
    assert_eq!(
        err(json!({"groups": [{"id": "sg-1"}, {"id": "sg-2"}, {"id": "sg-1"}]})),
        FilterError::DuplicateGroup("sg-1".into())
    );
    let groups: Vec<_> = (0..17).map(|i| json!({"id": format!("sg-{i}")})).collect();
    assert_eq!(
        err(json!({ "groups": groups })),
        FilterError::TooManyGroups { count: 17, max: 16 }
    );
    let groups: Vec<_> = (0..16).map(|i| json!({"id": format!("sg-{i}")})).collect();
    config(json!({ "groups": groups })).validate().unwrap();
}

fn cidr4(i: usize) -> String {
    format!("10.{}.{}.0/24", i / 256, i % 256)
}

fn cidr6(i: usize) -> String {
    format!("2001:db8:{i:x}::/48")
}

#[test]
fn rule_quotas_count_cidrs_and_source_groups_per_family() {
    let rule = |cidrs: Vec<String>, sets: Vec<&str>| json!({"protocol": "tcp", "from_port": 80, "to_port": 80, "cidrs": cidrs, "source_groups": sets});
    let sets = json!({"web": ["10.9.9.9"]});
    // 60 IPv4 and 60 IPv6 rules in one direction: fine (quotas are per family).
    let ok = json!({"groups": [{"id": "sg-1",
        "ingress": [rule((0..60).map(cidr4).collect(), vec![]), rule((0..60).map(cidr6).collect(), vec![])]}]});
    config(ok).validate().unwrap();
    // 61 IPv4 rules spread over two entries.
    assert_eq!(
        err(json!({"groups": [{"id": "sg-1",
            "egress": [rule((0..30).map(cidr4).collect(), vec![]), rule((30..61).map(cidr4).collect(), vec![])]}]})),
        FilterError::TooManyRules {
            group: "sg-1".into(),
            direction: Direction::Egress,
            family: "IPv4",
            count: 61,
            max: 60
        }
    );
    // A source group counts for both families: 60 IPv6 CIDRs + 1 set.
    assert_eq!(
        err(json!({"address_sets": sets, "groups": [{"id": "sg-1",
            "ingress": [rule((0..60).map(cidr6).collect(), vec!["web"])]}]})),
        FilterError::TooManyRules {
            group: "sg-1".into(),
            direction: Direction::Ingress,
            family: "IPv6",
            count: 61,
            max: 60
        }
    );
    // 1 000 per NIC: 16 groups × 2 directions × 32 = 1 024.
    let groups: Vec<_> = (0..16)
        .map(|g| {
            json!({"id": format!("sg-{g}"),
                   "ingress": [rule((0..32).map(cidr4).collect(), vec![])],
                   "egress": [rule((0..32).map(cidr4).collect(), vec![])]})
        })
        .collect();
    assert_eq!(
        err(json!({ "groups": groups })),
        FilterError::TooManyRulesPerNic {
            count: 1024,
            max: 1000
        }
    );
    // Other quotas can be given (the benchmarks do).
    let c = config(json!({ "groups": groups }));
    Firewall::with_quotas(
        &c,
        Quotas {
            rules_per_nic: 2000,
            ..Quotas::EC2
        },
    )
    .unwrap();
}

#[test]
fn tracking_is_validated() {
    for (field, value, min, max) in [
        ("tcp_established_timeout", 59, 60, 432_000),
        ("tcp_established_timeout", 432_001, 60, 432_000),
        ("udp_stream_timeout", 59, 60, 180),
        ("udp_stream_timeout", 181, 60, 180),
        ("udp_timeout", 29, 30, 60),
        ("udp_timeout", 61, 30, 60),
    ] {
        assert_eq!(
            err(json!({"connection_tracking": {field: value}})),
            FilterError::TimeoutOutOfRange {
                field,
                value,
                min,
                max
            }
        );
    }
    assert_eq!(
        err(json!({"connection_tracking": {"max_flows": 0}})),
        FilterError::InvalidMaxFlows(0)
    );
    assert_eq!(
        err(json!({"connection_tracking": {"max_flows": MAX_FLOWS_LIMIT + 1}})),
        FilterError::InvalidMaxFlows(MAX_FLOWS_LIMIT + 1)
    );
    config(
        json!({"connection_tracking": {"tcp_established_timeout": 60, "udp_stream_timeout": 60,
                                           "udp_timeout": 60, "max_flows": 1}}),
    )
    .validate()
    .unwrap();
}

#[test]
fn a_refused_replacement_changes_nothing() {
    let mut fw = one_group(
        json!([{"protocol": "tcp", "from_port": 22, "to_port": 22, "cidrs": ["0.0.0.0/0"]}]),
        json!([]),
    );
    let bad = config(json!({"groups": [{"id": "sg-1", "ingress": [
        {"protocol": "tcp", "from_port": 80, "to_port": 80, "cidrs": ["0.0.0.0/0"]},
        {"protocol": "tcp", "from_port": 80, "to_port": 80, "cidrs": ["0.0.0.0/33"]}]}]}));
    assert!(matches!(
        fw.replace_rules(&bad),
        Err(FilterError::InvalidCidr { .. })
    ));
    allowed(fw.ingress(&tcp(REMOTE, 1000, GUEST, 22, SYN), 0));
    denied(
        fw.ingress(&tcp(REMOTE, 1000, GUEST, 80, SYN), 0),
        DenyReason::NoRule,
    );
}
