//! Installed base images: immutable, versioned directories.
//!
//! ```text
//! images/<name>/<version>/image.json   manifest (written last inside the staging dir)
//! images/<name>/<version>/disk.qcow2   root disk (+ vmlinuz, initrd.img for direct boot)
//! images/<name>/current                symlink to the version new VMs get
//! images/<name>/lock                   shared while `up` creates overlays; exclusive to delete
//! images/<name>/build.lock             one build or fetch of <name> at a time
//! images/<name>/<version>/templates/   VMs of this version saved for cloning (see lab::template)
//! ```
//!
//! A version is never written after it is installed: a build or fetch fills
//! a staging directory, which is renamed to its version (a digest of its
//! content) and then made current. Overlays keep pointing at the version
//! they were created from, so rebuilding an image never touches the disks of
//! existing VMs. Which versions are in use is read from the overlays' own
//! qcow2 headers, the one place that cannot disagree with the disks. The
//! templates saved from a version are a cache that belongs to it: a clone's
//! overlay is backed by its template's disk, which keeps the version in use,
//! and removing a version removes its templates.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

use crate::download::digest;
use crate::files::{FileLock, write_atomic};
use crate::paths::Home;

const MANIFEST: &str = "image.json";
const CURRENT: &str = "current";

/// `images/<name>/<version>/image.json`. File names are relative to the version directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub name: String,
    /// qcow2 root disk.
    pub disk: String,
    /// Kernel and initrd for direct boot; `None` boots the disk itself.
    pub kernel: Option<String>,
    pub initrd: Option<String>,
    /// Kernel command line for direct boot (without vmlab's own `vmlab.*` options).
    pub cmdline: Option<String>,
    /// Where it came from, for `vmlab image list`.
    pub source: String,
    /// The user the seed's SSH key logs in as (Alpine's cloud images: `alpine`).
    pub ssh_user: String,
}

/// One installed version of an image, with absolute paths resolved.
#[derive(Debug, Clone)]
pub struct Image {
    pub manifest: Manifest,
    pub version: String,
    pub dir: PathBuf,
}

impl Image {
    pub fn disk(&self) -> PathBuf {
        self.dir.join(&self.manifest.disk)
    }

    pub fn kernel(&self) -> Option<PathBuf> {
        self.manifest.kernel.as_ref().map(|k| self.dir.join(k))
    }

    pub fn initrd(&self) -> Option<PathBuf> {
        self.manifest.initrd.as_ref().map(|k| self.dir.join(k))
    }

    /// `name@version`, as users name one version.
    pub fn id(&self) -> String {
        format!("{}@{}", self.manifest.name, self.version)
    }
}

pub use crate::config::DEFAULT_IMAGE;

/// How to get an image that is missing.
pub const GET_IMAGE: &str = "build it with `vmlab image build --rootfs ALPINE_MINIROOTFS.tar.gz` or fetch one with `vmlab image fetch alpine`";

/// The current version of an image, or says how to get it.
pub fn load(home: &Home, name: &str) -> Result<Image> {
    let Some(version) = current_version(home, name) else {
        bail!(
            "image `{name}` is not installed in {}; {GET_IMAGE}",
            home.images_dir().display()
        );
    };
    load_version(home, name, &version)
}

/// One version of an image (the one a VM was created from).
pub fn load_version(home: &Home, name: &str, version: &str) -> Result<Image> {
    let dir = home.image_dir(name).join(version);
    let path = dir.join(MANIFEST);
    let text = std::fs::read_to_string(&path).with_context(|| {
        format!(
            "image `{name}@{version}` is not installed (no {})",
            path.display()
        )
    })?;
    let manifest: Manifest = serde_json::from_str(&text).with_context(|| {
        format!(
            "{} is corrupt; remove it with `vmlab image rm {name}@{version}` and build or fetch again",
            path.display()
        )
    })?;
    let image = Image {
        manifest,
        version: version.to_string(),
        dir,
    };
    if !image.disk().exists() {
        bail!(
            "image `{}` has no disk at {}; build or fetch it again",
            image.id(),
            image.disk().display()
        );
    }
    Ok(image)
}

