//! The security-group document a NIC is given, its EC2 quotas and
//! validation, and its expansion into flat rule entries the classifier
//! compiles.
//!
//! The document is what the VMM reads from `--net …,sg=FILE` and from
//! `PUT /network-interfaces/{id}/security-groups`:
//!
//! ```json
//! { "groups": [ { "id": "sg-0a1b",
//!                 "ingress": [ {"protocol": "tcp", "from_port": 22, "to_port": 22,
//!                               "cidrs": ["10.0.0.0/16", "2001:db8::/32"],
//!                               "source_groups": ["sg-web"]} ],
//!                 "egress":  [ {"protocol": "-1", "cidrs": ["0.0.0.0/0", "::/0"]} ] } ],
//!   "address_sets": { "sg-web": ["10.0.99.6", "10.0.99.7"] },
//!   "connection_tracking": { "tcp_established_timeout": 432000, "udp_stream_timeout": 180,
//!                            "udp_timeout": 30, "max_flows": 262144 } }
//! ```
//!
//! Every field but a group's `id` and a rule's `protocol` may be left out.
//! Validation is all-or-nothing: [`SecurityGroupsConfig::validate`] (and so
//! `Firewall::new` and `Firewall::replace_rules`) either accepts the whole
//! document or names the first thing wrong with it.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

/// Default of [`ConnectionTracking::tcp_established_timeout`] (5 days).
pub const DEFAULT_TCP_ESTABLISHED_TIMEOUT: u32 = 432_000;
/// Default of [`ConnectionTracking::udp_stream_timeout`].
pub const DEFAULT_UDP_STREAM_TIMEOUT: u32 = 180;
/// Default of [`ConnectionTracking::udp_timeout`].
pub const DEFAULT_UDP_TIMEOUT: u32 = 30;
/// Default of [`ConnectionTracking::max_flows`].
pub const DEFAULT_MAX_FLOWS: u32 = 262_144;
/// Largest [`ConnectionTracking::max_flows`] accepted. The flow table
/// reserves 96 bytes of address space per flow (touched as flows come),
/// so this caps one NIC's table at 384 MiB.
pub const MAX_FLOWS_LIMIT: u32 = 4 << 20;

/// The security groups of one NIC and how their connections are tracked.
///
/// The default (no groups) lets nothing in and nothing out, as a NIC with
/// no security group would in EC2.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecurityGroupsConfig {
    /// The groups; their rules combine as a union.
    #[serde(default)]
    pub groups: Vec<SecurityGroup>,
    /// Named address lists a rule's `source_groups` refer to: the private
    /// addresses of the members of a referenced group, resolved by the
    /// agent. Entries are addresses or CIDR blocks, IPv4 or IPv6.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub address_sets: BTreeMap<String, Vec<String>>,
    /// Idle timeouts and the size of the flow table.
    #[serde(default)]
    pub connection_tracking: ConnectionTracking,
}

/// One security group: allow rules only.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecurityGroup {
    /// The group's id (`sg-…`), unique on the NIC; it names the group in
    /// errors and per-rule counters.
    pub id: String,
    /// Rules for traffic to the guest; peers are sources.
    #[serde(default)]
    pub ingress: Vec<Rule>,
    /// Rules for traffic from the guest; peers are destinations.
    #[serde(default)]
    pub egress: Vec<Rule>,
}

/// One rule, as EC2's `IpPermission`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// `tcp`, `udp`, `icmp`, `icmpv6`, `-1` or `all` (every protocol), or
    /// a protocol number `0`–`255` (`6`, `17`, `1` and `58` are the named
    /// four). Names are not case-sensitive.
    pub protocol: String,
    /// TCP/UDP: first port (required). ICMP/ICMPv6: the type, `-1` (or
    /// absent) for any. Ignored for other protocols, as in EC2.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_port: Option<i32>,
    /// TCP/UDP: last port (required). ICMP/ICMPv6: the code, `-1` (or
    /// absent) for any. Ignored for other protocols.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to_port: Option<i32>,
    /// Peer CIDR blocks (IPv4 or IPv6, host bits clear).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cidrs: Vec<String>,
    /// Peer address sets, by name in [`SecurityGroupsConfig::address_sets`].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub source_groups: Vec<String>,
}

