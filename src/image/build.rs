//! `vmlab image build`: an offline guest image made from local files only.
//!
//! The root file system is an Alpine minirootfs tarball (`--rootfs`) or, without
//! one, a busybox-static system. Debian's dropbear (with the glibc libraries it
//! links, which live beside musl without conflict) is the SSH server, vmlab's
//! guest init (`templates/guest/`) applies the NoCloud seed and the network
//! settings. The image boots directly: the host's Debian cloud kernel plus an
//! initramfs written here (busybox + the virtio modules) that mounts `/dev/vda`
//! and `switch_root`s to it. No mounting or loop devices on the host:
//! `mkfs.ext4 -d` fills the file system from a directory.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fs;
use std::io::BufWriter;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Component, Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail, ensure};

use crate::host;
use crate::image::cpio::CpioWriter;
use crate::image::kmod;
use crate::image::store::{self as image, Image, Manifest};
use crate::paths::Home;

/// What to build.
#[derive(Debug, Clone)]
pub struct BuildRequest {
    /// Image name (directory under `images/`).
    pub name: String,
    /// An Alpine minirootfs tarball; `None` builds a busybox-static root file system.
    pub rootfs: Option<PathBuf>,
    /// Kernel to boot; `None` takes the newest `/boot/vmlinuz-*-cloud-amd64`.
    pub kernel: Option<PathBuf>,
}

/// Kernel command line stored in the manifest (vmlab adds `vmlab.net=...`).
/// `cryptomgr.notests` skips the kernel's crypto self-tests (~0.5 s under TCG).
pub const CMDLINE: &str = "console=ttyS0 root=/dev/vda rw quiet cryptomgr.notests";
/// Size of the root file system (a sparse file; the qcow2 holds only what is used).
const DISK_SIZE: u64 = 2 << 30;
/// Modules the initramfs loads to reach SSH; their dependencies are added from
/// modules.dep. ext4 is listed so that a kernel with ext4 as a module still works.
const MODULES: &[&str] = &["ext4", "virtio_pci", "virtio_blk", "virtio_net", "isofs"];
/// Modules the guest init loads once sshd runs, from `/lib/modules/vmlab/`:
/// loading virtio_balloon inflates the balloon from the maximum to the boot
/// memory, measured at ~1.4 s of TCG time for 2G → 512M, off the SSH path here.
const LATE_MODULES: &[&str] = &["virtio_balloon"];
const LATE_MODULES_DIR: &str = "lib/modules/vmlab";
const BUSYBOX: &str = "/bin/busybox";
const DROPBEAR: &str = "/usr/sbin/dropbear";

const INITRAMFS_INIT: &str = include_str!("../../templates/guest/initramfs-init.sh");
const GUEST_INIT: &str = include_str!("../../templates/guest/init.sh");
const GUEST_INITTAB: &str = include_str!("../../templates/guest/inittab");
const GUEST_CPU_ONLINE: &str = include_str!("../../templates/guest/cpu-online.sh");
const GUEST_UDHCPC: &str = include_str!("../../templates/guest/udhcpc.script");

/// Applets the initramfs `/init` uses (symlinks to busybox).
const INITRAMFS_APPLETS: &[&str] = &[
    "sh",
    "mount",
    "umount",
    "insmod",
    "cat",
    "echo",
    "usleep",
    "switch_root",
    "setsid",
    "cttyhack",
];

