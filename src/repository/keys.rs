//! The keys of an encrypted repository as stored in it: key slots that wrap the master key, and
//! the sealed data keys (see `crypto.rs` for what the keys do).
//!
//! - **Key slot** — `keys/slots/<name>.json`, plain JSON: the master key sealed with
//!   AES-256-GCM under a key derived from a passphrase by Argon2id, whose parameters
//!   (memory, iterations, parallelism, salt) are recorded in the slot; the associated data binds
//!   the slot to its repository id and name. Any slot opens the repository; the last one is
//!   never removed. More slot kinds may follow (`kind`).
//! - **Data key** — `keys/data/<id>` (id from 1, ten digits): 32 random bytes sealed with the
//!   key-encryption key. Rotation writes a new one; none is ever rewritten.
//!
//! Every object written here has a name never written before (a slot's name is checked free).

use aws_lc_rs::aead::{Aad, Nonce};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::crypto::{self, Keyring, SealDefect};
use super::storage::{Storage, StorageError};

pub const SLOTS_PREFIX: &str = "keys/slots/";
pub const DATA_KEYS_PREFIX: &str = "keys/data/";
const SLOT_SUFFIX: &str = ".json";
const SLOT_FORMAT: &str = "hopsdr-key-slot";

/// Argon2id parameters for new slots: 64 MiB, 3 passes, 1 lane (RFC 9106's second
/// recommendation, with more passes).
pub const DEFAULT_KDF: KdfParams = KdfParams {
    memory_kib: 64 * 1024,
    iterations: 3,
    parallelism: 1,
};

/// Why the keys could not be read or changed.
#[derive(Debug, thiserror::Error)]
pub enum KeysError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("the repository in {store} is encrypted but has no key slot under {SLOTS_PREFIX}: it cannot be opened (were the keys/ objects deleted?)")]
    NoSlots { store: String },
    #[error("the passphrase from {source_desc} opens no key slot of the repository in {store} (tried {tried}): wrong passphrase, or a passphrase of another repository")]
    WrongPassphrase {
        store: String,
        source_desc: String,
        tried: String,
    },
    #[error("no key slot named {name:?} in the repository in {store} (it has {available})")]
    NoSuchSlot {
        store: String,
        name: String,
        available: String,
    },
    #[error("a key slot named {name:?} exists already: choose another name")]
    SlotExists { name: String },
    #[error("key slot {name:?} is the last one: add another before removing it (without a slot the repository cannot be opened)")]
    LastSlot { name: String },
    #[error("key slot {name:?} is the one hopsdrd opened the repository with ([repository.encryption]): point the config at another slot's passphrase and restart first")]
    SlotInUse { name: String },
    #[error("invalid key slot name {name:?}: use 1 to 64 of a-z, 0-9, '-' and '_'")]
    InvalidName { name: String },
    #[error("{0}")]
    Passphrase(String),
    #[error("an empty passphrase is not accepted: put a long random passphrase in the file")]
    EmptyPassphrase,
    #[error("key slot object {key} is not readable: {reason}")]
    BadSlot { key: String, reason: String },
    #[error("data key object {key} of the repository in {store}: {defect}")]
    BadDataKey {
        store: String,
        key: String,
        defect: SealDefect,
    },
    #[error("the repository in {store} has no data key under {DATA_KEYS_PREFIX}: it cannot be read (were the keys/ objects deleted?)")]
    NoDataKeys { store: String },
    #[error("no randomness from the kernel: {0}")]
    Random(String),
    #[error("key derivation failed: {0}")]
    Kdf(String),
}

/// Argon2id's cost parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct KdfParams {
    pub memory_kib: u32,
    pub iterations: u32,
    pub parallelism: u32,
}

/// A key slot as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeySlot {
    pub format: String,
    pub kind: String,
    pub name: String,
    /// The id of the repository the slot was made for (its wrap is bound to it): a creation
    /// interrupted before its header is resumed under it.
    #[serde(default)]
    pub repository: String,
    pub created: DateTime<Utc>,
    pub kdf: SlotKdf,
    /// Base64 of the 12-byte nonce.
    pub nonce: String,
    /// Base64 of the sealed master key (32 bytes and a 16-byte tag).
    pub wrapped: String,
}

