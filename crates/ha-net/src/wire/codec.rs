//! Checked big-endian readers and writers for payloads.
//!
//! Every read checks the remaining length first and names the field it was reading, so a
//! truncated or hostile frame becomes a typed [`DecodeError`], never a panic.

use bytes::{BufMut, BytesMut};

use super::DecodeError;

/// Most elements a decoded sequence may announce; bounds allocations made from a count field.
pub const MAX_ELEMENTS: usize = 4096;

/// Appends big-endian fields to a buffer.
#[derive(Debug, Default)]
pub struct Writer {
    buf: BytesMut,
}

impl Writer {
    /// An empty writer.
    pub fn new() -> Self {
        Self::default()
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
    pub fn into_inner(self) -> BytesMut {
        self.buf
    }

    /// One byte.
    pub fn u8(&mut self, v: u8) {
        self.buf.put_u8(v);
    }

    /// A bool as one byte (0 or 1).
    pub fn bool(&mut self, v: bool) {
        self.buf.put_u8(u8::from(v));
    }

    /// Big-endian u16.
    pub fn u16(&mut self, v: u16) {
        self.buf.put_u16(v);
    }

    /// Big-endian u32.
    pub fn u32(&mut self, v: u32) {
        self.buf.put_u32(v);
    }

    /// Big-endian u64.
    pub fn u64(&mut self, v: u64) {
        self.buf.put_u64(v);
    }

    /// Big-endian i64.
    pub fn i64(&mut self, v: i64) {
        self.buf.put_i64(v);
    }

    /// Raw bytes without a length.
    pub fn raw(&mut self, v: &[u8]) {
        self.buf.put_slice(v);
    }

    /// Bytes with a u16 length prefix; longer input is an error (checked by the caller's
    /// frame size limit, here truncated length would corrupt the frame, so we refuse).
    pub fn bytes(&mut self, v: &[u8]) -> Result<(), EncodeTooLong> {
        let len = u16::try_from(v.len()).map_err(|_| EncodeTooLong(v.len()))?;
        self.buf.put_u16(len);
        self.buf.put_slice(v);
        Ok(())
    }

    /// A UTF-8 string with a u16 length prefix.
    pub fn str(&mut self, v: &str) -> Result<(), EncodeTooLong> {
        self.bytes(v.as_bytes())
    }

    /// A sequence count (u16).
    pub fn count(&mut self, n: usize) -> Result<(), EncodeTooLong> {
        if n > MAX_ELEMENTS {
            return Err(EncodeTooLong(n));
        }
        // MAX_ELEMENTS fits in u16.
        self.buf.put_u16(n as u16);
        Ok(())
    }
}

/// A field or sequence was too long to encode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("field of {0} bytes or elements exceeds the wire limit")]
pub struct EncodeTooLong(pub usize);

/// Reads big-endian fields from a slice, checking every length.
#[derive(Debug)]
pub struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    /// A reader over `buf`.
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf }
    }

    /// Bytes not yet read.
    pub fn remaining(&self) -> usize {
        self.buf.len()
    }

    /// Take `n` raw bytes.
    pub fn take(&mut self, n: usize, field: &'static str) -> Result<&'a [u8], DecodeError> {
        if self.buf.len() < n {
            return Err(DecodeError::Truncated {
                field,
                needed: n,
                available: self.buf.len(),
            });
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }

    fn array<const N: usize>(&mut self, field: &'static str) -> Result<[u8; N], DecodeError> {
        let s = self.take(N, field)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }

    /// One byte.
    pub fn u8(&mut self, field: &'static str) -> Result<u8, DecodeError> {
        Ok(self.array::<1>(field)?[0])
    }

    /// A bool; anything but 0 or 1 is invalid.
    pub fn bool(&mut self, field: &'static str) -> Result<bool, DecodeError> {
        match self.u8(field)? {
            0 => Ok(false),
            1 => Ok(true),
            v => Err(DecodeError::InvalidValue {
                field,
                value: u64::from(v),
            }),
        }
    }

    /// Big-endian u16.
    pub fn u16(&mut self, field: &'static str) -> Result<u16, DecodeError> {
        Ok(u16::from_be_bytes(self.array(field)?))
    }

    /// Big-endian u32.
    pub fn u32(&mut self, field: &'static str) -> Result<u32, DecodeError> {
        Ok(u32::from_be_bytes(self.array(field)?))
    }

    /// Big-endian u64.
    pub fn u64(&mut self, field: &'static str) -> Result<u64, DecodeError> {
        Ok(u64::from_be_bytes(self.array(field)?))
    }

    /// Big-endian i64.
    pub fn i64(&mut self, field: &'static str) -> Result<i64, DecodeError> {
        Ok(i64::from_be_bytes(self.array(field)?))
    }

    /// Bytes with a u16 length prefix.
    pub fn bytes(&mut self, field: &'static str) -> Result<&'a [u8], DecodeError> {
        let n = usize::from(self.u16(field)?);
        self.take(n, field)
    }

    /// A UTF-8 string with a u16 length prefix.
    pub fn str(&mut self, field: &'static str) -> Result<String, DecodeError> {
        let b = self.bytes(field)?;
        std::str::from_utf8(b)
            .map(str::to_owned)
            .map_err(|_| DecodeError::InvalidUtf8 { field })
    }

    /// A sequence count whose elements take at least `min_elem` bytes each: a count the
    /// remaining bytes cannot hold is rejected before anything is allocated.
    pub fn count(&mut self, field: &'static str, min_elem: usize) -> Result<usize, DecodeError> {
        let n = usize::from(self.u16(field)?);
        if n > MAX_ELEMENTS || n.saturating_mul(min_elem.max(1)) > self.remaining() {
            return Err(DecodeError::BadCount {
                field,
                count: n,
                remaining: self.remaining(),
            });
        }
        Ok(n)
    }

    /// Fails unless every byte was consumed.
    pub fn finish(&self, what: &'static str) -> Result<(), DecodeError> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(DecodeError::TrailingBytes {
                what,
                extra: self.buf.len(),
            })
        }
    }
}
