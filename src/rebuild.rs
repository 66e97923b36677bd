//! The catalog rebuilt from the repository alone, for a fresh head node (`hopsdrd
//! --rebuild-catalog`) or a catalog lost or damaged (`hopsdrctl catalog rebuild`).
//!
//! Every manifest gives one backup row and its components ([`from_manifest`], pure): state
//! (`partial` when the manifest says so), times, sizes and the RonDB backup id, all recorded in
//! the manifest when the backup was committed. What only the catalog knew — pins, verification
//! outcomes, failed and interrupted backups (they have no manifest) — comes from the newest
//! catalog copy stored with a backup (`hopsdr/catalog.db`, taken when that backup started).

use std::collections::{BTreeSet, HashMap};

use serde::{Deserialize, Serialize};

use crate::catalog::{BackupRecord, Catalog, CatalogError, ComponentRecord, State};
use crate::ids::{BackupId, JobId};
use crate::repository::{Manifest, RepoError, Repository};

/// The catalog copy stored with every backup.
pub use crate::repository::layout::CATALOG_COPY;

/// Why a rebuild failed (nothing was changed).
#[derive(Debug, thiserror::Error)]
pub enum RebuildError {
    #[error(transparent)]
    Repository(#[from] RepoError),
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    #[error("reading the catalog copy of backup {backup}: {source}")]
    Copy {
        backup: BackupId,
        source: std::io::Error,
    },
}

/// What a rebuild did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RebuildReport {
    /// Backups rebuilt from their manifests.
    pub backups: u64,
    /// Failed or interrupted backups taken from the catalog copy (they have no manifest).
    pub without_manifest: u64,
    /// The backup whose catalog copy gave pins and verification outcomes.
    pub facts_from: Option<BackupId>,
    /// Manifests that could not be read (their backups are left out), with the reason.
    pub unreadable: Vec<String>,
}

/// The catalog row and components of the backup `m` describes (`job_id` left 0).
pub fn from_manifest(m: &Manifest) -> (BackupRecord, Vec<ComponentRecord>) {
    let info = &m.info;
    let stats = info.facts.stats;
    let partial = info.facts.partial.clone();
    let backup = BackupRecord {
        id: m.id.clone(),
        job_id: JobId(0),
        state: if partial.is_some() {
            State::Partial
        } else {
            State::Succeeded
        },
        started_at: info.started_at,
        finished_at: Some(info.finished_at),
        // A manifest without stats (older ones) gives the sum of its components.
        logical_bytes: stats.map_or_else(
            || info.components.iter().map(|c| c.logical_bytes).sum(),
            |s| s.logical_bytes,
        ),
        stored_bytes: stats.map_or(0, |s| s.stored_bytes),
        files: stats.map_or_else(
            || info.components.iter().map(|c| c.files).sum(),
            |s| s.files,
        ),
        error: partial,
        rondb_backup_id: info.facts.rondb.as_ref().map(|r| r.backup_id),
        pinned: false,
        verified_at: None,
        damaged: false,
        hopsfs_unchecked: m.info.facts.hopsfs_unchecked(),
    };
    let components = info
        .components
        .iter()
        .map(|c| ComponentRecord {
            backup_id: m.id.clone(),
            component: c.name.clone(),
            state: State::Succeeded,
            started_at: info.started_at,
            finished_at: Some(info.finished_at),
            logical_bytes: c.logical_bytes,
            stored_bytes: 0,
            files: c.files,
            error: None,
        })
        .collect();
    (backup, components)
}

/// Replaces the backups of `cat` with those the repository holds; the rows get job `job`.
pub fn rebuild(
    repo: &Repository,
    cat: &mut Catalog,
    job: JobId,
) -> Result<RebuildReport, RebuildError> {
    read(repo)?.apply(cat, job)
}

/// The catalog rows the repository gives, read without the catalog (a daemon keeps serving
/// while a large repository is read); [`Rebuilt::apply`] writes them.
#[derive(Debug)]
pub struct Rebuilt {
    rows: Vec<(BackupRecord, Vec<ComponentRecord>)>,
    report: RebuildReport,
}

