//! [`PciDeviceInfo`]: what passthrough needs to know about one PCI function, read by the
//! inventory's reader ([`crate::inventory::read_function`]) for one function, not a
//! whole-host scan.

use std::path::PathBuf;

use serde::Serialize;
use vm_device_host::{HostError, HostOps, PciAddress};

use super::rules::DeviceFacts;
use crate::inventory::PciReader;

/// One PCI function as passthrough sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PciDeviceInfo {
    /// Address.
    pub address: PciAddress,
    /// Vendor id.
    pub vendor_id: u16,
    /// Device id.
    pub device_id: u16,
    /// 24-bit class code.
    pub class: u32,
    /// Bound driver.
    pub driver: Option<String>,
    /// `driver_override` as read, `None` when it reads `(null)` (or the file is absent).
    pub driver_override: Option<String>,
    /// IOMMU group number.
    pub iommu_group: Option<u32>,
    /// `boot_vga` = 1.
    pub boot_vga: bool,
    /// `sriov_numvfs` (0 without SR-IOV).
    pub sriov_numvfs: u32,
    /// UUIDs of active mediated devices this function parents.
    pub mdevs: Vec<String>,
    /// Device nodes through which host processes use it (`/dev/dri/card0`, `/dev/nvidia0`).
    pub device_nodes: Vec<PathBuf>,
}

impl PciDeviceInfo {
    /// `/sys/bus/pci/devices/ADDR`.
    pub fn sysfs_dir(addr: &PciAddress) -> PathBuf {
        PathBuf::from(format!("/sys/bus/pci/devices/{addr}"))
    }

    /// Reads the function at `addr`. Errors carry the path that failed (`ENOENT` on the
    /// device directory: no such function).
    pub fn read(host: &dyn HostOps, addr: &PciAddress) -> Result<Self, HostError> {
        Self::read_with(&mut PciReader::new(host), host, addr, None)
    }

    /// As [`PciDeviceInfo::read`] through `reader` (what it lists once is listed once for
    /// a whole group), with the IOMMU group already known (not read again).
    pub(crate) fn read_with(
        reader: &mut PciReader<'_>,
        host: &dyn HostOps,
        addr: &PciAddress,
        known_group: Option<u32>,
    ) -> Result<Self, HostError> {
        // One reader of PCI functions: the inventory's, strict (a prepare must not act on
        // a function it could only half read).
        let f = reader.read(addr, known_group)?;
        let unknown = |what: &str| {
            HostError::io(
                "read",
                Self::sysfs_dir(addr).join(what),
                std::io::Error::new(std::io::ErrorKind::InvalidData, format!("no {what}")),
            )
        };
        let dir = Self::sysfs_dir(addr);
        let mut mdevs = Vec::new();
        let types = dir.join("mdev_supported_types");
        match host.list_dir(&types) {
            Ok(names) => {
                for t in names {
                    match host.list_dir(&types.join(&t).join("devices")) {
                        Ok(uuids) => mdevs.extend(uuids),
                        Err(e) if e.is_not_found() => {}
                        Err(e) => return Err(e),
                    }
                }
                mdevs.sort();
            }
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e),
        }
        Ok(PciDeviceInfo {
            address: *addr,
            vendor_id: f.vendor_id.ok_or_else(|| unknown("vendor"))?,
            device_id: f.device_id.ok_or_else(|| unknown("device"))?,
            class: f.class.ok_or_else(|| unknown("class"))?,
            driver: f.driver,
            driver_override: f.driver_override,
            iommu_group: f.iommu_group,
            boot_vga: f.boot_vga == Some(true),
            sriov_numvfs: f.sriov.map_or(0, |s| s.num_vfs),
            mdevs,
            device_nodes: f.device_nodes,
        })
    }

    /// The lowest DRM card minor (`/dev/dri/card2` → 2).
    pub fn card_minor(&self) -> Option<u32> {
        self.device_nodes
            .iter()
            .filter_map(|p| p.file_name()?.to_str()?.strip_prefix("card")?.parse().ok())
            .min()
    }

    /// Display controller (class `0x03xxxx`).
    pub fn is_display(&self) -> bool {
        self.class >> 16 == 0x03
    }

    /// What the passthrough rules need to know about it.
    pub fn facts(&self) -> DeviceFacts {
        DeviceFacts {
            address: self.address,
            class: Some(self.class),
            driver: self.driver.clone(),
            boot_vga: self.boot_vga,
            mdevs: self.mdevs.clone(),
            vfs: self.sriov_numvfs,
            name: crate::inventory::function_name(Some(self.vendor_id), Some(self.device_id)),
            device_nodes: self.device_nodes.clone(),
        }
    }

    /// A name for messages: `0000:00:1f.2 (SATA controller)`.
    pub fn label(&self) -> String {
        let name = crate::inventory::device_name(self.vendor_id, self.device_id)
            .map(str::to_string)
            .or_else(|| crate::inventory::class_name(self.class).map(str::to_string))
            .unwrap_or_else(|| format!("{:04x}:{:04x}", self.vendor_id, self.device_id));
        format!("{} ({name})", self.address)
    }
}
