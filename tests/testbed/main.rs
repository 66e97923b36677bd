//! `hopsdr-testbed`: a simulated Hopsworks cluster (RonDB tools, HopsFS volumes, hdfs, ePipe,
//! Kafka) for tests and the demo. A multi-call binary: called as `ndb_mgm`, `ndb_restore`,
//! `ndb_show_tables`, `ndb_drop_table`, `hdfs`,
//! `reindex-epipe.sh` or `kafka-restore.sh` (symlinks in `<dir>/bin/`) it acts as that tool on the
//! cluster in `<dir>`; otherwise it runs its own subcommands (see `cli.rs`).

mod api;
mod backupfmt;
mod cli;
mod cloud;
mod droptable;
mod fixtures;
mod hdfs;
mod hopsworks;
mod mgm;
mod model;
mod opensearch;
mod restore;
mod showtables;
mod state;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let argv0 = args.first().cloned().unwrap_or_default();
    let name = std::path::Path::new(&argv0)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let rest = args.get(1..).unwrap_or(&[]).to_vec();
    // Every tool's command line is appended to `<dir>/argv.log` (a line of JSON): what `ps`
    // would have shown, for the tests that check a secret never reaches argv.
    let tool = |f: fn(&std::path::Path, &[String]) -> anyhow::Result<i32>| {
        state::find_dir(&argv0).and_then(|d| {
            use std::io::Write;
            // One write per line (O_APPEND): tools running at once never mix their lines.
            let line = serde_json::to_string(&args).unwrap_or_default() + "\n";
            if let Ok(mut log) = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(d.join("argv.log"))
            {
                let _ = log.write_all(line.as_bytes());
            }
            f(&d, &rest)
        })
    };
    let r = match name.as_str() {
        "ndb_mgm" => tool(mgm::main),
        "ndb_restore" => tool(restore::main),
        "ndb_show_tables" => tool(showtables::main),
        "ndb_drop_table" => tool(droptable::main),
        "hdfs" => tool(hdfs::main),
        "reindex-epipe.sh" => tool(|d, _| hdfs::reindex_epipe(d)),
        "kafka-restore.sh" => tool(|d, _| hdfs::kafka_restore(d)),
        _ => cli::main(),
    };
    match r {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("{name}: error: {e:#}");
            std::process::exit(if name == "ndb_mgm" { 255 } else { 1 });
        }
    }
}
