//! Mediated devices on the recorded QEMU q35 tree (rules 26–33).

mod common;

use std::path::Path;

use common::*;
use vm_device_host::prelude::*;
use vm_device_sim::kernel::errno::*;
use vm_device_sim::SimHost;

fn uuid(n: u32) -> String {
    format!("5e5e5e5e-0000-4000-8000-{n:012x}")
}

fn create(h: &SimHost, types: &str, ty: &str, u: &str) -> Option<i32> {
    werr(
        h,
        format!("{types}/{ty}/create"),
        format!("{u}\n").as_bytes(),
    )
}

fn avail(h: &SimHost, types: &str, ty: &str) -> u64 {
    r(h, format!("{types}/{ty}/available_instances"))
        .parse()
        .unwrap()
}

fn remove(h: &SimHost, u: &str, v: &[u8]) -> Option<i32> {
    werr(h, format!("/sys/bus/mdev/devices/{u}/remove"), v)
}

#[test]
fn create_makes_device_group_and_node() {
    let h = lab();
    let u = uuid(1);
    assert_eq!(create(&h, MBOCHS, "mbochs-small", &u), None);
    let dev = format!("/sys/bus/mdev/devices/{u}");
    assert_eq!(
        h.read_link(&p(&dev)).unwrap(),
        p(&format!("../../../devices/virtual/mbochs/mbochs/{u}"))
    );
    assert_eq!(
        h.read_link(&p(&format!("{dev}/driver"))).unwrap(),
        p("../../../../../bus/mdev/drivers/mbochs")
    );
    assert_eq!(
        h.read_link(&p(&format!("{dev}/mdev_type"))).unwrap(),
        p("../mdev_supported_types/mbochs-small")
    );
    assert_eq!(
        h.read_link(&p(&format!("{dev}/iommu_group"))).unwrap(),
        p("../../../../../kernel/iommu_groups/12")
    );
    assert_eq!(
        h.read_link(&p(&format!("{dev}/subsystem"))).unwrap(),
        p("../../../../../bus/mdev")
    );
    assert!(exists(&h, &format!("{MBOCHS}/mbochs-small/devices/{u}")));
    assert!(exists(&h, &format!("/sys/bus/mdev/drivers/mbochs/{u}")));
    assert_eq!(r(&h, "/sys/kernel/iommu_groups/12/type"), "unknown");
    assert_eq!(r(&h, "/sys/kernel/iommu_groups/12/name"), "vfio-noiommu");
    assert_eq!(
        h.read(Path::new("/sys/kernel/iommu_groups/12/reserved_regions"))
            .unwrap(),
        b""
    );
    assert!(exists(&h, "/dev/vfio/12"));
    assert!(h.group_viable(12));
    assert_eq!(
        h.dmesg().last().unwrap(),
        &format!("mbochs {u}: Adding to iommu group 12")
    );
}

#[test]
fn mbochs_pool_shared_across_types() {
    let h = lab();
    assert_eq!(create(&h, MBOCHS, "mbochs-small", &uuid(1)), None);
    assert_eq!(
        (
            avail(&h, MBOCHS, "mbochs-large"),
            avail(&h, MBOCHS, "mbochs-medium"),
            avail(&h, MBOCHS, "mbochs-small")
        ),
        (3, 15, 63)
    );
    // mdpy and mtty are untouched.
    assert_eq!(avail(&h, MDPY, "mdpy-xga"), 4);
    assert_eq!(avail(&h, MTTY, "mtty-1"), 24);
}

