//! The host side of guest networking inside a scenario: a Linux bridge
//! holding the gateway address and taps on it, made (and removed) with
//! iproute2. Shared by the tiny-guest network cases and the Debian AMI
//! pair.

use crate::script::Script;

/// iproute2's `ip`, under a name of its own: the virtual host's busybox
/// shell runs its own `ip` applet for that name whatever `PATH` says, and
/// the applet cannot make taps.
pub const IPROUTE2: &str = "iproute2";

/// Host kernel modules a bridge with taps needs.
pub const MODULES: &[&str] = &["tun", "bridge"];

/// Adds `bridge` with `gateway_cidr` (`10.0.99.1/24`) on it, up. A
/// failure prints `NET-SETUP failed` (the cases after it then fail with
/// their own errors).
pub fn add_bridge(script: &mut Script, bridge: &str, gateway_cidr: &str) {
    let ip = IPROUTE2;
    script.line(&format!(
        "{ip} link add {bridge} type bridge && {ip} addr add {gateway_cidr} dev {bridge} && {ip} link set {bridge} up \
         || echo 'NET-SETUP {bridge} failed'"
    ));
}

/// Adds tap `tap` (with a virtio-net header) on `bridge`, up.
pub fn add_tap(script: &mut Script, tap: &str, bridge: &str) {
    let ip = IPROUTE2;
    script.line(&format!(
        "{ip} tuntap add dev {tap} mode tap vnet_hdr && {ip} link set {tap} master {bridge} && {ip} link set {tap} up \
         || echo 'NET-SETUP {tap} failed'"
    ));
}

/// Removes links (taps, bridges) made above.
pub fn remove(script: &mut Script, links: &[&str]) {
    let ip = IPROUTE2;
    for link in links {
        script.line(&format!("{ip} link del {link}"));
    }
}
