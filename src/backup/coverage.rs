//! The coverage check of a HopsFS backup: the blocks the backed-up metadata references minus
//! the blocks the copy captured, in memory that does not grow with the cluster.
//!
//! The referenced-blocks source's output is spooled to a temporary file as it arrives (every
//! line checked, the count kept). Each captured replica's block is a 128-bit key (the first 16
//! bytes of the BLAKE3 of pool, id, genstamp and length) appended to one of [`BUCKETS`]
//! temporary files chosen by the key's first bits. The check reads the referenced blocks once,
//! writing (key, line number) to buckets of its own, then takes one bucket pair at a time: the
//! captured keys of the bucket sorted in memory (a 1/`BUCKETS` share), each referenced key
//! looked up; the lines found missing are read back once more to name their blocks.

use std::collections::HashSet;
use std::fs::File;
use std::io::{BufRead, BufWriter, Read, Seek, Write};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::hopsfs::HopsfsError;
use crate::cluster::hopsfs::{self, BlockRef};
use crate::cluster::node::{Node, NodeError};

/// Bits of a key that choose its bucket.
const BUCKET_BITS: u32 = 6;
/// Temporary files per side of the check.
pub const BUCKETS: usize = 1 << BUCKET_BITS;

/// A captured block's key, computed on any thread ([`Captured::insert_key`]).
#[derive(Debug, Clone, Copy)]
pub struct CapturedKey(u128);

impl CapturedKey {
    pub fn of(b: &BlockRef) -> CapturedKey {
        CapturedKey(key(b))
    }
}

fn key(b: &BlockRef) -> u128 {
    let mut h = blake3::Hasher::new();
    h.update(b.bp.as_bytes());
    h.update(&[0]);
    h.update(&b.id.to_le_bytes());
    h.update(&b.genstamp.to_le_bytes());
    h.update(&b.len.to_le_bytes());
    u128::from_be_bytes(h.finalize().as_bytes()[..16].try_into().expect("16"))
}

fn bucket_of(k: u128) -> usize {
    (k >> (128 - BUCKET_BITS)) as usize
}

fn buckets() -> std::io::Result<Vec<BufWriter<File>>> {
    (0..BUCKETS)
        .map(|_| Ok(BufWriter::with_capacity(8 << 10, tempfile::tempfile()?)))
        .collect()
}

/// The whole of bucket file `w`, from its start.
fn read_back(w: BufWriter<File>) -> std::io::Result<Vec<u8>> {
    let mut f = w.into_inner().map_err(|e| e.into_error())?;
    f.rewind()?;
    let mut raw = Vec::new();
    f.read_to_end(&mut raw)?;
    Ok(raw)
}

/// The blocks a backup captured (see the module documentation).
pub struct Captured {
    buckets: Vec<BufWriter<File>>,
}

impl std::fmt::Debug for Captured {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Captured").finish_non_exhaustive()
    }
}

impl Captured {
    pub fn new() -> std::io::Result<Captured> {
        Ok(Captured {
            buckets: buckets()?,
        })
    }

    /// Records block `b` as captured (once per replica is fine).
    pub fn insert(&mut self, b: &BlockRef) -> std::io::Result<()> {
        self.insert_key(CapturedKey::of(b))
    }

    /// [`Captured::insert`] of a key computed elsewhere.
    pub fn insert_key(&mut self, k: CapturedKey) -> std::io::Result<()> {
        self.buckets[bucket_of(k.0)].write_all(&k.0.to_be_bytes())
    }

    /// The `referenced` blocks not captured, each once, in the source's order.
    pub fn missing(self, referenced: &mut Referenced) -> Result<Vec<BlockRef>, HopsfsError> {
        let spool = |e: std::io::Error| HopsfsError::Coverage(format!("the check: {e}"));
        let mut wanted = buckets().map_err(spool)?;
        let mut failed = None;
        Referenced::each_in(&mut referenced.file, |line, b| {
            let k = key(&b);
            let w = &mut wanted[bucket_of(k)];
            if let Err(e) = w
                .write_all(&k.to_be_bytes())
                .and_then(|()| w.write_all(&(line as u64).to_le_bytes()))
            {
                failed.get_or_insert(e);
            }
            Ok(())
        })
        .map_err(HopsfsError::Referenced)?;
        if let Some(e) = failed {
            return Err(spool(e));
        }
        let mut lines = Vec::new();
        for (have, want) in self.buckets.into_iter().zip(wanted) {
            let have = read_back(have).map_err(spool)?;
            let mut keys: Vec<u128> = have
                .chunks_exact(16)
                .map(|c| u128::from_be_bytes(c.try_into().expect("16")))
                .collect();
            drop(have);
            keys.sort_unstable();
            keys.dedup();
            for rec in read_back(want).map_err(spool)?.chunks_exact(24) {
                let k = u128::from_be_bytes(rec[..16].try_into().expect("16"));
                if keys.binary_search(&k).is_err() {
                    lines.push(u64::from_le_bytes(rec[16..].try_into().expect("8")) as usize);
                }
            }
        }
        lines.sort_unstable();
        let mut out = Vec::new();
        if lines.is_empty() {
            return Ok(out);
        }
        let mut seen = HashSet::new();
        Referenced::each_in(&mut referenced.file, |line, b| {
            if lines.binary_search(&line).is_ok() && seen.insert(b.clone()) {
                out.push(b);
            }
            Ok(())
        })
        .map_err(HopsfsError::Referenced)?;
        Ok(out)
    }
}

