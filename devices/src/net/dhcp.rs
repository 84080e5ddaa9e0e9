//! A DHCP server (RFC 2131, options from RFC 2132) for exactly one client:
//! the guest behind this NIC, which always gets the same address.
//!
//! EC2 answers an instance's DHCP inside its network virtualisation, never
//! letting the requests onto the network; so does this datapath. There is
//! no lease table: the only address is `identity.ipv4`, the only client
//! the NIC's MAC, so DISCOVER is answered with an OFFER of that address,
//! REQUEST with an ACK if it asks for that address (a NAK otherwise),
//! INFORM with the configuration alone, and RELEASE/DECLINE are counted.
//!
//! Replies come from [`DHCP_SERVER_MAC`] and the subnet's gateway address,
//! which is also the server identifier: renewals are unicast to it, and the
//! datapath catches them on the way out whatever their destination. The
//! configuration options are encoded once, when the NIC is made, and cut
//! to fit so that a reply never exceeds the 576-byte IP datagram every
//! client must accept (RFC 2131 §2: 312 bytes of options).

use std::fmt;
use std::net::Ipv4Addr;

use super::datapath::{NicIdentity, MAX_LOCAL_FRAME};
use super::frame::{
    ethernet_header, ipv4_header, udp_header, FrameError, Writer, ETHERTYPE_IPV4, ETH_HEADER_LEN,
    IPPROTO_UDP, IPV4_HEADER_LEN, UDP_HEADER_LEN,
};
use super::MacAddr;

/// The Ethernet source address of the datapath's DHCP replies: locally
/// administered (bit 1 of the first byte), so it collides with no
/// vendor's NIC. Nothing is ever sent to it: the guest learns the
/// gateway's real MAC by ARP when it first routes a packet.
pub const DHCP_SERVER_MAC: MacAddr = MacAddr([0x02, 0x00, 0x00, 0x00, 0x00, 0x01]);

/// UDP port of DHCP servers.
pub(crate) const SERVER_PORT: u16 = 67;
/// UDP port of DHCP clients.
pub(crate) const CLIENT_PORT: u16 = 68;

/// TTL of replies.
const REPLY_TTL: u8 = 64;
/// The BOOTP header up to the magic cookie: op … file.
const BOOTP_FIXED_LEN: usize = 236;
/// RFC 2131 §3: 99.130.83.99 opens the options.
const MAGIC_COOKIE: [u8; 4] = [99, 130, 83, 99];
/// The largest IP datagram every client must accept (RFC 2131 §2).
const MAX_REPLY_DATAGRAM: usize = 576;
/// Bytes left for options after the cookie in such a datagram (308).
const MAX_OPTIONS_LEN: usize =
    MAX_REPLY_DATAGRAM - IPV4_HEADER_LEN - UDP_HEADER_LEN - BOOTP_FIXED_LEN - MAGIC_COOKIE.len();
/// Options every reply may carry besides the configuration: message type
/// (3), server identifier (6), lease time, T1 and T2 (6 each), end (1).
const PER_REPLY_OPTIONS_LEN: usize = 3 + 6 + 3 * 6 + 1;
/// Room for the configuration options.
const CONFIG_OPTIONS_LEN: usize = MAX_OPTIONS_LEN - PER_REPLY_OPTIONS_LEN;
/// Replies are padded to the minimum BOOTP message length (RFC 1542
/// §3.4), which some old clients insist on.
const MIN_REPLY_LEN: usize = 300;
/// Ethernet, IPv4 and UDP headers of a reply.
const REPLY_HEADERS_LEN: usize = ETH_HEADER_LEN + IPV4_HEADER_LEN + UDP_HEADER_LEN;

/// BOOTP `op` of a request.
const BOOTREQUEST: u8 = 1;
/// BOOTP `op` of a reply.
const BOOTREPLY: u8 = 2;
/// BOOTP `htype` of Ethernet.
const HTYPE_ETHERNET: u8 = 1;
/// The broadcast bit of BOOTP `flags`.
const FLAG_BROADCAST: u16 = 0x8000;

