//! The HopsFS volumes written back: each datanode's volumes replaced by the backup's (tar
//! streams built from the repository, or each datanode's agent), in parallel, each volume
//! recorded once cleared and each datanode once done, so that a resume writes back only the
//! rest: a datanode done is skipped, a volume cleared is not cleared again (its agent keeps the
//! files an earlier attempt wrote whole; `tar -x` overwrites).

use super::super::tarout;
use super::*;
use std::sync::Arc;

/// Progress of the volumes step: the datanodes written back whole, and the volumes
/// (`<datanode>:<path>`) whose `current/` was cleared (once: a resume writes on what is there).
#[derive(Debug, Default, Serialize, Deserialize)]
struct VolumesDetail {
    done: BTreeSet<String>,
    #[serde(default)]
    cleared: BTreeSet<String>,
}

/// Changes the step's progress with `f` and records it in the catalog.
fn record(
    run: &RestoreRun<'_>,
    i: usize,
    detail: &Mutex<VolumesDetail>,
    f: impl FnOnce(&mut VolumesDetail),
) -> Result<(), RestoreError> {
    let json = {
        let mut g = detail.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut g);
        serde_json::to_string(&*g).unwrap_or_default()
    };
    lock(run.catalog)
        .set_step_detail(run.restore_id, i, &json)
        .map_err(RestoreError::from)
}

