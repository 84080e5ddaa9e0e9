//! Security groups with EC2's rule fields and quotas.
//!
//! The API takes and returns rules as EC2's `IpPermissions`: a protocol,
//! a port range (or ICMP type and code), and any number of sources (IPv4
//! ranges, IPv6 ranges, other groups). Internally each source is one
//! [`RuleEntry`], which is also how EC2 counts rules against its quota of
//! 60 per direction (IPv4 and IPv6 counted apart) and how duplicates are
//! found.

use serde::{Deserialize, Serialize};

use super::cidr::Cidr;
use super::ids;

/// Most rules per direction of a group, counted per family (EC2's default).
pub const RULES_PER_DIRECTION: usize = 60;

/// A rule's direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    Ingress,
    Egress,
}

/// An IP protocol as EC2 names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Protocol {
    /// `-1`: every protocol, every port.
    All,
    Tcp,
    Udp,
    Icmp,
    Icmpv6,
    /// Any other protocol number (no ports).
    Number(u8),
}

impl Protocol {
    /// EC2's spellings: a name (any case) or a number; 6, 17, 1 and 58
    /// are the named ones.
    pub fn parse(text: &str) -> Result<Self, String> {
        let lower = text.to_ascii_lowercase();
        Ok(match lower.as_str() {
            "-1" | "all" => Protocol::All,
            "tcp" | "6" => Protocol::Tcp,
            "udp" | "17" => Protocol::Udp,
            "icmp" | "1" => Protocol::Icmp,
            "icmpv6" | "58" => Protocol::Icmpv6,
            _ => match lower.parse::<u8>() {
                Ok(n) if !lower.starts_with('+') => Protocol::Number(n),
                _ => {
                    return Err(format!(
                        "ip_protocol `{text}`: expected tcp, udp, icmp, icmpv6, -1 or a protocol number 0-255"
                    ))
                }
            },
        })
    }

    /// How EC2 writes it back.
    pub fn name(&self) -> String {
        match self {
            Protocol::All => "-1".into(),
            Protocol::Tcp => "tcp".into(),
            Protocol::Udp => "udp".into(),
            Protocol::Icmp => "icmp".into(),
            Protocol::Icmpv6 => "icmpv6".into(),
            Protocol::Number(n) => n.to_string(),
        }
    }
}

/// Where a rule allows traffic from (ingress) or to (egress).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    Cidr(String),
    Group(String),
}

/// One rule as stored: one protocol, one port range, one source.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct RuleEntry {
    /// EC2's protocol name (`tcp`, `-1`, `47`, …).
    pub ip_protocol: String,
    /// Port range (TCP/UDP), or ICMP type and code (-1: any); none for
    /// other protocols.
    pub from_port: Option<i32>,
    pub to_port: Option<i32>,
    pub source: Source,
}

impl RuleEntry {
    /// Whether the source is an IPv6 range (counted apart for the quota).
    pub fn is_ipv6(&self) -> bool {
        matches!(&self.source, Source::Cidr(c) if c.contains(':'))
    }
}

/// An IPv4 source range.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IpRange {
    pub cidr_ip: String,
}

/// An IPv6 source range.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ipv6Range {
    pub cidr_ipv6: String,
}

/// Another security group as the source.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupPair {
    pub group_id: String,
}

/// EC2's `IpPermission`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IpPermission {
    pub ip_protocol: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_port: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to_port: Option<i32>,
    #[serde(default)]
    pub ip_ranges: Vec<IpRange>,
    #[serde(default)]
    pub ipv6_ranges: Vec<Ipv6Range>,
    #[serde(default)]
    pub user_id_group_pairs: Vec<GroupPair>,
}

/// The ports of a permission, checked against its protocol as EC2 does.
fn ports(p: &IpPermission, protocol: Protocol) -> Result<(Option<i32>, Option<i32>), String> {
    match protocol {
        // EC2 ignores ports for "all" and port-less protocols.
        Protocol::All | Protocol::Number(_) => Ok((None, None)),
        Protocol::Tcp | Protocol::Udp => {
            let (Some(from), Some(to)) = (p.from_port, p.to_port) else {
                return Err(format!(
                    "{}: from_port and to_port are required (0-65535)",
                    protocol.name()
                ));
            };
            if !(0..=65535).contains(&from) || !(0..=65535).contains(&to) || from > to {
                return Err(format!(
                    "{}: port range {from}-{to} must be within 0-65535, from_port ≤ to_port",
                    protocol.name()
                ));
            }
            Ok((Some(from), Some(to)))
        }
        Protocol::Icmp | Protocol::Icmpv6 => {
            // from_port is the type, to_port the code; -1 means any.
            let ty = p.from_port.unwrap_or(-1);
            let code = p.to_port.unwrap_or(-1);
            if !(-1..=255).contains(&ty) || !(-1..=255).contains(&code) || (ty == -1 && code != -1)
            {
                return Err(format!(
                    "{}: type {ty} and code {code} must be -1 (any) or 0-255, and a code needs a type",
                    protocol.name()
                ));
            }
            Ok((Some(ty), Some(code)))
        }
    }
}