const OPT_PAD: u8 = 0;
const OPT_SUBNET_MASK: u8 = 1;
const OPT_ROUTER: u8 = 3;
const OPT_DNS: u8 = 6;
const OPT_HOST_NAME: u8 = 12;
const OPT_DOMAIN_NAME: u8 = 15;
const OPT_MTU: u8 = 26;
const OPT_BROADCAST: u8 = 28;
const OPT_REQUESTED_IP: u8 = 50;
const OPT_LEASE_TIME: u8 = 51;
const OPT_MESSAGE_TYPE: u8 = 53;
const OPT_SERVER_ID: u8 = 54;
const OPT_RENEWAL_TIME: u8 = 58;
const OPT_REBINDING_TIME: u8 = 59;
const OPT_END: u8 = 255;

/// The smallest interface MTU option 26 may carry (RFC 2132 §5.1).
const MIN_MTU: u16 = 68;

/// A DHCP message type (option 53, RFC 2132 §9.6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum MessageType {
    Discover,
    Offer,
    Request,
    Decline,
    Ack,
    Nak,
    Release,
    Inform,
}

impl MessageType {
    fn from_code(code: u8) -> Option<Self> {
        Some(match code {
            1 => Self::Discover,
            2 => Self::Offer,
            3 => Self::Request,
            4 => Self::Decline,
            5 => Self::Ack,
            6 => Self::Nak,
            7 => Self::Release,
            8 => Self::Inform,
            _ => return None,
        })
    }

    fn code(self) -> u8 {
        match self {
            Self::Discover => 1,
            Self::Offer => 2,
            Self::Request => 3,
            Self::Decline => 4,
            Self::Ack => 5,
            Self::Nak => 6,
            Self::Release => 7,
            Self::Inform => 8,
        }
    }
}

/// Why a message from the guest got no answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum DhcpError {
    /// The IP or UDP header around it is wrong.
    #[error("DHCP request in a broken datagram: {0}")]
    Frame(#[from] FrameError),
    /// The IPv4 header checksum is wrong.
    #[error("DHCP request with a bad IPv4 header checksum")]
    IpChecksum,
    /// Shorter than the BOOTP header and magic cookie.
    #[error("DHCP message truncated at {0} bytes")]
    Truncated(usize),
    /// `op` is not BOOTREQUEST.
    #[error("BOOTP op {0} is not a request")]
    NotRequest(u8),
    /// Not an Ethernet client.
    #[error("BOOTP hardware type {htype} length {hlen} is not Ethernet")]
    NotEthernet {
        /// `htype`.
        htype: u8,
        /// `hlen`.
        hlen: u8,
    },
    /// `chaddr` is not the NIC's MAC.
    #[error("DHCP request for client {0}, not this NIC")]
    ForeignClient(MacAddr),
    /// No DHCP magic cookie: plain BOOTP or garbage.
    #[error("no DHCP magic cookie")]
    BadCookie,
    /// An option runs past the end of the message.
    #[error("DHCP option {0} runs past the end of the message")]
    OptionOverflow(u8),
    /// An option the server reads has the wrong length.
    #[error("DHCP option {code} has length {len}")]
    BadOptionLength {
        /// The option.
        code: u8,
        /// Its length.
        len: usize,
    },
    /// An option the server reads appears twice.
    #[error("DHCP option {0} appears twice")]
    DuplicateOption(u8),
    /// No option 53: plain BOOTP, which is not served.
    #[error("no DHCP message type")]
    NoMessageType,
    /// Option 53 holds an unknown type.
    #[error("unknown DHCP message type {0}")]
    UnknownMessageType(u8),
    /// A server's message type from the client port.
    #[error("DHCP {0:?} is not a client message")]
    NotClientMessage(MessageType),
    /// A REQUEST that selects another server's offer.
    #[error("DHCP REQUEST selects server {0}")]
    ForeignServer(Ipv4Addr),
}

