use std::path::PathBuf;

use anyhow::Result;

use super::exit;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// A run directory, e.g. results/20261122-061500-monitor
    run_dir: PathBuf,
    /// Where the figures go [default: RUN_DIR/plots]
    #[arg(long)]
    out: Option<PathBuf>,
}

pub fn run(args: Args) -> Result<i32> {
    let out = args.out.unwrap_or_else(|| args.run_dir.join("plots"));
    let files = crate::plot::plot(&args.run_dir, &out)?;
    for f in &files {
        println!("{}", f.display());
    }
    Ok(exit::SUCCESS)
}
