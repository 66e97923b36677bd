//! HopsFS datanode volumes: pure parsing of a volume listing (`find -printf`), recognising
//! finalized block files (`blk_<id>`) and their checksum files (`blk_<id>_<genstamp>.meta`) in
//! any subdir fan-out (HopsFS 256×256, Apache HDFS 32×32), replicas in `rbw/`, and the
//! `<block pool> <block id> <genstamp> <length>` lines of a referenced-blocks source.
//!
//! A finalized block is immutable and named by block id and generation stamp (an append moves
//! it to `rbw/` and gives it a new stamp), so (block pool, id, genstamp, length) identifies its
//! content: hopsdr stores it once and never transfers it again.

use std::collections::BTreeMap;

/// The argv listing a directory tree, one line per entry:
/// `<type>\t<size>\t<mode>\t<uid>\t<gid>\t<mtime>\t<path relative to root>`; with
/// `with_root`, the root itself comes first, with an empty path.
pub fn find_argv(root: &str, with_root: bool) -> Vec<String> {
    [
        "find",
        root,
        "-mindepth",
        if with_root { "0" } else { "1" },
        "-printf",
        "%y\\t%s\\t%m\\t%U\\t%G\\t%T@\\t%P\\n",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// The directory on each volume that holds hopsdr's pins (outside the tree the datanode scans).
pub const PIN_DIR: &str = "hopsdr-pin";

/// Checksum files larger than this are stored on their own, not as one unit with their block
/// (a 128 MiB block has 1 MiB of checksums).
pub const MAX_PAIRED_META: u64 = 16 << 20;

/// `(dir, name)` of a replica's file (`.../finalized/.../blk_*`, or `.../rbw/blk_*`: a replica
/// being written is stored the same way, never deduplicated).
pub fn replica_file(path: &str) -> Option<(&str, &str)> {
    let (dir, name) = path.rsplit_once('/')?;
    (dir.contains("/finalized/") || dir.ends_with("/finalized") || dir.ends_with("/rbw"))
        .then_some((dir, name))
}

/// The kind of a listed entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Dir,
    File,
    Symlink,
    Other,
}

/// One listed entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    pub kind: Kind,
    pub size: u64,
    /// Permission bits.
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// Modification time, whole seconds since the epoch.
    pub mtime: i64,
    pub path: String,
}

/// Parses the output of [`find_argv`]. Lines that do not parse are returned as errors (a
/// listing hopsdr cannot read is not silently shortened).
pub fn parse_listing(text: &str) -> Result<Vec<Listed>, String> {
    let mut out = Vec::new();
    for line in text.lines() {
        if line.is_empty() {
            continue;
        }
        let f: Vec<&str> = line.splitn(7, '\t').collect();
        let [k, size, mode, uid, gid, mtime, path] = f.as_slice() else {
            return Err(format!("unreadable listing line {line:?}"));
        };
        let kind = match *k {
            "d" => Kind::Dir,
            "f" => Kind::File,
            "l" => Kind::Symlink,
            _ => Kind::Other,
        };
        let bad = |what: &str| format!("bad {what} in listing line {line:?}");
        let mtime: f64 = mtime.parse().map_err(|_| bad("mtime"))?;
        out.push(Listed {
            kind,
            size: size.parse().map_err(|_| bad("size"))?,
            mode: u32::from_str_radix(mode, 8).map_err(|_| bad("mode"))?,
            uid: uid.parse().map_err(|_| bad("uid"))?,
            gid: gid.parse().map_err(|_| bad("gid"))?,
            mtime: mtime.floor() as i64,
            path: path.to_string(),
        });
    }
    Ok(out)
}

/// What a file of a volume is. `finalized` is false for replicas under `<BP>/current/rbw/`
/// (being written or appended: mutable, never deduplicated).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VolumeFile {
    /// `<BP>/current/finalized/.../blk_<id>` (or `rbw/blk_<id>`)
    Block {
        bp: String,
        id: u64,
        finalized: bool,
    },
    /// `<BP>/current/finalized/.../blk_<id>_<genstamp>.meta` (or in `rbw/`)
    Meta {
        bp: String,
        id: u64,
        genstamp: u64,
        finalized: bool,
    },
    /// VERSION files and the rest of the volume's bookkeeping.
    Other,
}

