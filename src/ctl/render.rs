//! What hopsdrctl prints for people: tables and summaries of the daemon's answers. Pure
//! functions from the API's types to text, with their own tests.

use crate::api::{BackupDetail, BackupList, BackupView, JobView, RestoreStatus, StatusResponse};

/// The restore status for people: every step with state and duration, then the RTO.
pub fn format_restore(st: &RestoreStatus) -> String {
    let r = &st.restore;
    let mut s = format!(
        "restore {} of backup {}: {}\nstarted:  {}\nfinished: {}\n",
        r.id,
        r.backup_id,
        r.state.as_str(),
        fmt_time(Some(r.created_at)),
        fmt_time(r.finished_at)
    );
    if let Some(e) = &r.error {
        s.push_str(&format!("error:    {e}\n"));
    }
    if let Some(p) = &st.progress {
        s.push_str(&format!("now:      {}\n", p.step));
    }
    s.push('\n');
    let rows: Vec<Vec<String>> = st
        .plan
        .steps
        .iter()
        .enumerate()
        .map(|(i, step)| {
            let rec = r.steps.get(i);
            vec![
                (i + 1).to_string(),
                rec.map(|x| x.state.as_str().to_string())
                    .unwrap_or_default(),
                st.report
                    .steps
                    .get(i)
                    .map(|(_, secs)| format!("{secs:.1}s"))
                    .unwrap_or_default(),
                step.title.clone(),
            ]
        })
        .collect();
    s.push_str(&table(&["#", "STATE", "TIME", "STEP"], &rows));
    s.push_str(&format!("\ntotal (RTO): {:.1}s\n", st.report.total_seconds));
    s
}

/// `prune --dry-run` for people: one line per backup, newest first.
pub fn format_prune(d: &crate::api::PruneDecisions) -> String {
    let mut s = String::new();
    if !d.policy_has_rules {
        s.push_str("[retention] has no keep_* rule: nothing is forgotten\n");
    }
    let rows: Vec<Vec<String>> = d
        .decisions
        .iter()
        .map(|x| {
            vec![
                x.id.to_string(),
                if x.keep { "keep" } else { "forget" }.to_string(),
                x.reasons.join(", "),
            ]
        })
        .collect();
    s.push_str(&table(&["BACKUP", "DECISION", "REASONS"], &rows));
    let forget = d.decisions.iter().filter(|x| !x.keep).count();
    s.push_str(&format!(
        "{} to keep, {forget} to forget\n",
        d.decisions.len() - forget
    ));
    s
}

/// Bytes for people: `1.5 GiB`.
pub fn human_bytes(n: u64) -> String {
    bytesize::ByteSize(n).display().iec().to_string()
}

fn fmt_time(t: Option<chrono::DateTime<chrono::Utc>>) -> String {
    t.map(|t| t.format("%Y-%m-%d %H:%M:%SZ").to_string())
        .unwrap_or_else(|| "-".into())
}

/// Left-aligned columns separated by two spaces.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            widths[i] = widths[i].max(c.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                s.push_str(c);
            } else {
                s.push_str(&format!("{c:<w$}  ", w = widths[i]));
            }
        }
        s.trim_end().to_string() + "\n"
    };
    let mut out = line(header.iter().map(|h| h.to_string()).collect());
    for r in rows {
        out.push_str(&line(r.clone()));
    }
    out
}

