//! The daemon runtime: starts the parts in order (catalog, repository, listeners, scheduler),
//! tells systemd when it is ready, pings the watchdog from its main loop, reloads the config on
//! SIGHUP (keeping the old one when the new one is invalid), and on SIGTERM/SIGINT stops accepting
//! requests and lets the running job reach a safe point within `daemon.shutdown_timeout`.
//!
//! One root cancellation token reaches every task; nothing below the job runner knows about
//! HTTP, cron or systemd.

pub mod args;
pub mod conn;
pub mod jobs;
pub mod metrics;
pub mod notify;
pub mod scheduler;
pub mod server;

use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};

use chrono::{DateTime, Utc};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::api::{JobView, ScheduleView, StatusResponse};
use crate::catalog::{Catalog, CatalogError};
use crate::config::{self, RepositorySettings, Settings, StoreSettings};
use crate::repository::keys::KeysError;
use crate::repository::KeySource;
use crate::repository::{LocalStorage, RepoError, Repository};

use jobs::JobRunner;
use metrics::Metrics;
use server::AccessGroups;

/// Why the daemon could not start or run.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    #[error("failed to open repository: {0}")]
    Repository(#[from] RepoError),
    #[error(transparent)]
    Server(#[from] server::ServerError),
    #[error("failed to bind metrics listener {addr}: {source} (set [metrics] listen to a free address or enabled = false)")]
    Metrics {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("a start-up task ended abnormally while {0}")]
    Task(String),
    #[error("failed to install signal handler: {0}")]
    Signal(std::io::Error),
}

/// What every task of the daemon shares.
pub struct Ctx {
    settings: RwLock<Arc<Settings>>,
    access: RwLock<AccessGroups>,
    pub catalog: Mutex<Catalog>,
    pub repo: Repository,
    pub metrics: Metrics,
    pub jobs: JobRunner,
    pub started_at: DateTime<Utc>,
    pub root: CancellationToken,
    pub hostname: String,
}

impl Ctx {
    /// The current settings (replaced as a whole on reload).
    pub fn settings(&self) -> Arc<Settings> {
        self.settings
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The resolved socket access groups.
    pub fn access_groups(&self) -> AccessGroups {
        self.access
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The daemon's status for `GET /v1/status`.
    pub fn status(&self) -> Result<StatusResponse, CatalogError> {
        let now = Utc::now();
        let settings = self.settings();
        // Lock order: the job runner's slot before the catalog (as when a job starts).
        let running = self.jobs.current().map(|id| (id, self.jobs.progress(id)));
        let cat = self.catalog.lock().unwrap_or_else(|p| p.into_inner());
        let current_job = match running {
            Some((id, progress)) => cat.job(id)?.map(|record| JobView::of(record, progress)),
            None => None,
        };
        let mut schedules = Vec::new();
        for s in &settings.schedules {
            schedules.push(ScheduleView {
                name: s.name.clone(),
                cron: s.cron.as_str().to_string(),
                timezone: s.timezone.name().to_string(),
                job: "backup".into(),
                next_fire: s.cron.next_after(now, s.timezone),
                last_fire: cat.last_real_fire(&s.name)?,
            });
        }
        Ok(StatusResponse {
            version: env!("CARGO_PKG_VERSION").to_string(),
            pid: std::process::id(),
            started_at: self.started_at,
            uptime_seconds: (now - self.started_at).num_seconds().max(0) as u64,
            repository: self.repo.describe(),
            current_job,
            last_success: cat.last_successes()?.into_iter().map(Into::into).collect(),
            schedules,
            held: jobs::restore::held_off_by(cat.last_restore()?).map(|e| e.to_string()),
        })
    }
}

/// Opens the repository for writing: its writer lock taken first (another hopsdrd, or
/// `hopsdrd --rebuild-catalog`, refused naming the holder), then the leftovers of a crash
/// removed. The lock is released when the returned guard is dropped.
pub fn open_repository(
    s: &RepositorySettings,
    cache_dir: &std::path::Path,
) -> Result<(Repository, crate::repository::lock::WriterLock), RepoError> {
    let lock = |storage: &Arc<dyn crate::repository::Storage>| {
        crate::repository::lock::acquire(storage, &hostname()).map_err(Box::new)
    };
    let key = repository_key(s)?;
    let open = |storage| {
        Repository::open_with(
            storage,
            crate::repository::OpenOptions {
                compression_level: s.compression_level,
                key: key.as_ref(),
                packed: true,
                cache_dir: Some(cache_dir.to_path_buf()),
            },
        )
    };
    match &s.store {
        StoreSettings::Local { path } => {
            let storage = Arc::new(LocalStorage::new(path.clone())?);
            let dynamic: Arc<dyn crate::repository::Storage> = storage.clone();
            let guard = lock(&dynamic)?;
            // Temp files of a crashed daemon (blobs written but never committed).
            match storage.remove_stale_temp() {
                Ok(0) => {}
                Ok(n) => tracing::info!(
                    "removed {n} temporary file(s) left in the repository by a crash"
                ),
                Err(e) => {
                    tracing::warn!("failed to remove temporary files from the repository: {e}")
                }
            }
            Ok((open(storage)?, guard))
        }
        StoreSettings::S3(s) => {
            let s3 = open_s3(s)?;
            check_versioning(&s3, s.versioning)?;
            let storage: Arc<dyn crate::repository::Storage> = Arc::new(s3);
            let guard = lock(&storage)?;
            Ok((open(storage)?, guard))
        }
    }
}

/// The store `s` names (a directory or a bucket), not opened as a repository.
pub fn open_store(s: &StoreSettings) -> Result<Arc<dyn crate::repository::Storage>, RepoError> {
    Ok(match s {
        StoreSettings::Local { path } => Arc::new(LocalStorage::new(path.clone())?),
        StoreSettings::S3(s) => Arc::new(open_s3(s)?),
    })
}

/// The `[[copy]]` named `name` as a repository to read (verify, restore): the objects there,
/// read with the repository's own header and keys — after checking that the copy holds this
/// repository.
pub fn copy_repository(
    repo: &Repository,
    settings: &crate::config::Settings,
    name: &str,
) -> Result<Repository, String> {
    let Some(c) = settings.copies.iter().find(|c| c.name == name) else {
        let names: Vec<&str> = settings.copies.iter().map(|c| c.name.as_str()).collect();
        return Err(format!(
            "no [[copy]] named {name:?} (the copies are: {})",
            if names.is_empty() {
                "none".to_string()
            } else {
                names.join(", ")
            }
        ));
    };
    let storage = open_store(&c.store).map_err(|e| format!("copy {name}: {e}"))?;
    let theirs = storage.get(crate::repository::HEADER_KEY).map_err(|e| {
        format!(
            "copy {name} ({}): {e}: has a copy job run?",
            storage.describe()
        )
    })?;
    let ours = repo
        .storage()
        .get(crate::repository::HEADER_KEY)
        .map_err(|e| format!("the repository's header: {e}"))?;
    if theirs != ours {
        return Err(format!(
            "copy {name} ({}) holds another repository",
            storage.describe()
        ));
    }
    Ok(repo.with_storage(storage))
}

/// The bucket's versioning, at start: without it an overwritten or deleted object is gone for
/// good. `require` refuses to start; `warn` says so and goes on (also when the store cannot
/// tell).
fn check_versioning(
    s3: &crate::repository::S3Storage,
    policy: config::VersioningPolicy,
) -> Result<(), RepoError> {
    use crate::repository::{Storage, Versioning};
    let store = s3.describe();
    let problem = match s3.run_control("read versioning", s3.control().versioning()) {
        Ok(Versioning::Enabled) => return Ok(()),
        Ok(Versioning::Suspended) => "versioning is suspended on the bucket".to_string(),
        Ok(Versioning::Off) => "versioning is not enabled on the bucket".to_string(),
        Err(e) if policy == config::VersioningPolicy::Require => {
            format!("the bucket's versioning could not be read ({e})")
        }
        Err(e) => {
            tracing::warn!("{store}: the bucket's versioning could not be read: {e}");
            return Ok(());
        }
    };
    let what = format!("{store}: {problem}: a backup deleted or overwritten in it (by a stolen key, by ransomware) cannot be recovered. Enable versioning (and Object Lock) on the bucket");
    match policy {
        config::VersioningPolicy::Require => Err(RepoError::Storage(
            crate::repository::StorageError::Remote {
                store,
                op: "check versioning",
                key: String::new(),
                reason: format!("{what}, or set [repository] versioning = \"warn\""),
            },
        )),
        config::VersioningPolicy::Warn => {
            tracing::warn!("{what} ([repository] versioning = \"require\" refuses to start then)");
            Ok(())
        }
    }
}

/// The passphrase of `[repository.encryption]`, read now; `None` without encryption. A key
/// that cannot be read stops the start (an encrypted repository is never opened without it,
/// nor a new one created in plaintext).
fn repository_key(s: &RepositorySettings) -> Result<Option<KeySource>, RepoError> {
    let Some(e) = &s.encryption else {
        return Ok(None);
    };
    let describe = match &e.passphrase {
        config::Secret::File(p) => format!("file {}", p.display()),
        config::Secret::Credential(c) => format!("systemd credential {c}"),
    };
    let passphrase = e
        .passphrase
        .read(&config::SecretEnv::from_process())
        .map_err(|err| {
            RepoError::Keys(KeysError::Passphrase(format!(
                "[repository.encryption] passphrase: {err}"
            )))
        })?;
    Ok(Some(KeySource {
        passphrase: zeroize::Zeroizing::new(passphrase),
        slot: e.slot.clone(),
        describe,
    }))
}

/// Deletes the writer lease of an object-storage repository (`hopsdrd --break-lock`).
pub fn break_repository_lock(s: &RepositorySettings) -> Result<String, RepoError> {
    let storage: Arc<dyn crate::repository::Storage> = match &s.store {
        StoreSettings::Local { path } => Arc::new(LocalStorage::new(path.clone())?),
        StoreSettings::S3(s) => Arc::new(open_s3(s)?),
    };
    crate::repository::lock::break_lock(storage.as_ref()).map_err(|e| RepoError::Lock(Box::new(e)))
}

/// The repository as it was at `at`: the S3 bucket's object versions current then (read-only).
pub fn repository_as_of(
    repo: &Repository,
    s: &RepositorySettings,
    at: chrono::DateTime<chrono::Utc>,
) -> Result<Repository, RepoError> {
    let StoreSettings::S3(s3) = &s.store else {
        return Err(RepoError::Storage(crate::repository::StorageError::Remote {
            store: repo.describe(),
            op: "read as of a time",
            key: String::new(),
            reason: "only an S3 repository in a versioned bucket keeps the versions --as-of reads; a local repository has none".into(),
        }));
    };
    let view = crate::repository::VersionedView::new(open_s3(s3)?, at)?;
    Ok(repo.with_storage(Arc::new(view)))
}

/// The repository as prune reaches it: through the prune identity of an S3 bucket when one is
/// configured, else `repo` itself.
pub fn prune_repository(
    repo: &Repository,
    s: &RepositorySettings,
) -> Result<Repository, RepoError> {
    let StoreSettings::S3(s3) = &s.store else {
        return Ok(repo.clone());
    };
    let (Some(id), Some(secret)) = (&s3.prune_access_key_id, &s3.prune_secret_access_key) else {
        return Ok(repo.clone());
    };
    let mut as_pruner = (**s3).clone();
    as_pruner.access_key_id = Some(id.clone());
    as_pruner.secret_access_key = Some(secret.clone());
    let storage: Arc<dyn crate::repository::Storage> = Arc::new(open_s3(&as_pruner)?);
    Ok(repo.with_storage(storage))
}

/// The S3 store of `[repository] type = "s3"`, with its secret and CA bundle read now.
fn open_s3(s: &config::S3Settings) -> Result<crate::repository::S3Storage, RepoError> {
    let options = crate::repository::S3Options::from_settings(s)?;
    Ok(crate::repository::S3Storage::new(&options)?)
}

/// Where the repository's index cache lives: `cache/` next to the catalog.
pub fn cache_dir(d: &config::DaemonSettings) -> std::path::PathBuf {
    d.catalog
        .parent()
        .unwrap_or(std::path::Path::new("/"))
        .join("cache")
}

fn hostname() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "localhost".into())
}

/// Runs the daemon until SIGTERM/SIGINT. `config_path` is re-read on SIGHUP.
pub async fn run(settings: Settings, config_path: PathBuf) -> Result<(), DaemonError> {
    let started_at = Utc::now();
    let root = CancellationToken::new();

    let catalog = Catalog::open(&settings.daemon.catalog)?;
    let (repo, _repository_lock) = {
        let s = settings.repository.clone();
        let cache = cache_dir(&settings.daemon);
        tokio::task::spawn_blocking(move || open_repository(&s, &cache))
            .await
            .map_err(|e| DaemonError::Task(format!("opening the repository: {e}")))??
    };
    // The repository decides what is complete: a backup committed (its manifest written) by an
    // earlier hopsdrd that died before recording it is listed complete, not interrupted.
    let catalog = {
        let r = repo.clone();
        let (reconciled, catalog) = tokio::task::spawn_blocking(move || {
            let rec = crate::rebuild::reconcile(&r, &catalog);
            (rec, catalog)
        })
        .await
        .map_err(|e| DaemonError::Task(format!("reconciling the catalog: {e}")))?;
        let mut catalog = catalog;
        match reconciled {
            Ok(rec) => {
                for p in &rec.problems {
                    tracing::error!("reconciling the catalog with the repository: {p}");
                }
                for id in &rec.vanished {
                    catalog.mark_manifest_missing(id)?;
                    tracing::warn!(backup_id = %id, "backup {id} was listed complete but its manifest is not in the repository (a prune stopped half-way, or the repository lost it): recorded failed; the next prune removes it");
                }
                if !rec.committed.is_empty() {
                    let job = catalog.insert_job(crate::catalog::JobKind::Rebuild, "start: reconcile", started_at)?;
                    for (b, comps) in &rec.committed {
                        catalog.record_committed(b, comps, job)?;
                        crate::failpoint::hit("start.reconciled_one", &root);
                        tracing::warn!(backup_id = %b.id, "backup committed by an earlier hopsdrd (its manifest is in the repository) recorded {}", b.state.as_str());
                    }
                    catalog.finish_job(job, crate::catalog::State::Succeeded, None, started_at)?;
                }
            }
            Err(e) => tracing::error!("failed to reconcile the catalog with the repository: {e} (backups it would list complete may show as interrupted; hopsdrctl catalog rebuild)"),
        }
        catalog
    };
    let mut catalog = catalog;
    let interrupted = catalog.mark_interrupted(started_at)?;
    for id in &interrupted {
        tracing::warn!(job_id = %id, "job left running by an earlier hopsdrd marked interrupted");
    }
    // Staged files of a finished or abandoned restore that a crash left behind (before the
    // socket answers: whoever sees the daemon up sees them gone).
    if let Ok(Some(r)) = catalog.last_restore() {
        if r.state.is_settled() {
            crate::restore::exec::remove_staging(&settings, &r.backup_id);
        }
    }

    let metrics = Metrics::new();
    for ls in catalog.last_successes()? {
        let c = [ls.component.as_str()];
        metrics
            .backup_last_success
            .with_label_values(&c)
            .set(ls.finished_at.timestamp_millis() as f64 / 1000.0);
        metrics.backup_last_status.with_label_values(&c).set(1);
        metrics
            .backup_duration
            .with_label_values(&c)
            .set(ls.duration_seconds);
        metrics
            .backup_bytes
            .with_label_values(&c)
            .set(ls.logical_bytes as f64);
        metrics
            .backup_stored_bytes
            .with_label_values(&c)
            .set(ls.stored_bytes as f64);
    }

    if let Some(t) = catalog
        .backups()?
        .iter()
        .filter_map(|b| b.verified_at)
        .max()
    {
        metrics
            .verify_last_success
            .set(t.timestamp_millis() as f64 / 1000.0);
    }

    for (target, at) in catalog.last_copy_successes()? {
        metrics
            .copy_last_success
            .with_label_values(&[target.as_str()])
            .set(at.timestamp_millis() as f64 / 1000.0);
    }
    for (level, at, rto) in catalog.last_drill_successes()? {
        let l = [level.to_string()];
        metrics
            .drill_last_success
            .with_label_values(&[l[0].as_str()])
            .set(at.timestamp_millis() as f64 / 1000.0);
        metrics
            .drill_rto
            .with_label_values(&[l[0].as_str()])
            .set(rto);
    }

    // Pins left on the datanodes by a crash, removed before any job can start.
    if let Some(h) = settings.hopsfs.as_ref() {
        let dns = crate::backup::hopsfs::datanodes(h, &settings.ssh);
        if !dns.is_empty() {
            let _ = tokio::task::spawn_blocking(move || {
                crate::backup::hopsfs::remove_pins_logged(&dns, std::time::Duration::from_secs(60))
            })
            .await;
        }
    }

    let access = AccessGroups::resolve(
        &settings.daemon.socket_group,
        settings.daemon.operator_group.as_deref(),
    );
    // Signals are handled before the socket answers: a daemon seen up always stops cleanly
    // (its repository lease released), never by the default action of SIGTERM.
    let mut sigterm = signal(SignalKind::terminate()).map_err(DaemonError::Signal)?;
    let mut sigint = signal(SignalKind::interrupt()).map_err(DaemonError::Signal)?;
    let mut sighup = signal(SignalKind::hangup()).map_err(DaemonError::Signal)?;
    let listener = server::bind(&settings.daemon.socket, access.read).await?;
    let metrics_listener = match settings.metrics.listen {
        Some(addr) => Some(
            metrics::bind(addr)
                .await
                .map_err(|source| DaemonError::Metrics { addr, source })?,
        ),
        None => None,
    };

    let socket_path = settings.daemon.socket.clone();
    let ctx = Arc::new(Ctx {
        settings: RwLock::new(Arc::new(settings)),
        access: RwLock::new(access),
        catalog: Mutex::new(catalog),
        repo,
        metrics: metrics.clone(),
        jobs: JobRunner::new(),
        started_at,
        root: root.clone(),
        hostname: hostname(),
    });
    {
        let repo = ctx.repo.clone();
        if let Ok(Ok(bytes)) = tokio::task::spawn_blocking(move || repo.stored_bytes()).await {
            metrics.repository_bytes.set(bytes as f64);
        }
    }
    jobs::refresh_backup_gauges(&ctx);
    jobs::restore::refresh_restore_gauge(&ctx);

    let api_stop = CancellationToken::new();
    let api_task = tokio::spawn(server::serve(listener, ctx.clone(), api_stop.clone()));
    let metrics_task = metrics_listener.map(|l| {
        tokio::spawn(metrics::serve(
            l,
            metrics.clone(),
            ctx.settings().daemon.client_timeout,
            root.child_token(),
        ))
    });
    let wake = Arc::new(Notify::new());
    scheduler::arm_new_schedules(&ctx);
    let sched_task = tokio::spawn(scheduler::run(
        ctx.clone(),
        wake.clone(),
        root.child_token(),
    ));

    tracing::info!(
        socket = %socket_path.display(),
        repository = %ctx.repo.describe(),
        "hopsdrd {} ready",
        env!("CARGO_PKG_VERSION")
    );
    notify::ready("idle");

    // The main loop: signals and the watchdog. The watchdog is pinged from here so that a hung
    // main loop is noticed by systemd.
    let wd = notify::watchdog_interval();
    let mut wd_tick = wd.map(|d| {
        let mut i = tokio::time::interval(d);
        i.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        i
    });
    loop {
        tokio::select! {
            _ = sigterm.recv() => { tracing::info!("SIGTERM: stopping"); break; }
            _ = sigint.recv() => { tracing::info!("SIGINT: stopping"); break; }
            _ = sighup.recv() => reload(&ctx, &config_path, &wake),
            _ = async { match wd_tick.as_mut() { Some(t) => { t.tick().await; } None => std::future::pending().await } } => {
                notify::watchdog();
            }
        }
    }

    // Shutdown: stop accepting, cancel the job at its next safe point, wait up to the deadline.
    notify::stopping();
    api_stop.cancel();
    let deadline = ctx.settings().daemon.shutdown_timeout;
    root.cancel();
    ctx.jobs.cancel_current();
    let idle = {
        let wait = ctx.jobs.wait_idle(deadline);
        tokio::pin!(wait);
        // Keep the watchdog fed while we wait for the job's safe point.
        loop {
            tokio::select! {
                idle = &mut wait => break idle,
                _ = async { match wd_tick.as_mut() { Some(t) => { t.tick().await; } None => std::future::pending().await } } => notify::watchdog(),
            }
        }
    };
    if !idle {
        let now = Utc::now();
        let mut cat = ctx.catalog.lock().unwrap_or_else(|p| p.into_inner());
        match cat.mark_interrupted(now) {
            Ok(ids) => {
                for id in ids {
                    tracing::warn!(job_id = %id, "job did not reach a safe point within {:?}: recorded as interrupted", deadline);
                }
            }
            Err(e) => tracing::error!("{e}"),
        }
    }
    let _ = api_task.await;
    if let Some(t) = metrics_task {
        let _ = t.await;
    }
    let _ = sched_task.await;
    let _ = std::fs::remove_file(&socket_path);
    tracing::info!("hopsdrd stopped");
    Ok(())
}

fn reload(ctx: &Ctx, path: &std::path::Path, wake: &Notify) {
    notify::reloading();
    match config::load(path) {
        Ok(new) => {
            let old = ctx.settings();
            let mut restart_needed = Vec::new();
            if new.daemon.socket != old.daemon.socket {
                restart_needed.push("daemon.socket");
            }
            if new.daemon.catalog != old.daemon.catalog {
                restart_needed.push("daemon.catalog");
            }
            if new.metrics.listen != old.metrics.listen {
                restart_needed.push("metrics");
            }
            if format!("{:?}", new.repository) != format!("{:?}", old.repository) {
                restart_needed.push("repository");
            }
            if !restart_needed.is_empty() {
                tracing::warn!(
                    "configuration reloaded; changes to {} take effect after a restart",
                    restart_needed.join(", ")
                );
            }
            let access = AccessGroups::resolve(
                &new.daemon.socket_group,
                new.daemon.operator_group.as_deref(),
            );
            *ctx.access.write().unwrap_or_else(|p| p.into_inner()) = access;
            *ctx.settings.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(new);
            tracing::info!(config = %path.display(), "configuration reloaded");
            wake.notify_one();
        }
        Err(errors) => {
            for e in &errors.0 {
                tracing::error!("{e}");
            }
            tracing::error!(
                config = %path.display(),
                "configuration not reloaded: {} error(s); keeping the running configuration",
                errors.0.len()
            );
        }
    }
    notify::reloaded("idle");
}
