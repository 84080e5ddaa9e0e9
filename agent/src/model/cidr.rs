//! IPv4 and IPv6 CIDR blocks as EC2 writes them (`10.0.0.0/24`,
//! `2001:db8::/64`): parsed strictly (the address must be the block's
//! first, as EC2 requires of a subnet and normalises for rules).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

/// A CIDR block: a network address and a prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Cidr {
    pub addr: IpAddr,
    pub len: u8,
}

/// Why a CIDR string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CidrError {
    #[error("`{0}` is not a CIDR block (ADDRESS/PREFIX)")]
    Syntax(String),
    #[error("prefix length {len} is too long for `{text}`")]
    PrefixLength { text: String, len: u8 },
    #[error("`{text}` has host bits set; the block starts at {network}")]
    HostBits { text: String, network: String },
}

impl Cidr {
    /// The prefix as bits of a 128-bit integer (IPv4 in the low 32).
    fn bits(addr: IpAddr) -> u128 {
        match addr {
            IpAddr::V4(a) => u128::from(u32::from(a)),
            IpAddr::V6(a) => u128::from(a),
        }
    }

    fn width(&self) -> u8 {
        if self.addr.is_ipv4() {
            32
        } else {
            128
        }
    }

    /// The netmask of the block's family, as bits.
    fn mask(&self) -> u128 {
        let host_bits = u32::from(self.width() - self.len);
        let all = if self.addr.is_ipv4() {
            u128::from(u32::MAX)
        } else {
            u128::MAX
        };
        all & !(u128::MAX.checked_shr(128 - host_bits).unwrap_or(0))
    }

    /// Whether `ip` is in the block.
    pub fn contains(&self, ip: IpAddr) -> bool {
        ip.is_ipv4() == self.addr.is_ipv4() && Self::bits(ip) & self.mask() == Self::bits(self.addr)
    }

    /// Whether the two blocks share an address.
    pub fn overlaps(&self, other: &Cidr) -> bool {
        self.contains(other.addr) || other.contains(self.addr)
    }

    /// How many addresses the block has (saturating for huge IPv6 blocks).
    pub fn size(&self) -> u128 {
        1u128
            .checked_shl(u32::from(self.width() - self.len))
            .unwrap_or(u128::MAX)
    }

    /// The `n`-th address of an IPv4 block, if the block has that many.
    pub fn nth_v4(&self, n: u32) -> Option<Ipv4Addr> {
        let IpAddr::V4(base) = self.addr else {
            return None;
        };
        (u128::from(n) < self.size()).then(|| Ipv4Addr::from(u32::from(base) + n))
    }

    /// The index of `ip` in the block.
    pub fn index_of_v4(&self, ip: Ipv4Addr) -> Option<u32> {
        let IpAddr::V4(base) = self.addr else {
            return None;
        };
        self.contains(IpAddr::V4(ip))
            .then(|| u32::from(ip) - u32::from(base))
    }
}

impl FromStr for Cidr {
    type Err = CidrError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let syntax = || CidrError::Syntax(text.to_string());
        let (addr, len) = text.split_once('/').ok_or_else(syntax)?;
        let addr: IpAddr = addr.parse().map_err(|_| syntax())?;
        // Digits only: "+8" or " 8" are not prefix lengths.
        if len.is_empty() || len.len() > 3 || !len.bytes().all(|b| b.is_ascii_digit()) {
            return Err(syntax());
        }
        let len: u8 = len.parse().map_err(|_| syntax())?;
        let cidr = Cidr { addr, len };
        if len > cidr.width() {
            return Err(CidrError::PrefixLength {
                text: text.to_string(),
                len,
            });
        }
        let network_bits = Self::bits(addr) & cidr.mask();
        if network_bits != Self::bits(addr) {
            let network = match addr {
                IpAddr::V4(_) => {
                    IpAddr::V4(Ipv4Addr::from(u32::try_from(network_bits).unwrap_or(0)))
                }
                IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::from(network_bits)),
            };
            return Err(CidrError::HostBits {
                text: text.to_string(),
                network: format!("{network}/{len}"),
            });
        }
        Ok(cidr)
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_refuses_like_ec2() {
        let c: Cidr = "10.0.0.0/24".parse().unwrap();
        assert_eq!(c.to_string(), "10.0.0.0/24");
        assert_eq!(c.size(), 256);
        assert!(c.contains("10.0.0.255".parse().unwrap()));
        assert!(!c.contains("10.0.1.0".parse().unwrap()));
        assert!(!c.contains("::1".parse().unwrap()));
        assert_eq!(c.nth_v4(1), Some(Ipv4Addr::new(10, 0, 0, 1)));
        assert_eq!(c.nth_v4(256), None);
        assert_eq!(c.index_of_v4(Ipv4Addr::new(10, 0, 0, 9)), Some(9));
        let all: Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains("255.255.255.255".parse().unwrap()));
        let v6: Cidr = "2001:db8::/32".parse().unwrap();
        assert!(v6.contains("2001:db8:1::5".parse().unwrap()));
        assert!("::/0"
            .parse::<Cidr>()
            .unwrap()
            .contains("ff02::1".parse().unwrap()));
        for bad in [
            "10.0.0.0",
            "10.0.0.0/33",
            "10.0.0.1/24",
            "10.0.0.0/+8",
            "x/8",
            "10.0.0.0/",
            "2001:db8::1/32",
        ] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad}");
        }
        assert!(matches!(
            "10.0.0.1/24".parse::<Cidr>(),
            Err(CidrError::HostBits { network, .. }) if network == "10.0.0.0/24"
        ));
    }

    #[test]
    fn overlaps() {
        let a: Cidr = "10.0.0.0/16".parse().unwrap();
        let b: Cidr = "10.0.5.0/24".parse().unwrap();
        let c: Cidr = "10.1.0.0/16".parse().unwrap();
        assert!(a.overlaps(&b) && b.overlaps(&a));
        assert!(!a.overlaps(&c));
    }
}