/// What a client's message says, as far as this server cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct DhcpRequest {
    /// Transaction id, echoed.
    pub xid: [u8; 4],
    /// BOOTP flags, echoed.
    pub flags: u16,
    /// The client's current address (renewing, informing) or 0.
    pub ciaddr: Ipv4Addr,
    /// Relay agent address, echoed.
    pub giaddr: Ipv4Addr,
    /// Client hardware address field, echoed.
    pub chaddr: [u8; 16],
    /// Option 53.
    pub message_type: MessageType,
    /// Option 50.
    pub requested_ip: Option<Ipv4Addr>,
    /// Option 54.
    pub server_id: Option<Ipv4Addr>,
}

impl DhcpRequest {
    fn wants_broadcast(&self) -> bool {
        self.flags & FLAG_BROADCAST != 0
    }
}

/// Reads fixed-size fields off the front of a message.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take<const N: usize>(&mut self, whole: usize) -> Result<[u8; N], DhcpError> {
        let (field, rest) = self
            .0
            .split_first_chunk::<N>()
            .ok_or(DhcpError::Truncated(whole))?;
        self.0 = rest;
        Ok(*field)
    }
}

/// A fixed-size option value.
fn option_value<const N: usize>(code: u8, value: &[u8]) -> Result<[u8; N], DhcpError> {
    <[u8; N]>::try_from(value).map_err(|_| DhcpError::BadOptionLength {
        code,
        len: value.len(),
    })
}

/// Sets `slot` to `value`, refusing a second occurrence.
fn set_once<T>(slot: &mut Option<T>, code: u8, value: T) -> Result<(), DhcpError> {
    if slot.is_some() {
        return Err(DhcpError::DuplicateOption(code));
    }
    *slot = Some(value);
    Ok(())
}

/// Reads the DHCP message `message` (a UDP payload) the client
/// `client_mac` sent. Option overload (option 52) is not followed: no
/// client puts the options this server reads into `sname` or `file`.
pub(crate) fn parse_request(message: &[u8], client_mac: MacAddr) -> Result<DhcpRequest, DhcpError> {
    let whole = message.len();
    let mut r = Reader(message);
    let [op, htype, hlen, _hops] = r.take::<4>(whole)?;
    let xid = r.take::<4>(whole)?;
    let [_, _, f0, f1] = r.take::<4>(whole)?; // secs, flags
    let ciaddr = Ipv4Addr::from(r.take::<4>(whole)?);
    let _yiaddr = r.take::<4>(whole)?;
    let _siaddr = r.take::<4>(whole)?;
    let giaddr = Ipv4Addr::from(r.take::<4>(whole)?);
    let chaddr = r.take::<16>(whole)?;
    let _sname = r.take::<64>(whole)?;
    let _file = r.take::<128>(whole)?;
    let cookie = r.take::<4>(whole)?;
    if op != BOOTREQUEST {
        return Err(DhcpError::NotRequest(op));
    }
    if htype != HTYPE_ETHERNET || hlen != 6 {
        return Err(DhcpError::NotEthernet { htype, hlen });
    }
    let mac = match chaddr.first_chunk::<6>() {
        Some(mac) => MacAddr(*mac),
        None => return Err(DhcpError::Truncated(whole)),
    };
    if mac != client_mac {
        return Err(DhcpError::ForeignClient(mac));
    }
    if cookie != MAGIC_COOKIE {
        return Err(DhcpError::BadCookie);
    }

    let mut message_type = None;
    let mut requested_ip = None;
    let mut server_id = None;
    let mut rest = r.0;
    // A message may end without an END option where the bytes end.
    while let Some((&code, after)) = rest.split_first() {
        match code {
            OPT_PAD => {
                rest = after;
                continue;
            }
            OPT_END => break,
            _ => {}
        }
        let (&len, after) = after.split_first().ok_or(DhcpError::OptionOverflow(code))?;
        let (value, after) = after
            .split_at_checked(usize::from(len))
            .ok_or(DhcpError::OptionOverflow(code))?;
        match code {
            OPT_MESSAGE_TYPE => {
                let [kind] = option_value::<1>(code, value)?;
                let kind =
                    MessageType::from_code(kind).ok_or(DhcpError::UnknownMessageType(kind))?;
                set_once(&mut message_type, code, kind)?;
            }
            OPT_REQUESTED_IP => {
                let addr = Ipv4Addr::from(option_value::<4>(code, value)?);
                set_once(&mut requested_ip, code, addr)?;
            }
            OPT_SERVER_ID => {
                let addr = Ipv4Addr::from(option_value::<4>(code, value)?);
                set_once(&mut server_id, code, addr)?;
            }
            _ => {}
        }
        rest = after;
    }

    Ok(DhcpRequest {
        xid,
        flags: u16::from_be_bytes([f0, f1]),
        ciaddr,
        giaddr,
        chaddr,
        message_type: message_type.ok_or(DhcpError::NoMessageType)?,
        requested_ip,
        server_id,
    })
}

