//! `UploadList`: the agent stores the files of a pinned HopsFS volume that the head lists,
//! packed on the node ([`super::packing`]) exactly as hopsdrd stores a volume's tar stream: a
//! replica's checksum file and block as one unit (block bytes, then checksum bytes), other files
//! on their own, symbolic links by their target. The head builds every directory and every
//! record of a stored replica from its own listings; the agent only reads, packs and reports.
//!
//! What it reads is confined: the volume must be one of the agent's `--root`s, the pin a plain
//! name, every listed path plain and relative, every directory on the way resolved beneath the
//! pin, and the last component never followed.

use std::io::{BufRead, Read, Write};
use std::path::{Path, PathBuf};

use super::packing::Packing;
use super::proto::{self, Msg, S3Store, Stat};
use super::secrets::Secrets;
use super::upload::{store_file, Head, Setup, UploadError};
use crate::cluster::hopsfs::{replica_file, MAX_PAIRED_META, PIN_DIR};
use crate::repository::{Replica, SOLO_MAX_CHUNKS};

/// The pin directory `<volume>/hopsdr-pin/<pin>` of one of `roots`, resolved; refused when
/// `volume` is no root, `pin` is not a plain name, or the directory leads outside the volume.
pub fn resolve_pin(roots: &[PathBuf], volume: &str, pin: &str) -> Result<PathBuf, UploadError> {
    let root = root_of(roots, volume)?;
    if !plain(pin) || pin.contains('/') {
        return Err(UploadError::of(format!("{pin:?} is not a plain pin name")));
    }
    let base = root.join(PIN_DIR);
    let full = base.join(pin);
    let real = full.canonicalize().map_err(|e| UploadError::at(&full, e))?;
    if !real.starts_with(&base) || real == base {
        return Err(UploadError::at(
            &full,
            format!("resolves to {}, outside the volume's pins", real.display()),
        ));
    }
    Ok(real)
}

/// The root of `roots` that `volume` names, resolved; refused when it is none of them.
pub(super) fn root_of(roots: &[PathBuf], volume: &str) -> Result<PathBuf, UploadError> {
    let wanted = Path::new(volume)
        .canonicalize()
        .map_err(|e| UploadError::at(Path::new(volume), e))?;
    roots
        .iter()
        .filter_map(|r| r.canonicalize().ok())
        .find(|r| *r == wanted)
        .ok_or_else(|| {
            UploadError::of(format!(
                "{volume} is not a --root of this agent's command line"
            ))
        })
}

/// A relative path of plain components only (no empty one, no `.` or `..`).
pub(super) fn plain(path: &str) -> bool {
    path.split('/')
        .all(|c| !c.is_empty() && c != "." && c != "..")
}

/// Reads the list the head sends after `UploadList` (`size` bytes of byte frames) into a
/// temporary file, from its start. Read whole before anything is checked, so that a refused
/// request leaves the session in step.
pub fn receive_list(input: &mut dyn Read, size: u64) -> Result<std::fs::File, UploadError> {
    use std::io::Seek;
    let mut file = tempfile::tempfile()
        .map_err(|e| UploadError::of(format!("a spool file for the list: {e}")))?;
    let mut left = size;
    while left > 0 {
        match proto::read_frame(input).map_err(UploadError::of)? {
            Some((proto::KIND_BYTES, b)) if b.len() as u64 <= left => {
                file.write_all(&b)
                    .map_err(|e| UploadError::of(format!("spooling the list: {e}")))?;
                left -= b.len() as u64;
            }
            Some((kind, _)) => {
                return Err(UploadError::of(format!(
                "the head sent a frame of type {kind:#04x} with {left} bytes of the list to come"
            )))
            }
            None => return Err(UploadError::of("the head went away while sending the list")),
        }
    }
    file.rewind()
        .map_err(|e| UploadError::of(format!("reading back the list: {e}")))?;
    Ok(file)
}

/// A checksum file read, waiting for its block.
struct PendingMeta {
    rel: String,
    bytes: Vec<u8>,
    stat: Stat,
}

/// The pinned volume being read.
struct Pinned {
    base: PathBuf,
    /// The directory last resolved beneath the pin (a leaf directory's files come together).
    checked: Option<PathBuf>,
}

