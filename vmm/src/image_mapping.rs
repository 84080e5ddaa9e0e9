//! Loading a kernel image into guest RAM without copying it, when the
//! image file cannot change.
//!
//! Loading an uncompressed `vmlinux` (about 50 MiB of segments for a
//! Debian cloud kernel) by `read` is almost all of a VMM's start-up
//! time: every 4 KiB page of guest RAM it lands in is faulted in, zeroed,
//! charged to the memory cgroup and then copied into. Mapping the file's
//! pages privately (`MAP_PRIVATE | MAP_FIXED`) at the guest-RAM address
//! instead costs one `mmap` per segment; the guest later reads the page
//! cache's pages in place (shared by every VM booting the same image)
//! and gets a private copy only of the pages it writes.
//!
//! A private mapping still shows later changes to the file in the pages
//! the guest has not written, and a truncated file turns guest accesses
//! into faults. So an image is mapped only when it cannot change: a
//! memfd sealed against writes and shrinking (what a host agent hands a
//! VMM for an image it keeps in memory), or a file with the immutable
//! attribute. Any other file is read as before.
//!
//! [`ImageReader`] plugs this into `linux-loader` unchanged: the loader
//! parses the image and asks it to fill each segment's guest range; where
//! the file offset and the guest address are congruent modulo the page
//! size (as an ELF kernel's are), the whole pages in between are mapped,
//! and the unaligned head and tail are read.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::fd::AsRawFd;

use vm_memory::bitmap::BitmapSlice;
use vm_memory::{ReadVolatile, VolatileMemoryError, VolatileSlice};

const PAGE: usize = 4096;

/// `FS_IOC_GETFLAGS` (`_IOR('f', 1, long)`) and its immutable bit.
const FS_IOC_GETFLAGS: libc::c_ulong = 0x8008_6601;
const FS_IMMUTABLE_FL: libc::c_long = 0x10;

/// Whether `file`'s contents and length are guaranteed not to change
/// while it is mapped.
pub fn cannot_change(file: &File) -> bool {
    let fd = file.as_raw_fd();
    // SAFETY: F_GET_SEALS takes no argument and only reads the fd's seals.
    let seals = unsafe { libc::fcntl(fd, libc::F_GET_SEALS) };
    let sealed = libc::F_SEAL_WRITE | libc::F_SEAL_SHRINK;
    if seals >= 0 && seals & sealed == sealed {
        return true;
    }
    let mut flags: libc::c_long = 0;
    // SAFETY: FS_IOC_GETFLAGS writes one `long` through the pointer, which
    // points at a live local of that type.
    let rc = unsafe { libc::ioctl(fd, FS_IOC_GETFLAGS, &mut flags as *mut libc::c_long) };
    rc == 0 && flags & FS_IMMUTABLE_FL != 0
}

/// A kernel or initrd file being loaded into guest RAM: reads as a file
/// does, except that whole pages are mapped rather than copied when the
/// file cannot change ([`cannot_change`]).
///
/// Only for filling guest RAM: every slice it is asked to fill must lie
/// in an anonymous mapping the VMM owns (its `GuestMemoryMmap`), which the
/// mapping of the file then replaces page by page.
#[derive(Debug)]
pub struct ImageReader {
    file: File,
    /// The file's length, when it may be mapped.
    mappable_len: Option<u64>,
    /// Bytes placed by mapping rather than by reading (for the log and
    /// the tests).
    pub mapped_bytes: u64,
}

impl ImageReader {
    pub fn new(file: File) -> Self {
        let mappable_len = cannot_change(&file)
            .then(|| file.metadata().ok().map(|m| m.len()))
            .flatten();
        Self {
            file,
            mappable_len,
            mapped_bytes: 0,
        }
    }

    /// Maps `len` bytes of the file at `offset` over guest RAM at `dst`.
    /// Both must be page-aligned and the range must lie in the file.
    fn map_pages(&mut self, dst: *mut u8, offset: u64, len: usize) -> std::io::Result<()> {
        let offset = libc::off_t::try_from(offset).map_err(|_| std::io::ErrorKind::InvalidInput)?;
        // SAFETY: `dst..dst + len` is page-aligned and lies inside guest
        // RAM (the caller got it from a `VolatileSlice` of guest memory,
        // see the type's contract), an anonymous private mapping this
        // process owns and that no other thread uses yet (no vCPU runs
        // while the guest is loaded). MAP_FIXED replaces exactly those
        // pages with a private mapping of the file, with the same
        // protection, so the range stays valid memory for its owner; the
        // file cannot change or shrink, so the pages stay backed.
        let got = unsafe {
            libc::mmap(
                dst.cast(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_FIXED,
                self.file.as_raw_fd(),
                offset,
            )
        };
        if got == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        self.mapped_bytes += len as u64;
        Ok(())
    }

    /// How many leading bytes of `len` at `dst`, file position `pos`,
    /// to read before whole pages can be mapped, and how many bytes of
    /// whole pages follow; None when nothing can be mapped.
    fn plan(&self, dst: usize, pos: u64, len: usize) -> Option<(usize, usize)> {
        let file_len = self.mappable_len?;
        let in_file = usize::try_from(file_len.checked_sub(pos)?).unwrap_or(usize::MAX);
        let len = len.min(in_file);
        let page_pos = usize::try_from(pos % PAGE as u64).ok()?;
        if dst % PAGE != page_pos {
            return None;
        }
        let head = (PAGE - dst % PAGE) % PAGE;
        let pages = len.checked_sub(head)? / PAGE * PAGE;
        (pages > 0).then_some((head, pages))
    }
}

impl Read for ImageReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.file.read(buf)
    }
}

