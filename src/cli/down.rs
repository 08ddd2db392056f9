use std::time::Instant;

use anyhow::Result;

use super::Global;
use crate::config::Settings;
use crate::lab::Lab;
use crate::lab::down::down;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// VMs to remove [default: all of the lab's]
    vms: Vec<String>,
}

pub fn run(global: &Global, args: Args) -> Result<i32> {
    let spec = global.spec(Settings::default())?;
    let home = global.home()?;
    let hv = global.connect(&spec)?;
    let started = Instant::now();
    let removed = down(&Lab::new(&hv, &home, &spec.lab), &args.vms)?;
    if removed.is_empty() {
        println!("lab `{}` has no VMs", spec.lab);
    } else {
        println!(
            "removed {} in {:.1} s",
            removed.join(", "),
            started.elapsed().as_secs_f64()
        );
    }
    Ok(0)
}
