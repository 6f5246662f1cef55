//! `prepare_batch`: several GPUs prepared one journaled, locked group at a time (the node
//! agent's start), and a failure in the middle giving back the groups prepared before it.

mod common;

use std::path::{Path, PathBuf};

use vm_device::gpu_passthrough::{prepare_batch, PrepareOptions, VFIO_PCI};
use vm_device::host::SimHost;
use vm_device::plan::{GroupLock, LockError};
use vm_device_host::{PciAddress, Sysfs};
use vm_device_sim::faults::{Fault, FaultPlan};

const EIO: i32 = 5;

/// Two GPUs in their own IOMMU groups (amdgpu in group 10, nvidia in group 16).
fn host() -> SimHost {
    let fx = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/hosts/numa-2node-gpus");
    SimHost::from_fixture(&fx).expect("fixture")
}

fn gpus() -> [PciAddress; 2] {
    [
        "0000:3b:00.0".parse().unwrap(),
        "0000:af:00.0".parse().unwrap(),
    ]
}

fn opts(state: &Path) -> PrepareOptions {
    PrepareOptions {
        allow_boot_vga: false,
        state_dir: state.to_path_buf(),
    }
}

fn driver(h: &SimHost, a: &PciAddress) -> Option<String> {
    h.read_link(&PathBuf::from(format!("/sys/bus/pci/devices/{a}/driver")))
        .ok()
        .and_then(|t| t.file_name().map(|n| n.to_string_lossy().into_owned()))
}

/// True while someone holds the lock of IOMMU group `g`.
fn held(state: &Path, g: u32) -> bool {
    matches!(
        GroupLock::try_acquire(state, &format!("group-{g}")),
        Err(LockError::Busy { .. })
    )
}

fn journals(state: &Path) -> usize {
    std::fs::read_dir(state.join("journal"))
        .map(|r| r.count())
        .unwrap_or(0)
}

#[test]
fn a_batch_prepares_each_group_under_its_own_journal_and_gives_them_back() {
    let h = host();
    let before = h.snapshot();
    let state = tempfile::tempdir().unwrap();
    let prepared = prepare_batch(&h, &gpus(), &opts(state.path())).expect("batch");
    assert_eq!(prepared.len(), 2);
    for (p, gpu) in prepared.iter().zip(gpus()) {
        assert!(p.covers(&gpu), "{gpu}");
        assert_eq!(driver(&h, &gpu).as_deref(), Some(VFIO_PCI), "{gpu}");
        assert!(p.journal_path().exists(), "{gpu}: no journal");
        assert!(
            held(state.path(), p.plan().group),
            "{gpu}: group not locked"
        );
    }
    assert_eq!(journals(state.path()), 2);
    for p in prepared.into_iter().rev() {
        assert!(p.release().expect("release").complete());
    }
    let d = common::snapshot_diff(&before, &h.snapshot());
    assert!(d.is_empty(), "host differs:\n{}", d.join("\n"));
    assert_eq!(journals(state.path()), 0);
}

#[test]
fn a_failure_in_the_middle_of_a_batch_gives_back_the_groups_before_it() {
    let h = host();
    let before = h.snapshot();
    let [first, second] = gpus();
    let native = driver(&h, &first);
    assert_eq!(native.as_deref(), Some("amdgpu"));
    let state = tempfile::tempdir().unwrap();
    // The second GPU's group fails after the first GPU's group is on vfio-pci.
    h.set_faults(
        FaultPlan::new().rule(Fault::write(format!("{second}/driver_override")).errno(EIO)),
    );
    let err = prepare_batch(&h, &gpus(), &opts(state.path())).expect_err("fault");
    assert_eq!(err.device, second);
    assert_eq!(err.source.undone_fully(), Some(true), "{err}");
    assert!(err.undo_left.is_empty(), "{err}");
    // The earlier group is back on its driver, and no journal or lock is left.
    assert_eq!(driver(&h, &first), native);
    assert_eq!(driver(&h, &second).as_deref(), Some("nvidia"));
    let d = common::snapshot_diff(&before, &h.snapshot());
    assert!(d.is_empty(), "host differs:\n{}", d.join("\n"));
    assert_eq!(journals(state.path()), 0, "journal left behind");
    for g in [10, 16] {
        assert!(!held(state.path(), g), "group {g} still locked");
    }
}

#[test]
fn a_batch_refusal_names_the_gpu_and_changes_nothing_after_undo() {
    let h = host();
    let before = h.snapshot();
    let state = tempfile::tempdir().unwrap();
    let missing: PciAddress = "0000:99:00.0".parse().unwrap();
    let err = prepare_batch(&h, &[gpus()[0], missing], &opts(state.path())).expect_err("absent");
    assert_eq!(err.device, missing);
    assert!(err.source.is_refusal(), "{err}");
    assert!(err.to_string().contains("0000:99:00.0"), "{err}");
    let d = common::snapshot_diff(&before, &h.snapshot());
    assert!(d.is_empty(), "host differs:\n{}", d.join("\n"));
    assert_eq!(journals(state.path()), 0);
}
