//! qcow2 images (version 3, and version 2 for reading and writing), with
//! raw or qcow2 backing files.
//!
//! Why not a crate: the maintained Rust qcow2 implementation (`qcow2-rs`)
//! is async and built around its own executor-driven I/O, while our block
//! device is a synchronous state machine run from one event-loop thread;
//! wrapping it would add a runtime and per-request futures for no gain.
//! crosvm's and Cloud Hypervisor's qcow code is not published as a
//! standalone crate. The subset needed here (lookup, allocation with
//! refcounts, backing files, creating overlays, reading compressed
//! clusters) is small enough to own and to harden against hostile images.
//!
//! What is supported: cluster sizes 512 B..2 MiB, refcount widths 1..64
//! bits, zero clusters, compressed clusters (zlib, read and overwrite),
//! backing chains up to [`MAX_BACKING_DEPTH`] deep. Refused with a typed
//! [`Qcow2Error`]: encryption, external data files, extended L2 entries,
//! zstd compression, unknown incompatible features; writable opens of
//! images with internal snapshots, the dirty bit or the corrupt bit.
//!
//! Limits against hostile images: L1 table ≤ 32 MiB, refcount table
//! ≤ 8 MiB, both inside the file; table caches have fixed sizes; every
//! table entry is checked for reserved bits and alignment before use.

mod cache;
mod compressed;
mod create;
mod direct;
mod entry;
mod error;
mod header;
mod refcount;
#[cfg(test)]
mod tests;
mod write;

use std::fs::{File, OpenOptions};
use std::io::Read;
use std::os::unix::io::RawFd;
use std::path::{Path, PathBuf};

use self::cache::TableCache;
use self::entry::Mapping;
use self::header::{Header, OFF_AUTOCLEAR_FEATURES};
use self::refcount::Refcounts;
use super::{
    check_range, Access, DiskBackend, DiskError, Extents, ImageFormat, OpenError, RawDisk, Route,
    Storage,
};

pub use self::create::create;
pub use self::error::Qcow2Error;

/// Longest backing chain followed; also what stops a chain that loops.
pub const MAX_BACKING_DEPTH: usize = 16;
/// Largest L1 table accepted (QEMU's bound too).
const MAX_L1_BYTES: u64 = 32 << 20;
/// Bytes of L2 tables cached.
const L2_CACHE_BYTES: usize = 4 << 20;

/// Checks the first bytes of `path` for the qcow2 magic.
pub fn probe(path: &Path) -> std::io::Result<ImageFormat> {
    let mut magic = [0u8; 4];
    let mut f = File::open(path)?;
    let n = f.read(&mut magic)?;
    Ok(if n == 4 && u32::from_be_bytes(magic) == header::MAGIC {
        ImageFormat::Qcow2
    } else {
        ImageFormat::Raw
    })
}

/// A qcow2 image as a [`DiskBackend`].
#[derive(Debug)]
pub struct Qcow2Disk {
    file: Box<dyn Storage>,
    header: Header,
    read_only: bool,
    l1: Vec<u64>,
    l2_cache: TableCache<Vec<u64>>,
    /// Present only for writable images.
    refcounts: Option<Refcounts>,
    backing: Option<Box<dyn DiskBackend>>,
    /// One cluster, for copy-on-write merges.
    scratch: Vec<u8>,
    /// Last decompressed cluster: (host offset, input buffer, output).
    inflated: Option<u64>,
    inflate_in: Vec<u8>,
    inflate_out: Vec<u8>,
}

impl Qcow2Disk {
    /// Opens the image at `path`, following its backing chain (backing
    /// files are always opened read-only and never written).
    pub fn open(path: &Path, read_only: bool) -> Result<Self, Qcow2Error> {
        Self::open_at_depth(path, read_only, 0)
    }

