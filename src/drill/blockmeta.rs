//! A HopsFS block against the checksums its datanode wrote beside it. A finalized replica is
//! two files, `blk_<id>` (the bytes) and `blk_<id>_<genstamp>.meta`: a 7-byte header — version
//! (big-endian short, 1), checksum type (one byte: 0 none, 1 CRC-32, 2 CRC-32C) and bytes per
//! checksum (big-endian int, 512 by default) — then one big-endian 4-byte checksum per chunk
//! of the block, the last chunk partial. [`BlockChecker`] is fed the block's bytes in pieces
//! of any size and names the first chunk whose checksum differs: pure, no I/O.

use crc_fast::CrcAlgorithm;

/// The metadata format version every HDFS and HopsFS datanode writes.
const VERSION: u16 = 1;
/// Header length: version (2), type (1), bytes per checksum (4).
pub const HEADER_LEN: usize = 7;
/// A chunk larger than this is not a datanode's (HDFS refuses bytes-per-checksum above 16 MiB
/// only implicitly; real clusters use 512).
const MAX_BYTES_PER_CHECKSUM: u32 = 16 << 20;

/// How the chunks are summed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChecksumType {
    /// No checksums (`dfs.checksum.type = NULL`): nothing to compare.
    Null,
    /// CRC-32 (the zlib polynomial).
    Crc32,
    /// CRC-32C (Castagnoli), HDFS's default.
    Crc32c,
}

impl ChecksumType {
    fn size(self) -> usize {
        match self {
            ChecksumType::Null => 0,
            _ => 4,
        }
    }

    fn sum(self, chunk: &[u8]) -> u32 {
        match self {
            ChecksumType::Null => 0,
            ChecksumType::Crc32 => crc_fast::checksum(CrcAlgorithm::Crc32IsoHdlc, chunk) as u32,
            ChecksumType::Crc32c => crc_fast::checksum(CrcAlgorithm::Crc32Iscsi, chunk) as u32,
        }
    }
}

impl std::fmt::Display for ChecksumType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ChecksumType::Null => "NULL",
            ChecksumType::Crc32 => "CRC32",
            ChecksumType::Crc32c => "CRC32C",
        })
    }
}

/// Why a `.meta` file or its block does not check.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BlockMetaError {
    #[error("the .meta file is {0} bytes, shorter than its 7-byte header")]
    Short(usize),
    #[error("the .meta file has version {0}, not 1")]
    Version(u16),
    #[error("the .meta file names checksum type {0}, not 0 (NULL), 1 (CRC32) or 2 (CRC32C)")]
    Type(u8),
    #[error("the .meta file says {0} bytes per checksum")]
    BytesPerChecksum(u32),
    #[error(
        "the .meta file's {have} checksum bytes are not a whole number of {size}-byte checksums"
    )]
    Ragged { have: usize, size: usize },
    #[error(
        "the block is {block_len} bytes ({want} chunks of {bytes_per_checksum}) but the .meta file holds {have} checksums"
    )]
    Count {
        block_len: u64,
        bytes_per_checksum: u32,
        want: u64,
        have: u64,
    },
    #[error(
        "chunk {chunk} (bytes {offset}..{end}) has {kind} {actual:08x}, the .meta file says {expected:08x}"
    )]
    Mismatch {
        chunk: u64,
        offset: u64,
        end: u64,
        kind: ChecksumType,
        expected: u32,
        actual: u32,
    },
}

/// The parsed header of a `.meta` file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MetaHeader {
    pub kind: ChecksumType,
    pub bytes_per_checksum: u32,
}

/// Reads a `.meta` file's header; returns it and the checksum bytes after it.
pub fn parse(meta: &[u8]) -> Result<(MetaHeader, &[u8]), BlockMetaError> {
    if meta.len() < HEADER_LEN {
        return Err(BlockMetaError::Short(meta.len()));
    }
    let version = u16::from_be_bytes([meta[0], meta[1]]);
    if version != VERSION {
        return Err(BlockMetaError::Version(version));
    }
    let kind = match meta[2] {
        0 => ChecksumType::Null,
        1 => ChecksumType::Crc32,
        2 => ChecksumType::Crc32c,
        t => return Err(BlockMetaError::Type(t)),
    };
    let bpc = u32::from_be_bytes([meta[3], meta[4], meta[5], meta[6]]);
    if bpc == 0 || bpc > MAX_BYTES_PER_CHECKSUM {
        return Err(BlockMetaError::BytesPerChecksum(bpc));
    }
    let sums = &meta[HEADER_LEN..];
    let size = kind.size();
    if size > 0 && sums.len() % size != 0 {
        return Err(BlockMetaError::Ragged {
            have: sums.len(),
            size,
        });
    }
    Ok((
        MetaHeader {
            kind,
            bytes_per_checksum: bpc,
        },
        sums,
    ))
}