#[test]
fn mbochs_large_beyond_pool_is_enospc() {
    let h = lab();
    // The lab measured large 0, medium 3, small 15 after three larges: its pool still held
    // one small (4 MB) from an earlier step, which the same pool rule accounts for.
    assert_eq!(create(&h, MBOCHS, "mbochs-small", &uuid(9)), None);
    for i in 1..=3 {
        assert_eq!(create(&h, MBOCHS, "mbochs-large", &uuid(i)), None);
    }
    assert_eq!(
        (
            avail(&h, MBOCHS, "mbochs-large"),
            avail(&h, MBOCHS, "mbochs-medium"),
            avail(&h, MBOCHS, "mbochs-small")
        ),
        (0, 3, 15)
    );
    let before = h.snapshot();
    assert_eq!(create(&h, MBOCHS, "mbochs-large", &uuid(4)), Some(ENOSPC));
    assert_eq!(before, h.snapshot(), "a failed create leaves nothing");
    assert_eq!(
        h.dmesg().last().unwrap(),
        &format!("mbochs: probe of {} failed with error -28", uuid(4))
    );
    assert_eq!(create(&h, MBOCHS, "mbochs-small", &uuid(4)), None);
    assert_eq!(avail(&h, MBOCHS, "mbochs-small"), 14);
}

#[test]
fn mdpy_fifth_create_is_eusers() {
    let h = lab();
    let types = ["mdpy-xga", "mdpy-vga", "mdpy-hd", "mdpy-xga"];
    for (i, t) in types.iter().enumerate() {
        assert_eq!(create(&h, MDPY, t, &uuid(i as u32 + 1)), None);
        let left = 3 - i as u64;
        for t2 in ["mdpy-vga", "mdpy-xga", "mdpy-hd"] {
            assert_eq!(avail(&h, MDPY, t2), left, "{t2} after {} creates", i + 1);
        }
    }
    let before = h.snapshot();
    assert_eq!(create(&h, MDPY, "mdpy-hd", &uuid(9)), Some(EUSERS));
    assert_eq!(before, h.snapshot());
}

#[test]
fn mtty_ports_pool() {
    let h = lab();
    assert_eq!(create(&h, MTTY, "mtty-2", &uuid(1)), None);
    assert_eq!(
        (avail(&h, MTTY, "mtty-1"), avail(&h, MTTY, "mtty-2")),
        (22, 11)
    );
    for i in 2..=12 {
        assert_eq!(create(&h, MTTY, "mtty-2", &uuid(i)), None);
    }
    assert_eq!(
        (avail(&h, MTTY, "mtty-1"), avail(&h, MTTY, "mtty-2")),
        (0, 0)
    );
    assert_eq!(create(&h, MTTY, "mtty-2", &uuid(13)), Some(ENOSPC));
    assert_eq!(create(&h, MTTY, "mtty-1", &uuid(13)), Some(ENOSPC));
}

#[test]
fn create_duplicate_uuid_is_eexist() {
    let h = lab();
    let u = uuid(1);
    assert_eq!(create(&h, MBOCHS, "mbochs-small", &u), None);
    assert_eq!(create(&h, MBOCHS, "mbochs-small", &u), Some(EEXIST));
    assert_eq!(create(&h, MBOCHS, "mbochs-large", &u), Some(EEXIST));
    assert_eq!(
        create(&h, MDPY, "mdpy-vga", &u.to_uppercase()),
        Some(EEXIST)
    );
}

#[test]
fn create_rejects_non_canonical_uuids() {
    let h = lab();
    let t = format!("{MBOCHS}/mbochs-small/create");
    for bad in [
        &b"not-a-uuid\n"[..],
        b"\n",
        b"5e5e5e5e00004000800000000000000c",
        b"{5e5e5e5e-0000-4000-8000-00000000000c}",
    ] {
        assert_eq!(
            werr(&h, &t, bad),
            Some(EINVAL),
            "{}",
            String::from_utf8_lossy(bad)
        );
    }
}

#[test]
fn create_stores_uuid_lower_case() {
    let h = lab();
    let t = format!("{MBOCHS}/mbochs-small/create");
    w(&h, &t, b"5E5E5E5E-0000-4000-8000-00000000000C").unwrap();
    assert!(exists(
        &h,
        "/sys/bus/mdev/devices/5e5e5e5e-0000-4000-8000-00000000000c"
    ));
}

#[test]
fn remove_zero_is_noop() {
    let h = lab();
    let u = uuid(1);
    create(&h, MDPY, "mdpy-xga", &u);
    let before = h.snapshot();
    assert_eq!(remove(&h, &u, b"0\n"), None);
    assert_eq!(before, h.snapshot());
    assert_eq!(remove(&h, &u, b"x\n"), Some(EINVAL));
}

