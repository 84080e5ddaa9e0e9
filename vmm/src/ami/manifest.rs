//! The AMI bundle manifest: a JSON file beside the disk image that says
//! what the image is and how to boot it.
//!
//! ```json
//! {
//!   "id": "ami-0123456789abcdef0",
//!   "name": "debian-12-amd64",
//!   "architecture": "x86_64",
//!   "root_device": { "image": "disk.raw", "format": "raw" },
//!   "boot_mode": "direct-kernel-from-disk",
//!   "kernel_cmdline": "console=ttyS0"
//! }
//! ```
//!
//! The JSON is read into a raw serde shape (unknown keys rejected), then
//! validated into [`AmiManifest`], whose fields are the typed values the
//! rest of the VMM uses. Strings are checked here rather than by serde
//! enums so each wrong value gets its own error.

use std::path::{Component, Path, PathBuf};

use serde::Deserialize;
use stratus_devices::disk::ImageFormat;

/// Longest image name accepted (EC2's limit).
const MAX_NAME_LEN: usize = 128;
/// Hex digits after `ami-`.
const ID_HEX_DIGITS: usize = 17;

/// Why a manifest was refused.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// The manifest file could not be read.
    #[error("cannot read manifest {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Not JSON, a missing or unknown key, or a wrong type.
    #[error("invalid manifest JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// `id` is not `ami-` and 17 lower-case hex digits.
    #[error("id {0:?} is not `ami-` followed by {ID_HEX_DIGITS} lower-case hex digits")]
    BadId(String),
    /// `name` is empty, too long or has control characters.
    #[error("name {0:?} must be 1..={MAX_NAME_LEN} characters with no control characters")]
    BadName(String),
    /// `architecture` is not one Stratus runs.
    #[error("architecture {0:?} is not supported (only \"x86_64\")")]
    UnsupportedArchitecture(String),
    /// `root_device.format` is unknown.
    #[error("root device format {0:?} is unknown (expected \"raw\" or \"qcow2\")")]
    UnknownFormat(String),
    /// `root_device.image` is absolute, empty, or climbs out of the
    /// manifest's directory.
    #[error("root device image {0:?} must be a relative path inside the manifest's directory")]
    ImageOutsideBundle(String),
    /// `boot_mode` is unknown.
    #[error("boot mode {0:?} is unknown (expected \"direct-kernel-from-disk\")")]
    UnknownBootMode(String),
    /// `kernel_cmdline` has a control character (a newline would split it).
    #[error("kernel_cmdline has control characters")]
    BadCmdline,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawManifest {
    id: String,
    name: String,
    architecture: String,
    root_device: RawRootDevice,
    boot_mode: String,
    #[serde(default)]
    kernel_cmdline: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRootDevice {
    image: String,
    format: String,
}

/// An AMI's identifier, `ami-` and 17 lower-case hex digits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AmiId(String);

impl AmiId {
    /// Validates `s` as an AMI id.
    pub fn parse(s: &str) -> Result<Self, ManifestError> {
        let ok = s.strip_prefix("ami-").is_some_and(|hex| {
            hex.len() == ID_HEX_DIGITS
                && hex.bytes().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f'))
        });
        ok.then(|| Self(s.to_owned()))
            .ok_or_else(|| ManifestError::BadId(s.to_owned()))
    }

    /// The id as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The CPU architecture an image is built for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Architecture {
    /// 64-bit x86, the only one Stratus runs.
    X86_64,
}

/// How the VMM boots the image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BootMode {
    /// Find the kernel and initrd in the disk's root filesystem and load
    /// them directly (no firmware, no bootloader).
    DirectKernelFromDisk,
}

/// The disk the image boots from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RootDevice {
    /// The image file: the manifest's directory joined with its relative
    /// path.
    pub image: PathBuf,
    /// Its format.
    pub format: ImageFormat,
}

