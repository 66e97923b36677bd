//! The test-bed's own NDB backup file format. Every file begins with `NDBBCKUP` (unless the cluster
//! writes compressed backups: then the whole file is zstd and the magic is not at byte 0), then
//! text lines, then `checksum <blake3 hex of everything before>`:
//! - `.ctl`: `ctl <backup> <node> <part> <parts> <stopgcp>`, `table <db> <tbl>`, `index <db> <tbl> <name>`.
//! - `.Data`: `data <backup> <node> <part>`, then one `<db>\t<tbl>\t<pk>\t<val>` line per row.
//! - `.log`: `log <backup> <node> <part>` (no log records: the fake's snapshot is instantaneous).

use anyhow::{bail, Result};
use std::path::Path;

pub const MAGIC: &str = "NDBBCKUP";

pub fn seal(body: String, compressed: bool) -> Result<Vec<u8>> {
    let sum = blake3::hash(body.as_bytes()).to_hex();
    let text = format!("{body}checksum {sum}\n");
    if compressed {
        Ok(zstd::encode_all(text.as_bytes(), 1)?)
    } else {
        Ok(text.into_bytes())
    }
}

/// Reads a file written by `seal`: the lines after the magic, checksum verified.
pub fn open(p: &Path) -> Result<Vec<String>> {
    let raw = std::fs::read(p)?;
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