impl Rebuilt {
    /// Replaces the backups of `cat` with these rows (one transaction); they get job `job`.
    pub fn apply(self, cat: &mut Catalog, job: JobId) -> Result<RebuildReport, RebuildError> {
        cat.replace_backups(&self.rows, job)?;
        Ok(self.report)
    }
}

/// Reads every manifest (and the newest catalog copy) into the rows a rebuilt catalog holds.
pub fn read(repo: &Repository) -> Result<Rebuilt, RebuildError> {
    let mut report = RebuildReport::default();
    let mut rows = Vec::new();
    let mut manifests = Vec::new();
    for id in repo.list_backups()? {
        match repo.read_manifest(&id) {
            Ok(m) => manifests.push(m),
            Err(e) => report.unreadable.push(format!("backup {id}: {e}")),
        }
    }
    for m in &manifests {
        rows.push(from_manifest(m));
    }
    // (A failpoint that only a kill passes: the rebuild is not cancellable.)
    crate::failpoint::hit(
        "rebuild.manifests_read",
        &tokio_util::sync::CancellationToken::new(),
    );
    // Pins, verifications and failed backups from the newest catalog copy.
    if let Some(m) = manifests
        .iter()
        .rev()
        .find(|m| m.files().any(|f| f.path == CATALOG_COPY))
    {
        let copy = read_copy(repo, m)?;
        let known: HashMap<BackupId, BackupRecord> =
            copy.into_iter().map(|b| (b.id.clone(), b)).collect();
        let with_manifest: BTreeSet<BackupId> = rows.iter().map(|r| r.0.id.clone()).collect();
        for (b, _) in rows.iter_mut() {
            if let Some(k) = known.get(&b.id) {
                b.pinned = k.pinned;
                b.verified_at = k.verified_at;
                b.damaged = k.damaged;
            }
        }
        for k in known.values() {
            if !with_manifest.contains(&k.id)
                && matches!(k.state, State::Failed | State::Interrupted)
            {
                rows.push((k.clone(), Vec::new()));
                report.without_manifest += 1;
            }
        }
        report.facts_from = Some(m.id.clone());
    }
    rows.sort_by(|a, b| (a.0.started_at, &a.0.id).cmp(&(b.0.started_at, &b.0.id)));
    report.backups = manifests.len() as u64;
    Ok(Rebuilt { rows, report })
}

/// What reconciling the catalog with the repository found.
#[derive(Debug, Default)]
pub struct Reconciled {
    /// Backups the repository proves complete that the catalog did not list complete (a crash
    /// between the manifest and the catalog's record): their rows as the manifests give them.
    pub committed: Vec<(BackupRecord, Vec<ComponentRecord>)>,
    /// Manifests that could not be trusted (unreadable, blobs missing), with the reason.
    pub problems: Vec<String>,
    /// Backups the catalog lists complete whose manifest the repository does not hold (a prune
    /// interrupted between removing the manifest and the row, or a repository that lost it):
    /// nothing can restore them, so they must not stay listed complete.
    pub vanished: Vec<BackupId>,
}

