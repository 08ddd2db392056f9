use anyhow::Result;
use clap::CommandFactory;

use super::{Cli, exit};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// e.g. `vmlab completions bash > /etc/bash_completion.d/vmlab`
    shell: clap_complete::Shell,
}

pub fn run(args: Args) -> Result<i32> {
    clap_complete::generate(
        args.shell,
        &mut Cli::command(),
        "vmlab",
        &mut std::io::stdout(),
    );
    Ok(exit::SUCCESS)
}