/// EC2's connection-tracking settings of a NIC, in seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConnectionTracking {
    /// Idle timeout of established TCP connections, 60–432000.
    #[serde(default = "default_tcp_established")]
    pub tcp_established_timeout: u32,
    /// Idle timeout of UDP flows that have seen more than one
    /// request-response transaction, 60–180.
    #[serde(default = "default_udp_stream")]
    pub udp_stream_timeout: u32,
    /// Idle timeout of UDP flows seen in one direction only or for a
    /// single request-response transaction, 30–60.
    #[serde(default = "default_udp")]
    pub udp_timeout: u32,
    /// Most tracked flows at once, 1–[`MAX_FLOWS_LIMIT`]; a new flow
    /// beyond it is dropped (`conntrack_allowance_exceeded`).
    #[serde(default = "default_max_flows")]
    pub max_flows: u32,
}

fn default_tcp_established() -> u32 {
    DEFAULT_TCP_ESTABLISHED_TIMEOUT
}
fn default_udp_stream() -> u32 {
    DEFAULT_UDP_STREAM_TIMEOUT
}
fn default_udp() -> u32 {
    DEFAULT_UDP_TIMEOUT
}
fn default_max_flows() -> u32 {
    DEFAULT_MAX_FLOWS
}

impl Default for ConnectionTracking {
    fn default() -> Self {
        Self {
            tcp_established_timeout: DEFAULT_TCP_ESTABLISHED_TIMEOUT,
            udp_stream_timeout: DEFAULT_UDP_STREAM_TIMEOUT,
            udp_timeout: DEFAULT_UDP_TIMEOUT,
            max_flows: DEFAULT_MAX_FLOWS,
        }
    }
}

/// The quotas a document must keep to.
///
/// [`Quotas::EC2`] is what EC2 enforces and what `Firewall::new` uses;
/// `Firewall::with_quotas` takes others (the benchmarks raise them to
/// measure 10 000 rules).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quotas {
    /// Most groups on one NIC (EC2: 5 by default, up to 16 on request).
    pub groups_per_nic: usize,
    /// Most rules per group, direction and address family. As in EC2,
    /// each CIDR counts as one rule of its family and each source group
    /// as one rule of both families.
    pub rules_per_group_direction: usize,
    /// Most rules on one NIC: every CIDR and source group of every rule
    /// of every group, both directions, counted once.
    pub rules_per_nic: usize,
}

impl Quotas {
    /// EC2's quotas: 16 groups, 60 rules per group, direction and family,
    /// 1 000 rules per NIC.
    pub const EC2: Quotas = Quotas {
        groups_per_nic: 16,
        rules_per_group_direction: 60,
        rules_per_nic: 1000,
    };
}

impl Default for Quotas {
    fn default() -> Self {
        Self::EC2
    }
}

/// The direction of traffic, seen from the guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// To the guest.
    Ingress,
    /// From the guest.
    Egress,
}

impl Direction {
    pub(super) fn index(self) -> usize {
        match self {
            Direction::Ingress => 0,
            Direction::Egress => 1,
        }
    }

    pub(super) fn opposite(self) -> Direction {
        match self {
            Direction::Ingress => Direction::Egress,
            Direction::Egress => Direction::Ingress,
        }
    }
}

impl fmt::Display for Direction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Direction::Ingress => "ingress",
            Direction::Egress => "egress",
        })
    }
}

/// Where a rule is: `group`'s `direction` list, entry `rule`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleLocation {
    /// The group's id.
    pub group: String,
    /// Ingress or egress list.
    pub direction: Direction,
    /// Index in that list.
    pub rule: usize,
}

impl fmt::Display for RuleLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} rule {}", self.group, self.direction, self.rule)
    }
}

