//! Fixture discovery shared by the integration tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use vm_device_sim::Snapshot;

/// The repository root.
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
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

/// Recorded trees kept in the repository: `fixtures/real` (real kernels) and
/// `fixtures/public` (hwloc's public trees).
pub fn shared_trees() -> Vec<PathBuf> {
    let mut v = dirs_in(&repo().join("fixtures/real"));
    v.extend(dirs_in(&repo().join("fixtures/public")));
    v
}

/// Every host tree the manager must handle.
pub fn all_hosts() -> Vec<PathBuf> {
    let mut v = project_fixtures();
    v.extend(shared_trees());
    assert!(
        v.len() >= 10,
        "expected the project's fixtures and recorded trees, found {v:?}"
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

/// The simulator recreates a rebound GPU's DRM node directories but not the files in them
/// (`drm/card1/dev`, `device`) that generated fixtures carry: a simulator limitation, not a
/// change left behind. Round-trip checks exempt exactly those files.
pub fn sim_drm_node_file(p: &Path) -> bool {
    let parts: Vec<String> = p
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    let n = parts.len();
    n >= 3
        && parts[n - 3] == "drm"
        && (parts[n - 2].starts_with("card") || parts[n - 2].starts_with("renderD"))
}

/// What differs between two snapshots, DRM node files excepted (see [`sim_drm_node_file`]).
pub fn snapshot_diff(before: &Snapshot, after: &Snapshot) -> Vec<String> {
    let mut out: Vec<String> = before
        .iter()
        .filter(|(k, v)| !sim_drm_node_file(k) && after.get(*k) != Some(v))
        .map(|(k, _)| format!("changed or gone: {}", k.display()))
        .collect();
    out.extend(
        after
            .keys()
            .filter(|k| !before.contains_key(*k))
            .map(|k| format!("new: {}", k.display())),
    );
    out
}
