//! Pack files (format 3): many blobs in one object, so a repository holds thousands of objects
//! where format 1 held millions.
//!
//! ```text
//! header   16 B : "HDRPACK3" | version u8 = 1 | kind u8 (0 data, 1 meta, 2 solo) | 6 zero bytes
//! blob 1..n     : each exactly what format 1/2 store as a blob object: one zstd frame, sealed
//!                 in an encrypted repository with the blob's own key `blobs/<xx>/<id>` as
//!                 associated data (so a sealed blob moves between packs unchanged, and one
//!                 swapped into another's place does not open)
//! trailer       : one zstd frame (sealed with `<pack key>#trailer` when encrypted) of
//!                 version u8 = 1 | kind u8 | solo only: unit id [32], unit length varint |
//!                 count varint | per blob: kind u8, id [32], stored length varint,
//!                 raw length varint               (offsets follow from the lengths)
//! footer   48 B : trailer length u32 LE | count u32 LE | BLAKE3 of the trailer as stored [32]
//!                 | "HDRPEND3"
//! ```
//!
//! A reader fetches the footer (the last 48 bytes), then the trailer, then any blob by one
//! ranged read. A *solo* pack holds the chunks of one file bigger than a chunk (a finalized
//! HopsFS block, say): the file is one object that dies whole, never repacked; its trailer names
//! the unit (the keyed or plain BLAKE3 of the whole content) it stores. Everything here is pure:
//! [`PackWriter`] writes to any `io::Write`, the parsers read byte slices.

use std::io::{self, Write};

use super::codec::{put_uvarint, CodecError, Cursor};
use super::crypto::{AgentKeys, SealDefect};

pub const PACK_MAGIC: &[u8; 8] = b"HDRPACK3";
pub const FOOTER_MAGIC: &[u8; 8] = b"HDRPEND3";
pub const HEADER_LEN: u64 = 16;
pub const FOOTER_LEN: u64 = 48;
const VERSION: u8 = 1;
/// Most blobs one pack may list (bounds what a trailer may claim).
pub const MAX_BLOBS: u32 = 1 << 21;
/// Longest stored trailer accepted.
const MAX_TRAILER: u32 = 256 << 20;

/// What a pack holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PackKind {
    /// Content: files (or HopsFS replicas) of at most one chunk.
    Data,
    /// Trees and block sets.
    Meta,
    /// The chunks of one bigger file.
    Solo,
}

impl PackKind {
    pub fn code(self) -> u8 {
        match self {
            PackKind::Data => 0,
            PackKind::Meta => 1,
            PackKind::Solo => 2,
        }
    }

    pub fn from_code(c: u8) -> Option<PackKind> {
        Some(match c {
            0 => PackKind::Data,
            1 => PackKind::Meta,
            2 => PackKind::Solo,
            _ => return None,
        })
    }
}

/// What one blob in a pack is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BlobKind {
    /// The whole content of a file (or replica unit) of at most one chunk.
    Data,
    /// A tree node, block-set page or delta page.
    Meta,
    /// One chunk of a solo pack's unit, in order.
    Chunk,
}

impl BlobKind {
    pub fn code(self) -> u8 {
        match self {
            BlobKind::Data => 0,
            BlobKind::Meta => 1,
            BlobKind::Chunk => 2,
        }
    }

    pub fn from_code(c: u8) -> Option<BlobKind> {
        Some(match c {
            0 => BlobKind::Data,
            1 => BlobKind::Meta,
            2 => BlobKind::Chunk,
            _ => return None,
        })
    }
}

/// One blob of a pack and where it is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PackEntry {
    pub kind: BlobKind,
    pub id: [u8; 32],
    /// From the start of the pack object.
    pub offset: u64,
    pub stored_len: u32,
    /// Uncompressed length.
    pub raw_len: u32,
}

/// A solo pack's unit: the file content its chunks make up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Unit {
    pub id: [u8; 32],
    pub len: u64,
}

/// A pack's table of contents.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Trailer {
    pub kind: PackKind,
    pub unit: Option<Unit>,
    pub entries: Vec<PackEntry>,
}

