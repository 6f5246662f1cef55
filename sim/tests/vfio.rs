//! VFIO on `SimHost`, by the kernel's rules, over the recorded QEMU q35 + vIOMMU trees.

use std::path::{Path, PathBuf};

use vm_device_host::prelude::*;
use vm_device_host::vfio::{region, VFIO_API_VERSION};
use vm_device_host::{IommuType, VfioContainer, VfioGroup, VfioHandle};
use vm_device_sim::{copy_fixture, Op, SimHost, VfioFault};

const EPERM: i32 = 1;
const ENOENT: i32 = 2;
const EBADF: i32 = 9;
const EBUSY: i32 = 16;
const EEXIST: i32 = 17;
const ENODEV: i32 = 19;
const EINVAL: i32 = 22;

const MBOCHS: &str = "4b9a3c1e-7d2f-4a6b-9e8d-0a0000000001";
const MDPY: &str = "4b9a3c1e-7d2f-4a6b-9e8d-0a0000000002";

/// The recorded trees kept in the repository (`fixtures/real`).
fn shared_hosts() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fixtures/real")
}

/// A writable copy of a recorded tree, with real symlinks.
fn fixture(name: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    copy_fixture(&shared_hosts().join(name), dir.path()).unwrap();
    dir
}

fn errno<T: std::fmt::Debug>(r: Result<T, vm_device_host::HostError>) -> i32 {
    r.expect_err("expected a refusal")
        .raw_os_error()
        .expect("refusal carries an errno")
}

fn group_of(host: &SimHost, addr: &str) -> u32 {
    let link = host
        .read_link(&PathBuf::from(format!(
            "/sys/bus/pci/devices/{addr}/iommu_group"
        )))
        .unwrap();
    link.file_name().unwrap().to_str().unwrap().parse().unwrap()
}

/// Container + group + container set + type1v2.
fn attach(host: &SimHost, n: u32) -> (VfioContainer, VfioGroup) {
    let c = host.vfio_open_container().unwrap();
    let g = host.vfio_open_group(n).unwrap();
    host.vfio_group_set_container(g, c).unwrap();
    host.vfio_set_iommu(c, IommuType::Type1v2).unwrap();
    (c, g)
}

