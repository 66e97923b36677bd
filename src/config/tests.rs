//! Tests of the whole config module: the shipped example, the config fixtures under
//! `tests/fixtures/config/` (`bad/NAME.toml` with its exact output in `bad/NAME.expected`;
//! `good/NAME.toml` must load), and the cases that need real files (secret modes, credentials).
//!
//! To (re)write the `.expected` files after changing a message, run the tests with
//! `HOPSDR_BLESS=1` and review the diff.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use super::*;

const EXAMPLE: &str = include_str!("../../etc/hopsdr/hopsdr.toml");

fn fixtures(kind: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/config")
        .join(kind)
}

fn toml_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    files.sort();
    files
}

fn errors_of(text: &str) -> String {
    match parse(text, "hopsdr.toml", &SecretEnv::default()) {
        Ok(_) => "(no errors)".to_string(),
        Err(e) => e.to_string(),
    }
}

#[test]
fn shipped_example_loads_and_has_the_defaults() {
    let settings = parse(EXAMPLE, "hopsdr.toml", &SecretEnv::default()).unwrap();
    let defaults = parse("", "hopsdr.toml", &SecretEnv::default()).unwrap();
    // The example shows the defaults: only the schedule differs.
    assert_eq!(settings.daemon, defaults.daemon);
    assert_eq!(settings.metrics, defaults.metrics);
    assert_eq!(settings.repository, defaults.repository);
    assert_eq!(settings.backup, defaults.backup);
    assert_eq!(settings.ssh, defaults.ssh);
    assert_eq!(settings.restore, defaults.restore);
    assert!(defaults.schedules.is_empty());
    assert!(settings.mysql.is_none());
    assert!(settings.rondb.is_none());
    assert!(settings.hopsfs.is_none());

    let d = &settings.daemon;
    assert_eq!(d.socket, PathBuf::from("/run/hopsdr/hopsdr.sock"));
    assert_eq!(d.socket_group, "hopsdr");
    assert_eq!(d.operator_group, None);
    assert_eq!(d.catalog, PathBuf::from("/var/lib/hopsdr/catalog.db"));
    assert_eq!(d.shutdown_timeout, Duration::from_secs(60));
    assert_eq!(d.client_timeout, Duration::from_secs(10));
    assert_eq!(d.log_level, "info");
    assert_eq!(
        settings.metrics.listen,
        Some("127.0.0.1:9741".parse().unwrap())
    );
    assert_eq!(
        settings.repository,
        RepositorySettings {
            store: StoreSettings::Local {
                path: PathBuf::from("/srv/hopsdr/repository")
            },
            compression_level: 1,
            encryption: None,
        }
    );
    assert_eq!(
        settings.backup.files,
        vec![
            FilePathSettings {
                path: PathBuf::from("/home/ubuntu/cluster-defns/hopsworks-installation.yml"),
                optional: false
            },
            FilePathSettings {
                path: PathBuf::from("/etc/hopsdr/hopsdr.toml"),
                optional: true
            },
        ]
    );
    let [s] = settings.schedules.as_slice() else {
        panic!("expected one schedule: {:?}", settings.schedules)
    };
    assert_eq!(s.name, "nightly");
    assert_eq!(s.cron.as_str(), "30 2 * * *");
    assert_eq!(s.timezone, chrono_tz::UTC);
    assert_eq!(s.job, JobKind::Backup);
    assert!(s.catch_up);
}

/// Every key the example documents in comments (`# key = value`) parses too, once uncommented:
/// the example covers every key, and the commented-out ones are valid.
#[test]
fn shipped_example_commented_keys_are_valid() {
    fn is_key_line(line: &str) -> bool {
        let line = line.trim_start();
        line.split_once(" = ").is_some_and(|(k, _)| {
            !k.is_empty() && k.chars().all(|c| c.is_ascii_lowercase() || c == '_')
        })
    }
    let dir = tempfile::tempdir().unwrap();
    let password = dir.path().join("mysql.password");
    fs::write(&password, "pw\n").unwrap();
    fs::set_permissions(&password, fs::Permissions::from_mode(0o600)).unwrap();
    let uncommented: String = EXAMPLE
        .lines()
        .map(|l| match l.strip_prefix("# ") {
            Some(rest) if rest.starts_with('[') || is_key_line(rest) => rest,
            _ => l,
        })
        // Only one connection: drop host/port (socket is kept), TLS's CA (it goes with host)
        // and the alternate password.
        .filter(|l| {
            *l != "host = \"127.0.0.1\""
                && *l != "port = 3306"
                && !l.starts_with("tls_ca = ")
                && !l.starts_with("  password")
        })
        .map(|l| {
            let mut l = l.to_string();
            for secret in [
                "/etc/hopsdr/mysql.password",
                "/etc/hopsdr/repository.key",
                "/etc/hopsdr/rondb-backup.password",
                "/etc/hopsdr/opensearch.password",
            ] {
                l = l.replace(secret, password.to_str().unwrap());
            }
            l
        })
        .collect::<Vec<_>>()
        .join("\n");
    assert!(uncommented.contains("\n[mysql]\n"), "{uncommented}");
    let settings = parse(&uncommented, "hopsdr.toml", &SecretEnv::default())
        .unwrap_or_else(|e| panic!("{e}\n---\n{uncommented}"));
    let hopsfs = settings.hopsfs.as_ref().expect("[hopsfs] uncommented");
    assert_eq!(hopsfs.datanodes[0].name, "dn1");
    assert_eq!(
        hopsfs.datanodes[0].volumes,
        vec![PathBuf::from("/srv/hops/hopsdata/hdfs/dn")]
    );
    let rondb = settings.rondb.as_ref().expect("[rondb] uncommented");
    assert_eq!(
        rondb.mgm_client,
        ["/srv/hops/mysql-cluster/ndb/scripts/mgm-client.sh"]
    );
    assert_eq!(rondb.backup_timeout, Duration::from_secs(6 * 3600));
    assert_eq!(rondb.data_nodes.len(), 1);
    assert_eq!(
        rondb.data_nodes[0].host,
        crate::config::NodeHost::Remote("10.0.0.11".into())
    );
    assert_eq!(
        settings.daemon.operator_group.as_deref(),
        Some("hopsdr-admin")
    );
    let mysql = settings.mysql.unwrap();
    assert_eq!(mysql.user, "hopsdr");
    assert_eq!(mysql.password, Secret::File(password));
    assert_eq!(
        mysql.socket,
        Some(PathBuf::from("/srv/hops/mysql-cluster/mysql.sock"))
    );
    assert_eq!(mysql.host, None);
}

