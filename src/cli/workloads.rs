use anyhow::Result;
use serde_json::json;

use super::{Global, exit};
use crate::table::{Align, Table};
use crate::workload::{Preset, Workload, catalog, load_all};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Machine-readable output
    #[arg(long)]
    json: bool,
}

pub fn run(global: &Global, args: Args) -> Result<i32> {
    let file = global.spec(Default::default())?.given;
    let configured = catalog::configured(file.workloads_dir);
    let dir = catalog::dir(&global.home()?, configured.as_deref())?;
    let workloads = load_all(&dir)?;
    if args.json {
        let rows: Vec<_> = workloads
            .iter()
            .map(|w| {
                let params: Vec<_> = w
                    .params
                    .iter()
                    .map(|(k, p)| {
                        json!({
                            "name": k,
                            "unit": p.unit(),
                            "default": p.preset_value(Preset::Default).to_string(),
                            "ci": p.preset_value(Preset::Ci).to_string(),
                            "range": p.range(),
                            "stage": p.stage,
                            "description": p.description,
                        })
                    })
                    .collect();
                json!({"name": w.name, "kind": w.kind, "description": w.description, "params": params})
            })
            .collect();
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({"schema": 1, "workloads": rows}))?
        );
        return Ok(exit::SUCCESS);
    }
    for w in &workloads {
        println!("{} ({}): {}", w.name, w.kind, w.description);
        if !w.params.is_empty() {
            for line in params_table(w).to_string().lines() {
                println!("    {line}");
            }
        }
    }
    Ok(exit::SUCCESS)
}

/// A workload's parameters, one row each.
fn params_table(w: &Workload) -> Table {
    use Align::Left;
    let mut table = Table::new(&[
        ("PARAM", Left),
        ("RANGE", Left),
        ("DEFAULT", Left),
        ("CI", Left),
        ("STAGE", Left),
        ("DESCRIPTION", Left),
    ]);
    for (key, p) in &w.params {
        table.row([
            key.clone(),
            p.range(),
            p.preset_value(Preset::Default).to_string(),
            p.preset_value(Preset::Ci).to_string(),
            p.stage.to_string(),
            p.description.clone(),
        ]);
    }
    table
}
