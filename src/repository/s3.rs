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
//! - [`Storage::put`] is durable when S3 acknowledges it; [`Storage::put_deferred`] is a plain
//!   put (S3 has no cheaper durability step), so [`Storage::flush`] has nothing to do.
//!
//! The trait is blocking (the repository runs on blocking threads); the store keeps a small
//! tokio runtime of its own and blocks on it.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::TryStreamExt;
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path as ObjectPath;
use object_store::{
    BackoffConfig, ClientOptions, ObjectStore, ObjectStoreExt, PutPayload, RetryConfig,
    WriteMultipart,
};

use super::storage::{validate_key, ObjectInfo, Storage, StorageError};

/// How to reach a bucket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Options {
    /// `https://s3.example.org:9000`; `None` for AWS itself (from the region).
    pub endpoint: Option<String>,
    pub region: String,
    pub bucket: String,
    /// Keys go under `<prefix>/` (empty: the bucket's root).
    pub prefix: String,
    /// `https://endpoint/bucket/key` instead of `https://bucket.endpoint/key` (MinIO, Ceph).
    pub path_style: bool,
    /// Static credentials; `None` takes the usual AWS sources (environment, instance metadata).
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<String>,
    /// Extra CA certificates (PEM) trusted for TLS.
    pub ca_bundle_pem: Option<Vec<u8>>,
    /// Multipart part size, and the size above which an object goes up in parts.
    pub part_size: usize,
    /// Parts in flight per multipart upload.
    pub parallel_parts: usize,
    /// Bytes per second, uploads and downloads together; `None`: unlimited.
    pub bandwidth_limit: Option<u64>,
}

/// A bucket (and prefix) holding a repository.
pub struct S3Storage {
    store: AmazonS3,
    rt: tokio::runtime::Runtime,
    prefix: String,
    describe: String,
    part_size: usize,
    parallel_parts: usize,
    pacer: Option<Arc<Pacer>>,
}

impl std::fmt::Debug for S3Storage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe)
    }
}

/// Paces transfers to a byte rate: each transfer reserves its bytes and sleeps until the rate
/// allows them.
#[derive(Debug)]
struct Pacer {
    rate: u64,
    /// When the bytes reserved so far will have been sent at `rate`.
    next_free: Mutex<Instant>,
}

impl Pacer {
    fn reserve(&self, bytes: usize) -> Duration {
        let cost = Duration::from_secs_f64(bytes as f64 / self.rate as f64);
        let mut next = self.next_free.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        let start = (*next).max(now);
        *next = start + cost;
        start - now
    }
}

impl S3Storage {
    /// Connects (lazily: the first request tells whether the bucket and credentials work).
    pub fn new(o: &S3Options) -> Result<S3Storage, StorageError> {
        let describe = format!(
            "s3://{}/{}{}",
            o.bucket,
            o.prefix,
            o.endpoint
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
        let mut b = AmazonS3Builder::from_env()
            .with_bucket_name(&o.bucket)
            .with_region(&o.region)
            .with_virtual_hosted_style_request(!o.path_style)
            .with_client_options(options)
            .with_retry(RetryConfig {
                backoff: BackoffConfig::default(),
                max_retries: 5,
                retry_timeout: Duration::from_secs(120),
            });
        if let Some(e) = &o.endpoint {
            b = b.with_endpoint(e).with_allow_http(e.starts_with("http://"));
        }
        if let (Some(id), Some(secret)) = (&o.access_key_id, &o.secret_access_key) {
            b = b.with_access_key_id(id).with_secret_access_key(secret);
        }
        let store = b.build().map_err(|e| err(e.to_string()))?;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("hopsdr-s3")
            .enable_all()
            .build()
            .map_err(|e| err(format!("starting its runtime: {e}")))?;
        Ok(S3Storage {
            store,
            rt,
            prefix: o.prefix.trim_matches('/').to_string(),
            describe,
            part_size: o.part_size.max(5 << 20),
            parallel_parts: o.parallel_parts.max(1),
            pacer: o.bandwidth_limit.map(|rate| {
                Arc::new(Pacer {
                    rate: rate.max(1),
                    next_free: Mutex::new(Instant::now()),
                })
            }),
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
            let wait = p.reserve(bytes);
            if !wait.is_zero() {
                std::thread::sleep(wait);
            }
        }
    }

    /// Runs `fut` on the store's runtime and waits for it. From a thread that drives another
    /// runtime's tasks (a request handler), the future is spawned and awaited through a
    /// channel: blocking on a runtime there is not allowed.
    fn run<T: Send + 'static>(
        &self,
        fut: impl std::future::Future<Output = T> + Send + 'static,
    ) -> T {
        if tokio::runtime::Handle::try_current().is_err() {
            return self.rt.block_on(fut);
        }
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        self.rt.spawn(async move {
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

impl Storage for S3Storage {
    fn put(&self, key: &str, data: &[u8]) -> Result<(), StorageError> {
        let path = self.path(key)?;
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
        r.map_err(|e| self.remote("put", key, e))
    }

    fn get(&self, key: &str) -> Result<Vec<u8>, StorageError> {
        let path = self.path(key)?;
        let store = self.store.clone();
        let bytes = self
            .run(async move { store.get(&path).await?.bytes().await })
            .map_err(|e| self.remote("get", key, e))?;
        self.pace(bytes.len());
        Ok(bytes.to_vec())
    }

    fn exists(&self, key: &str) -> Result<bool, StorageError> {
        let path = self.path(key)?;
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
                key.starts_with(prefix)
                    .then_some(ObjectInfo { key, size: m.size })
            })
            .collect();
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    fn delete(&self, key: &str) -> Result<(), StorageError> {
        let path = self.path(key)?;
        let store = self.store.clone();
        match self.run(async move { store.delete(&path).await }) {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.remote("delete", key, e)),
        }
    }

    fn describe(&self) -> String {
        self.describe.clone()
    }

    fn available_bytes(&self) -> Result<Option<u64>, StorageError> {
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pacer_spreads_transfers_at_its_rate() {
        let p = Pacer {
            rate: 1000,
            next_free: Mutex::new(Instant::now()),
        };
        assert!(
            p.reserve(500) < Duration::from_millis(5),
            "the first transfer goes at once"
        );
        let w = p.reserve(1000);
        assert!(
            w > Duration::from_millis(400) && w <= Duration::from_millis(500),
            "{w:?}"
        );
        let w = p.reserve(1);
        assert!(w > Duration::from_millis(1400), "{w:?}");
    }
}
