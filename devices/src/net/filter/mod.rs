//! EC2 security groups with connection tracking, for one NIC.
//!
//! A pure library: no file descriptors, no threads, no clock. The caller
//! hands in each Ethernet frame with the time (`now_ms`, any monotonic
//! millisecond clock) and gets a [`Verdict`]; it runs
//! [`Firewall::expire`] now and then to sweep idle flows. Frames reach the
//! firewall already source-checked; they may be offloaded (up to 64 KiB,
//! partial checksums): only headers are read.
//!
//! # Semantics (EC2's)
//!
//! * Rules only allow. The groups of a NIC combine as a union; with no
//!   group nothing goes in or out. Nothing is implied: a group lets all
//!   traffic out only through an explicit egress `-1` `0.0.0.0/0` rule.
//! * **Stateful.** A packet of a tracked flow passes whatever the rules
//!   say, in both directions, and tracked flows outlive the rules that
//!   let them in until they go idle for their timeout.
//! * **Untracked flows.** AWS: "If a security group rule permits TCP or
//!   UDP flows for all traffic (0.0.0.0/0 or ::/0) and there is a
//!   corresponding rule in the other direction that permits all response
//!   traffic (0.0.0.0/0 or ::/0) for all ports (0-65535), then that flow
//!   of traffic is not tracked." A TCP or UDP packet with no flow,
//!   allowed by the rules of its direction D, is untracked when either
//!   - a `/0` rule of D allows it, and `/0` rules of the other direction
//!     allow that protocol on every port (it opens an untracked flow), or
//!   - `/0` rules of D allow that protocol on every port, and a `/0` rule
//!     of the other direction allows its reverse (it answers one).
//!
//!   The two cases are one flow seen from either end, so both directions
//!   of an untracked flow are judged by the rules alone, packet by
//!   packet: removing the rule cuts it at once. ICMP and other protocols
//!   are always tracked.
//! * **TCP** flows are opened only by a SYN without ACK (as Linux with
//!   `nf_conntrack_tcp_loose = 0`): a segment of no flow that the rules
//!   allow passes but tracks nothing, so a connection cut by a rule change
//!   cannot be revived by the other end's next segment. States and idle
//!   timeouts: SYN seen, SYN-ACK seen and FIN seen 120 s, RST seen 10 s
//!   (nf_conntrack's defaults), established `tcp_established_timeout`. A
//!   SYN opening a flow again on a closing or reset one is judged anew.
//! * **UDP**, after EC2's documentation: `udp_timeout` while the flow has
//!   been seen one way or for a single request-response transaction,
//!   `udp_stream_timeout` once it has seen more than one.
//! * **ICMP/ICMPv6**: a query (echo, timestamp, information, address mask;
//!   ICMPv6 echo and node information) opens a flow keyed by addresses and
//!   identifier that its reply matches, idle timeout 30 s. An error
//!   (destination unreachable, source quench, time exceeded, parameter
//!   problem; ICMPv6 destination unreachable, packet too big, time
//!   exceeded, parameter problem) passes when the packet it carries
//!   belongs to a tracked flow, in that flow's reverse direction. Other
//!   ICMP messages, replies and errors of no flow are judged by the
//!   rules alone and track nothing.
//! * **Other protocols**: tracked by addresses and protocol only, either
//!   way, idle timeout 600 s, as EC2 does.
//! * **Fragments**: the first fragment is judged like an unfragmented
//!   packet; later ones (no transport header) pass only when the first
//!   fragment of their datagram passed (see `fragments.rs`). IPv4 and
//!   IPv6 alike.
//! * **Not filtered**: frames that are not IP (ARP must work for anything
//!   to; EC2 answers it in the VPC fabric, outside security groups), and
//!   IPv6 neighbor discovery (router solicitation/advertisement, neighbor
//!   solicitation/advertisement, redirect, with hop limit 255, which
//!   proves they never crossed a router, and a link-local or unspecified
//!   source, a link-local destination or a link-scope multicast one) and
//!   MLD (hop limit 1 from a link-local or unspecified source): the
//!   link-local control plane
//!   between the guest, its neighbors and its router, which EC2 never
//!   subjects to security groups, and without which IPv6 stops working.
//! * Denied packets are dropped silently (counted).
//!
//! # Performance
//!
//! A packet of a tracked flow costs one hash lookup in a table allocated
//! once for `max_flows` flows; nothing allocates per packet or per flow.
//! A new flow is classified in two binary searches (see `classifier.rs`),
//! never by scanning rules. When the table holds `max_flows` flows, a new
//! flow takes the place of an expired one on its probe path, or of one
//! swept then among the 64 slots after its home or the next 256 of the
//! incremental sweep; failing that it is dropped and counted
//! (`conntrack_allowance_exceeded`), as EC2 does when the conntrack
//! allowance is exceeded.

