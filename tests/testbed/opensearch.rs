//! The cluster's OpenSearch, as far as backups meet it: an HTTP(S) endpoint answering the
//! snapshot and restore API with OpenSearch's JSON shapes, status codes and asynchronous
//! behaviour, its indices (documents by id) kept in `<dir>/opensearch/state.json`.
//!
//! - `PUT /_snapshot/{repo}` registers an `fs` repository whose `location` must lie under
//!   `path.repo` (`<dir>/opensearch/repo`), else 500 `repository_exception`;
//!   `GET /_snapshot/{repo}` shows it (404 `repository_missing_exception`).
//! - `PUT /_snapshot/{repo}/{snap}` starts a snapshot (`{"accepted":true}`): a lowercase name
//!   only, a name used once (400 `invalid_snapshot_name_exception`). Its files are written to
//!   the repository as OpenSearch lays them out (`index-N`, `index.latest`, `snap-<uuid>.dat`,
//!   `meta-<uuid>.dat`, `indices/<index id>/…` with shard blobs named by content, so an
//!   unchanged index writes nothing new); `GET` shows it `IN_PROGRESS` for
//!   `--snapshot-ms`, then `SUCCESS` (or `PARTIAL`/`FAILED` by fault).
//! - `POST /_snapshot/{repo}/{snap}/_restore` restores the named indices (never the security
//!   index) from the repository's files; an open index of the same name is refused (500
//!   `snapshot_restore_exception`, the real message); a closed one is replaced. Restored
//!   indices are `red` for `--restore-ms`, then `green`.
//! - `POST /{index}/_close`, `DELETE /{index}`, `GET /_cat/indices?format=json`,
//!   `GET /_cluster/health`, `DELETE /_snapshot/{repo}/{snap}`.
//! - Basic authentication (401 with `WWW-Authenticate: Basic realm="OpenSearch Security"`)
//!   and TLS when given a password file and a certificate.
//!
//! The contents of the `.dat` files are JSON here (the real ones are SMILE with a codec
//! header); names, places and what changes from one snapshot to the next are real.

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};

