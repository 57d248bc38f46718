//! Bounded little-endian reads over the file's bytes. Every read checks the end of the buffer
//! first and reports the byte range it wanted, so the parser can say which field is cut off; no
//! read can index past the end or overflow a position.

/// A read that wanted bytes `start..end` of a buffer that ends earlier (`end` saturates at
/// `u64::MAX` for absurd lengths).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PastEnd {
    pub start: u64,
    pub end: u64,
}

/// A read position in a byte buffer.
#[derive(Debug, Clone)]
pub(crate) struct Cursor<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        Self { data, pos: 0 }
    }

    /// Bytes read so far.
    pub fn pos(&self) -> u64 {
        self.pos as u64
    }

    /// Bytes left to read.
    pub fn remaining(&self) -> u64 {
        (self.data.len() - self.pos) as u64
    }

    /// The next `n` bytes.
    pub fn take(&mut self, n: u64) -> Result<&'a [u8], PastEnd> {
        if n > self.remaining() {
            return Err(PastEnd {
                start: self.pos(),
                end: self.pos().saturating_add(n),
            });
        }
        // `n <= remaining`, which is a usize, so the cast and the addition are exact.
        let end = self.pos + n as usize;
        let bytes = &self.data[self.pos..end];
        self.pos = end;
        Ok(bytes)
    }

    /// The next `N` bytes as an array.
    pub fn array<const N: usize>(&mut self) -> Result<[u8; N], PastEnd> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N as u64)?);
        Ok(out)
    }

    pub fn u8(&mut self) -> Result<u8, PastEnd> {
        Ok(self.array::<1>()?[0])
    }

    pub fn u32(&mut self) -> Result<u32, PastEnd> {
        self.array().map(u32::from_le_bytes)
    }

    pub fn u64(&mut self) -> Result<u64, PastEnd> {
        self.array().map(u64::from_le_bytes)
    }

    /// A GGUF string's raw bytes: a `u64` length, then that many bytes.
    pub fn string_bytes(&mut self) -> Result<&'a [u8], PastEnd> {
        let len = self.u64()?;
        self.take(len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_report_the_range_they_wanted() {
        let data = [1u8, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 9];
        let mut c = Cursor::new(&data);
        assert_eq!(c.u32(), Ok(1));
        assert_eq!(c.u64(), Ok(2));
        assert_eq!(c.remaining(), 1);
        assert_eq!(c.u32(), Err(PastEnd { start: 12, end: 16 }));
        assert_eq!(
            c.take(u64::MAX),
            Err(PastEnd {
                start: 12,
                end: u64::MAX
            })
        );
        assert_eq!(c.u8(), Ok(9));
        let long = [0xffu8; 8];
        assert_eq!(
            Cursor::new(&long).string_bytes(),
            Err(PastEnd {
                start: 8,
                end: u64::MAX
            })
        );
    }
}