/// A reply the server sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reply {
    /// DHCPOFFER, to a DISCOVER.
    Offer,
    /// DHCPACK, to a REQUEST for the NIC's address.
    Ack,
    /// DHCPNAK, to a REQUEST for any other address.
    Nak,
    /// DHCPACK without a lease, to an INFORM.
    InformAck,
}

impl Reply {
    fn message_type(self) -> MessageType {
        match self {
            Reply::Offer => MessageType::Offer,
            Reply::Ack | Reply::InformAck => MessageType::Ack,
            Reply::Nak => MessageType::Nak,
        }
    }
}

/// What the server does with a client message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Answer {
    /// Send this reply.
    Reply(Reply),
    /// A RELEASE: nothing to send.
    Released,
    /// A DECLINE: nothing to send.
    Declined,
}

/// The server of one NIC: its addresses and the options it hands out.
pub(crate) struct DhcpServer {
    client_mac: MacAddr,
    client_ip: Ipv4Addr,
    server_ip: Ipv4Addr,
    lease_secs: u32,
    config: [u8; CONFIG_OPTIONS_LEN],
    config_len: usize,
}

impl fmt::Debug for DhcpServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DhcpServer")
            .field("client_ip", &self.client_ip)
            .field("server_ip", &self.server_ip)
            .field("lease_secs", &self.lease_secs)
            .field("config_len", &self.config_len)
            .finish_non_exhaustive()
    }
}

/// The netmask of a `prefix_len`-bit prefix.
fn netmask(prefix_len: u8) -> Ipv4Addr {
    match u32::from(prefix_len.min(32)) {
        0 => Ipv4Addr::UNSPECIFIED,
        bits => Ipv4Addr::from(u32::MAX << (32 - bits)),
    }
}

/// Appends option `code` holding `value` (at most 255 bytes).
fn put_option(w: &mut Writer<'_>, code: u8, value: &[u8]) -> Result<(), FrameError> {
    let len = u8::try_from(value.len()).map_err(|_| FrameError::NoRoom(255))?;
    w.put(&[code, len])?;
    w.put(value)
}

/// `part` of `whole`, rounded down, as seconds.
fn fraction(whole: u32, numerator: u64, denominator: u64) -> u32 {
    u32::try_from(u64::from(whole) * numerator / denominator).unwrap_or(whole)
}

impl DhcpServer {
    /// The server for the NIC `identity` describes. Options that cannot
    /// be encoded or do not fit the reply are left out, with a warning.
    pub(crate) fn new(identity: &NicIdentity) -> Self {
        let mut config = [0; CONFIG_OPTIONS_LEN];
        let config_len = match encode_config(identity, &mut config) {
            Ok(len) => len,
            Err(e) => {
                // Cannot happen: the space is budgeted before writing.
                log::warn!("DHCP configuration options for {}: {e}", identity.mac);
                0
            }
        };
        Self {
            client_mac: identity.mac,
            client_ip: identity.ipv4,
            server_ip: identity.gateway,
            lease_secs: identity.lease_secs,
            config,
            config_len,
        }
    }

