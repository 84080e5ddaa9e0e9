//! DHCP exchanges, built by hand as bytes and the replies parsed back.

use super::*;
use crate::net::{DropReason, FromGuest, DHCP_SERVER_MAC};

const UDP: u8 = 17;
const COOKIE: [u8; 4] = [99, 130, 83, 99];
const XID: [u8; 4] = [0xde, 0xad, 0xbe, 0xef];

const DISCOVER: u8 = 1;
const OFFER: u8 = 2;
const REQUEST: u8 = 3;
const DECLINE: u8 = 4;
const ACK: u8 = 5;
const NAK: u8 = 6;
const RELEASE: u8 = 7;
const INFORM: u8 = 8;

/// A client's BOOTP/DHCP message.
#[derive(Clone)]
struct Msg {
    op: u8,
    flags: u16,
    ciaddr: Ipv4Addr,
    chaddr: MacAddr,
    cookie: [u8; 4],
    /// Raw bytes after the cookie.
    options: Vec<u8>,
}

impl Msg {
    /// A message of `kind` with `options` (53 first, END last).
    fn new(kind: u8, options: &[(u8, &[u8])]) -> Self {
        let mut raw = vec![53, 1, kind];
        for (code, value) in options {
            raw.push(*code);
            raw.push(u8::try_from(value.len()).unwrap());
            raw.extend_from_slice(value);
        }
        raw.push(255);
        Self {
            op: 1,
            flags: 0,
            ciaddr: Ipv4Addr::UNSPECIFIED,
            chaddr: GUEST_MAC,
            cookie: COOKIE,
            options: raw,
        }
    }

    fn bytes(&self) -> Vec<u8> {
        let mut m = vec![self.op, 1, 6, 0];
        m.extend_from_slice(&XID);
        m.extend_from_slice(&[0, 3]); // secs
        m.extend_from_slice(&self.flags.to_be_bytes());
        m.extend_from_slice(&self.ciaddr.octets());
        m.extend_from_slice(&[0; 12]); // yiaddr, siaddr, giaddr
        m.extend_from_slice(&self.chaddr.0);
        m.extend_from_slice(&[0; 10 + 64 + 128]);
        m.extend_from_slice(&self.cookie);
        m.extend_from_slice(&self.options);
        m
    }

    /// The frame a client sends it in, from `src` to `dst`.
    fn frame(&self, src: Ipv4Addr, dst: Ipv4Addr) -> Vec<u8> {
        dhcp_frame(src, dst, &self.bytes())
    }

    /// Broadcast from 0.0.0.0, as in INIT and INIT-REBOOT.
    fn broadcast(&self) -> Vec<u8> {
        self.frame(Ipv4Addr::UNSPECIFIED, Ipv4Addr::BROADCAST)
    }
}

fn dhcp_frame(src: Ipv4Addr, dst: Ipv4Addr, message: &[u8]) -> Vec<u8> {
    let dst_mac = if dst == Ipv4Addr::BROADCAST {
        MacAddr::BROADCAST
    } else {
        OTHER_MAC
    };
    eth(
        dst_mac,
        GUEST_MAC,
        ETHERTYPE_IPV4,
        &ipv4_packet(src, dst, UDP, &udp(68, 67, message)),
    )
}

/// A server reply, checked layer by layer on the way.
#[derive(Debug)]
struct Reply {
    eth_dst: MacAddr,
    eth_src: MacAddr,
    ip_src: Ipv4Addr,
    ip_dst: Ipv4Addr,
    ttl: u8,
    ip_total_len: usize,
    flags: u16,
    ciaddr: Ipv4Addr,
    yiaddr: Ipv4Addr,
    siaddr: Ipv4Addr,
    chaddr: [u8; 16],
    dhcp_len: usize,
    options: Vec<(u8, Vec<u8>)>,
}