/// The backups whose manifest the repository holds but that the catalog does not list as
/// complete (`succeeded` or `partial`): each manifest read and verified (its checksum), and
/// every blob it references present, or it is reported instead; and the backups listed complete
/// without a manifest. Changes nothing.
pub fn reconcile(repo: &Repository, cat: &Catalog) -> Result<Reconciled, RebuildError> {
    let mut out = Reconciled::default();
    let listed: HashMap<BackupId, State> = cat
        .backups()?
        .into_iter()
        .map(|b| (b.id, b.state))
        .collect();
    let in_repo = repo.list_backups()?;
    let held: BTreeSet<&BackupId> = in_repo.iter().collect();
    out.vanished = listed
        .iter()
        .filter(|(id, s)| matches!(s, State::Succeeded | State::Partial) && !held.contains(id))
        .map(|(id, _)| id.clone())
        .collect();
    out.vanished.sort();
    let candidates: Vec<BackupId> = in_repo
        .into_iter()
        .filter(|id| {
            !matches!(
                listed.get(id),
                Some(State::Succeeded) | Some(State::Partial)
            )
        })
        .collect();
    if candidates.is_empty() {
        return Ok(out);
    }
    let blobs = if repo.is_packed() {
        Default::default()
    } else {
        repo.blob_ids()?
    };
    for id in candidates {
        let m = match repo.read_manifest(&id) {
            Ok(m) => m,
            Err(e) => {
                out.problems.push(format!("backup {id}: {e}"));
                continue;
            }
        };
        let missing = if repo.is_packed() {
            match repo.unlocated(&m) {
                Ok(n) => n as usize,
                Err(e) => {
                    out.problems.push(format!("backup {id}: {e}"));
                    continue;
                }
            }
        } else {
            m.files()
                .flat_map(|f| f.chunks.iter())
                .filter(|c| !blobs.contains(*c))
                .count()
        };
        if missing > 0 {
            out.problems.push(format!(
                "backup {id}: its manifest references {missing} missing blob(s): not listed complete (hopsdrctl repo check names them)"
            ));
            continue;
        }
        out.committed.push(from_manifest(&m));
    }
    Ok(out)
}

/// The backups recorded in the catalog copy stored with backup `m`.
fn read_copy(repo: &Repository, m: &Manifest) -> Result<Vec<BackupRecord>, RebuildError> {
    let entry = m
        .files()
        .find(|f| f.path == CATALOG_COPY)
        .expect("checked by the caller");
    let io = |source| RebuildError::Copy {
        backup: m.id.clone(),
        source,
    };
    let dir = tempfile::tempdir().map_err(io)?;
    let path = dir.path().join("catalog.db");
    let mut out = std::fs::File::create(&path).map_err(io)?;
    repo.restore_file(entry, &mut out)?;
    drop(out);
    Ok(Catalog::open(&path)?.backups()?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repository::facts::{ManifestFacts, RondbFacts, StoredStats};
    use crate::repository::{BackupInfo, ComponentInfo};
    use chrono::{TimeZone, Utc};

    #[test]
    fn a_manifest_gives_the_row_the_daemon_wrote() {
        let t0 = Utc.with_ymd_and_hms(2026, 11, 29, 10, 0, 0).unwrap();
        let facts = ManifestFacts {
            stats: Some(StoredStats {
                logical_bytes: 100,
                stored_bytes: 40,
                files: 3,
            }),
            rondb: Some(RondbFacts::for_tests(218144136)),
            ..Default::default()
        };
        let mut m = Manifest {
            format_version: 1,
            id: BackupId::parse("20261129T100000Z").unwrap(),
            info: BackupInfo {
                started_at: t0,
                finished_at: t0 + chrono::Duration::seconds(5),
                hostname: "h".into(),
                hopsdr_version: "0".into(),
                components: vec![ComponentInfo {
                    name: "rondb".into(),
                    state: "succeeded".into(),
                    logical_bytes: 100,
                    files: 3,
                }],
                facts,
            },
            entries: vec![],
            streams: vec![],
        };
        let (b, comps) = from_manifest(&m);
        assert_eq!(b.state, State::Succeeded);
        assert_eq!((b.logical_bytes, b.stored_bytes, b.files), (100, 40, 3));
        assert_eq!(b.rondb_backup_id, Some(218144136));
        assert_eq!(b.finished_at, Some(t0 + chrono::Duration::seconds(5)));
        assert_eq!(comps.len(), 1);
        assert_eq!(comps[0].component, "rondb");

        m.info.facts.partial = Some("partial: 2 blocks missing".into());
        m.info.facts.stats = None;
        let (b, _) = from_manifest(&m);
        assert_eq!(b.state, State::Partial);
        assert_eq!(b.error.as_deref(), Some("partial: 2 blocks missing"));
        assert_eq!((b.logical_bytes, b.files, b.stored_bytes), (100, 3, 0));
    }
}
