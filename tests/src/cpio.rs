//! A writer for initramfs archives (the kernel's "newc" cpio format).
//!
//! Written here rather than by calling `cpio` so that archives are
//! reproducible (fixed owners, timestamps and order) and can contain device
//! nodes such as `/dev/console` without root privileges or `mknod`.
//! The archive is left uncompressed: under TCG, decompressing is the slow
//! part of unpacking an initramfs, and every kernel accepts plain cpio.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

const S_IFDIR: u32 = 0o040_000;
const S_IFREG: u32 = 0o100_000;
const S_IFLNK: u32 = 0o120_000;
const S_IFCHR: u32 = 0o020_000;

/// Where a regular file's bytes come from.
#[derive(Debug, Clone)]
enum Contents {
    Path(PathBuf),
    Bytes(Vec<u8>),
}

#[derive(Debug, Clone)]
enum Entry {
    Dir,
    File { contents: Contents, mode: u32 },
    Symlink(String),
    CharDev { major: u32, minor: u32 },
}

/// An initramfs being assembled: archive paths (without a leading `/`)
/// mapped to entries. Parent directories are added implicitly.
#[derive(Debug, Default, Clone)]
pub struct Archive {
    entries: BTreeMap<String, Entry>,
}

impl Archive {
    /// An empty archive.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a directory (and its parents).
    pub fn dir(&mut self, path: &str) -> &mut Self {
        let path = normalize(path);
        let mut prefix = String::new();
        for part in path.split('/').filter(|p| !p.is_empty()) {
            if !prefix.is_empty() {
                prefix.push('/');
            }
            prefix.push_str(part);
            self.entries.entry(prefix.clone()).or_insert(Entry::Dir);
        }
        self
    }

    /// Adds the file at `source` as `path`, keeping its permission bits.
    pub fn file(&mut self, path: &str, source: &Path) -> Result<&mut Self> {
        let meta = std::fs::metadata(source).map_err(Error::io("stat", source))?;
        if !meta.is_file() {
            return Err(Error::BadInput {
                path: source.to_path_buf(),
                problem: "not a regular file".into(),
            });
        }
        let mode = meta.permissions().mode() & 0o7777;
        self.insert(
            path,
            Entry::File {
                contents: Contents::Path(source.to_path_buf()),
                mode,
            },
        );
        Ok(self)
    }

    /// Adds `bytes` as the file `path` with permission bits `mode`.
    pub fn bytes(&mut self, path: &str, bytes: impl Into<Vec<u8>>, mode: u32) -> &mut Self {
        self.insert(
            path,
            Entry::File {
                contents: Contents::Bytes(bytes.into()),
                mode,
            },
        );
        self
    }

    /// Adds a symbolic link `path` pointing at `target`.
    pub fn symlink(&mut self, path: &str, target: &str) -> &mut Self {
        self.insert(path, Entry::Symlink(target.to_owned()));
        self
    }

    /// Adds a character device node.
    pub fn char_device(&mut self, path: &str, major: u32, minor: u32) -> &mut Self {
        self.insert(path, Entry::CharDev { major, minor });
        self
    }

    /// Whether `path` is already in the archive.
    pub fn contains(&self, path: &str) -> bool {
        self.entries.contains_key(&normalize(path))
    }

    fn insert(&mut self, path: &str, entry: Entry) {
        let path = normalize(path);
        if let Some((parent, _)) = path.rsplit_once('/') {
            self.dir(parent);
        }
        self.entries.insert(path, entry);
    }

    /// Writes the archive to `dest`.
    pub fn write_to(&self, dest: &Path) -> Result<()> {
        let file = File::create(dest).map_err(Error::io("create", dest))?;
        let mut out = BufWriter::new(file);
        self.write(&mut out)
            .and_then(|()| out.flush())
            .map_err(Error::io("write", dest))
    }

