//! `ndb_mgm -c <connectstring> -e "<command>"`.

use crate::backupfmt::{seal, MAGIC};
use crate::fixtures::{self as fx, find, line, v};
use crate::state::Cluster;
use anyhow::Result;
use std::path::{Path, PathBuf};

/// Connection check shared by the NDB API tools: Some(connectstring) that failed, or None.
pub fn connect_fails(cl: &Cluster, connectstring: Option<&str>) -> Option<String> {
    let cs = connectstring.unwrap_or("localhost:1186").to_string();
    let hostport = cs.rsplit(',').next().unwrap_or("").trim();
    let port = hostport
        .rsplit_once(':')
        .and_then(|(_, p)| p.parse::<u16>().ok())
        .unwrap_or(1186);
    (cl.rt.mgm_down || port != cl.cfg.mgm_port).then_some(cs)
}

pub fn main(dir: &Path, args: &[String]) -> Result<i32> {
    let mut cs: Option<String> = None;
    let mut cmd: Option<String> = None;
    let mut i = 0;
    while i < args.len() {
        let a = &args[i];
        let take = |i: &mut usize| -> Option<String> {
            *i += 1;
            args.get(*i).cloned()
        };
        if a == "-c"
            || a == "--ndb-connectstring"
            || a == "--connect-string"
            || a == "--ndb_connectstring"
        {
            cs = take(&mut i);
        } else if let Some(x) = a
            .strip_prefix("--ndb-connectstring=")
            .or_else(|| a.strip_prefix("--connect-string="))
            .or_else(|| a.strip_prefix("--ndb_connectstring="))
        {
            cs = Some(x.to_string());
        } else if a == "-e" || a == "--execute" {
            cmd = take(&mut i);
        } else if let Some(x) = a.strip_prefix("--execute=") {
            cmd = Some(x.to_string());
        } else if a == "-t" || a == "--try-reconnect" {
            take(&mut i);
        } else if a.starts_with("--try-reconnect=") {
        } else if let Some(x) = a.strip_prefix("-c").filter(|x| !x.is_empty()) {
            cs = Some(x.to_string());
        } else if let Some(x) = a.strip_prefix("-e").filter(|x| !x.is_empty()) {
            cmd = Some(x.to_string());
        } else if a.starts_with('-') {
            eprintln!("ndb_mgm: [ERROR] unknown option '{a}'.");
            return Ok(255);
        } else {
            cs = Some(a.clone());
        }
        i += 1;
    }
    let mut cl = Cluster::open(dir)?;
    let fault = cl.count_call("ndb_mgm")?;
    let Some(cmd) = cmd else {
        eprintln!("ndb_mgm: the test-bed supports only -e <command>");
        return Ok(255);
    };
    if let Some(bad) = connect_fails(&cl, cs.as_deref())
        .or_else(|| (fault.as_deref() == Some("fail")).then(|| cs.clone().unwrap_or_default()))
    {
        let t = fx::CONNECT_FAILED;
        let l0 = line(t, 0);
        let prefix = &l0[..l0.find("nodeid=0,").map(|i| i + 9).unwrap_or(0)];
        println!("{prefix}{}", bad.rsplit(',').next().unwrap_or(""));
        println!("{}", line(t, 1));
        return Ok(255);
    }
    let c = &cl.cfg;
    println!("{}", v().d(&c.mgm_ip).n(c.mgm_port).fill(line(fx::SHOW, 0)));
    let words: Vec<String> = cmd.split_whitespace().map(str::to_uppercase).collect();
    let w: Vec<&str> = words.iter().map(String::as_str).collect();
    match w.as_slice() {
        ["SHOW"] => {
            show(&cl);
            Ok(0)
        }
        ["ALL", "STATUS"] => {
            all_status(&cl);
            Ok(0)
        }
        ["ALL", "REPORT", "BACKUPSTATUS"] | ["ALL", "REPORT", "BACKUP"] => {
            report(&cl);
            Ok(0)
        }
        ["ABORT", "BACKUP", id] => {
            let ok = id
                .parse::<u64>()
                .ok()
                .filter(|id| cl.rt.running_backup == Some(*id));
            if ok.is_some() {
                cl.rt.running_backup = None;
                cl.save()?;
                println!("{}", v().n(id).fill(line(fx::ABORT_OK, 1)));
                Ok(0)
            } else {
                println!("{}", v().n(id).fill(line(fx::ABORT_FAILED, 1)));
                Ok(255)
            }
        }
        ["START", "BACKUP", rest @ ..] => start_backup(&mut cl, rest, &cmd, fault.as_deref()),
        _ => {
            println!("Invalid command: {cmd}");
            println!("Type HELP for help.");
            println!();
            Ok(255)
        }
    }
}

