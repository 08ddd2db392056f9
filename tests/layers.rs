//! The house's layers point one way: a module of `src/` may use only
//! modules of a lower layer (README, "Layers"). Read from the sources, so a
//! new `use crate::…` that points up fails here.

use std::path::Path;

/// Lowest first; a module may use only modules of an earlier row.
const LAYERS: &[&[&str]] = &[
    &[
        "units", "files", "duration", "stats", "table", "wait", "host",
    ],
    &["paths", "config", "hypervisor"],
    &["download", "rundir"],
    &["guest", "image"],
    &["lab"],
    &["workload", "metrics"],
    &["bench", "plot", "dashboard", "doctor"],
    &["manage"],
    &["cli"],
];

fn layer(module: &str) -> Option<usize> {
    LAYERS.iter().position(|row| row.contains(&module))
}

fn sources(path: &Path, out: &mut Vec<std::path::PathBuf>) {
    if path.is_dir() {
        for entry in std::fs::read_dir(path).unwrap() {
            sources(&entry.unwrap().path(), out);
        }
    } else if path.extension().is_some_and(|e| e == "rs") {
        out.push(path.to_path_buf());
    }
}

#[test]
fn every_module_uses_only_lower_layers() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut wrong = Vec::new();
    for entry in std::fs::read_dir(&src).unwrap() {
        let path = entry.unwrap().path();
        let module = path.file_stem().unwrap().to_string_lossy().into_owned();
        if ["main", "lib", "testutil"].contains(&module.as_str()) {
            continue;
        }
        let own = layer(&module).unwrap_or_else(|| panic!("src/{module} has no layer in LAYERS"));
        let mut files = Vec::new();
        sources(&path, &mut files);
        for file in files {
            let text = std::fs::read_to_string(&file).unwrap();
            for (i, line) in text.lines().enumerate() {
                for used in line.split("crate::").skip(1) {
                    let name: String = used
                        .chars()
                        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                        .collect();
                    if name == module || name == "testutil" {
                        continue;
                    }
                    match layer(&name) {
                        Some(l) if l < own => {}
                        _ => wrong.push(format!(
                            "{}:{}: {module} uses {name}",
                            file.strip_prefix(&src).unwrap().display(),
                            i + 1
                        )),
                    }
                }
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "imports that point up or sideways:\n{}",
        wrong.join("\n")
    );
}