/// The version new VMs of `name` get; `None` when it is not installed.
pub fn current_version(home: &Home, name: &str) -> Option<String> {
    let link = std::fs::read_link(home.image_dir(name).join(CURRENT)).ok()?;
    Some(link.file_name()?.to_string_lossy().into_owned())
}

/// All versions of one image, and which of them is current.
#[derive(Debug, Clone)]
pub struct Installed {
    pub name: String,
    pub current: Option<String>,
    pub versions: Vec<Image>,
}

/// Every installed image with its versions, by name; versions oldest first.
pub fn list(home: &Home) -> Result<Vec<Installed>> {
    let mut out = Vec::new();
    for name in dir_names(&home.images_dir())? {
        let dir = home.image_dir(&name);
        let mut versions = Vec::new();
        for version in dir_names(&dir)? {
            if dir.join(&version).join(MANIFEST).exists() {
                versions.push(load_version(home, &name, &version)?);
            }
        }
        versions.sort_by_key(|i| modified(&i.dir.join(MANIFEST)));
        if !versions.is_empty() {
            out.push(Installed {
                current: current_version(home, &name),
                name,
                versions,
            });
        }
    }
    Ok(out)
}

/// Names of the visible subdirectories of `dir`, sorted; none when it is missing.
fn dir_names(dir: &Path) -> Result<Vec<String>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("reading {}", dir.display())),
    };
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry.with_context(|| format!("reading {}", dir.display()))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
        if is_dir && !name.starts_with('.') {
            names.push(name);
        }
    }
    names.sort();
    Ok(names)
}

fn modified(path: &Path) -> std::time::SystemTime {
    std::fs::metadata(path)
        .and_then(|m| m.modified())
        .unwrap_or(std::time::UNIX_EPOCH)
}

/// A directory a build or fetch fills; removed on drop unless installed.
/// Holds the image's build lock, so two builds of one name cannot race.
pub struct Staging {
    home: Home,
    name: String,
    dir: PathBuf,
    _build: FileLock,
}

