use std::time::Instant;

use anyhow::Result;

use super::{Global, connect, exit, notes};
use crate::lab::Lab;
use crate::lab::down::down;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// VMs to remove [default: all of the lab's]
    vms: Vec<String>,
}

pub fn run(global: &Global, args: Args) -> Result<i32> {
    let place = global.place()?;
    let home = global.home()?;
    let hv = connect(&place.connect)?;
    let started = Instant::now();
    let report = down(&Lab::new(&hv, &home, &place.lab), &args.vms)?;
    notes(&report.notes);
    if report.removed.is_empty() {
        println!("lab `{}` has no VMs", place.lab);
    } else {
        println!(
            "removed {} in {:.1} s",
            report.removed.join(", "),
            started.elapsed().as_secs_f64()
        );
    }
    Ok(exit::SUCCESS)
}
