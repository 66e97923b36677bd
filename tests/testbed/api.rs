//! The NDB API slots of the simulated cluster. config.ini gives the MySQL server node id 67 and
//! `api_slots` host-less `[API]` slots (68, 69, ...). Every NDB API client holds one while it is
//! connected: the Hopsworks services while they run, an unknown client (`api connect`), and each
//! tool process (`ndb_restore`, `ndb_show_tables`, `ndb_drop_table`) for its whole run; with none
//! free a tool fails to connect as the real ones do. The slots live in `D/api.json` under their
//! own lock (`D/api.lock`), taken briefly and never while waiting for the cluster lock, so a tool
//! holds its slot while it waits for the cluster (as a real one is connected while it works). A
//! slot of a tool process that died (SIGKILL) is freed when the slots are next read.

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use crate::state::{read_json, write_json, Config};

/// The MySQL server's node id.
pub const MYSQLD_ID: u32 = 67;

/// One connected NDB API client.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Conn {
    pub id: u32,
    /// A service unit, `tool:<name>` or the name an unknown client was given.
    pub client: String,
    pub address: String,
    /// The tool process holding the slot (freed when it is gone).
    pub pid: Option<u32>,
}

#[derive(Serialize, Deserialize, Default)]
struct Slots {
    conns: Vec<Conn>,
}

fn alive(pid: u32) -> bool {
    // SAFETY: kill with signal 0 only checks that the process exists.
    let r = unsafe { libc::kill(pid as libc::pid_t, 0) };
    r == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

fn with<T>(dir: &Path, f: impl FnOnce(&mut Vec<Conn>) -> T) -> Result<T> {
    let lock = File::create(dir.join("api.lock"))
        .with_context(|| format!("failed to open api.lock in '{}'", dir.display()))?;
    // SAFETY: flock on a valid, owned file descriptor.
    if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) } != 0 {
        anyhow::bail!("failed to lock api.lock in '{}'", dir.display());
    }
    let p: PathBuf = dir.join("api.json");
    let mut s: Slots = if p.exists() {
        read_json(&p)?
    } else {
        Slots::default()
    };
    s.conns.retain(|c| c.pid.is_none_or(alive));
    let out = f(&mut s.conns);
    write_json(&p, &s)?;
    Ok(out)
}

/// The `[API]` slot ids besides the MySQL server's.
pub fn slot_ids(cfg: &Config) -> std::ops::Range<u32> {
    MYSQLD_ID + 1..MYSQLD_ID + 1 + cfg.api_slots
}

/// Connects a client: the lowest free slot, or None when every slot is taken.
pub fn connect(
    dir: &Path,
    cfg: &Config,
    client: &str,
    address: &str,
    pid: Option<u32>,
) -> Result<Option<u32>> {
    with(dir, |conns| {
        let id = slot_ids(cfg).find(|id| !conns.iter().any(|c| c.id == *id))?;
        conns.push(Conn {
            id,
            client: client.to_string(),
            address: address.to_string(),
            pid,
        });
        Some(id)
    })
}

/// Disconnects every slot of `client`.
pub fn disconnect(dir: &Path, client: &str) -> Result<()> {
    with(dir, |conns| conns.retain(|c| c.client != client))
}

/// Every connected client (tool processes that died are gone).
pub fn list(dir: &Path) -> Result<Vec<Conn>> {
    with(dir, |conns| {
        conns.sort_by_key(|c| c.id);
        conns.clone()
    })
}

/// Every slot freed (the cluster lost).
pub fn clear(dir: &Path) -> Result<()> {
    with(dir, |conns| conns.clear())
}

/// A tool process's slot, released when dropped.
pub struct ToolSlot {
    dir: PathBuf,
    client: String,
}

impl Drop for ToolSlot {
    fn drop(&mut self) {
        let _ = disconnect(&self.dir, &self.client);
    }
}

/// Connects tool `name` (this process) from the head node; None when no slot is free.
pub fn connect_tool(dir: &Path, cfg: &Config, name: &str) -> Result<Option<ToolSlot>> {
    let pid = std::process::id();
    let client = format!("tool:{name}:{pid}");
    Ok(
        connect(dir, cfg, &client, &cfg.mgm_ip, Some(pid))?.map(|_| ToolSlot {
            dir: dir.to_path_buf(),
            client,
        }),
    )
}