/// Starts a new version of `name`.
pub fn stage(home: &Home, name: &str) -> Result<Staging> {
    crate::config::check_name("image", name)?;
    let image_dir = home.image_dir(name);
    crate::files::create_dir_traversable(&image_dir)?;
    let build = FileLock::exclusive(
        &image_dir.join("build.lock"),
        &format!("another build or fetch of image `{name}`"),
    )?;
    let dir = image_dir.join(format!(".staging-{}", std::process::id()));
    if dir.exists() {
        std::fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
    }
    std::fs::create_dir(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(Staging {
        home: home.clone(),
        name: name.to_string(),
        dir,
        _build: build,
    })
}

impl Staging {
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Writes the manifest, names the version after the content, installs it
    /// and makes it current. Installing content that is already installed
    /// only makes that version current.
    pub fn install(self, manifest: &Manifest) -> Result<Image> {
        if manifest.name != self.name {
            bail!(
                "internal: staging `{}` installed as `{}`",
                self.name,
                manifest.name
            );
        }
        write_atomic(
            &self.dir.join(MANIFEST),
            (serde_json::to_string_pretty(manifest)? + "\n").as_bytes(),
        )?;
        let version = content_version(&self.dir)?;
        let image_dir = self.home.image_dir(&self.name);
        let target = image_dir.join(&version);
        if !target.exists() {
            std::fs::rename(&self.dir, &target)
                .with_context(|| format!("installing {}", target.display()))?;
        }
        let tmp = image_dir.join(".current.tmp");
        let _ = std::fs::remove_file(&tmp);
        std::os::unix::fs::symlink(&version, &tmp)
            .with_context(|| format!("creating {}", tmp.display()))?;
        std::fs::rename(&tmp, image_dir.join(CURRENT))
            .with_context(|| format!("making {version} the current version of `{}`", self.name))?;
        load_version(&self.home, &self.name, &version)
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The first 12 hex digits of a SHA-256 over the names and contents of the
/// files in `dir`: equal content, equal version.
fn content_version(dir: &Path) -> Result<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    let mut listing = String::new();
    for name in names {
        let digests = digest::of_file(&dir.join(&name))?;
        listing.push_str(&format!("{name} {}\n", digests.sha256));
    }
    Ok(digest::sha256(listing.as_bytes())[..12].to_string())
}

/// `(image, version)` → the `lab/vm` overlays backed by it.
pub type Usage = BTreeMap<(String, String), Vec<String>>;

/// Which versions the overlays of every lab in this home are backed by
/// (directly, or through a template of the version).
pub fn usage(home: &Home) -> Result<Usage> {
    let mut usage = Usage::new();
    for (backing, users) in overlay_users(home)? {
        if let Some(key) = version_of_disk(home, Path::new(&backing)) {
            usage.entry(key).or_default().extend(users);
        }
    }
    Ok(usage)
}

/// Backing file (as its overlays name it) → the `lab/vm` overlays on it.
pub fn overlay_users(home: &Home) -> Result<BTreeMap<String, Vec<String>>> {
    let labs_dir = home.root().join("labs");
    let mut users = BTreeMap::<String, Vec<String>>::new();
    for lab in dir_names(&labs_dir)? {
        let vms_dir = home.lab(&lab).dir.join("vms");
        for vm in dir_names(&vms_dir)? {
            let overlay = home.lab(&lab).vm(&vm).overlay();
            if let Some(backing) = backing_file(&overlay)? {
                users
                    .entry(backing)
                    .or_default()
                    .push(format!("{lab}/{vm}"));
            }
        }
    }
    Ok(users)
}

/// Where the templates saved from `image` live.
pub fn templates_dir(image: &Image) -> PathBuf {
    image.dir.join("templates")
}

/// `images/<name>/<version>/<disk>` → `(name, version)`.
fn version_of_disk(home: &Home, disk: &Path) -> Option<(String, String)> {
    let rel = disk.strip_prefix(home.images_dir()).ok()?;
    let mut parts = rel.components().map(|c| c.as_os_str().to_string_lossy());
    Some((parts.next()?.into_owned(), parts.next()?.into_owned()))
}

/// The backing file named in a qcow2 header, `None` when the file is missing
/// or has none. Header (big-endian): magic `QFI\xfb`, version u32, backing
/// file offset u64, backing file size u32.
pub fn backing_file(qcow2: &Path) -> Result<Option<String>> {
    let mut file = match std::fs::File::open(qcow2) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("opening {}", qcow2.display())),
    };
    let mut header = [0u8; 20];
    if file.read_exact(&mut header).is_err() || &header[..4] != b"QFI\xfb" {
        return Ok(None);
    }
    let offset = u64::from_be_bytes(header[8..16].try_into().expect("8 bytes"));
    let size = u32::from_be_bytes(header[16..20].try_into().expect("4 bytes"));
    if offset == 0 || size == 0 || size > 4096 {
        return Ok(None);
    }
    use std::io::{Seek, SeekFrom};
    let mut name = vec![0u8; size as usize];
    file.seek(SeekFrom::Start(offset))
        .and_then(|_| file.read_exact(&mut name))
        .with_context(|| format!("reading the backing file name of {}", qcow2.display()))?;
    Ok(Some(String::from_utf8_lossy(&name).into_owned()))
}

