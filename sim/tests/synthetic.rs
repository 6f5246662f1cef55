//! SR-IOV, NVIDIA vendor-VFIO and the generic mdev pools, on small trees written here (the
//! lab had no such hardware). These trees use real symbolic links, the other tests use the
//! recordings whose links are stored as files: both must work.

mod common;

use std::os::unix::fs::symlink;
use std::path::Path;

use common::*;
use vm_device_host::prelude::*;
use vm_device_sim::kernel::errno::*;
use vm_device_sim::SimHost;

struct Fx(tempfile::TempDir);

impl Fx {
    fn new() -> Self {
        let fx = Fx(tempfile::tempdir().unwrap());
        fx.file("proc/modules", "nvidia 100 0 - Live 0x0\n");
        fx.dir("sys/bus/mdev/devices");
        fx
    }
    fn file(&self, rel: &str, text: &str) {
        let p = self.0.path().join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }
    fn dir(&self, rel: &str) {
        std::fs::create_dir_all(self.0.path().join(rel)).unwrap();
    }
    fn link(&self, rel: &str, target: &str) {
        let p = self.0.path().join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        symlink(target, p).unwrap();
    }
    /// A PCI function under root port 0000:40:01.1, bound to `driver`, in group `group`.
    fn pci(
        &self,
        addr: &str,
        vendor: &str,
        device: &str,
        class: &str,
        driver: &str,
        group: u32,
    ) -> String {
        let d = format!("sys/devices/pci0000:40/0000:40:01.1/{addr}");
        self.file(&format!("{d}/vendor"), &format!("{vendor}\n"));
        self.file(&format!("{d}/device"), &format!("{device}\n"));
        self.file(&format!("{d}/class"), &format!("{class}\n"));
        self.file(&format!("{d}/driver_override"), "(null)\n");
        self.file(&format!("{d}/enable"), "1\n");
        self.link(
            &format!("{d}/driver"),
            &format!("../../../../bus/pci/drivers/{driver}"),
        );
        self.link(
            &format!("{d}/iommu_group"),
            &format!("../../../../kernel/iommu_groups/{group}"),
        );
        self.link(
            &format!("sys/bus/pci/drivers/{driver}/{addr}"),
            &format!("../../../../devices/pci0000:40/0000:40:01.1/{addr}"),
        );
        self.link(
            &format!("sys/bus/pci/devices/{addr}"),
            &format!("../../../devices/pci0000:40/0000:40:01.1/{addr}"),
        );
        self.link(
            &format!("sys/kernel/iommu_groups/{group}/devices/{addr}"),
            &format!("../../../../devices/pci0000:40/0000:40:01.1/{addr}"),
        );
        self.file(&format!("sys/kernel/iommu_groups/{group}/type"), "DMA\n");
        d
    }
    fn host(&self) -> SimHost {
        SimHost::from_fixture(self.0.path()).unwrap()
    }
}

const PF: &str = "/sys/bus/pci/devices/0000:41:00.0";

fn sriov_fixture() -> Fx {
    let fx = Fx::new();
    let d = fx.pci("0000:41:00.0", "0x10de", "0x2335", "0x030200", "nvidia", 30);
    fx.file(&format!("{d}/sriov_totalvfs"), "4\n");
    fx.file(&format!("{d}/sriov_numvfs"), "0\n");
    fx.file(&format!("{d}/sriov_offset"), "4\n");
    fx.file(&format!("{d}/sriov_stride"), "1\n");
    fx.file(&format!("{d}/sriov_vf_device"), "2336\n");
    fx.file(&format!("{d}/sriov_drivers_autoprobe"), "1\n");
    fx
}

