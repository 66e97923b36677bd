//! The agent protocol's wire format: what hopsdrd and `hopsdr agent --serve` say to each other
//! over the agent's standard input and output (an ssh channel, or pipes for the head node
//! itself).
//!
//! The agent first writes the 8 bytes [`MAGIC`]; anything else before them (a shell start-up file
//! printing to stdout, a missing binary's message) is quoted back by the head instead of being
//! taken for protocol. Then both sides exchange frames: a 4-byte big-endian length (of what
//! follows it, at most [`MAX_FRAME`]), a type byte and the payload. Control messages are
//! type [`KIND_MSG`]: one [`Msg`] as UTF-8 JSON (tag `t`), readable in logs and tests; later bulk
//! frame types get their own bytes. Pure functions over readers and writers, no I/O policy.

use std::io::{Read, Write};

use serde::{Deserialize, Serialize};

/// What the agent writes first.
pub const MAGIC: &[u8; 8] = b"HDRAGNT1";

/// The protocol's version: both sides must speak the same one (as well as be the same release).
pub const PROTOCOL: u32 = 1;

/// The largest frame (after its length): 1 MiB of payload and a little for its header, so a
/// control message never waits behind more than 1 MiB of bulk data.
pub const MAX_FRAME: usize = 1024 * 1024 + 64;

/// A frame holding one [`Msg`].
pub const KIND_MSG: u8 = 0x01;

/// A frame of raw bytes (at most 1 MiB): a pack the agent sends to the head for a local
/// repository, after a [`Msg::PackBytes`] that says how many follow, or the list of files the
/// head sends after a [`Msg::UploadList`].
pub const KIND_BYTES: u8 = 0x04;

/// The most bytes one [`KIND_BYTES`] frame carries.
pub const BYTES_PER_FRAME: usize = 1024 * 1024;

/// How much of what a node printed instead of the greeting is quoted in the error.
const PRELUDE_QUOTE: usize = 200;

/// Why a frame could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum ProtoError {
    #[error("the peer closed the stream in the middle of a frame")]
    Truncated,
    #[error("a frame of {len} bytes is over the limit of {MAX_FRAME} bytes (the peer is not a hopsdr agent of this protocol, or its output is corrupt)")]
    TooLarge { len: usize },
    #[error("an empty frame (no type byte)")]
    Empty,
    #[error("a frame of unknown type {kind:#04x} (the peer speaks another protocol version)")]
    UnknownKind { kind: u8 },
    #[error("a message that is not valid: {reason}")]
    BadMessage { reason: String },
    #[error("it printed {seen:?} instead of the agent's greeting")]
    Prelude { seen: String },
    #[error("it closed its output before the agent's greeting")]
    NoGreeting,
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// A role the agent serves on its node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// A HopsFS datanode: its volumes are the agent's roots.
    Hopsfs,
    /// A RonDB data node: its BackupDataDir is the agent's backup directory.
    Rondb,
}

impl Role {
    pub fn as_str(&self) -> &'static str {
        match self {
            Role::Hopsfs => "hopsfs",
            Role::Rondb => "rondb",
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the head asks the agent to do in this session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Job {
    /// `hopsdrctl agents check`: the greeting and a description of the roots.
    Check,
    /// A backup: the agent stores what it is asked to upload.
    Backup,
    /// A restore: the agent writes back what it is sent.
    Restore,
}

/// A node's bandwidth: a timetable (as `crate::timetable` reads it) and the time zone its
/// times are in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentBandwidth {
    pub timetable: String,
    pub timezone: String,
}

/// A pack's table of contents on the wire (what [`crate::repository::pack::Trailer`] holds;
/// ids in hex).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireTrailer {
    pub kind: u8,
    /// A solo pack's unit: id and length.
    pub unit: Option<(String, u64)>,
    /// Per blob: kind, id, offset, stored length, raw length.
    pub entries: Vec<(u8, String, u64, u32, u32)>,
}

impl WireTrailer {
    pub fn of(t: &crate::repository::pack::Trailer) -> WireTrailer {
        let hex = |id: &[u8; 32]| blake3::Hash::from_bytes(*id).to_hex().to_string();
        WireTrailer {
            kind: t.kind.code(),
            unit: t.unit.map(|u| (hex(&u.id), u.len)),
            entries: t
                .entries
                .iter()
                .map(|e| (e.kind.code(), hex(&e.id), e.offset, e.stored_len, e.raw_len))
                .collect(),
        }
    }

