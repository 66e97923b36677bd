//! S3 and S3-compatible object storage (AWS, MinIO, Ceph RGW) as a repository store, on the
//! `object_store` crate: the same [`Storage`] contract as the local directory.
//!
//! - Objects up to the part size go up in one PUT; larger ones (big manifests) as multipart
//!   uploads, a bounded number of parts in flight; a failed multipart upload is aborted, so no
//!   half object is left (S3 never shows an incomplete multipart object under its key).
//! - Transient errors are retried with exponential backoff (`object_store`'s retry layer, bounded
//!   in count and time); what is left is an error that names the endpoint, the bucket, the
//!   operation and the key.
//! - An optional bandwidth limit paces uploads and downloads (a token bucket shared by every
//!   request of the store).
//! - [`Storage::put`] is durable when S3 acknowledges it. [`Storage::put_deferred`] (new blobs)
//!   starts the PUT and returns, up to [`IN_FLIGHT`] at a time; [`Storage::flush`] waits for all
//!   of them and reports the first failure. Unlike the local store, a blob whose PUT completed
//!   before a crash stays under its key: S3 PUTs are atomic and blobs content-addressed, so such
//!   a blob is whole, and unreferenced until a manifest names it (garbage collection removes it).
//! - Reads ahead: a restore or a verify announces the blobs it will read next
//!   ([`Storage::prefetch`]); up to [`AHEAD`] of them are fetched at once, within [`AHEAD_BYTES`]
//!   (see `readahead.rs`), while the previous ones are checked and written out.
//! - Which blobs exist is listed once (one LIST per 1000 blobs) and kept up to date by this
//!   process's puts and deletes, so deduplication costs no request per chunk. Only hopsdrd
//!   writes to its repository, and garbage collection runs in the job slot.
//!
//! The trait is blocking (the repository runs on blocking threads); the store keeps a small
//! tokio runtime of its own and blocks on it.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{FutureExt, TryStreamExt};
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path as ObjectPath;
use object_store::{
    BackoffConfig, ClientOptions, ObjectStore, ObjectStoreExt, PutPayload, RetryConfig,
    WriteMultipart,
};

pub mod control;

use super::readahead::{Limits, ReadAhead};
use super::storage::{validate_key, ObjectInfo, Storage, StorageError};
use crate::pacer::Pacer;
pub use control::{Control, LockMode, ObjectVersion, Versioning};

/// How to reach a bucket.
#[derive(Debug, Clone)]
pub struct S3Options {
    /// The `[repository]` settings (one type from the config to the store).
    pub settings: crate::config::S3Settings,
    /// The secret access key, read from its file or systemd credential.
    pub secret_access_key: Option<String>,
    /// A temporary credential's session token (an agent's, handed over by the head).
    pub session_token: Option<String>,
    /// The certificates (PEM) of `settings.ca_bundle`, trusted for TLS besides the system's.
    pub ca_bundle_pem: Option<Vec<u8>>,
    /// Paces every transfer (an agent's, by its node's timetable); `None`:
    /// `settings.bandwidth_limit`, if any.
    pub pacer: Option<Arc<Pacer>>,
}

impl S3Options {
    /// The options of `[repository]` settings `s`, its secret and CA bundle read now.
    pub fn from_settings(s: &crate::config::S3Settings) -> Result<S3Options, StorageError> {
        let fail = |reason: String| StorageError::Remote {
            store: format!("s3://{}/{}", s.bucket, s.prefix),
            op: "configure",
            key: String::new(),
            reason,
        };
        let secret_access_key = match &s.secret_access_key {
            Some(secret) => Some(
                secret
                    .read(&crate::config::SecretEnv::from_process())
                    .map_err(|e| fail(format!("secret_access_key: {e}")))?,
            ),
            None => None,
        };
        let ca_bundle_pem = match &s.ca_bundle {
            Some(p) => Some(
                std::fs::read(p).map_err(|e| fail(format!("ca_bundle {}: {e}", p.display())))?,
            ),
            None => None,
        };
        Ok(S3Options {
            settings: s.clone(),
            secret_access_key,
            session_token: None,
            ca_bundle_pem,
            pacer: None,
        })
    }
}