/// How often the datapath sweeps the flow table for idle flows
/// ([`Firewall::expire`]). A lookup treats an idle flow as gone at once;
/// the sweep frees its slot, so the table's count stays near the live
/// flows and a new flow rarely has to make room itself.
pub const SWEEP_INTERVAL_MS: u64 = 100;
/// Slots looked at per sweep: 8 192 every 100 ms covers the default table
/// (524 288 slots) in under 7 s, each sweep reading the tags in order
/// and a slot only where one is occupied, so no sweep stalls the
/// datapath for long (measured by the `security_groups` bench).
pub const SWEEP_BUDGET: usize = 8192;

mod classifier;
mod config;
mod conntrack;
mod eytzinger;
mod fragments;
mod packet;

#[cfg(test)]
mod tests;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::flow_log::FlowTuple;

pub use config::{
    ConnectionTracking, Direction, FilterError, Quotas, Rule, RuleLocation, SecurityGroup,
    SecurityGroupsConfig, DEFAULT_MAX_FLOWS, DEFAULT_TCP_ESTABLISHED_TIMEOUT,
    DEFAULT_UDP_STREAM_TIMEOUT, DEFAULT_UDP_TIMEOUT, MAX_FLOWS_LIMIT,
};

use classifier::{Classifier, NO_RULE};
use config::RuleMeta;
use conntrack::{
    Flow, FlowTable, Key, Lookup, State, Timeouts, FLAG_ORIG_EGRESS, FLAG_ORIG_IS_B, STATES,
};
use fragments::{DatagramId, Fragments};
use packet::{
    EmbeddedL4, Frag, Packet, Parsed, IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_TCP, IPPROTO_UDP, L4,
    TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN,
};

/// Idle timeout of TCP flows not yet established or closing.
pub const TCP_TRANSITORY_TIMEOUT_MS: u64 = 120_000;
/// Idle timeout of TCP flows after a RST.
pub const TCP_RESET_TIMEOUT_MS: u64 = 10_000;
/// Idle timeout of ICMP query flows.
pub const ICMP_TIMEOUT_MS: u64 = 30_000;
/// Idle timeout of flows of other protocols (EC2: 600 s).
pub const OTHER_TIMEOUT_MS: u64 = 600_000;

/// A flow, as a flow log names it: the packet's own source and
/// destination, ports, protocol. Protocols without ports (ICMP, ICMPv6,
/// …) give 0 for both, as EC2's flow-log records show them and as
/// [`FlowTuple`] (which it converts into) has them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FlowKey {
    /// Source address.
    pub src: IpAddr,
    /// Destination address.
    pub dst: IpAddr,
    /// Source port.
    pub src_port: u16,
    /// Destination port.
    pub dst_port: u16,
    /// IP protocol number (IPv6: the upper-layer header).
    pub protocol: u8,
}

impl From<FlowKey> for FlowTuple {
    fn from(k: FlowKey) -> FlowTuple {
        FlowTuple {
            src: k.src,
            dst: k.dst,
            src_port: k.src_port,
            dst_port: k.dst_port,
            protocol: k.protocol,
        }
    }
}

/// Why a packet was denied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DenyReason {
    /// No tracked flow and no rule allows it.
    NoRule,
    /// A rule allows it but the flow table is full.
    ConntrackFull,
    /// A later fragment of no allowed first fragment.
    Fragment,
    /// IP headers too short or inconsistent to judge.
    Malformed,
    /// A VLAN-tagged frame (the NIC is an untagged port).
    VlanTagged,
}