    /// The trailer, or what in it is not one.
    pub fn trailer(&self) -> Result<crate::repository::pack::Trailer, String> {
        use crate::repository::pack::{BlobKind, PackEntry, PackKind, Trailer, Unit};
        let id = |h: &str| {
            blake3::Hash::from_hex(h)
                .map(|h| *h.as_bytes())
                .map_err(|_| format!("{h:?} is not a blob id"))
        };
        Ok(Trailer {
            kind: PackKind::from_code(self.kind)
                .ok_or_else(|| format!("pack kind {} is unknown", self.kind))?,
            unit: match &self.unit {
                Some((u, len)) => Some(Unit {
                    id: id(u)?,
                    len: *len,
                }),
                None => None,
            },
            entries: self
                .entries
                .iter()
                .map(|(kind, h, offset, stored_len, raw_len)| {
                    Ok(PackEntry {
                        kind: BlobKind::from_code(*kind)
                            .ok_or_else(|| format!("blob kind {kind} is unknown"))?,
                        id: id(h)?,
                        offset: *offset,
                        stored_len: *stored_len,
                        raw_len: *raw_len,
                    })
                })
                .collect::<Result<_, String>>()?,
        })
    }
}

/// The repository's bucket as an agent reaches it (no secret: the credentials come in the
/// secrets frame).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct S3Store {
    pub endpoint: Option<String>,
    pub region: String,
    pub bucket: String,
    pub prefix: String,
    pub path_style: bool,
    /// `[repository] ca_bundle`'s certificates (PEM), which the node may not have.
    pub ca_bundle_pem: Option<String>,
    pub part_size: usize,
    pub parallel_parts: usize,
    /// `[repository] object_lock`: every object the agent writes is locked so.
    #[serde(default)]
    pub object_lock: Option<(crate::repository::LockMode, u32)>,
}

/// What an agent found when it tried the repository with what it was given.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoreProbe {
    /// The store, as the agent describes it.
    pub store: String,
    /// Why the repository could not be read from the node, if so.
    pub problem: Option<String>,
}

/// A directory the agent may touch, as the agent sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RootInfo {
    pub path: String,
    /// Why the agent cannot use it (missing, not a directory, not readable...), if so.
    pub problem: Option<String>,
    /// Free and total bytes of its file system (`statvfs`), when it exists.
    pub free_bytes: Option<u64>,
    pub total_bytes: Option<u64>,
}

/// A file's mode, times and owner as the agent read them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stat {
    pub mode: u32,
    pub mtime: i64,
    pub uid: u32,
    pub gid: u32,
}

impl Stat {
    pub fn of(m: &std::fs::Metadata) -> Stat {
        use std::os::unix::fs::MetadataExt;
        Stat {
            mode: m.mode() & 0o7777,
            mtime: m.mtime(),
            uid: m.uid(),
            gid: m.gid(),
        }
    }
}

/// A unit of a file to write back: its id, the pack that holds it (its 16-byte id in hex) and
/// where (an index entry's fields).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireUnit {
    pub id: String,
    pub pack: String,
    /// [`crate::repository::index::EntryKind`]'s code: a data blob or a solo pack's unit.
    pub kind: u8,
    pub offset: u32,
    pub stored: u32,
    pub raw: u32,
}

/// One entry of a volume to write back, a JSON line of the list after [`Msg::WriteVolume`];
/// paths relative to the volume.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "k", rename_all = "snake_case")]
pub enum WireEntry {
    Dir {
        path: String,
        stat: Stat,
    },
    /// `size` bytes from byte `skip` of its units' concatenation.
    File {
        path: String,
        size: u64,
        skip: u64,
        stat: Stat,
        units: Vec<WireUnit>,
    },
    Link {
        path: String,
        target: String,
        stat: Stat,
    },
}

