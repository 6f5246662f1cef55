//! [`PciDeviceInfo`]: what passthrough needs to know about one PCI function, read directly
//! from sysfs (a handful of attributes, not a whole-host scan).

use std::path::{Path, PathBuf};

use serde::Serialize;
use vm_device_host::{HostError, HostOps, PciAddress, ProcessHolder};

use crate::ladder::{Reason, ReasonCode};
use crate::plan::read_optional;

/// The refusal when host processes hold device nodes of the devices a prepare would move:
/// unbinding their driver would block until they close them. One sentence for the
/// passthrough probe (`gpu list`, the launcher's plan) and `gpu prepare`.
pub fn held_open(holders: &[&ProcessHolder]) -> Reason {
    let who: Vec<String> = holders
        .iter()
        .map(|h| format!("pid {} ({}) holds {}", h.pid, h.comm, h.path.display()))
        .collect();
    let mut r = Reason::new(
        ReasonCode::HeldOpen,
        format!("host processes use the device: {}", who.join("; ")),
    );
    for h in holders {
        r = r.evidence(format!("/proc/{}/fd -> {}", h.pid, h.path.display()));
    }
    r.remedy("stop those programs (a display server or compute job), or log out of the graphical session, then retry")
}

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

fn hex(host: &dyn HostOps, path: &Path) -> Result<u64, HostError> {
    let text = host.read_attr(path)?;
    crate::inventory::parse_hex(&text).ok_or_else(|| {
        HostError::io(
            "parse",
            path,
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("not a hex number: {text:?}"),
            ),
        )
    })
}

impl PciDeviceInfo {
    /// `/sys/bus/pci/devices/ADDR`.
    pub fn sysfs_dir(addr: &PciAddress) -> PathBuf {
        PathBuf::from(format!("/sys/bus/pci/devices/{addr}"))
    }

    /// Reads the function at `addr`. Errors carry the path that failed (`ENOENT` on the
    /// device directory: no such function).
    pub fn read(host: &dyn HostOps, addr: &PciAddress) -> Result<Self, HostError> {
        Self::read_in_group(host, addr, None)
    }

    /// As [`PciDeviceInfo::read`], with the IOMMU group already known (not read again).
    pub(crate) fn read_in_group(
        host: &dyn HostOps,
        addr: &PciAddress,
        known_group: Option<u32>,
    ) -> Result<Self, HostError> {
        let dir = Self::sysfs_dir(addr);
        let entries = host.list_dir(&dir)?;
        let has = |n: &str| entries.iter().any(|e| e == n);
        let vendor_id = hex(host, &dir.join("vendor"))? as u16;
        let device_id = hex(host, &dir.join("device"))? as u16;
        let class = hex(host, &dir.join("class"))? as u32;
        let driver = if has("driver") {
            match host.read_link(&dir.join("driver")) {
                Ok(t) => t.file_name().map(|n| n.to_string_lossy().into_owned()),
                Err(e) if e.is_not_found() => None,
                Err(e) => return Err(e),
            }
        } else {
            None
        };
        let driver_override = if has("driver_override") {
            read_optional(host, &dir.join("driver_override"))?
                .filter(|v| v != "(null)" && !v.is_empty())
        } else {
            None
        };
        let iommu_group = if known_group.is_some() {
            known_group
        } else if has("iommu_group") {
            let t = host.read_link(&dir.join("iommu_group"))?;
            t.file_name().and_then(|n| n.to_string_lossy().parse().ok())
        } else {
            None
        };
        let boot_vga = has("boot_vga")
            && read_optional(host, &dir.join("boot_vga"))?.is_some_and(|v| v.trim() == "1");
        let sriov_numvfs = if has("sriov_numvfs") {
            read_optional(host, &dir.join("sriov_numvfs"))?
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0)
        } else {
            0
        };
        let mut mdevs = Vec::new();
        if has("mdev_supported_types") {
            let types = dir.join("mdev_supported_types");
            for t in host.list_dir(&types)? {
                match host.list_dir(&types.join(&t).join("devices")) {
                    Ok(uuids) => mdevs.extend(uuids),
                    Err(e) if e.is_not_found() => {}
                    Err(e) => return Err(e),
                }
            }
            mdevs.sort();
        }
        let device_nodes =
            crate::inventory::device_nodes(host, addr, driver.as_deref(), has("drm"))?;
        Ok(PciDeviceInfo {
            address: *addr,
            vendor_id,
            device_id,
            class,
            driver,
            driver_override,
            iommu_group,
            boot_vga,
            sriov_numvfs,
            mdevs,
            device_nodes,
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

    /// A name for messages: `0000:00:1f.2 (SATA controller)`.
    pub fn label(&self) -> String {
        let name = crate::inventory::device_name(self.vendor_id, self.device_id)
            .map(str::to_string)
            .or_else(|| crate::inventory::class_name(self.class).map(str::to_string))
            .unwrap_or_else(|| format!("{:04x}:{:04x}", self.vendor_id, self.device_id));
        format!("{} ({name})", self.address)
    }
}
