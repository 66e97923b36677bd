//! Backups: the components a backup runs, in order, into the repository, with each component's
//! result reported to an observer (the job runner records it in the catalog).
//!
//! The components: `files` (cluster definition and config files), `users` (MySQL users, grants
//! and SQL objects), `rondb` (the native backup of every data node, with the HopsFS fence at its
//! consistency point) and `hopsfs` (the datanodes' blocks). What they find is recorded in the
//! manifest as typed facts ([`crate::repository::facts`]). A backup is committed only by writing
//! its manifest, after every component succeeded; a failed or cancelled backup leaves no
//! manifest, so it does not exist in the repository. See `ARCHITECTURE.md`, "life of a backup".

pub mod cloud;
pub mod coverage;
pub mod files;
pub mod hopsfs;
pub mod known;
pub mod opensearch;
pub mod recorder;
pub mod replicas;
pub mod rondb;
pub mod tarstream;
pub mod users;
pub mod via_agent;

use std::path::PathBuf;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;

use crate::cluster;
use crate::config::{BlockStorage, Settings};
use crate::ids::BackupId;
use crate::repository::facts::{HopsfsFacts, ManifestFacts, RondbFacts, StoredStats};
use crate::repository::{
    BackupInfo, BackupWriter, ComponentInfo, Manifest, RepoError, Repository, WriteStats,
};

