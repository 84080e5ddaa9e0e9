//! [`Datapath`]: what happens to each frame of one NIC.
//!
//! From the guest: VLAN tags are refused, the source check runs
//! ([`super::source_check`]), DHCP client traffic is answered by the
//! built-in server ([`super::dhcp`]) instead of forwarded, and membership
//! reports are read to learn the guest's multicast groups
//! ([`super::multicast`]). To the guest: the destination check. Frames
//! the datapath writes itself wait in [`super::local_frames`].

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::clock::Clock;
use super::counters::{bump, Counters};
use super::dhcp::{self, Answer, DhcpError, DhcpRequest, DhcpServer, Reply};
use super::filter::{Firewall, FlowKey, Verdict, SWEEP_BUDGET, SWEEP_INTERVAL_MS};
use super::flow_log::{Action, FlowLog};
use super::frame::{
    icmpv6_type, Arp, ArpKind, Ethernet, Ipv4, Ipv6, UdpHeader, ETHERTYPE_ARP, ETHERTYPE_IPV4,
    ETHERTYPE_IPV6, IPPROTO_ICMPV6, IPPROTO_IGMP, IPPROTO_UDP,
};
use super::local_frames::{LocalFrames, PushError};
use super::metadata::MetadataService;
use super::multicast::{GroupSet, Snooped};
use super::reachability::{Prober, Reachability};
use super::source_check::Owned;
use super::MacAddr;

/// Largest frame the datapath generates itself (an untagged Ethernet
/// frame at the default MTU, without FCS).
pub const MAX_LOCAL_FRAME: usize = 1514;

/// How often the flow log is asked whether its interval ended.
const FLOW_LOG_CHECK_MS: u64 = 1000;

/// A flow log and the file (or pipe) its records go to.
#[derive(Debug)]
struct FlowLogSink {
    log: FlowLog,
    out: std::fs::File,
}

impl Drop for FlowLogSink {
    /// The NIC goes away (the VMM exits): the interval in progress is
    /// written now rather than lost.
    fn drop(&mut self) {
        let clock = Clock::new();
        let unix = clock.unix_ms(clock.now_ms());
        if let Err(e) = self.log.flush(unix, &mut self.out) {
            log::warn!("flow log: last records: {e}");
        }
    }
}

/// Queues a frame the datapath made for the guest, counting it if the
/// queue is full.
fn push_copy(local: &mut LocalFrames, dropped: &mut u64, frame: &[u8]) {
    let result = local.push_with(|slot: &mut [u8; MAX_LOCAL_FRAME]| {
        let n = frame.len();
        match slot.get_mut(..n) {
            Some(dst) => {
                dst.copy_from_slice(frame);
                Ok(n)
            }
            None => Err(n),
        }
    });
    if result.is_err() {
        bump(dropped);
    }
}

/// Who the NIC is, as the VMM was told at launch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NicIdentity {
    /// The guest's MAC address.
    pub mac: MacAddr,
    /// The guest's IPv4 address.
    pub ipv4: Ipv4Addr,
    /// Its prefix length (the subnet's netmask), 1..=30.
    pub prefix_len: u8,
    /// The subnet's router.
    pub gateway: Ipv4Addr,
    /// The guest's IPv6 address, if it has one (besides its link-local
    /// address, which is derived from the MAC).
    pub ipv6: Option<Ipv6Addr>,
    /// DNS servers offered by DHCP (none: the option is left out).
    pub dns: Vec<Ipv4Addr>,
    /// Host name offered by DHCP (EC2's `ip-10-0-0-5` form by default).
    pub hostname: String,
    /// Domain name offered by DHCP.
    pub domain: String,
    /// Interface MTU offered by DHCP.
    pub mtu: u16,
    /// DHCP lease time in seconds.
    pub lease_secs: u32,
    /// Whether the source/destination check is on (EC2's default).
    pub source_dest_check: bool,
}

/// What to do with a frame the guest sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FromGuest {
    /// Send it to the tap.
    Forward,
    /// The datapath answered or absorbed it (DHCP); nothing goes to the tap.
    Consumed,
    /// Drop it (already counted).
    Drop(DropReason),
}

/// What to do with a frame from the tap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ToGuest {
    /// Put it in the guest's RX queue.
    Deliver,
    /// Drop it (already counted).
    Drop(DropReason),
}

