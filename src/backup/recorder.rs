//! What an agent's upload needs of the backup's writer ([`Recorder`]): claims, adoption of the
//! packs it stored, records of what it reported. The writer is one (`&mut`), the agents are
//! many: [`parallel`] runs one task per node on threads of their own and keeps the writer on
//! the caller's thread, which carries out each task's calls in turn ([`Remote`]). The bytes
//! (a pack an agent sends to a local repository) are received on the task's thread; only
//! metadata operations reach the writer's.

use std::path::PathBuf;

use tokio_util::sync::CancellationToken;

use crate::ids::BlobId;
use crate::repository::pack::Trailer;
use crate::repository::{BackupWriter, FileEntry, FileMeta, RepoError};

/// The writer's operations an upload through an agent uses (see [`BackupWriter`]'s methods of
/// the same names).
pub trait Recorder {
    fn packing(&mut self) -> Result<(usize, i32), RepoError>;
    fn claim_missing(&mut self, ids: Vec<[u8; 32]>) -> Result<Vec<bool>, RepoError>;
    fn adopt_pack(&mut self, key: String, size: u64, trailer: Trailer) -> Result<(), RepoError>;
    fn adopt_sent_pack(
        &mut self,
        key: String,
        path: PathBuf,
        size: u64,
        trailer: Trailer,
    ) -> Result<(), RepoError>;
    fn pack_spool(&mut self) -> Result<(PathBuf, std::fs::File), RepoError>;
    fn add_dir(&mut self, path: String, meta: FileMeta) -> Result<(), RepoError>;
    fn add_stored_file(
        &mut self,
        path: String,
        size: u64,
        units: Vec<BlobId>,
        meta: FileMeta,
    ) -> Result<FileEntry, RepoError>;
    fn add_stored_replica(&mut self, r: StoredReplica) -> Result<(), RepoError>;
    fn add_symlink(
        &mut self,
        path: String,
        target: String,
        meta: FileMeta,
    ) -> Result<(), RepoError>;
}

/// A replica an agent stored as one unit (see [`BackupWriter::add_stored_replica`]).
#[derive(Debug, Clone)]
pub struct StoredReplica {
    pub dir: String,
    pub id: u64,
    pub genstamp: u64,
    pub len: u64,
    pub meta_len: u64,
    pub block_meta: FileMeta,
    pub meta_meta: FileMeta,
    pub unit: BlobId,
}

impl Recorder for BackupWriter {
    fn packing(&mut self) -> Result<(usize, i32), RepoError> {
        Ok(BackupWriter::packing(self))
    }
    fn claim_missing(&mut self, ids: Vec<[u8; 32]>) -> Result<Vec<bool>, RepoError> {
        BackupWriter::claim_missing(self, &ids)
    }
    fn adopt_pack(&mut self, key: String, size: u64, trailer: Trailer) -> Result<(), RepoError> {
        BackupWriter::adopt_pack(self, &key, size, &trailer)
    }
    fn adopt_sent_pack(
        &mut self,
        key: String,
        path: PathBuf,
        size: u64,
        trailer: Trailer,
    ) -> Result<(), RepoError> {
        BackupWriter::adopt_sent_pack(self, &key, &path, size, &trailer)
    }
    fn pack_spool(&mut self) -> Result<(PathBuf, std::fs::File), RepoError> {
        BackupWriter::pack_spool(self)
    }
    fn add_dir(&mut self, path: String, meta: FileMeta) -> Result<(), RepoError> {
        BackupWriter::add_dir(self, &path, meta)
    }
    fn add_stored_file(
        &mut self,
        path: String,
        size: u64,
        units: Vec<BlobId>,
        meta: FileMeta,
    ) -> Result<FileEntry, RepoError> {
        BackupWriter::add_stored_file(self, &path, size, units, meta)
    }
    fn add_stored_replica(&mut self, r: StoredReplica) -> Result<(), RepoError> {
        BackupWriter::add_stored_replica(
            self,
            &r.dir,
            r.id,
            r.genstamp,
            r.len,
            r.meta_len,
            r.block_meta,
            r.meta_meta,
            &r.unit,
        )
    }
    fn add_symlink(
        &mut self,
        path: String,
        target: String,
        meta: FileMeta,
    ) -> Result<(), RepoError> {
        BackupWriter::add_symlink(self, &path, &target, meta)
    }
}

/// A call carried out on the writer's thread.
type Job = Box<dyn FnOnce(&mut BackupWriter) + Send>;

/// A task's [`Recorder`]: each call goes to the writer's thread and waits for its answer.
pub struct Remote {
    jobs: std::sync::mpsc::Sender<Job>,
}

