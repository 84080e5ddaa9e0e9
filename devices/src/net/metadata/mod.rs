//! The EC2 instance metadata service (IMDS), answered inside the VMM.
//!
//! The guest's TCP connections to `169.254.169.254:80` and
//! `[fd00:ec2::254]:80` end here, in a purpose-made TCP responder
//! (`conn`) that speaks just enough HTTP/1.1 (`http`) to serve EC2's
//! metadata tree (`tree`) from a [`MetadataDocument`], with IMDSv1 and
//! IMDSv2 session tokens (`token`). Nothing of it touches a socket: the
//! datapath hands over every frame [`MetadataService::is_metadata_frame`]
//! claims, through [`MetadataService::handle`], and gets the replies
//! through a sink it passes in (and copies them into its local-frame
//! queue); a timer calls [`MetadataService::poll`] by
//! [`MetadataService::next_deadline`].
//!
//! ```text
//! guest frame ──is_metadata_frame──▶ handle(frame, now_ms, sink) ──▶ sink(reply frames)
//! timer at next_deadline() ─────────▶ poll(now_ms, sink)          ──▶ sink(retransmissions, resets)
//! ```
//!
//! Replies go from the MAC the guest addressed (its gateway's) to the
//! guest's MAC, with the IP TTL / hop limit set to the configured hop
//! limit (EC2's `HttpPutResponseHopLimit`, default 1), so no reply survives
//! a forwarding hop: a container behind a bridge in the guest gets its
//! SYN-ACK killed at the bridge's router unless the limit says otherwise.
//!
//! Bounds, against a hostile guest: at most [`MAX_CONNECTIONS`]
//! connections (a SYN beyond gets a reset, counted); each holds a
//! [`REQUEST_BUFFER`]-byte receive buffer (allocated the first time that
//! many connections are open at once, then reused) and a queue of four
//! responses whose heads (~300 bytes) are inline and whose bodies are
//! shared, read-only, with the rendered document: user data and the
//! identity document are never copied per request, and a document
//! replaced while a response is being sent leaves that response whole.
//! Memory thus stays under about 10 MiB however the guest behaves. Work
//! per frame is bounded (one segment parsed, at most one request buffer
//! scanned, at most eight segments sent); [`MetadataService::poll`] looks
//! at every connection, so up to 1 024. Connections that complete no
//! request within [`IDLE_TIMEOUT_MS`] (slowloris, half-open) are reset,
//! idle keep-alive ones closed; a closing connection is gone
//! [`FIN_TIMEOUT_MS`] after its first FIN at the latest.
//!
//! Allocation: none per frame or per response. A connection slot's
//! buffer is allocated the first time that many connections are open at
//! once, then reused; rendering a document (at construction and on
//! replacement) allocates. Tokens are self-contained HMACs: nothing is
//! stored per token.
//!
//! Only segments from the guest's own addresses ([`GuestAddrs`]; IPv6
//! link-local too) are answered, so with the source check off a guest
//! still cannot fill the table with connections from made-up addresses.
//!
//! Neighbor discovery: IPv4 needs no ARP answer (169.254.169.254 is off
//! the guest's subnet, so it goes to the gateway's MAC); for IPv6 a
//! neighbor solicitation for `fd00:ec2::254` is answered with
//! [`METADATA_MAC`] (hop limit 255, as NDP requires).
//!
//! Where this differs from EC2, and why:
//!
//! * The hop limit applies to every segment of a connection, not only to
//!   the token PUT's response: a connection whose SYN-ACK cannot reach the
//!   client is refused as surely, and it is simpler to reason about.
//! * No `Date` or `Last-Modified` headers: the service has a monotonic
//!   clock only, and clients do not read them.
//! * MSS: the guest's MSS is honoured down to 536 bytes only, so one ACK
//!   cannot make the service write thousands of tiny frames; and segments
//!   carry at most 1460 (IPv4) or 1440 (IPv6) bytes, what fits the
//!   datapath's 1514-byte frame slots.
//! * The receive window is the request buffer's free space (8 KiB at
//!   most), not a large fixed window.
//! * The tree is what a [`MetadataDocument`] holds: no `iam/`,
//!   `block-device-mapping/`, `events/`, `public-ipv4`, tags or
//!   `ipv6s`; every version serves the same tree.
//! * `HttpProtocolIpv6` is not an option: the IPv6 endpoint always
//!   answers (the datapath decides whether to hand it IPv6 frames).