#[test]
fn bad_fixtures_give_exactly_the_expected_errors() {
    let bless = std::env::var_os("HOPSDR_BLESS").is_some();
    let files = toml_files(&fixtures("bad"));
    assert!(files.len() >= 15, "only {} bad fixtures", files.len());
    let mut failures = Vec::new();
    for file in &files {
        let text = fs::read_to_string(file).unwrap();
        let got = format!("{}\n", errors_of(&text));
        let expected_path = file.with_extension("expected");
        if bless {
            fs::write(&expected_path, &got).unwrap();
            continue;
        }
        let expected = fs::read_to_string(&expected_path).unwrap_or_default();
        if got != expected {
            failures.push(format!(
                "{}:\n--- expected\n{expected}--- got\n{got}",
                file.display()
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn good_fixtures_load() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("mysql-password"), "pw\n").unwrap();
    let env = SecretEnv {
        credentials_directory: Some(dir.path().to_path_buf()),
    };
    for file in toml_files(&fixtures("good")) {
        let text = fs::read_to_string(&file).unwrap();
        if let Err(e) = parse(&text, "hopsdr.toml", &env) {
            panic!("{}: {e}", file.display());
        }
    }
}

#[test]
fn full_settings_from_a_fixture() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("mysql-password"), "pw\n").unwrap();
    let env = SecretEnv {
        credentials_directory: Some(dir.path().to_path_buf()),
    };
    let text = fs::read_to_string(fixtures("good").join("everything.toml")).unwrap();
    let s = parse(&text, "hopsdr.toml", &env).unwrap();
    assert_eq!(s.path, PathBuf::from("hopsdr.toml"));
    assert_eq!(s.daemon.operator_group.as_deref(), Some("hopsdr-admin"));
    assert_eq!(s.daemon.shutdown_timeout, Duration::from_secs(150));
    assert_eq!(s.daemon.log_level, "debug");
    assert_eq!(s.metrics.listen, None);
    assert_eq!(
        s.repository,
        RepositorySettings {
            store: StoreSettings::Local {
                path: PathBuf::from("/mnt/backups/hopsdr")
            },
            compression_level: 19,
            encryption: None,
        }
    );
    assert_eq!(
        s.backup.files,
        vec![FilePathSettings {
            path: PathBuf::from("/srv/hops/conf/hopsworks.yml"),
            optional: false
        }]
    );
    assert_eq!(s.schedules.len(), 2);
    assert_eq!(s.schedules[1].name, "weekly_full-2");
    assert_eq!(s.schedules[1].timezone, chrono_tz::Europe::Berlin);
    assert!(!s.schedules[1].catch_up);
    let mysql = s.mysql.unwrap();
    assert_eq!(mysql.password, Secret::Credential("mysql-password".into()));
    assert_eq!(mysql.host.as_deref(), Some("10.0.0.5"));
    assert_eq!(mysql.port, 3307);
    assert_eq!(mysql.password.read(&env).unwrap(), "pw");
}

fn mysql_with_password_file(path: &Path) -> String {
    format!(
        "[mysql]\nuser = \"hopsdr\"\npassword = {{ file = {:?} }}\nsocket = \"/srv/hops/mysql-cluster/mysql.sock\"\n",
        path.to_str().unwrap()
    )
}

#[test]
fn secret_file_must_be_private_and_exist() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mysql.password");
    let text = mysql_with_password_file(&path);
    let shown = path.display();

    assert_eq!(
        errors_of(&text),
        format!(
            "hopsdr.toml:3: mysql.password: secret file \"{shown}\" does not exist: create it with mode 0600 (chmod 600 {shown})"
        )
    );

    fs::write(&path, "pw\n").unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
    assert_eq!(
        errors_of(&text),
        format!(
            "hopsdr.toml:3: mysql.password: secret file \"{shown}\" is readable by group or others (mode 0644): run chmod 600 {shown}"
        )
    );

    fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
    let settings = parse(&text, "hopsdr.toml", &SecretEnv::default()).unwrap();
    let mysql = settings.mysql.unwrap();
    assert_eq!(mysql.password, Secret::File(path.clone()));
    assert_eq!(mysql.port, 3306);
    assert_eq!(mysql.password.read(&SecretEnv::default()).unwrap(), "pw");
}