/// A bucket (and prefix) holding a repository.
pub struct S3Storage {
    store: AmazonS3,
    /// Its own runtime (`None` only while it is dropped).
    rt: Option<tokio::runtime::Runtime>,
    prefix: String,
    describe: String,
    part_size: usize,
    parallel_parts: usize,
    pacer: Option<Arc<Pacer>>,
    /// The keys under `blobs/` known to exist (`None` until first listed).
    blobs: Arc<Mutex<Option<std::collections::HashSet<String>>>>,
    /// Deferred PUTs not yet flushed.
    in_flight: Mutex<Vec<tokio::task::JoinHandle<Result<(), StorageError>>>>,
    permits: Arc<tokio::sync::Semaphore>,
    /// Blobs announced, and being fetched (or fetched) ahead of their reads.
    ahead: Mutex<ReadAhead<Fetch>>,
    /// Bucket and object controls `object_store` lacks (versioning, retention, versions).
    control: Control,
    /// Object Lock on every object written: mode and days.
    lock: Option<(LockMode, u32)>,
}

/// A fetch ahead, shared by the reads announced for it: the blob, or `None` when it failed
/// (the reader then reads it itself and gets the error).
type Fetch = futures::future::Shared<futures::future::BoxFuture<'static, Option<bytes::Bytes>>>;

/// Objects fetched ahead of their reads at most.
pub const AHEAD: usize = 64;

/// Bytes the objects fetched ahead may hold; a fetch counts as a whole blob (4 MiB of
/// incompressible data and zstd's framing) until its response tells its size.
pub const AHEAD_BYTES: u64 = 32 << 20;
const ASSUMED_BLOB: u64 = (4 << 20) + (64 << 10);

/// Deferred PUTs in flight at most.
pub const IN_FLIGHT: usize = 16;

const BLOBS: &str = "blobs/";

impl std::fmt::Debug for S3Storage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe)
    }
}

impl Drop for S3Storage {
    /// The runtime is let go without waiting for its threads: the last handle may be dropped
    /// inside another runtime's task (the daemon's, on its way out), where blocking would panic.
    /// Whatever it still ran is abandoned, as dropping it would have; deferred writes are only
    /// durable after a flush anyway.
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

impl S3Storage {
    /// The store's runtime.
    fn rt(&self) -> &tokio::runtime::Runtime {
        self.rt
            .as_ref()
            .expect("the runtime lives until the store is dropped")
    }