    /// Decides what to do with `request` (RFC 2131 §4.3).
    pub(crate) fn answer(&self, request: &DhcpRequest) -> Result<Answer, DhcpError> {
        Ok(match request.message_type {
            MessageType::Discover => Answer::Reply(Reply::Offer),
            MessageType::Request => {
                if let Some(id) = request.server_id {
                    if id != self.server_ip {
                        // SELECTING another server's offer: stay quiet.
                        return Err(DhcpError::ForeignServer(id));
                    }
                }
                // SELECTING and INIT-REBOOT name the address in option 50,
                // RENEWING and REBINDING in ciaddr.
                let wanted = request
                    .requested_ip
                    .or((!request.ciaddr.is_unspecified()).then_some(request.ciaddr));
                if wanted == Some(self.client_ip) {
                    Answer::Reply(Reply::Ack)
                } else {
                    Answer::Reply(Reply::Nak)
                }
            }
            MessageType::Inform => Answer::Reply(Reply::InformAck),
            MessageType::Release => Answer::Released,
            MessageType::Decline => Answer::Declined,
            kind @ (MessageType::Offer | MessageType::Ack | MessageType::Nak) => {
                return Err(DhcpError::NotClientMessage(kind));
            }
        })
    }

    /// Where a reply goes, Ethernet and IP (RFC 2131 §4.1, `giaddr` 0).
    fn destination(
        &self,
        request: &DhcpRequest,
        reply: Reply,
        yiaddr: Ipv4Addr,
    ) -> (MacAddr, Ipv4Addr) {
        if reply == Reply::Nak {
            (MacAddr::BROADCAST, Ipv4Addr::BROADCAST)
        } else if !request.ciaddr.is_unspecified() {
            (self.client_mac, request.ciaddr)
        } else if request.wants_broadcast() || yiaddr.is_unspecified() {
            (MacAddr::BROADCAST, Ipv4Addr::BROADCAST)
        } else {
            (self.client_mac, yiaddr)
        }
    }

    /// Writes the Ethernet frame of `reply` to `request` into `out` and
    /// returns its length.
    pub(crate) fn write_reply(
        &self,
        request: &DhcpRequest,
        reply: Reply,
        out: &mut [u8; MAX_LOCAL_FRAME],
    ) -> Result<usize, FrameError> {
        let yiaddr = match reply {
            Reply::Offer | Reply::Ack => self.client_ip,
            Reply::Nak | Reply::InformAck => Ipv4Addr::UNSPECIFIED,
        };
        let ciaddr = match reply {
            Reply::Ack | Reply::InformAck => request.ciaddr,
            Reply::Offer | Reply::Nak => Ipv4Addr::UNSPECIFIED,
        };
        let (dst_mac, dst_ip) = self.destination(request, reply, yiaddr);
        let (headers, body) = out
            .as_mut_slice()
            .split_first_chunk_mut::<REPLY_HEADERS_LEN>()
            .ok_or(FrameError::NoRoom(MAX_LOCAL_FRAME))?;

        let mut w = Writer::new(body);
        w.put(&[BOOTREPLY, HTYPE_ETHERNET, 6, 0])?;
        w.put(&request.xid)?;
        w.put(&[0, 0])?; // secs
        w.put(&request.flags.to_be_bytes())?;
        w.put(&ciaddr.octets())?;
        w.put(&yiaddr.octets())?;
        w.put(&Ipv4Addr::UNSPECIFIED.octets())?; // siaddr: no boot server
        w.put(&request.giaddr.octets())?;
        w.put(&request.chaddr)?;
        w.zeros(64 + 128)?; // sname, file
        w.put(&MAGIC_COOKIE)?;
        put_option(&mut w, OPT_MESSAGE_TYPE, &[reply.message_type().code()])?;
        put_option(&mut w, OPT_SERVER_ID, &self.server_ip.octets())?;
        if matches!(reply, Reply::Offer | Reply::Ack) {
            let lease = self.lease_secs;
            put_option(&mut w, OPT_LEASE_TIME, &lease.to_be_bytes())?;
            put_option(
                &mut w,
                OPT_RENEWAL_TIME,
                &fraction(lease, 1, 2).to_be_bytes(),
            )?;
            put_option(
                &mut w,
                OPT_REBINDING_TIME,
                &fraction(lease, 7, 8).to_be_bytes(),
            )?;
        }
        if reply != Reply::Nak {
            w.put(self.config.get(..self.config_len).unwrap_or(&[]))?;
        }
        w.put(&[OPT_END])?;
        let len = w.len();
        if len < MIN_REPLY_LEN {
            w.zeros(MIN_REPLY_LEN - len)?;
        }
        let len = w.len();

        let payload = body.get(..len).ok_or(FrameError::NoRoom(MAX_LOCAL_FRAME))?;
        let udp = udp_header(self.server_ip, dst_ip, SERVER_PORT, CLIENT_PORT, payload)?;
        let ip_payload_len =
            u16::try_from(UDP_HEADER_LEN + len).map_err(|_| FrameError::NoRoom(MAX_LOCAL_FRAME))?;
        let ip = ipv4_header(
            self.server_ip,
            dst_ip,
            IPPROTO_UDP,
            REPLY_TTL,
            ip_payload_len,
        )?;
        let eth = ethernet_header(dst_mac, DHCP_SERVER_MAC, ETHERTYPE_IPV4);
        let mut w = Writer::new(headers);
        w.put(&eth)?;
        w.put(&ip)?;
        w.put(&udp)?;
        Ok(REPLY_HEADERS_LEN + len)
    }
}