/// Why a document was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FilterError {
    /// More groups than the quota.
    #[error("{count} security groups on one NIC; at most {max}")]
    TooManyGroups {
        /// Groups given.
        count: usize,
        /// The quota.
        max: usize,
    },
    /// An empty group id.
    #[error("security group {index} has an empty id")]
    EmptyGroupId {
        /// Position of the group in `groups`.
        index: usize,
    },
    /// Two groups with one id.
    #[error("security group {0} is listed twice")]
    DuplicateGroup(String),
    /// More rules in one group, direction and family than the quota.
    #[error("{group} has {count} {family} {direction} rules; at most {max}")]
    TooManyRules {
        /// The group's id.
        group: String,
        /// Which list.
        direction: Direction,
        /// `IPv4` or `IPv6`.
        family: &'static str,
        /// Rules counted (CIDRs and source groups).
        count: usize,
        /// The quota.
        max: usize,
    },
    /// More rules on the NIC than the quota.
    #[error("{count} rules on one NIC; at most {max}")]
    TooManyRulesPerNic {
        /// Rules counted (CIDRs and source groups).
        count: usize,
        /// The quota.
        max: usize,
    },
    /// A protocol that is no name and no number 0–255.
    #[error("{at}: unknown protocol {protocol:?}")]
    UnknownProtocol {
        /// The rule.
        at: RuleLocation,
        /// What it says.
        protocol: String,
    },
    /// A TCP or UDP rule without both ports.
    #[error("{at}: TCP and UDP rules need from_port and to_port")]
    MissingPorts {
        /// The rule.
        at: RuleLocation,
    },
    /// Ports outside 0–65535 or from above to.
    #[error("{at}: port range {from}..={to} is not within 0..=65535 in order")]
    InvalidPortRange {
        /// The rule.
        at: RuleLocation,
        /// `from_port`.
        from: i32,
        /// `to_port`.
        to: i32,
    },
    /// An ICMP type or code outside -1–255, or a code with "any type".
    #[error("{at}: ICMP type {icmp_type} code {code} is invalid (each -1..=255; any type needs any code)")]
    InvalidIcmp {
        /// The rule.
        at: RuleLocation,
        /// `from_port`.
        icmp_type: i32,
        /// `to_port`.
        code: i32,
    },
    /// A rule with neither CIDRs nor source groups.
    #[error("{at}: a rule needs at least one CIDR or source group")]
    NoPeer {
        /// The rule.
        at: RuleLocation,
    },
    /// A CIDR that does not parse or has host bits set.
    #[error("{at}: invalid CIDR block {cidr:?}")]
    InvalidCidr {
        /// The rule.
        at: RuleLocation,
        /// What it says.
        cidr: String,
    },
    /// A source group naming no address set.
    #[error("{at}: no address set named {name:?}")]
    UnknownAddressSet {
        /// The rule.
        at: RuleLocation,
        /// The name.
        name: String,
    },
    /// An address-set entry that is no address or CIDR block.
    #[error("address set {set:?}: invalid address {address:?}")]
    InvalidAddress {
        /// The set.
        set: String,
        /// The entry.
        address: String,
    },
    /// A timeout outside EC2's range.
    #[error("{field} = {value} s is outside {min}..={max} s")]
    TimeoutOutOfRange {
        /// The field.
        field: &'static str,
        /// Its value.
        value: u32,
        /// Lowest allowed.
        min: u32,
        /// Highest allowed.
        max: u32,
    },
    /// `max_flows` of 0 or above [`MAX_FLOWS_LIMIT`].
    #[error("max_flows = {0} is outside 1..={MAX_FLOWS_LIMIT}")]
    InvalidMaxFlows(u32),
}

/// A protocol a rule matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Proto {
    /// Every protocol, every port.
    All,
    /// One protocol number.
    Number(u8),
}

/// Where one expanded rule entry sits in the document.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct RuleMeta {
    /// Index of the group in `groups`.
    pub group: usize,
    pub direction: Direction,
    /// Index in the group's list.
    pub rule: usize,
    /// Index among the rule's CIDRs, then its source groups.
    pub peer: usize,
}

/// One (direction, prefix, protocol, port interval) the classifier
/// compiles, allowed by rule `id`. An address set expands into one entry
/// per address, all with the same id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Entry {
    pub direction: Direction,
    pub v6: bool,
    /// First address of the prefix (IPv4 in the low 32 bits).
    pub start: u128,
    /// Prefix length.
    pub len: u8,
    pub proto: Proto,
    /// Port interval the entry allows: TCP/UDP destination ports,
    /// `type << 8 | code` for ICMP/ICMPv6, everything for the rest.
    pub lo: u16,
    pub hi: u16,
    /// Index in [`Expanded::rules`].
    pub id: u32,
}

/// A validated document, flattened.
#[derive(Debug, Clone)]
pub(super) struct Expanded {
    /// Group ids, in document order.
    pub groups: Vec<String>,
    /// One per CIDR or source group of every rule; the index is the rule id.
    pub rules: Vec<RuleMeta>,
    pub entries: Vec<Entry>,
    pub tracking: ConnectionTracking,
}

impl SecurityGroupsConfig {
    /// Checks the document against EC2's rules and quotas
    /// ([`Quotas::EC2`]).
    pub fn validate(&self) -> Result<(), FilterError> {
        self.expand(&Quotas::EC2).map(|_| ())
    }

