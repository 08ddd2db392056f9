use std::io::IsTerminal;
use std::path::PathBuf;

use anyhow::{Result, bail};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;

use super::logging::say;
use super::{Global, exit};
use crate::image::build::{BuildRequest, build};
use crate::image::fetch::{DEFAULT_ALPINE_VERSION, FetchRequest, fetch};
use crate::image::store::{self as image, DEFAULT_IMAGE};
use crate::table::{Align, Table};
use crate::units::Mib;

#[derive(clap::Subcommand, Debug)]
pub enum Command {
    /// Build a new version of the offline guest image (no internet): Alpine minirootfs or busybox, dropbear, the host's cloud kernel
    Build {
        /// Alpine minirootfs tarball; without it the rootfs is busybox-static
        #[arg(long)]
        rootfs: Option<PathBuf>,
        /// Guest kernel [default: newest /boot/vmlinuz-*-cloud-amd64]
        #[arg(long)]
        kernel: Option<PathBuf>,
        /// Image name
        #[arg(long, default_value = DEFAULT_IMAGE)]
        name: String,
    },
    /// Download an official cloud image, checksum-verified and cached
    Fetch {
        /// Only `alpine` for now
        distro: String,
        /// Full release, e.g. 3.20.3
        #[arg(long, default_value = DEFAULT_ALPINE_VERSION)]
        version: String,
        /// Mirror base URL [default: Alpine's CDN]
        #[arg(long)]
        url: Option<String>,
    },
    /// Installed images, their versions, and which VMs use them
    List {
        /// Machine-readable output
        #[arg(long)]
        json: bool,
    },
    /// Remove an image (NAME) or one version (NAME@VERSION) no VM uses
    Rm { image: String },
    /// Remove every version that is not current and that no VM uses
    Prune,
}

pub fn run(global: &Global, cmd: Command) -> Result<i32> {
    let home = global.home()?;
    match cmd {
        Command::Build {
            rootfs,
            kernel,
            name,
        } => {
            let started = std::time::Instant::now();
            let image = build(
                &home,
                &BuildRequest {
                    name,
                    rootfs,
                    kernel,
                },
                &mut |stage| say!("image build: {stage}"),
            )?;
            println!(
                "image `{}` built in {:.1} s at {}",
                image.id(),
                started.elapsed().as_secs_f64(),
                image.dir.display()
            );
        }
        Command::Fetch {
            distro,
            version,
            url,
        } => {
            let bar = std::io::stderr().is_terminal().then(|| {
                let bar = ProgressBar::new(0);
                bar.set_style(
                    ProgressStyle::with_template("{bytes}/{total_bytes} {bar:30} {bytes_per_sec}")
                        .expect("valid template"),
                );
                bar
            });
            let outcome = fetch(
                &home,
                &FetchRequest {
                    distro,
                    version,
                    base_url: url,
                },
                &mut |done, total| {
                    if let Some(bar) = &bar {
                        bar.set_length(total.unwrap_or(done));
                        bar.set_position(done);
                    }
                },
            )?;
            if let Some(bar) = bar {
                bar.finish_and_clear();
            }
            let how = if outcome.cache_hit {
                "from the cache"
            } else {
                "downloaded and verified"
            };
            println!("image `{}` {how}", outcome.image.id());
        }
        Command::List { json } => list(&home, json)?,
        Command::Rm { image: spec } => {
            let (name, version) = match spec.split_once('@') {
                Some((n, v)) => (n, Some(v)),
                None => (spec.as_str(), None),
            };
            crate::config::check_name("image", name)?;
            if version.is_some_and(|v| v.is_empty() || v.contains('/')) {
                bail!("`{spec}` is not NAME or NAME@VERSION; `vmlab image list` shows them");
            }
            let removed = image::remove(&home, name, version)?;
            println!("removed {}", removed.join(", "));
        }
        Command::Prune => {
            let removed = image::prune(&home)?;
            if removed.is_empty() {
                println!("nothing to prune: every version is current or in use");
            } else {
                println!("removed {}", removed.join(", "));
            }
        }
    }
    Ok(exit::SUCCESS)
}

fn list(home: &crate::paths::Home, as_json: bool) -> Result<()> {
    let installed = image::list(home)?;
    let usage = image::usage(home)?;
    let mut rows = Vec::new();
    for img in &installed {
        for v in &img.versions {
            let users = usage
                .get(&(img.name.clone(), v.version.clone()))
                .cloned()
                .unwrap_or_default();
            let size = std::fs::metadata(v.disk()).map_or(0, |m| m.len() >> 20);
            let templates = crate::lab::template::list(home, v)?;
            rows.push(json!({
                "name": img.name,
                "version": v.version,
                "current": img.current.as_deref() == Some(v.version.as_str()),
                "boot": if v.manifest.kernel.is_some() { "direct" } else { "disk" },
                "disk_mib": size,
                "used_by": users,
                "source": v.manifest.source,
                "templates": templates,
            }));
        }
    }
    if as_json {
        let doc = json!({"schema": 1, "images": rows});
        println!("{}", serde_json::to_string_pretty(&doc)?);
        return Ok(());
    }
    if rows.is_empty() {
        println!("no images; {}", image::GET_IMAGE);
        return Ok(());
    }
    print!("{}", list_table(&rows));
    if let Some(templates) = templates_table(&rows) {
        print!("\n{templates}");
    }
    Ok(())
}

