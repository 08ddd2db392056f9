use anyhow::Result;

use super::{Global, connect, exit, notes};
use crate::lab::Lab;
use crate::lab::status::{status, table};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Machine-readable output (a document with a `schema` version)
    #[arg(long)]
    json: bool,
}

pub fn run(global: &Global, args: Args) -> Result<i32> {
    let place = global.place()?;
    let home = global.home()?;
    let hv = connect(&place.connect)?;
    let lab = status(&Lab::new(&hv, &home, &place.lab))?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&lab)?);
        return Ok(exit::SUCCESS);
    }
    notes(&lab.notes);
    if lab.vms.is_empty() {
        println!(
            "lab `{}` has no VMs; create some with `vmlab up 2`",
            place.lab
        );
    } else {
        print!("{}", table(&lab.vms));
    }
    Ok(exit::SUCCESS)
}
