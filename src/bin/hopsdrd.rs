//! `hopsdrd`: a thin main; the daemon is in `hopsdr::daemon`.

use clap::Parser;

/// `--rebuild-catalog`: the catalog at `[daemon] catalog` gets the repository's backups.
fn rebuild_catalog(settings: &hopsdr::config::Settings) -> anyhow::Result<String> {
    use anyhow::Context;
    let (repo, _lock) = hopsdr::daemon::open_repository(
        &settings.repository,
        &hopsdr::daemon::cache_dir(&settings.daemon),
    )
    .context("opening the repository")?;
    let mut cat = hopsdr::catalog::Catalog::open(&settings.daemon.catalog)?;
    let r = hopsdr::daemon::jobs::run_offline(
        &mut cat,
        hopsdr::catalog::JobKind::Rebuild,
        "hopsdrd --rebuild-catalog",
        |cat, job| hopsdr::rebuild::rebuild(&repo, cat, job),
    )??;
    let mut text = format!(
        "catalog {}: {} backups from {} manifests, {} failed or interrupted from the catalog copy{}\n",
        settings.daemon.catalog.display(),
        r.backups + r.without_manifest,
        r.backups,
        r.without_manifest,
        r.facts_from
            .map(|b| format!(" of backup {b}"))
            .unwrap_or_default()
    );
    for u in &r.unreadable {
        text.push_str(&format!("left out: {u}\n"));
    }
    Ok(text)
}

fn main() {
    let args = hopsdr::daemon::args::Args::parse();
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
    if args.break_lock {
        std::process::exit(
            match hopsdr::daemon::break_repository_lock(&settings.repository) {
                Ok(text) => {
                    println!("{text}");
                    0
                }
                Err(e) => {
                    eprintln!("hopsdrd: {e}");
                    1
                }
            },
        );
    }
    if args.rebuild_catalog {
        std::process::exit(match rebuild_catalog(&settings) {
            Ok(text) => {
                print!("{text}");
                0
            }
            Err(e) => {
                eprintln!("hopsdrd: catalog rebuild failed: {e:#}");
                1
            }
        });
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
