//! After prepare, the group opens through VFIO and every device reports its regions; VFIO
//! errors name the operation and the remedy; the product guide's `GpuPassthrough` works on
//! top of it.

use std::sync::Arc;

use vm_device::gpu_passthrough::{
    prepare, GpuPassthrough, PassthroughError, PciDeviceInfo, PrepareOptions,
};
use vm_device::host::SimHost;
use vm_device_host::vfio::region;
use vm_device_host::PciAddress;
use vm_device_sim::VfioFault;

const Q35: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/real/qemu-q35-viommu");
const EACCES: i32 = 13;

fn a(s: &str) -> PciAddress {
    s.parse().unwrap()
}

#[test]
fn a_prepared_pair_opens_through_vfio_with_regions_and_closes_before_release() {
    let h = SimHost::from_fixture(Q35).unwrap();
    let before = h.snapshot();
    let state = tempfile::tempdir().unwrap();
    let opts = PrepareOptions {
        allow_boot_vga: false,
        state_dir: state.path().into(),
    };
    let p = prepare(&h, &a("0000:06:01.0"), &opts).unwrap();
    {
        let s = p.open_vfio().unwrap_or_else(|e| panic!("{e}"));
        let names: Vec<String> = s.devices().iter().map(|d| d.address.to_string()).collect();
        assert_eq!(names, ["0000:06:01.0", "0000:06:02.0"]);
        for d in s.devices() {
            assert!(d.info.is_pci(), "{d:?}");
            // every region but VGA, which vfio-pci refuses on a non-VGA-class device
            assert_eq!(d.regions.len() as u32, d.info.num_regions - 1);
            assert!(d.regions.iter().all(|r| r.index != region::VGA));
            let cfg = d
                .regions
                .iter()
                .find(|r| r.index == region::CONFIG)
                .expect("a config region");
            assert!(cfg.size >= 256, "{cfg:?}");
        }
        assert!(h.device_fd_open("0000:06:01.0"));
        s.close().unwrap();
    }
    assert!(!h.device_fd_open("0000:06:01.0"));
    p.release().unwrap();
    assert_eq!(h.snapshot(), before);
}

#[test]
fn permission_denied_on_the_group_node_names_the_vfio_group_and_udev_rule() {
    let h = SimHost::from_fixture(Q35).unwrap();
    let state = tempfile::tempdir().unwrap();
    let opts = PrepareOptions {
        allow_boot_vga: false,
        state_dir: state.path().into(),
    };
    let p = prepare(&h, &a("0000:01:00.0"), &opts).unwrap();
    h.inject_vfio_fault(VfioFault {
        op: "vfio:open_group".into(),
        errno: EACCES,
        times: 1,
    });
    let e = p.open_vfio().err().expect("EACCES on /dev/vfio/7");
    let text = e.to_string();
    assert!(text.contains("open /dev/vfio/7"), "{text}");
    assert!(text.contains("usermod -a -G vfio"), "{text}");
    assert!(text.contains(r#"SUBSYSTEM=="vfio""#), "{text}");
    assert!(matches!(e, PassthroughError::Vfio { .. }));
    p.release().unwrap();
}

#[test]
fn gpu_passthrough_of_the_product_guide_prepares_opens_and_releases() {
    let h = Arc::new(SimHost::from_fixture(Q35).unwrap());
    let before = h.snapshot();
    let state = tempfile::tempdir().unwrap();
    let addr = a("0000:01:00.0");
    let info = PciDeviceInfo::read(h.as_ref(), &addr).unwrap();
    assert_eq!(info.driver.as_deref(), Some("bochs-drm"));
    assert_eq!(info.iommu_group, Some(7));
    let mut gpu = GpuPassthrough::with_host(h.clone(), addr, info).unwrap();
    gpu.set_state_dir(state.path());
    gpu.prepare().unwrap_or_else(|e| panic!("{e}"));
    assert!(gpu.is_prepared());
    assert_eq!(gpu.devices().len(), 1);
    assert!(!gpu.devices()[0].regions.is_empty());
    assert!(h.device_fd_open("0000:01:00.0"));
    gpu.release().unwrap();
    assert!(!gpu.is_prepared());
    assert_eq!(h.snapshot(), before);
}

#[test]
fn gpu_passthrough_gives_the_group_back_when_vfio_cannot_open_it_and_on_drop() {
    let h = Arc::new(SimHost::from_fixture(Q35).unwrap());
    let before = h.snapshot();
    let state = tempfile::tempdir().unwrap();
    let addr = a("0000:01:00.0");
    let info = PciDeviceInfo::read(h.as_ref(), &addr).unwrap();
    let mut gpu = GpuPassthrough::with_host(h.clone(), addr, info.clone()).unwrap();
    gpu.set_state_dir(state.path());
    h.inject_vfio_fault(VfioFault {
        op: "vfio:set_iommu".into(),
        errno: 19,
        times: 1,
    });
    let e = gpu.prepare().unwrap_err();
    assert!(e.to_string().contains("vfio_iommu_type1"), "{e}");
    assert!(!gpu.is_prepared());
    assert_eq!(h.snapshot(), before, "given back after the VFIO failure");

    gpu.prepare().unwrap();
    assert_ne!(h.snapshot(), before);
    drop(gpu);
    assert_eq!(h.snapshot(), before, "given back on drop");

    let wrong = GpuPassthrough::with_host(h.clone(), a("0000:02:00.0"), info);
    assert!(wrong.is_err(), "info of another device is refused");
}
