//! Disk image backends for the block device.
//!
//! A [`DiskBackend`] is a synchronous, byte-addressed view of a virtual disk.
//! The block device calls it from the event-loop thread that owns it, so
//! methods take `&mut self` (qcow2 keeps table caches) and no locking is
//! needed. Backends reach their bytes through [`Storage`], which is a host
//! file in production and memory in tests and fuzzing.
//!
//! Besides that synchronous interface, a backend can hand out *direct
//! routes* ([`DiskBackend::route`], see `direct.rs`): the host extents of
//! a range, so the block device can move data between guest memory and
//! the file itself, asynchronously, while the backend keeps every decision
//! that touches metadata.
//!
//! Casts: disk code converts u64 file offsets and lengths to `usize`
//! buffer indices all the time. Stratus only builds for 64-bit hosts
//! (asserted below), where those casts are lossless, so the truncation
//! lint is allowed here; the few narrowing casts to smaller types are on
//! values masked or bounded right before them.
#![allow(clippy::cast_possible_truncation)]

pub mod direct;
pub mod probed;
pub mod qcow2;
pub mod raw;
pub mod storage;

use std::os::unix::io::RawFd;
use std::path::Path;

pub use direct::{Access, Extent, Extents, Route, MAX_EXTENTS};
pub use qcow2::{Qcow2Disk, Qcow2Error};
pub use raw::RawDisk;
pub use storage::{MemStorage, Storage};

const _: () = assert!(usize::BITS == 64, "disk code assumes 64-bit usize");

/// Errors from disk I/O.
#[derive(Debug, thiserror::Error)]
pub enum DiskError {
    /// The host file failed.
    #[error("disk I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// The access reaches past the end of the virtual disk.
    #[error("access at {offset:#x} of {len} bytes is past the disk end {size:#x}")]
    OutOfRange {
        /// First byte of the access.
        offset: u64,
        /// Length of the access.
        len: u64,
        /// Virtual size of the disk.
        size: u64,
    },
    /// A write reached a disk opened read-only.
    #[error("disk is read-only")]
    ReadOnly,
    /// The image metadata is inconsistent; the access was refused rather
    /// than guessing.
    #[error("corrupt image: {what} at {offset:#x}")]
    Corrupt {
        /// Which structure is wrong.
        what: &'static str,
        /// Host file offset or table entry involved.
        offset: u64,
    },
    /// The image needs a feature this backend does not implement.
    #[error("unsupported image feature: {0}")]
    Unsupported(&'static str),
    /// Growing the image would pass a built-in limit.
    #[error("image would exceed its size limits")]
    NoSpace,
}

/// A virtual disk the block device can read and write.
pub trait DiskBackend: Send + std::fmt::Debug {
    /// Virtual size in bytes.
    fn size(&self) -> u64;

    /// Whether writes are refused.
    fn is_read_only(&self) -> bool;

    /// Fills `buf` from virtual offset `offset`.
    fn read_at(&mut self, buf: &mut [u8], offset: u64) -> Result<(), DiskError>;

    /// Writes `buf` at virtual offset `offset`.
    fn write_at(&mut self, buf: &[u8], offset: u64) -> Result<(), DiskError>;

    /// Makes every completed write durable (data on stable storage).
    fn flush(&mut self) -> Result<(), DiskError>;

    /// Where `[offset, offset + len)` lives, for I/O that bypasses this
    /// backend: fills `extents` and answers [`Route::Direct`], or answers
    /// [`Route::Sync`] when only `read_at`/`write_at` can do it, saying
    /// whether that write may free clusters. A direct route stays valid
    /// until something frees its clusters: `discard`, `write_zeroes`, or
    /// a write routed `Sync { frees: true }`; the caller must not start
    /// those while direct I/O is in flight. The default sends everything
    /// down the sync path and assumes the worst.
    fn route(
        &mut self,
        offset: u64,
        len: u64,
        access: Access,
        extents: &mut Extents,
    ) -> Result<Route, DiskError> {
        let _ = (offset, len, extents);
        Ok(Route::Sync {
            frees: access == Access::Write,
        })
    }

    /// A file whose `fdatasync` is all that [`Self::flush`] does, so the
    /// caller may run it off its thread; `None` means call `flush`.
    fn flush_fd(&self) -> Option<RawFd> {
        None
    }

    /// Hints that a range is no longer used. Afterwards it reads as zeros
    /// or as its old contents; backends that cannot free space do nothing.
    fn discard(&mut self, offset: u64, len: u64) -> Result<(), DiskError> {
        check_range(offset, len, self.size())?;
        if self.is_read_only() {
            return Err(DiskError::ReadOnly);
        }
        Ok(())
    }