/// The firewall's decision on a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Let it through. `flow` is `None` for frames that are not IP.
    Allow {
        /// The packet's flow.
        flow: Option<FlowKey>,
    },
    /// Drop it (already counted).
    Deny {
        /// Why.
        reason: DenyReason,
        /// The packet's flow, if its headers could be read.
        flow: Option<FlowKey>,
    },
}

impl Verdict {
    /// Whether the frame may pass.
    pub fn is_allowed(&self) -> bool {
        matches!(self, Verdict::Allow { .. })
    }
}

/// One rule for [`Firewall::rule_hits`]: rule `rule` of `group`'s
/// `direction` list, its CIDR or source group number `peer` (CIDRs first,
/// then source groups), which EC2 counts as a rule of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RuleRef<'a> {
    /// The group's id.
    pub group: &'a str,
    /// Ingress or egress.
    pub direction: Direction,
    /// Index in the group's list.
    pub rule: usize,
    /// Index among the rule's CIDRs, then source groups.
    pub peer: usize,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Counters {
    allowed_new: u64,
    allowed_tracked: u64,
    allowed_untracked: u64,
    denied_ingress: u64,
    denied_egress: u64,
    allowance_exceeded: u64,
    expired: u64,
    unfiltered: u64,
}

fn bump(counter: &mut u64) {
    *counter = counter.saturating_add(1);
}

/// How a packet was judged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    /// By a tracked flow (or a related one, or its datagram).
    Tracked,
    /// By a rule, which opened a tracked flow.
    New(u32),
    /// By a rule alone.
    Untracked(u32),
    Denied(DenyReason),
}

/// What a flow key is built from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KeyL4 {
    Ports(u16, u16),
    IcmpRequest { id: u16, ty: u8 },
    IcmpReply { id: u16, request: u8 },
    Other,
}

/// The firewall of one NIC: compiled rules, flow table, counters.
#[derive(Debug)]
pub struct Firewall {
    quotas: Quotas,
    groups: Vec<String>,
    rules: Vec<RuleMeta>,
    hits: Vec<u64>,
    classifier: Classifier,
    timeouts: Timeouts,
    table: FlowTable,
    fragments: Fragments,
    counters: Counters,
}

fn timeouts(t: &ConnectionTracking) -> Timeouts {
    let mut out = [0; STATES];
    let secs = |s: u32| u64::from(s) * 1000;
    out[State::TcpSynSent as usize] = TCP_TRANSITORY_TIMEOUT_MS;
    out[State::TcpSynReceived as usize] = TCP_TRANSITORY_TIMEOUT_MS;
    out[State::TcpEstablished as usize] = secs(t.tcp_established_timeout);
    out[State::TcpClosing as usize] = TCP_TRANSITORY_TIMEOUT_MS;
    out[State::TcpReset as usize] = TCP_RESET_TIMEOUT_MS;
    out[State::UdpOneWay as usize] = secs(t.udp_timeout);
    out[State::UdpReplied as usize] = secs(t.udp_timeout);
    out[State::UdpReplied2 as usize] = secs(t.udp_timeout);
    out[State::UdpStream as usize] = secs(t.udp_stream_timeout);
    out[State::Icmp as usize] = ICMP_TIMEOUT_MS;
    out[State::Other as usize] = OTHER_TIMEOUT_MS;
    out
}

fn ip(v6: bool, addr: u128) -> IpAddr {
    if v6 {
        IpAddr::V6(Ipv6Addr::from(addr))
    } else {
        IpAddr::V4(Ipv4Addr::from(u32::try_from(addr).unwrap_or(0)))
    }
}

/// ICMP(v6) queries: `(is a request, the request's type)`.
fn icmp_query(v6: bool, ty: u8) -> Option<(bool, u8)> {
    match (v6, ty) {
        (false, 8 | 13 | 15 | 17) | (true, 128 | 139) => Some((true, ty)),
        (false, 0) => Some((false, 8)),
        (false, 14 | 16 | 18) => Some((false, ty - 1)),
        (true, 129 | 140) => Some((false, ty - 1)),
        _ => None,
    }
}

