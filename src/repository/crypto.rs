//! Sealing a repository's objects: client-side encryption and authentication with the keys of
//! an encrypted repository ([`Keyring`]), as pure functions over bytes.
//!
//! - **Master key**: 32 random bytes, made when the repository is created and stored only
//!   wrapped in key slots (`keys.rs`). Three keys are derived from it with BLAKE3's key
//!   derivation: the *blob-name key* (a blob is named by the BLAKE3 hash of its content keyed
//!   with it, so the store cannot test for a known plaintext, while equal chunks still get equal
//!   names and deduplicate), the *key-encryption key* (seals the data keys) and the *header key*
//!   (authenticates the repository header).
//! - **Data keys**: 32 random bytes each, numbered from 1, each stored sealed with the
//!   key-encryption key; new objects are sealed with the newest (`hopsdrctl key rotate` adds
//!   one), old ones stay readable with theirs.
//! - **Sealed object**: `"hdrseal1"` (8 bytes) ‖ key id (u32, big-endian; 0 is the
//!   key-encryption key) ‖ nonce (12 random bytes) ‖ AES-256-GCM ciphertext ‖ tag (16 bytes).
//!   The associated data is the 24-byte prefix followed by the object's key (its name in the
//!   store), so an object moved or copied under another name does not open. What is sealed is
//!   what a plaintext repository stores (a zstd frame): compression before encryption.
//!
//! AES-256-GCM runs in aws-lc (already in the tree for TLS) on the CPU's AES and carry-less
//! multiplication instructions: about 0.1 s per GiB on the 2-core test machine, a quarter of
//! ChaCha20-Poly1305's there (measured, `docs/benchmarks.md`). Nonces are random: a data key
//! seals one object per 4 MiB chunk, 25 million for 100 TB, far below the 2^32 messages per key
//! that random 96-bit nonces allow; `hopsdrctl key rotate` starts a new key.

use std::collections::BTreeMap;

use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM};
use zeroize::Zeroizing;

/// The first bytes of every sealed object.
pub const SEAL_MAGIC: &[u8; 8] = b"hdrseal1";
const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;
/// Magic, key id and nonce.
pub const PREFIX_LEN: usize = 8 + 4 + NONCE_LEN;
/// What sealing adds to an object's size.
pub const OVERHEAD: usize = PREFIX_LEN + TAG_LEN;
/// The key id of the key-encryption key (data keys are numbered from 1).
pub const KEK_ID: u32 = 0;

const NAME_CONTEXT: &str = "hopsdr 2026-12 blob names";
const KEK_CONTEXT: &str = "hopsdr 2026-12 key encryption";
const HEADER_CONTEXT: &str = "hopsdr 2026-12 repository header";

/// Why a sealed object does not open.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SealDefect {
    #[error(
        "it is not sealed (no \"hdrseal1\" prefix): a plaintext object in an encrypted repository"
    )]
    NotSealed,
    #[error("it is sealed with data key {0}, which the repository does not have")]
    UnknownKey(u32),
    #[error("it fails authentication: it was not written with this repository's keys under this name (tampered with, swapped or damaged)")]
    Unauthentic,
}

/// `N` random bytes from the kernel (keys, salts, nonces), wiped when dropped.
pub fn random<const N: usize>() -> Result<Zeroizing<[u8; N]>, getrandom::Error> {
    let mut b = Zeroizing::new([0u8; N]);
    getrandom::fill(b.as_mut())?;
    Ok(b)
}

/// An AES-256-GCM key, expanded once (aws-lc keeps the schedule and wipes it when dropped).
pub(crate) type AeadKey = LessSafeKey;

/// The AES-256-GCM key of 32 key bytes (objects, and the key slots' wrapping).
pub(crate) fn aead_key(key: &[u8; 32]) -> AeadKey {
    LessSafeKey::new(UnboundKey::new(&AES_256_GCM, key).expect("a 32-byte AES-256 key"))
}

