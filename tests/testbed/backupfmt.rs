//! The test-bed's NDB backup files, in the real binary layout (BackupFormat): a 48-byte file
//! header (`NDBBCKUP`, format version 6.3.11, section type 1 of 9 words, the file type — 1 ctl,
//! 2 log, 3 data —, the backup id, two keys, the byte-order word 0x12345678 in the host's order,
//! the node's version), then big-endian sections whose lengths count their own two words:
//! - `.ctl`: TABLE_LIST (4) of every dictionary object's id, one TABLE_DESCRIPTION (5) per
//!   object (its object type: 2 user table, 3 unique hash index, 6 ordered index, 20
//!   tablespace, 21 logfile group, 22 data file, 23 undo file, 25 foreign key), GCP_ENTRY (6)
//!   with the stop GCP minus one, then one FRAGMENT_INFO (7) per fragment of every table;
//! - `.Data`: per fragment FRAGMENT_HEADER (2), records (a length in words, then the row), a 0
//!   word, FRAGMENT_FOOTER (3) with the record count;
//! - `.log` (SNAPSHOTEND, redo): entries (length, table, event 0 insert / 1 delete / 2 update
//!   with bit 0x10000 when a GCI word follows the data, fragment, data) and a final 0 word.
//!
//! What the real tools keep inside the sections — the dictionary's SimpleProperties, the packed
//! rows, the log's attribute words — is the test-bed's own: a byte count word then the text
//! (`table db tbl`, `db\ttbl\tpk\tval`, `U\tdb\ttbl\tpk\tval`), padded to whole words.
//!
//! Compressed backups (CompressedBackup) are AZ31 containers: the fixed 512-byte header, one
//! raw DEFLATE stream, the content's CRC-32 and size (little-endian), `DBDN`, zeros to a
//! multiple of 512. Encrypted ones (`ENCRYPT PASSWORD`) are NDBXFRM1 containers: a 512-byte
//! header (magic, endian marker, sizes, flags AES-256-CBC + PBKDF2-SHA256 + PKCS padding, and
//! deflate when compressed, the 32-byte salt), the payload, a 56-byte trailer ending with the
//! magic (the content's size and CRC-32), padded to a multiple of 512. The cipher itself is a
//! stand-in (a BLAKE3 key stream of password and salt over the PKCS#7-padded content): the
//! container is real, the encryption is not.

use anyhow::{bail, Context, Result};
use std::io::{Read, Write};
use std::path::Path;

pub const MAGIC: &[u8; 8] = b"NDBBCKUP";
/// The first and last bytes of an encrypted backup file.
pub const XFRM_MAGIC: &[u8; 8] = b"NDBXFRM1";
const BACKUP_VERSION: u32 = 0x0006_030B;
const ENDIAN: u64 = 0xFEDC_BA98_7654_3210;

const TABLE_LIST: u32 = 4;
const TABLE_DESCRIPTION: u32 = 5;
const GCP_ENTRY: u32 = 6;
const FRAGMENT_INFO: u32 = 7;
const FRAGMENT_HEADER: u32 = 2;
const FRAGMENT_FOOTER: u32 = 3;

/// The fixed header of an AZ31 file (ndb_az31).
fn az31_header() -> [u8; 512] {
    let mut h = [0u8; 512];
    h[..4].copy_from_slice(&[0xFE, 3, 1, 16]);
    h[6] = 2;
    h[22] = 2;
    h[77] = 1;
    h
}

/// What a file holds, as the test-bed reads it back.
pub struct Contents {
    /// The first line: `ctl <backup> <stop gcp>`, `data <backup>` or `log <backup>`.
    pub head: String,
    /// Dictionary lines, rows or log lines.
    pub lines: Vec<String>,
}

impl Contents {
    /// The head line then the others (what the readers iterate).
    pub fn into_lines(self) -> Vec<String> {
        std::iter::once(self.head).chain(self.lines).collect()
    }
}

/// A file's words.
struct Words(Vec<u8>);