/// `image list` for people; `rows` are the `--json` document's images.
fn list_table(rows: &[serde_json::Value]) -> Table {
    use Align::{Left, Right};
    let mut table = Table::new(&[
        ("NAME", Left),
        ("VERSION", Left),
        ("CURRENT", Left),
        ("BOOT", Left),
        ("DISK", Right),
        ("USED BY", Left),
        ("SOURCE", Left),
    ]);
    let text = |v: &serde_json::Value| v.as_str().unwrap_or_default().to_owned();
    for r in rows {
        let users: Vec<String> = r["used_by"]
            .as_array()
            .into_iter()
            .flatten()
            .map(text)
            .collect();
        table.row([
            text(&r["name"]),
            text(&r["version"]),
            if r["current"] == true { "*" } else { "" }.to_owned(),
            text(&r["boot"]),
            Mib(r["disk_mib"].as_u64().unwrap_or(0)).human(),
            if users.is_empty() {
                "-".to_owned()
            } else {
                users.join(",")
            },
            text(&r["source"]),
        ]);
    }
    table
}

/// The versions' templates, one row each, under the images' table; `None`
/// when there are none.
fn templates_table(rows: &[serde_json::Value]) -> Option<Table> {
    use Align::{Left, Right};
    let mut table = Table::new(&[
        ("IMAGE", Left),
        ("TEMPLATE", Left),
        ("SAVED", Right),
        ("MADE IN", Right),
        ("USED BY", Left),
    ]);
    let mut any = false;
    for r in rows {
        for t in r["templates"].as_array().into_iter().flatten() {
            any = true;
            let users: Vec<&str> = t["used_by"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|u| u.as_str())
                .collect();
            let (saved, made) = match t["made_in_s"].as_f64() {
                Some(s) => (
                    Mib(t["memory_mib"].as_u64().unwrap_or(0)).human(),
                    format!("{s:.1} s"),
                ),
                // Made again when a clone needs it.
                None => ("incomplete".to_owned(), "-".to_owned()),
            };
            table.row([
                format!(
                    "{}@{}",
                    r["name"].as_str().unwrap_or_default(),
                    r["version"].as_str().unwrap_or_default()
                ),
                t["key"].as_str().unwrap_or_default().to_owned(),
                saved,
                made,
                if users.is_empty() {
                    "-".to_owned()
                } else {
                    users.join(",")
                },
            ]);
        }
    }
    any.then_some(table)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_image_table_marks_the_current_version_and_its_users() {
        let rows = [
            json!({"name": "vmlab-alpine", "version": "7df67a2303dc", "current": true,
                   "boot": "direct", "disk_mib": 41, "used_by": ["default/vm-1", "default/vm-2"],
                   "source": "alpine minirootfs alpine-minirootfs-3.20.3-x86_64.tar.gz"}),
            json!({"name": "vmlab-alpine", "version": "0123456789ab", "current": false,
                   "boot": "direct", "disk_mib": 1536, "used_by": [], "source": "busybox-static"}),
        ];
        insta::assert_snapshot!(list_table(&rows).to_string(), @r"
        NAME          VERSION       CURRENT  BOOT       DISK  USED BY                    SOURCE
        vmlab-alpine  7df67a2303dc  *        direct   41 MiB  default/vm-1,default/vm-2  alpine minirootfs alpine-minirootfs-3.20.3-x86_64.tar.gz
        vmlab-alpine  0123456789ab           direct  1.5 GiB  -                          busybox-static
        ");
        assert!(templates_table(&rows).is_none());
    }

    #[test]
    fn the_templates_table_says_which_clones_use_each_and_which_are_incomplete() {
        let rows = [
            json!({"name": "vmlab-alpine", "version": "7df67a2303dc", "templates": [
                {"key": "qemu-512m-1024m-1c-2c", "memory_mib": 98, "made_in_s": 9.14,
                 "used_by": ["default/cl-1", "default/cl-2"]},
                {"key": "qemu-1024m-2048m-2c-2c", "memory_mib": 0, "made_in_s": null, "used_by": []},
            ]}),
        ];
        insta::assert_snapshot!(templates_table(&rows).unwrap().to_string(), @r"
        IMAGE                      TEMPLATE                     SAVED  MADE IN  USED BY
        vmlab-alpine@7df67a2303dc  qemu-512m-1024m-1c-2c       98 MiB    9.1 s  default/cl-1,default/cl-2
        vmlab-alpine@7df67a2303dc  qemu-1024m-2048m-2c-2c  incomplete        -  -
        ");
    }
}
