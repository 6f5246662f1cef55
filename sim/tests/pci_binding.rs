//! PCI binding, IOMMU groups and /dev/vfio on the recorded QEMU q35 tree: one test per rule
//! of `docs/kernel-sysfs-semantics.md` ("What a simulator must do").

mod common;

use std::path::Path;

use common::*;
use vm_device_host::prelude::*;
use vm_device_host::NodeKind;
use vm_device_sim::kernel::errno::*;

const OVR: &str = "/sys/bus/pci/devices/0000:01:00.0/driver_override";

fn to_vfio(h: &vm_device_sim::SimHost, dev: &str, addr: &str) {
    w(h, format!("{dev}/driver_override"), b"vfio-pci\n").unwrap();
    w(h, format!("{dev}/driver/unbind"), addr.as_bytes()).unwrap();
    w(h, PROBE, addr.as_bytes()).unwrap();
    assert_eq!(driver(h, dev).as_deref(), Some("vfio-pci"));
}

#[test]
fn fixture_links_stored_as_files_resolve() {
    let h = lab();
    assert_eq!(h.kind(&p(DEV1)), Some(NodeKind::Link));
    assert_eq!(r(&h, format!("{DEV1}/vendor")), "0x1234");
    assert_eq!(driver(&h, DEV1).as_deref(), Some("bochs-drm"));
    assert_eq!(
        h.native_driver("0000:01:00.0").as_deref(),
        Some("bochs-drm")
    );
    assert_eq!(h.native_driver("0000:05:00.0"), None);
}

#[test]
fn zero_byte_write_changes_nothing() {
    let h = lab();
    w(&h, OVR, b"vfio-pci").unwrap();
    let before = h.snapshot();
    w(&h, OVR, b"").unwrap();
    assert_eq!(r(&h, OVR), "vfio-pci");
    assert_eq!(before, h.snapshot());
}

#[test]
fn write_to_read_only_attribute_is_eacces() {
    let h = lab();
    assert_eq!(werr(&h, format!("{DEV1}/vendor"), b"0x1234"), Some(EACCES));
    assert_eq!(werr(&h, format!("{DEV1}/class"), b""), Some(EACCES));
    assert_eq!(r(&h, format!("{DEV1}/vendor")), "0x1234");
}

#[test]
fn missing_attributes_are_enoent() {
    let h = lab();
    // 06:02.0 has no reset method: neither `reset` nor `reset_method` exists.
    assert_eq!(werr(&h, format!("{DEV62}/reset"), b"1"), Some(ENOENT));
    assert_eq!(
        werr(&h, format!("{DEV62}/reset_method"), b"bus"),
        Some(ENOENT)
    );
    // The bridge has no driver, so no `driver/unbind`.
    assert_eq!(
        werr(&h, format!("{BRIDGE}/driver/unbind"), b"0000:05:00.0"),
        Some(ENOENT)
    );
    // Write-only attributes the recording could not hold are there for the kernel.
    assert_eq!(h.kind(&p(&format!("{DEV1}/reset"))), Some(NodeKind::File));
    assert_eq!(h.kind(&p(PROBE)), Some(NodeKind::File));
    assert_eq!(h.kind(&p(&format!("{DEV62}/reset"))), None);
    // ...and, being write-only, cannot be read.
    let e = h.read(&p(&format!("{DEV1}/reset"))).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(EACCES));
    let e = h.read(&p(&format!("{DEV62}/reset"))).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(ENOENT));
}

#[test]
fn driver_override_keeps_everything_before_the_first_newline() {
    let h = lab();
    w(&h, OVR, b"vfio-pci").unwrap();
    assert_eq!(h.read(&p(OVR)).unwrap(), b"vfio-pci\n");
    w(&h, OVR, b"  \n").unwrap();
    assert_eq!(h.read(&p(OVR)).unwrap(), b"  \n");
    w(&h, OVR, b"vfio-pci\nrest").unwrap();
    assert_eq!(h.read(&p(OVR)).unwrap(), b"vfio-pci\n");
}