impl Reply {
    fn parse(frame: &[u8]) -> Self {
        let ipv4 = |b: &[u8]| Ipv4Addr::new(b[0], b[1], b[2], b[3]);
        let be16 = |b: &[u8]| usize::from(u16::from_be_bytes([b[0], b[1]]));
        assert_eq!(be16(&frame[12..14]), usize::from(ETHERTYPE_IPV4));
        let ip = &frame[14..];
        assert_eq!(ip[0], 0x45, "IPv4 without options");
        let ip_total_len = be16(&ip[2..4]);
        assert_eq!(ip.len(), ip_total_len, "no trailing bytes");
        assert_eq!(ones_sum(&[&ip[..20]]), 0xffff, "IPv4 header checksum");
        assert_eq!(ip[9], UDP);
        assert_eq!(be16(&ip[6..8]) & 0x3fff, 0, "not a fragment");
        let (ip_src, ip_dst) = (ipv4(&ip[12..16]), ipv4(&ip[16..20]));
        let udp = &ip[20..];
        assert_eq!((be16(&udp[0..2]), be16(&udp[2..4])), (67, 68), "ports");
        assert_eq!(be16(&udp[4..6]), udp.len(), "UDP length");
        assert_ne!(be16(&udp[6..8]), 0, "UDP checksum present");
        let udp_len = u16::try_from(udp.len()).unwrap().to_be_bytes();
        let pseudo = [&ip[12..20], &[0, UDP], &udp_len[..]].concat();
        assert_eq!(ones_sum(&[&pseudo, udp]), 0xffff, "UDP checksum");

        let m = &udp[8..];
        assert!(m.len() >= 300, "BOOTP minimum length");
        assert_eq!(&m[..4], &[2, 1, 6, 0], "op, htype, hlen, hops");
        assert_eq!(m[4..8], XID, "xid echoed");
        assert_eq!(&m[8..10], &[0, 0], "secs");
        assert_eq!(&m[24..28], &[0; 4], "giaddr");
        assert!(m[44..236].iter().all(|&b| b == 0), "sname and file empty");
        assert_eq!(m[236..240], COOKIE);
        let mut options = Vec::new();
        let mut i = 240;
        loop {
            match m[i] {
                255 => break,
                0 => i += 1,
                code => {
                    let len = usize::from(m[i + 1]);
                    options.push((code, m[i + 2..i + 2 + len].to_vec()));
                    i += 2 + len;
                }
            }
        }
        assert!(m[i + 1..].iter().all(|&b| b == 0), "padding after END");
        Self {
            eth_dst: MacAddr(frame[..6].try_into().unwrap()),
            eth_src: MacAddr(frame[6..12].try_into().unwrap()),
            ip_src,
            ip_dst,
            ttl: ip[8],
            ip_total_len,
            flags: u16::from_be_bytes([m[10], m[11]]),
            ciaddr: ipv4(&m[12..16]),
            yiaddr: ipv4(&m[16..20]),
            siaddr: ipv4(&m[20..24]),
            chaddr: m[28..44].try_into().unwrap(),
            dhcp_len: m.len(),
            options,
        }
    }

    fn option(&self, code: u8) -> Option<&[u8]> {
        let mut found = self.options.iter().filter(|(c, _)| *c == code);
        let value = found.next().map(|(_, v)| v.as_slice());
        assert!(found.next().is_none(), "option {code} twice");
        value
    }

    fn kind(&self) -> u8 {
        self.option(53).unwrap()[0]
    }

    fn codes(&self) -> Vec<u8> {
        self.options.iter().map(|(c, _)| *c).collect()
    }
}

/// Sends `frame`, expects it consumed and exactly one reply.
fn exchange(dp: &mut Datapath, frame: &[u8]) -> Reply {
    assert_eq!(dp.from_guest(frame), FromGuest::Consumed);
    let frames = local_frames(dp);
    assert_eq!(frames.len(), 1);
    Reply::parse(&frames[0])
}

fn addr(a: Ipv4Addr) -> Vec<u8> {
    a.octets().to_vec()
}

