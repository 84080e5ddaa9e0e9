//! A Linux tap device opened for a virtio-net backend:
//! `IFF_TAP | IFF_NO_PI | IFF_VNET_HDR`, non-blocking, with the 12-byte
//! `virtio_net_hdr_v1` in front of every frame in both directions, so
//! checksum and segmentation offloads pass between guest and host kernel
//! untouched.
//!
//! The tap must exist already (the agent, or a person, creates it and
//! puts it on a bridge): `TUNSETIFF` on a missing name would silently
//! create a fresh, unconnected tap, which is never what the user meant.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::io::{AsRawFd, RawFd};
use std::path::Path;

/// Longest interface name Linux accepts (IFNAMSIZ minus the NUL).
pub const MAX_TAP_NAME_LEN: usize = 15;

/// Length of the virtio-net header the tap reads and writes
/// (`virtio_net_hdr_v1`, also the header virtio 1.x drivers use).
pub const VNET_HDR_LEN: usize = 12;

/// Why a tap could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum TapError {
    /// The name is empty, too long or has characters Linux refuses.
    #[error("invalid tap name '{0}' (1 to 15 characters, no '/', ':' or whitespace)")]
    BadName(String),
    /// No interface of that name exists.
    #[error("tap {0} does not exist (create it first, e.g. `ip tuntap add {0} mode tap`)")]
    Missing(String),
    /// The interface exists but is not a tap.
    #[error("{0} is not a tap device")]
    NotTap(String),
    /// Another process holds the tap.
    #[error("tap {0} is busy (another process has it open)")]
    Busy(String),
    /// Any other failure, with the step that failed.
    #[error("tap {name}: {what}: {source}")]
    Io {
        /// The tap.
        name: String,
        /// The failing step.
        what: &'static str,
        /// The error.
        source: io::Error,
    },
}

/// The TUNSETIFF flags: a layer-2 tap, no packet-info prefix, a
/// virtio-net header on every frame (they fit the 16-bit `ifr_flags`).
const TAP_FLAGS: libc::c_short = 0x0002 | 0x1000 | 0x4000;
const _: () =
    assert!(TAP_FLAGS as libc::c_int == libc::IFF_TAP | libc::IFF_NO_PI | libc::IFF_VNET_HDR);

/// An open tap.
#[derive(Debug)]
pub struct Tap {
    file: File,
    name: String,
}

/// `struct ifreq` as TUNSETIFF reads it: the name and a flags word.
#[repr(C)]
struct IfReq {
    name: [u8; 16],
    flags: libc::c_short,
    _pad: [u8; 22],
}

impl Tap {
    /// Opens the existing tap `name`.
    pub fn open(name: &str) -> Result<Self, TapError> {
        let valid = !name.is_empty()
            && name.len() <= MAX_TAP_NAME_LEN
            && name
                .bytes()
                .all(|b| b.is_ascii_graphic() && b != b'/' && b != b':');
        if !valid {
            return Err(TapError::BadName(name.to_string()));
        }
        let sys = Path::new("/sys/class/net").join(name);
        if !sys.exists() {
            return Err(TapError::Missing(name.to_string()));
        }
        if !sys.join("tun_flags").exists() {
            return Err(TapError::NotTap(name.to_string()));
        }
        let io_err = |what| {
            let name = name.to_string();
            move |source| TapError::Io { name, what, source }
        };
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open("/dev/net/tun")
            .map_err(io_err("open /dev/net/tun"))?;

        let mut req = IfReq {
            name: [0; 16],
            flags: TAP_FLAGS,
            _pad: [0; 22],
        };
        req.name[..name.len()].copy_from_slice(name.as_bytes());
        // SAFETY: TUNSETIFF reads and writes a `struct ifreq`, which `req`
        // matches in size and layout; the fd is ours and open.
        let rc = unsafe { libc::ioctl(file.as_raw_fd(), libc::TUNSETIFF, &mut req) };
        if rc < 0 {
            let e = io::Error::last_os_error();
            return Err(match e.raw_os_error() {
                Some(libc::EBUSY) => TapError::Busy(name.to_string()),
                // A tun (layer 3) device of that name refuses IFF_TAP.
                Some(libc::EINVAL) => TapError::NotTap(name.to_string()),
                _ => io_err("TUNSETIFF")(e),
            });
        }
        let hdr_len: libc::c_int = 12;
        const _: () = assert!(VNET_HDR_LEN == 12);
        // SAFETY: TUNSETVNETHDRSZ reads one int through the pointer, which
        // points at a live local.
        let rc = unsafe { libc::ioctl(file.as_raw_fd(), libc::TUNSETVNETHDRSZ, &hdr_len) };
        if rc < 0 {
            return Err(io_err("TUNSETVNETHDRSZ")(io::Error::last_os_error()));
        }
        let tap = Self {
            file,
            name: name.to_string(),
        };
        // No offloads towards the guest until its driver asks for them.
        tap.set_offload(0).map_err(io_err("TUNSETOFFLOAD"))?;
        Ok(tap)
    }