/// Builds and installs a new version of an offline image (existing
/// versions, and the VMs on them, are untouched). `stage` is called with a short stage
/// name ("rootfs", "dropbear", "initramfs", "disk", ...) for progress output.
pub fn build(home: &Home, req: &BuildRequest, stage: &mut dyn FnMut(&str)) -> Result<Image> {
    crate::config::check_name("image", &req.name)?;
    if let Some(tarball) = &req.rootfs {
        ensure!(
            tarball.is_file(),
            "rootfs tarball {} does not exist",
            tarball.display()
        );
    }
    let GuestKernel {
        path: kernel,
        modules_dir,
        ..
    } = guest_kernel(req.kernel.as_deref())?;
    for tool in ["mkfs.ext4", "debugfs", "qemu-img", "tar", "ldd"] {
        host::program(tool)?;
    }
    ensure!(
        Path::new(DROPBEAR).is_file(),
        "{DROPBEAR} not found; apt-get install dropbear-bin"
    );
    ensure!(
        Path::new(BUSYBOX).exists(),
        "{BUSYBOX} not found; apt-get install busybox-static"
    );

    let staging = image::stage(home, &req.name)?;
    let dir = staging.dir();
    let scratch = Scratch::new(dir.join("scratch"))?;
    let rootfs = scratch.0.join("rootfs");
    fs::create_dir(&rootfs)?;

    stage("rootfs");
    let (source, owners) = match &req.rootfs {
        Some(tarball) => {
            extract_tarball(tarball, &rootfs)?;
            let file = tarball.file_name().unwrap_or(OsStr::new("?"));
            (
                format!("alpine minirootfs {}", file.to_string_lossy()),
                tarball_owners(tarball)?,
            )
        }
        None => {
            busybox_rootfs(&rootfs)?;
            ("busybox-static".to_string(), BTreeMap::new())
        }
    };
    unlock_root(&rootfs)?;

    stage("dropbear");
    add_dropbear(&rootfs)?;

    stage("guest-init");
    add_guest_files(&rootfs)?;
    add_late_modules(&rootfs, &modules_dir)?;

    stage("disk");
    let raw = scratch.0.join("root.raw");
    make_ext4(&rootfs, &raw)?;
    set_owners(&rootfs, &raw, &owners)?;
    host::run(
        Command::new("qemu-img")
            .args(["convert", "-q", "-O", "qcow2"])
            .arg(&raw)
            .arg(dir.join("disk.qcow2")),
    )?;

    stage("kernel");
    fs::copy(&kernel, dir.join("vmlinuz"))
        .with_context(|| format!("copying the kernel {}", kernel.display()))?;

    stage("initramfs");
    write_initramfs(&modules_dir, &dir.join("initrd.img"))?;

    stage("install");
    drop(scratch);
    staging.install(&Manifest {
        name: req.name.clone(),
        disk: "disk.qcow2".into(),
        kernel: Some("vmlinuz".into()),
        initrd: Some("initrd.img".into()),
        cmdline: Some(CMDLINE.into()),
        source,
        ssh_user: "root".into(),
    })
}

/// A directory removed when dropped (on success and on error).
struct Scratch(PathBuf);

impl Scratch {
    fn new(path: PathBuf) -> Result<Self> {
        fs::create_dir_all(&path).with_context(|| format!("creating {}", path.display()))?;
        Ok(Self(path))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

// --- kernel --------------------------------------------------------------------

/// The host kernel guests boot, and where its modules are.
#[derive(Debug, Clone)]
pub struct GuestKernel {
    pub path: PathBuf,
    /// What `uname -r` says in the guest.
    pub version: String,
    pub modules_dir: PathBuf,
    /// Modules in the initramfs, then those loaded once sshd runs, in load order.
    pub early_modules: Vec<String>,
    pub late_modules: Vec<String>,
}

/// `kernel`, or the newest Debian cloud kernel in /boot, with every module
/// the guest needs resolved against its modules.dep.
pub fn guest_kernel(kernel: Option<&Path>) -> Result<GuestKernel> {
    let path = match kernel {
        Some(k) => {
            ensure!(k.is_file(), "kernel {} does not exist", k.display());
            k.to_path_buf()
        }
        None => newest_cloud_kernel(Path::new("/boot"))?,
    };
    let version = kernel_version(&path)?;
    let modules_dir = Path::new("/lib/modules").join(&version);
    ensure!(
        modules_dir.join("modules.dep").is_file(),
        "no modules for kernel {version} in {}; install the matching linux-image package",
        modules_dir.display()
    );
    let name = |rel: &String| kmod::module_name(rel);
    Ok(GuestKernel {
        early_modules: module_order(&modules_dir, MODULES)?
            .iter()
            .map(name)
            .collect(),
        late_modules: module_order(&modules_dir, LATE_MODULES)?
            .iter()
            .map(name)
            .collect(),
        path,
        version,
        modules_dir,
    })
}

/// The newest `vmlinuz-*-cloud-amd64` in `boot`.
fn newest_cloud_kernel(boot: &Path) -> Result<PathBuf> {
    let mut found: Vec<(Vec<u64>, PathBuf)> = Vec::new();
    if let Ok(entries) = fs::read_dir(boot) {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if let Some(version) = name.strip_prefix("vmlinuz-")
                && version.ends_with("-cloud-amd64")
            {
                found.push((version_key(version), entry.path()));
            }
        }
    }
    found.sort();
    match found.pop() {
        Some((_, path)) => Ok(path),
        None => bail!(
            "no Debian cloud kernel (/boot/vmlinuz-*-cloud-amd64); apt-get install linux-image-cloud-amd64, or pass --kernel"
        ),
    }
}

/// `6.1.0-56-cloud-amd64` -> [6, 1, 0, 56]: numbers compare numerically.
fn version_key(version: &str) -> Vec<u64> {
    version
        .split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty())
        .filter_map(|s| s.parse().ok())
        .collect()
}

