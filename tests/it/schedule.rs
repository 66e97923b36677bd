//! Scheduling through the real daemon: catch-up of a missed fire at start (exactly once), no
//! catch-up when disabled, and a fire while a job runs skipped and counted.

use std::time::Duration;

use chrono::{SecondsFormat, Utc};

use crate::harness::{wait_for, Env};

fn set_last_fire(env: &Env, name: &str, ago: chrono::Duration) {
    let conn = rusqlite::Connection::open(env.catalog()).unwrap();
    let t = (Utc::now() - ago).to_rfc3339_opts(SecondsFormat::Millis, true);
    conn.execute(
        "INSERT INTO schedule_fires (name, last_fire, last_outcome) VALUES (?1, ?2, 'test')
         ON CONFLICT(name) DO UPDATE SET last_fire=?2",
        rusqlite::params![name, t],
    )
    .unwrap();
}

fn jobs_by(env: &Env, trigger: &str) -> i64 {
    let conn = rusqlite::Connection::open(env.catalog()).unwrap();
    conn.query_row(
        "SELECT COUNT(*) FROM jobs WHERE trigger=?1",
        [trigger],
        |r| r.get(0),
    )
    .unwrap()
}

#[test]
fn a_missed_fire_is_caught_up_once_at_start() {
    let mut env = Env::new();
    // Minute 0 of hour 0 on day 1 of January: never due during the test on its own.
    env.extra_config = "[[schedule]]\nname = \"yearly\"\ncron = \"0 0 1 1 *\"\njob = \"backup\"\n\
        [[schedule]]\nname = \"nocatch\"\ncron = \"0 0 1 1 *\"\njob = \"backup\"\ncatch_up = false\n"
        .into();
    // First start creates the catalog and arms the schedules; then pretend both last fired
    // three years ago, so several slots were missed.
    drop(env.start());
    set_last_fire(&env, "yearly", chrono::Duration::days(3 * 366));
    set_last_fire(&env, "nocatch", chrono::Duration::days(3 * 366));
    let _d = env.start();
    wait_for("the catch-up backup", Duration::from_secs(30), || {
        (jobs_by(&env, "schedule:yearly") == 1).then_some(())
    });
    let list = env.ctl_json(&["backups", "list"]);
    let id = list["backups"][0]["job_id"].as_i64().unwrap();
    let j = env.wait_job(id);
    assert_eq!(j["state"], "succeeded");
    // Exactly one catch-up, none for the schedule without catch-up, and both wait for the
    // next slot.
    assert_eq!(jobs_by(&env, "schedule:yearly"), 1);
    assert_eq!(jobs_by(&env, "schedule:nocatch"), 0);
    let status = env.ctl_json(&["status"]);
    for s in status["schedules"].as_array().unwrap() {
        let next = s["next_fire"].as_str().unwrap();
        assert!(next.ends_with("-01-01T00:00:00Z"), "{s}");
    }
    let m = env.metrics();
    assert!(
        m.contains("hopsdr_schedule_next_run_timestamp_seconds{schedule=\"yearly\"}"),
        "{m}"
    );
    assert!(
        m.contains("hopsdr_schedule_expected_interval_seconds{schedule=\"yearly\"}"),
        "{m}"
    );
}

#[cfg(feature = "testbed")]
#[test]
fn a_fire_while_a_job_runs_is_skipped_and_counted() {
    let env = Env::new();
    let d = env.start_with(&[("HOPSDR_FAILPOINTS", "backup.before_commit=pause")]);
    let started = env.ctl_json(&["backup", "start"]);
    let job = started["job_id"].as_i64().unwrap();
    let marker = env.path().join("backup.before_commit.reached");
    wait_for("the failpoint", Duration::from_secs(30), || {
        marker.exists().then_some(())
    });
    // Add a schedule whose slot was missed, then reload: it fires at once, finds the job running.
    set_last_fire(&env, "hourly", chrono::Duration::hours(3));
    let mut env2 = env;
    env2.extra_config =
        "[[schedule]]\nname = \"hourly\"\ncron = \"0 * * * *\"\njob = \"backup\"\n".into();
    env2.write_config();
    d.signal(nix::sys::signal::Signal::SIGHUP);
    wait_for("the skip to be counted", Duration::from_secs(30), || {
        env2.metrics()
            .contains("hopsdr_schedule_skipped_total{reason=\"busy\",schedule=\"hourly\"} 1")
            .then_some(())
    });
    assert_eq!(jobs_by(&env2, "schedule:hourly"), 0);
    let status = env2.ctl_json(&["status"]);
    assert_eq!(status["current_job"]["id"], job);
    drop(d);
}
