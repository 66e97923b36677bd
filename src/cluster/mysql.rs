//! The cluster's MySQL server, natively over the MySQL protocol (mysql_async): dumping users,
//! grants, roles and default roles as `users.sql`, and views, routines, triggers and events as
//! `schema.sql`, both replayable on a server where some of it already exists; and replaying them.
//!
//! Works with MySQL 8 (RonDB 21.04 … 24.10; hashes as hex literals from 8.0.17 on) and MariaDB.

use mysql_async::prelude::*;
use mysql_async::{Conn, OptsBuilder, Row};

use super::sqldump::{
    account, alter_user_from_create, create_user_if_not_exists, quote_ident, quote_str,
    split_statements,
};

/// Accounts never dumped: the server's own.
pub const DEFAULT_EXCLUDED_USERS: &[&str] = &[
    "root",
    "mysql.sys",
    "mysql.session",
    "mysql.infoschema",
    "mariadb.sys",
    "debian-sys-maint",
    // MariaDB's own account for the mysql system user (unix_socket).
    "mysql",
];

/// Schemas that belong to the server, never dumped.
pub const SYSTEM_SCHEMAS: &[&str] = &["mysql", "information_schema", "performance_schema", "sys"];

/// Errors talking to the MySQL server.
#[derive(Debug, thiserror::Error)]
pub enum MysqlError {
    #[error("failed to connect to MySQL at {target}: {source}")]
    Connect {
        target: String,
        source: mysql_async::Error,
    },
    #[error("MySQL at {target}: failed to {what}: {source}")]
    Query {
        target: String,
        what: String,
        source: mysql_async::Error,
    },
    #[error("MySQL at {target}: unexpected answer to {what}: {detail}")]
    Unexpected {
        target: String,
        what: String,
        detail: String,
    },
}

/// Where and how to connect.
#[derive(Debug, Clone)]
pub struct MysqlTarget {
    pub socket: Option<std::path::PathBuf>,
    pub host: Option<String>,
    pub port: u16,
    pub user: String,
    pub password: String,
    /// TLS with the server's certificate verified (against these CA certificates, or the
    /// system's roots when `None`); `None`: no TLS.
    pub tls: Option<Option<std::path::PathBuf>>,
}

impl MysqlTarget {
    /// The server `[mysql]` names, logged in with `password`.
    pub fn of(m: &crate::config::MysqlSettings, password: String) -> MysqlTarget {
        MysqlTarget {
            socket: m.socket.clone(),
            host: m.host.clone(),
            port: m.port,
            user: m.user.clone(),
            password,
            tls: m.tls.clone(),
        }
    }

    pub fn describe(&self) -> String {
        match (&self.socket, &self.host) {
            (Some(s), _) => format!("{} (socket)", s.display()),
            (None, Some(h)) => format!("{h}:{}", self.port),
            (None, None) => format!("localhost:{}", self.port),
        }
    }
}

/// An open connection with the server's flavour.
pub struct MysqlClient {
    conn: Conn,
    target: String,
    pub version: String,
}

impl MysqlClient {
    pub async fn connect(t: &MysqlTarget) -> Result<MysqlClient, MysqlError> {
        let mut opts = OptsBuilder::default()
            .user(Some(t.user.clone()))
            .pass(Some(t.password.clone()))
            .prefer_socket(false);
        if let Some(s) = &t.socket {
            opts = opts.socket(Some(s.display().to_string()));
        } else {
            opts = opts
                .ip_or_hostname(t.host.clone().unwrap_or_else(|| "127.0.0.1".into()))
                .tcp_port(t.port);
        }
        if let Some(ca) = &t.tls {
            // The server's certificate is verified: its chain and its name (the host).
            let mut ssl = mysql_async::SslOpts::default();
            if let Some(ca) = ca {
                ssl = ssl.with_root_certs(vec![ca.clone().into()]);
            }
            opts = opts.ssl_opts(ssl);
        }
        let target = t.describe();
        let mut conn = Conn::new(opts)
            .await
            .map_err(|source| MysqlError::Connect {
                target: target.clone(),
                source,
            })?;
        let version: Option<String> =
            conn.query_first("SELECT VERSION()")
                .await
                .map_err(|source| MysqlError::Query {
                    target: target.clone(),
                    what: "read the server version".into(),
                    source,
                })?;
        Ok(MysqlClient {
            conn,
            target,
            version: version.unwrap_or_default(),
        })
    }

