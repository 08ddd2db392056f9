use std::io::IsTerminal;
use std::path::PathBuf;

use anyhow::Result;
use indicatif::{ProgressBar, ProgressStyle};

use super::Global;
use crate::image::build::{BuildRequest, build};
use crate::image::fetch::{DEFAULT_ALPINE_VERSION, FetchRequest, fetch};
use crate::image::store::{self as image, DEFAULT_IMAGE};
use crate::units::format_mib;

#[derive(clap::Subcommand, Debug)]
pub enum Command {
    /// Build the offline guest image (no internet): Alpine minirootfs or busybox, dropbear, the host's cloud kernel
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
    /// Installed images
    List,
}

pub fn run(global: &Global, cmd: Command) -> Result<i32> {
    let home = global.home()?;
    match cmd {
        Command::Build {
            rootfs,
            kernel,
            name,
        } => {
            crate::config::check_name("image", &name)?;
            let started = std::time::Instant::now();
            let image = build(
                &home,
                &BuildRequest {
                    name,
                    rootfs,
                    kernel,
                },
                &mut |stage| eprintln!("image build: {stage}"),
            )?;
            println!(
                "image `{}` built in {:.1} s at {}",
                image.manifest.name,
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
            println!("image `{}` {how}", outcome.image.manifest.name);
        }
        Command::List => {
            let images = image::list(&home)?;
            if images.is_empty() {
                println!(
                    "no images; build one with `vmlab image build` or fetch one with `vmlab image fetch alpine`"
                );
            }
            for img in images {
                let size = std::fs::metadata(img.disk())
                    .map(|m| format_mib(m.len() >> 20))
                    .unwrap_or_default();
                let boot = if img.manifest.kernel.is_some() {
                    "direct boot"
                } else {
                    "disk boot"
                };
                println!(
                    "{:<20} {:<12} {:<10} {}",
                    img.manifest.name, boot, size, img.manifest.source
                );
            }
        }
    }
    Ok(0)
}
