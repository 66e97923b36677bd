//! The restore step of OpenSearch: the snapshot repository's files written back to its
//! directory on the OpenSearch node when OpenSearch does not know the snapshot (a cluster
//! redeployed from scratch lost them), the repository registered, every index of the
//! snapshot that is open in the cluster closed (or deleted, `[opensearch] replace`), the
//! restore started with the indices named (never the global state nor the security index),
//! then the indices waited for until green. Run again after a crash it does the same: the
//! files are rewritten as they were, the restored indices closed and restored once more.

use crate::cluster::node::{Node, NodeError};
use crate::cluster::opensearch::Opensearch;
use crate::config::{OpensearchReplace, SecretEnv};
use crate::repository::layout::OPENSEARCH_REPOSITORY;
use crate::restore::plan::{restorable_indices, RestoreStep};
use crate::restore::tarout;

use super::{node_err, refused, RestoreError, RestoreRun, TOOL_TIMEOUT};

pub(super) fn restore(
    run: &RestoreRun<'_>,
    i: usize,
    step: &RestoreStep,
) -> Result<(), RestoreError> {
    let Some(o) = &run.settings.opensearch else {
        return Err(refused(
            i,
            step,
            "[opensearch] is not configured any more: configure it, then restore resume",
        ));
    };
    let Some(of) = &run.manifest.info.facts.opensearch else {
        return Err(refused(i, step, "the backup holds no OpenSearch snapshot"));
    };
    let api = |e: crate::cluster::opensearch::OpensearchError| refused(i, step, e.to_string());
    let client = Opensearch::new(o, &SecretEnv::from_process()).map_err(api)?;
    client
        .register_fs_repository(&o.repository, &o.location)
        .map_err(api)?;
    if client
        .snapshot(&o.repository, &of.snapshot)
        .map_err(api)?
        .is_none()
    {
        // OpenSearch does not know the snapshot: the repository as the backup holds it replaces
        // what is there (OpenSearch forgets the repository first: it tracks the generation of
        // what it last read, and the backup's may be older).
        client.unregister_repository(&o.repository).map_err(api)?;
        let node = Node::at("opensearch".into(), &o.host, &run.settings.ssh);
        for argv in [
            ["mkdir", "-p", "--", o.location.as_str()].as_slice(),
            ["find", o.location.as_str(), "-mindepth", "1", "-delete"].as_slice(),
        ] {
            let argv: Vec<String> = argv.iter().map(|s| s.to_string()).collect();
            node.run(&argv, super::SHORT_TIMEOUT, run.cancel)
                .map_err(node_err(i, step))?;
        }
        let (repo, manifest) = (run.repo.clone(), run.manifest.clone());
        let producer: crate::cluster::node::Producer =
            Box::new(move |w: &mut dyn std::io::Write| {
                let mut buffered = std::io::BufWriter::with_capacity(1 << 20, w);
                tarout::write_tar(
                    &repo,
                    &manifest,
                    &format!("{OPENSEARCH_REPOSITORY}/"),
                    &|_| false,
                    &mut buffered,
                )?;
                std::io::Write::flush(&mut buffered)
            });
        let argv: Vec<String> = ["tar", "--numeric-owner", "-C", &o.location, "-xf", "-"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let (status, stderr) = node
            .stream_with_producer(&argv, Some(producer), TOOL_TIMEOUT, run.cancel, |r| {
                std::io::copy(r, &mut std::io::sink()).map(|_| ())
            })
            .map_err(node_err(i, step))?;
        if !status.success() {
            return Err(node_err(i, step)(NodeError::Failed {
                node: "opensearch".into(),
                command: format!("tar -C {} -xf -", o.location),
                status: status.to_string(),
                stderr,
            }));
        }
        (run.progress)(
            i,
            &format!(
                "the snapshot repository's files written back to {}",
                o.location
            ),
        );
        // OpenSearch reads the repository again when it is registered again.
        client
            .register_fs_repository(&o.repository, &o.location)
            .map_err(api)?;
    }
    let indices = restorable_indices(&of.indices);
    let present = client.indices().map_err(api)?;
    for ix in present.iter().filter(|p| indices.contains(&p.name)) {
        match o.replace {
            OpensearchReplace::Close if ix.open => {
                client.close_index(&ix.name).map_err(api)?;
                (run.progress)(
                    i,
                    &format!("index {} closed: the snapshot's replaces it", ix.name),
                );
            }
            OpensearchReplace::Close => {}
            OpensearchReplace::Delete => {
                client.delete_index(&ix.name).map_err(api)?;
                (run.progress)(
                    i,
                    &format!("index {} deleted: the snapshot's replaces it", ix.name),
                );
            }
        }
    }
    client
        .restore(&o.repository, &of.snapshot, &indices)
        .map_err(api)?;
    crate::failpoint::hit("restore.opensearch.requested", run.cancel);
    client
        .wait_green(&indices, o.restore_timeout, run.cancel)
        .map_err(api)?;
    (run.progress)(i, &format!("{} indices restored and green", indices.len()));
    Ok(())
}