#[test]
fn discover_gets_an_offer_of_the_nics_address() {
    let mut dp = datapath();
    let reply = exchange(
        &mut dp,
        &Msg::new(DISCOVER, &[(55, &[1, 3, 6, 12, 15, 26, 28])]).broadcast(),
    );
    assert_eq!(reply.kind(), OFFER);
    assert_eq!(reply.eth_src, DHCP_SERVER_MAC);
    assert_eq!(reply.eth_dst, GUEST_MAC);
    assert_eq!(
        (reply.ip_src, reply.ip_dst, reply.ttl),
        (GATEWAY, GUEST_IP, 64)
    );
    assert_eq!(reply.yiaddr, GUEST_IP);
    assert_eq!(reply.ciaddr, Ipv4Addr::UNSPECIFIED);
    assert_eq!(reply.siaddr, Ipv4Addr::UNSPECIFIED);
    assert_eq!(reply.chaddr[..6], GUEST_MAC.0);
    assert_eq!(reply.chaddr[6..], [0; 10]);
    assert_eq!(reply.flags, 0);
    assert_eq!(reply.codes(), [53, 54, 51, 58, 59, 1, 3, 6, 12, 15, 26, 28]);
    assert_eq!(reply.option(54), Some(&addr(GATEWAY)[..]));
    assert_eq!(reply.option(51), Some(&3600u32.to_be_bytes()[..]));
    assert_eq!(reply.option(58), Some(&1800u32.to_be_bytes()[..]));
    assert_eq!(reply.option(59), Some(&3150u32.to_be_bytes()[..]));
    assert_eq!(reply.option(1), Some(&[255, 255, 255, 0][..]));
    assert_eq!(reply.option(3), Some(&addr(GATEWAY)[..]));
    assert_eq!(reply.option(6), Some(&[10, 0, 0, 2][..]));
    assert_eq!(reply.option(12), Some(&b"ip-10-0-0-5"[..]));
    assert_eq!(reply.option(15), Some(&b"ec2.internal"[..]));
    assert_eq!(reply.option(26), Some(&9001u16.to_be_bytes()[..]));
    assert_eq!(reply.option(28), Some(&[10, 0, 0, 255][..]));
    // 240 bytes to the cookie, 83 of options: no padding needed.
    assert_eq!(reply.dhcp_len, 323);
    assert_eq!(nonzero(&dp), [("dhcp_offers", 1)]);
}

#[test]
fn broadcast_flag_gets_a_broadcast_reply() {
    let mut dp = datapath();
    let mut discover = Msg::new(DISCOVER, &[]);
    discover.flags = 0x8000;
    let reply = exchange(&mut dp, &discover.broadcast());
    assert_eq!(reply.kind(), OFFER);
    assert_eq!(
        (reply.eth_dst, reply.ip_dst),
        (MacAddr::BROADCAST, Ipv4Addr::BROADCAST)
    );
    assert_eq!(reply.flags, 0x8000);
    assert_eq!(reply.yiaddr, GUEST_IP);
}

#[test]
fn request_for_the_nics_address_is_acked() {
    let mut dp = datapath();
    // SELECTING: server id and requested address.
    let selecting = Msg::new(REQUEST, &[(50, &addr(GUEST_IP)), (54, &addr(GATEWAY))]);
    let ack = exchange(&mut dp, &selecting.broadcast());
    assert_eq!(ack.kind(), ACK);
    assert_eq!(
        (ack.yiaddr, ack.eth_dst, ack.ip_dst),
        (GUEST_IP, GUEST_MAC, GUEST_IP)
    );
    assert_eq!(ack.option(54), Some(&addr(GATEWAY)[..]));
    assert_eq!(ack.option(51), Some(&3600u32.to_be_bytes()[..]));
    // INIT-REBOOT: requested address only.
    let reboot = Msg::new(REQUEST, &[(50, &addr(GUEST_IP))]);
    assert_eq!(exchange(&mut dp, &reboot.broadcast()).kind(), ACK);
    assert_eq!(nonzero(&dp), [("dhcp_acks", 2)]);
}

#[test]
fn renewal_is_acked_by_unicast() {
    let mut dp = datapath();
    let mut renew = Msg::new(REQUEST, &[]);
    renew.ciaddr = GUEST_IP;
    // RENEWING goes to the server id, REBINDING to broadcast.
    for dst in [GATEWAY, Ipv4Addr::BROADCAST, Ipv4Addr::new(10, 0, 0, 77)] {
        let ack = exchange(&mut dp, &renew.frame(GUEST_IP, dst));
        assert_eq!(ack.kind(), ACK);
        assert_eq!((ack.ciaddr, ack.yiaddr), (GUEST_IP, GUEST_IP));
        assert_eq!((ack.eth_dst, ack.ip_dst), (GUEST_MAC, GUEST_IP));
    }
    assert_eq!(nonzero(&dp), [("dhcp_acks", 3)]);
}

