//! Fixture discovery shared by the integration tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

/// The repository root.
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `shared/` beside the repository (read-only design material and recorded hosts).
pub fn shared() -> PathBuf {
    if let Some(d) = std::env::var_os("VM_SHARED_DIR") {
        return PathBuf::from(d);
    }
    repo().join("../shared")
}

fn dirs_in(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.path())
                .filter(|p| p.is_dir())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// The project's own fixture hosts.
pub fn project_fixtures() -> Vec<PathBuf> {
    dirs_in(&repo().join("fixtures/hosts"))
}

/// Recorded trees in `shared/hosts/{real,public}`.
pub fn shared_trees() -> Vec<PathBuf> {
    let mut v = dirs_in(&shared().join("hosts/real"));
    v.extend(dirs_in(&shared().join("hosts/public")));
    v
}

/// Every host tree the manager must handle.
pub fn all_hosts() -> Vec<PathBuf> {
    let mut v = project_fixtures();
    v.extend(shared_trees());
    assert!(
        v.len() >= 10,
        "expected the project's fixtures and shared/hosts trees, found {v:?}"
    );
    v
}

/// A short stable name for a host tree (`real-qemu-q35-viommu`, `fixture-no-gpu-server`).
pub fn host_name(p: &Path) -> String {
    let name = p.file_name().unwrap().to_string_lossy().into_owned();
    let parent = p
        .parent()
        .unwrap()
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    match parent.as_str() {
        "hosts" => format!("fixture-{name}"),
        other => format!("{other}-{name}"),
    }
}

/// Copies a host tree into `dest` with real symlinks (links of flattened copies become
/// links again) and recreates the directories listed in `.fixture/empty-dirs`.
pub fn materialize(src: &Path, dest: &Path) {
    std::fs::create_dir_all(dest).unwrap();
    vm_device_sim::copy_fixture(src, dest).unwrap();
    if let Ok(list) = std::fs::read_to_string(src.join(".fixture/empty-dirs")) {
        for l in list.lines().filter(|l| !l.trim().is_empty()) {
            let _ = std::fs::create_dir_all(dest.join(l.trim()));
        }
    }
}