/// Why a backup failed.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("backup path \"{path}\" does not exist: create it, remove it from [backup.files], or mark its entry optional = true")]
    PathMissing { path: PathBuf },
    #[error("failed to read \"{path}\": {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Repository(#[from] RepoError),
    #[error("users: {0}")]
    Users(#[from] users::UsersError),
    #[error("rondb: {0}")]
    Rondb(#[from] rondb::RondbError),
    #[error("hopsfs: {0}")]
    Hopsfs(#[from] hopsfs::HopsfsError),
    #[error("opensearch: {0}")]
    Opensearch(#[from] Box<opensearch::OpensearchBackupError>),
    #[error("preflight: the repository {repo} has {} free, less than the previous backup's size plus a margin ({}): free space or prune old backups", bytesize::ByteSize(*.available).display().iec(), bytesize::ByteSize(*.needed).display().iec())]
    NoRoom {
        repo: String,
        available: u64,
        needed: u64,
    },
    #[error("cancelled: hopsdrd is stopping")]
    Cancelled,
}

impl BackupError {
    /// True when the backup stopped because it was cancelled, not because something failed.
    pub fn is_cancelled(&self) -> bool {
        matches!(
            self,
            BackupError::Cancelled | BackupError::Repository(RepoError::Cancelled)
        )
    }
}

/// What happened to one component.
#[derive(Debug, Clone)]
pub struct ComponentOutcome {
    pub component: String,
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    pub stats: WriteStats,
    pub error: Option<String>,
}

/// A callback with the writer's running totals, called after every chunk.
pub type ProgressSink = Box<dyn FnMut(&WriteStats) + Send>;

/// Told about a backup as it goes (the job runner records this in the catalog and metrics).
pub trait BackupObserver: Send {
    fn component_started(&mut self, component: &str, at: DateTime<Utc>);
    fn component_finished(&mut self, outcome: &ComponentOutcome);
    fn progress(&mut self, component: &str, stats: &WriteStats);
    /// A callback the repository writer calls after every chunk, for live progress.
    fn progress_sink(&self, component: &str) -> Option<ProgressSink>;
}

/// The result of a committed backup.
#[derive(Debug)]
pub struct BackupOutcome {
    pub manifest: Manifest,
    pub stats: WriteStats,
    pub rondb: Option<RondbFacts>,
    /// Why the backup is partial (committed, but not everything was captured).
    pub partial: Option<String>,
    /// The blobs known damaged or missing that this backup wrote again.
    pub healed: Vec<crate::ids::BlobId>,
    /// What is left to tidy on the nodes (pins, the data nodes' local copies): the backup is
    /// committed without it, so the job runner does it after recording the outcome.
    pub cleanup: Cleanup,
}

/// Tidying left after a committed backup: the HopsFS pins and the RonDB data nodes' local
/// copies. Nothing in the repository depends on it; a crash before it runs leaves pins that the
/// next backup's preflight (and the daemon's start) removes.
#[derive(Debug, Default)]
pub struct Cleanup {
    pins: Option<Vec<hopsfs::Datanode>>,
    rondb: Option<(Vec<rondb::DataNode>, u32, Duration)>,
}

impl Cleanup {
    /// True when there is nothing to do.
    pub fn is_empty(&self) -> bool {
        self.pins.is_none() && self.rondb.is_none()
    }

    /// Removes the pins (one thread per datanode) and the data nodes' copies; failures are
    /// logged as warnings.
    pub fn run(self) {
        if let Some(dns) = &self.pins {
            hopsfs::remove_pins_logged(dns, Duration::from_secs(600));
            crate::failpoint::hit("backup.cleanup.pins_removed", &CancellationToken::new());
        }
        if let Some((nodes, id, timeout)) = &self.rondb {
            rondb::cleanup(nodes, *id, *timeout);
        }
    }
}

/// What a backup needs besides the repository.
pub struct BackupRequest<'a> {
    pub settings: &'a Settings,
    /// The last RonDB backup id used for this cluster (from the catalog).
    pub last_rondb_id: Option<u32>,
    /// The logical size of the previous successful backup: the repository must have room for
    /// at least this plus a margin before anything starts.
    pub previous_bytes: Option<u64>,
    pub hostname: &'a str,
    /// When the backup started (as the catalog records it).
    pub started_at: DateTime<Utc>,
    /// Files about hopsdr itself stored with the backup under `hopsdr/` (the catalog as of the
    /// backup's start, the daemon's config): a fresh head node rebuilds its catalog from them
    /// and the manifests.
    pub self_files: Vec<(String, Vec<u8>)>,
    /// Keys of the blobs known damaged or missing (verify found them): written again when this
    /// backup has their content, never taken as stored, nor reused from an earlier manifest.
    pub suspect_blobs: std::collections::HashSet<crate::ids::BlobId>,
}

/// Runs one component, reporting its start and end to the observer with its share of the
/// writer's totals.
struct Components<'a> {
    writer: BackupWriter,
    observer: &'a mut dyn BackupObserver,
    clock: &'a dyn Fn() -> DateTime<Utc>,
    done: Vec<ComponentInfo>,
}

impl Components<'_> {
    fn run<T>(
        &mut self,
        name: &str,
        f: impl FnOnce(&mut BackupWriter) -> Result<T, BackupError>,
    ) -> Result<T, BackupError> {
        let before = self.writer.stats();
        let started_at = (self.clock)();
        self.observer.component_started(name, started_at);
        if let Some(sink) = self.observer.progress_sink(name) {
            self.writer.set_progress(sink);
        }
        let res = f(&mut self.writer);
        let after = self.writer.stats();
        let delta = stats_delta(&after, &before);
        self.observer.component_finished(&ComponentOutcome {
            component: name.into(),
            started_at,
            finished_at: (self.clock)(),
            stats: delta,
            error: res.as_ref().err().map(|e| e.to_string()),
        });
        let value = res?;
        self.observer.progress(name, &after);
        self.done.push(ComponentInfo {
            name: name.into(),
            state: "succeeded".into(),
            logical_bytes: delta.logical_bytes,
            files: delta.files,
        });
        crate::failpoint::hit(
            &format!("backup.component.{name}.done"),
            self.writer.cancel(),
        );
        Ok(value)
    }
}

