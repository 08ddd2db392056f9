use std::time::Duration;

use anyhow::Result;

use super::{Global, connect, exit};
use crate::guest::ssh::Guest;
use crate::lab::Lab;
use crate::lab::inventory::{On, select};
use crate::workload::run::stop_detached;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The workload started with `vmlab run --detach`
    workload: String,
    /// VMs: `all` or names separated by commas
    #[arg(long, default_value = "all")]
    on: On,
}

pub fn run(global: &Global, args: Args) -> Result<i32> {
    crate::config::check_name("workload", &args.workload)?;
    let place = global.place()?;
    let home = global.home()?;
    let hv = connect(&place.connect)?;
    let lab = Lab::new(&hv, &home, &place.lab);
    let mut code = exit::SUCCESS;
    for vm in select(&lab, &args.on)? {
        let stopped = Guest::connect(&lab.ssh_target(&vm), Duration::from_secs(10))
            .and_then(|guest| stop_detached(&guest, &args.workload));
        match stopped {
            Ok(n) => println!("{}: stopped {n} run(s) of `{}`", vm.name, args.workload),
            Err(e) => {
                eprintln!("error: {}: {e:#}", vm.name);
                code = exit::VMLAB_FAILED;
            }
        }
    }
    Ok(code)
}