/// Why a frame was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// Too short or malformed to judge.
    Malformed,
    /// From the guest with a VLAN tag: the NIC is an untagged port.
    VlanTagged,
    /// From the guest with a source MAC not the NIC's.
    SourceMac,
    /// From the guest with a source IPv4/IPv6 address not the NIC's.
    SourceIp,
    /// An ARP packet from the guest claiming another MAC or IPv4 address.
    ArpSpoof,
    /// An ARP packet from the guest for other than Ethernet and IPv4.
    ArpUnsupported,
    /// From the guest with an EtherType other than IPv4, IPv6 and ARP.
    Ethertype,
    /// DHCP client traffic the server would not answer (not from the
    /// NIC's MAC, malformed, or not a client's message).
    Dhcp,
    /// From the network to an address the guest does not listen to.
    NotForGuest,
    /// A security group does not allow it (or its flow could not be
    /// tracked: the connection-tracking table is full).
    SecurityGroup,
    /// Addressed to the instance metadata service, which this NIC does
    /// not serve.
    NoMetadata,
}

/// One NIC's datapath state. Everything it needs is allocated here, in
/// [`Datapath::new`]: judging a frame and answering DHCP allocate nothing.
#[derive(Debug)]
pub struct Datapath {
    identity: NicIdentity,
    clock: Clock,
    /// Security groups with connection tracking; none: unfiltered.
    firewall: Option<Firewall>,
    /// The instance metadata service at 169.254.169.254.
    metadata: Option<MetadataService>,
    /// Flow-log aggregation and where its records go.
    flow_log: Option<FlowLogSink>,
    /// When connection tracking was last swept (monotonic ms).
    last_sweep_ms: u64,
    /// When the flow log is next asked whether its interval ended
    /// (monotonic ms); a fixed point, so the device's timer is not re-armed
    /// on every event.
    next_flow_log_check_ms: u64,
    owned: Owned,
    groups: GroupSet,
    dhcp: DhcpServer,
    /// The instance status check's ARP probes of the guest.
    prober: Prober,
    local: LocalFrames,
    counters: Counters,
}

impl Datapath {
    /// A datapath for the NIC `identity` describes.
    pub fn new(identity: NicIdentity) -> Self {
        let clock = Clock::new();
        Self {
            prober: Prober::new(clock.now_ms()),
            clock,
            firewall: None,
            metadata: None,
            flow_log: None,
            last_sweep_ms: 0,
            next_flow_log_check_ms: 0,
            owned: Owned::new(&identity),
            groups: GroupSet::new(),
            dhcp: DhcpServer::new(&identity),
            local: LocalFrames::new(),
            counters: Counters::default(),
            identity,
        }
    }

    /// Who the NIC is.
    pub fn identity(&self) -> &NicIdentity {
        &self.identity
    }

    /// Judges an Ethernet frame (no virtio-net header) the guest sent.
    ///
    /// Only headers are read, so offloaded frames (up to 64 KiB, partial
    /// L4 checksums) are fine. Dropped: frames too short or with broken
    /// IPv4/IPv6/ARP/UDP/IGMP/MLD headers, VLAN-tagged frames, and with
    /// the source check on, frames not from the NIC's MAC, IPv4 or IPv6
    /// addresses (DHCP from 0.0.0.0, DAD and MLD from `::` excepted), ARP
    /// speaking for another host and EtherTypes other than IPv4, IPv6 and
    /// ARP. DHCP client traffic (UDP 68 → 67) is answered, never
    /// forwarded: the reply waits in the local-frame queue.
    pub fn from_guest(&mut self, frame: &[u8]) -> FromGuest {
        let verdict = self.judge_from_guest(frame).and_then(|v| match v {
            FromGuest::Forward => self.services_from_guest(frame),
            other => Ok(other),
        });
        match verdict {
            Ok(verdict) => verdict,
            Err(reason) => {
                self.counters.tx_drop(reason);
                FromGuest::Drop(reason)
            }
        }
    }

