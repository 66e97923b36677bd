//! `[repository]`: a local directory or an S3 bucket, its compression and encryption, and secrets
//! read from files or systemd credentials.

use super::*;

impl Validator<'_> {
    pub(super) fn repository(
        &mut self,
        p: &KeyPath,
        mut raw: RawRepository,
        env: &SecretEnv,
    ) -> RepositorySettings {
        let compression_level = self.compression_level(p, raw.compression_level);
        let encryption = raw
            .encryption
            .take()
            .and_then(|e| self.encryption(&p.key("encryption"), e, env));
        let store = self.store(p, raw, env);
        RepositorySettings {
            store,
            compression_level,
            encryption,
        }
    }

    fn encryption(
        &mut self,
        p: &KeyPath,
        raw: RawEncryption,
        env: &SecretEnv,
    ) -> Option<EncryptionSettings> {
        if let Some(slot) = &raw.slot {
            if let Err(e) = crate::repository::keys::validate_slot_name(slot) {
                self.error(&p.key("slot"), e.to_string());
            }
        }
        let passphrase = self.secret(&p.key("passphrase"), raw.passphrase, env)?;
        Some(EncryptionSettings {
            passphrase,
            slot: raw.slot,
        })
    }

    fn store(&mut self, p: &KeyPath, mut raw: RawRepository, env: &SecretEnv) -> StoreSettings {
        if raw.r#type.as_deref() == Some("s3") {
            return StoreSettings::S3(Box::new(self.s3(p, &mut raw, env)));
        }
        for (key, set) in [
            ("endpoint", raw.endpoint.is_some()),
            ("bucket", raw.bucket.is_some()),
            ("secret_access_key", raw.secret_access_key.is_some()),
            ("prune_access_key_id", raw.prune_access_key_id.is_some()),
            ("versioning", raw.versioning.is_some()),
            ("object_lock", raw.object_lock.is_some()),
            (
                "prune_secret_access_key",
                raw.prune_secret_access_key.is_some(),
            ),
        ] {
            if set {
                self.error(
                    &p.key(key),
                    format!(
                        "{key} is for type = \"s3\" repositories: remove it or set type = \"s3\""
                    ),
                );
            }
        }
        if let Some(kind) = &raw.r#type {
            if !REPOSITORY_TYPES.contains(&kind.as_str()) {
                self.error(
                    &p.key("type"),
                    format!(
                        "unsupported repository type {kind:?}: allowed types: {}",
                        comma_list(REPOSITORY_TYPES)
                    ),
                );
            }
        }
        let path = self.absolute(&p.key("path"), raw.path, DEFAULT_REPOSITORY_PATH);
        StoreSettings::Local { path }
    }

    /// `[[copy]]`: each a name and a store (the keys of `[repository]`'s store), never the
    /// repository's own place.
    pub(super) fn copies(
        &mut self,
        p: &KeyPath,
        raw: Vec<RawCopy>,
        primary: &StoreSettings,
        env: &SecretEnv,
    ) -> Vec<CopySettings> {
        let mut out: Vec<CopySettings> = Vec::new();
        for (i, c) in raw.into_iter().enumerate() {
            let item = p.index(i);
            let name = match c.name {
                None => {
                    self.missing(&item.key("name"), "name = \"offsite\"");
                    continue;
                }
                Some(n) if !valid_schedule_name(&n) => {
                    self.error(
                        &item.key("name"),
                        format!("invalid copy name {n:?}: use 1 to 64 characters from a-z, 0-9, \"_\" and \"-\""),
                    );
                    continue;
                }
                Some(n) if out.iter().any(|o| o.name == n) => {
                    self.error(
                        &item.key("name"),
                        format!("duplicate copy name {n:?}: give each [[copy]] its own name"),
                    );
                    continue;
                }
                Some(n) => n,
            };
            let parallel = match c.parallel {
                None => 4,
                Some(n) if (1..=32).contains(&n) => n as usize,
                Some(n) => {
                    self.error(
                        &item.key("parallel"),
                        format!("parallel = {n} is out of range: use 1 to 32 objects at once"),
                    );
                    4
                }
            };
            if c.r#type.as_deref() != Some("s3") && c.path.is_none() {
                self.missing(&item.key("path"), "path = \"/mnt/offsite/hopsdr\"");
                continue;
            }
            let raw = RawRepository {
                r#type: c.r#type,
                path: c.path,
                endpoint: c.endpoint,
                region: c.region,
                bucket: c.bucket,
                prefix: c.prefix,
                path_style: c.path_style,
                access_key_id: c.access_key_id,
                secret_access_key: c.secret_access_key,
                versioning: c.versioning,
                object_lock: c.object_lock,
                ca_bundle: c.ca_bundle,
                part_size_mib: c.part_size_mib,
                parallel_parts: c.parallel_parts,
                bandwidth_limit_mib: c.bandwidth_limit_mib,
                ..Default::default()
            };
            let store = self.store(&item, raw, env);
            if same_place(&store, primary) {
                self.error(
                    &item.key("path"),
                    "the copy is the repository itself: give it another directory or bucket",
                );
                continue;
            }
            out.push(CopySettings {
                name,
                store,
                parallel,
            });
        }
        out
    }

    pub(super) fn compression_level(&mut self, p: &KeyPath, level: Option<i64>) -> i32 {
        let level = level.unwrap_or(DEFAULT_COMPRESSION_LEVEL);
        if COMPRESSION_LEVELS.contains(&level) {
            level as i32
        } else {
            self.error(
                &p.key("compression_level"),
                format!(
                    "compression level {level} is out of range: use {} (fastest) to {} (smallest)",
                    COMPRESSION_LEVELS.start(),
                    COMPRESSION_LEVELS.end()
                ),
            );
            DEFAULT_COMPRESSION_LEVEL as i32
        }
    }

    pub(super) fn s3(
        &mut self,
        p: &KeyPath,
        raw: &mut RawRepository,
        env: &SecretEnv,
    ) -> S3Settings {
        if raw.path.is_some() {
            self.error(
                &p.key("path"),
                "path is for type = \"local\" repositories: an s3 repository has bucket and prefix",
            );
        }
        let bucket = match raw.bucket.take() {
            None => {
                self.missing(&p.key("bucket"), "bucket = \"hopsdr-backups\"");
                String::new()
            }
            Some(b) => {
                let ok = (3..=63).contains(&b.len())
                    && b.chars().all(|c| {
                        c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.'
                    })
                    && !b.starts_with(['-', '.'])
                    && !b.ends_with(['-', '.']);
                if !ok {
                    self.error(
                        &p.key("bucket"),
                        format!("invalid bucket name {b:?}: use 3 to 63 characters from a-z, 0-9, '-' and '.'"),
                    );
                }
                b
            }
        };
        let endpoint = raw.endpoint.take().inspect(|e| {
            let ok = (e.starts_with("https://") || e.starts_with("http://"))
                && e.len() > "https://".len()
                && !e.chars().any(char::is_whitespace);
            if !ok {
                self.error(
                    &p.key("endpoint"),
                    format!(
                        "invalid endpoint {e:?}: use a URL such as \"https://s3.example.org:9000\""
                    ),
                );
            }
        });
        let prefix = raw.prefix.take().unwrap_or_default();
        let prefix = prefix.trim_matches('/').to_string();
        if !prefix.is_empty() {
            if let Err(e) = crate::repository::validate_key(&prefix) {
                self.error(&p.key("prefix"), format!("invalid prefix {prefix:?}: {e}"));
            }
        }
        let secret_given = raw.secret_access_key.is_some();
        let secret_access_key = raw
            .secret_access_key
            .take()
            .and_then(|v| self.secret(&p.key("secret_access_key"), Some(v), env));
        let access_key_id = raw.access_key_id.take();
        if access_key_id.is_some() != secret_given {
            self.error(
                &p.key("access_key_id"),
                "give access_key_id and secret_access_key together, or neither (the AWS environment or instance credentials are then used)",
            );
        }
        let prune_secret_given = raw.prune_secret_access_key.is_some();
        let prune_secret_access_key = raw
            .prune_secret_access_key
            .take()
            .and_then(|v| self.secret(&p.key("prune_secret_access_key"), Some(v), env));
        let prune_access_key_id = raw.prune_access_key_id.take();
        if prune_access_key_id.is_some() != prune_secret_given {
            self.error(
                &p.key("prune_access_key_id"),
                "give prune_access_key_id and prune_secret_access_key together, or neither (prune then uses the identity above)",
            );
        }
        let versioning = match raw.versioning.as_deref() {
            None | Some("warn") => VersioningPolicy::Warn,
            Some("require") => VersioningPolicy::Require,
            Some(other) => {
                self.error(
                    &p.key("versioning"),
                    format!("unknown versioning policy {other:?}: use \"require\" (refuse to start on a bucket without versioning) or \"warn\""),
                );
                VersioningPolicy::Warn
            }
        };
        let object_lock = raw.object_lock.take().and_then(|l| {
            let lp = p.key("object_lock");
            let mode = match l.mode.as_deref() {
                Some("governance") => Some(crate::repository::LockMode::Governance),
                Some("compliance") => Some(crate::repository::LockMode::Compliance),
                None => {
                    self.missing(&lp.key("mode"), "mode = \"governance\"");
                    None
                }
                Some(other) => {
                    self.error(
                        &lp.key("mode"),
                        format!("unknown lock mode {other:?}: use \"governance\" or \"compliance\" (which nobody, not even the bucket's owner, can shorten)"),
                    );
                    None
                }
            };
            let days = match l.days {
                Some(d) if (1..=36500).contains(&d) => Some(d as u32),
                None => {
                    self.missing(&lp.key("days"), "days = 30");
                    None
                }
                Some(d) => {
                    self.error(
                        &lp.key("days"),
                        format!("days = {d} is out of range: objects are locked 1 to 36500 days"),
                    );
                    None
                }
            };
            Some(ObjectLockSettings {
                mode: mode?,
                days: days?,
            })
        });
        let ca_bundle = raw
            .ca_bundle
            .take()
            .map(|c| self.absolute(&p.key("ca_bundle"), Some(c), ""));
        let part_size = match raw.part_size_mib {
            None => 16 << 20,
            Some(n) if (5..=5120).contains(&n) => (n as usize) << 20,
            Some(n) => {
                self.error(
                    &p.key("part_size_mib"),
                    format!("part_size_mib = {n} is out of range: S3 parts are 5 to 5120 MiB"),
                );
                16 << 20
            }
        };
        let parallel_parts = match raw.parallel_parts {
            None => 4,
            Some(n) if (1..=64).contains(&n) => n as usize,
            Some(n) => {
                self.error(
                    &p.key("parallel_parts"),
                    format!("parallel_parts = {n} is out of range: use 1 to 64"),
                );
                4
            }
        };
        let bandwidth_limit = match raw.bandwidth_limit_mib {
            None => None,
            Some(m) if m > 0.0 && m.is_finite() => Some((m * (1u64 << 20) as f64) as u64),
            Some(m) => {
                self.error(
                    &p.key("bandwidth_limit_mib"),
                    format!("bandwidth_limit_mib = {m} must be above 0 (MiB per second); remove it for no limit"),
                );
                None
            }
        };
        S3Settings {
            endpoint,
            region: raw.region.take().unwrap_or_else(|| "us-east-1".to_string()),
            bucket,
            prefix,
            path_style: raw.path_style.unwrap_or(false),
            access_key_id,
            secret_access_key,
            prune_access_key_id,
            prune_secret_access_key,
            versioning,
            object_lock,
            ca_bundle,
            part_size,
            parallel_parts,
            bandwidth_limit,
        }
    }

    pub(super) fn secret(
        &mut self,
        p: &KeyPath,
        value: Option<toml::Value>,
        env: &SecretEnv,
    ) -> Option<Secret> {
        let short = match p.0.last() {
            Some(Seg::Key(k)) => k.clone(),
            _ => "password".to_string(),
        };
        let table = match value {
            None => {
                self.missing(p, &format!("{short} = {{ file = \"/path\" }}"));
                return None;
            }
            Some(toml::Value::String(_)) => {
                self.error(
                    p,
                    format!(
                        "inline secrets are not allowed: use {short} = {{ file = \"/path\" }} (mode 0600) or {{ credential = \"name\" }} (systemd LoadCredential=)"
                    ),
                );
                return None;
            }
            Some(toml::Value::Table(table)) => table,
            Some(other) => {
                self.error(
                    p,
                    format!(
                        "invalid type: {}, expected a table: use {short} = {{ file = \"/path\" }} or {{ credential = \"name\" }}",
                        other.type_str()
                    ),
                );
                return None;
            }
        };
        let mut unknown = false;
        for k in table.keys() {
            if !allowed_keys(&p.shape()).contains(&k.as_str()) {
                self.unknown_key(&p.key(k));
                unknown = true;
            }
        }
        let string_at = |v: &mut Self, name: &str| -> Option<Option<String>> {
            match table.get(name) {
                None => Some(None),
                Some(toml::Value::String(s)) => Some(Some(s.clone())),
                Some(other) => {
                    v.error(&p.key(name), expected_string(other.type_str()));
                    None
                }
            }
        };
        let (file, credential) = match (string_at(self, "file"), string_at(self, "credential")) {
            (Some(file), Some(credential)) => (file, credential),
            _ => return None,
        };
        match (file, credential) {
            (Some(_), Some(_)) => {
                self.error(p, "both file and credential are set: keep only one of them");
                None
            }
            (None, None) => {
                if !unknown {
                    self.error(
                        p,
                        format!(
                            "no secret given: use {short} = {{ file = \"/path\" }} or {{ credential = \"name\" }}"
                        ),
                    );
                }
                None
            }
            (Some(file), None) => {
                let path = self.absolute(&p.key("file"), Some(file), "");
                if !path.is_absolute() {
                    return None;
                }
                match check_file(&path) {
                    Ok(()) => Some(Secret::File(path)),
                    Err(message) => {
                        self.error(p, message);
                        None
                    }
                }
            }
            (None, Some(name)) => match check_credential(&name, env) {
                Ok(()) => Some(Secret::Credential(name)),
                Err(message) => {
                    self.error(p, message);
                    None
                }
            },
        }
    }
}

/// Whether two stores are the same place (a directory, or a bucket and prefix at an endpoint).
fn same_place(a: &StoreSettings, b: &StoreSettings) -> bool {
    match (a, b) {
        (StoreSettings::Local { path: x }, StoreSettings::Local { path: y }) => x == y,
        (StoreSettings::S3(x), StoreSettings::S3(y)) => {
            x.bucket == y.bucket && x.prefix == y.prefix && x.endpoint == y.endpoint
        }
        _ => false,
    }
}