#[test]
fn credential_must_exist_in_credentials_directory() {
    let dir = tempfile::tempdir().unwrap();
    let text = "[mysql]\nuser = \"hopsdr\"\npassword = { credential = \"mysql-password\" }\nhost = \"db\"\n";
    let env = SecretEnv {
        credentials_directory: Some(dir.path().to_path_buf()),
    };
    let err = parse(text, "hopsdr.toml", &env).unwrap_err().to_string();
    assert_eq!(
        err,
        format!(
            "hopsdr.toml:3: mysql.password: credential \"mysql-password\" not found in $CREDENTIALS_DIRECTORY ({}): add LoadCredential=mysql-password:/path/to/file to the systemd unit",
            dir.path().display()
        )
    );
    fs::write(dir.path().join("mysql-password"), "pw").unwrap();
    assert!(parse(text, "hopsdr.toml", &env).is_ok());
}

#[test]
fn errors_are_sorted_by_line_and_carry_parts() {
    let text = fs::read_to_string(fixtures("bad").join("multiple-errors.toml")).unwrap();
    let errors = parse(&text, "hopsdr.toml", &SecretEnv::default()).unwrap_err();
    let lines: Vec<usize> = errors.0.iter().map(|e| e.line.unwrap()).collect();
    let mut sorted = lines.clone();
    sorted.sort();
    assert_eq!(lines, sorted);
    assert!(errors.0.len() >= 8, "{errors}");
    assert!(errors.0.iter().all(|e| e.file == "hopsdr.toml"));
    assert!(errors
        .0
        .iter()
        .any(|e| e.key == "schedule[0].cron" && e.line == Some(14)));
}

#[test]
fn load_names_the_file_as_given() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hopsdr.toml");
    fs::write(&path, "[daemon]\nlog_level = \"loud\"\n").unwrap();
    let err = load(&path).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "{}:2: daemon.log_level: unknown log level \"loud\": use one of error, warn, info, debug, trace",
            path.display()
        )
    );
    fs::write(&path, EXAMPLE).unwrap();
    assert_eq!(load(&path).unwrap().path, path);

    let missing = dir.path().join("missing.toml");
    let err = load(&missing).unwrap_err().to_string();
    assert!(
        err.starts_with(&format!(
            "{}: failed to read config file: ",
            missing.display()
        )),
        "{err}"
    );
}

#[test]
fn socket_path_is_read_leniently() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hopsdr.toml");
    let socket = |text: &str| {
        fs::write(&path, text).unwrap();
        load_socket_path(&path).map_err(|e| e.to_string())
    };
    assert_eq!(socket(""), Ok(PathBuf::from("/run/hopsdr/hopsdr.sock")));
    // Other problems are the daemon's business.
    assert_eq!(
        socket(
            "[daemon]\nsocket = \"/tmp/x.sock\"\nlog_level = \"loud\"\nfoo = 1\n[other]\nx = 1\n"
        ),
        Ok(PathBuf::from("/tmp/x.sock"))
    );
    let shown = path.display();
    assert_eq!(
        socket("[daemon]\nsocket = \"x.sock\"\n"),
        Err(format!(
            "{shown}:2: daemon.socket: path \"x.sock\" is relative: use an absolute path (starting with \"/\")"
        ))
    );
    assert_eq!(
        socket("[daemon]\nsocket = 3\n"),
        Err(format!(
            "{shown}:2: daemon.socket: invalid type: integer, expected a string"
        ))
    );
    assert!(socket("[daemon\n")
        .unwrap_err()
        .starts_with(&format!("{shown}:1: invalid TOML: ")));
}

