//! The cluster's tables: `[rondb]`, `[hopsfs]`, `[ssh]` and `[mysql]`.

use super::*;

impl Validator<'_> {
    pub(super) fn rondb(
        &mut self,
        p: &KeyPath,
        mut raw: RawRondb,
        env: &SecretEnv,
    ) -> RondbSettings {
        let backup_password = raw
            .backup_password
            .take()
            .and_then(|v| self.secret(&p.key("backup_password"), Some(v), env));
        let mgm_client = match raw.mgm_client {
            None => vec![DEFAULT_MGM_CLIENT.to_string()],
            Some(argv) if argv.is_empty() || argv[0].is_empty() => {
                self.error(
                    &p.key("mgm_client"),
                    format!("the management client is empty: give its path and arguments, e.g. [\"{DEFAULT_MGM_CLIENT}\"]"),
                );
                vec![DEFAULT_MGM_CLIENT.to_string()]
            }
            Some(argv) => {
                if !argv[0].starts_with('/') {
                    self.error(
                        &p.key("mgm_client"),
                        format!("program {:?} is relative: use an absolute path", argv[0]),
                    );
                }
                argv
            }
        };
        let mgm_host = self.host(&p.key("mgm_host"), raw.mgm_host);
        let backup_dir =
            self.absolute(&p.key("backup_dir"), raw.backup_dir, DEFAULT_NDB_BACKUP_DIR);
        let backup_timeout = self.duration(
            &p.key("backup_timeout"),
            raw.backup_timeout,
            DEFAULT_BACKUP_TIMEOUT,
        );
        let command_timeout = self.duration(
            &p.key("command_timeout"),
            raw.command_timeout,
            DEFAULT_COMMAND_TIMEOUT,
        );
        let list = p.key("data_nodes");
        let mut data_nodes: Vec<DataNodeSettings> = Vec::new();
        for (i, n) in raw.data_nodes.unwrap_or_default().into_iter().enumerate() {
            let item = list.index(i);
            let id = match n.id {
                None => {
                    self.missing(&item.key("id"), "id = 1");
                    continue;
                }
                Some(id) if !(1..=MAX_NDB_NODE_ID).contains(&id) => {
                    self.error(
                        &item.key("id"),
                        format!("node id {id} is out of range: RonDB node ids are 1 to {MAX_NDB_NODE_ID}"),
                    );
                    continue;
                }
                Some(id) => crate::ids::NdbNodeId(id as u32),
            };
            if data_nodes.iter().any(|d| d.id == id) {
                self.error(
                    &item.key("id"),
                    format!("duplicate data node id {id}: list each node once"),
                );
                continue;
            }
            let host = self.host(&item.key("host"), n.host);
            let backup_dir = n
                .backup_dir
                .map(|d| self.absolute(&item.key("backup_dir"), Some(d), ""));
            data_nodes.push(DataNodeSettings {
                id,
                host,
                backup_dir,
            });
        }
        RondbSettings {
            mgm_client,
            mgm_host,
            backup_dir,
            backup_timeout,
            command_timeout,
            keep_node_copies: raw.keep_node_copies.unwrap_or(false),
            ndb_show_tables: self.command(
                &p.key("ndb_show_tables"),
                raw.ndb_show_tables,
                &["/srv/hops/mysql/bin/ndb_show_tables"],
            ),
            data_nodes,
            backup_password,
        }
    }

    pub(super) fn hopsfs(
        &mut self,
        p: &KeyPath,
        mut raw: RawHopsfs,
        env: &SecretEnv,
    ) -> HopsfsSettings {
        let cloud = raw.cloud.take().map(|c| {
            let cp = p.key("cloud");
            let set_size = match c.set_size {
                None => 500,
                Some(n) if (0..=1_000_000_000).contains(&n) => n as u64,
                Some(n) => {
                    self.error(&cp.key("set_size"), format!("set_size = {n}: use dfs.cloud.prefix.size (500), or 0 for keys without a set prefix"));
                    500
                }
            };
            let mut r = RawRepository {
                r#type: Some("s3".into()),
                bucket: c.bucket,
                prefix: c.prefix,
                endpoint: c.endpoint,
                region: c.region,
                path_style: c.path_style,
                access_key_id: c.access_key_id,
                secret_access_key: c.secret_access_key,
                ca_bundle: c.ca_bundle,
                ..Default::default()
            };
            HopsfsCloudSettings {
                s3: self.s3(&cp, &mut r, env),
                set_size,
            }
        });
        let block_storage = match raw.block_storage.as_deref() {
            None | Some("local") => BlockStorage::Local,
            Some("cloud") => BlockStorage::Cloud,
            Some(other) => {
                self.error(
                    &p.key("block_storage"),
                    format!("unknown block storage {other:?}: use \"local\" (blocks on the datanodes' volumes) or \"cloud\""),
                );
                BlockStorage::Local
            }
        };
        let referenced_blocks = match raw.referenced_blocks {
            None => None,
            Some(argv) if argv.first().is_some_and(|a| a.starts_with('/')) => Some(argv),
            Some(_) => {
                self.error(
                    &p.key("referenced_blocks"),
                    "give the command as a list starting with an absolute path",
                );
                None
            }
        };
        let copy_timeout = self.duration(
            &p.key("copy_timeout"),
            raw.copy_timeout,
            DEFAULT_BACKUP_TIMEOUT,
        );
        let list = p.key("datanodes");
        let mut datanodes: Vec<HopsfsDatanodeSettings> = Vec::new();
        for (i, d) in raw.datanodes.unwrap_or_default().into_iter().enumerate() {
            let item = list.index(i);
            let host = self.host(&item.key("host"), d.host.clone());
            let name = d.name.or(d.host).unwrap_or_else(|| "local".to_string());
            if name.is_empty()
                || !name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
            {
                self.error(
                    &item.key("name"),
                    format!(
                        "invalid datanode name {name:?}: use letters, digits, '.', '_' and '-'"
                    ),
                );
            }
            if datanodes.iter().any(|x| x.name == name) {
                self.error(
                    &item.key("name"),
                    format!("duplicate datanode name {name:?}: give each datanode its own name"),
                );
                continue;
            }
            let vols = d
                .volumes
                .unwrap_or_else(|| vec![DEFAULT_HOPSFS_VOLUME.to_string()]);
            if vols.is_empty() {
                self.error(
                    &item.key("volumes"),
                    "no volumes: list the datanode's dfs.datanode.data.dir entries",
                );
            }
            let mut volumes = Vec::new();
            for v in vols {
                let v = v.strip_prefix("[DISK]").unwrap_or(&v).to_string();
                let path = self.absolute(&item.key("volumes"), Some(v), "");
                if volumes.contains(&path) {
                    self.error(&item.key("volumes"), format!("duplicate volume {path:?}"));
                    continue;
                }
                volumes.push(path);
            }
            datanodes.push(HopsfsDatanodeSettings {
                name,
                host,
                volumes,
            });
        }
        match (block_storage, &cloud) {
            (BlockStorage::Cloud, None) => self.missing(
                &p.key("cloud"),
                "[hopsfs.cloud] with the blocks' bucket (bucket, endpoint, credentials)",
            ),
            (BlockStorage::Local, Some(_)) => self.error(
                &p.key("cloud"),
                "[hopsfs.cloud] is for block_storage = \"cloud\": remove it or set block_storage",
            ),
            _ => {}
        }
        if block_storage == BlockStorage::Local && datanodes.is_empty() {
            self.error(
                &list,
                "no datanodes: list every HopsFS datanode ([[hopsfs.datanodes]] with host and volumes); every one must be copied",
            );
        }
        HopsfsSettings {
            block_storage,
            referenced_blocks,
            copy_timeout,
            datanodes,
            cloud,
        }
    }

    pub(super) fn ssh(&mut self, p: &KeyPath, raw: RawSsh) -> SshConfig {
        let user = raw.user.unwrap_or_else(|| DEFAULT_SSH_USER.to_string());
        if user.is_empty()
            || user.starts_with('-')
            || user.chars().any(|c| c.is_whitespace() || c == '@')
        {
            self.error(&p.key("user"), format!("invalid user name {user:?}"));
        }
        let port = raw.port.unwrap_or(22);
        if port == 0 {
            self.error(&p.key("port"), "port 0 is not valid: use 1 to 65535");
        }
        SshConfig {
            ssh: self.absolute(&p.key("ssh"), raw.ssh, DEFAULT_SSH),
            user,
            port,
            identity_file: self.absolute(
                &p.key("identity_file"),
                raw.identity_file,
                DEFAULT_SSH_IDENTITY,
            ),
            known_hosts: self.absolute(
                &p.key("known_hosts"),
                raw.known_hosts,
                DEFAULT_SSH_KNOWN_HOSTS,
            ),
            connect_timeout: self.duration(
                &p.key("connect_timeout"),
                raw.connect_timeout,
                DEFAULT_SSH_CONNECT_TIMEOUT,
            ),
        }
    }

    pub(super) fn agents(&mut self, p: &KeyPath, raw: RawAgents) -> AgentsSettings {
        let timeout = self.duration(&p.key("timeout"), raw.timeout, DEFAULT_AGENT_TIMEOUT);
        // Agents at work report every 2 s: a shorter wait would stop every one of them.
        if timeout < std::time::Duration::from_secs(5) {
            self.error(
                &p.key("timeout"),
                format!(
                    "timeout {timeout:?} is too short: agents at work report every 2 s; use at least 5s"
                ),
            );
        }
        let bandwidth = self.timetable(&p.key("bandwidth"), raw.bandwidth);
        let timezone = self
            .timezone(&p.key("timezone"), raw.timezone)
            .unwrap_or(DEFAULT_TIMEZONE);
        let list = p.key("nodes");
        let mut nodes: Vec<(NodeHost, crate::timetable::Timetable)> = Vec::new();
        for (i, n) in raw.nodes.unwrap_or_default().into_iter().enumerate() {
            let item = list.index(i);
            if n.host.is_none() {
                self.missing(
                    &item.key("host"),
                    "host = \"10.0.0.5\" (as in [[hopsfs.datanodes]] or [[rondb.data_nodes]])",
                );
                continue;
            }
            let host = self.host(&item.key("host"), n.host);
            if nodes.iter().any(|(h, _)| *h == host) {
                self.error(
                    &item.key("host"),
                    format!(
                        "host {} is listed twice: give each host one timetable",
                        match &host {
                            NodeHost::Local => "local",
                            NodeHost::Remote(h) => h.as_str(),
                        }
                    ),
                );
                continue;
            }
            if n.bandwidth.is_none() {
                self.missing(
                    &item.key("bandwidth"),
                    "bandwidth = \"08:00,10MiB 20:00,off\"",
                );
                continue;
            }
            let t = self.timetable(&item.key("bandwidth"), n.bandwidth);
            nodes.push((host, t));
        }
        let list = p.key("links");
        let mut links: Vec<AgentLink> = Vec::new();
        for (i, l) in raw.links.unwrap_or_default().into_iter().enumerate() {
            let item = list.index(i);
            let name = l.name.unwrap_or_else(|| format!("link {}", i + 1));
            let mut hosts = Vec::new();
            for (k, h) in l.hosts.unwrap_or_default().into_iter().enumerate() {
                let host = self.host(&item.key("hosts").index(k), Some(h.clone()));
                if links.iter().any(|o| o.hosts.contains(&host)) || hosts.contains(&host) {
                    self.error(
                        &item.key("hosts").index(k),
                        format!("host {h} is on two links: a host has one uplink; list it once"),
                    );
                    continue;
                }
                hosts.push(host);
            }
            if hosts.is_empty() {
                self.missing(
                    &item.key("hosts"),
                    "hosts = [\"10.0.0.21\", \"10.0.0.22\"] (the hosts behind the link)",
                );
                continue;
            }
            if l.bandwidth.is_none() {
                self.missing(
                    &item.key("bandwidth"),
                    "bandwidth = \"100MiB\" (the link's, shared evenly by its hosts)",
                );
                continue;
            }
            let bandwidth = self.timetable(&item.key("bandwidth"), l.bandwidth);
            links.push(AgentLink {
                name,
                hosts,
                bandwidth,
            });
        }
        AgentsSettings {
            enabled: raw.enabled.unwrap_or(false),
            binary: self.absolute(&p.key("binary"), raw.binary, DEFAULT_AGENT_BINARY),
            timeout,
            bandwidth,
            timezone,
            nodes,
            links,
        }
    }

    pub(super) fn mysql(
        &mut self,
        p: &KeyPath,
        raw: RawMysql,
        env: &SecretEnv,
    ) -> Option<MysqlSettings> {
        let user = match raw.user {
            None => {
                self.missing(&p.key("user"), "user = \"hopsdr\"");
                None
            }
            Some(user) if user.is_empty() => {
                self.error(&p.key("user"), "user is empty: give the MySQL user name");
                None
            }
            Some(user) => Some(user),
        };
        let password = self.secret(&p.key("password"), raw.password, env);
        let socket = raw
            .socket
            .map(|s| self.absolute(&p.key("socket"), Some(s), ""));
        if let Some(host) = &raw.host {
            if host.is_empty() || host.chars().any(|c| c.is_whitespace() || c.is_control()) {
                self.error(
                    &p.key("host"),
                    format!("invalid host {host:?}: use a host name or IP address"),
                );
            }
        }
        match (&socket, &raw.host) {
            (Some(_), Some(_)) => self.error(
                &p.key("host"),
                "both socket and host are set: keep only one of them",
            ),
            (None, None) => self.error(
                p,
                "no connection given: add socket = \"/path/to/mysql.sock\" or host = \"name\"",
            ),
            (Some(_), None) if raw.port.is_some() => self.error(
                &p.key("port"),
                "port is only used with host: remove it or use host instead of socket",
            ),
            _ => {}
        }
        let port = raw.port.unwrap_or(DEFAULT_MYSQL_PORT);
        if port == 0 {
            self.error(&p.key("port"), "port 0 is not valid: use 1 to 65535");
        }
        let mode = match raw.mode.as_deref() {
            None | Some("native") => MysqlDumpMode::Native,
            Some("mysqlpump") => MysqlDumpMode::Mysqlpump,
            Some(other) => {
                self.error(
                    &p.key("mode"),
                    format!("unknown mode {other:?}: use \"native\" or \"mysqlpump\""),
                );
                MysqlDumpMode::Native
            }
        };
        let mysqlpump = match raw.mysqlpump {
            None => vec![DEFAULT_MYSQLPUMP.to_string()],
            Some(argv) if argv.first().is_some_and(|a| a.starts_with('/')) => argv,
            Some(_) => {
                self.error(
                    &p.key("mysqlpump"),
                    format!("give the command as a list starting with an absolute path, e.g. [\"{DEFAULT_MYSQLPUMP}\"]"),
                );
                vec![DEFAULT_MYSQLPUMP.to_string()]
            }
        };
        let exclude_users = raw.exclude_users.unwrap_or_else(|| {
            crate::cluster::mysql::DEFAULT_EXCLUDED_USERS
                .iter()
                .map(|s| s.to_string())
                .collect()
        });
        let tls_ca = raw
            .tls_ca
            .map(|c| self.absolute(&p.key("tls_ca"), Some(c), ""));
        let tls = match (raw.tls.unwrap_or(false), tls_ca) {
            (false, None) => None,
            (false, Some(_)) => {
                self.error(
                    &p.key("tls_ca"),
                    "tls_ca is used with tls = true: add tls = true, or remove tls_ca",
                );
                None
            }
            (true, ca) => {
                if socket.is_some() {
                    self.error(&p.key("tls"), "tls is for a TCP connection (host): a Unix socket never leaves this machine; remove tls or use host");
                }
                Some(ca)
            }
        };
        Some(MysqlSettings {
            tls,
            user: user?,
            password: password?,
            socket,
            host: raw.host,
            port,
            mode,
            mysqlpump,
            exclude_users,
        })
    }

    pub(super) fn host(&mut self, p: &KeyPath, value: Option<String>) -> NodeHost {
        match value.as_deref() {
            None | Some("local") => NodeHost::Local,
            Some(h)
                if h.is_empty()
                    || h.starts_with('-')
                    || h.chars()
                        .any(|c| c.is_whitespace() || c.is_control() || c == '@') =>
            {
                self.error(
                    p,
                    format!("invalid host {h:?}: use \"local\", a host name or an IP address (the user goes in [ssh] user)"),
                );
                NodeHost::Local
            }
            Some(h) => NodeHost::Remote(h.to_string()),
        }
    }
}
