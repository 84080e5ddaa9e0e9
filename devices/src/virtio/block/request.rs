//! Turning a descriptor chain into a typed request.
//!
//! Layout accepted (what every driver builds): the first descriptor is the
//! 16-byte device-readable header, the last is device-writable and its
//! last byte receives the status, and everything between is data. Each
//! descriptor's range is checked against guest memory here, so execution
//! never touches memory the guest does not own. Extra bytes in a longer
//! header descriptor are ignored.

use virtio_bindings::virtio_blk::{
    VIRTIO_BLK_T_DISCARD, VIRTIO_BLK_T_FLUSH, VIRTIO_BLK_T_GET_ID, VIRTIO_BLK_T_IN,
    VIRTIO_BLK_T_OUT, VIRTIO_BLK_T_WRITE_ZEROES,
};
use virtio_queue::DescriptorChain;
use vm_memory::{Address, Bytes, GuestAddress, GuestMemory, Permissions};

use super::SECTOR_SIZE;

/// The request type field of the header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestType {
    /// Read sectors into the guest.
    In,
    /// Write sectors from the guest.
    Out,
    /// Make completed writes durable.
    Flush,
    /// Return the device serial.
    GetDeviceId,
    /// Discard sector ranges.
    Discard,
    /// Zero sector ranges.
    WriteZeroes,
    /// Anything else; answered with UNSUPP.
    Unsupported(u32),
}

impl From<u32> for RequestType {
    fn from(value: u32) -> Self {
        match value {
            VIRTIO_BLK_T_IN => Self::In,
            VIRTIO_BLK_T_OUT => Self::Out,
            VIRTIO_BLK_T_FLUSH => Self::Flush,
            VIRTIO_BLK_T_GET_ID => Self::GetDeviceId,
            VIRTIO_BLK_T_DISCARD => Self::Discard,
            VIRTIO_BLK_T_WRITE_ZEROES => Self::WriteZeroes,
            other => Self::Unsupported(other),
        }
    }
}

/// A data buffer in guest memory, already checked to lie inside it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment {
    /// Guest address.
    pub addr: GuestAddress,
    /// Length in bytes.
    pub len: u32,
}

/// A parsed request. Its data segments live in the caller's buffer, so
/// parsing does not allocate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request {
    /// What to do.
    pub request_type: RequestType,
    /// First sector (512-byte units) for reads and writes.
    pub sector: u64,
    /// Sum of the data segment lengths.
    pub data_len: u64,
    /// Where the status byte goes.
    pub status_addr: GuestAddress,
}

/// Why a chain is not a valid request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// The chain has no descriptors at all (bad head index or table).
    #[error("empty descriptor chain")]
    EmptyChain,
    /// The last descriptor is not device-writable, is empty, or lies
    /// outside guest memory: there is nowhere to put a status.
    #[error("no usable status descriptor")]
    BadStatusDescriptor,
    /// The first descriptor is write-only, shorter than 16 bytes,
    /// unreadable, or also the status descriptor.
    #[error("bad request header descriptor")]
    BadHeader,
    /// More data descriptors than the advertised `seg_max`.
    #[error("too many data descriptors")]
    TooManySegments,
    /// A data descriptor points outside guest memory.
    #[error("data descriptor outside guest memory")]
    BadDataAddress,
    /// A data descriptor has the wrong direction for the request type.
    #[error("data descriptor with the wrong direction")]
    WrongDirection,
    /// Data length not a multiple of the sector (or discard segment) size,
    /// or missing where required.
    #[error("bad data length")]
    BadLength,
    /// The request reaches past the end of the disk.
    #[error("request beyond the disk capacity")]
    OutOfRange,
}

impl RequestError {
    /// Whether the status byte can be written for this error.
    pub fn has_status(self) -> bool {
        !matches!(self, Self::EmptyChain | Self::BadStatusDescriptor)
    }
}

/// Size of `struct virtio_blk_outhdr`.
const HEADER_LEN: u32 = 16;
/// Size of one discard / write-zeroes range.
pub const DISCARD_SEGMENT_LEN: u64 = 16;