pub fn format_status(s: &StatusResponse) -> String {
    let mut out = format!(
        "hopsdrd {} (pid {}), up {}s\nrepository: {}\n",
        s.version, s.pid, s.uptime_seconds, s.repository
    );
    if let Some(h) = &s.held {
        out.push_str(&format!("scheduled backups and pruning {h}\n"));
    }
    match &s.current_job {
        Some(j) => {
            out.push_str(&format!(
                "current job: {} {} ({})",
                j.id,
                j.kind.as_str(),
                j.trigger
            ));
            if let Some(p) = &j.progress {
                out.push_str(&format!(
                    ": {}, {} files, {}",
                    p.step,
                    p.files,
                    human_bytes(p.logical_bytes)
                ));
            }
            out.push('\n');
        }
        None => out.push_str("current job: none\n"),
    }
    out.push_str("\nlast success:\n");
    if s.last_success.is_empty() {
        out.push_str("  none yet\n");
    } else {
        let rows: Vec<Vec<String>> = s
            .last_success
            .iter()
            .map(|l| {
                vec![
                    l.component.clone(),
                    l.backup_id.to_string(),
                    fmt_time(Some(l.finished_at)),
                    human_bytes(l.logical_bytes),
                ]
            })
            .collect();
        out.push_str(&table(&["COMPONENT", "BACKUP", "FINISHED", "SIZE"], &rows));
    }
    out.push_str("\nschedules:\n");
    if s.schedules.is_empty() {
        out.push_str("  none configured\n");
    } else {
        let rows: Vec<Vec<String>> = s
            .schedules
            .iter()
            .map(|x| {
                vec![
                    x.name.clone(),
                    x.job.clone(),
                    x.cron.clone(),
                    x.timezone.clone(),
                    fmt_time(x.next_fire),
                    fmt_time(x.last_fire),
                ]
            })
            .collect();
        out.push_str(&table(
            &["NAME", "JOB", "CRON", "TIMEZONE", "NEXT", "LAST"],
            &rows,
        ));
    }
    out
}

pub fn format_backups(l: &BackupList) -> String {
    if l.backups.is_empty() {
        return "no backups yet\n".into();
    }
    let rows: Vec<Vec<String>> = l
        .backups
        .iter()
        .map(|b| {
            vec![
                b.id.to_string(),
                if b.hopsfs_unchecked {
                    format!("{} (unchecked)", b.state.as_str())
                } else {
                    b.state.as_str().to_string()
                },
                fmt_time(Some(b.started_at)),
                fmt_time(b.finished_at),
                b.files.to_string(),
                human_bytes(b.logical_bytes),
                human_bytes(b.stored_bytes),
                verification(b),
                if b.pinned { "pinned" } else { "" }.to_string(),
            ]
        })
        .collect();
    table(
        &[
            "ID", "STATE", "STARTED", "FINISHED", "FILES", "SIZE", "STORED", "VERIFIED", "PIN",
        ],
        &rows,
    )
    .lines()
    .map(|l| format!("{}\n", l.trim_end()))
    .collect()
}

/// What the last verification of `b` found: when it was found whole, DAMAGED, or `-` (never).
fn verification(b: &BackupView) -> String {
    if b.damaged {
        "DAMAGED".into()
    } else {
        fmt_time(b.verified_at)
    }
}

pub fn format_backup(d: &BackupDetail) -> String {
    let b = &d.backup;
    let mut out = format!(
        "backup:   {}\nstate:    {}\njob:      {}\nstarted:  {}\nfinished: {}\nfiles:    {}\nsize:     {}\nstored:   {}\n",
        b.id,
        b.state.as_str(),
        b.job_id,
        fmt_time(Some(b.started_at)),
        fmt_time(b.finished_at),
        b.files,
        human_bytes(b.logical_bytes),
        human_bytes(b.stored_bytes)
    );
    out.push_str(&format!(
        "verified: {}\npinned:   {}\n",
        match verification(b).as_str() {
            "-" => "never".to_string(),
            v => v.to_string(),
        },
        if b.pinned {
            "yes (retention keeps it)"
        } else {
            "no"
        }
    ));
    if b.hopsfs_unchecked {
        out.push_str(
            "hopsfs:   UNCHECKED: blocks copied without checking them against the blocks the metadata references (set [hopsfs] referenced_blocks)\n",
        );
    }
    if let Some(r) = b.rondb_backup_id {
        out.push_str(&format!(
            "rondb:    backup id {r} (BACKUP-{r} on the data nodes)\n"
        ));
    }
    if let Some(e) = &b.error {
        out.push_str(&format!("error:    {e}\n"));
    }
    out.push('\n');
    let rows: Vec<Vec<String>> = d
        .components
        .iter()
        .map(|c| {
            vec![
                c.component.clone(),
                c.state.as_str().to_string(),
                c.files.to_string(),
                human_bytes(c.logical_bytes),
                human_bytes(c.stored_bytes),
                c.error.clone().unwrap_or_default(),
            ]
        })
        .collect();
    out.push_str(&table(
        &["COMPONENT", "STATE", "FILES", "SIZE", "STORED", "ERROR"],
        &rows,
    ));
    out
}