    /// Validates the document against `quotas` and flattens it.
    pub(super) fn expand(&self, quotas: &Quotas) -> Result<Expanded, FilterError> {
        check_tracking(&self.connection_tracking)?;
        if self.groups.len() > quotas.groups_per_nic {
            return Err(FilterError::TooManyGroups {
                count: self.groups.len(),
                max: quotas.groups_per_nic,
            });
        }
        let sets = parse_address_sets(&self.address_sets)?;
        let mut seen = HashSet::new();
        let mut total = 0usize;
        let mut out = Expanded {
            groups: Vec::with_capacity(self.groups.len()),
            rules: Vec::new(),
            entries: Vec::new(),
            tracking: self.connection_tracking,
        };
        for (g, group) in self.groups.iter().enumerate() {
            if group.id.is_empty() {
                return Err(FilterError::EmptyGroupId { index: g });
            }
            if !seen.insert(group.id.as_str()) {
                return Err(FilterError::DuplicateGroup(group.id.clone()));
            }
            out.groups.push(group.id.clone());
            for (direction, rules) in [
                (Direction::Ingress, &group.ingress),
                (Direction::Egress, &group.egress),
            ] {
                let (mut v4, mut v6) = (0usize, 0usize);
                for (r, rule) in rules.iter().enumerate() {
                    let at = || RuleLocation {
                        group: group.id.clone(),
                        direction,
                        rule: r,
                    };
                    let (v4_here, v6_here) =
                        expand_rule(rule, &sets, g, direction, r, &at, &mut out)?;
                    v4 += v4_here;
                    v6 += v6_here;
                    total += rule.cidrs.len() + rule.source_groups.len();
                }
                for (family, count) in [("IPv4", v4), ("IPv6", v6)] {
                    if count > quotas.rules_per_group_direction {
                        return Err(FilterError::TooManyRules {
                            group: group.id.clone(),
                            direction,
                            family,
                            count,
                            max: quotas.rules_per_group_direction,
                        });
                    }
                }
            }
        }
        if total > quotas.rules_per_nic {
            return Err(FilterError::TooManyRulesPerNic {
                count: total,
                max: quotas.rules_per_nic,
            });
        }
        Ok(out)
    }
}

fn check_tracking(t: &ConnectionTracking) -> Result<(), FilterError> {
    for (field, value, min, max) in [
        (
            "tcp_established_timeout",
            t.tcp_established_timeout,
            60,
            432_000,
        ),
        ("udp_stream_timeout", t.udp_stream_timeout, 60, 180),
        ("udp_timeout", t.udp_timeout, 30, 60),
    ] {
        if !(min..=max).contains(&value) {
            return Err(FilterError::TimeoutOutOfRange {
                field,
                value,
                min,
                max,
            });
        }
    }
    if !(1..=MAX_FLOWS_LIMIT).contains(&t.max_flows) {
        return Err(FilterError::InvalidMaxFlows(t.max_flows));
    }
    Ok(())
}

/// A parsed prefix: (IPv6?, first address, length).
type Prefix = (bool, u128, u8);