impl Remote {
    fn call<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut BackupWriter) -> Result<T, RepoError> + Send + 'static,
    ) -> Result<T, RepoError> {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        self.jobs
            .send(Box::new(move |w: &mut BackupWriter| {
                let _ = tx.send(f(w));
            }))
            .map_err(|_| RepoError::Cancelled)?;
        rx.recv().map_err(|_| RepoError::Cancelled)?
    }
}

impl Recorder for Remote {
    fn packing(&mut self) -> Result<(usize, i32), RepoError> {
        self.call(Recorder::packing)
    }
    fn claim_missing(&mut self, ids: Vec<[u8; 32]>) -> Result<Vec<bool>, RepoError> {
        self.call(move |w| Recorder::claim_missing(w, ids))
    }
    fn adopt_pack(&mut self, key: String, size: u64, trailer: Trailer) -> Result<(), RepoError> {
        self.call(move |w| Recorder::adopt_pack(w, key, size, trailer))
    }
    fn adopt_sent_pack(
        &mut self,
        key: String,
        path: PathBuf,
        size: u64,
        trailer: Trailer,
    ) -> Result<(), RepoError> {
        self.call(move |w| Recorder::adopt_sent_pack(w, key, path, size, trailer))
    }
    fn pack_spool(&mut self) -> Result<(PathBuf, std::fs::File), RepoError> {
        self.call(Recorder::pack_spool)
    }
    fn add_dir(&mut self, path: String, meta: FileMeta) -> Result<(), RepoError> {
        self.call(move |w| Recorder::add_dir(w, path, meta))
    }
    fn add_stored_file(
        &mut self,
        path: String,
        size: u64,
        units: Vec<BlobId>,
        meta: FileMeta,
    ) -> Result<FileEntry, RepoError> {
        self.call(move |w| Recorder::add_stored_file(w, path, size, units, meta))
    }
    fn add_stored_replica(&mut self, r: StoredReplica) -> Result<(), RepoError> {
        self.call(move |w| Recorder::add_stored_replica(w, r))
    }
    fn add_symlink(
        &mut self,
        path: String,
        target: String,
        meta: FileMeta,
    ) -> Result<(), RepoError> {
        self.call(move |w| Recorder::add_symlink(w, path, target, meta))
    }
}

/// A task of [`parallel`]: given its [`Remote`].
pub type Task<'a, T> = Box<dyn FnOnce(&mut Remote) -> T + Send + 'a>;

/// Runs every task on a thread of its own, all at once, while this thread carries out their
/// calls on `writer`; returns their results in order.
pub fn parallel<'a, T: Send + 'a>(writer: &mut BackupWriter, tasks: Vec<Task<'a, T>>) -> Vec<T> {
    let (tx, rx) = std::sync::mpsc::channel::<Job>();
    std::thread::scope(|scope| {
        let handles: Vec<_> = tasks
            .into_iter()
            .map(|task| {
                let mut remote = Remote { jobs: tx.clone() };
                scope.spawn(move || task(&mut remote))
            })
            .collect();
        drop(tx);
        // Ends when every task is done (each held a sender).
        while let Ok(job) = rx.recv() {
            job(writer);
        }
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .collect()
    })
}

/// A task of [`all_or_first_error`]: given its [`Remote`] and the token that stops it when
/// another task failed.
pub type StoppableTask<'a, T, E> =
    Box<dyn FnOnce(&mut Remote, &CancellationToken) -> Result<T, E> + Send + 'a>;

/// [`parallel`], all or nothing: the first task to fail stops the others (their token, a child
/// of `cancel`, is cancelled) and its error is returned; else every result, in order.
pub fn all_or_first_error<'a, T: Send + 'a, E: Send + 'a>(
    writer: &mut BackupWriter,
    cancel: &CancellationToken,
    tasks: Vec<StoppableTask<'a, T, E>>,
) -> Result<Vec<T>, E> {
    let stop = cancel.child_token();
    let first_failed = std::sync::Mutex::new(None::<usize>);
    let (stop, first) = (&stop, &first_failed);
    let wrapped: Vec<Task<'_, Result<T, E>>> = tasks
        .into_iter()
        .enumerate()
        .map(|(k, task)| {
            Box::new(move |rec: &mut Remote| {
                let out = task(rec, stop);
                if out.is_err() {
                    first
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .get_or_insert(k);
                    stop.cancel();
                }
                out
            }) as Task<'_, Result<T, E>>
        })
        .collect();
    let mut results = parallel(writer, wrapped);
    let failed = *first.lock().unwrap_or_else(|p| p.into_inner());
    match failed {
        Some(k) => Err(results.swap_remove(k).err().expect("recorded as failed")),
        None => Ok(results
            .into_iter()
            .map(|r| r.ok().expect("none failed"))
            .collect()),
    }
}