#[test]
fn unknown_keys_list_the_allowed_keys_of_every_table() {
    let cases = [
        (
            "x = 1",
            "x",
            "agents, backup, copy, daemon, drill, hooks, hopsfs, metrics, mysql, opensearch, repository, restore, retention, rondb, schedule, ssh",
        ),
        (
            "[daemon]\nx = 1",
            "daemon.x",
            "catalog, client_timeout, log_level, operator_group, shutdown_timeout, socket, socket_group",
        ),
        ("[metrics]\nx = 1", "metrics.x", "enabled, listen"),
        (
            "[repository]\nx = 1",
            "repository.x",
            "access_key_id, bandwidth_limit_mib, bucket, ca_bundle, compression_level, encryption, endpoint, object_lock, parallel_parts, part_size_mib, path, path_style, prefix, prune_access_key_id, prune_secret_access_key, region, secret_access_key, type, versioning",
        ),
        (
            "[repository.encryption]\nx = 1",
            "repository.encryption.x",
            "passphrase, slot",
        ),
        ("[backup]\nx = 1", "backup.x", "files"),
        ("[backup.files]\nx = 1", "backup.files.x", "paths"),
        (
            "[backup.files]\npaths = [{ path = \"/a\", x = 1 }]",
            "backup.files.paths[0].x",
            "optional, path",
        ),
        (
            "[[schedule]]\nname = \"a\"\ncron = \"* * * * *\"\njob = \"backup\"\nx = 1",
            "schedule[0].x",
            "catch_up, cron, job, name, target, timezone",
        ),
        (
            "[mysql]\nuser = \"u\"\nhost = \"h\"\npassword = { credential = \"c\" }\nx = 1",
            "mysql.x",
            "exclude_users, host, mode, mysqlpump, password, port, socket, tls, tls_ca, user",
        ),
        (
            "[rondb]\nx = 1\n[[rondb.data_nodes]]\nid = 1\ny = 2",
            "rondb.x",
            "backup_dir, backup_password, backup_timeout, command_timeout, data_nodes, keep_node_copies, mgm_client, mgm_host, ndb_show_tables",
        ),
        (
            "[rondb]\n[[rondb.data_nodes]]\nid = 1\ny = 2",
            "rondb.data_nodes[0].y",
            "backup_dir, host, id",
        ),
        (
            "[rondb]\n[hopsfs]\nx = 1\n[[hopsfs.datanodes]]\nhost = \"dn1\"",
            "hopsfs.x",
            "block_storage, cloud, copy_timeout, datanodes, referenced_blocks",
        ),
        (
            "[rondb]\n[hopsfs]\n[[hopsfs.datanodes]]\nhost = \"dn1\"\ny = 1",
            "hopsfs.datanodes[0].y",
            "host, name, volumes",
        ),
        (
            "[ssh]\nx = 1",
            "ssh.x",
            "connect_timeout, identity_file, known_hosts, port, ssh, user",
        ),
        (
            "[agents]\nroots = 1",
            "agents.roots",
            "bandwidth, binary, enabled, links, nodes, timeout, timezone",
        ),
        ("[drill]\nx = 1", "drill.x", "check, max_age, standby"),
        (
            "[opensearch]\nx = 1",
            "opensearch.x",
            "ca_file, host, indices, location, password, replace, repository, restore_timeout, snapshot_timeout, url, user",
        ),
        (
            "[hooks]\nx = 1",
            "hooks.x",
            "backup_failure, backup_start, backup_success, copy_result, drill_result, restore_step, timeout",
        ),
        (
            "[[agents.nodes]]\nhost = \"dn1\"\nbandwidth = \"1MiB\"\nrate = 1",
            "agents.nodes[0].rate",
            "bandwidth, host",
        ),
    ];
    for (text, key, allowed) in cases {
        let errors = parse(text, "f", &SecretEnv::default()).unwrap_err();
        let error = errors
            .0
            .iter()
            .find(|e| e.key == key)
            .unwrap_or_else(|| panic!("{text}: {errors}"));
        assert_eq!(
            error.message,
            format!("unknown key (allowed keys: {allowed})"),
            "{text}"
        );
    }
}

#[test]
fn durations_and_edges() {
    let timeout = |t: &str| {
        parse(
            &format!("[daemon]\nshutdown_timeout = {t:?}\n"),
            "f",
            &SecretEnv::default(),
        )
        .map(|s| s.daemon.shutdown_timeout)
    };
    assert_eq!(timeout("1h").unwrap(), Duration::from_secs(3600));
    assert_eq!(timeout("2m 30s").unwrap(), Duration::from_secs(150));
    assert!(timeout("1h 1s").is_err());
    assert!(timeout("0s").is_err());

    let long = format!("/{}", "s".repeat(110));
    assert!(errors_of(&format!("[daemon]\nsocket = {long:?}\n")).contains("at most 107"));
    assert!(errors_of("[repository]\npath = \"/srv/../etc\"\n").contains("contains \"..\""));
    assert_eq!(
        parse("[metrics]\nenabled = false\n", "f", &SecretEnv::default())
            .unwrap()
            .metrics
            .listen,
        None
    );
    assert!(parse(
        "[metrics]\nlisten = \"[::1]:9741\"\n",
        "f",
        &SecretEnv::default()
    )
    .is_ok());
    assert!(errors_of("[daemon]\nsocket_group = \"1000\"\n").contains("invalid group name"));
    // An empty paths list means "no extra files", not the default list.
    let s = parse("[backup.files]\npaths = []\n", "f", &SecretEnv::default()).unwrap();
    assert!(s.backup.files.is_empty());
}

#[test]
fn nothing_panics_on_odd_input() {
    let inputs = [
        "schedule = 3",
        "schedule = [1, \"x\", {}]",
        "[[schedule]]\n[[schedule]]\nname = 3\ncron = []\n",
        "backup = []",
        "backup.files.paths = \"/a\"",
        "backup.files.paths = [\"/a\", 4]",
        "mysql = 1",
        "[mysql]\npassword = 7\n",
        "[mysql]\npassword = { file = 7, credential = [] }\n",
        "[mysql]\npassword = {}\nport = 99999\n",
        "[repository]\ncompression_level = 99999999999\n",
        "a.b.c = 1\n[a]\n",
        "[daemon]\nsocket = \"\"\n",
    ];
    let mut all = String::new();
    for input in inputs {
        let out = errors_of(input);
        assert!(!out.is_empty(), "{input}");
        for line in out.lines() {
            assert!(line.starts_with("hopsdr.toml:"), "{input}: {out}");
        }
        all.push_str(&format!("--- {input:?}\n{out}\n"));
    }
    if std::env::var_os("HOPSDR_SHOW").is_some() {
        println!("{all}");
    }
}

