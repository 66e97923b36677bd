//! Entry streams (format 3): what a backup holds, as compact sorted pages that a later backup
//! reuses instead of writing again.
//!
//! A backup's entries are split into *streams* (one per HopsFS volume, one for everything
//! else). A stream is a sequence of [`Record`]s sorted by key (the path relative to the stream's
//! prefix, compared as bytes). It is stored as a **base** — pages of records, cut at directory
//! boundaries so that they follow the datanode's own `subdirX/subdirY` layout, listed in order
//! by a root — plus **layers**: each later backup stores only what changed since the previous
//! one (records put, keys deleted) as its own layer of pages, until the layers hold more than a
//! tenth of the base or there are too many, when the next backup writes a fresh base (pages
//! that did not change keep their id and are not stored again). A reader merges the base with
//! the layers, newest last, streaming: one page per layer in memory.
//!
//! Pages, roots and layers are meta blobs (named by the hash of their plaintext, compressed,
//! sealed when encrypted, stored in meta packs). Plaintext of a page (tag 1) or layer page
//! (tag 2):
//!
//! ```text
//! tag u8 | dirs: count, each a byte string (the directory part of keys, "" at the top) |
//! defaults: mode, uid, gid (varints), mtime (zigzag) | count |
//! per record: head u8 (bits 0-2: 0 dir, 1 file, 2 symlink, 3 replica, 4 delete; bits 3-5:
//!   own mode, uid, gid; bit 6: a replica's checksum file has its own owner/mode/mtime) |
//!   dir number | name (not for a replica: `blk_<id>`) | delete: nothing more |
//!   own mode/uid/gid | mtime − default |
//!   file: size, content tag (0 units, 1 legacy), count, ids [32] × count, legacy: hash [32] |
//!   symlink: target | replica: id − previous id, genstamp − previous genstamp (zigzag),
//!   length, checksum file length, unit id [32], bit 6: flags, own fields, mtime − block's
//! ```
//!
//! A *replica* is a finalized HopsFS replica: its block file `blk_<id>` and checksum file
//! `blk_<id>_<gs>.meta` stored as one unit (block bytes, then checksum bytes), so three
//! replicas of a block share one unit and one index entry, and a record costs about 45 bytes.
//! A root (tag 3) is: count, then per page its record count and id.

use std::borrow::Cow;
use std::collections::VecDeque;

use super::codec::{put_bytes, put_ivarint, put_uvarint, CodecError, Cursor};
use super::manifest::{validate_logical_path, FileMeta};

pub type Id = [u8; 32];

const TAG_PAGE: u8 = 1;
const TAG_LAYER: u8 = 2;
const TAG_ROOT: u8 = 3;
const MAX_NAME: usize = 4096;
const MAX_PATH: usize = 64 << 10;
const MAX_IDS: u64 = 1 << 20;
const MAX_RECORDS: u64 = 1 << 20;

/// A page closes at a directory boundary once it has this many records...
pub const PAGE_TARGET: usize = 128;
/// ...or earlier at a boundary chosen by the directory's name, once it has this many...
const PAGE_MIN: usize = 16;
/// ...and in the middle of a directory at this many records or bytes.
const PAGE_MAX: usize = 4096;
const PAGE_MAX_BYTES: usize = 256 << 10;

/// A file's content.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Content {
    /// The concatenation of units: each a data blob (at most one chunk) or a solo pack.
    Units(Vec<Id>),
    /// Chunks stored by format 1 or 2 as `blobs/` objects, and the whole file's BLAKE3.
    Legacy { chunks: Vec<Id>, hash: Id },
}

/// A finalized HopsFS replica: block file and checksum file, stored as one unit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Replica {
    /// The directory holding both files, relative to the stream's prefix.
    pub dir: String,
    pub id: u64,
    pub genstamp: u64,
    pub len: u64,
    pub meta_len: u64,
    /// The block file's.
    pub meta: FileMeta,
    /// The checksum file's.
    pub meta_file: FileMeta,
    /// Block bytes then checksum bytes.
    pub unit: Id,
}

impl Replica {
    /// The file names of a replica: `blk_<id>` and `blk_<id>_<genstamp>.meta`.
    pub fn names(id: u64, genstamp: u64) -> (String, String) {
        (block_file_name(id), format!("blk_{id}_{genstamp}.meta"))
    }

