//! The whole configuration of one VM as a single serde type.
//!
//! Command-line flags and `--config FILE.json` both produce a [`VmConfig`];
//! [`VmConfig::validate`] checks it before any KVM object exists, so a bad
//! setting is a one-line error and exit code 2, never a half-built VM.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

mod ami;
mod disk;
pub mod footprint;
mod net;

pub use ami::AmiLaunch;
pub use disk::{DiskConfig, MAX_DISK_SERIAL_LEN};
pub use net::{Ipv4Cidr, NetConfig, MAX_NICS};

/// Smallest guest memory we accept: below this even a tiny kernel with an
/// initramfs cannot decompress and run.
pub const MIN_MEMORY_MIB: u64 = 32;
/// Most disks one VM may have (each takes a virtio-mmio window and an IRQ).
pub const MAX_DISKS: usize = 16;
/// Largest guest memory we accept (1 TiB); bounded so arithmetic on it can
/// never overflow and a typo cannot ask the host for petabytes.
pub const MAX_MEMORY_MIB: u64 = 1 << 20;
/// Most vCPUs one VM may have.
pub const MAX_VCPUS: u8 = 32;
/// Longest kernel command line (the boot protocol's `cmdline_size` for
/// modern x86 kernels).
pub const MAX_CMDLINE_LEN: usize = 4096;

/// Command line used when the user gives none.
pub const DEFAULT_CMDLINE: &str = "console=ttyS0 reboot=k panic=1";

/// Instance id used when none is given (Firecracker's default).
pub const DEFAULT_INSTANCE_ID: &str = "anonymous-instance";
/// Longest instance id.
pub const MAX_INSTANCE_ID_LEN: usize = 64;
/// Instance type (SMBIOS product name) used when none is given.
pub const DEFAULT_INSTANCE_TYPE: &str = "stratus.custom";
/// Longest instance type.
pub const MAX_INSTANCE_TYPE_LEN: usize = 64;

fn default_instance_id() -> String {
    DEFAULT_INSTANCE_ID.to_string()
}
fn default_vcpus() -> u8 {
    1
}
fn default_memory_mib() -> u64 {
    256
}
fn default_cmdline() -> String {
    DEFAULT_CMDLINE.to_string()
}

/// Where the guest's COM1 output goes.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum SerialTarget {
    /// The VMM's standard output (and standard input feeds the guest).
    #[default]
    Stdout,
    /// Appended to a file.
    File(PathBuf),
    /// Discarded.
    Off,
}

impl std::str::FromStr for SerialTarget {
    type Err = ConfigError;

    fn from_str(s: &str) -> Result<Self, ConfigError> {
        match s {
            "stdout" => Ok(SerialTarget::Stdout),
            "off" | "none" => Ok(SerialTarget::Off),
            _ => match s.strip_prefix("file:") {
                Some(path) if !path.is_empty() => Ok(SerialTarget::File(PathBuf::from(path))),
                _ => Err(ConfigError::BadSerial(s.to_string())),
            },
        }
    }
}

impl std::fmt::Display for SerialTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SerialTarget::Stdout => write!(f, "stdout"),
            SerialTarget::Off => write!(f, "off"),
            SerialTarget::File(p) => write!(f, "file:{}", p.display()),
        }
    }
}

impl Serialize for SerialTarget {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for SerialTarget {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(d)?;
        raw.parse().map_err(serde::de::Error::custom)
    }
}

