//! Templates: one VM of an image version and a shape, booted once, quiesced
//! and saved (memory and device state), so that clones restore from it in
//! about a second instead of booting.
//!
//! ```text
//! images/<name>/<version>/templates/<shape>/
//!   overlay.qcow2  its disk, read-only once saved: clones' overlays are backed by it
//!   memory.save    libvirt's save image of its memory and devices
//!   template.json  what it was saved with; written last (without it the template is incomplete)
//!   seed.iso  console.log  domain.xml  id_ed25519[.pub]  host_key
//! images/<name>/<version>/templates/<shape>.lock   held while one is checked or made
//! <home>/run/<id>.sock                             its clone channel while it runs
//! ```
//!
//! A clone's save image is a copy of `memory.save` with the clone's name,
//! UUID, mark, files and SSH port in the embedded XML, edited at the same
//! length (see [`super::save_image`]); so the template's own values are
//! made as long as any clone's can be (its file paths padded with `/`).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use serde::{Deserialize, Serialize};

use super::up::Stage;
use super::{domain_xml, keys, overlay, provision, reseed, save_image, seed};
use crate::config::Network;
use crate::download::digest;
use crate::files::{FileLock, create_dir_traversable, write_atomic};
use crate::guest::ssh::{Guest, SshTarget};
use crate::hypervisor::{DomainType, Hypervisor, Versions};
use crate::image::store::{self as image_store, Image};
use crate::paths::Home;
use crate::units::Mib;

/// vmlab's template format; a template of another format is not restored.
pub const FORMAT: u32 = 1;
/// The guest script a template runs while it is saved (see the script).
pub const CLONE_SCRIPT: &str = include_str!("../../templates/guest/clone.sh");
/// Where the template's guest files go (a tmpfs: they live in its memory);
/// the clone script and [`QUIESCE`] name it too.
const GUEST_DIR: &str = "/run/vmlab";
/// Room for a clone's lab and VM names in the template's padded paths.
const NAME_ROOM: usize = 48;
/// Room for a clone's mark in the template's own (see [`template_mark`]).
const MARK_ROOM: usize = 512;
/// A unix socket path must fit `sockaddr_un`.
const SOCKET_PATH_MAX: usize = 107;
/// Run in the template once its files are in place: starts the clone script
/// and waits until it listens, then flushes the disk cache. No host key
/// stays on the disk clones share: a restored clone is given its own, and one
/// booted instead (never restored) gets a fresh one from `dropbear -R`; the
/// running sshd keeps its key in memory until a clone replaces it.
const QUIESCE: &str = "rm -f /etc/dropbear/dropbear_*_host_key
setsid /run/vmlab/clone </dev/null >/dev/null 2>&1 &
i=0
while [ ! -e /run/vmlab/waiting ] && [ $i -lt 200 ]; do usleep 50000; i=$((i + 1)); done
[ -e /run/vmlab/waiting ] || { echo 'the clone script did not start' >&2; exit 1; }
sync
echo 3 >/proc/sys/vm/drop_caches
";
/// How long the template's balloon may take to reach its target after boot.
const BALLOON_WAIT: Duration = Duration::from_secs(60);

/// Everything fixed when a VM is defined that its saved memory depends on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shape {
    pub domain_type: DomainType,
    pub memory: Mib,
    pub max_memory: Mib,
    pub vcpus: u32,
    pub max_vcpus: u32,
    pub autodeflate: bool,
}

impl Shape {
    /// The template's directory name: `qemu-512m-1024m-1c-2c[-autodeflate]`.
    pub fn key(&self) -> String {
        let accel = match self.domain_type {
            DomainType::Kvm => "kvm",
            DomainType::Qemu => "qemu",
        };
        format!(
            "{accel}-{}m-{}m-{}c-{}c{}",
            self.memory.0,
            self.max_memory.0,
            self.vcpus,
            self.max_vcpus,
            if self.autodeflate { "-autodeflate" } else { "" }
        )
    }
}

/// The files of one template.
#[derive(Debug, Clone)]
pub struct TemplateFiles {
    pub dir: PathBuf,
}

