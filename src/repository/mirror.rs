//! A second copy of the repository: every object of the primary that the target lacks is sent
//! (the set difference of names — objects are immutable, so a name present is the object),
//! read back on the far side and checked against the source's bytes, in the order a reader
//! needs them: the header (only into an empty target; another repository's header there is
//! refused), the key slots and data keys, the packs and blobs, the index objects, and the
//! manifests last — a manifest arrives only after everything it names, so a copy stopped at
//! any point holds only whole backups. Then what the primary no longer holds is deleted from
//! the target in the reverse order (manifests first, packs last): a backup the primary forgot is
//! forgotten by the copy too, and its packs collected. Nothing is deleted when the primary
//! lists no manifest at all (a wiped or wrongly configured primary must not empty its copy).
//!
//! Listings go shard by shard (`packs/00/` … `packs/ff/`), so memory stays bounded by one
//! shard of both sides. [`plan`] is pure.

use std::sync::Arc;

use super::storage::{ObjectInfo, Storage};
use super::{RepoError, HEADER_KEY};

/// The key classes, in the order objects are sent.
const ORDER: &[(&str, bool)] = &[
    // (prefix, sharded by two hex digits)
    ("keys/", false),
    ("packs/", true),
    ("blobs/", true),
    ("index/", false),
    ("manifests/", false),
];

/// What one class's listings ask for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// Keys the target lacks (or holds with another size: sent again).
    pub send: Vec<String>,
    /// Keys the target holds and the primary does not.
    pub delete: Vec<String>,
}

/// The set difference of two sorted listings. An object of the same name and size is the same
/// object (names are content hashes or random, objects are never rewritten) — except the key
/// slots, which `key add` replaces: there a size alone cannot tell, and `mutable` objects are
/// compared by content by the caller.
pub fn plan(primary: &[ObjectInfo], target: &[ObjectInfo]) -> Plan {
    let mut out = Plan::default();
    let (mut i, mut j) = (0, 0);
    while i < primary.len() || j < target.len() {
        match (primary.get(i), target.get(j)) {
            (Some(p), Some(t)) if p.key == t.key => {
                if p.size != t.size {
                    out.send.push(p.key.clone());
                }
                i += 1;
                j += 1;
            }
            (Some(p), Some(t)) if p.key < t.key => {
                out.send.push(p.key.clone());
                i += 1;
            }
            (Some(_), Some(t)) | (None, Some(t)) => {
                out.delete.push(t.key.clone());
                j += 1;
            }
            (Some(p), None) => {
                out.send.push(p.key.clone());
                i += 1;
            }
            (None, None) => unreachable!("loop condition"),
        }
    }
    out
}

/// What a copy did.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CopyReport {
    pub objects_sent: u64,
    pub bytes_sent: u64,
    pub objects_deleted: u64,
    /// Manifests the target holds after the copy.
    pub manifests: u64,
    /// Deletions left out because the primary lists no manifest.
    pub deletions_refused: bool,
}

/// Why a copy stopped.
#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    #[error("{0}")]
    Repo(#[from] RepoError),
    #[error("the copy target {target} holds another repository (its header differs from the primary's): give the copy an empty place of its own")]
    OtherRepository { target: String },
    #[error("{key} read back from {target} does not match what was sent ({sent} bytes, {read} read back): the copy target does not keep what it is given")]
    Mismatch {
        target: String,
        key: String,
        sent: usize,
        read: usize,
    },
    #[error("the primary repository has no header: nothing to copy")]
    NoPrimary,
    #[error("stopped: hopsdrd is stopping")]
    Cancelled,
}

/// Lists `prefix` in shards when `sharded`.
fn shards(prefix: &str, sharded: bool) -> Vec<String> {
    if sharded {
        (0..=255u8).map(|b| format!("{prefix}{b:02x}/")).collect()
    } else {
        vec![prefix.to_string()]
    }
}

fn store_err(e: super::StorageError) -> CopyError {
    CopyError::Repo(e.into())
}

/// Sends `key` and checks it on the far side.
fn send_one(from: &dyn Storage, to: &dyn Storage, key: &str) -> Result<u64, CopyError> {
    let data = from.get(key).map_err(store_err)?;
    to.put(key, &data).map_err(store_err)?;
    let back = to.get(key).map_err(store_err)?;
    if blake3::hash(&back) != blake3::hash(&data) {
        return Err(CopyError::Mismatch {
            target: to.describe(),
            key: key.to_string(),
            sent: data.len(),
            read: back.len(),
        });
    }
    Ok(data.len() as u64)
}