    pub fn is_mariadb(&self) -> bool {
        self.version.to_ascii_lowercase().contains("mariadb")
    }

    fn qerr(&self, what: &str) -> impl FnOnce(mysql_async::Error) -> MysqlError {
        let target = self.target.clone();
        let what = what.to_string();
        move |source| MysqlError::Query {
            target,
            what,
            source,
        }
    }

    async fn rows(&mut self, sql: &str, what: &str) -> Result<Vec<Row>, MysqlError> {
        let e = self.qerr(what);
        self.conn.query(sql).await.map_err(e)
    }

    fn col(&self, row: &Row, name: &str, what: &str) -> Result<String, MysqlError> {
        let idx = row
            .columns_ref()
            .iter()
            .position(|c| c.name_str().eq_ignore_ascii_case(name))
            .ok_or_else(|| MysqlError::Unexpected {
                target: self.target.clone(),
                what: what.to_string(),
                detail: format!("no column {name:?}"),
            })?;
        match row.as_ref(idx) {
            Some(mysql_async::Value::Bytes(b)) => Ok(String::from_utf8_lossy(b).into_owned()),
            Some(mysql_async::Value::NULL) | None => Ok(String::new()),
            Some(v) => Ok(v.as_sql(true)),
        }
    }

    fn first_col(&self, row: &Row) -> String {
        match row.as_ref(0) {
            Some(mysql_async::Value::Bytes(b)) => String::from_utf8_lossy(b).into_owned(),
            Some(v) => v.as_sql(true),
            None => String::new(),
        }
    }

    /// Dumps every account and role except `exclude` as replayable SQL.
    pub async fn dump_users(&mut self, exclude: &[String]) -> Result<UsersDump, MysqlError> {
        if !self.is_mariadb() {
            // MySQL ≥ 8.0.17: binary hashes as hex literals. Older servers do not know it.
            let _ = self
                .conn
                .query_drop("SET SESSION print_identified_with_as_hex = ON")
                .await;
        }
        let mariadb = self.is_mariadb();
        let list_sql = if mariadb {
            "SELECT User, Host, is_role FROM mysql.user ORDER BY User, Host"
        } else {
            "SELECT u.User, u.Host, IF(EXISTS(SELECT 1 FROM mysql.role_edges r WHERE r.FROM_USER=u.User AND r.FROM_HOST=u.Host), 'Y', 'N') FROM mysql.user u ORDER BY u.User, u.Host"
        };
        let rows = self.rows(list_sql, "list accounts").await?;
        let mut users = Vec::new();
        let mut roles = Vec::new();
        for r in rows {
            let user: String = r.get::<Option<String>, _>(0).flatten().unwrap_or_default();
            let host: String = r.get::<Option<String>, _>(1).flatten().unwrap_or_default();
            let is_role: String = r.get::<Option<String>, _>(2).flatten().unwrap_or_default();
            if exclude.iter().any(|x| x == &user) || (user.is_empty() && !mariadb) {
                continue;
            }
            if user.is_empty() {
                continue; // anonymous accounts are not carried over
            }
            if is_role == "Y" {
                roles.push((user, host));
            } else {
                users.push((user, host));
            }
        }

        let mut create = Vec::new();
        let mut alter = Vec::new();
        let mut grants = Vec::new();
        for (user, host) in &roles {
            if mariadb {
                create.push(format!("CREATE ROLE IF NOT EXISTS {}", quote_ident(user)));
            } else {
                create.push(format!("CREATE ROLE IF NOT EXISTS {}", account(user, host)));
            }
        }
        for (user, host) in &users {
            let acc = account(user, host);
            let what = format!("show create user {acc}");
            let rows = self.rows(&format!("SHOW CREATE USER {acc}"), &what).await?;
            let stmt = rows.first().map(|r| self.first_col(r)).unwrap_or_default();
            let (c, a) = match (
                create_user_if_not_exists(&stmt),
                alter_user_from_create(&stmt),
            ) {
                (Some(c), Some(a)) => (c, a),
                _ => {
                    return Err(MysqlError::Unexpected {
                        target: self.target.clone(),
                        what,
                        detail: format!("not a CREATE USER statement: {stmt:?}"),
                    })
                }
            };
            create.push(c);
            alter.push(a);
        }
        let grantees: Vec<(String, String, bool)> = roles
            .iter()
            .map(|(u, h)| (u.clone(), h.clone(), true))
            .chain(users.iter().map(|(u, h)| (u.clone(), h.clone(), false)))
            .collect();
        for (user, host, is_role) in &grantees {
            let who = if *is_role && mariadb {
                quote_ident(user)
            } else {
                account(user, host)
            };
            let what = format!("show grants for {who}");
            let rows = self.rows(&format!("SHOW GRANTS FOR {who}"), &what).await?;
            for r in rows {
                grants.push(self.first_col(&r));
            }
        }
        let mut default_roles = Vec::new();
        if !mariadb {
            let rows = self
                .rows(
                    "SELECT USER, HOST, DEFAULT_ROLE_USER, DEFAULT_ROLE_HOST FROM mysql.default_roles ORDER BY USER, HOST",
                    "list default roles",
                )
                .await?;
            for r in rows {
                let u: String = r.get::<Option<String>, _>(0).flatten().unwrap_or_default();
                let h: String = r.get::<Option<String>, _>(1).flatten().unwrap_or_default();
                let ru: String = r.get::<Option<String>, _>(2).flatten().unwrap_or_default();
                let rh: String = r.get::<Option<String>, _>(3).flatten().unwrap_or_default();
                if exclude.iter().any(|x| x == &u) {
                    continue;
                }
                default_roles.push(format!(
                    "SET DEFAULT ROLE {} TO {}",
                    account(&ru, &rh),
                    account(&u, &h)
                ));
            }
        }

        let mut sql = format!(
            "-- hopsdr users and grants dump\n-- server: {}\n-- accounts: {}, roles: {}\n\n",
            self.version,
            users.len(),
            roles.len()
        );
        for s in create
            .iter()
            .chain(&alter)
            .chain(&grants)
            .chain(&default_roles)
        {
            sql.push_str(s);
            sql.push_str(";\n");
        }
        sql.push_str("FLUSH PRIVILEGES;\n");
        Ok(UsersDump {
            sql,
            accounts: users.len(),
            roles: roles.len(),
        })
    }