impl Words {
    fn header(file_type: u32, backup_id: u32, ndb_version: u32) -> Words {
        let mut w = Words(MAGIC.to_vec());
        w.put(&[
            BACKUP_VERSION,
            1,
            9,
            file_type,
            backup_id,
            0x5A5A_0001,
            0x5A5A_0002,
        ]);
        w.0.extend_from_slice(&0x1234_5678u32.to_ne_bytes());
        w.put(&[ndb_version, 0x0008_0028]);
        w
    }
    fn put(&mut self, words: &[u32]) {
        for x in words {
            self.0.extend_from_slice(&x.to_be_bytes());
        }
    }
    /// The test-bed's payload: a byte count, then the bytes padded to a word.
    fn text(&mut self, s: &str) {
        self.put(&[s.len() as u32]);
        self.0.extend_from_slice(s.as_bytes());
        self.0.resize(self.0.len().next_multiple_of(4), 0);
    }
}

fn text_words(s: &str) -> u32 {
    1 + (s.len() as u32).div_ceil(4)
}

/// The object type of a dictionary line (`table`, `index`, `fk`, `disk`).
fn object_type(line: &str) -> u32 {
    let w: Vec<&str> = line.split(' ').collect();
    match w.as_slice() {
        ["table", ..] => 2,
        ["index", .., "1"] => 3,
        ["index", ..] => 6,
        ["fk", ..] => 25,
        ["disk", "tablespace", ..] => 20,
        ["disk", "logfile_group", ..] => 21,
        ["disk", "datafile", ..] => 22,
        ["disk", ..] => 23,
        _ => 0,
    }
}

/// The dictionary ids of the tables: a table's id is its line's place in the dictionary.
pub fn table_ids(dict: &[String]) -> std::collections::HashMap<(String, String), u32> {
    dict.iter()
        .enumerate()
        .filter_map(|(i, l)| match l.split(' ').collect::<Vec<_>>().as_slice() {
            ["table", d, t] => Some(((d.to_string(), t.to_string()), i as u32)),
            _ => None,
        })
        .collect()
}

/// A `.ctl` file: the dictionary, the GCPs, `fragments` fragments of every table.
pub fn ctl(
    backup_id: u32,
    ndb_version: u32,
    dict: &[String],
    start_gcp: u32,
    stop_gcp: u32,
    fragments: u32,
) -> Vec<u8> {
    let mut w = Words::header(1, backup_id, ndb_version);
    let n = dict.len() as u32;
    w.put(&[TABLE_LIST, 2 + n]);
    w.put(&(0..n).collect::<Vec<_>>());
    for l in dict {
        w.put(&[TABLE_DESCRIPTION, 3 + text_words(l), object_type(l)]);
        w.text(l);
    }
    w.put(&[GCP_ENTRY, 4, start_gcp, stop_gcp - 1]);
    for (i, l) in dict.iter().enumerate() {
        if object_type(l) == 2 {
            for f in 0..fragments {
                w.put(&[FRAGMENT_INFO, 8, i as u32, f, 0, 0, 0, 0]);
            }
        }
    }
    w.0
}

/// A `.Data` file: fragment `fragment` of every table, with its rows (`db\ttbl\tpk\tval`).
pub fn data(
    backup_id: u32,
    ndb_version: u32,
    dict: &[String],
    fragment: u32,
    rows: &[String],
) -> Result<Vec<u8>> {
    let ids = table_ids(dict);
    // Fragments in the order of the tables' names.
    let mut by_table: std::collections::BTreeMap<(&str, &str, u32), Vec<&str>> = ids
        .iter()
        .map(|((d, t), &i)| ((d.as_str(), t.as_str(), i), Vec::new()))
        .collect();
    for r in rows {
        let mut it = r.splitn(3, '\t');
        let (Some(d), Some(t)) = (it.next(), it.next()) else {
            bail!("not a row: {r:?}");
        };
        let Some(id) = ids.get(&(d.to_string(), t.to_string())) else {
            bail!("a row of {d}.{t}, a table the dictionary does not hold");
        };
        let (d, t) = ids
            .get_key_value(&(d.to_string(), t.to_string()))
            .map(|((d, t), _)| (d.as_str(), t.as_str()))
            .expect("found above");
        by_table
            .entry((d, t, *id))
            .or_default()
            .push(r.trim_end_matches('\n'));
    }
    let mut w = Words::header(3, backup_id, ndb_version);
    for ((_, _, id), rows) in by_table {
        w.put(&[FRAGMENT_HEADER, 5, id, fragment, 0]);
        for r in &rows {
            w.put(&[text_words(r)]);
            w.text(r);
        }
        w.put(&[0, FRAGMENT_FOOTER, 6, id, fragment, rows.len() as u32, 0]);
    }
    Ok(w.0)
}