/// The first line of `repo check`: whether the repository is encrypted, and with what.
pub fn encryption_line(e: Option<&crate::repository::EncryptionStatus>) -> String {
    match e {
        None => "encryption: none (plaintext repository)\n".to_string(),
        Some(e) => format!(
            "encryption: {} ({} key slot(s), data key {} of {}, opened with slot {:?})\n",
            e.aead,
            e.slots.len(),
            e.current_data_key,
            e.data_keys.len(),
            e.opened_with
        ),
    }
}

/// `hopsdrctl key list`.
pub fn format_keys(v: &crate::api::KeysView) -> String {
    let Some(e) = &v.encryption else {
        return "the repository is not encrypted: it has no keys\n".to_string();
    };
    let rows: Vec<Vec<String>> = e
        .slots
        .iter()
        .map(|s| {
            vec![
                s.name.clone(),
                s.kind.clone(),
                s.created.format("%Y-%m-%d %H:%M:%SZ").to_string(),
                s.kdf.clone(),
                if s.name == e.opened_with {
                    "in use by hopsdrd".into()
                } else {
                    String::new()
                },
            ]
        })
        .collect();
    let mut out = table(&["SLOT", "KIND", "CREATED", "KEY DERIVATION", ""], &rows);
    out.push_str(&format!(
        "data keys: {} (new objects sealed with {}); {}\n",
        e.data_keys
            .iter()
            .map(|k| k.to_string())
            .collect::<Vec<_>>()
            .join(", "),
        e.current_data_key,
        e.aead
    ));
    out
}

pub fn format_job(v: &JobView) -> String {
    let j = v;
    let mut out = format!(
        "job:      {}\nkind:     {}\nstate:    {}\ntrigger:  {}\n",
        j.id,
        j.kind.as_str(),
        j.state.as_str(),
        j.trigger
    );
    if let Some(b) = &j.backup_id {
        out.push_str(&format!("backup:   {b}\n"));
    }
    out.push_str(&format!(
        "created:  {}\nfinished: {}\n",
        fmt_time(Some(j.created_at)),
        fmt_time(j.finished_at)
    ));
    if let Some(p) = &v.progress {
        out.push_str(&format!(
            "progress: {}, {} files, {}\n",
            p.step,
            p.files,
            human_bytes(p.logical_bytes)
        ));
    }
    if let Some(e) = &j.error {
        out.push_str(&format!("error:    {e}\n"));
    }
    out
}

