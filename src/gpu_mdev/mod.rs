//! The mediated rung: mdev types (GVT-g, NVIDIA vGPU), SR-IOV virtual functions and NVIDIA's
//! vendor-VFIO vGPU.

use vm_passthrough::PciAddress;

use crate::host::{self, HostOps};
use crate::inventory::{HostInventory, MdevParent};

/// The sharing technology behind an mdev type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum MdevType {
    /// Intel GVT-g (`i915-GVTg_*`).
    IntelGvtg,
    /// NVIDIA vGPU on the mdev bus (`nvidia-NNN`).
    NvidiaVgpu,
    /// AMD MxGPU.
    AmdMxgpu,
    /// The kernel's sample drivers (mbochs, mdpy, mtty) and anything else.
    Other,
}

impl MdevType {
    /// Classifies a type by its parent's driver and its id.
    pub fn classify(parent_driver: Option<&str>, type_id: &str) -> Self {
        if type_id.starts_with("i915-") {
            MdevType::IntelGvtg
        } else if type_id.starts_with("nvidia-") || parent_driver == Some("nvidia") {
            MdevType::NvidiaVgpu
        } else if matches!(parent_driver, Some("amdgpu") | Some("gim")) {
            MdevType::AmdMxgpu
        } else {
            MdevType::Other
        }
    }
}

/// One creatable type of a parent (the product guide's `config`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct MdevConfig {
    /// Human name (`GRID T4-1Q`, or the id when the driver gives no name).
    pub name: String,
    /// Type id (`nvidia-222`).
    pub type_id: String,
    /// Instances that can still be created.
    pub available_instances: u32,
    /// The technology.
    pub mdev_type: MdevType,
    /// `description`, when given.
    pub description: Option<String>,
}

fn configs(p: &MdevParent) -> Vec<MdevConfig> {
    p.types
        .iter()
        .map(|t| MdevConfig {
            name: t.name.clone().unwrap_or_else(|| t.id.clone()),
            type_id: t.id.clone(),
            available_instances: t.available_instances.unwrap_or(0),
            mdev_type: MdevType::classify(p.driver.as_deref(), &t.id),
            description: t.description.clone(),
        })
        .collect()
}

/// PCI GPUs that parent mdev types, with their types, on the default host.
pub fn scan_mdev_capable_gpus() -> Vec<(PciAddress, Vec<MdevConfig>)> {
    scan_mdev_capable_gpus_on(host::default_host().as_ref())
}

/// PCI GPUs that parent mdev types, with their types, on `host`.
pub fn scan_mdev_capable_gpus_on(host: &dyn HostOps) -> Vec<(PciAddress, Vec<MdevConfig>)> {
    mdev_capable_of(&HostInventory::scan(host))
}

/// PCI mdev parents of a scanned inventory (non-PCI parents such as mbochs are in
/// `HostInventory::mdev_parents`).
pub fn mdev_capable_of(inv: &HostInventory) -> Vec<(PciAddress, Vec<MdevConfig>)> {
    inv.mdev_parents
        .iter()
        .filter_map(|p| Some((p.pci_address?, configs(p))))
        .collect()
}
