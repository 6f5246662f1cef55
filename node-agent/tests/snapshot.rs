//! The agent's snapshot read from its own devices one by one (at start and at every poll)
//! answers exactly as the snapshot from a scan of the whole host does.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use vm_device::inventory::HostInventory;
use vm_device_agent::agent::read_snapshot;
use vm_device_agent::config::{Config, PassthroughSel};
use vm_device_agent::offer::{self, Owned};
use vm_device_agent::setup::Setup;
use vm_device_sim::SimHost;
use vm_passthrough::{HostOps, Sysfs};

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/hosts/bmc-datacenter-nvidia-vgpu")
}

fn scanned(host: &dyn HostOps, owned: &Owned) -> offer::Snapshot {
    offer::snapshot(owned, &HostInventory::scan(host))
}

#[test]
fn the_read_snapshot_equals_the_scanned_one_through_health_changes() {
    let dir = tempfile::tempdir().unwrap();
    let sim = Arc::new(SimHost::from_fixture(fixture()).unwrap());
    let cfg = Config {
        passthrough: PassthroughSel::Available,
        ..Config::default()
    };
    let mut setup = Setup::apply(sim.clone(), &cfg, &dir.path().join("state")).expect("setup");
    let owned = setup.owned.clone();
    assert!(offer::pci_only(&owned));
    let now = read_snapshot(sim.as_ref(), &owned);
    assert_eq!(now, scanned(sim.as_ref(), &owned));
    let devices: Vec<_> = now.values().flatten().collect();
    assert_eq!(devices.len(), 2, "{now:?}");
    assert!(devices.iter().all(|d| d.healthy), "{now:?}");
    assert!(devices.iter().all(|d| d.iommu_group.is_some()), "{now:?}");

    // A GPU unbound from vfio-pci behind the agent's back: unhealthy, in both readings.
    let gone = devices[1].id.clone();
    sim.write_attr(
        Path::new("/sys/bus/pci/drivers/vfio-pci/unbind"),
        gone.as_bytes(),
    )
    .unwrap();
    let now = read_snapshot(sim.as_ref(), &owned);
    assert_eq!(now, scanned(sim.as_ref(), &owned));
    let health: Vec<(String, bool)> = now
        .values()
        .flatten()
        .map(|d| (d.id.clone(), d.healthy))
        .collect();
    assert_eq!(health, [(devices[0].id.clone(), true), (gone, false)]);
    let left = setup.give_back();
    assert!(left.is_empty(), "{left:?}");
}