impl TemplateFiles {
    pub fn of(image: &Image, key: &str) -> Self {
        Self {
            dir: image_store::templates_dir(image).join(key),
        }
    }

    pub fn overlay(&self) -> PathBuf {
        self.dir.join("overlay.qcow2")
    }
    pub fn memory(&self) -> PathBuf {
        self.dir.join("memory.save")
    }
    pub fn manifest(&self) -> PathBuf {
        self.dir.join("template.json")
    }
    fn seed(&self) -> PathBuf {
        self.dir.join("seed.iso")
    }
    fn console(&self) -> PathBuf {
        self.dir.join("console.log")
    }
    fn domain_xml(&self) -> PathBuf {
        self.dir.join("domain.xml")
    }
    fn ssh_key(&self) -> PathBuf {
        self.dir.join("id_ed25519")
    }
    fn ssh_pubkey(&self) -> PathBuf {
        self.dir.join("id_ed25519.pub")
    }
    fn host_key(&self) -> PathBuf {
        self.dir.join("host_key")
    }
    fn lock(&self) -> PathBuf {
        self.dir.with_extension("lock")
    }
}

/// `template.json`: what a template was saved with, and the values its
/// saved XML holds that a clone's copy replaces.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: u32,
    pub vmlab: String,
    /// SHA-256 of the guest files it runs (the clone script, `reseed`).
    pub guest_files: String,
    /// The QEMU version it was saved under (libvirt's hypervisor version).
    pub qemu: String,
    pub libvirt: String,
    pub domain: String,
    pub uuid: String,
    pub ssh_port: u16,
    /// Its files as its XML names them (padded).
    pub overlay: String,
    pub seed: String,
    pub console_log: String,
    pub channel: String,
    /// RFC 3339 UTC.
    pub created: String,
    /// From defining its domain to its save image written.
    pub made_in_s: f64,
}

/// A complete template that this host can restore.
#[derive(Debug, Clone)]
pub struct Template {
    pub key: String,
    pub files: TemplateFiles,
    pub manifest: Manifest,
}

impl Template {
    /// `vmlab-alpine@393931dc7d40/qemu-512m-1024m-1c-2c`.
    pub fn id(image: &Image, key: &str) -> String {
        format!("{}/{key}", image.id())
    }
}

/// SHA-256 of what vmlab puts into and runs in a template's guest: clones
/// of a template made with other guest files are not restored.
pub fn guest_files_digest() -> String {
    let mut all = CLONE_SCRIPT.as_bytes().to_vec();
    all.extend_from_slice(&reseed::PROGRAM);
    all.extend_from_slice(QUIESCE.as_bytes());
    digest::sha256(&all)
}

/// The template `key` of `image`, when it is complete and restorable here;
/// otherwise why not, in one line.
pub fn find(hv: &dyn Hypervisor, image: &Image, key: &str) -> Result<Template, String> {
    let files = TemplateFiles::of(image, key);
    let id = Template::id(image, key);
    let versions = hv
        .versions()
        .map_err(|e| format!("cannot ask libvirt for its versions: {e:#}"))?;
    let manifest = load(&files).map_err(|why| format!("template `{id}` {why}"))?;
    unusable(&manifest, &versions).map_or(Ok(()), |why| Err(format!("template `{id}` {why}")))?;
    let (header, _) = save_image::read_xml(&files.memory())
        .map_err(|e| format!("template `{id}`: {}", one_line(&e)))?;
    if !header.was_running {
        return Err(format!("template `{id}` was saved while paused"));
    }
    Ok(Template {
        key: key.to_string(),
        files,
        manifest,
    })
}

fn load(files: &TemplateFiles) -> Result<Manifest, String> {
    if !files.dir.exists() {
        return Err("does not exist".into());
    }
    let text =
        std::fs::read_to_string(files.manifest()).map_err(|_| "is incomplete".to_string())?;
    let manifest: Manifest = serde_json::from_str(&text)
        .map_err(|_| "was made by another vmlab (its template.json is unreadable)".to_string())?;
    for file in [files.overlay(), files.memory()] {
        if !file.exists() {
            return Err(format!("has lost {}", file.display()));
        }
    }
    Ok(manifest)
}