/// What a node agent gets of an encrypted repository's keys: the blob-name key and data keys,
/// enough to name, seal and open blobs, packs and the objects sealed with a data key — never
/// the master key, the key-encryption key (which opens the data key objects) or the header key.
/// Sent once per session in the agent's secrets frame; wiped when dropped.
pub struct AgentKeys {
    name_key: Zeroizing<[u8; 32]>,
    /// Data keys by id: the raw bytes (to hand on) and the expanded AES key.
    data: BTreeMap<u32, (Zeroizing<[u8; 32]>, AeadKey)>,
}

impl std::fmt::Debug for AgentKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentKeys")
            .field("data_keys", &self.data.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl AgentKeys {
    /// The keys with blob-name key `name_key` and no data key yet.
    pub fn new(name_key: &[u8; 32]) -> AgentKeys {
        AgentKeys {
            name_key: Zeroizing::new(*name_key),
            data: BTreeMap::new(),
        }
    }

    /// Adds data key `id` (> 0).
    pub fn add_data_key(&mut self, id: u32, key: &[u8; 32]) {
        self.data.insert(id, (Zeroizing::new(*key), aead_key(key)));
    }

    /// The blob-name key (to send to an agent).
    pub fn name_key(&self) -> &[u8; 32] {
        &self.name_key
    }

    /// Data key `id`'s bytes (to send to an agent).
    pub fn data_key(&self, id: u32) -> Option<&[u8; 32]> {
        self.data.get(&id).map(|(raw, _)| &**raw)
    }

    /// The id of the data key new objects are sealed with (the newest); 0 when there is none.
    pub fn current(&self) -> u32 {
        self.data.keys().next_back().copied().unwrap_or(KEK_ID)
    }

    /// The ids of the data keys, oldest first.
    pub fn data_key_ids(&self) -> Vec<u32> {
        self.data.keys().copied().collect()
    }

    /// The name-giving hash of a chunk: BLAKE3 keyed with the blob-name key.
    pub fn blob_hash(&self, chunk: &[u8]) -> blake3::Hash {
        blake3::keyed_hash(&self.name_key, chunk)
    }

    /// An incremental [`AgentKeys::blob_hash`], for content hashed as it streams.
    pub fn blob_hasher(&self) -> blake3::Hasher {
        blake3::Hasher::new_keyed(&self.name_key)
    }

    /// Seals `plain` as the object `object_key` with the newest data key, into `out`; `None`
    /// without a data key.
    pub fn seal_into(
        &self,
        object_key: &str,
        plain: &[u8],
        out: &mut Vec<u8>,
    ) -> Option<Result<(), getrandom::Error>> {
        let (id, (_, cipher)) = self.data.iter().next_back()?;
        Some(seal_with(cipher, *id, object_key, plain, out))
    }

    /// Opens `stored` as the object `object_key` with the data key it names, into `out`.
    pub fn open_into(
        &self,
        object_key: &str,
        stored: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), SealDefect> {
        let (id, _) = split(stored)?;
        let (_, cipher) = self.data.get(&id).ok_or(SealDefect::UnknownKey(id))?;
        open_with(cipher, object_key, stored, out)
    }

    /// A copy holding the data keys `ids` only (those it has).
    pub fn with_data_keys(&self, ids: &[u32]) -> AgentKeys {
        let mut k = AgentKeys::new(&self.name_key);
        for id in ids {
            if let Some((raw, _)) = self.data.get(id) {
                k.add_data_key(*id, raw);
            }
        }
        k
    }
}

/// The opened keys of an encrypted repository: the master key, what is derived from it, and
/// the data keys ([`AgentKeys`] holds the part an agent may have).
pub struct Keyring {
    master: Zeroizing<[u8; 32]>,
    header_key: Zeroizing<[u8; 32]>,
    kek: AeadKey,
    agent: AgentKeys,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keyring")
            .field("data_keys", &self.agent.data_key_ids())
            .finish_non_exhaustive()
    }
}