/// An index: its id and documents, open or closed.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Index {
    pub uuid: String,
    pub docs: Vec<String>,
    pub open: bool,
    /// Restored and not yet green (ms since the epoch when it turns green).
    #[serde(default)]
    pub green_at: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Snapshot {
    uuid: String,
    indices: Vec<String>,
    start_ms: u64,
    /// The state it ends in (`SUCCESS`, `PARTIAL`, `FAILED`).
    outcome: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct State {
    pub indices: BTreeMap<String, Index>,
    /// Repository name → location.
    repos: BTreeMap<String, String>,
    /// `repo/snap` → snapshot.
    snapshots: BTreeMap<String, Snapshot>,
    /// `partial`, `failed` (snapshots end so), `unavailable` (every request 503).
    #[serde(default)]
    pub fault: Option<String>,
    #[serde(default)]
    counter: u64,
}

pub fn dir_of(cluster: &Path) -> PathBuf {
    cluster.join("opensearch")
}

/// `path.repo`: where fs repositories may be.
pub fn path_repo(cluster: &Path) -> PathBuf {
    dir_of(cluster).join("repo")
}

fn state_path(cluster: &Path) -> PathBuf {
    dir_of(cluster).join("state.json")
}

/// Runs `f` on the state under an exclusive lock, saving what it changed.
pub fn with_state<T>(cluster: &Path, f: impl FnOnce(&mut State) -> Result<T>) -> Result<T> {
    let d = dir_of(cluster);
    std::fs::create_dir_all(&d)?;
    let lock = std::fs::File::create(d.join("lock"))?;
    nix::fcntl::Flock::lock(lock, nix::fcntl::FlockArg::LockExclusive)
        .map_err(|(_, e)| anyhow::anyhow!("lock: {e}"))
        .and_then(|_guard| {
            let mut st: State = match std::fs::read(state_path(cluster)) {
                Ok(b) => serde_json::from_slice(&b)?,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => State::default(),
                Err(e) => return Err(e.into()),
            };
            let r = f(&mut st)?;
            let tmp = d.join("state.json.tmp");
            std::fs::write(&tmp, serde_json::to_vec_pretty(&st)?)?;
            std::fs::rename(&tmp, state_path(cluster))?;
            Ok(r)
        })
}

fn uuid(seed: &str) -> String {
    let h = blake3::hash(seed.as_bytes()).to_hex();
    // OpenSearch's ids are 22-character URL-safe base64; hex of that length reads the same.
    h[..22].to_string()
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The indices a Hopsworks cluster has: the security index, the feature store's search
/// index, a project's k-NN embeddings, logs.
pub fn create(cluster: &Path, seed: u64) -> Result<()> {
    with_state(cluster, |st| {
        *st = State::default();
        for (name, n) in [
            (".opendistro_security", 9),
            ("featurestore", 24),
            ("project_1__embeddings_knn", 40),
            ("app_logs-2026.12", 30),
        ] {
            let docs = (0..n).map(|i| format!("{name}-{seed}-{i}")).collect();
            st.indices.insert(
                name.to_string(),
                Index {
                    uuid: uuid(&format!("{name}{seed}")),
                    docs,
                    open: true,
                    green_at: 0,
                },
            );
        }
        Ok(())
    })
}

/// A lost cluster: OpenSearch's data and its snapshot repository gone.
pub fn destroy(cluster: &Path) -> Result<()> {
    let _ = std::fs::remove_dir_all(path_repo(cluster));
    with_state(cluster, |st| {
        *st = State::default();
        Ok(())
    })
}

/// A redeployed cluster: the security index, and the feature store's index created empty
/// by the services at their start.
pub fn redeploy(cluster: &Path) -> Result<()> {
    destroy(cluster)?;
    with_state(cluster, |st| {
        for (name, n) in [(".opendistro_security", 9), ("featurestore", 0)] {
            st.indices.insert(
                name.to_string(),
                Index {
                    uuid: uuid(&format!("{name}-redeployed")),
                    docs: (0..n).map(|i| format!("{name}-redeployed-{i}")).collect(),
                    open: true,
                    green_at: 0,
                },
            );
        }
        Ok(())
    })
}

/// The snapshots OpenSearch knows, as `repo/snapshot` names.
pub fn snapshots(cluster: &Path) -> Result<Vec<String>> {
    with_state(cluster, |st| Ok(st.snapshots.keys().cloned().collect()))
}

/// One digest of every index but the security one: names, open or not, documents.
pub fn fingerprint(cluster: &Path) -> Result<String> {
    with_state(cluster, |st| {
        let mut h = blake3::Hasher::new();
        for (name, ix) in st.indices.iter().filter(|(n, _)| !n.starts_with('.')) {
            h.update(format!("{name} {} {}\n", ix.open, ix.docs.join(",")).as_bytes());
        }
        Ok(h.finalize().to_hex()[..16].to_string())
    })
}

/// Adds `n` documents to `index` (created if needed).
pub fn add_docs(cluster: &Path, index: &str, n: u32) -> Result<()> {
    with_state(cluster, |st| {
        let ix = st.indices.entry(index.to_string()).or_insert(Index {
            uuid: uuid(index),
            docs: Vec::new(),
            open: true,
            green_at: 0,
        });
        let base = ix.docs.len();
        ix.docs
            .extend((0..n as usize).map(|i| format!("{index}-added-{}", base + i)));
        Ok(())
    })
}

/// A response: status, JSON body, extra headers.
struct Reply {
    status: u16,
    body: Value,
    headers: Vec<(String, String)>,
}

fn ok(body: Value) -> Reply {
    Reply {
        status: 200,
        body,
        headers: Vec::new(),
    }
}

/// OpenSearch's error envelope.
fn err(status: u16, kind: &str, reason: &str) -> Reply {
    Reply {
        status,
        body: json!({
            "error": {
                "root_cause": [{"type": kind, "reason": reason}],
                "type": kind,
                "reason": reason,
            },
            "status": status,
        }),
        headers: Vec::new(),
    }
}

fn err_caused(status: u16, kind: &str, reason: &str, cause_kind: &str, cause: &str) -> Reply {
    let mut r = err(status, kind, reason);
    r.body["error"]["caused_by"] = json!({"type": cause_kind, "reason": cause});
    r.body["error"]["root_cause"] = json!([{"type": cause_kind, "reason": cause}]);
    r
}

/// The options the server was started with.
pub struct Options {
    pub snapshot_ms: u64,
    pub restore_ms: u64,
    pub password: Option<String>,
}

fn snapshot_state<'a>(s: &'a Snapshot, opts: &Options) -> &'a str {
    if now_ms() < s.start_ms + opts.snapshot_ms {
        "IN_PROGRESS"
    } else {
        &s.outcome
    }
}

