//! The daemon's listeners under hostile local users: slow clients are closed, a flood of
//! connections is bounded (per user on the socket, with room kept for root), rights are bound to
//! the connection (a reused pid decides nothing), and destructive requests need their
//! confirmation in the API itself.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::harness::{raw_request, wait_for, Env};

/// A client as `nobody` (primary group nogroup, which may use the socket) that opens `n`
/// connections, says "connected", waits for a line on stdin, then reads every connection to its
/// end and prints how many were refused (503) and how many were closed without an answer.
const FLOODER: &str = r#"
import socket, sys, json
path, n = sys.argv[1], int(sys.argv[2])
conns = []
for _ in range(n):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(path)
    s.settimeout(60)
    conns.append(s)
print("connected", flush=True)
sys.stdin.readline()
refused = closed = 0
for s in conns:
    data = b""
    while True:
        b = s.recv(4096)
        if not b:
            break
        data += b
    if data.startswith(b"HTTP/1.1 503"):
        refused += 1
        last = data.decode()
    elif data == b"":
        closed += 1
print(json.dumps({"refused": refused, "closed": closed, "last": last if refused else ""}), flush=True)
"#;

fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("{series} not in metrics:\n{text}"))
}

#[test]
fn slow_and_flooding_clients_are_bounded_and_root_still_gets_in() {
    let mut env = Env::new();
    env.daemon_extra = "client_timeout = \"1s\"\n".into();
    let _d = env.start();

    // A client that sends half a request head is closed (without an answer) once its time is up.
    let mut slow = UnixStream::connect(env.socket()).unwrap();
    slow.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    slow.write_all(b"GET /v1/status HTTP/1.1\r\nhost:").unwrap();
    let mut buf = Vec::new();
    slow.read_to_end(&mut buf)
        .expect("the daemon closes a slow client");
    // One that sends its head but not the body it announced gets 408.
    let (st, body) = raw_request(
        &env.socket(),
        b"POST /v1/backups HTTP/1.1\r\nhost: x\r\ncontent-length: 100\r\n\r\n{\"a\":",
    );
    assert_eq!(st, 408, "{body}");
    assert!(body.contains("daemon.client_timeout"), "{body}");

    // Twelve connections as nobody: eight are served (then closed idle), four refused.
    let mut flood = Command::new("setpriv")
        .args([
            "--reuid=nobody",
            "--regid=nogroup",
            "--clear-groups",
            "/usr/bin/python3",
            "-c",
            FLOODER,
        ])
        .arg(env.socket())
        .arg("12")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(flood.stdout.take().unwrap()).lines();
    assert_eq!(lines.next().unwrap().unwrap(), "connected");
    // While nobody's connections are held, root is served.
    let v = env.ctl_json(&["status"]);
    assert_eq!(v["version"], env!("CARGO_PKG_VERSION"));
    writeln!(flood.stdin.take().unwrap()).unwrap();
    let result: serde_json::Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
    assert!(flood.wait().unwrap().success());
    assert_eq!(result["refused"], 4, "{result}");
    assert_eq!(result["closed"], 8, "{result}");
    assert!(
        result["last"]
            .as_str()
            .unwrap()
            .contains("too many connections from uid 65534"),
        "{result}"
    );

    // The metrics port: twenty idle connections, sixteen held and closed on time, four refused;
    // afterwards scraping works and counts them.
    let mut tcp = Vec::new();
    for _ in 0..20 {
        let s = std::net::TcpStream::connect(("127.0.0.1", env.metrics_port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        tcp.push(s);
    }
    let (mut refused, mut closed) = (0, 0);
    for mut s in tcp {
        let mut buf = Vec::new();
        s.read_to_end(&mut buf)
            .expect("every metrics connection is answered or closed");
        if buf.starts_with(b"HTTP/1.1 503") {
            refused += 1;
        } else if buf.is_empty() {
            closed += 1;
        }
    }
    assert_eq!((refused, closed), (4, 16));
    let text = wait_for(
        "the timeouts to be counted",
        Duration::from_secs(30),
        || {
            let t = env.metrics();
            (metric(
                &t,
                "hopsdr_connections_dropped_total{listener=\"metrics\",reason=\"timeout\"}",
            ) >= 16.0)
                .then_some(t)
        },
    );
    assert_eq!(
        metric(
            &text,
            "hopsdr_connections_dropped_total{listener=\"api\",reason=\"limit\"}"
        ),
        4.0
    );
    assert_eq!(
        metric(
            &text,
            "hopsdr_connections_dropped_total{listener=\"metrics\",reason=\"limit\"}"
        ),
        4.0
    );
    // The slow head, the slow body and nobody's eight idle connections.
    assert!(
        metric(
            &text,
            "hopsdr_connections_dropped_total{listener=\"api\",reason=\"timeout\"}"
        ) >= 10.0,
        "{text}"
    );
}

/// A client without rights connects and exits; a process in the operator group is made to get
/// its pid; the connection (held by the client's child) asks for a backup. The rights are those
/// the kernel recorded at connect: refused.
#[test]
fn a_reused_pid_does_not_lend_its_groups_to_a_connection() {
    let mut env = Env::new();
    env.daemon_extra = "operator_group = \"operator\"\n".into();
    let _d = env.start();
    let operator_gid = nix::unistd::Group::from_name("operator")
        .unwrap()
        .expect("group operator exists on Debian")
        .gid
        .as_raw();
    // Prints the connecting process's pid, forks, exits; the child keeps the connection, waits
    // for a line, then asks for a backup and prints the status line of the answer.
    const CLIENT: &str = r#"
import os, socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.connect(sys.argv[1])
print(os.getpid(), flush=True)
if os.fork() != 0:
    os._exit(0)
sys.stdin.readline()
s.sendall(b"POST /v1/backups HTTP/1.1\r\nhost: x\r\ncontent-length: 2\r\nconnection: close\r\n\r\n{}")
data = b""
while True:
    b = s.recv(4096)
    if not b:
        break
    data += b
print(data.split(b"\r\n")[0].decode(), flush=True)
print(data.split(b"\r\n\r\n", 1)[1].decode(), flush=True)
"#;
    let mut client = Command::new("setpriv")
        .args([
            "--reuid=nobody",
            "--regid=nogroup",
            "--clear-groups",
            "/usr/bin/python3",
            "-c",
            CLIENT,
        ])
        .arg(env.socket())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(client.stdout.take().unwrap()).lines();
    let pid: i32 = lines.next().unwrap().unwrap().parse().unwrap();
    // (Child::wait would close stdin: keep it for the child that holds the connection.)
    let mut go = client.stdin.take().unwrap();
    assert!(
        client.wait().unwrap().success(),
        "the connecting process exits"
    );
    // Have the kernel hand that pid to a process of nobody in the operator group.
    let mut holder = wait_for(
        "a process with the reused pid",
        Duration::from_secs(60),
        || {
            std::fs::write("/proc/sys/kernel/ns_last_pid", (pid - 1).to_string()).unwrap();
            let c = Command::new("setpriv")
                .args(["--reuid=nobody", "--regid=nogroup"])
                .arg(format!("--groups={operator_gid}"))
                .args(["sleep", "120"])
                .spawn()
                .unwrap();
            if c.id() as i32 == pid {
                Some(c)
            } else {
                let mut c = c;
                let _ = c.kill();
                let _ = c.wait();
                None
            }
        },
    );
    // Once setpriv has run, the pid's process is in the operator group.
    wait_for(
        "the reused pid's process to be in the operator group",
        Duration::from_secs(30),
        || {
            let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
            status
                .lines()
                .any(|l| {
                    l.starts_with("Groups:")
                        && l.split_whitespace().any(|g| g == operator_gid.to_string())
                })
                .then_some(())
        },
    );
    writeln!(go).unwrap();
    let head = lines.next().unwrap().unwrap();
    let body = lines.next().map(|l| l.unwrap()).unwrap_or_default();
    let _ = holder.kill();
    let _ = holder.wait();
    assert!(head.starts_with("HTTP/1.1 403"), "{head} {body}");
    assert!(body.contains("permission_denied"), "{body}");
    assert!(env.ctl_json(&["backups", "list"])["backups"]
        .as_array()
        .unwrap()
        .is_empty());

    // The same user with the operator group at connect time may start one.
    let out = Command::new("setpriv")
        .args(["--reuid=nobody", "--regid=nogroup"])
        .arg(format!("--groups={operator_gid}"))
        .args(["/usr/bin/python3", "-c"])
        .arg(
            "import socket,sys\ns=socket.socket(socket.AF_UNIX)\ns.connect(sys.argv[1])\n\
             s.sendall(b'POST /v1/backups HTTP/1.1\\r\\nhost: x\\r\\ncontent-length: 2\\r\\nconnection: close\\r\\n\\r\\n{}')\n\
             print(s.recv(100).split(b'\\r\\n')[0].decode())",
        )
        .arg(env.socket())
        .output()
        .unwrap();
    let head = String::from_utf8_lossy(&out.stdout);
    assert!(head.starts_with("HTTP/1.1 202"), "{head}");
}

#[test]
fn destructive_requests_need_their_confirmation_in_the_api() {
    let env = Env::new();
    let _d = env.start();
    let id = env.backup_ok();
    assert_eq!(env.ctl(&["backup", "pin", &id]).status.code(), Some(0));
    let post = |path: &str, body: &str| {
        raw_request(
            &env.socket(),
            format!(
                "POST {path} HTTP/1.1\r\nhost: x\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            )
            .as_bytes(),
        )
    };
    for (path, body, expected) in [
        ("/v1/prune", "{}".to_string(), "\"prune\""),
        ("/v1/prune", r#"{"confirm":"yes"}"#.to_string(), "\"prune\""),
        (
            &format!("/v1/backups/{id}/unpin"),
            "".to_string(),
            &format!("{id:?}"),
        ),
        (
            "/v1/restores",
            format!(r#"{{"backup_id":"{id}"}}"#),
            &format!("{id:?}"),
        ),
        (
            "/v1/restores",
            format!(r#"{{"backup_id":"{id}","confirm":"20000101T000000Z"}}"#),
            &format!("{id:?}"),
        ),
    ] {
        let (st, resp) = post(path, &body);
        assert_eq!(st, 400, "{path} {body}: {resp}");
        let v: serde_json::Value = serde_json::from_str(&resp).unwrap();
        assert_eq!(v["error"]["code"], "confirmation_required", "{resp}");
        let msg = v["error"]["message"].as_str().unwrap();
        assert!(
            msg.contains(&format!("{{\"confirm\": {expected}}}"))
                && msg.contains("nothing was changed"),
            "{msg}"
        );
    }
    // Nothing changed: the backup is still pinned, no job ran, the refusals are audited.
    let b = env.ctl_json(&["backups", "show", &id]);
    assert_eq!(b["pinned"], true, "{b}");
    assert!(env.ctl_json(&["status"])["current_job"].is_null());
    let conn = rusqlite::Connection::open(env.catalog()).unwrap();
    let refused: i64 = conn
        .query_row(
            "SELECT count(*) FROM audit WHERE NOT allowed AND detail LIKE '%not confirmed'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(refused, 5);
    // With the confirmation (as hopsdrctl sends it) the unpin is done.
    let (st, resp) = post(
        &format!("/v1/backups/{id}/unpin"),
        &format!(r#"{{"confirm":"{id}"}}"#),
    );
    assert_eq!(st, 200, "{resp}");
    assert_eq!(env.ctl_json(&["backups", "show", &id])["pinned"], false);
}

/// Read-only requests that read the whole repository run at most two at once: a third gets 429
/// at once instead of taking another blocking thread; the two finish once let go.
#[cfg(feature = "testbed")]
#[test]
fn at_most_two_heavy_reads_run_at_once() {
    let env = Env::new();
    {
        let _d = env.start();
        env.backup_ok();
    }
    let _d = env.start_with(&[("HOPSDR_FAILPOINTS", "repo.check.listed=wait")]);
    let request = b"GET /v1/repo/check HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n";
    let held: Vec<_> = (0..2)
        .map(|_| {
            let socket = env.socket();
            std::thread::spawn(move || raw_request(&socket, request))
        })
        .collect();
    // Once both hold their place (each logs reaching the failpoint), a third is turned away.
    wait_for("two checks held", Duration::from_secs(30), || {
        let log = env.log();
        (log.matches("failpoint reached").count() >= 2).then_some(())
    });
    let (st, body) = raw_request(&env.socket(), request);
    assert_eq!(st, 429, "{body}");
    assert!(body.contains("too_many_heavy_reads"), "{body}");
    // The status (light) is still served.
    assert!(env.ctl_json(&["status"])["current_job"].is_null());
    std::fs::write(env.path().join("repo.check.listed.continue"), b"").unwrap();
    for h in held {
        let (st, body) = h.join().unwrap();
        assert_eq!(st, 200, "{body}");
    }
}
