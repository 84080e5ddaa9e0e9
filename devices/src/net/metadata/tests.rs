//! Conversations with the metadata service through `handle` and `poll`
//! only: frames built by hand go in, and every frame that comes out is
//! parsed here, with this module's own checksum code, and checked (MACs,
//! addresses, TTL / hop limit, IPv4 header and TCP checksums, size).

// Test frames are small and built field by field: lengths fit their
// fields, and the fuzzing noise is truncated on purpose.
#![allow(clippy::cast_possible_truncation)]

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::*;

const GUEST_MAC: MacAddr = MacAddr([0x02, 0x00, 0x0a, 0x00, 0x00, 0x05]);
/// The gateway MAC the guest addresses its metadata frames to.
const GW_MAC: MacAddr = MacAddr([0x0e, 0x11, 0x22, 0x33, 0x44, 0x55]);
const GUEST_V4: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 5);
const GUEST_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 5);

const FIN: u8 = 0x01;
const SYN: u8 = 0x02;
const RST: u8 = 0x04;
const PSH: u8 = 0x08;
const ACK: u8 = 0x10;

const IDENTITY_SIGNATURE: &str = "c2lnbmF0dXJl";
const IDENTITY_PKCS7: &str =
    "MIAGCSqGSIb3DQEHAqCAMIACAQExDzANBglghkgBZQMEAgEFADCABgkqhkiG9w0BBwGggCSABIIB\nlQ==";

fn doc_json() -> String {
    r#"{
        "instance_id": "i-0123456789abcdef0",
        "ami_id": "ami-0abcdef1234567890",
        "instance_type": "m5.large",
        "account_id": "123456789012",
        "region": "us-east-1",
        "availability_zone": "us-east-1a",
        "local_ipv4": "10.0.0.5",
        "local_hostname": "ip-10-0-0-5.ec2.internal",
        "hostname": "ip-10-0-0-5.ec2.internal",
        "mac": "02:00:0a:00:00:05",
        "pending_time": "2024-05-01T12:00:00Z",
        "security_groups": ["default", "web"],
        "public_keys": [{"name": "my-key", "openssh_key": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5 my-key"}],
        "interfaces": [{
            "mac": "02:00:0a:00:00:05", "device_number": 0, "network_card": 0,
            "interface_id": "eni-0123456789abcdef0", "local_ipv4s": ["10.0.0.5", "10.0.0.6"],
            "subnet_id": "subnet-0123456789abcdef0", "subnet_ipv4_cidr_block": "10.0.0.0/24",
            "vpc_id": "vpc-0123456789abcdef0", "security_group_ids": ["sg-01", "sg-02"]
        }],
        "user_data": "I2Nsb3VkLWNvbmZpZwpwYWNrYWdlczogW2h0b3BdCg==",
        "identity": {"signature": "c2lnbmF0dXJl", "pkcs7": "MIAGCSqGSIb3DQEHAqCAMIACAQExDzANBglghkgBZQMEAgEFADCABgkqhkiG9w0BBwGggCSABIIB\nlQ=="}
    }"#
    .to_string()
}

fn doc() -> MetadataDocument {
    MetadataDocument::from_json(&doc_json()).unwrap()
}

fn guest() -> GuestAddrs {
    GuestAddrs {
        mac: GUEST_MAC,
        ipv4: GUEST_V4,
        ipv6: Some(GUEST_V6),
    }
}

fn options(tokens: HttpTokens) -> MetadataOptions {
    MetadataOptions {
        http_tokens: tokens,
        ..MetadataOptions::default()
    }
}

/// RFC 1071 over the concatenation of `chunks`, written independently of
/// the service's.
fn checksum(chunks: &[&[u8]]) -> u16 {
    let bytes = chunks.concat();
    let mut sum: u32 = 0;
    for pair in bytes.chunks(2) {
        let word = u32::from(pair[0]) << 8 | u32::from(*pair.get(1).unwrap_or(&0));
        sum += word;
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

fn pseudo(src: IpAddr, dst: IpAddr, proto: u8, len: usize) -> Vec<u8> {
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            let mut p = s.octets().to_vec();
            p.extend_from_slice(&d.octets());
            p.extend_from_slice(&[0, proto]);
            p.extend_from_slice(&(len as u16).to_be_bytes());
            p
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            let mut p = s.octets().to_vec();
            p.extend_from_slice(&d.octets());
            p.extend_from_slice(&(len as u32).to_be_bytes());
            p.extend_from_slice(&[0, 0, 0, proto]);
            p
        }
        _ => unreachable!(),
    }
}

/// An Ethernet frame carrying `l4` in IPv4 or IPv6 from `src` to `dst`.
fn ip_frame(src: IpAddr, dst: IpAddr, proto: u8, hop: u8, l4: &[u8], eth_dst: MacAddr) -> Vec<u8> {
    let mut f = eth_dst.0.to_vec();
    f.extend_from_slice(&GUEST_MAC.0);
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            f.extend_from_slice(&[0x08, 0x00]);
            let mut ip = vec![0x45, 0];
            ip.extend_from_slice(&((20 + l4.len()) as u16).to_be_bytes());
            ip.extend_from_slice(&[0, 0, 0x40, 0, hop, proto, 0, 0]);
            ip.extend_from_slice(&s.octets());
            ip.extend_from_slice(&d.octets());
            let sum = checksum(&[&ip]);
            ip[10..12].copy_from_slice(&sum.to_be_bytes());
            f.extend_from_slice(&ip);
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            f.extend_from_slice(&[0x86, 0xdd, 0x60, 0, 0, 0]);
            f.extend_from_slice(&(l4.len() as u16).to_be_bytes());
            f.extend_from_slice(&[proto, hop]);
            f.extend_from_slice(&s.octets());
            f.extend_from_slice(&d.octets());
        }
        _ => unreachable!(),
    }
    f.extend_from_slice(l4);
    f
}

/// A segment the service sent, as parsed here.
#[derive(Debug, Clone)]
struct Seg {
    v6: bool,
    ttl: u8,
    dst_port: u16,
    seq: u32,
    ack: u32,
    flags: u8,
    window: u16,
    mss: Option<u16>,
    payload: Vec<u8>,
}

impl Seg {
    fn has(&self, flag: u8) -> bool {
        self.flags & flag != 0
    }
}

/// Parses and checks a frame the service sent.
fn parse_reply(frame: &[u8], hop_limit: u8) -> Seg {
    assert!(frame.len() <= MAX_LOCAL_FRAME, "{} bytes", frame.len());
    assert_eq!(&frame[0..6], &GUEST_MAC.0, "Ethernet destination");
    assert_eq!(&frame[6..12], &GW_MAC.0, "Ethernet source");
    let (v6, ttl, src, dst, tcp) = match [frame[12], frame[13]] {
        [0x08, 0x00] => {
            let ip = &frame[14..34];
            assert_eq!(ip[0], 0x45);
            assert_eq!(checksum(&[ip]), 0, "IPv4 header checksum");
            let total = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
            assert_eq!(total, frame.len() - 14);
            assert_eq!(ip[9], 6);
            assert_eq!(ip[6] & 0x40, 0x40, "DF");
            let src = IpAddr::from(<[u8; 4]>::try_from(&ip[12..16]).unwrap());
            let dst = IpAddr::from(<[u8; 4]>::try_from(&ip[16..20]).unwrap());
            (false, ip[8], src, dst, &frame[34..])
        }
        [0x86, 0xdd] => {
            let ip = &frame[14..54];
            assert_eq!(ip[0] >> 4, 6);
            assert_eq!(
                usize::from(u16::from_be_bytes([ip[4], ip[5]])),
                frame.len() - 54
            );
            assert_eq!(ip[6], 6);
            let src = IpAddr::from(<[u8; 16]>::try_from(&ip[8..24]).unwrap());
            let dst = IpAddr::from(<[u8; 16]>::try_from(&ip[24..40]).unwrap());
            (true, ip[7], src, dst, &frame[54..])
        }
        other => panic!("EtherType {other:?}"),
    };
    assert_eq!(ttl, hop_limit, "TTL / hop limit");
    let (meta, guest): (IpAddr, IpAddr) = if v6 {
        (METADATA_IPV6.into(), GUEST_V6.into())
    } else {
        (METADATA_IPV4.into(), GUEST_V4.into())
    };
    assert_eq!((src, dst), (meta, guest));
    assert_eq!(
        checksum(&[&pseudo(src, dst, 6, tcp.len()), tcp]),
        0,
        "TCP checksum"
    );
    let be16 = |i: usize| u16::from_be_bytes([tcp[i], tcp[i + 1]]);
    let be32 = |i: usize| u32::from_be_bytes([tcp[i], tcp[i + 1], tcp[i + 2], tcp[i + 3]]);
    assert_eq!(be16(0), 80);
    let offset = usize::from(tcp[12] >> 4) * 4;
    let mss = (offset == 24 && tcp[20] == 2 && tcp[21] == 4).then(|| be16(22));
    Seg {
        v6,
        ttl,
        dst_port: be16(2),
        seq: be32(4),
        ack: be32(8),
        flags: tcp[13],
        window: be16(14),
        mss,
        payload: tcp[offset..].to_vec(),
    }
}

