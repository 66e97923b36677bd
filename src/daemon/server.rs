//! The socket API server: HTTP/1.1 + JSON on a Unix socket. Its own accept loop reads the
//! peer's credentials once (SO_PEERCRED, SO_PEERGROUPS) and bounds the connections; each
//! connection is served by an axum router built from the API's route table
//! ([`crate::api::routes`]). Reads need uid 0 or the read (socket) group; changes need uid 0 or
//! the operator group. Changing requests, allowed or not, go to the audit log and the journal
//! with uid, pid and what was asked.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;

use chrono::Utc;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use nix::unistd::{Gid, Group};
use serde::Serialize;
use tokio::net::UnixListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::api::{self, BackupDetail, BackupList, ErrorBody, StartBackupRequest};
use crate::catalog::AuditRecord;
use crate::ids::{BackupId, JobId};

use super::jobs::{self, JobError};
use super::Ctx;

/// Errors setting up the socket.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("another hopsdrd is already listening on \"{0}\": stop it first")]
    InUse(String),
    #[error("failed to {what} socket \"{path}\": {source}")]
    Socket {
        what: &'static str,
        path: String,
        source: std::io::Error,
    },
}

/// Who is asking: uid, gid and pid from SO_PEERCRED and the supplementary groups from
/// SO_PEERGROUPS, all as the kernel recorded them when the client connected. Rights are decided
/// from these alone, never from `/proc/<pid>` (a pid can be reused once the client exits).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    pub uid: u32,
    pub gid: u32,
    pub pid: i32,
    pub groups: Arc<[u32]>,
}

impl Peer {
    /// The peer's credentials, read once at accept.
    fn of(stream: &tokio::net::UnixStream) -> std::io::Result<Peer> {
        let c = stream.peer_cred()?;
        let groups = peer_groups(stream)?;
        Ok(Peer {
            uid: c.uid(),
            gid: c.gid(),
            pid: c.pid().unwrap_or(0),
            groups: groups.into(),
        })
    }

    /// The primary group first, then the supplementary groups.
    fn all_groups(&self) -> Vec<u32> {
        let mut g = Vec::with_capacity(self.groups.len() + 1);
        g.push(self.gid);
        g.extend_from_slice(&self.groups);
        g
    }
}

/// What a request needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Read,
    Change,
    /// Key management: uid 0 only.
    Root,
}

/// The groups that grant access, resolved from their names.
#[derive(Debug, Clone, Default)]
pub struct AccessGroups {
    pub read: Option<u32>,
    pub operator: Option<u32>,
}

impl AccessGroups {
    /// Resolves the configured group names; a name that does not exist grants nothing (logged).
    pub fn resolve(read: &str, operator: Option<&str>) -> AccessGroups {
        let lookup = |name: &str| match Group::from_name(name) {
            Ok(Some(g)) => Some(g.gid.as_raw()),
            Ok(None) => {
                tracing::warn!("group \"{name}\" does not exist: it grants no access to the socket (create it with groupadd --system {name})");
                None
            }
            Err(e) => {
                tracing::warn!("failed to look up group \"{name}\": {e}");
                None
            }
        };
        AccessGroups {
            read: lookup(read),
            operator: operator.and_then(lookup),
        }
    }
}

/// The supplementary groups the peer of `stream` had when it connected (SO_PEERGROUPS, Linux
/// 4.13 and later): credentials bound to the connection that no later process can replace.
fn peer_groups(stream: &tokio::net::UnixStream) -> std::io::Result<Vec<u32>> {
    use std::os::fd::AsRawFd;
    let mut groups = vec![0u32; 64];
    loop {
        let mut len = (groups.len() * std::mem::size_of::<u32>()) as libc::socklen_t;
        // SAFETY: the buffer is valid for `len` bytes and outlives the call; the kernel writes
        // at most `len` bytes and sets `len` to what it wrote (or needs, with ERANGE).
        let r = unsafe {
            libc::getsockopt(
                stream.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_PEERGROUPS,
                groups.as_mut_ptr().cast(),
                &mut len,
            )
        };
        let n = len as usize / std::mem::size_of::<u32>();
        if r == 0 {
            groups.truncate(n);
            return Ok(groups);
        }
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::ERANGE) && n > groups.len() {
            groups.resize(n, 0);
            continue;
        }
        return Err(e);
    }
}

/// Pure access decision given the peer's groups (primary first).
pub fn decide(uid: u32, groups: &[u32], access: Access, g: &AccessGroups) -> bool {
    if uid == 0 {
        return true;
    }
    let member = |gid: Option<u32>| gid.is_some_and(|gid| groups.contains(&gid));
    match access {
        Access::Read => member(g.read) || member(g.operator),
        Access::Change => member(g.operator),
        Access::Root => false,
    }
}

/// Binds the socket at `path` with mode 0660 and group `group`, removing a stale socket file
/// left by a crash (but refusing when another daemon answers on it).
pub async fn bind(path: &Path, group: Option<u32>) -> Result<UnixListener, ServerError> {
    let p = path.display().to_string();
    let err = |what, source| ServerError::Socket {
        what,
        path: p.clone(),
        source,
    };
    if let Some(dir) = path.parent() {
        if !dir.exists() {
            std::fs::create_dir_all(dir).map_err(|e| err("create the directory of", e))?;
            let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755));
        }
    }
    if path.exists() {
        if tokio::net::UnixStream::connect(path).await.is_ok() {
            return Err(ServerError::InUse(p));
        }
        std::fs::remove_file(path).map_err(|e| err("remove stale", e))?;
    }
    let listener = UnixListener::bind(path).map_err(|e| err("bind", e))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))
        .map_err(|e| err("set the mode of", e))?;
    if let Some(gid) = group {
        nix::unistd::chown(path, None, Some(Gid::from_raw(gid)))
            .map_err(|e| err("set the group of", std::io::Error::from(e)))?;
    }
    Ok(listener)
}