    /// After the source check: the metadata service answers what is
    /// addressed to it (security groups never apply to it, as on EC2);
    /// everything else needs the security groups' egress allowance.
    fn services_from_guest(&mut self, frame: &[u8]) -> Result<FromGuest, DropReason> {
        if MetadataService::is_metadata_frame(frame) {
            let Some(metadata) = self.metadata.as_mut() else {
                return Err(DropReason::NoMetadata);
            };
            let now = self.clock.now_ms();
            let local = &mut self.local;
            let dropped = &mut self.counters.local_frames_dropped;
            metadata.handle(frame, now, &mut |reply| push_copy(local, dropped, reply));
            return Ok(FromGuest::Consumed);
        }
        let Some(firewall) = self.firewall.as_mut() else {
            return Ok(FromGuest::Forward);
        };
        let now = self.clock.now_ms();
        let verdict = firewall.egress(frame, now);
        self.log_flow(&verdict, frame.len(), now);
        if verdict.is_allowed() {
            Ok(FromGuest::Forward)
        } else {
            Err(DropReason::SecurityGroup)
        }
    }

    /// The security groups' ingress allowance for a frame the destination
    /// check let through.
    fn services_to_guest(&mut self, frame: &[u8]) -> Result<(), DropReason> {
        let Some(firewall) = self.firewall.as_mut() else {
            return Ok(());
        };
        let now = self.clock.now_ms();
        let verdict = firewall.ingress(frame, now);
        self.log_flow(&verdict, frame.len(), now);
        if verdict.is_allowed() {
            Ok(())
        } else {
            Err(DropReason::SecurityGroup)
        }
    }

    fn log_flow(&mut self, verdict: &Verdict, len: usize, now_ms: u64) {
        let Some(sink) = self.flow_log.as_mut() else {
            return;
        };
        let (flow, action) = match *verdict {
            Verdict::Allow { flow } => (flow, Action::Accept),
            Verdict::Deny { flow, .. } => (flow, Action::Reject),
        };
        if let Some(flow) = flow.filter(|f| !is_link_housekeeping(f)) {
            let bytes = u32::try_from(len).unwrap_or(u32::MAX);
            sink.log
                .record(flow.into(), action, bytes, self.clock.unix_ms(now_ms));
        }
    }

    /// Judges an Ethernet frame (no virtio-net header) from the tap.
    ///
    /// With the destination check on, only frames to the NIC's MAC, to
    /// broadcast, to the all-hosts/all-nodes groups, to the solicited-node
    /// groups of its IPv6 addresses, or to a group the guest joined get
    /// through. Frames shorter than an Ethernet header never do.
    pub fn to_guest(&mut self, frame: &[u8]) -> ToGuest {
        let reason = match Ethernet::parse(frame) {
            Err(_) => DropReason::Malformed,
            Ok(eth)
                if !self.identity.source_dest_check
                    || self.owned.receives(eth.dst, &self.groups) =>
            {
                match self.services_to_guest(frame) {
                    Ok(()) => return ToGuest::Deliver,
                    Err(reason) => reason,
                }
            }
            Ok(_) => DropReason::NotForGuest,
        };
        self.counters.rx_drop(reason);
        ToGuest::Drop(reason)
    }

    /// Whether the datapath has frames of its own for the guest.
    pub fn has_local_frames(&self) -> bool {
        !self.local.is_empty()
    }

    /// Copies the oldest frame of the datapath's own into `buf` (at least
    /// [`MAX_LOCAL_FRAME`] bytes) and returns its length. A frame that does
    /// not fit `buf` is dropped and counted (`local_frames_dropped`), and
    /// `None` returned for it.
    pub fn pop_local_frame(&mut self, buf: &mut [u8]) -> Option<usize> {
        match self.local.pop_into(buf)? {
            Ok(n) => Some(n),
            Err(e) => {
                log::warn!("datapath of {}: {e}", self.identity.mac);
                bump(&mut self.counters.local_frames_dropped);
                None
            }
        }
    }

