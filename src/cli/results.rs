use std::path::PathBuf;

use anyhow::Result;

use super::exit;
use crate::bench::compare::compare;
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
    /// Every benchmark run: benchmark, cells, VMs, start, host, gate
    List,
    /// What a run ran where, its summary and verdicts
    Show {
        /// A run id under --results, or a run directory
        run: String,
    },
    /// Medians of two runs per cell and metric, the change, and whether it is beyond their noise
    Compare {
        /// The earlier run (id or directory)
        a: String,
        /// The later run
        b: String,
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// A references file from a good run, on stdout (`> references.toml`)
    Reference {
        /// A run id under --results, or a run directory
        run: String,
    },
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
enum Format {
    Table,
    Json,
    Markdown,
}

pub fn run(args: Args) -> Result<i32> {
    let results = &args.results;
    match args.command {
        Command::List => print!("{}", runs::list(results)?),
        Command::Show { run } => {
            let (_, recorded, rows) = runs::open(results, &run)?;
            print!("{}", runs::show(&recorded, &rows));
        }
        Command::Compare { a, b, format } => {
            let (_, run_a, rows_a) = runs::open(results, &a)?;
            let (_, run_b, rows_b) = runs::open(results, &b)?;
            let comparison = compare((&run_a, &rows_a), (&run_b, &rows_b))?;
            eprint!("{}", comparison.warning_lines());
            match format {
                Format::Table => print!("{}", comparison.table()),
                Format::Json => println!("{}", serde_json::to_string_pretty(&comparison)?),
                Format::Markdown => print!("{}", comparison.markdown()),
            }
        }
        Command::Reference { run } => {
            let (_, recorded, rows) = runs::open(results, &run)?;
            print!(
                "{}",
                References::from_run(&recorded, &rows).to_toml(&recorded.run_id)?
            );
        }
    }
    Ok(exit::SUCCESS)
}