/// A redo `.log` file: one entry per line (`U|I|D\tdb\ttbl\tpk[\tval]`), the GCI after the
/// first entry's data, then the end marker.
pub fn log(
    backup_id: u32,
    ndb_version: u32,
    dict: &[String],
    fragment: u32,
    lines: &[String],
    gci: u32,
) -> Result<Vec<u8>> {
    let ids = table_ids(dict);
    let mut w = Words::header(2, backup_id, ndb_version);
    for (i, l) in lines.iter().enumerate() {
        let l = l.trim_end_matches('\n');
        let f: Vec<&str> = l.splitn(4, '\t').collect();
        let (Some(op), Some(d), Some(t)) = (f.first(), f.get(1), f.get(2)) else {
            bail!("not a log line: {l:?}");
        };
        let Some(id) = ids.get(&(d.to_string(), t.to_string())) else {
            bail!("a change of {d}.{t}, a table the dictionary does not hold");
        };
        let event = match *op {
            "I" => 0,
            "D" => 1,
            _ => 2,
        };
        let with_gci = i == 0;
        let len = 3 + text_words(l) + u32::from(with_gci);
        w.put(&[
            len,
            *id,
            event | if with_gci { 0x10000 } else { 0 },
            fragment,
        ]);
        w.text(l);
        if with_gci {
            w.put(&[gci]);
        }
    }
    w.put(&[0]);
    Ok(w.0)
}

/// Wraps a file as the data node writes it: plain, AZ31 (compressed) or NDBXFRM1 (encrypted).
pub fn seal(plain: Vec<u8>, compressed: bool, password: Option<&str>) -> Result<Vec<u8>> {
    let crc = crc_fast::checksum(crc_fast::CrcAlgorithm::Crc32IsoHdlc, &plain) as u32;
    let size = plain.len() as u64;
    let content = if compressed {
        let mut e = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(&plain)?;
        e.finish()?
    } else {
        plain
    };
    let Some(pw) = password else {
        if !compressed {
            return Ok(content);
        }
        let mut f = az31_header().to_vec();
        f.extend(content);
        f.extend_from_slice(&crc.to_le_bytes());
        f.extend_from_slice(&(size as u32).to_le_bytes());
        f.extend_from_slice(b"DBDN");
        f.resize(f.len().next_multiple_of(512), 0);
        return Ok(f);
    };
    let salt: [u8; 32] = *blake3::hash(&content).as_bytes();
    let mut flags: u64 = 0x1000 | 0x10000 | 0x10_0000;
    if compressed {
        flags |= 0x100;
    }
    let mut f = XFRM_MAGIC.to_vec();
    f.extend_from_slice(&ENDIAN.to_le_bytes());
    f.extend_from_slice(&512u32.to_le_bytes()); // header size
    f.extend_from_slice(&160u32.to_le_bytes()); // fixed header size
    f.extend_from_slice(&[0; 8]);
    f.extend_from_slice(&flags.to_le_bytes());
    f.extend_from_slice(&0x0016_0A0Cu32.to_le_bytes()); // writer's version
    f.extend_from_slice(&32u32.to_le_bytes()); // octets (one salt)
    f.extend_from_slice(&512u32.to_le_bytes()); // file block size
    f.extend_from_slice(&80u32.to_le_bytes()); // trailer max size
    f.resize(132, 0);
    for v in [100_000u32, 32, 1, 0, 0, 0, 0] {
        f.extend_from_slice(&v.to_le_bytes());
    }
    assert_eq!(f.len(), 160);
    f.extend_from_slice(&salt);
    f.resize(512, 0);
    // PKCS#7 to whole 16-byte blocks, then the stand-in cipher.
    let mut padded = content;
    let pad = 16 - padded.len() % 16;
    padded.extend(std::iter::repeat_n(pad as u8, pad));
    f.extend(xor(&padded, pw, &salt));
    let trailer_size = (f.len() + 56).next_multiple_of(512) - f.len();
    f.resize(f.len() + trailer_size - 56, 0);
    f.extend_from_slice(&0x30u64.to_le_bytes());
    f.extend_from_slice(&size.to_le_bytes());
    f.extend_from_slice(&[0; 4]);
    f.extend_from_slice(&crc.to_le_bytes());
    f.extend_from_slice(&[0; 8]);
    f.extend_from_slice(&56u32.to_le_bytes());
    f.extend_from_slice(&(trailer_size as u32).to_le_bytes());
    f.extend_from_slice(&ENDIAN.to_le_bytes());
    f.extend_from_slice(XFRM_MAGIC);
    Ok(f)
}

