//! Restore drills: proof that a backup restores, short of restoring it. A level 1 drill reads
//! the whole backup back as a verify does and, in the same pass, checks what its files mean:
//! every finalized HopsFS block against the checksums its datanode wrote in the `.meta` file
//! beside it (a mismatch means the datanode's copy was already damaged when the backup read
//! it), every RonDB backup file's structure as `ndb_restore` reads it (header, sections,
//! fragments, records, footers, the log's end), and `users.sql` and `schema.sql` split into
//! statements a dump holds. This module decides which files are read for meaning and how
//! ([`Meaning`], a [`ContentCheck`] for the repository's verify) and what a drill reports
//! ([`report`]); the job that runs it is the daemon's, as is level 2 (a whole restore into a
//! standby cluster, timed step by step, through the restore's own planner and executor).

pub mod blockmeta;
pub mod ndbfile;
pub mod report;
pub mod sqlcheck;

use crate::repository::inspect::{ContentCheck, Inspected, Inspector};
use crate::repository::layout;

/// What a drill reads a file as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// A finalized HopsFS replica, checked with its `.meta` file.
    Block,
    /// A RonDB backup file (`.ctl`, `.Data`, `.log`).
    Rondb,
    /// `users.sql` or `schema.sql`.
    Sql,
}

/// The largest SQL dump read for its meaning (held in memory to be split).
const SQL_LIMIT: usize = 1 << 30;