#[test]
fn hopsfs_settings_and_their_errors() {
    let ok = parse(
        "[rondb]\n[hopsfs]\nreferenced_blocks = [\"/usr/bin/blocks\"]\n\
         [[hopsfs.datanodes]]\nhost = \"dn1\"\nvolumes = [\"[DISK]/srv/a\", \"/srv/b\"]\n\
         [[hopsfs.datanodes]]\nname = \"head\"\nhost = \"local\"\n",
        "hopsdr.toml",
        &SecretEnv::default(),
    )
    .unwrap();
    let h = ok.hopsfs.unwrap();
    assert_eq!(h.block_storage, crate::config::BlockStorage::Local);
    assert_eq!(h.datanodes[0].name, "dn1");
    assert_eq!(
        h.datanodes[0].volumes,
        vec![PathBuf::from("/srv/a"), PathBuf::from("/srv/b")]
    );
    assert_eq!(
        h.datanodes[1].volumes,
        vec![PathBuf::from("/srv/hops/hopsdata/hdfs/dn")]
    );
    assert_eq!(
        errors_of("[hopsfs]\nblock_storage = \"cloud\"\n"),
        "hopsdr.toml:1: hopsfs.cloud: required key is missing: add [hopsfs.cloud] with the blocks' bucket (bucket, endpoint, credentials)\n\
         hopsdr.toml:1: hopsfs: [hopsfs] needs [rondb]: the blocks are taken consistent with the RonDB backup (and its metadata says which blocks exist)"
    );
    // Cloud mode: the bucket with its own credentials; set_size as HopsFS's prefix size.
    let c = parse(
        "[rondb]\n[hopsfs]\nblock_storage = \"cloud\"\n[hopsfs.cloud]\nbucket = \"hopsfs-blocks\"\nendpoint = \"https://s3.local:9000\"\nregion = \"us-east-1\"\n",
        "f",
        &SecretEnv::default(),
    )
    .unwrap()
    .hopsfs
    .unwrap()
    .cloud
    .unwrap();
    assert_eq!((c.s3.bucket.as_str(), c.set_size), ("hopsfs-blocks", 500));
    let e = errors_of("[rondb]\n[hopsfs]\n[[hopsfs.datanodes]]\nhost = \"dn1\"\n[hopsfs.cloud]\nbucket = \"b-1\"\n");
    assert!(
        e.contains("hopsfs.cloud: [hopsfs.cloud] is for block_storage = \"cloud\""),
        "{e}"
    );
    let e = errors_of("[rondb]\n[hopsfs]\nblock_storage = \"cloud\"\n[hopsfs.cloud]\nbucket = \"B\"\nset_size = -1\n");
    assert!(
        e.contains("hopsfs.cloud.bucket: invalid bucket name")
            && e.contains("hopsfs.cloud.set_size"),
        "{e}"
    );
    assert_eq!(
        errors_of("[rondb]\n[hopsfs]\n"),
        "hopsdr.toml:2: hopsfs.datanodes: no datanodes: list every HopsFS datanode ([[hopsfs.datanodes]] with host and volumes); every one must be copied"
    );
    assert_eq!(
        errors_of("[rondb]\n[hopsfs]\n[[hopsfs.datanodes]]\nhost = \"a\"\n[[hopsfs.datanodes]]\nhost = \"a\"\n"),
        "hopsdr.toml:5: hopsfs.datanodes[1].name: duplicate datanode name \"a\": give each datanode its own name"
    );
}

#[test]
fn retention_policy_is_read_with_its_defaults_and_bad_values_named() {
    let s = parse(
        "[retention]\nkeep_last = 3\nkeep_daily = 7\nkeep_within = \"2d\"\ntimezone = \"Europe/Berlin\"\n",
        "f",
        &SecretEnv::default(),
    )
    .unwrap();
    let p = &s.retention.policy;
    assert_eq!(
        (p.keep_last, p.keep_daily, p.keep_weekly),
        (Some(3), Some(7), None)
    );
    assert_eq!(p.keep_within, Some(chrono::Duration::days(2)));
    assert_eq!(p.timezone, chrono_tz::Europe::Berlin);
    assert_eq!(p.min_verified, 1);
    assert!(s.retention.prune_after_backup);
    let none = parse("", "f", &SecretEnv::default()).unwrap();
    assert!(
        !none.retention.policy.has_rules(),
        "no section: nothing is forgotten"
    );

    let errors = parse(
        "[retention]\nkeep_last = -1\ntimezone = \"Mars/Olympus\"\nkeep_within = \"soon\"\n",
        "f",
        &SecretEnv::default(),
    )
    .unwrap_err();
    let text = errors.to_string();
    assert!(
        text.contains("retention.keep_last: keep_last = -1 is out of range"),
        "{text}"
    );
    assert!(
        text.contains("retention.timezone: unknown time zone \"Mars/Olympus\""),
        "{text}"
    );
    assert!(
        text.contains("retention.keep_within: invalid duration \"soon\""),
        "{text}"
    );
}

