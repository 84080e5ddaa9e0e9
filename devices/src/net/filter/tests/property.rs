//! The compiled classifier against a naive linear reference, on random
//! rules and packets (deterministic seeds).

use super::super::packet::{Frag, Packet, L4};
use super::*;

/// One CIDR or address-set entry of a rule, as the reference sees it.
#[derive(Debug, Clone)]
struct RefEntry {
    id: u32,
    direction: Direction,
    v6: bool,
    start: u128,
    len: u8,
    /// `None`: all protocols.
    proto: Option<u8>,
    lo: u16,
    hi: u16,
}

const V4_BASES: [u128; 6] = [
    0x0a00_0000,
    0x0a01_0000,
    0x0a01_0200,
    0xc0a8_0000,
    0xc633_6400,
    0,
];
const V6_BASES: [u128; 4] = [0x2001_0db8 << 96, 0x2001_0db8_0001 << 80, 0xfd00 << 112, 0];

fn random_addr(rng: &mut Rng, v6: bool) -> u128 {
    if v6 {
        *rng.pick(&V6_BASES) | u128::from(rng.below(1 << 20)) | u128::from(rng.below(4)) << 64
    } else {
        *rng.pick(&V4_BASES) | u128::from(rng.below(1 << 12))
    }
}

fn random_prefix(rng: &mut Rng, v6: bool) -> (u128, u8) {
    let len = if v6 {
        *rng.pick(&[0u8, 16, 32, 48, 62, 64, 100, 108, 116, 120, 124, 128])
    } else {
        *rng.pick(&[0u8, 1, 8, 12, 16, 20, 22, 24, 26, 28, 31, 32])
    };
    let bits: u32 = if v6 { 128 } else { 32 };
    let host = bits - u32::from(len);
    let mask = if host == 128 {
        0
    } else {
        !((1u128 << host) - 1)
    } & if v6 { u128::MAX } else { 0xffff_ffff };
    (random_addr(rng, v6) & mask, len)
}

fn text(v6: bool, start: u128, len: u8) -> String {
    let a = if v6 {
        IpAddr::V6(start.into())
    } else {
        IpAddr::V4(u32::try_from(start).unwrap().into())
    };
    format!("{a}/{len}")
}

/// A random document, and its entries as the reference expands them.
fn random_config(rng: &mut Rng, max_rules: u64) -> (SecurityGroupsConfig, Vec<RefEntry>) {
    let mut sets = std::collections::BTreeMap::new();
    let mut set_prefixes = Vec::new();
    for s in 0..4 {
        let mut entries = Vec::new();
        let mut prefixes = Vec::new();
        for _ in 0..rng.below(5) {
            let v6 = rng.chance(40);
            let (start, len) = random_prefix(rng, v6);
            entries.push(text(v6, start, len));
            prefixes.push((v6, start, len));
        }
        sets.insert(format!("s{s}"), entries);
        set_prefixes.push(prefixes);
    }
    let mut groups = Vec::new();
    let mut refs = Vec::new();
    let mut id = 0u32;
    for g in 0..1 + rng.below(4) {
        let mut lists = [Vec::new(), Vec::new()];
        for direction in [Direction::Ingress, Direction::Egress] {
            for _ in 0..rng.below(max_rules + 1) {
                let protocol = *rng.pick(&[
                    "tcp", "udp", "icmp", "icmpv6", "-1", "6", "17", "47", "132", "1", "58", "all",
                ]);
                let number = match protocol {
                    "tcp" => Some(6),
                    "udp" => Some(17),
                    "icmp" => Some(1),
                    "icmpv6" => Some(58),
                    "-1" | "all" => None,
                    n => Some(n.parse::<u8>().unwrap()),
                };
                let (from, to, lo, hi) = match number {
                    Some(6 | 17) => {
                        let from: u16 = if rng.chance(20) {
                            u16::try_from(rng.below(65536)).unwrap()
                        } else {
                            *rng.pick(&[0, 1, 22, 53, 80, 443, 1024, 8080, 65535])
                        };
                        let span: u16 = *rng.pick(&[0, 0, 1, 10, 1000, 65535]);
                        let to = from.saturating_add(span);
                        (Some(i32::from(from)), Some(i32::from(to)), from, to)
                    }
                    Some(1 | 58) => {
                        let ty: i32 = *rng.pick(&[-1, 0, 3, 8, 11, 128, 129, 200]);
                        let code: i32 = if ty == -1 {
                            -1
                        } else {
                            *rng.pick(&[-1, 0, 1, 4, 255])
                        };
                        let (lo, hi) = match (ty, code) {
                            (-1, _) => (0, 65535),
                            (t, -1) => (
                                u16::try_from(t).unwrap() << 8,
                                u16::try_from(t).unwrap() << 8 | 255,
                            ),
                            (t, c) => {
                                let v = u16::try_from(t).unwrap() << 8 | u16::try_from(c).unwrap();
                                (v, v)
                            }
                        };
                        let absent = ty == -1 && rng.chance(50);
                        if absent {
                            (None, None, lo, hi)
                        } else {
                            (Some(ty), Some(code), lo, hi)
                        }
                    }
                    _ => (None, None, 0, 65535),
                };
                let mut cidrs = Vec::new();
                let mut source_groups = Vec::new();
                let peers = rng.below(4);
                for _ in 0..peers {
                    let v6 = rng.chance(40);
                    let (start, len) = random_prefix(rng, v6);
                    cidrs.push(text(v6, start, len));
                    refs.push(RefEntry {
                        id,
                        direction,
                        v6,
                        start,
                        len,
                        proto: number,
                        lo,
                        hi,
                    });
                    id += 1;
                }
                for _ in 0..rng.below(3) {
                    let s = usize::try_from(rng.below(4)).unwrap();
                    source_groups.push(format!("s{s}"));
                    for &(v6, start, len) in &set_prefixes[s] {
                        refs.push(RefEntry {
                            id,
                            direction,
                            v6,
                            start,
                            len,
                            proto: number,
                            lo,
                            hi,
                        });
                    }
                    id += 1;
                }
                if cidrs.is_empty() && source_groups.is_empty() {
                    cidrs.push("0.0.0.0/0".into());
                    refs.push(RefEntry {
                        id,
                        direction,
                        v6: false,
                        start: 0,
                        len: 0,
                        proto: number,
                        lo,
                        hi,
                    });
                    id += 1;
                }
                lists[direction.index()].push(Rule {
                    protocol: protocol.into(),
                    from_port: from,
                    to_port: to,
                    cidrs,
                    source_groups,
                });
            }
        }
        let [ingress, egress] = lists;
        groups.push(SecurityGroup {
            id: format!("sg-{g}"),
            ingress,
            egress,
        });
    }
    let config = SecurityGroupsConfig {
        groups,
        address_sets: sets,
        connection_tracking: ConnectionTracking::default(),
    };
    (config, refs)
}