/// Sends `keys` with `parallel` workers; stops at the first error or once `cancel` is.
fn send_all(
    from: &Arc<dyn Storage>,
    to: &Arc<dyn Storage>,
    keys: Vec<String>,
    parallel: usize,
    cancel: &tokio_util::sync::CancellationToken,
    report: &mut CopyReport,
) -> Result<(), CopyError> {
    let next = std::sync::atomic::AtomicUsize::new(0);
    let results: Vec<Result<(u64, u64), CopyError>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..parallel.clamp(1, 32).min(keys.len().max(1)))
            .map(|_| {
                scope.spawn(|| {
                    let (mut n, mut bytes) = (0u64, 0u64);
                    loop {
                        let k = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let Some(key) = keys.get(k) else {
                            return Ok((n, bytes));
                        };
                        if cancel.is_cancelled() {
                            return Err(CopyError::Cancelled);
                        }
                        bytes += send_one(from.as_ref(), to.as_ref(), key)?;
                        n += 1;
                        crate::failpoint::hit("copy.object", cancel);
                    }
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .collect()
    });
    let mut first = None;
    for r in results {
        match r {
            Ok((n, b)) => {
                report.objects_sent += n;
                report.bytes_sent += b;
            }
            Err(e) => {
                first.get_or_insert(e);
            }
        }
    }
    first.map_or(Ok(()), Err)
}

/// Copies the repository in `from` to `to` (see the module's text).
pub fn copy(
    from: &Arc<dyn Storage>,
    to: &Arc<dyn Storage>,
    parallel: usize,
    cancel: &tokio_util::sync::CancellationToken,
) -> Result<CopyReport, CopyError> {
    let mut report = CopyReport::default();
    let header = match from.get(HEADER_KEY) {
        Ok(h) => h,
        Err(e) if e.is_not_found() => return Err(CopyError::NoPrimary),
        Err(e) => return Err(store_err(e)),
    };
    match to.get(HEADER_KEY) {
        Ok(h) if h == header => {}
        Ok(_) => {
            return Err(CopyError::OtherRepository {
                target: to.describe(),
            })
        }
        Err(e) if e.is_not_found() => {
            // An empty place, or a copy begun whose header came first: anything else there?
            if !to.list("manifests/").map_err(store_err)?.is_empty() {
                return Err(CopyError::OtherRepository {
                    target: to.describe(),
                });
            }
            report.bytes_sent += send_one(from.as_ref(), to.as_ref(), HEADER_KEY)?;
            report.objects_sent += 1;
        }
        Err(e) => return Err(store_err(e)),
    }
    let primary_has_manifests = !from.list("manifests/").map_err(store_err)?.is_empty();
    let mut deletions: Vec<Vec<String>> = Vec::new();
    for &(prefix, sharded) in ORDER {
        if prefix == "manifests/" {
            crate::failpoint::hit("copy.manifests", cancel);
        }
        let mut delete = Vec::new();
        for shard in shards(prefix, sharded) {
            if cancel.is_cancelled() {
                return Err(CopyError::Cancelled);
            }
            let p = from.list(&shard).map_err(store_err)?;
            let t = to.list(&shard).map_err(store_err)?;
            let mut plan = plan(&p, &t);
            if prefix == "keys/" {
                // A slot replaced in place keeps its size only by chance: compare the bytes.
                for o in &p {
                    if !plan.send.contains(&o.key)
                        && from.get(&o.key).map_err(store_err)?
                            != to.get(&o.key).map_err(store_err)?
                    {
                        plan.send.push(o.key.clone());
                    }
                }
            }
            send_all(from, to, plan.send, parallel, cancel, &mut report)?;
            delete.extend(plan.delete);
        }
        deletions.push(delete);
    }
    // Deletions: manifests first, packs and blobs, then key slots (a slot removed from the
    // primary, say for a leaked passphrase, must not keep opening the copy).
    if primary_has_manifests {
        for keys in deletions.into_iter().rev() {
            for k in keys {
                if cancel.is_cancelled() {
                    return Err(CopyError::Cancelled);
                }
                to.delete(&k).map_err(store_err)?;
                report.objects_deleted += 1;
            }
        }
    } else {
        report.deletions_refused = deletions.iter().any(|d| !d.is_empty());
    }
    report.manifests = to.list("manifests/").map_err(store_err)?.len() as u64;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repository::LocalStorage;

    fn info(key: &str, size: u64) -> ObjectInfo {
        ObjectInfo {
            key: key.to_string(),
            size,
            last_modified: None,
        }
    }

    #[test]
    fn the_plan_is_the_set_difference_of_names() {
        let p = [info("a", 1), info("b", 2), info("d", 4), info("e", 5)];
        let t = [info("b", 2), info("c", 3), info("d", 9)];
        let plan = plan(&p, &t);
        assert_eq!(plan.send, ["a", "d", "e"], "missing, or another size");
        assert_eq!(plan.delete, ["c"]);
        assert_eq!(super::plan(&[], &t).delete.len(), 3);
        assert_eq!(super::plan(&p, &[]).send.len(), 4);
        assert_eq!(super::plan(&p, &p), Plan::default());
    }

    fn store(dir: &std::path::Path) -> Arc<dyn Storage> {
        Arc::new(LocalStorage::new(dir.to_path_buf()).unwrap())
    }

    #[test]
    fn a_copy_sends_what_is_missing_in_order_and_mirrors_deletions() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let (from, to) = (store(a.path()), store(b.path()));
        let cancel = tokio_util::sync::CancellationToken::new();
        from.put(HEADER_KEY, b"{\"format\":\"hopsdr-repository\"}")
            .unwrap();
        from.put("packs/ab/ab01", b"pack one").unwrap();
        from.put("packs/cd/cd02", b"pack two").unwrap();
        from.put("index/0001", b"index").unwrap();
        from.put("manifests/20261207T000000Z.json.zst", b"m1")
            .unwrap();
        from.put("keys/slots/default.json", b"slot v1").unwrap();
        let r = copy(&from, &to, 3, &cancel).unwrap();
        assert_eq!((r.objects_sent, r.manifests), (6, 1));
        for k in ["packs/ab/ab01", "packs/cd/cd02", "index/0001", HEADER_KEY] {
            assert_eq!(to.get(k).unwrap(), from.get(k).unwrap(), "{k}");
        }
        // Nothing new: nothing sent.
        let r = copy(&from, &to, 3, &cancel).unwrap();
        assert_eq!(r.objects_sent, 0);
        // The primary forgot a backup and collected its pack, replaced a slot (same size).
        from.delete("manifests/20261207T000000Z.json.zst").unwrap();
        from.put("manifests/20261208T000000Z.json.zst", b"m2")
            .unwrap();
        from.delete("packs/ab/ab01").unwrap();
        from.put("keys/slots/default.json", b"slot v2").unwrap();
        let r = copy(&from, &to, 3, &cancel).unwrap();
        assert_eq!((r.objects_sent, r.objects_deleted), (2, 2));
        assert!(!to.exists("packs/ab/ab01").unwrap());
        assert!(!to.exists("manifests/20261207T000000Z.json.zst").unwrap());
        assert_eq!(to.get("keys/slots/default.json").unwrap(), b"slot v2");
        // A primary without manifests deletes nothing from its copy.
        from.delete("manifests/20261208T000000Z.json.zst").unwrap();
        let r = copy(&from, &to, 3, &cancel).unwrap();
        assert!(r.deletions_refused);
        assert_eq!(r.manifests, 1);
    }

    #[test]
    fn another_repository_at_the_target_is_refused() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let (from, to) = (store(a.path()), store(b.path()));
        let cancel = tokio_util::sync::CancellationToken::new();
        from.put(HEADER_KEY, b"one").unwrap();
        to.put(HEADER_KEY, b"two").unwrap();
        let e = copy(&from, &to, 1, &cancel).unwrap_err();
        assert!(e.to_string().contains("holds another repository"), "{e}");
        let c = tempfile::tempdir().unwrap();
        let to = store(c.path());
        to.put("manifests/x", b"?").unwrap();
        assert!(matches!(
            copy(&from, &to, 1, &cancel).unwrap_err(),
            CopyError::OtherRepository { .. }
        ));
        let empty = tempfile::tempdir().unwrap();
        assert!(matches!(
            copy(&store(empty.path()), &to, 1, &cancel).unwrap_err(),
            CopyError::NoPrimary
        ));
    }
}
