//! OpenSearch's snapshot and restore API, as hopsdr drives it over HTTP(S) with basic
//! authentication: register an `fs` snapshot repository, start a snapshot without waiting and
//! poll it to its final state (`SUCCESS`, `PARTIAL`, `FAILED`), list, close and delete
//! indices, start a restore of named indices. Every error OpenSearch returns comes in its
//! envelope (`{"error":{"type","reason",...},"status"}`) and is reported with its type and
//! reason; the parsing is pure and tested on the documented shapes.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::config::{OpensearchSettings, SecretEnv};

/// Why a call to OpenSearch failed.
#[derive(Debug, thiserror::Error)]
pub enum OpensearchError {
    #[error("OpenSearch at {url}: {detail}")]
    Http { url: String, detail: String },
    #[error("OpenSearch at {url}: {method} {path} answered {status} {kind}: {reason}")]
    Api {
        url: String,
        method: &'static str,
        path: String,
        status: u16,
        kind: String,
        reason: String,
    },
    #[error("OpenSearch at {url} refused user {user:?} (401 Unauthorized): check [opensearch] user and password")]
    Unauthorized { url: String, user: String },
    #[error("OpenSearch at {url}: {path}: unexpected answer: {detail}")]
    Reply {
        url: String,
        path: String,
        detail: String,
    },
    #[error("[opensearch] {0}")]
    Config(String),
    #[error(
        "snapshot {snapshot} is still {state} after {waited:?} ([opensearch] snapshot_timeout)"
    )]
    SnapshotTimeout {
        snapshot: String,
        state: String,
        waited: Duration,
    },
    #[error("the restored indices are not all green after {waited:?} ([opensearch] restore_timeout): {pending}")]
    RestoreTimeout { waited: Duration, pending: String },
    #[error("stopped: hopsdrd is stopping")]
    Cancelled,
}

/// A snapshot's state as OpenSearch reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum SnapshotState {
    InProgress,
    Success,
    Partial,
    Failed,
    Incompatible,
}

/// What `GET /_snapshot/{repo}/{snap}` says of a snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotInfo {
    pub name: String,
    pub uuid: String,
    pub state: SnapshotState,
    pub indices: Vec<String>,
    pub shards_total: u64,
    pub shards_failed: u64,
    /// `index shard: reason` per failed shard.
    pub failures: Vec<String>,
}

/// One index as `_cat/indices` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexInfo {
    pub name: String,
    pub open: bool,
    /// `green`, `yellow`, `red` (empty for a closed index).
    pub health: String,
}

/// The error envelope's type and reason (the root cause's when the top one is generic).
pub fn parse_error(body: &str) -> (String, String) {
    let Ok(v) = serde_json::from_str::<Value>(body) else {
        return ("".into(), body.trim().chars().take(300).collect());
    };
    let e = &v["error"];
    match e {
        Value::String(s) => ("".into(), s.clone()),
        Value::Object(_) => {
            let kind = e["type"].as_str().unwrap_or_default().to_string();
            let mut reason = e["reason"].as_str().unwrap_or_default().to_string();
            if let Some(c) = e["caused_by"]["reason"].as_str() {
                reason = format!("{reason}: {c}");
            }
            (kind, reason)
        }
        _ => ("".into(), body.trim().chars().take(300).collect()),
    }
}

/// The one snapshot of a `GET /_snapshot/{repo}/{snap}` answer.
pub fn parse_snapshot(v: &Value) -> Option<SnapshotInfo> {
    let s = v["snapshots"].as_array()?.first()?;
    let state: SnapshotState = serde_json::from_value(s["state"].clone()).ok()?;
    let failures = s["failures"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|f| {
                    format!(
                        "{} shard {}: {}",
                        f["index"].as_str().unwrap_or("?"),
                        f["shard_id"],
                        f["reason"].as_str().unwrap_or("?")
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    Some(SnapshotInfo {
        name: s["snapshot"].as_str()?.to_string(),
        uuid: s["uuid"].as_str().unwrap_or_default().to_string(),
        state,
        indices: s["indices"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|x| x.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default(),
        shards_total: s["shards"]["total"].as_u64().unwrap_or(0),
        shards_failed: s["shards"]["failed"].as_u64().unwrap_or(0),
        failures,
    })
}

/// `GET /_cat/indices?format=json`.
pub fn parse_indices(v: &Value) -> Vec<IndexInfo> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|i| {
                    Some(IndexInfo {
                        name: i["index"].as_str()?.to_string(),
                        open: i["status"].as_str() == Some("open"),
                        health: i["health"].as_str().unwrap_or_default().to_string(),
                    })
                })
                .collect()
        })
        .unwrap_or_default()
}