fn icmp_error(v6: bool, ty: u8) -> bool {
    if v6 {
        matches!(ty, 1..=4)
    } else {
        matches!(ty, 3 | 4 | 11 | 12)
    }
}

/// IPv6 neighbor discovery and MLD: never filtered (see the module docs).
fn link_local_control(p: &Packet<'_>) -> bool {
    let L4::Icmp { ty, .. } = p.l4 else {
        return false;
    };
    if !p.v6 || p.proto != IPPROTO_ICMPV6 {
        return false;
    }
    let link_local = |a: u128| a >> 118 == 0xfe80 >> 6;
    let link_scope_multicast = p.dst >> 112 == 0xff02;
    match ty {
        // The hop limit proves the message crossed no router; the
        // addresses keep it to the link (no global-to-global messages
        // past the rules).
        133..=137 => {
            p.hop_limit == 255
                && (link_local(p.src) || link_local(p.dst) || link_scope_multicast || p.src == 0)
        }
        130..=132 | 143 => p.hop_limit == 1 && (link_local(p.src) || p.src == 0),
        _ => false,
    }
}

fn flow_key(p: &Packet<'_>) -> FlowKey {
    let (src_port, dst_port) = match p.l4 {
        L4::Ports { src, dst, .. } => (src, dst),
        L4::Icmp { .. } | L4::Other | L4::None => (0, 0),
    };
    FlowKey {
        src: ip(p.v6, p.src),
        dst: ip(p.v6, p.dst),
        src_port,
        dst_port,
        protocol: p.proto,
    }
}

/// The canonical key of a packet and whether its source is the key's
/// first endpoint.
#[inline(always)]
fn conn_key(v6: bool, proto: u8, src: u128, dst: u128, l4: KeyL4) -> (Key, bool) {
    match l4 {
        KeyL4::Ports(sp, dp) => {
            if (src, sp) <= (dst, dp) {
                (Key::new(v6, proto, (src, sp), (dst, dp)), true)
            } else {
                (Key::new(v6, proto, (dst, dp), (src, sp)), false)
            }
        }
        KeyL4::IcmpRequest { id, ty } => {
            (Key::new(v6, proto, (src, id), (dst, u16::from(ty))), true)
        }
        KeyL4::IcmpReply { id, request } => (
            Key::new(v6, proto, (dst, id), (src, u16::from(request))),
            false,
        ),
        KeyL4::Other => {
            if src <= dst {
                (Key::new(v6, proto, (src, 0), (dst, 0)), true)
            } else {
                (Key::new(v6, proto, (dst, 0), (src, 0)), false)
            }
        }
    }
}

/// Whether a packet from the key's first endpoint (`from_a`) travelling
/// in `direction` belongs to `flow`: the originator's packets go the way
/// the flow was opened, the responder's the other way. Other protocols
/// match either way (EC2 tracks them by addresses only).
fn belongs(flow: Flow, proto_other: bool, from_a: bool, direction: Direction) -> bool {
    if proto_other {
        return true;
    }
    let from_orig = from_a != (flow.flags & FLAG_ORIG_IS_B != 0);
    let opened_egress = flow.flags & FLAG_ORIG_EGRESS != 0;
    from_orig == (opened_egress == (direction == Direction::Egress))
}

/// Whether the packet came from the flow's originator.
fn from_originator(flow: Flow, from_a: bool) -> bool {
    from_a != (flow.flags & FLAG_ORIG_IS_B != 0)
}

fn tcp_next(state: State, from_orig: bool, flags: u8) -> State {
    if flags & TCP_RST != 0 {
        return State::TcpReset;
    }
    if flags & TCP_FIN != 0 {
        return match state {
            State::TcpReset => State::TcpReset,
            _ => State::TcpClosing,
        };
    }
    match state {
        State::TcpSynSent if !from_orig && flags & TCP_SYN != 0 => State::TcpSynReceived,
        State::TcpSynReceived if from_orig && flags & (TCP_ACK | TCP_SYN) == TCP_ACK => {
            State::TcpEstablished
        }
        s => s,
    }
}