/// The key derivation of a slot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlotKdf {
    /// `argon2id`.
    pub algorithm: String,
    /// Argon2 version (19: 1.3).
    pub version: u32,
    #[serde(flatten)]
    pub params: KdfParams,
    /// Base64 of the 16-byte salt.
    pub salt: String,
}

/// What `hopsdrctl key list` shows of a slot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlotInfo {
    pub name: String,
    pub kind: String,
    pub created: DateTime<Utc>,
    pub kdf: String,
}

/// Checks a slot name.
pub fn validate_slot_name(name: &str) -> Result<(), KeysError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|c| matches!(c, b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_'));
    if ok {
        Ok(())
    } else {
        Err(KeysError::InvalidName {
            name: name.to_string(),
        })
    }
}

pub fn slot_key(name: &str) -> String {
    format!("{SLOTS_PREFIX}{name}{SLOT_SUFFIX}")
}

pub fn data_key_key(id: u32) -> String {
    format!("{DATA_KEYS_PREFIX}{id:010}")
}

fn random<const N: usize>() -> Result<Zeroizing<[u8; N]>, KeysError> {
    crypto::random::<N>().map_err(|e| KeysError::Random(e.to_string()))
}

fn slot_aad(repo_id: &str, name: &str) -> Vec<u8> {
    format!("hopsdr key slot\0{repo_id}\0{name}").into_bytes()
}

/// The key-wrapping key of `passphrase` with `params` and `salt`.
fn derive(
    passphrase: &[u8],
    salt: &[u8],
    params: KdfParams,
) -> Result<Zeroizing<[u8; 32]>, KeysError> {
    let p = argon2::Params::new(
        params.memory_kib,
        params.iterations,
        params.parallelism,
        Some(32),
    )
    .map_err(|e| KeysError::Kdf(e.to_string()))?;
    let argon = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, p);
    let mut out = Zeroizing::new([0u8; 32]);
    argon
        .hash_password_into(passphrase, salt, out.as_mut())
        .map_err(|e| KeysError::Kdf(e.to_string()))?;
    Ok(out)
}

/// A new slot named `name` wrapping `master` under `passphrase`.
pub fn wrap(
    master: &[u8; 32],
    passphrase: &str,
    repo_id: &str,
    name: &str,
    params: KdfParams,
    now: DateTime<Utc>,
) -> Result<KeySlot, KeysError> {
    validate_slot_name(name)?;
    if passphrase.is_empty() {
        return Err(KeysError::EmptyPassphrase);
    }
    let salt = random::<16>()?;
    let nonce = random::<12>()?;
    let kek = derive(passphrase.as_bytes(), salt.as_ref(), params)?;
    let aad = slot_aad(repo_id, name);
    let mut wrapped = master.to_vec();
    let tag = crypto::aead_key(&kek)
        .seal_in_place_separate_tag(
            Nonce::assume_unique_for_key(*nonce),
            Aad::from(&aad[..]),
            &mut wrapped,
        )
        .map_err(|_| KeysError::Kdf("sealing the master key failed".into()))?;
    wrapped.extend_from_slice(tag.as_ref());
    Ok(KeySlot {
        format: SLOT_FORMAT.to_string(),
        kind: "passphrase".to_string(),
        name: name.to_string(),
        repository: repo_id.to_string(),
        created: now,
        kdf: SlotKdf {
            algorithm: "argon2id".to_string(),
            version: 19,
            params,
            salt: B64.encode(salt.as_ref()),
        },
        nonce: B64.encode(nonce.as_ref()),
        wrapped: B64.encode(wrapped),
    })
}