#[test]
fn request_for_another_address_is_naked() {
    let mut dp = datapath();
    let mut renew_other = Msg::new(REQUEST, &[]);
    renew_other.ciaddr = OTHER_IP;
    let requests = [
        Msg::new(REQUEST, &[(50, &addr(OTHER_IP)), (54, &addr(GATEWAY))]),
        Msg::new(REQUEST, &[(50, &addr(OTHER_IP))]),
        renew_other,
        // Neither option 50 nor ciaddr: nothing to grant.
        Msg::new(REQUEST, &[]),
    ];
    for request in requests {
        let nak = exchange(&mut dp, &request.broadcast());
        assert_eq!(nak.kind(), NAK);
        assert_eq!(nak.codes(), [53, 54]);
        assert_eq!(
            (nak.yiaddr, nak.ciaddr),
            (Ipv4Addr::UNSPECIFIED, Ipv4Addr::UNSPECIFIED)
        );
        assert_eq!(
            (nak.eth_dst, nak.ip_dst),
            (MacAddr::BROADCAST, Ipv4Addr::BROADCAST)
        );
        assert_eq!(nak.ip_src, GATEWAY);
        assert_eq!(nak.dhcp_len, 300, "padded to the BOOTP minimum");
    }
    assert_eq!(nonzero(&dp), [("dhcp_naks", 4)]);
}

#[test]
fn request_selecting_another_server_is_ignored() {
    let mut dp = datapath();
    let other_server = Msg::new(REQUEST, &[(50, &addr(GUEST_IP)), (54, &[10, 0, 0, 254])]);
    assert_eq!(
        dp.from_guest(&other_server.broadcast()),
        FromGuest::Drop(DropReason::Dhcp)
    );
    assert!(!dp.has_local_frames());
    assert_eq!(nonzero(&dp), [("dhcp_dropped", 1)]);
}

#[test]
fn inform_gets_configuration_without_a_lease() {
    let mut dp = datapath();
    let mut inform = Msg::new(INFORM, &[]);
    inform.ciaddr = GUEST_IP;
    let ack = exchange(&mut dp, &inform.frame(GUEST_IP, Ipv4Addr::BROADCAST));
    assert_eq!(ack.kind(), ACK);
    assert_eq!(ack.codes(), [53, 54, 1, 3, 6, 12, 15, 26, 28]);
    assert_eq!((ack.yiaddr, ack.ciaddr), (Ipv4Addr::UNSPECIFIED, GUEST_IP));
    assert_eq!((ack.eth_dst, ack.ip_dst), (GUEST_MAC, GUEST_IP));
    // An INFORM without ciaddr can only be answered by broadcast.
    let ack = exchange(&mut dp, &Msg::new(INFORM, &[]).broadcast());
    assert_eq!(
        (ack.eth_dst, ack.ip_dst),
        (MacAddr::BROADCAST, Ipv4Addr::BROADCAST)
    );
    assert_eq!(nonzero(&dp), [("dhcp_informs", 2)]);
}

#[test]
fn release_and_decline_are_counted_silently() {
    let mut dp = datapath();
    let mut release = Msg::new(RELEASE, &[(54, &addr(GATEWAY))]);
    release.ciaddr = GUEST_IP;
    assert_eq!(
        dp.from_guest(&release.frame(GUEST_IP, GATEWAY)),
        FromGuest::Consumed
    );
    let decline = Msg::new(DECLINE, &[(50, &addr(GUEST_IP)), (54, &addr(GATEWAY))]);
    assert_eq!(dp.from_guest(&decline.broadcast()), FromGuest::Consumed);
    assert!(!dp.has_local_frames());
    assert_eq!(nonzero(&dp), [("dhcp_declines", 1), ("dhcp_releases", 1)]);
}

#[test]
fn a_whole_lease_lifecycle() {
    let mut dp = datapath();
    let offer = exchange(&mut dp, &Msg::new(DISCOVER, &[]).broadcast());
    let server_id = offer.option(54).unwrap().to_vec();
    let offered = offer.yiaddr;
    let request = Msg::new(REQUEST, &[(50, &addr(offered)), (54, &server_id)]);
    let ack = exchange(&mut dp, &request.broadcast());
    assert_eq!((ack.kind(), ack.yiaddr), (ACK, offered));
    assert_eq!(
        ack.option(54).unwrap(),
        &server_id[..],
        "same server id in OFFER and ACK"
    );
    let mut renew = Msg::new(REQUEST, &[]);
    renew.ciaddr = offered;
    let server = Ipv4Addr::new(server_id[0], server_id[1], server_id[2], server_id[3]);
    assert_eq!(exchange(&mut dp, &renew.frame(offered, server)).kind(), ACK);
    let mut release = Msg::new(RELEASE, &[(54, &server_id)]);
    release.ciaddr = offered;
    assert_eq!(
        dp.from_guest(&release.frame(offered, server)),
        FromGuest::Consumed
    );
    assert_eq!(
        nonzero(&dp),
        [("dhcp_acks", 2), ("dhcp_offers", 1), ("dhcp_releases", 1)]
    );
}