fn show(cl: &Cluster) {
    let c = &cl.cfg;
    let t = fx::SHOW;
    let lines: Vec<&str> = t.lines().collect();
    println!("{}", lines[1]);
    println!("{}", lines[2]);
    println!("{}", v().n(c.data_nodes).fill(lines[3]));
    let master = (1..=c.data_nodes).find(|n| !cl.rt.ndb_down.contains(n));
    for n in 1..=c.data_nodes {
        let ip = c.data_node_ip(n);
        if cl.rt.ndb_down.contains(&n) {
            let tpl = find(fx::SHOW_NOT_CONNECTED, |l| {
                l.contains("not connected, accepting connect from 1")
            });
            println!("{}", v().n(n).d(&ip).fill(tpl));
        } else {
            let tpl = if Some(n) == master {
                lines[4]
            } else {
                lines[5]
            };
            println!("{}", v().n(n).d(&ip).d(&c.version).n((n - 1) / 2).fill(tpl));
        }
    }
    println!();
    println!("{}", v().n(1).fill(lines[7]));
    println!(
        "{}",
        v().n(c.mgm_node_id)
            .d(&c.mgm_ip)
            .d(&c.version)
            .fill(lines[8])
    );
    println!();
    println!("{}", v().n(3).fill(lines[10]));
    println!("{}", v().n(67).d(&c.mgm_ip).d(&c.version).fill(lines[11]));
    println!("{}", v().n(68).fill(lines[12]));
    println!("{}", v().n(69).fill(lines[13]));
    println!();
}

fn all_status(cl: &Cluster) {
    let c = &cl.cfg;
    for n in 1..=c.data_nodes {
        if cl.rt.ndb_down.contains(&n) {
            println!("{}", v().n(n).fill(line(fx::ALL_STATUS_NOT_CONNECTED, 2)));
        } else {
            println!("{}", v().n(n).d(&c.version).fill(line(fx::ALL_STATUS, 1)));
        }
    }
    println!();
}

fn report(cl: &Cluster) {
    let c = &cl.cfg;
    for n in 1..=c.data_nodes {
        match cl.rt.running_backup {
            Some(id) => {
                println!(
                    "{}",
                    v().n(n)
                        .n(id)
                        .n(c.mgm_node_id)
                        .fill(line(fx::REPORT_RUNNING, 1))
                );
                println!("{}", v().n(0).n(0).fill(line(fx::REPORT_RUNNING, 2)));
                println!("{}", v().n(0).n(0).fill(line(fx::REPORT_RUNNING, 3)));
            }
            None => println!("{}", v().n(n).fill(line(fx::REPORT_IDLE, 1))),
        }
    }
}

fn backup_dir(cl: &Cluster, node: u32, id: u64) -> PathBuf {
    cl.backup_data_dir(node)
        .join("BACKUP")
        .join(format!("BACKUP-{id}"))
}