#[test]
fn an_s3_repository_is_read_with_its_defaults() {
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("s3.secret");
    fs::write(&secret, "key\n").unwrap();
    fs::set_permissions(&secret, fs::Permissions::from_mode(0o600)).unwrap();
    let text = format!(
        "[repository]\ntype = \"s3\"\nendpoint = \"http://127.0.0.1:9000\"\nbucket = \"hopsdr-backups\"\n\
         prefix = \"/cluster1/\"\npath_style = true\naccess_key_id = \"AK\"\n\
         secret_access_key = {{ file = \"{}\" }}\nbandwidth_limit_mib = 1.5\n",
        secret.display()
    );
    let s = parse(&text, "f", &SecretEnv::default()).unwrap();
    let crate::config::StoreSettings::S3(r) = &s.repository.store else {
        panic!("{:?}", s.repository);
    };
    assert_eq!(r.endpoint.as_deref(), Some("http://127.0.0.1:9000"));
    assert_eq!(
        (r.bucket.as_str(), r.prefix.as_str()),
        ("hopsdr-backups", "cluster1")
    );
    assert_eq!(r.region, "us-east-1");
    assert!(r.path_style);
    assert_eq!((r.part_size, r.parallel_parts), (16 << 20, 4));
    assert_eq!(r.bandwidth_limit, Some(3 << 19));
    assert_eq!(s.repository.compression_level, 1);

    let errors = parse(
        "[repository]\ntype = \"s3\"\nbucket = \"Bad_Bucket\"\npart_size_mib = 2\n",
        "f",
        &SecretEnv::default(),
    )
    .unwrap_err()
    .to_string();
    assert!(
        errors.contains("invalid bucket name \"Bad_Bucket\""),
        "{errors}"
    );
    assert!(
        errors.contains("part_size_mib = 2 is out of range"),
        "{errors}"
    );
}

#[test]
fn restore_settings_for_a_redeployed_cluster_and_their_errors() {
    let ok = parse(
        "[restore]\nno_binlog = false\nexclude_tables = [\"mysql.ndb_apply_status\"]\n\
         services = [\"namenode\", \"epipe\"]\nmysqld_restart = []\nmysqld_hosts = [\"local\", \"10.0.0.2\"]\n\
         mysqld_api_nodes = 2\nquiesce_timeout = \"30s\"\n\
         [restore.volume_map]\n\"dn1/vol2\" = \"dn1/vol1\"\n",
        "hopsdr.toml",
        &SecretEnv::default(),
    )
    .unwrap();
    let r = ok.restore;
    assert!(!r.no_binlog);
    assert_eq!(r.exclude_tables, ["mysql.ndb_apply_status"]);
    assert_eq!(
        r.exclude_tables_data,
        ["hopsworks.hosts", "hopsworks.host_services"]
    );
    assert_eq!(r.services, ["namenode", "epipe"]);
    assert!(r.mysqld_restart.is_empty());
    assert_eq!(
        r.mysqld_hosts,
        [NodeHost::Local, NodeHost::Remote("10.0.0.2".into())]
    );
    assert_eq!(r.mysqld_api_nodes, 2);
    assert_eq!(r.quiesce_timeout, Duration::from_secs(30));
    assert_eq!(
        r.volume_map,
        [("dn1/vol2".to_string(), "dn1/vol1".to_string())]
    );
    let e = errors_of(
        "[restore]\nexclude_tables = [\"hosts\", \"a.b,c.d\"]\nservices = [\"-x\"]\nmysqld_api_nodes = 300\n\
         [restore.volume_map]\n\"dn1\" = \"dn1/vol0\"\n",
    );
    for want in [
        "hopsdr.toml:2: restore.exclude_tables[0]: \"hosts\" is not a table name: use \"<database>.<table>\"",
        "restore.exclude_tables[1]: \"a.b,c.d\" is not a table name",
        "hopsdr.toml:3: restore.services[0]: \"-x\" is not a systemd unit name",
        "hopsdr.toml:4: restore.mysqld_api_nodes: 300 API nodes for the MySQL servers is out of range: use 0 to 255",
        "restore.volume_map.dn1: \"dn1\" is not a volume: use \"<datanode name>/vol<k>\" (k from 1), e.g. \"dn1/vol2\"",
        "\"dn1/vol0\" is not a volume",
    ] {
        assert!(e.contains(want), "{want}\n{e}");
    }
}

#[test]
fn repository_encryption_takes_a_passphrase_secret_and_a_slot_name() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("repository.key");
    fs::write(&key, "a long passphrase\n").unwrap();
    fs::set_permissions(&key, fs::Permissions::from_mode(0o600)).unwrap();
    let text = format!(
        "[repository]\npath = \"/srv/r\"\n[repository.encryption]\npassphrase = {{ file = \"{}\" }}\nslot = \"ops-2026\"\n",
        key.display()
    );
    let s = parse(&text, "f", &SecretEnv::default()).unwrap();
    let e = s.repository.encryption.as_ref().unwrap();
    assert_eq!(e.passphrase, Secret::File(key.clone()));
    assert_eq!(e.slot.as_deref(), Some("ops-2026"));

    let text = errors_of("[repository.encryption]\npassphrase = \"hunter2\"\nslot = \"Ops Key\"\n");
    assert!(
        text.contains("repository.encryption.passphrase: inline secrets are not allowed"),
        "{text}"
    );
    assert!(
        text.contains("repository.encryption.slot: invalid key slot name \"Ops Key\""),
        "{text}"
    );
    let text = errors_of("[repository.encryption]\nslot = \"a\"\n");
    assert!(text.contains("repository.encryption.passphrase"), "{text}");
    // A key file others can read is refused, naming it.
    fs::set_permissions(&key, fs::Permissions::from_mode(0o644)).unwrap();
    let text = errors_of(&format!(
        "[repository.encryption]\npassphrase = {{ file = \"{}\" }}\n",
        key.display()
    ));
    assert!(
        text.contains("repository.encryption.passphrase") && text.contains("repository.key"),
        "{text}"
    );
}