#[test]
fn foreign_clients_and_spoofed_sources_are_refused() {
    let mut dp = datapath();
    let mut foreign = Msg::new(DISCOVER, &[]);
    foreign.chaddr = OTHER_MAC;
    assert_eq!(
        dp.from_guest(&foreign.broadcast()),
        FromGuest::Drop(DropReason::Dhcp)
    );
    let spoofed = Msg::new(DISCOVER, &[]).frame(OTHER_IP, Ipv4Addr::BROADCAST);
    assert_eq!(
        dp.from_guest(&spoofed),
        FromGuest::Drop(DropReason::SourceIp)
    );
    assert!(!dp.has_local_frames());
    assert_eq!(
        nonzero(&dp),
        [("dhcp_dropped", 1), ("tx_dropped_source_ip", 1)]
    );

    // Without the check a foreign source address is answered, a foreign
    // client still not.
    let mut dp = unchecked_datapath();
    assert_eq!(
        dp.from_guest(&foreign.broadcast()),
        FromGuest::Drop(DropReason::Dhcp)
    );
    assert_eq!(exchange(&mut dp, &spoofed).kind(), OFFER);
}

#[test]
fn malformed_messages_are_dropped() {
    let good = Msg::new(DISCOVER, &[]);
    let mut cases: Vec<(&str, Vec<u8>)> = Vec::new();
    let mut m = good.clone();
    m.cookie = [99, 130, 83, 98];
    cases.push(("bad cookie", m.broadcast()));
    let mut m = good.clone();
    m.op = 2;
    cases.push(("BOOTREPLY", m.broadcast()));
    let mut m = good.clone();
    m.options = vec![53, 1, 1, 12, 200, b'x', 255];
    cases.push(("option overflow", m.broadcast()));
    m.options = vec![53, 1, 1, 12];
    cases.push(("option length missing", m.broadcast()));
    m.options = vec![12, 1, b'x', 255];
    cases.push(("plain BOOTP", m.broadcast()));
    m.options = vec![53, 2, 1, 1, 255];
    cases.push(("long message type", m.broadcast()));
    m.options = vec![53, 1, 9, 255];
    cases.push(("unknown message type", m.broadcast()));
    m.options = vec![53, 1, 1, 53, 1, 3, 255];
    cases.push(("two message types", m.broadcast()));
    m.options = vec![53, 1, 3, 50, 3, 10, 0, 0, 255];
    cases.push(("short requested address", m.broadcast()));
    for kind in [OFFER, ACK, NAK] {
        cases.push(("server message", Msg::new(kind, &[]).broadcast()));
    }
    let mut bytes = good.bytes();
    bytes[1] = 6; // IEEE 802
    cases.push((
        "not Ethernet",
        dhcp_frame(Ipv4Addr::UNSPECIFIED, Ipv4Addr::BROADCAST, &bytes),
    ));
    let mut frame = good.broadcast();
    frame[14 + 10] ^= 0xff;
    cases.push(("IPv4 header checksum", frame));
    let mut frame = good.broadcast();
    let udp_len = 14 + 20 + 4;
    frame[udp_len..udp_len + 2].copy_from_slice(&2000u16.to_be_bytes());
    cases.push(("UDP length past the packet", frame));
    let short = &good.bytes()[..239];
    cases.push((
        "truncated",
        dhcp_frame(Ipv4Addr::UNSPECIFIED, Ipv4Addr::BROADCAST, short),
    ));

    let mut dp = datapath();
    for (what, frame) in &cases {
        assert_eq!(
            dp.from_guest(frame),
            FromGuest::Drop(DropReason::Dhcp),
            "{what}"
        );
    }
    assert!(!dp.has_local_frames());
    assert_eq!(
        nonzero(&dp),
        [("dhcp_dropped", u64::try_from(cases.len()).unwrap())]
    );
}