/// Runs a backup: every configured component into a new backup `id` (files, users, rondb, in
/// that order), then commits the manifest, then removes the data nodes' local copies.
/// `clock` gives the current time (only the daemon reads the real clock).
pub fn run(
    repo: &Repository,
    id: BackupId,
    req: &BackupRequest<'_>,
    cancel: &CancellationToken,
    observer: &mut dyn BackupObserver,
    clock: &dyn Fn() -> DateTime<Utc>,
) -> Result<BackupOutcome, BackupError> {
    // HopsFS with blocks on the datanodes: the blocks already stored are read from the
    // previous manifest while the other components run and the fence lists the volumes.
    let hopsfs_local = req
        .settings
        .hopsfs
        .as_ref()
        .filter(|h| h.block_storage == BlockStorage::Local);
    std::thread::scope(|scope| {
        let (known, reader) = known::Pending::new();
        if hopsfs_local.is_some() {
            scope.spawn(move || previous_blocks(repo, &req.suspect_blobs, reader));
        } else {
            reader.done(known::KnownBlocks::default());
        }
        run_in(repo, id, req, &known, cancel, observer, clock)
    })
}

fn run_in(
    repo: &Repository,
    id: BackupId,
    req: &BackupRequest<'_>,
    known: &known::Pending,
    cancel: &CancellationToken,
    observer: &mut dyn BackupObserver,
    clock: &dyn Fn() -> DateTime<Utc>,
) -> Result<BackupOutcome, BackupError> {
    let settings = req.settings;
    let started_at = req.started_at;
    if let Some(prev) = req.previous_bytes {
        let needed = required_room(prev);
        if let Some(available) = repo.available_bytes()? {
            if available < needed {
                return Err(BackupError::NoRoom {
                    repo: repo.describe(),
                    available,
                    needed,
                });
            }
        }
    }
    let mut c = Components {
        writer: repo.begin_backup(id.clone(), cancel.clone()),
        observer,
        clock,
        done: Vec::new(),
    };
    c.writer.set_suspect_blobs(req.suspect_blobs.clone());
    let mut facts = ManifestFacts::default();
    crate::failpoint::hit("backup.started", cancel);

    c.run("files", |w| {
        files::back_up(&settings.backup.files, w, cancel).map(|_| ())
    })?;
    if let Some(m) = &settings.mysql {
        let now = clock();
        facts.users = Some(c.run("users", |w| Ok(users::back_up(m, w, now)?))?);
    }
    // HopsFS with blocks on the datanodes: pinned at the RonDB consistency point.
    let hopsfs_local = settings
        .hopsfs
        .as_ref()
        .filter(|h| h.block_storage == BlockStorage::Local);
    let dns = hopsfs_local.map(|h| hopsfs::datanodes(h, &settings.ssh));
    // With agents, each data node stores its own files; what they are given is made once.
    let access = match settings.agents.enabled {
        true => Some(
            crate::cluster::agent::access(
                &settings.repository,
                repo.keyring().map(|k| k.for_agent(&[k.current()])),
            )
            .map_err(RepoError::Storage)?
            .unwrap_or_default(),
        ),
        false => None,
    };
    let agents = access.as_ref().map(|access| via_agent::AgentRun {
        binary: &settings.agents.binary,
        timeout: settings.agents.timeout,
        access,
        agents: &settings.agents,
    });
    let result = run_cluster_parts(
        &mut c,
        &id,
        req,
        dns.as_deref(),
        agents,
        known,
        cancel,
        clock,
        &mut facts,
    );
    // Pins are removed on every failure path here (a crash leaves them for the next start);
    // after a successful commit by the job runner, off the backup's path (`Cleanup`).
    let remove_pins = || {
        if let Some(dns) = &dns {
            hopsfs::remove_pins_logged(dns, Duration::from_secs(600));
        }
    };
    let (rondb_done, partial) = match result {
        Ok(parts) => parts,
        Err(e) => {
            remove_pins();
            return Err(e);
        }
    };

    crate::failpoint::hit("backup.before_commit", cancel);
    if cancel.is_cancelled() {
        remove_pins();
        return Err(BackupError::Cancelled);
    }
    for (name, bytes) in &req.self_files {
        let meta = crate::repository::FileMeta {
            mode: 0o600,
            mtime: started_at.timestamp(),
            uid: 0,
            gid: 0,
        };
        if let Err(e) = c
            .writer
            .add_file(&format!("hopsdr/{name}"), &mut &bytes[..], meta)
        {
            remove_pins();
            return Err(e.into());
        }
    }
    let stats = c.writer.stats();
    let healed = c.writer.healed_blobs();
    if !healed.is_empty() {
        facts.healed_blobs = Some(healed.len() as u64);
    }
    // What the catalog records of the backup, so that it can be rebuilt from the manifest.
    facts.stats = Some(StoredStats {
        logical_bytes: stats.logical_bytes,
        stored_bytes: stats.stored_bytes,
        files: stats.files,
    });
    facts.partial = partial.clone();
    let info = BackupInfo {
        started_at,
        finished_at: clock(),
        hostname: req.hostname.to_string(),
        hopsdr_version: env!("CARGO_PKG_VERSION").to_string(),
        components: c.done,
        facts,
    };
    let manifest = match c.writer.commit(info) {
        Ok(m) => m,
        Err(e) => {
            remove_pins();
            return Err(e.into());
        }
    };
    // Committed: a crash from here on leaves a backup the repository proves complete and the
    // catalog does not list yet (the next start reconciles it).
    crate::failpoint::hit("backup.committed", cancel);
    let mut cleanup = Cleanup {
        pins: dns,
        rondb: None,
    };
    let mut rondb_facts = None;
    if let (Some((facts, nodes)), Some(r)) = (rondb_done, &settings.rondb) {
        if !r.keep_node_copies {
            cleanup.rondb = Some((nodes, facts.backup_id, r.command_timeout));
        }
        rondb_facts = Some(facts);
    }
    Ok(BackupOutcome {
        manifest,
        stats,
        rondb: rondb_facts,
        partial,
        healed,
        cleanup,
    })
}