    /// Reports the datapath's counters (`snake_case`, only growing).
    pub fn write_metrics(&self, out: &mut dyn FnMut(&'static str, u64)) {
        self.counters.write(out);
        self.prober.write_counters(out);
        if let Some(firewall) = &self.firewall {
            firewall.write_metrics(out);
        }
        if let Some(metadata) = &self.metadata {
            metadata.write_metrics(out);
        }
        if let Some(sink) = &self.flow_log {
            sink.log.write_metrics(out);
        }
    }

    /// Reports the datapath's current state (values that go up and down)
    /// under `snake_case` names: whether the guest answers its probes.
    pub fn write_gauges(&self, out: &mut dyn FnMut(&'static str, u64)) {
        self.prober.write_gauges(out);
    }

    /// What the ARP probes say about the guest (the instance status check).
    pub fn reachability(&self) -> Reachability {
        self.prober.reachability()
    }

    /// Filters with these security groups from now on (`None`: unfiltered).
    pub fn set_firewall(&mut self, firewall: Option<Firewall>) {
        self.firewall = firewall;
    }

    /// The security groups, to change their rules live.
    pub fn firewall_mut(&mut self) -> Option<&mut Firewall> {
        self.firewall.as_mut()
    }

    /// The security groups.
    pub fn firewall(&self) -> Option<&Firewall> {
        self.firewall.as_ref()
    }

    /// Serves instance metadata with this service (`None`: frames to
    /// 169.254.169.254 are dropped).
    pub fn set_metadata(&mut self, metadata: Option<MetadataService>) {
        self.metadata = metadata;
    }

    /// Whether this NIC serves instance metadata.
    pub fn serves_metadata(&self) -> bool {
        self.metadata.is_some()
    }

    /// The metadata service, to replace its document or options live.
    pub fn metadata_mut(&mut self) -> Option<&mut MetadataService> {
        self.metadata.as_mut()
    }

    /// Aggregates flows into `log`, writing its records to `out` at the
    /// end of each interval.
    pub fn set_flow_log(&mut self, log: FlowLog, out: std::fs::File) {
        self.flow_log = Some(FlowLogSink { log, out });
        self.next_flow_log_check_ms = self.clock.now_ms() + FLOW_LOG_CHECK_MS;
    }

    /// Time-driven work: the guest's reachability probe, metadata
    /// retransmissions and timeouts, the connection-tracking sweep,
    /// flow-log records of an ended interval. Call at
    /// [`Self::next_deadline_ms`].
    pub fn poll(&mut self) {
        let now = self.clock.now_ms();
        if self.prober.due(now) {
            self.send_probe(now);
        }
        if let Some(metadata) = self.metadata.as_mut() {
            let local = &mut self.local;
            let dropped = &mut self.counters.local_frames_dropped;
            metadata.poll(now, &mut |frame| push_copy(local, dropped, frame));
        }
        if let Some(firewall) = self.firewall.as_mut() {
            if now.saturating_sub(self.last_sweep_ms) >= SWEEP_INTERVAL_MS {
                firewall.expire(now, SWEEP_BUDGET);
                self.last_sweep_ms = now;
            }
        }
        if let Some(sink) = self
            .flow_log
            .as_mut()
            .filter(|_| now >= self.next_flow_log_check_ms)
        {
            self.next_flow_log_check_ms = now + FLOW_LOG_CHECK_MS;
            let unix = self.clock.unix_ms(now);
            if sink.log.flush_due(unix) {
                if let Err(e) = sink.log.flush(unix, &mut sink.out) {
                    // Counted by the flow log; say it once per interval.
                    log::warn!("flow log of {}: {e}", self.identity.mac);
                }
            }
        }
    }

    /// Queues an ARP probe of the guest. While earlier local frames still
    /// wait (the guest posts no RX buffers: its interface is down), the
    /// probe is skipped and not counted, so probes never pile up in the
    /// queue ahead of the DHCP answers the guest will want first.
    fn send_probe(&mut self, now: u64) {
        if !self.local.is_empty() {
            self.prober.skip(now);
            return;
        }
        let (prober, identity) = (&mut self.prober, &self.identity);
        if self
            .local
            .push_with(|slot| prober.write_probe(now, identity, slot))
            .is_err()
        {
            self.prober.skip(now);
            bump(&mut self.counters.local_frames_dropped);
        }
    }

    /// Sends a reachability probe now, whatever the schedule.
    #[cfg(test)]
    pub(crate) fn probe_now(&mut self) {
        let now = self.clock.now_ms();
        self.send_probe(now);
    }

    /// When [`Self::poll`] has work next (monotonic ms), if ever.
    pub fn next_deadline_ms(&self) -> Option<u64> {
        let mut next: Option<u64> = None;
        let mut consider = |t: u64| next = Some(next.map_or(t, |n| n.min(t)));
        consider(self.prober.next_deadline_ms());
        if let Some(t) = self
            .metadata
            .as_ref()
            .and_then(MetadataService::next_deadline)
        {
            consider(t);
        }
        if self.firewall.as_ref().is_some_and(|f| f.flows() > 0) {
            consider(self.last_sweep_ms + SWEEP_INTERVAL_MS);
        }
        if self.flow_log.is_some() {
            // Checked once a second; the flow log knows its own interval.
            consider(self.next_flow_log_check_ms);
        }
        next
    }

    /// Monotonic ms now, as the datapath reads it.
    pub fn now_ms(&self) -> u64 {
        self.clock.now_ms()
    }

    /// The verdict on a frame from the guest, or why it is dropped.
    fn judge_from_guest(&mut self, frame: &[u8]) -> Result<FromGuest, DropReason> {
        let eth = Ethernet::parse(frame).map_err(|_| DropReason::Malformed)?;
        if eth.is_vlan_tagged() {
            return Err(DropReason::VlanTagged);
        }
        let check = self.identity.source_dest_check;
        if check && eth.src != self.owned.mac {
            return Err(DropReason::SourceMac);
        }
        match eth.ethertype {
            ETHERTYPE_IPV4 => self.ipv4_from_guest(eth.payload, check),
            ETHERTYPE_IPV6 => self.ipv6_from_guest(eth.payload, check),
            ETHERTYPE_ARP => self.arp_from_guest(eth.payload, check),
            _ if check => Err(DropReason::Ethertype),
            _ => Ok(FromGuest::Forward),
        }
    }

    fn ipv4_from_guest(&mut self, packet: &[u8], check: bool) -> Result<FromGuest, DropReason> {
        let ip = Ipv4::parse(packet).map_err(|_| DropReason::Malformed)?;
        if ip.protocol == IPPROTO_UDP && !ip.is_fragment() {
            let udp = UdpHeader::parse(ip.payload).map_err(|_| DropReason::Malformed)?;
            if udp.src_port == dhcp::CLIENT_PORT && udp.dst_port == dhcp::SERVER_PORT {
                if check && !self.owned.own_or_unspecified_ipv4(ip.src) {
                    return Err(DropReason::SourceIp);
                }
                return self.serve_dhcp(&ip, &udp);
            }
        }
        // A host without an address reports memberships from 0.0.0.0 (RFC
        // 3376 §4.2.13); those reports only steer what this guest hears.
        if ip.protocol == IPPROTO_IGMP
            && !ip.is_fragment()
            && (!check || self.owned.own_or_unspecified_ipv4(ip.src))
        {
            let snooped = self
                .groups
                .snoop_igmp(ip.payload)
                .map_err(|_| DropReason::Malformed)?;
            self.count_refused_joins(snooped);
        }
        if check && !self.owned.ipv4_source_ok(ip.src) {
            return Err(DropReason::SourceIp);
        }
        Ok(FromGuest::Forward)
    }

    fn ipv6_from_guest(&mut self, packet: &[u8], check: bool) -> Result<FromGuest, DropReason> {
        let ip = Ipv6::parse(packet).map_err(|_| DropReason::Malformed)?;
        let (protocol, upper) = ip.upper_layer().map_err(|_| DropReason::Malformed)?;
        let icmpv6_type = match protocol {
            IPPROTO_ICMPV6 => Some(icmpv6_type(upper).map_err(|_| DropReason::Malformed)?),
            _ => None,
        };
        let source_ok = self.owned.ipv6_source_ok(ip.src, icmpv6_type);
        if icmpv6_type.is_some() && (!check || source_ok) {
            let snooped = self
                .groups
                .snoop_mld(upper)
                .map_err(|_| DropReason::Malformed)?;
            self.count_refused_joins(snooped);
        }
        if check && !source_ok {
            return Err(DropReason::SourceIp);
        }
        Ok(FromGuest::Forward)
    }

    fn arp_from_guest(&mut self, packet: &[u8], check: bool) -> Result<FromGuest, DropReason> {
        let kind = ArpKind::parse(packet).map_err(|_| DropReason::Malformed)?;
        if !kind.is_ethernet_ipv4() {
            return if check {
                Err(DropReason::ArpUnsupported)
            } else {
                Ok(FromGuest::Forward)
            };
        }
        let arp = Arp::parse(packet).map_err(|_| DropReason::Malformed)?;
        if check {
            self.owned.check_arp(&arp)?;
        }
        // The answer to a reachability probe is for the datapath alone.
        if self.prober.take_reply(&arp, &self.identity) {
            return Ok(FromGuest::Consumed);
        }
        Ok(FromGuest::Forward)
    }

    fn count_refused_joins(&mut self, snooped: Snooped) {
        let full = &mut self.counters.multicast_groups_full;
        *full = full.saturating_add(snooped.refused);
    }

    /// Answers DHCP client traffic: the frame is never forwarded.
    fn serve_dhcp(&mut self, ip: &Ipv4<'_>, udp: &UdpHeader) -> Result<FromGuest, DropReason> {
        let request = self.parse_dhcp(ip, udp).map_err(|e| {
            log::debug!("datapath of {}: {e}", self.identity.mac);
            DropReason::Dhcp
        })?;
        let reply = match self.dhcp.answer(&request) {
            Ok(Answer::Reply(reply)) => reply,
            Ok(Answer::Released) => {
                bump(&mut self.counters.dhcp_releases);
                return Ok(FromGuest::Consumed);
            }
            Ok(Answer::Declined) => {
                // Debug, not warn: the guest decides how often this runs.
                log::debug!(
                    "guest with MAC {} declined {}",
                    self.identity.mac,
                    self.identity.ipv4
                );
                bump(&mut self.counters.dhcp_declines);
                return Ok(FromGuest::Consumed);
            }
            Err(e) => {
                log::debug!("datapath of {}: {e}", self.identity.mac);
                return Err(DropReason::Dhcp);
            }
        };
        let dhcp = &self.dhcp;
        match self
            .local
            .push_with(|slot| dhcp.write_reply(&request, reply, slot))
        {
            Ok(()) => bump(match reply {
                Reply::Offer => &mut self.counters.dhcp_offers,
                Reply::Ack => &mut self.counters.dhcp_acks,
                Reply::Nak => &mut self.counters.dhcp_naks,
                Reply::InformAck => &mut self.counters.dhcp_informs,
            }),
            Err(PushError::Full) => bump(&mut self.counters.local_frames_dropped),
            Err(PushError::Build(e)) => {
                // Replies are sized to fit a slot; this is a bug, not the guest.
                log::error!("datapath of {}: DHCP reply: {e}", self.identity.mac);
                bump(&mut self.counters.local_frames_dropped);
            }
        }
        Ok(FromGuest::Consumed)
    }

    fn parse_dhcp(&self, ip: &Ipv4<'_>, udp: &UdpHeader) -> Result<DhcpRequest, DhcpError> {
        if !ip.header_checksum_ok() {
            return Err(DhcpError::IpChecksum);
        }
        // The UDP checksum is not checked: a renewal sent through a UDP
        // socket may carry only a partial one (checksum offload).
        let message = udp.payload(ip.payload)?;
        dhcp::parse_request(message, self.identity.mac)
    }
}

/// Whether a flow is link housekeeping that a VPC's flow logs do not show:
/// IPv6 neighbor discovery and router or multicast-listener signalling
/// (link-local addresses) and anything to a multicast group. On EC2 the
/// VPC router answers these itself; they are not traffic between hosts.
/// They still pass through the security groups like any other packet.
fn is_link_housekeeping(flow: &FlowKey) -> bool {
    let link_local = |ip: IpAddr| match ip {
        IpAddr::V6(ip) => ip.is_unicast_link_local(),
        IpAddr::V4(_) => false,
    };
    link_local(flow.src) || link_local(flow.dst) || flow.dst.is_multicast()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flow(src: &str, dst: &str, protocol: u8) -> FlowKey {
        FlowKey {
            src: src.parse().unwrap(),
            dst: dst.parse().unwrap(),
            src_port: 0,
            dst_port: 0,
            protocol,
        }
    }

    #[test]
    fn neighbor_discovery_and_multicast_stay_out_of_flow_logs() {
        const ICMPV6: u8 = 58;
        // A neighbor solicitation from a link-local address, a router
        // solicitation to all-routers, an MLD report to its group, an
        // IGMP report: housekeeping.
        assert!(is_link_housekeeping(&flow("fe80::1", "fe80::2", ICMPV6)));
        assert!(is_link_housekeeping(&flow("fe80::1", "ff02::2", ICMPV6)));
        assert!(is_link_housekeeping(&flow("::", "ff02::1:ff00:5", ICMPV6)));
        assert!(is_link_housekeeping(&flow("10.0.0.5", "224.0.0.22", 2)));
        // Traffic between hosts, ICMPv6 included: logged.
        assert!(!is_link_housekeeping(&flow(
            "2001:db8::5",
            "2001:db8::9",
            ICMPV6
        )));
        assert!(!is_link_housekeeping(&flow("10.0.0.5", "10.0.0.9", 6)));
    }
}