/// A validated AMI manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AmiManifest {
    /// The image's id.
    pub id: AmiId,
    /// Its human-readable name.
    pub name: String,
    /// What it runs on.
    pub architecture: Architecture,
    /// The disk.
    pub root_device: RootDevice,
    /// How to boot it.
    pub boot_mode: BootMode,
    /// Default extra kernel command line (may be empty).
    pub kernel_cmdline: String,
}

/// Checks `image` is a plain relative path that stays inside the bundle.
/// The check is on the text; a symlink inside the bundle directory is the
/// bundle author's to place and is not chased here.
fn bundle_path(dir: &Path, image: &str) -> Result<PathBuf, ManifestError> {
    let rel = Path::new(image);
    let plain = !image.is_empty()
        && rel
            .components()
            .all(|c| matches!(c, Component::Normal(_) | Component::CurDir))
        && rel.components().any(|c| matches!(c, Component::Normal(_)));
    if plain {
        Ok(dir.join(rel))
    } else {
        Err(ManifestError::ImageOutsideBundle(image.to_owned()))
    }
}

impl AmiManifest {
    /// Parses and validates manifest JSON; `dir` is the directory the
    /// manifest lives in, which the image path is relative to.
    pub fn parse(json: &str, dir: &Path) -> Result<Self, ManifestError> {
        let raw: RawManifest = serde_json::from_str(json)?;
        let id = AmiId::parse(&raw.id)?;
        let name_ok = (1..=MAX_NAME_LEN).contains(&raw.name.chars().count())
            && !raw.name.chars().any(char::is_control);
        if !name_ok {
            return Err(ManifestError::BadName(raw.name));
        }
        let architecture = match raw.architecture.as_str() {
            "x86_64" => Architecture::X86_64,
            _ => return Err(ManifestError::UnsupportedArchitecture(raw.architecture)),
        };
        let format: ImageFormat = match raw.root_device.format.parse() {
            Ok(format) => format,
            Err(_) => return Err(ManifestError::UnknownFormat(raw.root_device.format)),
        };
        let image = bundle_path(dir, &raw.root_device.image)?;
        let boot_mode = match raw.boot_mode.as_str() {
            "direct-kernel-from-disk" => BootMode::DirectKernelFromDisk,
            _ => return Err(ManifestError::UnknownBootMode(raw.boot_mode)),
        };
        if raw.kernel_cmdline.chars().any(char::is_control) {
            return Err(ManifestError::BadCmdline);
        }
        Ok(Self {
            id,
            name: raw.name,
            architecture,
            root_device: RootDevice { image, format },
            boot_mode,
            kernel_cmdline: raw.kernel_cmdline,
        })
    }