/// The release of a kernel image (what `uname -r` says), read from the bzImage
/// header, else from a `vmlinuz-VERSION` file name.
fn kernel_version(kernel: &Path) -> Result<String> {
    let data = fs::read(kernel).with_context(|| format!("reading {}", kernel.display()))?;
    if let Some(v) = bzimage_version(&data) {
        return Ok(v);
    }
    let name = kernel.file_name().unwrap_or_default().to_string_lossy();
    match name.strip_prefix("vmlinuz-") {
        Some(v) if !v.is_empty() => Ok(v.to_string()),
        _ => bail!(
            "cannot tell the version of kernel {} (not a bzImage, not named vmlinuz-VERSION)",
            kernel.display()
        ),
    }
}

/// x86 boot protocol: "HdrS" at 0x202, a pointer to the version string (minus
/// 0x200) at 0x20e; the string starts with the release, then a space.
fn bzimage_version(data: &[u8]) -> Option<String> {
    if data.get(0x202..0x206)? != b"HdrS" {
        return None;
    }
    let ptr = u16::from_le_bytes([*data.get(0x20e)?, *data.get(0x20f)?]) as usize + 0x200;
    let rest = data.get(ptr..)?;
    let end = rest.iter().position(|&b| b == b' ' || b == 0)?;
    let v = std::str::from_utf8(&rest[..end]).ok()?;
    (!v.is_empty()).then(|| v.to_string())
}

// --- root file system ------------------------------------------------------------

/// Extracts with modes but without owners (a user cannot own files as
/// root); [`set_owners`] puts the owners into the file system image.
fn extract_tarball(tarball: &Path, rootfs: &Path) -> Result<()> {
    host::run(
        Command::new("tar")
            .args(["--no-same-owner", "-xpf"])
            .arg(tarball)
            .arg("-C")
            .arg(rootfs),
    )
    .with_context(|| format!("extracting {}", tarball.display()))?;
    ensure!(
        rootfs.join("bin/busybox").exists() || rootfs.join("sbin/init").exists(),
        "{} does not look like a root file system (no /bin/busybox, no /sbin/init)",
        tarball.display()
    );
    Ok(())
}

/// `path in the guest` → `(uid, gid)` for the tarball's entries not owned by
/// root (Alpine: `/etc/shadow` is group `shadow`).
fn tarball_owners(tarball: &Path) -> Result<BTreeMap<PathBuf, (u32, u32)>> {
    let out = host::run(
        Command::new("tar")
            .args(["--numeric-owner", "-tvf"])
            .arg(tarball),
    )?;
    Ok(parse_tar_owners(&String::from_utf8_lossy(&out.stdout)))
}

/// Lines of `tar -tv --numeric-owner`: `MODE UID/GID SIZE DATE TIME PATH[ -> TARGET]`.
fn parse_tar_owners(listing: &str) -> BTreeMap<PathBuf, (u32, u32)> {
    let mut owners = BTreeMap::new();
    for line in listing.lines() {
        // Five words, then the path (which may hold spaces).
        let mut words = Vec::new();
        let mut rest = line;
        for _ in 0..5 {
            rest = rest.trim_start();
            let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
            words.push(&rest[..end]);
            rest = &rest[end..];
        }
        let path = rest.trim_start();
        let path = path.split(" -> ").next().unwrap_or(path);
        let ids = words[1].split_once('/');
        let Some((Ok(uid), Ok(gid))) = ids.map(|(u, g)| (u.parse::<u32>(), g.parse::<u32>()))
        else {
            continue;
        };
        if (uid, gid) != (0, 0) && !path.is_empty() {
            let rel = path.trim_start_matches("./").trim_end_matches('/');
            owners.insert(PathBuf::from(rel), (uid, gid));
        }
    }
    owners
}

