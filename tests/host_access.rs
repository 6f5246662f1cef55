//! How the manager uses the host: one read per attribute per scan, and no wgpu probe for a
//! plan that stops above the wgpu rung.

mod common;

use std::sync::Arc;

use vm_device::gpu_manager::{GpuMode, UnifiedGpuManager};
use vm_device::host::SimHost;
use vm_device_sim::{count_ops, Op};

fn sim(name: &str) -> Arc<SimHost> {
    Arc::new(SimHost::from_fixture(common::repo().join("fixtures/hosts").join(name)).unwrap())
}

#[test]
fn a_passthrough_plan_never_probes_wgpu() {
    let h = sim("intel-desktop-gvtg-dgpu");
    let mut m = UnifiedGpuManager::with_host(h.clone());
    m.scan_backends().unwrap();
    assert_eq!(
        m.select_by_mode(GpuMode::Passthrough).unwrap().mode(),
        GpuMode::Passthrough
    );
    m.auto_select().unwrap();
    assert!(!m.adapters_probed());
    assert!(!h.ops().contains(&Op::ProbeAdapters));
    // Falling through to wgpu does probe, once.
    let h = sim("intel-iommu-off");
    let mut m = UnifiedGpuManager::with_host(h.clone());
    m.scan_backends().unwrap();
    assert_eq!(m.auto_select().unwrap().mode(), GpuMode::Wgpu);
    m.backends().unwrap();
    assert_eq!(
        h.ops().iter().filter(|o| **o == Op::ProbeAdapters).count(),
        1
    );
}

#[test]
fn a_scan_reads_each_attribute_once() {
    for host in common::all_hosts() {
        let h = Arc::new(SimHost::from_fixture(&host).unwrap());
        let mut m = UnifiedGpuManager::with_host(h.clone());
        m.scan_backends().unwrap();
        let repeated: Vec<(String, usize)> = count_ops(&h.ops())
            .into_iter()
            .filter(|(k, n)| *n > 1 && (k.starts_with("read ") || k.starts_with("list ")))
            .collect();
        assert!(repeated.is_empty(), "{}: {repeated:?}", host.display());
    }
}

#[test]
fn the_product_guide_flow_selects_and_lists() {
    let h = sim("bmc-datacenter-nvidia-vgpu");
    let mut m = UnifiedGpuManager::with_host(h);
    m.set_preferred_mode(GpuMode::Mdev);
    m.set_auto_fallback(true);
    m.scan_backends().unwrap();
    m.auto_select().unwrap();
    assert_eq!(m.get_selected_backend().unwrap().mode(), GpuMode::Mdev);
    let all = m.backends().unwrap();
    let first_wgpu = all.iter().position(|c| c.mode() == GpuMode::Wgpu).unwrap();
    assert!(all[..first_wgpu].iter().all(|c| c.mode() != GpuMode::Wgpu));
    let err = m.select_by_index(all.len()).unwrap_err().to_string();
    assert!(err.contains("no backend at index"), "{err}");
    let unavailable = all.iter().position(|c| !c.is_available()).unwrap();
    assert!(m.select_by_index(unavailable).is_err());
    let ok = all.iter().position(|c| c.is_available()).unwrap();
    assert_eq!(m.select_by_index(ok).unwrap(), &all[ok]);
}

/// An attribute the scan may not read (EACCES) is "not readable", never "missing": the
/// file is there, and the fix is a permission, not a driver.
#[test]
fn an_unreadable_attribute_is_not_reported_missing() {
    use vm_device::inventory::HostInventory;
    use vm_device_sim::faults::{Fault, FaultPlan};
    for attr in ["vendor", "class", "boot_vga"] {
        let h = sim("intel-desktop-gvtg-dgpu");
        h.set_faults(
            FaultPlan::new().rule(Fault::read(format!("*/0000:01:00.0/{attr}")).errno(13)),
        );
        let inv = HostInventory::scan(h.as_ref());
        let w = inv
            .warnings
            .iter()
            .find(|w| w.path.ends_with(attr) && w.path.to_string_lossy().contains("0000:01:00.0"))
            .unwrap_or_else(|| panic!("{attr}: no warning: {:?}", inv.warnings));
        assert!(w.message.contains("not readable"), "{attr}: {}", w.message);
        assert!(!w.message.contains("missing"), "{attr}: {}", w.message);
    }
}
