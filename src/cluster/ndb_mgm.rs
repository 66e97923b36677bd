//! The NDB management client: running `ndb_mgm -e "<command>"` (or the Hopsworks wrapper
//! `mgm-client.sh`) on a node, and pure parsers of its output, tested on captured samples under
//! `tests/fixtures/ndb_mgm/` (the same files the test-bed prints from).
//!
//! Facts the parsers rely on: the first line is a connection banner whose wording varies
//! (ignored, as is any line not understood); the exit status is 0 on success and 255 on any
//! failure; the byte counts of a backup are printed as unsigned 32-bit and wrap above 4 GiB, so
//! they are never used as sizes.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::node::{Node, NodeError};

pub use crate::ids::NdbNodeId;

/// Errors of the management client.
#[derive(Debug, thiserror::Error)]
pub enum MgmError {
    #[error(transparent)]
    Node(#[from] NodeError),
    #[error("ndb_mgm `{command}` failed (exit {status}): {message}")]
    Failed {
        command: String,
        status: i32,
        message: String,
    },
    #[error("ndb_mgm `{command}`: unexpected output: {detail}")]
    Unexpected { command: String, detail: String },
}

/// State of a data node in `SHOW` / `ALL STATUS`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeState {
    Started,
    NotConnected,
    /// Connected but not started: `starting`, `shutting down`, ...
    Other(String),
}

/// One node line of `SHOW`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShowNode {
    pub id: NdbNodeId,
    pub host: Option<String>,
    pub version: Option<String>,
    pub state: NodeState,
    pub nodegroup: Option<u32>,
    pub master: bool,
}

/// The parsed `SHOW`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Show {
    pub data_nodes: Vec<ShowNode>,
    pub mgm_nodes: Vec<ShowNode>,
    pub api_nodes: Vec<ShowNode>,
    /// The `[ndbd(NDB)] N node(s)` header's N (checked against the lines and `ALL STATUS` by
    /// the caller, which can name the node that is missing).
    pub declared_data_nodes: usize,
}

/// A completed `START BACKUP ... WAIT COMPLETED`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupCompleted {
    pub backup_id: u32,
    pub start_gcp: u64,
    pub stop_gcp: u64,
    pub records: u64,
    pub log_records: u64,
}

/// Parses `SHOW`. Every `id=` line of a section is a node: a connected one is `id=N`, then
/// `\t@<address>` or a single space when its address is empty or a wildcard, then
/// `  (<version>, ...)`; one not connected is `id=N (not connected, ...)`. A node line that does
/// not parse, or a management or API section whose `N node(s)` header disagrees with its lines,
/// is an error naming it; the data nodes' header count is kept in `declared_data_nodes` for the
/// caller to check: a data node must never silently drop out of a backup.
pub fn parse_show(text: &str) -> Result<Show, String> {
    #[derive(Clone, Copy, PartialEq)]
    enum Section {
        None,
        Ndb,
        Mgm,
        Api,
    }
    fn check(section: &str, declared: Option<usize>, got: usize) -> Result<(), String> {
        match declared {
            Some(n) if n != got => Err(format!(
                "SHOW declares {n} {section} node(s) but lists {got}"
            )),
            _ => Ok(()),
        }
    }
    let mut show = Show::default();
    let mut section = Section::None;
    let mut declared: [Option<usize>; 3] = [None; 3];
    let header_count =
        |t: &str| -> Option<usize> { t.split(']').nth(1)?.split_whitespace().next()?.parse().ok() };
    for line in text.lines() {
        let t = line.trim_end();
        let (sec, k) = if t.starts_with("[ndbd(NDB)]") {
            (Section::Ndb, 0)
        } else if t.starts_with("[ndb_mgmd(MGM)]") {
            (Section::Mgm, 1)
        } else if t.starts_with("[mysqld(API)]") {
            (Section::Api, 2)
        } else {
            (Section::None, 3)
        };
        if sec != Section::None {
            section = sec;
            declared[k] = Some(
                header_count(t).ok_or_else(|| format!("unreadable SHOW section header {t:?}"))?,
            );
            continue;
        }
        if t.is_empty() {
            section = Section::None;
            continue;
        }
        if section == Section::None || !t.starts_with("id=") {
            continue;
        }
        let node = parse_show_node(t).ok_or_else(|| {
            let what = match section {
                Section::Ndb => "data node",
                Section::Mgm => "management node",
                _ => "API node",
            };
            format!("unreadable SHOW line for a {what}: {t:?}")
        })?;
        match section {
            Section::Ndb => show.data_nodes.push(node),
            Section::Mgm => show.mgm_nodes.push(node),
            Section::Api => show.api_nodes.push(node),
            Section::None => {}
        }
    }
    check("management", declared[1], show.mgm_nodes.len())?;
    check("API", declared[2], show.api_nodes.len())?;
    show.declared_data_nodes = declared[0].ok_or("SHOW has no [ndbd(NDB)] section")?;
    Ok(show)
}