/// The last 48 bytes of a pack.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Footer {
    pub trailer_len: u32,
    pub count: u32,
    pub trailer_hash: [u8; 32],
}

impl Footer {
    /// Where the trailer starts in a pack of `size` bytes.
    pub fn trailer_offset(&self, size: u64) -> u64 {
        size - FOOTER_LEN - u64::from(self.trailer_len)
    }
}

/// Why a pack (or part of one) is not what it should be; offsets are from the start of the
/// object.
#[derive(Debug, thiserror::Error)]
pub enum PackDefect {
    #[error("{size} bytes is too short for a pack (header and footer take {min})")]
    TooShort { size: u64, min: u64 },
    #[error("no pack header at byte 0 (magic or version wrong)")]
    BadHeader,
    #[error("footer at byte {offset}: {reason}")]
    BadFooter { offset: u64, reason: String },
    #[error(
        "trailer at byte {offset} does not match the hash in the footer (truncated or damaged)"
    )]
    TrailerHash { offset: u64 },
    #[error("trailer at byte {offset} does not authenticate: {defect}")]
    TrailerSealed { offset: u64, defect: SealDefect },
    #[error("trailer at byte {offset} does not decompress: {reason}")]
    TrailerUndecodable { offset: u64, reason: String },
    #[error("trailer at byte {offset}: {source}")]
    TrailerFormat {
        offset: u64,
        #[source]
        source: CodecError,
    },
    #[error("trailer at byte {offset}: {reason}")]
    Layout { offset: u64, reason: String },
}

/// Writes a pack: the header at once, each blob as it comes, the trailer and footer at
/// [`PackWriter::finish`].
pub struct PackWriter<W: Write> {
    out: W,
    kind: PackKind,
    offset: u64,
    entries: Vec<PackEntry>,
}

impl<W: Write> PackWriter<W> {
    pub fn new(mut out: W, kind: PackKind) -> io::Result<PackWriter<W>> {
        let mut header = [0u8; HEADER_LEN as usize];
        header[..8].copy_from_slice(PACK_MAGIC);
        header[8] = VERSION;
        header[9] = kind.code();
        out.write_all(&header)?;
        Ok(PackWriter {
            out,
            kind,
            offset: HEADER_LEN,
            entries: Vec::new(),
        })
    }

    pub fn kind(&self) -> PackKind {
        self.kind
    }

    /// Bytes written so far.
    pub fn len(&self) -> u64 {
        self.offset
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn count(&self) -> usize {
        self.entries.len()
    }

    /// Appends one stored blob (compressed, sealed when encrypted); returns its entry.
    pub fn add(
        &mut self,
        kind: BlobKind,
        id: [u8; 32],
        stored: &[u8],
        raw_len: u32,
    ) -> io::Result<&PackEntry> {
        if self.entries.len() as u32 >= MAX_BLOBS {
            return Err(io::Error::other("pack full: too many blobs"));
        }
        let stored_len =
            u32::try_from(stored.len()).map_err(|_| io::Error::other("blob longer than 4 GiB"))?;
        self.out.write_all(stored)?;
        self.entries.push(PackEntry {
            kind,
            id,
            offset: self.offset,
            stored_len,
            raw_len,
        });
        self.offset += u64::from(stored_len);
        Ok(self.entries.last().expect("just pushed"))
    }

    /// Writes the trailer and footer (`key` is the pack's object key: the trailer's associated
    /// data when `keys` seals it); returns the output, the table of contents and the size.
    pub fn finish(
        mut self,
        unit: Option<Unit>,
        key: &str,
        keys: Option<&AgentKeys>,
    ) -> io::Result<(W, Trailer, u64)> {
        let trailer = Trailer {
            kind: self.kind,
            unit,
            entries: self.entries,
        };
        let plain = encode_trailer(&trailer);
        let frame = zstd::bulk::compress(&plain, 3)?;
        let stored = match keys {
            Some(k) => {
                let mut sealed = Vec::new();
                k.seal_into(&trailer_aad(key), &frame, &mut sealed)
                    .ok_or_else(|| io::Error::other("no data key to seal the pack's trailer with"))?
                    .map_err(|e| io::Error::other(e.to_string()))?;
                sealed
            }
            None => frame,
        };
        let trailer_len = u32::try_from(stored.len())
            .ok()
            .filter(|&n| n <= MAX_TRAILER)
            .ok_or_else(|| io::Error::other("pack trailer too long"))?;
        self.out.write_all(&stored)?;
        let mut footer = Vec::with_capacity(FOOTER_LEN as usize);
        footer.extend_from_slice(&trailer_len.to_le_bytes());
        footer.extend_from_slice(&(trailer.entries.len() as u32).to_le_bytes());
        footer.extend_from_slice(blake3::hash(&stored).as_bytes());
        footer.extend_from_slice(FOOTER_MAGIC);
        self.out.write_all(&footer)?;
        let size = self.offset + u64::from(trailer_len) + FOOTER_LEN;
        Ok((self.out, trailer, size))
    }
}

fn trailer_aad(key: &str) -> String {
    format!("{key}#trailer")
}

fn encode_trailer(t: &Trailer) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + t.entries.len() * 40);
    out.push(VERSION);
    out.push(t.kind.code());
    if let Some(u) = &t.unit {
        out.extend_from_slice(&u.id);
        put_uvarint(&mut out, u.len);
    }
    put_uvarint(&mut out, t.entries.len() as u64);
    for e in &t.entries {
        out.push(e.kind.code());
        out.extend_from_slice(&e.id);
        put_uvarint(&mut out, u64::from(e.stored_len));
        put_uvarint(&mut out, u64::from(e.raw_len));
    }
    out
}