/// Classifies a path relative to the volume's `current/` directory.
pub fn classify(path: &str) -> VolumeFile {
    match classify_ref(path) {
        FileRef::Block { bp, id, finalized } => VolumeFile::Block {
            bp: bp.to_string(),
            id,
            finalized,
        },
        FileRef::Meta {
            bp,
            id,
            genstamp,
            finalized,
        } => VolumeFile::Meta {
            bp: bp.to_string(),
            id,
            genstamp,
            finalized,
        },
        FileRef::Other => VolumeFile::Other,
    }
}

/// [`VolumeFile`] borrowing the block pool from the path (once per listed file: no
/// allocation).
enum FileRef<'a> {
    Block {
        bp: &'a str,
        id: u64,
        finalized: bool,
    },
    Meta {
        bp: &'a str,
        id: u64,
        genstamp: u64,
        finalized: bool,
    },
    Other,
}

fn classify_ref(path: &str) -> FileRef<'_> {
    let mut parts = path.split('/');
    let (Some(bp), Some("current"), Some(state), Some(_)) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return FileRef::Other;
    };
    if !bp.starts_with("BP-") || (state != "finalized" && state != "rbw") {
        return FileRef::Other;
    }
    let finalized = state == "finalized";
    let name = path.rsplit('/').next().unwrap_or("");
    if let Some(rest) = name.strip_prefix("blk_") {
        if let Some(meta) = rest.strip_suffix(".meta") {
            if let Some((id, gs)) = meta.split_once('_') {
                if let (Ok(id), Ok(genstamp)) = (id.parse(), gs.parse()) {
                    return FileRef::Meta {
                        bp,
                        id,
                        genstamp,
                        finalized,
                    };
                }
            }
        } else if let Ok(id) = rest.parse() {
            return FileRef::Block { bp, id, finalized };
        }
    }
    FileRef::Other
}

/// A block as the metadata and the volumes know it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BlockRef {
    pub bp: String,
    pub id: u64,
    pub genstamp: u64,
    pub len: u64,
}

/// A finalized replica on a volume: the block file and its checksum file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replica {
    pub block: BlockRef,
    /// False for a replica in `rbw/`.
    pub finalized: bool,
    pub block_path: String,
    pub meta_path: String,
    pub meta_size: u64,
}

/// Pairs block files with their `.meta` files (same directory). Unpaired files are not
/// replicas hopsdr can rely on; they are returned as plain files by the caller.
pub fn replicas(listing: &[Listed]) -> Vec<Replica> {
    // (dir, bp, id) -> (block path, len) and (meta path, genstamp, size), borrowed from the
    // listing (a walk calls this once per directory of millions of files).
    type Key<'a> = (&'a str, &'a str, u64);
    let mut blocks: BTreeMap<Key<'_>, (&str, u64, bool)> = BTreeMap::new();
    let mut metas: BTreeMap<Key<'_>, (&str, u64, u64)> = BTreeMap::new();
    for e in listing.iter().filter(|e| e.kind == Kind::File) {
        let dir = e.path.rsplit_once('/').map(|x| x.0).unwrap_or("");
        match classify_ref(&e.path) {
            FileRef::Block { bp, id, finalized } => {
                blocks.insert((dir, bp, id), (&e.path, e.size, finalized));
            }
            FileRef::Meta {
                bp, id, genstamp, ..
            } => {
                metas.insert((dir, bp, id), (&e.path, genstamp, e.size));
            }
            FileRef::Other => {}
        }
    }
    let mut out = Vec::with_capacity(blocks.len());
    for (key, (block_path, len, finalized)) in blocks {
        if let Some(&(meta_path, genstamp, meta_size)) = metas.get(&key) {
            out.push(Replica {
                block: BlockRef {
                    bp: key.1.to_string(),
                    id: key.2,
                    genstamp,
                    len,
                },
                finalized,
                block_path: block_path.to_string(),
                meta_path: meta_path.to_string(),
                meta_size,
            });
        }
    }
    out
}