#[test]
fn driver_override_newline_clears_to_null() {
    let h = lab();
    w(&h, OVR, b"vfio-pci\n").unwrap();
    w(&h, OVR, b"\n").unwrap();
    assert_eq!(h.read(&p(OVR)).unwrap(), b"(null)\n");
    w(&h, OVR, b"vfio-pci\n").unwrap();
    w(&h, OVR, b"\0").unwrap();
    assert_eq!(h.read(&p(OVR)).unwrap(), b"(null)\n");
}

#[test]
fn driver_override_never_rebinds() {
    let h = lab();
    w(&h, OVR, b"vfio-pci\n").unwrap();
    assert_eq!(driver(&h, DEV1).as_deref(), Some("bochs-drm"));
    assert_eq!(r(&h, format!("{DEV1}/enable")), "1");
    to_vfio(&h, DEV1, "0000:01:00.0");
    w(&h, OVR, b"\n").unwrap();
    w(&h, PROBE, b"0000:01:00.0").unwrap();
    assert_eq!(driver(&h, DEV1).as_deref(), Some("vfio-pci"));
    // Only unbind + probe moves it back to the native driver.
    w(&h, format!("{DEV1}/driver/unbind"), b"0000:01:00.0").unwrap();
    w(&h, PROBE, b"0000:01:00.0").unwrap();
    assert_eq!(driver(&h, DEV1).as_deref(), Some("bochs-drm"));
}

#[test]
fn unbind_removes_both_links_and_drops_enable() {
    let h = lab();
    w(&h, format!("{DEV1}/driver/unbind"), b"0000:01:00.0\n").unwrap();
    assert!(h.kind(&p(&format!("{DEV1}/driver"))).is_none());
    assert!(!exists(&h, "/sys/bus/pci/drivers/bochs-drm/0000:01:00.0"));
    assert_eq!(r(&h, format!("{DEV1}/enable")), "0");
    // Its DRM card goes with the driver.
    assert!(!exists(&h, "/dev/dri/card0"));
    assert!(!exists(&h, "/sys/class/drm/card0"));
}

#[test]
fn unbind_from_another_driver_is_enodev() {
    let h = lab();
    let u = "/sys/bus/pci/drivers/bochs-drm/unbind";
    assert_eq!(werr(&h, u, b"0000:03:00.0"), Some(ENODEV));
    assert_eq!(werr(&h, u, b"0000:0a:00.0"), Some(ENODEV));
    assert_eq!(
        werr(&h, "/sys/bus/pci/drivers/pcieport/unbind", b"0000:05:00.0"),
        Some(ENODEV)
    );
    w(&h, u, b"0000:01:00.0").unwrap();
    assert_eq!(werr(&h, u, b"0000:01:00.0"), Some(ENODEV));
}

#[test]
fn drivers_probe_unknown_address_is_enodev() {
    let h = lab();
    assert_eq!(werr(&h, PROBE, b"0000:0a:00.0"), Some(ENODEV));
    assert_eq!(werr(&h, PROBE, b"0000:0a:00.0\n"), Some(ENODEV));
    assert_eq!(werr(&h, PROBE, b"garbage"), Some(ENODEV));
}

#[test]
fn drivers_probe_on_bound_device_changes_nothing() {
    let h = lab();
    w(&h, OVR, b"vfio-pci\n").unwrap();
    let before = h.snapshot();
    w(&h, PROBE, b"0000:01:00.0").unwrap();
    assert_eq!(before, h.snapshot());
}

#[test]
fn drivers_probe_with_unregistered_override_leaves_device_unbound() {
    let h = lab();
    w(&h, OVR, b"nosuch-drv\n").unwrap();
    w(&h, format!("{DEV1}/driver/unbind"), b"0000:01:00.0").unwrap();
    w(&h, PROBE, b"0000:01:00.0").unwrap();
    assert_eq!(driver(&h, DEV1), None);
}