    fn open_at_depth(path: &Path, read_only: bool, depth: usize) -> Result<Self, Qcow2Error> {
        if depth > MAX_BACKING_DEPTH {
            return Err(Qcow2Error::BackingChainTooDeep(MAX_BACKING_DEPTH));
        }
        let file = OpenOptions::new().read(true).write(!read_only).open(path)?;
        let mut disk = Self::parse(Box::new(file), read_only)?;
        if let Some(name) = disk.header.backing_file.clone() {
            let bpath = resolve_backing(path, &name);
            let wrap = |source: OpenError| Qcow2Error::Backing {
                path: bpath.display().to_string(),
                source: Box::new(source),
            };
            let io = |source| {
                wrap(OpenError::Io {
                    path: bpath.display().to_string(),
                    source,
                })
            };
            let format = match disk.header.backing_format {
                Some(f) => f,
                None => probe(&bpath).map_err(io)?,
            };
            let backing: Box<dyn DiskBackend> = match format {
                ImageFormat::Raw => Box::new(RawDisk::open(&bpath, true).map_err(io)?),
                ImageFormat::Qcow2 => match Self::open_at_depth(&bpath, true, depth + 1) {
                    Ok(d) => Box::new(d),
                    Err(e @ Qcow2Error::BackingChainTooDeep(_)) => return Err(e),
                    Err(e) => return Err(wrap(OpenError::Qcow2(e))),
                },
            };
            disk.backing = Some(backing);
        }
        Ok(disk)
    }

    /// Opens an image held in `storage`. Images with a backing file are
    /// refused: there is no path to resolve the backing file from.
    pub fn from_storage(storage: Box<dyn Storage>, read_only: bool) -> Result<Self, Qcow2Error> {
        let disk = Self::parse(storage, read_only)?;
        if disk.header.backing_file.is_some() {
            return Err(Qcow2Error::BackingWithoutPath);
        }
        Ok(disk)
    }

    /// Creates an overlay at `path` (which must not exist) whose unallocated
    /// clusters read from `backing`, with the same virtual size. `backing`
    /// is stored as given: a relative path is resolved from the overlay's
    /// directory, so pass an absolute path unless the two move together.
    pub fn create_overlay(
        path: &Path,
        backing: &Path,
        backing_format: ImageFormat,
    ) -> Result<(), Qcow2Error> {
        let name = backing
            .to_str()
            .ok_or(Qcow2Error::InvalidHeader("backing file name is not UTF-8"))?;
        let resolved = resolve_backing(path, name);
        let size = match backing_format {
            ImageFormat::Raw => RawDisk::open(&resolved, true)?.size(),
            ImageFormat::Qcow2 => Self::open(&resolved, true)?.size(),
        };
        create(path, size, Some((name, backing_format)))
    }

    /// The backing file name from the header, if any.
    pub fn backing_file(&self) -> Option<&str> {
        self.header.backing_file.as_deref()
    }

    fn parse(file: Box<dyn Storage>, read_only: bool) -> Result<Self, Qcow2Error> {
        let file_len = file.len()?;
        let mut start = [0u8; 24];
        file.read_exact_at(&mut start, 0)
            .map_err(|_| Qcow2Error::InvalidHeader("file shorter than a header"))?;
        let cluster_bits = Header::peek_cluster_bits(&start)?;
        let cs = 1u64 << cluster_bits;
        let mut cluster0 = vec![0u8; cs.min(file_len) as usize];
        file.read_exact_at(&mut cluster0, 0)?;
        let header = Header::parse(&cluster0)?;
        if !read_only {
            check_writable(&header)?;
        }
        let l1 = load_l1(file.as_ref(), &header, file_len)?;
        let refcounts = if read_only {
            None
        } else {
            Some(Refcounts::load(file.as_ref(), &header, file_len)?)
        };
        let mut disk = Self {
            file,
            read_only,
            l1,
            l2_cache: TableCache::new(L2_CACHE_BYTES >> cluster_bits),
            refcounts,
            backing: None,
            scratch: Vec::new(),
            inflated: None,
            inflate_in: Vec::new(),
            inflate_out: Vec::new(),
            header,
        };
        // Autoclear bits describe extensions we do not maintain; a writer
        // that does not know them must clear them (qcow2 spec).
        if !read_only && disk.header.autoclear_features != 0 {
            disk.file
                .write_all_at(&0u64.to_be_bytes(), OFF_AUTOCLEAR_FEATURES)?;
            disk.header.autoclear_features = 0;
        }
        Ok(disk)
    }

    fn cluster_bits(&self) -> u32 {
        self.header.cluster_bits
    }

