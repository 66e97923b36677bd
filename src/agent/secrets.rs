//! The secrets frame ([`KIND_SECRETS`]): what hopsdrd hands an agent that it must never find in
//! argv, the environment or on the node's disk — the object store's credentials and the
//! repository's agent keys ([`AgentKeys`]: blob-name key and data keys, never the master key).
//!
//! Sent once, head → agent, right after `Start` (which says one follows). The payload is a list
//! of fields, each `tag u8 | length u32 BE | value`; unknown tags, repeated single fields, wrong
//! lengths and fields that need another one missing are refused. Buffers holding the payload
//! and the values are wiped when dropped (`Zeroizing`), and `Debug` shows no value.

use zeroize::Zeroizing;

use crate::repository::crypto::AgentKeys;

/// A frame holding one [`Secrets`] (head → agent only).
pub const KIND_SECRETS: u8 = 0x05;

const TAG_S3_ACCESS_KEY_ID: u8 = 1;
const TAG_S3_SECRET_ACCESS_KEY: u8 = 2;
const TAG_S3_SESSION_TOKEN: u8 = 3;
const TAG_NAME_KEY: u8 = 16;
/// Repeated: key id u32 BE ‖ 32 key bytes.
const TAG_DATA_KEY: u8 = 17;

/// Why a secrets frame was refused (never quoting a value).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretsError {
    #[error("the secrets frame is cut short in field {tag}")]
    Truncated { tag: u8 },
    #[error("the secrets frame has a field of unknown type {tag} (the head is another version)")]
    UnknownTag { tag: u8 },
    #[error("the secrets frame repeats field {tag}")]
    Repeated { tag: u8 },
    #[error("the secrets frame's field {tag} has {len} bytes, {want} expected")]
    BadLength { tag: u8, len: usize, want: usize },
    #[error("the secrets frame's field {tag} is not UTF-8")]
    NotText { tag: u8 },
    #[error("the secrets frame is incomplete: {0}")]
    Incomplete(&'static str),
}

/// Credentials for the object store.
pub struct S3Secret {
    pub access_key_id: Zeroizing<String>,
    pub secret_access_key: Zeroizing<String>,
    /// A temporary credential's session token.
    pub session_token: Option<Zeroizing<String>>,
}

impl std::fmt::Debug for S3Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Secret")
            .field("session_token", &self.session_token.is_some())
            .finish_non_exhaustive()
    }
}

/// What one secrets frame carries.
#[derive(Debug, Default)]
pub struct Secrets {
    pub s3: Option<S3Secret>,
    pub keys: Option<AgentKeys>,
}

fn field(out: &mut Vec<u8>, tag: u8, value: &[u8]) {
    out.push(tag);
    out.extend_from_slice(&(value.len() as u32).to_be_bytes());
    out.extend_from_slice(value);
}

impl Secrets {
    /// The frame's payload.
    pub fn encode(&self) -> Zeroizing<Vec<u8>> {
        let mut out = Zeroizing::new(Vec::with_capacity(512));
        if let Some(s3) = &self.s3 {
            field(&mut out, TAG_S3_ACCESS_KEY_ID, s3.access_key_id.as_bytes());
            field(
                &mut out,
                TAG_S3_SECRET_ACCESS_KEY,
                s3.secret_access_key.as_bytes(),
            );
            if let Some(t) = &s3.session_token {
                field(&mut out, TAG_S3_SESSION_TOKEN, t.as_bytes());
            }
        }
        if let Some(k) = &self.keys {
            field(&mut out, TAG_NAME_KEY, k.name_key());
            for id in k.data_key_ids() {
                let mut v = Zeroizing::new([0u8; 36]);
                v[..4].copy_from_slice(&id.to_be_bytes());
                v[4..].copy_from_slice(k.data_key(id).expect("listed"));
                field(&mut out, TAG_DATA_KEY, &v[..]);
            }
        }
        out
    }