fn name(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

fn dir(path: &str) -> &str {
    path.rsplit_once('/').map_or("", |(d, _)| d)
}

/// `blk_<id>` → the id's text.
fn block_id(name: &str) -> Option<&str> {
    let id = name.strip_prefix("blk_")?;
    (!id.is_empty() && id.bytes().all(|b| b.is_ascii_digit())).then_some(id)
}

fn kind(path: &str) -> Option<Kind> {
    let n = name(path);
    if path.starts_with("hopsfs/") && path.contains("/finalized/") && block_id(n).is_some() {
        return Some(Kind::Block);
    }
    if path.starts_with("rondb/")
        && n.starts_with("BACKUP-")
        && [".ctl", ".Data", ".log"].iter().any(|s| n.ends_with(s))
    {
        return Some(Kind::Rondb);
    }
    if path == layout::USERS_SQL || path == layout::SCHEMA_SQL {
        return Some(Kind::Sql);
    }
    None
}

/// The level 1 checks, by logical path.
#[derive(Debug, Default, Clone, Copy)]
pub struct Meaning;

impl ContentCheck for Meaning {
    fn inspects(&self, path: &str) -> bool {
        kind(path).is_some()
    }

    fn companion(&self, path: &str, next: &str) -> bool {
        if kind(path) != Some(Kind::Block) || dir(path) != dir(next) {
            return false;
        }
        let Some(id) = block_id(name(path)) else {
            return false;
        };
        // blk_<id>_<genstamp>.meta
        name(next)
            .strip_prefix("blk_")
            .and_then(|r| r.strip_prefix(id))
            .and_then(|r| r.strip_prefix('_'))
            .and_then(|r| r.strip_suffix(".meta"))
            .is_some_and(|gs| !gs.is_empty() && gs.bytes().all(|b| b.is_ascii_digit()))
    }

    fn open(
        &self,
        path: &str,
        companion: Option<&[u8]>,
    ) -> Result<Option<Box<dyn Inspector>>, String> {
        Ok(match kind(path) {
            None => None,
            Some(Kind::Block) => {
                let Some(meta) = companion else {
                    return Err(
                        "a finalized block without its blk_<id>_<genstamp>.meta file beside it"
                            .into(),
                    );
                };
                let c = blockmeta::BlockChecker::new(meta).map_err(|e| e.to_string())?;
                Some(Box::new(BlockInspector(c)))
            }
            Some(Kind::Rondb) => Some(Box::new(RondbInspector(ndbfile::Walker::new(
                ndbfile::FileType::of_name(name(path)),
            )))),
            Some(Kind::Sql) => Some(Box::new(SqlInspector {
                text: Vec::new(),
                too_big: false,
            })),
        })
    }
}

struct BlockInspector(blockmeta::BlockChecker);

impl Inspector for BlockInspector {
    fn feed(&mut self, piece: &[u8]) {
        self.0.feed(piece);
    }
    fn finish(self: Box<Self>) -> Result<Inspected, String> {
        let s = self.0.finish().map_err(|e| {
            format!("{e}: the datanode's replica did not match its own checksums when the backup read it")
        })?;
        Ok(Inspected {
            kind: "hopsfs block",
            units: s.chunks,
        })
    }
}

struct RondbInspector(ndbfile::Walker);

impl Inspector for RondbInspector {
    fn feed(&mut self, piece: &[u8]) {
        self.0.feed(piece);
    }
    fn finish(self: Box<Self>) -> Result<Inspected, String> {
        let s = self.0.finish().map_err(|e| e.to_string())?;
        Ok(Inspected {
            kind: s.kind(),
            units: s.units(),
        })
    }
}

struct SqlInspector {
    text: Vec<u8>,
    too_big: bool,
}

impl Inspector for SqlInspector {
    fn feed(&mut self, piece: &[u8]) {
        if self.text.len() + piece.len() > SQL_LIMIT {
            self.too_big = true;
            self.text = Vec::new();
        }
        if !self.too_big {
            self.text.extend_from_slice(piece);
        }
    }
    fn finish(self: Box<Self>) -> Result<Inspected, String> {
        if self.too_big {
            return Err(format!(
                "larger than the {} GiB a SQL dump is read into memory for",
                SQL_LIMIT >> 30
            ));
        }
        let s = sqlcheck::check(&self.text).map_err(|e| e.to_string())?;
        Ok(Inspected {
            kind: "sql dump",
            units: s.statements as u64,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BLK: &str =
        "hopsfs/dn1/vol1/current/BP-1-127.0.0.1-1/current/finalized/subdir0/subdir0/blk_1073741825";

    #[test]
    fn files_are_read_by_where_they_are() {
        let m = Meaning;
        assert!(m.inspects(BLK));
        assert!(
            !m.inspects(&BLK.replace("finalized", "rbw")),
            "rbw replicas are being written"
        );
        assert!(!m.inspects(&format!("{BLK}_1001.meta")));
        assert!(m.inspects("rondb/1/BACKUP-7/BACKUP-7.1.ctl"));
        assert!(m.inspects("rondb/1/BACKUP-7/BACKUP-7-PART-1-OF-2/BACKUP-7-0.1.Data"));
        assert!(m.inspects("rondb/1/BACKUP-7/BACKUP-7.1.log"));
        assert!(!m.inspects("rondb/1/BACKUP-7/notes.txt"));
        assert!(m.inspects("users/users.sql") && m.inspects("users/schema.sql"));
        assert!(!m.inspects("config/hopsworks/cluster-defn.yml"));
    }

    #[test]
    fn a_block_s_companion_is_its_meta_file_in_the_same_directory() {
        let m = Meaning;
        assert!(m.companion(BLK, &format!("{BLK}_1001.meta")));
        assert!(
            !m.companion(BLK, &format!("{BLK}0_1001.meta")),
            "another block"
        );
        assert!(!m.companion(BLK, &format!("{BLK}_x.meta")));
        assert!(!m.companion(BLK, &format!("{}_1001.meta", BLK.replace("dn1", "dn2"))));
        assert!(!m.companion("users/users.sql", "users/users.sql_1.meta"));
        // A block without its companion: named, not skipped.
        let e = m.open(BLK, None).err().unwrap();
        assert!(e.contains(".meta"), "{e}");
        let e = m.open(BLK, Some(&[0, 1, 7, 0, 0, 2, 0])).err().unwrap();
        assert!(e.contains("checksum type 7"), "{e}");
    }
}