impl Pinned {
    /// Opens `rel` beneath the pin: a regular file (opened, not following a link) or a symbolic
    /// link (its target).
    fn open(&mut self, rel: &str) -> Result<Opened, UploadError> {
        if !plain(rel) {
            return Err(UploadError::of(format!(
                "{rel:?} is not a plain path inside the pin"
            )));
        }
        let full = self.base.join(rel);
        let parent = full
            .parent()
            .expect("a joined path has a parent")
            .to_path_buf();
        if self.checked.as_ref() != Some(&parent) {
            let real = parent
                .canonicalize()
                .map_err(|e| UploadError::at(&parent, e))?;
            if !real.starts_with(&self.base) {
                return Err(UploadError::at(
                    &full,
                    format!(
                        "its directory resolves to {}, outside the pin",
                        real.display()
                    ),
                ));
            }
            self.checked = Some(parent);
        }
        let meta = std::fs::symlink_metadata(&full).map_err(|e| UploadError::at(&full, e))?;
        if meta.file_type().is_symlink() {
            let target = std::fs::read_link(&full).map_err(|e| UploadError::at(&full, e))?;
            let target = target
                .to_str()
                .ok_or_else(|| UploadError::at(&full, "its target is not UTF-8"))?
                .to_string();
            return Ok(Opened::Link(target, Stat::of(&meta)));
        }
        let file = super::upload::open_regular(&full)?;
        let meta = file.metadata().map_err(|e| UploadError::at(&full, e))?;
        Ok(Opened::File(file, meta.len(), Stat::of(&meta), full))
    }
}

enum Opened {
    File(std::fs::File, u64, Stat, PathBuf),
    Link(String, Stat),
}

/// Stores the files `list` names (see [`receive_list`]) from the pin at `pin` (request `req`);
/// returns the closing message.
#[allow(clippy::too_many_arguments)]
pub fn upload_list(
    req: u32,
    pin: &Path,
    list: std::fs::File,
    chunk_size: usize,
    compression_level: i32,
    store: Option<&S3Store>,
    secrets: &Secrets,
    input: &mut dyn Read,
    output: &mut dyn Write,
) -> Result<Msg, UploadError> {
    let setup = Setup::new(chunk_size, store, secrets)?;
    let mut packing = setup.packing(chunk_size, compression_level, secrets)?;
    let mut head = setup.head(req, input, output, true);
    let mut pinned = Pinned {
        base: pin.to_path_buf(),
        checked: None,
    };
    let fits = (SOLO_MAX_CHUNKS * chunk_size) as u64;
    let mut files = 0u64;
    let mut pending: Option<PendingMeta> = None;
    let mut r = std::io::BufReader::with_capacity(1 << 20, list);
    let mut raw = Vec::new();
    loop {
        raw.clear();
        let n = r
            .read_until(0, &mut raw)
            .map_err(|e| UploadError::of(format!("reading back the list: {e}")))?;
        if n == 0 {
            break;
        }
        if raw.last() == Some(&0) {
            raw.pop();
        }
        let rel = std::str::from_utf8(&raw)
            .map_err(|_| UploadError::of("a listed path is not UTF-8"))?
            .to_string();
        match pinned.open(&rel)? {
            Opened::Link(target, stat) => {
                files += flush(&mut pending, &mut packing, &mut head)?;
                write(
                    head.output,
                    &Msg::LinkStored {
                        req,
                        path: rel,
                        target,
                        stat,
                    },
                )?;
                files += 1;
            }
            Opened::File(mut f, size, stat, full) => {
                let place = replica_file(&rel);
                // A checksum file waits for its block.
                if place.is_some_and(|(_, n)| n.ends_with(".meta")) && size <= MAX_PAIRED_META {
                    files += flush(&mut pending, &mut packing, &mut head)?;
                    let mut bytes = Vec::with_capacity(size as usize);
                    (&mut f)
                        .take(size)
                        .read_to_end(&mut bytes)
                        .map_err(|e| UploadError::at(&full, e))?;
                    pending = Some(PendingMeta { rel, bytes, stat });
                    continue;
                }
                let pair = place.and_then(|(dir, name)| {
                    let p = pending.as_ref()?;
                    let (pdir, pname) = p.rel.rsplit_once('/')?;
                    (pdir == dir).then_some(())?;
                    Replica::parse_names(name, pname)?;
                    let total = size + p.bytes.len() as u64;
                    (total > 0 && total <= fits).then(|| pname.to_string())
                });
                if let Some(meta_name) = pair {
                    let p = pending.take().expect("paired");
                    let mut content = (&mut f).take(size).chain(&p.bytes[..]);
                    let packed = packing
                        .add_file(&rel, &mut content, &mut head)
                        .map_err(|e| UploadError::at(&full, e))?;
                    let total = size + p.bytes.len() as u64;
                    if packed.size != total || packed.units.len() != 1 {
                        return Err(UploadError::at(
                            &full,
                            format!(
                                "{} bytes of block and checksums read, {total} expected (the file changed while it was read)",
                                packed.size
                            ),
                        ));
                    }
                    write(
                        head.output,
                        &Msg::ReplicaStored {
                            req,
                            path: rel,
                            meta_name,
                            len: size,
                            meta_len: p.bytes.len() as u64,
                            block: stat,
                            meta: p.stat,
                            unit: packed.units[0].as_str().to_string(),
                        },
                    )?;
                    files += 2;
                    continue;
                }
                files += flush(&mut pending, &mut packing, &mut head)?;
                store_file(&rel, &mut f, size, stat, &full, &mut packing, &mut head)?;
                files += 1;
            }
        }
    }
    files += flush(&mut pending, &mut packing, &mut head)?;
    let stats = packing.finish(&mut head).map_err(UploadError::of)?;
    Ok(Msg::Uploaded {
        req,
        files,
        packs: stats.packs,
        pack_bytes: stats.pack_bytes,
        paced_ms: super::limits::paced_ms(),
    })
}

