use anyhow::Result;

use super::Global;
use crate::config::Settings;
use crate::lab::Lab;
use crate::lab::status::{status, table};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Machine-readable output
    #[arg(long)]
    json: bool,
}

pub fn run(global: &Global, args: Args) -> Result<i32> {
    let spec = global.spec(Settings::default())?;
    let home = global.home()?;
    let hv = global.connect(&spec)?;
    let vms = status(&Lab::new(&hv, &home, &spec.lab))?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&vms)?);
    } else if vms.is_empty() {
        println!(
            "lab `{}` has no VMs; create some with `vmlab up 2`",
            spec.lab
        );
    } else {
        print!("{}", table(&vms));
    }
    Ok(0)
}