/// Serves requests until `shutdown` fires, then waits briefly for requests in flight.
///
/// Connections are bounded (in total and per uid, with room kept for root: [`super::conn`]); a
/// client gets `daemon.client_timeout` to send each request's head and body, also between
/// requests on a kept-alive connection; a failing `accept` backs off.
pub async fn serve(listener: UnixListener, ctx: Arc<Ctx>, shutdown: CancellationToken) {
    use super::conn::{self, AcceptBackoff, ConnLimiter};
    let limiter = ConnLimiter::new(
        conn::API_MAX_CONNECTIONS,
        conn::API_RESERVED_FOR_ROOT,
        conn::API_MAX_PER_UID,
    );
    let heavy = Arc::new(tokio::sync::Semaphore::new(conn::MAX_HEAVY_READS));
    let router = router();
    let mut backoff = AcceptBackoff::default();
    let mut conns = JoinSet::new();
    loop {
        let stream = tokio::select! {
            _ = shutdown.cancelled() => break,
            Some(_) = conns.join_next(), if !conns.is_empty() => continue,
            r = listener.accept() => match r {
                Ok((s, _)) => {
                    backoff.succeeded();
                    s
                }
                Err(e) => {
                    let wait = backoff.failed("api socket", &e);
                    tokio::select! {
                        _ = shutdown.cancelled() => break,
                        _ = tokio::time::sleep(wait) => continue,
                    }
                }
            },
        };
        let peer = match Peer::of(&stream) {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!("api socket: cannot read peer credentials, closing: {e}");
                continue;
            }
        };
        let permit = match limiter.try_acquire(Some(peer.uid)) {
            Ok(p) => p,
            Err(refusal) => {
                ctx.metrics
                    .connections_dropped
                    .with_label_values(&["api", "limit"])
                    .inc();
                tracing::debug!(uid = peer.uid, pid = peer.pid, "api socket: {refusal}");
                let body = serde_json::to_string(&ErrorBody::new(
                    "too_many_connections",
                    refusal.to_string(),
                ))
                .unwrap_or_default();
                let _ = stream.try_write(&conn::refusal_response(
                    "503 Service Unavailable",
                    "application/json",
                    &body,
                ));
                continue;
            }
        };
        let timeout = ctx.settings().daemon.client_timeout;
        let metrics = ctx.metrics.clone();
        let svc = hyper_util::service::TowerToHyperService::new(router.clone().with_state(Conn {
            ctx: ctx.clone(),
            peer,
            heavy: heavy.clone(),
            timeout,
        }));
        conns.spawn(async move {
            let _permit = permit;
            if let Err(e) = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(timeout)
                .serve_connection(TokioIo::new(stream), svc)
                .await
            {
                if e.is_timeout() {
                    metrics
                        .connections_dropped
                        .with_label_values(&["api", "timeout"])
                        .inc();
                }
                tracing::debug!("api connection ended: {e}");
            }
        });
    }
    let _ = tokio::time::timeout(std::time::Duration::from_secs(2), async {
        while conns.join_next().await.is_some() {}
    })
    .await;
}

fn json<T: Serialize>(status: StatusCode, body: &T) -> Response<Full<Bytes>> {
    let bytes = serde_json::to_vec(body).unwrap_or_else(|_| b"{}".to_vec());
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(bytes)))
        .expect("static response parts are valid")
}

/// The status of error `code` ([`api::status_of`]).
fn status(code: &str) -> StatusCode {
    StatusCode::from_u16(api::status_of(code)).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}

/// An error answer; its status comes from its code.
fn error(code: &str, message: impl Into<String>) -> Response<Full<Bytes>> {
    json(status(code), &ErrorBody::new(code, message))
}

/// `s` as a backup id, or the 400 answer that says what one looks like.
#[allow(clippy::result_large_err)]
fn parse_backup_id(s: &str) -> Result<BackupId, Response<Full<Bytes>>> {
    BackupId::parse(s).ok_or_else(|| {
        error(
            "bad_backup_id",
            format!("\"{s}\" is not a backup id (expected YYYYMMDDTHHMMSSZ)"),
        )
    })
}

/// The request body as JSON of `T`, or the 400 answer.
#[allow(clippy::result_large_err)]
fn json_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, Response<Full<Bytes>>> {
    serde_json::from_slice(body).map_err(|e| error("bad_json", format!("malformed request: {e}")))
}

/// As [`json_body`], an empty body being `T::default()`.
#[allow(clippy::result_large_err)]
fn json_body_or_default<T: serde::de::DeserializeOwned + Default>(
    body: &[u8],
) -> Result<T, Response<Full<Bytes>>> {
    if body.iter().all(|b| b.is_ascii_whitespace()) {
        return Ok(T::default());
    }
    json_body(body)
}

/// Checks that a destructive request's body confirms `expected` (`{"confirm": expected}`);
/// otherwise the 400 answer that says how, and nothing is changed.
#[allow(clippy::result_large_err)]
fn confirmed(body: &[u8], expected: &str, what: &str) -> Result<(), Response<Full<Bytes>>> {
    let given = serde_json::from_slice::<api::Confirm>(body)
        .ok()
        .map(|c| c.confirm);
    check_confirmation(given.as_deref(), expected, what)
}

#[allow(clippy::result_large_err)]
fn check_confirmation(
    given: Option<&str>,
    expected: &str,
    what: &str,
) -> Result<(), Response<Full<Bytes>>> {
    if given == Some(expected) {
        return Ok(());
    }
    let got = match given {
        None => "no confirmation".to_string(),
        Some(g) => format!("confirmation {g:?}"),
    };
    Err(error("confirmation_required",
        format!("{what}: the request must confirm it with {{\"confirm\": {expected:?}}} (got {got}); nothing was changed"),
    ))
}

/// A place for one heavy read (it runs on a blocking thread), or 429 when
/// [`super::conn::MAX_HEAVY_READS`] already run: read-only requests cannot occupy every thread.
#[allow(clippy::result_large_err)]
fn heavy_read(
    heavy: &Arc<tokio::sync::Semaphore>,
) -> Result<tokio::sync::OwnedSemaphorePermit, Response<Full<Bytes>>> {
    heavy.clone().try_acquire_owned().map_err(|_| {
        error(
            "too_many_heavy_reads",
            format!(
                "{} repository checks, restore plans or agent checks are running: try again when they are done",
                super::conn::MAX_HEAVY_READS
            ),
        )
    })
}