/// Why a complete template cannot be restored on this host.
fn unusable(manifest: &Manifest, versions: &Versions) -> Option<String> {
    if manifest.format != FORMAT {
        return Some(format!(
            "was made by another vmlab (template format {}; this one uses {FORMAT})",
            manifest.format
        ));
    }
    if manifest.guest_files != guest_files_digest() {
        return Some("was made by another vmlab (its guest files differ)".into());
    }
    if manifest.qemu != versions.hypervisor {
        return Some(format!(
            "was saved under QEMU {}; this host runs QEMU {}",
            manifest.qemu, versions.hypervisor
        ));
    }
    None
}

fn one_line(e: &anyhow::Error) -> String {
    format!("{e:#}").replace('\n', "; ")
}

/// Where a template or clone's channel socket is: `<home>/run/<id>.sock`,
/// short (a unix socket path must fit 107 bytes) and of one length for all,
/// so that a clone's fits in its template's place.
pub fn channel(home: &Home, owner: &str) -> PathBuf {
    let id = &digest::sha256(owner.as_bytes())[..16];
    home.root().join("run").join(format!("{id}.sock"))
}

/// What making a template needs.
pub struct Maker<'a> {
    pub hv: &'a dyn Hypervisor,
    pub home: &'a Home,
    pub image: &'a Image,
    pub shape: Shape,
    pub ssh_timeout: Duration,
    /// Called with each stage of making one.
    pub progress: &'a (dyn Fn(Stage) + Sync),
}

/// What [`ensure`] found or made.
#[derive(Debug)]
pub struct Ensured {
    pub template: Template,
    /// Made by this call (it took `manifest.made_in_s`).
    pub made: bool,
    /// Why a saved one was replaced.
    pub replaced: Option<String>,
}

/// The template for this image version and shape: the saved one when it can
/// be restored, else a new one (replacing one no clone uses). `Err` says in
/// one line why there is none: the caller boots its VMs instead.
pub fn ensure(m: &Maker) -> Result<Ensured, String> {
    let key = m.shape.key();
    let id = Template::id(m.image, &key);
    if m.image.manifest.kernel.is_none() {
        return Err(format!(
            "clones need an image made by `vmlab image build`; `{}` boots its own kernel from its disk",
            m.image.id()
        ));
    }
    let files = TemplateFiles::of(m.image, &key);
    let socket = channel(m.home, &domain_name(m.home, &id));
    if socket.as_os_str().len() > SOCKET_PATH_MAX {
        return Err(format!(
            "the vmlab home {} is too long a path for the clone channel's unix socket ({} > {SOCKET_PATH_MAX} bytes)",
            m.home.root().display(),
            socket.as_os_str().len()
        ));
    }
    let templates = image_store::templates_dir(m.image);
    create_dir_traversable(&templates).map_err(|e| one_line(&e))?;
    let _lock = FileLock::exclusive(
        &files.lock(),
        &format!("another vmlab making template `{id}`"),
    )
    .map_err(|e| one_line(&e))?;
    let why = match find(m.hv, m.image, &key) {
        Ok(template) => {
            return Ok(Ensured {
                template,
                made: false,
                replaced: None,
            });
        }
        Err(why) => why,
    };
    // Clones' overlays name the template's disk by its path: a new template
    // there would change their disks under them, even if the old one is gone.
    let users = image_store::overlay_users(m.home)
        .map_err(|e| one_line(&e))?
        .remove(&files.overlay().display().to_string())
        .unwrap_or_default();
    if !users.is_empty() {
        return Err(format!(
            "{why}, and {} still use its disk; once they are gone (`vmlab down`) it is made again",
            users.join(", ")
        ));
    }
    let replacing = files.dir.exists();
    if replacing {
        std::fs::remove_dir_all(&files.dir)
            .map_err(|e| format!("removing {}: {e}", files.dir.display()))?;
    }
    let template = make(m, &key, &files).map_err(|e| {
        std::fs::remove_dir_all(&files.dir).ok();
        format!("making template `{id}` failed: {}", one_line(&e))
    })?;
    Ok(Ensured {
        template,
        made: true,
        replaced: replacing.then(|| format!("{why}: made it again")),
    })
}