    /// Connects (lazily: the first request tells whether the bucket and credentials work).
    pub fn new(o: &S3Options) -> Result<S3Storage, StorageError> {
        let describe = format!(
            "s3://{}/{}{}",
            o.settings.bucket,
            o.settings.prefix,
            o.settings
                .endpoint
                .as_deref()
                .map(|e| format!(" at {e}"))
                .unwrap_or_default()
        );
        let err = |reason: String| StorageError::Remote {
            store: describe.clone(),
            op: "configure",
            key: String::new(),
            reason,
        };
        let mut options = ClientOptions::new()
            .with_timeout(Duration::from_secs(120))
            .with_connect_timeout(Duration::from_secs(10));
        if let Some(pem) = &o.ca_bundle_pem {
            let certs = object_store::Certificate::from_pem_bundle(pem)
                .map_err(|e| err(format!("the CA bundle: {e}")))?;
            for c in certs {
                options = options.with_root_certificate(c);
            }
        }
        let plain_http = o
            .settings
            .endpoint
            .as_deref()
            .is_some_and(|e| e.starts_with("http://"));
        let http = object_store::client::HttpConnector::connect(
            &object_store::client::ReqwestConnector::default(),
            &options.clone().with_allow_http(plain_http),
        )
        .map_err(|e| err(e.to_string()))?;
        let mut b = AmazonS3Builder::from_env()
            .with_bucket_name(&o.settings.bucket)
            .with_region(&o.settings.region)
            .with_virtual_hosted_style_request(!o.settings.path_style)
            .with_client_options(options)
            .with_retry(RetryConfig {
                backoff: BackoffConfig::default(),
                max_retries: 5,
                retry_timeout: Duration::from_secs(120),
            });
        if let Some(e) = &o.settings.endpoint {
            b = b.with_endpoint(e).with_allow_http(e.starts_with("http://"));
        }
        if let (Some(id), Some(secret)) = (&o.settings.access_key_id, &o.secret_access_key) {
            b = b.with_access_key_id(id).with_secret_access_key(secret);
            if let Some(token) = &o.session_token {
                b = b.with_token(token);
            }
        }
        let store = b.build().map_err(|e| err(e.to_string()))?;
        let s = &o.settings;
        let base = match (&s.endpoint, s.path_style) {
            (Some(e), true) => format!("{}/{}", e.trim_end_matches('/'), s.bucket),
            (Some(e), false) => match e.split_once("://") {
                Some((scheme, host)) => {
                    format!("{scheme}://{}.{}", s.bucket, host.trim_end_matches('/'))
                }
                None => format!("{}/{}", e.trim_end_matches('/'), s.bucket),
            },
            (None, true) => format!("https://s3.{}.amazonaws.com/{}", s.region, s.bucket),
            (None, false) => format!("https://{}.s3.{}.amazonaws.com", s.bucket, s.region),
        };
        let prefix = s.prefix.trim_matches('/');
        let control = Control {
            client: http,
            credentials: store.credentials().clone(),
            region: s.region.clone(),
            bucket: s.bucket.clone(),
            base,
            prefix: if prefix.is_empty() {
                String::new()
            } else {
                format!("{prefix}/")
            },
        };
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("hopsdr-s3")
            .enable_all()
            .build()
            .map_err(|e| err(format!("starting its runtime: {e}")))?;
        Ok(S3Storage {
            store,
            rt: Some(rt),
            prefix: o.settings.prefix.trim_matches('/').to_string(),
            describe,
            part_size: o.settings.part_size.max(5 << 20),
            parallel_parts: o.settings.parallel_parts.max(1),
            pacer: o.pacer.clone().or_else(|| {
                o.settings
                    .bandwidth_limit
                    .map(|r| Arc::new(Pacer::fixed(r)))
            }),
            blobs: Arc::new(Mutex::new(None)),
            in_flight: Mutex::new(Vec::new()),
            permits: Arc::new(tokio::sync::Semaphore::new(IN_FLIGHT)),
            ahead: Mutex::new(ReadAhead::new(Limits {
                fetches: AHEAD,
                bytes: AHEAD_BYTES,
                assumed: ASSUMED_BLOB,
                queued: 4096,
            })),
            control,
            lock: o.settings.object_lock.map(|l| (l.mode, l.days)),
        })
    }

    /// The bucket and object controls (versioning, retention, versions).
    pub fn control(&self) -> &Control {
        &self.control
    }

    /// Runs `f` (one of [`Control`]'s requests) on the store's runtime, naming the store in
    /// its error.
    pub fn run_control<T>(
        &self,
        op: &'static str,
        f: impl std::future::Future<Output = Result<T, String>>,
    ) -> Result<T, StorageError> {
        self.rt()
            .block_on(f)
            .map_err(|reason| StorageError::Remote {
                store: self.describe.clone(),
                op,
                key: String::new(),
                reason,
            })
    }

    fn path(&self, key: &str) -> Result<ObjectPath, StorageError> {
        validate_key(key).map_err(|reason| StorageError::InvalidKey {
            key: key.to_string(),
            reason,
        })?;
        Ok(ObjectPath::from(self.full(key)))
    }

    fn full(&self, key: &str) -> String {
        if self.prefix.is_empty() {
            key.to_string()
        } else {
            format!("{}/{key}", self.prefix)
        }
    }

    fn remote(&self, op: &'static str, key: &str, e: object_store::Error) -> StorageError {
        match e {
            object_store::Error::NotFound { .. } => StorageError::NotFound {
                store: self.describe.clone(),
                key: key.to_string(),
            },
            e => StorageError::Remote {
                store: self.describe.clone(),
                op,
                key: key.to_string(),
                reason: e.to_string(),
            },
        }
    }