fn xor(data: &[u8], password: &str, salt: &[u8]) -> Vec<u8> {
    let mut h = blake3::Hasher::new_derive_key("hopsdr test-bed NDBXFRM1");
    h.update(password.as_bytes());
    h.update(salt);
    let mut stream = vec![0u8; data.len()];
    h.finalize_xof().fill(&mut stream);
    data.iter().zip(stream).map(|(a, b)| a ^ b).collect()
}

/// Why a backup file could not be read (the encryption cases as ndb_restore tells them).
#[derive(Debug)]
pub enum OpenError {
    /// Encrypted, and no password given.
    Encrypted,
    /// A password given for a file that is not encrypted.
    NotEncrypted,
    /// The password does not decrypt it.
    WrongPassword,
    Other(anyhow::Error),
}

impl std::fmt::Display for OpenError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            OpenError::Encrypted => f.write_str("File is encrypted but no decryption requested."),
            OpenError::NotEncrypted => f.write_str("Decryption requested but file not encrypted."),
            OpenError::WrongPassword => {
                f.write_str("Can not read decrypted file. Might be wrong password.")
            }
            OpenError::Other(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for OpenError {}

fn inflate(raw: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    flate2::read::DeflateDecoder::new(raw)
        .read_to_end(&mut out)
        .ok()?;
    Some(out)
}

/// Reads a file written by `seal` with `password` (`None`: not encrypted), as lines.
pub fn open_with(p: &Path, password: Option<&str>) -> std::result::Result<Vec<String>, OpenError> {
    let raw = std::fs::read(p).map_err(|e| OpenError::Other(e.into()))?;
    let corrupt = |m: &str| OpenError::Other(anyhow::anyhow!("Corrupted data: {m}"));
    let encrypted = raw.starts_with(XFRM_MAGIC);
    let plain = match (encrypted, password) {
        (true, None) => return Err(OpenError::Encrypted),
        (false, Some(_)) => return Err(OpenError::NotEncrypted),
        (true, Some(pw)) => {
            if raw.len() < 512 + 56 || !raw.ends_with(XFRM_MAGIC) {
                return Err(corrupt("truncated file"));
            }
            let flags = u64::from_le_bytes(raw[32..40].try_into().expect("8 bytes"));
            let t = &raw[raw.len() - 56..];
            let trailer_size = u32::from_le_bytes(t[36..40].try_into().expect("4")) as usize;
            let size = u64::from_le_bytes(t[8..16].try_into().expect("8"));
            let crc = u32::from_le_bytes(t[20..24].try_into().expect("4"));
            let Some(payload) = raw.get(512..raw.len().saturating_sub(trailer_size)) else {
                return Err(corrupt("truncated file"));
            };
            let salt = &raw[160..192];
            let padded = xor(payload, pw, salt);
            let pad = padded.last().copied().unwrap_or(0) as usize;
            if !(1..=16).contains(&pad)
                || padded.len() < pad
                || padded[padded.len() - pad..]
                    .iter()
                    .any(|&b| b as usize != pad)
            {
                return Err(OpenError::WrongPassword);
            }
            let content = &padded[..padded.len() - pad];
            let plain = if flags & 0x100 != 0 {
                inflate(content).ok_or(OpenError::WrongPassword)?
            } else {
                content.to_vec()
            };
            let actual = crc_fast::checksum(crc_fast::CrcAlgorithm::Crc32IsoHdlc, &plain) as u32;
            if plain.len() as u64 != size || actual != crc || !plain.starts_with(MAGIC) {
                return Err(OpenError::WrongPassword);
            }
            plain
        }
        (false, None) if raw.starts_with(&[0xFE, 3, 1]) => {
            let h = az31_header();
            if raw.len() < 512 + 12 || raw[..512] != h[..] {
                return Err(corrupt("bad file header"));
            }
            let end = raw.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
            if end < 524 || &raw[end - 4..end] != b"DBDN" {
                return Err(corrupt("truncated file"));
            }
            let plain =
                inflate(&raw[512..end - 12]).ok_or_else(|| corrupt("bad compressed data"))?;
            let crc = u32::from_le_bytes(raw[end - 12..end - 8].try_into().expect("4"));
            if crc_fast::checksum(crc_fast::CrcAlgorithm::Crc32IsoHdlc, &plain) as u32 != crc {
                return Err(corrupt("checksum mismatch"));
            }
            plain
        }
        (false, None) => raw,
    };
    read_plain(&plain)
        .map_err(OpenError::Other)
        .map(Contents::into_lines)
}

/// A cursor over a plain file's big-endian words.
struct Cursor<'a> {
    b: &'a [u8],
    at: usize,
}