/// The master key `slot` wraps, if `passphrase` opens it; `Ok(None)` for a wrong passphrase.
pub fn unwrap(
    slot: &KeySlot,
    passphrase: &str,
    repo_id: &str,
) -> Result<Option<Zeroizing<[u8; 32]>>, KeysError> {
    let bad = |reason: &str| KeysError::BadSlot {
        key: slot_key(&slot.name),
        reason: reason.to_string(),
    };
    if slot.format != SLOT_FORMAT || slot.kind != "passphrase" {
        return Err(bad("unknown format or kind"));
    }
    if slot.kdf.algorithm != "argon2id" || slot.kdf.version != 19 {
        return Err(bad("unknown key derivation (not argon2id version 19)"));
    }
    let salt = B64.decode(&slot.kdf.salt).map_err(|_| bad("bad salt"))?;
    let nonce = B64.decode(&slot.nonce).map_err(|_| bad("bad nonce"))?;
    let wrapped = B64
        .decode(&slot.wrapped)
        .map_err(|_| bad("bad wrapped key"))?;
    let Ok(nonce) = <[u8; 12]>::try_from(nonce.as_slice()) else {
        return Err(bad("wrong lengths"));
    };
    if wrapped.len() != 48 || salt.len() < 8 {
        return Err(bad("wrong lengths"));
    }
    let kek = derive(passphrase.as_bytes(), &salt, slot.kdf.params)?;
    let aad = slot_aad(repo_id, &slot.name);
    let mut buf = Zeroizing::new(wrapped);
    match crypto::aead_key(&kek).open_in_place(
        Nonce::assume_unique_for_key(nonce),
        Aad::from(&aad[..]),
        &mut buf,
    ) {
        Ok(master) => {
            let mut out = Zeroizing::new([0u8; 32]);
            out.copy_from_slice(master);
            Ok(Some(out))
        }
        Err(_) => Ok(None),
    }
}

/// Every key slot of the repository in `storage`, by name.
pub fn read_slots(storage: &dyn Storage) -> Result<Vec<KeySlot>, KeysError> {
    let mut slots = Vec::new();
    for o in storage.list(SLOTS_PREFIX)? {
        let Some(name) = o
            .key
            .strip_prefix(SLOTS_PREFIX)
            .and_then(|n| n.strip_suffix(SLOT_SUFFIX))
        else {
            continue;
        };
        let bytes = storage.get(&o.key)?;
        let slot: KeySlot = serde_json::from_slice(&bytes).map_err(|e| KeysError::BadSlot {
            key: o.key.clone(),
            reason: e.to_string(),
        })?;
        if slot.name != name {
            return Err(KeysError::BadSlot {
                key: o.key.clone(),
                reason: format!("it names itself {:?}", slot.name),
            });
        }
        slots.push(slot);
    }
    slots.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(slots)
}

/// What `hopsdrctl key list` shows of each slot.
pub fn slot_infos(storage: &dyn Storage) -> Result<Vec<SlotInfo>, KeysError> {
    Ok(read_slots(storage)?
        .into_iter()
        .map(|s| SlotInfo {
            kdf: format!(
                "{} m={} KiB t={} p={}",
                s.kdf.algorithm,
                s.kdf.params.memory_kib,
                s.kdf.params.iterations,
                s.kdf.params.parallelism
            ),
            name: s.name,
            kind: s.kind,
            created: s.created,
        })
        .collect())
}

/// Stores `slot` under a name not used yet.
pub fn write_slot(storage: &dyn Storage, slot: &KeySlot) -> Result<(), KeysError> {
    let key = slot_key(&slot.name);
    if storage.exists(&key)? {
        return Err(KeysError::SlotExists {
            name: slot.name.clone(),
        });
    }
    let mut bytes = serde_json::to_vec_pretty(slot).expect("a key slot serializes");
    bytes.push(b'\n');
    storage.put(&key, &bytes)?;
    Ok(())
}