/// What the cluster parts left for after the commit: the RonDB backup to clean up on the data
/// nodes, and the reason the backup is partial (missing blocks), if it is.
type ClusterParts = (Option<(RondbFacts, Vec<rondb::DataNode>)>, Option<String>);

/// The RonDB component (with the HopsFS fence) then the HopsFS one; `known` gives the blocks
/// the repository already holds (being read meanwhile).
#[allow(clippy::too_many_arguments)]
fn run_cluster_parts(
    c: &mut Components<'_>,
    id: &BackupId,
    req: &BackupRequest<'_>,
    dns: Option<&[hopsfs::Datanode]>,
    agents: Option<via_agent::AgentRun<'_>>,
    known: &known::Pending,
    cancel: &CancellationToken,
    clock: &dyn Fn() -> DateTime<Utc>,
    recorded: &mut ManifestFacts,
) -> Result<ClusterParts, BackupError> {
    let Some(r) = &req.settings.rondb else {
        return Ok((None, None));
    };
    let settings = req.settings;
    let run = rondb::RondbRun {
        settings: r,
        ssh: &settings.ssh,
        agents,
        last_id: req.last_rondb_id,
        clock,
        cancel,
    };
    let no_fence = crate::failpoint::value("hopsfs.no_fence");
    let (facts, nodes, fence) = c.run("rondb", |w| {
        if let Some(dns) = dns {
            // Preflight: every datanode reachable; pins left by a crash removed.
            hopsfs::prepare_pins(dns, id, r.command_timeout, cancel)?;
        }
        // Whether an earlier backup stored blocks, known before the consistency point (a first
        // backup pins whole trees); the blocks themselves are awaited by the fence after it
        // listed the live volumes, so their read overlaps the listing.
        if dns.is_some() {
            known.any();
        }
        let started = rondb::start(&run)?;
        let mut fence = None;
        if let (Some(dns), None) = (dns, &no_fence) {
            fence = Some(hopsfs::pin(dns, id, known, r.command_timeout, cancel)?);
            tracing::info!(step = "hopsfs", "volumes pinned");
            crate::failpoint::hit("backup.hopsfs.pinned", cancel);
        }
        let facts = rondb::collect(&run, &started, w)?;
        Ok((facts, started.nodes, fence))
    })?;
    recorded.rondb = Some(facts.clone());
    // OpenSearch's snapshot starts now, within seconds of the consistency point, and runs
    // while the blocks are copied.
    let os_started = match settings
        .opensearch
        .as_ref()
        .map(|o| opensearch::start(o, id))
    {
        None => None,
        Some(Ok(s)) => Some(s),
        // Failed to start: the component fails at once, before the blocks are copied.
        Some(Err(e)) => return c.run("opensearch", |_| Err(Box::new(e).into())),
    };
    let mut partial = None;
    if let Some(h) = &settings.hopsfs {
        let mut hf = HopsfsFacts {
            block_storage: match h.block_storage {
                BlockStorage::Local => "local".into(),
                BlockStorage::Cloud => "cloud".into(),
            },
            ..Default::default()
        };
        if let (None, Some(cloud)) = (dns, &h.cloud) {
            // Cloud mode: the objects' versions at the consistency point, checked against the
            // blocks the metadata references.
            let consistent_at = facts.consistent_at;
            let rid = facts.backup_id;
            partial = c.run("hopsfs", |w| {
                let referenced = match &h.referenced_blocks {
                    None => None,
                    Some(cmd) => {
                        let password = cluster::ndb_mgm::backup_password(r)
                            .map_err(hopsfs::HopsfsError::Referenced)?;
                        Some(coverage::referenced(
                            cmd,
                            rid,
                            password.as_deref().map(String::as_str),
                            r.command_timeout,
                            cancel,
                        )?)
                    }
                };
                Ok(cloud::back_up(
                    cloud,
                    consistent_at,
                    referenced,
                    w,
                    &mut hf,
                )?)
            })?;
        }
        if let Some(dns) = dns {
            let out = c.run("hopsfs", |w| {
                let fence = match (fence, &no_fence) {
                    (Some(f), _) => f,
                    // Test hook: no fence; copy the live volumes late, as the guide does.
                    (None, delay) => {
                        let ms = delay.as_deref().and_then(|d| d.parse().ok()).unwrap_or(0);
                        std::thread::sleep(Duration::from_millis(ms));
                        hopsfs::pin(dns, id, known, r.command_timeout, cancel)?
                    }
                };
                let window = (fence.pinned_at - facts.consistent_at)
                    .num_milliseconds()
                    .max(0) as f64
                    / 1000.0;
                // The referenced blocks come from the RonDB backup: read while the blocks copy.
                std::thread::scope(|scope| {
                    let referenced = h.referenced_blocks.as_ref().map(|cmd| {
                        scope.spawn(|| {
                            let password = cluster::ndb_mgm::backup_password(r)
                                .map_err(hopsfs::HopsfsError::Referenced)?;
                            coverage::referenced(
                                cmd,
                                facts.backup_id,
                                password.as_deref().map(String::as_str),
                                r.command_timeout,
                                cancel,
                            )
                        })
                    });
                    let copied = hopsfs::copy(
                        dns,
                        id,
                        fence,
                        known.get(),
                        w,
                        agents.as_ref(),
                        h.copy_timeout,
                        cancel,
                    );
                    let referenced = referenced
                        .map(|t| t.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
                        .transpose();
                    let (captured, totals) = copied?;
                    Ok((window, captured, totals, referenced?))
                })
            })?;
            let (window, captured, totals, referenced) = out;
            hf.fence_window_seconds = window;
            hf.blocks = totals.blocks;
            hf.blocks_new = totals.blocks_new;
            hf.bytes_new = totals.bytes_new;
            hf.replicas_shared = totals.replicas_shared;
            hf.bytes_shared = totals.bytes_shared;
            hf.rbw_replicas = totals.rbw_replicas;
            hf.volumes = dns
                .iter()
                .flat_map(|d| {
                    d.volumes
                        .iter()
                        .enumerate()
                        .map(|(i, v)| (format!("{}/vol{}", d.name, i + 1), v.clone()))
                })
                .collect();
            if let Some(mut refd) = referenced {
                let missing = captured.missing(&mut refd)?;
                hf.coverage_checked = true;
                hf.referenced_blocks = refd.len();
                hf.missing_blocks = missing.iter().map(|b| b.id).collect();
                if !missing.is_empty() {
                    let ids: Vec<String> =
                        missing.iter().take(20).map(|b| b.id.to_string()).collect();
                    partial = Some(format!(
                        "partial: {} of {} blocks the metadata references were not captured (block ids {}{})",
                        missing.len(),
                        refd.len(),
                        ids.join(", "),
                        if missing.len() > 20 { ", ..." } else { "" }
                    ));
                }
            } else {
                tracing::warn!(
                    step = "hopsfs",
                    "no [hopsfs] referenced_blocks source: coverage not checked"
                );
            }
        }
        recorded.hopsfs = Some(hf);
    }
    if let (Some(o), Some(started)) = (&settings.opensearch, os_started) {
        let consistent_at = facts.consistent_at;
        let (of, os_partial) = c.run("opensearch", |w| {
            opensearch::finish(o, started, &settings.ssh, consistent_at, w, cancel)
                .map_err(|e| Box::new(e).into())
        })?;
        recorded.opensearch = Some(of);
        if let Some(p) = os_partial {
            partial = Some(match partial {
                Some(q) => format!("{q}; {p}"),
                None => p,
            });
        }
    }
    Ok((Some((facts, nodes)), partial))
}

/// The blocks the newest backup holding HopsFS blocks stored, but those in a `suspect` blob
/// (nothing if none can be read), given to `reader`: first whether there is such a backup.
fn previous_blocks(
    repo: &Repository,
    suspect: &std::collections::HashSet<crate::ids::BlobId>,
    reader: known::Reader,
) {
    let blocks = previous_blocks_read(repo, suspect, &reader);
    reader.done(blocks);
}

fn previous_blocks_read(
    repo: &Repository,
    suspect: &std::collections::HashSet<crate::ids::BlobId>,
    reader: &known::Reader,
) -> known::KnownBlocks {
    let Ok(ids) = repo.list_backups() else {
        return known::KnownBlocks::default();
    };
    for id in ids.iter().rev() {
        let t0 = std::time::Instant::now();
        if let Ok(m) = repo.read_manifest(id) {
            if m.info.facts.hopsfs.is_some() {
                reader.any(true);
                let t1 = std::time::Instant::now();
                // A stream that cannot be read is verify's to report: its blocks are read
                // from the datanodes again.
                let known = match known::KnownBlocks::from_entries(
                    repo.all_entries(&m).map_while(Result::ok),
                    suspect,
                ) {
                    Ok(k) => k,
                    Err(e) => {
                        tracing::warn!(step = "hopsfs", backup = %id, "cannot index the blocks already stored in temporary files: {e}; every block is read again");
                        return known::KnownBlocks::default();
                    }
                };
                tracing::debug!(step = "hopsfs", backup = %id, blocks = known.len(),
                    read_ms = (t1 - t0).as_millis() as u64, index_ms = t1.elapsed().as_millis() as u64,
                    "blocks already stored");
                return known;
            }
        }
    }
    known::KnownBlocks::default()
}

/// The free space a backup needs in the repository, from the previous backup's logical size
/// (an upper bound of what it writes: compression and deduplication only make it smaller).
pub fn required_room(previous_bytes: u64) -> u64 {
    previous_bytes + previous_bytes / 10 + (64 << 20)
}

/// What a component added to the writer's running totals.
fn stats_delta(after: &WriteStats, before: &WriteStats) -> WriteStats {
    WriteStats {
        logical_bytes: after.logical_bytes - before.logical_bytes,
        stored_bytes: after.stored_bytes - before.stored_bytes,
        files: after.files - before.files,
        new_blobs: after.new_blobs - before.new_blobs,
        reused_blobs: after.reused_blobs - before.reused_blobs,
        healed_blobs: after.healed_blobs - before.healed_blobs,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn room_is_the_previous_size_plus_a_margin() {
        assert_eq!(required_room(0), 64 << 20);
        assert_eq!(required_room(1000 << 20), (1100 << 20) + (64 << 20));
    }
}
