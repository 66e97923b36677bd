//! Encrypted repositories through hopsdrd and hopsdrctl: a whole cluster backed up and restored,
//! nothing stored in plaintext, tampering refused before a restore touches anything, the daemon
//! refusing to start without its key (or with the wrong one, or on a plaintext repository when
//! encryption is asked for), key slots and rotation.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::harness::Env;
use crate::restore::{disaster, setup};

/// Writes passphrase `pass` in a root-only file of `env` and asks for an encrypted local
/// repository opened with it.
fn encrypt(env: &mut Env, file: &str, pass: &str) -> PathBuf {
    let key = env.path().join(file);
    std::fs::write(&key, format!("{pass}\n")).unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    env.repository_config = Some(format!(
        "[repository]\ntype = \"local\"\npath = \"{}\"\n\n[repository.encryption]\npassphrase = {{ file = \"{}\" }}\n",
        env.repo().display(),
        key.display()
    ));
    key
}

/// Every file under `root`, with its bytes.
fn objects(root: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let b = std::fs::read(&p).unwrap();
                out.push((p, b));
            }
        }
    }
    out
}

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn an_encrypted_repository_backs_up_and_restores_the_cluster_and_refuses_tampering() {
    let (mut env, c, m) = setup();
    encrypt(&mut env, "repository.key", "a long passphrase for the test");
    // A known input that compression leaves as it is (pseudo-random bytes), backed up with the
    // config files.
    let known_random: Vec<u8> = (0..65536u32)
        .map(|i| ((i.wrapping_mul(2_654_435_761) >> 13) as u8) ^ ((i >> 7) as u8))
        .collect();
    std::fs::write(
        env.path().join("data/cluster-defns/random.bin"),
        &known_random,
    )
    .unwrap();
    env.extra_config += &crate::agents::agents_config();
    let _d = env.start();
    // Every node's agent gets the agent keys and names the probe as hopsdrd does; a local
    // repository is the head's alone.
    for a in crate::agents::all_ready(&env) {
        assert_eq!(a["keys_match"], true, "{a:#}");
        assert_eq!(a["repository"], serde_json::Value::Null, "{a:#}");
    }
    let before = c.fingerprint();
    let id = env.backup_ok();

    // `repo check` says the repository is encrypted and with what.
    let check = env.ctl_ok(&["repo", "check"]);
    let text = String::from_utf8_lossy(&check.stdout).into_owned();
    assert!(
        text.contains("encryption: aes-256-gcm (1 key slot(s), data key 1 of 1, opened with slot \"primary\")"),
        "{text}"
    );
    let json = env.ctl_json(&["repo", "check"]);
    assert_eq!(json["encrypted"], true);

    // Nothing in the repository holds a known plaintext: a config file's text (stored as it is
    // by a plaintext repository), the random input, the users dump, the cluster's table names.
    let needle = &known_random[30000..30032];
    for (path, bytes) in objects(&env.repo()) {
        let has = |s: &[u8]| bytes.windows(s.len()).any(|w| w == s);
        for known in [
            &b"head node: hops1"[..],
            needle,
            b"CREATE USER",
            b"hdfs_inodes",
        ] {
            assert!(!has(known), "{} holds {known:?}", path.display());
        }
    }

    // The whole cluster comes back from the encrypted repository.
    disaster(&c, &m);
    env.restore_ok(&id, &[]);
    assert_eq!(c.fingerprint(), before);
    assert!(m.login("app", "app-pass"));

    // A manifest edited in the store: the plan and a restore are refused, saying so, before
    // anything is touched; verify records the backup damaged.
    let manifest = env.repo().join(format!("manifests/{id}.json.zst"));
    let mut bytes = std::fs::read(&manifest).unwrap();
    let i = bytes.len() / 2;
    bytes[i] ^= 0x20;
    std::fs::write(&manifest, &bytes).unwrap();
    let fingerprint = c.fingerprint();
    let out = env.ctl(&["restore", "plan", &id]);
    assert_ne!(out.status.code(), Some(0));
    assert!(stderr(&out).contains("tampered"), "{}", stderr(&out));
    let out = env.ctl(&["restore", "start", &id, "--yes", "--wait"]);
    assert_ne!(out.status.code(), Some(0));
    assert!(stderr(&out).contains("tampered"), "{}", stderr(&out));
    assert_eq!(c.fingerprint(), fingerprint, "nothing touched");
    let out = env.ctl(&["verify", &id, "--wait"]);
    assert_ne!(out.status.code(), Some(0));
}

