//! Security-group filter: the cost of a packet of an established flow and
//! of a packet that needs the rules, with 10 to 10 000 rules.
//!
//! EC2 allows at most 1 000 rules on a NIC, so the firewall is built with
//! `Firewall::with_quotas` and raised quotas; the rules are spread over 16
//! groups. Run with `cargo bench -p stratus-devices --bench security_groups`
//! (add `-- --quick` for a short run).

use std::hint::black_box;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use serde_json::json;
use stratus_devices::net::filter::{Firewall, Quotas, SecurityGroupsConfig, SWEEP_BUDGET};

const GUEST: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 5);
const SYN: u8 = 0x02;
const ACK: u8 = 0x10;
const SYN_ACK: u8 = SYN | ACK;

/// An Ethernet/IPv4/TCP frame with 64 bytes of payload.
fn tcp(src: Ipv4Addr, sp: u16, dst: Ipv4Addr, dp: u16, flags: u8) -> Vec<u8> {
    let mut f = vec![0x02, 0, 0, 0, 0, 1, 0x02, 0, 0, 0, 0, 2, 0x08, 0x00];
    let total: u16 = 20 + 20 + 64;
    f.extend_from_slice(&[0x45, 0]);
    f.extend_from_slice(&total.to_be_bytes());
    f.extend_from_slice(&[0, 0, 0x40, 0, 64, 6, 0, 0]);
    f.extend_from_slice(&src.octets());
    f.extend_from_slice(&dst.octets());
    f.extend_from_slice(&sp.to_be_bytes());
    f.extend_from_slice(&dp.to_be_bytes());
    f.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0, 0x50, flags, 0xff, 0xff, 0, 0, 0, 0]);
    f.extend_from_slice(&[0xab; 64]);
    f
}

/// Rewrites the source address and port of a frame from [`tcp`].
fn set_source(frame: &mut [u8], src: Ipv4Addr, sp: u16) {
    frame[26..30].copy_from_slice(&src.octets());
    frame[34..36].copy_from_slice(&sp.to_be_bytes());
}

/// xorshift64*.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn u32(&mut self) -> u32 {
        u32::try_from(self.next() >> 32).unwrap()
    }

    fn below16(&mut self, n: u16) -> u16 {
        u16::try_from(self.below(u64::from(n))).unwrap()
    }
}

/// `rules` ingress rules (one CIDR each: TCP, UDP and ICMP, prefixes of
/// /16 to /32 inside 10.0.0.0/8, single ports and small ranges) over 16
/// groups, and all traffic out. The first rule is TCP 22 from
/// 10.200.0.0/16, which the new-flow benchmark opens flows through.
fn config(rules: usize) -> SecurityGroupsConfig {
    let mut rng = Rng(0x5ec_0000 + rules as u64);
    let mut groups: Vec<Vec<serde_json::Value>> = vec![Vec::new(); 16];
    for i in 0..rules {
        let rule = if i == 0 {
            json!({"protocol": "tcp", "from_port": 22, "to_port": 22, "cidrs": ["10.200.0.0/16"]})
        } else {
            let len = 16 + u32::from(rng.below16(17));
            let addr = 0x0a00_0000 | (rng.u32() & 0x00ff_ffff);
            let addr = addr & (u32::MAX << (32 - len));
            let cidr = format!("{}/{len}", Ipv4Addr::from(addr));
            match rng.below(10) {
                0..=5 => {
                    let from = 1 + rng.below16(65000);
                    let to = if rng.below(4) == 0 {
                        from + rng.below16(100)
                    } else {
                        from
                    };
                    json!({"protocol": "tcp", "from_port": from, "to_port": to, "cidrs": [cidr]})
                }
                6..=8 => {
                    let port = 1 + rng.below16(65000);
                    json!({"protocol": "udp", "from_port": port, "to_port": port, "cidrs": [cidr]})
                }
                _ => {
                    json!({"protocol": "icmp", "from_port": rng.below(20), "to_port": -1, "cidrs": [cidr]})
                }
            }
        };
        groups[i % 16].push(rule);
    }
    let groups: Vec<_> = groups
        .into_iter()
        .enumerate()
        .map(|(g, ingress)| {
            let egress = if g == 0 {
                json!([{"protocol": "-1", "cidrs": ["0.0.0.0/0"]}])
            } else {
                json!([])
            };
            json!({"id": format!("sg-{g}"), "ingress": ingress, "egress": egress})
        })
        .collect();
    serde_json::from_value(json!({ "groups": groups })).unwrap()
}