    fn pace(&self, bytes: usize) {
        if let Some(p) = &self.pacer {
            p.pace(bytes);
        }
    }

    /// Notes that `key` exists (or no longer does) in the blob cache, once it is loaded.
    fn note(&self, key: &str, exists: bool) {
        if !key.starts_with(BLOBS) {
            return;
        }
        let mut g = self.blobs.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(set) = g.as_mut() {
            if exists {
                set.insert(key.to_string());
            } else {
                set.remove(key);
            }
        }
    }

    /// Whether blob `key` exists, from the cache (listing the blobs the first time).
    fn blob_exists(&self, key: &str) -> Result<bool, StorageError> {
        {
            let g = self.blobs.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(set) = g.as_ref() {
                return Ok(set.contains(key));
            }
        }
        let listed: std::collections::HashSet<String> =
            self.list(BLOBS)?.into_iter().map(|o| o.key).collect();
        let mut g = self.blobs.lock().unwrap_or_else(|p| p.into_inner());
        let set = g.get_or_insert(listed);
        Ok(set.contains(key))
    }

    /// Starts the announced fetches the read-ahead window has room for.
    fn pump(&self, ahead: &mut ReadAhead<Fetch>) {
        ahead.pump(|key, cost| {
            let path = self.path(key).ok()?;
            let (tx, rx) = tokio::sync::oneshot::channel();
            let store = self.store.clone();
            self.rt().spawn(async move {
                let r = async {
                    let got = store.get(&path).await?;
                    // Its real share of the window, from the response's headers.
                    cost.store(got.meta.size, std::sync::atomic::Ordering::Relaxed);
                    got.bytes().await
                }
                .await;
                let _ = tx.send(r);
            });
            Some(
                async move { rx.await.ok().and_then(|r| r.ok()) }
                    .boxed()
                    .shared(),
            )
        });
    }

    /// Runs `fut` on the store's runtime and waits for it. From a thread that drives another
    /// runtime's tasks (a request handler), the future is spawned and awaited through a
    /// channel: blocking on a runtime there is not allowed.
    fn run<T: Send + 'static>(
        &self,
        fut: impl std::future::Future<Output = T> + Send + 'static,
    ) -> T {
        if tokio::runtime::Handle::try_current().is_err() {
            return self.rt().block_on(fut);
        }
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        self.rt().spawn(async move {
            let _ = tx.send(fut.await);
        });
        rx.recv().expect("the store's runtime dropped a request")
    }
}

async fn put_multipart(
    store: AmazonS3,
    path: ObjectPath,
    data: bytes::Bytes,
    part_size: usize,
    parallel_parts: usize,
    pacer: Option<Arc<Pacer>>,
) -> object_store::Result<()> {
    let upload = store.put_multipart(&path).await?;
    let mut w = WriteMultipart::new_with_chunk_size(upload, part_size);
    let mut offset = 0;
    while offset < data.len() {
        let end = (offset + part_size).min(data.len());
        if let Err(e) = w.wait_for_capacity(parallel_parts).await {
            // No half object: the parts uploaded so far are discarded.
            let _ = w.abort().await;
            return Err(e);
        }
        if let Some(p) = &pacer {
            tokio::time::sleep(p.reserve(end - offset)).await;
        }
        w.put(data.slice(offset..end));
        offset = end;
    }
    w.finish().await.map(|_| ())
}

/// A bucket as it was at a time: every read served by the object versions that were current
/// then (a backup an attacker deleted or overwrote since, while its versions are kept, reads
/// as it was). Read-only.
#[derive(Debug)]
pub struct VersionedView {
    s3: S3Storage,
    at: chrono::DateTime<chrono::Utc>,
    current: std::collections::BTreeMap<String, ObjectVersion>,
}

impl VersionedView {
    /// Lists the bucket's versions under the repository's prefix and keeps those current at
    /// `at`.
    pub fn new(
        s3: S3Storage,
        at: chrono::DateTime<chrono::Utc>,
    ) -> Result<VersionedView, StorageError> {
        let versions = s3.run_control("list versions", s3.control.versions(""))?;
        let current = control::current_at(&versions, at);
        Ok(VersionedView { s3, at, current })
    }