    /// The block id and genstamp that file names `blk_<id>` and `blk_<id>_<genstamp>.meta`
    /// stand for (exactly as HopsFS writes them: no leading zeros, no sign).
    pub fn parse_names(block: &str, meta: &str) -> Option<(u64, u64)> {
        let digits = block.strip_prefix("blk_")?;
        let id = canonical_u64(digits)?;
        let gs = meta
            .strip_prefix("blk_")?
            .strip_prefix(digits)?
            .strip_prefix('_')?
            .strip_suffix(".meta")?;
        Some((id, canonical_u64(gs)?))
    }

    pub fn block_name(&self) -> String {
        block_file_name(self.id)
    }

    pub fn meta_name(&self) -> String {
        format!("blk_{}_{}.meta", self.id, self.genstamp)
    }
}

/// One entry of a stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Record {
    Dir {
        path: String,
        meta: FileMeta,
    },
    File {
        path: String,
        meta: FileMeta,
        size: u64,
        content: Content,
    },
    Symlink {
        path: String,
        target: String,
        meta: FileMeta,
    },
    Replica(Replica),
}

/// `dir/name`, or `name` at the top.
pub fn join(dir: &str, name: &str) -> String {
    if dir.is_empty() {
        name.to_string()
    } else {
        [dir, "/", name].concat()
    }
}

/// `blk_<id>` (once per replica: not formatted).
fn block_file_name(id: u64) -> String {
    ["blk_", &id.to_string()].concat()
}

/// The number `s` writes in decimal digits only, without leading zeros (as Java's
/// `Long.toString` does); `None` for anything else (a sign, a leading zero, an overflow).
fn canonical_u64(s: &str) -> Option<u64> {
    let canonical = !s.is_empty()
        && s.bytes().all(|b| b.is_ascii_digit())
        && (s.len() == 1 || !s.starts_with('0'));
    canonical.then(|| s.parse().ok()).flatten()
}

/// `(dir, name)` of a key.
pub fn split(key: &str) -> (&str, &str) {
    key.rsplit_once('/').unwrap_or(("", key))
}

impl Record {
    /// The key the stream is sorted by: the path (a replica's block file).
    pub fn key(&self) -> Cow<'_, str> {
        match self {
            Record::Dir { path, .. } | Record::File { path, .. } | Record::Symlink { path, .. } => {
                Cow::Borrowed(path)
            }
            Record::Replica(r) => Cow::Owned(join(&r.dir, &r.block_name())),
        }
    }

    fn meta(&self) -> &FileMeta {
        match self {
            Record::Dir { meta, .. } | Record::File { meta, .. } | Record::Symlink { meta, .. } => {
                meta
            }
            Record::Replica(r) => &r.meta,
        }
    }
}

/// A change in a layer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    Put(Record),
    Delete(String),
}

impl Op {
    pub fn key(&self) -> Cow<'_, str> {
        match self {
            Op::Put(r) => r.key(),
            Op::Delete(k) => Cow::Borrowed(k),
        }
    }
}

fn head_type(op: &Op) -> u8 {
    match op {
        Op::Put(Record::Dir { .. }) => 0,
        Op::Put(Record::File { .. }) => 1,
        Op::Put(Record::Symlink { .. }) => 2,
        Op::Put(Record::Replica(_)) => 3,
        Op::Delete(_) => 4,
    }
}

/// Which of mode (1), uid (2), gid (4) differ from the defaults.
fn own_flags(m: &FileMeta, d: &FileMeta) -> u8 {
    let mut flags = 0;
    if m.mode != d.mode {
        flags |= 1;
    }
    if m.uid != d.uid {
        flags |= 2;
    }
    if m.gid != d.gid {
        flags |= 4;
    }
    flags
}

fn write_own(out: &mut Vec<u8>, flags: u8, m: &FileMeta) {
    if flags & 1 != 0 {
        put_uvarint(out, u64::from(m.mode));
    }
    if flags & 2 != 0 {
        put_uvarint(out, u64::from(m.uid));
    }
    if flags & 4 != 0 {
        put_uvarint(out, u64::from(m.gid));
    }
}

