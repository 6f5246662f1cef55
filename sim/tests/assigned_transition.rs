//! The lab's assignment, replayed: starting from `qemu-q35-viommu`, do what the lab did
//! (0000:01:00.0 to vfio-pci through `driver_override`, one `mbochs-small` and one
//! `mdpy-xga`) and compare with the tree the lab recorded afterwards,
//! `qemu-q35-viommu-assigned`.

mod common;

use std::collections::BTreeSet;
use std::path::PathBuf;

use common::*;
use vm_device_sim::{SimHost, SnapNode};

const U1: &str = "4b9a3c1e-7d2f-4a6b-9e8d-0a0000000001";
const U2: &str = "4b9a3c1e-7d2f-4a6b-9e8d-0a0000000002";

/// Paths where the simulator is knowingly richer than the recording, each with the reason.
fn known_extra(path: &str) -> Option<&'static str> {
    if path == "/sys/class/vfio" || path.starts_with("/sys/class/vfio/") {
        return Some(
            "rule 20: /sys/class/vfio/N exists; the lab's recorder does not copy sys/class/vfio",
        );
    }
    if path == "/sys/devices/virtual/vfio" || path.starts_with("/sys/devices/virtual/vfio/") {
        return Some("target of /sys/class/vfio/N, with the node's MAJOR:MINOR in `dev`");
    }
    if path.starts_with("/sys/kernel/iommu_groups/")
        && (path.ends_with("/name") || path.ends_with("/reserved_regions"))
    {
        return Some("rule 30: an mdev group has `name` and `reserved_regions`; the recorder copies only `type`");
    }
    if path == "/proc/modules" {
        return Some("use counts: the recording shows drm_kms_helper 11 -> 10 after bochs let go of 01:00.0; the simulator keeps no use counts");
    }
    None
}

#[test]
fn lab_assignment_replayed_matches_the_recording() {
    let h = lab();
    // The lab's steps, in its order.
    w(&h, format!("{DEV1}/driver_override"), b"vfio-pci\n").unwrap();
    w(&h, format!("{DEV1}/driver/unbind"), b"0000:01:00.0").unwrap();
    w(&h, PROBE, b"0000:01:00.0").unwrap();
    w(
        &h,
        format!("{MBOCHS}/mbochs-small/create"),
        format!("{U1}\n").as_bytes(),
    )
    .unwrap();
    w(
        &h,
        format!("{MDPY}/mdpy-xga/create"),
        format!("{U2}\n").as_bytes(),
    )
    .unwrap();

    let got = h.snapshot();
    let want = SimHost::from_fixture(real("qemu-q35-viommu-assigned"))
        .unwrap()
        .snapshot();

    let mut unexplained = Vec::new();
    let mut explained = BTreeSet::new();
    let keys: BTreeSet<&PathBuf> = got.keys().chain(want.keys()).collect();
    for k in keys {
        let (g, wnt) = (got.get(k), want.get(k));
        if g == wnt {
            continue;
        }
        let ks = k.to_string_lossy();
        match known_extra(&ks) {
            // An extra node the recording cannot have, or (for /proc/modules) content the
            // simulator does not model.
            Some(why) if wnt.is_none() || ks == "/proc/modules" => {
                explained.insert(why);
            }
            _ => unexplained.push(format!("{ks}: simulator {g:?}, recording {wnt:?}")),
        }
    }
    assert!(
        unexplained.is_empty(),
        "differences from the recording:\n{}",
        unexplained.join("\n")
    );
    // The comparison covered what the lab changed.
    for must in [
        "/sys/devices/pci0000:00/0000:00:02.0/0000:01:00.0/driver",
        "/sys/devices/pci0000:00/0000:00:02.0/0000:01:00.0/driver_override",
        "/sys/bus/pci/drivers/vfio-pci/0000:01:00.0",
        "/dev/vfio/7",
        "/dev/vfio/12",
        "/dev/vfio/13",
        "/sys/bus/mdev/devices/4b9a3c1e-7d2f-4a6b-9e8d-0a0000000001",
        "/sys/kernel/iommu_groups/13/devices/4b9a3c1e-7d2f-4a6b-9e8d-0a0000000002",
        "/sys/devices/virtual/mdpy/mdpy/mdev_supported_types/mdpy-hd/available_instances",
    ] {
        assert!(got.contains_key(&p(must)), "{must} missing");
    }
    assert_eq!(
        got[&p("/sys/devices/pci0000:00/0000:00:02.0/0000:01:00.0/enable")],
        SnapNode::File(b"0\n".to_vec())
    );
    assert!(!got.contains_key(&p("/dev/dri/card0")));
    // Every kind of known difference showed up (the list is not stale).
    assert_eq!(explained.len(), 4, "{explained:?}");
}

#[test]
fn assigned_recording_opens_with_learned_pools() {
    // Opening the assigned tree learns the pools with the existing mdevs counted: removing
    // them gives the full counts back.
    let h = SimHost::from_fixture(real("qemu-q35-viommu-assigned")).unwrap();
    assert_eq!(h.native_driver("0000:01:00.0").as_deref(), Some("vfio-pci"));
    assert!(h.group_viable(7));
    w(&h, format!("/sys/bus/mdev/devices/{U1}/remove"), b"1\n").unwrap();
    w(&h, format!("/sys/bus/mdev/devices/{U2}/remove"), b"1\n").unwrap();
    assert_eq!(
        r(&h, format!("{MBOCHS}/mbochs-large/available_instances")),
        "4"
    );
    assert_eq!(
        r(&h, format!("{MBOCHS}/mbochs-small/available_instances")),
        "64"
    );
    assert_eq!(r(&h, format!("{MDPY}/mdpy-vga/available_instances")), "4");
    assert!(!exists(&h, "/dev/vfio/12"));
    assert!(!exists(&h, "/dev/vfio/13"));
    assert!(exists(&h, "/dev/vfio/7"));
    // Back to the native driver: vfio-pci is "native" here, and the override still names it.
    w(&h, format!("{DEV1}/driver_override"), b"\n").unwrap();
    w(&h, format!("{DEV1}/driver/unbind"), b"0000:01:00.0").unwrap();
    assert!(!exists(&h, "/dev/vfio/7"));
    w(&h, PROBE, b"0000:01:00.0").unwrap();
    // vfio-pci matches only through an override or new_id, and this tree never saw
    // 01:00.0's id on bochs-drm... but 02:00.0 (same id) is on bochs-drm, so that id table
    // claims it.
    assert_eq!(driver(&h, DEV1).as_deref(), Some("bochs-drm"));
}