/// What a checked block held.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockSummary {
    pub bytes: u64,
    pub chunks: u64,
    pub kind: ChecksumType,
}

/// Checks a block's bytes, fed in order, against its `.meta` file.
#[derive(Debug)]
pub struct BlockChecker {
    header: MetaHeader,
    sums: Vec<u8>,
    /// The bytes of the chunk being filled (less than one chunk).
    partial: Vec<u8>,
    chunk: u64,
    bytes: u64,
    first_bad: Option<BlockMetaError>,
}

impl BlockChecker {
    /// A checker for the block whose `.meta` file is `meta`.
    pub fn new(meta: &[u8]) -> Result<BlockChecker, BlockMetaError> {
        let (header, sums) = parse(meta)?;
        Ok(BlockChecker {
            header,
            sums: sums.to_vec(),
            partial: Vec::new(),
            chunk: 0,
            bytes: 0,
            first_bad: None,
        })
    }

    fn have(&self) -> u64 {
        match self.header.kind.size() {
            0 => 0,
            s => (self.sums.len() / s) as u64,
        }
    }

    /// Compares one whole (or the last, partial) chunk.
    fn check_chunk(&mut self, chunk: &[u8]) {
        let i = self.chunk;
        self.chunk += 1;
        if self.first_bad.is_some() || self.header.kind == ChecksumType::Null {
            return;
        }
        let at = i as usize * 4;
        let Some(want) = self.sums.get(at..at + 4) else {
            return; // counted at the end
        };
        let expected = u32::from_be_bytes([want[0], want[1], want[2], want[3]]);
        let actual = self.header.kind.sum(chunk);
        if actual != expected {
            let offset = i * u64::from(self.header.bytes_per_checksum);
            self.first_bad = Some(BlockMetaError::Mismatch {
                chunk: i,
                offset,
                end: offset + chunk.len() as u64,
                kind: self.header.kind,
                expected,
                actual,
            });
        }
    }

    /// The next bytes of the block.
    pub fn feed(&mut self, mut data: &[u8]) {
        let bpc = self.header.bytes_per_checksum as usize;
        self.bytes += data.len() as u64;
        if !self.partial.is_empty() {
            let take = (bpc - self.partial.len()).min(data.len());
            self.partial.extend_from_slice(&data[..take]);
            data = &data[take..];
            if self.partial.len() < bpc {
                return;
            }
            let chunk = std::mem::take(&mut self.partial);
            self.check_chunk(&chunk);
        }
        let mut whole = data.chunks_exact(bpc);
        for chunk in whole.by_ref() {
            self.check_chunk(chunk);
        }
        self.partial.extend_from_slice(whole.remainder());
    }

