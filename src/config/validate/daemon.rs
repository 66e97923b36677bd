//! `[daemon]` and `[metrics]`: the socket, its groups, the catalog, timeouts, the metrics listener.

use super::*;

impl Validator<'_> {
    pub(super) fn daemon(&mut self, p: &KeyPath, raw: RawDaemon) -> DaemonSettings {
        let socket = self.socket(&p.key("socket"), raw.socket);
        let socket_group = self.group(
            &p.key("socket_group"),
            raw.socket_group
                .unwrap_or_else(|| DEFAULT_SOCKET_GROUP.to_string()),
        );
        let operator_group = raw
            .operator_group
            .map(|g| self.group(&p.key("operator_group"), g));
        let catalog = self.absolute(&p.key("catalog"), raw.catalog, DEFAULT_CATALOG);
        let shutdown_timeout =
            self.shutdown_timeout(&p.key("shutdown_timeout"), raw.shutdown_timeout);
        let client_timeout = self.duration(
            &p.key("client_timeout"),
            raw.client_timeout,
            DEFAULT_CLIENT_TIMEOUT,
        );
        let log_level = match raw.log_level {
            None => DEFAULT_LOG_LEVEL.to_string(),
            Some(level) if LOG_LEVELS.contains(&level.as_str()) => level,
            Some(level) => {
                self.error(
                    &p.key("log_level"),
                    format!(
                        "unknown log level {level:?}: use one of {}",
                        comma_list(LOG_LEVELS)
                    ),
                );
                DEFAULT_LOG_LEVEL.to_string()
            }
        };
        DaemonSettings {
            socket,
            socket_group,
            operator_group,
            catalog,
            shutdown_timeout,
            client_timeout,
            log_level,
        }
    }

    pub(super) fn socket(&mut self, p: &KeyPath, value: Option<String>) -> PathBuf {
        let socket = self.absolute(p, value, DEFAULT_SOCKET);
        let len = socket.as_os_str().len();
        if len > MAX_SOCKET_PATH_LEN {
            self.error(
                p,
                format!(
                    "socket path {socket:?} is {len} bytes long: Unix sockets allow at most {MAX_SOCKET_PATH_LEN}, use a shorter path"
                ),
            );
        }
        socket
    }

    pub(super) fn group(&mut self, p: &KeyPath, name: String) -> String {
        let valid_chars = name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
        let all_digits = name.chars().all(|c| c.is_ascii_digit());
        if name.is_empty()
            || name.len() > MAX_GROUP_NAME_LEN
            || !valid_chars
            || all_digits
            || name.starts_with('-')
        {
            self.error(
                p,
                format!(
                    "invalid group name {name:?}: use the name of a Unix group (letters, digits, \"_\", \"-\" and \".\"; not a number)"
                ),
            );
        }
        name
    }

    pub(super) fn shutdown_timeout(&mut self, p: &KeyPath, value: Option<String>) -> Duration {
        let Some(value) = value else {
            return DEFAULT_SHUTDOWN_TIMEOUT;
        };
        match humantime::parse_duration(&value) {
            Err(e) => self.error(
                p,
                format!(
                    "invalid duration {value:?}: {e}: use a duration such as \"60s\" or \"5m\""
                ),
            ),
            Ok(d) if d.is_zero() => self.error(
                p,
                format!(
                    "duration {value:?} is zero: use a duration greater than 0, such as \"60s\""
                ),
            ),
            Ok(d) if d > MAX_SHUTDOWN_TIMEOUT => self.error(
                p,
                format!("duration {value:?} is too long: use at most \"1h\""),
            ),
            Ok(d) => return d,
        }
        DEFAULT_SHUTDOWN_TIMEOUT
    }

    pub(super) fn metrics(&mut self, p: &KeyPath, raw: RawMetrics) -> MetricsSettings {
        let listen = raw.listen.as_deref().unwrap_or(DEFAULT_METRICS_LISTEN);
        let addr = match listen.parse::<SocketAddr>() {
            Ok(addr) => Some(addr),
            Err(_) => {
                self.error(
                    &p.key("listen"),
                    format!(
                        "invalid listen address {listen:?}: use IP:PORT such as \"127.0.0.1:9741\" or \"[::1]:9741\" (not a host name)"
                    ),
                );
                None
            }
        };
        MetricsSettings {
            listen: if raw.enabled.unwrap_or(true) {
                addr
            } else {
                None
            },
        }
    }
}