/// A control message. Requests carry `req`, chosen by the head; the reply names it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "t", rename_all = "snake_case")]
pub enum Msg {
    /// The agent's first message, right after [`MAGIC`].
    Hello {
        name: String,
        version: String,
        protocol: u32,
        host: String,
        uid: u32,
        roles: Vec<Role>,
        /// HopsFS volumes (`--root`).
        roots: Vec<String>,
        /// The RonDB data node's BackupDataDir (`--backup-dir`).
        backup_dir: Option<String>,
        /// The forced command overrode what the head asked for (sshd's `SSH_ORIGINAL_COMMAND`
        /// differed from the command run).
        forced: bool,
    },
    /// The head's first message: its version (the agent refuses another), the job, the
    /// repository's bucket when the node is to reach it, and whether a secrets frame
    /// ([`super::secrets::KIND_SECRETS`]) follows.
    Start {
        version: String,
        protocol: u32,
        job: Job,
        store: Option<S3Store>,
        secrets: bool,
        /// The node's bandwidth timetable (`[agents] bandwidth`, or its `[[agents.nodes]]`);
        /// `None`: no limit.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        bandwidth: Option<AgentBandwidth>,
    },
    Ping {
        req: u32,
    },
    Pong {
        req: u32,
    },
    /// Asks for every root's state.
    Describe {
        req: u32,
    },
    Described {
        req: u32,
        roots: Vec<RootInfo>,
        backup_dir: Option<RootInfo>,
    },
    /// Asks the agent to try what it was given: read the repository's header from the bucket
    /// with the credentials, and name a fixed probe with the blob-name key.
    Probe {
        req: u32,
    },
    Probed {
        req: u32,
        /// `None` when no bucket was given (a local repository: the head's own disk).
        store: Option<StoreProbe>,
        /// The probe's name under the agent's blob-name key (hex), `None` without keys: the
        /// head compares it with its own.
        name_check: Option<String>,
    },
    /// Store the files of directory `dir` (relative to the agent's `--backup-dir`; its
    /// subdirectories too, such as a multi-part backup's `BACKUP-<id>-PART-<p>-OF-<n>`) as the
    /// repository does: the agent asks [`Msg::Have`], reports each pack ([`Msg::PackDone`],
    /// after its PUT) and each file ([`Msg::FileStored`]), then [`Msg::Uploaded`].
    Upload {
        req: u32,
        dir: String,
        chunk_size: usize,
        compression_level: i32,
    },
    /// A directory of the upload (its path relative to the uploaded directory, "" for
    /// itself, which comes first; a directory before what it holds).
    DirStored {
        req: u32,
        path: String,
        stat: Stat,
    },
    /// Which of these blob or unit ids (hex) must the agent store?
    Have {
        req: u32,
        ids: Vec<String>,
    },
    HaveAck {
        req: u32,
        missing: Vec<bool>,
    },
    /// `size` bytes of pack `key` follow in [`KIND_BYTES`] frames, for the head to store (a
    /// local repository); its [`Msg::PackDone`] comes after them.
    PackBytes {
        req: u32,
        key: String,
        size: u64,
    },
    /// A pack the agent stored under `key` (or, after [`Msg::PackBytes`], sent).
    PackDone {
        req: u32,
        key: String,
        size: u64,
        trailer: WireTrailer,
    },
    /// A file (its path relative to the uploaded directory) and the units it became.
    FileStored {
        req: u32,
        path: String,
        size: u64,
        stat: Stat,
        units: Vec<String>,
    },
    /// Store the files of a pinned HopsFS volume that the head lists: `volume` must be one of
    /// the agent's `--root`s, the files are read beneath `<volume>/hopsdr-pin/<pin>/`, and their
    /// paths (relative to that directory, NUL-separated, in the listing's order: a replica's
    /// checksum file right before its block) follow in `list_bytes` bytes of [`KIND_BYTES`]
    /// frames. A replica becomes one unit ([`Msg::ReplicaStored`]); any other file a
    /// [`Msg::FileStored`], a symbolic link a [`Msg::LinkStored`]; then [`Msg::Uploaded`].
    UploadList {
        req: u32,
        volume: String,
        pin: String,
        chunk_size: usize,
        compression_level: i32,
        list_bytes: u64,
    },
    /// A replica (block `path`, relative to the pin, and its checksum file `meta_name` in the
    /// same directory) stored as one unit: the block's bytes, then the checksum file's.
    ReplicaStored {
        req: u32,
        path: String,
        meta_name: String,
        len: u64,
        meta_len: u64,
        block: Stat,
        meta: Stat,
        unit: String,
    },
    /// A symbolic link of the list and its target.
    LinkStored {
        req: u32,
        path: String,
        target: String,
        stat: Stat,
    },
    Uploaded {
        req: u32,
        files: u64,
        packs: u64,
        pack_bytes: u64,
        /// Milliseconds the node's bandwidth limit held its transfers back, so far this session.
        #[serde(default)]
        paced_ms: u64,
    },
    /// Write the entries that follow in `entries_bytes` bytes of [`KIND_BYTES`] frames (JSON
    /// lines of [`WireEntry`]) beneath `volume` (one of the agent's `--root`s, its `current/`
    /// cleared by the head), fetching every unit from the bucket; [`Msg::Progress`] while it
    /// writes, then [`Msg::VolumeWritten`].
    WriteVolume {
        req: u32,
        volume: String,
        chunk_size: usize,
        entries_bytes: u64,
        /// Only fetch and check every unit, write nothing (a restore's verify step).
        #[serde(default)]
        check_only: bool,
        /// The volume was written in part by an earlier attempt: a file already there with the
        /// recorded size and time (set last) is kept, anything else in a file's place replaced.
        #[serde(default)]
        resume: bool,
    },
    /// A long request goes on (also the agent's heartbeat while it works).
    Progress {
        req: u32,
        files: u64,
        bytes: u64,
    },
    VolumeWritten {
        req: u32,
        files: u64,
        dirs: u64,
        links: u64,
        bytes: u64,
        skipped_links: u64,
        /// Files an earlier attempt wrote whole, kept (a resumed write-back).
        #[serde(default)]
        kept: u64,
        /// As in [`Msg::Uploaded`].
        #[serde(default)]
        paced_ms: u64,
    },
    /// A request failed (or, without `req`, the session).
    Error {
        req: Option<u32>,
        step: String,
        path: Option<String>,
        message: String,
    },
    /// The head is done: the agent answers [`Msg::Bye`] and exits 0.
    Finish,
    Bye,
    /// Stop now: the agent answers [`Msg::Cancelled`] and exits.
    Cancel {
        reason: String,
    },
    Cancelled,
}