/// `hopsdrctl agents check`: a row per host, then each problem on its own line, then a verdict.
pub fn agents(v: &crate::api::AgentsView) -> String {
    let rows: Vec<Vec<String>> = v
        .agents
        .iter()
        .map(|a| {
            let free = a
                .roots
                .iter()
                .chain(a.backup_dir.iter())
                .filter_map(|r| r.free_bytes)
                .min()
                .map(human_bytes)
                .unwrap_or_else(|| "-".into());
            vec![
                a.node.clone(),
                a.address.clone(),
                a.roles.join(","),
                a.version.clone().unwrap_or_else(|| "-".into()),
                match (a.uid, a.forced) {
                    (Some(u), true) => format!("{u} (forced command)"),
                    (Some(u), false) => u.to_string(),
                    (None, _) => "-".into(),
                },
                free,
                match (&a.repository, a.keys_match) {
                    (None, None) => "-".into(),
                    (store, keys) => [
                        store.as_ref().map(|s| match s.problem {
                            None => "bucket reached",
                            Some(_) => "bucket NOT reached",
                        }),
                        keys.map(|k| if k { "keys ok" } else { "keys DIFFER" }),
                    ]
                    .into_iter()
                    .flatten()
                    .collect::<Vec<_>>()
                    .join(", "),
                },
                if a.problems.is_empty() {
                    "ok".into()
                } else {
                    format!("{} problem(s)", a.problems.len())
                },
            ]
        })
        .collect();
    let mut s = table(
        &[
            "NODE",
            "ADDRESS",
            "ROLES",
            "VERSION",
            "UID",
            "LEAST FREE",
            "REPOSITORY",
            "STATE",
        ],
        &rows,
    );
    let mut bad = 0;
    for a in &v.agents {
        for p in &a.problems {
            s.push_str(&format!("problem: {}: {p}\n", a.node));
        }
        bad += usize::from(!a.problems.is_empty());
    }
    if v.agents.is_empty() {
        s.push_str("no node to check: the config has no [hopsfs] datanodes and no [rondb]\n");
    } else if bad == 0 {
        s.push_str(&format!("all {} agents ready\n", v.agents.len()));
    } else {
        s.push_str(&format!("{bad} of {} agents NOT ready\n", v.agents.len()));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_bytes_units() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(1023), "1023 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(3 << 30), "3.0 GiB");
    }

    #[test]
    fn table_aligns() {
        let t = table(
            &["A", "BB"],
            &[vec!["xxx".into(), "y".into()], vec!["z".into(), "w".into()]],
        );
        assert_eq!(t, "A    BB\nxxx  y\nz    w\n");
    }

    #[test]
    fn the_backups_table_shows_verification_and_pins() {
        use crate::domain::State;
        use chrono::TimeZone;
        let t = chrono::Utc.with_ymd_and_hms(2026, 11, 29, 1, 2, 3).unwrap();
        let rec = |id: &str, verified_at, damaged, pinned| BackupView {
            id: crate::ids::BackupId::parse(id).unwrap(),
            job_id: crate::ids::JobId(1),
            state: State::Succeeded,
            started_at: t,
            finished_at: Some(t),
            logical_bytes: 2048,
            stored_bytes: 1024,
            files: 3,
            error: None,
            rondb_backup_id: None,
            pinned,
            verified_at,
            damaged,
            hopsfs_unchecked: false,
        };
        let mut unchecked = rec("20261129T000000Z", None, false, false);
        unchecked.hopsfs_unchecked = true;
        let out = format_backups(&BackupList {
            backups: vec![
                rec("20261127T000000Z", Some(t), false, true),
                rec("20261128T000000Z", None, true, false),
                unchecked,
            ],
        });
        let lines: Vec<&str> = out.lines().collect();
        assert!(lines[0].ends_with("VERIFIED              PIN"), "{out}");
        assert!(lines[1].ends_with("2026-11-29 01:02:03Z  pinned"), "{out}");
        assert!(lines[2].ends_with("DAMAGED"), "{out}");
        assert!(lines[3].ends_with("-"), "{out}");
        assert!(
            lines[3].starts_with("20261129T000000Z  succeeded (unchecked)  "),
            "{out}"
        );
    }
}

/// A drill: its report's readable summary once it has one, else its state and error.
pub fn drill(d: &crate::catalog::DrillRecord) -> String {
    let report = d
        .report
        .clone()
        .and_then(|j| serde_json::from_value::<crate::drill::report::DrillReport>(j).ok());
    let mut s = match report {
        Some(r) => r.summary(),
        None => format!(
            "drill level {} of backup {}: {}\n",
            d.level,
            d.backup_id,
            d.state.as_str()
        ),
    };
    if let Some(e) = &d.error {
        if d.report.is_none() {
            s.push_str(&format!("  error: {e}\n"));
        }
    }
    s.push_str(&format!("  job {}\n", d.job_id));
    s
}

#[cfg(test)]
mod drill_tests {
    use super::*;

    #[test]
    fn a_drill_without_a_report_shows_its_state_and_error() {
        let d = crate::catalog::DrillRecord {
            job_id: crate::ids::JobId(7),
            backup_id: crate::ids::BackupId::parse("20261207T100000Z").unwrap(),
            level: 1,
            state: crate::domain::State::Interrupted,
            started_at: chrono::Utc::now(),
            finished_at: None,
            rto_seconds: None,
            error: Some("interrupted: hopsdrd stopped".into()),
            report: None,
        };
        assert_eq!(
            drill(&d),
            "drill level 1 of backup 20261207T100000Z: interrupted\n  error: interrupted: hopsdrd stopped\n  job 7\n"
        );
    }
}
