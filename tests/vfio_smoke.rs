//! `vfio_smoke` runs the whole VFIO open sequence on the simulated recordings of the QEMU
//! q35 + vIOMMU guest, and fails with a step, an errno and a remedy where the kernel would.

mod common;

use std::path::PathBuf;

use vm_device::host::{vfio_smoke, vfio_smoke_with, PathChoice, SimHost};
use vm_device_host::prelude::*;
use vm_device_host::vfio::region;
use vm_device_host::VfioPath;
use vm_device_sim::copy_fixture;

/// The recorded real hosts (`fixtures/real`).
fn shared_hosts() -> PathBuf {
    common::repo().join("fixtures/real")
}

fn fixture(name: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    copy_fixture(&shared_hosts().join(name), dir.path()).unwrap();
    dir
}

#[test]
fn smoke_passes_on_the_assigned_bochs_display() {
    let dir = fixture("qemu-q35-viommu-assigned");
    let host = SimHost::from_fixture(dir.path()).unwrap();
    let r = vfio_smoke(&host, 7, "0000:01:00.0").unwrap();
    assert_eq!(r.path, VfioPath::Legacy);
    assert_eq!(r.api_version, Some(0));
    assert_eq!(r.type1v2, Some(true));
    assert!(r.group_status.unwrap().viable);
    assert_eq!(r.iommu.unwrap().iova_pgsizes, 0x4020_1000);
    assert_eq!((r.vendor, r.device_id, r.class), (0x1234, 0x1111, 0x038000));
    // BAR0-5, ROM, config; no VGA region: the bochs-display is class 0x0380, and vfio-pci
    // answers VFIO_DEVICE_GET_REGION_INFO(VGA) with EINVAL there (measured on Linux 6.1).
    assert_eq!(r.regions.len(), 8);
    assert!(r.regions.iter().all(|x| x.index != region::VGA));
    assert_eq!(r.regions[region::BAR0 as usize].size, 0x100_0000);
    assert_eq!(r.irqs.len(), 5, "PCIe device: the ERR index is answered");
    assert_eq!(r.dma.size, 1 << 20);
    assert_eq!(r.dma_unmapped, 1 << 20);
    // Everything was closed again: the group can be opened anew and enable is back to 0.
    let g = host.vfio_open_group(7).unwrap();
    host.vfio_close(g.into()).unwrap();
    assert!(host.open_device_fds().is_empty());
    let enable = host
        .read_attr(&PathBuf::from("/sys/bus/pci/devices/0000:01:00.0/enable"))
        .unwrap();
    assert_eq!(enable, "0");
    // The report is plain data for --json.
    let json = serde_json::to_value(&r).unwrap();
    assert_eq!(json["path"], "Legacy");
}

#[test]
fn smoke_passes_on_both_mdevs() {
    let dir = fixture("qemu-q35-viommu-assigned");
    let host = SimHost::from_fixture(dir.path()).unwrap();
    let mbochs = vfio_smoke(&host, 12, "4b9a3c1e-7d2f-4a6b-9e8d-0a0000000001").unwrap();
    assert_eq!((mbochs.vendor, mbochs.device_id), (0x1234, 0x1111));
    assert_eq!(mbochs.regions.len(), 10);
    let mdpy = vfio_smoke(&host, 13, "4b9a3c1e-7d2f-4a6b-9e8d-0a0000000002").unwrap();
    assert_eq!(
        (mdpy.vendor, mdpy.device_id, mdpy.class),
        (0x1b36, 0x000f, 0x038000)
    );
}

#[test]
fn smoke_names_the_member_that_blocks_a_shared_group() {
    let dir = fixture("qemu-q35-viommu");
    let root = dir.path();
    // 06:01.0 on vfio-pci, 06:02.0 still on bochs-drm: the lab's non-viable state.
    let dev = root.join("sys/devices/pci0000:00/0000:00:06.0/0000:05:00.0/0000:06:01.0");
    std::fs::remove_file(dev.join("driver")).unwrap();
    std::os::unix::fs::symlink(
        "../../../../../bus/pci/drivers/vfio-pci",
        dev.join("driver"),
    )
    .unwrap();
    std::fs::write(root.join("dev/vfio/11"), "").unwrap();
    let host = SimHost::from_fixture(root).unwrap();
    let e = vfio_smoke(&host, 11, "0000:06:01.0").unwrap_err();
    assert_eq!(e.step, "set container");
    assert_eq!(e.errno(), Some(1));
    let text = e.to_string();
    assert!(
        text.contains("0000:06:02.0 is bound to bochs-drm"),
        "{text}"
    );
    assert!(
        !text.contains("0000:05:00.0"),
        "the bridge does not block: {text}"
    );
    // What was opened is closed: the group is free again.
    let g = host.vfio_open_group(11).unwrap();
    host.vfio_close(g.into()).unwrap();
}

#[test]
fn smoke_refusals_carry_step_errno_and_remedy() {
    let dir = fixture("qemu-q35-viommu-assigned");
    let host = SimHost::from_fixture(dir.path()).unwrap();
    // 02:00.0 is on bochs-drm: no /dev/vfio/8.
    let e = vfio_smoke(&host, 8, "0000:02:00.0").unwrap_err();
    assert_eq!((e.step, e.errno()), ("open group", Some(2)));
    assert!(e.to_string().contains("driver_override=vfio-pci"), "{e}");
    // A name from another group: ENODEV at the device fd.
    let e = vfio_smoke(&host, 7, "0000:02:00.0").unwrap_err();
    assert_eq!((e.step, e.errno()), ("get device fd", Some(19)));
    // Group already open elsewhere: EBUSY.
    let g = host.vfio_open_group(7).unwrap();
    let e = vfio_smoke(&host, 7, "0000:01:00.0").unwrap_err();
    assert_eq!((e.step, e.errno()), ("open group", Some(16)));
    host.vfio_close(g.into()).unwrap();
    // iommufd asked for on a 6.1 tree: ENOENT with the remedy.
    let e = vfio_smoke_with(&host, 7, "0000:01:00.0", PathChoice::Iommufd).unwrap_err();
    assert_eq!((e.step, e.errno()), ("open iommufd", Some(2)));
    assert!(e.to_string().contains("legacy path"), "{e}");
}