fn audit(ctx: &Ctx, peer: &Peer, action: &str, allowed: bool, detail: &str) {
    if allowed {
        tracing::info!(
            uid = peer.uid,
            pid = peer.pid,
            action = action,
            "request: {detail}"
        );
    } else {
        tracing::warn!(
            uid = peer.uid,
            pid = peer.pid,
            action = action,
            "request refused: {detail}"
        );
    }
    let rec = AuditRecord {
        at: Utc::now(),
        uid: peer.uid,
        pid: peer.pid,
        action: action.to_string(),
        allowed,
        detail: detail.to_string(),
    };
    let mut cat = ctx.catalog.lock().unwrap_or_else(|p| p.into_inner());
    if let Err(e) = cat.audit(&rec) {
        tracing::error!("failed to write audit record: {e}");
    }
}

/// The answer to a request that started a job: 202 with the job, 409 when another job runs
/// (naming it), 503 while stopping, 500 otherwise; audited either way.
fn job_started(
    ctx: &Ctx,
    peer: &Peer,
    action: &str,
    result: Result<crate::api::JobStarted, JobError>,
    describe: impl FnOnce(&crate::api::JobStarted) -> String,
) -> Response<Full<Bytes>> {
    match result {
        Ok(started) => {
            audit(ctx, peer, action, true, &describe(&started));
            json(StatusCode::ACCEPTED, &started)
        }
        Err(JobError::Busy(running)) => {
            audit(
                ctx,
                peer,
                action,
                false,
                &format!("busy with job {running}"),
            );
            let mut body = ErrorBody::new("busy", JobError::Busy(running).to_string());
            body.error.job_id = Some(running);
            json(status("busy"), &body)
        }
        Err(e) => {
            audit(ctx, peer, action, false, &e.to_string());
            error(e.code(), e.to_string())
        }
    }
}

/// What a connection's requests are served with: the daemon, the peer (its credentials as the
/// kernel recorded them at connect), the places for heavy reads and the client timeout.
#[derive(Clone)]
struct Conn {
    ctx: Arc<Ctx>,
    peer: Peer,
    heavy: Arc<tokio::sync::Semaphore>,
    timeout: std::time::Duration,
}

/// The router, built from the API's route table ([`api::routes`]): every route goes to
/// [`handle`] with its entry; unknown paths and methods get the API's JSON errors.
fn router() -> axum::Router<Conn> {
    let mut r = axum::Router::new();
    for route in api::routes::ALL {
        let method = Method::from_bytes(route.method.as_bytes()).expect("a valid method");
        let filter =
            axum::routing::MethodFilter::try_from(method).expect("a method the router filters");
        r = r.route(
            route.path,
            axum::routing::on(
                filter,
                move |axum::extract::State(c): axum::extract::State<Conn>,
                      req: Request<axum::body::Body>| async move {
                    handle(c, route, req).await
                },
            ),
        );
    }
    r.method_not_allowed_fallback(|req: Request<axum::body::Body>| async move {
        error(
            "method_not_allowed",
            format!("{} is not allowed on {}", req.method(), req.uri().path()),
        )
    })
    .fallback(|req: Request<axum::body::Body>| async move {
        error(
            "not_found",
            format!("no route {} {}", req.method(), req.uri().path()),
        )
    })
}

/// Every request: the peer's rights for the route, the body read within its limits, then the
/// route's own function.
async fn handle(
    conn: Conn,
    route: api::Route,
    req: Request<axum::body::Body>,
) -> Response<Full<Bytes>> {
    let Conn {
        ctx,
        peer,
        heavy,
        timeout,
    } = conn;
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let query = req.uri().query().unwrap_or("").to_string();
    let params = route.params(&path);
    let action = format!("{method} {path}");
    let access = if route.root_only() {
        Access::Root
    } else if route.changes() {
        Access::Change
    } else {
        Access::Read
    };
    let groups = ctx.access_groups();
    if !decide(peer.uid, &peer.all_groups(), access, &groups) {
        let what = match access {
            Access::Read => "reading needs uid 0 or the daemon.socket_group",
            Access::Change => "changes need uid 0 or a member of daemon.operator_group",
            Access::Root => "the repository's keys are managed by root (uid 0) only",
        };
        if access != Access::Read {
            audit(&ctx, &peer, &action, false, "permission denied");
        } else {
            tracing::warn!(uid = peer.uid, pid = peer.pid, action = %action, "request refused: permission denied");
        }
        return error(
            "permission_denied",
            format!("permission denied for uid {}: {what}", peer.uid),
        );
    }

    // Read the body with a limit in size and time, whatever the route.
    let body = match tokio::time::timeout(
        timeout,
        Limited::new(req.into_body(), api::MAX_BODY_BYTES).collect(),
    )
    .await
    {
        Err(_) => {
            ctx.metrics
                .connections_dropped
                .with_label_values(&["api", "timeout"])
                .inc();
            return error(
                "body_timeout",
                format!(
                    "the request body did not arrive within {} (daemon.client_timeout)",
                    humantime::format_duration(timeout)
                ),
            );
        }
        Ok(Ok(b)) => b.to_bytes(),
        Ok(Err(e)) => {
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some()
            {
                return error(
                    "body_too_large",
                    format!("request body over {} bytes", api::MAX_BODY_BYTES),
                );
            }
            return error("bad_body", format!("failed to read request body: {e}"));
        }
    };

    use api::RouteId;
    let r = Req {
        ctx,
        peer,
        heavy,
        action,
        body,
        query,
        params: params.iter().map(|p| p.to_string()).collect(),
        route,
    };
    match route.id {
        RouteId::Status => route_status(r).await,
        RouteId::Backups => route_backups(r).await,
        RouteId::Backup => route_backup(r).await,
        RouteId::StartBackup => route_start_backup(r).await,
        RouteId::RepoCheck => route_repo_check(r).await,
        RouteId::CatalogRebuild => route_catalog_rebuild(r).await,
        RouteId::RepoRepairIndex => route_repo_repair_index(r).await,
        RouteId::PruneDryRun => route_prune_dry_run(r).await,
        RouteId::Prune => route_prune(r).await,
        RouteId::Verify => route_verify(r).await,
        RouteId::Pin | RouteId::Unpin => route_pin(r).await,
        RouteId::RestorePlan => route_restore_plan(r).await,
        RouteId::StartRestore => route_start_restore(r).await,
        RouteId::ResumeRestore => route_resume_restore(r).await,
        RouteId::AbortRestore => route_abort_restore(r).await,
        RouteId::AbandonRestore => route_abandon_restore(r).await,
        RouteId::LastRestore => route_last_restore(r).await,
        RouteId::Job => route_job(r).await,
        RouteId::Keys => route_keys(r).await,
        RouteId::AddKey => route_add_key(r).await,
        RouteId::RemoveKey => route_remove_key(r).await,
        RouteId::RotateKey => route_rotate_key(r).await,
        RouteId::Agents => route_agents(r).await,
        RouteId::StartDrill => route_start_drill(r).await,
        RouteId::Drills => route_drills(r).await,
        RouteId::Drill => route_drill(r).await,
        RouteId::Copy => route_copy(r).await,
    }
}

