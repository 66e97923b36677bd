//! RonDB backup files walked as `ndb_restore` reads them, but stricter: a file is a 48-byte
//! header (`NDBBCKUP`, the format version, section type 1 of 9 words, the file type — 1 ctl,
//! 2 log, 3 data, 5 undo log —, the backup id and keys, the byte-order word 0x12345678 in the
//! data node's order, the node's versions), then, all words big-endian:
//! - `.ctl`: TABLE_LIST (type 4, its ids), one TABLE_DESCRIPTION (5) per id, GCP_ENTRY (6, four
//!   words), then FRAGMENT_INFO sections (7, eight words) to the end of the file;
//! - `.Data`: per fragment a FRAGMENT_HEADER (2, five words), records (a length in words, then
//!   the row), a 0 word, a FRAGMENT_FOOTER (3, six words) whose record count must match;
//!   EMPTY_ENTRY padding (8) between them (O_DIRECT); the file ends after a section;
//! - `.log`: entries (a length of at least 3 words, then table, event, fragment and the row's
//!   words) ending with a single 0 word, the last of the file; an undo log (SNAPSHOTSTART)
//!   repeats each entry's length after it.
//!
//! Every section length counts its own type and length words. `ndb_restore` itself accepts a
//! data file cut at a fragment boundary and a control file cut between fragment infos; this
//! walk does not. A compressed file (`CompressedBackup=1`) is an AZ31 container — a fixed
//! 512-byte header, one raw DEFLATE stream, its CRC-32 and size (little-endian), `DBDN`, zero
//! padding to a multiple of 512 — inflated here and walked; an encrypted one is an NDBXFRM1
//! container, whose header and trailer are checked (the content is sealed with the backup's
//! password). Pure: fed in pieces of any size, no I/O.

use crc_fast::{CrcAlgorithm, Digest};

/// Magic at byte 0 of a plain backup file.
const MAGIC: &[u8; 8] = b"NDBBCKUP";
/// The format version from which the header has the two version words (6.3.11).
const RAW_LCP: u32 = 0x0006_030B;
/// The byte-order word as the data node wrote it in its own order.
const BYTE_ORDER: u32 = 0x1234_5678;
/// A record or log entry longer than this many words is not a row (`MAX_TUPLE_SIZE_IN_WORDS`
/// is far below it): the length word is damaged.
const MAX_ENTRY_WORDS: u32 = 1 << 20;

/// The fixed header of an AZ31 (compressed) file.
const AZ31_HEADER: [u8; 512] = {
    let mut h = [0u8; 512];
    h[0] = 0xFE;
    h[1] = 3;
    h[2] = 1;
    h[3] = 16;
    h[6] = 2;
    h[22] = 2;
    h[77] = 1;
    h
};
/// An NDBXFRM1 (encrypted) file's magic, at its start and its end.
const XFRM_MAGIC: &[u8; 8] = b"NDBXFRM1";
/// Its fixed header and fixed trailer sizes.
const XFRM_FIXED_HEADER: u32 = 160;
const XFRM_FIXED_TRAILER: usize = 56;

/// Section types.
const FILE_HEADER: u32 = 1;
const FRAGMENT_HEADER: u32 = 2;
const FRAGMENT_FOOTER: u32 = 3;
const TABLE_LIST: u32 = 4;
const TABLE_DESCRIPTION: u32 = 5;
const GCP_ENTRY: u32 = 6;
const FRAGMENT_INFO: u32 = 7;
const EMPTY_ENTRY: u32 = 8;

/// What a backup file is, by its header (and by its name, for the expectation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileType {
    Ctl,
    Log,
    Data,
    Undo,
}

impl FileType {
    fn from_word(w: u32) -> Option<FileType> {
        Some(match w {
            1 => FileType::Ctl,
            2 => FileType::Log,
            3 => FileType::Data,
            5 => FileType::Undo,
            _ => return None,
        })
    }

    /// The type a file of this name must have: `.ctl`, `.Data`, `.log` (redo or undo log).
    pub fn of_name(name: &str) -> Option<FileType> {
        if name.ends_with(".ctl") {
            Some(FileType::Ctl)
        } else if name.ends_with(".Data") {
            Some(FileType::Data)
        } else if name.ends_with(".log") {
            Some(FileType::Log)
        } else {
            None
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            FileType::Ctl => "control (ctl)",
            FileType::Log => "log",
            FileType::Data => "data",
            FileType::Undo => "undo log",
        }
    }
}

/// How the file is wrapped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Container {
    Raw,
    /// `CompressedBackup=1`.
    Az31,
    /// `ENCRYPT PASSWORD`: only the container is checked.
    Encrypted,
}

