//! `hopsdrctl agents check`: a session with the hopsdr agent of every node the backup reads —
//! each HopsFS datanode (its volumes) and each RonDB data node (its BackupDataDir), one agent per
//! host when a host is both — checking that it starts, is this release, serves the roles and
//! directories the config expects (an ssh forced command may pin others), and can read them.
//!
//! The nodes are those a backup would use: the configured datanodes, and the RonDB data nodes
//! `ndb_mgm SHOW` lists (checked against `[[rondb.data_nodes]]` when they are listed). Each node's result is independent: one that cannot be
//! reached is reported with the reason, the others are still checked.
//!
//! Each agent is also given what a backup will give it ([`access`]): for a repository in S3 the
//! bucket and the credentials, and for an encrypted repository the agent keys, in the secrets
//! frame; it reads the repository's header from the bucket and names a probe with the blob-name
//! key, which must match hopsdrd's own name for it.

use std::time::Instant;

use tokio_util::sync::CancellationToken;

use crate::agent::probe::NAME_PROBE;
use crate::agent::proto::{Job, Msg, Role, RootInfo, StoreProbe};
use crate::api::AgentView;
use crate::cluster::agent::{Access, Hello, Request, Session};
use crate::cluster::ndb_mgm::MgmClient;
use crate::cluster::node::{Node, NodeAddress};
use crate::config::{RepositorySettings, Settings};
use crate::repository::crypto::Keyring;

/// How many nodes are checked at once.
const PARALLEL: usize = 16;

