//! The restore's steps but the volume write-back: what each step kind does on the target,
//! resuming from what the catalog recorded of it.

use super::volumes::{step_moves, write_volumes};
use super::*;
use crate::ids::NdbNodeId;

/// Progress of the data step, persisted so a resume restores only what is left.
#[derive(Debug, Default, Serialize, Deserialize)]
struct DataDetail {
    done: BTreeSet<NdbNodeId>,
}

pub(super) fn run_step(
    run: &RestoreRun<'_>,
    i: usize,
    step: &RestoreStep,
    detail: &str,
) -> Result<(), RestoreError> {
    let head = Node::local("head node");
    let ne = node_err(i, step);
    match step.kind {
        StepKind::Verify => verify(run, i, step),
        StepKind::Preflight => preflight(run, i, step),
        StepKind::Quiesce => quiesce(run, i, step),
        StepKind::StageRondb => stage(run, i, step),
        StepKind::DropSchemas => {
            let exclude = run.settings.restore.exclude_tables.clone();
            drop_tables(run, i, step, &step.databases, &exclude)
        }
        StepKind::RestoreMeta => restore_meta(run, i, step, detail),
        StepKind::RebuildIndexes => rebuild_indexes(run, i, step, detail),
        StepKind::RestartMysqld => {
            let hosts = &run.settings.restore.mysqld_hosts;
            for (k, c) in step.commands.iter().enumerate() {
                let host = hosts.get(k).cloned().unwrap_or(NodeHost::Local);
                let node = Node::at("MySQL server".into(), &host, &run.settings.ssh);
                let out = node.run(c, SHORT_TIMEOUT, run.cancel).map_err(&ne)?;
                report_output(run, i, &out.stdout);
            }
            Ok(())
        }
        StepKind::StartServices => run_each(run, i, step, SHORT_TIMEOUT),
        StepKind::Reindex | StepKind::Kafka => run_each(run, i, step, TOOL_TIMEOUT),
        StepKind::Opensearch => super::opensearch::restore(run, i, step),
        StepKind::CloudBlocks => cloud_blocks(run, i, step),
        StepKind::RestoreData => {
            let mut d: DataDetail = serde_json::from_str(detail).unwrap_or_default();
            // Each ndb_restore holds an API slot: never more at once than are free.
            let free = free_api_slots(run, i, step)?;
            if free == 0 {
                return Err(refused(
                    i,
                    step,
                    "no free API slot for ndb_restore: every [API] slot of the cluster is connected; stop the NDB API clients that are left (ndb_mgm -e SHOW lists them), then restore resume",
                ));
            }
            let parallel = (run.settings.restore.parallelism.max(1) as usize).min(free);
            tracing::info!(
                restore_id = %run.restore_id,
                "{free} API slot(s) free: up to {parallel} ndb_restore at once"
            );
            (run.progress)(
                i,
                &format!("{free} API slot(s) free: up to {parallel} ndb_restore at once"),
            );
            let password = restore_password(run, i, step)?;
            let password = password.as_deref().map(String::as_str);
            let todo: Vec<(NdbNodeId, &Vec<String>)> = step
                .nodes
                .iter()
                .copied()
                .zip(step.commands.iter())
                .filter(|(n, _)| !d.done.contains(n))
                .collect();
            for batch in todo.chunks(parallel) {
                let results: Vec<(NdbNodeId, Result<String, NodeError>)> =
                    std::thread::scope(|s| {
                        let hs: Vec<_> = batch
                            .iter()
                            .map(|(n, c)| {
                                let head = &head;
                                s.spawn(move || {
                                    let out = run_tool(head, c, password, TOOL_TIMEOUT, run.cancel);
                                    (*n, out.map(|o| o.stdout))
                                })
                            })
                            .collect();
                        hs.into_iter()
                            .zip(batch)
                            .map(|(h, (n, _))| {
                                h.join().unwrap_or_else(|_| {
                                    (
                                        *n,
                                        Err(NodeError::Cancelled {
                                            node: "head node".into(),
                                            command: "ndb_restore".into(),
                                        }),
                                    )
                                })
                            })
                            .collect()
                    });
                let mut first_err = None;
                for (n, r) in results {
                    match r {
                        Ok(out) => {
                            report_output(run, i, &out);
                            d.done.insert(n);
                            let json = serde_json::to_string(&d).unwrap_or_default();
                            lock(run.catalog).set_step_detail(run.restore_id, i, &json)?;
                            crate::failpoint::hit("restore.data.node_done", run.cancel);
                        }
                        Err(e) => {
                            first_err.get_or_insert(e);
                        }
                    }
                }
                if let Some(e) = first_err {
                    return Err(ne(e));
                }
            }
            Ok(())
        }
        StepKind::Schema | StepKind::Users => replay_sql(run, i, step),
        StepKind::HopsfsVolumes => write_volumes(run, i, step, detail),
        StepKind::StartDatanodes => {
            let Some(h) = &run.settings.hopsfs else {
                return Ok(());
            };
            for (d, c) in h.datanodes.iter().zip(step.commands.iter()) {
                let node = Node::at(format!("datanode {}", d.name), &d.host, &run.settings.ssh);
                node.run(c, SHORT_TIMEOUT, run.cancel).map_err(&ne)?;
            }
            Ok(())
        }
        StepKind::WaitSafemode => {
            let start = Instant::now();
            let timeout = run.settings.restore.safemode_timeout;
            // The share of blocks reported, from `hdfs fsck /` (the plan's second command):
            // shown every 30 s while waiting, and in the error on a timeout.
            let share = || -> Option<String> {
                let out = head
                    .run_status(step.commands.get(1)?, TOOL_TIMEOUT, run.cancel)
                    .ok()?;
                let (reported, total) = crate::cluster::hopsfs::fsck_reported(&out.stdout)?;
                Some(format!(
                    "{reported} of {total} blocks reported ({:.1} %)",
                    if total == 0 {
                        100.0
                    } else {
                        reported as f64 * 100.0 / total as f64
                    }
                ))
            };
            let mut shown = Instant::now();
            loop {
                let out = head
                    .run(&step.commands[0], SHORT_TIMEOUT, run.cancel)
                    .map_err(&ne)?;
                let line = out.stdout.trim().to_string();
                report_output(run, i, &line);
                if line.contains("Safe mode is OFF") {
                    if step.one_replica {
                        // One replica per block was written: say what HDFS has left to copy.
                        let under = step
                            .commands
                            .get(1)
                            .and_then(|c| head.run_status(c, TOOL_TIMEOUT, run.cancel).ok())
                            .and_then(|o| crate::cluster::hopsfs::fsck_under_replicated(&o.stdout));
                        let said = match under {
                            Some((0, _)) => "every block has its replication factor".to_string(),
                            Some((blocks, replicas)) => format!("{blocks} blocks under-replicated ({replicas} replicas to copy): HDFS copies them now (hdfs fsck / shows how many are left)"),
                            None => "one replica per block was written: HDFS copies the others now (hdfs fsck / shows how many are left)".to_string(),
                        };
                        tracing::info!(step = "restore", under_replicated = ?under.map(|u| u.0), "{said}");
                        report_output(run, i, &said);
                    }
                    return Ok(());
                }
                if start.elapsed() >= timeout {
                    let share = share().map(|s| format!("{s}; ")).unwrap_or_default();
                    return Err(refused(
                        i,
                        step,
                        format!(
                            "safe mode still ON after {}: {share}datanodes have not reported enough of the blocks the restored metadata references (check hdfs fsck / and the datanodes' logs, then restore resume)",
                            humantime::format_duration(timeout)
                        ),
                    ));
                }
                if shown.elapsed() >= Duration::from_secs(30) {
                    if let Some(s) = share() {
                        report_output(run, i, &s);
                    }
                    shown = Instant::now();
                }
                for _ in 0..20 {
                    if run.cancel.is_cancelled() {
                        return Err(RestoreError::Cancelled {
                            step: i + 1,
                            title: step.title.clone(),
                        });
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        }
        StepKind::Report => {
            // Everything is restored: the staged copy of the RonDB files is not needed any more.
            remove_staging(run.settings, &run.manifest.id);
            Ok(())
        }
    }
}

/// Runs the step's commands on the head node, one after the other.
fn run_each(
    run: &RestoreRun<'_>,
    i: usize,
    step: &RestoreStep,
    timeout: Duration,
) -> Result<(), RestoreError> {
    let head = Node::local("head node");
    for c in &step.commands {
        let out = head
            .run(c, timeout, run.cancel)
            .map_err(node_err(i, step))?;
        report_output(run, i, &out.stdout);
    }
    Ok(())
}

fn report_output(run: &RestoreRun<'_>, i: usize, out: &str) {
    for line in out
        .lines()
        .rev()
        .take(5)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
    {
        (run.progress)(i, line);
    }
}

fn verify(run: &RestoreRun<'_>, i: usize, step: &RestoreStep) -> Result<(), RestoreError> {
    match run.backup_state {
        Some(State::Failed) | Some(State::Interrupted) => {
            return Err(refused(
                i,
                step,
                format!(
                    "backup {} is recorded {}: it cannot be restored; choose a succeeded backup (hopsdrctl backups list)",
                    run.manifest.id,
                    run.backup_state.map(|s| s.as_str()).unwrap_or("")
                ),
            ))
        }
        Some(State::Partial) if !run.options.allow_partial => {
            return Err(refused(
                i,
                step,
                format!(
                    "backup {} is partial (not every block was captured): restore it with --allow-partial if that is what you want",
                    run.manifest.id
                ),
            ))
        }
        _ => {}
    }
    // With the agents writing the volumes back, each reads its volumes' units back here instead
    // (on its own link, all at once); hopsdrd checks the rest and that those units are indexed.
    let agents = super::volumes::agents_write(run);
    let left = |f: &crate::repository::FileEntry| agents && f.path.starts_with("hopsfs/");
    let report = run
        .repo
        .verify_manifest_leaving(run.manifest, run.cancel, &left)
        .map_err(|e| match e {
            RepoError::Cancelled => RestoreError::Cancelled {
                step: i + 1,
                title: step.title.clone(),
            },
            e => repo_err(i, step)(e),
        })?;
    if !report.damaged.is_empty() {
        // The next backups write these blobs again.
        let bad: Vec<(crate::ids::BlobId, String)> = report
            .damaged
            .iter()
            .filter_map(|d| d.blob.clone().map(|b| (b, d.reason.clone())))
            .collect();
        if let Err(e) = lock(run.catalog).add_bad_blobs(&bad, &run.manifest.id, Utc::now()) {
            tracing::error!("failed to record the damaged blobs: {e}");
        }
        let first: Vec<String> = report
            .damaged
            .iter()
            .take(5)
            .map(|d| format!("{} ({})", d.path, d.reason))
            .collect();
        return Err(refused(
            i,
            step,
            format!(
                "backup {} is damaged: {} file(s), e.g. {}; the cluster was not touched",
                run.manifest.id,
                report.damaged.len(),
                first.join("; ")
            ),
        ));
    }
    (run.progress)(
        i,
        &format!(
            "{} files, {} blobs, {} bytes verified",
            report.files_checked, report.blobs_checked, report.bytes_checked
        ),
    );
    if agents {
        super::volumes::check_through_agents(run, i, step)?;
    }
    // Versions: the RonDB version at backup time against the target's.
    if let (Some(mgm), Some(backup_version)) = (
        crate::restore::target::mgm_client(run.settings),
        run.manifest
            .info
            .facts
            .rondb
            .as_ref()
            .and_then(|r| r.version.as_deref()),
    ) {
        let show = mgm.show(run.cancel).map_err(mgm_err(i, step))?;
        let target = show.data_nodes.first().and_then(|n| n.version.clone());
        if let Some(t) = target {
            if t != backup_version && !run.options.force {
                return Err(refused(
                    i,
                    step,
                    format!("the backup was taken on {backup_version} but the target runs {t}: restore onto the same version, or use --force"),
                ));
            }
        }
    }
    Ok(())
}

fn preflight(run: &RestoreRun<'_>, i: usize, step: &RestoreStep) -> Result<(), RestoreError> {
    let Some(mgm) = crate::restore::target::mgm_client(run.settings) else {
        return Err(refused(
            i,
            step,
            "no [rondb] in the config: nothing to restore onto",
        ));
    };
    let status = mgm.all_status(run.cancel).map_err(mgm_err(i, step))?;
    let mut problems = Vec::new();
    for (id, st) in &status {
        if *st != NodeState::Started {
            problems.push(format!("data node {id} is {st:?}, not started"));
        }
    }
    // The plan's command, if any: the dictionary's user tables (when the backup did not record
    // its tables, nothing is dropped and a target holding some is refused).
    let mut commands = step.commands.iter();
    if let Some(show) = commands.next() {
        let head = Node::local("head node");
        let out = head
            .run(show, SHORT_TIMEOUT, run.cancel)
            .map_err(node_err(i, step))?;
        let objects = ndb_tables::parse_parsable(&out.stdout).map_err(|e| refused(i, step, e))?;
        let user = ndb_tables::user_tables(&objects);
        if !user.is_empty() {
            let first: Vec<&str> = user.iter().take(5).map(String::as_str).collect();
            problems.push(format!(
                "RonDB already holds {} user table(s) ({}{}) and the backup did not record its tables, so hopsdr cannot tell which to drop: drop their databases by hand",
                user.len(),
                first.join(", "),
                if user.len() > 5 { ", ..." } else { "" }
            ));
        }
    }
    // The volumes a write-back replaces: one that holds blocks is somebody's data.
    let moves = step_moves(run);
    let mut checked = BTreeSet::new();
    for mv in &moves {
        if !checked.insert((mv.datanode.clone(), mv.volume.clone())) {
            continue;
        }
        let Some(d) = run
            .settings
            .hopsfs
            .as_ref()
            .and_then(|h| h.datanodes.iter().find(|d| d.name == mv.datanode))
        else {
            continue;
        };
        let node = Node::at(format!("datanode {}", d.name), &d.host, &run.settings.ssh);
        let current = format!("{}/current", mv.volume);
        let out = node
            .run_status(
                &[
                    "find".into(),
                    current.clone(),
                    "-name".into(),
                    "blk_*".into(),
                    "-print".into(),
                    "-quit".into(),
                ],
                SHORT_TIMEOUT,
                run.cancel,
            )
            .map_err(node_err(i, step))?;
        if !out.stdout.trim().is_empty() {
            problems.push(format!(
                "datanode {} volume {} holds HopsFS blocks ({}): the restore would replace them; empty the volume if they are not needed, or map the backup's volumes elsewhere ([restore.volume_map])",
                d.name,
                mv.volume,
                out.stdout.trim()
            ));
        } else if out.status == Some(0) {
            (run.progress)(
                i,
                &format!(
                    "datanode {} volume {}: formatted by the redeploy, no blocks: it is replaced",
                    d.name, mv.volume
                ),
            );
        }
    }
    let _ = commands.next();
    if problems.is_empty() {
        return Ok(());
    }
    if run.options.force {
        for p in &problems {
            tracing::warn!(step = %step.title, "preflight (forced): {p}");
        }
        return Ok(());
    }
    Err(refused(
        i,
        step,
        format!(
            "the target is not a freshly redeployed cluster: {} (or use --force)",
            problems.join("; ")
        ),
    ))
}

/// Stages the RonDB backup's files under `[restore] staging_dir` for ndb_restore: each data
/// node's `rondb/<node>/` fetched on a thread of its own (up to `[restore] parallelism` at a
/// time; with a repository in S3 the fetches' round trips overlap), every file synced. The first
/// failure stops the others and is the error.
fn stage(run: &RestoreRun<'_>, i: usize, step: &RestoreStep) -> Result<(), RestoreError> {
    let base = run
        .settings
        .restore
        .staging_dir
        .join(run.manifest.id.as_str());
    // The files of each data node (`rondb/<node>/...`), in the manifest's order.
    let mut groups: Vec<(String, Vec<&crate::repository::FileEntry>)> = Vec::new();
    for e in &run.manifest.entries {
        let Entry::File(f) = e else { continue };
        let Some(rest) = f.path.strip_prefix("rondb/") else {
            continue;
        };
        let node = rest.split('/').next().unwrap_or("").to_string();
        match groups.iter_mut().find(|(n, _)| *n == node) {
            Some((_, files)) => files.push(f),
            None => groups.push((node, vec![f])),
        }
    }
    let workers = (run.settings.restore.parallelism.max(1) as usize).min(groups.len());
    let next = std::sync::atomic::AtomicUsize::new(0);
    let failed: Mutex<Option<RestoreError>> = Mutex::new(None);
    let stop = run.cancel.child_token();
    std::thread::scope(|scope| {
        for _ in 0..workers {
            scope.spawn(|| loop {
                let k = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let Some((node, files)) = groups.get(k) else {
                    return;
                };
                match stage_files(run, i, step, &base, files, &stop) {
                    Ok(()) => (run.progress)(
                        i,
                        &format!("data node {node}: {} files staged", files.len()),
                    ),
                    Err(e) => {
                        // The error first: the others stop (cancelled) only after it is kept.
                        failed
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .get_or_insert(e);
                        stop.cancel();
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

/// Writes `files` (one data node's) beneath `base`, each synced; stops when `stop` is
/// cancelled.
fn stage_files(
    run: &RestoreRun<'_>,
    i: usize,
    step: &RestoreStep,
    base: &Path,
    files: &[&crate::repository::FileEntry],
    stop: &CancellationToken,
) -> Result<(), RestoreError> {
    let io = |e: std::io::Error, p: &Path| {
        let hint = if e.raw_os_error() == Some(libc::ENOSPC) {
            ": make room in [restore] staging_dir (it needs the size of the RonDB backup), then restore resume"
        } else {
            ""
        };
        refused(
            i,
            step,
            format!("failed to write \"{}\": {e}{hint}", p.display()),
        )
    };
    for f in files {
        if stop.is_cancelled() {
            return Err(RestoreError::Cancelled {
                step: i + 1,
                title: step.title.clone(),
            });
        }
        let Some(target) = safe_join(base, &f.path) else {
            return Err(refused(
                i,
                step,
                format!(
                    "manifest path \"{}\" would leave the staging directory: refused",
                    f.path
                ),
            ));
        };
        if let Some(dir) = target.parent() {
            std::fs::create_dir_all(dir).map_err(|e| io(e, dir))?;
        }
        let mut out = std::fs::File::create(&target).map_err(|e| io(e, &target))?;
        run.repo.restore_file(f, &mut out).map_err(|e| match e {
            // Out of room (or another write error) in the staging directory: name the file.
            crate::repository::RepoError::WriteOutput { source, .. } => io(source, &target),
            e => repo_err(i, step)(e),
        })?;
        out.sync_all().map_err(|e| io(e, &target))?;
    }
    Ok(())
}

/// HopsFS in cloud mode: each block object recorded by the backup made current again (a copy
/// of its recorded version onto its key) where its current version is another, or it is
/// deleted. Run again, it copies only what is still not as recorded.
fn cloud_blocks(run: &RestoreRun<'_>, i: usize, step: &RestoreStep) -> Result<(), RestoreError> {
    let Some(c) = run.settings.hopsfs.as_ref().and_then(|h| h.cloud.as_ref()) else {
        return Err(refused(
            i,
            step,
            "[hopsfs.cloud] is not configured any more: configure it, then restore resume",
        ));
    };
    let Some(f) = run
        .manifest
        .files()
        .find(|f| f.path == crate::repository::layout::HOPSFS_CLOUD_VERSIONS)
    else {
        return Err(refused(
            i,
            step,
            "the backup holds no versions of the block objects",
        ));
    };
    let mut text = Vec::new();
    run.repo
        .restore_file(f, &mut text)
        .map_err(repo_err(i, step))?;
    let cloud_err = |e: crate::backup::hopsfs::HopsfsError| refused(i, step, e.to_string());
    let s3 = crate::backup::cloud::open(c).map_err(cloud_err)?;
    let current: std::collections::HashMap<String, String> =
        crate::backup::cloud::current_versions(c, chrono::Utc::now())
            .map_err(cloud_err)?
            .into_iter()
            .map(|v| (v.key, v.version_id))
            .collect();
    let (mut copied, mut kept) = (0u64, 0u64);
    for line in String::from_utf8_lossy(&text).lines() {
        let mut it = line.split('\t');
        let (Some(key), Some(version)) = (it.next(), it.next()) else {
            return Err(refused(
                i,
                step,
                format!("versions.tsv: not a `key, version, size` line: {line:?}"),
            ));
        };
        if current.get(key).map(String::as_str) == Some(version) {
            kept += 1;
            continue;
        }
        if run.cancel.is_cancelled() {
            return Err(refused(
                i,
                step,
                "stopped: hopsdrd is stopping (restore resume goes on)",
            ));
        }
        s3.run_control(
            "copy a version back",
            s3.control().copy_version(key, version),
        )
        .map_err(|e| refused(i, step, e.to_string()))?;
        copied += 1;
        crate::failpoint::hit("restore.cloud.copied", run.cancel);
    }
    (run.progress)(
        i,
        &format!("{copied} block objects put back to their recorded version, {kept} already were"),
    );
    Ok(())
}

fn replay_sql(run: &RestoreRun<'_>, i: usize, step: &RestoreStep) -> Result<(), RestoreError> {
    let path = match step.kind {
        StepKind::Schema => crate::repository::layout::SCHEMA_SQL,
        _ => crate::repository::layout::USERS_SQL,
    };
    let Some(m) = &run.settings.mysql else {
        return Err(refused(
            i,
            step,
            "no [mysql] in the config: cannot replay the SQL; add it and resume",
        ));
    };
    let Some(f) = run.manifest.files().find(|f| f.path == path) else {
        return Ok(());
    };
    let mut sql = Vec::new();
    run.repo
        .restore_file(f, &mut sql)
        .map_err(repo_err(i, step))?;
    let sql = String::from_utf8_lossy(&sql).into_owned();
    let password = m
        .password
        .read(&SecretEnv::from_process())
        .map_err(|e| refused(i, step, e.to_string()))?;
    let target = MysqlTarget::of(m, password);
    let work = async {
        let mut c = MysqlClient::connect(&target).await?;
        let n = c.replay(&sql).await?;
        c.disconnect().await;
        Ok::<_, MysqlError>(n)
    };
    let me = |source| RestoreError::Mysql {
        step: i + 1,
        title: step.title.clone(),
        source: Box::new(source),
    };
    let n = match tokio::runtime::Handle::try_current() {
        Ok(h) => h.block_on(work).map_err(me)?,
        Err(_) => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| refused(i, step, e.to_string()))?
            .block_on(work)
            .map_err(me)?,
    };
    (run.progress)(i, &format!("{n} statements replayed"));
    Ok(())
}

/// Progress of the metadata and index steps: whether their `ndb_restore` was started before.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Attempted {
    attempted: bool,
}

/// `ndb_restore -m` is not idempotent (a second run fails on the tables the first created), so
/// the attempt is recorded before it runs. Run again after a crash inside the step, it first
/// lists the target's tables (`ndb_show_tables -p`): none of the backup's databases' tables →
/// the metadata is restored as usual; every table the backup recorded → the first attempt
/// finished, nothing to do; some → they are dropped (they can only be the interrupted run's:
/// the schema-drop step emptied those databases) and the metadata is restored again. A backup
/// that did not record its tables is refused instead, naming the databases to drop. Disk-data
/// objects the interrupted run created make the new run pass `--no-restore-disk-objects`.
fn restore_meta(
    run: &RestoreRun<'_>,
    i: usize,
    step: &RestoreStep,
    detail: &str,
) -> Result<(), RestoreError> {
    let d: Attempted = serde_json::from_str(detail).unwrap_or_default();
    let mut command = step.commands[0].clone();
    if d.attempted {
        let (present, has_disk) = list_target(run, i, step)?;
        let r = &run.settings.restore;
        let recorded = run
            .manifest
            .info
            .facts
            .rondb
            .as_ref()
            .and_then(|r| r.tables.as_ref());
        match meta_on_resume(&present, recorded.map(Vec::as_slice), &r.exclude_tables) {
            MetaResume::Run => {}
            MetaResume::Done => {
                (run.progress)(
                    i,
                    "every table of the backup exists: the metadata was restored before the interruption",
                );
                return Ok(());
            }
            MetaResume::DropAndRun(databases) => {
                let what = format!(
                    "an interrupted ndb_restore -m left part of the schema in {}: dropped, then restored again",
                    databases.join(", ")
                );
                tracing::warn!(restore_id = %run.restore_id, "{what}");
                (run.progress)(i, &what);
                drop_tables(run, i, step, &databases, &r.exclude_tables)?;
            }
            MetaResume::Refuse(why) => return Err(refused(i, step, why)),
        }
        let flag = "--no-restore-disk-objects".to_string();
        if has_disk && !command.contains(&flag) {
            let at = command
                .iter()
                .position(|a| a == "--disable-indexes")
                .map(|p| p + 1)
                .unwrap_or(command.len());
            command.insert(at, flag);
        }
    }
    run_attempted(run, i, step, &command, "restore.meta.done")
}

/// Records that the step's tool is started (for a resume to know), runs it, and passes the
/// failpoint `done` right after it returned.
fn run_attempted(
    run: &RestoreRun<'_>,
    i: usize,
    step: &RestoreStep,
    command: &[String],
    done: &str,
) -> Result<(), RestoreError> {
    let password = restore_password(run, i, step)?;
    let json = serde_json::to_string(&Attempted { attempted: true }).unwrap_or_default();
    lock(run.catalog).set_step_detail(run.restore_id, i, &json)?;
    let out = run_tool(
        &Node::local("head node"),
        command,
        password.as_deref().map(String::as_str),
        TOOL_TIMEOUT,
        run.cancel,
    )
    .map_err(node_err(i, step))?;
    report_output(run, i, &out.stdout);
    crate::failpoint::hit(done, run.cancel);
    Ok(())
}

/// What a metadata step run again after a crash does.
#[derive(Debug, PartialEq, Eq)]
enum MetaResume {
    /// No table of the backup's databases: restore the metadata.
    Run,
    /// Every table the backup recorded exists: the interrupted attempt finished.
    Done,
    /// Part of the schema exists: drop these databases' tables, then restore the metadata.
    DropAndRun(Vec<String>),
    /// Some tables exist, not known to be the backup's: the operator drops them.
    Refuse(String),
}

fn meta_on_resume(
    present: &[String],
    recorded: Option<&[String]>,
    exclude: &[String],
) -> MetaResume {
    let Some(recorded) = recorded.filter(|r| !r.is_empty()) else {
        let user: Vec<&String> = present.iter().filter(|t| !exclude.contains(t)).collect();
        if user.is_empty() {
            return MetaResume::Run;
        }
        let dbs: BTreeSet<&str> = user
            .iter()
            .filter_map(|t| t.split_once('.').map(|x| x.0))
            .collect();
        return MetaResume::Refuse(format!(
            "an interrupted ndb_restore -m left {} table(s) and the backup did not record its tables: drop the databases {} and run restore resume",
            user.len(),
            dbs.into_iter().collect::<Vec<_>>().join(", ")
        ));
    };
    let databases = crate::restore::plan::backup_databases(recorded);
    let ours = crate::restore::plan::tables_to_drop(present, &databases, exclude);
    if ours.is_empty() {
        return MetaResume::Run;
    }
    let want: BTreeSet<&String> = recorded.iter().filter(|t| !exclude.contains(t)).collect();
    let have: BTreeSet<&String> = ours.iter().collect();
    if want.is_subset(&have) {
        return MetaResume::Done;
    }
    let dbs: BTreeSet<String> = ours
        .iter()
        .filter_map(|t| t.split_once('.').map(|x| x.0.to_string()))
        .collect();
    MetaResume::DropAndRun(dbs.into_iter().collect())
}

/// The target's user tables and whether it has disk-data objects (`ndb_show_tables -p`).
fn list_target(
    run: &RestoreRun<'_>,
    i: usize,
    step: &RestoreStep,
) -> Result<(Vec<String>, bool), RestoreError> {
    let cs = crate::restore::plan::connectstring(run.settings).unwrap_or_default();
    let Some(argv) = crate::restore::target::show_tables_argv(run.settings, &cs, None) else {
        return Err(refused(i, step, "no [rondb] in the config"));
    };
    let out = Node::local("head node")
        .run(&argv, SHORT_TIMEOUT, run.cancel)
        .map_err(node_err(i, step))?;
    let objects = ndb_tables::parse_parsable(&out.stdout).map_err(|e| refused(i, step, e))?;
    let has_disk = objects
        .iter()
        .any(|o| o.kind == "LogfileGroup" || o.kind == "Tablespace");
    Ok((ndb_tables::user_tables(&objects), has_disk))
}

/// Drops every table of `databases` but the excluded ones, with `ndb_drop_table`, in rounds:
/// a table a foreign key references cannot be dropped before the table holding the key, so
/// what failed is tried again after the others, as long as each round drops something. Lists
/// the target each round: run again after a crash, it drops what is left.
fn drop_tables(
    run: &RestoreRun<'_>,
    i: usize,
    step: &RestoreStep,
    databases: &[String],
    exclude: &[String],
) -> Result<(), RestoreError> {
    let cs = crate::restore::plan::connectstring(run.settings).unwrap_or_default();
    let head = Node::local("head node");
    let mut left = usize::MAX;
    let mut last_output = String::new();
    loop {
        let (present, _) = list_target(run, i, step)?;
        let todo = crate::restore::plan::tables_to_drop(&present, databases, exclude);
        if todo.is_empty() {
            return Ok(());
        }
        if todo.len() >= left {
            return Err(refused(
                i,
                step,
                format!(
                    "could not drop {} ({}): {}; drop them by hand, then restore resume",
                    if todo.len() == 1 { "a table" } else { "tables" },
                    todo.join(", "),
                    last_output.trim()
                ),
            ));
        }
        left = todo.len();
        last_output.clear();
        for db in databases {
            let tables: Vec<String> = todo
                .iter()
                .filter_map(|t| t.strip_prefix(&format!("{db}.")).map(str::to_string))
                .collect();
            if tables.is_empty() {
                continue;
            }
            let mut argv = run.settings.restore.ndb_drop_table.clone();
            argv.extend(["-c".to_string(), cs.clone(), "-d".to_string(), db.clone()]);
            argv.extend(tables);
            let out = head
                .run_status(&argv, SHORT_TIMEOUT, run.cancel)
                .map_err(node_err(i, step))?;
            for l in out.stdout.lines().filter(|l| l.contains(": ")) {
                last_output.push_str(&format!("{db}: {l}; "));
            }
        }
        (run.progress)(
            i,
            &format!(
                "{left} table(s) of {} dropped in this round",
                databases.join(", ")
            ),
        );
        crate::failpoint::hit("restore.drop.round", run.cancel);
    }
}

/// `--rebuild-indexes` creates every foreign key without checking, so a second run after an
/// interrupted one would fail on the keys the first created: a resumed step first drops the
/// indexes and foreign keys again (`--disable-indexes`, the same backup and exclusions).
fn rebuild_indexes(
    run: &RestoreRun<'_>,
    i: usize,
    step: &RestoreStep,
    detail: &str,
) -> Result<(), RestoreError> {
    let head = Node::local("head node");
    let ne = node_err(i, step);
    let d: Attempted = serde_json::from_str(detail).unwrap_or_default();
    let command = &step.commands[0];
    if d.attempted {
        let disable: Vec<String> = command
            .iter()
            .filter(|a| *a != "--restore-epoch")
            .map(|a| {
                if a == "--rebuild-indexes" {
                    "--disable-indexes".to_string()
                } else {
                    a.clone()
                }
            })
            .collect();
        (run.progress)(
            i,
            "an interrupted run may have created some indexes and foreign keys: dropped first (--disable-indexes)",
        );
        let password = restore_password(run, i, step)?;
        let password = password.as_deref().map(String::as_str);
        let out = run_tool(&head, &disable, password, TOOL_TIMEOUT, run.cancel).map_err(&ne)?;
        report_output(run, i, &out.stdout);
    }
    run_attempted(run, i, step, command, "restore.rebuild.done")
}

/// `[rondb] backup_password` when the step decrypts (its commands read the password from
/// standard input), read now.
fn restore_password(
    run: &RestoreRun<'_>,
    i: usize,
    step: &RestoreStep,
) -> Result<Option<zeroize::Zeroizing<String>>, RestoreError> {
    let decrypts = step.commands.iter().any(|c| {
        c.iter()
            .any(|a| a == crate::restore::plan::DECRYPT_FROM_STDIN)
    });
    if !decrypts {
        return Ok(None);
    }
    let Some(r) = &run.settings.rondb else {
        return Err(refused(
            i,
            step,
            "the backup is encrypted by RonDB and the config has no [rondb] backup_password",
        ));
    };
    match crate::cluster::ndb_mgm::backup_password(r) {
        Ok(Some(p)) => Ok(Some(p)),
        Ok(None) => Err(refused(
            i,
            step,
            "the backup is encrypted by RonDB: set [rondb] backup_password, then restore resume",
        )),
        Err(e) => Err(refused(i, step, e)),
    }
}

/// Runs a tool on `node`; one that reads the backup password from standard input gets
/// `password` there (never in argv).
fn run_tool(
    node: &Node,
    argv: &[String],
    password: Option<&str>,
    timeout: Duration,
    cancel: &tokio_util::sync::CancellationToken,
) -> Result<crate::cluster::node::CommandOutput, NodeError> {
    match password {
        Some(p)
            if argv
                .iter()
                .any(|a| a == crate::restore::plan::DECRYPT_FROM_STDIN) =>
        {
            node.run_with_input(argv, format!("{p}\n").into_bytes(), timeout, cancel)
        }
        _ => node.run(argv, timeout, cancel),
    }
}

/// Free API slots of the cluster now (`ndb_mgm SHOW`).
fn free_api_slots(
    run: &RestoreRun<'_>,
    i: usize,
    step: &RestoreStep,
) -> Result<usize, RestoreError> {
    let Some(mgm) = crate::restore::target::mgm_client(run.settings) else {
        return Err(refused(i, step, "no [rondb] in the config"));
    };
    let show = mgm.show(run.cancel).map_err(mgm_err(i, step))?;
    Ok(crate::restore::target::TargetFacts::from_show(&show).free_api_slots())
}

/// Stops the services (head node) and the datanodes (on their hosts), then waits until no
/// NDB API client is connected but the MySQL servers' `[restore] mysqld_api_nodes`.
fn quiesce(run: &RestoreRun<'_>, i: usize, step: &RestoreStep) -> Result<(), RestoreError> {
    let head = Node::local("head node");
    let ne = node_err(i, step);
    let on_head = step.commands.len().saturating_sub(step.datanodes.len());
    for (k, c) in step.commands.iter().enumerate() {
        let out = if k < on_head {
            head.run(c, SHORT_TIMEOUT, run.cancel).map_err(&ne)?
        } else {
            let name = &step.datanodes[k - on_head];
            let host = run
                .settings
                .hopsfs
                .as_ref()
                .and_then(|h| h.datanodes.iter().find(|d| &d.name == name))
                .map(|d| d.host.clone())
                .unwrap_or(NodeHost::Local);
            Node::at(format!("datanode {name}"), &host, &run.settings.ssh)
                .run(c, SHORT_TIMEOUT, run.cancel)
                .map_err(&ne)?
        };
        report_output(run, i, &out.stdout);
    }
    let r = &run.settings.restore;
    let Some(mgm) = crate::restore::target::mgm_client(run.settings) else {
        return Err(refused(i, step, "no [rondb] in the config"));
    };
    let deadline = Instant::now() + r.quiesce_timeout;
    loop {
        let show = mgm.show(run.cancel).map_err(mgm_err(i, step))?;
        let facts = crate::restore::target::TargetFacts::from_show(&show);
        let connected: Vec<String> = facts
            .connected_api()
            .map(|a| match &a.address {
                Some(h) => format!("{} (from {h})", a.id),
                None => a.id.to_string(),
            })
            .collect();
        if connected.len() <= r.mysqld_api_nodes as usize {
            (run.progress)(
                i,
                &format!(
                    "{} API node(s) connected (the MySQL servers'), {} free",
                    connected.len(),
                    facts.free_api_slots()
                ),
            );
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(refused(
                i,
                step,
                format!(
                    "API nodes {} are still connected {} after the services were stopped, more than the {} the MySQL servers hold ([restore] mysqld_api_nodes): stop the NDB API clients that are left (an unknown client, or a service missing from [restore] services), then restore resume",
                    connected.join(", "),
                    humantime::format_duration(r.quiesce_timeout),
                    r.mysqld_api_nodes
                ),
            ));
        }
        for _ in 0..5 {
            if run.cancel.is_cancelled() {
                return Err(RestoreError::Cancelled {
                    step: i + 1,
                    title: step.title.clone(),
                });
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_metadata_step_run_again_goes_on_only_from_a_known_state() {
        let v = |x: &[&str]| x.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let backup = v(&[
            "hops.hdfs_inodes",
            "app.events",
            "glassfish_timers.EJB__TIMER__TBL",
        ]);
        let excl = v(&["glassfish_timers.EJB__TIMER__TBL"]);
        // Nothing of ours there (an excluded table and other databases do not count).
        let other = v(&["glassfish_timers.EJB__TIMER__TBL", "extra.keep"]);
        assert_eq!(
            meta_on_resume(&other, Some(&backup), &excl),
            MetaResume::Run
        );
        assert_eq!(meta_on_resume(&[], None, &excl), MetaResume::Run);
        // Every table of the backup (less the excluded) there: done.
        assert_eq!(
            meta_on_resume(
                &v(&["app.events", "hops.hdfs_inodes", "extra.keep"]),
                Some(&backup),
                &excl
            ),
            MetaResume::Done
        );
        // Half a schema: its databases dropped, then run again.
        assert_eq!(
            meta_on_resume(&v(&["app.events", "extra.keep"]), Some(&backup), &excl),
            MetaResume::DropAndRun(v(&["app"]))
        );
        // No record of the backup's tables: refused, naming the databases.
        let MetaResume::Refuse(why) = meta_on_resume(&v(&["app.events"]), None, &excl) else {
            panic!("unknown tables must be refused");
        };
        assert!(why.contains("drop the databases app"), "{why}");
        assert!(matches!(
            meta_on_resume(&v(&["app.events"]), Some(&[]), &excl),
            MetaResume::Refuse(_)
        ));
    }
}
