use anyhow::{Context, Result};

use super::{Global, exit};

#[derive(clap::Args, Debug)]
pub struct Args {
    vm: String,
    /// Only the last N lines
    #[arg(long)]
    lines: Option<usize>,
}

pub fn run(global: &Global, args: Args) -> Result<i32> {
    let place = global.place()?;
    crate::config::check_name("VM", &args.vm)?;
    let path = global.home()?.lab(&place.lab).vm(&args.vm).console();
    let text = std::fs::read_to_string(&path).with_context(|| {
        format!(
            "no console log for `{}` at {}; `vmlab status` lists the lab's VMs",
            args.vm,
            path.display()
        )
    })?;
    let tail = crate::lab::last_lines(&text, args.lines);
    if !tail.is_empty() {
        println!("{tail}");
    }
    Ok(exit::SUCCESS)
}
