//! The locks of one lab.
//!
//! `up` and `down` change the lab: they take `lock` exclusively and never
//! interleave. Long-running readers (`manage`, `monitor`, `bench`) hold
//! `use.lock` shared for hours; changes never wait for them and they never
//! wait for changes. They stay out of each other's way by rule instead:
//! a reader re-lists the lab's domains every round and drops a domain that
//! vanished, and `down` leaves the lab directory in place while a reader
//! holds `use.lock`.

use anyhow::Result;

use crate::files::{FileLock, create_dir_traversable};
use crate::paths::LabPaths;

/// For `up` and `down`: waits for another change of the same lab to finish.
pub fn change(paths: &LabPaths) -> Result<FileLock> {
    create_lab_dir(paths)?;
    FileLock::exclusive(
        &paths.lock(),
        "another `vmlab up` or `vmlab down` on this lab",
    )
}

/// For long-running readers; never waits.
pub fn reader(paths: &LabPaths) -> Result<FileLock> {
    create_lab_dir(paths)?;
    FileLock::shared(
        &paths.use_lock(),
        "`vmlab down` to check this lab's readers",
    )
}

/// `labs/` and `labs/<lab>/`, traversable for QEMU's user even when an
/// older vmlab made them private.
fn create_lab_dir(paths: &LabPaths) -> Result<()> {
    if let Some(labs) = paths.dir.parent() {
        create_dir_traversable(labs)?;
    }
    create_dir_traversable(&paths.dir)
}

/// Whether some long-running reader holds the lab.
pub fn readers_present(paths: &LabPaths) -> Result<bool> {
    if !paths.use_lock().exists() {
        return Ok(false);
    }
    Ok(FileLock::try_exclusive(&paths.use_lock())?.is_none())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::paths::Home;

    #[test]
    fn readers_never_block_changes_and_are_seen() {
        let dir = tempfile::tempdir().unwrap();
        let paths = Home::new(dir.path()).lab("t");
        assert!(!readers_present(&paths).unwrap());
        let r1 = reader(&paths).unwrap();
        let r2 = reader(&paths).unwrap();
        let c = change(&paths).expect("a change does not wait for readers");
        assert!(readers_present(&paths).unwrap());
        drop((r1, r2));
        assert!(!readers_present(&paths).unwrap());
        assert!(
            FileLock::try_exclusive(&paths.lock()).unwrap().is_none(),
            "changes exclude each other"
        );
        drop(c);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&paths.dir).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o711);
    }
}