fn parse_show_node(line: &str) -> Option<ShowNode> {
    let rest = line.strip_prefix("id=")?;
    let end = rest
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(rest.len());
    let id: NdbNodeId = rest[..end].parse().ok()?;
    let rest = &rest[end..];
    if rest.trim_start().starts_with("(not connected") {
        return Some(ShowNode {
            id,
            host: None,
            version: None,
            state: NodeState::NotConnected,
            nodegroup: None,
            master: false,
        });
    }
    // `\t@<address>  (` or, for an empty or wildcard address, a single space then `  (`.
    let (host, paren) = if let Some(r) = rest.strip_prefix("\t@") {
        let i = r.find("  (")?;
        (Some(r[..i].trim().to_string()), &r[i + 2..])
    } else {
        (None, rest.strip_prefix("   ")?)
    };
    if host.as_deref() == Some("") || !paren.starts_with('(') || !paren.ends_with(')') {
        return None;
    }
    let mut node = ShowNode {
        id,
        host,
        version: None,
        state: NodeState::Started,
        nodegroup: None,
        master: false,
    };
    let inner = &paren[1..paren.len() - 1];
    for (i, part) in inner.split(',').map(str::trim).enumerate() {
        if i == 0 {
            node.version = Some(part.to_string());
        } else if let Some(g) = part.strip_prefix("Nodegroup:") {
            node.nodegroup = Some(g.trim().parse().ok()?);
        } else if part == "*" {
            node.master = true;
        } else if part == "no nodegroup" {
        } else if !part.is_empty() {
            // A state word before Nodegroup: connected but not started.
            node.state = NodeState::Other(part.to_string());
        }
    }
    Some(node)
}

/// Parses `ALL STATUS`: (node id, state) per `Node N: ...` line.
pub fn parse_all_status(text: &str) -> Vec<(NdbNodeId, NodeState)> {
    let mut out = Vec::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("Node ") else {
            continue;
        };
        let Some((id, state)) = rest.split_once(':') else {
            continue;
        };
        let Ok(id) = id.trim().parse() else {
            continue;
        };
        let state = state.trim();
        let word = state.split(" (").next().unwrap_or(state).trim();
        let st = match word {
            "started" => NodeState::Started,
            "not connected" => NodeState::NotConnected,
            other => NodeState::Other(other.to_string()),
        };
        out.push((id, st));
    }
    out
}