fn snapshot_json(name: &str, s: &Snapshot, opts: &Options) -> Value {
    let state = snapshot_state(s, opts);
    let total = s.indices.len() as u64;
    let failed = match state {
        "PARTIAL" => 1.min(total),
        "FAILED" => total,
        _ => 0,
    };
    let mut v = json!({
        "snapshot": name,
        "uuid": s.uuid,
        "version_id": 136_327_827,
        "version": "2.11.1",
        "remote_store_index_shallow_copy": false,
        "indices": s.indices,
        "data_streams": [],
        "include_global_state": false,
        "state": state,
        "start_time_in_millis": s.start_ms,
        "failures": [],
        "shards": {"total": total, "failed": failed, "successful": total - failed},
    });
    if state != "IN_PROGRESS" {
        v["end_time_in_millis"] = json!(s.start_ms + opts.snapshot_ms);
        v["duration_in_millis"] = json!(opts.snapshot_ms);
        if failed > 0 {
            v["failures"] = json!([{
                "index": s.indices[0], "index_uuid": s.indices[0], "shard_id": 0,
                "reason": "IndexShardSnapshotFailedException[failed to write a shard blob]",
                "node_id": "n1", "status": "INTERNAL_SERVER_ERROR"
            }]);
        }
    }
    v
}

/// Writes the snapshot's files into the fs repository at `location`, as OpenSearch lays
/// them out: shard blobs by content, per-snapshot metadata, then the repository data
/// `index-N` and `index.latest`.
fn write_snapshot(location: &Path, st: &State, repo: &str, snap: &str, s: &Snapshot) -> Result<()> {
    std::fs::create_dir_all(location)?;
    let mut indices = serde_json::Map::new();
    for name in &s.indices {
        let ix = &st.indices[name];
        let blob_body = serde_json::to_vec(&ix.docs)?;
        let blob = format!("__{}", &blake3::hash(&blob_body).to_hex()[..22]);
        let d = location.join("indices").join(&ix.uuid);
        std::fs::create_dir_all(d.join("0"))?;
        std::fs::write(d.join("0").join(&blob), &blob_body)?;
        std::fs::write(
            d.join("0").join(format!("snap-{}.dat", s.uuid)),
            serde_json::to_vec(&json!({"name": snap, "files": [blob]}))?,
        )?;
        std::fs::write(
            d.join(format!("meta-{}.dat", s.uuid)),
            serde_json::to_vec(&json!({"index": name, "number_of_shards": 1}))?,
        )?;
        indices.insert(name.clone(), json!({"id": ix.uuid, "blob": blob}));
    }
    std::fs::write(
        location.join(format!("snap-{}.dat", s.uuid)),
        serde_json::to_vec(&json!({"snapshot": snap, "uuid": s.uuid, "indices": s.indices}))?,
    )?;
    std::fs::write(
        location.join(format!("meta-{}.dat", s.uuid)),
        serde_json::to_vec(&json!({"cluster_uuid": "testbed"}))?,
    )?;
    // The repository data: every snapshot of this repository.
    let mut data =
        read_repository_data(location).unwrap_or_else(|_| json!({"snapshots": [], "indices": {}}));
    data["snapshots"].as_array_mut().expect("array").push(
        json!({"name": snap, "uuid": s.uuid, "state": 1, "indices": indices, "repository": repo}),
    );
    write_repository_data(location, &data)
}

fn read_repository_data(location: &Path) -> Result<Value> {
    let n = std::fs::read(location.join("index.latest"))?;
    let n = u64::from_be_bytes(n.as_slice().try_into().context("index.latest")?);
    Ok(serde_json::from_slice(&std::fs::read(
        location.join(format!("index-{n}")),
    )?)?)
}