/// `[agents] bandwidth` and its per-host timetables: read, looked up by host, and bad ones named
/// by key with what to write.
#[test]
fn agent_bandwidth_timetables_are_read_per_host_and_bad_ones_named() {
    let s = parse(
        "[agents]\nbandwidth = \"08:00,10MiB 20:00,off\"\ntimezone = \"Europe/Stockholm\"\n\
         [[agents.nodes]]\nhost = \"10.0.0.7\"\nbandwidth = \"1MiB:4MiB\"\n",
        "f",
        &SecretEnv::default(),
    )
    .unwrap();
    let a = &s.agents;
    assert_eq!(a.timezone, chrono_tz::Europe::Stockholm);
    let node = a.bandwidth_of(&NodeHost::Remote("10.0.0.7".into()));
    assert_eq!(node.at(0).tx, Some(1 << 20));
    assert_eq!(node.at(0).rx, Some(4 << 20));
    let other = a.bandwidth_of(&NodeHost::Remote("10.0.0.8".into()));
    assert_eq!(other.at(9 * 60).tx, Some(10 << 20));
    assert_eq!(other.at(21 * 60).tx, None);
    for (text, want) in [
        ("[agents]\nbandwidth = \"666\"", "agents.bandwidth"),
        ("[agents]\ntimezone = \"Mars/Olympus\"", "agents.timezone"),
        (
            "[[agents.nodes]]\nhost = \"a\"\nbandwidth = \"25:00,1MiB\"",
            "agents.nodes[0].bandwidth",
        ),
        (
            "[[agents.nodes]]\nbandwidth = \"1MiB\"",
            "agents.nodes[0].host",
        ),
    ] {
        let e = errors_of(text);
        assert!(e.contains(want), "{text}: {e}");
    }
    assert!(errors_of("[agents]\nbandwidth = \"666\"").contains("write 666KiB or 666MiB"));

    // A link shared by two hosts: each gets half, lowered further by its own timetable.
    let s = parse(
        "[agents]\n[[agents.nodes]]\nhost = \"10.0.0.7\"\nbandwidth = \"2MiB\"\n\
         [[agents.links]]\nname = \"rack1\"\nhosts = [\"10.0.0.7\", \"10.0.0.8\"]\nbandwidth = \"10MiB\"\n",
        "f",
        &SecretEnv::default(),
    )
    .unwrap();
    let rate = |h: &str| s.agents.bandwidth_of(&NodeHost::Remote(h.into())).at(0).tx;
    assert_eq!(rate("10.0.0.7"), Some(2 << 20));
    assert_eq!(rate("10.0.0.8"), Some(5 << 20));
    assert_eq!(rate("10.0.0.9"), None);
    let e = errors_of(
        "[[agents.links]]\nhosts = [\"a\"]\nbandwidth = \"1MiB\"\n\
         [[agents.links]]\nhosts = [\"a\"]\nbandwidth = \"1MiB\"\n",
    );
    assert!(
        e.contains("agents.links[1].hosts[0]") && e.contains("two links"),
        "{e}"
    );
    assert!(errors_of("[[agents.links]]\nbandwidth = \"1MiB\"").contains("agents.links[0].hosts"));
}

/// `[hooks]`: argv with an absolute program; anything else is named with what to write.
#[test]
fn hooks_are_argv_with_an_absolute_program() {
    let s = parse(
        "[hooks]\nbackup_failure = [\"/usr/local/bin/page\", \"--team\", \"data\"]\ntimeout = \"5s\"\n",
        "f",
        &SecretEnv::default(),
    )
    .unwrap();
    assert_eq!(
        s.hooks.backup_failure.as_deref(),
        Some(
            &[
                "/usr/local/bin/page".to_string(),
                "--team".into(),
                "data".into()
            ][..]
        )
    );
    assert_eq!(s.hooks.timeout, Duration::from_secs(5));
    assert!(s.hooks.backup_start.is_none());
    let e = errors_of("[hooks]\nbackup_start = [\"notify --all\"]");
    assert!(
        e.contains("hooks.backup_start") && e.contains("absolute program"),
        "{e}"
    );
}

/// `[drill] max_age` and `job = "drill"` schedules.
#[test]
fn drills_have_a_max_age_and_a_schedule() {
    let s = parse(
        "[drill]\nmax_age = \"8d\"\n[[schedule]]\nname = \"weekly-drill\"\ncron = \"0 4 * * 0\"\njob = \"drill\"\n\
         [hooks]\ndrill_result = [\"/usr/local/bin/notify\", \"drill\"]\n",
        "f",
        &SecretEnv::default(),
    )
    .unwrap();
    assert_eq!(s.drill.max_age, Some(Duration::from_secs(8 * 86400)));
    assert_eq!(s.schedules[0].job, JobKind::Drill);
    assert_eq!(
        s.hooks.drill_result.as_deref(),
        Some(&["/usr/local/bin/notify".to_string(), "drill".to_string()][..])
    );
    assert_eq!(
        parse("", "f", &SecretEnv::default()).unwrap().drill.max_age,
        None
    );
    let e = errors_of("[drill]\nmax_age = \"soon\"");
    assert!(e.contains("drill.max_age"), "{e}");
}