    /// The version of `key` current at the view's time, whole or `(offset, len)` of it.
    fn fetch(&self, key: &str, range: Option<(u64, u64)>) -> Result<Vec<u8>, StorageError> {
        let Some(v) = self.current.get(key) else {
            return Err(StorageError::NotFound {
                store: self.describe(),
                key: key.to_string(),
            });
        };
        let range = match range {
            None => None,
            Some((offset, len)) => {
                let end = offset.saturating_add(len).min(v.size);
                if end <= offset {
                    return Ok(Vec::new());
                }
                Some((offset..end).into())
            }
        };
        let path = self.s3.path(key)?;
        let store = self.s3.store.clone();
        let opts = object_store::GetOptions {
            version: Some(v.version_id.clone()),
            range,
            ..Default::default()
        };
        let r = self
            .s3
            .run(async move { store.get_opts(&path, opts).await?.bytes().await });
        r.map(|b| b.to_vec())
            .map_err(|e| self.s3.remote("get", key, e))
    }

    fn read_only(&self, op: &'static str, key: &str) -> StorageError {
        StorageError::Remote {
            store: self.describe(),
            op,
            key: key.to_string(),
            reason: "the repository as of a past time is read-only".into(),
        }
    }
}

impl Storage for VersionedView {
    fn put(&self, key: &str, _data: &[u8]) -> Result<(), StorageError> {
        Err(self.read_only("put", key))
    }

    fn get(&self, key: &str) -> Result<Vec<u8>, StorageError> {
        self.fetch(key, None)
    }

    fn get_range(&self, key: &str, offset: u64, len: u64) -> Result<Vec<u8>, StorageError> {
        self.fetch(key, Some((offset, len)))
    }

    fn exists(&self, key: &str) -> Result<bool, StorageError> {
        Ok(self.current.contains_key(key))
    }

    fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, StorageError> {
        Ok(self
            .current
            .range(prefix.to_string()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, v)| ObjectInfo {
                key: k.clone(),
                size: v.size,
                last_modified: Some(v.last_modified),
            })
            .collect())
    }

    fn delete(&self, key: &str) -> Result<(), StorageError> {
        Err(self.read_only("delete", key))
    }

    fn describe(&self) -> String {
        format!(
            "{} as of {}",
            self.s3.describe(),
            self.at.format("%Y-%m-%d %H:%M:%SZ")
        )
    }

    fn available_bytes(&self) -> Result<Option<u64>, StorageError> {
        Ok(None)
    }
}

impl Storage for S3Storage {
    fn put(&self, key: &str, data: &[u8]) -> Result<(), StorageError> {
        let path = self.path(key)?;
        if let Some((mode, days)) = self.lock {
            // One PUT with its retention (S3 takes up to 5 GiB so; a larger object would need
            // a locked multipart upload, which no repository object comes near).
            self.pace(data.len());
            let until = chrono::Utc::now() + chrono::Duration::days(days as i64);
            let c = self.control.clone();
            let (k, data) = (key.to_string(), data.to_vec());
            self.run_control(
                "put",
                async move { c.put_locked(&k, data, mode, until).await },
            )?;
            self.note(key, true);
            return Ok(());
        }
        let store = self.store.clone();
        let data = bytes::Bytes::copy_from_slice(data);
        let r = if data.len() > self.part_size {
            // Paced part by part.
            let (part, parallel) = (self.part_size, self.parallel_parts);
            let pacer = self.pacer.clone();
            self.run(put_multipart(store, path, data, part, parallel, pacer))
        } else {
            self.pace(data.len());
            self.run(async move { store.put(&path, PutPayload::from(data)).await.map(|_| ()) })
        };
        r.map_err(|e| self.remote("put", key, e))?;
        self.note(key, true);
        Ok(())
    }