#[test]
fn the_daemon_does_not_start_without_its_key_nor_writes_plaintext_where_encryption_is_asked() {
    let mut env = Env::new();
    let key = encrypt(&mut env, "repository.key", "right passphrase");
    {
        let _d = env.start();
        env.backup_ok();
    }
    // The wrong passphrase: the slot tried and the file are named.
    std::fs::write(&key, "wrong passphrase\n").unwrap();
    let (code, err) = env.start_refused();
    assert_ne!(code, Some(0));
    assert!(
        err.contains("opens no key slot")
            && err.contains("slot \"primary\"")
            && err.contains(&key.display().to_string()),
        "{err}"
    );
    // A missing key file.
    std::fs::remove_file(&key).unwrap();
    let (code, err) = env.start_refused();
    assert_ne!(code, Some(0));
    assert!(err.contains(&key.display().to_string()), "{err}");
    // No [repository.encryption] for an encrypted repository.
    env.repository_config = None;
    let (code, err) = env.start_refused();
    assert_ne!(code, Some(0));
    assert!(
        err.contains("is encrypted: set [repository.encryption]"),
        "{err}"
    );

    // A plaintext repository with encryption asked for: refused, nothing written.
    let mut plain = Env::new();
    {
        let _d = plain.start();
        plain.backup_ok();
    }
    let before: Vec<PathBuf> = objects(&plain.repo()).into_iter().map(|(p, _)| p).collect();
    encrypt(&mut plain, "repository.key", "p");
    let (code, err) = plain.start_refused();
    assert_ne!(code, Some(0));
    assert!(
        err.contains("is not encrypted, but [repository.encryption] is set"),
        "{err}"
    );
    let after: Vec<PathBuf> = objects(&plain.repo()).into_iter().map(|(p, _)| p).collect();
    assert_eq!(before.len(), after.len(), "nothing written");
}

#[test]
fn key_slots_and_rotation_keep_every_backup_readable() {
    let mut env = Env::new();
    encrypt(&mut env, "repository.key", "first passphrase");
    let second = env.path().join("ops.key");
    std::fs::write(&second, "second passphrase\n").unwrap();
    std::fs::set_permissions(&second, std::fs::Permissions::from_mode(0o600)).unwrap();
    let first_id;
    {
        let _d = env.start();
        first_id = env.backup_ok();
        env.ctl_ok(&[
            "key",
            "add",
            "ops",
            "--passphrase-file",
            second.to_str().unwrap(),
        ]);
        let keys = env.ctl_json(&["key", "list"]);
        let slots: Vec<&str> = keys["encryption"]["slots"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["name"].as_str().unwrap())
            .collect();
        assert_eq!(slots, ["ops", "primary"]);
        let text = String::from_utf8_lossy(&env.ctl_ok(&["key", "list"]).stdout).into_owned();
        assert!(
            text.contains("in use by hopsdrd") && text.contains("argon2id m=65536 KiB t=3 p=1"),
            "{text}"
        );
        // The slot hopsdrd opened with is not removed.
        let out = env.ctl(&["key", "remove", "primary"]);
        assert_ne!(out.status.code(), Some(0));
        assert!(
            stderr(&out).contains("opened the repository with"),
            "{}",
            stderr(&out)
        );
        let r = env.ctl_json(&["key", "rotate"]);
        assert_eq!(r["data_key"], 2);
        env.backup_ok();
    }
    // Opened with the other slot's passphrase, the first slot goes; both backups verify.
    env.repository_config = Some(
        env.repository_config
            .clone()
            .unwrap()
            .replace("repository.key", "ops.key"),
    );
    let _d = env.start();
    env.ctl_ok(&["key", "remove", "primary"]);
    let out = env.ctl(&["key", "remove", "ops"]);
    assert_ne!(out.status.code(), Some(0), "the last slot stays");
    let list = env.ctl_json(&["backups", "list"]);
    for id in Env::listed_ids(&list) {
        env.ctl_ok(&["verify", &id, "--wait"]);
    }
    assert!(Env::listed_ids(&list).contains(&first_id));
    let check = env.ctl_json(&["repo", "check"]);
    assert_eq!(check["encryption"]["data_keys"], serde_json::json!([1, 2]));
    assert_eq!(check["encryption"]["opened_with"], "ops");
}