impl Keyring {
    /// The keys derived from `master`, with no data key yet.
    pub fn from_master(master: &[u8; 32]) -> Keyring {
        let derive = |ctx: &str| Zeroizing::new(blake3::derive_key(ctx, master));
        Keyring {
            master: Zeroizing::new(*master),
            header_key: derive(HEADER_CONTEXT),
            kek: aead_key(&derive(KEK_CONTEXT)),
            agent: AgentKeys::new(&derive(NAME_CONTEXT)),
        }
    }

    /// The master key (to wrap it in a new key slot).
    pub fn master(&self) -> &[u8; 32] {
        &self.master
    }

    /// Adds data key `id` (> 0).
    pub fn add_data_key(&mut self, id: u32, key: &[u8; 32]) {
        self.agent.add_data_key(id, key);
    }

    /// The id of the data key new objects are sealed with (the newest); 0 when there is none.
    pub fn current(&self) -> u32 {
        self.agent.current()
    }

    /// The ids of the data keys, oldest first.
    pub fn data_key_ids(&self) -> Vec<u32> {
        self.agent.data_key_ids()
    }

    /// The blob-name and data keys (what seals blobs, packs' trailers and every object but
    /// the key objects).
    pub fn agent(&self) -> &AgentKeys {
        &self.agent
    }

    /// What an agent gets: the blob-name key and the data keys `ids` (a backup's agents need
    /// the current one only; a restore's, those its objects name).
    pub fn for_agent(&self, ids: &[u32]) -> AgentKeys {
        self.agent.with_data_keys(ids)
    }

    /// The name-giving hash of a chunk: BLAKE3 keyed with the blob-name key.
    pub fn blob_hash(&self, chunk: &[u8]) -> blake3::Hash {
        self.agent.blob_hash(chunk)
    }

    /// An incremental [`Keyring::blob_hash`], for content hashed as it streams.
    pub fn blob_hasher(&self) -> blake3::Hasher {
        self.agent.blob_hasher()
    }

    /// The authentication code of the repository header's bytes (lower-case hex).
    pub fn header_mac(&self, bytes: &[u8]) -> String {
        blake3::keyed_hash(&self.header_key, bytes)
            .to_hex()
            .to_string()
    }

    /// Seals `plain` as the object `object_key` with the newest data key (the key-encryption
    /// key while there is none), into `out`.
    pub fn seal_into(
        &self,
        object_key: &str,
        plain: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), getrandom::Error> {
        match self.agent.seal_into(object_key, plain, out) {
            Some(sealed) => sealed,
            None => seal_with(&self.kek, KEK_ID, object_key, plain, out),
        }
    }

    /// Seals `plain` (a data key) as the object `object_key` with the key-encryption key.
    pub fn seal_key_object(
        &self,
        object_key: &str,
        plain: &[u8],
    ) -> Result<Vec<u8>, getrandom::Error> {
        let mut out = Vec::new();
        seal_with(&self.kek, KEK_ID, object_key, plain, &mut out)?;
        Ok(out)
    }

    /// Opens the object `object_key` whose stored bytes are `stored`, into `out`.
    pub fn open_into(
        &self,
        object_key: &str,
        stored: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), SealDefect> {
        match split(stored)? {
            (KEK_ID, _) => open_with(&self.kek, object_key, stored, out),
            _ => self.agent.open_into(object_key, stored, out),
        }
    }

    /// Opens `stored` as the object `object_key`.
    pub fn open(&self, object_key: &str, stored: &[u8]) -> Result<Vec<u8>, SealDefect> {
        let mut out = Vec::new();
        self.open_into(object_key, stored, &mut out)?;
        Ok(out)
    }
}

/// Whether `stored` starts like a sealed object.
pub fn is_sealed(stored: &[u8]) -> bool {
    stored.starts_with(SEAL_MAGIC)
}

/// The key id of a sealed object and its associated-data prefix.
fn split(stored: &[u8]) -> Result<(u32, &[u8]), SealDefect> {
    if !is_sealed(stored) {
        return Err(SealDefect::NotSealed);
    }
    if stored.len() < OVERHEAD {
        return Err(SealDefect::Unauthentic);
    }
    let id = u32::from_be_bytes(stored[8..12].try_into().expect("4 bytes"));
    Ok((id, &stored[..PREFIX_LEN]))
}