/// One request, read and allowed: what a route's function gets.
struct Req {
    ctx: Arc<Ctx>,
    peer: Peer,
    heavy: Arc<tokio::sync::Semaphore>,
    /// `METHOD /path`, for the audit log.
    action: String,
    body: Bytes,
    query: String,
    /// The path's parameters, in the route's order.
    params: Vec<String>,
    route: api::Route,
}

/// [`api::routes::STATUS`].
async fn route_status(r: Req) -> Response<Full<Bytes>> {
    let Req { ctx, .. } = r;
    match ctx.status() {
        Ok(s) => json(StatusCode::OK, &s),
        Err(e) => error("catalog", e.to_string()),
    }
}

/// [`api::routes::BACKUPS`].
async fn route_backups(r: Req) -> Response<Full<Bytes>> {
    let Req { ctx, .. } = r;
    let r = ctx
        .catalog
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .backups();
    match r {
        Ok(backups) => json(
            StatusCode::OK,
            &BackupList {
                backups: backups.into_iter().map(Into::into).collect(),
            },
        ),
        Err(e) => error("catalog", e.to_string()),
    }
}

/// [`api::routes::BACKUP`].
async fn route_backup(r: Req) -> Response<Full<Bytes>> {
    let Req { ctx, params, .. } = r;
    let id = params.first().map(String::as_str).unwrap_or_default();
    let id = match parse_backup_id(id) {
        Ok(id) => id,
        Err(resp) => return resp,
    };
    let cat = ctx.catalog.lock().unwrap_or_else(|p| p.into_inner());
    match cat.backup(&id).and_then(|b| Ok((b, cat.components(&id)?))) {
        Ok((Some(backup), components)) => {
            let detail = BackupDetail {
                backup: backup.into(),
                components: components.into_iter().map(Into::into).collect(),
            };
            json(StatusCode::OK, &detail)
        }
        Ok((None, _)) => error(
            "no_such_backup",
            format!("no backup \"{id}\" in the catalog (hopsdrctl backups list shows them)"),
        ),
        Err(e) => error("catalog", e.to_string()),
    }
}

/// [`api::routes::START_BACKUP`].
async fn route_start_backup(r: Req) -> Response<Full<Bytes>> {
    let Req {
        ctx,
        peer,
        action,
        body,
        ..
    } = r;
    if let Err(resp) = json_body_or_default::<StartBackupRequest>(&body) {
        return resp;
    }
    let r = jobs::backup::start(&ctx, &format!("api:uid={}", peer.uid));
    job_started(&ctx, &peer, &action, r, |s| {
        format!(
            "start backup: job {} backup {}",
            s.job_id,
            s.backup_id
                .as_ref()
                .map(|b| b.to_string())
                .unwrap_or_default()
        )
    })
}

/// [`api::routes::REPO_CHECK`].
async fn route_repo_check(r: Req) -> Response<Full<Bytes>> {
    let Req { ctx, heavy, .. } = r;
    let permit = match heavy_read(&heavy) {
        Ok(p) => p,
        Err(resp) => return resp,
    };
    let repo = ctx.repo.clone();
    match tokio::task::spawn_blocking(move || {
        let _permit = permit;
        Ok::<_, crate::repository::RepoError>(api::RepoCheckView {
            report: repo.check()?,
            encrypted: repo.is_encrypted(),
            encryption: repo.encryption_status()?,
        })
    })
    .await
    {
        Ok(Ok(report)) => json(StatusCode::OK, &report),
        Ok(Err(e)) => error(e.code(), e.to_string()),
        Err(e) => error("task", e.to_string()),
    }
}

/// [`api::routes::AGENTS`]: a session with every node's agent, on blocking threads; a heavy
/// read (it starts an ssh connection per node).
async fn route_agents(r: Req) -> Response<Full<Bytes>> {
    let Req { ctx, heavy, .. } = r;
    let permit = match heavy_read(&heavy) {
        Ok(p) => p,
        Err(resp) => return resp,
    };
    let settings = ctx.settings();
    let keyring = ctx.repo.keyring();
    let cancel = ctx.root.child_token();
    match tokio::task::spawn_blocking(move || {
        let _permit = permit;
        let given = crate::agents::Given {
            access: crate::agents::access(&settings.repository, keyring.as_deref())?,
            name_check: keyring.as_deref().map(crate::agents::name_check),
        };
        let targets = crate::agents::targets(&settings, &cancel)?;
        Ok::<_, crate::agents::AgentsError>(api::AgentsView {
            agents: crate::agents::check_all(&targets, &settings, &given, &cancel),
        })
    })
    .await
    {
        Ok(Ok(view)) => json(StatusCode::OK, &view),
        Ok(Err(e)) => error("cluster", e.to_string()),
        Err(e) => error("task", e.to_string()),
    }
}

