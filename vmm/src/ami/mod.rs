//! Booting straight from an AMI's disk: finding the kernel, initrd and
//! root filesystem inside the image, in process, with no loop devices,
//! mounts or helper tools.
//!
//! - [`manifest`]: the AMI bundle's manifest, parsed and validated.
//! - [`disk`]: the [`ReadAt`] trait disks are read through; it is also
//!   implemented for `Mutex<B>` over the block device's backends (raw,
//!   qcow2), so the reader sees what the guest will.
//! - [`gpt`]: the partition table, and which partition is the root.
//! - [`rootfs`]: the ext4 root filesystem.
//! - [`resolve`]: following symlinks inside the image, under a policy.
//! - [`bootloader`]: where the image's bootloader would find the kernel
//!   ([`bls`] entries, Debian links, newest `/boot/vmlinuz-*`).
//! - [`staging`]: the private directory the files are copied out to.
//!
//! The whole pipeline is [`find_boot_files`]; [`fuzz_boot_reader`] runs it
//! over arbitrary bytes.

mod backend;
pub mod bls;
pub mod bootloader;
pub mod disk;
pub mod gpt;
pub mod manifest;
pub mod resolve;
pub mod rootfs;
pub mod staging;
pub mod version;

#[cfg(test)]
mod testimg;
#[cfg(test)]
mod tests;

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use bootloader::{BootPlan, FoundBy, Limits};
pub use disk::{ReadAt, Slice};
pub use gpt::RootLocation;

use bootloader::{BootFile, BootLoaderError};
use gpt::GptError;
use rootfs::{RootFs, RootFsError};
use staging::{StageError, StagingDir};

