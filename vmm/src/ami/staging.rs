//! A private directory for the kernel and initrd copied out of the image.
//!
//! The loader in [`crate::boot`] takes paths, so the files are streamed
//! once from the image into a fresh directory (mode 0700) and removed with
//! it when the [`StagingDir`] is dropped. Streaming keeps memory flat: a
//! 60 MiB initrd is never held whole by the reader.

use std::fs::{DirBuilder, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

/// Bytes moved per read while copying out of the image.
const COPY_CHUNK: usize = 256 * 1024;
/// Attempts at a fresh directory name before giving up.
const NAME_ATTEMPTS: u32 = 64;

/// Why staging the boot files failed.
#[derive(Debug, thiserror::Error)]
pub enum StageError {
    /// The directory or a file in it could not be created or written.
    #[error("cannot stage boot files in {path}: {source}")]
    Io {
        /// The directory or file.
        path: PathBuf,
        /// The I/O error.
        source: io::Error,
    },
    /// Reading a file out of the image failed.
    #[error("cannot read {path} from the image: {source}")]
    Read {
        /// The file in the image.
        path: String,
        /// The error.
        source: io::Error,
    },
    /// The file held fewer bytes than its size said.
    #[error("{path} in the image ended after {got} of {want} bytes")]
    Short {
        /// The file in the image.
        path: String,
        /// Bytes read.
        got: u64,
        /// Bytes its metadata promised.
        want: u64,
    },
}

/// A directory removed, with everything in it, on drop.
#[derive(Debug)]
pub struct StagingDir {
    path: PathBuf,
}

/// Where staging directories go by default: the user's runtime directory
/// (tmpfs, private) if there is one, else the system temp directory.
pub fn default_parent() -> PathBuf {
    std::env::var_os("XDG_RUNTIME_DIR")
        .map(PathBuf::from)
        .filter(|p| p.is_dir())
        .unwrap_or_else(std::env::temp_dir)
}

impl StagingDir {
    /// Creates a new private directory under `parent`.
    pub fn new_in(parent: &Path) -> Result<Self, StageError> {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let mut last = io::Error::other("no attempt made");
        for _ in 0..NAME_ATTEMPTS {
            let n = COUNTER.fetch_add(1, Ordering::Relaxed);
            let path = parent.join(format!("stratus-ami-{}-{n}", std::process::id()));
            // `create` (not `create_all`) fails if the name is taken, so a
            // directory planted by someone else is never reused.
            match DirBuilder::new().mode(0o700).create(&path) {
                Ok(()) => return Ok(Self { path }),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => last = e,
                Err(source) => return Err(StageError::Io { path, source }),
            }
        }
        Err(StageError::Io {
            path: parent.to_owned(),
            source: last,
        })
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Creates `name` in the directory for writing; it must not exist.
    pub fn create(&self, name: &str) -> Result<(PathBuf, File), StageError> {
        let path = self.path.join(name);
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .map_err(|source| StageError::Io {
                path: path.clone(),
                source,
            })?;
        Ok((path, file))
    }
}

impl Drop for StagingDir {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.path) {
            log::warn!(
                "cannot remove staging directory {}: {e}",
                self.path.display()
            );
        }
    }
}

/// Copies exactly `want` bytes from `src` (the image file `name`) to `dst`,
/// which may be [`io::sink`] when only reading matters.
pub fn copy_exact(
    name: &str,
    src: &mut dyn Read,
    want: u64,
    dst: &mut dyn Write,
    dst_path: &Path,
) -> Result<(), StageError> {
    let mut buf = vec![0u8; COPY_CHUNK];
    let mut got: u64 = 0;
    while got < want {
        let room = usize::try_from(want - got).map_or(buf.len(), |left| left.min(buf.len()));
        let n = match src.read(&mut buf[..room]) {
            Ok(0) => {
                return Err(StageError::Short {
                    path: name.to_owned(),
                    got,
                    want,
                })
            }
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(source) => {
                return Err(StageError::Read {
                    path: name.to_owned(),
                    source,
                })
            }
        };
        dst.write_all(&buf[..n]).map_err(|source| StageError::Io {
            path: dst_path.to_owned(),
            source,
        })?;
        got += u64::try_from(n).unwrap_or(u64::MAX);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directory_is_private_and_removed_on_drop() {
        use std::os::unix::fs::PermissionsExt;
        let dir = StagingDir::new_in(&std::env::temp_dir()).unwrap();
        let path = dir.path().to_owned();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
        let (file, mut f) = dir.create("kernel").unwrap();
        f.write_all(b"x").unwrap();
        assert!(dir.create("kernel").is_err(), "names are never reused");
        drop(dir);
        assert!(!path.exists() && !file.exists());
    }

    #[test]
    fn copy_exact_refuses_short_sources() {
        let mut out = Vec::new();
        copy_exact("k", &mut &b"abc"[..], 3, &mut out, Path::new("o")).unwrap();
        assert_eq!(out, b"abc");
        let e = copy_exact("k", &mut &b"abc"[..], 4, &mut io::sink(), Path::new("o"));
        assert!(matches!(
            e,
            Err(StageError::Short {
                got: 3,
                want: 4,
                ..
            })
        ));
    }
}
