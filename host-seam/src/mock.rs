//! `MockHost`: a [`mockall`] mock of [`HostOps`](crate::HostOps) (feature `mock`), for unit
//! tests of error paths that no fixture reaches. It implements the four small traits, so it
//! is a `HostOps`. Only the required methods are mocked: the
//! provided ones (`read_attr`, `exists`, `cpu_vendor`, …) run their real code over the mock.
#![allow(missing_docs)]

use std::path::{Path, PathBuf};

use mockall::mock;

use crate::vfio::{
    DeviceInfo, DmaMapping, GroupStatus, IommuInfo, IommuType, IrqInfo, RegionInfo, VfioContainer,
    VfioDevice, VfioGroup, VfioHandle,
};
use crate::{AdapterInfo, Adapters, HostError, NodeKind, Sysfs, System, Vfio};

mock! {
    pub Host {}
    impl Sysfs for Host {
        fn read(&self, path: &Path) -> Result<Vec<u8>, HostError>;
        fn read_link(&self, path: &Path) -> Result<PathBuf, HostError>;
        fn list_dir(&self, path: &Path) -> Result<Vec<String>, HostError>;
        fn kind(&self, path: &Path) -> Option<NodeKind>;
        fn canonicalize(&self, path: &Path) -> Result<PathBuf, HostError>;
        fn write_attr(&self, path: &Path, value: &[u8]) -> Result<(), HostError>;
        fn create_dir(&self, root: &Path, rel: &Path) -> Result<(), HostError>;
        fn write_file(&self, root: &Path, rel: &Path, contents: &[u8]) -> Result<(), HostError>;
        fn remove_file(&self, root: &Path, rel: &Path) -> Result<(), HostError>;
        fn remove_dir(&self, root: &Path, rel: &Path) -> Result<(), HostError>;
    }
    impl Vfio for Host {
        fn vfio_open_container(&self) -> Result<VfioContainer, HostError>;
        fn vfio_api_version(&self, container: VfioContainer) -> Result<i32, HostError>;
        fn vfio_check_extension(&self, container: VfioContainer, ext: u32) -> Result<u32, HostError>;
        fn vfio_open_group(&self, group: u32) -> Result<VfioGroup, HostError>;
        fn vfio_group_status(&self, group: VfioGroup) -> Result<GroupStatus, HostError>;
        fn vfio_group_set_container(&self, group: VfioGroup, container: VfioContainer) -> Result<(), HostError>;
        fn vfio_set_iommu(&self, container: VfioContainer, kind: IommuType) -> Result<(), HostError>;
        fn vfio_iommu_info(&self, container: VfioContainer) -> Result<IommuInfo, HostError>;
        fn vfio_group_device(&self, group: VfioGroup, name: &str) -> Result<VfioDevice, HostError>;
        fn vfio_device_info(&self, device: VfioDevice) -> Result<DeviceInfo, HostError>;
        fn vfio_region_info(&self, device: VfioDevice, index: u32) -> Result<RegionInfo, HostError>;
        fn vfio_irq_info(&self, device: VfioDevice, index: u32) -> Result<IrqInfo, HostError>;
        fn vfio_region_read(&self, device: VfioDevice, index: u32, offset: u64, buf: &mut [u8]) -> Result<usize, HostError>;
        fn vfio_dma_map(&self, container: VfioContainer, iova: u64, size: u64) -> Result<DmaMapping, HostError>;
        fn vfio_dma_unmap(&self, container: VfioContainer, iova: u64, size: u64) -> Result<u64, HostError>;
        fn vfio_close(&self, handle: VfioHandle) -> Result<(), HostError>;
        fn vfio_iommufd_open(&self) -> Result<VfioContainer, HostError>;
        fn vfio_iommufd_device(&self, iommufd: VfioContainer, name: &str) -> Result<VfioDevice, HostError>;
    }
    impl Adapters for Host {
        fn probe_adapters(&self) -> Result<Vec<AdapterInfo>, HostError>;
        fn nvml_memory_total(&self, addr: &crate::PciAddress) -> Result<Option<u64>, HostError>;
    }
    impl System for Host {
        fn load_module(&self, name: &str) -> Result<(), HostError>;
    }
}