/// The template's domain name: as long as any VM name can be (44), unique per home.
fn domain_name(home: &Home, id: &str) -> String {
    let hash = digest::sha256(format!("{}\n{id}", home.root().display()).as_bytes());
    format!("vmlab-template-{}", &hash[..32])
}

/// `dir/file` with extra `/` before `file` (the same file to the kernel and
/// to QEMU) so that it is as long as a clone's `<home>/labs/<lab>/vms/<vm>/file`
/// can be with names of up to [`NAME_ROOM`] bytes.
fn padded(home: &Home, dir: &Path, file: &str) -> String {
    let room = home.root().as_os_str().len()
        + "/labs/".len()
        + NAME_ROOM
        + "/vms/".len()
        + NAME_ROOM
        + 1
        + file.len();
    let plain = format!("{}/{file}", dir.display());
    let slashes = room.saturating_sub(plain.len());
    format!("{}/{}{file}", dir.display(), "/".repeat(slashes))
}

/// The template's mark: no lab owns it; `room` reserves the bytes a clone's
/// longer mark replaces it with in a save image.
fn template_mark(id: &str) -> std::collections::BTreeMap<String, String> {
    [
        ("template".to_string(), id.to_string()),
        ("room".to_string(), ".".repeat(MARK_ROOM)),
    ]
    .into()
}

/// Boots the template, quiesces it and saves it.
fn make(m: &Maker, key: &str, files: &TemplateFiles) -> Result<Template> {
    let started = Instant::now();
    let id = Template::id(m.image, key);
    let name = domain_name(m.home, &id);
    create_dir_traversable(&files.dir)?;
    create_dir_traversable(&m.home.root().join("run"))?;
    let pubkey = keys::ensure_pair(&files.ssh_key(), &files.ssh_pubkey(), "vmlab-template")?;
    overlay::create(&m.image.disk(), &files.overlay())?;
    seed::write(&files.seed(), &name, "vmlab-template", &pubkey)?;
    remove_leftover(m, &name)?;
    let ssh_port = provision::free_ports(1)?[0];
    let channel = channel(m.home, &name);
    let (overlay, seed, console) = (
        padded(m.home, &files.dir, "overlay.qcow2"),
        padded(m.home, &files.dir, "seed.iso"),
        padded(m.home, &files.dir, "console.log"),
    );
    let xml = domain_xml::render(&domain_xml::DomainSpec {
        name: name.clone(),
        uuid: None,
        domain_type: m.shape.domain_type,
        lab: String::new(),
        home: m.home.root().display().to_string(),
        mark: template_mark(&id),
        memory: m.shape.memory.kib(),
        max_memory: m.shape.max_memory.kib(),
        vcpus: m.shape.vcpus,
        max_vcpus: m.shape.max_vcpus,
        kernel: m.image.kernel(),
        initrd: m.image.initrd(),
        cmdline: m
            .image
            .manifest
            .cmdline
            .as_ref()
            .map(|c| format!("{c} vmlab.net=user")),
        overlay: overlay.clone().into(),
        seed: seed.clone().into(),
        console_log: console.clone().into(),
        network: Network::User,
        ssh_port,
        autodeflate: m.shape.autodeflate,
        clone_channel: Some(channel.clone()),
    })?;
    write_atomic(&files.domain_xml(), xml.as_bytes())?;
    let uuid = m.hv.define(&xml).context("defining the template")?;
    let saved = boot_and_save(m, &name, ssh_port, files);
    if saved.is_err() {
        m.hv.destroy(&name).ok();
    }
    m.hv.undefine(&name).ok();
    saved?;
    // Clones' overlays are backed by this disk: it must never change again.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(files.overlay(), std::fs::Permissions::from_mode(0o444))
        .with_context(|| format!("making {} read-only", files.overlay().display()))?;
    let versions = m.hv.versions()?;
    let manifest = Manifest {
        format: FORMAT,
        vmlab: env!("CARGO_PKG_VERSION").to_string(),
        guest_files: guest_files_digest(),
        qemu: versions.hypervisor,
        libvirt: versions.libvirt,
        domain: name,
        uuid,
        ssh_port,
        overlay,
        seed,
        console_log: console,
        channel: channel.display().to_string(),
        created: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
        made_in_s: started.elapsed().as_secs_f64(),
    };
    write_atomic(
        &files.manifest(),
        (serde_json::to_string_pretty(&manifest)? + "\n").as_bytes(),
    )?;
    Ok(Template {
        key: key.to_string(),
        files: files.clone(),
        manifest,
    })
}

