//! Linux bridges for subnets, made and removed with iproute2's `ip` (one
//! short command per change; the agent changes links rarely, and `ip`'s
//! errors are the ones an operator already knows).

use std::process::Command;

/// Bridges the agent makes start with this prefix (see
/// [`crate::model::subnet::bridge_name`]); it only ever removes bridges
/// its store names.
pub const PREFIX: &str = "stbr";

/// A failed `ip` command.
#[derive(Debug, thiserror::Error)]
#[error("`ip {args}` failed: {detail}")]
pub struct BridgeError {
    args: String,
    detail: String,
}

pub(crate) fn ip(args: &[&str]) -> Result<String, BridgeError> {
    let fail = |detail: String| BridgeError {
        args: args.join(" "),
        detail,
    };
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| fail(format!("cannot run ip (package iproute2): {e}")))?;
    if !out.status.success() {
        return Err(fail(
            String::from_utf8_lossy(&out.stderr).trim().to_string(),
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Makes bridge `name` holding `gateway_cidr` (`10.0.0.1/24`), up. An
/// existing bridge of that name (left by a crash) is made over.
pub fn create(name: &str, gateway_cidr: &str) -> Result<(), BridgeError> {
    debug_assert!(name.starts_with(PREFIX));
    if exists(name)? {
        delete(name)?;
    }
    ip(&["link", "add", name, "type", "bridge"])?;
    let rest = ip(&["addr", "add", gateway_cidr, "dev", name])
        .and_then(|_| ip(&["link", "set", name, "up"]));
    if let Err(e) = rest {
        let _ = delete(name);
        return Err(e);
    }
    Ok(())
}

/// Removes bridge `name` if it exists.
pub fn delete(name: &str) -> Result<(), BridgeError> {
    debug_assert!(name.starts_with(PREFIX));
    if exists(name)? {
        ip(&["link", "del", name])?;
    }
    Ok(())
}

/// Whether link `name` exists.
pub fn exists(name: &str) -> Result<bool, BridgeError> {
    Ok(list()?.iter().any(|b| b == name))
}

/// The agent's bridges on the host (`stbr…`).
pub fn list() -> Result<Vec<String>, BridgeError> {
    let out = ip(&["-o", "link", "show", "type", "bridge"])?;
    // "7: stbr1a2b3c4d: <BROADCAST,…" — the name, before any "@".
    Ok(out
        .lines()
        .filter_map(|l| l.split(": ").nth(1))
        .map(|n| n.split('@').next().unwrap_or(n).to_string())
        .filter(|n| n.starts_with(PREFIX))
        .collect())
}
