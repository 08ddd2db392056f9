//! Helpers shared by unit tests.

use std::path::Path;

use crate::config::Network;
use crate::lab::state::VmRecord;
use crate::units::Mib;

/// A lab state record with the default sizes.
pub fn vm_record(name: &str) -> VmRecord {
    VmRecord {
        name: name.into(),
        uuid: None,
        image: "img".into(),
        image_version: "0123456789ab".into(),
        network: Network::User,
        ssh_port: 40000,
        memory: Mib(512),
        max_memory: Mib(1024),
        vcpus: 1,
        max_vcpus: 2,
        ssh_user: "root".into(),
    }
}

/// Sorted names of the entries of `dir`; empty when it does not exist.
pub fn files_in(dir: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut names: Vec<String> = entries
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}
