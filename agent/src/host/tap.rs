//! A tap per instance NIC, on its subnet's bridge, made with iproute2
//! (`vnet_hdr`: the VMM opens it with `IFF_VNET_HDR`).

use super::bridge::{ip, BridgeError};

/// Taps the agent makes start with this prefix.
pub const PREFIX: &str = "sttap";

/// The tap name for an instance id: `sttap` and the id's last 10 hex
/// digits (15 characters at most).
pub fn name(instance_id: &str) -> String {
    let hex = instance_id.trim_start_matches("i-");
    format!("{PREFIX}{}", &hex[hex.len().saturating_sub(10)..])
}

/// Makes tap `name` on `bridge`, up. One left by a crash is made over.
pub fn create(name: &str, bridge: &str) -> Result<(), BridgeError> {
    delete(name)?;
    ip(&["tuntap", "add", "dev", name, "mode", "tap", "vnet_hdr"])?;
    let rest =
        ip(&["link", "set", name, "master", bridge]).and_then(|_| ip(&["link", "set", name, "up"]));
    if let Err(e) = rest {
        let _ = delete(name);
        return Err(e);
    }
    Ok(())
}

/// Removes tap `name` if it exists.
pub fn delete(name: &str) -> Result<(), BridgeError> {
    if exists(name) {
        ip(&["link", "del", name])?;
    }
    Ok(())
}

/// Whether link `name` exists.
pub fn exists(name: &str) -> bool {
    ip(&["link", "show", "dev", name]).is_ok()
}

/// Whether tap `name` is a port of `bridge` (part of the system check).
pub fn on_bridge(name: &str, bridge: &str) -> bool {
    ip(&["-o", "link", "show", "dev", name])
        .is_ok_and(|line| line.contains(&format!(" master {bridge} ")))
}

#[cfg(test)]
mod tests {
    #[test]
    fn names_fit_linux() {
        let n = super::name("i-0123456789abcdef0");
        assert_eq!(n, "sttap789abcdef0");
        assert!(n.len() <= 15);
    }
}