fn udp_next(state: State, from_orig: bool) -> State {
    match (state, from_orig) {
        (State::UdpOneWay, false) => State::UdpReplied,
        (State::UdpReplied, true) => State::UdpReplied2,
        (State::UdpReplied2, false) => State::UdpStream,
        (s, _) => s,
    }
}

impl Firewall {
    /// A firewall for `config`, under EC2's quotas.
    pub fn new(config: &SecurityGroupsConfig) -> Result<Firewall, FilterError> {
        Self::with_quotas(config, Quotas::EC2)
    }

    /// A firewall for `config` under other quotas (kept for
    /// [`Firewall::replace_rules`]). The benchmarks use it to measure more
    /// rules than EC2 allows.
    pub fn with_quotas(
        config: &SecurityGroupsConfig,
        quotas: Quotas,
    ) -> Result<Firewall, FilterError> {
        let expanded = config.expand(&quotas)?;
        let max_flows = expanded.tracking.max_flows as usize;
        Ok(Firewall {
            quotas,
            hits: vec![0; expanded.rules.len()],
            classifier: Classifier::new(&expanded.entries),
            timeouts: timeouts(&expanded.tracking),
            groups: expanded.groups,
            rules: expanded.rules,
            table: FlowTable::new(max_flows),
            fragments: Fragments::new(),
            counters: Counters::default(),
        })
    }

    /// Replaces the rules, live. All or nothing: on error nothing changes.
    ///
    /// Tracked flows stay (they idle out under the new timeouts, which
    /// apply at once, existing flows included); untracked flows are judged
    /// by the new rules from the next packet on. Per-rule counters start
    /// again from zero. `max_flows`: lowered, it refuses new flows until
    /// the flows present drop below it (the table's memory stays); raised
    /// beyond what the table was allocated for, the table is reallocated
    /// here, once, and every flow moved.
    pub fn replace_rules(&mut self, config: &SecurityGroupsConfig) -> Result<(), FilterError> {
        let expanded = config.expand(&self.quotas)?;
        self.classifier = Classifier::new(&expanded.entries);
        self.timeouts = timeouts(&expanded.tracking);
        self.table
            .set_max_flows(expanded.tracking.max_flows as usize);
        self.hits = vec![0; expanded.rules.len()];
        self.groups = expanded.groups;
        self.rules = expanded.rules;
        Ok(())
    }

    /// Judges an Ethernet frame from the guest.
    pub fn egress(&mut self, frame: &[u8], now_ms: u64) -> Verdict {
        self.judge(Direction::Egress, frame, now_ms)
    }

    /// Judges an Ethernet frame for the guest.
    pub fn ingress(&mut self, frame: &[u8], now_ms: u64) -> Verdict {
        self.judge(Direction::Ingress, frame, now_ms)
    }

    /// Looks at up to `budget` flow-table slots (resuming where the last
    /// call stopped) and removes the flows idle past their timeout.
    /// Returns how many. Calling it every 100 ms with a budget of a few
    /// thousand keeps a full table sweeping itself within a minute.
    pub fn expire(&mut self, now_ms: u64, budget: usize) -> usize {
        let removed = self.table.expire(now_ms, budget, &self.timeouts);
        self.counters.expired = self.counters.expired.saturating_add(removed as u64);
        removed
    }