impl IpPermission {
    /// The permission as rule entries, one per source, validated.
    pub fn entries(&self) -> Result<Vec<RuleEntry>, String> {
        let protocol = Protocol::parse(&self.ip_protocol)?;
        let (from_port, to_port) = ports(self, protocol)?;
        let mut out = Vec::new();
        let mut push = |source| {
            out.push(RuleEntry {
                ip_protocol: protocol.name(),
                from_port,
                to_port,
                source,
            })
        };
        for r in &self.ip_ranges {
            let c: Cidr = r.cidr_ip.parse().map_err(|e| format!("cidr_ip: {e}"))?;
            if !c.addr.is_ipv4() {
                return Err(format!(
                    "cidr_ip `{}` is not IPv4 (use ipv6_ranges)",
                    r.cidr_ip
                ));
            }
            push(Source::Cidr(c.to_string()));
        }
        for r in &self.ipv6_ranges {
            let c: Cidr = r.cidr_ipv6.parse().map_err(|e| format!("cidr_ipv6: {e}"))?;
            if c.addr.is_ipv4() {
                return Err(format!("cidr_ipv6 `{}` is not IPv6", r.cidr_ipv6));
            }
            if protocol == Protocol::Icmp {
                return Err("icmp rules take IPv4 ranges; use icmpv6 for IPv6".into());
            }
            push(Source::Cidr(c.to_string()));
        }
        for g in &self.user_id_group_pairs {
            if !ids::is_valid(ids::Kind::SecurityGroup, &g.group_id) {
                return Err(format!(
                    "group_id `{}` is not a security group id",
                    g.group_id
                ));
            }
            push(Source::Group(g.group_id.clone()));
        }
        if out.is_empty() {
            return Err("a permission needs at least one ip_ranges, ipv6_ranges or user_id_group_pairs entry".into());
        }
        Ok(out)
    }
}

/// Entries back as permissions: one per protocol and port range, with
/// its sources, in a stable order.
pub fn permissions(entries: &[RuleEntry]) -> Vec<IpPermission> {
    let mut sorted = entries.to_vec();
    sorted.sort();
    let mut out: Vec<IpPermission> = Vec::new();
    for e in sorted {
        let same = out.last().is_some_and(|p| {
            p.ip_protocol == e.ip_protocol && p.from_port == e.from_port && p.to_port == e.to_port
        });
        if !same {
            out.push(IpPermission {
                ip_protocol: e.ip_protocol.clone(),
                from_port: e.from_port,
                to_port: e.to_port,
                ip_ranges: Vec::new(),
                ipv6_ranges: Vec::new(),
                user_id_group_pairs: Vec::new(),
            });
        }
        let Some(p) = out.last_mut() else { continue };
        match e.source {
            Source::Cidr(c) if c.contains(':') => p.ipv6_ranges.push(Ipv6Range { cidr_ipv6: c }),
            Source::Cidr(c) => p.ip_ranges.push(IpRange { cidr_ip: c }),
            Source::Group(g) => p.user_id_group_pairs.push(GroupPair { group_id: g }),
        }
    }
    out
}

/// A security group as stored and shown.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecurityGroup {
    pub group_id: String,
    pub group_name: String,
    pub description: String,
    pub ingress: Vec<RuleEntry>,
    pub egress: Vec<RuleEntry>,
    pub created_at: String,
}

impl SecurityGroup {
    /// EC2's default for a new group: nothing in, everything out.
    pub fn default_egress() -> Vec<RuleEntry> {
        vec![RuleEntry {
            ip_protocol: Protocol::All.name(),
            from_port: None,
            to_port: None,
            source: Source::Cidr("0.0.0.0/0".into()),
        }]
    }

