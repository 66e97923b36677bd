//! `Probe`: the agent tries what the head gave it — the repository's bucket with the
//! credentials of the secrets frame (the repository's header read from it, as every later upload
//! and fetch needs the bucket), and the blob-name key (a fixed probe named with it, which the head
//! compares with its own name) — so that `hopsdrctl agents check` tells before a backup whether
//! each node reaches the repository with what it will be given.

use super::proto::{Msg, S3Store, StoreProbe};
use super::secrets::Secrets;
use crate::config::{S3Settings, VersioningPolicy};
use crate::repository::{S3Options, S3Storage, Storage, StorageError, HEADER_KEY};

/// What the agent names with the blob-name key for [`Msg::Probed`]'s `name_check`.
pub const NAME_PROBE: &[u8] = b"hopsdr agent name probe";

/// The reply to `Probe` number `req`.
pub fn probe(req: u32, store: Option<&S3Store>, secrets: &Secrets) -> Msg {
    Msg::Probed {
        req,
        store: store.map(|s| try_store(s, secrets)),
        name_check: secrets
            .keys
            .as_ref()
            .map(|k| k.blob_hash(NAME_PROBE).to_hex().to_string()),
    }
}

/// The store settings for the bucket `s`, with the credentials of `secrets` (none: the node's
/// own AWS environment or instance credentials).
pub fn s3_options(s: &S3Store, secrets: &Secrets) -> S3Options {
    let s3 = secrets.s3.as_ref();
    S3Options {
        settings: S3Settings {
            endpoint: s.endpoint.clone(),
            region: s.region.clone(),
            bucket: s.bucket.clone(),
            prefix: s.prefix.clone(),
            path_style: s.path_style,
            access_key_id: s3.map(|c| c.access_key_id.to_string()),
            secret_access_key: None,
            prune_access_key_id: None,
            prune_secret_access_key: None,
            versioning: VersioningPolicy::Warn,
            object_lock: s
                .object_lock
                .map(|(mode, days)| crate::config::ObjectLockSettings { mode, days }),
            ca_bundle: None,
            part_size: s.part_size,
            parallel_parts: s.parallel_parts,
            bandwidth_limit: None,
        },
        // (object_store keeps its own copies of these for the process's life: one job.)
        secret_access_key: s3.map(|c| c.secret_access_key.to_string()),
        session_token: s3.and_then(|c| c.session_token.as_ref().map(|t| t.to_string())),
        ca_bundle_pem: s.ca_bundle_pem.as_ref().map(|p| p.as_bytes().to_vec()),
        pacer: super::limits::pacer(),
    }
}

fn try_store(s: &S3Store, secrets: &Secrets) -> StoreProbe {
    let storage = match S3Storage::new(&s3_options(s, secrets)) {
        Ok(storage) => storage,
        Err(e) => {
            return StoreProbe {
                store: format!("s3://{}/{}", s.bucket, s.prefix),
                problem: Some(e.to_string()),
            }
        }
    };
    let problem = match storage.get(HEADER_KEY) {
        Ok(_) => None,
        Err(StorageError::NotFound { .. }) => Some(format!(
            "the bucket holds no hopsdr repository under prefix {:?} (no {HEADER_KEY})",
            s.prefix
        )),
        Err(e) => Some(e.to_string()),
    };
    StoreProbe {
        store: storage.describe(),
        problem,
    }
}