    fn cluster_size(&self) -> u64 {
        1 << self.header.cluster_bits
    }

    /// (L1 index, L2 index) of a guest offset.
    fn indices(&self, pos: u64) -> (usize, usize) {
        let l2_bits = self.cluster_bits() - 3;
        let l1 = pos >> (self.cluster_bits() + l2_bits);
        let l2 = (pos >> self.cluster_bits()) & ((1 << l2_bits) - 1);
        (l1 as usize, l2 as usize)
    }

    fn load_l2(&mut self, offset: u64) -> Result<&mut Vec<u64>, DiskError> {
        let cs = self.cluster_size() as usize;
        let file = &self.file;
        self.l2_cache.get_or_load(offset, || {
            let mut raw = vec![0u8; cs];
            file.read_exact_at(&mut raw, offset)
                .map_err(|_| DiskError::Corrupt {
                    what: "L2 table outside the file",
                    offset,
                })?;
            Ok(raw
                .chunks_exact(8)
                .map(|c| u64::from_be_bytes(c.try_into().expect("8 bytes")))
                .collect())
        })
    }

    /// Where the guest cluster containing `pos` lives.
    fn lookup(&mut self, pos: u64) -> Result<Mapping, DiskError> {
        let (l1_index, l2_index) = self.indices(pos);
        let l1_entry = *self.l1.get(l1_index).ok_or(DiskError::Corrupt {
            what: "L1 index",
            offset: pos,
        })?;
        let l2 = entry::l2_offset(l1_entry, self.cluster_bits(), l1_index)?;
        if l2 == 0 {
            return Ok(Mapping::Unallocated);
        }
        let bits = self.cluster_bits();
        let table = self.load_l2(l2)?;
        entry::decode_l2(table[l2_index], bits)
    }

    /// Fills `buf` with guest data at `pos` from the backing file (zeros
    /// past its end, or everywhere without one).
    fn read_backing(&mut self, buf: &mut [u8], pos: u64) -> Result<(), DiskError> {
        let Some(backing) = self.backing.as_mut() else {
            buf.fill(0);
            return Ok(());
        };
        let avail = backing.size().saturating_sub(pos).min(buf.len() as u64) as usize;
        if avail > 0 {
            backing.read_at(&mut buf[..avail], pos)?;
        }
        buf[avail..].fill(0);
        Ok(())
    }

    /// Decompresses the cluster at `host` into `self.inflate_out`.
    fn inflate(&mut self, host: u64, sectors_len: u64) -> Result<(), DiskError> {
        if self.inflated == Some(host) {
            return Ok(());
        }
        self.inflated = None;
        let start = host & !511;
        self.inflate_in.resize(sectors_len as usize, 0);
        self.file.read_zero_filled(&mut self.inflate_in, start)?;
        self.inflate_out.resize(self.cluster_size() as usize, 0);
        let skip = (host - start) as usize;
        compressed::inflate_cluster(&self.inflate_in[skip..], &mut self.inflate_out, host)?;
        self.inflated = Some(host);
        Ok(())
    }

    /// Reads the guest data of one cluster piece.
    fn read_piece(&mut self, buf: &mut [u8], pos: u64) -> Result<(), DiskError> {
        let in_cluster = pos & (self.cluster_size() - 1);
        match self.lookup(pos)? {
            Mapping::Unallocated => self.read_backing(buf, pos)?,
            Mapping::Zero { .. } => buf.fill(0),
            // Past the end of the file reads as zeros, as in QEMU.
            Mapping::Data { host, .. } => self.file.read_zero_filled(buf, host + in_cluster)?,
            Mapping::Compressed { host, sectors_len } => {
                self.inflate(host, sectors_len)?;
                let at = in_cluster as usize;
                buf.copy_from_slice(&self.inflate_out[at..at + buf.len()]);
            }
        }
        Ok(())
    }
}

/// Splits `[offset, offset + len)` at boundaries of `cs`-byte clusters into
/// (guest offset, offset in the request, length).
fn pieces(cs: u64, offset: u64, len: usize) -> impl Iterator<Item = (u64, usize, usize)> {
    let mut done = 0usize;
    std::iter::from_fn(move || {
        if done >= len {
            return None;
        }
        let pos = offset + done as u64;
        let n = ((cs - (pos & (cs - 1))) as usize).min(len - done);
        let item = (pos, done, n);
        done += n;
        Some(item)
    })
}

