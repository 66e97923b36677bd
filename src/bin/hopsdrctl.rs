//! `hopsdrctl`: a thin main; everything is in `hopsdr::ctl`.

use clap::Parser;

fn main() {
    let cli = hopsdr::ctl::Cli::parse();
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("hopsdrctl: failed to start: {e}");
            std::process::exit(1);
        }
    };
    let code = rt.block_on(hopsdr::ctl::run(cli));
    std::process::exit(code as i32);
}