#[test]
fn sriov_numvfs_creates_and_removes_vfs() {
    let fx = sriov_fixture();
    let h = fx.host();
    let start = h.snapshot();
    let n = format!("{PF}/sriov_numvfs");
    assert_eq!(werr(&h, &n, b"5\n"), Some(ERANGE));
    w(&h, &n, b"2\n").unwrap();
    assert_eq!(r(&h, &n), "2");
    let vf0 = "/sys/bus/pci/devices/0000:41:00.4";
    let vf1 = "/sys/bus/pci/devices/0000:41:00.5";
    assert_eq!(r(&h, format!("{vf0}/device")), "0x2336");
    assert_eq!(r(&h, format!("{vf1}/vendor")), "0x10de");
    assert_eq!(
        h.read_link(&p(&format!("{vf0}/physfn"))).unwrap(),
        p("../0000:41:00.0")
    );
    assert_eq!(
        h.read_link(&p(&format!("{PF}/virtfn1"))).unwrap(),
        p("../0000:41:00.5")
    );
    assert_eq!(h.link_name(&p(&format!("{vf0}/iommu_group"))).unwrap(), "0");
    assert_eq!(h.link_name(&p(&format!("{vf1}/iommu_group"))).unwrap(), "1");
    assert_eq!(r(&h, "/sys/kernel/iommu_groups/1/type"), "DMA");
    // No driver knows the VF id: they stay unbound.
    assert_eq!(driver(&h, vf0), None);
    assert_eq!(werr(&h, &n, b"3\n"), Some(EBUSY));
    w(&h, &n, b"2\n").unwrap();
    // A VF goes to vfio-pci like any function.
    w(&h, format!("{vf0}/driver_override"), b"vfio-pci").unwrap();
    assert_eq!(werr(&h, PROBE, b"0000:41:00.4"), None);
    assert_eq!(
        driver(&h, vf0),
        None,
        "vfio-pci is not registered in this tree"
    );
    w(&h, &n, b"0\n").unwrap();
    assert!(!exists(&h, vf0));
    assert!(!exists(&h, "/sys/kernel/iommu_groups/0"));
    assert_eq!(start, h.snapshot());
}

#[test]
fn sriov_on_driverless_pf_is_enoent() {
    let fx = sriov_fixture();
    let h = fx.host();
    w(&h, format!("{PF}/driver/unbind"), b"0000:41:00.0").unwrap();
    assert_eq!(werr(&h, format!("{PF}/sriov_numvfs"), b"1"), Some(ENOENT));
    assert!(h
        .dmesg()
        .last()
        .unwrap()
        .contains("Driver does not support SRIOV configuration via sysfs"));
}

const TYPES: &str = "1001 : NVIDIA H100-20C\n1002 : NVIDIA H100-40C\n1003 : NVIDIA H100-80C\n";

fn nvidia_fixture() -> Fx {
    let fx = sriov_fixture();
    let d = "sys/devices/pci0000:40/0000:40:01.1/0000:41:00.0";
    fx.file(&format!("{d}/sriov_numvfs"), "4\n");
    for i in 0..4u32 {
        let addr = format!("0000:41:00.{}", i + 4);
        let vd = fx.pci(&addr, "0x10de", "0x2336", "0x030200", "nvidia", 31 + i);
        fx.link(&format!("{vd}/physfn"), "../0000:41:00.0");
        fx.link(&format!("{d}/virtfn{i}"), &format!("../{addr}"));
        fx.file(&format!("{vd}/nvidia/creatable_vgpu_types"), TYPES);
        fx.file(&format!("{vd}/nvidia/current_vgpu_type"), "0\n");
    }
    fx
}

fn creatable(h: &SimHost, vf: u32) -> Vec<u32> {
    r(
        h,
        format!(
            "/sys/bus/pci/devices/0000:41:00.{}/nvidia/creatable_vgpu_types",
            vf + 4
        ),
    )
    .lines()
    .filter_map(|l| l.split(':').next()?.trim().parse().ok())
    .collect()
}

fn set_type(h: &SimHost, vf: u32, id: &str) -> Option<i32> {
    werr(
        h,
        format!(
            "/sys/bus/pci/devices/0000:41:00.{}/nvidia/current_vgpu_type",
            vf + 4
        ),
        id.as_bytes(),
    )
}