/// Line `number` of a referenced-blocks source (`<block pool> <block id> <genstamp> <length>`
/// per line): a block, or `None` for a blank line or a `#` comment.
pub fn parse_referenced_line(number: usize, line: &str) -> Result<Option<BlockRef>, String> {
    let t = line.trim();
    if t.is_empty() || t.starts_with('#') {
        return Ok(None);
    }
    let f: Vec<&str> = t.split_whitespace().collect();
    if let [bp, id, gs, len] = f.as_slice() {
        if let (Ok(id), Ok(genstamp), Ok(len)) = (id.parse(), gs.parse(), len.parse()) {
            return Ok(Some(BlockRef {
                bp: bp.to_string(),
                id,
                genstamp,
                len,
            }));
        }
    }
    Err(format!(
        "line {number}: expected \"<block pool> <block id> <genstamp> <length>\", found {t:?}"
    ))
}

/// The number after `name` on the first line of fsck's report that starts with it.
fn fsck_field(text: &str, name: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.trim_start().starts_with(name))?;
    line.trim_start()[name.len()..]
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// The blocks `hdfs fsck /` found reported (with at least the minimum replication, one
/// replica: what safe mode counts), and the blocks the metadata holds: from its
/// ` Minimally replicated blocks:` and ` Total blocks (validated):` lines (HopsFS prints no
/// ` Missing blocks:` line; Apache Hadoop's, when there is no minimally-replicated line, gives
/// the same). `None` if they are absent.
pub fn fsck_reported(text: &str) -> Option<(u64, u64)> {
    let total = fsck_field(text, "Total blocks (validated):")?;
    match fsck_field(text, "Minimally replicated blocks:") {
        Some(reported) => Some((reported, total)),
        None => {
            let missing = fsck_field(text, "Missing blocks:")?;
            Some((total.saturating_sub(missing), total))
        }
    }
}