/// Deletes one version (`name@version`) or every version of an image;
/// refuses while any overlay uses what would go, and refuses the current
/// version alone (remove the whole image, or build a new current first).
pub fn remove(home: &Home, name: &str, version: Option<&str>) -> Result<Vec<String>> {
    let installed = list(home)?
        .into_iter()
        .find(|i| i.name == name)
        .with_context(|| {
            format!("image `{name}` is not installed; `vmlab image list` shows what is")
        })?;
    let _lock = delete_lock(home, name)?;
    let doomed: Vec<&Image> = match version {
        None => installed.versions.iter().collect(),
        Some(v) => {
            let Some(image) = installed.versions.iter().find(|i| i.version == v) else {
                bail!("image `{name}` has no version `{v}`; `vmlab image list` shows them");
            };
            if installed.current.as_deref() == Some(v) && installed.versions.len() > 1 {
                bail!(
                    "`{name}@{v}` is the current version; remove the whole image with `vmlab image rm {name}`, or build a new version first"
                );
            }
            vec![image]
        }
    };
    let usage = usage(home)?;
    for image in &doomed {
        if let Some(users) = usage.get(&(name.to_string(), image.version.clone())) {
            bail!(
                "`{}` is used by {}; remove those VMs with `vmlab down` first",
                image.id(),
                users.join(", ")
            );
        }
    }
    let removed: Vec<String> = doomed.iter().map(|i| i.id()).collect();
    if doomed.len() == installed.versions.len() {
        let dir = home.image_dir(name);
        std::fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
    } else {
        for image in doomed {
            std::fs::remove_dir_all(&image.dir)
                .with_context(|| format!("removing {}", image.dir.display()))?;
        }
    }
    Ok(removed)
}

/// Deletes every version that is neither current nor used by an overlay.
pub fn prune(home: &Home) -> Result<Vec<String>> {
    let mut removed = Vec::new();
    for installed in list(home)? {
        let _lock = delete_lock(home, &installed.name)?;
        let usage = usage(home)?;
        for image in &installed.versions {
            let key = (installed.name.clone(), image.version.clone());
            if installed.current.as_ref() == Some(&image.version) || usage.contains_key(&key) {
                continue;
            }
            std::fs::remove_dir_all(&image.dir)
                .with_context(|| format!("removing {}", image.dir.display()))?;
            removed.push(image.id());
        }
    }
    Ok(removed)
}

/// Held shared by `up` from choosing a version until its overlays exist, so
/// that version cannot be deleted in between.
pub fn use_lock(home: &Home, name: &str) -> Result<FileLock> {
    FileLock::shared(
        &home.image_dir(name).join("lock"),
        &format!("a removal of image `{name}`"),
    )
}

