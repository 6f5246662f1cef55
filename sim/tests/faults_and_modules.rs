//! Fault injection and module loads on the recorded QEMU q35 tree.

mod common;

use std::path::Path;

use common::*;
use vm_device_host::prelude::*;
use vm_device_host::HostError;
use vm_device_sim::faults::{is_hang, is_killed, Fault, FaultPlan};
use vm_device_sim::kernel::errno::*;
use vm_device_sim::SimHost;

#[test]
fn faulted_write_changes_nothing_and_counts_nth_call() {
    let h = lab()
        .with_faults(FaultPlan::new().rule(Fault::write("*/driver/unbind").nth(2).errno(EBUSY)));
    w(&h, format!("{DEV1}/driver_override"), b"vfio-pci\n").unwrap();
    w(&h, format!("{DEV2}/driver/unbind"), b"0000:02:00.0").unwrap();
    let before = h.snapshot();
    assert_eq!(
        werr(&h, format!("{DEV1}/driver/unbind"), b"0000:01:00.0"),
        Some(EBUSY)
    );
    assert_eq!(before, h.snapshot());
    // The third call goes through.
    w(&h, format!("{DEV1}/driver/unbind"), b"0000:01:00.0").unwrap();
    assert_eq!(driver(&h, DEV1), None);
}

#[test]
fn hang_is_recorded_and_reads_as_timeout() {
    let h = lab().with_faults(FaultPlan::new().rule(Fault::write(PROBE).hang()));
    w(&h, format!("{DEV1}/driver_override"), b"vfio-pci\n").unwrap();
    w(&h, format!("{DEV1}/driver/unbind"), b"0000:01:00.0").unwrap();
    let e = w(&h, PROBE, b"0000:01:00.0").unwrap_err();
    assert!(is_hang(&e), "{e}");
    assert_eq!(driver(&h, DEV1), None);
    assert_eq!(h.hangs(), vec![("write".to_string(), p(PROBE))]);
}

#[test]
fn die_kills_every_later_call_and_fork_reopens_the_state() {
    let h = lab().with_faults(FaultPlan::new().rule(Fault::write("drivers_probe").die()));
    w(&h, format!("{DEV1}/driver_override"), b"vfio-pci\n").unwrap();
    w(&h, format!("{DEV1}/driver/unbind"), b"0000:01:00.0").unwrap();
    let e = w(&h, PROBE, b"0000:01:00.0").unwrap_err();
    assert!(is_killed(&e), "{e}");
    assert!(h.is_dead());
    assert!(is_killed(&h.read(Path::new("/proc/cmdline")).unwrap_err()));
    assert!(is_killed(&h.load_module("vfio").unwrap_err()));
    assert!(h.kind(Path::new("/proc/cmdline")).is_none());
    // What the dead process left: unbound, override set, no probe.
    let after = h.fork();
    assert!(!after.is_dead());
    assert_eq!(driver(&after, DEV1), None);
    assert_eq!(r(&after, format!("{DEV1}/driver_override")), "vfio-pci");
    // "restore": back to the native driver.
    w(&after, format!("{DEV1}/driver_override"), b"\n").unwrap();
    w(&after, PROBE, b"0000:01:00.0").unwrap();
    assert_eq!(after.snapshot(), lab().snapshot());
}

#[test]
fn die_after_applies_the_write_then_kills() {
    let h = lab().with_faults(FaultPlan::new().rule(Fault::write("driver_override").die_after()));
    let e = w(&h, format!("{DEV1}/driver_override"), b"vfio-pci\n").unwrap_err();
    assert!(is_killed(&e));
    assert_eq!(r(&h.fork(), format!("{DEV1}/driver_override")), "vfio-pci");
}

#[test]
fn fork_closes_the_dead_process_fds_and_completes_held_unbinds() {
    let h = lab();
    w(&h, format!("{DEV1}/driver_override"), b"vfio-pci\n").unwrap();
    w(&h, format!("{DEV1}/driver/unbind"), b"0000:01:00.0").unwrap();
    w(&h, PROBE, b"0000:01:00.0").unwrap();
    h.open_device_fd(7, "0000:01:00.0");
    assert!(is_hang(
        &w(&h, format!("{DEV1}/driver/unbind"), b"0000:01:00.0").unwrap_err()
    ));
    let after = h.fork();
    assert_eq!(driver(&after, DEV1), None);
    assert!(!exists(&after, "/dev/vfio/7"));
    assert_eq!(r(&after, format!("{DEV1}/enable")), "0");
}

