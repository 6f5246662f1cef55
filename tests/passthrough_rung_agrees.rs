//! `gpu list` (the passthrough rung, from the inventory) and `gpu prepare` (from a direct
//! read of the group) must agree on every GPU of every fixture: a GPU listed as available
//! can be prepared, and a refused one is refused by prepare for the same reason.

use std::path::{Path, PathBuf};

use vm_device::gpu_manager::Target;
use vm_device::gpu_passthrough::{plan_prepare, PassthroughError};
use vm_device::host::SimHost;
use vm_device::inventory::HostInventory;
use vm_device::ladder::Filter;
use vm_device::rungs::passthrough::probe as passthrough;

fn fixtures() -> Vec<PathBuf> {
    let mut out = vec![PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/fixtures/real/qemu-q35-viommu"
    ))];
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/hosts");
    let mut more: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|r| r.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    more.sort();
    out.extend(more);
    out
}

#[test]
fn the_passthrough_rung_and_prepare_agree_on_every_gpu_of_every_fixture() {
    let mut compared = 0;
    for fx in fixtures() {
        let h = SimHost::from_fixture(&fx).unwrap();
        let inv = HostInventory::scan(&h);
        for allow_boot_vga in [false, true] {
            let filter = Filter {
                allow_boot_vga,
                ..Filter::default()
            };
            for c in passthrough::probe(&inv, &filter) {
                let Target::Gpu { address, .. } = c.target else {
                    continue;
                };
                let planned = plan_prepare(&h, &address, allow_boot_vga);
                let ctx = format!("{} {address} allow_boot_vga={allow_boot_vga}", fx.display());
                match (&c.reason(), &planned) {
                    (None, Ok(_)) => {}
                    (Some(r), Err(PassthroughError::Refused { reasons, .. })) => assert!(
                        reasons.iter().any(|p| p.code == r.code),
                        "{ctx}: rung says {:?}, prepare says {reasons:?}",
                        r.code
                    ),
                    (r, p) => panic!("{ctx}: rung {r:?}, prepare {p:?}"),
                }
                compared += 1;
            }
        }
    }
    assert!(compared >= 20, "only {compared} GPUs compared");
}
