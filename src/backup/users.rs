//! The `users` backup component: accounts, roles, grants and default roles (`users.sql`) and
//! views, routines, triggers and events (`schema.sql`) of the cluster's MySQL server, dumped
//! natively over the MySQL protocol and stored under `users/` in the backup (mode 0600: the
//! account hashes are secrets). A restore replays `schema.sql`, then `users.sql`.

use chrono::{DateTime, Utc};

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::cluster::mysql::{MysqlClient, MysqlError, MysqlTarget};
use crate::cluster::node::{Node, NodeError};
use crate::cluster::sqldump::replayable_users_sql;
use crate::config::{MysqlDumpMode, MysqlSettings, SecretEnv, SecretError};
use crate::repository::facts::UsersFacts;
use crate::repository::{BackupWriter, FileMeta, RepoError};

/// Where the dumps live in a backup.
pub use crate::repository::layout::{SCHEMA_SQL, USERS_SQL};

/// Why the users component failed.
#[derive(Debug, thiserror::Error)]
pub enum UsersError {
    #[error("failed to read the MySQL password: {0}")]
    Secret(#[from] SecretError),
    #[error(transparent)]
    Mysql(#[from] MysqlError),
    #[error("failed to start a runtime for the MySQL client: {0}")]
    Runtime(std::io::Error),
    #[error(transparent)]
    Repository(#[from] RepoError),
    #[error("mysqlpump: {0}")]
    Mysqlpump(#[from] NodeError),
    #[error("failed to write the mysqlpump defaults file \"{path}\": {source}")]
    DefaultsFile {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// How long mysqlpump may run.
const MYSQLPUMP_TIMEOUT: Duration = Duration::from_secs(600);

/// The mysqlpump argv of the guide (`--exclude-databases=% --users`), reading the password from
/// `defaults_file` (never from the command line, where `ps` would show it).
pub fn mysqlpump_argv(m: &MysqlSettings, exclude: &[String], defaults_file: &Path) -> Vec<String> {
    let mut a = vec![m.mysqlpump[0].clone()];
    // --defaults-extra-file must come first.
    a.push(format!("--defaults-extra-file={}", defaults_file.display()));
    a.extend(m.mysqlpump[1..].iter().cloned());
    a.push("--exclude-databases=%".into());
    a.push(format!("--exclude-users={}", exclude.join(",")));
    a.push("--users".into());
    a.push(format!("--user={}", m.user));
    match (&m.socket, &m.host) {
        (Some(s), _) => a.push(format!("--socket={}", s.display())),
        (None, Some(h)) => {
            a.push(format!("--host={h}"));
            a.push(format!("--port={}", m.port));
        }
        (None, None) => {}
    }
    if let Some(ca) = &m.tls {
        a.push("--ssl-mode=VERIFY_IDENTITY".into());
        if let Some(ca) = ca {
            a.push(format!("--ssl-ca={}", ca.display()));
        }
    }
    a
}

/// Runs mysqlpump on the head node with a private defaults file holding the password.
fn mysqlpump(m: &MysqlSettings, password: &str, exclude: &[String]) -> Result<String, UsersError> {
    let path = std::env::temp_dir().join(format!(
        "hopsdr-mysqlpump-{}-{}.cnf",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0)
    ));
    let err = |source| UsersError::DefaultsFile {
        path: path.clone(),
        source,
    };
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .map_err(err)?;
    let escaped = password.replace('\\', "\\\\").replace('"', "\\\"");
    f.write_all(format!("[client]\npassword=\"{escaped}\"\n").as_bytes())
        .map_err(err)?;
    drop(f);
    let out = Node::local("head node").run(
        &mysqlpump_argv(m, exclude, &path),
        MYSQLPUMP_TIMEOUT,
        &CancellationToken::new(),
    );
    let _ = std::fs::remove_file(&path);
    Ok(replayable_users_sql(&out?.stdout))
}

/// Dumps users and SQL objects into `writer`.
pub fn back_up(
    m: &MysqlSettings,
    writer: &mut BackupWriter,
    now: DateTime<Utc>,
) -> Result<UsersFacts, UsersError> {
    let password = m.password.read(&SecretEnv::from_process())?;
    let target = MysqlTarget::of(m, password);
    let mut exclude = m.exclude_users.clone();
    // hopsdr's own account is created by the deployment of the target cluster.
    exclude.push(m.user.clone());
    let pumped = match m.mode {
        MysqlDumpMode::Mysqlpump => Some(mysqlpump(m, &target.password, &exclude)?),
        MysqlDumpMode::Native => None,
    };
    let native_users = pumped.is_none();
    let work = async {
        let mut c = MysqlClient::connect(&target).await?;
        let users = if native_users {
            Some(c.dump_users(&exclude).await?)
        } else {
            None
        };
        let objects = c.dump_objects().await?;
        c.disconnect().await;
        Ok::<_, MysqlError>((users, objects))
    };
    let (users, objects) = match tokio::runtime::Handle::try_current() {
        Ok(h) => h.block_on(work)?,
        Err(_) => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(UsersError::Runtime)?
            .block_on(work)?,
    };
    let meta = FileMeta {
        mode: 0o100600,
        mtime: now.timestamp(),
        uid: 0,
        gid: 0,
    };
    let (users_sql, accounts, roles) = match (users, pumped) {
        (Some(u), _) => (u.sql, u.accounts, u.roles),
        (None, Some(sql)) => {
            let n = sql.matches("CREATE USER IF NOT EXISTS").count();
            (sql, n, 0)
        }
        (None, None) => (String::new(), 0, 0),
    };
    writer.add_file(USERS_SQL, &mut users_sql.as_bytes(), meta)?;
    writer.add_file(SCHEMA_SQL, &mut objects.sql.as_bytes(), meta)?;
    Ok(UsersFacts {
        accounts: accounts as u64,
        roles: roles as u64,
        views: objects.views as u64,
        routines: objects.routines as u64,
        triggers: objects.triggers as u64,
        events: objects.events as u64,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Secret;

    #[test]
    fn mysqlpump_argv_follows_the_guide_without_the_password() {
        let m = MysqlSettings {
            user: "hopsdr".into(),
            password: Secret::File("/etc/hopsdr/mysql.password".into()),
            socket: Some("/srv/hops/mysql-cluster/mysql.sock".into()),
            host: None,
            port: 3306,
            mode: MysqlDumpMode::Mysqlpump,
            mysqlpump: vec!["/srv/hops/mysql/bin/mysqlpump".into()],
            exclude_users: vec!["root".into(), "mysql.sys".into()],
            tls: None,
        };
        let a = mysqlpump_argv(
            &m,
            &["root".into(), "hopsdr".into()],
            Path::new("/tmp/x.cnf"),
        );
        assert_eq!(
            a,
            [
                "/srv/hops/mysql/bin/mysqlpump",
                "--defaults-extra-file=/tmp/x.cnf",
                "--exclude-databases=%",
                "--exclude-users=root,hopsdr",
                "--users",
                "--user=hopsdr",
                "--socket=/srv/hops/mysql-cluster/mysql.sock",
            ]
        );
        // Over TCP with TLS: the server's certificate and name verified against the CA.
        let m = MysqlSettings {
            socket: None,
            host: Some("10.0.0.5".into()),
            tls: Some(Some("/etc/hopsdr/mysql-ca.pem".into())),
            ..m
        };
        let a = mysqlpump_argv(&m, &[], Path::new("/tmp/x.cnf"));
        assert_eq!(
            a[a.len() - 4..],
            [
                "--host=10.0.0.5",
                "--port=3306",
                "--ssl-mode=VERIFY_IDENTITY",
                "--ssl-ca=/etc/hopsdr/mysql-ca.pem"
            ]
        );
    }
}