/// Encodes a page (`layer`: a layer page, which may hold deletions) of ops sorted by key.
pub fn encode_page(ops: &[Op], layer: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 + ops.len() * 48);
    out.push(if layer { TAG_LAYER } else { TAG_PAGE });
    // The directory table, in order of first use (keys are sorted, so each appears once).
    let mut dirs: Vec<String> = Vec::new();
    let mut dir_of: Vec<usize> = Vec::with_capacity(ops.len());
    for op in ops {
        // (A replica's key is made, not stored: its directory is at hand.)
        let key;
        let dir = match op {
            Op::Put(Record::Replica(r)) => r.dir.as_str(),
            _ => {
                key = op.key();
                split(&key).0
            }
        };
        if dirs.last().map(String::as_str) != Some(dir) {
            dirs.push(dir.to_string());
        }
        dir_of.push(dirs.len() - 1);
    }
    put_uvarint(&mut out, dirs.len() as u64);
    for d in &dirs {
        put_bytes(&mut out, d.as_bytes());
    }
    let defaults = ops
        .iter()
        .find_map(|op| match op {
            Op::Put(r) => Some(*r.meta()),
            Op::Delete(_) => None,
        })
        .unwrap_or_default();
    put_uvarint(&mut out, u64::from(defaults.mode));
    put_uvarint(&mut out, u64::from(defaults.uid));
    put_uvarint(&mut out, u64::from(defaults.gid));
    put_ivarint(&mut out, defaults.mtime);
    put_uvarint(&mut out, ops.len() as u64);
    let (mut prev_id, mut prev_gs) = (0u64, 0u64);
    for (op, &dir_no) in ops.iter().zip(&dir_of) {
        let mut head = head_type(op);
        let own = match op {
            Op::Put(r) => own_flags(r.meta(), &defaults),
            Op::Delete(_) => 0,
        };
        head |= own << 3;
        if let Op::Put(Record::Replica(r)) = op {
            if r.meta_file != r.meta {
                head |= 1 << 6;
            }
        }
        out.push(head);
        put_uvarint(&mut out, dir_no as u64);
        match op {
            Op::Put(Record::Replica(_)) => {}
            other => put_bytes(&mut out, split(&other.key()).1.as_bytes()),
        }
        let Op::Put(rec) = op else { continue };
        write_own(&mut out, own, rec.meta());
        put_ivarint(&mut out, rec.meta().mtime.wrapping_sub(defaults.mtime));
        match rec {
            Record::Dir { .. } => {}
            Record::File { size, content, .. } => {
                put_uvarint(&mut out, *size);
                let (tag, ids, hash) = match content {
                    Content::Units(ids) => (0u8, ids, None),
                    Content::Legacy { chunks, hash } => (1u8, chunks, Some(hash)),
                };
                out.push(tag);
                put_uvarint(&mut out, ids.len() as u64);
                for id in ids {
                    out.extend_from_slice(id);
                }
                if let Some(h) = hash {
                    out.extend_from_slice(h);
                }
            }
            Record::Symlink { target, .. } => put_bytes(&mut out, target.as_bytes()),
            Record::Replica(r) => {
                put_ivarint(&mut out, r.id.wrapping_sub(prev_id) as i64);
                put_ivarint(&mut out, r.genstamp.wrapping_sub(prev_gs) as i64);
                prev_id = r.id;
                prev_gs = r.genstamp;
                put_uvarint(&mut out, r.len);
                put_uvarint(&mut out, r.meta_len);
                out.extend_from_slice(&r.unit);
                if r.meta_file != r.meta {
                    let own = own_flags(&r.meta_file, &r.meta);
                    out.push(own);
                    write_own(&mut out, own, &r.meta_file);
                    put_ivarint(&mut out, r.meta_file.mtime.wrapping_sub(r.meta.mtime));
                }
            }
        }
    }
    out
}

fn read_own(c: &mut Cursor, flags: u8, d: &FileMeta) -> Result<FileMeta, CodecError> {
    let mut m = *d;
    if flags & 1 != 0 {
        m.mode = u32_of(c, "mode")?;
    }
    if flags & 2 != 0 {
        m.uid = u32_of(c, "uid")?;
    }
    if flags & 4 != 0 {
        m.gid = u32_of(c, "gid")?;
    }
    Ok(m)
}

fn u32_of(c: &mut Cursor, what: &str) -> Result<u32, CodecError> {
    Ok(c.bounded(u64::from(u32::MAX), what)? as u32)
}

