//! Index objects (format 3): where every blob is, so that a backup learns what the repository
//! holds from a few hundred index objects instead of listing millions of keys.
//!
//! Key `index/<h>`, `h` the hex BLAKE3 (keyed with the blob-name key when encrypted) of the
//! plaintext below; stored as one zstd frame, sealed with its key as associated data when
//! encrypted. Plaintext, little-endian:
//!
//! ```text
//! "HDRIDX03" | seq u64 | written (Unix seconds) i64 | n_supersedes u32 | n_packs u32 |
//! n_entries u32 | supersedes: h [32] × n | packs: pack id [16] × n |
//! entries, sorted by id, strictly increasing, 49 bytes each:
//!   id [32] | pack number u32 (into packs) | kind u8 (0 data, 1 meta, 3 unit) |
//!   offset u32 | stored length u32 | raw length u32
//! ```
//!
//! A `unit` entry names a solo pack whole (offset 0, stored length = the pack's size, raw
//! length = the unit's). Fixed-stride sorted entries are binary-searchable without decoding.
//! An index object is written after the packs it lists are durable and before any manifest
//! that needs them. `supersedes` lists index objects this one replaces (garbage collection
//! writes a new generation, then deletes packs, then the old objects): a reader ignores a
//! superseded object even while it still exists. An id listed by several current objects is
//! read from the highest `seq` first.

use super::codec::{CodecError, Cursor};
use super::pack::BlobKind;

pub const MAGIC: &[u8; 8] = b"HDRIDX03";
pub const PREFIX: &str = "index/";
pub const ENTRY_LEN: usize = 49;
const FIXED_LEN: usize = 8 + 8 + 8 + 4 + 4 + 4;
/// Most entries one index object holds (about 12 MiB).
pub const MAX_ENTRIES: usize = 1 << 18;
/// Most packs one index object names.
pub const MAX_PACKS: usize = 1 << 20;
/// Most index objects one supersedes.
pub const MAX_SUPERSEDES: usize = 1 << 20;

/// What an index entry locates.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EntryKind {
    /// A file's content of at most one chunk, in a data pack.
    Data,
    /// A tree node or page, in a meta pack.
    Meta,
    /// A solo pack, whole: the content of one bigger file.
    Unit,
}

impl EntryKind {
    pub fn code(self) -> u8 {
        match self {
            EntryKind::Data => 0,
            EntryKind::Meta => 1,
            EntryKind::Unit => 3,
        }
    }

    pub fn from_code(c: u8) -> Option<EntryKind> {
        Some(match c {
            0 => EntryKind::Data,
            1 => EntryKind::Meta,
            3 => EntryKind::Unit,
            _ => return None,
        })
    }

    /// The index kind of a blob found in a pack's trailer (`None`: a solo pack's chunk, which
    /// the index does not list one by one).
    pub fn of_blob(k: BlobKind) -> Option<EntryKind> {
        match k {
            BlobKind::Data => Some(EntryKind::Data),
            BlobKind::Meta => Some(EntryKind::Meta),
            BlobKind::Chunk => None,
        }
    }
}

/// Where one blob (or unit) is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Location {
    pub pack: [u8; 16],
    pub kind: EntryKind,
    pub offset: u32,
    pub stored_len: u32,
    pub raw_len: u32,
}

/// One decoded index object.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct IndexObject {
    pub seq: u64,
    pub written: i64,
    /// The `h` of the index objects this one replaces.
    pub supersedes: Vec<[u8; 32]>,
    pub packs: Vec<[u8; 16]>,
    /// Sorted by id.
    pub entries: Vec<([u8; 32], u32, EntryKind, u32, u32, u32)>,
}