    fn write(&self, out: &mut impl Write) -> io::Result<()> {
        for (ino, (path, entry)) in (1u32..).zip(&self.entries) {
            match entry {
                Entry::Dir => header(out, ino, S_IFDIR | 0o755, 0, (0, 0), path)?,
                Entry::Symlink(target) => {
                    header(out, ino, S_IFLNK | 0o777, target.len(), (0, 0), path)?;
                    out.write_all(target.as_bytes())?;
                    pad(out, target.len())?;
                }
                Entry::CharDev { major, minor } => {
                    header(out, ino, S_IFCHR | 0o600, 0, (*major, *minor), path)?
                }
                Entry::File {
                    contents: Contents::Bytes(data),
                    mode,
                } => {
                    header(out, ino, S_IFREG | mode, data.len(), (0, 0), path)?;
                    out.write_all(data)?;
                    pad(out, data.len())?;
                }
                Entry::File {
                    contents: Contents::Path(source),
                    mode,
                } => {
                    // Streamed, not read whole: images and QEMU are tens of MiB.
                    let named = |e: io::Error| {
                        io::Error::new(e.kind(), format!("{}: {e}", source.display()))
                    };
                    let mut file = File::open(source).map_err(named)?;
                    let len = file.metadata().map_err(named)?.len();
                    let len = usize::try_from(len)
                        .map_err(|_| named(io::ErrorKind::InvalidInput.into()))?;
                    header(out, ino, S_IFREG | mode, len, (0, 0), path)?;
                    let copied = io::copy(&mut (&mut file).take(len as u64), out).map_err(named)?;
                    if copied != len as u64 {
                        return Err(named(io::ErrorKind::UnexpectedEof.into()));
                    }
                    pad(out, len)?;
                }
            }
        }
        header(out, 0, 0, 0, (0, 0), "TRAILER!!!")
    }
}

fn normalize(path: &str) -> String {
    path.trim_start_matches('/')
        .trim_end_matches('/')
        .to_owned()
}

/// Writes one newc header plus the padded name. Owner, group and mtime are
/// zero so the archive's bytes depend only on its contents.
fn header(
    out: &mut impl Write,
    ino: u32,
    mode: u32,
    size: usize,
    rdev: (u32, u32),
    name: &str,
) -> io::Result<()> {
    let size = u32::try_from(size)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, format!("{name}: over 4 GiB")))?;
    let namesize = name.len() + 1;
    let namesize32 = u32::try_from(namesize)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "name too long"))?;
    let nlink = if mode & S_IFDIR == S_IFDIR { 2 } else { 1 };
    let fields = [
        ino, mode, 0, 0, nlink, 0, size, 0, 0, rdev.0, rdev.1, namesize32, 0,
    ];
    let mut text = String::from("070701");
    for field in fields {
        text.push_str(&format!("{field:08x}"));
    }
    out.write_all(text.as_bytes())?;
    out.write_all(name.as_bytes())?;
    out.write_all(&[0])?;
    pad(out, text.len() + namesize)
}

/// Pads to the format's 4-byte alignment after `len` bytes.
fn pad(out: &mut impl Write, len: usize) -> io::Result<()> {
    out.write_all(&[0u8; 3][..(4 - len % 4) % 4])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::TempDir;
    use std::process::Command;

    #[test]
    fn archive_is_readable_by_cpio_and_reproducible() {
        let tmp = TempDir::new("stratus-cpio-test").unwrap();
        let mut archive = Archive::new();
        archive
            .bytes("/init", "#!/bin/sh\n", 0o755)
            .bytes("etc/deep/file.txt", "hello", 0o644)
            .symlink("bin/sh", "busybox")
            .char_device("dev/console", 5, 1);
        let first = tmp.path().join("a.cpio");
        let second = tmp.path().join("b.cpio");
        archive.write_to(&first).unwrap();
        archive.write_to(&second).unwrap();
        assert_eq!(
            std::fs::read(&first).unwrap(),
            std::fs::read(&second).unwrap()
        );

        if !crate::cmd::on_path("cpio") {
            eprintln!("cpio not installed; skipping the cross-check");
            return;
        }
        let listing = crate::cmd::stdout(
            Command::new("sh")
                .arg("-c")
                .arg(format!("cpio -itv < {}", first.display())),
        )
        .unwrap();
        for expected in [
            "init",
            "etc/deep/file.txt",
            "bin/sh -> busybox",
            "dev/console",
            "etc/deep",
        ] {
            assert!(
                listing.contains(expected),
                "{expected} missing from:\n{listing}"
            );
        }
        let extract = tmp.path().join("x");
        std::fs::create_dir(&extract).unwrap();
        crate::cmd::output(
            Command::new("sh")
                .current_dir(&extract)
                .arg("-c")
                .arg(format!(
                    "cpio -id --no-absolute-filenames --nonmatching dev/console < {}",
                    first.display()
                )),
        )
        .unwrap();
        assert_eq!(
            std::fs::read_to_string(extract.join("etc/deep/file.txt")).unwrap(),
            "hello"
        );
    }
}