    /// Reads a frame's payload.
    pub fn decode(payload: &[u8]) -> Result<Secrets, SecretsError> {
        let mut id: Option<Zeroizing<String>> = None;
        let mut secret: Option<Zeroizing<String>> = None;
        let mut token: Option<Zeroizing<String>> = None;
        let mut name_key: Option<Zeroizing<[u8; 32]>> = None;
        let mut data: Vec<(u32, Zeroizing<[u8; 32]>)> = Vec::new();
        let mut rest = payload;
        while let Some((&tag, after)) = rest.split_first() {
            let (len, after) = match after.split_first_chunk::<4>() {
                Some((len, after)) => (u32::from_be_bytes(*len) as usize, after),
                None => return Err(SecretsError::Truncated { tag }),
            };
            if after.len() < len {
                return Err(SecretsError::Truncated { tag });
            }
            let (value, after) = after.split_at(len);
            rest = after;
            let text = |slot: &mut Option<Zeroizing<String>>| {
                if slot.is_some() {
                    return Err(SecretsError::Repeated { tag });
                }
                let s = std::str::from_utf8(value).map_err(|_| SecretsError::NotText { tag })?;
                *slot = Some(Zeroizing::new(s.to_string()));
                Ok(())
            };
            match tag {
                TAG_S3_ACCESS_KEY_ID => text(&mut id)?,
                TAG_S3_SECRET_ACCESS_KEY => text(&mut secret)?,
                TAG_S3_SESSION_TOKEN => text(&mut token)?,
                TAG_NAME_KEY => {
                    if name_key.is_some() {
                        return Err(SecretsError::Repeated { tag });
                    }
                    let key: &[u8; 32] = value.try_into().map_err(|_| SecretsError::BadLength {
                        tag,
                        len,
                        want: 32,
                    })?;
                    name_key = Some(Zeroizing::new(*key));
                }
                TAG_DATA_KEY => {
                    let v: &[u8; 36] = value.try_into().map_err(|_| SecretsError::BadLength {
                        tag,
                        len,
                        want: 36,
                    })?;
                    let key_id = u32::from_be_bytes(v[..4].try_into().expect("4"));
                    if key_id == 0 || data.iter().any(|(i, _)| *i == key_id) {
                        return Err(SecretsError::Repeated { tag });
                    }
                    data.push((key_id, Zeroizing::new(v[4..].try_into().expect("32"))));
                }
                tag => return Err(SecretsError::UnknownTag { tag }),
            }
        }
        let s3 = match (id, secret, token) {
            (None, None, None) => None,
            (Some(access_key_id), Some(secret_access_key), session_token) => Some(S3Secret {
                access_key_id,
                secret_access_key,
                session_token,
            }),
            _ => {
                return Err(SecretsError::Incomplete(
                    "S3 credentials need both the access key id and the secret access key",
                ))
            }
        };
        let keys = match (name_key, data.is_empty()) {
            (None, true) => None,
            (Some(_), true) => {
                return Err(SecretsError::Incomplete(
                    "the blob-name key came without a data key",
                ))
            }
            (None, false) => {
                return Err(SecretsError::Incomplete(
                    "data keys came without the blob-name key",
                ))
            }
            (Some(name), false) => {
                let mut k = AgentKeys::new(&name);
                for (i, key) in &data {
                    k.add_data_key(*i, key);
                }
                Some(k)
            }
        };
        Ok(Secrets { s3, keys })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repository::crypto::Keyring;

    fn secrets() -> Secrets {
        let mut ring = Keyring::from_master(&[3u8; 32]);
        ring.add_data_key(1, &[4u8; 32]);
        ring.add_data_key(2, &[5u8; 32]);
        Secrets {
            s3: Some(S3Secret {
                access_key_id: Zeroizing::new("AKIDEXAMPLE".into()),
                secret_access_key: Zeroizing::new("wJalrXUtnFEMI/K7MDENG".into()),
                session_token: Some(Zeroizing::new("FwoGZXIvYXdzEJr".into())),
            }),
            keys: Some(ring.for_agent(&[1, 2])),
        }
    }

    #[test]
    fn secrets_survive_the_frame_and_never_show_in_debug() {
        let s = secrets();
        let payload = s.encode();
        let back = Secrets::decode(&payload).unwrap();
        let s3 = back.s3.as_ref().unwrap();
        assert_eq!(s3.access_key_id.as_str(), "AKIDEXAMPLE");
        assert_eq!(s3.secret_access_key.as_str(), "wJalrXUtnFEMI/K7MDENG");
        assert_eq!(
            s3.session_token.as_ref().map(|t| t.as_str()),
            Some("FwoGZXIvYXdzEJr")
        );
        let keys = back.keys.as_ref().unwrap();
        assert_eq!(keys.data_key_ids(), [1, 2]);
        assert_eq!(
            keys.blob_hash(b"x"),
            s.keys.as_ref().unwrap().blob_hash(b"x")
        );
        assert_eq!(keys.data_key(2), Some(&[5u8; 32]));
        let shown = format!("{back:?}");
        for secret in ["AKIDEXAMPLE", "wJalr", "FwoGZ"] {
            assert!(!shown.contains(secret), "{shown}");
        }
        // Nothing at all, and credentials alone, are frames too.
        assert!(Secrets::decode(&[]).unwrap().s3.is_none());
        let only_s3 = Secrets {
            s3: secrets().s3,
            keys: None,
        };
        let back = Secrets::decode(&only_s3.encode()).unwrap();
        assert!(back.keys.is_none());
        assert!(back.s3.unwrap().session_token.is_some());
    }

    #[test]
    fn bad_frames_are_refused_without_quoting_a_value() {
        let good = secrets().encode();
        // Cut anywhere inside: refused (a cut exactly between fields reads as fewer fields,
        // which then lack their partners or are simply fewer data keys).
        for cut in 1..good.len() {
            if let Err(e) = Secrets::decode(&good[..cut]) {
                assert!(!e.to_string().contains("wJalr"), "{e}");
            }
        }
        assert_eq!(
            Secrets::decode(&good[..3]).unwrap_err(),
            SecretsError::Truncated {
                tag: TAG_S3_ACCESS_KEY_ID
            }
        );
        let mut unknown = good.to_vec();
        field(&mut unknown, 99, b"x");
        assert_eq!(
            Secrets::decode(&unknown).unwrap_err(),
            SecretsError::UnknownTag { tag: 99 }
        );
        let mut repeated = good.to_vec();
        field(&mut repeated, TAG_S3_SECRET_ACCESS_KEY, b"again");
        assert_eq!(
            Secrets::decode(&repeated).unwrap_err(),
            SecretsError::Repeated {
                tag: TAG_S3_SECRET_ACCESS_KEY
            }
        );
        let mut short_key = Vec::new();
        field(&mut short_key, TAG_NAME_KEY, &[1u8; 31]);
        assert_eq!(
            Secrets::decode(&short_key).unwrap_err(),
            SecretsError::BadLength {
                tag: TAG_NAME_KEY,
                len: 31,
                want: 32
            }
        );
        let mut lone_secret = Vec::new();
        field(&mut lone_secret, TAG_S3_SECRET_ACCESS_KEY, b"s");
        assert!(matches!(
            Secrets::decode(&lone_secret).unwrap_err(),
            SecretsError::Incomplete(_)
        ));
        let mut name_only = Vec::new();
        field(&mut name_only, TAG_NAME_KEY, &[1u8; 32]);
        assert!(matches!(
            Secrets::decode(&name_only).unwrap_err(),
            SecretsError::Incomplete(_)
        ));
        let mut key_zero = name_only.clone();
        field(&mut key_zero, TAG_DATA_KEY, &[0u8; 36]);
        assert_eq!(
            Secrets::decode(&key_zero).unwrap_err(),
            SecretsError::Repeated { tag: TAG_DATA_KEY }
        );
        let mut not_text = Vec::new();
        field(&mut not_text, TAG_S3_ACCESS_KEY_ID, &[0xff, 0xfe]);
        assert_eq!(
            Secrets::decode(&not_text).unwrap_err(),
            SecretsError::NotText {
                tag: TAG_S3_ACCESS_KEY_ID
            }
        );
    }
}