    /// Dumps views, routines, triggers and events of every non-system schema, without data.
    pub async fn dump_objects(&mut self) -> Result<ObjectsDump, MysqlError> {
        let schemas: Vec<String> = {
            let rows = self.rows("SHOW DATABASES", "list schemas").await?;
            rows.iter()
                .map(|r| self.first_col(r))
                .filter(|s| !SYSTEM_SCHEMAS.contains(&s.to_ascii_lowercase().as_str()))
                .collect()
        };
        let mut sql = format!(
            "-- hopsdr SQL objects dump (views, routines, triggers, events; no data)\n-- server: {}\n\n",
            self.version
        );
        let mut counts = ObjectsDump::default();
        for db in &schemas {
            let qdb = quote_ident(db);
            let lit = quote_str(db);
            sql.push_str(&format!(
                "CREATE DATABASE IF NOT EXISTS {qdb};\nUSE {qdb};\n"
            ));
            // Views.
            let rows = self
                .rows(
                    &format!("SELECT TABLE_NAME FROM information_schema.VIEWS WHERE TABLE_SCHEMA={lit} ORDER BY TABLE_NAME"),
                    "list views",
                )
                .await?;
            for r in rows {
                let name = self.first_col(&r);
                let what = format!("show create view {db}.{name}");
                let rows = self
                    .rows(
                        &format!("SHOW CREATE VIEW {qdb}.{}", quote_ident(&name)),
                        &what,
                    )
                    .await?;
                if let Some(r) = rows.first() {
                    let create = self.col(r, "Create View", &what)?;
                    sql.push_str(&format!(
                        "DROP VIEW IF EXISTS {};\n{create};\n",
                        quote_ident(&name)
                    ));
                    counts.views += 1;
                }
            }
            // Routines.
            let rows = self
                .rows(
                    &format!("SELECT ROUTINE_NAME, ROUTINE_TYPE FROM information_schema.ROUTINES WHERE ROUTINE_SCHEMA={lit} ORDER BY ROUTINE_TYPE, ROUTINE_NAME"),
                    "list routines",
                )
                .await?;
            for r in rows {
                let name: String = r.get::<Option<String>, _>(0).flatten().unwrap_or_default();
                let kind: String = r.get::<Option<String>, _>(1).flatten().unwrap_or_default();
                let (kw, col) = if kind.eq_ignore_ascii_case("FUNCTION") {
                    ("FUNCTION", "Create Function")
                } else {
                    ("PROCEDURE", "Create Procedure")
                };
                let what = format!("show create {kw} {db}.{name}");
                let rows = self
                    .rows(
                        &format!("SHOW CREATE {kw} {qdb}.{}", quote_ident(&name)),
                        &what,
                    )
                    .await?;
                if let Some(r) = rows.first() {
                    let create = self.col(r, col, &what)?;
                    let mode = self.col(r, "sql_mode", &what)?;
                    sql.push_str(&format!(
                        "DROP {kw} IF EXISTS {};\nSET SESSION sql_mode = {};\nDELIMITER ;;\n{create};;\nDELIMITER ;\n",
                        quote_ident(&name),
                        quote_str(&mode)
                    ));
                    counts.routines += 1;
                }
            }
            // Triggers.
            let rows = self
                .rows(
                    &format!("SELECT TRIGGER_NAME FROM information_schema.TRIGGERS WHERE TRIGGER_SCHEMA={lit} ORDER BY TRIGGER_NAME"),
                    "list triggers",
                )
                .await?;
            for r in rows {
                let name = self.first_col(&r);
                let what = format!("show create trigger {db}.{name}");
                let rows = self
                    .rows(
                        &format!("SHOW CREATE TRIGGER {qdb}.{}", quote_ident(&name)),
                        &what,
                    )
                    .await?;
                if let Some(r) = rows.first() {
                    let create = self.col(r, "SQL Original Statement", &what)?;
                    let mode = self.col(r, "sql_mode", &what)?;
                    sql.push_str(&format!(
                        "DROP TRIGGER IF EXISTS {};\nSET SESSION sql_mode = {};\nDELIMITER ;;\n{create};;\nDELIMITER ;\n",
                        quote_ident(&name),
                        quote_str(&mode)
                    ));
                    counts.triggers += 1;
                }
            }
            // Events.
            let rows = self
                .rows(
                    &format!("SELECT EVENT_NAME FROM information_schema.EVENTS WHERE EVENT_SCHEMA={lit} ORDER BY EVENT_NAME"),
                    "list events",
                )
                .await?;
            for r in rows {
                let name = self.first_col(&r);
                let what = format!("show create event {db}.{name}");
                let rows = self
                    .rows(
                        &format!("SHOW CREATE EVENT {qdb}.{}", quote_ident(&name)),
                        &what,
                    )
                    .await?;
                if let Some(r) = rows.first() {
                    let create = self.col(r, "Create Event", &what)?;
                    let mode = self.col(r, "sql_mode", &what)?;
                    sql.push_str(&format!(
                        "DROP EVENT IF EXISTS {};\nSET SESSION sql_mode = {};\nDELIMITER ;;\n{create};;\nDELIMITER ;\n",
                        quote_ident(&name),
                        quote_str(&mode)
                    ));
                    counts.events += 1;
                }
            }
        }
        counts.sql = sql;
        Ok(counts)
    }

    /// Replays a dump statement by statement; the first failing statement stops it, named in
    /// the error with its position.
    pub async fn replay(&mut self, sql: &str) -> Result<usize, MysqlError> {
        let statements = split_statements(sql);
        for (i, st) in statements.iter().enumerate() {
            let head: String = st.chars().take(120).collect();
            let e = self.qerr(&format!("run statement {} ({head})", i + 1));
            self.conn.query_drop(st.as_str()).await.map_err(e)?;
        }
        Ok(statements.len())
    }

    pub async fn disconnect(self) {
        let _ = self.conn.disconnect().await;
    }
}

/// The users and grants dump.
#[derive(Debug, Clone, Default)]
pub struct UsersDump {
    pub sql: String,
    pub accounts: usize,
    pub roles: usize,
}

/// The SQL objects dump.
#[derive(Debug, Clone, Default)]
pub struct ObjectsDump {
    pub sql: String,
    pub views: usize,
    pub routines: usize,
    pub triggers: usize,
    pub events: usize,
}