#[test]
fn drivers_probe_binds_override_and_creates_dev_vfio_node() {
    let h = lab();
    assert!(!exists(&h, "/dev/vfio/7"));
    to_vfio(&h, DEV1, "0000:01:00.0");
    assert_eq!(
        h.read_link(&p(&format!("{DEV1}/driver"))).unwrap(),
        p("../../../../bus/pci/drivers/vfio-pci")
    );
    assert!(exists(&h, "/sys/bus/pci/drivers/vfio-pci/0000:01:00.0"));
    assert!(exists(&h, "/dev/vfio/7"));
    assert!(exists(&h, "/sys/class/vfio/7"));
    assert_eq!(r(&h, "/sys/class/vfio/7/dev"), "246:0");
    assert_eq!(h.vfio_minor(7), Some(0));
    assert_eq!(r(&h, format!("{DEV1}/enable")), "0");
}

#[test]
fn vfio_pci_bind_without_override_or_new_id_is_enodev() {
    let h = lab();
    let bind = "/sys/bus/pci/drivers/vfio-pci/bind";
    // Bound to bochs-drm, no override: the match fails before "already bound".
    assert_eq!(werr(&h, bind, b"0000:01:00.0"), Some(ENODEV));
    w(&h, format!("{DEV1}/driver/unbind"), b"0000:01:00.0").unwrap();
    assert_eq!(werr(&h, bind, b"0000:01:00.0"), Some(ENODEV));
    assert_eq!(
        werr(&h, "/sys/bus/pci/drivers/qxl/bind", b"0000:01:00.0"),
        Some(ENODEV)
    );
    assert_eq!(driver(&h, DEV1), None);
}

#[test]
fn bind_to_the_same_driver_twice_is_ebusy() {
    let h = lab();
    let bind = "/sys/bus/pci/drivers/bochs-drm/bind";
    w(&h, format!("{DEV1}/driver/unbind"), b"0000:01:00.0").unwrap();
    w(&h, bind, b"0000:01:00.0").unwrap();
    assert_eq!(driver(&h, DEV1).as_deref(), Some("bochs-drm"));
    assert_eq!(r(&h, format!("{DEV1}/enable")), "1");
    assert_eq!(werr(&h, bind, b"0000:01:00.0"), Some(EBUSY));
}

#[test]
fn new_id_binds_unbound_devices_only() {
    let h = lab();
    let new_id = "/sys/bus/pci/drivers/vfio-pci/new_id";
    w(&h, format!("{DEV1}/driver/unbind"), b"0000:01:00.0").unwrap();
    w(&h, new_id, b"1234 1111\n").unwrap();
    assert_eq!(driver(&h, DEV1).as_deref(), Some("vfio-pci"));
    assert_eq!(driver(&h, DEV2).as_deref(), Some("bochs-drm"));
    assert!(exists(&h, "/dev/vfio/7"));
    assert_eq!(werr(&h, new_id, b"1234 1111\n"), Some(EEXIST));
    assert_eq!(werr(&h, new_id, b"zzzz\n"), Some(EINVAL));
}

#[test]
fn remove_id_keeps_bound_devices_bound() {
    let h = lab();
    let drv = "/sys/bus/pci/drivers/vfio-pci";
    w(&h, format!("{DEV1}/driver/unbind"), b"0000:01:00.0").unwrap();
    w(&h, format!("{drv}/new_id"), b"1234 1111\n").unwrap();
    w(&h, format!("{drv}/remove_id"), b"1234 1111\n").unwrap();
    assert_eq!(driver(&h, DEV1).as_deref(), Some("vfio-pci"));
    assert_eq!(
        werr(&h, format!("{drv}/remove_id"), b"1234 1111\n"),
        Some(ENODEV)
    );
}