mod conn;
mod document;
mod http;
mod ndp;
mod token;
mod tree;
mod wire;

#[cfg(test)]
mod tests;

use std::hash::BuildHasher;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::net::frame::{
    Ethernet, Ipv4, Ipv6, ETHERTYPE_IPV4, ETHERTYPE_IPV6, ETH_HEADER_LEN, IPPROTO_ICMPV6,
};
use crate::net::{MacAddr, MAX_LOCAL_FRAME};

pub use conn::{FIN_TIMEOUT_MS, IDLE_TIMEOUT_MS, MAX_CONNECTIONS, REQUEST_BUFFER};
pub use document::{
    HttpEndpoint, HttpTokens, IdentitySignatures, MetadataDocument, MetadataError, MetadataOptions,
    NetworkInterface, PublicKey, MAX_USER_DATA,
};
pub use ndp::METADATA_MAC;
pub use wire::{METADATA_IPV4, METADATA_IPV6, METADATA_PORT};

use conn::{Fate, Table};
use http::Context;
use token::Tokens;
use tree::Tree;
use wire::{ConnKey, Emitter, Tcp, ACK, IPPROTO_TCP, RST, SYN};

/// The guest the service answers: replies go to `mac`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GuestAddrs {
    /// The guest NIC's MAC: the Ethernet destination of every reply.
    pub mac: MacAddr,
    /// Its IPv4 address.
    pub ipv4: Ipv4Addr,
    /// Its IPv6 address, if it has one.
    pub ipv6: Option<Ipv6Addr>,
}

/// What the service counted (see [`MetadataService::write_metrics`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Counters {
    pub requests: u64,
    pub responses_2xx: u64,
    pub responses_4xx: u64,
    pub tokens_issued: u64,
    pub token_rejected: u64,
    pub connections_refused: u64,
    pub bad_segments: u64,
    pub timeouts: u64,
    pub retransmits: u64,
    pub out_of_order: u64,
    pub neighbor_adverts: u64,
}

/// The instance metadata service of one NIC. See the [module
/// docs](self).
#[derive(Debug)]
pub struct MetadataService {
    guest: GuestAddrs,
    options: MetadataOptions,
    tree: Tree,
    tokens: Tokens,
    conns: Table,
    counters: Counters,
    /// Every frame sent is built here.
    scratch: Box<[u8; MAX_LOCAL_FRAME]>,
    /// Keys initial sequence numbers.
    isn_key: std::collections::hash_map::RandomState,
    /// Connections opened so far (also makes every ISN's input unique).
    opened: u64,
    /// No connection has a timer due before this (it may be earlier than
    /// the first real deadline, never later).
    earliest: Option<u64>,
}

impl MetadataService {
    /// A service answering `guest` from `doc` as `options` say. Fails if
    /// either does not validate, the guest's MAC is not unicast, or no
    /// random bytes can be had for the token key.
    pub fn new(
        doc: MetadataDocument,
        options: MetadataOptions,
        guest: GuestAddrs,
    ) -> Result<Self, MetadataError> {
        options.validate()?;
        if !guest.mac.is_unicast() || guest.mac.is_zero() {
            return Err(MetadataError::GuestMac(guest.mac));
        }
        Ok(Self {
            guest,
            options,
            tree: Tree::render(&doc)?,
            tokens: Tokens::new().map_err(MetadataError::Entropy)?,
            conns: Table::new(),
            counters: Counters::default(),
            scratch: Box::new([0; MAX_LOCAL_FRAME]),
            isn_key: std::collections::hash_map::RandomState::new(),
            opened: 0,
            earliest: None,
        })
    }

    /// Serves `doc` from now on. Responses already queued are sent as
    /// they were; tokens stay valid if the instance id is the same.
    pub fn replace_document(&mut self, doc: MetadataDocument) -> Result<(), MetadataError> {
        self.tree = Tree::render(&doc)?;
        Ok(())
    }

    /// Applies `options` from the next request (and segment) on.
    pub fn set_options(&mut self, options: MetadataOptions) -> Result<(), MetadataError> {
        options.validate()?;
        self.options = options;
        Ok(())
    }

    /// The options in force.
    pub fn options(&self) -> MetadataOptions {
        self.options
    }