/// The test side of one connection.
#[derive(Debug, Clone)]
struct Client {
    v6: bool,
    port: u16,
    /// Next sequence number to send.
    seq: u32,
    /// Next sequence number expected.
    rcv: u32,
    window: u16,
    /// In-order bytes received and not yet taken as responses.
    stream: Vec<u8>,
    fin: bool,
    rst: bool,
}

impl Client {
    fn new(port: u16, v6: bool) -> Self {
        Self {
            v6,
            port,
            seq: 1_000_000 + u32::from(port) * 7,
            rcv: 0,
            window: 65_535,
            stream: Vec::new(),
            fin: false,
            rst: false,
        }
    }

    fn addrs(&self) -> (IpAddr, IpAddr) {
        if self.v6 {
            (GUEST_V6.into(), METADATA_IPV6.into())
        } else {
            (GUEST_V4.into(), METADATA_IPV4.into())
        }
    }

    fn frame(&self, flags: u8, seq: u32, payload: &[u8], mss: Option<u16>) -> Vec<u8> {
        let mut tcp = self.port.to_be_bytes().to_vec();
        tcp.extend_from_slice(&80u16.to_be_bytes());
        tcp.extend_from_slice(&seq.to_be_bytes());
        tcp.extend_from_slice(&self.rcv.to_be_bytes());
        tcp.push(if mss.is_some() { 0x60 } else { 0x50 });
        tcp.push(flags);
        tcp.extend_from_slice(&self.window.to_be_bytes());
        tcp.extend_from_slice(&[0, 0, 0, 0]);
        if let Some(mss) = mss {
            tcp.extend_from_slice(&[2, 4]);
            tcp.extend_from_slice(&mss.to_be_bytes());
        }
        tcp.extend_from_slice(payload);
        let (src, dst) = self.addrs();
        let sum = checksum(&[&pseudo(src, dst, 6, tcp.len()), &tcp]);
        tcp[16..18].copy_from_slice(&sum.to_be_bytes());
        ip_frame(src, dst, 6, 64, &tcp, GW_MAC)
    }

    /// Takes the segments for this client: in-order data and FIN, resets.
    fn take(&mut self, segs: &[Seg]) {
        for s in segs
            .iter()
            .filter(|s| s.dst_port == self.port && s.v6 == self.v6)
        {
            if s.has(RST) {
                self.rst = true;
                continue;
            }
            if s.seq == self.rcv && !s.has(SYN) {
                self.stream.extend_from_slice(&s.payload);
                self.rcv = self.rcv.wrapping_add(s.payload.len() as u32);
                if s.has(FIN) {
                    self.fin = true;
                    self.rcv = self.rcv.wrapping_add(1);
                }
            }
        }
    }
}

/// An HTTP response as read here.
#[derive(Debug)]
struct Resp {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Resp {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn text(&self) -> &str {
        std::str::from_utf8(&self.body).unwrap()
    }
}

/// Takes one response off the front of `stream` (`head`: no body follows).
fn take_response(stream: &mut Vec<u8>, head: bool) -> Resp {
    let end = stream
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no whole response in {:?}", String::from_utf8_lossy(stream)))
        + 4;
    let text = std::str::from_utf8(&stream[..end]).unwrap().to_string();
    let mut lines = text.split("\r\n");
    let status_line = lines.next().unwrap();
    let mut parts = status_line.splitn(3, ' ');
    assert_eq!(parts.next(), Some("HTTP/1.1"));
    let status = parts.next().unwrap().parse().unwrap();
    let headers: Vec<(String, String)> = lines
        .filter(|l| !l.is_empty())
        .map(|l| {
            let (n, v) = l.split_once(": ").unwrap();
            (n.to_string(), v.to_string())
        })
        .collect();
    let len: usize = headers
        .iter()
        .find(|(n, _)| n == "Content-Length")
        .expect("Content-Length always")
        .1
        .parse()
        .unwrap();
    let body_len = if head { 0 } else { len };
    assert!(stream.len() >= end + body_len, "body incomplete");
    let body = stream[end..end + body_len].to_vec();
    stream.drain(..end + body_len);
    Resp {
        status,
        headers,
        body,
    }
}

/// The service, a clock, and the hop limit replies must carry.
struct Net {
    svc: MetadataService,
    now: u64,
    hop_limit: u8,
}

impl Net {
    fn new(tokens: HttpTokens) -> Self {
        Self::with(doc(), options(tokens))
    }

    fn with(doc: MetadataDocument, options: MetadataOptions) -> Self {
        Self {
            svc: MetadataService::new(doc, options, guest()).unwrap(),
            now: 1_000,
            hop_limit: options.hop_limit,
        }
    }

    fn send(&mut self, frame: &[u8]) -> Vec<Seg> {
        assert!(MetadataService::is_metadata_frame(frame));
        let mut frames = Vec::new();
        self.svc
            .handle(frame, self.now, &mut |f: &[u8]| frames.push(f.to_vec()));
        assert!(frames.len() <= 9, "{} frames for one", frames.len());
        frames
            .iter()
            .map(|f| parse_reply(f, self.hop_limit))
            .collect()
    }

    /// Advances the clock to `t`, polling at every deadline on the way.
    fn run_until(&mut self, t: u64) -> Vec<Seg> {
        let mut segs = Vec::new();
        for _ in 0..10_000 {
            match self.svc.next_deadline() {
                Some(d) if d <= t => {
                    self.now = self.now.max(d);
                    let mut frames = Vec::new();
                    self.svc
                        .poll(self.now, &mut |f: &[u8]| frames.push(f.to_vec()));
                    segs.extend(frames.iter().map(|f| parse_reply(f, self.hop_limit)));
                    if self.svc.next_deadline() == Some(d) && d <= self.now {
                        panic!("poll left its deadline at {d}");
                    }
                }
                _ => {
                    self.now = self.now.max(t);
                    return segs;
                }
            }
        }
        panic!("polling does not converge");
    }

    fn metrics(&self) -> HashMap<&'static str, u64> {
        let mut m = HashMap::new();
        self.svc.write_metrics(&mut |name, value| {
            assert!(m.insert(name, value).is_none(), "{name} twice");
        });
        m
    }

    fn metric(&self, name: &str) -> u64 {
        self.metrics()[name]
    }

    /// Opens a connection from `port`, checking the handshake.
    fn connect_with(&mut self, port: u16, v6: bool, mss: u16) -> (Client, Seg) {
        let mut c = Client::new(port, v6);
        let replies = self.send(&c.frame(SYN, c.seq, &[], Some(mss)));
        assert_eq!(replies.len(), 1, "{replies:?}");
        let syn_ack = replies[0].clone();
        assert_eq!(syn_ack.flags, SYN | ACK);
        assert_eq!(syn_ack.ack, c.seq.wrapping_add(1));
        c.seq = c.seq.wrapping_add(1);
        c.rcv = syn_ack.seq.wrapping_add(1);
        let replies = self.send(&c.frame(ACK, c.seq, &[], None));
        assert!(replies.is_empty(), "{replies:?}");
        (c, syn_ack)
    }

    fn connect(&mut self, port: u16) -> Client {
        self.connect_with(port, false, 1460).0
    }