#[test]
fn enable_is_a_counter_refused_while_bound() {
    let h = lab();
    let en = format!("{DEV1}/enable");
    assert_eq!(werr(&h, &en, b"0"), Some(EBUSY));
    assert_eq!(werr(&h, &en, b"1"), Some(EBUSY));
    w(&h, format!("{DEV1}/driver/unbind"), b"0000:01:00.0").unwrap();
    assert_eq!(werr(&h, &en, b"0"), Some(EIO));
    let mut seen = Vec::new();
    for v in [b"1", b"1", b"0", b"0"] {
        w(&h, &en, v).unwrap();
        seen.push(r(&h, &en));
    }
    assert_eq!(seen, ["1", "2", "1", "0"]);
}

#[test]
fn enable_follows_vfio_device_fd() {
    let h = lab();
    to_vfio(&h, DEV1, "0000:01:00.0");
    assert_eq!(r(&h, format!("{DEV1}/enable")), "0");
    h.open_device_fd(7, "0000:01:00.0");
    assert_eq!(r(&h, format!("{DEV1}/enable")), "1");
    h.close_device_fd(7, "0000:01:00.0");
    assert_eq!(r(&h, format!("{DEV1}/enable")), "0");
}

#[test]
fn reset_accepts_only_one() {
    let h = lab();
    let reset = format!("{DEV1}/reset");
    let before = h.snapshot();
    w(&h, &reset, b"1").unwrap();
    assert_eq!(before, h.snapshot());
    assert_eq!(werr(&h, &reset, b"0"), Some(EINVAL));
    assert_eq!(werr(&h, &reset, b"x"), Some(EINVAL));
    w(&h, format!("{DEV1}/reset_method"), b"\n").unwrap();
    assert_eq!(werr(&h, &reset, b"1"), Some(ENOTTY));
}

#[test]
fn reset_method_rules() {
    let h = lab();
    let rm1 = format!("{DEV1}/reset_method");
    let rm3 = format!("{DEV3}/reset_method");
    assert_eq!(werr(&h, &rm1, b"flr\n"), Some(EINVAL));
    assert!(h
        .dmesg()
        .last()
        .unwrap()
        .contains("bochs-drm 0000:01:00.0: Unsupported reset method 'flr'"));
    assert_eq!(werr(&h, &rm1, b"bogus\n"), Some(EINVAL));
    assert!(h
        .dmesg()
        .last()
        .unwrap()
        .contains("Invalid reset method 'bogus'"));
    assert_eq!(werr(&h, &rm3, b"pm,bus\n"), Some(EINVAL));
    assert_eq!(r(&h, &rm1), "bus");
    w(&h, &rm3, b"bus flr\n").unwrap();
    assert_eq!(r(&h, &rm3), "bus flr");
    w(&h, &rm3, b"bus bus\n").unwrap();
    assert_eq!(r(&h, &rm3), "bus bus");
    w(&h, &rm3, b"\n").unwrap();
    assert_eq!(h.read(&p(&rm3)).unwrap(), b"");
    assert!(exists(&h, &format!("{DEV3}/reset")));
    w(&h, &rm3, b"default\n").unwrap();
    assert_eq!(r(&h, &rm3), "flr pm bus");
}

#[test]
fn unbind_last_vfio_member_removes_dev_vfio_node() {
    let h = lab();
    let start = h.snapshot();
    to_vfio(&h, DEV1, "0000:01:00.0");
    w(&h, format!("{DEV1}/driver/unbind"), b"0000:01:00.0").unwrap();
    assert!(!exists(&h, "/dev/vfio/7"));
    assert!(!exists(&h, "/sys/class/vfio/7"));
    assert!(
        !exists(&h, "/sys/class/vfio"),
        "a directory the fixture lacked is pruned"
    );
    assert!(exists(
        &h,
        "/sys/kernel/iommu_groups/7/devices/0000:01:00.0"
    ));
    // Back to the native driver and override: the tree is the fixture again.
    w(&h, OVR, b"\n").unwrap();
    w(&h, PROBE, b"0000:01:00.0").unwrap();
    assert_eq!(start, h.snapshot());
}