impl Seek for ImageReader {
    fn seek(&mut self, pos: SeekFrom) -> std::io::Result<u64> {
        self.file.seek(pos)
    }
}

impl ReadVolatile for ImageReader {
    fn read_volatile<B: BitmapSlice>(
        &mut self,
        buf: &mut VolatileSlice<B>,
    ) -> Result<usize, VolatileMemoryError> {
        let pos = self
            .file
            .stream_position()
            .map_err(VolatileMemoryError::IOError)?;
        let dst = buf.ptr_guard_mut().as_ptr();
        let Some((head, pages)) = self.plan(dst as usize, pos, buf.len()) else {
            return self.file.read_volatile(buf);
        };
        // Guest memory fills a slice in one call (a short count is an
        // error there), so head, pages and tail are all done here.
        if head > 0 {
            let mut head_slice = buf.subslice(0, head)?;
            self.file.read_exact_volatile(&mut head_slice)?;
        }
        // SAFETY of the pointer arithmetic: `head + pages <= buf.len()`.
        let pages_at = dst.wrapping_add(head);
        self.map_pages(pages_at, pos + head as u64, pages)
            .map_err(VolatileMemoryError::IOError)?;
        buf.bitmap().mark_dirty(head, pages);
        let done = head + pages;
        let skip = i64::try_from(pages)
            .map_err(|_| VolatileMemoryError::IOError(std::io::ErrorKind::InvalidInput.into()))?;
        self.file
            .seek(SeekFrom::Current(skip))
            .map_err(VolatileMemoryError::IOError)?;
        if done == buf.len() {
            return Ok(done);
        }
        let mut tail = buf.offset(done)?;
        Ok(done + self.file.read_volatile(&mut tail)?)
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

    use super::*;

    /// A memfd of `len` patterned bytes, sealed (or not).
    fn image(len: usize, seal: bool) -> (File, Vec<u8>) {
        let name = c"stratus-image-test";
        // SAFETY: memfd_create with a valid C string and flags.
        let fd = unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_ALLOW_SEALING) };
        assert!(fd >= 0);
        // SAFETY: `fd` was just created and is owned by nothing else.
        let mut file = unsafe { <File as std::os::fd::FromRawFd>::from_raw_fd(fd) };
        let bytes: Vec<u8> = (0..len)
            .map(|i| u8::try_from((i * 7 + i / 4096) % 251).unwrap())
            .collect();
        file.write_all(&bytes).unwrap();
        if seal {
            let seals = libc::F_SEAL_WRITE | libc::F_SEAL_SHRINK | libc::F_SEAL_GROW;
            // SAFETY: F_ADD_SEALS on our own memfd.
            assert_eq!(unsafe { libc::fcntl(fd, libc::F_ADD_SEALS, seals) }, 0);
        }
        (file, bytes)
    }

    fn load(seal: bool, file_at: u64, guest_at: u64, len: usize) -> (u64, Vec<u8>, Vec<u8>) {
        let (file, bytes) = image(64 * 1024, seal);
        let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap();
        let mut reader = ImageReader::new(file);
        reader.seek(SeekFrom::Start(file_at)).unwrap();
        mem.read_exact_volatile_from(GuestAddress(guest_at), &mut reader, len)
            .unwrap();
        let mut got = vec![0u8; len];
        mem.read_slice(&mut got, GuestAddress(guest_at)).unwrap();
        let start = usize::try_from(file_at).unwrap();
        // The guest's writes stay its own: the file is not changed.
        mem.write_slice(&[0xaa; 64], GuestAddress(guest_at))
            .unwrap();
        let mut after = vec![0u8; 64];
        let mut f = reader.file;
        f.seek(SeekFrom::Start(file_at)).unwrap();
        f.read_exact(&mut after).unwrap();
        assert_eq!(after, bytes[start..start + 64]);
        (reader.mapped_bytes, got, bytes[start..start + len].to_vec())
    }

    #[test]
    fn a_sealed_image_is_mapped_where_pages_line_up() {
        // Congruent offsets, unaligned ends: head and tail read, the
        // pages between mapped; the guest sees exactly the file's bytes.
        let (mapped, got, want) = load(true, 100, 0x1_0000 + 100, 40_000);
        assert_eq!(got, want);
        assert_eq!(mapped, 8 * 4096);
        // Bytes around the loaded range are untouched guest memory.
        let (mapped, got, want) = load(true, 8192, 0x2_0000, 16384);
        assert_eq!((mapped, got), (16384, want));
    }

    #[test]
    fn other_images_and_misaligned_ranges_are_read() {
        let (mapped, got, want) = load(false, 4096, 0x1_0000, 16384);
        assert_eq!((mapped, got), (0, want));
        // Sealed but not congruent: read.
        let (mapped, got, want) = load(true, 100, 0x1_0000, 16384);
        assert_eq!((mapped, got), (0, want));
    }

    #[test]
    fn only_sealed_or_immutable_files_cannot_change() {
        assert!(cannot_change(&image(10, true).0));
        assert!(!cannot_change(&image(10, false).0));
        assert!(!cannot_change(&File::open("/proc/self/stat").unwrap()));
    }
}