/// Why a RonDB backup file does not read as one. Offsets are in the file's plain content.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NdbFileError {
    #[error("not a RonDB backup file: it begins {0}, not NDBBCKUP (nor a compressed or encrypted container)")]
    Magic(String),
    #[error("the file header ends early ({0} bytes)")]
    ShortHeader(usize),
    #[error("the file header's section is type {kind} of {length} words, not type 1 of {want}")]
    Header { kind: u32, length: u32, want: u32 },
    #[error("the header names file type {0}, not 1 (ctl), 2 (log), 3 (data) or 5 (undo log)")]
    Type(u32),
    #[error("the header says a {found} file, but the name is a {expected} file's")]
    WrongType {
        found: &'static str,
        expected: &'static str,
    },
    #[error("the header's byte-order word is {0:#010x}, not 0x12345678 in either order")]
    ByteOrder(u32),
    #[error("at byte {offset}: section type {found} where {expected} belongs")]
    Section {
        offset: u64,
        found: u32,
        expected: &'static str,
    },
    #[error("at byte {offset}: a {section} of {length} words")]
    Length {
        offset: u64,
        section: &'static str,
        length: u32,
    },
    #[error("the file ends at byte {offset}, inside {inside}")]
    Truncated { offset: u64, inside: &'static str },
    #[error("fragment {fragment} of table {table}: the footer counts {footer} records, the file holds {counted}")]
    Count {
        table: u32,
        fragment: u32,
        footer: u32,
        counted: u64,
    },
    #[error("fragment {fragment} of table {table}: the footer at byte {offset} names fragment {footer_fragment} of table {footer_table}")]
    Footer {
        offset: u64,
        table: u32,
        fragment: u32,
        footer_table: u32,
        footer_fragment: u32,
    },
    #[error("at byte {offset}: fragment info of fragment {fragment} of table {table}: {why}")]
    FragmentInfo {
        offset: u64,
        table: u32,
        fragment: u32,
        why: &'static str,
    },
    #[error("no fragment info for table {0}: the control file ends early")]
    NoFragments(u32),
    #[error("{0} byte(s) after the log's end marker")]
    AfterEnd(u64),
    #[error(
        "at byte {offset}: an undo log entry of {length} words is followed by the length {trailer}"
    )]
    UndoTrailer {
        offset: u64,
        length: u32,
        trailer: u32,
    },
    #[error("compressed (AZ31): {0}")]
    Az31(String),
    #[error("encrypted (NDBXFRM1): {0}")]
    Xfrm(String),
}

/// What a walked file held.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NdbSummary {
    pub file_type: Option<FileType>,
    pub container: Container,
    pub backup_id: u32,
    /// ctl: table descriptions and fragment infos; data: records; log: entries.
    pub units: u64,
}

impl NdbSummary {
    pub fn kind(&self) -> &'static str {
        match (self.container, self.file_type) {
            (Container::Encrypted, _) => "rondb file (encrypted: container checked)",
            (_, Some(FileType::Ctl)) => "rondb ctl file",
            (_, Some(FileType::Data)) => "rondb data file",
            _ => "rondb log file",
        }
    }
    pub fn units(&self) -> u64 {
        self.units
    }
}

/// Where the walk of the plain content is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// The magic and the format version.
    Magic,
    /// The rest of the header (`len` bytes: 36, or 28 before 6.3.11).
    HeaderRest {
        len: usize,
        old: bool,
    },
    TableList,
    TableIds {
        left: u64,
    },
    Descriptions {
        index: usize,
    },
    Gcp,
    FragmentInfo,
    /// Between fragments of a data file: a section's type and length.
    DataSection,
    /// A fragment header's table, fragment and checksum type.
    FragmentHeader,
    Records {
        table: u32,
        fragment: u32,
        count: u64,
    },
    Footer {
        table: u32,
        fragment: u32,
        count: u64,
    },
    LogEntry,
    /// An undo entry's repeated length.
    UndoTrailer {
        length: u32,
    },
    LogEnded,
}

impl State {
    /// The bytes the next item takes.
    fn need(self) -> usize {
        match self {
            State::Magic => 12,
            State::HeaderRest { len, .. } => len,
            State::TableList | State::DataSection => 8,
            State::TableIds { .. } => 4,
            State::Descriptions { .. } => 12,
            State::Gcp => 16,
            State::FragmentInfo => 32,
            State::FragmentHeader => 12,
            State::Records { .. } | State::LogEntry | State::UndoTrailer { .. } => 4,
            State::Footer { .. } => 24,
            State::LogEnded => 0,
        }
    }

    fn inside(self) -> &'static str {
        match self {
            State::Magic | State::HeaderRest { .. } => "the file header",
            State::TableList | State::TableIds { .. } => "the table list",
            State::Descriptions { .. } => "the table descriptions",
            State::Gcp => "the GCP entry",
            State::FragmentInfo | State::DataSection => "a section",
            State::FragmentHeader => "a fragment header",
            State::Records { .. } => "a fragment's records",
            State::Footer { .. } => "a fragment footer",
            State::LogEntry | State::UndoTrailer { .. } => "the log (no end marker)",
            State::LogEnded => "the log",
        }
    }
}

/// The walk of a plain backup file's bytes.
#[derive(Debug)]
struct Plain {
    expect: Option<FileType>,
    state: State,
    file_type: Option<FileType>,
    backup_id: u32,
    units: u64,
    /// A control file's table list, each id with its object type (once described).
    tables: Vec<(u32, u32)>,
    /// The tables fragment infos were read for, and the last (table, fragment).
    with_fragments: std::collections::BTreeSet<u32>,
    last_fragment: Option<(u32, u32)>,
    /// Bytes waiting to make a whole item.
    buf: Vec<u8>,
    /// Bytes to pass over (a record's row, a description's body).
    skip: u64,
    /// What is being passed over (for a file ending inside it).
    skipping: &'static str,
    /// Bytes consumed so far.
    offset: u64,
    after_end: u64,
    error: Option<NdbFileError>,
}

fn be(b: &[u8], word: usize) -> u32 {
    u32::from_be_bytes([
        b[word * 4],
        b[word * 4 + 1],
        b[word * 4 + 2],
        b[word * 4 + 3],
    ])
}

impl Plain {
    fn new(expect: Option<FileType>) -> Plain {
        Plain {
            expect,
            state: State::Magic,
            file_type: None,
            backup_id: 0,
            units: 0,
            tables: Vec::new(),
            with_fragments: std::collections::BTreeSet::new(),
            last_fragment: None,
            buf: Vec::new(),
            skip: 0,
            skipping: "",
            offset: 0,
            after_end: 0,
            error: None,
        }
    }