    /// Whether `frame` (Ethernet, untagged) is for the service: IPv4 to
    /// 169.254.169.254, IPv6 to `fd00:ec2::254`, or a neighbor
    /// solicitation for `fd00:ec2::254` sent to its solicited-node group.
    /// Reads a few fixed offsets; the datapath then calls
    /// [`Self::handle`] instead of forwarding the frame.
    pub fn is_metadata_frame(frame: &[u8]) -> bool {
        let at = |range: std::ops::Range<usize>| frame.get(range);
        let ip = ETH_HEADER_LEN;
        match at(12..14) {
            Some(&[0x08, 0x00]) => {
                frame.get(ip).is_some_and(|v| v >> 4 == 4)
                    && at(ip + 16..ip + 20) == Some(&METADATA_IPV4.octets()[..])
            }
            Some(&[0x86, 0xdd]) => {
                let dst = at(ip + 24..ip + 40);
                if frame.get(ip).is_none_or(|v| v >> 4 != 6) {
                    return false;
                }
                if dst == Some(&METADATA_IPV6.octets()[..]) {
                    return true;
                }
                // A solicitation: ICMPv6 type 135 whose target is ours.
                let icmp = ip + 40;
                dst == Some(&ndp::SOLICITED_NODE.octets()[..])
                    && frame.get(ip + 6) == Some(&IPPROTO_ICMPV6)
                    && frame.get(icmp) == Some(&135)
                    && at(icmp + 8..icmp + 24) == Some(&METADATA_IPV6.octets()[..])
            }
            _ => false,
        }
    }

    /// Handles a frame from the guest that [`Self::is_metadata_frame`]
    /// claimed, writing any replies through `out` (each a whole Ethernet
    /// frame of at most [`MAX_LOCAL_FRAME`] bytes, at most nine per call).
    /// `now_ms` is a monotonic clock in milliseconds. Anything malformed
    /// is dropped and counted; nothing panics.
    pub fn handle(&mut self, frame: &[u8], now_ms: u64, out: &mut dyn FnMut(&[u8])) {
        let Ok(eth) = Ethernet::parse(frame) else {
            self.counters.bad_segments += 1;
            return;
        };
        let guest = self.guest;
        let mut tx = Emitter {
            scratch: &mut self.scratch,
            out,
            guest_mac: guest.mac,
            hop_limit: self.options.hop_limit,
        };
        let segment = match eth.ethertype {
            ETHERTYPE_IPV4 => match Ipv4::parse(eth.payload) {
                Ok(ip)
                    if ip.header.get(16..20) == Some(&METADATA_IPV4.octets()[..])
                        && ip.protocol == IPPROTO_TCP
                        && !ip.is_fragment() =>
                {
                    Some((IpAddr::V4(ip.src), ip.payload))
                }
                _ => None,
            },
            ETHERTYPE_IPV6 => match Ipv6::parse(eth.payload) {
                Ok(ip) => {
                    let dst = eth
                        .payload
                        .get(24..40)
                        .and_then(|d| <[u8; 16]>::try_from(d).ok())
                        .map(Ipv6Addr::from);
                    let hop_limit = eth.payload.get(7).copied().unwrap_or(0);
                    match (ip.upper_layer(), dst) {
                        (Ok((IPPROTO_TCP, seg)), Some(METADATA_IPV6)) => {
                            Some((IpAddr::V6(ip.src), seg))
                        }
                        (Ok((IPPROTO_ICMPV6, msg)), Some(dst))
                            if ndp::is_solicitation(ip.src, dst, hop_limit, msg) =>
                        {
                            ndp::advertise(&mut tx, ip.src);
                            self.counters.neighbor_adverts += 1;
                            return;
                        }
                        _ => None,
                    }
                }
                Err(_) => None,
            },
            _ => None,
        };
        let Some((guest_ip, segment)) = segment.filter(|(src, _)| is_guest(&guest, *src)) else {
            self.counters.bad_segments += 1;
            return;
        };
        let Ok(seg) = Tcp::parse(segment) else {
            self.counters.bad_segments += 1;
            return;
        };
        let key = ConnKey {
            guest_ip,
            guest_port: seg.src_port,
        };
        let local_mac = eth.dst;
        let ctx = Context {
            tree: &self.tree,
            tokens: &self.tokens,
            options: &self.options,
            now_ms,
        };
        if seg.dst_port != METADATA_PORT {
            if seg.has(SYN) && !seg.has(ACK) {
                self.counters.connections_refused += 1;
            } else {
                self.counters.bad_segments += 1;
            }
            tx.reset_for(&key, local_mac, &seg);
            return;
        }
        let deadline = match self.conns.get_mut(&key) {
            Some((index, conn)) => match conn.on_segment(&seg, &ctx, &mut tx, &mut self.counters) {
                Fate::Keep => Some(conn.deadline()),
                Fate::Free => {
                    self.conns.close(index);
                    None
                }
            },
            None if seg.has(SYN) && !seg.has(ACK) && !seg.has(RST) => {
                self.opened = self.opened.wrapping_add(1);
                let iss = self.isn_key.hash_one((key, now_ms, self.opened));
                let iss = u32::try_from(iss & 0xffff_ffff).unwrap_or(0);
                match self.conns.open(key, local_mac, &seg, iss, now_ms, &mut tx) {
                    Some(conn) => Some(conn.deadline()),
                    None => {
                        self.counters.connections_refused += 1;
                        tx.reset_for(&key, local_mac, &seg);
                        None
                    }
                }
            }
            None => {
                if !seg.has(RST) {
                    self.counters.bad_segments += 1;
                }
                tx.reset_for(&key, local_mac, &seg);
                None
            }
        };
        if let Some(at) = deadline {
            self.earliest = Some(self.earliest.map_or(at, |e| e.min(at)));
        } else if self.conns.len() == 0 {
            self.earliest = None;
        }
    }

