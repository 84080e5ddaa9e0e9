//! One network card as given by
//! `--net tap=NAME,mac=MAC,ip=ADDR/PREFIX,gw=IP[,id=NAME][,dns=IP[+IP…]][,hostname=NAME][,domain=NAME][,mtu=N][,ipv6=ADDR][,source-dest-check=on|off][,sg=FILE][,metadata=FILE][,flow-log=FILE]`
//! or the `nets` array of a JSON config.
//!
//! The VMM answers the guest's DHCP with exactly these settings, so the
//! guest needs no host daemon. `sg=FILE` (security groups),
//! `metadata=FILE` (instance metadata) and `flow-log=FILE` name JSON files
//! described in `crate::nic_services`.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use stratus_devices::net::{MacAddr, NicIdentity};
use stratus_devices::virtio::net::tap::MAX_TAP_NAME_LEN;

use super::ConfigError;

/// Most network cards one VM may have.
pub const MAX_NICS: usize = 8;
/// Longest NIC id (it appears in API paths and metric labels).
pub const MAX_NIC_ID_LEN: usize = 64;
/// Most DNS servers handed out by DHCP (EC2's DHCP options take four).
pub const MAX_DNS_SERVERS: usize = 4;
/// Interface MTU range: IPv4's minimum up to EC2's jumbo frames.
pub const MTU_RANGE: std::ops::RangeInclusive<u16> = 68..=9001;
/// Domain handed out when none is given (EC2 uses `<region>.compute.internal`).
pub const DEFAULT_DOMAIN: &str = "compute.internal";
/// DHCP lease time (EC2 hands out one hour).
pub const LEASE_SECS: u32 = 3600;

fn default_mtu() -> u16 {
    1500
}
fn yes() -> bool {
    true
}
fn is_true(v: &bool) -> bool {
    *v
}

/// An IPv4 address with its prefix length, written `10.0.0.5/24`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv4Cidr {
    /// The address.
    pub addr: Ipv4Addr,
    /// The prefix length.
    pub prefix_len: u8,
}

impl Ipv4Cidr {
    /// The netmask as an integer.
    fn mask(&self) -> u32 {
        u32::MAX
            .checked_shl(32 - u32::from(self.prefix_len))
            .unwrap_or(0)
    }

    /// Whether `other` is in the same subnet.
    pub fn contains(&self, other: Ipv4Addr) -> bool {
        u32::from(self.addr) & self.mask() == u32::from(other) & self.mask()
    }

    /// Whether the address is the subnet's network or broadcast address.
    pub fn is_network_or_broadcast(&self) -> bool {
        let host = u32::from(self.addr) & !self.mask();
        host == 0 || host == !self.mask()
    }
}

impl FromStr for Ipv4Cidr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (addr, prefix) = s
            .split_once('/')
            .ok_or_else(|| format!("'{s}' is not ADDRESS/PREFIX"))?;
        let addr = addr
            .parse()
            .map_err(|_| format!("'{addr}' is not an IPv4 address"))?;
        let prefix_len = prefix
            .parse::<u8>()
            .ok()
            .filter(|p| (1..=30).contains(p))
            .ok_or_else(|| format!("prefix length '{prefix}' must be 1 to 30"))?;
        Ok(Self { addr, prefix_len })
    }
}

impl std::fmt::Display for Ipv4Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix_len)
    }
}

impl Serialize for Ipv4Cidr {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Ipv4Cidr {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(d)?;
        raw.parse().map_err(serde::de::Error::custom)
    }
}

/// A network card attached to the VM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetConfig {
    /// The NIC's name in the API and metrics; `net0`, `net1`, … in
    /// configuration order when absent.
    #[serde(default)]
    pub id: Option<String>,
    /// The host tap device (must exist; the VMM does not create it).
    pub tap: String,
    /// The guest's MAC address.
    pub mac: MacAddr,
    /// The guest's IPv4 address and subnet.
    pub ip: Ipv4Cidr,
    /// The subnet's router (also DHCP's server identifier).
    pub gateway: Ipv4Addr,
    /// The guest's IPv6 address, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv6: Option<Ipv6Addr>,
    /// DNS servers handed out by DHCP.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dns: Vec<Ipv4Addr>,
    /// Host name handed out by DHCP; EC2's `ip-10-0-0-5` form when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// Domain handed out by DHCP; [`DEFAULT_DOMAIN`] when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    /// Interface MTU handed out by DHCP and in virtio config space.
    #[serde(default = "default_mtu")]
    pub mtu: u16,
    /// EC2's source/destination check (on unless turned off).
    #[serde(default = "yes", skip_serializing_if = "is_true")]
    pub source_dest_check: bool,
    /// Security groups (JSON); unfiltered when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security_groups: Option<PathBuf>,
    /// Instance metadata service (JSON); frames to it are dropped when
    /// absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<PathBuf>,
    /// Flow logs (JSON); none when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flow_log: Option<PathBuf>,
}

impl FromStr for NetConfig {
    type Err = ConfigError;