    fn put_deferred(&self, key: &str, data: &[u8]) -> Result<(), StorageError> {
        if data.len() > self.part_size {
            return self.put(key, data);
        }
        let path = self.path(key)?;
        self.pace(data.len());
        let permits = self.permits.clone();
        let permit = self.run(async move { permits.acquire_owned().await });
        let Ok(permit) = permit else {
            return self.put(key, data);
        };
        let store = self.store.clone();
        let data = bytes::Bytes::copy_from_slice(data);
        let (describe, k) = (self.describe.clone(), key.to_string());
        let blobs = self.blobs.clone();
        let (control, lock) = (self.control.clone(), self.lock);
        let task = self.rt().spawn(async move {
            let _permit = permit;
            let r = match lock {
                // With its retention (Object Lock).
                Some((mode, days)) => {
                    let until = chrono::Utc::now() + chrono::Duration::days(days as i64);
                    control
                        .put_locked(&k, data.to_vec(), mode, until)
                        .await
                        .map_err(|reason| reason.to_string())
                }
                None => store
                    .put(&path, PutPayload::from(data))
                    .await
                    .map(|_| ())
                    .map_err(|e| e.to_string()),
            };
            r.map_err(|e| {
                // Not there after all: the next check asks again.
                if let Some(set) = blobs.lock().unwrap_or_else(|p| p.into_inner()).as_mut() {
                    set.remove(&k);
                }
                StorageError::Remote {
                    store: describe,
                    op: "put",
                    key: k,
                    reason: e.to_string(),
                }
            })
        });
        self.in_flight
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(task);
        self.note(key, true);
        Ok(())
    }

    fn prefetch(&self, keys: &[String]) {
        let mut ahead = self.ahead.lock().unwrap_or_else(|p| p.into_inner());
        ahead.announce(keys);
        self.pump(&mut ahead);
    }

    fn settle(&self) {
        // Reads fetched ahead for a restore that stopped early are not kept for ever.
        self.ahead.lock().unwrap_or_else(|p| p.into_inner()).clear();
        let tasks = std::mem::take(&mut *self.in_flight.lock().unwrap_or_else(|p| p.into_inner()));
        if tasks.is_empty() {
            return;
        }
        // A failed one has already taken its key out of the blob cache.
        let failed = self.run(async move {
            let mut failed = 0;
            for t in tasks {
                if !matches!(t.await, Ok(Ok(()))) {
                    failed += 1;
                }
            }
            failed
        });
        if failed > 0 {
            tracing::info!(
                store = %self.describe,
                "{failed} upload(s) of an abandoned backup failed; their blobs will be uploaded again when needed"
            );
        }
    }

    fn flush(&self) -> Result<(), StorageError> {
        let tasks = std::mem::take(&mut *self.in_flight.lock().unwrap_or_else(|p| p.into_inner()));
        let results = self.run(async move {
            let mut out = Vec::new();
            for t in tasks {
                out.push(t.await);
            }
            out
        });
        let mut first = None;
        for r in results {
            let r = r.unwrap_or_else(|e| {
                Err(StorageError::Remote {
                    store: self.describe.clone(),
                    op: "put",
                    key: String::new(),
                    reason: format!("the upload task failed: {e}"),
                })
            });
            if let Err(e) = r {
                first.get_or_insert(e);
            }
        }
        match first {
            None => Ok(()),
            Some(e) => {
                // What failed may be in the cache as existing: list again next time.
                *self.blobs.lock().unwrap_or_else(|p| p.into_inner()) = None;
                Err(e)
            }
        }
    }

    fn get(&self, key: &str) -> Result<Vec<u8>, StorageError> {
        let path = self.path(key)?;
        let fetched = {
            let mut ahead = self.ahead.lock().unwrap_or_else(|p| p.into_inner());
            let fetched = ahead.take(key);
            self.pump(&mut ahead);
            let (reads, hits, started, queued) = ahead.stats();
            if reads % 4096 == 0 {
                tracing::debug!(
                    store = %self.describe,
                    "read-ahead: {hits} of {reads} reads fetched ahead; {started} fetches ahead, \
                     {} KiB, {queued} keys queued",
                    ahead.reserved() >> 10
                );
            }
            fetched
        };
        if let Some(rx) = fetched {
            if let Some(bytes) = self.run(rx) {
                self.pace(bytes.len());
                return Ok(bytes.to_vec());
            }
            // A failed fetch ahead: read it now, with the usual error.
        }
        let store = self.store.clone();
        let bytes = self
            .run(async move { store.get(&path).await?.bytes().await })
            .map_err(|e| self.remote("get", key, e))?;
        self.pace(bytes.len());
        Ok(bytes.to_vec())
    }