fn contains(e: &RefEntry, v6: bool, addr: u128) -> bool {
    if e.v6 != v6 {
        return false;
    }
    let bits: u32 = if v6 { 128 } else { 32 };
    let host = bits - u32::from(e.len);
    host == 128 || (addr >> host) == (e.start >> host)
}

fn proto_matches(e: &RefEntry, proto: u8) -> bool {
    e.proto.is_none_or(|p| p == proto)
}

/// The rule the reference credits: longest prefix, then first.
fn reference(
    refs: &[RefEntry],
    direction: Direction,
    v6: bool,
    proto: u8,
    peer: u128,
    port: u16,
) -> u32 {
    refs.iter()
        .filter(|e| {
            e.direction == direction
                && contains(e, v6, peer)
                && proto_matches(e, proto)
                && (e.lo..=e.hi).contains(&port)
        })
        .min_by_key(|e| (std::cmp::Reverse(e.len), e.id))
        .map_or(classifier::NO_RULE, |e| e.id)
}

fn ref_zero_allows(
    refs: &[RefEntry],
    direction: Direction,
    v6: bool,
    proto: u8,
    port: u16,
) -> bool {
    refs.iter().any(|e| {
        e.direction == direction
            && e.v6 == v6
            && e.len == 0
            && proto_matches(e, proto)
            && (e.lo..=e.hi).contains(&port)
    })
}

fn ref_zero_all(refs: &[RefEntry], direction: Direction, v6: bool, proto: u8) -> bool {
    let mut ranges: Vec<(u32, u32)> = refs
        .iter()
        .filter(|e| e.direction == direction && e.v6 == v6 && e.len == 0 && proto_matches(e, proto))
        .map(|e| (u32::from(e.lo), u32::from(e.hi)))
        .collect();
    ranges.sort_unstable();
    let mut next = 0u32;
    for (lo, hi) in ranges {
        if lo > next {
            return false;
        }
        next = next.max(hi + 1);
    }
    next > 65535
}

