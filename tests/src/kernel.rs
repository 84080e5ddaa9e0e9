//! Debian's stock cloud kernels: fetching them, their modules, and the
//! uncompressed `vmlinux` inside a `vmlinuz`.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::apt::{self, Deb};
use crate::cache;
use crate::cmd;
use crate::error::{Error, Result};

/// Meta package that tracks Debian's current 6.12 cloud kernel (backports
/// to bookworm): the kernel of the virtual host and of the `tiny` image.
pub const CLOUD_6_12: &str = "linux-image-6.12-cloud-amd64";
/// Meta package of bookworm's own 6.1 cloud kernel: the "stock kernel the
/// VMM was not tuned for".
pub const CLOUD_6_1: &str = "linux-image-cloud-amd64";

/// An unpacked Debian kernel package.
#[derive(Debug, Clone)]
pub struct Kernel {
    /// The package it came from.
    pub deb: Deb,
    /// Where it is unpacked.
    pub root: PathBuf,
    /// Its release string, as `uname -r` prints it.
    pub release: String,
}

impl Kernel {
    /// Downloads and unpacks the kernel that meta package `meta` points at.
    pub fn fetch(meta: &str) -> Result<Self> {
        let deb = apt::download(&apt::resolve_meta(meta)?)?;
        let root = apt::extract(&deb)?;
        let boot = root.join("boot");
        let release = fs::read_dir(&boot)
            .map_err(Error::io("list", &boot))?
            .filter_map(|e| {
                e.ok()?
                    .file_name()
                    .to_str()?
                    .strip_prefix("vmlinuz-")
                    .map(str::to_owned)
            })
            .next()
            .ok_or_else(|| Error::BadInput {
                path: boot.clone(),
                problem: "no vmlinuz-*".into(),
            })?;
        Ok(Self { deb, root, release })
    }

    /// The compressed kernel (a bzImage).
    pub fn vmlinuz(&self) -> PathBuf {
        self.root
            .join("boot")
            .join(format!("vmlinuz-{}", self.release))
    }

    /// The uncompressed ELF kernel, extracted into the cache once.
    pub fn vmlinux(&self) -> Result<PathBuf> {
        let dir = cache::root().join("vmlinux").join(&self.release);
        let dir = cache::build_dir(&dir, |scratch| {
            extract_vmlinux(&self.vmlinuz(), &scratch.join("vmlinux"))
        })?;
        Ok(dir.join("vmlinux"))
    }

    /// Index of this kernel's modules: canonical name → `.ko(.xz)` file.
    fn module_index(&self) -> Result<BTreeMap<String, PathBuf>> {
        let mut index = BTreeMap::new();
        let mut stack = vec![self
            .root
            .join("lib/modules")
            .join(&self.release)
            .join("kernel")];
        while let Some(dir) = stack.pop() {
            for entry in fs::read_dir(&dir).map_err(Error::io("list", &dir))? {
                let path = entry.map_err(Error::io("list", &dir))?.path();
                if path.is_dir() {
                    stack.push(path);
                } else if let Some(name) = path.file_name().and_then(|n| n.to_str()) {
                    if let Some(stem) = name
                        .strip_suffix(".ko.xz")
                        .or_else(|| name.strip_suffix(".ko"))
                    {
                        index.insert(canonical(stem), path.clone());
                    }
                }
            }
        }
        Ok(index)
    }

    /// The modules `names` plus everything they depend on, dependencies
    /// first (the order `insmod` needs), decompressed into the cache.
    pub fn modules_with_deps(&self, names: &[&str]) -> Result<Vec<Module>> {
        let index = self.module_index()?;
        let mut ordered: Vec<Module> = Vec::new();
        for name in names {
            self.visit(&index, &canonical(name), &mut ordered, &mut Vec::new())?;
        }
        Ok(ordered)
    }

    fn visit(
        &self,
        index: &BTreeMap<String, PathBuf>,
        name: &str,
        ordered: &mut Vec<Module>,
        path: &mut Vec<String>,
    ) -> Result<()> {
        if ordered.iter().any(|m| m.name == name) || path.iter().any(|p| p == name) {
            return Ok(());
        }
        let source = index.get(name).ok_or_else(|| Error::BadInput {
            path: self.root.clone(),
            problem: format!("kernel {} has no module {name}", self.release),
        })?;
        let depends = cmd::stdout(Command::new("modinfo").args(["-F", "depends"]).arg(source))?;
        path.push(name.to_owned());
        for dep in depends.trim().split(',').filter(|d| !d.is_empty()) {
            self.visit(index, &canonical(dep), ordered, path)?;
        }
        path.pop();
        ordered.push(Module {
            name: name.to_owned(),
            file: self.decompress(name, source)?,
        });
        Ok(())
    }

