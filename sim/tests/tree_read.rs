//! Reading a recorded tree through SimHost: links resolve like the kernel's sysfs.

use std::path::{Path, PathBuf};

use vm_device_host::prelude::*;
use vm_device_host::NodeKind;
use vm_device_sim::SimHost;

fn shared() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/real/qemu-q35-viommu")
}

#[test]
fn device_links_resolve_to_device_directories() {
    let h = SimHost::from_fixture(shared()).unwrap();
    let dev = Path::new("/sys/bus/pci/devices/0000:01:00.0");
    assert_eq!(h.kind(dev), Some(NodeKind::Link));
    assert!(h.is_dir(dev));
    let names = h.list_dir(dev).unwrap();
    assert!(names.contains(&"vendor".to_string()), "{names:?}");
    assert_eq!(h.read_attr(&dev.join("vendor")).unwrap(), "0x1234");
    assert_eq!(h.link_name(&dev.join("driver")).unwrap(), "bochs-drm");
    assert_eq!(
        h.canonicalize(&dev.join("iommu_group")).unwrap(),
        Path::new("/sys/kernel/iommu_groups/7")
    );
}

#[test]
fn empty_dirs_from_the_fixture_list_exist() {
    let h = SimHost::from_fixture(shared()).unwrap();
    assert_eq!(
        h.list_dir(Path::new("/sys/bus/mdev/devices")).unwrap(),
        Vec::<String>::new()
    );
    assert!(h
        .list_dir(Path::new("/"))
        .unwrap()
        .iter()
        .all(|n| n != ".fixture"));
}
