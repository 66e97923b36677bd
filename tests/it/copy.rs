//! Second copies (`[[copy]]`): a copy job sends what the target lacks, manifests last, and
//! mirrors what the repository forgot; a copy killed before its manifests leaves the target
//! with whole backups only, and the next copy converges; a copy in S3 (s3s-fs) and one on a
//! local directory are verified through `--repository`; damage in the copy is found there and
//! not in the repository; a restore reads the copy when the repository lost its packs.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;

use crate::harness::Env;
use crate::s3::{S3Server, ACCESS_KEY, SECRET_KEY};

/// The repository in `dir`, opened by the test with its own index cache.
fn open(dir: &Path) -> hopsdr::repository::Repository {
    hopsdr::repository::Repository::open_or_init(
        Arc::new(hopsdr::repository::LocalStorage::new(dir.to_path_buf()).unwrap()),
        1,
    )
    .unwrap()
}

/// Every backup in `repo`, each verified whole.
fn whole_backups(repo: &hopsdr::repository::Repository) -> Vec<String> {
    let cancel = tokio_util::sync::CancellationToken::new();
    repo.list_backups()
        .unwrap()
        .into_iter()
        .map(|id| {
            let r = repo.verify_backup(&id, &cancel).unwrap();
            assert!(r.is_ok(), "{id}: {:?}", r.damaged);
            id.to_string()
        })
        .collect()
}

#[test]
fn copies_converge_after_a_kill_mirror_forgotten_backups_and_are_verified_where_they_are() {
    let mut env = Env::new();
    let s3 = S3Server::start();
    s3.bucket("offsite");
    let secret = env.path().join("offsite.secret");
    std::fs::write(&secret, format!("{SECRET_KEY}\n")).unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    let disk = env.path().join("offsite-disk");
    let hook = env.path().join("copy-hook");
    env.extra_config = format!(
        "[[copy]]\nname = \"disk\"\npath = \"{}\"\n\
         [[copy]]\nname = \"cloud\"\ntype = \"s3\"\nendpoint = \"{}\"\nregion = \"us-east-1\"\nbucket = \"offsite\"\n\
         prefix = \"copy1\"\npath_style = true\naccess_key_id = \"{ACCESS_KEY}\"\nsecret_access_key = {{ file = \"{}\" }}\n\
         [[schedule]]\nname = \"offsite-nightly\"\ncron = \"0 3 * * *\"\njob = \"copy\"\ntarget = \"disk\"\n\
         [hooks]\ncopy_result = [\"/bin/sh\", \"-c\", \"env > {}\"]\n",
        disk.display(),
        s3.endpoint(),
        secret.display(),
        hook.display()
    );
    let first = {
        let _d = env.start();
        let first = env.backup_ok();
        // Several copies: the target must be named.
        let o = env.ctl(&["copy"]);
        assert_eq!(o.status.code(), Some(1));
        assert!(String::from_utf8_lossy(&o.stderr).contains("name the one"));
        env.ctl_ok(&["copy", "disk", "--wait"]);
        assert_eq!(whole_backups(&open(&disk)), std::slice::from_ref(&first));
        first
    };

    // A second backup, its copy killed right before the manifests: its packs are there, its
    // manifest is not, and the first backup is still whole.
    let second = {
        let _d = env.start();
        env.backup_ok()
    };
    env.kill_at("copy.manifests", &["copy", "disk"]);
    assert_eq!(whole_backups(&open(&disk)), std::slice::from_ref(&first));
    let _d = env.start();
    env.ctl_ok(&["copy", "disk", "--wait"]);
    assert_eq!(whole_backups(&open(&disk)), [first.clone(), second.clone()]);
    let facts = std::fs::read_to_string(&hook).unwrap();
    assert!(
        facts.contains("HOPSDR_TARGET=disk") && facts.contains("HOPSDR_STATE=succeeded"),
        "{facts}"
    );
    let m = env.metrics();
    assert!(
        m.contains("hopsdr_copy_last_success_timestamp_seconds{target=\"disk\"}"),
        "{m}"
    );
    assert!(
        m.contains("hopsdr_copy_expected_interval_seconds{target=\"disk\"} 86400"),
        "{m}"
    );
    assert!(
        m.contains("hopsdr_copies_total{result=\"interrupted\",target=\"disk\"} 0"),
        "{m}"
    );

    // Nothing new: nothing sent. The copy in S3, verified there.
    env.ctl_ok(&["copy", "disk", "--wait"]);
    env.ctl_ok(&["copy", "cloud", "--wait"]);
    env.ctl_ok(&["verify", &second, "--repository", "cloud", "--wait"]);
    let o = env.ctl(&["verify", &second, "--repository", "nowhere"]);
    assert_ne!(o.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&o.stderr).contains("no [[copy]] named \"nowhere\""));

    // The repository forgets the first backup: so does the copy.
    drop(_d);
    env.extra_config
        .push_str("[retention]\nkeep_last = 1\nprune_after_backup = false\n");
    let _d = env.start();
    env.ctl_ok(&["prune", "--wait"]);
    env.ctl_ok(&["copy", "disk", "--wait"]);
    assert_eq!(whole_backups(&open(&disk)), std::slice::from_ref(&second));

    // Damage in the copy: found when the copy is verified, not the repository.
    let packs = disk.join("packs");
    let mut damaged = false;
    for shard in std::fs::read_dir(&packs).unwrap().flatten() {
        for p in std::fs::read_dir(shard.path()).unwrap().flatten() {
            let mut b = std::fs::read(p.path()).unwrap();
            if b.len() > 100 && !damaged {
                b[40] ^= 0xFF;
                std::fs::write(p.path(), b).unwrap();
                damaged = true;
            }
        }
    }
    assert!(damaged);
    let o = env.ctl(&["verify", &second, "--repository", "disk", "--wait"]);
    assert_eq!(
        o.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );
    env.ctl_ok(&["verify", &second, "--wait"]);
}

#[test]
fn a_restore_reads_the_copy_when_the_repository_lost_its_packs() {
    let (mut env, c, m) = crate::restore::setup();
    let disk = env.path().join("offsite-disk");
    env.extra_config.push_str(&format!(
        "[[copy]]\nname = \"disk\"\npath = \"{}\"\n",
        disk.display()
    ));
    let _d = env.start();
    let before = c.fingerprint();
    let id = env.backup_ok();
    env.ctl_ok(&["copy", "--wait"]);
    crate::restore::disaster(&c, &m);
    // The repository's packs are lost.
    std::fs::remove_dir_all(env.repo().join("packs")).unwrap();
    let o = env.ctl(&["verify", &id, "--wait"]);
    assert_eq!(o.status.code(), Some(1));
    let o = env.ctl(&[
        "restore",
        "start",
        &id,
        "--yes",
        "--wait",
        "--repository",
        "disk",
    ]);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}\n{}\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr),
        env.log()
    );
    assert_eq!(c.fingerprint(), before);
}
