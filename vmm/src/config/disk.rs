//! One virtio-blk disk as given by
//! `--disk PATH[,id=NAME][,format=raw|qcow2][,readonly][,serial=ID][,bw=BYTES/S][,iops=N][,io=auto|io_uring|sync]`
//! or the `disks` array of a JSON config (where `rate_limiter` takes
//! Firecracker's full token-bucket form).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use stratus_devices::disk::ImageFormat;

use stratus_devices::rate_limiter::RateLimiterConfig;
use stratus_devices::virtio::block::IoEngine;

use super::ConfigError;

/// Longest drive id (it appears in API paths and metric labels).
pub const MAX_DRIVE_ID_LEN: usize = 64;

/// Longest serial a virtio-blk GET_ID request can return.
pub const MAX_DISK_SERIAL_LEN: usize = 20;

/// A disk attached to the VM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiskConfig {
    /// The drive's name in the API (`PATCH /drives/{id}`) and metrics;
    /// `disk0`, `disk1`, … in configuration order when absent.
    #[serde(default)]
    pub id: Option<String>,
    /// Image file.
    pub path: PathBuf,
    /// Format; detected from the file's header when absent.
    #[serde(default)]
    pub format: Option<ImageFormat>,
    /// Writes fail with an I/O error status in the guest.
    #[serde(default)]
    pub readonly: bool,
    /// What the guest reads from `/sys/block/vdX/serial` (at most 20 bytes).
    #[serde(default)]
    pub serial: Option<String>,
    /// Bandwidth and operations limits; unlimited when absent. Changeable
    /// while the VM runs through `PATCH /drives/{id}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limiter: Option<RateLimiterConfig>,
    /// How requests reach the image: io_uring when the host allows it
    /// (`auto`, the default), only io_uring, or synchronous calls on the
    /// device's thread.
    #[serde(default, skip_serializing_if = "is_auto")]
    pub io_engine: IoEngine,
}

fn is_auto(engine: &IoEngine) -> bool {
    *engine == IoEngine::Auto
}

impl std::str::FromStr for DiskConfig {
    type Err = ConfigError;

    fn from_str(spec: &str) -> Result<Self, ConfigError> {
        let bad = |why: String| ConfigError::BadDisk {
            spec: spec.to_string(),
            why,
        };
        let mut parts = spec.split(',');
        let path = parts
            .next()
            .filter(|p| !p.is_empty())
            .ok_or_else(|| bad("missing path".into()))?;
        let mut disk = DiskConfig {
            id: None,
            path: PathBuf::from(path),
            format: None,
            readonly: false,
            serial: None,
            rate_limiter: None,
            io_engine: IoEngine::Auto,
        };
        let (mut bw, mut iops) = (None, None);
        let rate = |key: &str, value: &str| {
            value
                .parse::<u64>()
                .ok()
                .filter(|&v| v > 0)
                .ok_or_else(|| format!("{key} must be a positive integer, got '{value}'"))
        };
        for option in parts {
            match option.split_once('=') {
                Some(("format", name)) => {
                    disk.format = Some(
                        name.parse()
                            .map_err(|_| bad(format!("unknown format '{name}' (raw or qcow2)")))?,
                    )
                }
                Some(("serial", id)) => disk.serial = Some(id.to_string()),
                Some(("id", id)) => disk.id = Some(id.to_string()),
                Some(("bw", v)) => bw = Some(rate("bw", v).map_err(bad)?),
                Some(("iops", v)) => iops = Some(rate("iops", v).map_err(bad)?),
                Some(("io", v)) => disk.io_engine = v.parse().map_err(bad)?,
                None if option == "readonly" || option == "ro" => disk.readonly = true,
                _ => return Err(bad(format!("unknown option '{option}'"))),
            }
        }
        if bw.is_some() || iops.is_some() {
            disk.rate_limiter = Some(RateLimiterConfig::from_rates(bw, iops));
        }
        disk.validate_syntax().map_err(bad)?;
        Ok(disk)
    }
}

