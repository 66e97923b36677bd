//! `hopsdrd`: a thin main; the daemon is in `hopsdr::daemon`.

use std::path::PathBuf;

use clap::Parser;

/// The hopsdr daemon: scheduled, verified backups of a Hopsworks cluster.
#[derive(Debug, Parser)]
#[command(name = "hopsdrd", version, about)]
struct Args {
    /// Config file.
    #[arg(long, value_name = "PATH", default_value = hopsdr::config::DEFAULT_PATH)]
    config: PathBuf,
    /// Validate the config, print every problem and exit (0 valid, 2 invalid).
    #[arg(long)]
    check_config: bool,
}

fn main() {
    let args = Args::parse();
    let settings = match hopsdr::config::load(&args.config) {
        Ok(s) => s,
        Err(errors) => {
            eprintln!("{errors}");
            std::process::exit(2);
        }
    };
    if args.check_config {
        std::process::exit(0);
    }
    hopsdr::logging::init(&settings.daemon.log_level);
    hopsdr::logging::install_panic_hook();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(8)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!("failed to start the runtime: {e}");
            std::process::exit(1);
        }
    };
    if let Err(e) = rt.block_on(hopsdr::daemon::run(settings, args.config)) {
        tracing::error!("hopsdrd: {e}");
        eprintln!("hopsdrd: {e}");
        std::process::exit(1);
    }
}
