use anyhow::Result;
use serde_json::json;

use super::{Global, exit};
use crate::config::{Accel, Settings};
use crate::doctor::{Check, checks};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Acceleration to check for
    #[arg(long, value_enum)]
    accel: Option<Accel>,
    /// Image to check for
    #[arg(long)]
    image: Option<String>,
    /// Machine-readable output
    #[arg(long)]
    json: bool,
}

/// Exit 0 when every check passes, 1 otherwise.
pub fn run(global: &Global, args: Args) -> Result<i32> {
    let flags = Settings {
        accel: args.accel,
        image: args.image,
        ..Settings::default()
    };
    // A broken settings file is one more finding, not a reason to stop.
    let (spec, config) = match global.spec(flags.clone()) {
        Ok(spec) => (spec, None),
        Err(e) => (
            flags.over(Settings::default()).resolve()?,
            Some(Check::fail(
                "settings",
                format!("{e:#}"),
                "fix the file, or pass --config",
            )),
        ),
    };
    let mut checks = checks(&global.home()?, &spec);
    checks.extend(config);
    let ok = checks.iter().all(|c| c.ok);
    if args.json {
        let rows: Vec<_> = checks
            .iter()
            .map(|c| json!({"name": c.name, "ok": c.ok, "detail": c.detail, "fix": c.fix}))
            .collect();
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({"schema": 1, "ok": ok, "checks": rows}))?
        );
    } else {
        for c in &checks {
            let mark = if c.ok { "ok  " } else { "FAIL" };
            println!("{mark} {:<13} {}", c.name, c.detail);
            if let Some(fix) = &c.fix {
                println!("     {:<13} fix: {fix}", "");
            }
        }
    }
    Ok(if ok {
        exit::SUCCESS
    } else {
        exit::CHECK_FAILED
    })
}