/// The error text of a failed command: the `*` lines (code and text), abort and failed-to-start
/// events, `Invalid command` lines and what follows; else every non-banner line.
pub fn failure_message(text: &str) -> String {
    let mut parts = Vec::new();
    let lines: Vec<&str> = text.lines().collect();
    for (i, line) in lines.iter().enumerate() {
        let t = line.trim();
        if let Some(rest) = t.strip_prefix('*') {
            let rest = rest.trim();
            if !rest.is_empty() {
                parts.push(rest.to_string());
            }
        } else if t.contains("has been aborted") || t.contains("failed to start") {
            parts.push(t.to_string());
        } else if t.starts_with("Invalid command") {
            parts.push(t.to_string());
            if let Some(next) = lines.get(i + 1) {
                parts.push(next.trim().to_string());
            }
        } else if t.starts_with("Unable to connect") {
            parts.push(t.to_string());
        }
    }
    if parts.is_empty() {
        parts = lines
            .iter()
            .map(|l| l.trim())
            .filter(|l| {
                !l.is_empty()
                    && !l.starts_with("Connected to Management Server")
                    && !l.starts_with("Waiting for")
            })
            .map(str::to_string)
            .collect();
    }
    parts.join("; ")
}

fn num_after(line: &str, key: &str) -> Option<u64> {
    let i = line.find(key)? + key.len();
    line[i..].split_whitespace().next()?.parse().ok()
}

/// Parses the output of `START BACKUP <id> ... WAIT COMPLETED` with its exit status.
pub fn parse_start_backup(text: &str, status: i32) -> Result<BackupCompleted, String> {
    let failed = status != 0
        || text.lines().any(|l| {
            let t = l.trim();
            t == "Backup failed"
                || t.starts_with('*')
                || t.contains("has been aborted")
                || t.contains("failed to start")
                || t.starts_with("Invalid command")
        });
    if failed {
        let msg = failure_message(text);
        return Err(if msg.is_empty() {
            format!("exit status {status} without a message")
        } else {
            msg
        });
    }
    let mut id = None;
    let (mut start, mut stop, mut records, mut logs) = (None, None, None, None);
    for line in text.lines() {
        let t = line.trim();
        if t.ends_with(" completed") && t.contains(": Backup ") {
            id = t
                .split(": Backup ")
                .nth(1)
                .and_then(|r| r.split_whitespace().next())
                .and_then(|n| n.parse().ok());
        }
        if t.starts_with("StartGCP:") {
            start = num_after(t, "StartGCP:");
            stop = num_after(t, "StopGCP:");
        }
        if t.starts_with("#Records:") {
            records = num_after(t, "#Records:");
            logs = num_after(t, "#LogRecords:");
        }
    }
    match (id, start, stop) {
        (Some(backup_id), Some(start_gcp), Some(stop_gcp)) => Ok(BackupCompleted {
            backup_id,
            start_gcp,
            stop_gcp,
            records: records.unwrap_or(0),
            log_records: logs.unwrap_or(0),
        }),
        _ => {
            Err("no \"Backup <id> ... completed\" line with StartGCP/StopGCP in the output".into())
        }
    }
}

/// Parses `ABORT BACKUP <id>`: true if the abort was ordered.
pub fn parse_abort(text: &str) -> bool {
    text.lines()
        .any(|l| l.trim().starts_with("Abort of backup") && l.trim().ends_with("ordered"))
}

/// Parses `ALL REPORT BACKUPSTATUS`: per node, the backup it runs (None when not started).
pub fn parse_backup_status(text: &str) -> Vec<(NdbNodeId, Option<u32>)> {
    let mut out = Vec::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("Node ") else {
            continue;
        };
        let Some((id, what)) = rest.split_once(':') else {
            continue;
        };
        let Ok(id) = id.trim().parse() else {
            continue;
        };
        let what = what.trim();
        if what.starts_with("Backup not started") {
            out.push((id, None));
        } else if let Some(r) = what.strip_prefix("Local backup status: backup ") {
            out.push((id, r.split_whitespace().next().and_then(|n| n.parse().ok())));
        }
    }
    out
}