#[test]
fn dev_vfio_minors_are_allocated_lowest_free() {
    let h = lab();
    to_vfio(&h, DEV61, "0000:06:01.0");
    to_vfio(&h, DEV1, "0000:01:00.0");
    assert_eq!(h.vfio_minor(11), Some(0));
    assert_eq!(h.vfio_minor(7), Some(1));
}

#[test]
fn group_with_native_member_is_not_viable() {
    let h = lab();
    to_vfio(&h, DEV61, "0000:06:01.0");
    // 06:02.0 still on bochs-drm.
    assert!(!h.group_viable(11));
    w(&h, format!("{DEV62}/driver/unbind"), b"0000:06:02.0").unwrap();
    // Bridge without driver, one member on vfio-pci, one unbound: viable.
    assert!(h.group_viable(11));
    let members = h.group_members(11);
    assert_eq!(members.len(), 3);
    assert!(members
        .iter()
        .any(|(d, drv)| d.ends_with("0000:06:01.0") && drv.as_deref() == Some("vfio-pci")));
}

#[test]
fn native_probe_in_claimed_group_is_refused() {
    let h = lab();
    to_vfio(&h, DEV61, "0000:06:01.0");
    w(&h, format!("{DEV62}/driver/unbind"), b"0000:06:02.0").unwrap();
    h.open_device_fd(11, "0000:06:01.0");
    assert_eq!(werr(&h, PROBE, b"0000:06:02.0"), Some(EINVAL));
    assert_eq!(
        werr(&h, "/sys/bus/pci/drivers/bochs-drm/bind", b"0000:06:02.0"),
        Some(EBUSY)
    );
    assert_eq!(driver(&h, DEV62), None);
    h.close_device_fd(11, "0000:06:01.0");
    w(&h, PROBE, b"0000:06:02.0").unwrap();
    assert_eq!(driver(&h, DEV62).as_deref(), Some("bochs-drm"));
    assert!(!h.group_viable(11));
}

#[test]
fn unbind_under_open_device_fd_waits_for_the_close() {
    let h = lab();
    to_vfio(&h, DEV1, "0000:01:00.0");
    h.open_device_fd(7, "0000:01:00.0");
    let e = w(&h, format!("{DEV1}/driver/unbind"), b"0000:01:00.0").unwrap_err();
    assert!(vm_device_sim::faults::is_hang(&e), "{e}");
    assert_eq!(driver(&h, DEV1).as_deref(), Some("vfio-pci"));
    assert_eq!(h.pending_writes().len(), 1);
    h.close_device_fd(7, "0000:01:00.0");
    assert_eq!(driver(&h, DEV1), None);
    assert!(!exists(&h, "/dev/vfio/7"));
    assert!(h.pending_writes().is_empty());
}

#[test]
fn drm_rebind_takes_lowest_free_card() {
    let h = lab();
    // Free card0 (01:00.0) and card1 (02:00.0), then bring 02:00.0 back first.
    w(&h, format!("{DEV1}/driver/unbind"), b"0000:01:00.0").unwrap();
    w(&h, format!("{DEV2}/driver/unbind"), b"0000:02:00.0").unwrap();
    w(&h, PROBE, b"0000:02:00.0").unwrap();
    assert!(exists(&h, "/sys/bus/pci/devices/0000:02:00.0/drm/card0"));
    assert!(exists(&h, "/dev/dri/card0"));
    assert_eq!(
        h.read_link(Path::new("/sys/class/drm/card0")).unwrap(),
        p("../../devices/pci0000:00/0000:00:03.0/0000:02:00.0/drm/card0")
    );
    w(&h, PROBE, b"0000:01:00.0").unwrap();
    assert!(exists(
        &h,
        "/sys/bus/pci/devices/0000:01:00.0/drm/card1/card1-Virtual-1"
    ));
}