    fn decompress(&self, name: &str, source: &Path) -> Result<PathBuf> {
        let dir = cache::root().join("modules").join(&self.release);
        let dest = dir.join(format!("{name}.ko"));
        if dest.is_file() {
            return Ok(dest);
        }
        fs::create_dir_all(&dir).map_err(Error::io("create", &dir))?;
        let bytes = if source.extension().is_some_and(|e| e == "xz") {
            cmd::output(Command::new("xz").arg("-dc").arg(source))?.stdout
        } else {
            fs::read(source).map_err(Error::io("read", source))?
        };
        let partial = dir.join(format!(".{name}.ko.{}", std::process::id()));
        fs::write(&partial, bytes).map_err(Error::io("write", &partial))?;
        fs::rename(&partial, &dest).map_err(Error::io("rename", &dest))?;
        Ok(dest)
    }
}

/// A kernel module ready for `insmod`.
#[derive(Debug, Clone)]
pub struct Module {
    /// Canonical name (underscores), e.g. `kvm_amd`.
    pub name: String,
    /// The uncompressed `.ko`.
    pub file: PathBuf,
}

/// Module names treat `-` and `_` as the same character.
fn canonical(name: &str) -> String {
    name.replace('-', "_")
}

/// Where the compressed payload sits inside a bzImage, from its setup header
/// (boot protocol ≥ 2.08: `payload_offset`/`payload_length`).
fn payload_range(image: &[u8]) -> Option<std::ops::Range<usize>> {
    let u32_at =
        |off: usize| Some(u32::from_le_bytes(image.get(off..off + 4)?.try_into().ok()?) as usize);
    if image.get(0x202..0x206)? != b"HdrS" {
        return None;
    }
    let setup_sects = match *image.get(0x1f1)? {
        0 => 4,
        n => usize::from(n),
    };
    let start = (setup_sects + 1) * 512 + u32_at(0x248)?;
    let end = start.checked_add(u32_at(0x24c)?)?;
    (end <= image.len()).then_some(start..end)
}

const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];

/// Extracts the uncompressed ELF kernel from a zstd-compressed bzImage.
///
/// The payload's last four bytes are the uncompressed size (the kernel's
/// build appends it); it is not part of the zstd stream, and it lets us
/// check that the output is complete.
pub fn extract_vmlinux(vmlinuz: &Path, dest: &Path) -> Result<()> {
    let bad = |problem: &str| Error::BadInput {
        path: vmlinuz.to_path_buf(),
        problem: problem.to_owned(),
    };
    let image = fs::read(vmlinuz).map_err(Error::io("read", vmlinuz))?;
    let range =
        payload_range(&image).ok_or_else(|| bad("no bzImage payload in the setup header"))?;
    let payload = &image[range];
    if payload.len() < 8 || payload[..4] != ZSTD_MAGIC {
        return Err(bad("payload is not zstd-compressed"));
    }
    let (stream, size) = payload.split_at(payload.len() - 4);
    let expected = u64::from(u32::from_le_bytes([size[0], size[1], size[2], size[3]]));

    let out = fs::File::create(dest).map_err(Error::io("create", dest))?;
    let mut child = Command::new("zstd")
        .args(["-dc", "-q"])
        .stdin(Stdio::piped())
        .stdout(out)
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| Error::Spawn {
            program: "zstd".into(),
            source,
        })?;
    let fed = child.stdin.take().map(|mut stdin| stdin.write_all(stream));
    let result = child.wait_with_output().map_err(|source| Error::Spawn {
        program: "zstd".into(),
        source,
    })?;
    if !result.status.success() || !matches!(fed, Some(Ok(()))) {
        return Err(bad(&format!(
            "zstd failed: {}",
            String::from_utf8_lossy(&result.stderr).trim()
        )));
    }
    let written = fs::metadata(dest).map_err(Error::io("stat", dest))?.len();
    if written != expected {
        return Err(bad(&format!(
            "vmlinux is {written} bytes, header says {expected}"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_range_reads_the_setup_header() {
        let mut image = vec![0u8; 8192];
        image[0x1f1] = 3;
        image[0x202..0x206].copy_from_slice(b"HdrS");
        image[0x248..0x24c].copy_from_slice(&100u32.to_le_bytes());
        image[0x24c..0x250].copy_from_slice(&50u32.to_le_bytes());
        assert_eq!(payload_range(&image), Some(2148..2198));
        image[0x24c..0x250].copy_from_slice(&50_000u32.to_le_bytes());
        assert_eq!(payload_range(&image), None, "payload past the end");
        image[0x202] = b'X';
        assert_eq!(payload_range(&image), None, "not a bzImage");
    }

    #[test]
    fn module_names_are_canonical() {
        assert_eq!(canonical("kvm-amd"), "kvm_amd");
    }
}