    /// Sends `data` in one segment, then ACKs what comes back until the
    /// service is quiet. Returns every segment seen.
    fn converse(&mut self, c: &mut Client, data: &[u8]) -> Vec<Seg> {
        let mut seen = self.send(&c.frame(ACK | PSH, c.seq, data, None));
        c.seq = c.seq.wrapping_add(data.len() as u32);
        self.pump(c, seen.clone(), &mut seen);
        seen
    }

    /// Delivers `segs` to `c` and acknowledges, until nothing comes back.
    fn pump(&mut self, c: &mut Client, mut segs: Vec<Seg>, seen: &mut Vec<Seg>) {
        for _ in 0..1000 {
            let before = (c.rcv, c.stream.len());
            c.take(&segs);
            if c.rst || (c.rcv, c.stream.len()) == before {
                return;
            }
            segs = self.send(&c.frame(ACK, c.seq, &[], None));
            seen.extend(segs.iter().cloned());
        }
        panic!("conversation does not end");
    }

    /// One request, one response.
    fn ask(&mut self, c: &mut Client, request: &str) -> Resp {
        self.converse(c, request.as_bytes());
        take_response(&mut c.stream, request.starts_with("HEAD"))
    }

    /// A request on a fresh connection.
    fn ask_new(&mut self, request: &str) -> Resp {
        let port = 40_000 + (self.metric("imds_requests") % 20_000) as u16;
        let mut c = self.connect(port);
        self.ask(&mut c, request)
    }

    fn get(&mut self, path: &str) -> Resp {
        self.ask_new(&format!(
            "GET {path} HTTP/1.1\r\nHost: 169.254.169.254\r\n\r\n"
        ))
    }

    fn get_with_token(&mut self, path: &str, token: &str) -> Resp {
        self.ask_new(&format!(
            "GET {path} HTTP/1.1\r\nX-aws-ec2-metadata-token: {token}\r\n\r\n"
        ))
    }

    fn put_token(&mut self, ttl: &str) -> Resp {
        self.ask_new(&format!(
            "PUT /latest/api/token HTTP/1.1\r\nX-aws-ec2-metadata-token-ttl-seconds: {ttl}\r\n\r\n"
        ))
    }
}

#[test]
fn handshake_honours_the_mss_and_uses_the_hop_limit() {
    let mut net = Net::new(HttpTokens::Optional);
    let (_, syn_ack) = net.connect_with(50_000, false, 1200);
    assert_eq!(syn_ack.mss, Some(1460));
    assert_eq!(syn_ack.window, REQUEST_BUFFER as u16);
    assert_eq!(syn_ack.ttl, 1);
    assert!(syn_ack.payload.is_empty());
    let (_, syn_ack) = net.connect_with(50_001, true, 9000);
    assert_eq!(syn_ack.mss, Some(1440));
    assert_eq!(syn_ack.ttl, 1);
    assert_eq!(net.metric("imds_connections"), 2);
}

#[test]
fn imdsv1_get_serves_the_tree() {
    let mut net = Net::new(HttpTokens::Optional);
    let r = net.get("/latest/meta-data/instance-id");
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "i-0123456789abcdef0");
    assert_eq!(r.header("Content-Type"), Some("text/plain"));
    assert_eq!(r.header("Server"), Some("EC2ws"));
    assert_eq!(r.header("Content-Length"), Some("19"));
    assert_eq!(net.metric("imds_requests"), 1);
    assert_eq!(net.metric("imds_responses_2xx"), 1);
}

#[test]
fn listings_are_exact() {
    let mut net = Net::new(HttpTokens::Optional);
    let root = net.get("/");
    let versions = root.text().lines().collect::<Vec<_>>();
    assert_eq!(versions.first(), Some(&"1.0"));
    assert_eq!(versions.last(), Some(&"latest"));
    for v in [
        "2007-01-19",
        "2009-04-04",
        "2016-09-02",
        "2018-09-24",
        "2021-03-23",
    ] {
        assert!(versions.contains(&v), "{v}");
    }
    assert!(!root.text().ends_with('\n'));
    let cases: &[(&str, &str)] = &[
        ("/latest/", "dynamic\nmeta-data\nuser-data"),
        ("/latest", "dynamic\nmeta-data\nuser-data"),
        (
            "/latest/meta-data/",
            "ami-id\nhostname\ninstance-id\ninstance-type\nlocal-hostname\nlocal-ipv4\nmac\n\
             network/\nplacement/\npublic-keys/\nsecurity-groups",
        ),
        ("/latest/meta-data/ami-id", "ami-0abcdef1234567890"),
        ("/latest/meta-data/instance-type", "m5.large"),
        ("/latest/meta-data/local-ipv4", "10.0.0.5"),
        (
            "/latest/meta-data/local-hostname",
            "ip-10-0-0-5.ec2.internal",
        ),
        ("/latest/meta-data/hostname", "ip-10-0-0-5.ec2.internal"),
        ("/latest/meta-data/mac", "02:00:0a:00:00:05"),
        ("/latest/meta-data/placement/", "availability-zone\nregion"),
        (
            "/latest/meta-data/placement/availability-zone",
            "us-east-1a",
        ),
        ("/latest/meta-data/placement/region", "us-east-1"),
        ("/latest/meta-data/public-keys/", "0=my-key"),
        ("/latest/meta-data/public-keys/0/", "openssh-key"),
        (
            "/latest/meta-data/public-keys/0/openssh-key",
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5 my-key",
        ),
        ("/latest/meta-data/security-groups", "default\nweb"),
        ("/latest/meta-data/network/", "interfaces/"),
        ("/latest/meta-data/network/interfaces/", "macs/"),
        (
            "/latest/meta-data/network/interfaces/macs/",
            "02:00:0a:00:00:05/",
        ),
        (
            "/latest/meta-data/network/interfaces/macs/02:00:0a:00:00:05/",
            "device-number\ninterface-id\nlocal-ipv4s\nmac\nnetwork-card\n\
             security-group-ids\nsubnet-id\nsubnet-ipv4-cidr-block\nvpc-id",
        ),
        (
            "/latest/meta-data/network/interfaces/macs/02:00:0a:00:00:05/device-number",
            "0",
        ),
        (
            "/latest/meta-data/network/interfaces/macs/02:00:0a:00:00:05/network-card",
            "0",
        ),
        (
            "/latest/meta-data/network/interfaces/macs/02:00:0a:00:00:05/local-ipv4s",
            "10.0.0.5\n10.0.0.6",
        ),
        (
            "/latest/meta-data/network/interfaces/macs/02:00:0a:00:00:05/mac",
            "02:00:0a:00:00:05",
        ),
        (
            "/latest/meta-data/network/interfaces/macs/02:00:0a:00:00:05/subnet-id",
            "subnet-0123456789abcdef0",
        ),
        (
            "/latest/meta-data/network/interfaces/macs/02:00:0a:00:00:05/subnet-ipv4-cidr-block",
            "10.0.0.0/24",
        ),
        (
            "/latest/meta-data/network/interfaces/macs/02:00:0a:00:00:05/vpc-id",
            "vpc-0123456789abcdef0",
        ),
        (
            "/latest/meta-data/network/interfaces/macs/02:00:0a:00:00:05/security-group-ids",
            "sg-01\nsg-02",
        ),
        (
            "/latest/meta-data/network/interfaces/macs/02:00:0a:00:00:05/interface-id",
            "eni-0123456789abcdef0",
        ),
        ("/latest/user-data", "#cloud-config\npackages: [htop]\n"),
        ("/latest/dynamic/", "instance-identity/"),
        (
            "/latest/dynamic/instance-identity/",
            "document\npkcs7\nsignature",
        ),
        (
            "/latest/dynamic/instance-identity/signature",
            IDENTITY_SIGNATURE,
        ),
        ("/latest/dynamic/instance-identity/pkcs7", IDENTITY_PKCS7),
        // Every version serves the same tree; queries are ignored.
        ("/2009-04-04/meta-data/instance-id", "i-0123456789abcdef0"),
        ("/1.0/meta-data/instance-id?x=1", "i-0123456789abcdef0"),
    ];
    for (path, body) in cases {
        let r = net.get(path);
        assert_eq!(r.status, 200, "{path}");
        assert_eq!(r.text(), *body, "{path}");
        assert_eq!(r.header("Content-Length"), Some(&*body.len().to_string()));
        assert_eq!(r.header("Content-Type"), Some("text/plain"), "{path}");
    }
    for path in [
        "/latest/meta-data/nope",
        "/latest/dynamic/instance-identity/rsa2048",
        "/9999-01-01/meta-data/",
        "/latest/meta-data/public-keys/1/openssh-key",
        "/latest/meta-data/network/interfaces/macs/02:00:0a:00:00:06/",
    ] {
        let r = net.get(path);
        assert_eq!(r.status, 404, "{path}");
        assert_eq!(r.header("Content-Type"), Some("text/html"));
        assert!(r.text().contains("<title>404 - Not Found</title>"));
    }
}

