//! The typed VFIO model of the [`HostOps`](crate::HostOps) seam.
//!
//! VFIO is reached through file descriptors (`/dev/vfio/vfio`, `/dev/vfio/N`, device fds,
//! `/dev/iommu`). The seam never hands those out: a host implementation keeps the fds and
//! gives the caller small copyable *handles* ([`VfioContainer`], [`VfioGroup`],
//! [`VfioDevice`]) carrying an id that only that host understands, plus what the caller needs
//! to explain itself (group number, device name, which path was used).
//!
//! **Lifetime:** a handle stays valid until it is passed to
//! [`HostOps::vfio_close`](crate::HostOps::vfio_close); closing is explicit (handles are
//! `Copy`, so there is no `Drop`). A host closes whatever is still open when it is dropped
//! itself. Close order follows the kernel: devices, then groups, then the container; a host
//! accepts any order and does what the kernel does when an fd is closed early (a group that
//! still has open device fds stays attached to its container until the last one closes).
//!
//! Numbers (flags, region and IRQ indices, IOMMU types) are those of `linux/vfio.h`, so a
//! report reads the same on a real kernel and on the simulator.

use std::fmt;

/// How a device was opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
pub enum VfioPath {
    /// The container/group API: `/dev/vfio/vfio` + `/dev/vfio/N` + `VFIO_GROUP_GET_DEVICE_FD`.
    Legacy,
    /// The device cdev (`/dev/vfio/devices/vfioN`) bound to an iommufd (`/dev/iommu`):
    /// `IOMMU_IOAS_ALLOC`, `VFIO_DEVICE_BIND_IOMMUFD`, `VFIO_DEVICE_ATTACH_IOMMUFD_PT`.
    Iommufd,
}

impl fmt::Display for VfioPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            VfioPath::Legacy => "legacy container/group",
            VfioPath::Iommufd => "iommufd + vfio device cdev",
        })
    }
}

/// An open VFIO container (legacy path) or an iommufd with one IO address space (iommufd
/// path). DMA mappings live here.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct VfioContainer {
    /// The host's id for this handle.
    pub id: u64,
    /// Which API this container speaks.
    pub path: VfioPath,
}

/// An open VFIO group (`/dev/vfio/N`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct VfioGroup {
    /// The host's id for this handle.
    pub id: u64,
    /// The IOMMU group number `N`.
    pub number: u32,
}

/// An open VFIO device fd.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct VfioDevice {
    /// The host's id for this handle.
    pub id: u64,
    /// How it was opened.
    pub path: VfioPath,
}

/// Any VFIO handle, for [`HostOps::vfio_close`](crate::HostOps::vfio_close).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum VfioHandle {
    /// A container or iommufd.
    Container(VfioContainer),
    /// A group.
    Group(VfioGroup),
    /// A device fd.
    Device(VfioDevice),
}

impl From<VfioContainer> for VfioHandle {
    fn from(c: VfioContainer) -> Self {
        VfioHandle::Container(c)
    }
}

impl From<VfioGroup> for VfioHandle {
    fn from(g: VfioGroup) -> Self {
        VfioHandle::Group(g)
    }
}

impl From<VfioDevice> for VfioHandle {
    fn from(d: VfioDevice) -> Self {
        VfioHandle::Device(d)
    }
}

/// `VFIO_GET_API_VERSION` answers this on every kernel that has VFIO.
pub const VFIO_API_VERSION: i32 = 0;

/// An IOMMU backend of a container (`VFIO_SET_IOMMU`, `VFIO_CHECK_EXTENSION`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
pub enum IommuType {
    /// `VFIO_TYPE1_IOMMU` (1).
    Type1,
    /// `VFIO_TYPE1v2_IOMMU` (3): what every current VMM uses.
    Type1v2,
    /// `VFIO_NOIOMMU_IOMMU` (8): unsafe no-IOMMU mode.
    NoIommu,
}

impl IommuType {
    /// The number `linux/vfio.h` gives it.
    pub fn raw(self) -> u32 {
        match self {
            IommuType::Type1 => 1,
            IommuType::Type1v2 => 3,
            IommuType::NoIommu => 8,
        }
    }
}

/// What `VFIO_GROUP_GET_STATUS` says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct GroupStatus {
    /// `VFIO_GROUP_FLAGS_VIABLE`: every member is unbound or on a VFIO-safe driver.
    pub viable: bool,
    /// `VFIO_GROUP_FLAGS_CONTAINER_SET`.
    pub container_set: bool,
}