/// [`api::routes::KEYS`].
async fn route_keys(r: Req) -> Response<Full<Bytes>> {
    let repo = r.ctx.repo.clone();
    match tokio::task::spawn_blocking(move || {
        repo.encryption_status().map(|e| (repo.is_encrypted(), e))
    })
    .await
    {
        Ok(Ok((encrypted, encryption))) => json(
            StatusCode::OK,
            &api::KeysView {
                encrypted,
                encryption,
            },
        ),
        Ok(Err(e)) => error(e.code(), e.to_string()),
        Err(e) => error("task", e.to_string()),
    }
}

/// [`api::routes::ADD_KEY`]: a new passphrase slot (the key derivation runs on a blocking
/// thread). The passphrase is never logged.
async fn route_add_key(r: Req) -> Response<Full<Bytes>> {
    let Req {
        ctx,
        peer,
        action,
        body,
        ..
    } = r;
    let req: api::AddKeyRequest = match json_body(&body) {
        Ok(req) => req,
        Err(resp) => return resp,
    };
    let repo = ctx.repo.clone();
    let name = req.name.clone();
    let passphrase = zeroize::Zeroizing::new(req.passphrase);
    let r = tokio::task::spawn_blocking(move || repo.add_key_slot(&name, &passphrase)).await;
    key_change(
        &ctx,
        &peer,
        &action,
        r,
        &format!("key slot {:?} added", req.name),
    )
}

/// [`api::routes::REMOVE_KEY`], confirmed by the slot's name.
async fn route_remove_key(r: Req) -> Response<Full<Bytes>> {
    let Req {
        ctx,
        peer,
        action,
        body,
        params,
        ..
    } = r;
    let name = params.first().cloned().unwrap_or_default();
    let what = "removing a key slot makes its passphrase useless";
    if let Err(resp) = confirmed(&body, &name, what) {
        audit(&ctx, &peer, &action, false, "key removal not confirmed");
        return resp;
    }
    let repo = ctx.repo.clone();
    let n = name.clone();
    let r = tokio::task::spawn_blocking(move || repo.remove_key_slot(&n)).await;
    key_change(
        &ctx,
        &peer,
        &action,
        r,
        &format!("key slot {name:?} removed"),
    )
}

/// [`api::routes::ROTATE_KEY`]: new objects are sealed with a new data key from now on.
async fn route_rotate_key(r: Req) -> Response<Full<Bytes>> {
    let Req {
        ctx, peer, action, ..
    } = r;
    let repo = ctx.repo.clone();
    match tokio::task::spawn_blocking(move || repo.rotate_data_key()).await {
        Ok(Ok(id)) => {
            audit(
                &ctx,
                &peer,
                &action,
                true,
                &format!("data key {id} started"),
            );
            json(StatusCode::OK, &api::RotatedKey { data_key: id })
        }
        Ok(Err(e)) => {
            audit(&ctx, &peer, &action, false, &e.to_string());
            error(e.code(), e.to_string())
        }
        Err(e) => error("task", e.to_string()),
    }
}

/// Answers a key change and audits it.
fn key_change(
    ctx: &Ctx,
    peer: &Peer,
    action: &str,
    r: Result<Result<(), crate::repository::RepoError>, tokio::task::JoinError>,
    done: &str,
) -> Response<Full<Bytes>> {
    match r {
        Ok(Ok(())) => {
            audit(ctx, peer, action, true, done);
            json(StatusCode::OK, &serde_json::json!({ "done": done }))
        }
        Ok(Err(e)) => {
            audit(ctx, peer, action, false, &e.to_string());
            error(e.code(), e.to_string())
        }
        Err(e) => error("task", e.to_string()),
    }
}

/// [`api::routes::CATALOG_REBUILD`].
async fn route_catalog_rebuild(r: Req) -> Response<Full<Bytes>> {
    let Req {
        ctx, peer, action, ..
    } = r;
    let r = jobs::rebuild::start(&ctx, &format!("api:uid={}", peer.uid));
    job_started(&ctx, &peer, &action, r, |s| {
        format!("catalog rebuild: job {}", s.job_id)
    })
}

/// [`api::routes::REPO_REPAIR_INDEX`].
async fn route_repo_repair_index(r: Req) -> Response<Full<Bytes>> {
    let Req {
        ctx, peer, action, ..
    } = r;
    let r = jobs::repair::start(&ctx, &format!("api:uid={}", peer.uid));
    job_started(&ctx, &peer, &action, r, |s| {
        format!("repair index: job {}", s.job_id)
    })
}

/// [`api::routes::PRUNE_DRY_RUN`].
async fn route_prune_dry_run(r: Req) -> Response<Full<Bytes>> {
    let Req { ctx, .. } = r;
    // A dry run: what pruning would do now, with the reasons.
    match jobs::prune::decisions(&ctx, chrono::Utc::now()) {
        Ok(decisions) => json(
            StatusCode::OK,
            &crate::api::PruneDecisions {
                policy_has_rules: ctx.settings().retention.policy.has_rules(),
                decisions: decisions
                    .into_iter()
                    .map(|d| crate::api::PruneDecision {
                        id: d.id,
                        keep: d.keep,
                        reasons: d.reasons.iter().map(|r| r.as_str().to_string()).collect(),
                    })
                    .collect(),
            },
        ),
        Err(e) => error("catalog", e.to_string()),
    }
}

/// [`api::routes::PRUNE`].
async fn route_prune(r: Req) -> Response<Full<Bytes>> {
    let Req {
        ctx,
        peer,
        action,
        body,
        ..
    } = r;
    if let Err(resp) = confirmed(&body, "prune", "pruning forgets backups") {
        audit(&ctx, &peer, &action, false, "prune not confirmed");
        return resp;
    }
    let r = jobs::prune::start(&ctx, &format!("api:uid={}", peer.uid));
    job_started(&ctx, &peer, &action, r, |s| {
        format!("prune: job {}", s.job_id)
    })
}