    fn feed(&mut self, mut data: &[u8]) {
        while self.error.is_none() && !data.is_empty() {
            if self.state == State::LogEnded {
                self.after_end += data.len() as u64;
                return;
            }
            if self.skip > 0 {
                let n = self.skip.min(data.len() as u64);
                self.skip -= n;
                self.offset += n;
                data = &data[n as usize..];
                continue;
            }
            let need = self.state.need();
            let take = (need - self.buf.len()).min(data.len());
            self.buf.extend_from_slice(&data[..take]);
            data = &data[take..];
            if self.buf.len() < need {
                return;
            }
            let item = std::mem::take(&mut self.buf);
            match self.step(&item) {
                Ok(()) => self.offset += item.len() as u64,
                Err(e) => self.error = Some(e),
            }
            self.buf = item;
            self.buf.clear();
        }
    }

    /// Passes over `bytes` of `what`.
    fn pass(&mut self, bytes: u64, what: &'static str) {
        self.skip = bytes;
        self.skipping = what;
    }

    /// One whole item of the current state.
    fn step(&mut self, b: &[u8]) -> Result<(), NdbFileError> {
        let at = self.offset;
        let section = |found: u32, expected: &'static str| NdbFileError::Section {
            offset: at,
            found,
            expected,
        };
        let length = |section: &'static str, length: u32| NdbFileError::Length {
            offset: at,
            section,
            length,
        };
        match self.state {
            State::Magic => {
                if &b[..8] != MAGIC {
                    return Err(NdbFileError::Magic(hex(&b[..8])));
                }
                let version = be(b, 2);
                let old = version < RAW_LCP;
                self.state = State::HeaderRest {
                    len: if old { 28 } else { 36 },
                    old,
                };
            }
            State::HeaderRest { old, .. } => {
                let want = if old { 7 } else { 9 };
                let (kind, len) = (be(b, 0), be(b, 1));
                if kind != FILE_HEADER || len != want {
                    return Err(NdbFileError::Header {
                        kind,
                        length: len,
                        want,
                    });
                }
                let t = FileType::from_word(be(b, 2)).ok_or(NdbFileError::Type(be(b, 2)))?;
                let fits = match self.expect {
                    None => true,
                    Some(FileType::Log) => matches!(t, FileType::Log | FileType::Undo),
                    Some(e) => e == t,
                };
                if !fits {
                    return Err(NdbFileError::WrongType {
                        found: t.as_str(),
                        expected: self.expect.map_or("", FileType::as_str),
                    });
                }
                self.backup_id = be(b, 3);
                let order = be(b, 6);
                if order != BYTE_ORDER && order != BYTE_ORDER.swap_bytes() {
                    return Err(NdbFileError::ByteOrder(order));
                }
                self.file_type = Some(t);
                self.state = match t {
                    FileType::Ctl => State::TableList,
                    FileType::Data => State::DataSection,
                    FileType::Log | FileType::Undo => State::LogEntry,
                };
            }
            State::TableList => {
                let (kind, len) = (be(b, 0), be(b, 1));
                if kind != TABLE_LIST {
                    return Err(section(kind, "the table list (4)"));
                }
                if len < 2 {
                    return Err(length("table list", len));
                }
                let ids = u64::from(len - 2);
                self.state = if ids == 0 {
                    State::Gcp
                } else {
                    State::TableIds { left: ids }
                };
            }
            State::TableIds { left } => {
                self.tables.push((be(b, 0), 0));
                self.state = if left > 1 {
                    State::TableIds { left: left - 1 }
                } else {
                    State::Descriptions { index: 0 }
                };
            }
            State::Descriptions { index } => {
                let (kind, len) = (be(b, 0), be(b, 1));
                if kind != TABLE_DESCRIPTION {
                    return Err(section(kind, "a table description (5)"));
                }
                if len < 3 {
                    return Err(length("table description", len));
                }
                self.tables[index].1 = be(b, 2);
                self.units += 1;
                self.pass(u64::from(len - 3) * 4, "a table description");
                self.state = if index + 1 < self.tables.len() {
                    State::Descriptions { index: index + 1 }
                } else {
                    State::Gcp
                };
            }
            State::Gcp => {
                let (kind, len) = (be(b, 0), be(b, 1));
                if kind != GCP_ENTRY {
                    return Err(section(kind, "the GCP entry (6)"));
                }
                if len != 4 {
                    return Err(length("GCP entry", len));
                }
                self.state = State::FragmentInfo;
            }
            State::FragmentInfo => {
                let (kind, len) = (be(b, 0), be(b, 1));
                if kind != FRAGMENT_INFO {
                    return Err(section(kind, "a fragment info (7)"));
                }
                if len != 8 {
                    return Err(length("fragment info", len));
                }
                let (table, fragment) = (be(b, 2), be(b, 3));
                if !self
                    .tables
                    .iter()
                    .any(|&(id, t)| id == table && is_table(t))
                {
                    return Err(NdbFileError::FragmentInfo {
                        offset: at,
                        table,
                        fragment,
                        why: "the table list holds no table of that id",
                    });
                }
                // Table by table, fragments 0, 1, 2, ...
                let next = match self.last_fragment {
                    Some((t, f)) if t == table => f + 1,
                    _ if self.with_fragments.contains(&table) => u32::MAX,
                    _ => 0,
                };
                if fragment != next {
                    return Err(NdbFileError::FragmentInfo {
                        offset: at,
                        table,
                        fragment,
                        why: "out of order (each table's fragments come together, from 0)",
                    });
                }
                self.with_fragments.insert(table);
                self.last_fragment = Some((table, fragment));
                self.units += 1;
            }
            State::DataSection => {
                let (kind, len) = (be(b, 0), be(b, 1));
                match kind {
                    EMPTY_ENTRY if len >= 2 => self.pass(u64::from(len - 2) * 4, "padding"),
                    EMPTY_ENTRY => return Err(length("padding (empty entry)", len)),
                    FRAGMENT_HEADER if len == 5 => self.state = State::FragmentHeader,
                    FRAGMENT_HEADER => return Err(length("fragment header", len)),
                    k => return Err(section(k, "a fragment header (2) or padding (8)")),
                }
            }
            State::FragmentHeader => {
                self.state = State::Records {
                    table: be(b, 0),
                    fragment: be(b, 1),
                    count: 0,
                };
            }
            State::Records {
                table,
                fragment,
                count,
            } => {
                let len = be(b, 0);
                if len == 0 {
                    self.state = State::Footer {
                        table,
                        fragment,
                        count,
                    };
                } else if len > MAX_ENTRY_WORDS {
                    return Err(length("record", len));
                } else {
                    self.units += 1;
                    self.pass(u64::from(len) * 4, "a record");
                    self.state = State::Records {
                        table,
                        fragment,
                        count: count + 1,
                    };
                }
            }
            State::Footer {
                table,
                fragment,
                count,
            } => {
                let (kind, len) = (be(b, 0), be(b, 1));
                if kind != FRAGMENT_FOOTER {
                    return Err(section(kind, "a fragment footer (3)"));
                }
                if len != 6 {
                    return Err(length("fragment footer", len));
                }
                let (ft, ff, n) = (be(b, 2), be(b, 3), be(b, 4));
                if (ft, ff) != (table, fragment) {
                    return Err(NdbFileError::Footer {
                        offset: at,
                        table,
                        fragment,
                        footer_table: ft,
                        footer_fragment: ff,
                    });
                }
                // The footer keeps the low 32 bits of the count.
                if u64::from(n) != count & 0xFFFF_FFFF {
                    return Err(NdbFileError::Count {
                        table,
                        fragment,
                        footer: n,
                        counted: count,
                    });
                }
                self.state = State::DataSection;
            }
            State::LogEntry => {
                let len = be(b, 0);
                if len == 0 {
                    self.state = State::LogEnded;
                } else if !(3..=MAX_ENTRY_WORDS).contains(&len) {
                    return Err(length("log entry", len));
                } else {
                    self.units += 1;
                    self.pass(u64::from(len) * 4, "a log entry");
                    if self.file_type == Some(FileType::Undo) {
                        self.state = State::UndoTrailer { length: len };
                    }
                }
            }
            State::UndoTrailer { length } => {
                let t = be(b, 0);
                if t != length {
                    return Err(NdbFileError::UndoTrailer {
                        offset: at,
                        length,
                        trailer: t,
                    });
                }
                self.state = State::LogEntry;
            }
            State::LogEnded => {}
        }
        Ok(())
    }

    fn finish(self, container: Container) -> Result<NdbSummary, NdbFileError> {
        if let Some(e) = self.error {
            return Err(e);
        }
        let at = self.offset + self.buf.len() as u64;
        if self.skip > 0 {
            return Err(NdbFileError::Truncated {
                offset: at,
                inside: self.skipping,
            });
        }
        if self.after_end > 0 {
            return Err(NdbFileError::AfterEnd(self.after_end));
        }
        let clean = self.buf.is_empty()
            && matches!(
                self.state,
                State::FragmentInfo | State::DataSection | State::LogEnded
            );
        if !clean {
            if self.offset == 0 && self.buf.len() < 12 {
                return Err(NdbFileError::ShortHeader(self.buf.len()));
            }
            return Err(NdbFileError::Truncated {
                offset: at,
                inside: self.state.inside(),
            });
        }
        if let Some(&(table, _)) = self
            .tables
            .iter()
            .find(|&&(id, t)| is_table(t) && !self.with_fragments.contains(&id))
        {
            return Err(NdbFileError::NoFragments(table));
        }
        Ok(NdbSummary {
            file_type: self.file_type,
            container,
            backup_id: self.backup_id,
            units: self.units,
        })
    }
}