#[test]
fn lenient_where_clients_differ() {
    let mut dp = datapath();
    // Pad options, no END, and trailing bytes past the UDP length.
    let mut m = Msg::new(DISCOVER, &[]);
    m.options = vec![0, 0, 53, 1, 1, 0, 61, 7, 1, 2, 0, 10, 0, 0, 5];
    let mut frame = m.broadcast();
    assert_eq!(exchange(&mut dp, &frame).kind(), OFFER);
    frame.extend_from_slice(&[0xee; 7]);
    assert_eq!(exchange(&mut dp, &frame).kind(), OFFER);
    // A UDP checksum that is only partial (offloaded) is not checked.
    let mut frame = Msg::new(DISCOVER, &[]).broadcast();
    frame[14 + 20 + 6..14 + 20 + 8].copy_from_slice(&[0x12, 0x34]);
    assert_eq!(exchange(&mut dp, &frame).kind(), OFFER);
}

#[test]
fn replies_fit_576_bytes_however_big_the_configuration() {
    let identity = NicIdentity {
        dns: (0..100).map(|i| Ipv4Addr::new(10, 0, 1, i)).collect(),
        hostname: "h".repeat(255),
        domain: "d".repeat(255),
        lease_secs: u32::MAX,
        ..identity()
    };
    let mut dp = Datapath::new(identity);
    let offer = exchange(&mut dp, &Msg::new(DISCOVER, &[]).broadcast());
    assert!(offer.ip_total_len <= 576, "{}", offer.ip_total_len);
    let dns = offer.option(6).unwrap();
    assert!(!dns.is_empty() && dns.len().is_multiple_of(4) && dns.len() < 400);
    assert_eq!(&dns[..8], &[10, 0, 1, 0, 10, 0, 1, 1]);
    for code in [53, 54, 51, 58, 59, 1, 3, 26, 28] {
        assert!(offer.option(code).is_some(), "option {code}");
    }
    assert_eq!(offer.option(51), Some(&[0xff; 4][..]));

    // A host name too long for an option is left out, the rest stays.
    let mut dp = Datapath::new(NicIdentity {
        hostname: "h".repeat(256),
        domain: "d".repeat(200),
        ..super::identity()
    });
    let offer = exchange(&mut dp, &Msg::new(DISCOVER, &[]).broadcast());
    assert!(offer.option(12).is_none());
    assert_eq!(offer.option(15).map(<[u8]>::len), Some(200));
    assert!(offer.ip_total_len <= 576);
}

#[test]
fn empty_configuration_is_left_out() {
    let mut dp = Datapath::new(NicIdentity {
        dns: vec![],
        hostname: String::new(),
        domain: String::new(),
        mtu: 0,
        prefix_len: 30,
        lease_secs: 1001,
        ..identity()
    });
    let ack = exchange(
        &mut dp,
        &Msg::new(REQUEST, &[(50, &addr(GUEST_IP))]).broadcast(),
    );
    assert_eq!(ack.codes(), [53, 54, 51, 58, 59, 1, 3, 28]);
    assert_eq!(ack.option(1), Some(&[255, 255, 255, 252][..]));
    assert_eq!(ack.option(28), Some(&[10, 0, 0, 7][..]));
    assert_eq!(ack.option(58), Some(&500u32.to_be_bytes()[..]));
    assert_eq!(ack.option(59), Some(&875u32.to_be_bytes()[..]));
}

#[test]
fn replies_past_the_queue_are_dropped_and_counted() {
    let mut dp = datapath();
    let discover = Msg::new(DISCOVER, &[]).broadcast();
    let slots = crate::net::local_frames::LOCAL_FRAME_SLOTS as u64;
    for _ in 0..slots + 4 {
        assert_eq!(dp.from_guest(&discover), FromGuest::Consumed);
    }
    assert_eq!(
        nonzero(&dp),
        [("dhcp_offers", slots), ("local_frames_dropped", 4)]
    );
    let frames = local_frames(&mut dp);
    assert_eq!(frames.len() as u64, slots);
    for frame in &frames {
        assert_eq!(Reply::parse(frame).kind(), OFFER);
    }
    // Room again.
    assert_eq!(exchange(&mut dp, &discover).kind(), OFFER);
}

#[test]
fn a_buffer_too_small_drops_the_frame() {
    let mut dp = datapath();
    let discover = Msg::new(DISCOVER, &[]).broadcast();
    dp.from_guest(&discover);
    dp.from_guest(&discover);
    let mut small = [0u8; 100];
    assert_eq!(dp.pop_local_frame(&mut small), None);
    assert!(dp.has_local_frames());
    let mut buf = [0u8; MAX_LOCAL_FRAME];
    assert!(dp.pop_local_frame(&mut buf).is_some());
    assert!(!dp.has_local_frames());
    assert_eq!(metrics(&dp)["local_frames_dropped"], 1);
}