/// Writes one frame.
pub fn write_frame(w: &mut dyn Write, kind: u8, payload: &[u8]) -> Result<(), ProtoError> {
    let len = payload.len() + 1;
    if len > MAX_FRAME {
        return Err(ProtoError::TooLarge { len });
    }
    let mut head = [0u8; 5];
    head[..4].copy_from_slice(&(len as u32).to_be_bytes());
    head[4] = kind;
    w.write_all(&head)?;
    w.write_all(payload)?;
    Ok(())
}

/// Reads `len` bytes of `r` in pieces of at most [`BYTES_PER_FRAME`] and hands each to `send`
/// (which writes it as a [`KIND_BYTES`] frame); `r` ending early is an `UnexpectedEof` read
/// error, given to `read_err` as any other.
pub fn send_in_frames<E>(
    r: &mut dyn Read,
    len: u64,
    mut send: impl FnMut(&[u8]) -> Result<(), E>,
    read_err: impl Fn(std::io::Error) -> E,
) -> Result<(), E> {
    let mut buf = vec![0u8; BYTES_PER_FRAME];
    let mut left = len;
    while left > 0 {
        let want = left.min(buf.len() as u64) as usize;
        let n = crate::repository::read_full(r, &mut buf[..want]).map_err(&read_err)?;
        if n == 0 {
            return Err(read_err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                format!("it ends {left} bytes early"),
            )));
        }
        send(&buf[..n])?;
        left -= n as u64;
    }
    Ok(())
}

/// Writes one message as a frame and flushes it.
pub fn write_msg(w: &mut dyn Write, msg: &Msg) -> Result<(), ProtoError> {
    let json = serde_json::to_vec(msg).map_err(|e| ProtoError::BadMessage {
        reason: e.to_string(),
    })?;
    write_frame(w, KIND_MSG, &json)?;
    w.flush()?;
    Ok(())
}

