//! The passthrough rung: whole GPUs handed to a VM through VFIO.
//!
//! [`scan_available_gpus`] lists the GPUs; [`prepare`] moves a GPU's IOMMU group to
//! `vfio-pci` with a journaled, reversible [`crate::plan::Plan`]; [`GpuPassthrough`] is the
//! product guide's handle on top of it.

mod device;
mod error;
pub mod group;
mod prepare;
pub mod scenario;

pub use device::PciDeviceInfo;
pub use error::PassthroughError;
pub use prepare::{
    group_key, holders, iommu_group_of, plan_prepare, prepare, release, restore, GroupHolder,
    MovedDevice, PassthroughPlan, PrepareOptions, Prepared, VFIO_PCI,
};

use vm_passthrough::PciAddress;

use crate::host::{self, HostOps};
use crate::inventory::{HostInventory, PciFunction};

/// GPU vendors by PCI vendor id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum GpuVendor {
    /// `10de`.
    Nvidia,
    /// `1002`.
    Amd,
    /// `8086`.
    Intel,
    /// `1a03` (BMC displays).
    Aspeed,
    /// `1af4`, `1b36`, `1234`, `15ad`: emulated display devices.
    Virtual,
    /// Anyone else.
    Other(u16),
}

impl GpuVendor {
    /// From a PCI vendor id.
    pub fn from_id(id: u16) -> Self {
        match id {
            0x10de => GpuVendor::Nvidia,
            0x1002 => GpuVendor::Amd,
            0x8086 => GpuVendor::Intel,
            0x1a03 => GpuVendor::Aspeed,
            0x1af4 | 0x1b36 | 0x1234 | 0x15ad => GpuVendor::Virtual,
            other => GpuVendor::Other(other),
        }
    }
}

/// A GPU as `scan_available_gpus` reports it (the product guide's shape).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct GpuInfo {
    /// Vendor.
    pub vendor: GpuVendor,
    /// Model name from the PCI ID database, or the ids.
    pub model: String,
    /// Address of the display function.
    pub pci_address: PciAddress,
    /// VRAM in bytes (0 when unknown); see `vram_source`.
    pub vram_size: u64,
    /// Where `vram_size` came from (`driver`, `largest_prefetchable_bar`, `unknown`).
    pub vram_source: &'static str,
    /// Bound driver (`""` when none).
    pub driver: String,
    /// Companion functions (HDMI audio, …).
    pub companions: Vec<PciAddress>,
    /// IOMMU group.
    pub iommu_group: Option<u32>,
    /// Boot display.
    pub boot_vga: bool,
}

impl GpuInfo {
    fn from_function(f: &PciFunction, companions: Vec<PciAddress>) -> Self {
        use crate::inventory::VramSource;
        GpuInfo {
            vendor: GpuVendor::from_id(f.vendor_id.unwrap_or(0xffff)),
            model: f.device_name.clone().unwrap_or_else(|| f.display_name()),
            pci_address: f.address,
            vram_size: f.vram.map(|v| v.bytes).unwrap_or(0),
            vram_source: match f.vram.map(|v| v.source) {
                Some(VramSource::Driver) => "driver",
                Some(VramSource::LargestPrefetchableBar) => "largest_prefetchable_bar",
                None => "unknown",
            },
            driver: f.driver.clone().unwrap_or_default(),
            companions,
            iommu_group: f.iommu_group,
            boot_vga: f.boot_vga == Some(true),
        }
    }
}

/// Every physical GPU of the default host (this machine, or `VM_HOST_ROOT`).
pub fn scan_available_gpus() -> Vec<GpuInfo> {
    scan_available_gpus_on(host::default_host().as_ref())
}

/// Every physical GPU of `host`.
pub fn scan_available_gpus_on(host: &dyn HostOps) -> Vec<GpuInfo> {
    gpus_of(&HostInventory::scan(host))
}

/// Every physical GPU (virtual functions excluded) of a scanned inventory.
pub fn gpus_of(inv: &HostInventory) -> Vec<GpuInfo> {
    inv.gpus
        .iter()
        .filter_map(|g| {
            let f = inv.function(&g.address)?;
            (f.physfn.is_none()).then(|| GpuInfo::from_function(f, g.companions.clone()))
        })
        .collect()
}