#[test]
fn vfio_pci_device_full_sequence() {
    let dir = fixture("qemu-q35-viommu-assigned");
    let host = SimHost::from_fixture(dir.path()).unwrap();
    let addr = "0000:01:00.0";
    let n = group_of(&host, addr);
    assert_eq!(n, 7);

    let c = host.vfio_open_container().unwrap();
    assert_eq!(host.vfio_api_version(c).unwrap(), VFIO_API_VERSION);
    assert_eq!(
        host.vfio_check_extension(c, IommuType::Type1v2.raw())
            .unwrap(),
        1
    );
    assert_eq!(
        host.vfio_check_extension(c, IommuType::NoIommu.raw())
            .unwrap(),
        0
    );
    let g = host.vfio_open_group(n).unwrap();
    let st = host.vfio_group_status(g).unwrap();
    assert!(st.viable && !st.container_set);
    // VFIO_SET_IOMMU before any group is attached: EINVAL.
    assert_eq!(errno(host.vfio_set_iommu(c, IommuType::Type1v2)), EINVAL);
    // No device fd before the container has an IOMMU.
    assert_eq!(errno(host.vfio_group_device(g, addr)), EINVAL);
    host.vfio_group_set_container(g, c).unwrap();
    assert!(host.vfio_group_status(g).unwrap().container_set);
    assert_eq!(errno(host.vfio_group_set_container(g, c)), EINVAL);
    host.vfio_set_iommu(c, IommuType::Type1v2).unwrap();
    assert_eq!(errno(host.vfio_set_iommu(c, IommuType::Type1v2)), EINVAL);
    let info = host.vfio_iommu_info(c).unwrap();
    // As the lab's emulated VT-d: 4K | 2M | 1G.
    assert_eq!(info.iova_pgsizes, 0x4020_1000);
    assert_eq!(info.min_page_size(), Some(4096));

    let enable = PathBuf::from(format!("/sys/bus/pci/devices/{addr}/enable"));
    assert_eq!(host.read_attr(&enable).unwrap(), "0");
    let d = host.vfio_group_device(g, addr).unwrap();
    // Rule 17: enable is 1 while a device fd is open.
    assert_eq!(host.read_attr(&enable).unwrap(), "1");
    assert!(host.device_fd_open(addr));
    assert_eq!(host.open_device_fds()[0].group, Some(7));

    let di = host.vfio_device_info(d).unwrap();
    assert!(di.is_pci() && di.can_reset());
    assert_eq!((di.num_regions, di.num_irqs), (9, 5));
    // The lab's region table for this device.
    let r0 = host.vfio_region_info(d, region::BAR0).unwrap();
    assert_eq!(r0.size, 0x100_0000);
    assert!(r0.readable() && r0.writable() && r0.mmap());
    assert_eq!(host.vfio_region_info(d, region::BAR1).unwrap().size, 0);
    assert_eq!(host.vfio_region_info(d, region::BAR2).unwrap().size, 0x1000);
    let rom = host.vfio_region_info(d, region::ROM).unwrap();
    assert_eq!(
        (rom.size, rom.readable(), rom.writable()),
        (0x8000, true, false)
    );
    let cfg = host.vfio_region_info(d, region::CONFIG).unwrap();
    assert_eq!(cfg.size, 0x1000);
    assert_eq!(cfg.offset, 7 << 40);
    assert_eq!(errno(host.vfio_region_info(d, 9)), EINVAL);
    let intx = host.vfio_irq_info(d, 0).unwrap();
    assert_eq!(intx.count, 0, "bochs-display has no interrupt pin");
    assert_eq!(errno(host.vfio_irq_info(d, 5)), EINVAL);

    let mut id = [0u8; 4];
    assert_eq!(
        host.vfio_region_read(d, region::CONFIG, 0, &mut id)
            .unwrap(),
        4
    );
    assert_eq!(u16::from_le_bytes([id[0], id[1]]), 0x1234);
    assert_eq!(u16::from_le_bytes([id[2], id[3]]), 0x1111);
    let mut class = [0u8; 3];
    host.vfio_region_read(d, region::CONFIG, 9, &mut class)
        .unwrap();
    assert_eq!(class, [0x00, 0x80, 0x03]);
    // Reads stop at the end of the region; past it: EINVAL.
    let mut tail = [0u8; 16];
    assert_eq!(
        host.vfio_region_read(d, region::CONFIG, 0xff8, &mut tail)
            .unwrap(),
        8
    );
    assert_eq!(
        errno(host.vfio_region_read(d, region::CONFIG, 0x1000, &mut tail)),
        EINVAL
    );

    let m = host.vfio_dma_map(c, 0x10_0000, 0x10_0000).unwrap();
    assert_eq!((m.iova, m.size), (0x10_0000, 0x10_0000));
    assert_eq!(errno(host.vfio_dma_map(c, 0x18_0000, 0x1000)), EEXIST);
    assert_eq!(errno(host.vfio_dma_map(c, 0x30_0001, 0x1000)), EINVAL);
    // A range that splits the mapping: EINVAL; one that holds nothing: 0 bytes.
    assert_eq!(errno(host.vfio_dma_unmap(c, 0x10_0000, 0x1000)), EINVAL);
    assert_eq!(host.vfio_dma_unmap(c, 0x100_0000, 0x1000).unwrap(), 0);
    assert_eq!(
        host.vfio_dma_unmap(c, 0x10_0000, 0x10_0000).unwrap(),
        0x10_0000
    );

    host.vfio_close(d.into()).unwrap();
    assert_eq!(host.read_attr(&enable).unwrap(), "0");
    assert!(!host.device_fd_open(addr));
    assert_eq!(errno(host.vfio_close(d.into())), EBADF);
    host.vfio_close(g.into()).unwrap();
    host.vfio_close(c.into()).unwrap();

    let vfio_ops = host
        .ops()
        .iter()
        .filter(|o| matches!(o, Op::Vfio(_)))
        .count();
    assert!(vfio_ops > 20, "every VFIO call is logged");
}