fn write_repository_data(location: &Path, data: &Value) -> Result<()> {
    let n = std::fs::read(location.join("index.latest"))
        .ok()
        .and_then(|b| b.as_slice().try_into().ok().map(u64::from_be_bytes))
        .map_or(0, |n| n + 1);
    std::fs::write(
        location.join(format!("index-{n}")),
        serde_json::to_vec(data)?,
    )?;
    std::fs::write(location.join("index.latest"), n.to_be_bytes())?;
    if n > 0 {
        let _ = std::fs::remove_file(location.join(format!("index-{}", n - 1)));
    }
    Ok(())
}

/// Answers one request.
fn handle(
    cluster: &Path,
    opts: &Options,
    method: &str,
    target: &str,
    body: &[u8],
) -> Result<Reply> {
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    let body: Value = if body.is_empty() {
        Value::Null
    } else {
        match serde_json::from_slice(body) {
            Ok(v) => v,
            Err(e) => {
                return Ok(err(
                    400,
                    "parse_exception",
                    &format!("request body is required and must be JSON: {e}"),
                ))
            }
        }
    };
    with_state(cluster, |st| {
        if st.fault.as_deref() == Some("unavailable") {
            return Ok(err(
                503,
                "cluster_block_exception",
                "blocked by: [SERVICE_UNAVAILABLE/1/state not recovered / initialized];",
            ));
        }
        Ok(match (method, parts.as_slice()) {
            ("GET", ["_cluster", "health"]) => {
                ok(json!({"cluster_name": "hopsworks", "status": "green", "number_of_nodes": 1}))
            }
            ("GET", ["_cat", "indices"]) => {
                let now = now_ms();
                let list: Vec<Value> = st
                    .indices
                    .iter()
                    .map(|(n, ix)| {
                        json!({
                            "health": if !ix.open { "" } else if now < ix.green_at { "red" } else { "green" },
                            "status": if ix.open { "open" } else { "close" },
                            "index": n,
                            "uuid": ix.uuid,
                            "docs.count": if ix.open { ix.docs.len().to_string() } else { String::new() },
                        })
                    })
                    .collect();
                let _ = query;
                ok(Value::Array(list))
            }
            ("PUT", ["_snapshot", repo]) => {
                let location = body["settings"]["location"].as_str().unwrap_or_default();
                if body["type"] != "fs" {
                    err(
                        500,
                        "repository_exception",
                        &format!(
                            "[{repo}] repository type [{}] does not exist",
                            body["type"].as_str().unwrap_or("")
                        ),
                    )
                } else if !Path::new(location).starts_with(path_repo(cluster))
                    || location.contains("..")
                {
                    err_caused(
                        500,
                        "repository_exception",
                        &format!("[{repo}] failed to create repository"),
                        "repository_exception",
                        &format!("[{repo}] location [{location}] doesn't match any of the locations specified by path.repo because this setting is empty"),
                    )
                } else {
                    std::fs::create_dir_all(location)?;
                    st.repos.insert(repo.to_string(), location.to_string());
                    ok(json!({"acknowledged": true}))
                }
            }
            ("GET", ["_snapshot", repo]) => match st.repos.get(*repo) {
                Some(l) => ok(json!({ *repo: {"type": "fs", "settings": {"location": l}} })),
                None => err(
                    404,
                    "repository_missing_exception",
                    &format!("[{repo}] missing"),
                ),
            },
            ("PUT" | "POST", ["_snapshot", repo, snap]) => {
                let Some(location) = st.repos.get(*repo).cloned() else {
                    return Ok(err(
                        404,
                        "repository_missing_exception",
                        &format!("[{repo}] missing"),
                    ));
                };
                let key = format!("{repo}/{snap}");
                if snap.chars().any(|c| c.is_ascii_uppercase()) {
                    err(
                        400,
                        "invalid_snapshot_name_exception",
                        &format!(
                            "[{repo}:{snap}] Invalid snapshot name [{snap}], must be lowercase"
                        ),
                    )
                } else if st.snapshots.contains_key(&key) {
                    err(400, "invalid_snapshot_name_exception", &format!("[{repo}:{snap}] Invalid snapshot name [{snap}], snapshot with the same name already exists"))
                } else {
                    let wanted = body["indices"].as_str().unwrap_or("*");
                    let indices = select(st, wanted);
                    st.counter += 1;
                    let s = Snapshot {
                        uuid: uuid(&format!("{key}{}{}", st.counter, now_ms())),
                        indices,
                        start_ms: now_ms(),
                        outcome: match st.fault.as_deref() {
                            Some("partial") => "PARTIAL",
                            Some("failed") => "FAILED",
                            _ => "SUCCESS",
                        }
                        .to_string(),
                    };
                    if s.outcome != "FAILED" {
                        write_snapshot(Path::new(&location), st, repo, snap, &s)?;
                    }
                    st.snapshots.insert(key, s);
                    ok(json!({"accepted": true}))
                }
            }
            ("GET", ["_snapshot", repo, snap]) => match st.snapshots.get(&format!("{repo}/{snap}"))
            {
                Some(s) if s.outcome == "FAILED" || snapshot_files_present(st, repo, s) => {
                    ok(json!({"snapshots": [snapshot_json(snap, s, opts)]}))
                }
                _ => err(
                    404,
                    "snapshot_missing_exception",
                    &format!("[{repo}:{snap}] is missing"),
                ),
            },
            ("DELETE", ["_snapshot", repo]) => match st.repos.remove(*repo) {
                Some(_) => ok(json!({"acknowledged": true})),
                None => err(
                    404,
                    "repository_missing_exception",
                    &format!("[{repo}] missing"),
                ),
            },
            ("DELETE", ["_snapshot", repo, snap]) => {
                match st.snapshots.remove(&format!("{repo}/{snap}")) {
                    Some(s) => {
                        // Its files go, and the repository data no longer lists it.
                        if let Some(l) = st.repos.get(*repo) {
                            let l = Path::new(l);
                            let _ = std::fs::remove_file(l.join(format!("snap-{}.dat", s.uuid)));
                            let _ = std::fs::remove_file(l.join(format!("meta-{}.dat", s.uuid)));
                            if let Ok(mut data) = read_repository_data(l) {
                                if let Some(a) = data["snapshots"].as_array_mut() {
                                    a.retain(|x| x["uuid"] != s.uuid.as_str());
                                }
                                write_repository_data(l, &data)?;
                            }
                        }
                        ok(json!({"acknowledged": true}))
                    }
                    None => err(
                        404,
                        "snapshot_missing_exception",
                        &format!("[{repo}:{snap}] is missing"),
                    ),
                }
            }
            ("POST", ["_snapshot", repo, snap, "_restore"]) => {
                restore(cluster, st, opts, repo, snap, &body)?
            }
            ("POST", [index, "_close"]) => match st.indices.get_mut(*index) {
                Some(ix) => {
                    ix.open = false;
                    ok(
                        json!({"acknowledged": true, "shards_acknowledged": true, "indices": { *index: {"closed": true}}}),
                    )
                }
                None => err(
                    404,
                    "index_not_found_exception",
                    &format!("no such index [{index}]"),
                ),
            },
            ("DELETE", [index]) if !index.starts_with('_') => match st.indices.remove(*index) {
                Some(_) => ok(json!({"acknowledged": true})),
                None => err(
                    404,
                    "index_not_found_exception",
                    &format!("no such index [{index}]"),
                ),
            },
            _ => err(
                405,
                "illegal_argument_exception",
                &format!("Incorrect HTTP method for uri [{target}] and method [{method}]"),
            ),
        })
    })
}