/// Decodes a page; `layer` says which kind is expected. Checks every key (a valid relative
/// path, strictly increasing) and every length; the error names the byte offset.
pub fn decode_page(plain: &[u8], layer: bool) -> Result<Vec<Op>, CodecError> {
    let mut c = Cursor::new(plain);
    let tag = c.u8("tag")?;
    if tag != if layer { TAG_LAYER } else { TAG_PAGE } {
        return Err(CodecError {
            offset: 0,
            what: format!(
                "not a {} (tag {tag})",
                if layer { "layer page" } else { "page" }
            ),
        });
    }
    let n_dirs = c.bounded(MAX_RECORDS, "directory count")?;
    let mut dirs = Vec::with_capacity(n_dirs as usize);
    for _ in 0..n_dirs {
        let at = c.offset();
        let d = c.str(MAX_PATH, "directory")?;
        if !d.is_empty() && validate_logical_path(d).is_err() {
            return Err(CodecError {
                offset: at,
                what: format!("directory '{d}' is not a valid relative path"),
            });
        }
        dirs.push(d);
    }
    let defaults = FileMeta {
        mode: u32_of(&mut c, "default mode")?,
        uid: u32_of(&mut c, "default uid")?,
        gid: u32_of(&mut c, "default gid")?,
        mtime: c.ivarint("default mtime")?,
    };
    let n = c.bounded(MAX_RECORDS, "record count")?;
    let mut ops: Vec<Op> = Vec::with_capacity(n.min(PAGE_MAX as u64 * 2) as usize);
    let mut last_key: Option<String> = None;
    let (mut prev_id, mut prev_gs) = (0u64, 0u64);
    for _ in 0..n {
        let at = c.offset();
        let head = c.u8("record head")?;
        let kind = head & 7;
        let own = (head >> 3) & 7;
        if kind > 4
            || (kind == 4 && !layer)
            || (kind != 3 && head & (1 << 6) != 0)
            || head >> 7 != 0
        {
            return Err(CodecError {
                offset: at,
                what: format!("bad record head {head:#04x}"),
            });
        }
        let dir_no = c.bounded(n_dirs.saturating_sub(1), "directory number")? as usize;
        let dir = dirs[dir_no];
        let name = if kind == 3 {
            None
        } else {
            Some(c.str(MAX_NAME, "name")?)
        };
        let op = if kind == 4 {
            Op::Delete(join(dir, name.unwrap_or_default()))
        } else {
            let mut meta = read_own(&mut c, own, &defaults)?;
            meta.mtime = defaults.mtime.wrapping_add(c.ivarint("mtime")?);
            let path = || join(dir, name.unwrap_or_default());
            Op::Put(match kind {
                0 => Record::Dir { path: path(), meta },
                1 => {
                    let size = c.uvarint("size")?;
                    let tag = c.u8("content tag")?;
                    let count = c.bounded(MAX_IDS, "unit count")?;
                    let mut ids = Vec::with_capacity(count as usize);
                    for _ in 0..count {
                        ids.push(c.id("unit id")?);
                    }
                    let content = match tag {
                        0 => Content::Units(ids),
                        1 => Content::Legacy {
                            chunks: ids,
                            hash: c.id("legacy hash")?,
                        },
                        _ => return Err(c.error("unknown content tag")),
                    };
                    Record::File {
                        path: path(),
                        meta,
                        size,
                        content,
                    }
                }
                2 => Record::Symlink {
                    path: path(),
                    target: c.str(MAX_PATH, "symlink target")?.to_string(),
                    meta,
                },
                _ => {
                    let id = prev_id.wrapping_add(c.ivarint("block id")? as u64);
                    let genstamp = prev_gs.wrapping_add(c.ivarint("genstamp")? as u64);
                    prev_id = id;
                    prev_gs = genstamp;
                    let len = c.uvarint("block length")?;
                    let meta_len = c.uvarint("checksum length")?;
                    let unit = c.id("unit id")?;
                    let meta_file = if head & (1 << 6) != 0 {
                        let flags = c.u8("checksum file flags")?;
                        if flags > 7 {
                            return Err(c.error("bad checksum file flags"));
                        }
                        let mut m = read_own(&mut c, flags, &meta)?;
                        m.mtime = meta.mtime.wrapping_add(c.ivarint("checksum file mtime")?);
                        m
                    } else {
                        meta
                    };
                    Record::Replica(Replica {
                        dir: dir.to_string(),
                        id,
                        genstamp,
                        len,
                        meta_len,
                        meta,
                        meta_file,
                        unit,
                    })
                }
            })
        };
        let key = op.key().into_owned();
        if let Err(d) = validate_logical_path(&key) {
            return Err(CodecError {
                offset: at,
                what: format!("key '{key}': {d}"),
            });
        }
        if last_key.as_deref().is_some_and(|l| l >= key.as_str()) {
            return Err(CodecError {
                offset: at,
                what: format!("key '{key}' out of order or repeated"),
            });
        }
        last_key = Some(key);
        ops.push(op);
    }
    if !c.is_empty() {
        return Err(c.error("bytes after the last record"));
    }
    Ok(ops)
}

