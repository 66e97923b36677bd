//! Users, grants and SQL objects against a real MariaDB server started in a temp datadir:
//! dump, drop everything, replay, and the grants and passwords are back.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use hopsdr::cluster::mysql::{MysqlClient, MysqlTarget, DEFAULT_EXCLUDED_USERS};

use crate::harness::{free_port, wait_for};

/// A private MariaDB server, killed on drop.
pub struct Mariadb {
    pub dir: tempfile::TempDir,
    pub port: u16,
    child: Child,
}

impl Mariadb {
    pub fn start() -> Mariadb {
        Self::start_with(&[])
    }

    /// A server that takes TCP connections only over TLS (`require_secure_transport`), with a
    /// certificate for 127.0.0.1 signed by a CA of its own; returns it, the CA's PEM file and
    /// the directory of the certificates (removed when dropped).
    pub fn start_tls() -> (Mariadb, PathBuf, tempfile::TempDir) {
        let dir = tempfile::Builder::new()
            .prefix("hopsdr-tls-")
            .tempdir()
            .unwrap();
        let certs = dir.path().to_path_buf();
        let ca = make_ca(&certs, "ca", Some(("server", "127.0.0.1")));
        // mariadbd runs as mysql: its key and certificates must be readable by it.
        for f in ["ca.pem", "server.pem", "server.key"] {
            std::fs::set_permissions(certs.join(f), std::fs::Permissions::from_mode(0o644))
                .unwrap();
        }
        std::fs::set_permissions(&certs, std::fs::Permissions::from_mode(0o755)).unwrap();
        let m = Self::start_with(&[
            format!("--ssl-ca={}", ca.display()),
            format!("--ssl-cert={}", certs.join("server.pem").display()),
            format!("--ssl-key={}", certs.join("server.key").display()),
            "--require-secure-transport=ON".into(),
        ]);
        (m, ca, dir)
    }

    fn start_with(extra: &[String]) -> Mariadb {
        let dir = tempfile::Builder::new()
            .prefix("hopsdr-mariadb-")
            .tempdir()
            .unwrap();
        let d = dir.path();
        std::fs::create_dir_all(d.join("data")).unwrap();
        // Its own tmpdir: parallel bootstraps sharing /tmp trip over each other's temp tables.
        std::fs::create_dir_all(d.join("tmp")).unwrap();
        // mariadbd runs as mysql: the instance directory must be its own, or it never starts.
        let st = Command::new("chown")
            .args(["-R", "mysql:mysql"])
            .arg(d)
            .status()
            .unwrap();
        assert!(st.success());
        let out = Command::new("mariadb-install-db")
            .args(["--no-defaults", "--user=mysql", "--auth-root-authentication-method=socket", "--skip-test-db"])
            .arg(format!("--datadir={}", d.join("data").display()))
            .arg(format!("--tmpdir={}", d.join("tmp").display()))
            .output()
            .expect("mariadb-install-db (mariadb-server) must be installed: run scripts/setup-test-deps");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let port = free_port();
        let child = Command::new("mariadbd")
            .arg("--no-defaults")
            .arg(format!("--datadir={}", d.join("data").display()))
            .arg(format!("--tmpdir={}", d.join("tmp").display()))
            .arg(format!("--socket={}", d.join("mysqld.sock").display()))
            .arg(format!("--port={port}"))
            .args([
                "--bind-address=127.0.0.1",
                "--user=mysql",
                "--skip-name-resolve",
            ])
            .args(extra)
            .arg(format!("--pid-file={}", d.join("mysqld.pid").display()))
            .arg(format!("--log-error={}", d.join("error.log").display()))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let m = Mariadb { dir, port, child };
        wait_for(
            "mariadbd to accept connections",
            Duration::from_secs(60),
            || m.sql_root("SELECT 1").ok().map(|_| ()),
        );
        m
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("mysqld.sock")
    }

    /// Runs SQL as root over the socket with the mariadb client.
    pub fn sql_root(&self, sql: &str) -> Result<String, String> {
        let out = Command::new("mariadb")
            .arg(format!("--socket={}", self.socket().display()))
            .args(["-u", "root", "-N", "-B", "-e", sql])
            .output()
            .map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }

    /// Can `user` log in over TCP with `password`?
    pub fn login(&self, user: &str, password: &str) -> bool {
        Command::new("mariadb")
            .args(["-h", "127.0.0.1", "-P", &self.port.to_string(), "-u", user])
            .arg(format!("-p{password}"))
            .args(["-N", "-e", "SELECT CURRENT_USER()"])
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false)
    }
}

