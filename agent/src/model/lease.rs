//! Private addresses in a subnet, as a VPC hands them out: the network
//! address, the first three hosts (router, DNS, reserved) and the last
//! address never go to an instance; the lowest free one does, unless the
//! launch asks for a particular one.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use super::cidr::Cidr;

/// Why no address could be given.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LeaseError {
    #[error("{0} is not in the subnet {1}")]
    OutsideSubnet(Ipv4Addr, String),
    #[error("{0} is reserved in the subnet (network, router, DNS, future use, broadcast)")]
    Reserved(Ipv4Addr),
    #[error("{0} is already in use")]
    InUse(Ipv4Addr),
    #[error("the subnet {0} has no free address")]
    Exhausted(String),
}

/// Whether index `i` of a block of `size` addresses is reserved.
fn reserved(i: u32, size: u32) -> bool {
    i < 4 || i + 1 == size
}

/// An address for a new instance in `subnet`, none of `used`: `wanted`
/// if given and free, else the lowest free one.
pub fn allocate(
    subnet: &Cidr,
    used: &BTreeSet<Ipv4Addr>,
    wanted: Option<Ipv4Addr>,
) -> Result<Ipv4Addr, LeaseError> {
    let size = u32::try_from(subnet.size()).unwrap_or(u32::MAX);
    if let Some(ip) = wanted {
        let i = subnet
            .index_of_v4(ip)
            .ok_or_else(|| LeaseError::OutsideSubnet(ip, subnet.to_string()))?;
        if reserved(i, size) {
            return Err(LeaseError::Reserved(ip));
        }
        if used.contains(&ip) {
            return Err(LeaseError::InUse(ip));
        }
        return Ok(ip);
    }
    (4..size.saturating_sub(1))
        .filter_map(|i| subnet.nth_v4(i))
        .find(|ip| !used.contains(ip))
        .ok_or_else(|| LeaseError::Exhausted(subnet.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocates_like_a_vpc() {
        let subnet: Cidr = "10.0.1.0/28".parse().unwrap();
        let mut used = BTreeSet::new();
        let first = allocate(&subnet, &used, None).unwrap();
        assert_eq!(first, Ipv4Addr::new(10, 0, 1, 4));
        used.insert(first);
        assert_eq!(
            allocate(&subnet, &used, None).unwrap(),
            Ipv4Addr::new(10, 0, 1, 5)
        );
        let want = |d| allocate(&subnet, &used, Some(Ipv4Addr::new(10, 0, 1, d)));
        assert_eq!(want(9), Ok(Ipv4Addr::new(10, 0, 1, 9)));
        assert!(matches!(want(4), Err(LeaseError::InUse(_))));
        assert!(matches!(want(1), Err(LeaseError::Reserved(_))));
        assert!(matches!(want(15), Err(LeaseError::Reserved(_))));
        assert!(matches!(
            allocate(&subnet, &used, Some(Ipv4Addr::new(10, 0, 2, 9))),
            Err(LeaseError::OutsideSubnet(..))
        ));
        // A /28 has 16 - 5 = 11 addresses for instances.
        for _ in 0..10 {
            let ip = allocate(&subnet, &used, None).unwrap();
            used.insert(ip);
        }
        assert!(matches!(
            allocate(&subnet, &used, None),
            Err(LeaseError::Exhausted(_))
        ));
    }
}
