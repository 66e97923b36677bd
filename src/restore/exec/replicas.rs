//! `[restore] replicas = "one"`: which finalized replicas the write-back leaves out. Every
//! backed-up volume the plan writes is read from the backup's streams (entries only, no
//! content); each finalized replica (block file and checksum file, paired in their directory)
//! becomes a [`placement::Candidate`] of the destination datanode, and [`placement`] picks one
//! per block, spreading the bytes over the datanodes. The others are [`Skipped`]: neither their
//! block nor their checksum file is written (nor checked beforehand), HDFS copies them once
//! out of safe mode. The choice depends only on the backup and the plan's volume moves, so a
//! resumed restore leaves out the same replicas.

use std::collections::HashMap;
use std::sync::Arc;

use super::*;
use crate::cluster::hopsfs::{self, VolumeFile};
use crate::placement::{self, Candidate, Holders};
use crate::restore::plan::VolumeMove;

/// Per backed-up volume (`<datanode>/vol<k>`): the ids of the finalized blocks whose replica
/// there is not written, sorted.
#[derive(Debug, Default)]
pub(super) struct Skipped {
    by_volume: HashMap<String, Vec<u64>>,
    /// Replicas left out, and their block bytes.
    pub count: u64,
    pub bytes: u64,
}

impl Skipped {
    /// Whether the file at `rel` (relative to `hopsfs/<from>/`) belongs to a replica left out.
    pub fn skips(&self, from: &str, rel: &str) -> bool {
        let Some(ids) = self.by_volume.get(from) else {
            return false;
        };
        let Some(in_current) = rel.strip_prefix("current/") else {
            return false;
        };
        match hopsfs::classify(in_current) {
            VolumeFile::Block {
                id,
                finalized: true,
                ..
            }
            | VolumeFile::Meta {
                id,
                finalized: true,
                ..
            } => ids.binary_search(&id).is_ok(),
            _ => false,
        }
    }
}

/// Whether the plan's write-back writes one replica per block.
pub(super) fn one_replica(run: &RestoreRun<'_>) -> bool {
    run.plan
        .steps
        .iter()
        .any(|s| s.kind == StepKind::HopsfsVolumes && s.one_replica)
}

/// The replicas the write-back leaves out: none unless the plan says one replica per block.
pub(super) fn skipped(
    run: &RestoreRun<'_>,
    i: usize,
    step: &RestoreStep,
    moves: &[VolumeMove],
) -> Result<Arc<Skipped>, RestoreError> {
    if !one_replica(run) {
        return Ok(Arc::new(Skipped::default()));
    }
    let io = |e: std::io::Error| {
        refused(
            i,
            step,
            format!("choosing one replica per block (temporary files): {e}"),
        )
    };
    let mut datanodes: Vec<String> = Vec::new();
    let mut datanode_of = Vec::with_capacity(moves.len());
    for mv in moves {
        let k = match datanodes.iter().position(|d| d == &mv.datanode) {
            Some(k) => k,
            None => {
                datanodes.push(mv.datanode.clone());
                datanodes.len() - 1
            }
        };
        datanode_of.push(k);
    }
    let holders = Holders::new().map_err(io)?;
    for (v, mv) in moves.iter().enumerate() {
        // (The volume's stream holds everything under it; only `current/` has replicas.)
        let volume = format!("hopsfs/{}/", mv.from);
        let prefix = format!("{volume}current/");
        // (directory, id) -> the block's length or the checksum file's (genstamp, length),
        // whichever came first (a stream gives them one after the other).
        let mut blocks: HashMap<(String, u64), (String, u64)> = HashMap::new();
        let mut metas: HashMap<(String, u64), (u64, u64)> = HashMap::new();
        for e in run.repo.entries_under(run.manifest, &volume) {
            let e = e.map_err(repo_err(i, step))?;
            let Entry::File(f) = e else { continue };
            let Some(rel) = f.path.strip_prefix(&prefix) else {
                continue;
            };
            let dir = rel.rsplit_once('/').map_or("", |x| x.0).to_string();
            let pair = match hopsfs::classify(rel) {
                VolumeFile::Block {
                    bp,
                    id,
                    finalized: true,
                } => match metas.remove(&(dir.clone(), id)) {
                    Some((genstamp, meta_len)) => {
                        Some((bp, id, genstamp, f.size, meta_len, rel.to_string()))
                    }
                    None => {
                        blocks.insert((dir, id), (bp, f.size));
                        None
                    }
                },
                VolumeFile::Meta {
                    id,
                    genstamp,
                    finalized: true,
                    ..
                } => match blocks.remove(&(dir.clone(), id)) {
                    Some((bp, len)) => {
                        let block = format!("{dir}/blk_{id}");
                        Some((bp, id, genstamp, len, f.size, block))
                    }
                    None => {
                        metas.insert((dir, id), (genstamp, f.size));
                        None
                    }
                },
                _ => None,
            };
            if let Some((bp, id, genstamp, len, meta_len, block_path)) = pair {
                let c = Candidate {
                    key: placement::key(&bp, id, genstamp, len, meta_len),
                    volume: v as u32,
                    len,
                    meta_len,
                    block_meta: Default::default(),
                    meta_meta: Default::default(),
                    block_path,
                    meta_path: String::new(),
                };
                holders.add(&c).map_err(io)?;
            }
        }
    }
    let mut loads = vec![0u64; datanodes.len()];
    let followers = holders
        .choose(&datanode_of, &datanodes, &mut loads, |_| Ok(()))
        .map_err(io)?;
    let mut skipped = Skipped {
        count: followers.count(),
        bytes: followers.bytes(),
        ..Skipped::default()
    };
    for c in followers.read().map_err(io)? {
        let c = c.map_err(io)?;
        let from = &moves[c.volume as usize].from;
        if let VolumeFile::Block { id, .. } = hopsfs::classify(&c.block_path) {
            skipped.by_volume.entry(from.clone()).or_default().push(id);
        }
    }
    for ids in skipped.by_volume.values_mut() {
        ids.sort_unstable();
    }
    Ok(Arc::new(skipped))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_finalized_replicas_of_listed_blocks_are_skipped() {
        let mut s = Skipped::default();
        s.by_volume.insert("dn2/vol1".into(), vec![7, 1073741825]);
        let fin = "current/BP-1-10.0.0.1-1/current/finalized/subdir0/subdir0";
        assert!(s.skips("dn2/vol1", &format!("{fin}/blk_1073741825")));
        assert!(s.skips("dn2/vol1", &format!("{fin}/blk_1073741825_1001.meta")));
        assert!(!s.skips("dn2/vol1", &format!("{fin}/blk_1073741826")));
        assert!(!s.skips("dn1/vol1", &format!("{fin}/blk_1073741825")));
        assert!(!s.skips("dn2/vol1", "current/BP-1-10.0.0.1-1/current/rbw/blk_7"));
        assert!(!s.skips("dn2/vol1", "current/VERSION"));
        assert!(!s.skips("dn2/vol1", fin));
    }
}