impl Drop for Mariadb {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// SHOW GRANTS, with column lists in a stable order (the server prints them in any order).
fn grants_of(m: &Mariadb, who: &str) -> Vec<String> {
    let mut g: Vec<String> = m
        .sql_root(&format!("SHOW GRANTS FOR {who}"))
        .unwrap()
        .lines()
        .map(|s| match (s.find(" ("), s.find(") ON ")) {
            (Some(a), Some(b)) if a < b => {
                let mut cols: Vec<&str> = s[a + 2..b].split(", ").collect();
                cols.sort();
                format!("{}({}){}", &s[..a + 1], cols.join(", "), &s[b + 1..])
            }
            _ => s.to_string(),
        })
        .collect();
    g.sort();
    g
}

fn target(m: &Mariadb, socket: &Path) -> MysqlTarget {
    MysqlTarget {
        socket: Some(socket.to_path_buf()),
        host: None,
        port: m.port,
        user: "hopsdr".into(),
        password: "dump-secret".into(),
        tls: None,
    }
}

#[test]
fn users_grants_and_objects_survive_dump_drop_replay() {
    let m = Mariadb::start();
    let setup = "
        CREATE USER 'hopsdr'@'localhost' IDENTIFIED BY 'dump-secret';
        GRANT ALL PRIVILEGES ON *.* TO 'hopsdr'@'localhost' WITH GRANT OPTION;
        CREATE DATABASE hopsworks; CREATE DATABASE fs_demo;
        CREATE TABLE hopsworks.users (id INT PRIMARY KEY, email VARCHAR(64), secret VARCHAR(64));
        CREATE TABLE fs_demo.sales (id INT PRIMARY KEY, amount INT);
        CREATE VIEW hopsworks.user_emails AS SELECT id, email FROM hopsworks.users;
        CREATE PROCEDURE hopsworks.count_users(OUT n INT) SELECT COUNT(*) INTO n FROM hopsworks.users;
        CREATE ROLE data_reader;
        GRANT SELECT ON fs_demo.* TO data_reader;
        CREATE USER 'app'@'%' IDENTIFIED BY 'app pass; it''s';
        GRANT SELECT, INSERT ON hopsworks.* TO 'app'@'%';
        GRANT SELECT (id, email) ON hopsworks.users TO 'app'@'%';
        GRANT data_reader TO 'app'@'%';
        SET DEFAULT ROLE data_reader FOR 'app'@'%';
        CREATE USER 'analyst'@'127.0.0.1' IDENTIFIED BY 'an4lyst';
        GRANT SELECT ON fs_demo.sales TO 'analyst'@'127.0.0.1';
        GRANT EXECUTE ON PROCEDURE hopsworks.count_users TO 'analyst'@'127.0.0.1';
    ";
    m.sql_root(setup).unwrap();
    let accounts = ["'app'@'%'", "'analyst'@'127.0.0.1'", "data_reader"];
    let before: Vec<Vec<String>> = accounts.iter().map(|a| grants_of(&m, a)).collect();
    assert!(m.login("app", "app pass; it's") && m.login("analyst", "an4lyst"));

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let exclude: Vec<String> = DEFAULT_EXCLUDED_USERS
        .iter()
        .map(|s| s.to_string())
        .chain([
            "hopsdr".to_string(),
            "mysql".to_string(),
            "PUBLIC".to_string(),
        ])
        .collect();
    let (users, objects) = rt.block_on(async {
        let mut c = MysqlClient::connect(&target(&m, &m.socket()))
            .await
            .unwrap();
        assert!(c.is_mariadb(), "{}", c.version);
        let u = c.dump_users(&exclude).await.unwrap();
        let o = c.dump_objects().await.unwrap();
        c.disconnect().await;
        (u, o)
    });
    assert_eq!((users.accounts, users.roles), (2, 1), "{}", users.sql);
    assert_eq!((objects.views, objects.routines), (1, 1), "{}", objects.sql);
    assert!(
        !users.sql.contains("'root'") && !users.sql.contains("`root`"),
        "{}",
        users.sql
    );

    // The disaster: accounts, roles, view and procedure gone (tables come back by ndb_restore).
    m.sql_root(
        "DROP USER 'app'@'%'; DROP USER 'analyst'@'127.0.0.1'; DROP ROLE data_reader;
         DROP VIEW hopsworks.user_emails; DROP PROCEDURE hopsworks.count_users;",
    )
    .unwrap();
    assert!(!m.login("app", "app pass; it's"));

    rt.block_on(async {
        let mut c = MysqlClient::connect(&target(&m, &m.socket()))
            .await
            .unwrap();
        // Objects first: a routine grant needs its routine (and dropping a routine drops its
        // grants), so users and grants are replayed after the objects.
        c.replay(&objects.sql).await.unwrap();
        c.replay(&users.sql).await.unwrap();
        // The pair replays cleanly a second time, onto accounts and objects that now exist.
        c.replay(&objects.sql).await.unwrap();
        c.replay(&users.sql).await.unwrap();
        c.disconnect().await;
    });
    let after: Vec<Vec<String>> = accounts.iter().map(|a| grants_of(&m, a)).collect();
    assert_eq!(before, after);
    assert!(
        m.login("app", "app pass; it's"),
        "app logs in with its old password"
    );
    assert!(m.login("analyst", "an4lyst"));
    assert_eq!(
        m.sql_root("SELECT COUNT(*) FROM information_schema.VIEWS WHERE TABLE_NAME='user_emails'")
            .unwrap()
            .trim(),
        "1"
    );
    assert_eq!(
        m.sql_root(
            "SELECT COUNT(*) FROM information_schema.ROUTINES WHERE ROUTINE_NAME='count_users'"
        )
        .unwrap()
        .trim(),
        "1"
    );
}

#[test]
fn a_daemon_backup_holds_the_users_and_schema_dumps() {
    use std::os::unix::fs::PermissionsExt;

    use hopsdr::repository::{Entry, LocalStorage, Repository};

    let m = Mariadb::start();
    m.sql_root(
        "CREATE USER 'hopsdr'@'localhost' IDENTIFIED BY 'dump-secret';
         GRANT ALL PRIVILEGES ON *.* TO 'hopsdr'@'localhost' WITH GRANT OPTION;
         CREATE DATABASE hopsworks;
         CREATE TABLE hopsworks.t (id INT PRIMARY KEY);
         CREATE VIEW hopsworks.v AS SELECT id FROM hopsworks.t;
         CREATE USER 'app'@'%' IDENTIFIED BY 'x';
         GRANT SELECT ON hopsworks.* TO 'app'@'%';",
    )
    .unwrap();
    let mut env = crate::harness::Env::new();
    let pw = env.path().join("mysql.password");
    std::fs::write(&pw, "dump-secret\n").unwrap();
    std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(0o600)).unwrap();
    env.extra_config = format!(
        "[mysql]\nuser = \"hopsdr\"\nsocket = \"{}\"\npassword = {{ file = \"{}\" }}\n",
        m.socket().display(),
        pw.display()
    );
    let _d = env.start();
    let out = env.ctl(&["backup", "start", "--wait"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        env.log()
    );
    let list = env.ctl_json(&["backups", "list"]);
    let id = list["backups"][0]["id"].as_str().unwrap().to_string();
    let show = env.ctl_json(&["backups", "show", &id]);
    let comps: Vec<&str> = show["components"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["component"].as_str().unwrap())
        .collect();
    assert_eq!(comps, ["files", "users"]);

    let repo = Repository::open_or_init(
        std::sync::Arc::new(LocalStorage::new(env.repo()).unwrap()),
        3,
    )
    .unwrap();
    let manifest = repo
        .read_manifest(&hopsdr::ids::BackupId::parse(&id).unwrap())
        .unwrap();
    let read = |path: &str| -> String {
        let f = manifest
            .entries
            .iter()
            .find_map(|e| match e {
                Entry::File(f) if f.path == path => Some(f.clone()),
                _ => None,
            })
            .unwrap_or_else(|| panic!("{path} in the manifest"));
        assert_eq!(f.meta.mode & 0o077, 0, "{path} is private");
        let mut out = Vec::new();
        repo.restore_file(&f, &mut out).unwrap();
        String::from_utf8(out).unwrap()
    };
    let users = read("users/users.sql");
    assert!(
        users.contains("CREATE USER IF NOT EXISTS `app`@`%`"),
        "{users}"
    );
    assert!(
        users.contains("GRANT SELECT ON `hopsworks`.* TO `app`@`%`"),
        "{users}"
    );
    assert!(
        !users.contains("`hopsdr`@"),
        "the dump account is not carried over: {users}"
    );
    let schema = read("users/schema.sql");
    assert!(
        schema.contains("VIEW `hopsworks`.`v` AS select"),
        "{schema}"
    );
}

/// A CA (`<name>.pem`, `<name>.key` in `dir`), with a certificate for `ip` it signed
/// (`<leaf>.pem`, `<leaf>.key`) when asked; returns the CA certificate's path.
pub fn make_ca(dir: &Path, name: &str, leaf: Option<(&str, &str)>) -> PathBuf {
    let ssl = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let (ca_pem, ca_key) = (format!("{name}.pem"), format!("{name}.key"));
    ssl(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        &format!("/CN=hopsdr test {name}"),
        "-keyout",
        &ca_key,
        "-out",
        &ca_pem,
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
    ]);
    if let Some((leaf, ip)) = leaf {
        let (pem, key, csr) = (
            format!("{leaf}.pem"),
            format!("{leaf}.key"),
            format!("{leaf}.csr"),
        );
        ssl(&[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            &format!("/CN={ip}"),
            "-keyout",
            &key,
            "-out",
            &csr,
        ]);
        std::fs::write(
            dir.join("ext.cnf"),
            format!(
                "subjectAltName=IP:{ip}\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n"
            ),
        )
        .unwrap();
        ssl(&[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            &ca_pem,
            "-CAkey",
            &ca_key,
            "-CAcreateserial",
            "-days",
            "2",
            "-out",
            &pem,
            "-extfile",
            "ext.cnf",
        ]);
    }
    dir.join(ca_pem)
}