/// Sets the owner of every inode of the file system image `raw`: `owners`
/// where listed, root otherwise. Done with `debugfs` on the image, so
/// building needs no root on the host.
fn set_owners(rootfs: &Path, raw: &Path, owners: &BTreeMap<PathBuf, (u32, u32)>) -> Result<()> {
    let mut commands = String::new();
    let mut paths = vec![PathBuf::new()];
    while let Some(rel) = paths.pop() {
        let host = rootfs.join(&rel);
        let meta = host.symlink_metadata()?;
        if meta.is_dir() {
            for entry in fs::read_dir(&host)? {
                paths.push(rel.join(entry?.file_name()));
            }
        }
        let name = format!("/{}", rel.display());
        ensure!(
            !name.contains(['"', '\n']),
            "{name}: a path with a quote or newline cannot be owned in the image"
        );
        let (uid, gid) = owners.get(&rel).copied().unwrap_or((0, 0));
        commands.push_str(&format!(
            "sif \"{name}\" uid {uid}\nsif \"{name}\" gid {gid}\n"
        ));
    }
    let script = raw.with_extension("owners");
    fs::write(&script, commands)?;
    let out = host::run(
        Command::new(host::program("debugfs")?)
            .arg("-w")
            .arg("-f")
            .arg(&script)
            .arg(raw),
    )
    .context("setting file owners in the root file system")?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    if let Some(err) = stderr
        .lines()
        .find(|l| l.contains(": ") && !l.starts_with("debugfs "))
    {
        bail!("setting file owners in the root file system: {err}");
    }
    Ok(())
}

/// A minimal system: the host's static busybox, its applets as symlinks, and
/// the account files.
fn busybox_rootfs(rootfs: &Path) -> Result<()> {
    for d in [
        "bin", "sbin", "usr/bin", "usr/sbin", "etc", "dev", "proc", "sys", "run", "tmp", "var/log",
        "mnt", "lib", "root",
    ] {
        fs::create_dir_all(rootfs.join(d))?;
    }
    fs::set_permissions(rootfs.join("tmp"), fs::Permissions::from_mode(0o1777))?;
    fs::set_permissions(rootfs.join("root"), fs::Permissions::from_mode(0o700))?;
    symlink("../run", rootfs.join("var/run"))?;
    // /bin/busybox may be a symlink (chain): copy the real file.
    let real = fs::canonicalize(BUSYBOX).with_context(|| format!("resolving {BUSYBOX}"))?;
    copy_into(&real, rootfs, Path::new("bin/busybox"), 0o755)?;
    let out = host::run(Command::new(&real).arg("--list-full"))?;
    for applet in String::from_utf8_lossy(&out.stdout).lines() {
        let applet = applet.trim().trim_start_matches('/');
        if applet.is_empty() || !applet.contains('/') || applet.ends_with("/busybox") {
            continue;
        }
        let link = rootfs.join(applet);
        if link.symlink_metadata().is_ok() {
            continue;
        }
        if let Some(parent) = link.parent() {
            fs::create_dir_all(parent)?;
        }
        symlink("/bin/busybox", &link).with_context(|| format!("linking {}", link.display()))?;
    }
    let files: [(&str, &str, u32); 7] = [
        ("etc/passwd", "root:x:0:0:root:/root:/bin/sh\n", 0o644),
        ("etc/shadow", "root:*:19000:0:99999:7:::\n", 0o600),
        ("etc/group", "root:x:0:root\ntty:x:5:\n", 0o644),
        ("etc/shells", "/bin/sh\n/bin/ash\n", 0o644),
        ("etc/hosts", "127.0.0.1\tlocalhost\n", 0o644),
        ("etc/hostname", "vmlab\n", 0o644),
        (
            "etc/os-release",
            "NAME=\"vmlab busybox\"\nID=busybox\nPRETTY_NAME=\"vmlab busybox-static guest\"\n",
            0o644,
        ),
    ];
    for (path, text, mode) in files {
        put_file(rootfs, Path::new(path), text.as_bytes(), mode)?;
    }
    Ok(())
}

/// dropbear refuses key logins for an account whose shadow password starts
/// with `!` (locked): make root's `*` (no password login, keys allowed).
fn unlock_root(rootfs: &Path) -> Result<()> {
    let path = rootfs.join("etc/shadow");
    let Ok(text) = fs::read_to_string(&path) else {
        bail!("the root file system has no /etc/shadow");
    };
    let fixed = unlock_root_shadow(&text);
    if fixed != text {
        let mode = path.metadata()?.permissions().mode();
        put_file(
            rootfs,
            Path::new("etc/shadow"),
            fixed.as_bytes(),
            mode & 0o7777,
        )?;
    }
    Ok(())
}

