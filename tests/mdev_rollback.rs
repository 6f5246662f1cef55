//! A failure at any host operation of a mediated-rung plan leaves the host as it was
//! (`SimHost::snapshot()` byte-equal), and a process killed mid-plan is undone from its
//! journal.

mod mdev_common;

use std::path::Path;

use mdev_common::*;
use vm_device::gpu_mdev::lifecycle::{
    self, ApplyOptions, CreateRequest, Persist, Planned, UuidSource,
};
use vm_device::gpu_mdev::{execute, MdevError, StartMode, TypeRequest};
use vm_device::host::SimHost;
use vm_device::inventory::HostInventory;
use vm_device_host::prelude::*;
use vm_device_sim::faults::{Fault, FaultPlan};

fn req(wanted: &str, parent: Option<&str>, persist: Option<Persist>) -> CreateRequest {
    CreateRequest {
        ty: TypeRequest {
            wanted: wanted.into(),
            parent: parent.map(str::to_string),
            numa_node: None,
        },
        uuid: UuidSource::Vm {
            name: "rollback".into(),
            index: 0,
        },
        persist,
    }
}

/// Applies `planned` once per host operation it performs, failing the n-th operation with
/// EIO each time; every failure must leave the tree (its config root included) as before.
/// Returns how many runs failed.
fn fault_every_operation(
    make: impl Fn() -> SimHost,
    planned: impl Fn(&SimHost, &Path) -> Planned,
    persist_root: bool,
) -> usize {
    let mut failures = 0;
    for n in 1..=64u32 {
        let h = make();
        let dir = tempfile::tempdir().unwrap();
        // Definitions go to the simulated host's own /etc (through the seam), so the
        // snapshot covers them; mdevctl's directory exists, as where mdevctl is installed.
        let root = Path::new("/");
        if persist_root {
            h.create_dir(root, Path::new("etc/mdevctl.d")).unwrap();
        }
        let p = planned(&h, root);
        let start = h.snapshot();
        let opts = ApplyOptions {
            state_dir: Some(dir.path().join("state")),
        };
        h.set_faults(FaultPlan::new().rule(Fault::op("*", "").nth(n).errno(EIO)));
        h.clear_ops();
        match lifecycle::apply(&h, &p, &opts) {
            Ok(_) => {
                // The fault never fired: every operation of the plan has been failed once.
                if h.ops().len() < n as usize {
                    assert!(failures > 0, "no operation failed");
                    return failures;
                }
            }
            Err(e) => {
                failures += 1;
                assert!(e.undone(), "op {n}: {e}");
                assert_eq!(h.snapshot(), start, "op {n}: {e}");
                // The journal is gone once the plan was undone.
                let journals = dir.path().join("state/journal");
                assert!(
                    !journals.exists() || std::fs::read_dir(&journals).unwrap().next().is_none(),
                    "op {n}: journal left behind"
                );
            }
        }
    }
    panic!("the plan did more than 64 host operations");
}

#[test]
fn mdev_create_fault_at_every_operation_leaves_the_lab_as_before() {
    let failures = fault_every_operation(
        lab,
        |h, root| {
            let persist = Persist {
                start: StartMode::Auto,
                config_root: root.to_path_buf(),
            };
            lifecycle::plan_create(
                &HostInventory::scan(h),
                &req("mbochs-medium", None, Some(persist)),
            )
            .unwrap()
        },
        true,
    );
    assert!(failures >= 3, "{failures}");
}

#[test]
fn gvtg_create_fault_at_every_operation_leaves_the_host_as_before() {
    fault_every_operation(
        || host("intel-desktop-gvtg-dgpu"),
        |h, _| {
            lifecycle::plan_create(&HostInventory::scan(h), &req("GVTg_V5_8", None, None)).unwrap()
        },
        false,
    );
}

#[test]
fn mdev_remove_fault_at_every_operation_leaves_the_device() {
    let make = || {
        let h = host("bmc-datacenter-nvidia-vgpu");
        lifecycle::create(&h, &req("nvidia-231", None, None), &ApplyOptions::default()).unwrap();
        h
    };
    fault_every_operation(
        make,
        |h, _| {
            let inv = HostInventory::scan(h);
            let uuid = vm_device::gpu_mdev::ids::for_vm("rollback", 0).to_string();
            lifecycle::plan_remove(&inv, &uuid).unwrap()
        },
        false,
    );
}