/// Opens the master key with `passphrase`: the slot `only` if given, else each slot in turn.
/// Returns the keyring with its data keys and the name of the slot that opened.
pub fn open(
    storage: &dyn Storage,
    repo_id: &str,
    passphrase: &str,
    only: Option<&str>,
    source_desc: &str,
) -> Result<(Keyring, String), KeysError> {
    let store = storage.describe();
    let slots = read_slots(storage)?;
    if slots.is_empty() {
        return Err(KeysError::NoSlots { store });
    }
    let candidates: Vec<&KeySlot> = match only {
        Some(name) => match slots.iter().find(|s| s.name == name) {
            Some(s) => vec![s],
            None => {
                return Err(KeysError::NoSuchSlot {
                    store,
                    name: name.to_string(),
                    available: names(&slots),
                })
            }
        },
        None => slots.iter().collect(),
    };
    for slot in &candidates {
        if let Some(master) = unwrap(slot, passphrase, repo_id)? {
            let keyring = load_data_keys(storage, Keyring::from_master(&master))?;
            return Ok((keyring, slot.name.clone()));
        }
    }
    Err(KeysError::WrongPassphrase {
        store,
        source_desc: source_desc.to_string(),
        tried: candidates
            .iter()
            .map(|s| format!("slot {:?}", s.name))
            .collect::<Vec<_>>()
            .join(", "),
    })
}

