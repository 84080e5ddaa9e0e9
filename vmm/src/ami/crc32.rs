//! CRC-32 (IEEE 802.3, reflected, polynomial 0xEDB88320), as GPT uses it.
//!
//! Written here rather than pulled in: it is a dozen lines, and the table
//! is built at compile time.

const POLY: u32 = 0xEDB8_8320;

const TABLE: [u32; 256] = {
    let mut table = [0u32; 256];
    let mut i: u32 = 0;
    while i < 256 {
        let mut c = i;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 { POLY ^ (c >> 1) } else { c >> 1 };
            k += 1;
        }
        table[i as usize] = c;
        i += 1;
    }
    table
};

/// A running CRC-32, for data that arrives in pieces.
#[derive(Debug, Clone, Copy)]
pub struct Crc32(u32);

impl Crc32 {
    /// A CRC over no bytes yet.
    pub fn new() -> Self {
        Self(!0)
    }

    /// Feeds `bytes`.
    pub fn update(&mut self, bytes: &[u8]) {
        for &b in bytes {
            let index = usize::from(self.0.to_le_bytes()[0] ^ b);
            self.0 = TABLE[index] ^ (self.0 >> 8);
        }
    }

    /// The CRC of everything fed so far.
    pub fn finish(self) -> u32 {
        !self.0
    }
}

/// The CRC-32 of `bytes` (only tests need it whole).
#[cfg(test)]
pub fn crc32(bytes: &[u8]) -> u32 {
    let mut c = Crc32::new();
    c.update(bytes);
    c.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_standard_check_value() {
        // The CRC-32 catalogue's check value for "123456789".
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        assert_eq!(crc32(b""), 0);
    }

    #[test]
    fn pieces_equal_the_whole() {
        let mut c = Crc32::new();
        c.update(b"1234");
        c.update(b"56789");
        assert_eq!(c.finish(), 0xCBF4_3926);
    }
}
