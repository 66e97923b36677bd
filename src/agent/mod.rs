//! `hopsdr agent`: the process hopsdrd starts on each RonDB data node and HopsFS datanode so
//! that the node's own bytes can be handled where they are (issue "node agents").
//!
//! It is the same release as hopsdrd (one package; the two refuse each other's other versions),
//! started over the existing OpenSSH transport (or as a child on the head node itself) with
//! `agent --serve`, and speaks the protocol of [`proto`] on its standard input and output.
//! What it may touch comes from its own command line (`--role`, `--root`, `--backup-dir`), which
//! an operator pins with an ssh forced command; the head's request cannot widen it. [`serve`]
//! is the session; [`secrets`] the one frame that carries credentials and keys. Today the agent
//! greets, reports its version, roles and roots and how each root looks from the node, and tries
//! the repository's bucket and keys it was given (`hopsdrctl agents check`); moving bytes comes
//! next.

pub mod limits;
pub mod packing;
pub mod probe;
pub mod proto;
pub mod restore;
pub mod secrets;
pub mod serve;
pub mod upload;
pub mod volume;

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use self::proto::Role;
use self::serve::{Allowed, Identity};

/// `hopsdr`: the node-side program of hopsdr.
#[derive(Debug, Parser)]
#[command(
    name = "hopsdr",
    version,
    about = "hopsdr on a cluster node (started by hopsdrd)"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve one session of hopsdrd's agent protocol on stdin/stdout.
    Agent(AgentArgs),
}

/// `hopsdr agent`.
#[derive(Debug, Args)]
pub struct AgentArgs {
    /// Serve the protocol on stdin/stdout (the only mode; stdout is then not for people).
    #[arg(long)]
    pub serve: bool,
    /// A role on this node (repeatable): hopsfs (a datanode) or rondb (a data node).
    #[arg(long = "role", value_enum)]
    pub roles: Vec<RoleArg>,
    /// A HopsFS volume the agent may read and write (repeatable; role hopsfs).
    #[arg(long = "root")]
    pub roots: Vec<PathBuf>,
    /// The RonDB data node's BackupDataDir (role rondb).
    #[arg(long)]
    pub backup_dir: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum RoleArg {
    Hopsfs,
    Rondb,
}

impl AgentArgs {
    /// What the command line allows, checked: absolute paths without `..`, each role with the
    /// paths it needs and none it does not.
    pub fn allowed(&self) -> Result<Allowed, String> {
        if !self.serve {
            return Err("only `hopsdr agent --serve` is supported (hopsdrd starts it)".into());
        }
        let mut roles: Vec<Role> = self
            .roles
            .iter()
            .map(|r| match r {
                RoleArg::Hopsfs => Role::Hopsfs,
                RoleArg::Rondb => Role::Rondb,
            })
            .collect();
        roles.sort();
        roles.dedup();
        if roles.is_empty() {
            return Err("give at least one --role (hopsfs or rondb)".into());
        }
        let check = |p: &PathBuf, what: &str| -> Result<(), String> {
            if !p.is_absolute() || p.components().any(|c| c == std::path::Component::ParentDir) {
                return Err(format!(
                    "{what} {} must be an absolute path without \"..\"",
                    p.display()
                ));
            }
            Ok(())
        };
        for r in &self.roots {
            check(r, "--root")?;
        }
        if let Some(d) = &self.backup_dir {
            check(d, "--backup-dir")?;
        }
        let hopsfs = roles.contains(&Role::Hopsfs);
        let rondb = roles.contains(&Role::Rondb);
        if hopsfs && self.roots.is_empty() {
            return Err("--role hopsfs needs the datanode's volumes, each as --root".into());
        }
        if !hopsfs && !self.roots.is_empty() {
            return Err("--root is for --role hopsfs".into());
        }
        if rondb && self.backup_dir.is_none() {
            return Err("--role rondb needs --backup-dir (the data node's BackupDataDir)".into());
        }
        if !rondb && self.backup_dir.is_some() {
            return Err("--backup-dir is for --role rondb".into());
        }
        Ok(Allowed {
            roles,
            roots: self.roots.clone(),
            backup_dir: self.backup_dir.clone(),
        })
    }
}

/// Runs `hopsdr` with its parsed command line; returns the exit status.
pub fn run(cli: Cli) -> i32 {
    let Command::Agent(args) = cli.command;
    let allowed = match args.allowed() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("hopsdr agent: {e}");
            return 2;
        }
    };
    harden();
    let me = Identity::current();
    let stdin = std::io::stdin();
    let stdout = std::io::stdout();
    // Unbuffered: a reader's buffer would keep the secrets frame's bytes after it is wiped
    // (frames are read with one call for the length and one for the body).
    let mut input = stdin.lock();
    let mut output = std::io::BufWriter::new(stdout.lock());
    match serve::serve(&allowed, &me, &mut input, &mut output) {
        Ok(_) => 0,
        Err(e) => {
            eprintln!("hopsdr agent on {}: {e}", me.host);
            e.exit_code()
        }
    }
}

/// No core dumps and no ptrace by other users (secrets will pass through this process), and no
/// privilege gained through exec.
fn harden() {
    // SAFETY: prctl and setrlimit with constant arguments change only this process's flags.
    unsafe {
        libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0);
        libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
        let zero = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        libc::setrlimit(libc::RLIMIT_CORE, &zero);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Result<Allowed, String> {
        let mut v = vec!["hopsdr", "agent"];
        v.extend_from_slice(a);
        let Command::Agent(a) = Cli::try_parse_from(v).unwrap().command;
        a.allowed()
    }

    #[test]
    fn the_command_line_says_what_the_agent_may_touch() {
        let a = args(&[
            "--serve",
            "--role",
            "rondb",
            "--role",
            "hopsfs",
            "--root",
            "/d/1",
            "--root",
            "/d/2",
            "--backup-dir",
            "/srv/ndb",
        ])
        .unwrap();
        assert_eq!(a.roles, vec![Role::Hopsfs, Role::Rondb]);
        assert_eq!(a.roots.len(), 2);
        for (bad, says) in [
            (
                &["--role", "hopsfs", "--root", "/d"][..],
                "only `hopsdr agent --serve`",
            ),
            (&["--serve"][..], "at least one --role"),
            (&["--serve", "--role", "hopsfs"][..], "each as --root"),
            (
                &["--serve", "--role", "hopsfs", "--root", "d/1"][..],
                "absolute",
            ),
            (
                &["--serve", "--role", "hopsfs", "--root", "/d/../etc"][..],
                "absolute",
            ),
            (&["--serve", "--role", "rondb"][..], "needs --backup-dir"),
            (
                &[
                    "--serve",
                    "--role",
                    "rondb",
                    "--backup-dir",
                    "/b",
                    "--root",
                    "/d",
                ][..],
                "--root is for",
            ),
            (
                &[
                    "--serve",
                    "--role",
                    "hopsfs",
                    "--root",
                    "/d",
                    "--backup-dir",
                    "/b",
                ][..],
                "--backup-dir is for",
            ),
        ] {
            let e = args(bad).unwrap_err();
            assert!(e.contains(says), "{bad:?}: {e}");
        }
    }
}