/// The indices a pattern names: `*`, names, `-exclusions`, comma-separated.
fn select(st: &State, pattern: &str) -> Vec<String> {
    let (mut inc, mut exc) = (Vec::new(), Vec::new());
    for p in pattern.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        match p.strip_prefix('-') {
            Some(x) => exc.push(x),
            None => inc.push(p),
        }
    }
    let m = |p: &str, n: &str| match p.strip_suffix('*') {
        Some(pre) => n.starts_with(pre),
        None => p == n,
    };
    st.indices
        .keys()
        .filter(|n| {
            inc.iter()
                .any(|p| m(p, n) && !(p.starts_with('*') && n.starts_with('.')))
        })
        .filter(|n| !exc.iter().any(|p| m(p, n)))
        .cloned()
        .collect()
}

/// Whether the repository still holds the snapshot's files (a lost repository forgets it).
fn snapshot_files_present(st: &State, repo: &str, s: &Snapshot) -> bool {
    st.repos
        .get(repo)
        .is_some_and(|l| Path::new(l).join(format!("snap-{}.dat", s.uuid)).exists())
}

fn restore(
    cluster: &Path,
    st: &mut State,
    opts: &Options,
    repo: &str,
    snap: &str,
    body: &Value,
) -> Result<Reply> {
    let _ = cluster;
    let Some(location) = st.repos.get(repo).cloned() else {
        return Ok(err(
            404,
            "repository_missing_exception",
            &format!("[{repo}] missing"),
        ));
    };
    // What the repository holds (a snapshot copied back into it is found there).
    let data = match read_repository_data(Path::new(&location)) {
        Ok(d) => d,
        Err(_) => {
            return Ok(err(
                500,
                "snapshot_restore_exception",
                &format!("[{repo}:{snap}] snapshot does not exist"),
            ))
        }
    };
    let Some(found) = data["snapshots"]
        .as_array()
        .and_then(|a| a.iter().find(|s| s["name"] == snap))
        .cloned()
    else {
        return Ok(err(
            500,
            "snapshot_restore_exception",
            &format!("[{repo}:{snap}] snapshot does not exist"),
        ));
    };
    let suuid = found["uuid"].as_str().unwrap_or_default().to_string();
    if body["include_global_state"].as_bool() == Some(true) {
        return Ok(err(403, "security_exception", "no permissions for [] and User [name=hopsdr, backend_roles=[], requestedTenant=null]: restoring the global state needs the admin certificate"));
    }
    let wanted: Vec<String> = match &body["indices"] {
        Value::String(s) => s
            .split(',')
            .map(|x| x.trim().to_string())
            .filter(|x| !x.is_empty())
            .collect(),
        Value::Array(a) => a
            .iter()
            .filter_map(|v| v.as_str().map(String::from))
            .collect(),
        _ => found["indices"]
            .as_object()
            .map(|o| o.keys().cloned().collect())
            .unwrap_or_default(),
    };
    for w in &wanted {
        if w == ".opendistro_security" || w == "*" || w == "_all" {
            return Ok(err(403, "security_exception", &format!("no permissions for [indices:admin/create] and User [name=hopsdr]: restoring [{w}]")));
        }
        if found["indices"].get(w).is_none() {
            return Ok(err(
                404,
                "index_not_found_exception",
                &format!("no such index [{w}]"),
            ));
        }
        if st.indices.get(w).is_some_and(|ix| ix.open) {
            return Ok(err(
                500,
                "snapshot_restore_exception",
                &format!("[{repo}:{snap}/{suuid}] cannot restore index [{w}] because an open index with same name already exists in the cluster. Either close or delete the existing index or restore the index under a different name by providing a rename pattern and replacement name"),
            ));
        }
    }
    let mut shards = 0;
    for w in &wanted {
        let info = &found["indices"][w];
        let (id, blob) = (
            info["id"].as_str().unwrap_or(""),
            info["blob"].as_str().unwrap_or(""),
        );
        let p = Path::new(&location)
            .join("indices")
            .join(id)
            .join("0")
            .join(blob);
        let docs: Vec<String> = match std::fs::read(&p) {
            Ok(b) => serde_json::from_slice(&b)?,
            Err(_) => {
                return Ok(err(500, "snapshot_restore_exception", &format!("[{repo}:{snap}/{suuid}] failed to restore index [{w}]: shard blob {} is missing", p.display())))
            }
        };
        st.indices.insert(
            w.clone(),
            Index {
                uuid: uuid(&format!("{w}-restored-{}", now_ms())),
                docs,
                open: true,
                green_at: now_ms() + opts.restore_ms,
            },
        );
        shards += 1;
    }
    Ok(ok(json!({"accepted": true, "shards": shards})))
}