fn associated_data(prefix: &[u8], object_key: &str) -> Vec<u8> {
    let mut aad = Vec::with_capacity(prefix.len() + object_key.len());
    aad.extend_from_slice(prefix);
    aad.extend_from_slice(object_key.as_bytes());
    aad
}

/// Seals `plain` with `key` (id `id`) as `object_key`: prefix, ciphertext, tag into `out`.
pub(crate) fn seal_with(
    key: &AeadKey,
    id: u32,
    object_key: &str,
    plain: &[u8],
    out: &mut Vec<u8>,
) -> Result<(), getrandom::Error> {
    let mut nonce = [0u8; NONCE_LEN];
    getrandom::fill(&mut nonce)?;
    out.clear();
    out.reserve(plain.len() + OVERHEAD);
    out.extend_from_slice(SEAL_MAGIC);
    out.extend_from_slice(&id.to_be_bytes());
    out.extend_from_slice(&nonce);
    let aad = associated_data(&out[..PREFIX_LEN], object_key);
    out.extend_from_slice(plain);
    let tag = key
        .seal_in_place_separate_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(&aad[..]),
            &mut out[PREFIX_LEN..],
        )
        .expect("AES-256-GCM seals any object of up to 64 GiB");
    out.extend_from_slice(tag.as_ref());
    Ok(())
}

