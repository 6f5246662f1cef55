//! `LinuxHost`: the machine itself.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use vm_device_host::{
    AdapterInfo, Adapters, DeviceInfo, DmaMapping, GroupStatus, HostError, IommuInfo, IommuType,
    IrqInfo, NodeKind, RegionInfo, Sysfs, System, Vfio, VfioContainer, VfioDevice, VfioGroup,
    VfioHandle,
};

use super::vfio_linux::VfioFds;

/// The real host: paths are opened as they are, modules loaded with `modprobe`, adapters
/// found by asking wgpu, VFIO driven with ioctls. Clones share their open VFIO fds; the
/// fds close when the last clone is dropped.
#[derive(Debug, Default, Clone)]
pub struct LinuxHost {
    vfio: Arc<VfioFds>,
}

impl LinuxHost {
    /// A handle to the running kernel.
    pub fn new() -> Self {
        Self::default()
    }
}

/// Reads a whole attribute: opened with `O_NONBLOCK` (a FIFO planted where an attribute
/// belongs must not hang vm-cli), refused unless it is a regular file, at most
/// 64 KiB ([`vm_device_host::MAX_ATTR_BYTES`]: sysfs attributes are at most a page, binary
/// ones such as `config` 4 KiB) or, under `/proc` (`cpuinfo` of a big server), 16 MiB.
fn read_attr(path: &Path) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NONBLOCK)
        .open(path)?;
    if !f.metadata()?.file_type().is_file() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "not a regular file (a FIFO, socket or device node where an attribute belongs); not read",
        ));
    }
    let cap = vm_device_host::cap_for(path);
    let mut buf = Vec::new();
    f.take(cap as u64 + 1).read_to_end(&mut buf)?;
    if buf.len() > cap {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!(
                "larger than {} KiB, which no sysfs attribute is; not read",
                cap >> 10
            ),
        ));
    }
    Ok(buf)
}

impl Sysfs for LinuxHost {
    fn read(&self, path: &Path) -> Result<Vec<u8>, HostError> {
        read_attr(path).map_err(|e| HostError::io("read", path, e))
    }

    fn read_link(&self, path: &Path) -> Result<PathBuf, HostError> {
        std::fs::read_link(path).map_err(|e| HostError::io("readlink", path, e))
    }

    fn list_dir(&self, path: &Path) -> Result<Vec<String>, HostError> {
        let rd = std::fs::read_dir(path).map_err(|e| HostError::io("list", path, e))?;
        let mut names: Vec<String> = rd
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        Ok(names)
    }

    fn kind(&self, path: &Path) -> Option<NodeKind> {
        use std::os::unix::fs::FileTypeExt;
        let md = std::fs::symlink_metadata(path).ok()?;
        let ft = md.file_type();
        Some(if ft.is_symlink() {
            NodeKind::Link
        } else if ft.is_dir() {
            NodeKind::Dir
        } else if ft.is_char_device() || ft.is_block_device() {
            NodeKind::Device
        } else {
            NodeKind::File
        })
    }

    fn access(&self, path: &Path, write: bool) -> bool {
        use nix::unistd::AccessFlags;
        let mode = if write {
            AccessFlags::R_OK | AccessFlags::W_OK
        } else {
            AccessFlags::R_OK
        };
        // access(2) checks with the real uid and gid: the user who ran vm-cli.
        nix::unistd::access(path, mode).is_ok()
    }

    fn canonicalize(&self, path: &Path) -> Result<PathBuf, HostError> {
        std::fs::canonicalize(path).map_err(|e| HostError::io("realpath", path, e))
    }

    fn write_attr(&self, path: &Path, value: &[u8]) -> Result<(), HostError> {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .open(path)
            .map_err(|e| HostError::io("open", path, e))?;
        // One write(2): sysfs store methods see exactly these bytes, once.
        let n = f
            .write(value)
            .map_err(|e| HostError::io("write", path, e))?;
        if n != value.len() {
            return Err(HostError::io(
                "write",
                path,
                std::io::Error::new(
                    std::io::ErrorKind::WriteZero,
                    format!("short write: {n} of {} bytes", value.len()),
                ),
            ));
        }
        Ok(())
    }

    fn create_dir(&self, root: &Path, rel: &Path) -> Result<(), HostError> {
        super::files::create_dir(root, rel)
    }

    fn write_file(&self, root: &Path, rel: &Path, contents: &[u8]) -> Result<(), HostError> {
        super::files::write_file(root, rel, contents)
    }

    fn remove_file(&self, root: &Path, rel: &Path) -> Result<(), HostError> {
        super::files::remove(root, rel, nix::unistd::UnlinkatFlags::NoRemoveDir)
    }

    fn remove_dir(&self, root: &Path, rel: &Path) -> Result<(), HostError> {
        super::files::remove(root, rel, nix::unistd::UnlinkatFlags::RemoveDir)
    }
}

impl Vfio for LinuxHost {
    fn vfio_open_container(&self) -> Result<VfioContainer, HostError> {
        self.vfio.open_container()
    }

    fn vfio_api_version(&self, container: VfioContainer) -> Result<i32, HostError> {
        self.vfio.api_version(container)
    }

    fn vfio_check_extension(&self, container: VfioContainer, ext: u32) -> Result<u32, HostError> {
        self.vfio.check_extension(container, ext)
    }

    fn vfio_open_group(&self, group: u32) -> Result<VfioGroup, HostError> {
        self.vfio.open_group(group)
    }

    fn vfio_group_status(&self, group: VfioGroup) -> Result<GroupStatus, HostError> {
        self.vfio.group_status(group)
    }

    fn vfio_group_set_container(
        &self,
        group: VfioGroup,
        container: VfioContainer,
    ) -> Result<(), HostError> {
        self.vfio.set_container(group, container)
    }