/// Everything needed to build and boot one VM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VmConfig {
    /// The instance's id, reported by `GET /` (`--id`).
    #[serde(default = "default_instance_id")]
    pub id: String,
    /// The instance type, e.g. `t3.micro` (`--instance-type`): the guest
    /// sees it as the SMBIOS product name. [`DEFAULT_INSTANCE_TYPE`] when
    /// absent.
    #[serde(default)]
    pub instance_type: Option<String>,
    /// Serve the control API on this Unix socket (`--api-sock`).
    #[serde(default)]
    pub api_socket: Option<PathBuf>,
    /// Kernel image: an ELF `vmlinux` or a bzImage. Absent when booting
    /// from the root disk.
    #[serde(default)]
    pub kernel: Option<PathBuf>,
    /// Optional initial ramdisk.
    #[serde(default)]
    pub initrd: Option<PathBuf>,
    /// Kernel command line.
    #[serde(default = "default_cmdline")]
    pub cmdline: String,
    /// Number of vCPUs, 1 to [`MAX_VCPUS`].
    #[serde(default = "default_vcpus")]
    pub vcpus: u8,
    /// Guest memory in MiB.
    #[serde(default = "default_memory_mib")]
    pub memory_mib: u64,
    /// Console destination.
    #[serde(default)]
    pub serial: SerialTarget,
    /// virtio-blk disks, in guest order (`/dev/vda`, `/dev/vdb`, ...).
    #[serde(default)]
    pub disks: Vec<DiskConfig>,
    /// virtio-net cards, in guest order (`eth0`/`ens…` follow it).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nets: Vec<NetConfig>,
    /// Find the kernel and initrd inside the first disk's root filesystem
    /// instead of taking them from the host.
    #[serde(default)]
    pub boot_from_disk: bool,
    /// Also announce virtio-mmio devices as `virtio_mmio.device=` kernel
    /// arguments, for kernels built with `VIRTIO_MMIO_CMDLINE_DEVICES` and
    /// no ACPI. Default: on for a host kernel, off when booting from disk
    /// (distro kernels find the devices through the DSDT).
    #[serde(default)]
    pub virtio_mmio_cmdline: Option<bool>,
    /// Launch from an AMI manifest with a per-instance overlay; resolved
    /// into `disks` + `boot_from_disk` by [`VmConfig::resolve_ami`].
    #[serde(default)]
    pub ami: Option<AmiLaunch>,
}

impl VmConfig {
    /// Whether to add `virtio_mmio.device=` arguments.
    pub fn wants_virtio_mmio_cmdline(&self) -> bool {
        self.virtio_mmio_cmdline.unwrap_or(!self.boot_from_disk)
    }

    /// The instance type, or [`DEFAULT_INSTANCE_TYPE`].
    pub fn instance_type(&self) -> &str {
        self.instance_type
            .as_deref()
            .unwrap_or(DEFAULT_INSTANCE_TYPE)
    }
}

