//! Compressed clusters: raw deflate (zlib compression type) streams.

use flate2::{Decompress, FlushDecompress};

use crate::disk::DiskError;

/// Inflates `input` into `out`, which must end up completely filled (a
/// compressed cluster always expands to exactly one cluster). Trailing
/// input is ignored: the stream is stored rounded up to whole sectors.
pub fn inflate_cluster(input: &[u8], out: &mut [u8], host: u64) -> Result<(), DiskError> {
    let mut d = Decompress::new(false);
    let corrupt = DiskError::Corrupt {
        what: "compressed cluster",
        offset: host,
    };
    match d.decompress(input, out, FlushDecompress::Finish) {
        Ok(_) if d.total_out() == out.len() as u64 => Ok(()),
        _ => Err(corrupt),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::{Compress, Compression, FlushCompress};

    #[test]
    fn round_trip_and_rejects_garbage() {
        let data: Vec<u8> = (0..4096u32).map(|i| (i % 251) as u8).collect();
        let mut c = Compress::new(Compression::default(), false);
        let mut packed = vec![0u8; 8192];
        c.compress(&data, &mut packed, FlushCompress::Finish)
            .unwrap();
        packed.truncate(c.total_out() as usize);
        packed.extend_from_slice(&[0xee; 300]); // sector padding
        let mut out = vec![0u8; 4096];
        inflate_cluster(&packed, &mut out, 0).unwrap();
        assert_eq!(out, data);
        let mut short = vec![0u8; 8192];
        assert!(inflate_cluster(&packed, &mut short, 0).is_err());
        assert!(inflate_cluster(&[0xff; 64], &mut out, 0).is_err());
    }
}
