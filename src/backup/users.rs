//! The `users` backup component: accounts, roles, grants and default roles (`users.sql`) and
//! views, routines, triggers and events (`schema.sql`) of the cluster's MySQL server, dumped
//! natively over the MySQL protocol and stored under `users/` in the backup (mode 0600: the
//! account hashes are secrets). A restore replays `schema.sql`, then `users.sql`.

use chrono::{DateTime, Utc};

use crate::cluster::mysql::{MysqlClient, MysqlError, MysqlTarget, DEFAULT_EXCLUDED_USERS};
use crate::config::{MysqlSettings, SecretEnv, SecretError};
use crate::repository::{BackupWriter, FileMeta, RepoError};

/// Where the dumps live in a backup.
pub const USERS_SQL: &str = "users/users.sql";
pub const SCHEMA_SQL: &str = "users/schema.sql";

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
}

/// What was dumped.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UsersOutcome {
    pub accounts: usize,
    pub roles: usize,
    pub views: usize,
    pub routines: usize,
    pub triggers: usize,
    pub events: usize,
}

/// Dumps users and SQL objects into `writer`.
pub fn back_up(
    m: &MysqlSettings,
    writer: &mut BackupWriter,
    now: DateTime<Utc>,
) -> Result<UsersOutcome, UsersError> {
    let password = m.password.read(&SecretEnv::from_process())?;
    let target = MysqlTarget {
        socket: m.socket.clone(),
        host: m.host.clone(),
        port: m.port,
        user: m.user.clone(),
        password,
    };
    let mut exclude: Vec<String> = DEFAULT_EXCLUDED_USERS
        .iter()
        .map(|s| s.to_string())
        .collect();
    // hopsdr's own account is created by the deployment of the target cluster.
    exclude.push(m.user.clone());
    let work = async {
        let mut c = MysqlClient::connect(&target).await?;
        let users = c.dump_users(&exclude).await?;
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
    writer.add_file(USERS_SQL, &mut users.sql.as_bytes(), meta)?;
    writer.add_file(SCHEMA_SQL, &mut objects.sql.as_bytes(), meta)?;
    Ok(UsersOutcome {
        accounts: users.accounts,
        roles: users.roles,
        views: objects.views,
        routines: objects.routines,
        triggers: objects.triggers,
        events: objects.events,
    })
}