#[test]
fn vendor_vfio_create_over_a_stale_type_fault_at_every_operation() {
    // A VF the user names that still carries a type: the plan clears it first.
    let make = || {
        let h = host("sriov-pf-with-vfs");
        lifecycle::create(
            &h,
            &req("nvidia-1153", Some("0000:41:00.5"), None),
            &ApplyOptions::default(),
        )
        .unwrap();
        h
    };
    let h = make();
    let p = lifecycle::plan_create(
        &HostInventory::scan(&h),
        &req("nvidia-1153", Some("0000:41:00.5"), None),
    )
    .unwrap();
    assert!(
        matches!(
            p.choice,
            vm_device::gpu_mdev::Choice::NvidiaVfio {
                stale: Some(1153),
                ..
            }
        ),
        "{:?}",
        p.choice
    );
    fault_every_operation(
        make,
        |h, _| {
            lifecycle::plan_create(
                &HostInventory::scan(h),
                &req("nvidia-1153", Some("0000:41:00.5"), None),
            )
            .unwrap()
        },
        false,
    );
}

#[test]
fn sriov_change_fault_at_every_operation_leaves_the_vfs() {
    let pf = "0000:4b:00.0".parse().unwrap();
    let make = || {
        let h = host("intel-flex-sriov-idle");
        lifecycle::set_num_vfs(&h, &pf, 3, &ApplyOptions::default()).unwrap();
        h
    };
    let mut failures = 0;
    for n in 1..=64u32 {
        let h = make();
        let plan = lifecycle::plan_sriov(&HostInventory::scan(&h), &pf, 2).unwrap();
        let start = h.snapshot();
        h.set_faults(FaultPlan::new().rule(Fault::op("*", "").nth(n).errno(EIO)));
        h.clear_ops();
        match execute(&h, &plan, &ApplyOptions::default()) {
            Ok(_) if h.ops().len() < n as usize => break,
            Ok(_) => {}
            Err(e) => {
                failures += 1;
                assert!(e.undone(), "op {n}: {e}");
                assert_eq!(h.snapshot(), start, "op {n}: {e}");
            }
        }
    }
    assert!(failures >= 4, "{failures}");
}

#[test]
fn failed_undo_says_what_is_left() {
    let h = lab();
    // The check after create fails (mdev_type unreadable) and so does the undo's remove.
    h.set_faults(
        FaultPlan::new()
            .rule(Fault::readlink("*/mdev_type").errno(EIO))
            .rule(Fault::write("*/remove").errno(EIO)),
    );
    let p = lifecycle::plan_create(&HostInventory::scan(&h), &req("mtty-1", None, None)).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let opts = ApplyOptions {
        state_dir: Some(dir.path().to_path_buf()),
    };
    let err = lifecycle::apply(&h, &p, &opts).unwrap_err();
    assert!(err.left_changes(), "{err}");
    let MdevError::StepFailed { left, index, .. } = &err else {
        panic!("{err}");
    };
    // Step 3: the check of the mdev_type link, after the create and the existence check.
    assert_eq!(*index, 3);
    // The failed undo, the origin check that proves the device is still there, and the
    // journal kept for restore.
    assert_eq!(left.len(), 3, "{left:?}");
    assert!(
        left[2].contains(
            &dir.path()
                .join("journal/mdev-mtty.json")
                .display()
                .to_string()
        ),
        "{left:?}"
    );
    assert!(
        left[0].contains("echo 1 > /sys/bus/mdev/devices/"),
        "{left:?}"
    );
    assert!(
        left[1].ends_with(
            "absent, but it points to `{}`"
                .replace("{}", &p.device)
                .as_str()
        ),
        "{left:?}"
    );
}

#[test]
fn killed_process_is_undone_from_its_journal() {
    let h = lab();
    let start = h.snapshot();
    let dir = tempfile::tempdir().unwrap();
    let opts = ApplyOptions {
        state_dir: Some(dir.path().to_path_buf()),
    };
    let p = lifecycle::plan_create(&HostInventory::scan(&h), &req("mdpy-vga", None, None)).unwrap();
    // The create takes effect, then the process dies before it can check or undo anything.
    h.set_faults(FaultPlan::new().rule(Fault::write("*/create").die_after()));
    let err = lifecycle::apply(&h, &p, &opts).unwrap_err();
    assert!(err.left_changes(), "{err}");
    let journal = vm_device::plan::Journal::path_for(dir.path(), "mdev-mdpy");
    assert!(journal.exists());
    // A new process (same kernel state) restores from the journal, as `vm-cli restore` does.
    let after = h.fork();
    assert_ne!(after.snapshot(), start);
    let report = vm_device::plan::restore_dead(&after, dir.path());
    assert!(report.complete(), "{report:?}");
    assert_eq!(report.outcomes.len(), 1);
    assert_eq!(after.snapshot(), start);
    assert!(!journal.exists());
}
