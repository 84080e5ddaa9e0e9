//! Finding the kernel, initrd and boot options inside the root filesystem,
//! the way the image's own bootloader would have.
//!
//! In order:
//! 1. BLS entries under `/boot/loader/entries/*.conf` (Fedora, RHEL,
//!    Amazon Linux 2023): the entry with the highest version wins.
//! 2. Debian's `/vmlinuz` and `/initrd.img` symlinks at the root.
//! 3. The newest `/boot/vmlinuz-<version>` with `/boot/initrd.img-<version>`
//!    (or `/boot/initramfs-<version>.img`).
//!
//! Nothing is read into memory here; the result names files and their
//! sizes, already resolved and checked against [`Limits`].

use ext4_view::{Ext4, Ext4Error};

use super::bls::BlsEntry;
use super::resolve::{resolve_file, ResolveError};
use super::rootfs::RootFs;
use super::version;

const BLS_DIR: &str = "/boot/loader/entries";
/// Largest BLS entry read; real ones are a few hundred bytes.
const MAX_BLS_ENTRY: u64 = 64 * 1024;
/// Most directory entries looked at in one directory, so a directory with
/// millions of names cannot stall the VMM's start.
const MAX_DIR_ENTRIES: usize = 4096;

/// Size caps for what is staged for the loader.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest kernel accepted, in bytes.
    pub max_kernel: u64,
    /// Largest initrd accepted (all of an entry's initrds together).
    pub max_initrd: u64,
}

impl Default for Limits {
    /// 512 MiB each: an order of magnitude above any real kernel or
    /// initramfs, well below what would hurt the host.
    fn default() -> Self {
        Self {
            max_kernel: 512 << 20,
            max_initrd: 512 << 20,
        }
    }
}

/// A resolved regular file in the image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootFile {
    /// Its path, with no symlinks along it.
    pub path: String,
    /// Its size in bytes.
    pub len: u64,
}

/// Which rule found the kernel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FoundBy {
    /// A BLS entry, by file name without `.conf`.
    Bls(String),
    /// The `/vmlinuz` (and `/initrd.img`) links at the root.
    RootLinks,
    /// The newest `/boot/vmlinuz-<version>`.
    NewestInBoot(String),
}

/// What to boot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootPlan {
    /// The kernel.
    pub kernel: BootFile,
    /// Initrds to concatenate, in order (the kernel unpacks concatenated
    /// cpio archives); empty for none.
    pub initrds: Vec<BootFile>,
    /// Extra kernel options from the BLS entry; empty otherwise.
    pub options: String,
    /// Which rule found the kernel.
    pub found_by: FoundBy,
}

/// Why no kernel could be found.
#[derive(Debug, thiserror::Error)]
pub enum BootLoaderError {
    /// A kernel, initrd or BLS entry path did not resolve under the rules
    /// in [`super::resolve`].
    #[error("{what}: {source}")]
    Resolve {
        /// Which file was being looked for.
        what: &'static str,
        /// Why it failed.
        source: ResolveError,
    },
    /// A file is bigger than its cap.
    #[error("{path} is {len} bytes, over the {limit}-byte limit")]
    TooLarge {
        /// The file.
        path: String,
        /// Its size (for initrds, their running total).
        len: u64,
        /// The cap.
        limit: u64,
    },
    /// A directory could not be listed, or a file's metadata read.
    #[error("reading {path}: {source}")]
    Fs {
        /// The directory or file.
        path: String,
        /// The reader's error.
        source: Ext4Error,
    },
    /// A directory holds more entries than we look at.
    #[error("{path} has more than {MAX_DIR_ENTRIES} entries")]
    TooManyEntries {
        /// The directory.
        path: String,
    },
    /// A BLS entry is not UTF-8.
    #[error("BLS entry {path} is not UTF-8 text")]
    BlsNotText {
        /// The entry.
        path: String,
    },
    /// None of the three rules found a kernel.
    #[error("no kernel found: no BLS entry with a `linux` key in {BLS_DIR}, no /vmlinuz, no /boot/vmlinuz-*")]
    NoKernel,
}