/// Runs a cluster tool with `input` on its standard input.
fn tool_with_stdin(
    c: &crate::tbcluster::Cluster,
    name: &str,
    args: &[&str],
    input: &str,
) -> std::process::Output {
    use std::io::Write;
    let mut child = std::process::Command::new(c.tool_path(name))
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

#[test]
fn rondb_encrypts_its_backup_with_the_password_never_in_a_command_line() {
    const PASSWORD: &str = "Rondb backup pw #2026";
    let (mut env, c, m) = setup();
    let pw = env.path().join("rondb.pw");
    std::fs::write(&pw, format!("{PASSWORD}\n")).unwrap();
    std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(0o600)).unwrap();
    env.extra_config = env.extra_config.replacen(
        "[rondb]\n",
        &format!(
            "[rondb]\nbackup_password = {{ file = \"{}\" }}\n",
            pw.display()
        ),
        1,
    );
    assert!(env.extra_config.contains("backup_password"));
    let _d = env.start();
    let before = c.fingerprint();
    let id = env.backup_ok();
    let plan = String::from_utf8_lossy(&env.ctl_ok(&["restore", "plan", &id]).stdout).into_owned();
    assert!(
        plan.contains("--decrypt --backup-password-from-stdin"),
        "{plan}"
    );

    disaster(&c, &m);
    env.restore_ok(&id, &[]);
    assert_eq!(c.fingerprint(), before);

    // Every tool that needed the password got it on stdin: START BACKUP (--encrypt-backup)
    // and each ndb_restore (the referenced-blocks source too: the backup checked its blocks
    // against the encrypted files); none had it in its command line.
    let argv = std::fs::read_to_string(c.dir.join("argv.log")).unwrap();
    assert!(
        !argv.contains(PASSWORD),
        "the password reached a command line"
    );
    let lines = |has: &str| argv.lines().filter(|l| l.contains(has)).count();
    assert_eq!(lines("--encrypt-backup"), 1, "{argv}");
    assert!(lines("--decrypt") >= 4, "{argv}");
    assert!(lines("backup-password-from-stdin") >= 5, "{argv}");

    // The test-bed's tools hold to RonDB's rules: an encrypted backup is unreadable without
    // --decrypt, or with the wrong password.
    let out = tool_with_stdin(
        &c,
        "ndb_mgm",
        &[
            "-c",
            "10.0.0.1:1186",
            "--encrypt-backup",
            "--backup-password-from-stdin",
            "-e",
            "START BACKUP 77 SNAPSHOTEND WAIT COMPLETED",
        ],
        &format!("{PASSWORD}\n"),
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let dir = c.backup_dir(1).join("BACKUP/BACKUP-77");
    let ctl = std::fs::read(dir.join("BACKUP-77.1.ctl")).unwrap();
    assert!(ctl.starts_with(b"NDBXFRM1") && ctl.ends_with(b"NDBXFRM1"));
    let d = dir.display().to_string();
    let args = [
        "-c",
        "10.0.0.1:1186",
        "-n",
        "1",
        "-b",
        "77",
        "--print-meta",
        "--backup_path",
        d.as_str(),
    ];
    let out = c.tool("ndb_restore", &args);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("File is encrypted but no decryption requested."),
        "{}",
        stderr(&out)
    );
    let mut with = args.to_vec();
    with.extend(["--decrypt", "--backup-password-from-stdin"]);
    let out = tool_with_stdin(&c, "ndb_restore", &with, "not the password\n");
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("Can not read decrypted file. Might be wrong password."),
        "{}",
        stderr(&out)
    );
    let out = c.tool("ndb_restore", &["--decrypt", "-b", "77", "-n", "1"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("requires password"),
        "{}",
        stderr(&out)
    );
    // ndb_mgm asked to encrypt without a password refuses.
    let out = c.tool(
        "ndb_mgm",
        &["-c", "10.0.0.1:1186", "-e", "START BACKUP 78 ENCRYPT"],
    );
    assert_eq!(out.status.code(), Some(255));
    assert!(String::from_utf8_lossy(&out.stdout).contains("Encryption need password"));
}