/// Checks the 16-byte header at the start of a pack.
pub fn parse_header(bytes: &[u8]) -> Result<PackKind, PackDefect> {
    if bytes.len() < HEADER_LEN as usize
        || &bytes[..8] != PACK_MAGIC
        || bytes[8] != VERSION
        || bytes[10..HEADER_LEN as usize].iter().any(|&b| b != 0)
    {
        return Err(PackDefect::BadHeader);
    }
    PackKind::from_code(bytes[9]).ok_or(PackDefect::BadHeader)
}

/// Reads the footer from the last [`FOOTER_LEN`] bytes of a pack of `size` bytes.
pub fn parse_footer(tail: &[u8], size: u64) -> Result<Footer, PackDefect> {
    let min = HEADER_LEN + FOOTER_LEN;
    if size < min {
        return Err(PackDefect::TooShort { size, min });
    }
    let offset = size - FOOTER_LEN;
    let bad = |reason: &str| PackDefect::BadFooter {
        offset,
        reason: reason.to_string(),
    };
    if tail.len() != FOOTER_LEN as usize {
        return Err(bad("short read"));
    }
    if &tail[40..48] != FOOTER_MAGIC {
        return Err(bad("no footer magic (truncated or not a pack)"));
    }
    let trailer_len = u32::from_le_bytes(tail[0..4].try_into().expect("4"));
    let count = u32::from_le_bytes(tail[4..8].try_into().expect("4"));
    if trailer_len > MAX_TRAILER || u64::from(trailer_len) > size - min {
        return Err(bad(&format!(
            "trailer length {trailer_len} does not fit in {size} bytes"
        )));
    }
    if count > MAX_BLOBS {
        return Err(bad(&format!("{count} blobs is more than a pack holds")));
    }
    Ok(Footer {
        trailer_len,
        count,
        trailer_hash: tail[8..40].try_into().expect("32"),
    })
}