#[test]
fn second_group_open_is_ebusy_until_closed() {
    let dir = fixture("qemu-q35-viommu-assigned");
    let host = SimHost::from_fixture(dir.path()).unwrap();
    let g = host.vfio_open_group(7).unwrap();
    assert_eq!(errno(host.vfio_open_group(7)), EBUSY);
    assert_eq!(host.open_vfio_groups(), vec![7]);
    host.vfio_close(VfioHandle::Group(g)).unwrap();
    let again = host.vfio_open_group(7).unwrap();
    host.vfio_close(again.into()).unwrap();
}

#[test]
fn missing_nodes_are_enoent() {
    let dir = fixture("qemu-q35-viommu-assigned");
    let host = SimHost::from_fixture(dir.path()).unwrap();
    // Group 8 (02:00.0 on bochs-drm) has no /dev/vfio/8.
    let e = host.vfio_open_group(8).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(ENOENT));
    assert!(e.to_string().contains("/dev/vfio/8"), "{e}");
    // No /dev/iommu on 6.1: the iommufd path is unavailable, and says so.
    assert_eq!(errno(host.vfio_iommufd_open()), ENOENT);
    assert!(!host.vfio_iommufd_availability("0000:01:00.0").usable());

    let bare = fixture("firecracker-vm-no-gpu");
    let host = SimHost::from_fixture(bare.path()).unwrap();
    let e = host.vfio_open_container().unwrap_err();
    assert_eq!(e.raw_os_error(), Some(ENOENT));
    assert!(e.to_string().contains("/dev/vfio/vfio"), "{e}");
}

#[test]
fn mdev_groups_open_and_map() {
    let dir = fixture("qemu-q35-viommu-assigned");
    let host = SimHost::from_fixture(dir.path()).unwrap();
    for (n, uuid, vendor, bar0) in [
        (12, MBOCHS, 0x1234u16, 4u64 << 20),
        (13, MDPY, 0x1b36, 4 << 20),
    ] {
        let (c, g) = attach(&host, n);
        assert!(host.vfio_group_status(g).unwrap().viable);
        // Every power of two from 4K, as the lab's mdev containers reported.
        assert_eq!(
            host.vfio_iommu_info(c).unwrap().iova_pgsizes,
            0xffff_ffff_ffff_f000
        );
        let d = host.vfio_group_device(g, uuid).unwrap();
        let info = host.vfio_device_info(d).unwrap();
        assert!(info.is_pci() && !info.can_reset());
        assert_eq!(host.vfio_region_info(d, region::BAR0).unwrap().size, bar0);
        assert_eq!(host.vfio_region_info(d, region::CONFIG).unwrap().size, 0xff);
        let mut id = [0u8; 2];
        host.vfio_region_read(d, region::CONFIG, 0, &mut id)
            .unwrap();
        assert_eq!(u16::from_le_bytes(id), vendor);
        host.vfio_dma_map(c, 0x10_0000, 0x10_0000).unwrap();
        for h in [VfioHandle::from(d), g.into(), c.into()] {
            host.vfio_close(h).unwrap();
        }
    }
    // mbochs has the EDID region: 10 regions.
    let (c, g) = attach(&host, 12);
    let d = host.vfio_group_device(g, MBOCHS).unwrap();
    assert_eq!(host.vfio_device_info(d).unwrap().num_regions, 10);
    // The other group's mdev is not in this group.
    assert_eq!(errno(host.vfio_group_device(g, MDPY)), ENODEV);
    for h in [VfioHandle::from(d), g.into(), c.into()] {
        host.vfio_close(h).unwrap();
    }
}