/// Why a configuration was rejected.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The `--serial` value is not `stdout`, `off` or `file:PATH`.
    #[error("invalid serial target '{0}': expected stdout, off or file:PATH")]
    BadSerial(String),
    /// The JSON config file could not be read.
    #[error("cannot read config file {path}: {source}")]
    ReadConfig {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The JSON config file is not a valid configuration.
    #[error("invalid config file {path}: {source}")]
    ParseConfig {
        /// The file.
        path: PathBuf,
        /// What serde found wrong (unknown keys included).
        source: serde_json::Error,
    },
    /// Neither `--kernel`, `--boot-from-disk` nor `--config` was given.
    #[error(
        "no kernel given: use --kernel PATH, --disk PATH --boot-from-disk, or --config FILE.json"
    )]
    MissingKernel,
    /// Both a host kernel and boot-from-disk were asked for.
    #[error("--kernel/--initrd and --boot-from-disk are mutually exclusive")]
    KernelAndBootFromDisk,
    /// Boot-from-disk without a disk.
    #[error("--boot-from-disk needs a root disk (--disk PATH)")]
    BootFromDiskWithoutDisk,
    /// A `--disk` specification is malformed.
    #[error("invalid --disk '{spec}': {why}")]
    BadDisk {
        /// The specification as given.
        spec: String,
        /// What is wrong with it.
        why: String,
    },
    /// The AMI manifest is unreadable or invalid.
    #[error("AMI manifest {path}: {source}")]
    Ami {
        /// The manifest.
        path: PathBuf,
        /// What is wrong with it.
        source: crate::ami::manifest::ManifestError,
    },
    /// The instance's overlay could not be created.
    #[error("instance disk {path}: {why}")]
    InstanceDisk {
        /// The overlay.
        path: PathBuf,
        /// Why.
        why: String,
    },
    /// A `--net` specification is malformed.
    #[error("invalid --net '{spec}': {why}")]
    BadNet {
        /// The specification as given (or the NIC id from a JSON config).
        spec: String,
        /// What is wrong with it.
        why: String,
    },
    /// Too many network cards.
    #[error("at most {MAX_NICS} network cards are supported, got {0}")]
    TooManyNics(usize),
    /// An AMI launch was combined with a kernel or boot-from-disk.
    #[error("--ami cannot be combined with --kernel, --initrd or --boot-from-disk")]
    AmiAndKernel,
    /// Too many disks.
    #[error("at most {MAX_DISKS} disks are supported, got {0}")]
    TooManyDisks(usize),
    /// `--config` was combined with per-setting flags.
    #[error("--config cannot be combined with other VM settings ({0})")]
    ConfigAndFlags(&'static str),
    /// A file named in the configuration cannot be opened.
    #[error("{what} {path}: {source}")]
    UnreadableFile {
        /// "kernel", "initrd" or "disk".
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A file named in the configuration is not a regular file.
    #[error("{what} {path} is not a regular file")]
    NotAFile {
        /// "kernel" or "initrd".
        what: &'static str,
        /// The path.
        path: PathBuf,
    },
    /// vCPU count outside 1..=MAX_VCPUS.
    #[error("vcpus must be between 1 and {MAX_VCPUS}, got {0}")]
    BadVcpuCount(u64),
    /// Memory size outside the accepted range.
    #[error("memory must be between {MIN_MEMORY_MIB} and {MAX_MEMORY_MIB} MiB, got {0}")]
    BadMemorySize(u64),
    /// The kernel, initrd and boot structures do not fit in guest memory.
    #[error(
        "memory too small: kernel and initrd need about {needed_mib} MiB, VM has {memory_mib} MiB"
    )]
    MemoryTooSmall {
        /// What the images need, rounded up.
        needed_mib: u64,
        /// What was configured.
        memory_mib: u64,
    },
    /// The instance id is empty, too long or has odd characters.
    #[error("invalid instance id {0:?}: use 1-{MAX_INSTANCE_ID_LEN} characters of A-Z, a-z, 0-9, - or _")]
    BadId(String),
    /// The instance type is empty, too long or not printable ASCII.
    #[error("invalid instance type {0:?}: use 1-{MAX_INSTANCE_TYPE_LEN} printable ASCII characters, not starting or ending with a space")]
    BadInstanceType(String),
    /// The command line is too long or contains a NUL byte.
    #[error("invalid kernel command line: {0}")]
    BadCmdline(&'static str),
}

impl VmConfig {
    /// Checks the network cards: each on its own, and that no id, tap or
    /// MAC address is used twice.
    fn validate_nets(&self) -> Result<(), ConfigError> {
        if self.nets.len() > MAX_NICS {
            return Err(ConfigError::TooManyNics(self.nets.len()));
        }
        let (mut ids, mut taps, mut macs) = (
            std::collections::BTreeSet::new(),
            std::collections::BTreeSet::new(),
            std::collections::BTreeSet::new(),
        );
        for (index, net) in self.nets.iter().enumerate() {
            let bad = |why: String| ConfigError::BadNet {
                spec: net.nic_id(index),
                why,
            };
            net.validate_syntax().map_err(bad)?;
            if !ids.insert(net.nic_id(index)) {
                return Err(bad("the id is used twice".into()));
            }
            if !taps.insert(net.tap.clone()) {
                return Err(bad(format!("tap {} is used twice", net.tap)));
            }
            if !macs.insert(net.mac) {
                return Err(bad(format!("MAC {} is used twice", net.mac)));
            }
            // The files it names, read and checked now so a bad one stops
            // the launch before anything exists.
            crate::nic_services::NicServices::load(net).map_err(bad)?;
        }
        Ok(())
    }