/// Opens and decodes a pack's trailer (`stored`, as the footer locates it in a pack of `size`
/// bytes under object key `key`) and checks that its blobs tile the pack exactly.
pub fn parse_trailer(
    stored: &[u8],
    footer: &Footer,
    size: u64,
    key: &str,
    keys: Option<&AgentKeys>,
) -> Result<Trailer, PackDefect> {
    let offset = footer.trailer_offset(size);
    if stored.len() != footer.trailer_len as usize
        || blake3::hash(stored).as_bytes() != &footer.trailer_hash
    {
        return Err(PackDefect::TrailerHash { offset });
    }
    let opened;
    let frame = match keys {
        Some(k) => {
            let mut out = Vec::new();
            k.open_into(&trailer_aad(key), stored, &mut out)
                .map_err(|defect| PackDefect::TrailerSealed { offset, defect })?;
            opened = out;
            &opened[..]
        }
        None => stored,
    };
    let limit = 64 + footer.count as usize * 48;
    let plain =
        zstd::bulk::decompress(frame, limit).map_err(|e| PackDefect::TrailerUndecodable {
            offset,
            reason: e.to_string(),
        })?;
    let fmt = |source| PackDefect::TrailerFormat { offset, source };
    let mut c = Cursor::new(&plain);
    if c.u8("version").map_err(fmt)? != VERSION {
        return Err(fmt(c.error("unknown trailer version")));
    }
    let kind = PackKind::from_code(c.u8("pack kind").map_err(fmt)?)
        .ok_or_else(|| fmt(c.error("unknown pack kind")))?;
    let unit = match kind {
        PackKind::Solo => Some(Unit {
            id: c.id("unit id").map_err(fmt)?,
            len: c.uvarint("unit length").map_err(fmt)?,
        }),
        _ => None,
    };
    let count = c.bounded(u64::from(MAX_BLOBS), "count").map_err(fmt)?;
    if count != u64::from(footer.count) {
        return Err(PackDefect::Layout {
            offset,
            reason: format!("lists {count} blobs, the footer says {}", footer.count),
        });
    }
    let mut entries = Vec::with_capacity(count as usize);
    let mut at = HEADER_LEN;
    for _ in 0..count {
        let kind = BlobKind::from_code(c.u8("blob kind").map_err(fmt)?)
            .ok_or_else(|| fmt(c.error("unknown blob kind")))?;
        let id = c.id("blob id").map_err(fmt)?;
        let stored_len = c
            .bounded(u64::from(u32::MAX), "stored length")
            .map_err(fmt)? as u32;
        let raw_len = c.bounded(u64::from(u32::MAX), "raw length").map_err(fmt)? as u32;
        entries.push(PackEntry {
            kind,
            id,
            offset: at,
            stored_len,
            raw_len,
        });
        at += u64::from(stored_len);
    }
    if !c.is_empty() {
        return Err(fmt(c.error("bytes after the last blob")));
    }
    if at != offset {
        return Err(PackDefect::Layout {
            offset,
            reason: format!("the blobs end at byte {at}, the trailer starts at byte {offset}"),
        });
    }
    if let Some(u) = &unit {
        let total: u64 = entries.iter().map(|e| u64::from(e.raw_len)).sum();
        if total != u.len || entries.iter().any(|e| e.kind != BlobKind::Chunk) {
            return Err(PackDefect::Layout {
                offset,
                reason: format!(
                    "solo pack chunks add up to {total} bytes, its unit has {}",
                    u.len
                ),
            });
        }
    }
    Ok(Trailer {
        kind,
        unit,
        entries,
    })
}