fn write(output: &mut dyn Write, msg: &Msg) -> Result<(), UploadError> {
    proto::write_msg(output, msg).map_err(UploadError::of)
}

/// A checksum file whose block did not follow, stored on its own; the files stored (0 or 1).
fn flush(
    pending: &mut Option<PendingMeta>,
    packing: &mut Packing<'_>,
    head: &mut Head<'_>,
) -> Result<u64, UploadError> {
    let Some(p) = pending.take() else {
        return Ok(0);
    };
    let size = p.bytes.len() as u64;
    store_file(
        &p.rel,
        &mut &p.bytes[..],
        size,
        p.stat,
        Path::new(&p.rel),
        packing,
        head,
    )?;
    Ok(1)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::symlink;

    use super::*;

    fn err<T>(r: Result<T, UploadError>) -> String {
        match r {
            Ok(_) => panic!("accepted"),
            Err(e) => format!("{} {}", e.path.unwrap_or_default(), e.message),
        }
    }

    #[test]
    fn only_a_pin_of_a_root_is_read() {
        let t = tempfile::tempdir().unwrap();
        let (vol, other, outside) = (
            t.path().join("vol1"),
            t.path().join("vol2"),
            t.path().join("x"),
        );
        for d in [&vol, &other, &outside] {
            std::fs::create_dir_all(d).unwrap();
        }
        std::fs::create_dir_all(vol.join(PIN_DIR).join("b1")).unwrap();
        symlink(&outside, vol.join(PIN_DIR).join("away")).unwrap();
        let roots = [vol.clone()];
        let v = vol.display().to_string();
        assert!(resolve_pin(&roots, &v, "b1")
            .unwrap()
            .ends_with("vol1/hopsdr-pin/b1"));
        let spelled = format!("{}/../vol1/", t.path().join("vol2").display());
        assert!(
            resolve_pin(&roots, &spelled, "b1").is_ok(),
            "the same root spelled otherwise"
        );
        assert!(err(resolve_pin(&roots, &other.display().to_string(), "b1"))
            .contains("is not a --root"));
        for bad in ["", ".", "..", "../b1", "b1/x", "/b1"] {
            assert!(
                err(resolve_pin(&roots, &v, bad)).contains("plain pin name"),
                "{bad:?}"
            );
        }
        assert!(err(resolve_pin(&roots, &v, "away")).contains("outside the volume's pins"));
        assert!(err(resolve_pin(&roots, &v, "missing")).contains("No such file"));
    }

    #[test]
    fn listed_paths_stay_beneath_the_pin_and_links_are_not_followed() {
        let t = tempfile::tempdir().unwrap();
        let pin = t.path().join("pin");
        let outside = t.path().join("outside");
        std::fs::create_dir_all(pin.join("current/dir")).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        std::fs::write(outside.join("secret"), b"no").unwrap();
        std::fs::write(pin.join("current/dir/blk_1"), b"block").unwrap();
        symlink(&outside, pin.join("current/escape")).unwrap();
        symlink("../../outside/secret", pin.join("current/dir/link")).unwrap();
        nix::unistd::mkfifo(&pin.join("current/dir/fifo"), nix::sys::stat::Mode::S_IRWXU).unwrap();
        let mut p = Pinned {
            base: pin.canonicalize().unwrap(),
            checked: None,
        };
        match p.open("current/dir/blk_1").unwrap() {
            Opened::File(_, len, _, _) => assert_eq!(len, 5),
            Opened::Link(..) => panic!("a file"),
        }
        match p.open("current/dir/link").unwrap() {
            Opened::Link(target, _) => assert_eq!(target, "../../outside/secret"),
            Opened::File(..) => panic!("a link read as its target"),
        }
        for bad in [
            "",
            "/etc/passwd",
            "../outside/secret",
            "current/../../outside/secret",
            "current/./dir/blk_1",
            "current/dir/",
        ] {
            assert!(err(p.open(bad)).contains("not a plain path"), "{bad:?}");
        }
        assert!(err(p.open("current/escape/secret")).contains("outside the pin"));
        assert!(err(p.open("current/dir/fifo")).contains("not a regular file"));
    }
}