/// Writes back the volumes of every datanode of the step not yet done, up to
/// `[restore] parallelism` datanodes at a time; each one finished is recorded before the next
/// is taken, so a resume writes back only what is left (a datanode cut off half-way is written
/// again whole: `tar -x` overwrites).
pub(super) fn write_volumes(
    run: &RestoreRun<'_>,
    i: usize,
    step: &RestoreStep,
    detail: &str,
) -> Result<(), RestoreError> {
    let Some(h) = &run.settings.hopsfs else {
        return Ok(());
    };
    if step.datanodes.is_empty() {
        return Err(refused(
            i,
            step,
            "the stored plan names no datanode (it was made by an older hopsdr): abort this restore and start it again",
        ));
    }
    let done: VolumesDetail = serde_json::from_str(detail).unwrap_or_default();
    let mut todo = Vec::new();
    for name in step.datanodes.iter().filter(|n| !done.done.contains(*n)) {
        let Some(d) = h.datanodes.iter().find(|d| &d.name == name) else {
            return Err(refused(
                i,
                step,
                format!("datanode {name} is not in [[hopsfs.datanodes]]"),
            ));
        };
        todo.push(d);
    }
    // One replica per block: the same choice on every attempt (it depends on the backup and
    // the plan alone), so a resumed restore leaves out the same replicas.
    let skipped = replicas::skipped(run, i, step, &step_moves(run))?;
    if replicas::one_replica(run) {
        tracing::info!(
            step = "restore",
            replicas_left = skipped.count,
            bytes_left = skipped.bytes,
            "one replica per block: the others are left for HDFS to copy"
        );
    }
    let done = Mutex::new(done);
    let next = std::sync::atomic::AtomicUsize::new(0);
    let failed: Mutex<Option<RestoreError>> = Mutex::new(None);
    // Through the agents every datanode at once (each moves its own bytes), else up to
    // `[restore] parallelism` (hopsdrd's link and CPUs carry them all).
    let workers = match agents_write(run) {
        true => todo.len(),
        false => (run.settings.restore.parallelism.max(1) as usize).min(todo.len()),
    };
    std::thread::scope(|scope| {
        for _ in 0..workers {
            scope.spawn(|| loop {
                if failed.lock().map(|f| f.is_some()).unwrap_or(true) {
                    return;
                }
                let k = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let Some(d) = todo.get(k) else { return };
                match write_datanode(run, i, step, d, &skipped, &done) {
                    Ok(()) => {
                        if let Err(e) = record(run, i, &done, |g| {
                            g.done.insert(d.name.clone());
                        }) {
                            failed
                                .lock()
                                .unwrap_or_else(|p| p.into_inner())
                                .get_or_insert(e);
                            return;
                        }
                        (run.progress)(i, &format!("datanode {} written back", d.name));
                        crate::failpoint::hit("restore.volumes.datanode_done", run.cancel);
                    }
                    Err(e) => {
                        failed
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .get_or_insert(e);
                        return;
                    }
                }
            });
        }
    });
    match failed.into_inner().unwrap_or_else(|p| p.into_inner()) {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// The volumes the plan's write-back writes (a plan stored by an older hopsdr has none: every
/// volume back where it came from).
pub(super) fn step_moves(run: &RestoreRun<'_>) -> Vec<crate::restore::plan::VolumeMove> {
    let Some(st) = run
        .plan
        .steps
        .iter()
        .find(|s| s.kind == StepKind::HopsfsVolumes)
    else {
        return Vec::new();
    };
    if !st.moves.is_empty() {
        return st.moves.clone();
    }
    let Some(h) = &run.settings.hopsfs else {
        return Vec::new();
    };
    h.datanodes
        .iter()
        .filter(|d| st.datanodes.contains(&d.name))
        .flat_map(|d| {
            d.volumes
                .iter()
                .enumerate()
                .map(|(k, v)| crate::restore::plan::VolumeMove {
                    from: format!("{}/vol{}", d.name, k + 1),
                    datanode: d.name.clone(),
                    volume: v.display().to_string(),
                })
        })
        .collect()
}

/// Writes back every volume that goes to datanode `d`: each destination volume's `current/`
/// (what the redeploy formatted) removed first unless an earlier attempt did (then recorded in
/// `detail`), then every backed-up volume mapped onto it written by the datanode's agent or as a
/// tar stream built from the repository.
fn write_datanode(
    run: &RestoreRun<'_>,
    i: usize,
    step: &RestoreStep,
    d: &crate::config::HopsfsDatanodeSettings,
    skipped: &Arc<replicas::Skipped>,
    detail: &Mutex<VolumesDetail>,
) -> Result<(), RestoreError> {
    let node = node_of(run, d);
    let moves: Vec<_> = step_moves(run)
        .into_iter()
        .filter(|m| m.datanode == d.name)
        .collect();
    let mut cleared = BTreeSet::new();
    // The volumes an earlier attempt cleared (and perhaps wrote in part): written on, resumed.
    let resumed: BTreeSet<String> = {
        let g = detail.lock().unwrap_or_else(|p| p.into_inner());
        moves
            .iter()
            .map(|mv| mv.volume.clone())
            .filter(|v| g.cleared.contains(&format!("{}:{v}", d.name)))
            .collect()
    };
    for mv in &moves {
        if !resumed.contains(&mv.volume) && cleared.insert(mv.volume.clone()) {
            let current = format!("{}/current", mv.volume);
            node.run(
                &["rm".into(), "-rf".into(), "--".into(), current],
                SHORT_TIMEOUT,
                run.cancel,
            )
            .map_err(node_err(i, step))?;
            node.run(
                &["mkdir".into(), "-p".into(), "--".into(), mv.volume.clone()],
                SHORT_TIMEOUT,
                run.cancel,
            )
            .map_err(node_err(i, step))?;
            record(run, i, detail, |g| {
                g.cleared.insert(format!("{}:{}", d.name, mv.volume));
            })?;
            crate::failpoint::hit("restore.volumes.cleared", run.cancel);
        }
    }
    let mut session = agent_session(run, i, step, d, &node)?;
    for mv in &moves {
        let prefix = format!("hopsfs/{}/", mv.from);
        let vol = mv.volume.clone();
        let from = mv.from.clone();
        let left_out = skipped.clone();
        let skip = move |rel: &str| left_out.skips(&from, rel);
        if let Some(s) = session.as_mut() {
            let what = format!("datanode {}: {}", d.name, mv.from);
            let writing = match resumed.contains(&vol) {
                true => via_agent::Writing::Resume,
                false => via_agent::Writing::New,
            };
            if let Some(w) =
                via_agent::write_volume(run, i, step, s, &prefix, &skip, &vol, &what, writing)?
            {
                tracing::info!(
                    step = "restore",
                    node = %d.name,
                    volume = %vol,
                    files = w.files,
                    kept = w.kept,
                    bytes = w.bytes,
                    paced_ms = w.paced_ms,
                    "volume written back by the node's agent"
                );
                (run.progress)(i, &format!("{what} written back to {vol} by its agent"));
                crate::failpoint::hit("restore.agent.volume_written", run.cancel);
                continue;
            }
            tracing::info!(step = "restore", node = %d.name, volume = %vol, "{what}: content stored before format 3 is written back through hopsdrd");
        }
        let repo = run.repo.clone();
        let manifest = run.manifest.clone();
        let argv: Vec<String> = ["tar", "--numeric-owner", "-C", &vol, "-xf", "-"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let producer: crate::cluster::node::Producer =
            Box::new(move |w: &mut dyn std::io::Write| {
                // Large writes to the pipe, not the tar crate's 8 KiB pieces.
                let mut buffered = std::io::BufWriter::with_capacity(1 << 20, w);
                tarout::write_tar(&repo, &manifest, &prefix, &skip, &mut buffered)?;
                std::io::Write::flush(&mut buffered)
            });
        let (status, stderr) = node
            .stream_with_producer(&argv, Some(producer), TOOL_TIMEOUT, run.cancel, |r| {
                std::io::copy(r, &mut std::io::sink()).map(|_| ())
            })
            .map_err(node_err(i, step))?;
        if !status.success() {
            return Err(node_err(i, step)(NodeError::Failed {
                node: node.name.clone(),
                command: format!("tar -C {vol} -xf -"),
                status: status.to_string(),
                stderr,
            }));
        }
        (run.progress)(
            i,
            &format!("datanode {}: {} written back to {vol}", d.name, mv.from),
        );
    }
    if let Some(s) = session {
        s.finish(run.cancel)
            .map_err(via_agent::agent_err(i, step))?;
    }
    Ok(())
}

fn node_of(run: &RestoreRun<'_>, d: &crate::config::HopsfsDatanodeSettings) -> Node {
    match &d.host {
        NodeHost::Local => Node::local(&format!("datanode {}", d.name)),
        host => Node::at(format!("datanode {}", d.name), host, &run.settings.ssh),
    }
}

/// Whether the datanodes' agents write the volumes back (see [`agent_session`]).
pub(super) fn agents_write(run: &RestoreRun<'_>) -> bool {
    run.settings.agents.enabled
        && matches!(
            run.settings.repository.store,
            crate::config::StoreSettings::S3(_)
        )
        && run.repo.is_packed()
        && run.settings.hopsfs.is_some()
        && !step_moves(run).is_empty()
}

/// The verify step's part for the volumes the agents will write: every datanode's agent
/// fetches and checks its volumes' units (writing nothing), all at once. Content an older
/// format stored is checked by hopsdrd.
pub(super) fn check_through_agents(
    run: &RestoreRun<'_>,
    i: usize,
    step: &RestoreStep,
) -> Result<(), RestoreError> {
    let Some(h) = &run.settings.hopsfs else {
        return Ok(());
    };
    let moves = step_moves(run);
    let skipped = replicas::skipped(run, i, step, &moves)?;
    let dns: Vec<_> = h
        .datanodes
        .iter()
        .filter(|d| moves.iter().any(|m| m.datanode == d.name))
        .collect();
    let results: Vec<Result<(), RestoreError>> = std::thread::scope(|scope| {
        let handles: Vec<_> = dns
            .iter()
            .map(|d| {
                let moves = &moves;
                let skipped = &skipped;
                scope.spawn(move || check_datanode(run, i, step, d, moves, skipped))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .collect()
    });
    results.into_iter().collect()
}

fn check_datanode(
    run: &RestoreRun<'_>,
    i: usize,
    step: &RestoreStep,
    d: &crate::config::HopsfsDatanodeSettings,
    moves: &[crate::restore::plan::VolumeMove],
    skipped: &replicas::Skipped,
) -> Result<(), RestoreError> {
    let node = node_of(run, d);
    let Some(mut session) = agent_session(run, i, step, d, &node)? else {
        return Ok(());
    };
    for mv in moves.iter().filter(|m| m.datanode == d.name) {
        let prefix = format!("hopsfs/{}/", mv.from);
        let what = format!("datanode {}: {}", d.name, mv.from);
        let skip = |rel: &str| skipped.skips(&mv.from, rel);
        let checked = via_agent::write_volume(
            run,
            i,
            step,
            &mut session,
            &prefix,
            &skip,
            &mv.volume,
            &what,
            via_agent::Writing::CheckOnly,
        )?;
        match checked {
            Some(w) => (run.progress)(
                i,
                &format!(
                    "{what}: {} files, {} bytes checked by its agent",
                    w.files, w.bytes
                ),
            ),
            None => {
                // Content stored before format 3: hopsdrd reads it (all of the volume).
                let report = run
                    .repo
                    .verify_manifest_leaving(run.manifest, run.cancel, &|f| {
                        !f.path.starts_with(&prefix)
                    })
                    .map_err(repo_err(i, step))?;
                if let Some(d) = report.damaged.first() {
                    return Err(refused(
                        i,
                        step,
                        format!(
                            "backup {} is damaged: {} ({}); the cluster was not touched",
                            run.manifest.id, d.path, d.reason
                        ),
                    ));
                }
            }
        }
    }
    session
        .finish(run.cancel)
        .map_err(via_agent::agent_err(i, step))
}

/// A session with datanode `d`'s agent for the write-back, when it goes through the agents:
/// `[agents] enabled`, a format 3 repository in S3 (a local repository's content is sent by
/// hopsdrd, as before).
fn agent_session(
    run: &RestoreRun<'_>,
    i: usize,
    step: &RestoreStep,
    d: &crate::config::HopsfsDatanodeSettings,
    node: &Node,
) -> Result<Option<crate::cluster::agent::Session>, RestoreError> {
    use crate::cluster::agent::{Request, Session};
    let a = &run.settings.agents;
    let in_s3 = matches!(
        run.settings.repository.store,
        crate::config::StoreSettings::S3(_)
    );
    if !a.enabled || !in_s3 || !run.repo.is_packed() {
        return Ok(None);
    }
    // Every data key: the backup's content may be sealed under any of them.
    let keys = run.repo.keyring().map(|k| k.for_agent(&k.data_key_ids()));
    let access = crate::cluster::agent::access(&run.settings.repository, keys)
        .map_err(|e| {
            refused(
                i,
                step,
                format!("the repository's settings for the agents: {e}"),
            )
        })?
        .unwrap_or_default();
    let request = Request {
        roles: vec![crate::agent::proto::Role::Hopsfs],
        roots: d.volumes.iter().map(|v| v.display().to_string()).collect(),
        backup_dir: None,
        bandwidth: crate::cluster::agent::bandwidth(a, &d.host),
    };
    Session::open(
        node,
        &a.binary,
        &request,
        crate::agent::proto::Job::Restore,
        Some(&access),
        a.timeout,
        run.cancel,
    )
    .map(Some)
    .map_err(via_agent::agent_err(i, step))
}
