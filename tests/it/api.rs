//! The socket API: errors with fitting statuses, peer credentials, the unreachable daemon.

use std::process::Command;

use crate::harness::{raw_request, Env, HOPSDRCTL};

#[test]
fn api_errors_have_fitting_statuses_and_the_daemon_survives() {
    let env = Env::new();
    let _d = env.start();
    let s = env.socket();
    let (st, body) = raw_request(
        &s,
        b"GET /v1/nope HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
    );
    assert_eq!(st, 404);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["error"]["code"], "not_found");

    let bad = b"POST /v1/backups HTTP/1.1\r\nhost: x\r\ncontent-length: 9\r\nconnection: close\r\n\r\n{not json";
    let (st, body) = raw_request(&s, bad);
    assert_eq!(st, 400, "{body}");
    assert!(body.contains("bad_json"));

    let big = vec![b'x'; 1024 * 1024 + 10];
    let mut req = format!(
        "POST /v1/backups HTTP/1.1\r\nhost: x\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        big.len()
    )
    .into_bytes();
    req.extend_from_slice(&big);
    let (st, body) = raw_request(&s, &req);
    assert_eq!(st, 413, "{body}");

    let (st, _) = raw_request(
        &s,
        b"DELETE /v1/status HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
    );
    assert_eq!(st, 405);
    let (st, _) = raw_request(&s, b"garbage\r\n\r\n");
    assert!(st == 400 || st == 0);

    // Still alive and serving.
    let v = env.ctl_json(&["status"]);
    assert_eq!(v["version"], env!("CARGO_PKG_VERSION"));
    assert!(v["current_job"].is_null());
}

#[test]
fn unprivileged_user_may_read_but_not_start_a_backup() {
    use std::os::unix::fs::PermissionsExt;

    let env = Env::new();
    let _d = env.start();
    // A copy nobody can execute, whatever the permissions of the checkout's directories.
    let ctl = env.path().join("hopsdrctl");
    std::fs::copy(HOPSDRCTL, &ctl).unwrap();
    std::fs::set_permissions(&ctl, std::fs::Permissions::from_mode(0o755)).unwrap();
    let ctl = ctl.to_str().unwrap().to_string();
    let as_nobody = |args: &[&str]| {
        Command::new("setpriv")
            .args([
                "--reuid=nobody",
                "--regid=nogroup",
                "--clear-groups",
                &ctl,
                "--socket",
            ])
            .arg(env.socket())
            .args(args)
            .output()
            .unwrap()
    };
    let out = as_nobody(&["status"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = as_nobody(&["backup", "start"]);
    assert_eq!(
        out.status.code(),
        Some(4),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("permission denied"), "{err}");
    // The refusal is audited and nothing was started.
    assert!(env.ctl_json(&["backups", "list"])["backups"]
        .as_array()
        .unwrap()
        .is_empty());
    let conn = rusqlite::Connection::open(env.catalog()).unwrap();
    let (uid, allowed): (u32, bool) = conn
        .query_row(
            "SELECT uid, allowed FROM audit ORDER BY id DESC LIMIT 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!((uid, allowed), (65534, false));

    // A user outside the socket's group cannot even connect: the socket is 0660.
    let out = Command::new("setpriv")
        .args([
            "--reuid=nobody",
            "--regid=54321",
            "--clear-groups",
            &ctl,
            "--socket",
        ])
        .arg(env.socket())
        .arg("status")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(4), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("permission denied"), "{err}");
}

#[test]
fn unreachable_daemon_exits_3_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("none.sock");
    let out = Command::new(HOPSDRCTL)
        .arg("--socket")
        .arg(&sock)
        .arg("status")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.starts_with(&format!(
            "hopsdrctl: cannot reach hopsdrd at {}: ",
            sock.display()
        )) && err.trim_end().ends_with("(is hopsdr.service running?)"),
        "{err}"
    );
}
