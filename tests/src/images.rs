//! Guest images: a kernel plus an initramfs, built into the cache.
//!
//! See `guest-images/README.md` for what each image contains.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::apt;
use crate::cache::{self, Fingerprint};
use crate::cmd;
use crate::cpio::Archive;
use crate::error::{Error, Result};
use crate::kernel::{self, Kernel};

/// `/init` of the tiny initramfs.
const TINY_INIT: &str = include_str!("../../guest-images/tiny/init");

/// Bumped when the Rust side of an image build changes its output.
const BUILDER_VERSION: &str = "2";

/// Older builds of an image are removed once unused for this long.
const STALE_AFTER: std::time::Duration = std::time::Duration::from_secs(14 * 24 * 3600);

/// Host tools image builds run.
pub const BUILD_PACKAGES: &[&str] = &["busybox-static", "zstd", "xz-utils", "kmod"];

/// Where the statically linked busybox from `busybox-static` lives.
pub const BUSYBOX: &str = "/bin/busybox";

/// A bootable guest: kernel, initramfs, and what the guest will report.
#[derive(Debug, Clone)]
pub struct GuestImage {
    /// Short name (`tiny`, `debian61`).
    pub name: &'static str,
    /// The kernel file handed to the VMM (`vmlinux` ELF or bzImage).
    pub kernel: PathBuf,
    /// The initramfs (uncompressed newc cpio).
    pub initrd: PathBuf,
    /// The kernel's release, which the guest prints as `kernel=`.
    pub kernel_release: String,
}

/// The `tiny` image: the 6.12 cloud kernel's `vmlinux` + busybox.
pub fn tiny() -> Result<GuestImage> {
    let kernel = Kernel::fetch(kernel::CLOUD_6_12)?;
    let vmlinux = kernel.vmlinux()?;
    build("tiny", &kernel, &vmlinux)
}

/// The `debian61` image: bookworm's 6.1 cloud kernel, its bzImage as
/// shipped, with the same busybox initramfs.
pub fn debian61() -> Result<GuestImage> {
    let kernel = Kernel::fetch(kernel::CLOUD_6_1)?;
    let vmlinuz = kernel.vmlinuz();
    build("debian61", &kernel, &vmlinuz)
}

fn build(name: &'static str, kernel: &Kernel, kernel_file: &Path) -> Result<GuestImage> {
    apt::ensure_installed(BUILD_PACKAGES)?;
    let busybox_version = apt::installed_version("busybox-static")?;
    let key = Fingerprint::default()
        .with(BUILDER_VERSION)
        .with(name)
        .with(TINY_INIT)
        .with(&busybox_version)
        .with(
            kernel
                .deb
                .path
                .file_name()
                .map(|n| n.as_encoded_bytes())
                .unwrap_or_default(),
        )
        .with(
            kernel_file
                .file_name()
                .map(|n| n.as_encoded_bytes())
                .unwrap_or_default(),
        );
    let dir = cache::root()
        .join("images")
        .join(format!("{name}-{}", key.hex()));
    cache::prune_siblings(&dir, &format!("{name}-"), STALE_AFTER);
    let dir = cache::build_dir(&dir, |scratch| {
        link_or_copy(kernel_file, &scratch.join("kernel"))?;
        let mut initramfs = busybox_initramfs(TINY_INIT)?;
        add_virtio_modules(&mut initramfs, kernel)?;
        initramfs.write_to(&scratch.join("initrd.cpio"))?;
        let info = format!(
            "image={name}\nkernel_package={}\nkernel_version={}\nkernel_release={}\nbusybox={busybox_version}\n",
            kernel.deb.name, kernel.deb.version, kernel.release
        );
        fs::write(scratch.join("info"), info).map_err(Error::io("write", scratch))
    })?;
    cache::touch(&dir);
    Ok(GuestImage {
        name,
        kernel: dir.join("kernel"),
        initrd: dir.join("initrd.cpio"),
        kernel_release: kernel.release.clone(),
    })
}

/// The stock kernels build their virtio-mmio transport and device drivers
/// as modules; tests that give the guest devices through
/// `virtio_mmio.device=` load these (`stratus.modules=1` on the command
/// line). They sit in the image whether used or not, so every boot of an
/// image reads the same initramfs.
pub const VIRTIO_MODULES: &[&str] = &["virtio_mmio", "virtio_blk", "virtio_net"];

fn add_virtio_modules(archive: &mut Archive, kernel: &Kernel) -> Result<()> {
    let modules = kernel.modules_with_deps(VIRTIO_MODULES)?;
    archive.dir("lib").dir("lib/stratus-modules");
    let mut order = String::new();
    for module in &modules {
        archive.file(
            &format!("lib/stratus-modules/{}.ko", module.name),
            &module.file,
        )?;
        order.push_str(&module.name);
        order.push('\n');
    }
    archive.bytes("lib/stratus-modules/order", order, 0o644);
    Ok(())
}

/// A busybox initramfs with `init` as `/init`: busybox, a link for each of
/// its applets (so scripts need no `--install` step at boot), the mount
/// points, and `/dev/console` so that init has a console before devtmpfs.
pub fn busybox_initramfs(init: &str) -> Result<Archive> {
    let mut archive = Archive::new();
    archive.file("bin/busybox", Path::new(BUSYBOX))?;
    for applet in busybox_applets()? {
        if applet != "busybox" {
            archive.symlink(&format!("bin/{applet}"), "busybox");
        }
    }
    archive
        .symlink("sbin", "bin")
        .symlink("usr/bin", "../bin")
        .symlink("usr/sbin", "../bin")
        .dir("proc")
        .dir("sys")
        .dir("tmp")
        .dir("run")
        .char_device("dev/console", 5, 1)
        .char_device("dev/null", 1, 3)
        .bytes("init", init, 0o755);
    Ok(archive)
}

fn busybox_applets() -> Result<Vec<String>> {
    let list = cmd::stdout(Command::new(BUSYBOX).arg("--list"))?;
    Ok(list
        .lines()
        .map(str::trim)
        .filter(|a| !a.is_empty() && !a.contains('/'))
        .map(str::to_owned)
        .collect())
}

/// Hard-links `from` to `to` (cheap for a 60 MB `vmlinux`), else copies.
fn link_or_copy(from: &Path, to: &Path) -> Result<()> {
    if fs::hard_link(from, to).is_ok() {
        return Ok(());
    }
    fs::copy(from, to)
        .map(drop)
        .map_err(Error::io("copy", from))
}
