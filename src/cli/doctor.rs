use anyhow::Result;

use super::Global;
use crate::config::{Accel, Settings};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Acceleration to check for
    #[arg(long, value_enum)]
    accel: Option<Accel>,
    /// Image to check for
    #[arg(long)]
    image: Option<String>,
}

/// Exit 0 when every check passes, 1 otherwise.
pub fn run(global: &Global, args: Args) -> Result<i32> {
    let spec = global.spec(Settings {
        accel: args.accel,
        image: args.image,
        ..Settings::default()
    })?;
    let checks = crate::doctor::checks(&global.home()?, &spec);
    for c in &checks {
        let mark = if c.ok { "ok  " } else { "FAIL" };
        println!("{mark} {:<13} {}", c.name, c.detail);
        if let Some(fix) = &c.fix {
            println!("     {:<13} fix: {fix}", "");
        }
    }
    Ok(if checks.iter().all(|c| c.ok) { 0 } else { 1 })
}