/// Group 11 of the native tree with 06:01.0 moved to vfio-pci by hand (the state the lab
/// measured before 06:02.0 followed): `/dev/vfio/11` exists, 06:02.0 is still on bochs-drm.
fn half_assigned_group_11() -> tempfile::TempDir {
    let dir = fixture("qemu-q35-viommu");
    let root = dir.path();
    let dev = root.join("sys/devices/pci0000:00/0000:00:06.0/0000:05:00.0/0000:06:01.0");
    std::fs::remove_file(dev.join("driver")).unwrap();
    std::os::unix::fs::symlink(
        "../../../../../bus/pci/drivers/vfio-pci",
        dev.join("driver"),
    )
    .unwrap();
    std::fs::write(dev.join("driver_override"), "vfio-pci\n").unwrap();
    std::fs::write(dev.join("enable"), "0\n").unwrap();
    let drivers = root.join("sys/bus/pci/drivers");
    std::fs::remove_file(drivers.join("bochs-drm/0000:06:01.0")).unwrap();
    std::fs::create_dir_all(drivers.join("vfio-pci")).unwrap();
    std::os::unix::fs::symlink(
        "../../../../devices/pci0000:00/0000:00:06.0/0000:05:00.0/0000:06:01.0",
        drivers.join("vfio-pci/0000:06:01.0"),
    )
    .unwrap();
    std::fs::write(root.join("dev/vfio/11"), "").unwrap();
    dir
}

#[test]
fn non_viable_group_refuses_set_container_with_eperm() {
    let dir = half_assigned_group_11();
    let host = SimHost::from_fixture(dir.path()).unwrap();
    let c = host.vfio_open_container().unwrap();
    let g = host.vfio_open_group(11).unwrap();
    let st = host.vfio_group_status(g).unwrap();
    assert!(!st.viable && !st.container_set);
    let e = host.vfio_group_set_container(g, c).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(EPERM));
    assert!(e.to_string().contains("VFIO_GROUP_SET_CONTAINER"), "{e}");
    assert!(e.to_string().contains("/dev/vfio/11"), "{e}");
    // The bridge (no driver) and 06:01.0 (vfio-pci) do not block; 06:02.0 does. Unbinding it
    // (the driverless state the lab measured as viable) makes the group usable.
    let dev2 = dir
        .path()
        .join("sys/devices/pci0000:00/0000:00:06.0/0000:05:00.0/0000:06:02.0");
    std::fs::remove_file(dev2.join("driver")).unwrap();
    let host = SimHost::from_fixture(dir.path()).unwrap();
    let (c, g) = attach(&host, 11);
    // The bridge and the unbound member are not VFIO devices: ENODEV.
    assert_eq!(errno(host.vfio_group_device(g, "0000:05:00.0")), ENODEV);
    assert_eq!(errno(host.vfio_group_device(g, "0000:06:02.0")), ENODEV);
    let d = host.vfio_group_device(g, "0000:06:01.0").unwrap();
    // Conventional PCI behind the bridge: 256-byte config, no reset method.
    assert_eq!(
        host.vfio_region_info(d, region::CONFIG).unwrap().size,
        0x100
    );
    for h in [VfioHandle::from(d), g.into(), c.into()] {
        host.vfio_close(h).unwrap();
    }
}

#[test]
fn device_fd_refused_for_members_not_on_vfio() {
    let dir = half_assigned_group_11();
    let host = SimHost::from_fixture(dir.path()).unwrap();
    let c = host.vfio_open_container().unwrap();
    let g = host.vfio_open_group(11).unwrap();
    // Without a container the name check comes first: a native member is ENODEV.
    assert_eq!(errno(host.vfio_group_device(g, "0000:06:02.0")), ENODEV);
    assert_eq!(errno(host.vfio_group_device(g, "0000:01:00.0")), ENODEV);
    host.vfio_close(g.into()).unwrap();
    host.vfio_close(c.into()).unwrap();
}

