//! What goes into the virtual host: binaries with their shared libraries,
//! files, kernel modules, and the data disk for large files.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::cmd;
use crate::cpio::Archive;
use crate::error::{Error, Result};

/// Where scenario files live inside the virtual host (`$STRATUS_ROOT`).
pub const ROOT: &str = "/stratus";
/// Where the data disk is mounted inside the virtual host.
pub const DISK_MOUNT: &str = "/mnt/stratus-disk";

/// The shared libraries `ldd` lists for `binary`, including the dynamic
/// loader; empty for a static binary.
pub fn shared_libraries(binary: &Path) -> Result<Vec<PathBuf>> {
    let out = Command::new("ldd")
        .arg(binary)
        .output()
        .map_err(|source| Error::Spawn {
            program: "ldd".into(),
            source,
        })?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success()
        || text.contains("not a dynamic executable")
        || text.contains("statically linked")
    {
        return Ok(Vec::new());
    }
    let mut libs = Vec::new();
    for line in text.lines() {
        // "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)" or
        // "/lib64/ld-linux-x86-64.so.2 (0x...)"; vdso lines have no path.
        let target = line.split_once("=>").map_or(line, |(_, t)| t).trim();
        if target.contains("not found") {
            return Err(Error::BadInput {
                path: binary.to_path_buf(),
                problem: format!("missing shared library: {}", line.trim()),
            });
        }
        let path = target.split(" (").next().unwrap_or_default().trim();
        if path.starts_with('/') {
            libs.push(PathBuf::from(path));
        }
    }
    Ok(libs)
}

/// Adds `binary` as `dest` plus its libraries at their own absolute paths.
pub fn add_binary(archive: &mut Archive, dest: &str, binary: &Path) -> Result<()> {
    archive.file(dest, binary)?;
    for lib in shared_libraries(binary)? {
        let path = lib.to_string_lossy().into_owned();
        if !archive.contains(&path) {
            archive.file(&path, &lib)?;
        }
    }
    Ok(())
}

/// Builds a read-only ext4 image holding `files` (path in the disk, source)
/// with `mkfs.ext4 -d`, which needs neither root nor a loop device.
pub fn build_disk(files: &[(String, PathBuf)], staging: &Path, image: &Path) -> Result<()> {
    let mut bytes: u64 = 0;
    for (rel, source) in files {
        let dest = staging.join(rel);
        if let Some(parent) = dest.parent() {
            fs::create_dir_all(parent).map_err(Error::io("create", parent))?;
        }
        // A hard link avoids copying large images; across filesystems, copy.
        if fs::hard_link(source, &dest).is_err() {
            fs::copy(source, &dest).map_err(Error::io("copy", source))?;
        }
        bytes += fs::metadata(&dest).map_err(Error::io("stat", &dest))?.len();
    }
    // Room for ext4's metadata: 10 % plus a fixed 32 MiB.
    let size_kib = (bytes + bytes / 10) / 1024 + 32 * 1024;
    cmd::output(
        Command::new("mkfs.ext4")
            .args([
                "-q",
                "-F",
                "-L",
                "stratus-data",
                "-E",
                "root_owner=0:0",
                "-d",
            ])
            .arg(staging)
            .arg(image)
            .arg(format!("{size_kib}k")),
    )
    .map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_libc_and_loader_of_a_dynamic_binary() {
        let libs = shared_libraries(Path::new("/bin/sh")).unwrap();
        let names: Vec<String> = libs
            .iter()
            .map(|l| l.to_string_lossy().into_owned())
            .collect();
        assert!(names.iter().any(|l| l.contains("libc.so")), "{names:?}");
        assert!(names.iter().any(|l| l.contains("ld-linux")), "{names:?}");
    }

    #[test]
    fn static_binary_has_no_libraries() {
        if Path::new(crate::images::BUSYBOX).is_file() {
            assert!(shared_libraries(Path::new(crate::images::BUSYBOX))
                .unwrap()
                .is_empty());
        }
    }
}