fn resolve(
    fs: &Ext4,
    what: &'static str,
    path: &str,
    confine: bool,
) -> Result<String, BootLoaderError> {
    resolve_file(fs, path, confine).map_err(|source| BootLoaderError::Resolve { what, source })
}

/// Whether anything (even a dangling link) is at `path`.
fn exists(fs: &Ext4, path: &str) -> Result<bool, BootLoaderError> {
    match fs.symlink_metadata(path) {
        Ok(_) => Ok(true),
        Err(Ext4Error::NotFound | Ext4Error::NotADirectory) => Ok(false),
        Err(source) => Err(BootLoaderError::Fs {
            path: path.to_owned(),
            source,
        }),
    }
}

/// The UTF-8 names in directory `dir`; empty if it does not exist.
fn list(fs: &Ext4, dir: &str) -> Result<Vec<String>, BootLoaderError> {
    let fs_err = |source| BootLoaderError::Fs {
        path: dir.to_owned(),
        source,
    };
    let entries = match fs.read_dir(dir) {
        Ok(entries) => entries,
        Err(Ext4Error::NotFound | Ext4Error::NotADirectory) => return Ok(Vec::new()),
        Err(e) => return Err(fs_err(e)),
    };
    let mut names = Vec::new();
    for (i, entry) in entries.enumerate() {
        if i >= MAX_DIR_ENTRIES {
            return Err(BootLoaderError::TooManyEntries {
                path: dir.to_owned(),
            });
        }
        let entry = entry.map_err(fs_err)?;
        if let Ok(name) = entry.file_name().as_str() {
            names.push(name.to_owned());
        }
    }
    Ok(names)
}

fn file(fs: &Ext4, path: String, limit: u64) -> Result<BootFile, BootLoaderError> {
    let len = fs
        .metadata(path.as_str())
        .map_err(|source| BootLoaderError::Fs {
            path: path.clone(),
            source,
        })?
        .len();
    if len > limit {
        return Err(BootLoaderError::TooLarge { path, len, limit });
    }
    Ok(BootFile { path, len })
}

/// Checks the initrds' total against the cap.
fn initrds(fs: &Ext4, paths: Vec<String>, limit: u64) -> Result<Vec<BootFile>, BootLoaderError> {
    let mut total: u64 = 0;
    let mut files = Vec::new();
    for path in paths {
        let f = file(fs, path, limit)?;
        total = total.saturating_add(f.len);
        if total > limit {
            return Err(BootLoaderError::TooLarge {
                path: f.path,
                len: total,
                limit,
            });
        }
        files.push(f);
    }
    Ok(files)
}

/// A BLS path is relative to the boot partition's root; with `/boot` on
/// the root filesystem that is `/boot`, but some generators write the full
/// `/boot/...` path instead. Try the likelier reading first, then the
/// other.
fn resolve_bls_path(fs: &Ext4, what: &'static str, path: &str) -> Result<String, BootLoaderError> {
    let abs = format!("/{}", path.trim_start_matches('/'));
    let in_boot = format!("/boot{abs}");
    let (first, second) = if abs.starts_with("/boot/") {
        (abs, in_boot)
    } else {
        (in_boot, abs)
    };
    match resolve_file(fs, &first, true) {
        Err(ResolveError::NotFound { .. }) => resolve(fs, what, &second, true),
        other => other.map_err(|source| BootLoaderError::Resolve { what, source }),
    }
}