    /// Reads a JSON configuration file.
    pub fn from_json_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::ReadConfig {
            path: path.to_path_buf(),
            source,
        })?;
        serde_json::from_str(&text).map_err(|source| ConfigError::ParseConfig {
            path: path.to_path_buf(),
            source,
        })
    }

    /// Checks every setting that can be checked without KVM.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let id_ok = !self.id.is_empty()
            && self.id.len() <= MAX_INSTANCE_ID_LEN
            && self
                .id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !id_ok {
            return Err(ConfigError::BadId(self.id.clone()));
        }
        if let Some(kind) = &self.instance_type {
            let printable = |b: &u8| b.is_ascii_graphic() || *b == b' ';
            let ok = (1..=MAX_INSTANCE_TYPE_LEN).contains(&kind.len())
                && kind.bytes().all(|b| printable(&b))
                && !kind.starts_with(' ')
                && !kind.ends_with(' ');
            if !ok {
                return Err(ConfigError::BadInstanceType(kind.clone()));
            }
        }
        if self.vcpus == 0 || self.vcpus > MAX_VCPUS {
            return Err(ConfigError::BadVcpuCount(u64::from(self.vcpus)));
        }
        if !(MIN_MEMORY_MIB..=MAX_MEMORY_MIB).contains(&self.memory_mib) {
            return Err(ConfigError::BadMemorySize(self.memory_mib));
        }
        if self.cmdline.len() >= MAX_CMDLINE_LEN {
            return Err(ConfigError::BadCmdline("longer than 4095 bytes"));
        }
        if self.cmdline.contains('\0') {
            return Err(ConfigError::BadCmdline("contains a NUL byte"));
        }
        if self.disks.len() > MAX_DISKS {
            return Err(ConfigError::TooManyDisks(self.disks.len()));
        }
        let mut ids = std::collections::BTreeSet::new();
        for (index, disk) in self.disks.iter().enumerate() {
            disk.validate_syntax().map_err(|why| ConfigError::BadDisk {
                spec: disk.path.display().to_string(),
                why,
            })?;
            if !ids.insert(disk.drive_id(index)) {
                return Err(ConfigError::BadDisk {
                    spec: disk.path.display().to_string(),
                    why: format!("drive id {} is used twice", disk.drive_id(index)),
                });
            }
            regular_file_len("disk", &disk.path)?;
        }
        self.validate_nets()?;
        let kernel = match (&self.kernel, self.boot_from_disk) {
            (Some(_), true) => return Err(ConfigError::KernelAndBootFromDisk),
            (None, true) if self.initrd.is_some() => {
                return Err(ConfigError::KernelAndBootFromDisk)
            }
            (None, true) if self.disks.is_empty() => {
                return Err(ConfigError::BootFromDiskWithoutDisk)
            }
            // Kernel and initrd sizes are checked once they are found on the disk.
            (None, true) => return Ok(()),
            (None, false) => return Err(ConfigError::MissingKernel),
            (Some(kernel), false) => kernel,
        };
        regular_file_len("kernel", kernel)?;
        let initrd_len = match &self.initrd {
            Some(path) => regular_file_len("initrd", path)?,
            None => 0,
        };
        // What the kernel really occupies (its loaded segments or its
        // decompression buffer, not its file size), the initrd above it
        // and room for the kernel's early allocations: a VM smaller than
        // that would die mysteriously early.
        let kernel_footprint = std::fs::File::open(kernel)
            .and_then(|mut file| footprint::kernel_footprint(&mut file))
            .map_err(|source| ConfigError::UnreadableFile {
                what: "kernel",
                path: kernel.clone(),
                source,
            })?;
        let needed = footprint::memory_needed(kernel_footprint, initrd_len).div_ceil(1 << 20);
        if needed > self.memory_mib {
            return Err(ConfigError::MemoryTooSmall {
                needed_mib: needed,
                memory_mib: self.memory_mib,
            });
        }
        Ok(())
    }
}

