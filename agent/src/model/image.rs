//! AMIs: a bundle on the host (a manifest beside its root disk image),
//! registered by the path of its manifest.

use std::path::{Component, Path, PathBuf};

use serde::{Deserialize, Serialize};

/// A registered image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Image {
    pub image_id: String,
    pub name: String,
    /// The manifest's absolute path.
    pub manifest_path: String,
    pub architecture: String,
    /// The root disk image's absolute path and format.
    pub root_device_image: String,
    pub root_device_format: String,
    pub boot_mode: String,
    pub kernel_cmdline: String,
    pub state: String,
    pub created_at: String,
}

/// The parts of an AMI manifest the agent reads (the VMM reads the same
/// file when it launches an instance).
#[derive(Debug, Clone, Deserialize)]
struct Manifest {
    name: String,
    architecture: String,
    root_device: RootDevice,
    boot_mode: String,
    #[serde(default)]
    kernel_cmdline: String,
}

#[derive(Debug, Clone, Deserialize)]
struct RootDevice {
    image: PathBuf,
    format: String,
}

/// What registering needs from a manifest file: everything checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bundle {
    pub manifest_path: PathBuf,
    pub name: String,
    pub architecture: String,
    pub root_device_image: PathBuf,
    pub root_device_format: String,
    pub boot_mode: String,
    pub kernel_cmdline: String,
}

/// The largest manifest read. A manifest is a few hundred bytes; the
/// limit keeps a path to something endless (`/dev/zero`, `/proc/kcore`)
/// from filling the agent's memory.
pub const MAX_MANIFEST_BYTES: u64 = 1 << 20;

/// The text of the manifest at `path`: a regular file only, since opening
/// a FIFO waits for a writer (holding up the request, and a thread of the
/// API, for good) and a device may never end.
fn read_manifest(path: &str) -> Result<String, String> {
    use std::io::Read as _;
    let cannot = |e: std::io::Error| format!("cannot read the manifest `{path}`: {e}");
    if !std::fs::metadata(path).map_err(cannot)?.is_file() {
        return Err(format!("the manifest `{path}` is not a regular file"));
    }
    let mut text = String::new();
    std::fs::File::open(path)
        .map_err(cannot)?
        .take(MAX_MANIFEST_BYTES + 1)
        .read_to_string(&mut text)
        .map_err(cannot)?;
    if text.len() as u64 > MAX_MANIFEST_BYTES {
        return Err(format!(
            "the manifest `{path}` is over {MAX_MANIFEST_BYTES} bytes"
        ));
    }
    Ok(text)
}

/// Reads and checks the bundle whose manifest is at `path` (absolute).
pub fn read_bundle(path: &str) -> Result<Bundle, String> {
    let manifest_path = Path::new(path);
    if !manifest_path.is_absolute() {
        return Err(format!("manifest_path `{path}` must be absolute"));
    }
    let text = read_manifest(path)?;
    let m: Manifest =
        serde_json::from_str(&text).map_err(|e| format!("`{path}` is not an AMI manifest: {e}"))?;
    if m.architecture != "x86_64" {
        return Err(format!(
            "architecture `{}`: this host runs x86_64 images only",
            m.architecture
        ));
    }
    if !matches!(m.root_device.format.as_str(), "raw" | "qcow2") {
        return Err(format!(
            "root_device.format `{}`: expected raw or qcow2",
            m.root_device.format
        ));
    }
    if m.boot_mode != "direct-kernel-from-disk" {
        return Err(format!(
            "boot_mode `{}`: only direct-kernel-from-disk is supported",
            m.boot_mode
        ));
    }
    // The disk must sit inside the bundle's directory, as the VMM requires.
    let inside = m
        .root_device
        .image
        .components()
        .all(|c| matches!(c, Component::Normal(_)));
    if !inside {
        return Err(format!(
            "root_device.image `{}` must be a relative path inside the bundle",
            m.root_device.image.display()
        ));
    }
    let dir = manifest_path.parent().unwrap_or(Path::new("/"));
    let image = dir.join(&m.root_device.image);
    if !image.is_file() {
        return Err(format!(
            "the root disk image `{}` does not exist",
            image.display()
        ));
    }
    if m.name.is_empty() || m.name.len() > 128 {
        return Err("the manifest's name must be 1-128 characters".into());
    }
    Ok(Bundle {
        manifest_path: manifest_path.to_path_buf(),
        name: m.name,
        architecture: m.architecture,
        root_device_image: image,
        root_device_format: m.root_device.format,
        boot_mode: m.boot_mode,
        kernel_cmdline: m.kernel_cmdline,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bundle(dir: &Path, manifest: &str) -> String {
        std::fs::write(dir.join("disk.qcow2"), b"QFI\xfb").unwrap();
        let path = dir.join("manifest.json");
        std::fs::write(&path, manifest).unwrap();
        path.to_string_lossy().into_owned()
    }

    fn scratch(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("stratus-agent-image-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn reads_a_good_bundle_and_refuses_bad_ones() {
        let dir = scratch("bundle");
        let good = r#"{"id": "ami-0123456789abcdef0", "name": "debian-12", "architecture": "x86_64",
            "root_device": {"image": "disk.qcow2", "format": "qcow2"},
            "boot_mode": "direct-kernel-from-disk", "kernel_cmdline": "console=ttyS0"}"#;
        let b = read_bundle(&bundle(&dir, good)).unwrap();
        assert_eq!(b.name, "debian-12");
        assert_eq!(b.root_device_image, dir.join("disk.qcow2"));
        for bad in [
            good.replace("x86_64", "arm64"),
            good.replace("\"qcow2\"}", "\"vmdk\"}"),
            good.replace("disk.qcow2", "../disk.qcow2"),
            good.replace("disk.qcow2", "missing.qcow2"),
            good.replace("direct-kernel-from-disk", "uefi"),
            "{".to_string(),
        ] {
            assert!(read_bundle(&bundle(&dir, &bad)).is_err(), "{bad}");
        }
        assert!(read_bundle("relative/manifest.json").is_err());
        assert!(read_bundle("/nonexistent/manifest.json").is_err());
        // Not regular files: refused before they are read.
        assert!(read_bundle("/dev/zero").is_err());
        assert!(read_bundle(&dir.to_string_lossy()).is_err());
        // Too big to be a manifest, however it ends.
        let padded = format!("{good}{}", " ".repeat(1 << 20));
        let err = read_bundle(&bundle(&dir, &padded)).unwrap_err();
        assert!(err.contains("over"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