/// [`api::routes::VERIFY`].
async fn route_verify(r: Req) -> Response<Full<Bytes>> {
    let Req {
        ctx,
        peer,
        action,
        body,
        ..
    } = r;
    #[derive(Default, serde::Deserialize)]
    struct VerifyRequest {
        backup: Option<String>,
        /// A `[[copy]]` to read instead of the repository.
        repository: Option<String>,
    }
    let req: VerifyRequest = match json_body_or_default(&body) {
        Ok(r) => r,
        Err(resp) => return resp,
    };
    let backup = match req.backup.as_deref().map(parse_backup_id).transpose() {
        Ok(b) => b,
        Err(resp) => return resp,
    };
    use jobs::verify::{start, VerifyStartError};
    match start(
        &ctx,
        &format!("api:uid={}", peer.uid),
        backup,
        req.repository,
    ) {
        Err(e @ VerifyStartError::Copy(_)) => {
            audit(&ctx, &peer, &action, false, &e.to_string());
            error("no_such_copy", e.to_string())
        }
        Err(e @ (VerifyStartError::NotFound(_) | VerifyStartError::Nothing)) => {
            audit(&ctx, &peer, &action, false, &e.to_string());
            error("no_such_backup", e.to_string())
        }
        Err(VerifyStartError::Job(e)) => {
            job_started(&ctx, &peer, &action, Err(e), |_| String::new())
        }
        Ok(started) => job_started(&ctx, &peer, &action, Ok(started), |s| {
            format!("verify: job {}", s.job_id)
        }),
    }
}

/// [`api::routes::START_DRILL`].
async fn route_start_drill(r: Req) -> Response<Full<Bytes>> {
    let Req {
        ctx,
        peer,
        action,
        body,
        ..
    } = r;
    let req: api::StartDrillRequest = match json_body_or_default(&body) {
        Ok(r) => r,
        Err(resp) => return resp,
    };
    let backup = match req.backup.as_deref().map(parse_backup_id).transpose() {
        Ok(b) => b,
        Err(resp) => return resp,
    };
    let level = match crate::drill::report::DrillLevel::try_from(req.level.unwrap_or(1)) {
        Ok(l) => l,
        Err(e) => return error("bad_body", e),
    };
    use jobs::drill::{start, DrillStartError};
    match start(&ctx, &format!("api:uid={}", peer.uid), backup, level) {
        Err(e @ (DrillStartError::NotFound(_) | DrillStartError::Nothing)) => {
            audit(&ctx, &peer, &action, false, &e.to_string());
            error("no_such_backup", e.to_string())
        }
        Err(e @ DrillStartError::NoStandby) => {
            audit(&ctx, &peer, &action, false, &e.to_string());
            error("no_standby", e.to_string())
        }
        Err(e @ DrillStartError::Standby(_)) => {
            audit(&ctx, &peer, &action, false, &e.to_string());
            error("refused", e.to_string())
        }
        Err(DrillStartError::Job(e)) => {
            job_started(&ctx, &peer, &action, Err(e), |_| String::new())
        }
        Ok(started) => job_started(&ctx, &peer, &action, Ok(started), |s| {
            format!("drill level {level}: job {}", s.job_id)
        }),
    }
}

/// [`api::routes::COPY`].
async fn route_copy(r: Req) -> Response<Full<Bytes>> {
    let Req {
        ctx,
        peer,
        action,
        body,
        ..
    } = r;
    #[derive(Default, serde::Deserialize)]
    struct CopyRequest {
        target: Option<String>,
    }
    let req: CopyRequest = match json_body_or_default(&body) {
        Ok(r) => r,
        Err(resp) => return resp,
    };
    use jobs::copy::{start, CopyStartError};
    match start(&ctx, &format!("api:uid={}", peer.uid), req.target) {
        Err(CopyStartError::Job(e)) => job_started(&ctx, &peer, &action, Err(e), |_| String::new()),
        Err(e) => {
            audit(&ctx, &peer, &action, false, &e.to_string());
            error("no_such_copy", e.to_string())
        }
        Ok(started) => job_started(&ctx, &peer, &action, Ok(started), |s| {
            format!("copy: job {}", s.job_id)
        }),
    }
}

/// [`api::routes::DRILLS`].
async fn route_drills(r: Req) -> Response<Full<Bytes>> {
    let Req { ctx, .. } = r;
    let drills = jobs::lock_catalog(&ctx.catalog).drills(20);
    match drills {
        Ok(drills) => json(StatusCode::OK, &api::DrillList { drills }),
        Err(e) => error("catalog", e.to_string()),
    }
}

/// [`api::routes::DRILL`].
async fn route_drill(r: Req) -> Response<Full<Bytes>> {
    let Req { ctx, params, .. } = r;
    let id = params.first().map(String::as_str).unwrap_or_default();
    let Ok(n) = id.parse::<i64>() else {
        return error(
            "bad_job_id",
            format!("\"{id}\" is not a drill's job id (a number)"),
        );
    };
    let drill = jobs::lock_catalog(&ctx.catalog).drill(JobId(n));
    match drill {
        Ok(Some(d)) => json(StatusCode::OK, &d),
        Ok(None) => error(
            "no_such_job",
            format!("no drill with job id {n} in the catalog"),
        ),
        Err(e) => error("catalog", e.to_string()),
    }
}