    /// Reports the counters: `sg_allowed_new` (packets a rule allowed that
    /// opened a tracked flow), `sg_allowed_tracked` (packets of tracked
    /// flows, ICMP errors of tracked flows, later fragments of allowed
    /// datagrams), `sg_allowed_untracked` (packets a rule allowed without
    /// tracking: untracked flows, TCP segments other than an opening SYN
    /// of no flow, ICMP replies and errors of no flow),
    /// `sg_denied_ingress`, `sg_denied_egress`, `sg_unfiltered` (frames
    /// that are not IP, and IPv6 neighbor discovery and MLD),
    /// `conntrack_flows` (a gauge: flows in the table, expired ones not
    /// yet swept included), `conntrack_allowance_exceeded` (new flows
    /// dropped because the table was full) and `conntrack_expired` (flows
    /// swept or replaced after idling out).
    pub fn write_metrics(&self, out: &mut dyn FnMut(&'static str, u64)) {
        let c = &self.counters;
        out("sg_allowed_new", c.allowed_new);
        out("sg_allowed_tracked", c.allowed_tracked);
        out("sg_allowed_untracked", c.allowed_untracked);
        out("sg_denied_ingress", c.denied_ingress);
        out("sg_denied_egress", c.denied_egress);
        out("sg_unfiltered", c.unfiltered);
        out("conntrack_flows", self.table.len() as u64);
        out("conntrack_allowance_exceeded", c.allowance_exceeded);
        out("conntrack_expired", c.expired);
    }

    /// Packets each rule allowed (opening a flow or untracked; packets of
    /// tracked flows are not credited to a rule). A packet several rules
    /// allow is credited to the one with the longest prefix, then the
    /// first in the document.
    pub fn rule_hits(&self) -> impl Iterator<Item = (RuleRef<'_>, u64)> + '_ {
        self.rules.iter().zip(&self.hits).map(|(meta, &hits)| {
            (
                RuleRef {
                    group: self.groups.get(meta.group).map_or("", String::as_str),
                    direction: meta.direction,
                    rule: meta.rule,
                    peer: meta.peer,
                },
                hits,
            )
        })
    }

    /// Flows in the table.
    pub fn flows(&self) -> usize {
        self.table.len()
    }

    fn judge(&mut self, direction: Direction, frame: &[u8], now_ms: u64) -> Verdict {
        let packet = match packet::parse(frame) {
            Parsed::Ip(packet) => packet,
            Parsed::NotIp => {
                bump(&mut self.counters.unfiltered);
                return Verdict::Allow { flow: None };
            }
            Parsed::Vlan => return self.deny(direction, DenyReason::VlanTagged, None),
            Parsed::Malformed => return self.deny(direction, DenyReason::Malformed, None),
        };
        let flow = flow_key(&packet);
        if link_local_control(&packet) {
            bump(&mut self.counters.unfiltered);
            return Verdict::Allow { flow: Some(flow) };
        }
        let datagram = |id| DatagramId {
            direction,
            v6: packet.v6,
            src: packet.src,
            dst: packet.dst,
            proto: packet.proto,
            id,
        };
        let outcome = match packet.l4 {
            L4::None => {
                let Frag::Later(id) = packet.frag else {
                    return self.deny(direction, DenyReason::Malformed, Some(flow));
                };
                return match self.fragments.find(&datagram(id), now_ms) {
                    Some(first) => {
                        bump(&mut self.counters.allowed_tracked);
                        Verdict::Allow { flow: Some(first) }
                    }
                    None => self.deny(direction, DenyReason::Fragment, Some(flow)),
                };
            }
            L4::Icmp { ty, body, .. } if icmp_error(packet.v6, ty) => {
                self.icmp_error(direction, &packet, body, now_ms)
            }
            _ => self.stateful(direction, &packet, now_ms),
        };
        match outcome {
            Outcome::Denied(reason) => return self.deny(direction, reason, Some(flow)),
            Outcome::Tracked => bump(&mut self.counters.allowed_tracked),
            Outcome::New(rule) => {
                bump(&mut self.counters.allowed_new);
                self.credit(rule);
            }
            Outcome::Untracked(rule) => {
                bump(&mut self.counters.allowed_untracked);
                self.credit(rule);
            }
        }
        if let Frag::First(id) = packet.frag {
            self.fragments.remember(datagram(id), flow, now_ms);
        }
        Verdict::Allow { flow: Some(flow) }
    }

    fn deny(&mut self, direction: Direction, reason: DenyReason, flow: Option<FlowKey>) -> Verdict {
        bump(match direction {
            Direction::Ingress => &mut self.counters.denied_ingress,
            Direction::Egress => &mut self.counters.denied_egress,
        });
        Verdict::Deny { reason, flow }
    }

    fn credit(&mut self, rule: u32) {
        if let Some(hits) = self.hits.get_mut(rule as usize) {
            bump(hits);
        }
    }

    /// The rule allowing `packet` in `direction`, or [`NO_RULE`].
    #[inline]
    fn classify(&self, direction: Direction, p: &Packet<'_>) -> u32 {
        let port = match p.l4 {
            L4::Ports { dst, .. } if matches!(p.proto, IPPROTO_TCP | IPPROTO_UDP) => dst,
            L4::Icmp { ty, code, .. } => u16::from(ty) << 8 | u16::from(code),
            _ => 0,
        };
        let peer = match direction {
            Direction::Ingress => p.src,
            Direction::Egress => p.dst,
        };
        self.classifier.lookup(direction, p.v6, p.proto, peer, port)
    }

    /// The rules' verdict alone, tracking nothing.
    fn by_rules_alone(&self, direction: Direction, p: &Packet<'_>) -> Outcome {
        match self.classify(direction, p) {
            NO_RULE => Outcome::Denied(DenyReason::NoRule),
            rule => Outcome::Untracked(rule),
        }
    }

    /// EC2's untracked-flow test (see the module docs) for a TCP or UDP
    /// packet the rules of `direction` allow.
    fn untracked(
        &self,
        direction: Direction,
        p: &Packet<'_>,
        src_port: u16,
        dst_port: u16,
    ) -> bool {
        let c = &self.classifier;
        let other = direction.opposite();
        (c.zero_allows(direction, p.v6, p.proto, dst_port)
            && c.zero_allows_all_ports(other, p.v6, p.proto))
            || (c.zero_allows_all_ports(direction, p.v6, p.proto)
                && c.zero_allows(other, p.v6, p.proto, src_port))
    }

    /// Judges a packet that is not an ICMP error or a later fragment.
    fn stateful(&mut self, direction: Direction, p: &Packet<'_>, now_ms: u64) -> Outcome {
        let (key_l4, tcp_flags, opens) = match p.l4 {
            L4::Ports { src, dst, flags } => {
                let tcp = p.proto == IPPROTO_TCP;
                // TCP flows open with a SYN alone; UDP flows with anything.
                let opens = !tcp || flags & (TCP_SYN | TCP_ACK | TCP_RST) == TCP_SYN;
                (KeyL4::Ports(src, dst), flags, opens)
            }
            L4::Icmp { ty, id, .. } => match icmp_query(p.v6, ty) {
                Some((true, ty)) => (KeyL4::IcmpRequest { id, ty }, 0, true),
                Some((false, request)) => (KeyL4::IcmpReply { id, request }, 0, false),
                None => return self.by_rules_alone(direction, p),
            },
            L4::Other | L4::None => (KeyL4::Other, 0, true),
        };
        let other_proto = key_l4 == KeyL4::Other;
        let (key, from_a) = conn_key(p.v6, p.proto, p.src, p.dst, key_l4);
        let (slot, evicts) = match self.table.lookup(&key, now_ms, &self.timeouts) {
            Lookup::Live(i) => {
                let flow = self.table.flow(i);
                if !belongs(flow, other_proto, from_a, direction) {
                    return self.by_rules_alone(direction, p);
                }
                let from_orig = from_originator(flow, from_a);
                let state = match flow.state {
                    State::TcpClosing | State::TcpReset if from_orig && opens => {
                        // A new connection on the same ports: judged anew.
                        let rule = self.classify(direction, p);
                        if rule == NO_RULE {
                            return Outcome::Denied(DenyReason::NoRule);
                        }
                        self.table.set_flow(
                            i,
                            Flow {
                                last_ms: now_ms,
                                state: State::TcpSynSent,
                                flags: flow.flags,
                            },
                        );
                        return Outcome::New(rule);
                    }
                    s @ (State::TcpSynSent
                    | State::TcpSynReceived
                    | State::TcpEstablished
                    | State::TcpClosing
                    | State::TcpReset) => tcp_next(s, from_orig, tcp_flags),
                    s => udp_next(s, from_orig),
                };
                self.table.set_flow(
                    i,
                    Flow {
                        last_ms: now_ms,
                        state,
                        flags: flow.flags,
                    },
                );
                return Outcome::Tracked;
            }
            Lookup::Absent { slot, evicts } => (slot, evicts),
        };
        let rule = self.classify(direction, p);
        if rule == NO_RULE {
            return Outcome::Denied(DenyReason::NoRule);
        }
        if !opens {
            return Outcome::Untracked(rule);
        }
        if let KeyL4::Ports(src, dst) = key_l4 {
            if self.untracked(direction, p, src, dst) {
                return Outcome::Untracked(rule);
            }
        }
        let (slot, evicts) = match slot {
            Some(slot) => (slot, evicts),
            None => match self.make_room(&key, now_ms) {
                Some(found) => found,
                None => {
                    bump(&mut self.counters.allowance_exceeded);
                    return Outcome::Denied(DenyReason::ConntrackFull);
                }
            },
        };
        let state = match (key_l4, p.proto) {
            (KeyL4::Ports(..), IPPROTO_TCP) => State::TcpSynSent,
            (KeyL4::Ports(..), _) => State::UdpOneWay,
            (KeyL4::IcmpRequest { .. }, _) => State::Icmp,
            _ => State::Other,
        };
        let mut flags = 0;
        if !from_a {
            flags |= FLAG_ORIG_IS_B;
        }
        if direction == Direction::Egress {
            flags |= FLAG_ORIG_EGRESS;
        }
        if evicts {
            bump(&mut self.counters.expired);
        }
        self.table.insert(
            slot,
            evicts,
            &key,
            Flow {
                last_ms: now_ms,
                state,
                flags,
            },
        );
        Outcome::New(rule)
    }

    /// The table is full for a new flow `key`: sweeps expired flows near
    /// its home and says where it can go, if anywhere now.
    #[cold]
    fn make_room(&mut self, key: &Key, now_ms: u64) -> Option<(usize, bool)> {
        let removed = self.table.make_room(key, now_ms, &self.timeouts);
        if removed == 0 {
            return None;
        }
        self.counters.expired = self.counters.expired.saturating_add(removed as u64);
        match self.table.lookup(key, now_ms, &self.timeouts) {
            Lookup::Absent {
                slot: Some(slot),
                evicts,
            } => Some((slot, evicts)),
            _ => None,
        }
    }

    /// Judges an ICMP error: it passes if the packet it carries belongs to
    /// a tracked flow, else by the rules alone.
    fn icmp_error(
        &mut self,
        direction: Direction,
        p: &Packet<'_>,
        body: &[u8],
        now_ms: u64,
    ) -> Outcome {
        if let Some(e) = packet::embedded(p.v6, body) {
            // The error goes back to whoever sent the packet it carries.
            let key_l4 = match e.l4 {
                EmbeddedL4::Ports { src, dst } => Some(KeyL4::Ports(src, dst)),
                EmbeddedL4::Icmp { ty, id } => match icmp_query(p.v6, ty) {
                    Some((true, ty)) => Some(KeyL4::IcmpRequest { id, ty }),
                    Some((false, request)) => Some(KeyL4::IcmpReply { id, request }),
                    None => None,
                },
                EmbeddedL4::Other => Some(KeyL4::Other),
            };
            let proto_ok = match e.proto {
                IPPROTO_ICMP => !p.v6,
                IPPROTO_ICMPV6 => p.v6,
                _ => true,
            };
            if let Some(key_l4) = key_l4.filter(|_| e.src == p.dst && proto_ok) {
                let (key, from_a) = conn_key(p.v6, e.proto, e.src, e.dst, key_l4);
                if let Lookup::Live(i) = self.table.lookup(&key, now_ms, &self.timeouts) {
                    let flow = self.table.flow(i);
                    if belongs(flow, key_l4 == KeyL4::Other, from_a, direction.opposite()) {
                        return Outcome::Tracked;
                    }
                }
            }
        }
        self.by_rules_alone(direction, p)
    }
}