/// `[[copy]]`: named, a store of its own (never the repository's), a schedule's target.
#[test]
fn copies_are_named_stores_and_schedules_target_them() {
    let s = parse(
        "[repository]\npath = \"/srv/hopsdr\"\n[[copy]]\nname = \"offsite\"\npath = \"/mnt/offsite\"\nparallel = 8\n\
         [[schedule]]\nname = \"c\"\ncron = \"0 3 * * *\"\njob = \"copy\"\ntarget = \"offsite\"\n",
        "f",
        &SecretEnv::default(),
    )
    .unwrap();
    assert_eq!(s.copies[0].name, "offsite");
    assert_eq!(s.copies[0].parallel, 8);
    assert_eq!(
        s.copies[0].store,
        StoreSettings::Local {
            path: "/mnt/offsite".into()
        }
    );
    assert_eq!(s.schedules[0].target.as_deref(), Some("offsite"));
    for (text, want) in [
        (
            "[repository]\npath = \"/srv/hopsdr\"\n[[copy]]\nname = \"x\"\npath = \"/srv/hopsdr\"\n",
            "copy[0].path: the copy is the repository itself",
        ),
        ("[[copy]]\nname = \"x\"\n", "copy[0].path: required key is missing"),
        (
            "[[copy]]\nname = \"x\"\npath = \"/a\"\n[[copy]]\nname = \"x\"\npath = \"/b\"\n",
            "copy[1].name: duplicate copy name \"x\"",
        ),
        (
            "[[schedule]]\nname = \"c\"\ncron = \"0 3 * * *\"\njob = \"copy\"\n",
            "schedule[0].target: required key is missing",
        ),
        (
            "[[schedule]]\nname = \"c\"\ncron = \"0 3 * * *\"\njob = \"copy\"\ntarget = \"nope\"\n",
            "schedule[0].target: no [[copy]] named \"nope\": the copies are none",
        ),
        (
            "[[schedule]]\nname = \"c\"\ncron = \"0 3 * * *\"\njob = \"backup\"\ntarget = \"x\"\n",
            "schedule[0].target: target is for job = \"copy\" schedules",
        ),
        (
            "[[copy]]\nname = \"x\"\npath = \"/a\"\nparallel = 0\n",
            "copy[0].parallel: parallel = 0 is out of range",
        ),
    ] {
        let e = errors_of(text);
        assert!(e.contains(want), "{text}\n{e}");
    }
}

/// `[opensearch]`: its url, credentials, repository and location; bad values named.
#[test]
fn opensearch_settings_and_their_errors() {
    let dir = tempfile::tempdir().unwrap();
    let pw = dir.path().join("os.password");
    fs::write(&pw, "pw\n").unwrap();
    fs::set_permissions(&pw, fs::Permissions::from_mode(0o600)).unwrap();
    let rondb = "[rondb]\n[[rondb.data_nodes]]\nid = 1\n";
    let s = parse(
        &format!(
            "{rondb}[opensearch]\nurl = \"https://os:9200/\"\nuser = \"hopsdr\"\npassword = {{ file = \"{}\" }}\n\
             location = \"/srv/hops/opensearch/snapshots/hopsdr\"\nhost = \"os1\"\nreplace = \"delete\"\n",
            pw.display()
        ),
        "f",
        &SecretEnv::default(),
    )
    .unwrap();
    let o = s.opensearch.unwrap();
    assert_eq!(o.url, "https://os:9200");
    assert_eq!(o.repository, "hopsdr");
    assert_eq!(o.host, NodeHost::Remote("os1".into()));
    assert_eq!(o.replace, OpensearchReplace::Delete);
    assert_eq!(o.indices, "*,-.opendistro_security,-.opensearch-*");
    assert_eq!(o.snapshot_timeout, Duration::from_secs(3600));
    for (text, want) in [
        ("[opensearch]\nurl = \"https://os:9200\"\nlocation = \"/a\"\n", "[opensearch] needs [rondb]"),
        (
            &format!("{rondb}[opensearch]\nlocation = \"/a\"\n") as &str,
            "opensearch.url: required key is missing",
        ),
        (
            &format!("{rondb}[opensearch]\nurl = \"os:9200\"\nlocation = \"/a\"\n"),
            "opensearch.url: invalid url",
        ),
        (
            &format!("{rondb}[opensearch]\nurl = \"https://os\"\nuser = \"u\"\nlocation = \"/a\"\n"),
            "opensearch.password: user and password go together",
        ),
        (
            &format!("{rondb}[opensearch]\nurl = \"https://os\"\nlocation = \"relative\"\n"),
            "opensearch.location",
        ),
        (
            &format!("{rondb}[opensearch]\nurl = \"https://os\"\nlocation = \"/a\"\nrepository = \"Hops DR\"\n"),
            "opensearch.repository: invalid snapshot repository name",
        ),
        (
            &format!("{rondb}[opensearch]\nurl = \"https://os\"\nlocation = \"/a\"\nreplace = \"wipe\"\n"),
            "opensearch.replace",
        ),
    ] {
        let e = errors_of(text);
        assert!(e.contains(want), "{text}\n{e}");
    }
}