#[test]
fn nvidia_current_vgpu_type_shrinks_siblings() {
    let fx = nvidia_fixture();
    let h = fx.host();
    let start = h.snapshot();
    assert_eq!(set_type(&h, 0, "1001\n"), None);
    assert_eq!(creatable(&h, 0), Vec::<u32>::new());
    for vf in 1..4 {
        assert_eq!(
            creatable(&h, vf),
            [1001],
            "homogeneous: only the type in use"
        );
    }
    assert_eq!(set_type(&h, 1, "1002\n"), Some(EINVAL));
    assert_eq!(set_type(&h, 0, "1001\n"), Some(EBUSY));
    assert_eq!(set_type(&h, 1, "zz"), Some(EINVAL));
    for vf in 1..4 {
        assert_eq!(set_type(&h, vf, "1001"), None);
    }
    // 4 × 20 GB fill the 80 GB GPU.
    assert_eq!(creatable(&h, 0), Vec::<u32>::new());
    for vf in 0..4 {
        assert_eq!(set_type(&h, vf, "0\n"), None);
    }
    assert_eq!(creatable(&h, 2), [1001, 1002, 1003]);
    assert_eq!(start, h.snapshot());
}

#[test]
fn nvidia_capacity_follows_framebuffer() {
    let fx = nvidia_fixture();
    let h = fx.host();
    assert_eq!(set_type(&h, 0, "1002"), None);
    assert_eq!(creatable(&h, 1), [1002]);
    assert_eq!(set_type(&h, 1, "1002"), None);
    assert_eq!(
        creatable(&h, 2),
        Vec::<u32>::new(),
        "2 × 40 GB is the whole GPU"
    );
    assert_eq!(set_type(&h, 2, "1002"), Some(EINVAL));
    // Clearing an unconfigured VF is a no-op.
    assert_eq!(set_type(&h, 3, "0"), None);
}

#[test]
fn nvidia_vfs_recreated_by_sriov_get_the_types_back() {
    let fx = nvidia_fixture();
    let h = fx.host();
    let start = h.snapshot();
    w(&h, format!("{PF}/sriov_numvfs"), b"0").unwrap();
    assert!(!exists(&h, "/sys/bus/pci/devices/0000:41:00.4"));
    w(&h, format!("{PF}/sriov_numvfs"), b"4").unwrap();
    assert_eq!(creatable(&h, 3), [1001, 1002, 1003]);
    assert_eq!(set_type(&h, 3, "1003"), None);
    assert_eq!(creatable(&h, 0), Vec::<u32>::new());
    // The recreated VFs differ from the recorded ones only where the recording had more
    // (driver, enable 1, reset_method-less): the vGPU files are the same.
    let now = h.snapshot();
    let key = p("/sys/devices/pci0000:40/0000:40:01.1/0000:41:00.5/nvidia/current_vgpu_type");
    assert_eq!(now.get(&key), start.get(&key));
}

fn gvt_fixture() -> Fx {
    let fx = Fx::new();
    let d = fx.pci("0000:00:02.0", "0x8086", "0x3e92", "0x030000", "i915", 0);
    for (t, n) in [("i915-GVTg_V5_4", "2"), ("i915-GVTg_V5_8", "4")] {
        fx.file(
            &format!("{d}/mdev_supported_types/{t}/available_instances"),
            &format!("{n}\n"),
        );
        fx.file(
            &format!("{d}/mdev_supported_types/{t}/device_api"),
            "vfio-pci\n",
        );
        fx.dir(&format!("{d}/mdev_supported_types/{t}/devices"));
    }
    fx.link(
        "sys/class/mdev_bus/0000:00:02.0",
        "../../devices/pci0000:40/0000:40:01.1/0000:00:02.0",
    );
    fx.dir("sys/bus/mdev/drivers/vfio_mdev");
    fx
}

#[test]
fn generic_parent_has_independent_type_counts() {
    let fx = gvt_fixture();
    let h = fx.host();
    let start = h.snapshot();
    let types = "/sys/class/mdev_bus/0000:00:02.0/mdev_supported_types";
    let u = |n: u32| format!("11111111-2222-4333-8444-{n:012}");
    w(
        &h,
        format!("{types}/i915-GVTg_V5_4/create"),
        u(1).as_bytes(),
    )
    .unwrap();
    assert_eq!(
        r(&h, format!("{types}/i915-GVTg_V5_4/available_instances")),
        "1"
    );
    assert_eq!(
        r(&h, format!("{types}/i915-GVTg_V5_8/available_instances")),
        "4"
    );
    let dev = format!("/sys/bus/mdev/devices/{}", u(1));
    assert_eq!(
        h.link_name(&p(&format!("{dev}/driver"))).unwrap(),
        "vfio_mdev"
    );
    // Group 0 is taken by the GPU itself.
    assert_eq!(h.link_name(&p(&format!("{dev}/iommu_group"))).unwrap(), "1");
    w(
        &h,
        format!("{types}/i915-GVTg_V5_4/create"),
        u(2).as_bytes(),
    )
    .unwrap();
    assert_eq!(
        werr(
            &h,
            format!("{types}/i915-GVTg_V5_4/create"),
            u(3).as_bytes()
        ),
        Some(ENOSPC)
    );
    for i in [1, 2] {
        w(&h, format!("/sys/bus/mdev/devices/{}/remove", u(i)), b"1").unwrap();
    }
    assert_eq!(start, h.snapshot());
}