/// [`api::routes::PIN`] and [`api::routes::UNPIN`].
async fn route_pin(r: Req) -> Response<Full<Bytes>> {
    let Req {
        ctx,
        peer,
        action,
        body,
        route,
        params,
        ..
    } = r;
    let id = params.first().map(String::as_str).unwrap_or_default();
    let op = if route.id == api::RouteId::Pin {
        "pin"
    } else {
        "unpin"
    };
    let id = match parse_backup_id(id) {
        Ok(id) => id,
        Err(resp) => return resp,
    };
    let pinned = op == "pin";
    if !pinned {
        let what = "unpinning lets retention forget the backup";
        if let Err(resp) = confirmed(&body, id.as_str(), what) {
            audit(&ctx, &peer, &action, false, "unpin not confirmed");
            return resp;
        }
    }
    let r = ctx
        .catalog
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .set_pinned(&id, pinned);
    match r {
        Ok(true) => {
            audit(&ctx, &peer, &action, true, &format!("{op} backup {id}"));
            json(
                StatusCode::OK,
                &serde_json::json!({ "backup_id": id, "pinned": pinned }),
            )
        }
        Ok(false) => error(
            "no_such_backup",
            format!("no backup \"{id}\" in the catalog (hopsdrctl backups list shows them)"),
        ),
        Err(e) => error("catalog", e.to_string()),
    }
}

/// [`api::routes::RESTORE_PLAN`].
async fn route_restore_plan(r: Req) -> Response<Full<Bytes>> {
    let Req {
        ctx, heavy, params, ..
    } = r;
    let id = params.first().map(String::as_str).unwrap_or_default();
    let id = match parse_backup_id(id) {
        Ok(id) => id,
        Err(resp) => return resp,
    };
    let permit = match heavy_read(&heavy) {
        Ok(p) => p,
        Err(resp) => return resp,
    };
    let repo = ctx.repo.clone();
    let settings = ctx.settings();
    let bid = id.clone();
    // The plan depends on what the target holds: read it (nothing is changed).
    let r = tokio::task::spawn_blocking(move || {
        let _permit = permit;
        let m = repo.read_manifest(&bid)?;
        let p = crate::restore::target::plan_for(&m, &settings, &Default::default());
        Ok::<_, crate::repository::RepoError>(p)
    })
    .await;
    match r {
        Ok(Ok(Ok(p))) => json(StatusCode::OK, &p),
        Ok(Ok(Err(e))) => error("no_plan", e),
        Ok(Err(e)) if matches!(e, crate::repository::RepoError::BackupNotFound { .. }) => error(
            "no_such_backup",
            format!("{e} (hopsdrctl backups list shows the backups)"),
        ),
        Ok(Err(e)) => error(e.code(), e.to_string()),
        Err(e) => error("internal", e.to_string()),
    }
}

/// [`api::routes::START_RESTORE`].
async fn route_start_restore(r: Req) -> Response<Full<Bytes>> {
    let Req {
        ctx,
        peer,
        action,
        body,
        ..
    } = r;
    let req: crate::api::StartRestoreRequest = match json_body(&body) {
        Ok(r) => r,
        Err(resp) => return resp,
    };
    let bid = match parse_backup_id(&req.backup_id) {
        Ok(id) => id,
        Err(resp) => return resp,
    };
    let what = "a restore overwrites the cluster";
    if let Err(resp) = check_confirmation(req.confirm.as_deref(), bid.as_str(), what) {
        audit(&ctx, &peer, &action, false, "restore not confirmed");
        return resp;
    }
    let opts = crate::restore::exec::RestoreOptions {
        allow_partial: req.allow_partial,
        force: req.force,
        as_of: req.as_of,
        repository: req.repository,
    };
    // Planning reads the target cluster (blocking commands): off the runtime's workers.
    let (ctx2, action2) = (ctx.clone(), action.clone());
    tokio::task::spawn_blocking(move || restore_response(&ctx2, &peer, &action2, Some(&bid), opts))
        .await
        .unwrap_or_else(|e| error("internal", e.to_string()))
}

/// [`api::routes::RESUME_RESTORE`].
async fn route_resume_restore(r: Req) -> Response<Full<Bytes>> {
    let Req {
        ctx, peer, action, ..
    } = r;
    restore_response(&ctx, &peer, &action, None, Default::default())
}

/// [`api::routes::ABORT_RESTORE`].
async fn route_abort_restore(r: Req) -> Response<Full<Bytes>> {
    let Req {
        ctx, peer, action, ..
    } = r;
    let running = ctx.jobs.current();
    let is_restore = running
        .and_then(|id| {
            ctx.catalog
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .job(id)
                .ok()
                .flatten()
        })
        .filter(|j| j.kind == crate::catalog::JobKind::Restore);
    match is_restore {
        Some(j) => {
            ctx.jobs.cancel_current();
            audit(
                &ctx,
                &peer,
                &action,
                true,
                &format!("abort restore job {}", j.id),
            );
            json(
                StatusCode::ACCEPTED,
                &crate::api::JobStarted {
                    job_id: j.id,
                    backup_id: j.backup_id,
                },
            )
        }
        None => {
            audit(&ctx, &peer, &action, false, "no restore running");
            error("no_restore_running", "no restore is running")
        }
    }
}

/// [`api::routes::ABANDON_RESTORE`].
async fn route_abandon_restore(r: Req) -> Response<Full<Bytes>> {
    let Req {
        ctx,
        peer,
        action,
        body,
        ..
    } = r;
    // Only a restore that is not running: abort it first.
    if let Some(j) = ctx.jobs.current().and_then(|id| {
        ctx.catalog
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .job(id)
            .ok()
            .flatten()
    }) {
        if j.kind == crate::catalog::JobKind::Restore {
            audit(&ctx, &peer, &action, false, "a restore is running");
            return error(
                "restore_running",
                format!(
                    "restore job {} is running: stop it first (hopsdrctl restore abort)",
                    j.id
                ),
            );
        }
    }
    match jobs::restore::unfinished(&ctx) {
        Ok(Some(JobError::RestoreUnfinished {
            restore_id,
            backup_id,
            state,
        })) => {
            let what = format!(
                "abandoning restore {restore_id} lets backups of the half-restored cluster push out backup {backup_id}"
            );
            if let Err(resp) = confirmed(&body, backup_id.as_str(), &what) {
                audit(&ctx, &peer, &action, false, "abandon not confirmed");
                return resp;
            }
            let r = ctx
                .catalog
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .set_restore_state(
                    restore_id,
                    crate::catalog::RestoreState::Abandoned,
                    Some(&format!("abandoned by the operator (it was {state})")),
                    chrono::Utc::now(),
                );
            if let Err(e) = r {
                return error("catalog", e.to_string());
            }
            jobs::restore::refresh_restore_gauge(&ctx);
            crate::restore::exec::remove_staging(&ctx.settings(), &backup_id);
            tracing::warn!(restore_id = %restore_id, backup_id = %backup_id, "restore abandoned: scheduled backups and pruning run again");
            audit(
                &ctx,
                &peer,
                &action,
                true,
                &format!("abandon restore {restore_id} of backup {backup_id} ({state})"),
            );
            json(
                StatusCode::OK,
                &serde_json::json!({"restore_id": restore_id, "backup_id": backup_id, "was": state}),
            )
        }
        Ok(_) => {
            audit(&ctx, &peer, &action, false, "no unfinished restore");
            error(
                "no_unfinished_restore",
                "the last restore is finished (or there is none): nothing to abandon",
            )
        }
        Err(e) => error("catalog", e.to_string()),
    }
}