#[test]
fn the_users_dump_goes_over_tls_with_the_servers_certificate_verified() {
    let (m, ca, _certs) = Mariadb::start_tls();
    m.sql_root(
        "CREATE USER 'hopsdr'@'127.0.0.1' IDENTIFIED BY 'dump-secret';
         GRANT ALL PRIVILEGES ON *.* TO 'hopsdr'@'127.0.0.1' WITH GRANT OPTION;
         CREATE USER 'app'@'%' IDENTIFIED BY 'x';",
    )
    .unwrap();
    let mut env = crate::harness::Env::new();
    let pw = env.path().join("mysql.password");
    std::fs::write(&pw, "dump-secret\n").unwrap();
    std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(0o600)).unwrap();
    let config = |tls: &str| {
        format!(
            "[mysql]\nuser = \"hopsdr\"\nhost = \"127.0.0.1\"\nport = {}\npassword = {{ file = \"{}\" }}\n{tls}",
            m.port,
            pw.display()
        )
    };
    let backup = |env: &crate::harness::Env| {
        let _d = env.start();
        let out = env.ctl(&["backup", "start", "--wait"]);
        let list = env.ctl_json(&["backups", "list"]);
        let last = list["backups"].as_array().unwrap().last().unwrap().clone();
        (out.status.code(), last)
    };

    // With the server's CA: the dump goes over TLS (the account requires it) and succeeds.
    env.extra_config = config(&format!("tls = true\ntls_ca = \"{}\"\n", ca.display()));
    let (code, last) = backup(&env);
    assert_eq!(code, Some(0), "{last}\n{}", env.log());
    assert_eq!(last["state"], "succeeded");
    // The server saw an encrypted session for hopsdr.
    assert!(m.sql_root("SELECT 1").is_ok());

    // Without TLS the same login is refused (MariaDB answers "access denied" when secure
    // transport is required): the backup fails, naming the server.
    env.extra_config = config("");
    let (code, last) = backup(&env);
    assert_ne!(code, Some(0));
    let e = last["error"].as_str().unwrap_or_default().to_string();
    let lower = e.to_lowercase();
    assert!(
        e.contains("127.0.0.1")
            && (lower.contains("secure transport") || lower.contains("access denied")),
        "{e}"
    );

    // With another CA the server's certificate is not trusted: refused before logging in.
    let other = make_ca(env.path(), "other", None);
    env.extra_config = config(&format!("tls = true\ntls_ca = \"{}\"\n", other.display()));
    let (code, last) = backup(&env);
    assert_ne!(code, Some(0));
    let e = last["error"].as_str().unwrap_or_default().to_string();
    assert!(e.to_lowercase().contains("certificate"), "{e}");
}