/// The blocks `hdfs fsck /` found with fewer replicas than their replication factor (but at
/// least one), and the replicas they lack: its ` Under-replicated blocks:` and
/// ` Missing replicas:` lines. `None` if absent.
pub fn fsck_under_replicated(text: &str) -> Option<(u64, u64)> {
    Some((
        fsck_field(text, "Under-replicated blocks:")?,
        fsck_field(text, "Missing replicas:")?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    const BP: &str = "BP-850094435-10.0.0.1-1781765471666";

    #[test]
    fn classifies_volume_files_in_any_fanout() {
        assert_eq!(
            classify(&format!(
                "{BP}/current/finalized/subdir0/subdir0/blk_1073741825"
            )),
            VolumeFile::Block {
                bp: BP.into(),
                id: 1073741825,
                finalized: true
            }
        );
        assert_eq!(
            classify(&format!(
                "{BP}/current/finalized/subdir31/subdir2/blk_1073741825_1001.meta"
            )),
            VolumeFile::Meta {
                bp: BP.into(),
                id: 1073741825,
                genstamp: 1001,
                finalized: true
            }
        );
        assert_eq!(
            classify(&format!("{BP}/current/rbw/blk_1073741826")),
            VolumeFile::Block {
                bp: BP.into(),
                id: 1073741826,
                finalized: false
            }
        );
        assert_eq!(classify("VERSION"), VolumeFile::Other);
        assert_eq!(
            classify(&format!("{BP}/current/VERSION")),
            VolumeFile::Other
        );
        assert_eq!(
            classify(&format!("{BP}/current/finalized/subdir0/blk_x")),
            VolumeFile::Other
        );
    }

    #[test]
    fn pairs_blocks_with_meta_files() {
        let a = "\t644\t0\t0\t1764000000.5\t";
        let text = format!(
            "d\t4096\t755\t1001\t1002\t1764000000.0000000000\t{BP}\nf\t120{a}VERSION\n\
             f\t2156{a}{BP}/current/finalized/subdir0/subdir0/blk_1\n\
             f\t27{a}{BP}/current/finalized/subdir0/subdir0/blk_1_1001.meta\n\
             f\t99{a}{BP}/current/finalized/subdir0/subdir0/blk_2\n\
             f\t10{a}{BP}/current/rbw/blk_3\n\
             f\t7{a}{BP}/current/rbw/blk_3_1009.meta\n"
        );
        let l = parse_listing(&text).unwrap();
        assert_eq!(l.len(), 7);
        assert_eq!(
            (l[0].kind, l[0].mode, l[0].uid, l[0].gid, l[0].mtime),
            (Kind::Dir, 0o755, 1001, 1002, 1_764_000_000)
        );
        assert_eq!(
            (l[1].size, l[1].mode, l[1].path.as_str()),
            (120, 0o644, "VERSION")
        );
        assert!(
            parse_listing("f\t1\t999\t0\t0\t1\tx\n").is_err(),
            "mode is octal"
        );
        assert!(
            parse_listing("f\t1\t644\t0\t0\t1\tname\twith\ttabs\n").unwrap()[0].path
                == "name\twith\ttabs"
        );
        let r = replicas(&l);
        assert_eq!(r.len(), 2, "blk_2 has no meta file");
        assert!(!r[1].finalized && r[1].block.genstamp == 1009);
        assert_eq!(
            r[0].block,
            BlockRef {
                bp: BP.into(),
                id: 1,
                genstamp: 1001,
                len: 2156
            }
        );
        assert_eq!(r[0].meta_size, 27);
        assert!(parse_listing("x\n").is_err());
    }

    #[test]
    fn referenced_block_lines() {
        assert_eq!(
            parse_referenced_line(3, &format!(" {BP} 1 1001 2156 ")).unwrap(),
            Some(BlockRef {
                bp: BP.into(),
                id: 1,
                genstamp: 1001,
                len: 2156
            })
        );
        assert_eq!(parse_referenced_line(4, "").unwrap(), None);
        assert_eq!(parse_referenced_line(5, "# blocks").unwrap(), None);
        let e = parse_referenced_line(7, "BP-1 x 1 2").unwrap_err();
        assert!(e.starts_with("line 7:") && e.contains("BP-1 x 1 2"), "{e}");
        assert!(parse_referenced_line(8, "BP-1 1 2").is_err());
    }

    #[test]
    fn fsck_gives_the_share_of_blocks_reported() {
        let text = "Status: CORRUPT\n Total size:\t1048576 B\n Total files:\t10\n \
                    Total blocks (validated):\t10 (avg. block size 104857 B)\n \
                    Minimally replicated blocks:\t9 (90.0 %)\n Missing blocks:\t\t1\n";
        assert_eq!(fsck_reported(text), Some((9, 10)));
        assert_eq!(fsck_reported("Status: HEALTHY\n"), None);
        // HopsFS (NamenodeFsck.Result.toString): no "Missing blocks" line.
        let hops = "Status: HEALTHY\n Total size:\t1048576 B\n Total dirs:\t4\n \
                    Total files:\t10\n Total symlinks:\t\t0\n \
                    Total blocks (validated):\t10 (avg. block size 104857 B)\n \
                    Minimally replicated blocks:\t10 (100.0 %)\n \
                    Over-replicated blocks:\t0 (0.0 %)\n \
                    Under-replicated blocks:\t7 (70.0 %)\n \
                    Mis-replicated blocks:\t\t0 (0.0 %)\n \
                    Default replication factor:\t3\n \
                    Average block replication:\t1.6\n Corrupt blocks:\t\t0\n \
                    Missing replicas:\t\t14 (46.666668 %)\n";
        assert_eq!(fsck_reported(hops), Some((10, 10)));
        assert_eq!(fsck_under_replicated(hops), Some((7, 14)));
        assert_eq!(fsck_under_replicated(text), None);
    }
}
