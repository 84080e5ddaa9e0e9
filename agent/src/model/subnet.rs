//! Subnets: an IPv4 CIDR on a Linux bridge of its own. As in a VPC, the
//! first address is the gateway (the bridge's own address) and the next
//! two and the last are reserved, so a /24 leaves 251 for instances.

use serde::{Deserialize, Serialize};

use super::cidr::Cidr;

/// The smallest and largest subnets EC2 allows.
pub const MIN_PREFIX: u8 = 16;
pub const MAX_PREFIX: u8 = 28;
/// Addresses EC2 keeps in every subnet: network, router, DNS, future, broadcast.
pub const RESERVED: u32 = 5;

/// A subnet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Subnet {
    pub subnet_id: String,
    pub cidr_block: String,
    /// The gateway: the first host address, held by the bridge.
    pub gateway: String,
    /// The host bridge's name.
    pub bridge: String,
    pub available_ip_address_count: u32,
    /// `pending` while its bridge is being made, `available`, `deleting`
    /// while it is being removed. The first and last are recorded before
    /// the host changes, so an agent that dies in between finds them on
    /// its next start and finishes or undoes the change.
    pub state: String,
    pub created_at: String,
}

/// Checks a requested CIDR for a new subnet.
pub fn check_cidr(text: &str) -> Result<Cidr, String> {
    let cidr: Cidr = text.parse().map_err(|e| format!("cidr_block: {e}"))?;
    if !cidr.addr.is_ipv4() {
        return Err("cidr_block must be IPv4".into());
    }
    if !(MIN_PREFIX..=MAX_PREFIX).contains(&cidr.len) {
        return Err(format!(
            "cidr_block /{}: a subnet is between /{MIN_PREFIX} and /{MAX_PREFIX}",
            cidr.len
        ));
    }
    Ok(cidr)
}

/// Addresses instances can get in `cidr`.
pub fn usable_addresses(cidr: &Cidr) -> u32 {
    u32::try_from(cidr.size())
        .unwrap_or(u32::MAX)
        .saturating_sub(RESERVED)
}

/// The bridge name for a subnet id: `stbr` and the id's last 11 hex
/// digits (Linux allows 15 characters). Two subnets could share one; the
/// agent gives a new subnet another id if its bridge name is taken.
pub fn bridge_name(subnet_id: &str) -> String {
    let hex = subnet_id.trim_start_matches("subnet-");
    format!("stbr{}", &hex[hex.len().saturating_sub(11)..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subnet_rules() {
        let c = check_cidr("10.1.0.0/24").unwrap();
        assert_eq!(usable_addresses(&c), 251);
        assert_eq!(c.nth_v4(1).unwrap().to_string(), "10.1.0.1");
        assert!(check_cidr("10.1.0.0/29").is_err());
        assert!(check_cidr("10.0.0.0/8").is_err());
        assert!(check_cidr("2001:db8::/64").is_err());
        assert!(check_cidr("10.1.0.1/24").is_err());
        assert_eq!(bridge_name("subnet-0123456789abcdef0"), "stbr6789abcdef0");
        assert!(bridge_name("subnet-0123456789abcdef0").len() <= 15);
    }
}