/// Whether a description's object type is a table (system or user table: the objects with
/// fragments; indexes, tablespaces, files, hash maps and foreign keys have none).
fn is_table(object_type: u32) -> bool {
    matches!(object_type, 1 | 2)
}

fn hex(b: &[u8]) -> String {
    b.iter()
        .map(|x| format!("{x:02x}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// An AZ31 file being inflated.
struct Az31 {
    header: Vec<u8>,
    inflate: flate2::Decompress,
    ended: bool,
    /// Bytes after the DEFLATE stream: CRC-32, size, `DBDN`, zero padding.
    trailer: Vec<u8>,
    crc: Digest,
    size: u64,
    total: u64,
    plain: Plain,
    error: Option<String>,
}

impl Az31 {
    fn feed(&mut self, mut data: &[u8]) {
        self.total += data.len() as u64;
        if self.error.is_some() {
            return;
        }
        if self.header.len() < AZ31_HEADER.len() {
            let take = (AZ31_HEADER.len() - self.header.len()).min(data.len());
            self.header.extend_from_slice(&data[..take]);
            data = &data[take..];
            if self.header.len() < AZ31_HEADER.len() {
                return;
            }
            if self.header[..] != AZ31_HEADER[..] {
                self.error = Some("the 512-byte header is not the one ndb_restore reads".into());
                return;
            }
        }
        let mut out = vec![0u8; 64 << 10];
        while !data.is_empty() {
            if self.ended {
                if self.trailer.len() + data.len() > 1024 {
                    self.error = Some("more than a trailer after the compressed stream".into());
                    return;
                }
                self.trailer.extend_from_slice(data);
                return;
            }
            let (before_in, before_out) = (self.inflate.total_in(), self.inflate.total_out());
            let status =
                match self
                    .inflate
                    .decompress(data, &mut out, flate2::FlushDecompress::None)
                {
                    Ok(s) => s,
                    Err(e) => {
                        self.error = Some(format!("the DEFLATE stream is damaged: {e}"));
                        return;
                    }
                };
            let used = (self.inflate.total_in() - before_in) as usize;
            let made = (self.inflate.total_out() - before_out) as usize;
            data = &data[used..];
            self.crc.update(&out[..made]);
            self.size += made as u64;
            self.plain.feed(&out[..made]);
            if status == flate2::Status::StreamEnd {
                self.ended = true;
            } else if used == 0 && made == 0 {
                // Needs more input than this piece holds.
                return;
            }
        }
    }

    fn finish(mut self) -> Result<NdbSummary, NdbFileError> {
        let err = |m: String| NdbFileError::Az31(m);
        if let Some(e) = self.error.take() {
            return Err(err(e));
        }
        if self.header.len() < AZ31_HEADER.len() {
            return Err(err(format!(
                "the file ends at byte {} inside the 512-byte header",
                self.total
            )));
        }
        // Drain what the inflater still holds.
        let mut out = vec![0u8; 64 << 10];
        while !self.ended {
            let before = self.inflate.total_out();
            let status = self
                .inflate
                .decompress(&[], &mut out, flate2::FlushDecompress::Finish)
                .map_err(|e| err(format!("the DEFLATE stream is damaged: {e}")))?;
            let made = (self.inflate.total_out() - before) as usize;
            self.crc.update(&out[..made]);
            self.size += made as u64;
            self.plain.feed(&out[..made]);
            if status == flate2::Status::StreamEnd {
                self.ended = true;
            } else if made == 0 {
                return Err(err(format!(
                    "the DEFLATE stream ends early (file of {} bytes)",
                    self.total
                )));
            }
        }
        let t = &self.trailer;
        let end = t.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
        if end < 12 || &t[end - 4..end] != b"DBDN" || end != 12 {
            return Err(err(
                "no trailer (CRC-32, size, DBDN) right after the compressed stream".into(),
            ));
        }
        if self.total % 512 != 0 {
            return Err(err(format!("{} bytes, not a multiple of 512", self.total)));
        }
        let crc = u32::from_le_bytes([t[0], t[1], t[2], t[3]]);
        let size = u32::from_le_bytes([t[4], t[5], t[6], t[7]]);
        let actual = self.crc.finalize() as u32;
        if crc != actual {
            return Err(err(format!(
                "the content's CRC-32 is {actual:08x}, the trailer says {crc:08x}"
            )));
        }
        if u64::from(size) != self.size & 0xFFFF_FFFF {
            return Err(err(format!(
                "the content is {} bytes, the trailer says {size} (modulo 2^32)",
                self.size
            )));
        }
        self.plain.finish(Container::Az31)
    }
}

/// An NDBXFRM1 file: its header read, its last bytes kept for the trailer.
struct Xfrm {
    head: Vec<u8>,
    tail: Vec<u8>,
    total: u64,
}

/// How much of the file's end is kept for the trailer (its size is at most a few blocks).
const XFRM_TAIL: usize = 4096;

impl Xfrm {
    fn feed(&mut self, data: &[u8]) {
        self.total += data.len() as u64;
        if self.head.len() < 512 {
            let take = (512 - self.head.len()).min(data.len());
            self.head.extend_from_slice(&data[..take]);
        }
        self.tail.extend_from_slice(data);
        if self.tail.len() > 2 * XFRM_TAIL {
            self.tail.drain(..self.tail.len() - XFRM_TAIL);
        }
    }

    fn finish(self) -> Result<NdbSummary, NdbFileError> {
        let err = |m: String| NdbFileError::Xfrm(m);
        let h = &self.head;
        if h.len() < XFRM_FIXED_HEADER as usize {
            return Err(err(format!(
                "the file is {} bytes, shorter than its header",
                self.total
            )));
        }
        // The endian marker tells how the writer stored its integers.
        let marker = u64::from_le_bytes(h[8..16].try_into().expect("8 bytes"));
        let le = match marker {
            0xFEDC_BA98_7654_3210 => true,
            0x1032_5476_98BA_DCFE => false,
            m => return Err(err(format!("the header's endian marker is {m:#018x}"))),
        };
        let u32_at = |b: &[u8], i: usize| {
            let w: [u8; 4] = b[i..i + 4].try_into().expect("4 bytes");
            if le {
                u32::from_le_bytes(w)
            } else {
                u32::from_be_bytes(w)
            }
        };
        let u64_at = |b: &[u8], i: usize| {
            let w: [u8; 8] = b[i..i + 8].try_into().expect("8 bytes");
            if le {
                u64::from_le_bytes(w)
            } else {
                u64::from_be_bytes(w)
            }
        };
        let header_size = u32_at(h, 16);
        let fixed = u32_at(h, 20);
        if fixed != XFRM_FIXED_HEADER || header_size < fixed || header_size % 8 != 0 {
            return Err(err(format!(
                "a header of {header_size} bytes with a fixed part of {fixed}"
            )));
        }
        let flags = u64_at(h, 32);
        if flags & 0x3000 == 0 {
            return Err(err(format!("the header's flags {flags:#x} name no cipher")));
        }
        let t = &self.tail;
        if t.len() < XFRM_FIXED_TRAILER || &t[t.len() - 8..] != XFRM_MAGIC {
            return Err(err("the file does not end with NDBXFRM1 (truncated)".into()));
        }
        let f = &t[t.len() - XFRM_FIXED_TRAILER..];
        let fixed_trailer = u32_at(f, 32) as usize;
        let trailer_size = u32_at(f, 36) as u64;
        if fixed_trailer != XFRM_FIXED_TRAILER || trailer_size < XFRM_FIXED_TRAILER as u64 {
            return Err(err(format!(
                "a trailer of {trailer_size} bytes with a fixed part of {fixed_trailer}"
            )));
        }
        let payload = self
            .total
            .checked_sub(u64::from(header_size) + trailer_size)
            .ok_or_else(|| {
                err(format!(
                    "{} bytes cannot hold its header and trailer",
                    self.total
                ))
            })?;
        // AES-CBC with PKCS#7 padding: whole 16-byte blocks, at least one.
        if flags & 0x1000 != 0 && (payload == 0 || payload % 16 != 0) {
            return Err(err(format!(
                "{payload} bytes of AES-CBC content, not a whole number of 16-byte blocks"
            )));
        }
        Ok(NdbSummary {
            file_type: None,
            container: Container::Encrypted,
            backup_id: 0,
            units: 0,
        })
    }
}

enum Mode {
    /// The first bytes, until the container is known.
    Detect(Vec<u8>),
    Raw(Plain),
    Az31(Box<Az31>),
    Xfrm(Xfrm),
}

/// Walks one RonDB backup file fed in pieces.
pub struct Walker {
    expect: Option<FileType>,
    mode: Mode,
}

impl std::fmt::Debug for Walker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Walker")
    }
}

impl Walker {
    /// A walk of a file that must be of type `expect` (from its name), if given.
    pub fn new(expect: Option<FileType>) -> Walker {
        Walker {
            expect,
            mode: Mode::Detect(Vec::with_capacity(8)),
        }
    }

    fn choose(&mut self, head: Vec<u8>) {
        let mut mode = if head.starts_with(&AZ31_HEADER[..3]) {
            Mode::Az31(Box::new(Az31 {
                header: Vec::with_capacity(512),
                inflate: flate2::Decompress::new(false),
                ended: false,
                trailer: Vec::new(),
                crc: Digest::new(CrcAlgorithm::Crc32IsoHdlc),
                size: 0,
                total: 0,
                plain: Plain::new(self.expect),
                error: None,
            }))
        } else if head.starts_with(XFRM_MAGIC) {
            Mode::Xfrm(Xfrm {
                head: Vec::with_capacity(512),
                tail: Vec::new(),
                total: 0,
            })
        } else {
            Mode::Raw(Plain::new(self.expect))
        };
        match &mut mode {
            Mode::Raw(p) => p.feed(&head),
            Mode::Az31(a) => a.feed(&head),
            Mode::Xfrm(x) => x.feed(&head),
            Mode::Detect(_) => {}
        }
        self.mode = mode;
    }

    pub fn feed(&mut self, mut piece: &[u8]) {
        if let Mode::Detect(head) = &mut self.mode {
            let take = (8 - head.len()).min(piece.len());
            head.extend_from_slice(&piece[..take]);
            piece = &piece[take..];
            if head.len() < 8 {
                return;
            }
            let head = std::mem::take(head);
            self.choose(head);
        }
        match &mut self.mode {
            Mode::Raw(p) => p.feed(piece),
            Mode::Az31(a) => a.feed(piece),
            Mode::Xfrm(x) => x.feed(piece),
            Mode::Detect(_) => unreachable!("chosen above"),
        }
    }

    pub fn finish(mut self) -> Result<NdbSummary, NdbFileError> {
        if let Mode::Detect(head) = &mut self.mode {
            let head = std::mem::take(head);
            if head.is_empty() || !MAGIC.starts_with(&head) {
                return Err(NdbFileError::Magic(hex(&head)));
            }
            return Err(NdbFileError::ShortHeader(head.len()));
        }
        match self.mode {
            Mode::Raw(p) => p.finish(Container::Raw),
            Mode::Az31(a) => a.finish(),
            Mode::Xfrm(x) => x.finish(),
            Mode::Detect(_) => unreachable!("handled above"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write as _;

    fn words(out: &mut Vec<u8>, w: &[u32]) {
        for x in w {
            out.extend_from_slice(&x.to_be_bytes());
        }
    }

    /// A file header as a data node on a little-endian host writes it.
    fn header(kind: u32) -> Vec<u8> {
        let mut h = MAGIC.to_vec();
        words(&mut h, &[RAW_LCP, 1, 9, kind, 7, 11, 12]);
        h.extend_from_slice(&BYTE_ORDER.to_le_bytes());
        words(&mut h, &[0x0016_0A0C, 0x0008_0028]);
        assert_eq!(h.len(), 48);
        h
    }

    /// A control file of `fragments.len()` tables (and an index, which has no fragments),
    /// each table with its number of fragments.
    fn ctl(fragments: &[u32]) -> Vec<u8> {
        let mut f = header(1);
        let n = fragments.len() as u32;
        words(&mut f, &[TABLE_LIST, 2 + n + 1]);
        words(&mut f, &(0..=n).collect::<Vec<_>>());
        for t in 0..=n {
            // type, length, object type (2 a user table, 6 an ordered index), dictionary.
            let object = if t == n { 6 } else { 2 };
            words(&mut f, &[TABLE_DESCRIPTION, 3 + t, object]);
            words(&mut f, &vec![0xABCD; t as usize]);
        }
        words(&mut f, &[GCP_ENTRY, 4, 100, 199]);
        for (t, &frags) in fragments.iter().enumerate() {
            for fr in 0..frags {
                words(&mut f, &[FRAGMENT_INFO, 8, t as u32, fr, 5, 0, 0, 0]);
            }
        }
        f
    }

    /// Fragments of `rows` records each, with O_DIRECT padding after the first.
    fn data(fragments: &[u32]) -> Vec<u8> {
        let mut f = header(3);
        for (i, &rows) in fragments.iter().enumerate() {
            words(&mut f, &[FRAGMENT_HEADER, 5, 9, i as u32, 0]);
            for r in 0..rows {
                let len = 1 + r % 4;
                words(&mut f, &[len]);
                words(&mut f, &vec![0xFFF3_0004 ^ r; len as usize]);
            }
            words(&mut f, &[0, FRAGMENT_FOOTER, 6, 9, i as u32, rows, 0]);
            if i == 0 {
                words(&mut f, &[EMPTY_ENTRY, 5, 0, 0, 0]);
            }
        }
        f
    }

    fn log(entries: u32, undo: bool) -> Vec<u8> {
        let mut f = header(if undo { 5 } else { 2 });
        for e in 0..entries {
            let len = 3 + 1 + e % 3;
            words(&mut f, &[len, 9, 0x10000 | (e % 3), 0]);
            words(&mut f, &vec![0x0001_0004; (len - 3) as usize]);
            if undo {
                words(&mut f, &[len]);
            }
        }
        words(&mut f, &[0]);
        f
    }

    fn walk(
        file: &[u8],
        expect: Option<FileType>,
        piece: usize,
    ) -> Result<NdbSummary, NdbFileError> {
        let mut w = Walker::new(expect);
        for p in file.chunks(piece.max(1)) {
            w.feed(p);
        }
        w.finish()
    }

    #[test]
    fn whole_files_walk_whatever_the_piece_sizes() {
        for piece in [1, 3, 8, 13, 4096] {
            let s = walk(&ctl(&[1, 2, 1]), Some(FileType::Ctl), piece).unwrap();
            assert_eq!(
                (s.file_type, s.units, s.backup_id),
                (Some(FileType::Ctl), 8, 7)
            );
            let s = walk(&data(&[5, 0, 17]), Some(FileType::Data), piece).unwrap();
            assert_eq!((s.file_type, s.units), (Some(FileType::Data), 22));
            let s = walk(&log(6, false), Some(FileType::Log), piece).unwrap();
            assert_eq!((s.file_type, s.units), (Some(FileType::Log), 6));
            let s = walk(&log(6, true), Some(FileType::Log), piece).unwrap();
            assert_eq!((s.file_type, s.units), (Some(FileType::Undo), 6));
        }
        // Empty but whole: no tables, no fragments, no log entries.
        assert!(walk(&ctl(&[]), None, 5).is_ok());
        assert!(walk(&data(&[]), None, 5).is_ok());
        assert!(walk(&log(0, false), None, 5).is_ok());
        // A pre-6.3.11 header: 44 bytes, section length 8.
        let mut old = MAGIC.to_vec();
        words(&mut old, &[0x0005_0100, 1, 7, 2, 7, 11, 12]);
        old.extend_from_slice(&BYTE_ORDER.to_be_bytes());
        assert_eq!(old.len(), 40);
        words(&mut old, &[0]);
        assert!(walk(&old, Some(FileType::Log), 7).is_ok());
    }

    /// Every cut of a file fails, but those at a data file's fragment boundaries and between
    /// the last table's fragment infos (which ndb_restore accepts as well: neither file says
    /// how many there are).
    #[test]
    fn every_truncation_is_found() {
        let one = data(&[3]).len();
        let c = ctl(&[2, 3]);
        for (file, whole_at) in [
            (c.clone(), vec![c.len() - 64, c.len() - 32]),
            (log(4, false), vec![]),
            (log(4, true), vec![]),
            (data(&[3, 2]), vec![48, one - 20, one]),
        ] {
            for cut in 0..file.len() {
                let r = walk(&file[..cut], None, 64);
                if whole_at.contains(&cut) {
                    assert!(r.is_ok(), "cut at {cut}: {r:?}");
                } else {
                    assert!(r.is_err(), "cut at {cut} of {} accepted", file.len());
                }
            }
        }
        let e = walk(&data(&[3])[..100], None, 64).unwrap_err();
        assert_eq!(e.to_string(), "the file ends at byte 100, inside a record");
        let e = walk(&log(2, false)[..48], None, 64).unwrap_err();
        assert!(e.to_string().contains("no end marker"), "{e}");
        assert_eq!(
            walk(b"NDBB", None, 1).unwrap_err(),
            NdbFileError::ShortHeader(4)
        );
    }

    #[test]
    fn damage_is_named() {
        let e = walk(b"garbage and more", None, 4).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("not a RonDB backup file: it begins 67 61 72"),
            "{e}"
        );
        let e = walk(&data(&[1]), Some(FileType::Ctl), 64).unwrap_err();
        assert_eq!(
            e.to_string(),
            "the header says a data file, but the name is a control (ctl) file's"
        );
        // The footer's count.
        let mut f = data(&[4]);
        let at = f.len() - 20 - 8;
        f[at..at + 4].copy_from_slice(&5u32.to_be_bytes());
        let e = walk(&f, None, 64).unwrap_err();
        assert_eq!(
            e,
            NdbFileError::Count {
                table: 9,
                fragment: 0,
                footer: 5,
                counted: 4
            }
        );
        // A record length gone wild.
        let mut f = data(&[2]);
        f[68..72].copy_from_slice(&0x0100_0000u32.to_be_bytes());
        assert!(matches!(
            walk(&f, None, 64).unwrap_err(),
            NdbFileError::Length {
                offset: 68,
                section: "record",
                ..
            }
        ));
        // A section type out of place.
        let mut f = ctl(&[1]);
        f[48..52].copy_from_slice(&GCP_ENTRY.to_be_bytes());
        assert!(matches!(
            walk(&f, None, 64).unwrap_err(),
            NdbFileError::Section {
                offset: 48,
                found: 6,
                ..
            }
        ));
        // Fragment infos: a table missing, out of order, of an index.
        let f = ctl(&[2, 1]);
        let e = walk(&f[..f.len() - 32], None, 64).unwrap_err();
        assert_eq!(e, NdbFileError::NoFragments(1));
        let mut f = ctl(&[2, 1]);
        let at = f.len() - 64 + 12;
        f[at..at + 4].copy_from_slice(&2u32.to_be_bytes());
        let e = walk(&f, None, 64).unwrap_err();
        assert!(
            e.to_string()
                .ends_with("out of order (each table's fragments come together, from 0)"),
            "{e}"
        );
        let mut f = ctl(&[2, 1]);
        let at = f.len() - 32 + 8;
        f[at..at + 4].copy_from_slice(&2u32.to_be_bytes());
        let e = walk(&f, None, 64).unwrap_err();
        assert!(
            e.to_string()
                .ends_with("the table list holds no table of that id"),
            "{e}"
        );
        // Bytes after the log's end, an undo entry's trailer, the byte-order word.
        let mut f = log(1, false);
        f.extend_from_slice(&[0, 0, 0, 0]);
        assert_eq!(walk(&f, None, 3).unwrap_err(), NdbFileError::AfterEnd(4));
        let mut f = log(1, true);
        let at = f.len() - 8;
        f[at..at + 4].copy_from_slice(&9u32.to_be_bytes());
        assert!(matches!(
            walk(&f, None, 3).unwrap_err(),
            NdbFileError::UndoTrailer {
                length: 4,
                trailer: 9,
                ..
            }
        ));
        let mut f = log(0, false);
        f[36..40].copy_from_slice(&[1, 2, 3, 4]);
        assert_eq!(
            walk(&f, None, 64).unwrap_err(),
            NdbFileError::ByteOrder(0x0102_0304)
        );
    }

    fn az31(plain: &[u8]) -> Vec<u8> {
        let mut f = AZ31_HEADER.to_vec();
        let mut e = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(plain).unwrap();
        f.extend(e.finish().unwrap());
        let crc = crc_fast::checksum(CrcAlgorithm::Crc32IsoHdlc, plain) as u32;
        f.extend_from_slice(&crc.to_le_bytes());
        f.extend_from_slice(&(plain.len() as u32).to_le_bytes());
        f.extend_from_slice(b"DBDN");
        f.resize(f.len().div_ceil(512) * 512, 0);
        f
    }

    #[test]
    fn compressed_files_are_inflated_and_walked() {
        let plain = data(&[300, 40]);
        let f = az31(&plain);
        for piece in [1, 100, 1 << 20] {
            let s = walk(&f, Some(FileType::Data), piece).unwrap();
            assert_eq!((s.container, s.units), (Container::Az31, 340));
        }
        // Damage inside, a cut, a wrong CRC, a damaged content.
        let mut bad = f.clone();
        bad[600] ^= 0xFF;
        assert!(walk(&bad, None, 64).is_err());
        assert!(matches!(
            walk(&f[..f.len() - 512], None, 64).unwrap_err(),
            NdbFileError::Az31(_)
        ));
        let end = f.iter().rposition(|&b| b != 0).unwrap() + 1;
        let mut bad = f.clone();
        bad[end - 12] ^= 1;
        let e = walk(&bad, None, 64).unwrap_err();
        assert!(e.to_string().contains("CRC-32"), "{e}");
        let mut cut = plain.clone();
        cut.truncate(plain.len() - 10);
        assert!(matches!(
            walk(&az31(&cut), None, 64).unwrap_err(),
            NdbFileError::Truncated { .. }
        ));
    }

    fn xfrm(payload: usize) -> Vec<u8> {
        let mut f = XFRM_MAGIC.to_vec();
        f.extend_from_slice(&0xFEDC_BA98_7654_3210u64.to_le_bytes());
        f.extend_from_slice(&512u32.to_le_bytes());
        f.extend_from_slice(&160u32.to_le_bytes());
        f.extend_from_slice(&[0; 8]);
        f.extend_from_slice(&0x0011_1000u64.to_le_bytes());
        f.resize(512, 0);
        f.extend(vec![0x5A; payload]);
        // Zero padding, then the 56-byte trailer, to a multiple of 512.
        let trailer_size = (f.len() + 56).div_ceil(512) * 512 - f.len();
        f.resize(f.len() + trailer_size - 56, 0);
        f.extend_from_slice(&0x30u64.to_le_bytes());
        f.extend_from_slice(&1000u64.to_le_bytes());
        f.extend_from_slice(&[0; 16]);
        f.extend_from_slice(&56u32.to_le_bytes());
        f.extend_from_slice(&(trailer_size as u32).to_le_bytes());
        f.extend_from_slice(&0xFEDC_BA98_7654_3210u64.to_le_bytes());
        f.extend_from_slice(XFRM_MAGIC);
        f
    }

    #[test]
    fn encrypted_files_have_their_container_checked() {
        let f = xfrm(1008);
        let s = walk(&f, Some(FileType::Data), 100).unwrap();
        assert_eq!(s.container, Container::Encrypted);
        assert!(matches!(
            walk(&f[..f.len() - 1], None, 64).unwrap_err(),
            NdbFileError::Xfrm(_)
        ));
        let e = walk(&xfrm(1000), None, 64).unwrap_err();
        assert!(e.to_string().contains("16-byte blocks"), "{e}");
    }
}