#[test]
fn type1_unloaded_gives_no_extension_and_enodev() {
    let dir = fixture("qemu-q35-viommu-assigned");
    let modules = dir.path().join("proc/modules");
    let text = std::fs::read_to_string(&modules).unwrap();
    let kept: String = text
        .lines()
        .filter(|l| !l.starts_with("vfio_iommu_type1 "))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(&modules, kept).unwrap();
    let host = SimHost::from_fixture(dir.path()).unwrap();
    let c = host.vfio_open_container().unwrap();
    assert_eq!(
        host.vfio_check_extension(c, IommuType::Type1v2.raw())
            .unwrap(),
        0
    );
    let g = host.vfio_open_group(7).unwrap();
    host.vfio_group_set_container(g, c).unwrap();
    assert_eq!(errno(host.vfio_set_iommu(c, IommuType::Type1v2)), ENODEV);
}

#[test]
fn closing_the_last_group_drops_the_iommu_and_mappings() {
    let dir = fixture("qemu-q35-viommu-assigned");
    let host = SimHost::from_fixture(dir.path()).unwrap();
    let (c, g) = attach(&host, 7);
    host.vfio_dma_map(c, 0x10_0000, 0x1000).unwrap();
    host.vfio_close(g.into()).unwrap();
    assert_eq!(errno(host.vfio_iommu_info(c)), EINVAL);
    assert_eq!(errno(host.vfio_dma_map(c, 0x10_0000, 0x1000)), EINVAL);
    // A group whose fd closes while a device fd is open stays attached until that closes.
    let g = host.vfio_open_group(7).unwrap();
    host.vfio_group_set_container(g, c).unwrap();
    host.vfio_set_iommu(c, IommuType::Type1v2).unwrap();
    let d = host.vfio_group_device(g, "0000:01:00.0").unwrap();
    host.vfio_close(g.into()).unwrap();
    assert!(host.vfio_iommu_info(c).is_ok());
    host.vfio_close(d.into()).unwrap();
    assert_eq!(errno(host.vfio_iommu_info(c)), EINVAL);
}

#[test]
fn injected_faults_fail_the_named_operation() {
    let dir = fixture("qemu-q35-viommu-assigned");
    let host = SimHost::from_fixture(dir.path()).unwrap();
    host.inject_vfio_fault(VfioFault {
        op: "vfio:dma_map".into(),
        errno: 12,
        times: 1,
    });
    let (c, _g) = attach(&host, 7);
    let e = host.vfio_dma_map(c, 0x10_0000, 0x1000).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(12));
    assert!(e.to_string().starts_with("vfio:dma_map"), "{e}");
    host.vfio_dma_map(c, 0x10_0000, 0x1000).unwrap();
}

#[test]
fn iommufd_path_when_the_tree_has_it() {
    let dir = fixture("qemu-q35-viommu-assigned");
    let root = dir.path();
    std::fs::write(root.join("dev/iommu"), "").unwrap();
    std::fs::create_dir_all(root.join("dev/vfio/devices")).unwrap();
    std::fs::write(root.join("dev/vfio/devices/vfio0"), "").unwrap();
    let sys = Path::new("sys/devices/pci0000:00/0000:00:02.0/0000:01:00.0/vfio-dev/vfio0");
    std::fs::create_dir_all(root.join(sys)).unwrap();
    let host = SimHost::from_fixture(root).unwrap();
    let avail = host.vfio_iommufd_availability("0000:01:00.0");
    assert!(avail.usable(), "{avail:?}");
    assert_eq!(avail.cdev, Some(PathBuf::from("/dev/vfio/devices/vfio0")));
    let c = host.vfio_iommufd_open().unwrap();
    let d = host.vfio_iommufd_device(c, "0000:01:00.0").unwrap();
    assert_eq!(d.path, vm_device_host::VfioPath::Iommufd);
    assert!(host.device_fd_open("0000:01:00.0"));
    host.vfio_dma_map(c, 0x10_0000, 0x1000).unwrap();
    assert_eq!(errno(host.vfio_dma_unmap(c, 0x20_0000, 0x1000)), ENOENT);
    assert_eq!(host.vfio_dma_unmap(c, 0x10_0000, 0x1000).unwrap(), 0x1000);
    // A device without a cdev cannot take this path.
    assert_eq!(errno(host.vfio_iommufd_device(c, "0000:02:00.0")), ENOENT);
    host.vfio_close(d.into()).unwrap();
    host.vfio_close(c.into()).unwrap();
}