/// Parses `chain`. Data segments are stored in `segments` (cleared first,
/// never grown past `max_segments`). On error the status address is
/// returned with it when one was found, so the caller can answer IOERR.
pub fn parse<M: GuestMemory>(
    mut chain: DescriptorChain<&M>,
    mem: &M,
    segments: &mut Vec<Segment>,
    max_segments: usize,
    capacity_sectors: u64,
) -> Result<Request, (RequestError, Option<GuestAddress>)> {
    segments.clear();
    let Some(header) = chain.next() else {
        return Err((RequestError::EmptyChain, None));
    };

    // Walk the rest: remember data descriptors, keep the last as status.
    // The chain iterator is bounded by the queue (or indirect table) size.
    let mut last = None;
    let mut count = 0usize;
    let mut overflow = false;
    let mut bad_data = false;
    let mut direction = None::<bool>;
    let mut mixed = false;
    for desc in chain {
        if let Some(prev) = last.replace(desc) {
            // `prev` is a data descriptor.
            count += 1;
            if segments.len() < max_segments {
                if !mem.check_range(prev.addr(), prev.len() as usize, Permissions::ReadWrite) {
                    bad_data = true;
                }
                mixed |= direction.is_some_and(|w| w != prev.is_write_only());
                direction = Some(prev.is_write_only());
                segments.push(Segment {
                    addr: prev.addr(),
                    len: prev.len(),
                });
            } else {
                overflow = true;
            }
        }
    }

    let status = last.ok_or((RequestError::BadStatusDescriptor, None))?;
    let status_addr = status
        .addr()
        .checked_add(u64::from(status.len()).wrapping_sub(1))
        .filter(|a| {
            status.is_write_only() && status.len() > 0 && mem.check_range(*a, 1, Permissions::Write)
        })
        .ok_or((RequestError::BadStatusDescriptor, None))?;
    let fail = |e| Err((e, Some(status_addr)));

    if header.is_write_only() || header.len() < HEADER_LEN {
        return fail(RequestError::BadHeader);
    }
    let mut raw = [0u8; HEADER_LEN as usize];
    if mem.read_slice(&mut raw, header.addr()).is_err() {
        return fail(RequestError::BadHeader);
    }
    let request_type = RequestType::from(u32::from_le_bytes(raw[0..4].try_into().expect("4")));
    let sector = u64::from_le_bytes(raw[8..16].try_into().expect("8"));

    if overflow || count > max_segments {
        return fail(RequestError::TooManySegments);
    }
    if bad_data {
        return fail(RequestError::BadDataAddress);
    }
    let data_len: u64 = segments.iter().map(|s| u64::from(s.len)).sum();
    // The used length is 32 bits; nothing real comes close.
    if data_len > u64::from(u32::MAX) - 1 {
        return fail(RequestError::BadLength);
    }
    let writes_guest = match request_type {
        RequestType::In | RequestType::GetDeviceId => Some(true),
        RequestType::Out | RequestType::Discard | RequestType::WriteZeroes => Some(false),
        RequestType::Flush | RequestType::Unsupported(_) => None,
    };
    if let Some(w) = writes_guest {
        if mixed || direction.is_some_and(|d| d != w) {
            return fail(RequestError::WrongDirection);
        }
    }
    match request_type {
        RequestType::In | RequestType::Out => {
            if !data_len.is_multiple_of(SECTOR_SIZE) {
                return fail(RequestError::BadLength);
            }
            let end = sector.checked_add(data_len / SECTOR_SIZE);
            if end.is_none_or(|e| e > capacity_sectors) {
                return fail(RequestError::OutOfRange);
            }
        }
        RequestType::Discard | RequestType::WriteZeroes
            if data_len == 0 || !data_len.is_multiple_of(DISCARD_SEGMENT_LEN) =>
        {
            return fail(RequestError::BadLength);
        }
        RequestType::GetDeviceId if data_len == 0 => return fail(RequestError::BadLength),
        _ => {}
    }
    Ok(Request {
        request_type,
        sector,
        data_len,
        status_addr,
    })
}