/// A client of one OpenSearch cluster.
pub struct Opensearch {
    url: String,
    user: Option<(String, String)>,
    client: reqwest::Client,
}

impl std::fmt::Debug for Opensearch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Opensearch({})", self.url)
    }
}

/// Runs `fut` to its end from a blocking thread (the daemon's jobs run on them).
fn block_on<F: std::future::Future>(fut: F) -> Result<F::Output, OpensearchError> {
    match tokio::runtime::Handle::try_current() {
        Ok(h) => Ok(h.block_on(fut)),
        Err(_) => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map(|rt| rt.block_on(fut))
            .map_err(|e| OpensearchError::Config(format!("no runtime: {e}"))),
    }
}

impl Opensearch {
    /// A client for `s` (its password read, its CA loaded).
    pub fn new(s: &OpensearchSettings, env: &SecretEnv) -> Result<Opensearch, OpensearchError> {
        let mut b = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(60));
        if let Some(ca) = &s.ca_file {
            let pem = std::fs::read(ca)
                .map_err(|e| OpensearchError::Config(format!("ca_file {}: {e}", ca.display())))?;
            let cert = reqwest::Certificate::from_pem(&pem).map_err(|e| {
                OpensearchError::Config(format!(
                    "ca_file {}: not a PEM certificate: {e}",
                    ca.display()
                ))
            })?;
            b = b.tls_certs_only([cert]);
        }
        let client = b
            .build()
            .map_err(|e| OpensearchError::Config(format!("HTTP client: {e}")))?;
        let user = match (&s.user, &s.password) {
            (Some(u), Some(p)) => Some((
                u.clone(),
                p.read(env)
                    .map_err(|e| OpensearchError::Config(format!("password: {e}")))?,
            )),
            _ => None,
        };
        Ok(Opensearch {
            url: s.url.clone(),
            user,
            client,
        })
    }

    /// One request; the answer's JSON, or the error OpenSearch gave (`Ok(None)` for a 404 when
    /// `missing_ok`).
    fn call(
        &self,
        method: &'static str,
        path: &str,
        body: Option<Value>,
        missing_ok: bool,
    ) -> Result<Option<Value>, OpensearchError> {
        let url = format!("{}{path}", self.url);
        let m = reqwest::Method::from_bytes(method.as_bytes()).expect("a method");
        let mut req = self.client.request(m, &url);
        if let Some((u, p)) = &self.user {
            req = req.basic_auth(u, Some(p));
        }
        if let Some(b) = body {
            req = req
                .header("content-type", "application/json")
                .body(b.to_string());
        }
        let http = |e: reqwest::Error| OpensearchError::Http {
            url: self.url.clone(),
            detail: format!("{method} {path}: {}", error_chain(&e)),
        };
        let (status, text) = block_on(async {
            let r = req.send().await?;
            let status = r.status().as_u16();
            let text = r.text().await?;
            Ok::<_, reqwest::Error>((status, text))
        })?
        .map_err(http)?;
        match status {
            200..=299 => {
                serde_json::from_str(&text)
                    .map(Some)
                    .map_err(|e| OpensearchError::Reply {
                        url: self.url.clone(),
                        path: path.to_string(),
                        detail: format!("{e}: {}", text.chars().take(200).collect::<String>()),
                    })
            }
            401 => Err(OpensearchError::Unauthorized {
                url: self.url.clone(),
                user: self.user.as_ref().map(|u| u.0.clone()).unwrap_or_default(),
            }),
            404 if missing_ok => Ok(None),
            _ => {
                let (kind, reason) = parse_error(&text);
                Err(OpensearchError::Api {
                    url: self.url.clone(),
                    method,
                    path: path.to_string(),
                    status,
                    kind,
                    reason,
                })
            }
        }
    }

    /// Registers (or re-registers: idempotent) the `fs` repository `name` at `location`.
    pub fn register_fs_repository(
        &self,
        name: &str,
        location: &str,
    ) -> Result<(), OpensearchError> {
        self.call(
            "PUT",
            &format!("/_snapshot/{name}"),
            Some(json!({"type": "fs", "settings": {"location": location}})),
            false,
        )
        .map(|_| ())
    }

    /// Starts snapshot `snap` of `indices` without the global state, not waiting for it.
    pub fn create_snapshot(
        &self,
        repo: &str,
        snap: &str,
        indices: &str,
    ) -> Result<(), OpensearchError> {
        self.call(
            "PUT",
            &format!("/_snapshot/{repo}/{snap}"),
            Some(json!({"indices": indices, "ignore_unavailable": true, "include_global_state": false, "partial": true})),
            false,
        )
        .map(|_| ())
    }

    /// The snapshot, or `None` when OpenSearch does not know it.
    pub fn snapshot(
        &self,
        repo: &str,
        snap: &str,
    ) -> Result<Option<SnapshotInfo>, OpensearchError> {
        let path = format!("/_snapshot/{repo}/{snap}");
        let Some(v) = self.call("GET", &path, None, true)? else {
            return Ok(None);
        };
        parse_snapshot(&v).map(Some).ok_or(OpensearchError::Reply {
            url: self.url.clone(),
            path,
            detail: "no snapshot with a known state in the answer".into(),
        })
    }

    /// Polls the snapshot until it is no longer `IN_PROGRESS`.
    pub fn wait_snapshot(
        &self,
        repo: &str,
        snap: &str,
        timeout: Duration,
        cancel: &tokio_util::sync::CancellationToken,
    ) -> Result<SnapshotInfo, OpensearchError> {
        let start = Instant::now();
        let mut poll = Duration::from_millis(100);
        loop {
            let s = self
                .snapshot(repo, snap)?
                .ok_or_else(|| OpensearchError::Reply {
                    url: self.url.clone(),
                    path: format!("/_snapshot/{repo}/{snap}"),
                    detail: "the snapshot started is missing".into(),
                })?;
            if s.state != SnapshotState::InProgress {
                return Ok(s);
            }
            if start.elapsed() >= timeout {
                return Err(OpensearchError::SnapshotTimeout {
                    snapshot: snap.to_string(),
                    state: "IN_PROGRESS".into(),
                    waited: start.elapsed(),
                });
            }
            if cancel.is_cancelled() {
                return Err(OpensearchError::Cancelled);
            }
            std::thread::sleep(poll);
            poll = (poll * 2).min(Duration::from_secs(2));
        }
    }

    /// Unregisters repository `name` (its files stay): OpenSearch forgets what it knew of it.
    pub fn unregister_repository(&self, name: &str) -> Result<(), OpensearchError> {
        self.call("DELETE", &format!("/_snapshot/{name}"), None, true)
            .map(|_| ())
    }

    pub fn delete_snapshot(&self, repo: &str, snap: &str) -> Result<(), OpensearchError> {
        self.call("DELETE", &format!("/_snapshot/{repo}/{snap}"), None, true)
            .map(|_| ())
    }

    pub fn indices(&self) -> Result<Vec<IndexInfo>, OpensearchError> {
        let v = self
            .call(
                "GET",
                "/_cat/indices?format=json&expand_wildcards=all",
                None,
                false,
            )?
            .unwrap_or(Value::Null);
        Ok(parse_indices(&v))
    }

    pub fn close_index(&self, name: &str) -> Result<(), OpensearchError> {
        self.call("POST", &format!("/{name}/_close"), None, false)
            .map(|_| ())
    }

    pub fn delete_index(&self, name: &str) -> Result<(), OpensearchError> {
        self.call("DELETE", &format!("/{name}"), None, true)
            .map(|_| ())
    }

    /// Starts restoring `indices` of the snapshot (never the global state), not waiting.
    pub fn restore(
        &self,
        repo: &str,
        snap: &str,
        indices: &[String],
    ) -> Result<(), OpensearchError> {
        self.call(
            "POST",
            &format!("/_snapshot/{repo}/{snap}/_restore"),
            Some(json!({"indices": indices.join(","), "include_global_state": false, "include_aliases": true})),
            false,
        )
        .map(|_| ())
    }

    /// Waits until every index of `names` is open and green.
    pub fn wait_green(
        &self,
        names: &[String],
        timeout: Duration,
        cancel: &tokio_util::sync::CancellationToken,
    ) -> Result<(), OpensearchError> {
        let start = Instant::now();
        loop {
            let all = self.indices()?;
            let pending: Vec<String> = names
                .iter()
                .filter(|n| {
                    !all.iter()
                        .any(|i| &i.name == *n && i.open && i.health == "green")
                })
                .cloned()
                .collect();
            if pending.is_empty() {
                return Ok(());
            }
            if start.elapsed() >= timeout {
                return Err(OpensearchError::RestoreTimeout {
                    waited: start.elapsed(),
                    pending: pending.join(", "),
                });
            }
            if cancel.is_cancelled() {
                return Err(OpensearchError::Cancelled);
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

/// An error with its causes (the TLS or connection reason is in a source).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(&format!(": {c}"));
        cur = c.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_are_read_from_the_envelope() {
        let body = r#"{"error":{"root_cause":[{"type":"repository_exception","reason":"[r] location [/x] doesn't match any of the locations specified by path.repo"}],"type":"repository_exception","reason":"[r] failed to create repository","caused_by":{"type":"repository_exception","reason":"[r] location [/x] doesn't match any of the locations specified by path.repo"}},"status":500}"#;
        let (kind, reason) = parse_error(body);
        assert_eq!(kind, "repository_exception");
        assert_eq!(
            reason,
            "[r] failed to create repository: [r] location [/x] doesn't match any of the locations specified by path.repo"
        );
        assert_eq!(parse_error("Unauthorized").1, "Unauthorized");
        let (k, r) = parse_error(r#"{"error":"no handler found for uri","status":400}"#);
        assert_eq!((k.as_str(), r.as_str()), ("", "no handler found for uri"));
    }

    #[test]
    fn a_snapshot_is_read_with_its_state_and_failures() {
        let v: Value = serde_json::from_str(
            r#"{"snapshots":[{"snapshot":"hopsdr-20261207t100000z","uuid":"u1","version_id":136327827,"version":"2.11.1",
            "indices":["featurestore","logs"],"data_streams":[],"include_global_state":false,"state":"PARTIAL",
            "start_time_in_millis":1,"end_time_in_millis":2,"duration_in_millis":1,
            "failures":[{"index":"logs","index_uuid":"x","shard_id":0,"reason":"IndexShardSnapshotFailedException[boom]","node_id":"n1","status":"INTERNAL_SERVER_ERROR"}],
            "shards":{"total":2,"failed":1,"successful":1}}]}"#,
        )
        .unwrap();
        let s = parse_snapshot(&v).unwrap();
        assert_eq!(s.state, SnapshotState::Partial);
        assert_eq!(s.indices, ["featurestore", "logs"]);
        assert_eq!((s.shards_total, s.shards_failed), (2, 1));
        assert_eq!(
            s.failures,
            ["logs shard 0: IndexShardSnapshotFailedException[boom]"]
        );
        let mut v2 = v.clone();
        v2["snapshots"][0]["state"] = json!("IN_PROGRESS");
        assert_eq!(
            parse_snapshot(&v2).unwrap().state,
            SnapshotState::InProgress
        );
        v2["snapshots"][0]["state"] = json!("WEIRD");
        assert_eq!(parse_snapshot(&v2), None);
        assert_eq!(parse_snapshot(&json!({"snapshots": []})), None);
    }

    #[test]
    fn indices_are_read_from_cat() {
        let v = json!([
            {"health": "green", "status": "open", "index": "featurestore", "docs.count": "3"},
            {"health": "", "status": "close", "index": "old"}
        ]);
        let i = parse_indices(&v);
        assert_eq!(i.len(), 2);
        assert!(i[0].open && i[0].health == "green");
        assert!(!i[1].open);
    }
}