fn parse_address_sets(
    sets: &BTreeMap<String, Vec<String>>,
) -> Result<BTreeMap<&str, Vec<Prefix>>, FilterError> {
    sets.iter()
        .map(|(name, entries)| {
            let prefixes = entries
                .iter()
                .map(|entry| {
                    let parsed = if entry.contains('/') {
                        parse_cidr(entry)
                    } else {
                        entry.parse::<IpAddr>().ok().map(host_prefix)
                    };
                    parsed.ok_or_else(|| FilterError::InvalidAddress {
                        set: name.clone(),
                        address: entry.clone(),
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;
            Ok((name.as_str(), prefixes))
        })
        .collect()
}

fn host_prefix(addr: IpAddr) -> Prefix {
    match addr {
        IpAddr::V4(a) => (false, u128::from(u32::from(a)), 32),
        IpAddr::V6(a) => (true, u128::from(a), 128),
    }
}

/// Parses `a.b.c.d/n` or `x::/n`; host bits must be clear, as in EC2.
pub(super) fn parse_cidr(text: &str) -> Option<Prefix> {
    let (addr, len) = text.split_once('/')?;
    if len.is_empty() || !len.bytes().all(|b| b.is_ascii_digit()) || len.len() > 3 {
        return None;
    }
    let len: u8 = len.parse().ok()?;
    let (v6, start, bits) = match addr.parse::<IpAddr>().ok()? {
        IpAddr::V4(a) => (false, u128::from(u32::from(a)), 32u8),
        IpAddr::V6(a) => (true, u128::from(a), 128u8),
    };
    if len > bits {
        return None;
    }
    let host_bits = u32::from(bits - len);
    let host_mask = if host_bits == 128 {
        u128::MAX
    } else {
        (1u128 << host_bits) - 1
    };
    if start & host_mask != 0 {
        return None;
    }
    Some((v6, start, len))
}

pub(super) fn parse_protocol(text: &str) -> Option<Proto> {
    let lower = text.to_ascii_lowercase();
    match lower.as_str() {
        "-1" | "all" => Some(Proto::All),
        "tcp" => Some(Proto::Number(6)),
        "udp" => Some(Proto::Number(17)),
        "icmp" => Some(Proto::Number(1)),
        "icmpv6" => Some(Proto::Number(58)),
        digits
            if !digits.is_empty()
                && digits.len() <= 3
                && digits.bytes().all(|b| b.is_ascii_digit()) =>
        {
            digits.parse().ok().map(Proto::Number)
        }
        _ => None,
    }
}

/// The interval of the classifier's 16-bit "port" a rule allows.
fn port_interval(
    rule: &Rule,
    proto: Proto,
    at: &dyn Fn() -> RuleLocation,
) -> Result<(u16, u16), FilterError> {
    match proto {
        Proto::Number(6 | 17) => {
            let (Some(from), Some(to)) = (rule.from_port, rule.to_port) else {
                return Err(FilterError::MissingPorts { at: at() });
            };
            match (u16::try_from(from), u16::try_from(to)) {
                (Ok(lo), Ok(hi)) if lo <= hi => Ok((lo, hi)),
                _ => Err(FilterError::InvalidPortRange { at: at(), from, to }),
            }
        }
        Proto::Number(1 | 58) => {
            let icmp_type = rule.from_port.unwrap_or(-1);
            let code = rule.to_port.unwrap_or(-1);
            let bad = || FilterError::InvalidIcmp {
                at: at(),
                icmp_type,
                code,
            };
            match (icmp_type, code) {
                (-1, -1) => Ok((0, u16::MAX)),
                (-1, _) => Err(bad()),
                _ => {
                    let t = u8::try_from(icmp_type).map_err(|_| bad())?;
                    let base = u16::from(t) << 8;
                    if code == -1 {
                        Ok((base, base | 0xff))
                    } else {
                        let c = u8::try_from(code).map_err(|_| bad())?;
                        Ok((base | u16::from(c), base | u16::from(c)))
                    }
                }
            }
        }
        // EC2: "If you specify a protocol number other than tcp, udp,
        // icmp, or icmpv6, traffic on all ports is allowed, regardless of
        // any port range you specify."
        _ => Ok((0, u16::MAX)),
    }
}

/// Flattens one rule into `out`; returns how many IPv4 and IPv6 rules it
/// counts as.
fn expand_rule(
    rule: &Rule,
    sets: &BTreeMap<&str, Vec<Prefix>>,
    group: usize,
    direction: Direction,
    index: usize,
    at: &dyn Fn() -> RuleLocation,
    out: &mut Expanded,
) -> Result<(usize, usize), FilterError> {
    let proto = parse_protocol(&rule.protocol).ok_or_else(|| FilterError::UnknownProtocol {
        at: at(),
        protocol: rule.protocol.clone(),
    })?;
    let (lo, hi) = port_interval(rule, proto, at)?;
    if rule.cidrs.is_empty() && rule.source_groups.is_empty() {
        return Err(FilterError::NoPeer { at: at() });
    }
    let (mut v4, mut v6) = (0, 0);
    let mut push = |peer: usize, prefixes: &mut dyn Iterator<Item = Prefix>| {
        let id = u32::try_from(out.rules.len()).unwrap_or(u32::MAX - 1);
        out.rules.push(RuleMeta {
            group,
            direction,
            rule: index,
            peer,
        });
        for (is_v6, start, len) in prefixes {
            out.entries.push(Entry {
                direction,
                v6: is_v6,
                start,
                len,
                proto,
                lo,
                hi,
                id,
            });
        }
    };
    for (peer, cidr) in rule.cidrs.iter().enumerate() {
        let prefix = parse_cidr(cidr).ok_or_else(|| FilterError::InvalidCidr {
            at: at(),
            cidr: cidr.clone(),
        })?;
        if prefix.0 {
            v6 += 1;
        } else {
            v4 += 1;
        }
        push(peer, &mut std::iter::once(prefix));
    }
    for (i, name) in rule.source_groups.iter().enumerate() {
        let prefixes = sets
            .get(name.as_str())
            .ok_or_else(|| FilterError::UnknownAddressSet {
                at: at(),
                name: name.clone(),
            })?;
        v4 += 1;
        v6 += 1;
        push(rule.cidrs.len() + i, &mut prefixes.iter().copied());
    }
    Ok((v4, v6))
}