/// A template domain of this name left by an interrupted `up` is removed;
/// one vmlab did not make is never touched.
fn remove_leftover(m: &Maker, name: &str) -> Result<()> {
    let Some(domain) = m.hv.domain(name)? else {
        return Ok(());
    };
    let ours = domain
        .mark
        .as_ref()
        .is_some_and(|mark| m.home.is(&mark.home) && mark.attrs.contains_key("template"));
    if !ours {
        bail!("a domain named `{name}` exists that vmlab did not make");
    }
    m.hv.destroy(name)?;
    m.hv.undefine(name)
}

/// Starts the template, waits for its SSH, puts the clone script in place,
/// waits for its balloon, then saves it (which stops it).
fn boot_and_save(m: &Maker, name: &str, ssh_port: u16, files: &TemplateFiles) -> Result<()> {
    (m.progress)(Stage::Boot);
    m.hv.start(name)?;
    (m.progress)(Stage::Ssh);
    let target = SshTarget {
        vm: name.to_string(),
        addr: std::net::SocketAddr::from((std::net::Ipv4Addr::LOCALHOST, ssh_port)),
        user: m.image.manifest.ssh_user.clone(),
        key: files.ssh_key(),
        known_hosts: files.host_key(),
    };
    let guest = Guest::wait_ready(&target, Instant::now() + m.ssh_timeout).map_err(|e| {
        let console = std::fs::read_to_string(files.console()).unwrap_or_default();
        anyhow!(
            "it did not answer SSH within {} s ({e:#}); last console lines:\n{}",
            m.ssh_timeout.as_secs(),
            super::last_lines(&console, Some(10))
        )
    })?;
    (m.progress)(Stage::Quiesce);
    quiesce(&guest)?;
    drop(guest);
    wait_for_balloon(m, name)?;
    (m.progress)(Stage::Save);
    m.hv.save(name, &files.memory())
}