/// Runs management commands through a configured client command on a node.
#[derive(Debug, Clone)]
pub struct MgmClient {
    pub node: Node,
    /// The client and its fixed arguments, e.g. `["/srv/hops/mysql-cluster/ndb/scripts/mgm-client.sh"]`
    /// or `["/srv/hops/mysql/bin/ndb_mgm", "-c", "10.0.0.1:1186"]`; `-e <command>` is appended.
    pub client: Vec<String>,
    pub timeout: Duration,
}

/// A command's output and exit status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MgmOutput {
    pub status: i32,
    pub stdout: String,
}

impl MgmClient {
    /// Runs `command`; exit statuses are returned, not turned into errors.
    pub fn run(&self, command: &str, cancel: &CancellationToken) -> Result<MgmOutput, MgmError> {
        self.run_with_timeout(command, self.timeout, cancel)
    }

    pub fn run_with_timeout(
        &self,
        command: &str,
        timeout: Duration,
        cancel: &CancellationToken,
    ) -> Result<MgmOutput, MgmError> {
        self.run_with_options(command, &[], None, timeout, cancel)
    }

    /// Runs `command` with client `options` before `-e`, and `input` on its standard input (a
    /// backup password for `--backup-password-from-stdin`: never in argv).
    pub fn run_with_options(
        &self,
        command: &str,
        options: &[&str],
        input: Option<Vec<u8>>,
        timeout: Duration,
        cancel: &CancellationToken,
    ) -> Result<MgmOutput, MgmError> {
        let mut argv = self.client.clone();
        argv.extend(options.iter().map(|o| o.to_string()));
        argv.push("-e".into());
        argv.push(command.to_string());
        let out = match input {
            Some(input) => self
                .node
                .run_with_input_status(&argv, input, timeout, cancel)?,
            None => self.node.run_status(&argv, timeout, cancel)?,
        };
        let mut stdout = out.stdout;
        if !out.stderr.trim().is_empty() {
            stdout.push_str(&out.stderr);
        }
        Ok(MgmOutput {
            status: out.status.unwrap_or(-1),
            stdout,
        })
    }

    fn checked(&self, command: &str, cancel: &CancellationToken) -> Result<String, MgmError> {
        let out = self.run(command, cancel)?;
        if out.status != 0 {
            return Err(MgmError::Failed {
                command: command.to_string(),
                status: out.status,
                message: failure_message(&out.stdout),
            });
        }
        Ok(out.stdout)
    }

    pub fn show(&self, cancel: &CancellationToken) -> Result<Show, MgmError> {
        parse_show(&self.checked("SHOW", cancel)?).map_err(|detail| MgmError::Unexpected {
            command: "SHOW".into(),
            detail,
        })
    }

    /// `ALL STATUS` (which exits 0 even after an error: an empty answer is an error here).
    pub fn all_status(
        &self,
        cancel: &CancellationToken,
    ) -> Result<Vec<(NdbNodeId, NodeState)>, MgmError> {
        let text = self.checked("ALL STATUS", cancel)?;
        let st = parse_all_status(&text);
        if st.is_empty() {
            return Err(MgmError::Unexpected {
                command: "ALL STATUS".into(),
                detail: failure_message(&text),
            });
        }
        Ok(st)
    }

    pub fn backup_status(
        &self,
        cancel: &CancellationToken,
    ) -> Result<Vec<(NdbNodeId, Option<u32>)>, MgmError> {
        Ok(parse_backup_status(
            &self.checked("ALL REPORT BACKUPSTATUS", cancel)?,
        ))
    }
}

/// `[rondb] backup_password`, read now and checked as the RonDB tools check it (printable
/// ASCII, at most 256 characters); `None` without one.
pub fn backup_password(
    s: &crate::config::RondbSettings,
) -> Result<Option<zeroize::Zeroizing<String>>, String> {
    let Some(secret) = &s.backup_password else {
        return Ok(None);
    };
    let p = zeroize::Zeroizing::new(
        secret
            .read(&crate::config::SecretEnv::from_process())
            .map_err(|e| format!("[rondb] backup_password: {e}"))?,
    );
    check_backup_password(&p).map_err(|e| format!("[rondb] backup_password: {e}"))?;
    Ok(Some(p))
}

