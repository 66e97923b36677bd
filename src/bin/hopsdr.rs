//! `hopsdr`: the node-side program (`hopsdr agent --serve`, started by hopsdrd); everything is in
//! `hopsdr::agent`.

use clap::Parser;

fn main() {
    let cli = hopsdr::agent::Cli::parse();
    std::process::exit(hopsdr::agent::run(cli));
}
