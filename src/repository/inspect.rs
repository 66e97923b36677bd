//! Reading a backup's files for their meaning while a verify reads them back, in the same pass:
//! whoever knows what a file should hold (the drills) gives a [`ContentCheck`], which opens an
//! [`Inspector`] for the files it understands; the verify feeds it every piece it reads and
//! hashes, and records what it found beside the damage. A file whose check needs a small
//! companion (a HopsFS block and its `.meta` file, which sorts right after it) is read with the
//! companion first, on the same worker. The repository knows nothing of the formats.

use serde::{Deserialize, Serialize};

/// A companion larger than this is not read into memory (a `.meta` file of a 256 MiB block
/// is 2 MiB).
pub const COMPANION_LIMIT: u64 = 64 << 20;

/// What an inspector concluded about a good file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Inspected {
    /// What was checked ("hopsfs block", "rondb file", "sql dump"), for the counts.
    pub kind: &'static str,
    /// How many things inside were checked (chunks, records, statements).
    pub units: u64,
}

/// Reads one file's bytes, in order, for their meaning.
pub trait Inspector: Send {
    fn feed(&mut self, piece: &[u8]);
    /// The verdict once every byte was fed: what was checked, or what is wrong.
    fn finish(self: Box<Self>) -> Result<Inspected, String>;
}

/// Which files to read for their meaning, and how.
pub trait ContentCheck: Sync {
    /// Whether `path` is read for its meaning (alone or with a companion).
    fn inspects(&self, path: &str) -> bool;
    /// Whether `next`, the entry after `path`, is the companion `path`'s check needs.
    fn companion(&self, path: &str, next: &str) -> bool;
    /// The inspector of `path`, given its companion's bytes when it has one; `Ok(None)` when
    /// there is nothing to check after all, `Err` when the companion already says what is wrong.
    fn open(
        &self,
        path: &str,
        companion: Option<&[u8]>,
    ) -> Result<Option<Box<dyn Inspector>>, String>;
}

/// A file whose bytes are intact in the repository but do not mean what they should.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Finding {
    pub path: String,
    pub reason: String,
}

/// How many files of one kind were read for their meaning.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct InspectedCount {
    pub files: u64,
    pub units: u64,
}

/// Keeps a companion's bytes.
pub(crate) struct Collect(pub Vec<u8>);

impl Inspector for Collect {
    fn feed(&mut self, piece: &[u8]) {
        self.0.extend_from_slice(piece);
    }
    fn finish(self: Box<Self>) -> Result<Inspected, String> {
        Ok(Inspected {
            kind: "companion",
            units: 0,
        })
    }
}

/// The id under which a drill remembers having read a file (and its companion) for meaning:
/// two replicas stored as the same units mean the same, and are read once.
pub(crate) fn inspected_id(units: &[[u8; 32]], companion: &[[u8; 32]]) -> [u8; 32] {
    let mut h = blake3::Hasher::new_derive_key("hopsdr inspected file 1");
    h.update(&(units.len() as u64).to_le_bytes());
    for u in units.iter().chain(companion) {
        h.update(u);
    }
    *h.finalize().as_bytes()
}