    /// The interface name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Which offloads (`TUN_F_*`) frames the tap hands us may use: the
    /// ones the guest's driver accepted.
    pub fn set_offload(&self, flags: libc::c_uint) -> io::Result<()> {
        // SAFETY: TUNSETOFFLOAD takes its argument by value; the fd is ours.
        let rc = unsafe {
            libc::ioctl(
                self.file.as_raw_fd(),
                libc::TUNSETOFFLOAD,
                libc::c_ulong::from(flags),
            )
        };
        if rc < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        }
    }

    /// Reads one frame (header included) into `buf`; `WouldBlock` when
    /// none is waiting.
    pub fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            // SAFETY: `buf` is valid for writes of its length.
            let n =
                unsafe { libc::read(self.file.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
            if n >= 0 {
                return Ok(n.unsigned_abs());
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
    }

    /// Writes one frame (header included), whole.
    pub fn write(&self, frame: &[u8]) -> io::Result<()> {
        loop {
            // SAFETY: `frame` is valid for reads of its length.
            let n =
                unsafe { libc::write(self.file.as_raw_fd(), frame.as_ptr().cast(), frame.len()) };
            if n >= 0 {
                // A tap takes a frame whole or not at all.
                return Ok(());
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
    }
}

impl AsRawFd for Tap {
    fn as_raw_fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::process::Command;
    use std::sync::atomic::{AtomicU32, Ordering};

    /// A tap created for a test and deleted when dropped, or `None` (with
    /// a note) where this process may not create taps.
    pub(crate) struct TestTap {
        pub(crate) name: String,
    }

    impl TestTap {
        pub(crate) fn create() -> Option<Self> {
            static NEXT: AtomicU32 = AtomicU32::new(0);
            let name = format!(
                "sttap{}x{}",
                std::process::id() % 100_000,
                NEXT.fetch_add(1, Ordering::Relaxed)
            );
            let ok = Command::new("ip")
                .args(["tuntap", "add", "dev", &name, "mode", "tap", "vnet_hdr"])
                .status()
                .is_ok_and(|s| s.success());
            if !ok {
                eprintln!("note: cannot create tap devices here (needs root and ip(8)); skipped");
                return None;
            }
            Some(Self { name })
        }
    }

    impl Drop for TestTap {
        fn drop(&mut self) {
            let _ = Command::new("ip")
                .args(["link", "del", "dev", &self.name])
                .status();
        }
    }

    #[test]
    fn refuses_bad_and_missing_names() {
        assert!(matches!(Tap::open(""), Err(TapError::BadName(_))));
        assert!(matches!(Tap::open("a/b"), Err(TapError::BadName(_))));
        assert!(matches!(
            Tap::open("abcdefghijklmnop"),
            Err(TapError::BadName(_))
        ));
        assert!(matches!(
            Tap::open("stnosuchtap0"),
            Err(TapError::Missing(_))
        ));
        assert!(matches!(Tap::open("lo"), Err(TapError::NotTap(_))));
    }

    #[test]
    fn opens_an_existing_tap_once() {
        let Some(t) = TestTap::create() else { return };
        let tap = Tap::open(&t.name).unwrap();
        assert_eq!(tap.name(), t.name);
        // Nothing queued: a non-blocking read says so.
        let mut buf = [0u8; 2048];
        assert_eq!(
            tap.read(&mut buf).unwrap_err().kind(),
            io::ErrorKind::WouldBlock
        );
        tap.set_offload(libc::TUN_F_CSUM | libc::TUN_F_TSO4)
            .unwrap();
        assert!(matches!(Tap::open(&t.name), Err(TapError::Busy(_))));
    }
}
