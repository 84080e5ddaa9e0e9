//! Launching an instance from an AMI bundle: the manifest names the shared,
//! never-written root image; each instance gets its own qcow2 overlay over
//! it, created on first launch and reused afterwards (so the instance's
//! writes survive a stop and start).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use stratus_devices::disk::{ImageFormat, Qcow2Disk};

use super::{ConfigError, DiskConfig, VmConfig};
use crate::ami::manifest::AmiManifest;

/// An instance launched from an AMI manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AmiLaunch {
    /// The AMI's `manifest.json`.
    pub manifest: PathBuf,
    /// This instance's root disk: a qcow2 overlay over the AMI's image,
    /// created when it does not exist yet.
    pub instance_disk: PathBuf,
}

impl AmiLaunch {
    /// Ensures the overlay exists and returns the manifest.
    fn prepare(&self) -> Result<AmiManifest, ConfigError> {
        let manifest = AmiManifest::load(&self.manifest).map_err(|source| ConfigError::Ami {
            path: self.manifest.clone(),
            source,
        })?;
        if !self.instance_disk.exists() {
            create_overlay(&self.instance_disk, &manifest)?;
        }
        Ok(manifest)
    }
}

fn create_overlay(overlay: &Path, manifest: &AmiManifest) -> Result<(), ConfigError> {
    let fail = |why: String| ConfigError::InstanceDisk {
        path: overlay.to_path_buf(),
        why,
    };
    // An absolute backing name keeps the overlay valid wherever it is read.
    let base = std::fs::canonicalize(&manifest.root_device.image).map_err(|e| {
        fail(format!(
            "AMI image {}: {e}",
            manifest.root_device.image.display()
        ))
    })?;
    Qcow2Disk::create_overlay(overlay, &base, manifest.root_device.format)
        .map_err(|e| fail(e.to_string()))
}

impl VmConfig {
    /// Turns an AMI launch into a plain boot-from-disk configuration: the
    /// instance overlay becomes the root disk and the manifest's kernel
    /// command line goes in front of the configured one.
    pub fn resolve_ami(mut self) -> Result<VmConfig, ConfigError> {
        let Some(launch) = self.ami.take() else {
            return Ok(self);
        };
        if self.kernel.is_some() || self.initrd.is_some() || self.boot_from_disk {
            return Err(ConfigError::AmiAndKernel);
        }
        let manifest = launch.prepare()?;
        self.disks.insert(
            0,
            DiskConfig {
                id: None,
                path: launch.instance_disk,
                format: Some(ImageFormat::Qcow2),
                readonly: false,
                serial: None,
                rate_limiter: None,
                io_engine: Default::default(),
            },
        );
        self.boot_from_disk = true;
        self.cmdline = format!("{} {}", manifest.kernel_cmdline, self.cmdline);
        Ok(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Dir(PathBuf);
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn bundle(name: &str) -> Dir {
        let dir =
            std::env::temp_dir().join(format!("stratus-ami-launch-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("disk.raw"), vec![0u8; 1 << 20]).unwrap();
        std::fs::write(
            dir.join("manifest.json"),
            r#"{"id": "ami-0123456789abcdef0", "name": "t", "architecture": "x86_64",
                "root_device": {"image": "disk.raw", "format": "raw"},
                "boot_mode": "direct-kernel-from-disk", "kernel_cmdline": "console=ttyS0"}"#,
        )
        .unwrap();
        Dir(dir)
    }

    fn launch(dir: &Path) -> VmConfig {
        let mut config: VmConfig = serde_json::from_str(r#"{"cmdline": "quiet"}"#).unwrap();
        config.ami = Some(AmiLaunch {
            manifest: dir.join("manifest.json"),
            instance_disk: dir.join("i-1.qcow2"),
        });
        config
    }

    #[test]
    fn creates_an_overlay_once_and_boots_from_it() {
        let dir = bundle("create");
        let resolved = launch(&dir.0).resolve_ami().unwrap();
        assert!(resolved.boot_from_disk);
        assert_eq!(resolved.cmdline, "console=ttyS0 quiet");
        assert_eq!(resolved.disks[0].path, dir.0.join("i-1.qcow2"));
        assert_eq!(resolved.disks[0].format, Some(ImageFormat::Qcow2));
        let overlay = std::fs::read(dir.0.join("i-1.qcow2")).unwrap();
        assert_eq!(&overlay[..4], b"QFI\xfb");
        // A second launch reuses the instance's disk (and its writes).
        std::fs::write(dir.0.join("i-1.qcow2"), b"QFI\xfbkept").unwrap();
        launch(&dir.0).resolve_ami().unwrap();
        assert_eq!(
            std::fs::read(dir.0.join("i-1.qcow2")).unwrap(),
            b"QFI\xfbkept"
        );
    }

    #[test]
    fn refuses_a_kernel_alongside_an_ami_and_bad_manifests() {
        let dir = bundle("refuse");
        let mut config = launch(&dir.0);
        config.kernel = Some("/vmlinux".into());
        assert!(matches!(
            config.resolve_ami(),
            Err(ConfigError::AmiAndKernel)
        ));
        std::fs::write(dir.0.join("manifest.json"), "{}").unwrap();
        assert!(matches!(
            launch(&dir.0).resolve_ami(),
            Err(ConfigError::Ami { .. })
        ));
    }
}