#[test]
fn read_list_readlink_and_modprobe_faults() {
    let h = lab().with_faults(
        FaultPlan::new()
            .rule(Fault::read("/proc/modules").errno(EIO))
            .rule(Fault::list("iommu_groups").errno(EACCES))
            .rule(Fault::readlink("*/driver").from_nth(2).errno(ENOENT))
            .rule(Fault::modprobe("vfio*").errno(EPERM))
            .rule(Fault::op("vfio:set_container", "").errno(EPERM)),
    );
    assert_eq!(
        h.read(Path::new("/proc/modules"))
            .unwrap_err()
            .raw_os_error(),
        Some(EIO)
    );
    assert_eq!(
        h.list_dir(Path::new("/sys/kernel/iommu_groups"))
            .unwrap_err()
            .raw_os_error(),
        Some(EACCES)
    );
    assert!(h.read_link(&p(&format!("{DEV1}/driver"))).is_ok());
    assert!(h.read_link(&p(&format!("{DEV1}/driver"))).is_err());
    match h.load_module("vfio-pci").unwrap_err() {
        HostError::Module { detail, .. } => {
            assert!(detail.contains("Operation not permitted"), "{detail}")
        }
        e => panic!("expected a module error, got {e}"),
    }
}

#[test]
fn unknown_module_is_modprobe_fatal() {
    let h = lab();
    match h.load_module("nosuchmod").unwrap_err() {
        HostError::Module { module, detail } => {
            assert_eq!(module, "nosuchmod");
            assert_eq!(
                detail,
                "modprobe: FATAL: Module nosuchmod not found in directory /lib/modules/6.1.0-56-amd64"
            );
        }
        e => panic!("expected a module error, got {e}"),
    }
}

#[test]
fn modules_available_file_and_loaded_modules_load() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join(".fixture")).unwrap();
    std::fs::create_dir_all(dir.path().join("proc")).unwrap();
    std::fs::write(
        dir.path().join(".fixture/modules-available"),
        "kvmgt\n# comment\n",
    )
    .unwrap();
    std::fs::write(dir.path().join("proc/modules"), "i915 100 0 - Live 0x0\n").unwrap();
    let h = SimHost::from_fixture(dir.path()).unwrap();
    h.load_module("i915").unwrap();
    h.load_module("kvmgt").unwrap();
    assert!(h.loaded_modules().unwrap().contains(&"kvmgt".to_string()));
    h.load_module("vfio_pci").unwrap();
    let loaded = h.loaded_modules().unwrap();
    for m in ["vfio", "vfio_iommu_type1", "vfio_pci_core", "vfio_pci"] {
        assert!(loaded.contains(&m.to_string()), "{m} in {loaded:?}");
    }
    assert!(exists(&h, "/dev/vfio/vfio"));
    assert!(h.load_module("kvm_amd").is_err());
}

#[test]
fn vfio_pci_unload_unbinds_and_reload_rebinds_overrides() {
    let h = lab();
    for (dev, a) in [(DEV1, "0000:01:00.0"), (DEV61, "0000:06:01.0")] {
        w(&h, format!("{dev}/driver_override"), b"vfio-pci\n").unwrap();
        w(&h, format!("{dev}/driver/unbind"), a.as_bytes()).unwrap();
        w(&h, PROBE, a.as_bytes()).unwrap();
    }
    assert!(exists(&h, "/dev/vfio/11"));
    // vfio_pci_core is used by vfio_pci.
    assert!(h.unload_module("vfio_pci_core").is_err());
    h.open_device_fd(7, "0000:01:00.0");
    let e = h.unload_module("vfio_pci").unwrap_err();
    assert!(
        e.to_string().contains("Resource temporarily unavailable"),
        "{e}"
    );
    h.close_device_fd(7, "0000:01:00.0");
    h.unload_module("vfio-pci").unwrap();
    assert_eq!(driver(&h, DEV1), None);
    assert_eq!(r(&h, format!("{DEV1}/driver_override")), "vfio-pci");
    assert!(!exists(&h, "/sys/bus/pci/drivers/vfio-pci"));
    assert!(!exists(&h, "/dev/vfio/7"));
    assert!(!exists(&h, "/dev/vfio/11"));
    // Probing while the driver is gone leaves the device unbound (rule 11).
    w(&h, PROBE, b"0000:01:00.0").unwrap();
    assert_eq!(driver(&h, DEV1), None);
    h.load_module("vfio-pci").unwrap();
    assert_eq!(driver(&h, DEV1).as_deref(), Some("vfio-pci"));
    assert_eq!(driver(&h, DEV61).as_deref(), Some("vfio-pci"));
    assert!(exists(&h, "/dev/vfio/7"));
    assert!(exists(&h, "/dev/vfio/11"));
}

#[test]
fn iommu_type1_unload_refused_while_a_container_uses_it() {
    let h = lab();
    h.set_group_claimed(7, true);
    assert!(h.unload_module("vfio_iommu_type1").is_err());
    h.set_group_claimed(7, false);
    h.unload_module("vfio_iommu_type1").unwrap();
}