/// Opens `stored` with `key` as `object_key` into `out`.
pub(crate) fn open_with(
    key: &AeadKey,
    object_key: &str,
    stored: &[u8],
    out: &mut Vec<u8>,
) -> Result<(), SealDefect> {
    let (_, prefix) = split(stored)?;
    let aad = associated_data(prefix, object_key);
    let mut nonce = [0u8; NONCE_LEN];
    nonce.copy_from_slice(&stored[8 + 4..PREFIX_LEN]);
    out.clear();
    out.extend_from_slice(&stored[PREFIX_LEN..]);
    match key.open_in_place(
        Nonce::assume_unique_for_key(nonce),
        Aad::from(&aad[..]),
        out,
    ) {
        Ok(plain) => {
            let len = plain.len();
            out.truncate(len);
            Ok(())
        }
        Err(_) => {
            out.clear();
            Err(SealDefect::Unauthentic)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keyring() -> Keyring {
        let mut k = Keyring::from_master(&[7u8; 32]);
        k.add_data_key(1, &[1u8; 32]);
        k
    }

    #[test]
    fn sealed_objects_open_only_under_their_name_and_unchanged() {
        let k = keyring();
        let plain = b"CREATE USER 'root'@'%' IDENTIFIED BY PASSWORD '*81F5E21E35407D884A6CD4A731AEBFB6AF209E1B'";
        let mut sealed = Vec::new();
        k.seal_into("blobs/ab/abcd", plain, &mut sealed).unwrap();
        assert_eq!(sealed.len(), plain.len() + OVERHEAD);
        assert!(!sealed.windows(8).any(|w| w == b"PASSWORD"), "no plaintext");
        assert_eq!(k.open("blobs/ab/abcd", &sealed).unwrap(), plain);

        // Another name (a swapped blob), a flipped byte anywhere, a cut tail: refused.
        assert_eq!(
            k.open("blobs/ab/abce", &sealed),
            Err(SealDefect::Unauthentic)
        );
        for i in [0usize, 9, 20, PREFIX_LEN, sealed.len() - 1] {
            let mut bad = sealed.clone();
            bad[i] ^= 0x01;
            let e = k.open("blobs/ab/abcd", &bad).unwrap_err();
            assert!(
                matches!(
                    e,
                    SealDefect::Unauthentic | SealDefect::NotSealed | SealDefect::UnknownKey(_)
                ),
                "byte {i}: {e:?}"
            );
        }
        assert_eq!(
            k.open("blobs/ab/abcd", &sealed[..sealed.len() - 1]),
            Err(SealDefect::Unauthentic)
        );
        assert_eq!(
            k.open("x", b"\x28\xb5\x2f\xfd plain zstd"),
            Err(SealDefect::NotSealed)
        );
        // Another data key with the same id does not open it.
        let mut other = Keyring::from_master(&[7u8; 32]);
        other.add_data_key(1, &[2u8; 32]);
        assert_eq!(
            other.open("blobs/ab/abcd", &sealed),
            Err(SealDefect::Unauthentic)
        );
    }

    #[test]
    fn rotation_seals_with_the_newest_key_and_reads_the_old_ones() {
        let mut k = keyring();
        let mut old = Vec::new();
        k.seal_into("o", b"old", &mut old).unwrap();
        k.add_data_key(2, &[2u8; 32]);
        assert_eq!(k.current(), 2);
        let mut new = Vec::new();
        k.seal_into("n", b"new", &mut new).unwrap();
        assert_eq!(&new[8..12], &2u32.to_be_bytes());
        assert_eq!(k.open("o", &old).unwrap(), b"old");
        assert_eq!(k.open("n", &new).unwrap(), b"new");
        let mut without = Keyring::from_master(&[7u8; 32]);
        without.add_data_key(1, &[1u8; 32]);
        assert_eq!(without.open("n", &new), Err(SealDefect::UnknownKey(2)));
    }

    #[test]
    fn blob_names_are_keyed_and_the_same_for_the_same_content() {
        let a = keyring();
        let b = Keyring::from_master(&[9u8; 32]);
        assert_eq!(a.blob_hash(b"chunk"), a.blob_hash(b"chunk"));
        assert_ne!(a.blob_hash(b"chunk"), blake3::hash(b"chunk"));
        assert_ne!(a.blob_hash(b"chunk"), b.blob_hash(b"chunk"));
        assert_ne!(a.header_mac(b"h"), b.header_mac(b"h"));
    }

    #[test]
    fn key_objects_are_sealed_with_the_key_encryption_key() {
        let k = keyring();
        let sealed = k.seal_key_object("keys/data/2", &[5u8; 32]).unwrap();
        assert_eq!(&sealed[8..12], &KEK_ID.to_be_bytes());
        assert_eq!(k.open("keys/data/2", &sealed).unwrap(), [5u8; 32]);
        assert_eq!(
            Keyring::from_master(&[8u8; 32]).open("keys/data/2", &sealed),
            Err(SealDefect::Unauthentic)
        );
    }

    #[test]
    fn an_agent_gets_names_and_data_keys_but_not_the_key_encryption_key() {
        let mut k = keyring();
        k.add_data_key(2, &[2u8; 32]);
        let agent = k.for_agent(&[k.current()]);
        assert_eq!(agent.data_key_ids(), [2]);
        assert_eq!(agent.blob_hash(b"chunk"), k.blob_hash(b"chunk"));
        // What the agent seals, the head opens, and the other way round.
        let mut sealed = Vec::new();
        agent
            .seal_into("packs/ab/x", b"pack", &mut sealed)
            .unwrap()
            .unwrap();
        assert_eq!(k.open("packs/ab/x", &sealed).unwrap(), b"pack");
        k.seal_into("packs/ab/y", b"head", &mut sealed).unwrap();
        let mut out = Vec::new();
        agent.open_into("packs/ab/y", &sealed, &mut out).unwrap();
        assert_eq!(out, b"head");
        // Not the data key it was not given, and never a key object.
        let mut old = Vec::new();
        k.for_agent(&[1])
            .seal_into("o", b"old", &mut old)
            .unwrap()
            .unwrap();
        assert_eq!(&old[8..12], &1u32.to_be_bytes());
        assert_eq!(
            agent.open_into("o", &old, &mut out),
            Err(SealDefect::UnknownKey(1))
        );
        let key_object = k.seal_key_object("keys/data/2", &[2u8; 32]).unwrap();
        assert_eq!(
            agent.open_into("keys/data/2", &key_object, &mut out),
            Err(SealDefect::UnknownKey(KEK_ID))
        );
        assert!(!format!("{agent:?}").contains("name_key"), "redacted");
    }
}