impl GroupStatus {
    /// `VFIO_GROUP_FLAGS_VIABLE`.
    pub const FLAG_VIABLE: u32 = 1;
    /// `VFIO_GROUP_FLAGS_CONTAINER_SET`.
    pub const FLAG_CONTAINER_SET: u32 = 2;

    /// Decodes the `flags` field.
    pub fn from_flags(flags: u32) -> Self {
        Self {
            viable: flags & Self::FLAG_VIABLE != 0,
            container_set: flags & Self::FLAG_CONTAINER_SET != 0,
        }
    }

    /// Encodes the `flags` field.
    pub fn flags(self) -> u32 {
        (if self.viable { Self::FLAG_VIABLE } else { 0 })
            | (if self.container_set {
                Self::FLAG_CONTAINER_SET
            } else {
                0
            })
    }
}

/// What `VFIO_IOMMU_GET_INFO` says about a container's IOMMU.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct IommuInfo {
    /// `VFIO_IOMMU_INFO_PGSIZES` (1) | `VFIO_IOMMU_INFO_CAPS` (2).
    pub flags: u32,
    /// Bitmap of supported IOVA page sizes (bit n = 2^n bytes).
    pub iova_pgsizes: u64,
}

impl IommuInfo {
    /// `VFIO_IOMMU_INFO_PGSIZES`.
    pub const FLAG_PGSIZES: u32 = 1;
    /// `VFIO_IOMMU_INFO_CAPS`.
    pub const FLAG_CAPS: u32 = 2;

    /// The smallest IOVA page size, when the page-size bitmap is valid.
    pub fn min_page_size(&self) -> Option<u64> {
        (self.flags & Self::FLAG_PGSIZES != 0 && self.iova_pgsizes != 0)
            .then(|| 1u64 << self.iova_pgsizes.trailing_zeros())
    }
}

/// What `VFIO_DEVICE_GET_INFO` says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct DeviceInfo {
    /// `VFIO_DEVICE_FLAGS_*`: RESET (1), PCI (2), ...
    pub flags: u32,
    /// Number of regions (indices `0..num_regions`).
    pub num_regions: u32,
    /// Number of IRQ indices.
    pub num_irqs: u32,
}

impl DeviceInfo {
    /// `VFIO_DEVICE_FLAGS_RESET`: the device supports `VFIO_DEVICE_RESET`.
    pub const FLAG_RESET: u32 = 1;
    /// `VFIO_DEVICE_FLAGS_PCI`: a PCI device (regions and IRQs follow the PCI indices).
    pub const FLAG_PCI: u32 = 2;

    /// True for a PCI device.
    pub fn is_pci(&self) -> bool {
        self.flags & Self::FLAG_PCI != 0
    }

    /// True when the device can be reset through VFIO.
    pub fn can_reset(&self) -> bool {
        self.flags & Self::FLAG_RESET != 0
    }
}

/// Region indices of a PCI device (`VFIO_PCI_*_REGION_INDEX`).
pub mod region {
    /// BAR 0.
    pub const BAR0: u32 = 0;
    /// BAR 1.
    pub const BAR1: u32 = 1;
    /// BAR 2.
    pub const BAR2: u32 = 2;
    /// BAR 3.
    pub const BAR3: u32 = 3;
    /// BAR 4.
    pub const BAR4: u32 = 4;
    /// BAR 5.
    pub const BAR5: u32 = 5;
    /// Expansion ROM.
    pub const ROM: u32 = 6;
    /// PCI configuration space.
    pub const CONFIG: u32 = 7;
    /// Legacy VGA ranges (VGA-class devices only).
    pub const VGA: u32 = 8;
    /// Number of fixed PCI regions; device-specific regions follow.
    pub const NUM_PCI: u32 = 9;

    /// A short name for a region index (`BAR0`, `ROM`, `CONFIG`, `region 9`).
    pub fn name(index: u32) -> String {
        match index {
            0..=5 => format!("BAR{index}"),
            ROM => "ROM".into(),
            CONFIG => "CONFIG".into(),
            VGA => "VGA".into(),
            n => format!("region {n}"),
        }
    }
}

/// IRQ indices of a PCI device (`VFIO_PCI_*_IRQ_INDEX`).
pub mod irq {
    /// Legacy INTx.
    pub const INTX: u32 = 0;
    /// MSI.
    pub const MSI: u32 = 1;
    /// MSI-X.
    pub const MSIX: u32 = 2;
    /// AER error notification.
    pub const ERR: u32 = 3;
    /// Device request (the kernel wants the device back).
    pub const REQ: u32 = 4;
    /// Number of PCI IRQ indices.
    pub const NUM_PCI: u32 = 5;
}