/// Runs the referenced-blocks source for RonDB backup `rondb_id`; a backup encrypted by RonDB
/// gives the source `--backup-password-from-stdin` and `password` on its standard input, as
/// ndb_restore gets it.
pub fn referenced(
    command: &[String],
    rondb_id: u32,
    password: Option<&str>,
    timeout: Duration,
    cancel: &CancellationToken,
) -> Result<Referenced, HopsfsError> {
    let mut a = command.to_vec();
    a.push("--backup-id".into());
    a.push(rondb_id.to_string());
    let input = password.map(|p| {
        a.push("--backup-password-from-stdin".into());
        format!("{p}\n").into_bytes()
    });
    let head = Node::local("head node");
    let bad = |e: String| HopsfsError::Referenced(e);
    let mut file = tempfile::tempfile()
        .map_err(|e| bad(format!("no temporary file for the referenced blocks: {e}")))?;
    let (status, stderr) = head
        .stream_with_input(&a, input, timeout, cancel, |rd| {
            let mut w = BufWriter::new(&mut file);
            std::io::copy(rd, &mut w)?;
            w.flush()
        })
        .map_err(|e| bad(e.to_string()))?;
    if !status.success() {
        return Err(bad(NodeError::Failed {
            node: head.name.clone(),
            command: crate::cluster::node::remote_command_line(&a),
            status: status.to_string(),
            stderr,
        }
        .to_string()));
    }
    let mut count = 0;
    Referenced::each_in(&mut file, |_, _| {
        count += 1;
        Ok(())
    })
    .map_err(bad)?;
    Ok(Referenced { file, count })
}

/// The blocks the backed-up metadata references, one per line of the source's output, spooled
/// to a temporary file (checked as it was read) and read back to find what was not captured.
#[derive(Debug)]
pub struct Referenced {
    file: File,
    count: u64,
}

impl Referenced {
    /// Blocks listed (the source lists each block once, as a query over the block table does).
    pub fn len(&self) -> u64 {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Calls `f` with each block listed.
    pub fn for_each(
        &mut self,
        f: impl FnMut(usize, BlockRef) -> Result<(), String>,
    ) -> Result<(), HopsfsError> {
        Self::each_in(&mut self.file, f).map_err(HopsfsError::Referenced)
    }

    /// Calls `f` with each block of `file` and its line number.
    fn each_in(
        file: &mut File,
        mut f: impl FnMut(usize, BlockRef) -> Result<(), String>,
    ) -> Result<(), String> {
        file.rewind().map_err(|e| e.to_string())?;
        let r = std::io::BufReader::with_capacity(1 << 20, &*file);
        for (i, line) in r.lines().enumerate() {
            let line = line.map_err(|e| format!("line {}: {e}", i + 1))?;
            if let Some(b) = hopsfs::parse_referenced_line(i + 1, &line)? {
                f(i + 1, b)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A referenced-blocks source printing `body` (and exiting with `code`).
    fn source(dir: &std::path::Path, body: &str, code: i32) -> Vec<String> {
        use std::os::unix::fs::PermissionsExt;
        let data = dir.join("out.txt");
        std::fs::write(&data, body).unwrap();
        let p = dir.join("source");
        std::fs::write(
            &p,
            format!("#!/bin/sh\ncat '{}'\nexit {code}\n", data.display()),
        )
        .unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        vec![p.display().to_string()]
    }

    fn block(id: u64) -> BlockRef {
        BlockRef {
            bp: "BP-1".into(),
            id,
            genstamp: 1000 + id,
            len: 10 * id,
        }
    }

    fn captured(ids: impl Iterator<Item = u64>) -> Captured {
        let mut c = Captured::new().unwrap();
        for id in ids {
            // Three replicas of each block.
            for _ in 0..3 {
                c.insert(&block(id)).unwrap();
            }
        }
        c
    }

    #[test]
    fn referenced_blocks_are_spooled_and_the_missing_ones_named_once() {
        let tmp = tempfile::tempdir().unwrap();
        let mut body = String::from("# blocks\n\n");
        for id in 1..=3000u64 {
            body.push_str(&format!("BP-1 {id} {} {}\n", 1000 + id, 10 * id));
        }
        body.push_str("BP-1 7 1007 70\n"); // listed twice: missing once
        let cmd = source(tmp.path(), &body, 0);
        let cancel = CancellationToken::new();
        let mut refd = referenced(&cmd, 5, None, Duration::from_secs(30), &cancel).unwrap();
        assert_eq!(refd.len(), 3001);
        let mut c = captured((1..=3000u64).filter(|i| *i != 7 && *i != 2999));
        c.insert(&BlockRef {
            len: 1,
            ..block(2999)
        })
        .unwrap(); // another length is another block
        c.insert(&block(5000)).unwrap(); // captured, not referenced: no matter
        let missing = c.missing(&mut refd).unwrap();
        assert_eq!(missing, vec![block(7), block(2999)]);
        // Everything captured: nothing missing, and the spool reads back again.
        assert!(captured(1..=3000u64).missing(&mut refd).unwrap().is_empty());
        // Nothing captured: every block, each once, in the source's order.
        let all = captured(std::iter::empty()).missing(&mut refd).unwrap();
        assert_eq!(all.len(), 3000);
        assert_eq!(all[..3], [block(1), block(2), block(3)]);
    }

    #[test]
    fn a_bad_referenced_source_is_named() {
        let tmp = tempfile::tempdir().unwrap();
        let cancel = CancellationToken::new();
        let t = Duration::from_secs(30);
        let cmd = source(tmp.path(), "BP-1 1 1001 10\nBP-1 two 1002 20\n", 0);
        let e = referenced(&cmd, 5, None, t, &cancel)
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 2") && e.contains("two"), "{e}");
        let cmd = source(tmp.path(), "BP-1 1 1001 10\n", 3);
        let e = referenced(&cmd, 5, None, t, &cancel)
            .unwrap_err()
            .to_string();
        assert!(e.contains("--backup-id 5") && e.contains('3'), "{e}");
    }
}