/// [`api::routes::LAST_RESTORE`].
async fn route_last_restore(r: Req) -> Response<Full<Bytes>> {
    let Req { ctx, .. } = r;
    // Lock order: the job runner's slot before the catalog.
    let progress = ctx.jobs.current().and_then(|id| ctx.jobs.progress(id));
    let cat = ctx.catalog.lock().unwrap_or_else(|p| p.into_inner());
    match cat.last_restore() {
        Ok(Some(rec)) => {
            let plan: Result<crate::restore::plan::RestorePlan, _> =
                serde_json::from_str(&rec.plan);
            match plan {
                Ok(plan) => {
                    let report = crate::restore::exec::report(&plan, &rec, Utc::now());
                    json(
                        StatusCode::OK,
                        &crate::api::RestoreStatus {
                            restore: crate::api::RestoreView::of(&rec),
                            plan,
                            report,
                            progress,
                        },
                    )
                }
                Err(e) => error("catalog", format!("unreadable restore plan: {e}")),
            }
        }
        Ok(None) => error("no_restore", "no restore has been started"),
        Err(e) => error("catalog", e.to_string()),
    }
}

/// [`api::routes::JOB`].
async fn route_job(r: Req) -> Response<Full<Bytes>> {
    let Req {
        ctx, query, params, ..
    } = r;
    let id = params.first().map(String::as_str).unwrap_or_default();
    let Ok(n) = id.parse::<i64>() else {
        return error("bad_job_id", format!("\"{id}\" is not a job id (a number)"));
    };
    // `?wait_ms=N` (at most 10 s): answer as soon as the job is over, or after N ms
    // with its progress (a client following a job needs no tight polling).
    let wait = query
        .split('&')
        .find_map(|kv| kv.strip_prefix("wait_ms="))
        .and_then(|v| v.parse::<u64>().ok())
        .map(|ms| std::time::Duration::from_millis(ms.min(10_000)));
    let mut view = jobs::job_view(&ctx, JobId(n));
    if let (Some(wait), Ok(Some(v))) = (wait, &view) {
        if !v.state.is_final() && ctx.jobs.wait_idle_for(wait).await {
            view = jobs::job_view(&ctx, JobId(n));
        }
    }
    match view {
        Ok(Some(v)) => json(StatusCode::OK, &v),
        Ok(None) => error("no_such_job", format!("no job {n} in the catalog")),
        Err(e) => error("catalog", e.to_string()),
    }
}

fn restore_response(
    ctx: &Arc<Ctx>,
    peer: &Peer,
    action: &str,
    backup: Option<&BackupId>,
    opts: crate::restore::exec::RestoreOptions,
) -> Response<Full<Bytes>> {
    use jobs::restore::RestoreStartError;
    let what = match backup {
        Some(b) => format!(
            "restore backup {b} (allow_partial={}, force={})",
            opts.allow_partial, opts.force
        ),
        None => "resume the last restore".to_string(),
    };
    match jobs::restore::start(ctx, backup, opts, &format!("api:uid={}", peer.uid)) {
        Ok(started) => {
            audit(
                ctx,
                peer,
                action,
                true,
                &format!("{what}: job {}", started.job_id),
            );
            json(StatusCode::ACCEPTED, &started)
        }
        Err(RestoreStartError::Job(JobError::Busy(running))) => {
            audit(
                ctx,
                peer,
                action,
                false,
                &format!("{what}: busy with job {running}"),
            );
            let mut body = ErrorBody::new("busy", JobError::Busy(running).to_string());
            body.error.job_id = Some(running);
            json(status("busy"), &body)
        }
        Err(RestoreStartError::Refused(m)) => {
            audit(ctx, peer, action, false, &format!("{what}: {m}"));
            error("refused", m)
        }
        Err(RestoreStartError::Job(e)) => {
            audit(ctx, peer, action, false, &format!("{what}: {e}"));
            error(e.code(), e.to_string())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn access_rules() {
        let g = AccessGroups {
            read: Some(100),
            operator: Some(200),
        };
        assert!(decide(0, &[0], Access::Change, &g));
        assert!(decide(1000, &[100], Access::Read, &g));
        assert!(!decide(1000, &[100], Access::Change, &g));
        assert!(decide(1000, &[5, 200], Access::Change, &g));
        assert!(decide(1000, &[200], Access::Read, &g));
        assert!(!decide(1000, &[5], Access::Read, &g));
        let none = AccessGroups::default();
        assert!(!decide(1000, &[0, 100], Access::Read, &none));
        // The repository's keys: root only, even for the operator group.
        assert!(decide(0, &[0], Access::Root, &g));
        assert!(!decide(1000, &[200, 100], Access::Root, &g));
        assert!(api::routes::ADD_KEY.root_only() && api::routes::ROTATE_KEY.root_only());
        assert!(api::routes::REMOVE_KEY.root_only() && !api::routes::KEYS.root_only());
    }
}