    /// Reads and validates the manifest at `path`.
    pub fn load(path: &Path) -> Result<Self, ManifestError> {
        let json = std::fs::read_to_string(path).map_err(|source| ManifestError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&json, path.parent().unwrap_or(Path::new(".")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"{
        "id": "ami-0123456789abcdef0",
        "name": "debian-12-amd64",
        "architecture": "x86_64",
        "root_device": { "image": "disk.raw", "format": "raw" },
        "boot_mode": "direct-kernel-from-disk",
        "kernel_cmdline": "console=ttyS0"
    }"#;

    fn parse(json: &str) -> Result<AmiManifest, ManifestError> {
        AmiManifest::parse(json, Path::new("/bundles/deb"))
    }

    /// GOOD with `from` replaced by `to`.
    fn with(from: &str, to: &str) -> Result<AmiManifest, ManifestError> {
        assert!(GOOD.contains(from), "{from}");
        parse(&GOOD.replace(from, to))
    }

    #[test]
    fn a_good_manifest_parses_to_typed_values() {
        let m = parse(GOOD).unwrap();
        assert_eq!(m.id.as_str(), "ami-0123456789abcdef0");
        assert_eq!(m.architecture, Architecture::X86_64);
        assert_eq!(m.root_device.image, Path::new("/bundles/deb/disk.raw"));
        assert_eq!(m.root_device.format, ImageFormat::Raw);
        assert_eq!(m.boot_mode, BootMode::DirectKernelFromDisk);
        assert_eq!(m.kernel_cmdline, "console=ttyS0");
        let m = with(r#""raw""#, r#""qcow2""#).unwrap();
        assert_eq!(m.root_device.format, ImageFormat::Qcow2);
        let m = with(r#""disk.raw""#, r#""./images/disk.qcow2""#).unwrap();
        assert_eq!(
            m.root_device.image,
            Path::new("/bundles/deb/images/disk.qcow2")
        );
    }

    #[test]
    fn kernel_cmdline_defaults_to_empty() {
        let json = GOOD.replace(",\n        \"kernel_cmdline\": \"console=ttyS0\"", "");
        assert_eq!(parse(&json).unwrap().kernel_cmdline, "");
    }

    #[test]
    fn bad_ids_are_refused() {
        for id in [
            "ami-0123456789ABCDEF0",
            "ami-0123456789abcdef",
            "ami-0123456789abcdef01",
            "ami-0123456789abcdefg",
            "img-0123456789abcdef0",
            "",
        ] {
            let e = with("ami-0123456789abcdef0", id);
            assert!(matches!(e, Err(ManifestError::BadId(_))), "{id}: {e:?}");
        }
    }

    #[test]
    fn other_architectures_are_refused_by_name() {
        let e = with(r#""x86_64""#, r#""arm64""#).unwrap_err();
        assert!(matches!(e, ManifestError::UnsupportedArchitecture(ref a) if a == "arm64"));
        assert!(e.to_string().contains("only \"x86_64\""));
    }

    #[test]
    fn unknown_formats_and_boot_modes_are_refused() {
        let e = with(r#""raw""#, r#""vmdk""#);
        assert!(matches!(e, Err(ManifestError::UnknownFormat(_))));
        let e = with("direct-kernel-from-disk", "uefi");
        assert!(matches!(e, Err(ManifestError::UnknownBootMode(_))));
    }

    #[test]
    fn image_paths_must_stay_in_the_bundle() {
        for image in [
            "/etc/shadow",
            "../disk.raw",
            "a/../../disk.raw",
            "",
            ".",
            "a/..",
        ] {
            let e = with("disk.raw", image);
            assert!(
                matches!(e, Err(ManifestError::ImageOutsideBundle(_))),
                "{image}: {e:?}"
            );
        }
    }

    #[test]
    fn names_and_cmdlines_are_checked() {
        assert!(matches!(
            with("debian-12-amd64", ""),
            Err(ManifestError::BadName(_))
        ));
        let long = "n".repeat(MAX_NAME_LEN + 1);
        assert!(matches!(
            with("debian-12-amd64", &long),
            Err(ManifestError::BadName(_))
        ));
        let e = with("console=ttyS0", "console=ttyS0\\ninit=/bin/sh");
        assert!(matches!(e, Err(ManifestError::BadCmdline)));
    }

    #[test]
    fn unknown_and_missing_keys_are_refused() {
        let e = with(r#""boot_mode""#, r#""surprise": 1, "boot_mode""#);
        assert!(matches!(e, Err(ManifestError::Json(_))));
        let e = with(r#""format": "raw""#, r#""format": "raw", "size": 8"#);
        assert!(matches!(e, Err(ManifestError::Json(_))));
        let e = with(r#""name": "debian-12-amd64","#, "");
        assert!(matches!(e, Err(ManifestError::Json(_))));
        assert!(matches!(parse("not json"), Err(ManifestError::Json(_))));
    }

    #[test]
    fn load_reads_relative_to_the_manifest() {
        let dir = std::env::temp_dir().join(format!("stratus-ami-manifest-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("manifest.json");
        std::fs::write(&path, GOOD).unwrap();
        let m = AmiManifest::load(&path);
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(m.unwrap().root_device.image, dir.join("disk.raw"));
        assert!(matches!(
            AmiManifest::load(Path::new("/nonexistent/m.json")),
            Err(ManifestError::Read { .. })
        ));
    }
}