fn names(slots: &[KeySlot]) -> String {
    if slots.is_empty() {
        return "none".into();
    }
    slots
        .iter()
        .map(|s| format!("{:?}", s.name))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Reads and opens every data key into `keyring`.
pub fn load_data_keys(storage: &dyn Storage, mut keyring: Keyring) -> Result<Keyring, KeysError> {
    let store = storage.describe();
    for o in storage.list(DATA_KEYS_PREFIX)? {
        let Some(id) = o
            .key
            .strip_prefix(DATA_KEYS_PREFIX)
            .and_then(|n| n.parse::<u32>().ok())
            .filter(|id| *id > 0)
        else {
            continue;
        };
        let stored = storage.get(&o.key)?;
        let key = keyring
            .open(&o.key, &stored)
            .map_err(|defect| KeysError::BadDataKey {
                store: store.clone(),
                key: o.key.clone(),
                defect,
            })?;
        let key: [u8; 32] = key.try_into().map_err(|_| KeysError::BadDataKey {
            store: store.clone(),
            key: o.key.clone(),
            defect: SealDefect::Unauthentic,
        })?;
        keyring.add_data_key(id, &key);
    }
    if keyring.current() == crypto::KEK_ID {
        return Err(KeysError::NoDataKeys { store });
    }
    Ok(keyring)
}

/// Adds a new data key (the newest, used for new objects from now on); returns its id.
pub fn rotate(storage: &dyn Storage, keyring: &mut Keyring) -> Result<u32, KeysError> {
    let listed = storage
        .list(DATA_KEYS_PREFIX)?
        .iter()
        .filter_map(|o| o.key.strip_prefix(DATA_KEYS_PREFIX)?.parse::<u32>().ok())
        .max()
        .unwrap_or(0);
    let id = listed.max(keyring.current()) + 1;
    let key = random::<32>()?;
    let object = data_key_key(id);
    let sealed = keyring
        .seal_key_object(&object, key.as_ref())
        .map_err(|e| KeysError::Random(e.to_string()))?;
    storage.put(&object, &sealed)?;
    keyring.add_data_key(id, &key);
    Ok(id)
}

/// Removes slot `name`, never the last one.
pub fn remove_slot(storage: &dyn Storage, name: &str) -> Result<(), KeysError> {
    let slots = read_slots(storage)?;
    if !slots.iter().any(|s| s.name == name) {
        return Err(KeysError::NoSuchSlot {
            store: storage.describe(),
            name: name.to_string(),
            available: names(&slots),
        });
    }
    if slots.len() == 1 {
        return Err(KeysError::LastSlot {
            name: name.to_string(),
        });
    }
    storage.delete(&slot_key(name))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repository::LocalStorage;

    /// Cheap parameters: the tests check the logic, not the cost.
    const CHEAP: KdfParams = KdfParams {
        memory_kib: 64,
        iterations: 1,
        parallelism: 1,
    };

    fn store() -> (tempfile::TempDir, LocalStorage) {
        let dir = tempfile::tempdir().unwrap();
        let s = LocalStorage::new(dir.path().join("repo")).unwrap();
        (dir, s)
    }

    fn init(s: &dyn Storage, pass: &str) -> Keyring {
        let master = random::<32>().unwrap();
        let slot = wrap(&master, pass, "r1", "primary", CHEAP, Utc::now()).unwrap();
        write_slot(s, &slot).unwrap();
        let mut k = Keyring::from_master(&master);
        rotate(s, &mut k).unwrap();
        k
    }

    #[test]
    fn a_slot_opens_with_its_passphrase_only_and_for_its_repository_only() {
        let (_d, s) = store();
        let k = init(&s, "correct horse");
        let (opened, slot) = open(&s, "r1", "correct horse", None, "file /p").unwrap();
        assert_eq!(slot, "primary");
        assert_eq!(opened.master(), k.master());
        assert_eq!(opened.data_key_ids(), [1]);

        let e = open(&s, "r1", "wrong", None, "file /p").unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains("file /p") && msg.contains("slot \"primary\""),
            "{msg}"
        );
        // The same slot copied into another repository does not open there.
        assert!(matches!(
            open(&s, "r2", "correct horse", None, "f"),
            Err(KeysError::WrongPassphrase { .. })
        ));
        let e = open(&s, "r1", "correct horse", Some("backup"), "f").unwrap_err();
        assert!(
            e.to_string().contains("no key slot named \"backup\""),
            "{e}"
        );
    }

    #[test]
    fn slots_are_added_and_removed_but_never_the_last() {
        let (_d, s) = store();
        let k = init(&s, "one");
        let second = wrap(k.master(), "two", "r1", "ops", CHEAP, Utc::now()).unwrap();
        write_slot(&s, &second).unwrap();
        assert!(matches!(
            write_slot(&s, &second),
            Err(KeysError::SlotExists { .. })
        ));
        assert_eq!(open(&s, "r1", "two", None, "f").unwrap().1, "ops");
        assert_eq!(slot_infos(&s).unwrap().len(), 2);
        remove_slot(&s, "primary").unwrap();
        assert!(open(&s, "r1", "one", None, "f").is_err());
        assert!(matches!(
            remove_slot(&s, "ops"),
            Err(KeysError::LastSlot { .. })
        ));
        assert!(matches!(
            remove_slot(&s, "x"),
            Err(KeysError::NoSuchSlot { .. })
        ));
        assert!(matches!(
            wrap(k.master(), "p", "r1", "Bad Name", CHEAP, Utc::now()),
            Err(KeysError::InvalidName { .. })
        ));
        assert!(matches!(
            wrap(k.master(), "", "r1", "x", CHEAP, Utc::now()),
            Err(KeysError::EmptyPassphrase)
        ));
    }

    #[test]
    fn rotation_adds_a_data_key_and_keeps_the_old_ones() {
        let (_d, s) = store();
        let mut k = init(&s, "p");
        let mut sealed = Vec::new();
        k.seal_into("blobs/x", b"old", &mut sealed).unwrap();
        assert_eq!(rotate(&s, &mut k).unwrap(), 2);
        let (opened, _) = open(&s, "r1", "p", None, "f").unwrap();
        assert_eq!(opened.data_key_ids(), [1, 2]);
        assert_eq!(opened.open("blobs/x", &sealed).unwrap(), b"old");
        // A data key object written by someone without the keys is refused.
        s.put(&data_key_key(3), &[0u8; 80]).unwrap();
        assert!(matches!(
            open(&s, "r1", "p", None, "f"),
            Err(KeysError::BadDataKey { .. })
        ));
    }

    #[test]
    fn the_default_parameters_are_recorded_in_the_slot() {
        let slot = wrap(&[1u8; 32], "p", "r", "n", DEFAULT_KDF, Utc::now()).unwrap();
        let json = serde_json::to_value(&slot).unwrap();
        assert_eq!(json["kdf"]["memory_kib"], 65536);
        assert_eq!(json["kdf"]["iterations"], 3);
        assert_eq!(json["kdf"]["algorithm"], "argon2id");
        assert!(unwrap(&slot, "p", "r").unwrap().is_some());
    }
}