impl IndexObject {
    /// Builds an object from `(id, location)` pairs in any order (an id given twice keeps the
    /// last).
    pub fn build(
        seq: u64,
        written: i64,
        supersedes: Vec<[u8; 32]>,
        mut locs: Vec<([u8; 32], Location)>,
    ) -> IndexObject {
        locs.sort_by_key(|a| a.0);
        let mut deduped: Vec<([u8; 32], Location)> = Vec::with_capacity(locs.len());
        for (id, l) in locs {
            match deduped.last_mut() {
                Some(last) if last.0 == id => last.1 = l,
                _ => deduped.push((id, l)),
            }
        }
        let mut packs: Vec<[u8; 16]> = deduped.iter().map(|(_, l)| l.pack).collect();
        packs.sort();
        packs.dedup();
        let entries = deduped
            .into_iter()
            .map(|(id, l)| {
                let no = packs.binary_search(&l.pack).expect("pack listed") as u32;
                (id, no, l.kind, l.offset, l.stored_len, l.raw_len)
            })
            .collect();
        IndexObject {
            seq,
            written,
            supersedes,
            packs,
            entries,
        }
    }

    /// Each entry with its location.
    pub fn locations(&self) -> impl Iterator<Item = ([u8; 32], Location)> + '_ {
        self.entries
            .iter()
            .map(|&(id, no, kind, offset, stored_len, raw_len)| {
                (
                    id,
                    Location {
                        pack: self.packs[no as usize],
                        kind,
                        offset,
                        stored_len,
                        raw_len,
                    },
                )
            })
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(
            FIXED_LEN
                + self.supersedes.len() * 32
                + self.packs.len() * 16
                + self.entries.len() * ENTRY_LEN,
        );
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&self.seq.to_le_bytes());
        out.extend_from_slice(&self.written.to_le_bytes());
        out.extend_from_slice(&(self.supersedes.len() as u32).to_le_bytes());
        out.extend_from_slice(&(self.packs.len() as u32).to_le_bytes());
        out.extend_from_slice(&(self.entries.len() as u32).to_le_bytes());
        for s in &self.supersedes {
            out.extend_from_slice(s);
        }
        for p in &self.packs {
            out.extend_from_slice(p);
        }
        for (id, no, kind, offset, stored, raw) in &self.entries {
            out.extend_from_slice(id);
            out.extend_from_slice(&no.to_le_bytes());
            out.push(kind.code());
            out.extend_from_slice(&offset.to_le_bytes());
            out.extend_from_slice(&stored.to_le_bytes());
            out.extend_from_slice(&raw.to_le_bytes());
        }
        out
    }

    /// Decodes and checks an index object's plaintext: counts within limits, lengths exact,
    /// pack numbers in range, kinds known, ids strictly increasing. The error names the byte
    /// offset of the first bad field.
    pub fn decode(plain: &[u8]) -> Result<IndexObject, CodecError> {
        let mut c = Cursor::new(plain);
        if c.take(8, "magic")? != MAGIC {
            return Err(CodecError {
                offset: 0,
                what: "not an index object (magic)".into(),
            });
        }
        let seq = c.u64("seq")?;
        let written = c.u64("written")? as i64;
        let n_sup = c.u32("supersedes count")? as usize;
        let n_packs = c.u32("pack count")? as usize;
        let n = c.u32("entry count")? as usize;
        if n_sup > MAX_SUPERSEDES || n_packs > MAX_PACKS || n > MAX_ENTRIES {
            return Err(c.error("counts exceed the limits of an index object"));
        }
        let expected = n_sup * 32 + n_packs * 16 + n * ENTRY_LEN;
        if c.remaining() != expected {
            return Err(c.error(format!(
                "{} bytes follow the counts, {expected} expected (truncated or damaged)",
                c.remaining()
            )));
        }
        let mut supersedes = Vec::with_capacity(n_sup);
        for _ in 0..n_sup {
            supersedes.push(c.id("supersedes")?);
        }
        let mut packs = Vec::with_capacity(n_packs);
        for _ in 0..n_packs {
            packs.push(c.take(16, "pack id")?.try_into().expect("16"));
        }
        let mut entries: Vec<([u8; 32], u32, EntryKind, u32, u32, u32)> = Vec::with_capacity(n);
        for _ in 0..n {
            let at = c.offset();
            let id = c.id("id")?;
            let no = c.u32("pack number")?;
            let kind = c.u8("kind")?;
            let offset = c.u32("offset")?;
            let stored = c.u32("stored length")?;
            let raw = c.u32("raw length")?;
            let bad = |what: &str| CodecError {
                offset: at,
                what: what.to_string(),
            };
            if no as usize >= n_packs {
                return Err(bad("entry names a pack the object does not list"));
            }
            let kind = EntryKind::from_code(kind).ok_or_else(|| bad("unknown entry kind"))?;
            if entries.last().is_some_and(|last| last.0 >= id) {
                return Err(bad("entries out of order or repeated"));
            }
            entries.push((id, no, kind, offset, stored, raw));
        }
        Ok(IndexObject {
            seq,
            written,
            supersedes,
            packs,
            entries,
        })
    }
}

