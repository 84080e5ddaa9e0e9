//! Locating and building this workspace's binaries for the tests.

use std::path::PathBuf;
use std::process::Command;

use crate::cmd;
use crate::error::{Error, Result};

/// The workspace root (the parent of this crate).
pub fn root() -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().map(PathBuf::from).unwrap_or(manifest)
}

/// Cargo's target directory: `$CARGO_TARGET_DIR`, else `<root>/target`.
pub fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => {
            let dir = PathBuf::from(dir);
            if dir.is_absolute() {
                dir
            } else {
                root().join(dir)
            }
        }
        None => root().join("target"),
    }
}

/// The target every build names (`.cargo/config.toml`, `build.target`),
/// and so the directory cargo puts its outputs under.
pub const TARGET_TRIPLE: &str = "x86_64-unknown-linux-gnu";

/// Where cargo puts the binaries of a release or debug build.
pub fn profile_dir(release: bool) -> PathBuf {
    target_dir()
        .join(TARGET_TRIPLE)
        .join(if release { "release" } else { "debug" })
}

/// Cargo itself: `$CARGO` when run by cargo, else `cargo` from `PATH`.
pub fn cargo() -> Command {
    Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
}

/// Builds binary `bin` of `package` (a no-op when it is up to date) and
/// returns its path.
pub fn workspace_binary(package: &str, bin: &str, release: bool) -> Result<PathBuf> {
    let mut build = cargo();
    build
        .current_dir(root())
        .args(["build", "--quiet", "-p", package, "--bin", bin]);
    if release {
        build.arg("--release");
    }
    cmd::output(&mut build)?;
    let path = profile_dir(release).join(bin);
    if path.is_file() {
        Ok(path)
    } else {
        Err(Error::BadInput {
            path,
            problem: "cargo build did not produce it".into(),
        })
    }
}

/// The VMM under test: `$STRATUS_VMM`, else built in release mode.
pub fn stratus_vmm() -> Result<PathBuf> {
    match std::env::var_os("STRATUS_VMM") {
        Some(path) => Ok(PathBuf::from(path)),
        None => workspace_binary("stratus-vmm", "stratus-vmm", true),
    }
}

/// The host agent under test: `$STRATUS_AGENT`, else built in release
/// mode (as it is deployed; a debug build also takes the better part of
/// a minute under the virtual host's emulation to make its RSA signing
/// key on first start).
pub fn stratus_agent() -> Result<PathBuf> {
    match std::env::var_os("STRATUS_AGENT") {
        Some(path) => Ok(PathBuf::from(path)),
        None => workspace_binary("stratus-agent", "stratus-agent", true),
    }
}
