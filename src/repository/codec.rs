//! The binary encoding shared by format 3's packs, index objects and trees: LEB128 variable-length
//! integers (signed ones zigzag-coded), fixed little-endian integers, length-prefixed byte
//! strings and 32-byte ids, and a bounds-checked [`Cursor`] whose every error names the byte
//! offset where the input stopped making sense. Pure functions over byte slices.

/// Why a byte string does not decode, and where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what} at byte {offset}")]
pub struct CodecError {
    /// Offset from the start of the decoded buffer.
    pub offset: usize,
    pub what: String,
}

/// Appends `v` as an unsigned LEB128 varint (1–10 bytes).
pub fn put_uvarint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Appends `v` zigzag-coded (small magnitudes of either sign stay short).
pub fn put_ivarint(out: &mut Vec<u8>, v: i64) {
    put_uvarint(out, ((v << 1) ^ (v >> 63)) as u64);
}

/// Appends a length-prefixed byte string.
pub fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    put_uvarint(out, b.len() as u64);
    out.extend_from_slice(b);
}

/// Reads a buffer front to back; every read is bounds-checked.
#[derive(Debug, Clone)]
pub struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    pub fn new(buf: &'a [u8]) -> Cursor<'a> {
        Cursor { buf, pos: 0 }
    }

    /// Bytes consumed so far.
    pub fn offset(&self) -> usize {
        self.pos
    }

    pub fn is_empty(&self) -> bool {
        self.pos >= self.buf.len()
    }

    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// An error at the current offset.
    pub fn error(&self, what: impl Into<String>) -> CodecError {
        CodecError {
            offset: self.pos,
            what: what.into(),
        }
    }

    pub fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], CodecError> {
        if self.remaining() < n {
            return Err(self.error(format!(
                "{what}: needs {n} bytes, {} left (truncated)",
                self.remaining()
            )));
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    pub fn u8(&mut self, what: &str) -> Result<u8, CodecError> {
        Ok(self.take(1, what)?[0])
    }

    pub fn u32(&mut self, what: &str) -> Result<u32, CodecError> {
        Ok(u32::from_le_bytes(
            self.take(4, what)?.try_into().expect("4 bytes"),
        ))
    }

    pub fn u64(&mut self, what: &str) -> Result<u64, CodecError> {
        Ok(u64::from_le_bytes(
            self.take(8, what)?.try_into().expect("8 bytes"),
        ))
    }

    pub fn id(&mut self, what: &str) -> Result<[u8; 32], CodecError> {
        Ok(self.take(32, what)?.try_into().expect("32 bytes"))
    }

    pub fn uvarint(&mut self, what: &str) -> Result<u64, CodecError> {
        let start = self.pos;
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let Some(&b) = self.buf.get(self.pos) else {
                self.pos = start;
                return Err(self.error(format!("{what}: varint runs past the end (truncated)")));
            };
            self.pos += 1;
            if shift == 63 && b > 1 {
                self.pos = start;
                return Err(self.error(format!("{what}: varint overflows 64 bits")));
            }
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        self.pos = start;
        Err(self.error(format!("{what}: varint longer than 10 bytes")))
    }

    pub fn ivarint(&mut self, what: &str) -> Result<i64, CodecError> {
        let u = self.uvarint(what)?;
        Ok(((u >> 1) as i64) ^ -((u & 1) as i64))
    }

    /// A varint that must fit `limit` (a count or a length about to be used).
    pub fn bounded(&mut self, limit: u64, what: &str) -> Result<u64, CodecError> {
        let at = self.pos;
        let v = self.uvarint(what)?;
        if v > limit {
            return Err(CodecError {
                offset: at,
                what: format!("{what}: {v} exceeds the limit {limit}"),
            });
        }
        Ok(v)
    }

    /// A length-prefixed byte string of at most `limit` bytes.
    pub fn bytes(&mut self, limit: usize, what: &str) -> Result<&'a [u8], CodecError> {
        let n = self.bounded(limit as u64, what)? as usize;
        self.take(n, what)
    }

    /// A length-prefixed UTF-8 string of at most `limit` bytes.
    pub fn str(&mut self, limit: usize, what: &str) -> Result<&'a str, CodecError> {
        let at = self.pos;
        let b = self.bytes(limit, what)?;
        std::str::from_utf8(b).map_err(|_| CodecError {
            offset: at,
            what: format!("{what}: not UTF-8"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_round_trip_at_every_boundary() {
        let values = [
            0u64,
            1,
            127,
            128,
            255,
            16383,
            16384,
            u32::MAX as u64,
            u64::MAX,
        ];
        for v in values {
            let mut out = Vec::new();
            put_uvarint(&mut out, v);
            let mut c = Cursor::new(&out);
            assert_eq!(c.uvarint("v").unwrap(), v);
            assert!(c.is_empty());
        }
        for v in [0i64, 1, -1, 63, -64, 64, i64::MIN, i64::MAX] {
            let mut out = Vec::new();
            put_ivarint(&mut out, v);
            assert_eq!(Cursor::new(&out).ivarint("v").unwrap(), v);
        }
        let mut small = Vec::new();
        put_ivarint(&mut small, -3);
        assert_eq!(small.len(), 1, "small negatives stay one byte");
    }

    #[test]
    fn truncation_and_overflow_name_the_offset() {
        let mut out = vec![7u8];
        put_uvarint(&mut out, 300);
        out.pop();
        let mut c = Cursor::new(&out);
        c.u8("tag").unwrap();
        let e = c.uvarint("size").unwrap_err();
        assert_eq!(e.offset, 1);
        assert!(e.to_string().contains("size"), "{e}");
        let e = Cursor::new(&[0xff; 11]).uvarint("n").unwrap_err();
        assert!(e.what.contains("overflows"), "{e}");
        let e = Cursor::new(&[3, b'a']).bytes(10, "name").unwrap_err();
        assert!(e.what.contains("truncated"), "{e}");
        let mut big = Vec::new();
        put_uvarint(&mut big, 1000);
        let e = Cursor::new(&big).bytes(10, "name").unwrap_err();
        assert!(e.what.contains("exceeds"), "{e}");
    }
}