fn from_bls(fs: &Ext4, limits: &Limits) -> Result<Option<BootPlan>, BootLoaderError> {
    let mut best: Option<BlsEntry> = None;
    for name in list(fs, BLS_DIR)? {
        let Some(id) = name.strip_suffix(".conf").filter(|id| !id.starts_with('.')) else {
            continue;
        };
        let path = resolve(fs, "BLS entry", &format!("{BLS_DIR}/{name}"), true)?;
        // Sized before reading: `read` allocates the inode's whole size.
        file(fs, path.clone(), MAX_BLS_ENTRY)?;
        let bytes = fs
            .read(path.as_str())
            .map_err(|source| BootLoaderError::Fs {
                path: path.clone(),
                source,
            })?;
        let text = String::from_utf8(bytes).map_err(|_| BootLoaderError::BlsNotText { path })?;
        let entry = BlsEntry::parse(id, &text);
        if entry.linux.is_some() && best.as_ref().is_none_or(|b| entry.cmp_version(b).is_gt()) {
            best = Some(entry);
        }
    }
    let Some(entry) = best else {
        return Ok(None);
    };
    let linux = entry.linux.as_deref().unwrap_or_default();
    let kernel = resolve_bls_path(fs, "BLS kernel", linux)?;
    let initrd_paths = entry
        .initrds
        .iter()
        .map(|p| resolve_bls_path(fs, "BLS initrd", p))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Some(BootPlan {
        kernel: file(fs, kernel, limits.max_kernel)?,
        initrds: initrds(fs, initrd_paths, limits.max_initrd)?,
        options: entry.options,
        found_by: FoundBy::Bls(entry.id),
    }))
}

fn from_root_links(fs: &Ext4, limits: &Limits) -> Result<Option<BootPlan>, BootLoaderError> {
    if !exists(fs, "/vmlinuz")? {
        return Ok(None);
    }
    let kernel = resolve(fs, "/vmlinuz", "/vmlinuz", false)?;
    let initrd = if exists(fs, "/initrd.img")? {
        vec![resolve(fs, "/initrd.img", "/initrd.img", false)?]
    } else {
        Vec::new()
    };
    Ok(Some(BootPlan {
        kernel: file(fs, kernel, limits.max_kernel)?,
        initrds: initrds(fs, initrd, limits.max_initrd)?,
        options: String::new(),
        found_by: FoundBy::RootLinks,
    }))
}

fn from_newest_in_boot(fs: &Ext4, limits: &Limits) -> Result<Option<BootPlan>, BootLoaderError> {
    let newest = list(fs, "/boot")?
        .into_iter()
        .filter_map(|n| {
            n.strip_prefix("vmlinuz-")
                .filter(|v| !v.is_empty())
                .map(str::to_owned)
        })
        .max_by(|a, b| version::compare(a, b));
    let Some(ver) = newest else {
        return Ok(None);
    };
    let kernel = resolve(fs, "kernel", &format!("/boot/vmlinuz-{ver}"), true)?;
    let mut initrd = Vec::new();
    for candidate in [
        format!("/boot/initrd.img-{ver}"),
        format!("/boot/initramfs-{ver}.img"),
    ] {
        if exists(fs, &candidate)? {
            initrd.push(resolve(fs, "initrd", &candidate, true)?);
            break;
        }
    }
    Ok(Some(BootPlan {
        kernel: file(fs, kernel, limits.max_kernel)?,
        initrds: initrds(fs, initrd, limits.max_initrd)?,
        options: String::new(),
        found_by: FoundBy::NewestInBoot(ver),
    }))
}

/// Finds what to boot in `root`, by the rules in the module documentation.
/// A rule that finds its starting point but then fails (a dangling or
/// escaping link, a file over its cap) is an error, not a reason to try the
/// next rule: silently booting something else would hide the problem.
pub fn locate(root: &RootFs, limits: &Limits) -> Result<BootPlan, BootLoaderError> {
    let fs = root.ext4();
    if let Some(plan) = from_bls(fs, limits)? {
        return Ok(plan);
    }
    if let Some(plan) = from_root_links(fs, limits)? {
        return Ok(plan);
    }
    from_newest_in_boot(fs, limits)?.ok_or(BootLoaderError::NoKernel)
}