/// Encodes the configuration options of `identity` into `out`: subnet
/// mask, router, DNS servers, host name, domain name, MTU, broadcast
/// address. The fixed-size ones always fit; DNS servers, then the host
/// name, then the domain name take what room is left.
fn encode_config(
    identity: &NicIdentity,
    out: &mut [u8; CONFIG_OPTIONS_LEN],
) -> Result<usize, FrameError> {
    let mask = netmask(identity.prefix_len);
    let broadcast = Ipv4Addr::from(u32::from(identity.ipv4) | !u32::from(mask));
    let with_mtu = identity.mtu >= MIN_MTU;
    let fixed = 6 + 6 + 6 + if with_mtu { 4 } else { 0 };
    let mut room = CONFIG_OPTIONS_LEN - fixed;

    // Option values are at most 255 bytes: 63 DNS servers.
    let dns_count = identity
        .dns
        .len()
        .min(255 / 4)
        .min(room.saturating_sub(2) / 4);
    if dns_count > 0 {
        room -= 2 + 4 * dns_count;
    }
    if dns_count < identity.dns.len() {
        log::warn!(
            "DHCP for {}: only {dns_count} of {} DNS servers fit a reply",
            identity.mac,
            identity.dns.len()
        );
    }
    let mut fits = |name: &str, what: &str| {
        let len = name.len();
        if len == 0 {
            return false;
        }
        if len > 255 || 2 + len > room {
            log::warn!(
                "DHCP for {}: the {len}-byte {what} does not fit a reply",
                identity.mac
            );
            return false;
        }
        room -= 2 + len;
        true
    };
    let with_hostname = fits(&identity.hostname, "host name");
    let with_domain = fits(&identity.domain, "domain name");

    let mut w = Writer::new(out);
    put_option(&mut w, OPT_SUBNET_MASK, &mask.octets())?;
    put_option(&mut w, OPT_ROUTER, &identity.gateway.octets())?;
    if dns_count > 0 {
        w.put(&[
            OPT_DNS,
            u8::try_from(4 * dns_count).map_err(|_| FrameError::NoRoom(255))?,
        ])?;
        for server in identity.dns.iter().take(dns_count) {
            w.put(&server.octets())?;
        }
    }
    if with_hostname {
        put_option(&mut w, OPT_HOST_NAME, identity.hostname.as_bytes())?;
    }
    if with_domain {
        put_option(&mut w, OPT_DOMAIN_NAME, identity.domain.as_bytes())?;
    }
    if with_mtu {
        put_option(&mut w, OPT_MTU, &identity.mtu.to_be_bytes())?;
    }
    put_option(&mut w, OPT_BROADCAST, &broadcast.octets())?;
    Ok(w.len())
}
