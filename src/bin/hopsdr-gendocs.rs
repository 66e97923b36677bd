//! `hopsdr-gendocs DIR`: writes the man pages (`hopsdrd.8`, `hopsdrctl.8`, `hopsdr.8`) and the
//! shell completions (bash, zsh, fish) of the programs into DIR, from their clap definitions, for the
//! packages (scripts/package). Built only with the `gendocs` feature; never packaged.

use std::path::PathBuf;

use anyhow::Context;
use clap::CommandFactory;
use clap_complete::Shell;

fn main() -> anyhow::Result<()> {
    let dir = PathBuf::from(
        std::env::args_os()
            .nth(1)
            .context("usage: hopsdr-gendocs DIR")?,
    );
    std::fs::create_dir_all(dir.join("man"))?;
    std::fs::create_dir_all(dir.join("completions"))?;
    let commands = [
        hopsdr::daemon::args::Args::command(),
        hopsdr::ctl::Cli::command(),
        hopsdr::agent::Cli::command(),
    ];
    for cmd in commands {
        let name = cmd.get_name().to_string();
        let man = clap_mangen::Man::new(cmd.clone()).section("8");
        let mut page = Vec::new();
        man.render(&mut page)?;
        std::fs::write(dir.join("man").join(format!("{name}.8")), page)?;
        for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
            let mut cmd = cmd.clone();
            clap_complete::generate_to(shell, &mut cmd, &name, dir.join("completions"))
                .with_context(|| format!("{shell} completion of {name}"))?;
        }
    }
    Ok(())
}
