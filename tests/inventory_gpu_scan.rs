//! `HostInventory::scan_gpus` (the node agent's start) reads only the GPUs, their slots and
//! their IOMMU groups, and the passthrough rung judges every GPU on it exactly as on a full
//! scan, on every host tree the project keeps.

mod common;

use vm_device::host::SimHost;
use vm_device::inventory::HostInventory;
use vm_device::ladder::Filter;
use vm_device::rungs::passthrough;

#[test]
fn the_gpu_scan_judges_every_gpu_as_the_full_scan_does() {
    let mut judged = 0;
    for tree in common::all_hosts() {
        let name = common::host_name(&tree);
        let Ok(host) = SimHost::from_fixture(&tree) else {
            continue;
        };
        let full = HostInventory::scan(&host);
        let gpus = HostInventory::scan_gpus(&host);
        assert_eq!(gpus.gpus, full.gpus, "{name}: GPUs and companions");
        assert_eq!(gpus.host, full.host, "{name}: host facts");
        assert_eq!(gpus.mdev_parents, full.mdev_parents, "{name}: mdev parents");
        for f in &gpus.functions {
            assert_eq!(full.function(&f.address), Some(f), "{name}: {}", f.address);
        }
        for g in &full.gpus {
            let group = full.function(&g.address).and_then(|f| f.iommu_group);
            if let Some(group) = group {
                assert_eq!(
                    gpus.groups.get(&group),
                    full.groups.get(&group),
                    "{name}: group {group}"
                );
            }
        }
        for allow_boot_vga in [false, true] {
            let filter = Filter {
                allow_boot_vga,
                ..Filter::default()
            };
            assert_eq!(
                passthrough::probe(&gpus, &filter),
                passthrough::probe(&full, &filter),
                "{name}: passthrough candidates (allow_boot_vga {allow_boot_vga})"
            );
        }
        judged += full.gpus.len();
    }
    assert!(judged >= 10, "expected GPUs on the hosts, judged {judged}");
}

#[test]
fn the_gpu_scan_leaves_out_functions_that_are_no_gpu_nor_beside_one() {
    let tree = common::repo().join("fixtures/hosts/numa-2node-gpus");
    let host = SimHost::from_fixture(&tree).unwrap();
    let full = HostInventory::scan(&host);
    let gpus = HostInventory::scan_gpus(&host);
    assert!(
        gpus.functions.len() < full.functions.len(),
        "{} of {} functions read",
        gpus.functions.len(),
        full.functions.len()
    );
    for f in &gpus.functions {
        let beside_gpu = full.gpus.iter().any(|g| {
            let gf = full.function(&g.address).unwrap();
            g.address.same_slot(&f.address)
                || (gf.iommu_group.is_some() && gf.iommu_group == f.iommu_group)
        });
        assert!(f.is_display() || beside_gpu, "{} read", f.address);
    }
}
