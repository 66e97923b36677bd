//! The `opensearch` component: OpenSearch snapshotted through its REST API at the RonDB
//! backup's consistency point. Right after that point hopsdrd registers the `fs` snapshot
//! repository (idempotent) and starts snapshot `hopsdr-<backup id>` without waiting (it runs
//! while the HopsFS blocks are copied); then it waits for the snapshot's final state —
//! `SUCCESS`; `PARTIAL` makes the backup partial naming the failed shards; `FAILED` fails the
//! component — and stores the snapshot repository's files (OpenSearch's blobs are immutable
//! and named by content or uuid: an unchanged index adds nothing to the next backup) under
//! `opensearch/repository/`. The snapshot's start is recorded relative to the RonDB
//! consistency point: OpenSearch has no shared clock with RonDB, the two points are seconds
//! apart (ePipe's reindex rebuilds the search metadata from RonDB either way).

use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;

use crate::cluster::node::Node;
use crate::cluster::opensearch::{Opensearch, OpensearchError, SnapshotState};
use crate::config::{OpensearchSettings, SecretEnv, SshConfig};
use crate::ids::BackupId;
use crate::repository::facts::OpensearchFacts;
use crate::repository::layout::OPENSEARCH_REPOSITORY;
use crate::repository::BackupWriter;

use super::tarstream::{self, TarStreamError};

/// Why the OpenSearch component failed.
#[derive(Debug, thiserror::Error)]
pub enum OpensearchBackupError {
    #[error(transparent)]
    Api(#[from] Box<OpensearchError>),
    #[error("snapshot {snapshot} FAILED: {failures}")]
    Failed { snapshot: String, failures: String },
    #[error("snapshot {snapshot} is {state}: it cannot be restored")]
    Unusable { snapshot: String, state: String },
    #[error("storing the snapshot repository {location} from {node}: {detail}")]
    Store {
        location: String,
        node: String,
        detail: String,
    },
    #[error("storing the snapshot repository {location}: {source}")]
    Stream {
        location: String,
        source: Box<TarStreamError>,
    },
}

/// The snapshot's name for backup `id` (OpenSearch wants lowercase names).
pub fn snapshot_name(id: &BackupId) -> String {
    format!("hopsdr-{}", id.as_str().to_ascii_lowercase())
}

/// A snapshot started.
#[derive(Debug)]
pub struct Started {
    client: Opensearch,
    snapshot: String,
    at: DateTime<Utc>,
}

/// Registers the repository and starts the snapshot of backup `id`.
pub fn start(s: &OpensearchSettings, id: &BackupId) -> Result<Started, OpensearchBackupError> {
    let api = |e: OpensearchError| OpensearchBackupError::Api(Box::new(e));
    let client = Opensearch::new(s, &SecretEnv::from_process()).map_err(api)?;
    client
        .register_fs_repository(&s.repository, &s.location)
        .map_err(api)?;
    let snapshot = snapshot_name(id);
    let at = Utc::now();
    client
        .create_snapshot(&s.repository, &snapshot, &s.indices)
        .map_err(api)?;
    tracing::info!(step = "opensearch", snapshot = %snapshot, "OpenSearch snapshot started");
    Ok(Started {
        client,
        snapshot,
        at,
    })
}

/// Waits for the snapshot, then stores the repository's files; returns the facts and, for a
/// `PARTIAL` snapshot, why the backup is partial.
pub fn finish(
    s: &OpensearchSettings,
    started: Started,
    ssh: &SshConfig,
    consistent_at: DateTime<Utc>,
    writer: &mut BackupWriter,
    cancel: &CancellationToken,
) -> Result<(OpensearchFacts, Option<String>), OpensearchBackupError> {
    let info = started
        .client
        .wait_snapshot(&s.repository, &started.snapshot, s.snapshot_timeout, cancel)
        .map_err(|e| OpensearchBackupError::Api(Box::new(e)))?;
    let partial = match info.state {
        SnapshotState::Success => None,
        SnapshotState::Partial => Some(format!(
            "partial: OpenSearch snapshot {} is PARTIAL ({} of {} shards failed: {})",
            info.name,
            info.shards_failed,
            info.shards_total,
            info.failures.join("; ")
        )),
        SnapshotState::Failed => {
            return Err(OpensearchBackupError::Failed {
                snapshot: info.name,
                failures: info.failures.join("; "),
            })
        }
        other => {
            return Err(OpensearchBackupError::Unusable {
                snapshot: info.name,
                state: format!("{other:?}"),
            })
        }
    };
    let node = Node::at("opensearch".into(), &s.host, ssh);
    let mut result = None;
    let streamed = node.stream(
        &tarstream::tar_argv(&s.location),
        s.snapshot_timeout,
        cancel,
        |rd| {
            result = Some(tarstream::ingest(rd, OPENSEARCH_REPOSITORY, writer));
            match &result {
                Some(Err(e)) => Err(std::io::Error::other(e.to_string())),
                _ => Ok(()),
            }
        },
    );
    match (streamed, result) {
        (Ok((status, _)), Some(Ok(_))) if status.success() => {}
        (_, Some(Err(source))) => {
            return Err(OpensearchBackupError::Stream {
                location: s.location.clone(),
                source: Box::new(source),
            })
        }
        (Ok((status, stderr)), _) => {
            return Err(OpensearchBackupError::Store {
                location: s.location.clone(),
                node: host_name(&s.host),
                detail: format!("tar exited with {status}: {}", stderr.trim()),
            })
        }
        (Err(e), _) => {
            return Err(OpensearchBackupError::Store {
                location: s.location.clone(),
                node: host_name(&s.host),
                detail: e.to_string(),
            })
        }
    }
    let facts = OpensearchFacts {
        repository: s.repository.clone(),
        snapshot: info.name,
        uuid: info.uuid,
        state: format!("{:?}", info.state).to_ascii_uppercase(),
        indices: info.indices,
        shards_total: info.shards_total,
        shards_failed: info.shards_failed,
        started_after_consistency_seconds: (started.at - consistent_at).num_milliseconds().max(0)
            as f64
            / 1000.0,
    };
    tracing::info!(step = "opensearch", snapshot = %facts.snapshot, state = %facts.state,
        indices = facts.indices.len(), "OpenSearch snapshot stored");
    Ok((facts, partial))
}

fn host_name(h: &crate::config::NodeHost) -> String {
    match h {
        crate::config::NodeHost::Local => "the head node".into(),
        crate::config::NodeHost::Remote(h) => h.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_names_are_lowercase() {
        let id = BackupId::parse("20261207T100000Z").unwrap();
        assert_eq!(snapshot_name(&id), "hopsdr-20261207t100000z");
    }
}