/// What `VFIO_DEVICE_GET_REGION_INFO` says about one region.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct RegionInfo {
    /// Region index.
    pub index: u32,
    /// `VFIO_REGION_INFO_FLAG_*`: READ (1), WRITE (2), MMAP (4), CAPS (8).
    pub flags: u32,
    /// Size in bytes (0: the region is not implemented).
    pub size: u64,
    /// Offset of the region in the device fd (for `pread`/`mmap`).
    pub offset: u64,
}

impl RegionInfo {
    /// `VFIO_REGION_INFO_FLAG_READ`.
    pub const FLAG_READ: u32 = 1;
    /// `VFIO_REGION_INFO_FLAG_WRITE`.
    pub const FLAG_WRITE: u32 = 2;
    /// `VFIO_REGION_INFO_FLAG_MMAP`.
    pub const FLAG_MMAP: u32 = 4;
    /// `VFIO_REGION_INFO_FLAG_CAPS`.
    pub const FLAG_CAPS: u32 = 8;

    /// Readable through the device fd.
    pub fn readable(&self) -> bool {
        self.flags & Self::FLAG_READ != 0
    }

    /// Writable through the device fd.
    pub fn writable(&self) -> bool {
        self.flags & Self::FLAG_WRITE != 0
    }

    /// Mappable with `mmap`.
    pub fn mmap(&self) -> bool {
        self.flags & Self::FLAG_MMAP != 0
    }
}

/// The fd offset of a PCI region: vfio-pci puts region `i` at `i << 40`
/// (`VFIO_PCI_INDEX_TO_OFFSET`).
pub fn pci_region_offset(index: u32) -> u64 {
    u64::from(index) << 40
}

/// What `VFIO_DEVICE_GET_IRQ_INFO` says about one IRQ index.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct IrqInfo {
    /// IRQ index.
    pub index: u32,
    /// `VFIO_IRQ_INFO_*`: EVENTFD (1), MASKABLE (2), AUTOMASKED (4), NORESIZE (8).
    pub flags: u32,
    /// Number of vectors (0: not supported).
    pub count: u32,
}

impl IrqInfo {
    /// `VFIO_IRQ_INFO_EVENTFD`.
    pub const FLAG_EVENTFD: u32 = 1;
    /// `VFIO_IRQ_INFO_MASKABLE`.
    pub const FLAG_MASKABLE: u32 = 2;
    /// `VFIO_IRQ_INFO_AUTOMASKED`.
    pub const FLAG_AUTOMASKED: u32 = 4;
    /// `VFIO_IRQ_INFO_NORESIZE`.
    pub const FLAG_NORESIZE: u32 = 8;
}

/// One DMA mapping of a container: `size` bytes of host memory owned by the host
/// implementation, visible to the device at `iova`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct DmaMapping {
    /// IO virtual address.
    pub iova: u64,
    /// Length in bytes.
    pub size: u64,
}

/// Whether a device can be opened through iommufd, and where its cdev is.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct IommufdAvailability {
    /// `/dev/iommu` exists.
    pub iommu_dev: bool,
    /// `/dev/vfio/devices/vfioN` of the device (from its `vfio-dev/` directory), when the
    /// device is bound to a VFIO driver on a kernel with `CONFIG_VFIO_DEVICE_CDEV`.
    pub cdev: Option<std::path::PathBuf>,
}

impl IommufdAvailability {
    /// True when both halves are there.
    pub fn usable(&self) -> bool {
        self.iommu_dev && self.cdev.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_status_round_trips_flags() {
        for flags in 0..4 {
            assert_eq!(GroupStatus::from_flags(flags).flags(), flags);
        }
        assert!(GroupStatus::from_flags(1).viable);
        assert!(!GroupStatus::from_flags(2).viable);
    }

    #[test]
    fn min_page_size_is_lowest_bit() {
        let info = IommuInfo {
            flags: IommuInfo::FLAG_PGSIZES,
            iova_pgsizes: 0x4020_1000,
        };
        assert_eq!(info.min_page_size(), Some(4096));
        let none = IommuInfo {
            flags: 0,
            iova_pgsizes: 0x1000,
        };
        assert_eq!(none.min_page_size(), None);
    }

    #[test]
    fn region_names_and_offsets() {
        assert_eq!(region::name(0), "BAR0");
        assert_eq!(region::name(region::CONFIG), "CONFIG");
        assert_eq!(region::name(9), "region 9");
        assert_eq!(pci_region_offset(region::CONFIG), 7 << 40);
        assert_eq!(IommuType::Type1v2.raw(), 3);
    }
}