/// Encodes a root: per page, its record count and id.
pub fn encode_root(pages: &[(u64, Id)]) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + pages.len() * 36);
    out.push(TAG_ROOT);
    put_uvarint(&mut out, pages.len() as u64);
    for (count, id) in pages {
        put_uvarint(&mut out, *count);
        out.extend_from_slice(id);
    }
    out
}

pub fn decode_root(plain: &[u8]) -> Result<Vec<(u64, Id)>, CodecError> {
    let mut c = Cursor::new(plain);
    if c.u8("tag")? != TAG_ROOT {
        return Err(CodecError {
            offset: 0,
            what: "not a root".into(),
        });
    }
    let n = c.bounded(MAX_RECORDS * 16, "page count")?;
    let mut pages = Vec::with_capacity(n.min(1 << 16) as usize);
    for _ in 0..n {
        let count = c.bounded(MAX_RECORDS, "record count")?;
        pages.push((count, c.id("page id")?));
    }
    if !c.is_empty() {
        return Err(c.error("bytes after the last page"));
    }
    Ok(pages)
}

/// Cuts a sorted sequence of ops into pages: at a directory boundary once a page has
/// [`PAGE_TARGET`] records, or has `PAGE_MIN` and the next directory's name hashes to a
/// boundary (so small directories group the same way in every backup); inside a directory only
/// at `PAGE_MAX` records or `PAGE_MAX_BYTES`. Emits each page's ops with `emit`.
#[derive(Debug, Default)]
pub struct Pager {
    ops: Vec<Op>,
    bytes: usize,
    dir: Option<String>,
}

impl Pager {
    /// Adds `op` (keys strictly increasing); returns the ops of a page that closed before it.
    pub fn push(&mut self, op: Op) -> Option<Vec<Op>> {
        let key = op.key();
        let dir = match &op {
            Op::Put(Record::Replica(r)) => r.dir.as_str(),
            _ => split(&key).0,
        };
        let new_dir = self.dir.as_deref() != Some(dir);
        let n = self.ops.len();
        let cut = n > 0
            && ((new_dir
                && (n >= PAGE_TARGET
                    || (n >= PAGE_MIN && blake3::hash(dir.as_bytes()).as_bytes()[0] & 15 == 0)))
                || n >= PAGE_MAX
                || self.bytes >= PAGE_MAX_BYTES);
        if new_dir {
            self.dir = Some(dir.to_string());
        }
        let size = 48 + key.len() / 4;
        drop(key);
        let closed = cut.then(|| {
            self.bytes = 0;
            std::mem::take(&mut self.ops)
        });
        self.bytes += size;
        self.ops.push(op);
        closed
    }

    /// The last page, if any ops are left.
    pub fn finish(&mut self) -> Option<Vec<Op>> {
        self.dir = None;
        self.bytes = 0;
        (!self.ops.is_empty()).then(|| std::mem::take(&mut self.ops))
    }
}

/// Reads a stream — a base (its root's pages) and layers (their pages), oldest first — as one
/// sorted sequence of records, fetching each page's plaintext with `fetch` when it is reached.
pub struct Merged<F> {
    fetch: F,
    /// Index 0 is the base.
    levels: Vec<Level>,
    failed: bool,
}

struct Level {
    pages: VecDeque<Id>,
    ops: VecDeque<Op>,
    layer: bool,
    last: Option<String>,
}

/// Why a stream could not be read: a page that would not come, or would not decode.
#[derive(Debug, thiserror::Error)]
pub enum ReadError<E> {
    #[error("{0}")]
    Fetch(E),
    #[error("page {page}: {source}")]
    Page {
        page: String,
        #[source]
        source: CodecError,
    },
}