impl Cursor<'_> {
    fn word(&mut self) -> Result<u32> {
        let w = self
            .b
            .get(self.at..self.at + 4)
            .context("Corrupted data: truncated file")?;
        self.at += 4;
        Ok(u32::from_be_bytes(w.try_into().expect("4 bytes")))
    }
    fn text(&mut self) -> Result<String> {
        let n = self.word()? as usize;
        let b = self
            .b
            .get(self.at..self.at + n)
            .context("Corrupted data: truncated file")?;
        self.at += n.next_multiple_of(4);
        String::from_utf8(b.to_vec()).context("Corrupted data: not text")
    }
    fn done(&self) -> bool {
        self.at >= self.b.len()
    }
}

fn read_plain(b: &[u8]) -> Result<Contents> {
    if !b.starts_with(MAGIC) || b.len() < 48 {
        bail!("Corrupted data: bad file header");
    }
    let mut c = Cursor { b, at: 8 };
    let _version = c.word()?;
    let (_, _, file_type, backup) = (c.word()?, c.word()?, c.word()?, c.word()?);
    c.at = 48;
    let mut lines = Vec::new();
    let head = match file_type {
        1 => {
            let (_, n) = (c.word()?, c.word()?);
            c.at += 4 * (n as usize - 2);
            for _ in 2..n {
                let (_, _, _) = (c.word()?, c.word()?, c.word()?);
                lines.push(c.text()?);
            }
            let (kind, _, _start, stop) = (c.word()?, c.word()?, c.word()?, c.word()?);
            if kind != GCP_ENTRY {
                bail!("Corrupted data: no GCP entry");
            }
            format!("ctl {backup} {}", stop + 1)
        }
        3 => {
            while !c.done() {
                let (kind, _, _table, _fragment, _) =
                    (c.word()?, c.word()?, c.word()?, c.word()?, c.word()?);
                if kind != FRAGMENT_HEADER {
                    bail!("Corrupted data: bad fragment header");
                }
                loop {
                    let len = c.word()? as usize;
                    if len == 0 {
                        break;
                    }
                    let record =
                        c.b.get(c.at..c.at + 4 * len)
                            .context("Corrupted data: truncated file")?;
                    lines.push(Cursor { b: record, at: 0 }.text()?);
                    c.at += 4 * len;
                }
                if c.word()? != FRAGMENT_FOOTER {
                    bail!("Corrupted data: bad fragment footer");
                }
                c.at += 20;
            }
            format!("data {backup}")
        }
        2 => {
            loop {
                let len = c.word()?;
                if len == 0 {
                    break;
                }
                let (_, event, _) = (c.word()?, c.word()?, c.word()?);
                lines.push(c.text()?);
                if event & 0x10000 != 0 {
                    c.word()?;
                }
            }
            format!("log {backup}")
        }
        t => bail!("Corrupted data: file type {t}"),
    };
    Ok(Contents { head, lines })
}