fn start_backup(cl: &mut Cluster, rest: &[&str], cmd: &str, fault: Option<&str>) -> Result<i32> {
    let mut rest = rest;
    let mut id = None;
    if let Some(first) = rest.first() {
        if first.chars().all(|c| c.is_ascii_digit()) {
            match first.parse::<u64>() {
                Ok(x) if (1..=4_294_967_294).contains(&x) => id = Some(x),
                _ => {
                    println!("Invalid command: {}", cmd.trim());
                    println!("{}", line(fx::BACKUP_OUT_OF_RANGE, 2));
                    return Ok(255);
                }
            }
            rest = &rest[1..];
        }
    }
    let mut wait = "COMPLETED";
    let mut i = 0;
    while i < rest.len() {
        match rest[i] {
            "SNAPSHOTSTART" | "SNAPSHOTEND" => {}
            "NOWAIT" => wait = "NOWAIT",
            "WAIT" if matches!(rest.get(i + 1), Some(&"STARTED") | Some(&"COMPLETED")) => {
                wait = if rest[i + 1] == "STARTED" {
                    "STARTED"
                } else {
                    "COMPLETED"
                };
                i += 1;
            }
            x if x == "ENCRYPT" || x.starts_with("PASSWORD=") => {}
            _ => {
                println!("Invalid command: {}", cmd.trim());
                println!("Type HELP for help.");
                println!();
                return Ok(255);
            }
        }
        i += 1;
    }
    let id = id.unwrap_or(cl.rt.last_backup_id + 1);
    let c = cl.cfg.clone();
    let mgm = c.mgm_node_id;
    let waiting = |what: &str| {
        if what == "STARTED" {
            println!("{}", line(fx::BACKUP_STARTED, 1));
        } else if what == "COMPLETED" {
            println!("{}", line(fx::BACKUP_COMPLETED, 1));
        }
    };
    waiting(wait);
    if (1..=c.data_nodes).any(|n| backup_dir(cl, n, id).exists()) {
        for l in fx::BACKUP_EXISTS.lines().skip(2) {
            println!("{l}");
        }
        return Ok(255);
    }
    let Some(master) = (1..=c.data_nodes).find(|n| !cl.rt.ndb_down.contains(n)) else {
        println!(
            "{}",
            v().n(1)
                .n(mgm)
                .n(1308)
                .fill(line(fx::BACKUP_FAILED_NODE, 2))
        );
        return Ok(255);
    };
    if !cl.rt.ndb_down.is_empty() {
        println!(
            "{}",
            v().n(master)
                .n(mgm)
                .n(1308)
                .fill(line(fx::BACKUP_FAILED_NODE, 2))
        );
        return Ok(255);
    }
    let started = v()
        .n(master)
        .n(id)
        .n(mgm)
        .fill(line(fx::BACKUP_COMPLETED, 2));
    if wait != "NOWAIT" {
        println!("{started}");
    }
    cl.rt.gcp += 1;
    let start_gcp = cl.rt.gcp;
    let stop_gcp = start_gcp + 3;
    cl.rt.gcp = stop_gcp;
    cl.rt.last_backup_id = cl.rt.last_backup_id.max(id);
    cl.rt.running_backup = Some(id);
    cl.save()?;
    let db = cl.db()?;
    let mut records = 0u64;
    let mut bytes = 0u64;
    let aborted = |code: u32| {
        println!(
            "{}",
            v().n(master)
                .n(id)
                .n(mgm)
                .n(code)
                .fill(line(fx::BACKUP_ABORTED, 3))
        );
    };
    for node in 1..=c.data_nodes {
        let parts = c.multi_part.max(1);
        let mut rows: Vec<Vec<String>> = vec![Vec::new(); parts as usize];
        let mut st = db.prepare(
            "SELECT db, tbl, pk, val FROM ndb_rows WHERE node = ?1 ORDER BY db, tbl, pk",
        )?;
        let mut q = st.query([node])?;
        while let Some(r) = q.next()? {
            let pk: i64 = r.get(2)?;
            let l = format!(
                "{}\t{}\t{}\t{}\n",
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                pk,
                r.get::<_, String>(3)?
            );
            rows[(pk as u64 % parts as u64) as usize].push(l);
        }
        let mut tables: Vec<(String, String)> = Vec::new();
        let mut st = db.prepare("SELECT db, tbl FROM ndb_tables ORDER BY db, tbl")?;
        for r in st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))? {
            tables.push(r?);
        }
        let mut indexes: Vec<(String, String, String)> = Vec::new();
        let mut st = db.prepare("SELECT db, tbl, name FROM ndb_indexes ORDER BY db, tbl, name")?;
        for r in st.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))? {
            indexes.push(r?);
        }
        let base = backup_dir(cl, node, id);
        for (pi, prow) in rows.iter().enumerate() {
            let p = pi as u32 + 1;
            let dir = if c.multi_part == 0 {
                base.clone()
            } else {
                base.join(format!("BACKUP-{id}-PART-{p}-OF-{parts}"))
            };
            std::fs::create_dir_all(&dir)?;
            let mut ctl = format!("{MAGIC}\nctl {id} {node} {p} {parts} {stop_gcp}\n");
            for (d, t) in &tables {
                ctl.push_str(&format!("table {d} {t}\n"));
            }
            for (d, t, n) in &indexes {
                ctl.push_str(&format!("index {d} {t} {n}\n"));
            }
            std::fs::write(
                dir.join(format!("BACKUP-{id}.{node}.ctl")),
                seal(ctl, c.compressed)?,
            )?;
            let mut data = format!("{MAGIC}\ndata {id} {node} {p}\n");
            data.reserve(prow.iter().map(String::len).sum());
            for l in prow {
                data.push_str(l);
            }
            let data = seal(data, c.compressed)?;
            let data_path = dir.join(format!("BACKUP-{id}-0.{node}.Data"));
            let injected_abort = fault == Some("abort") && node == c.data_nodes;
            if cl.rt.disk_full.contains(&node) || injected_abort {
                std::fs::write(&data_path, &data[..data.len() / 2])?;
                cl.rt.running_backup = None;
                cl.save()?;
                aborted(if injected_abort { 1326 } else { 2810 });
                return Ok(255);
            }
            if fault == Some("hang-mid") {
                std::fs::write(&data_path, &data[..data.len() / 2])?;
                cl.unlock();
                loop {
                    std::thread::sleep(std::time::Duration::from_secs(3600));
                }
            }
            std::fs::write(&data_path, &data)?;
            let log = format!("{MAGIC}\nlog {id} {node} {p}\n");
            std::fs::write(
                dir.join(format!("BACKUP-{id}.{node}.log")),
                seal(log, c.compressed)?,
            )?;
            records += prow.len() as u64;
            bytes += data.len() as u64;
        }
    }
    cl.rt.running_backup = None;
    cl.save()?;
    if wait == "COMPLETED" {
        let t = fx::BACKUP_COMPLETED;
        println!("{}", v().n(master).n(id).n(mgm).fill(line(t, 3)));
        println!("{}", v().n(start_gcp).n(stop_gcp).fill(line(t, 4)));
        println!("{}", v().n(records).n(0).fill(line(t, 5)));
        println!("{}", v().n(bytes as u32).n(0).fill(line(t, 6)));
    }
    Ok(0)
}