fn firewall(rules: usize) -> Firewall {
    let quotas = Quotas {
        groups_per_nic: 16,
        rules_per_group_direction: 1000,
        rules_per_nic: 20_000,
    };
    Firewall::with_quotas(&config(rules), quotas).unwrap()
}

fn benches(c: &mut Criterion) {
    let mut group = c.benchmark_group("security_groups");
    group
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    for rules in [10, 100, 1000, 10_000] {
        // A packet of an established flow the guest opened.
        let remote = Ipv4Addr::new(198, 51, 100, 7);
        let mut fw = firewall(rules);
        assert!(fw
            .egress(&tcp(GUEST, 40000, remote, 443, SYN), 0)
            .is_allowed());
        assert!(fw
            .ingress(&tcp(remote, 443, GUEST, 40000, SYN_ACK), 0)
            .is_allowed());
        assert!(fw
            .egress(&tcp(GUEST, 40000, remote, 443, ACK), 0)
            .is_allowed());
        let reply = tcp(remote, 443, GUEST, 40000, ACK);
        group.bench_with_input(BenchmarkId::new("established", rules), &rules, |b, _| {
            b.iter(|| black_box(fw.ingress(black_box(&reply), 1)))
        });

        // Packets of no flow from 4 096 sources across 10.0.0.0/8 (some
        // allowed, most not): parse, one table miss, classification; no
        // flow is opened (ACK, not SYN).
        let mut fw = firewall(rules);
        let mut rng = Rng(7);
        let frames: Vec<Vec<u8>> = (0..4096)
            .map(|_| {
                let src = Ipv4Addr::from(0x0a00_0000 | (rng.u32() & 0x00ff_ffff));
                let dp = 1 + rng.below16(65000);
                tcp(src, 50000, GUEST, dp, ACK)
            })
            .collect();
        let mut i = 0;
        group.bench_with_input(BenchmarkId::new("classify", rules), &rules, |b, _| {
            b.iter(|| {
                i = (i + 1) & 4095;
                black_box(fw.ingress(black_box(&frames[i]), 1))
            })
        });

        // New flows: a SYN from a new source port (and address) each
        // time, allowed by a rule, inserted into the flow table. The clock
        // moves 1 ms per packet, so flows from 120 s back have expired.
        // After every 1 000 packets one sweep of SWEEP_BUDGET slots (the
        // datapath's periodic work) frees expired slots, untimed: it keeps
        // the table in a steady state (about 120 000 live flows, well
        // under the limit) and is timed on its own (`sweep` line).
        let mut fw = firewall(rules);
        let mut syn = tcp(Ipv4Addr::new(10, 200, 0, 1), 1, GUEST, 22, SYN);
        let mut n: u64 = 0;
        let mut sweeps = Duration::ZERO;
        let mut sweep_count = 0u32;
        group.bench_with_input(BenchmarkId::new("new_flow", rules), &rules, |b, _| {
            b.iter_custom(|iters| {
                let mut timed = Duration::ZERO;
                let mut left = iters;
                while left > 0 {
                    let batch = left.min(1000);
                    let start = Instant::now();
                    for _ in 0..batch {
                        n += 1;
                        let src = Ipv4Addr::from(
                            0x0ac8_0000 | u32::try_from((n >> 16) & 0xffff).unwrap(),
                        );
                        set_source(&mut syn, src, u16::try_from(n & 0xffff).unwrap());
                        black_box(fw.ingress(black_box(&syn), n));
                    }
                    timed += start.elapsed();
                    left -= batch;
                    let start = Instant::now();
                    black_box(fw.expire(n, SWEEP_BUDGET));
                    sweeps += start.elapsed();
                    sweep_count += 1;
                }
                timed
            })
        });
        eprintln!(
            "security_groups/sweep/{rules}: {:.1} us per sweep of {SWEEP_BUDGET} slots (mean of {sweep_count}, {} flows in the table)",
            sweeps.as_secs_f64() * 1e6 / f64::from(sweep_count.max(1)),
            fw.flows()
        );
        let mut denied = 0;
        fw.write_metrics(&mut |name, value| {
            if name == "conntrack_allowance_exceeded" {
                denied = value;
            }
        });
        assert_eq!(denied, 0, "new flows were refused");
    }
    group.finish();
}

criterion_group!(security_groups, benches);
criterion_main!(security_groups);