    fn vfio_set_iommu(&self, container: VfioContainer, kind: IommuType) -> Result<(), HostError> {
        self.vfio.set_iommu(container, kind)
    }

    fn vfio_iommu_info(&self, container: VfioContainer) -> Result<IommuInfo, HostError> {
        self.vfio.iommu_info(container)
    }

    fn vfio_group_device(&self, group: VfioGroup, name: &str) -> Result<VfioDevice, HostError> {
        self.vfio.group_device(group, name)
    }

    fn vfio_device_info(&self, device: VfioDevice) -> Result<DeviceInfo, HostError> {
        self.vfio.device_info(device)
    }

    fn vfio_region_info(&self, device: VfioDevice, index: u32) -> Result<RegionInfo, HostError> {
        self.vfio.region_info(device, index)
    }

    fn vfio_irq_info(&self, device: VfioDevice, index: u32) -> Result<IrqInfo, HostError> {
        self.vfio.irq_info(device, index)
    }

    fn vfio_region_read(
        &self,
        device: VfioDevice,
        index: u32,
        offset: u64,
        buf: &mut [u8],
    ) -> Result<usize, HostError> {
        self.vfio.region_read(device, index, offset, buf)
    }

    fn vfio_dma_map(
        &self,
        container: VfioContainer,
        iova: u64,
        size: u64,
    ) -> Result<DmaMapping, HostError> {
        self.vfio.dma_map(container, iova, size)
    }

    fn vfio_dma_unmap(
        &self,
        container: VfioContainer,
        iova: u64,
        size: u64,
    ) -> Result<u64, HostError> {
        self.vfio.dma_unmap(container, iova, size)
    }

    fn vfio_close(&self, handle: VfioHandle) -> Result<(), HostError> {
        self.vfio.close(handle)
    }

    fn vfio_iommufd_open(&self) -> Result<VfioContainer, HostError> {
        self.vfio.iommufd_open()
    }

    fn vfio_iommufd_device(
        &self,
        iommufd: VfioContainer,
        name: &str,
    ) -> Result<VfioDevice, HostError> {
        let cdev = self.vfio_iommufd_availability(name).cdev;
        self.vfio.iommufd_device(iommufd, name, cdev)
    }
}

impl Adapters for LinuxHost {
    fn probe_adapters(&self) -> Result<Vec<AdapterInfo>, HostError> {
        super::adapters::probe_adapters()
    }

    fn nvml_memory_total(
        &self,
        addr: &vm_device_host::PciAddress,
    ) -> Result<Option<u64>, HostError> {
        super::nvml::memory_total(addr)
    }
}

impl System for LinuxHost {
    fn set_thread_affinity(&self, tid: u32, cpus: &[u32]) -> Result<(), HostError> {
        use nix::libc;
        let path = PathBuf::from(format!("/proc/{tid}"));
        let bad = |errno: i32| HostError::errno("sched_setaffinity", path.clone(), errno);
        if cpus.is_empty() {
            return Err(bad(libc::EINVAL));
        }
        // SAFETY: `cpu_set_t` is plain data; all zeroes is the empty set.
        let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
        for &c in cpus {
            if c as usize >= libc::CPU_SETSIZE as usize {
                return Err(bad(libc::EINVAL));
            }
            // SAFETY: `c` is below CPU_SETSIZE, checked above.
            unsafe { libc::CPU_SET(c as usize, &mut set) };
        }
        let pid = libc::pid_t::try_from(tid).map_err(|_| bad(libc::ESRCH))?;
        // SAFETY: `set` is a valid cpu_set_t of the size passed; the call reads it only.
        let r = unsafe { libc::sched_setaffinity(pid, std::mem::size_of_val(&set), &set) };
        if r < 0 {
            return Err(HostError::io(
                "sched_setaffinity",
                path,
                std::io::Error::last_os_error(),
            ));
        }
        Ok(())
    }

    fn load_module(&self, name: &str) -> Result<(), HostError> {
        let out = Command::new("modprobe")
            .arg(name)
            .output()
            .map_err(|e| HostError::Module {
                module: name.to_string(),
                detail: format!("cannot run modprobe: {e}"),
            })?;
        if out.status.success() {
            Ok(())
        } else {
            Err(HostError::Module {
                module: name.to_string(),
                detail: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            })
        }
    }

    fn kvm_create_vm(&self) -> Result<i32, HostError> {
        use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
        // KVM_GET_API_VERSION = _IO(0xAE, 0x00), KVM_CREATE_VM = _IO(0xAE, 0x01).
        const KVM_GET_API_VERSION: nix::libc::c_ulong = 0xAE00;
        const KVM_CREATE_VM: nix::libc::c_ulong = 0xAE01;
        let node = Path::new("/dev/kvm");
        let kvm = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(node)
            .map_err(|e| HostError::io("open", node, e))?;
        // SAFETY: both ioctls take an integer argument and touch no caller memory.
        let version = unsafe { nix::libc::ioctl(kvm.as_raw_fd(), KVM_GET_API_VERSION as _, 0) };
        if version < 0 {
            return Err(HostError::io(
                "KVM_GET_API_VERSION",
                node,
                std::io::Error::last_os_error(),
            ));
        }
        // SAFETY: as above; a returned fd is owned (and closed) by `OwnedFd`.
        let vm = unsafe { nix::libc::ioctl(kvm.as_raw_fd(), KVM_CREATE_VM as _, 0) };
        if vm < 0 {
            return Err(HostError::io(
                "KVM_CREATE_VM",
                node,
                std::io::Error::last_os_error(),
            ));
        }
        // SAFETY: `vm` is a new fd that nothing else owns.
        drop(unsafe { OwnedFd::from_raw_fd(vm) });
        Ok(version)
    }
}