    pub fn rules(&self, direction: Direction) -> &Vec<RuleEntry> {
        match direction {
            Direction::Ingress => &self.ingress,
            Direction::Egress => &self.egress,
        }
    }

    pub fn rules_mut(&mut self, direction: Direction) -> &mut Vec<RuleEntry> {
        match direction {
            Direction::Ingress => &mut self.ingress,
            Direction::Egress => &mut self.egress,
        }
    }

    /// The groups its rules name as sources.
    pub fn referenced_groups(&self) -> impl Iterator<Item = &str> {
        self.ingress
            .iter()
            .chain(&self.egress)
            .filter_map(|e| match &e.source {
                Source::Group(g) => Some(g.as_str()),
                Source::Cidr(_) => None,
            })
    }
}

/// Checks EC2's per-direction quota on `rules`.
pub fn check_quota(rules: &[RuleEntry]) -> Result<(), String> {
    let v6 = rules.iter().filter(|r| r.is_ipv6()).count();
    let v4 = rules.len() - v6;
    if v4 > RULES_PER_DIRECTION || v6 > RULES_PER_DIRECTION {
        return Err(format!(
            "the group would have {v4} IPv4 and {v6} IPv6 rules in one direction; the limit is {RULES_PER_DIRECTION} each"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn perm(json: &str) -> IpPermission {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn permissions_validate_like_ec2() {
        let ok = perm(
            r#"{"ip_protocol": "TCP", "from_port": 22, "to_port": 22, "ip_ranges": [{"cidr_ip": "10.0.0.0/8"}], "user_id_group_pairs": [{"group_id": "sg-0123456789abcdef0"}]}"#,
        );
        let entries = ok.entries().unwrap();
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[0].ip_protocol, "tcp");
        assert_eq!(permissions(&entries).len(), 1);
        let all = perm(
            r#"{"ip_protocol": "-1", "from_port": 5, "ipv6_ranges": [{"cidr_ipv6": "::/0"}]}"#,
        );
        assert_eq!(all.entries().unwrap()[0].from_port, None);
        for bad in [
            r#"{"ip_protocol": "tcp", "from_port": 22, "ip_ranges": [{"cidr_ip": "0.0.0.0/0"}]}"#,
            r#"{"ip_protocol": "tcp", "from_port": 30, "to_port": 20, "ip_ranges": [{"cidr_ip": "0.0.0.0/0"}]}"#,
            r#"{"ip_protocol": "udp", "from_port": 0, "to_port": 70000, "ip_ranges": [{"cidr_ip": "0.0.0.0/0"}]}"#,
            r#"{"ip_protocol": "icmp", "from_port": -1, "to_port": 3, "ip_ranges": [{"cidr_ip": "0.0.0.0/0"}]}"#,
            r#"{"ip_protocol": "gre", "ip_ranges": [{"cidr_ip": "0.0.0.0/0"}]}"#,
            r#"{"ip_protocol": "256", "ip_ranges": [{"cidr_ip": "0.0.0.0/0"}]}"#,
            r#"{"ip_protocol": "tcp", "from_port": 1, "to_port": 2}"#,
            r#"{"ip_protocol": "tcp", "from_port": 1, "to_port": 2, "ip_ranges": [{"cidr_ip": "10.0.0.1/8"}]}"#,
            r#"{"ip_protocol": "tcp", "from_port": 1, "to_port": 2, "ip_ranges": [{"cidr_ip": "::/0"}]}"#,
            r#"{"ip_protocol": "icmp", "ipv6_ranges": [{"cidr_ipv6": "::/0"}]}"#,
            r#"{"ip_protocol": "tcp", "from_port": 1, "to_port": 2, "user_id_group_pairs": [{"group_id": "web"}]}"#,
        ] {
            assert!(perm(bad).entries().is_err(), "{bad}");
        }
    }

    #[test]
    fn quota_counts_families_apart() {
        let entry = |cidr: &str| RuleEntry {
            ip_protocol: "tcp".into(),
            from_port: Some(1),
            to_port: Some(1),
            source: Source::Cidr(cidr.into()),
        };
        let mut rules: Vec<RuleEntry> = (0..60).map(|i| entry(&format!("10.0.{i}.0/24"))).collect();
        rules.extend((0..60).map(|i| entry(&format!("2001:db8:{i:x}::/48"))));
        assert!(check_quota(&rules).is_ok());
        rules.push(entry("10.1.0.0/16"));
        assert!(check_quota(&rules).is_err());
    }
}
