//! Small file-system helpers every module shares.

use std::io::Write;
use std::path::Path;

use anyhow::{Context, Result};

/// Writes `data` to `path` so that readers see the old content or the new,
/// never half of it: a temporary sibling, fsync, rename.
pub fn write_atomic(path: &Path, data: &[u8]) -> Result<()> {
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let tmp = path.with_file_name(format!(".{name}.{}.tmp", std::process::id()));
    let write = || -> std::io::Result<()> {
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(data)?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)
    };
    write().with_context(|| {
        let _ = std::fs::remove_file(&tmp);
        format!("writing {}", path.display())
    })
}

/// A directory others may pass through but not list (`0711`): QEMU, running
/// as libvirt's own user, must reach the overlays inside; secrets in it are
/// protected by their own `0600` mode.
pub fn create_dir_traversable(dir: &Path) -> Result<()> {
    create_dir_mode(dir, 0o711)
}

fn create_dir_mode(dir: &Path, mode: u32) -> Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(mode)
        .create(dir)
        .with_context(|| format!("creating {}", dir.display()))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("setting the mode of {}", dir.display()))
}

/// An advisory lock (`flock`) on a file, released on drop. Several holders
/// may share it, or one may hold it exclusively.
#[derive(Debug)]
pub struct FileLock {
    _file: std::fs::File,
}

impl FileLock {
    /// Waits for the exclusive lock; says on stderr why it waits, naming `holder`.
    pub fn exclusive(path: &Path, holder: &str) -> Result<Self> {
        Self::acquire(path, holder, false)
    }

    /// Waits for a shared lock (only an exclusive holder keeps it out).
    pub fn shared(path: &Path, holder: &str) -> Result<Self> {
        Self::acquire(path, holder, true)
    }

    /// The exclusive lock if nobody holds the lock in any mode, else `None`.
    pub fn try_exclusive(path: &Path) -> Result<Option<Self>> {
        let file = open_lock_file(path)?;
        match file.try_lock() {
            Ok(()) => Ok(Some(Self { _file: file })),
            Err(std::fs::TryLockError::WouldBlock) => Ok(None),
            Err(std::fs::TryLockError::Error(e)) => {
                Err(e).with_context(|| format!("locking {}", path.display()))
            }
        }
    }

    fn acquire(path: &Path, holder: &str, shared: bool) -> Result<Self> {
        let file = open_lock_file(path)?;
        let attempt = if shared {
            file.try_lock_shared()
        } else {
            file.try_lock()
        };
        match attempt {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                tracing::warn!("waiting for {holder} to finish…");
                if shared {
                    file.lock_shared()
                } else {
                    file.lock()
                }
                .with_context(|| format!("locking {}", path.display()))?;
            }
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(e).with_context(|| format!("locking {}", path.display()));
            }
        }
        Ok(Self { _file: file })
    }
}

fn open_lock_file(path: &Path) -> Result<std::fs::File> {
    std::fs::File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::files_in;

    #[test]
    fn atomic_write_replaces_and_leaves_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        write_atomic(&path, b"one").unwrap();
        write_atomic(&path, b"two").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"two");
        assert_eq!(files_in(dir.path()), ["state.json"]);
        let err = write_atomic(&dir.path().join("no/such/dir/x"), b"")
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("writing ") && err.ends_with("no/such/dir/x"),
            "{err}"
        );
    }

    #[test]
    fn shared_holders_coexist_and_keep_exclusive_out() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lock");
        let a = FileLock::shared(&path, "a").unwrap();
        let b = FileLock::shared(&path, "b").unwrap();
        assert!(FileLock::try_exclusive(&path).unwrap().is_none());
        drop((a, b));
        let held = FileLock::try_exclusive(&path).unwrap().expect("free");
        assert!(FileLock::try_exclusive(&path).unwrap().is_none());
        drop(held);
    }

    #[test]
    fn traversable_dirs_hide_their_listing() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let lab = dir.path().join("a/b");
        create_dir_traversable(&lab).unwrap();
        let mode = std::fs::metadata(&lab).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o711);
    }
}