fn delete_lock(home: &Home, name: &str) -> Result<FileLock> {
    FileLock::exclusive(
        &home.image_dir(name).join("lock"),
        &format!("`vmlab up` to finish creating disks on image `{name}`"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn manifest(name: &str) -> Manifest {
        Manifest {
            name: name.into(),
            disk: "disk.qcow2".into(),
            kernel: None,
            initrd: None,
            cmdline: None,
            source: "test".into(),
            ssh_user: "root".into(),
        }
    }

    fn install(home: &Home, name: &str, disk: &[u8]) -> Image {
        let staging = stage(home, name).unwrap();
        std::fs::write(staging.dir().join("disk.qcow2"), disk).unwrap();
        staging.install(&manifest(name)).unwrap()
    }

    /// A qcow2 header naming `backing`, as qemu-img writes it.
    fn overlay_on(path: &Path, backing: &Path) {
        let name = backing.to_str().unwrap().as_bytes();
        let mut header = b"QFI\xfb\0\0\0\x03".to_vec();
        header.extend(72u64.to_be_bytes());
        header.extend((name.len() as u32).to_be_bytes());
        header.resize(72, 0);
        header.extend(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, header).unwrap();
    }

    #[test]
    fn a_rebuild_is_a_new_version_and_leaves_the_old_one_intact() {
        let dir = tempfile::tempdir().unwrap();
        let home = Home::new(dir.path());
        let v1 = install(&home, "img", b"first");
        let old_disk = v1.disk();
        let v2 = install(&home, "img", b"second");
        assert_ne!(v1.version, v2.version);
        assert_eq!(std::fs::read(&old_disk).unwrap(), b"first");
        assert_eq!(load(&home, "img").unwrap().version, v2.version);
        assert_eq!(
            load_version(&home, "img", &v1.version).unwrap().disk(),
            old_disk
        );
        // The same content again is the same version, made current.
        let again = install(&home, "img", b"first");
        assert_eq!(again.version, v1.version);
        assert_eq!(load(&home, "img").unwrap().version, v1.version);
        let listed = list(&home).unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].versions.len(), 2);
        assert!(
            !home
                .image_dir("img")
                .join(format!(".staging-{}", std::process::id()))
                .exists()
        );
    }

    #[test]
    fn a_failed_build_leaves_no_version() {
        let dir = tempfile::tempdir().unwrap();
        let home = Home::new(dir.path());
        let staging = stage(&home, "img").unwrap();
        std::fs::write(staging.dir().join("disk.qcow2"), b"half").unwrap();
        drop(staging);
        assert!(list(&home).unwrap().is_empty());
        let err = load(&home, "img").unwrap_err().to_string();
        assert!(err.starts_with("image `img` is not installed in "), "{err}");
    }

    #[test]
    fn versions_in_use_are_kept_and_unused_ones_pruned() {
        let dir = tempfile::tempdir().unwrap();
        let home = Home::new(dir.path());
        let v1 = install(&home, "img", b"one");
        let v2 = install(&home, "img", b"two");
        let v3 = install(&home, "img", b"three");
        overlay_on(&home.lab("default").vm("vm-1").overlay(), &v1.disk());
        let usage = usage(&home).unwrap();
        assert_eq!(
            usage.get(&("img".into(), v1.version.clone())),
            Some(&vec!["default/vm-1".to_string()])
        );

        let err = remove(&home, "img", Some(&v1.version))
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            format!(
                "`img@{}` is used by default/vm-1; remove those VMs with `vmlab down` first",
                v1.version
            )
        );
        let err = remove(&home, "img", Some(&v3.version))
            .unwrap_err()
            .to_string();
        assert!(err.contains("is the current version"), "{err}");
        assert!(
            remove(&home, "img", None).is_err(),
            "the whole image is in use"
        );

        assert_eq!(prune(&home).unwrap(), [v2.id()]);
        let left: Vec<String> = list(&home).unwrap()[0]
            .versions
            .iter()
            .map(|i| i.version.clone())
            .collect();
        assert_eq!(left.len(), 2);
        assert!(left.contains(&v1.version) && left.contains(&v3.version));

        std::fs::remove_dir_all(home.lab("default").dir).unwrap();
        assert_eq!(remove(&home, "img", Some(&v1.version)).unwrap(), [v1.id()]);
        assert_eq!(remove(&home, "img", None).unwrap(), [v3.id()]);
        assert!(!home.image_dir("img").exists());
    }

    #[test]
    fn a_clone_keeps_its_templates_version_and_the_templates_go_with_it() {
        let dir = tempfile::tempdir().unwrap();
        let home = Home::new(dir.path());
        let v1 = install(&home, "img", b"one");
        let template_disk = templates_dir(&v1).join("qemu-512m").join("overlay.qcow2");
        overlay_on(&template_disk, &v1.disk());
        install(&home, "img", b"two");
        overlay_on(&home.lab("l").vm("vm-1").overlay(), &template_disk);
        assert_eq!(
            overlay_users(&home).unwrap()[&template_disk.display().to_string()],
            ["l/vm-1"]
        );
        assert!(prune(&home).unwrap().is_empty(), "a clone uses v1");
        assert!(remove(&home, "img", Some(&v1.version)).is_err());
        std::fs::remove_dir_all(home.lab("l").dir).unwrap();
        assert_eq!(prune(&home).unwrap(), [v1.id()]);
        assert!(!template_disk.exists());
    }

    #[test]
    fn backing_file_comes_from_the_header() {
        let dir = tempfile::tempdir().unwrap();
        let overlay = dir.path().join("o.qcow2");
        overlay_on(&overlay, Path::new("/x/images/a/b/disk.qcow2"));
        assert_eq!(
            backing_file(&overlay).unwrap().as_deref(),
            Some("/x/images/a/b/disk.qcow2")
        );
        std::fs::write(&overlay, b"not a qcow2").unwrap();
        assert_eq!(backing_file(&overlay).unwrap(), None);
        assert_eq!(backing_file(&dir.path().join("missing")).unwrap(), None);
    }
}
