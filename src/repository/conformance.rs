//! The [`Storage`] contract as a test every store must pass: the local directory in the unit
//! tests, S3 against a real S3-compatible server in the integration tests. Runs under a fresh
//! `base` prefix it leaves empty.

use super::storage::{Storage, StorageError};

/// Checks `store` against the [`Storage`] contract under `base/` (which must hold nothing);
/// `large` is the size of an object big enough to take the store's multipart path, if it has
/// one. Returns what broke.
pub fn check_storage(store: &dyn Storage, base: &str, large: usize) -> Result<(), String> {
    let k = |name: &str| format!("{base}/{name}");
    let fail = |what: &str, e: StorageError| format!("{}: {what}: {e}", store.describe());
    if !store
        .list(&format!("{base}/"))
        .map_err(|e| fail("list", e))?
        .is_empty()
    {
        return Err(format!("{base}/ is not empty"));
    }
    // Missing objects.
    match store.get(&k("missing")) {
        Err(e) if e.is_not_found() => {}
        other => return Err(format!("get of a missing object: {other:?}")),
    }
    if store.exists(&k("missing")).map_err(|e| fail("exists", e))? {
        return Err("a missing object exists".into());
    }
    store
        .delete(&k("missing"))
        .map_err(|e| fail("delete of a missing object", e))?;
    // Put, get, replace.
    store.put(&k("a/one"), b"one").map_err(|e| fail("put", e))?;
    if store.get(&k("a/one")).map_err(|e| fail("get", e))? != b"one" {
        return Err("get after put returned other bytes".into());
    }
    store
        .put(&k("a/one"), b"uno!")
        .map_err(|e| fail("put again", e))?;
    if store.get(&k("a/one")).map_err(|e| fail("get", e))? != b"uno!" {
        return Err("a put does not replace the object".into());
    }
    if !store.exists(&k("a/one")).map_err(|e| fail("exists", e))? {
        return Err("an object put does not exist".into());
    }
    store
        .put(&k("empty"), b"")
        .map_err(|e| fail("put empty", e))?;
    if !store
        .get(&k("empty"))
        .map_err(|e| fail("get empty", e))?
        .is_empty()
    {
        return Err("an empty object came back with bytes".into());
    }
    // A large object, byte for byte.
    let big: Vec<u8> = (0..large as u64)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    store
        .put(&k("a/big"), &big)
        .map_err(|e| fail("put large", e))?;
    if store.get(&k("a/big")).map_err(|e| fail("get large", e))? != big {
        return Err("a large object came back with other bytes".into());
    }
    // Listing: sorted, sizes, string prefixes inside a directory.
    store.put(&k("a/two"), b"22").map_err(|e| fail("put", e))?;
    store.put(&k("ab/x"), b"x").map_err(|e| fail("put", e))?;
    let listed: Vec<(String, u64)> = store
        .list(&format!("{base}/a/"))
        .map_err(|e| fail("list", e))?
        .into_iter()
        .map(|o| (o.key, o.size))
        .collect();
    let want = vec![(k("a/big"), large as u64), (k("a/one"), 4), (k("a/two"), 2)];
    if listed != want {
        return Err(format!("list {base}/a/: {listed:?}, want {want:?}"));
    }
    let t: Vec<String> = store
        .list(&k("a/t"))
        .map_err(|e| fail("list", e))?
        .into_iter()
        .map(|o| o.key)
        .collect();
    if t != [k("a/two")] {
        return Err(format!("list {base}/a/t: {t:?}"));
    }
    let all = store
        .list(&format!("{base}/"))
        .map_err(|e| fail("list", e))?;
    if all.len() != 5 || !all.windows(2).all(|w| w[0].key < w[1].key) {
        return Err(format!("list {base}/: {all:?}"));
    }
    // Reads announced ahead return what a plain read does, in any order, missing ones too.
    store.prefetch(&[
        k("a/two"),
        k("missing"),
        k("a/big"),
        k("a/one"),
        "sp ace".into(),
    ]);
    if store
        .get(&k("a/big"))
        .map_err(|e| fail("get large read ahead", e))?
        != big
    {
        return Err("a large object read ahead came back with other bytes".into());
    }
    match store.get(&k("missing")) {
        Err(e) if e.is_not_found() => {}
        other => return Err(format!("get of a missing object read ahead: {other:?}")),
    }
    if store
        .get(&k("a/two"))
        .map_err(|e| fail("get read ahead", e))?
        != b"22"
    {
        return Err("an object read ahead came back with other bytes".into());
    }
    if store
        .get(&k("a/one"))
        .map_err(|e| fail("get read ahead", e))?
        != b"uno!"
    {
        return Err("an object read ahead came back with other bytes".into());
    }
    // Announced twice (two readers), read twice: the same bytes each time.
    store.prefetch(&[k("a/two")]);
    store.prefetch(&[k("a/two")]);
    for _ in 0..2 {
        if store.get(&k("a/two")).map_err(|e| fail("get shared", e))? != b"22" {
            return Err("an object read ahead for two reads came back with other bytes".into());
        }
    }
    // Byte ranges: inside, running past the end (shortened), past the end (empty), missing.
    let range = |key: &str, at: u64, n: u64| store.get_range(key, at, n);
    let mid = range(&k("a/big"), 1000, 5000).map_err(|e| fail("get range", e))?;
    if mid != big[1000..6000] {
        return Err("a range came back with other bytes".into());
    }
    let tail = range(&k("a/big"), large as u64 - 10, 100).map_err(|e| fail("get range", e))?;
    if tail != big[large - 10..] {
        return Err("a range running past the end is not the object's tail".into());
    }
    if !range(&k("a/one"), 10, 5)
        .map_err(|e| fail("get range past the end", e))?
        .is_empty()
    {
        return Err("a range past the end came back with bytes".into());
    }
    match range(&k("missing"), 0, 1) {
        Err(e) if e.is_not_found() => {}
        other => return Err(format!("range of a missing object: {other:?}")),
    }
    // A file handed over: its content under the key after the flush, the file gone.
    let dir = match store.spool_dir() {
        Some(d) => d,
        None => std::env::temp_dir(),
    };
    let (path, mut file) = super::storage::spool_file(&dir)
        .map_err(|e| format!("spool file in {}: {e}", dir.display()))?;
    std::io::Write::write_all(&mut file, &big[..4096]).map_err(|e| e.to_string())?;
    drop(file);
    store
        .put_file_deferred(&k("a/file"), &path)
        .map_err(|e| fail("put file", e))?;
    store.flush().map_err(|e| fail("flush", e))?;
    if store.get(&k("a/file")).map_err(|e| fail("get file", e))? != big[..4096] {
        return Err("a file handed over came back with other bytes".into());
    }
    if path.exists() {
        return Err(format!(
            "{} is left after it was handed over",
            path.display()
        ));
    }
    store.delete(&k("a/file")).map_err(|e| fail("delete", e))?;
    // Invalid keys never reach the store.
    for bad in ["", "/abs", "a//b", "a/../b", "a/.hidden", "sp ace"] {
        match store.put(bad, b"x") {
            Err(StorageError::InvalidKey { .. }) => {}
            other => return Err(format!("put of the invalid key {bad:?}: {other:?}")),
        }
    }
    // Delete everything again.
    for o in all {
        store.delete(&o.key).map_err(|e| fail("delete", e))?;
    }
    if !store
        .list(&format!("{base}/"))
        .map_err(|e| fail("list", e))?
        .is_empty()
    {
        return Err("objects left after delete".into());
    }
    if store.exists(&k("a/one")).map_err(|e| fail("exists", e))? {
        return Err("a deleted object exists".into());
    }
    Ok(())
}
