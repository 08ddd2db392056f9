use anyhow::Result;
use serde_json::json;

use super::{Global, exit};
use crate::workload::{Preset, catalog, load_all};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Machine-readable output
    #[arg(long)]
    json: bool,
}

pub fn run(global: &Global, args: Args) -> Result<i32> {
    let file = global.spec(Default::default())?.given;
    let configured = std::env::var_os("VMLAB_WORKLOADS")
        .map(std::path::PathBuf::from)
        .or(file.workloads_dir);
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
        println!("{} ({:?}): {}", w.name, w.kind, w.description);
        let rows: Vec<[String; 5]> = w
            .params
            .iter()
            .map(|(key, p)| {
                [
                    key.clone(),
                    p.range(),
                    format!("default {}", p.preset_value(Preset::Default)),
                    format!("ci {}", p.preset_value(Preset::Ci)),
                    format!("{}: {}", p.stage, p.description),
                ]
            })
            .collect();
        let mut widths = [0usize; 4];
        for row in &rows {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(cell.len());
            }
        }
        for [key, range, default, ci, what] in &rows {
            println!(
                "    {key:<w0$}  {range:<w1$}  {default:<w2$}  {ci:<w3$}  {what}",
                w0 = widths[0],
                w1 = widths[1],
                w2 = widths[2],
                w3 = widths[3]
            );
        }
    }
    Ok(exit::SUCCESS)
}