/// The RonDB tools' rules for a backup password: 1 to 256 printable ASCII characters.
pub fn check_backup_password(p: &str) -> Result<(), String> {
    if p.is_empty() {
        return Err("the password is empty: RonDB refuses an empty backup password".into());
    }
    if let Some(i) = p.bytes().position(|b| !(0x20..=0x7e).contains(&b)) {
        return Err(format!(
            "character {} of the password is not printable ASCII, which RonDB refuses",
            i + 1
        ));
    }
    if p.len() > 256 {
        return Err(format!(
            "the password has {} characters; RonDB takes at most 256",
            p.len()
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    macro_rules! fixture {
        ($name:literal) => {
            include_str!(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/tests/fixtures/ndb_mgm/",
                $name
            ))
        };
    }

    #[test]
    fn show_lists_nodes_with_state_and_master() {
        let s = parse_show(fixture!("show.txt")).unwrap();
        assert_eq!(s.data_nodes.len(), 2);
        assert_eq!(
            s.data_nodes[0],
            ShowNode {
                id: NdbNodeId(1),
                host: Some("10.0.0.11".into()),
                version: Some("RonDB-22.10.3".into()),
                state: NodeState::Started,
                nodegroup: Some(0),
                master: true,
            }
        );
        assert_eq!(s.data_nodes[1].host.as_deref(), Some("10.0.0.12"));
        assert!(!s.data_nodes[1].master);
        assert_eq!(s.mgm_nodes[0].id, NdbNodeId(65));
        assert_eq!(s.api_nodes.len(), 11);
        assert_eq!(s.api_nodes[1].host.as_deref(), Some("10.0.0.1"));
        assert_eq!(s.api_nodes[7].id, NdbNodeId(74));
        assert_eq!(s.api_nodes[7].state, NodeState::NotConnected);
    }

    #[test]
    fn show_keeps_data_nodes_with_a_wildcard_address() {
        let s = parse_show(fixture!("show_wildcard_address.txt")).unwrap();
        let ids: Vec<u32> = s.data_nodes.iter().map(|n| n.id.0).collect();
        assert_eq!(ids, [1, 2]);
        assert_eq!(s.data_nodes[0].host, None);
        assert!(s.data_nodes[0].master);
        assert_eq!(s.data_nodes[1].version.as_deref(), Some("RonDB-22.10.3"));
        assert_eq!(s.data_nodes[1].nodegroup, Some(0));
    }

    #[test]
    fn show_refuses_a_node_line_it_cannot_read_or_a_count_that_disagrees() {
        let good = fixture!("show.txt");
        let bad = good.replace("id=2\t@10.0.0.12  (", "id=2\t10.0.0.12 (");
        let e = parse_show(&bad).unwrap_err();
        assert!(e.contains("data node") && e.contains("id=2"), "{e}");
        let short = good.replace("id=2\t@10.0.0.12  (RonDB-22.10.3, Nodegroup: 0)\n", "");
        let s = parse_show(&short).unwrap();
        assert_eq!((s.declared_data_nodes, s.data_nodes.len()), (2, 1));
        let e = parse_show(&good.replace(
            "id=77 (not connected, accepting connect from any host)\n",
            "",
        ))
        .unwrap_err();
        assert_eq!(e, "SHOW declares 11 API node(s) but lists 10");
        assert!(parse_show("Connected to Management Server at: x\n").is_err());
    }

    #[test]
    fn show_with_a_node_not_connected_or_starting() {
        let s = parse_show(fixture!("show_node_not_connected.txt")).unwrap();
        assert_eq!(s.data_nodes[1].id, NdbNodeId(2));
        assert_eq!(s.data_nodes[1].state, NodeState::NotConnected);
        let n =
            parse_show_node("id=2\t@10.0.0.12  (RonDB-22.10.3, starting, Nodegroup: 0)").unwrap();
        assert_eq!(n.state, NodeState::Other("starting".into()));
        assert_eq!(n.nodegroup, Some(0));
    }

    #[test]
    fn all_status() {
        assert_eq!(
            parse_all_status(fixture!("all_status.txt")),
            vec![
                (NdbNodeId(1), NodeState::Started),
                (NdbNodeId(2), NodeState::Started)
            ]
        );
        assert_eq!(
            parse_all_status(fixture!("all_status_not_connected.txt")),
            vec![
                (NdbNodeId(1), NodeState::Started),
                (NdbNodeId(2), NodeState::NotConnected)
            ]
        );
    }

    #[test]
    fn start_backup_completed() {
        assert_eq!(
            parse_start_backup(fixture!("start_backup_completed.txt"), 0),
            Ok(BackupCompleted {
                backup_id: 5,
                start_gcp: 6738897,
                stop_gcp: 6738900,
                records: 719507,
                log_records: 0,
            })
        );
    }

    #[test]
    fn start_backup_failures_carry_the_tools_text() {
        let e = parse_start_backup(fixture!("start_backup_failed_exists.txt"), 255).unwrap_err();
        assert_eq!(
            e,
            "3001: Could not start backup; Backup failed: file already exists (use 'START BACKUP <backup id>'): Temporary error: Temporary Resource error"
        );
        let e = parse_start_backup(fixture!("start_backup_aborted.txt"), 255).unwrap_err();
        assert_eq!(
            e,
            "3001: Could not start backup; Backup aborted due to node failure: Permanent error: Internal error"
        );
        let e = parse_start_backup(fixture!("start_backup_disk_full.txt"), 255).unwrap_err();
        assert!(
            e.ends_with("No space left on the device: Temporary error: Temporary Resource error"),
            "{e}"
        );
        let e = parse_start_backup(fixture!("start_backup_no_contact.txt"), 255).unwrap_err();
        assert!(e.contains("No contact with database nodes"), "{e}");
        let e = parse_start_backup(fixture!("start_backup_out_of_range.txt"), 255).unwrap_err();
        assert!(e.contains("Backup ID out of range [1 - 4294967294]"), "{e}");
        let e = parse_start_backup(fixture!("connect_failed.txt"), 255).unwrap_err();
        assert!(e.starts_with("Unable to connect"), "{e}");
        // Exit 0 but no completion line: not a success.
        assert!(parse_start_backup(fixture!("start_backup_started.txt"), 0).is_err());
    }

    #[test]
    fn abort_and_backup_status() {
        assert!(parse_abort(fixture!("abort_ok.txt")));
        assert!(!parse_abort(fixture!("abort_failed.txt")));
        assert_eq!(
            parse_backup_status(fixture!("report_backupstatus_idle.txt")),
            vec![(NdbNodeId(1), None), (NdbNodeId(2), None)]
        );
        assert_eq!(
            parse_backup_status(fixture!("report_backupstatus_running.txt")),
            vec![(NdbNodeId(1), Some(5)), (NdbNodeId(2), Some(5))]
        );
    }

    #[test]
    fn backup_passwords_follow_the_rondb_tools_rules() {
        assert_eq!(check_backup_password("Rondb backup pw #2026"), Ok(()));
        assert!(check_backup_password("").unwrap_err().contains("empty"));
        assert!(check_backup_password("tab\there")
            .unwrap_err()
            .contains("character 4"));
        assert!(check_backup_password("pässword")
            .unwrap_err()
            .contains("not printable ASCII"));
        assert!(check_backup_password(&"x".repeat(257))
            .unwrap_err()
            .contains("at most 256"));
        assert_eq!(check_backup_password(&"x".repeat(256)), Ok(()));
    }
}
