//! What runs and what is kept: `[backup]`, `[[schedule]]` and `[retention]`.

use super::*;

impl Validator<'_> {
    pub(super) fn backup(&mut self, p: &KeyPath, raw: RawBackup) -> BackupSettings {
        let p = p.key("files").key("paths");
        let Some(entries) = raw.files.and_then(|f| f.paths) else {
            return BackupSettings {
                files: DEFAULT_BACKUP_FILES
                    .iter()
                    .map(|&(path, optional)| FilePathSettings {
                        path: PathBuf::from(path),
                        optional,
                    })
                    .collect(),
            };
        };
        let mut files: Vec<(usize, FilePathSettings)> = Vec::new();
        for (i, RawFilePath { path, optional }) in entries.into_iter().enumerate() {
            let item = p.index(i);
            let key = item.key("path");
            let Some(path) = path else {
                self.missing(&key, "path = \"/absolute/path\"");
                continue;
            };
            let path = self.absolute(&key, Some(path), "");
            if let Some((first, _)) = files.iter().find(|(_, f)| f.path == path) {
                let first = p.index(*first).key("path");
                self.error(
                    &key,
                    format!("duplicate path {path:?}: already listed as {first}; remove one"),
                );
                continue;
            }
            files.push((
                i,
                FilePathSettings {
                    path,
                    optional: optional.unwrap_or(false),
                },
            ));
        }
        BackupSettings {
            files: files.into_iter().map(|(_, f)| f).collect(),
        }
    }

    pub(super) fn schedules(
        &mut self,
        p: &KeyPath,
        raw: Vec<RawSchedule>,
        copies: &[&str],
    ) -> Vec<ScheduleSettings> {
        let mut schedules = Vec::new();
        let mut names: Vec<(String, usize)> = Vec::new();
        for (i, raw) in raw.into_iter().enumerate() {
            let item = p.index(i);
            let name = match raw.name {
                None => {
                    self.missing(&item.key("name"), "name = \"nightly\"");
                    None
                }
                Some(name) => {
                    if let Some((_, first)) = names.iter().find(|(n, _)| *n == name) {
                        let first = p.index(*first);
                        self.error(
                            &item.key("name"),
                            format!(
                                "duplicate schedule name {name:?}: already used by {first}; give each schedule its own name"
                            ),
                        );
                    } else if !valid_schedule_name(&name) {
                        self.error(
                            &item.key("name"),
                            format!(
                                "invalid schedule name {name:?}: use 1 to {MAX_SCHEDULE_NAME_LEN} characters from a-z, 0-9, \"_\" and \"-\""
                            ),
                        );
                    }
                    names.push((name.clone(), i));
                    Some(name)
                }
            };
            let cron = match raw.cron {
                None => {
                    self.missing(
                        &item.key("cron"),
                        "cron = \"30 2 * * *\" (minute hour day month weekday)",
                    );
                    None
                }
                Some(expr) => match crate::schedule::Cron::parse(&expr) {
                    Ok(cron) => Some(cron),
                    Err(e) => {
                        self.error(&item.key("cron"), e.to_string());
                        None
                    }
                },
            };
            let timezone = self.timezone(&item.key("timezone"), raw.timezone);
            let job = match raw.job {
                None => {
                    self.missing(&item.key("job"), "job = \"backup\"");
                    None
                }
                Some(job) => match JobKind::ALL.iter().find(|k| k.as_str() == job) {
                    Some(kind) => Some(*kind),
                    None => {
                        let allowed: Vec<&str> = JobKind::ALL.iter().map(|k| k.as_str()).collect();
                        self.error(
                            &item.key("job"),
                            format!(
                                "unknown job {job:?}: allowed jobs: {}",
                                comma_list(&allowed)
                            ),
                        );
                        None
                    }
                },
            };
            let target = match (job, raw.target) {
                (Some(JobKind::Copy), None) => {
                    self.missing(
                        &item.key("target"),
                        "target = \"offsite\" (a [[copy]] name)",
                    );
                    None
                }
                (Some(JobKind::Copy), Some(t)) => {
                    if !copies.contains(&t.as_str()) {
                        self.error(
                            &item.key("target"),
                            format!(
                                "no [[copy]] named {t:?}: the copies are {}",
                                if copies.is_empty() {
                                    "none".to_string()
                                } else {
                                    comma_list(copies)
                                }
                            ),
                        );
                    }
                    Some(t)
                }
                (_, Some(_)) => {
                    self.error(
                        &item.key("target"),
                        "target is for job = \"copy\" schedules: remove it",
                    );
                    None
                }
                (_, None) => None,
            };
            if let (Some(name), Some(cron), Some(timezone), Some(job)) = (name, cron, timezone, job)
            {
                schedules.push(ScheduleSettings {
                    name,
                    cron,
                    timezone,
                    job,
                    catch_up: raw.catch_up.unwrap_or(true),
                    target,
                });
            }
        }
        schedules
    }

    pub(super) fn retention(&mut self, p: &KeyPath, raw: RawRetention) -> RetentionSettings {
        let mut count = |key: &str, v: Option<i64>| -> Option<u32> {
            match v {
                None => None,
                Some(n) if (0..=1_000_000).contains(&n) => Some(n as u32),
                Some(n) => {
                    self.error(
                        &p.key(key),
                        format!("{key} = {n} is out of range: use a count from 0 to 1000000"),
                    );
                    None
                }
            }
        };
        let keep_last = count("keep_last", raw.keep_last);
        let keep_hourly = count("keep_hourly", raw.keep_hourly);
        let keep_daily = count("keep_daily", raw.keep_daily);
        let keep_weekly = count("keep_weekly", raw.keep_weekly);
        let keep_monthly = count("keep_monthly", raw.keep_monthly);
        let keep_yearly = count("keep_yearly", raw.keep_yearly);
        let min_verified = count("min_verified", raw.min_verified).unwrap_or(1);
        let keep_within = raw.keep_within.map(|v| {
            let d = self.duration(&p.key("keep_within"), Some(v), Duration::from_secs(1));
            chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX)
        });
        let timezone = self
            .timezone(&p.key("timezone"), raw.timezone)
            .unwrap_or(DEFAULT_TIMEZONE);
        RetentionSettings {
            policy: crate::retention::RetentionPolicy {
                keep_last,
                keep_hourly,
                keep_daily,
                keep_weekly,
                keep_monthly,
                keep_yearly,
                keep_within,
                timezone,
                min_verified,
            },
            prune_after_backup: raw.prune_after_backup.unwrap_or(true),
        }
    }
}