/// Reads one frame: `None` at a clean end of the stream (between frames).
pub fn read_frame(r: &mut dyn Read) -> Result<Option<(u8, Vec<u8>)>, ProtoError> {
    let mut len = [0u8; 4];
    let mut got = 0;
    while got < 4 {
        match r.read(&mut len[got..]) {
            Ok(0) if got == 0 => return Ok(None),
            Ok(0) => return Err(ProtoError::Truncated),
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.into()),
        }
    }
    let len = u32::from_be_bytes(len) as usize;
    if len > MAX_FRAME {
        return Err(ProtoError::TooLarge { len });
    }
    if len == 0 {
        return Err(ProtoError::Empty);
    }
    let mut buf = vec![0u8; len];
    r.read_exact(&mut buf).map_err(|e| match e.kind() {
        std::io::ErrorKind::UnexpectedEof => ProtoError::Truncated,
        _ => e.into(),
    })?;
    let kind = buf.remove(0);
    Ok(Some((kind, buf)))
}

/// The message of a frame of type [`KIND_MSG`].
pub fn decode_msg(kind: u8, payload: &[u8]) -> Result<Msg, ProtoError> {
    if kind != KIND_MSG {
        return Err(ProtoError::UnknownKind { kind });
    }
    serde_json::from_slice(payload).map_err(|e| ProtoError::BadMessage {
        reason: e.to_string(),
    })
}

/// Reads one message: `None` at a clean end of the stream.
pub fn read_msg(r: &mut dyn Read) -> Result<Option<Msg>, ProtoError> {
    match read_frame(r)? {
        None => Ok(None),
        Some((kind, payload)) => decode_msg(kind, &payload).map(Some),
    }
}

