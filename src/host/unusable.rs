//! A host that cannot be used: what [`super::default_host`] gives when `VM_HOST_ROOT` names
//! no host tree. Every call fails with the reason, so a program meant for a simulation
//! never falls back to this machine.

use std::path::{Path, PathBuf};

use vm_device_host::{
    AdapterInfo, Adapters, DeviceInfo, DmaMapping, GroupStatus, HostError, IommuInfo, IommuType,
    IrqInfo, NodeKind, RegionInfo, Sysfs, System, Vfio, VfioContainer, VfioDevice, VfioGroup,
    VfioHandle,
};

/// Fails every call with the reason it was made for.
#[derive(Debug, Clone)]
pub(crate) struct UnusableHost {
    why: String,
}

impl UnusableHost {
    pub(crate) fn new(why: String) -> Self {
        Self { why }
    }

    fn err(&self) -> HostError {
        HostError::Fixture(self.why.clone())
    }
}

impl Sysfs for UnusableHost {
    fn kind(&self, _path: &Path) -> Option<NodeKind> {
        None
    }

    fn read(&self, _path: &Path) -> Result<Vec<u8>, HostError> {
        Err(self.err())
    }

    fn read_link(&self, _path: &Path) -> Result<PathBuf, HostError> {
        Err(self.err())
    }

    fn list_dir(&self, _path: &Path) -> Result<Vec<String>, HostError> {
        Err(self.err())
    }

    fn canonicalize(&self, _path: &Path) -> Result<PathBuf, HostError> {
        Err(self.err())
    }

    fn write_attr(&self, _path: &Path, _value: &[u8]) -> Result<(), HostError> {
        Err(self.err())
    }

    fn create_dir(&self, _root: &Path, _rel: &Path) -> Result<(), HostError> {
        Err(self.err())
    }

    fn write_file(&self, _root: &Path, _rel: &Path, _contents: &[u8]) -> Result<(), HostError> {
        Err(self.err())
    }

    fn remove_file(&self, _root: &Path, _rel: &Path) -> Result<(), HostError> {
        Err(self.err())
    }

    fn remove_dir(&self, _root: &Path, _rel: &Path) -> Result<(), HostError> {
        Err(self.err())
    }
}

impl Vfio for UnusableHost {
    fn vfio_open_container(&self) -> Result<VfioContainer, HostError> {
        Err(self.err())
    }

    fn vfio_api_version(&self, _container: VfioContainer) -> Result<i32, HostError> {
        Err(self.err())
    }

    fn vfio_check_extension(&self, _container: VfioContainer, _ext: u32) -> Result<u32, HostError> {
        Err(self.err())
    }

    fn vfio_open_group(&self, _group: u32) -> Result<VfioGroup, HostError> {
        Err(self.err())
    }

    fn vfio_group_status(&self, _group: VfioGroup) -> Result<GroupStatus, HostError> {
        Err(self.err())
    }

    fn vfio_group_set_container(
        &self,
        _group: VfioGroup,
        _container: VfioContainer,
    ) -> Result<(), HostError> {
        Err(self.err())
    }

    fn vfio_set_iommu(&self, _container: VfioContainer, _kind: IommuType) -> Result<(), HostError> {
        Err(self.err())
    }

    fn vfio_iommu_info(&self, _container: VfioContainer) -> Result<IommuInfo, HostError> {
        Err(self.err())
    }

    fn vfio_group_device(&self, _group: VfioGroup, _name: &str) -> Result<VfioDevice, HostError> {
        Err(self.err())
    }

    fn vfio_device_info(&self, _device: VfioDevice) -> Result<DeviceInfo, HostError> {
        Err(self.err())
    }

    fn vfio_region_info(&self, _device: VfioDevice, _index: u32) -> Result<RegionInfo, HostError> {
        Err(self.err())
    }

    fn vfio_irq_info(&self, _device: VfioDevice, _index: u32) -> Result<IrqInfo, HostError> {
        Err(self.err())
    }

    fn vfio_region_read(
        &self,
        _device: VfioDevice,
        _index: u32,
        _offset: u64,
        _buf: &mut [u8],
    ) -> Result<usize, HostError> {
        Err(self.err())
    }

    fn vfio_dma_map(
        &self,
        _container: VfioContainer,
        _iova: u64,
        _size: u64,
    ) -> Result<DmaMapping, HostError> {
        Err(self.err())
    }

    fn vfio_dma_unmap(
        &self,
        _container: VfioContainer,
        _iova: u64,
        _size: u64,
    ) -> Result<u64, HostError> {
        Err(self.err())
    }

    fn vfio_close(&self, _handle: VfioHandle) -> Result<(), HostError> {
        Err(self.err())
    }

    fn vfio_iommufd_open(&self) -> Result<VfioContainer, HostError> {
        Err(self.err())
    }

    fn vfio_iommufd_device(
        &self,
        _iommufd: VfioContainer,
        _name: &str,
    ) -> Result<VfioDevice, HostError> {
        Err(self.err())
    }
}

impl Adapters for UnusableHost {
    fn probe_adapters(&self) -> Result<Vec<AdapterInfo>, HostError> {
        Err(self.err())
    }

    fn nvml_memory_total(
        &self,
        _addr: &vm_device_host::PciAddress,
    ) -> Result<Option<u64>, HostError> {
        Err(self.err())
    }
}

impl System for UnusableHost {
    fn load_module(&self, _name: &str) -> Result<(), HostError> {
        Err(self.err())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_call_fails_with_the_reason() {
        let h = UnusableHost::new("VM_HOST_ROOT: /x holds no sys/ tree".into());
        let e = h.read(Path::new("/sys/bus/pci/devices")).unwrap_err();
        assert!(e.to_string().contains("VM_HOST_ROOT"), "{e}");
        assert!(h.list_dir(Path::new("/sys")).is_err());
        assert!(h.write_attr(Path::new("/sys/x"), b"1").is_err());
        assert!(h.kind(Path::new("/sys")).is_none());
    }
}
