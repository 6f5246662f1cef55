//! The passthrough rung: whole GPUs handed to a VM through VFIO.
//!
//! [`scan_available_gpus`] lists the GPUs; [`prepare`] moves a GPU's IOMMU group to
//! `vfio-pci` with a journaled, reversible [`crate::plan::Plan`]; [`GpuPassthrough`] is the
//! product guide's handle on top of it.

mod device;
mod error;
mod prepare;
pub mod probe;
#[cfg(feature = "test-support")]
pub mod profile;
pub mod rules;
#[cfg(feature = "test-support")]
pub mod scenario;
pub mod smoke;
mod vfio;

pub use device::PciDeviceInfo;
pub use error::{step_remedy, PassthroughError};
pub use prepare::{
    group_key, holders, iommu_group_of, plan_prepare, prepare, prepare_batch, read_facts, release,
    restore, restore_in, BatchError, GroupHolder, MovedDevice, PassthroughPlan, PrepareOptions,
    Prepared, VFIO_PCI,
};
pub use probe::probe;
pub use rules::held_open;
pub use smoke::{vfio_smoke, vfio_smoke_with, PathChoice, VfioReport, VfioSmokeError};
pub use vfio::{OpenedDevice, VfioHandles, VfioSession, VFIO_PERMISSION_REMEDY};

use vm_device_host::PciAddress;

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
    /// Where `vram_size` came from (`amdgpu_sysfs`, `xe_sysfs`, `nvml`, `unknown`); never a
    /// BAR.
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
        GpuInfo {
            vendor: GpuVendor::from_id(f.vendor_id.unwrap_or(0xffff)),
            model: f.device_name.clone().unwrap_or_else(|| f.display_name()),
            pci_address: f.address,
            vram_size: f.vram.map(|v| v.bytes).unwrap_or(0),
            vram_source: f.vram.map_or("unknown", |v| v.source.as_str()),
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

/// One GPU handed to a VM through VFIO, as the product guide uses it:
/// `GpuPassthrough::new(address, info)?`, then [`GpuPassthrough::prepare`] (moves its group
/// to vfio-pci with a journal, opens container, group and device fds, reads the regions),
/// then [`GpuPassthrough::release`] (or drop) to give everything back.
pub struct GpuPassthrough {
    host: host::Host,
    address: PciAddress,
    info: PciDeviceInfo,
    options: PrepareOptions,
    held: Option<prepare::Held>,
    vfio: Option<VfioHandles>,
}

impl std::fmt::Debug for GpuPassthrough {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GpuPassthrough")
            .field("address", &self.address)
            .field("info", &self.info)
            .field("options", &self.options)
            .field("prepared", &self.held.is_some())
            .field("vfio", &self.vfio)
            .finish()
    }
}

impl GpuPassthrough {
    /// A handle for the GPU at `address` on the default host (this machine, or the fixture
    /// named by `VM_HOST_ROOT`); `info` is [`PciDeviceInfo::read`] of that device.
    pub fn new(address: PciAddress, info: PciDeviceInfo) -> Result<Self, PassthroughError> {
        Self::with_host(host::default_host(), address, info)
    }

    /// As [`GpuPassthrough::new`] on `host`.
    pub fn with_host(
        host: host::Host,
        address: PciAddress,
        info: PciDeviceInfo,
    ) -> Result<Self, PassthroughError> {
        if info.address != address {
            return Err(PassthroughError::Refused {
                device: address,
                reasons: vec![crate::ladder::Reason::new(
                    crate::ladder::ReasonCode::DeviceNotFound,
                    format!(
                        "the PciDeviceInfo given is of {}, not of {address}",
                        info.address
                    ),
                )
                .remedy(format!("pass PciDeviceInfo::read(host, {address})"))],
            });
        }
        Ok(Self {
            host,
            address,
            info,
            options: PrepareOptions::default(),
            held: None,
            vfio: None,
        })
    }

    /// Allows passing through the boot display.
    pub fn set_allow_boot_vga(&mut self, allow: bool) {
        self.options.allow_boot_vga = allow;
    }

    /// Where journals and locks live (default `/run/vm-device`).
    pub fn set_state_dir(&mut self, dir: impl Into<std::path::PathBuf>) {
        self.options.state_dir = dir.into();
    }

    /// The device.
    pub fn address(&self) -> PciAddress {
        self.address
    }

    /// What was read of the device.
    pub fn info(&self) -> &PciDeviceInfo {
        &self.info
    }

    /// True between a successful prepare and the release.
    pub fn is_prepared(&self) -> bool {
        self.held.is_some()
    }

    /// The applied plan, while prepared.
    pub fn plan(&self) -> Option<&PassthroughPlan> {
        self.held.as_ref().map(|h| &h.plan)
    }

    /// The devices opened through VFIO, with their regions, while prepared.
    pub fn devices(&self) -> &[OpenedDevice] {
        self.vfio.as_ref().map_or(&[], |v| &v.devices)
    }

    /// Moves the GPU's IOMMU group to vfio-pci and opens it through VFIO. If VFIO cannot
    /// open it, the group is given back before the error returns. Preparing twice is a
    /// no-op.
    pub fn prepare(&mut self) -> Result<(), PassthroughError> {
        if self.held.is_some() {
            return Ok(());
        }
        let host = self.host.clone();
        let held = prepare::prepare_held(host.as_ref(), &self.address, &self.options)?;
        let devices = prepare::vfio_devices(&held.plan);
        match VfioHandles::open(host.as_ref(), held.plan.group, &devices) {
            Ok(v) => {
                self.vfio = Some(v);
                self.held = Some(held);
                Ok(())
            }
            Err(e) => {
                // The VFIO error is the one to report; a failed give-back keeps its journal.
                let _ = held.release(host.as_ref());
                Err(e)
            }
        }
    }

    /// Closes the VFIO fds and gives every moved device back to its driver.
    pub fn release(&mut self) -> Result<(), PassthroughError> {
        let host = self.host.clone();
        let closed = match self.vfio.take() {
            Some(mut v) => v.close(host.as_ref()),
            None => Ok(()),
        };
        if let Some(held) = self.held.take() {
            held.release(host.as_ref())?;
        }
        closed
    }
}

impl Drop for GpuPassthrough {
    fn drop(&mut self) {
        if std::thread::panicking() {
            return;
        }
        // A failed release keeps its journal for `vm-cli gpu restore`.
        let _ = self.release();
    }
}