/// Reads the agent's [`MAGIC`]. Anything else is returned quoted (up to 200 bytes, read until
/// the stream ends or that much has come), for an error that shows what the node printed.
pub fn read_magic(r: &mut dyn Read) -> Result<(), ProtoError> {
    let mut seen = Vec::with_capacity(MAGIC.len());
    while seen.len() < MAGIC.len() {
        let mut b = [0u8; 1];
        match r.read(&mut b) {
            Ok(0) => break,
            Ok(_) => {
                seen.push(b[0]);
                if !MAGIC.starts_with(&seen) {
                    break;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.into()),
        }
    }
    if seen == MAGIC {
        return Ok(());
    }
    if seen.is_empty() {
        return Err(ProtoError::NoGreeting);
    }
    // Quote what follows too, up to the limit: a start-up file's message is a line or two.
    let mut rest = Vec::new();
    let _ = r
        .take((PRELUDE_QUOTE - seen.len().min(PRELUDE_QUOTE)) as u64)
        .read_to_end(&mut rest);
    seen.extend_from_slice(&rest);
    Err(ProtoError::Prelude {
        seen: String::from_utf8_lossy(&seen).trim_end().to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip(m: &Msg) -> Msg {
        let mut buf = Vec::new();
        write_msg(&mut buf, m).unwrap();
        let mut r = &buf[..];
        let got = read_msg(&mut r).unwrap().unwrap();
        assert!(
            read_msg(&mut r).unwrap().is_none(),
            "one frame, then a clean end"
        );
        got
    }

    #[test]
    fn messages_survive_the_wire() {
        let msgs = [
            Msg::Hello {
                name: "hopsdr-agent".into(),
                version: "0.1.0".into(),
                protocol: PROTOCOL,
                host: "dn1".into(),
                uid: 998,
                roles: vec![Role::Hopsfs, Role::Rondb],
                roots: vec!["/data/1".into(), "/data/ü 2".into()],
                backup_dir: Some("/srv/ndb".into()),
                forced: true,
            },
            Msg::Start {
                version: "0.1.0".into(),
                protocol: 1,
                job: Job::Check,
                store: Some(S3Store {
                    endpoint: Some("http://10.0.0.1:9000".into()),
                    region: "us-east-1".into(),
                    bucket: "b".into(),
                    prefix: "c1".into(),
                    path_style: true,
                    ca_bundle_pem: None,
                    part_size: 5 << 20,
                    parallel_parts: 4,
                    object_lock: Some((crate::repository::LockMode::Governance, 7)),
                }),
                secrets: true,
                bandwidth: Some(AgentBandwidth {
                    timetable: "Mon-08:00,1048576B:off".into(),
                    timezone: "Europe/Stockholm".into(),
                }),
            },
            Msg::Probed {
                req: 2,
                store: Some(StoreProbe {
                    store: "s3://b/c1".into(),
                    problem: None,
                }),
                name_check: Some("ab".into()),
            },
            Msg::Described {
                req: 7,
                roots: vec![RootInfo {
                    path: "/data/1".into(),
                    problem: Some("missing".into()),
                    free_bytes: None,
                    total_bytes: Some(5),
                }],
                backup_dir: None,
            },
            Msg::Error {
                req: None,
                step: "start".into(),
                path: None,
                message: "x".into(),
            },
            Msg::Finish,
            Msg::Cancel {
                reason: "job cancelled".into(),
            },
        ];
        for m in &msgs {
            assert_eq!(&roundtrip(m), m);
        }
    }

    #[test]
    fn the_json_names_the_message() {
        let mut buf = Vec::new();
        write_msg(&mut buf, &Msg::Ping { req: 3 }).unwrap();
        assert_eq!(&buf[..4], &(buf.len() as u32 - 4).to_be_bytes());
        assert_eq!(buf[4], KIND_MSG);
        assert_eq!(&buf[5..], br#"{"t":"ping","req":3}"#);
    }

    #[test]
    fn bad_frames_are_refused_with_what_was_wrong() {
        // Over the limit, before reading the body.
        let big = ((MAX_FRAME + 1) as u32).to_be_bytes();
        let e = read_frame(&mut &big[..]).unwrap_err();
        assert!(matches!(e, ProtoError::TooLarge { .. }), "{e}");
        // Cut in the length and in the body.
        assert!(matches!(
            read_frame(&mut &[0u8, 0][..]).unwrap_err(),
            ProtoError::Truncated
        ));
        assert!(matches!(
            read_frame(&mut &[0u8, 0, 0, 5, 1, b'{'][..]).unwrap_err(),
            ProtoError::Truncated
        ));
        assert!(matches!(
            read_frame(&mut &[0u8, 0, 0, 0][..]).unwrap_err(),
            ProtoError::Empty
        ));
        // A type this side does not know, and JSON that is not a message.
        let mut buf = Vec::new();
        write_frame(&mut buf, 0x7f, b"x").unwrap();
        let e = read_msg(&mut &buf[..]).unwrap_err();
        assert!(e.to_string().contains("0x7f"), "{e}");
        let mut buf = Vec::new();
        write_frame(&mut buf, KIND_MSG, br#"{"t":"launch_missiles"}"#).unwrap();
        let e = read_msg(&mut &buf[..]).unwrap_err();
        assert!(e.to_string().contains("launch_missiles"), "{e}");
        // Writing over the limit fails too.
        let e = write_frame(&mut Vec::new(), KIND_MSG, &vec![0u8; MAX_FRAME]).unwrap_err();
        assert!(matches!(e, ProtoError::TooLarge { .. }), "{e}");
    }

    #[test]
    fn the_greeting_is_checked_and_anything_else_quoted() {
        let mut ok = MAGIC.to_vec();
        ok.extend_from_slice(b"rest");
        let mut r = &ok[..];
        read_magic(&mut r).unwrap();
        assert_eq!(r, b"rest", "nothing after the magic is consumed");

        let motd = b"Welcome to dn1!\nLast login: never\n";
        let e = read_magic(&mut &motd[..]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "it printed \"Welcome to dn1!\\nLast login: never\" instead of the agent's greeting"
        );
        // Starts like the magic, then differs.
        let e = read_magic(&mut &b"HDRAGNT2xyz"[..]).unwrap_err();
        assert!(e.to_string().contains("HDRAGNT2xyz"), "{e}");
        // Quoted up to the limit.
        let long = vec![b'a'; 1000];
        match read_magic(&mut &long[..]).unwrap_err() {
            ProtoError::Prelude { seen } => assert_eq!(seen.len(), PRELUDE_QUOTE),
            e => panic!("{e}"),
        }
        assert!(matches!(
            read_magic(&mut &b""[..]).unwrap_err(),
            ProtoError::NoGreeting
        ));
    }
}