/// Why booting from the disk is not possible.
#[derive(Debug, thiserror::Error)]
pub enum AmiError {
    /// No root filesystem could be located on the disk.
    #[error("{0}")]
    Locate(#[from] GptError),
    /// The root filesystem could not be opened.
    #[error("{0}")]
    RootFs(#[from] RootFsError),
    /// No bootable kernel was found in the root filesystem.
    #[error("{0}")]
    Boot(#[from] BootLoaderError),
    /// The kernel or initrd could not be copied out.
    #[error("{0}")]
    Stage(#[from] StageError),
}

/// Initrds are concatenated with each one padded to this alignment, as
/// GRUB does, so every cpio archive starts where the kernel looks for one.
const INITRD_ALIGN: u64 = 4;

/// The kernel and initrd found on a disk, staged as files for
/// [`crate::boot::load`], and the command line they need. The files are
/// removed when this is dropped, so keep it alive until the kernel and
/// initrd are in guest memory.
#[derive(Debug)]
pub struct DiskBoot {
    /// The kernel image, staged.
    pub kernel: PathBuf,
    /// The initrd (all of an entry's initrds, concatenated), staged.
    pub initrd: Option<PathBuf>,
    /// Options from the BLS entry, minus any `root=`; empty otherwise.
    pub cmdline_extra: String,
    /// The root filesystem's UUID.
    pub root_uuid: String,
    /// Where the root filesystem is on the disk.
    pub root: RootLocation,
    /// Which rule found the kernel.
    pub found_by: FoundBy,
    staging: StagingDir,
}

impl DiskBoot {
    /// The command line the disk implies: `root=UUID=<uuid> rw`, then the
    /// BLS options. Callers append the manifest's `kernel_cmdline` and
    /// their own (console, etc.) after it.
    pub fn cmdline(&self) -> String {
        root_cmdline(&self.root_uuid, &self.cmdline_extra)
    }

    /// The private directory holding the staged files.
    pub fn staging_dir(&self) -> &Path {
        self.staging.path()
    }
}

/// `root=UUID=<uuid> rw` followed by `options` without their `root=`.
///
/// The reader found the root by partition table and UUID, so that is what
/// the kernel is told; a BLS `root=` may name a device path
/// (`/dev/mapper/...`, `/dev/nvme0n1p3`) that does not exist under
/// Stratus's devices, and two `root=` would be ambiguous. Everything else
/// is kept in order, so a BLS `ro` (after our `rw`) still wins, as the
/// distribution intended: it remounts read-write after fsck.
pub fn root_cmdline(uuid: &str, options: &str) -> String {
    let options = without_root(options);
    if options.is_empty() {
        format!("root=UUID={uuid} rw")
    } else {
        format!("root=UUID={uuid} rw {options}")
    }
}

/// `options` with every `root=` token removed, whitespace normalised.
fn without_root(options: &str) -> String {
    options
        .split_whitespace()
        .filter(|t| !t.starts_with("root="))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Locates and opens the root filesystem and finds what to boot, without
/// copying anything.
pub fn inspect(
    disk: Arc<dyn ReadAt>,
    limits: &Limits,
) -> Result<(RootFs, RootLocation, BootPlan), AmiError> {
    let root = gpt::find_root(&*disk)?;
    // `find_root` only returns ranges inside the disk.
    let part: Arc<dyn ReadAt> = match Slice::new(disk, root.start, root.len) {
        Some(slice) => Arc::new(slice),
        None => return Err(GptError::Unrecognized.into()),
    };
    let fs = RootFs::open(part)?;
    let plan = bootloader::locate(&fs, limits)?;
    Ok((fs, root, plan))
}

/// Streams `files` from the image into `dst`, each but the last padded to
/// `align`.
fn copy_out(
    fs: &RootFs,
    files: &[BootFile],
    align: u64,
    dst: &mut dyn Write,
    dst_path: &Path,
) -> Result<(), StageError> {
    for (i, f) in files.iter().enumerate() {
        let mut src = fs.open_file(&f.path).map_err(|e| StageError::Read {
            path: f.path.clone(),
            source: io::Error::from(e),
        })?;
        staging::copy_exact(&f.path, &mut src, f.len, dst, dst_path)?;
        if i + 1 < files.len() {
            let pad = (align - f.len % align) % align;
            staging::copy_exact(&f.path, &mut io::repeat(0), pad, dst, dst_path)?;
        }
    }
    Ok(())
}

/// Finds the kernel and initrd on `disk` and stages them in a private
/// directory under `$XDG_RUNTIME_DIR` (or the temp directory).
///
/// ```no_run
/// use std::sync::Arc;
/// use stratus_vmm::ami::{find_boot_files, ReadAt};
///
/// let disk: Arc<dyn ReadAt> = Arc::new(std::fs::File::open("disk.raw")?);
/// let boot = find_boot_files(disk)?;
/// let cmdline = format!("{} console=ttyS0", boot.cmdline());
/// // boot::load(&mem, &boot.kernel, boot.initrd.as_deref(), &cmdline, rsdp)?;
/// // ...and keep `boot` alive until the load is done.
/// # let _ = cmdline;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn find_boot_files(disk: Arc<dyn ReadAt>) -> Result<DiskBoot, AmiError> {
    find_boot_files_in(disk, &staging::default_parent(), &Limits::default())
}

/// [`find_boot_files`] with the staging parent and size caps chosen.
pub fn find_boot_files_in(
    disk: Arc<dyn ReadAt>,
    parent: &Path,
    limits: &Limits,
) -> Result<DiskBoot, AmiError> {
    let (fs, root, plan) = inspect(disk, limits)?;
    let staging = StagingDir::new_in(parent)?;
    let (kernel, mut out) = staging.create("vmlinuz")?;
    copy_out(
        &fs,
        std::slice::from_ref(&plan.kernel),
        1,
        &mut out,
        &kernel,
    )?;
    let initrd = if plan.initrds.is_empty() {
        None
    } else {
        let (path, mut out) = staging.create("initrd.img")?;
        copy_out(&fs, &plan.initrds, INITRD_ALIGN, &mut out, &path)?;
        Some(path)
    };
    Ok(DiskBoot {
        kernel,
        initrd,
        cmdline_extra: without_root(&plan.options),
        root_uuid: fs.uuid().to_owned(),
        root,
        found_by: plan.found_by,
        staging,
    })
}

/// Caps for [`fuzz_boot_reader`]: small enough that one input cannot make
/// a fuzzing iteration slow by claiming a huge (sparse) kernel.
const FUZZ_LIMITS: Limits = Limits {
    max_kernel: 16 << 20,
    max_initrd: 16 << 20,
};

/// Runs the whole reader over `data` as a disk image, reading the kernel
/// and initrd it finds to nowhere. Errors are expected; a panic, a hang or
/// an unbounded allocation is a bug. For a cargo-fuzz target.
pub fn fuzz_boot_reader(data: &[u8]) {
    let disk: Arc<dyn ReadAt> = Arc::new(data.to_vec());
    let Ok((fs, _root, plan)) = inspect(disk, &FUZZ_LIMITS) else {
        return;
    };
    let _ = root_cmdline(fs.uuid(), &plan.options);
    let sink_path = Path::new("/dev/null");
    let _ = copy_out(
        &fs,
        std::slice::from_ref(&plan.kernel),
        1,
        &mut io::sink(),
        sink_path,
    );
    let _ = copy_out(&fs, &plan.initrds, INITRD_ALIGN, &mut io::sink(), sink_path);
}
