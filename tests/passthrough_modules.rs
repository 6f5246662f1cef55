//! A host where VFIO is not loaded yet: prepare loads vfio_pci and vfio_iommu_type1 through
//! HostOps first; release gives the devices back and leaves the modules loaded (a module
//! load has no inverse); a module that fails to load is reported with the remedy and
//! nothing else changes.

use std::path::{Path, PathBuf};

use vm_device::gpu_passthrough::{prepare, PrepareOptions};
use vm_device::host::SimHost;
use vm_device_host::prelude::*;
use vm_device_host::PciAddress;
use vm_device_sim::faults::{Fault, FaultPlan};
use vm_device_sim::Snapshot;

const Q35: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/real/qemu-q35-viommu");

/// The QEMU recording with vfio_pci, vfio_pci_core and vfio_iommu_type1 not loaded.
fn host_without_vfio() -> (tempfile::TempDir, SimHost) {
    let tree = tempfile::tempdir().unwrap();
    vm_device_sim::copy_fixture(Path::new(Q35), tree.path()).unwrap();
    let modules = tree.path().join("proc/modules");
    let kept: String = std::fs::read_to_string(&modules)
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with("vfio_pci") && !l.starts_with("vfio_iommu_type1"))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(&modules, kept).unwrap();
    let _ = std::fs::remove_dir_all(tree.path().join("sys/bus/pci/drivers/vfio-pci"));
    let h = SimHost::from_fixture(tree.path()).unwrap();
    (tree, h)
}

/// Paths a module load changes for good (the module list, the driver's directory).
fn module_state(p: &Path) -> bool {
    p == Path::new("/proc/modules")
        || p.starts_with("/sys/bus/pci/drivers/vfio-pci")
        || p.starts_with("/sys/module")
}

fn diff(before: &Snapshot, after: &Snapshot) -> Vec<PathBuf> {
    let mut d: Vec<PathBuf> = before
        .iter()
        .filter(|(k, v)| after.get(*k) != Some(v))
        .map(|(k, _)| k.clone())
        .collect();
    d.extend(after.keys().filter(|k| !before.contains_key(*k)).cloned());
    d.retain(|p| !module_state(p));
    d
}

fn opts(s: &Path) -> PrepareOptions {
    PrepareOptions {
        allow_boot_vga: false,
        state_dir: s.to_path_buf(),
    }
}

#[test]
fn prepare_loads_vfio_first_and_release_leaves_only_the_modules_loaded() {
    let (_tree, h) = host_without_vfio();
    let addr: PciAddress = "0000:01:00.0".parse().unwrap();
    let before = h.snapshot();
    let state = tempfile::tempdir().unwrap();
    let p = prepare(&h, &addr, &opts(state.path())).unwrap_or_else(|e| panic!("{e}"));
    let loads: Vec<String> = p
        .plan()
        .plan
        .steps
        .iter()
        .take(2)
        .map(|s| s.action.describe())
        .collect();
    assert_eq!(loads, ["modprobe vfio_pci", "modprobe vfio_iommu_type1"]);
    assert_eq!(
        h.link_name(Path::new("/sys/bus/pci/devices/0000:01:00.0/driver"))
            .unwrap(),
        "vfio-pci"
    );
    p.release().unwrap();
    let d = diff(&before, &h.snapshot());
    assert!(d.is_empty(), "besides the modules: {d:?}");
    assert!(h
        .loaded_modules()
        .unwrap()
        .contains(&"vfio_pci".to_string()));
}

#[test]
fn a_missing_vfio_module_is_reported_with_the_remedy_and_changes_nothing() {
    for nth in [1, 2] {
        let (_tree, h) = host_without_vfio();
        let before = h.snapshot();
        let state = tempfile::tempdir().unwrap();
        h.set_faults(FaultPlan::new().rule(Fault::modprobe("").nth(nth).errno(2)));
        let e = prepare(&h, &"0000:01:00.0".parse().unwrap(), &opts(state.path())).unwrap_err();
        assert_eq!(e.undone_fully(), Some(true), "{e}");
        let text = e.to_string();
        assert!(text.contains("modinfo"), "{text}");
        let d = diff(&before, &h.snapshot());
        assert!(d.is_empty(), "modprobe #{nth}: {d:?}");
    }
}

#[test]
fn killed_around_a_module_load_or_a_later_write_restore_leaves_only_the_modules() {
    let faults = [
        Fault::modprobe("").nth(1).die(),
        Fault::modprobe("").nth(1).die_after(),
        Fault::modprobe("").nth(2).die_after(),
        Fault::write("").nth(1).die_after(),
        Fault::write("").nth(3).die_after(),
    ];
    for f in faults {
        let (_tree, h) = host_without_vfio();
        let before = h.snapshot();
        let state = tempfile::tempdir().unwrap();
        h.set_faults(FaultPlan::new().rule(f.clone()));
        let r = prepare(&h, &"0000:01:00.0".parse().unwrap(), &opts(state.path()));
        assert!(h.is_dead(), "{f:?}: the fault kills");
        drop(r);
        let reborn = h.fork();
        let report = vm_device::gpu_passthrough::restore(&reborn, state.path());
        assert!(report.complete(), "{f:?}: {report:?}");
        let d = diff(&before, &reborn.snapshot());
        assert!(d.is_empty(), "{f:?}: {d:?}");
        assert!(
            !state.path().join("journal/group-7.json").exists(),
            "{f:?}: journal left"
        );
    }
}
