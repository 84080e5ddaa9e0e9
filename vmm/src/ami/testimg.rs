//! Test helper: real disk images built with `mkfs.ext4 -d` and `sfdisk`,
//! in a scratch directory removed on drop (also when a test panics).
//!
//! Without the tools a test is skipped with a note on stderr, unless `CI`
//! is set, where a missing tool is a failure: CI must not pass by testing
//! nothing.

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

/// The UUID every test filesystem gets, so tests can expect it.
pub const FS_UUID: &str = "6a1d2c3b-4e5f-4a6b-8c7d-9e0f1a2b3c4d";

/// A directory removed, with its contents, on drop.
#[derive(Debug)]
pub struct Scratch(PathBuf);

impl Scratch {
    /// A fresh, empty directory named after `tag`.
    pub fn new(tag: &str) -> Self {
        static N: AtomicU32 = AtomicU32::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let path =
            std::env::temp_dir().join(format!("stratus-ami-test-{}-{tag}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap();
        Self(path)
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.0
    }

    /// Writes `bytes` at `rel` under the directory's `tree/`, making parents.
    pub fn file(&self, rel: &str, bytes: &[u8]) -> &Self {
        let path = self.tree().join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, bytes).unwrap();
        self
    }

    /// Makes a symlink at `rel` under `tree/` pointing at `target`, verbatim.
    pub fn link(&self, rel: &str, target: &str) -> &Self {
        let path = self.tree().join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::os::unix::fs::symlink(target, path).unwrap();
        self
    }

    /// The tree that becomes the filesystem's contents.
    pub fn tree(&self) -> PathBuf {
        self.0.join("tree")
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn find_tool(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

/// The image tools, found on `PATH` or in the sbin directories.
#[derive(Debug)]
pub struct Tools {
    mkfs: PathBuf,
    sfdisk: PathBuf,
}

/// `qemu-img`, or `None` (after saying why) when a test should skip.
pub fn qemu_img() -> Option<PathBuf> {
    match find_tool("qemu-img") {
        Some(path) => Some(path),
        None if std::env::var_os("CI").is_some() => {
            panic!("qemu-img is required in CI (apt-get install qemu-utils)")
        }
        None => {
            eprintln!("skipping: qemu-img not installed (qemu-utils)");
            None
        }
    }
}

/// Converts the raw image `raw` to qcow2 beside it.
pub fn to_qcow2(qemu_img: &Path, raw: &Path) -> PathBuf {
    let out = raw.with_extension("qcow2");
    run(
        Command::new(qemu_img)
            .args(["convert", "-q", "-f", "raw", "-O", "qcow2"])
            .arg(raw)
            .arg(&out),
        "",
    );
    out
}

/// The tools, or `None` (after saying why) when a test should skip.
pub fn tools() -> Option<Tools> {
    match (find_tool("mkfs.ext4"), find_tool("sfdisk")) {
        (Some(mkfs), Some(sfdisk)) => Some(Tools { mkfs, sfdisk }),
        _ if std::env::var_os("CI").is_some() => {
            panic!("mkfs.ext4 and sfdisk are required in CI (apt-get install e2fsprogs fdisk)")
        }
        _ => {
            eprintln!("skipping: mkfs.ext4 or sfdisk not installed (e2fsprogs, fdisk)");
            None
        }
    }
}

fn run(cmd: &mut Command, stdin: &str) {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Tools {
    /// An ext4 image of `mib` MiB holding `scratch`'s tree, 4 KiB blocks.
    pub fn mkfs(&self, scratch: &Scratch, mib: u64) -> PathBuf {
        let img = scratch.path().join("fs.img");
        std::fs::create_dir_all(scratch.tree()).unwrap();
        run(
            Command::new(&self.mkfs)
                .args(["-q", "-F", "-b", "4096", "-U", FS_UUID, "-d"])
                .arg(scratch.tree())
                .arg(&img)
                .arg(format!("{mib}M")),
            "",
        );
        img
    }

    /// A GPT disk with one partition of type `type_guid` at 1 MiB holding
    /// the filesystem image `fs`.
    pub fn gpt_disk(&self, scratch: &Scratch, fs: &Path, type_guid: &str) -> PathBuf {
        let disk = scratch.path().join("disk.img");
        let fs_bytes = std::fs::read(fs).unwrap();
        let sectors = u64::try_from(fs_bytes.len()).unwrap() / 512;
        // 1 MiB before the partition, 1 MiB after for the backup GPT.
        let f = File::create(&disk).unwrap();
        f.set_len((2 << 20) + sectors * 512).unwrap();
        drop(f);
        run(
            Command::new(&self.sfdisk)
                .args(["-q", "--no-reread", "--no-tell-kernel"])
                .arg(&disk),
            &format!("label: gpt\nstart=2048, size={sectors}, type={type_guid}\n"),
        );
        let f = std::fs::OpenOptions::new().write(true).open(&disk).unwrap();
        f.write_all_at(&fs_bytes, 1 << 20).unwrap();
        disk
    }
}