    /// Runs the timers due at `now_ms`: retransmissions, and the end of
    /// idle, half-open and closing connections. Cheap when nothing is due;
    /// otherwise it visits every connection.
    pub fn poll(&mut self, now_ms: u64, out: &mut dyn FnMut(&[u8])) {
        if self.earliest.is_none_or(|at| now_ms < at) {
            return;
        }
        let mut tx = Emitter {
            scratch: &mut self.scratch,
            out,
            guest_mac: self.guest.mac,
            hop_limit: self.options.hop_limit,
        };
        self.earliest = self.conns.poll(now_ms, &mut tx, &mut self.counters);
    }

    /// When [`Self::poll`] should next be called (on the `now_ms` clock),
    /// or `None` while there are no connections. It may come early, never
    /// late.
    pub fn next_deadline(&self) -> Option<u64> {
        self.earliest
    }

    /// Reports the counters (`snake_case`; all grow but
    /// `imds_connections`, the connections open now):
    /// `imds_requests`, `imds_responses_2xx`, `imds_responses_4xx`,
    /// `imds_tokens_issued`, `imds_token_rejected` (missing where
    /// required, expired or forged), `imds_connections`,
    /// `imds_connections_refused` (table full, or a port but 80),
    /// `imds_bad_segments` (malformed or unexpected frames and segments),
    /// `imds_timeouts` (connections ended by a timer),
    /// `imds_retransmits`, `imds_out_of_order` (segments dropped for
    /// arriving ahead of a gap) and `imds_neighbor_adverts`.
    pub fn write_metrics(&self, out: &mut dyn FnMut(&'static str, u64)) {
        let c = &self.counters;
        let connections = u64::try_from(self.conns.len()).unwrap_or(u64::MAX);
        for (name, value) in [
            ("imds_requests", c.requests),
            ("imds_responses_2xx", c.responses_2xx),
            ("imds_responses_4xx", c.responses_4xx),
            ("imds_tokens_issued", c.tokens_issued),
            ("imds_token_rejected", c.token_rejected),
            ("imds_connections", connections),
            ("imds_connections_refused", c.connections_refused),
            ("imds_bad_segments", c.bad_segments),
            ("imds_timeouts", c.timeouts),
            ("imds_retransmits", c.retransmits),
            ("imds_out_of_order", c.out_of_order),
            ("imds_neighbor_adverts", c.neighbor_adverts),
        ] {
            out(name, value);
        }
    }
}

/// Whether `ip` is one of the guest's addresses.
fn is_guest(guest: &GuestAddrs, ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4 == guest.ipv4,
        IpAddr::V6(v6) => Some(v6) == guest.ipv6 || v6.is_unicast_link_local(),
    }
}
