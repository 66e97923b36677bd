//! The command line of `hopsdrd` (in the library so that man pages and shell completions are
//! generated from the same definition).

use std::path::PathBuf;

use clap::Parser;

/// The hopsdr daemon: scheduled, verified backups of a Hopsworks cluster.
#[derive(Debug, Parser)]
#[command(name = "hopsdrd", version, about)]
pub struct Args {
    /// Config file.
    #[arg(long, value_name = "PATH", default_value = crate::config::DEFAULT_PATH)]
    pub config: PathBuf,
    /// Validate the config, print every problem and exit (0 valid, 2 invalid).
    #[arg(long)]
    pub check_config: bool,
    /// Rebuild the catalog's backups from the repository (on a fresh head node, or when the
    /// catalog was lost), print what was found and exit. Run it with hopsdrd stopped.
    #[arg(long)]
    pub rebuild_catalog: bool,
    /// Delete the writer lease of an S3 repository left by a hopsdrd whose host will not come
    /// back (a lease expires by itself after 5 minutes; one of this host's dead processes is
    /// taken over at start), print what was removed and exit.
    #[arg(long)]
    pub break_lock: bool,
}