fn nvidia_mdev_fixture() -> Fx {
    let fx = Fx::new();
    let d = fx.pci("0000:65:00.0", "0x10de", "0x1eb8", "0x030200", "nvidia", 5);
    for (t, max) in [("nvidia-256", 8), ("nvidia-257", 4)] {
        let td = format!("{d}/mdev_supported_types/{t}");
        fx.file(&format!("{td}/available_instances"), &format!("{max}\n"));
        fx.file(
            &format!("{td}/description"),
            &format!("num_heads=4, frl_config=60, framebuffer=2048M, max_resolution=4096x2160, max_instance={max}\n"),
        );
        fx.dir(&format!("{td}/devices"));
    }
    fx.link(
        "sys/class/mdev_bus/0000:65:00.0",
        "../../devices/pci0000:40/0000:40:01.1/0000:65:00.0",
    );
    fx.dir("sys/bus/mdev/drivers/nvidia-vgpu-vfio");
    fx
}

#[test]
fn nvidia_mdev_allows_one_type_at_a_time() {
    let fx = nvidia_mdev_fixture();
    let h = fx.host();
    let start = h.snapshot();
    let types = "/sys/class/mdev_bus/0000:65:00.0/mdev_supported_types";
    let u = |n: u32| format!("aaaaaaaa-2222-4333-8444-{n:012}");
    w(&h, format!("{types}/nvidia-256/create"), u(1).as_bytes()).unwrap();
    assert_eq!(
        r(&h, format!("{types}/nvidia-256/available_instances")),
        "7"
    );
    assert_eq!(
        r(&h, format!("{types}/nvidia-257/available_instances")),
        "0"
    );
    assert_eq!(
        werr(&h, format!("{types}/nvidia-257/create"), u(2).as_bytes()),
        Some(ENOSPC)
    );
    w(&h, format!("/sys/bus/mdev/devices/{}/remove", u(1)), b"1").unwrap();
    assert_eq!(
        r(&h, format!("{types}/nvidia-257/available_instances")),
        "4"
    );
    assert_eq!(start, h.snapshot());
    assert!(
        Path::new(fx.0.path()).join("sys/bus/mdev/devices").is_dir(),
        "fixture untouched"
    );
}

#[test]
fn without_iommu_vfio_pci_probe_fails_and_device_stays_unbound() {
    let h = SimHost::from_fixture(real("firecracker-vm-no-gpu")).unwrap();
    let dev = "/sys/bus/pci/devices/0000:00:02.0";
    let start = h.snapshot();
    w(&h, format!("{dev}/driver/unbind"), b"0000:00:02.0").unwrap();
    w(&h, PROBE, b"0000:00:02.0").unwrap();
    assert_eq!(driver(&h, dev).as_deref(), Some("virtio-pci"));
    assert_eq!(start, h.snapshot());
    h.load_module("vfio-pci").unwrap();
    assert!(exists(&h, "/sys/bus/pci/drivers/vfio-pci"));
    w(&h, format!("{dev}/driver_override"), b"vfio-pci\n").unwrap();
    w(&h, format!("{dev}/driver/unbind"), b"0000:00:02.0").unwrap();
    w(&h, PROBE, b"0000:00:02.0").unwrap();
    assert_eq!(driver(&h, dev), None);
    assert_eq!(
        h.dmesg().last().unwrap(),
        "vfio-pci: probe of 0000:00:02.0 failed with error -22"
    );
    assert!(h.list_dir(Path::new("/dev/vfio")).unwrap() == ["vfio"]);
}