    /// The verdict once every byte was fed.
    pub fn finish(mut self) -> Result<BlockSummary, BlockMetaError> {
        if !self.partial.is_empty() {
            let chunk = std::mem::take(&mut self.partial);
            self.check_chunk(&chunk);
        }
        if let Some(e) = self.first_bad {
            return Err(e);
        }
        if self.header.kind != ChecksumType::Null && self.have() != self.chunk {
            return Err(BlockMetaError::Count {
                block_len: self.bytes,
                bytes_per_checksum: self.header.bytes_per_checksum,
                want: self.chunk,
                have: self.have(),
            });
        }
        Ok(BlockSummary {
            bytes: self.bytes,
            chunks: self.chunk,
            kind: self.header.kind,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A `.meta` file as a datanode writes it.
    fn meta(kind: u8, bpc: u32, data: &[u8]) -> Vec<u8> {
        let mut m = vec![0, 1, kind];
        m.extend_from_slice(&bpc.to_be_bytes());
        let t = match kind {
            1 => CrcAlgorithm::Crc32IsoHdlc,
            _ => CrcAlgorithm::Crc32Iscsi,
        };
        if kind != 0 {
            for c in data.chunks(bpc as usize) {
                m.extend_from_slice(&(crc_fast::checksum(t, c) as u32).to_be_bytes());
            }
        }
        m
    }

    fn check(meta: &[u8], data: &[u8], piece: usize) -> Result<BlockSummary, BlockMetaError> {
        let mut c = BlockChecker::new(meta)?;
        for p in data.chunks(piece.max(1)) {
            c.feed(p);
        }
        c.finish()
    }

    fn data(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i * 7 + i / 251) as u8).collect()
    }

    #[test]
    fn the_crc32c_check_value_is_the_one_hdfs_writes() {
        // "123456789" → 0xE3069283 (CRC-32C), 0xCBF43926 (CRC-32).
        assert_eq!(ChecksumType::Crc32c.sum(b"123456789"), 0xE306_9283);
        assert_eq!(ChecksumType::Crc32.sum(b"123456789"), 0xCBF4_3926);
    }

    #[test]
    fn a_block_checks_whatever_the_piece_sizes() {
        for n in [0, 1, 511, 512, 513, 4096, 70_001] {
            let d = data(n);
            for kind in [1, 2] {
                let m = meta(kind, 512, &d);
                for piece in [1, 7, 512, 1000, 1 << 20] {
                    let s = check(&m, &d, piece).unwrap();
                    assert_eq!(s.bytes, n as u64);
                    assert_eq!(s.chunks, n.div_ceil(512) as u64);
                }
            }
        }
        // Other chunk sizes.
        let d = data(10_000);
        assert!(check(&meta(2, 4096, &d), &d, 333).is_ok());
        assert!(check(&meta(2, 1, &d[..50]), &d[..50], 3).is_ok());
    }

    #[test]
    fn a_changed_byte_names_its_chunk_and_offsets() {
        let d = data(5000);
        let m = meta(2, 512, &d);
        let mut bad = d.clone();
        bad[1500] ^= 0x20;
        match check(&m, &bad, 777).unwrap_err() {
            BlockMetaError::Mismatch {
                chunk, offset, end, ..
            } => assert_eq!((chunk, offset, end), (2, 1024, 1536)),
            e => panic!("{e}"),
        }
        // The last, partial chunk too.
        let mut bad = d.clone();
        bad[4999] ^= 1;
        let e = check(&m, &bad, 4096).unwrap_err();
        assert!(
            e.to_string().starts_with("chunk 9 (bytes 4608..5000)"),
            "{e}"
        );
    }

    #[test]
    fn a_block_longer_or_shorter_than_its_checksums_is_named() {
        let d = data(2048);
        let m = meta(2, 512, &d);
        let e = check(&m, &d[..1024], 100).unwrap_err();
        assert_eq!(
            e,
            BlockMetaError::Count {
                block_len: 1024,
                bytes_per_checksum: 512,
                want: 2,
                have: 4
            }
        );
        let mut longer = d.clone();
        longer.extend_from_slice(b"more");
        assert!(matches!(
            check(&m, &longer, 100),
            Err(BlockMetaError::Count {
                want: 5,
                have: 4,
                ..
            })
        ));
    }

    #[test]
    fn bad_headers_are_named() {
        assert_eq!(parse(&[0, 1, 2]).unwrap_err(), BlockMetaError::Short(3));
        assert_eq!(
            parse(&[0, 2, 2, 0, 0, 2, 0]).unwrap_err(),
            BlockMetaError::Version(2)
        );
        assert_eq!(
            parse(&[0, 1, 9, 0, 0, 2, 0]).unwrap_err(),
            BlockMetaError::Type(9)
        );
        assert_eq!(
            parse(&[0, 1, 2, 0, 0, 0, 0]).unwrap_err(),
            BlockMetaError::BytesPerChecksum(0)
        );
        assert_eq!(
            parse(&[0, 1, 2, 0, 0, 2, 0, 1, 2]).unwrap_err(),
            BlockMetaError::Ragged { have: 2, size: 4 }
        );
        // NULL checksums: nothing to compare, any length.
        let s = check(&[0, 1, 0, 0, 0, 2, 0], &data(3000), 100).unwrap();
        assert_eq!((s.kind, s.chunks), (ChecksumType::Null, 6));
    }
}
