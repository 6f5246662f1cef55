//! Configuration files (mdevctl definitions) on a simulated host: kept in its tree with the
//! real host's rules, and by `--sim-state` for the next process.

mod common;

use std::path::Path;

use common::*;
use vm_device_host::prelude::*;
use vm_device_sim::SimHost;

const ROOT: &str = "/";
const ELOOP: i32 = 40;
const EEXIST: i32 = 17;
const ENOTEMPTY: i32 = 39;

#[test]
fn a_definition_is_written_read_and_removed_in_the_tree() {
    let h = lab();
    let start = h.snapshot();
    let root = Path::new(ROOT);
    h.create_dir(root, Path::new("etc/mdevctl.d/mtty")).unwrap();
    let rel = Path::new("etc/mdevctl.d/mtty/f");
    h.write_file(root, rel, b"{}").unwrap();
    assert_eq!(h.read(Path::new("/etc/mdevctl.d/mtty/f")).unwrap(), b"{}");
    let again = h.write_file(root, rel, b"[]").unwrap_err();
    assert_eq!(again.raw_os_error(), Some(EEXIST), "{again}");
    let busy = h
        .remove_dir(root, Path::new("etc/mdevctl.d/mtty"))
        .unwrap_err();
    assert_eq!(busy.raw_os_error(), Some(ENOTEMPTY), "{busy}");
    h.remove_file(root, rel).unwrap();
    for d in ["etc/mdevctl.d/mtty", "etc/mdevctl.d", "etc"] {
        h.remove_dir(root, Path::new(d)).unwrap();
    }
    assert_eq!(h.snapshot(), start);
    for bad in ["../x", "/etc/x", "etc/../x"] {
        assert!(h.write_file(root, Path::new(bad), b"x").is_err(), "{bad}");
    }
}

#[test]
fn a_link_under_the_root_is_refused() {
    let tree = tempfile::tempdir().unwrap();
    vm_device_sim::copy_fixture(&real("qemu-q35-viommu"), tree.path()).unwrap();
    std::fs::create_dir_all(tree.path().join("etc")).unwrap();
    std::fs::create_dir_all(tree.path().join("elsewhere")).unwrap();
    std::os::unix::fs::symlink("../elsewhere", tree.path().join("etc/mdevctl.d")).unwrap();
    let h = SimHost::from_fixture(tree.path()).unwrap();
    let root = Path::new(ROOT);
    let e = h
        .create_dir(root, Path::new("etc/mdevctl.d/mtty"))
        .unwrap_err();
    assert_eq!(e.raw_os_error(), Some(ELOOP), "{e}");
    let e = h
        .write_file(root, Path::new("etc/mdevctl.d/f"), b"x")
        .unwrap_err();
    assert_eq!(e.raw_os_error(), Some(ELOOP), "{e}");
    assert!(h.list_dir(Path::new("/elsewhere")).unwrap().is_empty());
}

#[test]
fn sim_state_keeps_definitions_for_the_next_process() {
    let state = tempfile::tempdir().unwrap();
    let fixture = real("qemu-q35-viommu");
    let root = Path::new(ROOT);
    {
        let h = SimHost::from_fixture_with_state(&fixture, state.path()).unwrap();
        h.create_dir(root, Path::new("etc/mdevctl.d/mtty")).unwrap();
        h.write_file(root, Path::new("etc/mdevctl.d/mtty/f"), b"{}")
            .unwrap();
    }
    let next = SimHost::from_fixture_with_state(&fixture, state.path()).unwrap();
    assert_eq!(
        next.read(Path::new("/etc/mdevctl.d/mtty/f")).unwrap(),
        b"{}"
    );
    next.remove_file(root, Path::new("etc/mdevctl.d/mtty/f"))
        .unwrap();
    let last = SimHost::from_fixture_with_state(&fixture, state.path()).unwrap();
    assert!(!last.exists(Path::new("/etc/mdevctl.d/mtty/f")));
}
