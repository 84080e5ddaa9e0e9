//! The Internet checksum (RFC 1071): the one's-complement of the
//! one's-complement sum of 16-bit big-endian words.
//!
//! The datapath needs it to check the IPv4 header of DHCP requests and to
//! fill in the IPv4 header and UDP checksums of the replies it writes. The
//! sum is kept incrementally so a UDP checksum can cover the pseudo-header,
//! the UDP header and the payload without copying them together.

use std::net::Ipv4Addr;

/// A running Internet checksum over any number of byte chunks (of any
/// length: an odd chunk's last byte pairs with the next chunk's first).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Checksum {
    /// Sum of the 16-bit words so far, not yet folded. 64 bits cannot
    /// overflow for anything smaller than 2^48 bytes.
    sum: u64,
    /// The high byte of a word whose low byte is in the next chunk.
    pending: Option<u8>,
}

impl Checksum {
    /// An empty sum.
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// Adds `data` to the sum.
    pub(crate) fn add(&mut self, data: &[u8]) -> &mut Self {
        let mut data = data;
        if let Some(high) = self.pending.take() {
            match data.split_first() {
                Some((&low, rest)) => {
                    self.sum += u64::from(u16::from_be_bytes([high, low]));
                    data = rest;
                }
                None => {
                    self.pending = Some(high);
                    return self;
                }
            }
        }
        let mut words = data.chunks_exact(2);
        for word in &mut words {
            if let [high, low] = *word {
                self.sum += u64::from(u16::from_be_bytes([high, low]));
            }
        }
        if let [last] = *words.remainder() {
            self.pending = Some(last);
        }
        self
    }

    /// Adds the IPv4 pseudo-header of a TCP or UDP checksum (RFC 768).
    pub(crate) fn add_ipv4_pseudo_header(
        &mut self,
        src: Ipv4Addr,
        dst: Ipv4Addr,
        protocol: u8,
        l4_len: u16,
    ) -> &mut Self {
        self.add(&src.octets()).add(&dst.octets());
        self.add(&[0, protocol]).add(&l4_len.to_be_bytes())
    }

    /// The checksum to put on the wire: the complement of the folded sum.
    /// Summing data that contains a correct checksum gives 0 here.
    pub(crate) fn finish(&self) -> u16 {
        let mut sum = self.sum;
        if let Some(high) = self.pending {
            // An odd length pads with a zero byte.
            sum += u64::from(high) << 8;
        }
        while sum > 0xffff {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        // The loop leaves at most 0xffff, so the conversion cannot fail.
        !u16::try_from(sum).unwrap_or(u16::MAX)
    }
}

/// The Internet checksum of `data`, as it goes on the wire.
pub(crate) fn internet_checksum(data: &[u8]) -> u16 {
    Checksum::new().add(data).finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_rfc_1071_example() {
        // RFC 1071 §3: the words 0001 f203 f4f5 f6f7 sum to ddf2.
        let data = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(internet_checksum(&data), !0xddf2);
    }

    #[test]
    fn odd_lengths_pad_with_zero() {
        assert_eq!(internet_checksum(&[0x12]), !0x1200);
        assert_eq!(
            internet_checksum(&[0x12, 0x34, 0x56]),
            !(0x1234u16 + 0x5600)
        );
        assert_eq!(internet_checksum(&[]), 0xffff);
    }

    #[test]
    fn chunking_does_not_change_the_sum() {
        let data: Vec<u8> = (0..=255u8).cycle().take(1001).collect();
        let whole = internet_checksum(&data);
        for split in [0, 1, 2, 3, 500, 999, 1000, 1001] {
            let (a, b) = data.split_at(split);
            assert_eq!(
                Checksum::new().add(a).add(b).finish(),
                whole,
                "split at {split}"
            );
        }
        let mut bytewise = Checksum::new();
        for byte in &data {
            bytewise.add(std::slice::from_ref(byte));
        }
        assert_eq!(bytewise.finish(), whole);
    }

    #[test]
    fn data_with_its_checksum_sums_to_zero() {
        let mut header = [
            0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0x00, 0x00, 0xc0, 0xa8,
            0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7,
        ];
        let sum = internet_checksum(&header);
        // The well-known example header from Wikipedia's IPv4 article.
        assert_eq!(sum, 0xb861);
        header[10..12].copy_from_slice(&sum.to_be_bytes());
        assert_eq!(internet_checksum(&header), 0);
    }
}