impl<F, E> Merged<F>
where
    F: FnMut(&Id) -> Result<Vec<u8>, E>,
{
    /// `base`: the base's pages in order; `layers`: each layer's pages, oldest layer first.
    pub fn new(base: Vec<Id>, layers: Vec<Vec<Id>>, fetch: F) -> Merged<F> {
        let mut levels = vec![Level {
            pages: base.into(),
            ops: VecDeque::new(),
            layer: false,
            last: None,
        }];
        levels.extend(layers.into_iter().map(|p| Level {
            pages: p.into(),
            ops: VecDeque::new(),
            layer: true,
            last: None,
        }));
        Merged {
            fetch,
            levels,
            failed: false,
        }
    }

    /// Makes sure level `i` has its next op in hand (unless it is exhausted).
    fn fill(&mut self, i: usize) -> Result<(), ReadError<E>> {
        while self.levels[i].ops.is_empty() {
            let Some(page) = self.levels[i].pages.pop_front() else {
                return Ok(());
            };
            let plain = (self.fetch)(&page).map_err(ReadError::Fetch)?;
            let layer = self.levels[i].layer;
            let ops = decode_page(&plain, layer).map_err(|source| ReadError::Page {
                page: blake3::Hash::from_bytes(page).to_hex().to_string(),
                source,
            })?;
            // Pages of one level follow each other in key order.
            if let (Some(last), Some(first)) = (&self.levels[i].last, ops.first()) {
                if first.key().as_ref() <= last.as_str() {
                    return Err(ReadError::Page {
                        page: blake3::Hash::from_bytes(page).to_hex().to_string(),
                        source: CodecError {
                            offset: 0,
                            what: format!(
                                "first key '{}' does not follow the previous page's last '{last}'",
                                first.key()
                            ),
                        },
                    });
                }
            }
            self.levels[i].last = ops.last().map(|o| o.key().into_owned());
            self.levels[i].ops = ops.into();
        }
        Ok(())
    }

    fn step(&mut self) -> Result<Option<Record>, ReadError<E>> {
        loop {
            for i in 0..self.levels.len() {
                self.fill(i)?;
            }
            // The smallest key; the newest level holding it decides.
            let mut min: Option<String> = None;
            for l in &self.levels {
                if let Some(op) = l.ops.front() {
                    let k = op.key();
                    if min.as_deref().is_none_or(|m| k.as_ref() < m) {
                        min = Some(k.into_owned());
                    }
                }
            }
            let Some(min) = min else { return Ok(None) };
            let mut winner: Option<Op> = None;
            for l in self.levels.iter_mut() {
                if l.ops.front().is_some_and(|op| op.key().as_ref() == min) {
                    winner = l.ops.pop_front();
                }
            }
            match winner {
                Some(Op::Put(r)) => return Ok(Some(r)),
                _ => continue, // deleted
            }
        }
    }
}

impl<F, E> Iterator for Merged<F>
where
    F: FnMut(&Id) -> Result<Vec<u8>, E>,
{
    type Item = Result<Record, ReadError<E>>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        match self.step() {
            Ok(r) => r.map(Ok),
            Err(e) => {
                self.failed = true;
                Some(Err(e))
            }
        }
    }
}

/// Compares a new sorted sequence of records, pushed one at a time, with an old one, pulled
/// as needed: the ops that turn the old into the new.
pub struct Differ<I: Iterator> {
    old: std::iter::Peekable<I>,
    pub unchanged: u64,
}

impl<I, E> Differ<I>
where
    I: Iterator<Item = Result<Record, E>>,
{
    pub fn new(old: I) -> Differ<I> {
        Differ {
            old: old.peekable(),
            unchanged: 0,
        }
    }

    /// The ops for `new` (keys strictly increasing across calls): deletions of old keys before
    /// it, then a put unless the old record is identical.
    pub fn push(&mut self, new: Record, out: &mut Vec<Op>) -> Result<(), E> {
        let key = new.key().into_owned();
        loop {
            let order = match self.old.peek() {
                None => break,
                Some(Err(_)) => {
                    return Err(self.old.next().expect("peeked").expect_err("an error"))
                }
                Some(Ok(old)) => old.key().as_ref().cmp(key.as_str()),
            };
            match order {
                std::cmp::Ordering::Less => {
                    let old = self.old.next().expect("peeked").ok().expect("a record");
                    out.push(Op::Delete(old.key().into_owned()));
                }
                std::cmp::Ordering::Equal => {
                    let old = self.old.next().expect("peeked").ok().expect("a record");
                    if old == new {
                        self.unchanged += 1;
                        return Ok(());
                    }
                    break;
                }
                std::cmp::Ordering::Greater => break,
            }
        }
        out.push(Op::Put(new));
        Ok(())
    }

    /// Deletions of the old keys after the last new one.
    pub fn finish(mut self, out: &mut Vec<Op>) -> Result<(), E> {
        for old in self.old.by_ref() {
            out.push(Op::Delete(old?.key().into_owned()));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
