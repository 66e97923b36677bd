//! A real Prometheus server (Debian's package) on loopback scrapes hopsdrd with the shipped
//! alert rules loaded as they are: every rule evaluates without error against the scraped
//! series, every metric the Grafana dashboard queries is among the names Prometheus scraped,
//! and the overdue-backup alert goes pending once the last backup is older than the schedule
//! allows, then clears after a backup. The shipped rules wait `for: 5m` before firing (proved by
//! `promtool test rules`); a copy of them without `for`, loaded beside, shows the same alert
//! firing and clearing.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use chrono::{Datelike, SecondsFormat, Utc};

use crate::harness::{free_port, http_get, wait_for, Env};
use crate::packaging::{hopsdr_names, root};
use crate::tbcluster::Cluster;

/// A Prometheus server scraping hopsdrd's metrics every second, evaluating every second.
struct Prometheus {
    child: Child,
    port: u16,
    dir: PathBuf,
}

impl Prometheus {
    fn start(env: &Env, rule_files: &[PathBuf]) -> Prometheus {
        let dir = env.path().join("prometheus");
        std::fs::create_dir_all(&dir).unwrap();
        let rules: Vec<String> = rule_files
            .iter()
            .map(|p| format!("\"{}\"", p.display()))
            .collect();
        let config = format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
             rule_files: [{}]\n\
             scrape_configs:\n  - job_name: hopsdr\n    static_configs:\n      - targets: [\"127.0.0.1:{}\"]\n",
            rules.join(", "),
            env.metrics_port
        );
        std::fs::write(dir.join("prometheus.yml"), config).unwrap();
        let port = free_port();
        let log = std::fs::File::create(dir.join("prometheus.log")).unwrap();
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", dir.join("prometheus.yml").display()))
            .arg(format!("--storage.tsdb.path={}", dir.join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("prometheus (Debian package prometheus) must be installed: run scripts/setup-test-deps");
        let p = Prometheus { child, port, dir };
        wait_for("Prometheus to be ready", Duration::from_secs(60), || {
            matches!(http_get(p.port, "/-/ready"), Some((200, _))).then_some(())
        });
        p
    }

    /// The `data` of a successful API answer.
    fn api(&self, path: &str) -> serde_json::Value {
        let (status, body) = http_get(self.port, path).expect("Prometheus answers");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_else(|e| {
            panic!("{path}: {e}: {body}");
        });
        assert!(status == 200 && v["status"] == "success", "{path}: {body}");
        v["data"].clone()
    }

    /// Every alerting rule as (group, alert, state, health, last error).
    fn rules(&self) -> Vec<(String, String, String, String, String)> {
        let data = self.api("/api/v1/rules?type=alert");
        let mut out = Vec::new();
        for g in data["groups"].as_array().unwrap() {
            for r in g["rules"].as_array().unwrap() {
                let s = |k: &str| r[k].as_str().unwrap_or_default().to_string();
                out.push((
                    g["name"].as_str().unwrap().to_string(),
                    s("name"),
                    s("state"),
                    s("health"),
                    s("lastError"),
                ));
            }
        }
        out
    }

    /// The state of `alert` in `group`.
    fn state(&self, group: &str, alert: &str) -> String {
        self.rules()
            .into_iter()
            .find(|r| r.0 == group && r.1 == alert)
            .unwrap_or_else(|| panic!("no rule {alert} in group {group}"))
            .2
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("prometheus.log")).unwrap_or_default()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The shipped rules with every `for:` removed, in group `hopsdr-immediate`.
fn without_for(shipped: &Path, to: &Path) {
    let text = std::fs::read_to_string(shipped).unwrap();
    let out: Vec<&str> = text
        .lines()
        .filter(|l| !l.trim_start().starts_with("for: "))
        .map(|l| {
            if l.trim() == "- name: hopsdr" {
                "  - name: hopsdr-immediate"
            } else {
                l
            }
        })
        .collect();
    assert!(out.len() < text.lines().count(), "no `for:` to remove");
    std::fs::write(to, out.join("\n") + "\n").unwrap();
}

/// Pretends every succeeded component finished `ago` earlier (the daemon reads them at start).
fn age_backups(env: &Env, ago: chrono::Duration) {
    let conn = rusqlite::Connection::open(env.catalog()).unwrap();
    let t = |d: chrono::Duration| (Utc::now() - d).to_rfc3339_opts(SecondsFormat::Millis, true);
    let n = conn
        .execute(
            "UPDATE backup_components SET started_at = ?1, finished_at = ?2",
            rusqlite::params![t(ago + chrono::Duration::minutes(5)), t(ago)],
        )
        .unwrap();
    assert!(n > 0);
}

#[test]
fn a_real_prometheus_scrapes_every_dashboard_metric_and_the_overdue_alert_fires_and_clears() {
    let mut env = Env::new();
    let c = Cluster::create(&env, &[]);
    // A weekly schedule whose day is three days away: it never fires during the test, and its
    // expected interval (a week) sets the overdue threshold at 8.75 days.
    let day = (Utc::now().weekday().num_days_from_sunday() + 3) % 7;
    env.extra_config = c.hopsfs_config("local")
        + &format!("[[schedule]]\nname = \"weekly\"\ncron = \"0 3 * * {day}\"\njob = \"backup\"\n")
        + "[drill]\nmax_age = \"8d\"\n"
        + &format!(
            "[[copy]]\nname = \"offsite\"\npath = \"{}\"\n\
             [[schedule]]\nname = \"offsite\"\ncron = \"0 4 * * {day}\"\njob = \"copy\"\ntarget = \"offsite\"\n",
            env.path().join("offsite").display()
        );
    let d = env.start();
    let id = env.backup_ok();
    env.ctl_ok(&["verify", &id, "--wait"]);
    env.ctl_ok(&["drill", &id, "--wait"]);
    env.ctl_ok(&["copy", "--wait"]);

    let shipped = root().join("packaging/prometheus/hopsdr-alerts.yml");
    let immediate = env.path().join("hopsdr-alerts-immediate.yml");
    without_for(&shipped, &immediate);
    let prom = Prometheus::start(&env, &[shipped, immediate]);

    // Every metric the dashboard and the rules query, scraped from the daemon.
    let dashboard =
        std::fs::read_to_string(root().join("packaging/grafana/hopsdr-dashboard.json")).unwrap();
    let rules_text =
        std::fs::read_to_string(root().join("packaging/prometheus/hopsdr-alerts.yml")).unwrap();
    let mut wanted = hopsdr_names(&dashboard);
    wanted.extend(hopsdr_names(&rules_text));
    assert!(wanted.len() >= 20, "{wanted:?}");
    // Once one scrape is in (the daemon's own series are there), what is missing stays so.
    let names: Vec<String> = wait_for(
        "Prometheus to scrape hopsdrd",
        Duration::from_secs(60),
        || {
            let names: Vec<String> = prom
                .api("/api/v1/label/__name__/values")
                .as_array()
                .unwrap()
                .iter()
                .filter_map(|v| v.as_str().map(String::from))
                .collect();
            names
                .iter()
                .any(|n| n == "hopsdr_build_info")
                .then_some(names)
        },
    );
    let missing: Vec<&String> = wanted.iter().filter(|w| !names.contains(w)).collect();
    assert!(
        missing.is_empty(),
        "the dashboard or the rules query metrics Prometheus never scraped: {missing:?}"
    );

    // Every rule of both files evaluated without error against the real series.
    let rules = wait_for(
        "every rule to be evaluated",
        Duration::from_secs(60),
        || {
            let rules = prom.rules();
            rules.iter().all(|r| r.3 != "unknown").then_some(rules)
        },
    );
    assert!(rules.len() >= 12, "{rules:?}");
    for r in &rules {
        assert_eq!(r.3, "ok", "rule {} in {}: {}", r.1, r.0, r.4);
    }
    // A fresh backup: not overdue.
    for g in ["hopsdr", "hopsdr-immediate"] {
        assert_eq!(prom.state(g, "HopsdrBackupOverdue"), "inactive");
    }

    // The schedule missed: the last backup is ten days old when hopsdrd starts again.
    drop(d);
    age_backups(&env, chrono::Duration::days(10));
    let _d = env.start();
    wait_for(
        "the overdue alert to go pending (shipped) and firing (without for)",
        Duration::from_secs(60),
        || {
            (prom.state("hopsdr", "HopsdrBackupOverdue") == "pending"
                && prom.state("hopsdr-immediate", "HopsdrBackupOverdue") == "firing")
                .then_some(())
        },
    );
    let alerts = prom.api("/api/v1/alerts");
    let overdue: Vec<&serde_json::Value> = alerts["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["labels"]["alertname"] == "HopsdrBackupOverdue")
        .collect();
    assert!(!overdue.is_empty(), "{alerts}");
    assert!(
        overdue.iter().all(|a| a["labels"]["severity"] == "critical"
            && a["annotations"]["summary"]
                .as_str()
                .unwrap()
                .contains("no successful")),
        "{alerts}"
    );
    // Nothing else of consequence fires: the backup is not failed, the verification and the
    // drill are recent.
    for name in [
        "HopsdrBackupFailed",
        "HopsdrVerificationTooOld",
        "HopsdrDrillTooOld",
        "HopsdrCopyOverdue",
    ] {
        assert_eq!(prom.state("hopsdr-immediate", name), "inactive", "{name}");
    }

    // A backup clears it.
    env.backup_ok();
    wait_for(
        "the overdue alert to clear after a backup",
        Duration::from_secs(60),
        || {
            (prom.state("hopsdr", "HopsdrBackupOverdue") == "inactive"
                && prom.state("hopsdr-immediate", "HopsdrBackupOverdue") == "inactive")
                .then_some(())
        },
    );
    assert!(
        !prom.log().contains("level=error"),
        "Prometheus logged errors:\n{}",
        prom.log()
    );
}
