//! Applying the configuration at start: what `Setup::apply` does with the passthrough list.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use vm_device_agent::config::{Config, PassthroughSel};
use vm_device_agent::offer::DeviceKind;
use vm_device_agent::setup::Setup;
use vm_device_sim::SimHost;

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/hosts/bmc-datacenter-nvidia-vgpu")
}

#[test]
fn an_address_listed_twice_is_prepared_and_offered_once() {
    let dir = tempfile::tempdir().unwrap();
    let sim = Arc::new(SimHost::from_fixture(fixture()).unwrap());
    let before = sim.snapshot();
    let gpu = "0000:86:00.0".parse().unwrap();
    let cfg = Config {
        passthrough: PassthroughSel::Addresses(vec![gpu, gpu]),
        ..Config::default()
    };
    // Without de-duplication the device was offered twice (and one prepare per listed
    // address met the agent's own lock of the group).
    let mut setup = Setup::apply(sim.clone(), &cfg, &dir.path().join("state")).expect("setup");
    let devices: Vec<&DeviceKind> = setup.owned.resources.values().flatten().collect();
    assert_eq!(devices, [&DeviceKind::Pci { address: gpu }]);
    let left = setup.give_back();
    assert!(left.is_empty(), "{left:?}");
    assert!(
        sim.snapshot() == before,
        "the host differs after the give-back"
    );
}