#[test]
fn identity_document_has_ec2_fields() {
    let mut net = Net::new(HttpTokens::Optional);
    let r = net.get("/latest/dynamic/instance-identity/document");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("Content-Type"), Some("text/plain"));
    assert!(r
        .text()
        .starts_with("{\n  \"accountId\" : \"123456789012\",\n"));
    assert!(r.text().ends_with("\n}"));
    assert_eq!(r.text(), doc().identity_document());
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    let expect = serde_json::json!({
        "accountId": "123456789012",
        "architecture": "x86_64",
        "availabilityZone": "us-east-1a",
        "billingProducts": null,
        "devpayProductCodes": null,
        "marketplaceProductCodes": null,
        "imageId": "ami-0abcdef1234567890",
        "instanceId": "i-0123456789abcdef0",
        "instanceType": "m5.large",
        "kernelId": null,
        "pendingTime": "2024-05-01T12:00:00Z",
        "privateIp": "10.0.0.5",
        "ramdiskId": null,
        "region": "us-east-1",
        "version": "2017-09-30",
    });
    assert_eq!(v, expect);
}

#[test]
fn signatures_from_the_signer_are_served_verbatim() {
    let mut d = doc();
    d.identity = crate::net::identity::Signatures {
        signature: "c2ln".into(),
        rsa2048: "MIIB\nAAAA".into(),
        pkcs7: "MIIC\nBBBB".into(),
    }
    .into();
    let mut net = Net::with(d, MetadataOptions::default());
    assert_eq!(
        net.get("/latest/dynamic/instance-identity/").text(),
        "document\npkcs7\nrsa2048\nsignature"
    );
    assert_eq!(
        net.get("/latest/dynamic/instance-identity/rsa2048").text(),
        "MIIB\nAAAA"
    );
    assert_eq!(
        net.get("/latest/dynamic/instance-identity/pkcs7").text(),
        "MIIC\nBBBB"
    );
}

#[test]
fn imdsv2_token_then_get() {
    let mut net = Net::new(HttpTokens::Required);
    let t = net.put_token("21600");
    assert_eq!(t.status, 200);
    assert_eq!(
        t.header("X-aws-ec2-metadata-token-ttl-seconds"),
        Some("21600")
    );
    assert_eq!(t.header("Content-Type"), Some("text/plain"));
    let token = t.text().to_string();
    assert_eq!(token.len(), 54);
    let r = net.get_with_token("/latest/meta-data/instance-id", &token);
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "i-0123456789abcdef0");
    // HEAD: same head, no body.
    let h = net.ask_new(&format!(
        "HEAD /latest/meta-data/instance-id HTTP/1.1\r\nX-aws-ec2-metadata-token: {token}\r\n\r\n"
    ));
    assert_eq!(h.status, 200);
    assert_eq!(h.header("Content-Length"), Some("19"));
    assert!(h.body.is_empty());
    assert_eq!(net.metric("imds_tokens_issued"), 1);
    assert_eq!(net.metric("imds_token_rejected"), 0);
}