    fn from_str(spec: &str) -> Result<Self, ConfigError> {
        let bad = |why: String| ConfigError::BadNet {
            spec: spec.to_string(),
            why,
        };
        let (mut tap, mut mac, mut ip, mut gateway) = (None, None, None, None);
        let mut net = NetConfig {
            id: None,
            tap: String::new(),
            mac: MacAddr::default(),
            ip: Ipv4Cidr {
                addr: Ipv4Addr::UNSPECIFIED,
                prefix_len: 0,
            },
            gateway: Ipv4Addr::UNSPECIFIED,
            ipv6: None,
            dns: Vec::new(),
            hostname: None,
            domain: None,
            mtu: default_mtu(),
            source_dest_check: true,
            security_groups: None,
            metadata: None,
            flow_log: None,
        };
        for option in spec.split(',') {
            let (key, value) = option
                .split_once('=')
                .ok_or_else(|| bad(format!("'{option}' is not KEY=VALUE")))?;
            let ipv4 = |v: &str| {
                v.parse::<Ipv4Addr>()
                    .map_err(|_| bad(format!("{key}: '{v}' is not an IPv4 address")))
            };
            match key {
                "tap" => tap = Some(value.to_string()),
                "mac" => mac = Some(value.parse().map_err(|e| bad(format!("{e}")))?),
                "ip" => ip = Some(value.parse().map_err(bad)?),
                "gw" => gateway = Some(ipv4(value)?),
                "id" => net.id = Some(value.to_string()),
                "dns" => net.dns = value.split('+').map(ipv4).collect::<Result<_, _>>()?,
                "hostname" => net.hostname = Some(value.to_string()),
                "domain" => net.domain = Some(value.to_string()),
                "mtu" => {
                    net.mtu = value
                        .parse()
                        .map_err(|_| bad(format!("mtu '{value}' is not a number")))?
                }
                "ipv6" => {
                    net.ipv6 = Some(
                        value
                            .parse()
                            .map_err(|_| bad(format!("'{value}' is not an IPv6 address")))?,
                    )
                }
                "source-dest-check" => {
                    net.source_dest_check = match value {
                        "on" | "true" => true,
                        "off" | "false" => false,
                        _ => {
                            return Err(bad(format!(
                                "source-dest-check must be on or off, got '{value}'"
                            )))
                        }
                    }
                }
                "sg" => net.security_groups = Some(PathBuf::from(value)),
                "metadata" => net.metadata = Some(PathBuf::from(value)),
                "flow-log" => net.flow_log = Some(PathBuf::from(value)),
                _ => return Err(bad(format!("unknown option '{key}'"))),
            }
        }
        net.tap = tap.ok_or_else(|| bad("missing tap=NAME".into()))?;
        net.mac = mac.ok_or_else(|| bad("missing mac=MAC".into()))?;
        net.ip = ip.ok_or_else(|| bad("missing ip=ADDRESS/PREFIX".into()))?;
        net.gateway = gateway.ok_or_else(|| bad("missing gw=IP".into()))?;
        net.validate_syntax().map_err(bad)?;
        Ok(net)
    }
}

