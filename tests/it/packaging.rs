//! What ships besides the binaries: the Prometheus alert rules (checked and unit-tested with the
//! real promtool: every rule fires in one case and stays quiet in another) and the Grafana
//! dashboard (valid JSON; every metric it or the rules query is one hopsdrd exports).

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Every `hopsdr_*` name in `text`.
pub fn hopsdr_names(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = text;
    while let Some(i) = rest.find("hopsdr_") {
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| !(c.is_ascii_lowercase() || c == '_'))
            .unwrap_or(tail.len());
        out.insert(tail[..end].to_string());
        rest = &tail[end..];
    }
    out
}

/// The metric names hopsdrd registers.
fn exported() -> BTreeSet<String> {
    let src = std::fs::read_to_string(root().join("src/daemon/metrics.rs")).unwrap();
    src.lines()
        .filter_map(|l| {
            let l = l.trim();
            let q = l.strip_prefix('"').or_else(|| {
                l.find("Opts::new(\"")
                    .map(|i| &l[i + "Opts::new(\"".len()..])
            })?;
            let name = &q[..q.find('"')?];
            name.starts_with("hopsdr_").then(|| name.to_string())
        })
        .collect()
}

#[test]
fn alert_rules_pass_promtool_check_and_their_unit_tests() {
    let dir = root().join("packaging/prometheus");
    let out = Command::new("promtool")
        .args(["check", "rules", "hopsdr-alerts.yml"])
        .current_dir(&dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = Command::new("promtool")
        .args(["test", "rules", "hopsdr-alerts.test.yml"])
        .current_dir(&dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // Every alert has a case.
    let rules = std::fs::read_to_string(dir.join("hopsdr-alerts.yml")).unwrap();
    let tests = std::fs::read_to_string(dir.join("hopsdr-alerts.test.yml")).unwrap();
    for line in rules
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- alert: "))
    {
        assert!(
            tests.contains(&format!("alertname: {line}")),
            "no promtool case for {line}"
        );
    }
}

#[test]
fn the_dashboard_and_the_rules_query_only_exported_metrics() {
    let exported = exported();
    assert!(exported.len() >= 20, "{exported:?}");
    let text =
        std::fs::read_to_string(root().join("packaging/grafana/hopsdr-dashboard.json")).unwrap();
    let dash: serde_json::Value = serde_json::from_str(&text).unwrap();
    let panels = dash["panels"].as_array().unwrap();
    assert!(panels.len() >= 10);
    let mut exprs = String::new();
    for p in panels {
        for t in p["targets"].as_array().unwrap() {
            exprs.push_str(t["expr"].as_str().unwrap());
            exprs.push('\n');
        }
    }
    let used = hopsdr_names(&exprs);
    let unknown: Vec<&String> = used.difference(&exported).collect();
    assert!(unknown.is_empty(), "the dashboard queries {unknown:?}");
    // The dashboard shows the backup age, verification and restores at least.
    for m in [
        "hopsdr_backup_last_success_timestamp_seconds",
        "hopsdr_schedule_expected_interval_seconds",
        "hopsdr_verify_last_success_timestamp_seconds",
        "hopsdr_restore_duration_seconds",
        "hopsdr_repository_bytes",
    ] {
        assert!(used.contains(m), "the dashboard does not show {m}");
    }
    let rules =
        std::fs::read_to_string(root().join("packaging/prometheus/hopsdr-alerts.yml")).unwrap();
    let used = hopsdr_names(&rules);
    let unknown: Vec<&String> = used.difference(&exported).collect();
    assert!(unknown.is_empty(), "the alert rules query {unknown:?}");
}
