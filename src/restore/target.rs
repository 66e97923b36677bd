//! The cluster a restore writes to, as it is before anything is touched: its data nodes, its
//! API slots (which NDB API clients are connected, from where, and how many slots are free),
//! its user tables and disk-data objects. [`probe`] reads them (`ndb_mgm SHOW`, then
//! `ndb_show_tables -p`, which itself needs a free API slot); the plan is made from them by a
//! pure function, so what the plan shows is what the target held when the operator confirmed.

use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::cluster::ndb_mgm::{MgmClient, MgmError, NodeState, Show};
use crate::cluster::ndb_tables;
use crate::cluster::node::{Node, NodeError};
use crate::config::Settings;
use crate::ids::NdbNodeId;

/// One `[API]` slot of the target.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiSlot {
    pub id: NdbNodeId,
    /// The address a connected client connects from (None: empty or wildcard).
    pub address: Option<String>,
    pub connected: bool,
}

/// What the target holds.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TargetFacts {
    pub data_nodes: Vec<NdbNodeId>,
    /// The management server's address as SHOW gives it.
    pub mgm_address: Option<String>,
    pub api: Vec<ApiSlot>,
    /// User tables, `database.table`.
    pub tables: Vec<String>,
    /// Disk-data objects, `<kind> <name>` (`LogfileGroup lg_1`, `Tablespace ts_1`, ...).
    pub disk_objects: Vec<String>,
}

impl TargetFacts {
    /// The facts SHOW gives (no tables yet).
    pub fn from_show(show: &Show) -> TargetFacts {
        TargetFacts {
            data_nodes: show.data_nodes.iter().map(|n| n.id).collect(),
            mgm_address: show.mgm_nodes.first().and_then(|n| n.host.clone()),
            api: show
                .api_nodes
                .iter()
                .map(|n| ApiSlot {
                    id: n.id,
                    address: n.host.clone(),
                    connected: n.state != NodeState::NotConnected,
                })
                .collect(),
            tables: Vec::new(),
            disk_objects: Vec::new(),
        }
    }

    pub fn free_api_slots(&self) -> usize {
        self.api.iter().filter(|a| !a.connected).count()
    }

    pub fn connected_api(&self) -> impl Iterator<Item = &ApiSlot> {
        self.api.iter().filter(|a| a.connected)
    }

    /// Whether the target has a logfile group or a tablespace (`ndb_restore -m` would fail on
    /// them: `--no-restore-disk-objects`).
    pub fn has_disk_objects(&self) -> bool {
        self.disk_objects
            .iter()
            .any(|o| o.starts_with("LogfileGroup ") || o.starts_with("Tablespace "))
    }
}

/// Why the target could not be read.
#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    #[error("no [rondb] in the config: nothing to restore onto")]
    NoRondb,
    #[error("failed to read the target cluster: {0}")]
    Mgm(#[from] MgmError),
    #[error("no free API slot on the target cluster: every one of its {total} API slots is connected ({ids}); ndb_show_tables and each ndb_restore need one: stop an NDB API client that is not needed (or add [API] slots to config.ini) and try again")]
    NoFreeApiSlot { total: usize, ids: String },
    #[error("failed to list the target's tables: {0}")]
    Node(#[from] NodeError),
    #[error("failed to list the target's tables: {0}")]
    Listing(String),
}

/// The `ndb_show_tables` argv of the config with `-c <cs> -p` and the type filter, if any.
pub fn show_tables_argv(settings: &Settings, cs: &str, kind: Option<u32>) -> Option<Vec<String>> {
    let mut argv = settings.rondb.as_ref()?.ndb_show_tables.clone();
    argv.extend(["-c".to_string(), cs.to_string(), "-p".to_string()]);
    if let Some(k) = kind {
        argv.extend(["-t".to_string(), k.to_string()]);
    }
    Some(argv)
}

/// The management client of the config.
pub fn mgm_client(settings: &Settings) -> Option<MgmClient> {
    let r = settings.rondb.as_ref()?;
    Some(MgmClient {
        node: Node::at("management client".into(), &r.mgm_host, &settings.ssh),
        client: r.mgm_client.clone(),
        timeout: r.command_timeout,
    })
}

/// Reads the target: SHOW, then (with a free API slot) its dictionary.
pub fn probe(settings: &Settings, cancel: &CancellationToken) -> Result<TargetFacts, TargetError> {
    let mgm = mgm_client(settings).ok_or(TargetError::NoRondb)?;
    let r = settings.rondb.as_ref().ok_or(TargetError::NoRondb)?;
    let show = mgm.show(cancel)?;
    let mut facts = TargetFacts::from_show(&show);
    if facts.free_api_slots() == 0 {
        return Err(TargetError::NoFreeApiSlot {
            total: facts.api.len(),
            ids: facts
                .api
                .iter()
                .map(|a| match &a.address {
                    Some(h) => format!("{} from {h}", a.id),
                    None => a.id.to_string(),
                })
                .collect::<Vec<_>>()
                .join(", "),
        });
    }
    let cs = super::plan::connectstring(settings).unwrap_or_default();
    let argv = show_tables_argv(settings, &cs, None).ok_or(TargetError::NoRondb)?;
    let out = Node::local("head node").run(&argv, r.command_timeout, cancel)?;
    let objects = ndb_tables::parse_parsable(&out.stdout).map_err(TargetError::Listing)?;
    facts.tables = ndb_tables::user_tables(&objects);
    facts.disk_objects = objects
        .iter()
        .filter(|o| {
            matches!(
                o.kind.as_str(),
                "LogfileGroup" | "Tablespace" | "Datafile" | "Undofile"
            )
        })
        .map(|o| format!("{} {}", o.kind, o.name))
        .collect();
    Ok(facts)
}

/// Reads the target, then plans the restore of `m` onto it; the error says why not, naming the
/// thing and what to do.
pub fn plan_for(
    m: &crate::repository::Manifest,
    settings: &Settings,
    cancel: &CancellationToken,
) -> Result<super::plan::RestorePlan, String> {
    let facts = probe(settings, cancel).map_err(|e| e.to_string())?;
    super::plan::plan(m, settings, &facts).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn facts_from_show_count_free_slots_and_know_the_clients() {
        let show = crate::cluster::ndb_mgm::parse_show(include_str!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/ndb_mgm/show.txt"
        )))
        .unwrap();
        let f = TargetFacts::from_show(&show);
        assert_eq!(f.data_nodes, [NdbNodeId(1), NdbNodeId(2)]);
        assert_eq!(f.mgm_address.as_deref(), Some("10.0.0.1"));
        assert_eq!(f.api.len(), 11);
        assert_eq!(f.free_api_slots(), 4);
        assert_eq!(f.connected_api().count(), 7);
        assert!(!f.has_disk_objects());
        let f = TargetFacts {
            disk_objects: vec!["Undofile undo_1.log".into()],
            ..f
        };
        assert!(!f.has_disk_objects());
        let f = TargetFacts {
            disk_objects: vec!["LogfileGroup lg_1".into()],
            ..f
        };
        assert!(f.has_disk_objects());
    }
}