fn regular_file_len(what: &'static str, path: &Path) -> Result<u64, ConfigError> {
    let meta = std::fs::metadata(path).map_err(|source| ConfigError::UnreadableFile {
        what,
        path: path.to_path_buf(),
        source,
    })?;
    if !meta.is_file() {
        return Err(ConfigError::NotAFile {
            what,
            path: path.to_path_buf(),
        });
    }
    // Opening proves we may read it, which metadata alone does not.
    std::fs::File::open(path).map_err(|source| ConfigError::UnreadableFile {
        what,
        path: path.to_path_buf(),
        source,
    })?;
    Ok(meta.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn kernel_file(len: usize) -> tempfile_lite::TempFile {
        let f = tempfile_lite::TempFile::new();
        f.file().write_all(&vec![0u8; len]).unwrap();
        f
    }

    /// A tiny temp-file helper so the tests need no extra crate.
    mod tempfile_lite {
        use std::path::PathBuf;
        pub struct TempFile(PathBuf);
        impl TempFile {
            pub fn new() -> Self {
                static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
                let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let p = std::env::temp_dir()
                    .join(format!("stratus-config-test-{}-{n}", std::process::id()));
                std::fs::File::create(&p).unwrap();
                TempFile(p)
            }
            pub fn path(&self) -> &std::path::Path {
                &self.0
            }
            pub fn file(&self) -> std::fs::File {
                std::fs::OpenOptions::new()
                    .append(true)
                    .open(&self.0)
                    .unwrap()
            }
        }
        impl Drop for TempFile {
            fn drop(&mut self) {
                let _ = std::fs::remove_file(&self.0);
            }
        }
    }

    fn config(kernel: &Path) -> VmConfig {
        VmConfig {
            id: DEFAULT_INSTANCE_ID.into(),
            instance_type: None,
            api_socket: None,
            kernel: Some(kernel.to_path_buf()),
            disks: Vec::new(),
            nets: Vec::new(),
            boot_from_disk: false,
            virtio_mmio_cmdline: None,
            ami: None,
            initrd: None,
            cmdline: DEFAULT_CMDLINE.into(),
            vcpus: 1,
            memory_mib: 128,
            serial: SerialTarget::Stdout,
        }
    }

    #[test]
    fn accepts_a_sane_config() {
        let k = kernel_file(4096);
        config(k.path()).validate().unwrap();
    }

    #[test]
    fn rejects_bad_counts_sizes_and_files() {
        let k = kernel_file(4096);
        let mut c = config(k.path());
        c.vcpus = 0;
        assert!(matches!(c.validate(), Err(ConfigError::BadVcpuCount(0))));
        c.vcpus = 33;
        assert!(matches!(c.validate(), Err(ConfigError::BadVcpuCount(33))));
        c.vcpus = 2;
        c.memory_mib = 8;
        assert!(matches!(c.validate(), Err(ConfigError::BadMemorySize(8))));
        c.memory_mib = 128;
        c.kernel = Some("/nonexistent/vmlinux".into());
        assert!(matches!(
            c.validate(),
            Err(ConfigError::UnreadableFile { .. })
        ));
        c.kernel = Some("/".into());
        assert!(matches!(c.validate(), Err(ConfigError::NotAFile { .. })));
        c.kernel = Some(k.path().to_path_buf());
        c.cmdline = "a\0b".into();
        assert!(matches!(c.validate(), Err(ConfigError::BadCmdline(_))));
    }

    /// A sparse file of `len` bytes starting with `head`.
    fn sparse_file(head: &[u8], len: u64) -> tempfile_lite::TempFile {
        let f = tempfile_lite::TempFile::new();
        f.file().write_all(head).unwrap();
        f.file().set_len(len).unwrap();
        f
    }

    #[test]
    fn memory_check_counts_what_the_kernel_occupies_not_its_file_size() {
        // Like Debian's vmlinux: a 45 MiB file (symbols, notes) whose
        // loadable segments span 30 MiB from 1 MiB, with a 1 MiB initrd.
        let elf = footprint::tests::synthetic_elf(&[(1, 1 << 20, 30 << 20)], 4096);
        let k = sparse_file(&elf, 45 << 20);
        let initrd = kernel_file(1 << 20);
        let mut c = config(k.path());
        c.initrd = Some(initrd.path().to_path_buf());
        c.memory_mib = 128;
        c.validate().unwrap();
        c.memory_mib = 32;
        match c.validate() {
            Err(ConfigError::MemoryTooSmall {
                needed_mib,
                memory_mib: 32,
            }) => assert_eq!(needed_mib, 31 + 1 + 16),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn rejects_memory_too_small_for_the_images() {
        // Segments up to 100 MiB: fine in 128 MiB, not in 64.
        let elf = footprint::tests::synthetic_elf(&[(1, 16 << 20, 84 << 20)], 4096);
        let k = sparse_file(&elf, 4096);
        let mut c = config(k.path());
        c.memory_mib = 64;
        assert!(matches!(
            c.validate(),
            Err(ConfigError::MemoryTooSmall { .. })
        ));
        c.memory_mib = 128;
        c.validate().unwrap();
    }

    #[test]
    fn an_unrecognised_kernel_is_left_to_the_loader() {
        // 20 MiB of zeros is no kernel: the loader's BadKernel error says
        // so better than a guessed size would.
        let k = kernel_file(20 << 20);
        let mut c = config(k.path());
        c.memory_mib = 32;
        c.validate().unwrap();
    }

    #[test]
    fn boot_from_disk_excludes_a_host_kernel_and_needs_a_disk() {
        let k = kernel_file(4096);
        let mut c = config(k.path());
        c.boot_from_disk = true;
        assert!(matches!(
            c.validate(),
            Err(ConfigError::KernelAndBootFromDisk)
        ));
        c.kernel = None;
        assert!(matches!(
            c.validate(),
            Err(ConfigError::BootFromDiskWithoutDisk)
        ));
        c.disks.push(k.path().to_str().unwrap().parse().unwrap());
        c.validate().unwrap();
        c.disks.push("/nonexistent.img".parse().unwrap());
        assert!(matches!(
            c.validate(),
            Err(ConfigError::UnreadableFile { what: "disk", .. })
        ));
        c.boot_from_disk = false;
        c.disks.clear();
        assert!(matches!(c.validate(), Err(ConfigError::MissingKernel)));
    }

    #[test]
    fn instance_type_is_optional_printable_and_bounded() {
        let k = kernel_file(4096);
        let mut c = config(k.path());
        assert_eq!(c.instance_type(), "stratus.custom");
        for good in ["t3.micro", "m7i-flex.2xlarge", "a b", &"x".repeat(64)] {
            c.instance_type = Some(good.to_string());
            c.validate().unwrap();
            assert_eq!(c.instance_type(), good);
        }
        for bad in [
            "",
            " t3",
            "t3 ",
            "t3\tmicro",
            "t3\0",
            "t3.mïcro",
            &"x".repeat(65),
        ] {
            c.instance_type = Some(bad.to_string());
            assert!(
                matches!(c.validate(), Err(ConfigError::BadInstanceType(ref t)) if t == bad),
                "{bad:?}"
            );
        }
        let c: VmConfig =
            serde_json::from_str(r#"{"kernel": "/k", "instance_type": "c5.large"}"#).unwrap();
        assert_eq!(c.instance_type.as_deref(), Some("c5.large"));
        let c: VmConfig = serde_json::from_str(r#"{"kernel": "/k"}"#).unwrap();
        assert_eq!(c.instance_type, None);
    }

    #[test]
    fn json_uses_defaults_and_rejects_unknown_keys() {
        let c: VmConfig = serde_json::from_str(r#"{"kernel": "/k"}"#).unwrap();
        assert_eq!((c.vcpus, c.memory_mib), (1, 256));
        assert_eq!(c.cmdline, DEFAULT_CMDLINE);
        let c: VmConfig =
            serde_json::from_str(r#"{"kernel": "/k", "serial": "file:/tmp/log"}"#).unwrap();
        assert_eq!(c.serial, SerialTarget::File("/tmp/log".into()));
        let err = serde_json::from_str::<VmConfig>(r#"{"kernel": "/k", "vcpu": 2}"#).unwrap_err();
        assert!(err.to_string().contains("unknown field"), "{err}");
        assert!(serde_json::from_str::<VmConfig>(r#"{"kernel": "/k", "serial": "tty"}"#).is_err());
    }
}