/// The key of the index object whose name hash is `h`.
pub fn key_of(h: &[u8; 32]) -> String {
    format!("{PREFIX}{}", blake3::Hash::from_bytes(*h).to_hex())
}

/// The name hash of an index object's key.
pub fn hash_of_key(key: &str) -> Option<[u8; 32]> {
    let hex = key.strip_prefix(PREFIX)?;
    if hex.len() != 64
        || !hex
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return None;
    }
    blake3::Hash::from_hex(hex).ok().map(|h| *h.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loc(pack: u8, offset: u32) -> Location {
        Location {
            pack: [pack; 16],
            kind: EntryKind::Data,
            offset,
            stored_len: 10,
            raw_len: 20,
        }
    }

    #[test]
    fn round_trip_sorted_with_packs_numbered() {
        let o = IndexObject::build(
            7,
            1_700_000_000,
            vec![[5; 32]],
            vec![
                ([3; 32], loc(2, 16)),
                ([1; 32], loc(9, 40)),
                ([2; 32], loc(2, 26)),
            ],
        );
        assert_eq!(o.packs, vec![[2; 16], [9; 16]]);
        let bytes = o.encode();
        assert_eq!(bytes.len(), FIXED_LEN + 32 + 32 + 3 * ENTRY_LEN);
        let back = IndexObject::decode(&bytes).unwrap();
        assert_eq!(back, o);
        let ids: Vec<_> = back.locations().map(|(id, _)| id[0]).collect();
        assert_eq!(ids, vec![1, 2, 3]);
        assert_eq!(back.locations().next().unwrap().1, loc(9, 40));
    }

    #[test]
    fn damage_is_named_with_its_offset() {
        let o = IndexObject::build(
            1,
            0,
            vec![],
            vec![([1; 32], loc(1, 16)), ([2; 32], loc(1, 26))],
        );
        let bytes = o.encode();
        // Truncated.
        let e = IndexObject::decode(&bytes[..bytes.len() - 1]).unwrap_err();
        assert!(e.what.contains("truncated"), "{e}");
        // Out of order: the second entry's id made smaller than the first.
        let second = FIXED_LEN + 16 + ENTRY_LEN;
        let mut b = bytes.clone();
        b[second..second + 32].copy_from_slice(&[0; 32]);
        let e = IndexObject::decode(&b).unwrap_err();
        assert_eq!(e.offset, second);
        assert!(e.what.contains("order"), "{e}");
        // A pack number out of range.
        let mut b = bytes.clone();
        b[FIXED_LEN + 16 + 32] = 5;
        let e = IndexObject::decode(&b).unwrap_err();
        assert_eq!(e.offset, FIXED_LEN + 16);
        // Unknown kind.
        let mut b = bytes;
        b[FIXED_LEN + 16 + 36] = 9;
        assert!(IndexObject::decode(&b).unwrap_err().what.contains("kind"));
    }

    #[test]
    fn keys_parse_back() {
        let h = [0xab; 32];
        assert_eq!(hash_of_key(&key_of(&h)), Some(h));
        assert_eq!(hash_of_key("index/ABC"), None);
        assert_eq!(hash_of_key("blobs/ab/ab"), None);
    }
}
