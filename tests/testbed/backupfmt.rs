//! The test-bed's own NDB backup file format. Every file begins with `NDBBCKUP` (unless the cluster
//! writes compressed backups: then the whole file is zstd and the magic is not at byte 0), then
//! text lines, then `checksum <blake3 hex of everything before>`:
//! - `.ctl`: `ctl <backup> <node> <part> <parts> <stopgcp>`, `table <db> <tbl>`, `index <db> <tbl> <name>`.
//! - `.Data`: `data <backup> <node> <part>`, then one `<db>\t<tbl>\t<pk>\t<val>` line per row.
//! - `.log`: `log <backup> <node> <part>` (no log records: the fake's snapshot is instantaneous).
//!
//! An encrypted backup (`START BACKUP ... ENCRYPT`, or `ndb_mgm --encrypt-backup`) wraps each
//! file as the real tools' NDBXFRM1 container does: `NDBXFRM1` at byte 0 and at the end, the
//! content in between unreadable without the password (here: a salt, then the content XORed
//! with a BLAKE3 key stream of password and salt).

use anyhow::{bail, Result};
use std::path::Path;

pub const MAGIC: &str = "NDBBCKUP";
/// The first and last bytes of an encrypted backup file.
pub const XFRM_MAGIC: &[u8; 8] = b"NDBXFRM1";

pub fn seal(body: String, compressed: bool, password: Option<&str>) -> Result<Vec<u8>> {
    let sum = blake3::hash(body.as_bytes()).to_hex();
    let text = format!("{body}checksum {sum}\n");
    let plain = if compressed {
        zstd::encode_all(text.as_bytes(), 1)?
    } else {
        text.into_bytes()
    };
    Ok(match password {
        None => plain,
        Some(pw) => {
            let salt: [u8; 16] = blake3::hash(&plain).as_bytes()[..16].try_into()?;
            let mut out = XFRM_MAGIC.to_vec();
            out.extend_from_slice(&salt);
            out.extend(xor(&plain, pw, &salt));
            out.extend_from_slice(XFRM_MAGIC);
            out
        }
    })
}

fn xor(data: &[u8], password: &str, salt: &[u8]) -> Vec<u8> {
    let mut h = blake3::Hasher::new_derive_key("hopsdr test-bed NDBXFRM1");
    h.update(password.as_bytes());
    h.update(salt);
    let mut stream = vec![0u8; data.len()];
    h.finalize_xof().fill(&mut stream);
    data.iter().zip(stream).map(|(a, b)| a ^ b).collect()
}

/// Why a backup file could not be read (the encryption cases as ndb_restore tells them).
#[derive(Debug)]
pub enum OpenError {
    /// Encrypted, and no password given.
    Encrypted,
    /// A password given for a file that is not encrypted.
    NotEncrypted,
    /// The password does not decrypt it.
    WrongPassword,
    Other(anyhow::Error),
}

impl std::fmt::Display for OpenError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            OpenError::Encrypted => f.write_str("File is encrypted but no decryption requested."),
            OpenError::NotEncrypted => f.write_str("Decryption requested but file not encrypted."),
            OpenError::WrongPassword => {
                f.write_str("Can not read decrypted file. Might be wrong password.")
            }
            OpenError::Other(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for OpenError {}

/// Reads a file written by `seal` with `password` (`None`: not encrypted).
pub fn open_with(p: &Path, password: Option<&str>) -> std::result::Result<Vec<String>, OpenError> {
    let raw = std::fs::read(p).map_err(|e| OpenError::Other(e.into()))?;
    let encrypted = raw.starts_with(XFRM_MAGIC);
    let raw = match (encrypted, password) {
        (false, None) => raw,
        (true, None) => return Err(OpenError::Encrypted),
        (false, Some(_)) => return Err(OpenError::NotEncrypted),
        (true, Some(pw)) => {
            if raw.len() < 32 || !raw.ends_with(XFRM_MAGIC) {
                return Err(OpenError::Other(anyhow::anyhow!(
                    "Corrupted data: truncated file"
                )));
            }
            let (salt, body) = raw[8..raw.len() - 8].split_at(16);
            let plain = xor(body, pw, salt);
            let readable =
                plain.starts_with(MAGIC.as_bytes()) || zstd::decode_all(&plain[..]).is_ok();
            if !readable {
                return Err(OpenError::WrongPassword);
            }
            plain
        }
    };
    open_plain(raw).map_err(OpenError::Other)
}

fn open_plain(raw: Vec<u8>) -> Result<Vec<String>> {
    let raw = if raw.starts_with(MAGIC.as_bytes()) {
        raw
    } else {
        match zstd::decode_all(&raw[..]) {
            Ok(d) => d,
            Err(_) => bail!("Corrupted data: bad file header"),
        }
    };
    let Ok(text) = String::from_utf8(raw) else {
        bail!("Corrupted data: not a backup file")
    };
    let Some(body_end) = text.trim_end_matches('\n').rfind('\n').map(|i| i + 1) else {
        bail!("Corrupted data: truncated file")
    };
    let (body, tail) = text.split_at(body_end);
    let want = tail.trim().strip_prefix("checksum ").unwrap_or("");
    if !body.starts_with(MAGIC) || blake3::hash(body.as_bytes()).to_hex().as_str() != want {
        bail!("Corrupted data: checksum mismatch");
    }
    Ok(body.lines().skip(1).map(str::to_string).collect())
}