impl DiskConfig {
    /// The drive id: the configured one, else `disk{index}`.
    pub fn drive_id(&self, index: usize) -> String {
        self.id.clone().unwrap_or_else(|| format!("disk{index}"))
    }

    /// Checks what can be checked without touching the file.
    pub fn validate_syntax(&self) -> Result<(), String> {
        if let Some(limits) = &self.rate_limiter {
            limits
                .validate()
                .map_err(|e| format!("rate_limiter: {e}"))?;
        }
        if let Some(id) = &self.id {
            let valid = !id.is_empty()
                && id.len() <= MAX_DRIVE_ID_LEN
                && id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
            if !valid {
                return Err(format!(
                    "id must be 1-{MAX_DRIVE_ID_LEN} characters of A-Z, a-z, 0-9, _ or -"
                ));
            }
        }
        if let Some(serial) = &self.serial {
            if serial.len() > MAX_DISK_SERIAL_LEN {
                return Err(format!("serial longer than {MAX_DISK_SERIAL_LEN} bytes"));
            }
            if !serial.bytes().all(|b| b.is_ascii_graphic()) {
                return Err("serial must be printable ASCII without spaces".into());
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_flag_syntax() {
        let d: DiskConfig = "/img/root.qcow2,format=qcow2,readonly,serial=vol-1,id=rootfs"
            .parse()
            .unwrap();
        assert_eq!(d.drive_id(3), "rootfs");
        assert_eq!(d.path, PathBuf::from("/img/root.qcow2"));
        assert_eq!(d.format, Some(ImageFormat::Qcow2));
        assert!(d.readonly);
        assert_eq!(d.serial.as_deref(), Some("vol-1"));
        let plain: DiskConfig = "data.raw".parse().unwrap();
        assert_eq!(plain.drive_id(3), "disk3");
        assert_eq!(plain.rate_limiter, None);
        let limited: DiskConfig = "d.raw,bw=1048576,iops=100".parse().unwrap();
        let limits = limited.rate_limiter.unwrap();
        assert_eq!(limits.bandwidth.map(|b| b.size), Some(1 << 20));
        assert_eq!(limits.ops.map(|b| b.size), Some(100));
        let sync: DiskConfig = "d.raw,io=sync".parse().unwrap();
        assert_eq!(sync.io_engine, IoEngine::Sync);
        assert_eq!(
            (plain.format, plain.readonly, plain.serial),
            (None, false, None)
        );
    }

    #[test]
    fn rejects_bad_specs() {
        for spec in [
            "",
            ",readonly",
            "a,format=vmdk",
            "a,bogus",
            "a,serial=123456789012345678901",
            "a,serial=has space",
            "a,id=",
            "a,id=has/slash",
            "a,bw=0",
            "a,iops=-3",
            "a,bw=fast",
            "a,io=threads",
        ] {
            assert!(spec.parse::<DiskConfig>().is_err(), "{spec}");
        }
    }

    #[test]
    fn json_form_matches() {
        let d: DiskConfig =
            serde_json::from_str(r#"{"path": "/a", "format": "raw", "readonly": true}"#).unwrap();
        assert_eq!(d.format, Some(ImageFormat::Raw));
        assert!(serde_json::from_str::<DiskConfig>(r#"{"path": "/a", "ro": true}"#).is_err());
        let limited: DiskConfig = serde_json::from_str(
            r#"{"path": "/a", "rate_limiter": {"bandwidth": {"size": 100, "one_time_burst": 50, "refill_time": 10}}}"#,
        )
        .unwrap();
        limited.validate_syntax().unwrap();
        let broken: DiskConfig = serde_json::from_str(
            r#"{"path": "/a", "rate_limiter": {"ops": {"size": 100, "refill_time": 0}}}"#,
        )
        .unwrap();
        assert!(broken.validate_syntax().is_err());
        // Written back byte for byte as before the format type moved to
        // the devices crate.
        let d: DiskConfig = "/a,format=qcow2".parse().unwrap();
        assert_eq!(
            serde_json::to_string(&d).unwrap(),
            r#"{"id":null,"path":"/a","format":"qcow2","readonly":false,"serial":null}"#
        );
    }
}