/// Puts the clone script and `reseed` into the guest, starts the script
/// (it waits on the clone channel) and flushes the guest's disk cache, so
/// that the disk is complete and the saved memory small.
fn quiesce(guest: &Guest) -> Result<()> {
    guest.push_bytes(&reseed::PROGRAM, &format!("{GUEST_DIR}/reseed"))?;
    guest.push_bytes(CLONE_SCRIPT.as_bytes(), &format!("{GUEST_DIR}/clone"))?;
    let out = guest.exec(QUIESCE)?;
    if !out.exit.success() {
        bail!(
            "preparing the template failed ({}): {}",
            out.exit,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// The balloon shrinks the guest from its maximum to its memory after boot
/// (its driver loads once sshd runs): a clone must not start mid-way.
fn wait_for_balloon(m: &Maker, name: &str) -> Result<()> {
    let target = m.shape.memory.kib();
    let deadline = Instant::now() + BALLOON_WAIT;
    loop {
        let actual = m.hv.resources(name)?.memory_actual;
        if actual <= target {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!(
                "its balloon did not reach {} within {} s (still {})",
                m.shape.memory,
                BALLOON_WAIT.as_secs(),
                actual.mib()
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// One template of an image version, for `vmlab image list`.
#[derive(Debug, Clone, Serialize)]
pub struct Listed {
    pub key: String,
    pub complete: bool,
    pub memory_mib: u64,
    pub made_in_s: Option<f64>,
    pub created: Option<String>,
    /// The `lab/vm` clones whose disks are backed by it.
    pub used_by: Vec<String>,
}

/// The templates saved from `image`.
pub fn list(home: &Home, image: &Image) -> Result<Vec<Listed>> {
    let dir = image_store::templates_dir(image);
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Ok(Vec::new());
    };
    let users = image_store::overlay_users(home)?;
    let mut out = Vec::new();
    for entry in entries.filter_map(|e| e.ok()) {
        if !entry.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        let key = entry.file_name().to_string_lossy().into_owned();
        let files = TemplateFiles::of(image, &key);
        let manifest = load(&files).ok();
        out.push(Listed {
            complete: manifest.is_some(),
            memory_mib: std::fs::metadata(files.memory()).map_or(0, |m| m.len() >> 20),
            made_in_s: manifest.as_ref().map(|m| m.made_in_s),
            created: manifest.map(|m| m.created),
            used_by: users
                .get(&files.overlay().display().to_string())
                .cloned()
                .unwrap_or_default(),
            key,
        });
    }
    out.sort_by(|a, b| a.key.cmp(&b.key));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shape_names_the_template() {
        let shape = Shape {
            domain_type: DomainType::Qemu,
            memory: Mib(512),
            max_memory: Mib(1024),
            vcpus: 1,
            max_vcpus: 2,
            autodeflate: false,
        };
        assert_eq!(shape.key(), "qemu-512m-1024m-1c-2c");
        let other = Shape {
            domain_type: DomainType::Kvm,
            autodeflate: true,
            ..shape
        };
        assert_eq!(other.key(), "kvm-512m-1024m-1c-2c-autodeflate");
    }

    #[test]
    fn template_values_leave_room_for_any_clones() {
        let home = Home::new("/var/lib/vmlab");
        let dir = Path::new("/var/lib/vmlab/images/vmlab-alpine/393931dc7d40/templates/q");
        let padded = padded(&home, dir, "overlay.qcow2");
        assert!(
            padded.starts_with(&format!("{}//", dir.display())),
            "{padded}"
        );
        let longest = format!(
            "/var/lib/vmlab/labs/{}/vms/{}/overlay.qcow2",
            "l".repeat(NAME_ROOM),
            "v".repeat(NAME_ROOM)
        );
        assert_eq!(padded.len(), longest.len());
        // Extra slashes name the same file.
        let plain = format!("{}/overlay.qcow2", dir.display());
        assert!(
            Path::new(&padded)
                .components()
                .eq(Path::new(&plain).components())
        );
        let name = domain_name(&home, "vmlab-alpine@x/q");
        assert!(name.len() >= 44, "{name}");
        assert_eq!(
            channel(&home, &name).as_os_str().len(),
            channel(&home, "lab/vm-1").as_os_str().len()
        );
    }

    fn manifest() -> Manifest {
        Manifest {
            format: FORMAT,
            vmlab: "0.1.0".into(),
            guest_files: guest_files_digest(),
            qemu: "7.2.0".into(),
            libvirt: "9.0.0".into(),
            domain: "vmlab-template-x".into(),
            uuid: "u".into(),
            ssh_port: 40000,
            overlay: "/o".into(),
            seed: "/s".into(),
            console_log: "/c".into(),
            channel: "/ch".into(),
            created: "2026-01-01T00:00:00Z".into(),
            made_in_s: 9.0,
        }
    }

    #[test]
    fn a_template_of_another_qemu_or_vmlab_is_not_restored() {
        let here = Versions {
            libvirt: "9.0.0".into(),
            hypervisor: "7.2.0".into(),
        };
        assert_eq!(unusable(&manifest(), &here), None);
        let newer_qemu = Versions {
            hypervisor: "8.0.0".into(),
            ..here.clone()
        };
        assert_eq!(
            unusable(&manifest(), &newer_qemu).unwrap(),
            "was saved under QEMU 7.2.0; this host runs QEMU 8.0.0"
        );
        let older = Manifest {
            format: FORMAT - 1,
            ..manifest()
        };
        assert!(unusable(&older, &here).unwrap().contains("another vmlab"));
        let other_guest = Manifest {
            guest_files: "0".repeat(64),
            ..manifest()
        };
        assert!(
            unusable(&other_guest, &here)
                .unwrap()
                .contains("guest files differ")
        );
    }
}