#[test]
fn token_put_errors() {
    let mut net = Net::new(HttpTokens::Required);
    for ttl in ["0", "21601", "abc", "-5", "", "1.5"] {
        assert_eq!(net.put_token(ttl).status, 400, "ttl {ttl:?}");
    }
    let missing = net.ask_new("PUT /latest/api/token HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(missing.status, 400);
    assert!(missing.text().contains("400 - Bad Request"));
    let dated = net.ask_new(
        "PUT /2021-03-23/api/token HTTP/1.1\r\nX-aws-ec2-metadata-token-ttl-seconds: 60\r\n\r\n",
    );
    assert_eq!(dated.status, 403);
    let forwarded = net.ask_new(
        "PUT /latest/api/token HTTP/1.1\r\nX-aws-ec2-metadata-token-ttl-seconds: 60\r\n\
         X-Forwarded-For: 1.2.3.4\r\n\r\n",
    );
    assert_eq!(forwarded.status, 403);
    assert_eq!(net.put_token("1").status, 200);
    assert_eq!(net.metric("imds_tokens_issued"), 1);
    assert_eq!(net.metric("imds_responses_4xx"), 9);
}

#[test]
fn token_required_refuses_missing_expired_and_forged() {
    let mut net = Net::new(HttpTokens::Required);
    let r = net.get("/latest/meta-data/instance-id");
    assert_eq!(r.status, 401);
    assert!(r.text().contains("401 - Unauthorized"));
    // Even the root and unknown paths: authentication comes first.
    assert_eq!(net.get("/").status, 401);
    assert_eq!(net.get("/latest/nope").status, 401);

    let token = net.put_token("2").text().to_string();
    assert_eq!(
        net.get_with_token("/latest/meta-data/mac", &token).status,
        200
    );
    net.run_until(net.now + 2_000);
    assert_eq!(
        net.get_with_token("/latest/meta-data/mac", &token).status,
        401,
        "expired"
    );

    let fresh = net.put_token("60").text().to_string();
    let mut forged = fresh.clone().into_bytes();
    forged[20] = if forged[20] == b'A' { b'B' } else { b'A' };
    let forged = String::from_utf8(forged).unwrap();
    assert_eq!(
        net.get_with_token("/latest/meta-data/mac", &forged).status,
        401
    );
    assert_eq!(
        net.get_with_token("/latest/meta-data/mac", "garbage")
            .status,
        401
    );
    assert_eq!(
        net.get_with_token("/latest/meta-data/mac", &fresh).status,
        200
    );
    assert_eq!(net.metric("imds_token_rejected"), 6);
}

#[test]
fn token_optional_allows_none_but_checks_one_given() {
    let mut net = Net::new(HttpTokens::Optional);
    assert_eq!(net.get("/latest/meta-data/mac").status, 200);
    assert_eq!(
        net.get_with_token("/latest/meta-data/mac", "bogus").status,
        401
    );
    let token = net.put_token("60").text().to_string();
    assert_eq!(
        net.get_with_token("/latest/meta-data/mac", &token).status,
        200
    );
}

#[test]
fn tokens_are_bound_to_the_instance_and_the_vmm() {
    let mut net = Net::new(HttpTokens::Required);
    let token = net.put_token("600").text().to_string();
    // Another VMM (another key) for the same instance refuses it.
    let mut other = Net::new(HttpTokens::Required);
    assert_eq!(
        other.get_with_token("/latest/meta-data/mac", &token).status,
        401
    );
    // The same VMM, once the instance id changes, refuses it too.
    let mut moved = doc();
    moved.instance_id = "i-0fedcba9876543210".into();
    net.svc.replace_document(moved).unwrap();
    assert_eq!(
        net.get_with_token("/latest/meta-data/mac", &token).status,
        401
    );
}

#[test]
fn methods_and_disabled_endpoint() {
    let mut net = Net::new(HttpTokens::Optional);
    for req in [
        "POST /latest/meta-data/ HTTP/1.1\r\n\r\n",
        "DELETE /latest/meta-data/ HTTP/1.1\r\n\r\n",
        "PUT /latest/meta-data/instance-id HTTP/1.1\r\n\r\n",
        "GET /latest/api/token HTTP/1.1\r\n\r\n",
    ] {
        let r = net.ask_new(req);
        assert_eq!(r.status, 405, "{req}");
        assert_eq!(r.header("Allow"), Some("GET, HEAD, PUT"));
    }
    net.svc
        .set_options(MetadataOptions {
            http_endpoint: HttpEndpoint::Disabled,
            ..MetadataOptions::default()
        })
        .unwrap();
    assert_eq!(net.get("/latest/meta-data/instance-id").status, 403);
    assert_eq!(net.put_token("60").status, 403);
    assert_eq!(net.ask_new("POST / HTTP/1.1\r\n\r\n").status, 403);
}

#[test]
fn missing_user_data_is_404() {
    let mut d = doc();
    d.user_data = None;
    let mut net = Net::with(d, MetadataOptions::default());
    assert_eq!(net.get("/latest/user-data").status, 404);
    assert_eq!(net.get("/latest/").text(), "dynamic\nmeta-data");
}

#[test]
fn hop_limit_is_the_ttl_of_every_reply() {
    for (v6, hop_limit) in [(false, 3), (true, 64), (false, 1)] {
        let opts = MetadataOptions {
            hop_limit,
            ..MetadataOptions::default()
        };
        let mut net = Net::with(doc(), opts);
        let (mut c, syn_ack) = net.connect_with(41_000, v6, 1460);
        assert_eq!(syn_ack.ttl, hop_limit);
        // `parse_reply` checks the TTL of every segment of the exchange,
        // FIN included.
        let seen = net.converse(
            &mut c,
            b"GET /latest/meta-data/ HTTP/1.1\r\nConnection: close\r\n\r\n",
        );
        assert!(seen.iter().all(|s| s.ttl == hop_limit));
        assert!(c.fin);
    }
}

#[test]
fn hop_limit_out_of_range_is_refused() {
    for bad in [0u8, 65, 255] {
        let opts = MetadataOptions {
            hop_limit: bad,
            ..MetadataOptions::default()
        };
        assert!(matches!(
            MetadataService::new(doc(), opts, guest()),
            Err(MetadataError::HopLimit(b)) if b == bad
        ));
    }
    let mut net = Net::new(HttpTokens::Optional);
    let opts = MetadataOptions {
        hop_limit: 0,
        ..MetadataOptions::default()
    };
    assert!(net.svc.set_options(opts).is_err());
    assert_eq!(net.svc.options().hop_limit, 1);
    assert!(MetadataOptions::from_json(r#"{"hop_limit": 65}"#).is_err());
    let parsed =
        MetadataOptions::from_json(r#"{"http_tokens": "required", "hop_limit": 2}"#).unwrap();
    assert_eq!(parsed.http_tokens, HttpTokens::Required);
    assert_eq!(parsed.http_endpoint, HttpEndpoint::Enabled);
    assert!(MetadataOptions::from_json(r#"{"hop": 2}"#).is_err());
}

#[test]
fn pipelined_requests_are_answered_in_order() {
    let mut net = Net::new(HttpTokens::Optional);
    let mut c = net.connect(42_000);
    let paths = [
        "/latest/meta-data/instance-id",
        "/latest/meta-data/nope",
        "/latest/meta-data/instance-type",
        "/latest/meta-data/local-ipv4",
        "/latest/meta-data/mac",
        "/latest/meta-data/placement/region",
        "/latest/user-data",
    ];
    let mut all = String::new();
    for p in paths {
        all.push_str(&format!("GET {p} HTTP/1.1\r\nHost: x\r\n\r\n"));
    }
    net.converse(&mut c, all.as_bytes());
    let expected = [
        (200, "i-0123456789abcdef0"),
        (404, ""),
        (200, "m5.large"),
        (200, "10.0.0.5"),
        (200, "02:00:0a:00:00:05"),
        (200, "us-east-1"),
        (200, "#cloud-config\npackages: [htop]\n"),
    ];
    for (status, body) in expected {
        let r = take_response(&mut c.stream, false);
        assert_eq!(r.status, status);
        if status == 200 {
            assert_eq!(r.text(), body);
        }
    }
    assert!(c.stream.is_empty());
    assert_eq!(net.metric("imds_requests"), 7);
}

#[test]
fn a_pipelined_flood_is_answered_without_loss() {
    let mut net = Net::new(HttpTokens::Optional);
    let mut c = net.connect(42_001);
    let one = "GET /latest/meta-data/ami-id HTTP/1.1\r\n\r\n";
    // As many as fit the request buffer, in one segment.
    let n = REQUEST_BUFFER / one.len();
    net.converse(&mut c, one.repeat(n).as_bytes());
    for _ in 0..n {
        let r = take_response(&mut c.stream, false);
        assert_eq!(r.text(), "ami-0abcdef1234567890");
    }
    assert_eq!(net.metric("imds_requests"), n as u64);
}

#[test]
fn keep_alive_then_close() {
    let mut net = Net::new(HttpTokens::Optional);
    let mut c = net.connect(42_100);
    for _ in 0..3 {
        let r = net.ask(&mut c, "GET /latest/meta-data/mac HTTP/1.1\r\n\r\n");
        assert_eq!(r.status, 200);
        assert_eq!(r.header("Connection"), None);
        assert!(!c.fin);
    }
    let r = net.ask(
        &mut c,
        "GET /latest/meta-data/mac HTTP/1.1\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(r.header("Connection"), Some("close"));
    assert!(c.fin, "the service closes after Connection: close");
    assert_eq!(net.metric("imds_connections"), 1);
    // The guest closes too; once its FIN is acknowledged, the connection
    // is forgotten.
    let replies = net.send(&c.frame(FIN | ACK, c.seq, &[], None));
    c.seq = c.seq.wrapping_add(1);
    assert_eq!(replies.len(), 1);
    assert_eq!(replies[0].flags, ACK);
    assert_eq!(replies[0].ack, c.seq);
    assert_eq!(net.metric("imds_connections"), 0);
    // HTTP/1.0 closes by default.
    let mut c = net.connect(42_101);
    net.converse(&mut c, b"GET /latest/meta-data/mac HTTP/1.0\r\n\r\n");
    assert!(c.fin);
}

#[test]
fn guest_half_close_gets_its_answer_then_fin() {
    let mut net = Net::new(HttpTokens::Optional);
    let mut c = net.connect(42_200);
    let req = b"GET /latest/meta-data/ami-id HTTP/1.1\r\n\r\n";
    let mut seen = net.send(&c.frame(ACK | PSH | FIN, c.seq, req, None));
    c.seq = c.seq.wrapping_add(req.len() as u32 + 1);
    net.pump(&mut c, seen.clone(), &mut seen);
    let r = take_response(&mut c.stream, false);
    assert_eq!(r.text(), "ami-0abcdef1234567890");
    assert!(c.fin);
    assert_eq!(net.metric("imds_connections"), 0);
    assert_eq!(net.svc.next_deadline(), None);
}

#[test]
fn lost_data_is_retransmitted_on_the_timer() {
    let mut net = Net::new(HttpTokens::Optional);
    let mut c = net.connect(42_300);
    let req = b"GET /latest/meta-data/instance-id HTTP/1.1\r\n\r\n";
    let first = net.send(&c.frame(ACK | PSH, c.seq, req, None));
    c.seq = c.seq.wrapping_add(req.len() as u32);
    assert_eq!(first.len(), 1);
    assert!(!first[0].payload.is_empty());
    // Lost: not delivered. Nothing happens before the timeout.
    let deadline = net.svc.next_deadline().unwrap();
    assert!(deadline <= net.now + 200, "{deadline}");
    assert!(net.run_until(deadline - 1).is_empty());
    let again = net.run_until(deadline);
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].seq, first[0].seq);
    assert_eq!(again[0].payload, first[0].payload);
    assert_eq!(net.metric("imds_retransmits"), 1);
    // Backoff: the next one comes later.
    let next = net.svc.next_deadline().unwrap();
    assert!(next >= net.now + 400);
    let mut seen = Vec::new();
    net.pump(&mut c, again, &mut seen);
    let r = take_response(&mut c.stream, false);
    assert_eq!(r.text(), "i-0123456789abcdef0");
}

#[test]
fn unacknowledged_data_ends_in_a_reset() {
    let mut net = Net::new(HttpTokens::Optional);
    let mut c = net.connect(42_301);
    let req = b"GET /latest/meta-data/instance-id HTTP/1.1\r\n\r\n";
    net.send(&c.frame(ACK | PSH, c.seq, req, None));
    let segs = net.run_until(net.now + 60_000);
    c.take(&segs);
    assert!(c.rst);
    assert_eq!(net.metric("imds_connections"), 0);
    assert_eq!(net.metric("imds_timeouts"), 1);
    assert_eq!(net.svc.next_deadline(), None);
}

#[test]
fn responses_are_cut_at_the_mss() {
    let big: Vec<u8> = (0..MAX_USER_DATA).map(|i| (i * 7 % 251) as u8).collect();
    let mut d = doc();
    use base64::Engine as _;
    d.user_data = Some(base64::engine::general_purpose::STANDARD.encode(&big));
    for (v6, mss) in [(false, 536u16), (false, 1460), (true, 1440), (false, 100)] {
        let mut net = Net::with(d.clone(), MetadataOptions::default());
        let (mut c, _) = net.connect_with(43_000, v6, mss);
        let seen = net.converse(&mut c, b"GET /latest/user-data HTTP/1.1\r\n\r\n");
        let cap = usize::from(mss.max(536));
        assert!(seen.iter().all(|s| s.payload.len() <= cap));
        assert!(seen.iter().any(|s| s.payload.len() == cap));
        let r = take_response(&mut c.stream, false);
        assert_eq!(r.body, big);
    }
}

#[test]
fn the_guest_window_is_respected() {
    let mut net = Net::new(HttpTokens::Optional);
    let mut c = net.connect(43_100);
    c.window = 10;
    let req = b"GET /latest/meta-data/ HTTP/1.1\r\n\r\n";
    let segs = net.send(&c.frame(ACK | PSH, c.seq, req, None));
    c.seq = c.seq.wrapping_add(req.len() as u32);
    let sent: usize = segs.iter().map(|s| s.payload.len()).sum();
    assert_eq!(sent, 10);
    // A zero window: the timer probes with one byte.
    c.take(&segs);
    c.window = 0;
    assert!(net.send(&c.frame(ACK, c.seq, &[], None)).is_empty());
    let probe = net.run_until(net.now + 250);
    assert_eq!(probe.len(), 1);
    assert_eq!(probe[0].payload.len(), 1);
    c.window = 65_535;
    let mut seen = Vec::new();
    net.pump(&mut c, probe, &mut seen);
    let r = take_response(&mut c.stream, false);
    assert_eq!(r.status, 200);
}

#[test]
fn a_thousand_connections_then_one_refused() {
    let mut net = Net::new(HttpTokens::Optional);
    let mut clients = Vec::new();
    for i in 0..MAX_CONNECTIONS {
        clients.push(net.connect(10_000 + i as u16));
    }
    assert_eq!(net.metric("imds_connections"), MAX_CONNECTIONS as u64);
    let extra = Client::new(9_999, false);
    let replies = net.send(&extra.frame(SYN, extra.seq, &[], Some(1460)));
    assert_eq!(replies.len(), 1);
    assert!(replies[0].has(RST));
    assert_eq!(replies[0].ack, extra.seq.wrapping_add(1));
    assert_eq!(net.metric("imds_connections_refused"), 1);
    // Those open still work.
    let r = net.ask(
        &mut clients[500],
        "GET /latest/meta-data/mac HTTP/1.1\r\n\r\n",
    );
    assert_eq!(r.status, 200);
    // Once they time out, the table takes new ones.
    net.run_until(net.now + 30_000);
    assert_eq!(net.metric("imds_connections"), 0);
    assert_eq!(net.metric("imds_timeouts"), MAX_CONNECTIONS as u64);
    let mut c = net.connect(9_999);
    assert_eq!(net.ask(&mut c, "GET / HTTP/1.1\r\n\r\n").status, 200);
}

#[test]
fn slowloris_is_cut_off() {
    let mut net = Net::new(HttpTokens::Optional);
    let start = net.now;
    let mut c = net.connect(44_000);
    let mut reset_at = None;
    for i in 0..30 {
        let line = format!("X-Slow-{i}: 1\r\n");
        let line = if i == 0 {
            "GET / HTTP/1.1\r\n".to_string()
        } else {
            line
        };
        let segs = net.send(&c.frame(ACK | PSH, c.seq, line.as_bytes(), None));
        c.seq = c.seq.wrapping_add(line.len() as u32);
        c.take(&segs);
        let segs = net.run_until(net.now + 1_000);
        c.take(&segs);
        if c.rst {
            reset_at = Some(net.now);
            break;
        }
    }
    let reset_at = reset_at.expect("reset");
    assert!(
        reset_at - start <= IDLE_TIMEOUT_MS + 1_000,
        "{}",
        reset_at - start
    );
    assert_eq!(net.metric("imds_timeouts"), 1);
    assert_eq!(net.metric("imds_connections"), 0);
    assert_eq!(net.metric("imds_requests"), 0);
}

#[test]
fn idle_keep_alive_is_closed_politely_and_half_open_dropped() {
    let mut net = Net::new(HttpTokens::Optional);
    let mut c = net.connect(44_100);
    net.ask(&mut c, "GET / HTTP/1.1\r\n\r\n");
    let segs = net.run_until(net.now + IDLE_TIMEOUT_MS);
    c.take(&segs);
    assert!(c.fin && !c.rst);
    // The guest never answers the FIN: gone after FIN_TIMEOUT_MS.
    let segs = net.run_until(net.now + FIN_TIMEOUT_MS);
    c.take(&segs);
    assert!(c.rst);
    assert_eq!(net.metric("imds_connections"), 0);

    // Half-open: a SYN, and nothing after the SYN-ACK.
    let c = Client::new(44_101, false);
    let first = net.send(&c.frame(SYN, c.seq, &[], None));
    assert_eq!(first[0].mss, Some(1460));
    let segs = net.run_until(net.now + IDLE_TIMEOUT_MS + 1);
    assert!(
        segs.iter().filter(|s| s.flags == SYN | ACK).count() >= 2,
        "SYN-ACK resent"
    );
    assert!(segs.last().unwrap().has(RST));
    assert_eq!(net.metric("imds_connections"), 0);
}

#[test]
fn oversized_headers_get_431_and_close() {
    let mut net = Net::new(HttpTokens::Optional);
    let mut c = net.connect(45_000);
    let mut req = b"GET / HTTP/1.1\r\n".to_vec();
    while req.len() < REQUEST_BUFFER + 100 {
        req.extend_from_slice(b"X-Filler: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n");
    }
    // In MSS-sized segments, as a guest sends them.
    let mut seen = Vec::new();
    for chunk in req.chunks(1000) {
        let segs = net.send(&c.frame(ACK | PSH, c.seq, chunk, None));
        c.seq = c.seq.wrapping_add(chunk.len() as u32);
        seen.extend(segs.iter().cloned());
        net.pump(&mut c, segs, &mut seen);
        if c.fin {
            break;
        }
    }
    let r = take_response(&mut c.stream, false);
    assert_eq!(r.status, 431);
    assert_eq!(r.header("Connection"), Some("close"));
    assert!(c.fin);

    // Too many headers for the parser: 431 too.
    let mut req = b"GET / HTTP/1.1\r\n".to_vec();
    for i in 0..100 {
        req.extend_from_slice(format!("H{i}: v\r\n").as_bytes());
    }
    req.extend_from_slice(b"\r\n");
    let mut c = net.connect(45_001);
    net.converse(&mut c, &req);
    assert_eq!(take_response(&mut c.stream, false).status, 431);
}

#[test]
fn garbage_gets_400_and_close() {
    let mut net = Net::new(HttpTokens::Optional);
    for garbage in [
        &b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n"[..],
        b"GET\r\n\r\n",
        b"GET / HTTP/2.0\r\n\r\n",
        b"GET / HTTP/1.1\r\nContent-Length: x\r\n\r\n",
        b"GET / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    ] {
        let mut c = net.connect(46_000);
        net.converse(&mut c, garbage);
        let r = take_response(&mut c.stream, false);
        assert_eq!(r.status, 400, "{garbage:?}");
        assert!(c.fin);
        let replies = net.send(&c.frame(FIN | ACK, c.seq, &[], None));
        assert_eq!(replies.len(), 1);
    }
    // Blank lines before a request are skipped; a body is skipped.
    let mut c = net.connect(46_001);
    net.converse(
        &mut c,
        b"\r\n\r\nPUT /latest/api/token HTTP/1.1\r\nX-aws-ec2-metadata-token-ttl-seconds: 5\r\n\
          Content-Length: 4\r\n\r\nbodyGET /latest/meta-data/mac HTTP/1.1\r\n\r\n",
    );
    assert_eq!(take_response(&mut c.stream, false).status, 200);
    assert_eq!(
        take_response(&mut c.stream, false).text(),
        "02:00:0a:00:00:05"
    );
}

#[test]
fn out_of_order_segments_are_dropped_and_duplicate_acked() {
    let mut net = Net::new(HttpTokens::Optional);
    let mut c = net.connect(47_000);
    let req = b"GET /latest/meta-data/mac HTTP/1.1\r\n\r\n";
    let (a, b) = req.split_at(10);
    let segs = net.send(&c.frame(ACK | PSH, c.seq.wrapping_add(10), b, None));
    assert_eq!(segs.len(), 1);
    assert_eq!(segs[0].ack, c.seq, "duplicate ACK");
    assert_eq!(net.metric("imds_out_of_order"), 1);
    // The gap filled, then the rest retransmitted.
    let segs = net.send(&c.frame(ACK | PSH, c.seq, a, None));
    assert_eq!(segs[0].ack, c.seq.wrapping_add(10));
    c.seq = c.seq.wrapping_add(10);
    let r = net.converse(&mut c, b);
    assert!(!r.is_empty());
    assert_eq!(
        take_response(&mut c.stream, false).text(),
        "02:00:0a:00:00:05"
    );
    // A retransmission of old data is acknowledged and ignored.
    let segs = net.send(&c.frame(ACK | PSH, c.seq.wrapping_sub(5), b"\r\n\r\n\r", None));
    assert_eq!(segs.len(), 1);
    assert_eq!(segs[0].ack, c.seq);
    assert!(segs[0].payload.is_empty());
}

#[test]
fn tso_sized_segments_are_taken_up_to_the_buffer() {
    let mut net = Net::new(HttpTokens::Optional);
    let mut c = net.connect(47_100);
    let one = "GET /latest/meta-data/ami-id HTTP/1.1\r\n\r\n";
    let data = one.repeat(600); // ~25 KB in one offloaded segment
    let segs = net.send(&c.frame(ACK | PSH, c.seq, data.as_bytes(), None));
    let acked = segs.last().unwrap().ack.wrapping_sub(c.seq) as usize;
    assert!(acked <= REQUEST_BUFFER && acked > 0, "{acked}");
    // The guest resends the rest from what was acknowledged, and so on.
    let mut sent = acked;
    let mut seen = segs.clone();
    c.take(&segs);
    for _ in 0..100 {
        if sent == data.len() {
            break;
        }
        let segs = net.send(&c.frame(
            ACK | PSH,
            c.seq.wrapping_add(sent as u32),
            &data.as_bytes()[sent..],
            None,
        ));
        net.pump(&mut c, segs.clone(), &mut seen);
        let ack = seen
            .iter()
            .map(|s| s.ack.wrapping_sub(c.seq) as usize)
            .max()
            .unwrap();
        sent = ack;
    }
    c.seq = c.seq.wrapping_add(data.len() as u32);
    net.pump(&mut c, Vec::new(), &mut seen);
    let segs = net.send(&c.frame(ACK, c.seq, &[], None));
    net.pump(&mut c, segs, &mut seen);
    let mut n = 0;
    while !c.stream.is_empty() {
        assert_eq!(
            take_response(&mut c.stream, false).text(),
            "ami-0abcdef1234567890"
        );
        n += 1;
    }
    assert_eq!(n, 600);
}

#[test]
fn unknown_connections_get_resets() {
    let mut net = Net::new(HttpTokens::Optional);
    let c = Client::new(48_000, false);
    let segs = net.send(&c.frame(ACK, c.seq, b"GET / HTTP/1.1\r\n\r\n", None));
    assert_eq!(segs.len(), 1);
    assert_eq!(segs[0].flags, RST);
    assert_eq!(segs[0].seq, c.rcv);
    // A reset is never answered.
    assert!(net.send(&c.frame(RST, c.seq, &[], None)).is_empty());
    // Another port: refused.
    let mut tcp = c.frame(SYN, c.seq, &[], None);
    tcp[14 + 20 + 3] = 81;
    let segs = net.send(&tcp);
    assert!(segs[0].has(RST));
    assert_eq!(net.metric("imds_connections_refused"), 1);
    // A reset from the guest ends its connection.
    let mut c = net.connect(48_001);
    assert!(net.send(&c.frame(RST, c.seq, &[], None)).is_empty());
    assert_eq!(net.metric("imds_connections"), 0);
    // Out of window, it does not.
    let mut c2 = net.connect(48_002);
    assert!(net
        .send(&c2.frame(RST, c2.seq.wrapping_add(100_000), &[], None))
        .is_empty());
    assert_eq!(net.metric("imds_connections"), 1);
    assert_eq!(net.ask(&mut c2, "GET / HTTP/1.1\r\n\r\n").status, 200);
    c.rcv = 0;
    let _ = c;
}

#[test]
fn live_document_replacement() {
    let mut net = Net::new(HttpTokens::Optional);
    let mut c = net.connect(49_000);
    let token_before = net.put_token("600").text().to_string();
    // A response in flight keeps the old bytes.
    let req = b"GET /latest/meta-data/instance-type HTTP/1.1\r\n\r\n";
    let first = net.send(&c.frame(ACK | PSH, c.seq, req, None));
    c.seq = c.seq.wrapping_add(req.len() as u32);
    let mut d = doc();
    d.instance_type = "c7g.xlarge".into();
    d.user_data = None;
    net.svc.replace_document(d).unwrap();
    let mut seen = Vec::new();
    net.pump(&mut c, first, &mut seen);
    assert_eq!(take_response(&mut c.stream, false).text(), "m5.large");
    // Later requests see the new document.
    assert_eq!(
        net.ask(
            &mut c,
            "GET /latest/meta-data/instance-type HTTP/1.1\r\n\r\n"
        )
        .text(),
        "c7g.xlarge"
    );
    assert_eq!(net.get("/latest/user-data").status, 404);
    // Same instance: tokens survive.
    assert_eq!(
        net.get_with_token("/latest/meta-data/mac", &token_before)
            .status,
        200
    );
    // An invalid document is refused and the old one stays.
    let mut bad = doc();
    bad.user_data = Some("!!!".into());
    assert!(matches!(
        net.svc.replace_document(bad),
        Err(MetadataError::UserDataBase64(_))
    ));
    assert_eq!(
        net.get("/latest/meta-data/instance-type").text(),
        "c7g.xlarge"
    );
}

#[test]
fn ipv6_conversation_and_neighbor_discovery() {
    let mut net = Net::new(HttpTokens::Required);
    let (mut c, _) = net.connect_with(50_100, true, 1440);
    let r = net.ask(
        &mut c,
        "PUT /latest/api/token HTTP/1.1\r\nX-aws-ec2-metadata-token-ttl-seconds: 60\r\n\r\n",
    );
    let token = r.text().to_string();
    let r = net.ask(
        &mut c,
        &format!("GET /latest/meta-data/instance-id HTTP/1.1\r\nX-aws-ec2-metadata-token: {token}\r\n\r\n"),
    );
    assert_eq!(r.text(), "i-0123456789abcdef0");

    // Neighbor solicitation for fd00:ec2::254, to its solicited-node group.
    let group: Ipv6Addr = "ff02::1:ff00:254".parse().unwrap();
    let ns = |target: Ipv6Addr, hop: u8| {
        let mut icmp = vec![135, 0, 0, 0, 0, 0, 0, 0];
        icmp.extend_from_slice(&target.octets());
        icmp.extend_from_slice(&[1, 1]);
        icmp.extend_from_slice(&GUEST_MAC.0);
        let sum = checksum(&[
            &pseudo(GUEST_V6.into(), group.into(), 58, icmp.len()),
            &icmp,
        ]);
        icmp[2..4].copy_from_slice(&sum.to_be_bytes());
        ip_frame(
            GUEST_V6.into(),
            group.into(),
            58,
            hop,
            &icmp,
            MacAddr([0x33, 0x33, 0xff, 0x00, 0x02, 0x54]),
        )
    };
    let frame = ns(METADATA_IPV6, 255);
    assert!(MetadataService::is_metadata_frame(&frame));
    let mut out = Vec::new();
    net.svc
        .handle(&frame, net.now, &mut |f: &[u8]| out.push(f.to_vec()));
    assert_eq!(out.len(), 1);
    let na = &out[0];
    assert_eq!(&na[0..6], &GUEST_MAC.0);
    assert_eq!(&na[6..12], &METADATA_MAC.0);
    assert_eq!(&na[12..14], &[0x86, 0xdd]);
    assert_eq!(na[14 + 6], 58);
    assert_eq!(na[14 + 7], 255, "NDP hop limit");
    assert_eq!(&na[14 + 8..14 + 24], &METADATA_IPV6.octets());
    assert_eq!(&na[14 + 24..14 + 40], &GUEST_V6.octets());
    let icmp = &na[54..];
    assert_eq!(icmp[0], 136);
    assert_eq!(icmp[4], 0x60, "solicited, override");
    assert_eq!(&icmp[8..24], &METADATA_IPV6.octets());
    assert_eq!(&icmp[24..26], &[2, 1]);
    assert_eq!(&icmp[26..32], &METADATA_MAC.0);
    assert_eq!(
        checksum(&[
            &pseudo(METADATA_IPV6.into(), GUEST_V6.into(), 58, icmp.len()),
            icmp
        ]),
        0
    );
    assert_eq!(net.metric("imds_neighbor_adverts"), 1);
    // Not for us, or not from one hop: no answer.
    let other: Ipv6Addr = "2001:db8::254".parse().unwrap();
    assert!(!MetadataService::is_metadata_frame(&ns(other, 255)));
    let mut out = Vec::new();
    net.svc
        .handle(&ns(METADATA_IPV6, 64), net.now, &mut |f: &[u8]| {
            out.push(f.to_vec())
        });
    assert!(out.is_empty());
}

#[test]
fn is_metadata_frame_is_picky() {
    let c = Client::new(1234, false);
    let f = c.frame(SYN, 1, &[], None);
    assert!(MetadataService::is_metadata_frame(&f));
    let mut other = f.clone();
    other[14 + 19] = 253;
    assert!(!MetadataService::is_metadata_frame(&other));
    assert!(MetadataService::is_metadata_frame(
        &Client::new(1234, true).frame(SYN, 1, &[], None)
    ));
    for len in 0..f.len() {
        let _ = MetadataService::is_metadata_frame(&f[..len]);
    }
    assert!(!MetadataService::is_metadata_frame(&[]));
}

#[test]
fn segments_from_other_sources_are_ignored() {
    let mut net = Net::new(HttpTokens::Optional);
    let c = Client::new(1234, false);
    let mut f = c.frame(SYN, 1, &[], None);
    f[14 + 15] = 99; // source 10.0.0.99
    let ip_sum = checksum(&[&{
        let mut h = f[14..34].to_vec();
        h[10] = 0;
        h[11] = 0;
        h
    }]);
    f[14 + 10..14 + 12].copy_from_slice(&ip_sum.to_be_bytes());
    assert!(net.send(&f).is_empty());
    assert_eq!(net.metric("imds_bad_segments"), 1);
    assert_eq!(net.metric("imds_connections"), 0);
}

/// xorshift64*: deterministic noise.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

#[test]
fn random_and_truncated_frames_never_panic() {
    let mut net = Net::new(HttpTokens::Required);
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut c = net.connect(51_000);
    let valid = [
        c.frame(SYN, 5, &[], Some(1460)),
        c.frame(ACK | PSH, c.seq, b"GET / HTTP/1.1\r\n\r\n", None),
        Client::new(51_001, true).frame(SYN, 5, &[], Some(1)),
        c.frame(FIN | ACK, c.seq, &[], None),
    ];
    let mut sink = |f: &[u8]| assert!(f.len() <= MAX_LOCAL_FRAME);
    for round in 0..20_000 {
        let mut frame = valid[round % valid.len()].clone();
        match rng.below(4) {
            0 => frame.truncate(rng.below(frame.len() + 1)),
            1 => {
                for _ in 0..1 + rng.below(8) {
                    let i = rng.below(frame.len());
                    frame[i] = rng.next() as u8;
                }
            }
            2 => {
                // Random TCP flags, sequence and ports after valid headers.
                let at = 14 + 20;
                if frame.len() > at + 14 && frame[12] == 0x08 {
                    frame[at + 13] = rng.next() as u8;
                    let seq = (rng.next() as u32).to_be_bytes();
                    frame[at + 4..at + 8].copy_from_slice(&seq);
                    frame[at + 12] = (rng.below(16) as u8) << 4;
                }
            }
            _ => {
                frame = (0..rng.below(200)).map(|_| rng.next() as u8).collect();
                if frame.len() > 14 {
                    frame[12] = 0x08;
                    frame[13] = 0;
                }
            }
        }
        net.svc.handle(&frame, net.now, &mut sink);
        if round % 100 == 0 {
            net.now += rng.below(3_000) as u64;
            net.svc.poll(net.now, &mut sink);
        }
    }
    // Random requests on a live connection never panic either.
    for _ in 0..200 {
        let len = rng.below(300);
        let bytes: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        let mut out = Vec::new();
        net.svc.handle(
            &c.frame(ACK | PSH, c.seq, &bytes, None),
            net.now,
            &mut |f: &[u8]| out.push(f.to_vec()),
        );
        c.seq = c.seq.wrapping_add(len as u32);
    }
    // Fuzzed frames addressed other MACs: only sizes are checked here.
    for _ in 0..100_000 {
        let Some(at) = net.svc.next_deadline() else {
            break;
        };
        assert!(at <= net.now + 60_000, "a deadline ever further away");
        net.now = net.now.max(at);
        net.svc.poll(net.now, &mut sink);
    }
    assert_eq!(net.metric("imds_connections"), 0);
    assert!(net.metric("imds_bad_segments") > 0);
}

#[test]
fn document_validation() {
    assert!(matches!(
        MetadataDocument::from_json(&doc_json().replace("\"ami_id\"", "\"amiId\"")),
        Err(MetadataError::Json(_))
    ));
    let mut d = doc();
    d.interfaces.push(d.interfaces[0].clone());
    assert!(matches!(
        d.validate(),
        Err(MetadataError::DuplicateInterface(_))
    ));
    let mut d = doc();
    d.instance_type = "m5\n.large".into();
    assert!(matches!(d.validate(), Err(MetadataError::BadCharacter(_))));
    let mut d = doc();
    d.public_keys[0].name = "a=b".into();
    assert!(matches!(d.validate(), Err(MetadataError::BadCharacter(_))));
    let mut d = doc();
    d.instance_id = String::new();
    assert!(matches!(d.validate(), Err(MetadataError::Empty(_))));
    use base64::Engine as _;
    let mut d = doc();
    d.user_data =
        Some(base64::engine::general_purpose::STANDARD.encode(vec![0; MAX_USER_DATA + 1]));
    assert!(matches!(
        d.validate(),
        Err(MetadataError::UserDataTooLarge(_))
    ));
    let bad_mac = GuestAddrs {
        mac: MacAddr::BROADCAST,
        ..guest()
    };
    assert!(matches!(
        MetadataService::new(doc(), MetadataOptions::default(), bad_mac),
        Err(MetadataError::GuestMac(_))
    ));
    // The document round-trips through JSON.
    let json = serde_json::to_string(&doc()).unwrap();
    assert_eq!(MetadataDocument::from_json(&json).unwrap(), doc());
    // Minimal: optional parts left out.
    let minimal = r#"{"instance_id": "i-1", "ami_id": "ami-1", "instance_type": "t3.micro",
        "account_id": "1", "region": "r", "availability_zone": "r1",
        "local_ipv4": "10.0.0.5", "local_hostname": "h", "hostname": "h",
        "mac": "02:00:0a:00:00:05", "pending_time": "t"}"#;
    let d = MetadataDocument::from_json(minimal).unwrap();
    assert_eq!(d.architecture, "x86_64");
    let mut net = Net::with(d, MetadataOptions::default());
    assert_eq!(
        net.get("/latest/meta-data/").text(),
        "ami-id\nhostname\ninstance-id\ninstance-type\nlocal-hostname\nlocal-ipv4\nmac\n\
         network/\nplacement/\nsecurity-groups"
    );
    assert_eq!(
        net.get("/latest/dynamic/instance-identity/").text(),
        "document"
    );
}