/// Root's shadow entry with a leading `!` (locked) replaced by `*`.
fn unlock_root_shadow(shadow: &str) -> String {
    let mut out = String::with_capacity(shadow.len());
    for line in shadow.split_inclusive('\n') {
        match line.strip_prefix("root:") {
            Some(rest) if rest.starts_with('!') => {
                let rest = rest.trim_start_matches('!');
                let (_, after) = rest.split_once(':').unwrap_or(("", "\n"));
                out.push_str("root:*:");
                out.push_str(after);
            }
            _ => out.push_str(line),
        }
    }
    out
}

/// Debian's dropbear and everything `ldd` says it loads, at the same paths.
fn add_dropbear(rootfs: &Path) -> Result<()> {
    let out = host::run(Command::new("ldd").arg(DROPBEAR))?;
    let libs = parse_ldd(&String::from_utf8_lossy(&out.stdout));
    ensure!(!libs.is_empty(), "ldd {DROPBEAR} listed no libraries");
    copy_into(Path::new(DROPBEAR), rootfs, Path::new(DROPBEAR), 0o755)?;
    for lib in libs {
        copy_into(&lib, rootfs, &lib, 0o755)?;
    }
    fs::create_dir_all(rootfs.join("etc/dropbear"))?;
    Ok(())
}

/// The files in `ldd` output (`libz.so.1 => /lib/x86_64-linux-gnu/libz.so.1 (0x...)`
/// and `/lib64/ld-linux-x86-64.so.2 (0x...)`); the vDSO has no file.
fn parse_ldd(text: &str) -> Vec<PathBuf> {
    let mut libs = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        let path = match line.split_once("=>") {
            Some((_, right)) => right.split_whitespace().next(),
            None => line.split_whitespace().next(),
        };
        if let Some(p) = path
            && p.starts_with('/')
        {
            libs.push(PathBuf::from(p));
        }
    }
    libs
}

fn add_guest_files(rootfs: &Path) -> Result<()> {
    let files: [(&str, &str, u32); 4] = [
        ("etc/inittab", GUEST_INITTAB, 0o644),
        ("etc/vmlab/init", GUEST_INIT, 0o755),
        ("etc/vmlab/cpu-online", GUEST_CPU_ONLINE, 0o755),
        ("etc/vmlab/udhcpc.script", GUEST_UDHCPC, 0o755),
    ];
    for (path, text, mode) in files {
        put_file(rootfs, Path::new(path), text.as_bytes(), mode)?;
    }
    let root = rootfs.join("root");
    fs::create_dir_all(&root)?;
    fs::set_permissions(&root, fs::Permissions::from_mode(0o700))?;
    ensure!(
        rootfs.join("sbin/init").symlink_metadata().is_ok(),
        "the root file system has no /sbin/init"
    );
    Ok(())
}

/// `rootfs/rel` for a path inside the guest, creating its parent directories.
/// Refuses to go through a symlink: an absolute link in the guest would point
/// into the host's file system.
fn guest_path(rootfs: &Path, rel: &Path) -> Result<PathBuf> {
    let mut cur = rootfs.to_path_buf();
    let comps: Vec<_> = rel
        .components()
        .filter(|c| !matches!(c, Component::RootDir | Component::CurDir))
        .collect();
    for (i, c) in comps.iter().enumerate() {
        let Component::Normal(part) = c else {
            bail!("invalid guest path {}", rel.display());
        };
        cur.push(part);
        let last = i + 1 == comps.len();
        match cur.symlink_metadata() {
            Ok(m) if m.file_type().is_symlink() => {
                if last {
                    fs::remove_file(&cur)?;
                } else {
                    bail!(
                        "/{} is a symlink in the root file system; vmlab will not write through it",
                        cur.strip_prefix(rootfs).unwrap_or(&cur).display()
                    );
                }
            }
            Ok(m) if !last && !m.is_dir() => {
                bail!(
                    "/{} is not a directory in the root file system",
                    rel.display()
                )
            }
            Ok(_) => {}
            Err(_) if !last => fs::create_dir(&cur)?,
            Err(_) => {}
        }
    }
    Ok(cur)
}