/// What the real-kernel harness (`cargo xtask kernel-test`, scenarios passthrough and mdev)
/// measured with `vfio_smoke` on Linux 6.1 and the simulator first got wrong.
#[test]
fn vfio_details_the_kernel_harness_measured() {
    let dir = fixture("qemu-q35-viommu-assigned");
    let host = SimHost::from_fixture(dir.path()).unwrap();
    // No VGA region on a device that is not VGA-class: EINVAL, not an empty region.
    let (c, g) = attach(&host, 7);
    let d = host.vfio_group_device(g, "0000:01:00.0").unwrap();
    assert_eq!(errno(host.vfio_region_info(d, region::VGA)), EINVAL);
    // Alone behind its root port, `bus` reset works: the RESET flag.
    assert!(host.vfio_device_info(d).unwrap().can_reset());
    for h in [VfioHandle::from(d), g.into(), c.into()] {
        host.vfio_close(h).unwrap();
    }
    // 06:01.0 lists `bus` but shares its bus with 06:02.0: no working reset, flags 0x2.
    for a in ["0000:06:01.0", "0000:06:02.0"] {
        let dev = format!("/sys/bus/pci/devices/{a}");
        host.write_attr(Path::new(&format!("{dev}/driver_override")), b"vfio-pci")
            .unwrap();
        host.write_attr(Path::new(&format!("{dev}/driver/unbind")), a.as_bytes())
            .unwrap();
        host.write_attr(Path::new("/sys/bus/pci/drivers_probe"), a.as_bytes())
            .unwrap();
    }
    let (c, g) = attach(&host, 11);
    let d = host.vfio_group_device(g, "0000:06:01.0").unwrap();
    let info = host.vfio_device_info(d).unwrap();
    assert_eq!(info.flags, 0x2, "{info:?}");
    for h in [VfioHandle::from(d), g.into(), c.into()] {
        host.vfio_close(h).unwrap();
    }
    // mbochs: its own region offsets (memory BAR 0x3000, MMIO 0x1000, EDID 0x2000, config
    // 0) and IRQ infos of flags 0, count 0.
    let (c, g) = attach(&host, 12);
    let d = host.vfio_group_device(g, MBOCHS).unwrap();
    let offsets: Vec<u64> = (0..10)
        .map(|i| host.vfio_region_info(d, i).unwrap().offset)
        .collect();
    assert_eq!(offsets, [0x3000, 0, 0x1000, 0, 0, 0, 0, 0, 0, 0x2000]);
    for i in 0..5 {
        let irq = host.vfio_irq_info(d, i).unwrap();
        assert_eq!((irq.flags, irq.count), (0, 0), "{irq:?}");
    }
    for h in [VfioHandle::from(d), g.into(), c.into()] {
        host.vfio_close(h).unwrap();
    }
    // mdpy: memory BAR at 0x1000.
    let (c, g) = attach(&host, 13);
    let d = host.vfio_group_device(g, MDPY).unwrap();
    assert_eq!(
        host.vfio_region_info(d, region::BAR0).unwrap().offset,
        0x1000
    );
    assert_eq!(host.vfio_region_info(d, region::CONFIG).unwrap().offset, 0);
    for h in [VfioHandle::from(d), g.into(), c.into()] {
        host.vfio_close(h).unwrap();
    }
}
