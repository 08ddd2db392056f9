use std::path::PathBuf;

use anyhow::Result;

use super::exit;
use crate::bench::reference::References;
use crate::bench::runs;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Where the runs are: DIR/<run-id>/
    #[arg(long, global = true, default_value = "results")]
    results: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Subcommand, Debug)]
enum Command {
    /// A references file from a good run, on stdout (`> references.toml`)
    Reference {
        /// A run id under --results, or a run directory
        run: String,
    },
}

pub fn run(args: Args) -> Result<i32> {
    match args.command {
        Command::Reference { run } => {
            let (_, recorded, rows) = runs::open(&args.results, &run)?;
            print!(
                "{}",
                References::from_run(&recorded, &rows).to_toml(&recorded.run_id)?
            );
        }
    }
    Ok(exit::SUCCESS)
}
