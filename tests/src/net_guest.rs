//! Tiny guests for network tests and benchmarks: the tiny image's
//! initramfs with an extra archive appended (the kernel unpacks
//! concatenated archives one after the other) holding `stratus-netprobe`
//! and a script the tiny init runs after the network is up
//! (`/etc/stratus-net.sh`, with `stratus.run=net`).

use std::fs;
use std::path::{Path, PathBuf};

use crate::cpio::Archive;
use crate::error::{Error, Result};
use crate::images::GuestImage;

/// Writes `<dir>/<name>.cpio`: `tiny`'s initramfs, then an archive with
/// `netprobe` as `/bin/stratus-netprobe` and `script` as
/// `/etc/stratus-net.sh`. Returns its path.
pub fn initrd(
    dir: &Path,
    tiny: &GuestImage,
    netprobe: &Path,
    name: &str,
    script: &str,
) -> Result<PathBuf> {
    let extra = dir.join(format!("{name}.extra.cpio"));
    let mut archive = Archive::new();
    archive.dir("etc");
    archive.file("bin/stratus-netprobe", netprobe)?;
    archive.bytes("etc/stratus-net.sh", script.as_bytes().to_vec(), 0o755);
    archive.write_to(&extra)?;
    let mut bytes = fs::read(&tiny.initrd).map_err(Error::io("read", &tiny.initrd))?;
    bytes.extend(fs::read(&extra).map_err(Error::io("read", &extra))?);
    let path = dir.join(format!("{name}.cpio"));
    fs::write(&path, bytes).map_err(Error::io("write", &path))?;
    Ok(path)
}