/// Why the nodes to check could not be found.
#[derive(Debug, thiserror::Error)]
pub enum AgentsError {
    #[error("finding the RonDB data nodes: {0}")]
    Rondb(#[from] crate::backup::rondb::RondbError),
    #[error("finding the RonDB data nodes: {0}")]
    Mgm(#[from] crate::cluster::ndb_mgm::MgmError),
    #[error("the repository's settings: {0}")]
    Store(#[from] crate::repository::StorageError),
}

/// What every agent is given (see the module documentation).
pub fn access(
    repository: &RepositorySettings,
    keyring: Option<&Keyring>,
) -> Result<Option<Access>, AgentsError> {
    Ok(crate::cluster::agent::access(
        repository,
        keyring.map(|k| k.for_agent(&[k.current()])),
    )?)
}

/// The name hopsdrd gives [`NAME_PROBE`]: an agent with the same blob-name key names it so.
pub fn name_check(keyring: &Keyring) -> String {
    keyring.blob_hash(NAME_PROBE).to_hex().to_string()
}

/// One host to check: its node (named after everything it is) and what its agent should serve.
#[derive(Debug, Clone)]
pub struct Target {
    pub node: Node,
    pub request: Request,
}

/// The hosts whose agents the backup would use, merged by address.
pub fn targets(
    settings: &Settings,
    cancel: &CancellationToken,
) -> Result<Vec<Target>, AgentsError> {
    let mut out: Vec<Target> = Vec::new();
    let mut add = |node: Node, role: Role, roots: Vec<String>, backup_dir: Option<String>| {
        // One agent per host, unless two data nodes share a host (one --backup-dir each).
        let fits = |t: &Target| {
            t.node.address == node.address
                && (backup_dir.is_none()
                    || t.request.backup_dir.is_none()
                    || t.request.backup_dir == backup_dir)
        };
        let t = match out.iter_mut().find(|t| fits(t)) {
            Some(t) => {
                t.node.name = format!("{}, {}", t.node.name, node.name);
                t
            }
            None => {
                out.push(Target {
                    node,
                    request: Request::default(),
                });
                out.last_mut().expect("just pushed")
            }
        };
        if !t.request.roles.contains(&role) {
            t.request.roles.push(role);
            t.request.roles.sort();
        }
        for r in roots {
            if !t.request.roots.contains(&r) {
                t.request.roots.push(r);
            }
        }
        if backup_dir.is_some() {
            t.request.backup_dir = backup_dir;
        }
    };
    if let Some(h) = &settings.hopsfs {
        for d in crate::backup::hopsfs::datanodes(h, &settings.ssh) {
            add(d.node, Role::Hopsfs, d.volumes, None);
        }
    }
    if let Some(r) = &settings.rondb {
        // The data nodes a backup would use: SHOW, checked against the configured ones.
        let show = MgmClient {
            node: Node::at("management client".into(), &r.mgm_host, &settings.ssh),
            client: r.mgm_client.clone(),
            timeout: r.command_timeout,
        }
        .show(cancel)?;
        for n in crate::backup::rondb::data_nodes(r, &settings.ssh, &show)? {
            add(n.node, Role::Rondb, Vec::new(), Some(n.backup_dir));
        }
    }
    Ok(out)
}

/// What the agents are given, and the name check they must answer.
#[derive(Debug, Default)]
pub struct Given {
    pub access: Option<Access>,
    /// [`name_check`] of hopsdrd's keys (an encrypted repository).
    pub name_check: Option<String>,
}

/// Checks every target's agent, [`PARALLEL`] at a time, in the targets' order.
pub fn check_all(
    targets: &[Target],
    settings: &Settings,
    given: &Given,
    cancel: &CancellationToken,
) -> Vec<AgentView> {
    let mut out = Vec::with_capacity(targets.len());
    for group in targets.chunks(PARALLEL) {
        std::thread::scope(|s| {
            let handles: Vec<_> = group
                .iter()
                .map(|t| s.spawn(|| check(t, settings, given, cancel)))
                .collect();
            for h in handles {
                out.push(h.join().unwrap_or_else(|_| AgentView {
                    problems: vec!["the check panicked".into()],
                    ..AgentView::default()
                }));
            }
        });
    }
    out
}

/// Checks one target's agent.
pub fn check(
    t: &Target,
    settings: &Settings,
    given: &Given,
    cancel: &CancellationToken,
) -> AgentView {
    let start = Instant::now();
    let mut view = AgentView {
        node: t.node.name.clone(),
        address: match &t.node.address {
            NodeAddress::Local => "local".into(),
            NodeAddress::Ssh { host, .. } => host.clone(),
        },
        roles: t.request.roles.iter().map(|r| r.to_string()).collect(),
        ..AgentView::default()
    };
    let r = (|| {
        let mut s = Session::open(
            &t.node,
            &settings.agents.binary,
            &t.request,
            Job::Check,
            given.access.as_ref(),
            settings.agents.timeout,
            cancel,
        )?;
        let req = s.req();
        let described = s.request(
            req,
            &Msg::Describe { req },
            "description of its directories",
            cancel,
        )?;
        let probed = match &given.access {
            Some(_) => {
                let req = s.req();
                Some(s.request(req, &Msg::Probe { req }, "trial of the repository", cancel)?)
            }
            None => None,
        };
        let hello = s.hello().clone();
        s.finish(cancel)?;
        Ok::<_, crate::cluster::agent::AgentError>((hello, described, probed))
    })();
    match r {
        Ok((
            hello,
            Msg::Described {
                roots, backup_dir, ..
            },
            probed,
        )) => {
            view.problems = problems(&t.request, &hello, &roots, backup_dir.as_ref());
            if let Some(Msg::Probed {
                store, name_check, ..
            }) = probed
            {
                view.problems.extend(access_problems(
                    store.as_ref(),
                    given.name_check.as_deref(),
                    name_check.as_deref(),
                ));
                view.repository = store;
                view.keys_match = given
                    .name_check
                    .as_ref()
                    .map(|want| name_check.as_ref() == Some(want));
            }
            view.version = Some(hello.version);
            view.host = Some(hello.host);
            view.uid = Some(hello.uid);
            view.forced = hello.forced;
            view.roots = roots;
            view.backup_dir = backup_dir;
        }
        Ok(_) => view
            .problems
            .push("the agent's description was not a description".into()),
        Err(e) => view.problems.push(e.to_string()),
    }
    view.seconds = start.elapsed().as_secs_f64();
    view
}

/// What is wrong with what an agent made of the repository access it was given.
pub fn access_problems(
    store: Option<&StoreProbe>,
    want_name: Option<&str>,
    got_name: Option<&str>,
) -> Vec<String> {
    let mut p = Vec::new();
    if let Some(StoreProbe {
        store,
        problem: Some(why),
    }) = store
    {
        p.push(format!(
            "the node cannot read the repository ({store}): {why}: the node needs a route to the bucket and the credentials' read and write rights on it"
        ));
    }
    if let Some(want) = want_name {
        if got_name != Some(want) {
            p.push(
                "the agent's blob-name key differs from hopsdrd's: the secrets frame was damaged on the way, or the agent is not this release's".into(),
            );
        }
    }
    p
}

/// What is wrong with an agent that answered: roles, volumes or backup directory other than the
/// config's (a forced command pins its own), and directories it cannot use.
pub fn problems(
    want: &Request,
    hello: &Hello,
    roots: &[RootInfo],
    backup_dir: Option<&RootInfo>,
) -> Vec<String> {
    let mut p = Vec::new();
    for role in &want.roles {
        if !hello.roles.contains(role) {
            p.push(format!(
                "the agent serves no {role} role: its command line (the ssh forced command) needs --role {role}"
            ));
        }
    }
    for r in &want.roots {
        if !hello.roots.contains(r) {
            p.push(format!(
                "volume {r} is not a --root of the agent: add --root {r} to its command line (the ssh forced command)"
            ));
        }
    }
    if let Some(want_dir) = &want.backup_dir {
        if hello.backup_dir.as_deref() != Some(want_dir.as_str()) {
            p.push(format!(
                "the agent's --backup-dir is {}, not {want_dir} ([rondb] backup_dir): fix its command line (the ssh forced command)",
                hello.backup_dir.as_deref().unwrap_or("not set")
            ));
        }
    }
    for r in roots {
        if let Some(why) = &r.problem {
            if want.roots.contains(&r.path) {
                p.push(format!("volume {} {why}", r.path));
            }
        }
    }
    if let Some(d) = backup_dir {
        if let Some(why) = &d.problem {
            p.push(format!("backup directory {} {why}", d.path));
        }
    }
    p
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::StoreSettings;

    fn hello(roles: &[Role], roots: &[&str], backup_dir: Option<&str>) -> Hello {
        Hello {
            version: "1".into(),
            host: "dn1".into(),
            uid: 0,
            roles: roles.to_vec(),
            roots: roots.iter().map(|s| s.to_string()).collect(),
            backup_dir: backup_dir.map(str::to_string),
            forced: true,
        }
    }

    fn root(path: &str, problem: Option<&str>) -> RootInfo {
        RootInfo {
            path: path.into(),
            problem: problem.map(str::to_string),
            free_bytes: None,
            total_bytes: None,
        }
    }

    #[test]
    fn an_agent_that_serves_what_the_config_expects_has_no_problem() {
        let want = Request {
            roles: vec![Role::Hopsfs, Role::Rondb],
            roots: vec!["/d/1".into()],
            backup_dir: Some("/srv/ndb".into()),
            bandwidth: None,
        };
        let h = hello(
            &[Role::Hopsfs, Role::Rondb],
            &["/d/1", "/d/9"],
            Some("/srv/ndb"),
        );
        assert!(
            problems(
                &want,
                &h,
                &[root("/d/1", None), root("/d/9", Some("x"))],
                Some(&root("/srv/ndb", None))
            )
            .is_empty(),
            "a root the config does not use is not a problem"
        );
    }

    #[test]
    fn each_difference_is_named_with_what_to_change() {
        let want = Request {
            roles: vec![Role::Hopsfs, Role::Rondb],
            roots: vec!["/d/1".into(), "/d/2".into()],
            backup_dir: Some("/srv/ndb".into()),
            bandwidth: None,
        };
        let h = hello(&[Role::Hopsfs], &["/d/1"], None);
        let p = problems(
            &want,
            &h,
            &[root(
                "/d/1",
                Some("cannot be read: Permission denied (os error 13)"),
            )],
            Some(&root("/srv/ndb", Some("is not a directory"))),
        );
        assert_eq!(
            p,
            [
                "the agent serves no rondb role: its command line (the ssh forced command) needs --role rondb",
                "volume /d/2 is not a --root of the agent: add --root /d/2 to its command line (the ssh forced command)",
                "the agent's --backup-dir is not set, not /srv/ndb ([rondb] backup_dir): fix its command line (the ssh forced command)",
                "volume /d/1 cannot be read: Permission denied (os error 13)",
                "backup directory /srv/ndb is not a directory",
            ]
        );
    }

    #[test]
    fn a_node_that_cannot_reach_the_bucket_or_names_otherwise_is_a_problem() {
        let ok = StoreProbe {
            store: "s3://b/c".into(),
            problem: None,
        };
        assert!(access_problems(Some(&ok), Some("ab"), Some("ab")).is_empty());
        assert!(
            access_problems(None, None, None).is_empty(),
            "local, plaintext"
        );
        let cut = StoreProbe {
            store: "s3://b/c at http://10.0.0.9:9000".into(),
            problem: Some("connection refused".into()),
        };
        let p = access_problems(Some(&cut), Some("ab"), Some("cd"));
        assert_eq!(p.len(), 2, "{p:?}");
        assert!(
            p[0].contains("s3://b/c at http://10.0.0.9:9000")
                && p[0].contains("connection refused"),
            "{p:?}"
        );
        assert!(p[1].contains("blob-name key differs"), "{p:?}");
        assert_eq!(
            access_problems(None, Some("ab"), None).len(),
            1,
            "no keys at all"
        );
    }

    #[test]
    fn agents_get_the_current_data_key_and_the_bucket_but_nothing_for_a_plain_local_repository() {
        let local = RepositorySettings {
            store: StoreSettings::Local {
                path: "/srv/repo".into(),
            },
            compression_level: 3,
            encryption: None,
        };
        assert!(access(&local, None).unwrap().is_none());
        let mut ring = Keyring::from_master(&[1u8; 32]);
        ring.add_data_key(1, &[2u8; 32]);
        ring.add_data_key(2, &[3u8; 32]);
        let a = access(&local, Some(&ring)).unwrap().unwrap();
        assert!(a.store.is_none() && a.secrets.s3.is_none());
        let keys = a.secrets.keys.as_ref().unwrap();
        assert_eq!(keys.data_key_ids(), [2]);
        assert_eq!(
            keys.blob_hash(NAME_PROBE).to_hex().to_string(),
            name_check(&ring)
        );
    }
}