fn put_file(rootfs: &Path, rel: &Path, data: &[u8], mode: u32) -> Result<()> {
    let path = guest_path(rootfs, rel)?;
    fs::write(&path, data).with_context(|| format!("writing {}", path.display()))?;
    fs::set_permissions(&path, fs::Permissions::from_mode(mode))?;
    Ok(())
}

/// Copies the host file `src` (following symlinks) to `rel` in the guest.
fn copy_into(src: &Path, rootfs: &Path, rel: &Path, mode: u32) -> Result<()> {
    let path = guest_path(rootfs, rel)?;
    fs::copy(src, &path)
        .with_context(|| format!("copying {} to {}", src.display(), path.display()))?;
    fs::set_permissions(&path, fs::Permissions::from_mode(mode))?;
    Ok(())
}

fn make_ext4(rootfs: &Path, raw: &Path) -> Result<()> {
    let file = fs::File::create(raw).with_context(|| format!("creating {}", raw.display()))?;
    file.set_len(DISK_SIZE)?; // sparse
    drop(file);
    host::run(
        Command::new(host::program("mkfs.ext4")?)
            .args([
                "-q",
                "-F",
                "-m",
                "0",
                "-L",
                "vmlab-root",
                "-E",
                "root_owner=0:0",
                "-d",
            ])
            .arg(rootfs)
            .arg(raw),
    )
    .context("making the ext4 root file system")?;
    Ok(())
}

// --- initramfs -------------------------------------------------------------------

/// `wanted` modules with their dependencies, in load order, as paths relative
/// to `modules_dir`.
fn module_order(modules_dir: &Path, wanted: &[&str]) -> Result<Vec<String>> {
    let read = |name: &str| {
        let p = modules_dir.join(name);
        fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))
    };
    let dep = read("modules.dep")?;
    let builtin = read("modules.builtin").unwrap_or_default();
    kmod::resolve(&dep, &builtin, wanted)
        .with_context(|| format!("kernel modules in {}", modules_dir.display()))
}

/// The late modules not already in the initramfs, into the root file system.
fn add_late_modules(rootfs: &Path, modules_dir: &Path) -> Result<()> {
    let early = module_order(modules_dir, MODULES)?;
    for rel in module_order(modules_dir, LATE_MODULES)? {
        if early.contains(&rel) {
            continue;
        }
        let name = format!("{}.ko", kmod::module_name(&rel));
        let data = read_module(&modules_dir.join(&rel))?;
        put_file(
            rootfs,
            &Path::new(LATE_MODULES_DIR).join(name),
            &data,
            0o644,
        )?;
    }
    Ok(())
}

fn write_initramfs(modules_dir: &Path, out: &Path) -> Result<()> {
    let order = module_order(modules_dir, MODULES)?;

    let busybox = fs::canonicalize(BUSYBOX)?;
    let file = fs::File::create(out).with_context(|| format!("creating {}", out.display()))?;
    let mut cpio = CpioWriter::new(BufWriter::new(file));
    for d in ["dev", "proc", "sys", "newroot", "lib/modules"] {
        cpio.dir(d, 0o755)?;
    }
    cpio.char_dev("dev/console", 0o600, 5, 1)?;
    cpio.char_dev("dev/null", 0o666, 1, 3)?;
    cpio.file("bin/busybox", 0o755, &fs::read(&busybox)?)?;
    for applet in INITRAMFS_APPLETS {
        cpio.symlink(&format!("bin/{applet}"), "busybox")?;
    }
    let mut names = Vec::new();
    for rel in &order {
        let data = read_module(&modules_dir.join(rel))?;
        let name = format!("{}.ko", kmod::module_name(rel));
        cpio.file(&format!("lib/modules/{name}"), 0o644, &data)?;
        names.push(name);
    }
    let init = INITRAMFS_INIT.replace("@MODULES@", &names.join(" "));
    cpio.file("init", 0o755, init.as_bytes())?;
    cpio.finish()?.into_inner().map_err(|e| e.into_error())?;
    Ok(())
}