/// Rejects writable opens the writer cannot keep consistent.
fn check_writable(h: &Header) -> Result<(), Qcow2Error> {
    if h.incompatible_features & header::incompat::DIRTY != 0 {
        return Err(Qcow2Error::Dirty);
    }
    if h.incompatible_features & header::incompat::CORRUPT != 0 {
        return Err(Qcow2Error::MarkedCorrupt);
    }
    if h.nb_snapshots != 0 {
        return Err(Qcow2Error::Snapshots);
    }
    Ok(())
}

/// Reads and bounds-checks the L1 table.
fn load_l1(file: &dyn Storage, h: &Header, file_len: u64) -> Result<Vec<u64>, Qcow2Error> {
    let cluster_bits = h.cluster_bits;
    // Each L1 entry maps cluster_size * (cluster_size / 8) guest bytes.
    let per_l1 = 1u128 << (2 * cluster_bits - 3);
    let needed = u128::from(h.size).div_ceil(per_l1);
    if needed > u128::from(h.l1_size) {
        return Err(Qcow2Error::InvalidHeader(
            "L1 table too small for the disk size",
        ));
    }
    let bytes = u64::from(h.l1_size) * 8;
    if bytes > MAX_L1_BYTES {
        return Err(Qcow2Error::TooLarge {
            what: "L1 table",
            value: bytes,
        });
    }
    let offset = h.l1_table_offset;
    if bytes == 0 {
        return Ok(Vec::new());
    }
    let in_file = offset.checked_add(bytes).is_some_and(|end| end <= file_len);
    if offset == 0 || offset & ((1 << cluster_bits) - 1) != 0 || !in_file {
        return Err(Qcow2Error::BadOffset {
            what: "L1 table",
            offset,
        });
    }
    let mut raw = vec![0u8; bytes as usize];
    file.read_exact_at(&mut raw, offset)?;
    Ok(raw
        .chunks_exact(8)
        .map(|c| u64::from_be_bytes(c.try_into().expect("8 bytes")))
        .collect())
}

/// Resolves a backing file name: relative names are relative to the
/// directory of the image that names them.
fn resolve_backing(image: &Path, name: &str) -> PathBuf {
    let name = Path::new(name);
    if name.is_absolute() {
        return name.to_path_buf();
    }
    image.parent().unwrap_or(Path::new(".")).join(name)
}

impl DiskBackend for Qcow2Disk {
    fn size(&self) -> u64 {
        self.header.size
    }

    fn is_read_only(&self) -> bool {
        self.read_only
    }

    fn read_at(&mut self, buf: &mut [u8], offset: u64) -> Result<(), DiskError> {
        check_range(offset, buf.len() as u64, self.size())?;
        for (pos, at, n) in pieces(self.cluster_size(), offset, buf.len()) {
            self.read_piece(&mut buf[at..at + n], pos)?;
        }
        Ok(())
    }

    fn write_at(&mut self, buf: &[u8], offset: u64) -> Result<(), DiskError> {
        check_range(offset, buf.len() as u64, self.size())?;
        if self.read_only {
            return Err(DiskError::ReadOnly);
        }
        for (pos, at, n) in pieces(self.cluster_size(), offset, buf.len()) {
            self.write_piece(&buf[at..at + n], pos)?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), DiskError> {
        if !self.read_only {
            self.file.sync_data()?;
        }
        Ok(())
    }

    fn route(
        &mut self,
        offset: u64,
        len: u64,
        access: Access,
        extents: &mut Extents,
    ) -> Result<Route, DiskError> {
        self.direct_route(offset, len, access, extents)
    }

    fn flush_fd(&self) -> Option<RawFd> {
        self.direct_flush_fd()
    }

    fn discard(&mut self, offset: u64, len: u64) -> Result<(), DiskError> {
        self.zero_range(offset, len, true)
    }

    fn write_zeroes(&mut self, offset: u64, len: u64) -> Result<(), DiskError> {
        self.zero_range(offset, len, false)
    }
}