#[test]
fn remove_any_nonzero_removes_synchronously() {
    let h = lab();
    let start = h.snapshot();
    let u = uuid(1);
    create(&h, MDPY, "mdpy-xga", &u);
    assert_eq!(remove(&h, &u, b"2\n"), None);
    assert!(!exists(&h, &format!("/sys/bus/mdev/devices/{u}")));
    assert!(!exists(&h, "/sys/kernel/iommu_groups/12"));
    assert!(!exists(&h, "/dev/vfio/12"));
    assert_eq!(start, h.snapshot());
    // The attribute went with the device.
    assert_eq!(remove(&h, &u, b"1\n"), Some(ENOENT));
}

#[test]
fn new_group_is_the_lowest_free_number() {
    let h = lab();
    create(&h, MBOCHS, "mbochs-small", &uuid(1));
    create(&h, MDPY, "mdpy-vga", &uuid(2));
    create(&h, MTTY, "mtty-1", &uuid(3));
    assert_eq!(
        h.link_name(&p(&format!(
            "/sys/bus/mdev/devices/{}/iommu_group",
            uuid(3)
        )))
        .unwrap(),
        "14"
    );
    remove(&h, &uuid(2), b"1");
    create(&h, MTTY, "mtty-1", &uuid(4));
    assert_eq!(
        h.link_name(&p(&format!(
            "/sys/bus/mdev/devices/{}/iommu_group",
            uuid(4)
        )))
        .unwrap(),
        "13"
    );
}

#[test]
fn remove_under_open_device_fd_waits_for_the_close() {
    let h = lab();
    let u = uuid(1);
    create(&h, MDPY, "mdpy-xga", &u);
    h.open_device_fd(12, &u);
    let e = w(&h, format!("/sys/bus/mdev/devices/{u}/remove"), b"1").unwrap_err();
    assert!(vm_device_sim::faults::is_hang(&e));
    assert!(exists(&h, &format!("/sys/bus/mdev/devices/{u}")));
    h.close_device_fd(12, &u);
    assert!(!exists(&h, &format!("/sys/bus/mdev/devices/{u}")));
    assert_eq!(avail(&h, MDPY, "mdpy-hd"), 4);
}

#[test]
fn remove_with_only_group_claimed_is_immediate() {
    let h = lab();
    let u = uuid(1);
    create(&h, MBOCHS, "mbochs-medium", &u);
    h.set_group_claimed(12, true);
    assert_eq!(remove(&h, &u, b"1\n"), None);
    assert!(!exists(&h, "/dev/vfio/12"));
}

#[test]
fn parent_unload_removes_mdevs_and_reload_restores_counts() {
    let h = lab();
    let start = h.snapshot();
    create(&h, MBOCHS, "mbochs-large", &uuid(1));
    // mdev is used by the three parents.
    let e = h.unload_module("mdev").unwrap_err();
    assert!(
        e.to_string().contains("Resource temporarily unavailable"),
        "{e}"
    );
    h.open_device_fd(12, &uuid(1));
    assert!(h.unload_module("mbochs").is_err());
    h.close_device_fd(12, &uuid(1));
    h.unload_module("mbochs").unwrap();
    assert!(!exists(&h, "/sys/class/mdev_bus/mbochs"));
    assert!(!exists(&h, &format!("/sys/bus/mdev/devices/{}", uuid(1))));
    assert!(!exists(&h, "/dev/vfio/12"));
    h.load_module("mbochs").unwrap();
    assert_eq!(avail(&h, MBOCHS, "mbochs-large"), 4);
    assert_eq!(avail(&h, MBOCHS, "mbochs-small"), 64);
    // Only /proc/modules differs: the module line moved to the top, as a reload does.
    let now = h.snapshot();
    let diff: std::collections::BTreeSet<_> = start
        .keys()
        .chain(now.keys())
        .filter(|k| start.get(*k) != now.get(*k))
        .collect();
    assert_eq!(diff.into_iter().collect::<Vec<_>>(), [&p("/proc/modules")]);
}
