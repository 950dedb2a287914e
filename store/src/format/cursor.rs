//! Bounded little-endian reading and writing. Every read checks its bounds
//! and names the field it was reading when the bytes run out.

use crate::error::DecodeError;

/// Appends fixed-width little-endian values to a buffer.
#[derive(Default, Debug)]
pub struct Writer {
    buf: Vec<u8>,
}

impl Writer {
    /// An empty writer with room for `n` bytes.
    pub fn with_capacity(n: usize) -> Self {
        Writer {
            buf: Vec::with_capacity(n),
        }
    }
    /// Appends a byte.
    pub fn u8(&mut self, v: u8) {
        self.buf.push(v);
    }
    /// Appends a u16.
    pub fn u16(&mut self, v: u16) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }
    /// Appends a u32.
    pub fn u32(&mut self, v: u32) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }
    /// Appends a u64.
    pub fn u64(&mut self, v: u64) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }
    /// Appends an i64.
    pub fn i64(&mut self, v: i64) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }
    /// Appends raw bytes.
    pub fn bytes(&mut self, b: &[u8]) {
        self.buf.extend_from_slice(b);
    }
    /// Appends a u16 length and the bytes; panics never, truncation is the
    /// caller's check (`len16` is validated by encoders before writing).
    pub fn bytes16(&mut self, b: &[u8]) {
        let len = u16::try_from(b.len()).unwrap_or(u16::MAX);
        self.u16(len);
        self.buf
            .extend_from_slice(b.get(..usize::from(len)).unwrap_or(b));
    }
    /// Bytes written so far.
    pub fn len(&self) -> usize {
        self.buf.len()
    }
    /// True when nothing was written.
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }
    /// The written bytes.
    pub fn into_inner(self) -> Vec<u8> {
        self.buf
    }
}

/// Reads fixed-width little-endian values from untrusted bytes.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    /// A reader at the start of `buf`.
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }
    /// Current offset.
    pub fn offset(&self) -> usize {
        self.pos
    }
    /// Bytes left.
    pub fn remaining(&self) -> usize {
        self.buf.len().saturating_sub(self.pos)
    }
    /// Takes `n` bytes.
    pub fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], DecodeError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.buf.len())
            .ok_or_else(|| {
                DecodeError::new(
                    self.pos,
                    format!(
                        "truncated: {what} needs {n} bytes, {} left",
                        self.remaining()
                    ),
                )
            })?;
        let s = self
            .buf
            .get(self.pos..end)
            .ok_or_else(|| DecodeError::new(self.pos, format!("truncated while reading {what}")))?;
        self.pos = end;
        Ok(s)
    }
    /// Takes a fixed-size array.
    pub fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N], DecodeError> {
        let s = self.take(N, what)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }
    /// Reads a byte.
    pub fn u8(&mut self, what: &str) -> Result<u8, DecodeError> {
        Ok(u8::from_le_bytes(self.array::<1>(what)?))
    }
    /// Reads a u16.
    pub fn u16(&mut self, what: &str) -> Result<u16, DecodeError> {
        Ok(u16::from_le_bytes(self.array::<2>(what)?))
    }
    /// Reads a u32.
    pub fn u32(&mut self, what: &str) -> Result<u32, DecodeError> {
        Ok(u32::from_le_bytes(self.array::<4>(what)?))
    }
    /// Reads a u64.
    pub fn u64(&mut self, what: &str) -> Result<u64, DecodeError> {
        Ok(u64::from_le_bytes(self.array::<8>(what)?))
    }
    /// Reads an i64.
    pub fn i64(&mut self, what: &str) -> Result<i64, DecodeError> {
        Ok(i64::from_le_bytes(self.array::<8>(what)?))
    }
    /// Reads a u16 length and that many bytes.
    pub fn bytes16(&mut self, what: &str) -> Result<&'a [u8], DecodeError> {
        let n = self.u16(what)?;
        self.take(usize::from(n), what)
    }
    /// Reads a u16-length UTF-8 string.
    pub fn string16(&mut self, what: &str) -> Result<String, DecodeError> {
        let at = self.pos;
        let b = self.bytes16(what)?;
        String::from_utf8(b.to_vec())
            .map_err(|_| DecodeError::new(at, format!("{what} is not UTF-8")))
    }
    /// Reads a count of items each at least `min_item_len` bytes long,
    /// refusing counts the remaining bytes cannot hold (no huge allocations
    /// from a lying count).
    pub fn count32(&mut self, min_item_len: usize, what: &str) -> Result<usize, DecodeError> {
        let at = self.pos;
        let n = usize::try_from(self.u32(what)?)
            .map_err(|_| DecodeError::new(at, format!("{what} count overflows")))?;
        let need = n.checked_mul(min_item_len.max(1));
        match need {
            Some(need) if need <= self.remaining() => Ok(n),
            _ => Err(DecodeError::new(
                at,
                format!(
                    "{what} count {n} cannot fit in the {} bytes left",
                    self.remaining()
                ),
            )),
        }
    }
    /// Like [`Reader::count32`] for a u16 count.
    pub fn count16(&mut self, min_item_len: usize, what: &str) -> Result<usize, DecodeError> {
        let at = self.pos;
        let n = usize::from(self.u16(what)?);
        if n.saturating_mul(min_item_len.max(1)) > self.remaining() {
            return Err(DecodeError::new(
                at,
                format!(
                    "{what} count {n} cannot fit in the {} bytes left",
                    self.remaining()
                ),
            ));
        }
        Ok(n)
    }
    /// Fails unless every byte was consumed.
    pub fn finish(&self, what: &str) -> Result<(), DecodeError> {
        if self.remaining() != 0 {
            return Err(DecodeError::new(
                self.pos,
                format!("{} trailing bytes after {what}", self.remaining()),
            ));
        }
        Ok(())
    }
}