/// Reads a whole pack held in memory: header, footer and trailer.
pub fn parse(bytes: &[u8], key: &str, keys: Option<&AgentKeys>) -> Result<Trailer, PackDefect> {
    let size = bytes.len() as u64;
    let footer = parse_footer(
        &bytes[bytes.len().saturating_sub(FOOTER_LEN as usize)..],
        size,
    )?;
    let kind = parse_header(bytes)?;
    let start = footer.trailer_offset(size) as usize;
    let trailer = parse_trailer(
        &bytes[start..start + footer.trailer_len as usize],
        &footer,
        size,
        key,
        keys,
    )?;
    if trailer.kind != kind {
        return Err(PackDefect::BadHeader);
    }
    Ok(trailer)
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "packs/ab/ab000000000000000000000000000000";

    fn keyring() -> AgentKeys {
        let mut k = AgentKeys::new(&[7u8; 32]);
        k.add_data_key(1, &[9u8; 32]);
        k
    }

    fn sample(keys: Option<&AgentKeys>) -> (Vec<u8>, Trailer) {
        let mut w = PackWriter::new(Vec::new(), PackKind::Data).unwrap();
        for i in 0..5u8 {
            let stored = vec![i; 10 + i as usize];
            w.add(BlobKind::Data, [i; 32], &stored, 100 + i as u32)
                .unwrap();
        }
        let (bytes, trailer, size) = w.finish(None, KEY, keys).unwrap();
        assert_eq!(size, bytes.len() as u64);
        (bytes, trailer)
    }

    #[test]
    fn round_trip_plain_and_sealed() {
        for keys in [None, Some(keyring())] {
            let (bytes, written) = sample(keys.as_ref());
            let read = parse(&bytes, KEY, keys.as_ref()).unwrap();
            assert_eq!(read, written);
            assert_eq!(read.entries[0].offset, HEADER_LEN);
            let e = &read.entries[3];
            assert_eq!(
                &bytes[e.offset as usize..(e.offset + e.stored_len as u64) as usize],
                &[3u8; 13][..]
            );
        }
    }

    #[test]
    fn a_sealed_trailer_is_bound_to_its_pack_key() {
        let k = keyring();
        let (bytes, _) = sample(Some(&k));
        let e = parse(
            &bytes,
            "packs/cd/cd000000000000000000000000000000",
            Some(&k),
        )
        .unwrap_err();
        assert!(matches!(e, PackDefect::TrailerSealed { .. }), "{e}");
    }

    #[test]
    fn every_truncation_is_detected() {
        let (bytes, _) = sample(None);
        for len in 0..bytes.len() {
            let cut = &bytes[..len];
            assert!(
                parse(cut, KEY, None).is_err(),
                "truncated to {len} bytes read"
            );
        }
    }

    #[test]
    fn every_flipped_bit_outside_the_blobs_is_detected() {
        let (bytes, t) = sample(None);
        let blobs_end = t
            .entries
            .last()
            .map(|e| e.offset + e.stored_len as u64)
            .unwrap();
        for i in (0..bytes.len()).filter(|&i| i < HEADER_LEN as usize || i as u64 >= blobs_end) {
            for bit in 0..8 {
                let mut b = bytes.clone();
                b[i] ^= 1 << bit;
                assert!(
                    parse(&b, KEY, None).is_err(),
                    "bit {bit} of byte {i} flipped, still read"
                );
            }
        }
    }

    #[test]
    fn errors_name_the_offset() {
        let (mut bytes, t) = sample(None);
        let size = bytes.len() as u64;
        let footer = parse_footer(&bytes[bytes.len() - 48..], size).unwrap();
        let at = footer.trailer_offset(size);
        assert!(at > t.entries[4].offset);
        bytes[at as usize] ^= 1;
        let e = parse(&bytes, KEY, None).unwrap_err();
        assert!(e.to_string().contains(&format!("byte {at}")), "{e}");
        let e = parse_footer(&[0u8; 48], 100).unwrap_err();
        assert!(e.to_string().contains("footer at byte 52"), "{e}");
    }

    #[test]
    fn a_solo_pack_names_its_unit_and_must_add_up() {
        let mut w = PackWriter::new(Vec::new(), PackKind::Solo).unwrap();
        w.add(BlobKind::Chunk, [1; 32], b"aaaa", 4096).unwrap();
        w.add(BlobKind::Chunk, [2; 32], b"bb", 10).unwrap();
        let unit = Unit {
            id: [9; 32],
            len: 4106,
        };
        let (bytes, _, _) = w.finish(Some(unit), KEY, None).unwrap();
        assert_eq!(parse(&bytes, KEY, None).unwrap().unit, Some(unit));
        let mut w = PackWriter::new(Vec::new(), PackKind::Solo).unwrap();
        w.add(BlobKind::Chunk, [1; 32], b"aaaa", 4096).unwrap();
        let (bytes, _, _) = w
            .finish(
                Some(Unit {
                    id: [9; 32],
                    len: 5,
                }),
                KEY,
                None,
            )
            .unwrap();
        let e = parse(&bytes, KEY, None).unwrap_err();
        assert!(e.to_string().contains("add up"), "{e}");
    }
}