    /// Makes a range read as zeros.
    fn write_zeroes(&mut self, offset: u64, len: u64) -> Result<(), DiskError> {
        check_range(offset, len, self.size())?;
        const CHUNK: u64 = 64 * 1024;
        let zeros = [0u8; CHUNK as usize];
        let mut done = 0;
        while done < len {
            let n = (len - done).min(CHUNK);
            self.write_at(&zeros[..n as usize], offset + done)?;
            done += n;
        }
        Ok(())
    }
}

/// Checks that `[offset, offset + len)` lies inside a disk of `size` bytes.
pub fn check_range(offset: u64, len: u64, size: u64) -> Result<(), DiskError> {
    match offset.checked_add(len) {
        Some(end) if end <= size => Ok(()),
        _ => Err(DiskError::OutOfRange { offset, len, size }),
    }
}

/// Errors opening a disk image by path.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The file could not be opened or read.
    #[error("cannot open {path}: {source}")]
    Io {
        /// The image path.
        path: String,
        /// What the host said.
        source: std::io::Error,
    },
    /// The file looks like qcow2 but cannot be used.
    #[error(transparent)]
    Qcow2(#[from] Qcow2Error),
}

/// Image formats [`open_disk`] can open.
///
/// The one type for a format everywhere: configuration files, AMI
/// manifests, command-line flags and qcow2 backing-format extensions all
/// spell it `raw` or `qcow2` (QEMU's names), through serde, [`FromStr`]
/// and [`Display`](std::fmt::Display) alike.
///
/// [`FromStr`]: std::str::FromStr
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ImageFormat {
    /// A plain disk image.
    Raw,
    /// QEMU copy-on-write version 2 or 3.
    Qcow2,
}

impl ImageFormat {
    /// The format's name, as QEMU and our configuration files spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            ImageFormat::Raw => "raw",
            ImageFormat::Qcow2 => "qcow2",
        }
    }
}

/// A format name that is neither `raw` nor `qcow2`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown image format '{0}' (expected raw or qcow2)")]
pub struct UnknownImageFormat(pub String);

impl std::str::FromStr for ImageFormat {
    type Err = UnknownImageFormat;

    /// Exact, lower-case names only, as serde accepts them.
    fn from_str(s: &str) -> Result<Self, UnknownImageFormat> {
        match s {
            "raw" => Ok(ImageFormat::Raw),
            "qcow2" => Ok(ImageFormat::Qcow2),
            _ => Err(UnknownImageFormat(s.to_owned())),
        }
    }
}

impl std::fmt::Display for ImageFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Opens a disk image of the given format, or probes it when `format` is
/// `None` (a file starting with the qcow2 magic is qcow2, anything else raw).
///
/// Probing is only safe for images the operator made: a guest that can
/// write the first sector of a raw disk could make it look like qcow2. Pass
/// the format explicitly for images a guest has written to.
pub fn open_disk(
    path: &Path,
    format: Option<ImageFormat>,
    read_only: bool,
) -> Result<Box<dyn DiskBackend>, OpenError> {
    let io_err = |source| OpenError::Io {
        path: path.display().to_string(),
        source,
    };
    let (format, probed) = match format {
        Some(f) => (f, false),
        None => (qcow2::probe(path).map_err(io_err)?, true),
    };
    Ok(match format {
        ImageFormat::Raw if probed => Box::new(probed::ProbedRaw::new(Box::new(
            RawDisk::open(path, read_only).map_err(io_err)?,
        ))),
        ImageFormat::Raw => Box::new(RawDisk::open(path, read_only).map_err(io_err)?),
        ImageFormat::Qcow2 => Box::new(Qcow2Disk::open(path, read_only)?),
    })
}

/// A boxed backend is a backend, so code generic over `DiskBackend` also
/// takes what [`open_disk`] returns.
impl DiskBackend for Box<dyn DiskBackend> {
    fn size(&self) -> u64 {
        (**self).size()
    }
    fn is_read_only(&self) -> bool {
        (**self).is_read_only()
    }
    fn read_at(&mut self, buf: &mut [u8], offset: u64) -> Result<(), DiskError> {
        (**self).read_at(buf, offset)
    }
    fn write_at(&mut self, buf: &[u8], offset: u64) -> Result<(), DiskError> {
        (**self).write_at(buf, offset)
    }
    fn flush(&mut self) -> Result<(), DiskError> {
        (**self).flush()
    }
    fn route(
        &mut self,
        offset: u64,
        len: u64,
        access: Access,
        extents: &mut Extents,
    ) -> Result<Route, DiskError> {
        (**self).route(offset, len, access, extents)
    }
    fn flush_fd(&self) -> Option<RawFd> {
        (**self).flush_fd()
    }
    fn discard(&mut self, offset: u64, len: u64) -> Result<(), DiskError> {
        (**self).discard(offset, len)
    }
    fn write_zeroes(&mut self, offset: u64, len: u64) -> Result<(), DiskError> {
        (**self).write_zeroes(offset, len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_format_names_agree_everywhere() {
        for (format, name) in [(ImageFormat::Raw, "raw"), (ImageFormat::Qcow2, "qcow2")] {
            assert_eq!(format.to_string(), name);
            assert_eq!(name.parse::<ImageFormat>(), Ok(format));
            let json = format!("\"{name}\"");
            assert_eq!(serde_json::to_string(&format).unwrap(), json);
            assert_eq!(serde_json::from_str::<ImageFormat>(&json).unwrap(), format);
        }
        for bad in ["", "RAW", "Qcow2", "vmdk", "raw "] {
            assert_eq!(
                bad.parse::<ImageFormat>(),
                Err(UnknownImageFormat(bad.to_owned()))
            );
            assert!(serde_json::from_str::<ImageFormat>(&format!("\"{bad}\"")).is_err());
        }
    }
}