/// SIGKILL inside the durable steps of the keys: creating an encrypted repository (after its
/// slot, after its data key; the header is the last step) and rotating (the data key written,
/// the daemon not yet using it). After each restart the repository opens with its passphrase,
/// backs up and verifies, and nothing was created twice.
#[test]
fn killed_while_creating_keys_or_rotating_the_repository_converges() {
    use crate::harness::wait_for;
    use std::time::Duration;

    let mut env = Env::new();
    encrypt(&mut env, "repository.key", "crash test passphrase");
    for failpoint in [
        "repository.init.slot_written",
        "repository.init.keys_written",
    ] {
        let marker = env.path().join(format!("{failpoint}.reached"));
        let _ = std::fs::remove_file(&marker);
        let mut d = env.start_unready(&[("HOPSDR_FAILPOINTS", &format!("{failpoint}=pause"))]);
        wait_for(failpoint, Duration::from_secs(60), || {
            marker.exists().then_some(())
        });
        d.kill9();
        assert!(
            !env.repo().join("hopsdr-repository.json").exists(),
            "{failpoint}"
        );
    }
    let first = {
        let _d = env.start();
        env.backup_ok()
    };
    let keys = |env: &Env| {
        let _d = env.start();
        env.ctl_json(&["key", "list"])
    };
    let k = keys(&env);
    assert_eq!(k["encryption"]["slots"].as_array().unwrap().len(), 1);
    assert_eq!(k["encryption"]["data_keys"], serde_json::json!([1]));

    // Killed after the new data key is written, before the daemon uses it.
    let marker = env.path().join("keys.data_key_written.reached");
    let mut d = env.start_with(&[("HOPSDR_FAILPOINTS", "keys.data_key_written=pause")]);
    let socket = env.socket();
    let rotate = std::thread::spawn(move || {
        std::process::Command::new(crate::harness::HOPSDRCTL)
            .arg("--socket")
            .arg(socket)
            .args(["key", "rotate"])
            .output()
    });
    wait_for("the data key written", Duration::from_secs(60), || {
        marker.exists().then_some(())
    });
    d.kill9();
    let _ = rotate.join();
    let _d = env.start();
    let k = env.ctl_json(&["key", "list"]);
    assert_eq!(k["encryption"]["data_keys"], serde_json::json!([1, 2]));
    assert_eq!(k["encryption"]["current_data_key"], 2);
    let second = env.backup_ok();
    for id in [&first, &second] {
        env.ctl_ok(&["verify", id, "--wait"]);
    }
    assert_eq!(
        env.ctl_json(&["repo", "check"])["problems"],
        serde_json::json!([])
    );
}