/// A module file, decompressed if it is `.ko.xz` (busybox insmod takes plain `.ko`).
fn read_module(path: &Path) -> Result<Vec<u8>> {
    let name = path.to_string_lossy();
    if name.ends_with(".ko") {
        return fs::read(path).with_context(|| format!("reading {name}"));
    }
    if name.ends_with(".ko.xz") {
        return Ok(host::run(Command::new("xz").arg("-dc").arg(path))?.stdout);
    }
    bail!("kernel module {name}: only .ko and .ko.xz are supported")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ldd_output_gives_the_files() {
        let text = "\
\tlinux-vdso.so.1 (0x00007ffd)
\tlibz.so.1 => /lib/x86_64-linux-gnu/libz.so.1 (0x00007f8e)
\tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f8e)
\t/lib64/ld-linux-x86-64.so.2 (0x00007f8e)
";
        assert_eq!(
            parse_ldd(text),
            [
                PathBuf::from("/lib/x86_64-linux-gnu/libz.so.1"),
                PathBuf::from("/lib/x86_64-linux-gnu/libc.so.6"),
                PathBuf::from("/lib64/ld-linux-x86-64.so.2"),
            ]
        );
    }

    #[test]
    fn tar_listing_gives_the_owners_that_are_not_root() {
        let listing = "\
drwxr-xr-x 0/0               0 2024-09-06 14:04 ./
-rw-r----- 0/42            446 2024-09-06 14:04 ./etc/shadow
lrwxrwxrwx 0/0               0 2024-09-06 11:34 ./bin/ps -> /bin/busybox
-rw-r--r-- 1000/1000         5 2024-09-06 11:34 ./home/a file -> x
drwxr-x--- 101/102           0 2024-09-06 11:34 ./var/lib/x/
garbage line
";
        let owners = parse_tar_owners(listing);
        assert_eq!(
            owners.into_iter().collect::<Vec<_>>(),
            [
                (PathBuf::from("etc/shadow"), (0, 42)),
                (PathBuf::from("home/a file"), (1000, 1000)),
                (PathBuf::from("var/lib/x"), (101, 102)),
            ]
        );
    }

    #[test]
    fn locked_root_is_unlocked_for_keys() {
        let shadow = "root:!::0:::::\nbin:!::0:::::\n";
        assert_eq!(
            unlock_root_shadow(shadow),
            "root:*::0:::::\nbin:!::0:::::\n"
        );
        let hashed = "root:!$6$abc$def:19000:0:99999:7:::\n";
        assert_eq!(unlock_root_shadow(hashed), "root:*:19000:0:99999:7:::\n");
        let fine = "root:*::0:::::\n";
        assert_eq!(unlock_root_shadow(fine), fine);
    }

    #[test]
    fn kernel_versions_sort_numerically() {
        let mut v = [
            "6.1.0-9-cloud-amd64",
            "6.1.0-56-cloud-amd64",
            "6.10.0-1-cloud-amd64",
        ];
        v.sort_by_key(|s| version_key(s));
        assert_eq!(v[2], "6.10.0-1-cloud-amd64");
        assert_eq!(v[1], "6.1.0-56-cloud-amd64");
    }

    #[test]
    fn bzimage_header_gives_the_release() {
        let mut img = vec![0u8; 0x400];
        img[0x202..0x206].copy_from_slice(b"HdrS");
        img[0x20e..0x210].copy_from_slice(&0x100u16.to_le_bytes());
        let s = b"6.1.0-56-cloud-amd64 (debian-kernel@lists.debian.org) #1";
        img[0x300..0x300 + s.len()].copy_from_slice(s);
        assert_eq!(
            bzimage_version(&img).as_deref(),
            Some("6.1.0-56-cloud-amd64")
        );
        assert_eq!(bzimage_version(&[0u8; 16]), None);
    }

    #[test]
    fn guest_paths_never_follow_symlinks_out() {
        let root = tempfile::tempdir().unwrap();
        symlink("/etc", root.path().join("etc")).unwrap();
        let err = put_file(root.path(), Path::new("/etc/x"), b"", 0o644).unwrap_err();
        assert!(err.to_string().contains("symlink"), "{err}");
        // a symlink as the last component is replaced, not written through
        fs::create_dir(root.path().join("d")).unwrap();
        symlink("/etc/hostname", root.path().join("d/f")).unwrap();
        put_file(root.path(), Path::new("d/f"), b"x", 0o644).unwrap();
        assert!(
            !root
                .path()
                .join("d/f")
                .symlink_metadata()
                .unwrap()
                .is_symlink()
        );
        put_file(root.path(), Path::new("a/b/c"), b"y", 0o600).unwrap();
        assert_eq!(fs::read(root.path().join("a/b/c")).unwrap(), b"y");
    }
}
