//! What the agent's tests read back from a (simulated) host and its state directory.

use std::path::Path;

use vm_device::inventory::HostInventory;
use vm_passthrough::HostOps;

/// Every PCI function with its driver, in scan order.
pub fn drivers(host: &dyn HostOps) -> Vec<(String, Option<String>)> {
    HostInventory::scan(host)
        .functions
        .iter()
        .map(|f| (f.address.to_string(), f.driver.clone()))
        .collect()
}

/// The journal files under `state`, sorted.
pub fn journals(state: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(state.join("journal"))
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.ends_with(".json"))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}