/// Whether `name` is a DNS name (dot-separated labels of letters, digits
/// and hyphens, not starting or ending with a hyphen).
fn is_dns_name(name: &str, max: usize) -> bool {
    !name.is_empty()
        && name.len() <= max
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

impl NetConfig {
    /// The NIC id: the configured one, else `net{index}`.
    pub fn nic_id(&self, index: usize) -> String {
        self.id.clone().unwrap_or_else(|| format!("net{index}"))
    }

    /// The host name DHCP hands out.
    pub fn effective_hostname(&self) -> String {
        self.hostname.clone().unwrap_or_else(|| {
            let [a, b, c, d] = self.ip.addr.octets();
            format!("ip-{a}-{b}-{c}-{d}")
        })
    }

    /// Checks what can be checked without touching the host.
    pub fn validate_syntax(&self) -> Result<(), String> {
        let tap_ok = !self.tap.is_empty()
            && self.tap.len() <= MAX_TAP_NAME_LEN
            && self
                .tap
                .bytes()
                .all(|b| b.is_ascii_graphic() && b != b'/' && b != b':');
        if !tap_ok {
            return Err(format!(
                "tap name '{}' must be 1 to {MAX_TAP_NAME_LEN} characters without '/' or ':'",
                self.tap
            ));
        }
        if let Some(id) = &self.id {
            let ok = !id.is_empty()
                && id.len() <= MAX_NIC_ID_LEN
                && id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
            if !ok {
                return Err(format!(
                    "id '{id}' must be 1 to {MAX_NIC_ID_LEN} characters of A-Z, a-z, 0-9, - or _"
                ));
            }
        }
        if !self.mac.is_unicast() || self.mac.is_zero() {
            return Err(format!("MAC {} is multicast or zero", self.mac));
        }
        if !(1..=30).contains(&self.ip.prefix_len) {
            return Err(format!(
                "prefix length {} must be 1 to 30",
                self.ip.prefix_len
            ));
        }
        if self.ip.is_network_or_broadcast() {
            return Err(format!(
                "{} is the subnet's network or broadcast address",
                self.ip
            ));
        }
        if !self.ip.contains(self.gateway) || self.gateway == self.ip.addr {
            return Err(format!(
                "gateway {} must be another address inside {}",
                self.gateway, self.ip
            ));
        }
        if self.dns.len() > MAX_DNS_SERVERS {
            return Err(format!("at most {MAX_DNS_SERVERS} DNS servers"));
        }
        if !MTU_RANGE.contains(&self.mtu) {
            return Err(format!(
                "mtu {} must be {} to {}",
                self.mtu,
                MTU_RANGE.start(),
                MTU_RANGE.end()
            ));
        }
        if let Some(h) = &self.hostname {
            if !is_dns_name(h, 63) || h.contains('.') {
                return Err(format!(
                    "hostname '{h}' must be one DNS label (letters, digits, '-')"
                ));
            }
        }
        if let Some(d) = &self.domain {
            if !is_dns_name(d, 253) {
                return Err(format!("domain '{d}' is not a DNS name"));
            }
        }
        Ok(())
    }

    /// What the datapath needs to know about the NIC.
    pub fn identity(&self) -> NicIdentity {
        NicIdentity {
            mac: self.mac,
            ipv4: self.ip.addr,
            prefix_len: self.ip.prefix_len,
            gateway: self.gateway,
            ipv6: self.ipv6,
            dns: self.dns.clone(),
            hostname: self.effective_hostname(),
            domain: self
                .domain
                .clone()
                .unwrap_or_else(|| DEFAULT_DOMAIN.to_string()),
            mtu: self.mtu,
            lease_secs: LEASE_SECS,
            source_dest_check: self.source_dest_check,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SPEC: &str = "tap=tap0,mac=02:00:0a:00:00:05,ip=10.0.0.5/24,gw=10.0.0.1";

    #[test]
    fn parses_the_minimal_spec_with_defaults() {
        let net: NetConfig = SPEC.parse().unwrap();
        assert_eq!(net.tap, "tap0");
        assert_eq!(net.ip.to_string(), "10.0.0.5/24");
        assert_eq!(net.nic_id(0), "net0");
        let id = net.identity();
        assert_eq!(id.hostname, "ip-10-0-0-5");
        assert_eq!(id.domain, DEFAULT_DOMAIN);
        assert_eq!(id.mtu, 1500);
        assert!(id.source_dest_check);
    }

    #[test]
    fn parses_every_option() {
        let spec = format!(
            "{SPEC},id=eth0,dns=10.0.0.2+1.1.1.1,hostname=web,domain=example.internal,mtu=9001,ipv6=fd00::5,source-dest-check=off"
        );
        let net: NetConfig = spec.parse().unwrap();
        assert_eq!(net.nic_id(3), "eth0");
        assert_eq!(net.dns.len(), 2);
        assert_eq!(net.mtu, 9001);
        assert!(!net.source_dest_check);
        assert_eq!(net.ipv6, Some("fd00::5".parse().unwrap()));
    }

    #[test]
    fn refuses_bad_specs_with_reasons() {
        for (spec, why) in [
            (
                "mac=02:00:0a:00:00:05,ip=10.0.0.5/24,gw=10.0.0.1",
                "missing tap",
            ),
            ("tap=t,ip=10.0.0.5/24,gw=10.0.0.1", "missing mac"),
            (
                "tap=t,mac=03:00:0a:00:00:05,ip=10.0.0.5/24,gw=10.0.0.1",
                "multicast",
            ),
            (
                "tap=t,mac=02:00:0a:00:00:05,ip=10.0.0.5,gw=10.0.0.1",
                "ADDRESS/PREFIX",
            ),
            (
                "tap=t,mac=02:00:0a:00:00:05,ip=10.0.0.5/31,gw=10.0.0.1",
                "1 to 30",
            ),
            (
                "tap=t,mac=02:00:0a:00:00:05,ip=10.0.0.0/24,gw=10.0.0.1",
                "network or broadcast",
            ),
            (
                "tap=t,mac=02:00:0a:00:00:05,ip=10.0.0.5/24,gw=10.0.1.1",
                "inside",
            ),
            (
                "tap=t,mac=02:00:0a:00:00:05,ip=10.0.0.5/24,gw=10.0.0.5",
                "another address",
            ),
            (&format!("{SPEC},mtu=20000"), "mtu"),
            (&format!("{SPEC},hostname=a.b"), "one DNS label"),
            (&format!("{SPEC},colour=blue"), "unknown option"),
            (
                &format!("{SPEC},dns=1.1.1.1+2.2.2.2+3.3.3.3+4.4.4.4+5.5.5.5"),
                "at most",
            ),
        ] {
            let err = spec.parse::<NetConfig>().unwrap_err().to_string();
            assert!(err.contains(why), "{spec}: {err}");
        }
    }

    #[test]
    fn json_round_trip() {
        let net: NetConfig = SPEC.parse().unwrap();
        let json = serde_json::to_string(&net).unwrap();
        assert!(json.contains("\"ip\":\"10.0.0.5/24\""), "{json}");
        let back: NetConfig = serde_json::from_str(&json).unwrap();
        assert_eq!(back, net);
    }
}