fn random_packet<'a>(rng: &mut Rng) -> (Direction, Packet<'a>, u16) {
    let direction = if rng.chance(50) {
        Direction::Ingress
    } else {
        Direction::Egress
    };
    let v6 = rng.chance(40);
    let proto = *rng.pick(&[6u8, 6, 17, 17, 1, 58, 47, 132, 50]);
    let (src, dst) = (random_addr(rng, v6), random_addr(rng, v6));
    let port = |rng: &mut Rng| -> u16 {
        if rng.chance(50) {
            *rng.pick(&[
                0, 1, 22, 23, 53, 80, 443, 1023, 1024, 1025, 8080, 9000, 65534, 65535,
            ])
        } else {
            u16::try_from(rng.below(65536)).unwrap()
        }
    };
    let (l4, lookup_port) = match proto {
        6 | 17 => {
            let (sp, dp) = (port(rng), port(rng));
            (
                L4::Ports {
                    src: sp,
                    dst: dp,
                    flags: TCP_SYN,
                },
                dp,
            )
        }
        1 | 58 => {
            let ty = *rng.pick(&[0u8, 3, 8, 11, 128, 129, 200, 255]);
            let code = *rng.pick(&[0u8, 1, 4, 255]);
            (
                L4::Icmp {
                    ty,
                    code,
                    id: 1,
                    body: &[],
                },
                u16::from(ty) << 8 | u16::from(code),
            )
        }
        _ => (L4::Other, 0),
    };
    let packet = Packet {
        v6,
        src,
        dst,
        proto,
        hop_limit: 64,
        frag: Frag::Whole,
        l4,
    };
    (direction, packet, lookup_port)
}

fn compare(seed: u64, configs: usize, max_rules: u64, packets: usize) {
    let mut rng = Rng(seed);
    let quotas = Quotas {
        groups_per_nic: 16,
        rules_per_group_direction: 10_000,
        rules_per_nic: 100_000,
    };
    for case in 0..configs {
        let (config, refs) = random_config(&mut rng, max_rules);
        let fw = Firewall::with_quotas(&config, quotas).unwrap();
        for _ in 0..packets {
            let (direction, p, port) = random_packet(&mut rng);
            let peer = match direction {
                Direction::Ingress => p.src,
                Direction::Egress => p.dst,
            };
            let want = reference(&refs, direction, p.v6, p.proto, peer, port);
            let got = fw.classify(direction, &p);
            assert_eq!(got, want, "case {case}: {direction} {p:?}\n{config:#?}");
            if let L4::Ports { src, dst, .. } = p.l4 {
                let other = direction.opposite();
                let want = (ref_zero_allows(&refs, direction, p.v6, p.proto, dst)
                    && ref_zero_all(&refs, other, p.v6, p.proto))
                    || (ref_zero_all(&refs, direction, p.v6, p.proto)
                        && ref_zero_allows(&refs, other, p.v6, p.proto, src));
                assert_eq!(
                    fw.untracked(direction, &p, src, dst),
                    want,
                    "case {case}: untracked {p:?}"
                );
            }
        }
    }
}

#[test]
fn classifier_matches_a_linear_scan_on_small_rule_sets() {
    compare(0x5eed_0001, 400, 6, 200);
}

#[test]
fn classifier_matches_a_linear_scan_on_large_rule_sets() {
    compare(0x5eed_0002, 6, 300, 3000);
}

#[test]
fn random_frames_through_the_whole_path_agree_with_the_reference_on_new_flows() {
    // With no tracked flow in the way (a fresh firewall per packet is
    // too slow, so every packet gets its own source port and the
    // verdict on an opening packet is compared), the full path allows
    // exactly what the reference allows.
    let mut rng = Rng(0x5eed_0003);
    for _ in 0..50 {
        let (config, refs) = random_config(&mut rng, 6);
        let mut fw = Firewall::with_quotas(
            &config,
            Quotas {
                rules_per_nic: 100_000,
                rules_per_group_direction: 10_000,
                ..Quotas::EC2
            },
        )
        .unwrap();
        for n in 0..200u16 {
            let v6 = rng.chance(40);
            let remote = random_addr(&mut rng, v6);
            let guest = if v6 {
                (0x2001_0db8 << 96) | 5
            } else {
                0x0a00_0005
            };
            let (remote_text, guest_text) = if v6 {
                (
                    IpAddr::V6(remote.into()).to_string(),
                    IpAddr::V6(guest.into()).to_string(),
                )
            } else {
                (
                    IpAddr::V4(u32::try_from(remote).unwrap().into()).to_string(),
                    IpAddr::V4(u32::try_from(guest).unwrap().into()).to_string(),
                )
            };
            let dport = *rng.pick(&[22u16, 53, 80, 443, 8080, 65535]);
            let ingress = rng.chance(50);
            let frame = if ingress {
                tcp(&remote_text, 10_000 + n, &guest_text, dport, SYN)
            } else {
                tcp(&guest_text, 10_000 + n, &remote_text, dport, SYN)
            };
            let direction = if ingress {
                Direction::Ingress
            } else {
                Direction::Egress
            };
            let want = reference(&refs, direction, v6, 6, remote, dport) != classifier::NO_RULE;
            let got = if ingress {
                fw.ingress(&frame, 0)
            } else {
                fw.egress(&frame, 0)
            };
            assert_eq!(
                got.is_allowed(),
                want,
                "{direction} {remote_text} {dport} {got:?}"
            );
        }
    }
}