    fn get_range(&self, key: &str, offset: u64, len: u64) -> Result<Vec<u8>, StorageError> {
        let path = self.path(key)?;
        let store = self.store.clone();
        let r = self.run(async move {
            let meta = store.head(&path).await?;
            let end = offset.saturating_add(len).min(meta.size);
            if end <= offset {
                return Ok(bytes::Bytes::new());
            }
            store.get_range(&path, offset..end).await
        });
        let bytes = r.map_err(|e| self.remote("get", key, e))?;
        self.pace(bytes.len());
        Ok(bytes.to_vec())
    }

    fn exists(&self, key: &str) -> Result<bool, StorageError> {
        let path = self.path(key)?;
        if key.starts_with(BLOBS) {
            return self.blob_exists(key);
        }
        let store = self.store.clone();
        match self.run(async move { store.head(&path).await }) {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(self.remote("head", key, e)),
        }
    }

    fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, StorageError> {
        // object_store lists by path segments: list the directory that holds the prefix and
        // keep the keys that start with it.
        let dir = prefix.rsplit_once('/').map(|(d, _)| d).unwrap_or("");
        let full_dir = if dir.is_empty() {
            self.prefix.clone()
        } else {
            self.full(dir)
        };
        let base = if self.prefix.is_empty() {
            String::new()
        } else {
            format!("{}/", self.prefix)
        };
        let store = self.store.clone();
        let listing: Vec<object_store::ObjectMeta> = self
            .run(async move {
                let p = (!full_dir.is_empty()).then(|| ObjectPath::from(full_dir.as_str()));
                store.list(p.as_ref()).try_collect().await
            })
            .map_err(|e| self.remote("list", prefix, e))?;
        let mut out: Vec<ObjectInfo> = listing
            .into_iter()
            .filter_map(|m| {
                let key = m.location.as_ref().strip_prefix(base.as_str())?.to_string();
                key.starts_with(prefix).then_some(ObjectInfo {
                    key,
                    size: m.size,
                    last_modified: Some(m.last_modified),
                })
            })
            .collect();
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    fn delete(&self, key: &str) -> Result<(), StorageError> {
        let path = self.path(key)?;
        let store = self.store.clone();
        match self.run(async move { store.delete(&path).await }) {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => {
                self.note(key, false);
                Ok(())
            }
            Err(e) => Err(self.remote("delete", key, e)),
        }
    }

    fn describe(&self) -> String {
        self.describe.clone()
    }

    fn lock_policy(&self) -> Option<(LockMode, u32)> {
        self.lock
    }

    fn locked_until(
        &self,
        key: &str,
    ) -> Result<Option<chrono::DateTime<chrono::Utc>>, StorageError> {
        Ok(self
            .run_control("read retention", self.control.retention(key))?
            .map(|(_, until)| until))
    }

    fn lock_until(
        &self,
        key: &str,
        until: chrono::DateTime<chrono::Utc>,
    ) -> Result<(), StorageError> {
        let Some((mode, _)) = self.lock else {
            return Ok(());
        };
        self.run_control(
            "extend retention",
            self.control.set_retention(key, mode, until),
        )
    }

    fn invalidate(&self) {
        *self.blobs.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }

    fn can_delete(&self) -> Result<bool, StorageError> {
        // A DELETE of a key nobody writes: 204 when allowed (on a versioned bucket it leaves a
        // delete marker on that key only), 403 when the identity may not delete.
        self.run_control(
            "check delete rights",
            self.control.may_delete(control::DELETE_CHECK_KEY),
        )
    }

    fn available_bytes(&self) -> Result<Option<u64>, StorageError> {
        Ok(None)
    }
}