/// A request: method, target, headers (names lowercase), body.
type Request = (String, String, Vec<(String, String)>, Vec<u8>);

/// Reads one HTTP/1.1 request; `None` at the end of the connection.
fn read_request(r: &mut impl BufRead) -> Result<Option<Request>> {
    let mut line = String::new();
    if r.read_line(&mut line)? == 0 {
        return Ok(None);
    }
    let mut it = line.split_whitespace();
    let (Some(method), Some(target)) = (it.next(), it.next()) else {
        bail!("bad request line {line:?}");
    };
    let (method, target) = (method.to_string(), target.to_string());
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        r.read_line(&mut h)?;
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
    }
    let len: usize = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; len];
    r.read_exact(&mut body)?;
    Ok(Some((method, target, headers, body)))
}

fn authorized(headers: &[(String, String)], opts: &Options) -> bool {
    use base64::Engine;
    let Some(pw) = &opts.password else {
        return true;
    };
    let want = base64::engine::general_purpose::STANDARD.encode(format!("hopsdr:{pw}"));
    headers
        .iter()
        .any(|(k, v)| k == "authorization" && v.strip_prefix("Basic ") == Some(want.as_str()))
}

fn serve_conn(cluster: &Path, opts: &Options, stream: impl Read + Write) -> Result<()> {
    let mut r = BufReader::new(stream);
    while let Some((method, target, headers, body)) = read_request(&mut r)? {
        let reply = if !authorized(&headers, opts) {
            let mut e = err(401, "security_exception", "Unauthorized");
            e.body = Value::String("Unauthorized".into());
            e.headers.push((
                "WWW-Authenticate".into(),
                "Basic realm=\"OpenSearch Security\"".into(),
            ));
            e
        } else {
            handle(cluster, opts, &method, &target, &body)
                .unwrap_or_else(|e| err(500, "exception", &e.to_string()))
        };
        let text = match &reply.body {
            Value::String(s) => s.clone(),
            v => v.to_string(),
        };
        let ctype = if reply.body.is_string() {
            "text/plain"
        } else {
            "application/json; charset=UTF-8"
        };
        let mut out = format!(
            "HTTP/1.1 {} {}\r\ncontent-type: {ctype}\r\ncontent-length: {}\r\n",
            reply.status,
            match reply.status {
                200 => "OK",
                400 => "Bad Request",
                401 => "Unauthorized",
                403 => "Forbidden",
                404 => "Not Found",
                405 => "Method Not Allowed",
                503 => "Service Unavailable",
                _ => "Internal Server Error",
            },
            text.len()
        );
        for (k, v) in &reply.headers {
            out.push_str(&format!("{k}: {v}\r\n"));
        }
        out.push_str("\r\n");
        out.push_str(&text);
        let w = r.get_mut();
        w.write_all(out.as_bytes())?;
        w.flush()?;
    }
    Ok(())
}

/// Serves the API on `127.0.0.1:port` (HTTPS with `tls`: certificate and key PEM files) until
/// killed.
pub fn serve(
    cluster: &Path,
    port: u16,
    opts: Options,
    tls: Option<(PathBuf, PathBuf)>,
) -> Result<i32> {
    let listener = std::net::TcpListener::bind(("127.0.0.1", port))?;
    let config = match tls {
        None => None,
        Some((cert, key)) => {
            use rustls::pki_types::pem::PemObject;
            let certs: Vec<_> = rustls::pki_types::CertificateDer::pem_file_iter(&cert)?
                .collect::<Result<_, _>>()?;
            let key = rustls::pki_types::PrivateKeyDer::from_pem_file(&key)?;
            Some(std::sync::Arc::new(
                rustls::ServerConfig::builder_with_provider(std::sync::Arc::new(
                    rustls::crypto::aws_lc_rs::default_provider(),
                ))
                .with_safe_default_protocol_versions()?
                .with_no_client_auth()
                .with_single_cert(certs, key)?,
            ))
        }
    };
    let opts = std::sync::Arc::new(opts);
    let cluster = cluster.to_path_buf();
    for conn in listener.incoming() {
        let Ok(tcp) = conn else { continue };
        let (opts, cluster, config) = (opts.clone(), cluster.clone(), config.clone());
        std::thread::spawn(move || {
            let r = match config {
                None => serve_conn(&cluster, &opts, tcp),
                Some(c) => match rustls::ServerConnection::new(c) {
                    Ok(s) => serve_conn(&cluster, &opts, rustls::StreamOwned::new(s, tcp)),
                    Err(e) => Err(e.into()),
                },
            };
            if let Err(e) = r {
                eprintln!("opensearch: connection: {e:#}");
            }
        });
    }
    Ok(0)
}
