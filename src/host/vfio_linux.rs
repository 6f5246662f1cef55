//! VFIO on the real kernel: `/dev/vfio/*` and `/dev/iommu` opened and driven with ioctls.
//!
//! ABI structs and constants come from `vfio-bindings`; the ioctl numbers (macros in
//! `linux/vfio.h` and `linux/iommufd.h`, which bindgen cannot carry) are computed here with
//! `nix`. The iommufd structs are small and stable, so they are declared here.
//!
//! Every fd lives in a [`VfioFds`] table keyed by the handle id the caller holds; DMA
//! buffers are anonymous mappings owned by their container and unmapped when the mapping is
//! removed or the container closed. Dropping the table closes everything still open.

use std::collections::{BTreeMap, HashMap};
use std::ffi::{c_void, CString};
use std::fs::File;
use std::io;
use std::num::NonZeroUsize;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::ptr::NonNull;
use std::sync::{Mutex, MutexGuard};

use nix::libc;
use nix::sys::mman::{mmap_anonymous, munmap, MapFlags, ProtFlags};
use vfio_bindings::bindings::vfio as abi;
use vm_device_host::{
    vfio_device_sysfs_dir, DeviceInfo, DmaMapping, GroupStatus, HostError, IommuInfo, IommuType,
    IrqInfo, RegionInfo, VfioContainer, VfioDevice, VfioGroup, VfioHandle, VfioPath,
};

const CONTAINER_DEV: &str = "/dev/vfio/vfio";
const IOMMU_DEV: &str = "/dev/iommu";

/// `_IO(VFIO_TYPE, VFIO_BASE + n)`.
const fn vfio_req(n: u32) -> libc::c_ulong {
    nix::request_code_none!(abi::VFIO_TYPE, abi::VFIO_BASE + n) as libc::c_ulong
}

const VFIO_GET_API_VERSION: libc::c_ulong = vfio_req(0);
const VFIO_CHECK_EXTENSION: libc::c_ulong = vfio_req(1);
const VFIO_SET_IOMMU: libc::c_ulong = vfio_req(2);
const VFIO_GROUP_GET_STATUS: libc::c_ulong = vfio_req(3);
const VFIO_GROUP_SET_CONTAINER: libc::c_ulong = vfio_req(4);
const VFIO_GROUP_GET_DEVICE_FD: libc::c_ulong = vfio_req(6);
const VFIO_DEVICE_GET_INFO: libc::c_ulong = vfio_req(7);
const VFIO_DEVICE_GET_REGION_INFO: libc::c_ulong = vfio_req(8);
const VFIO_DEVICE_GET_IRQ_INFO: libc::c_ulong = vfio_req(9);
const VFIO_IOMMU_GET_INFO: libc::c_ulong = vfio_req(12);
const VFIO_IOMMU_MAP_DMA: libc::c_ulong = vfio_req(13);
const VFIO_IOMMU_UNMAP_DMA: libc::c_ulong = vfio_req(14);
const VFIO_DEVICE_BIND_IOMMUFD: libc::c_ulong = vfio_req(18);
const VFIO_DEVICE_ATTACH_IOMMUFD_PT: libc::c_ulong = vfio_req(19);

/// `IOMMUFD_TYPE` (`';'`) and the command numbers of `linux/iommufd.h`.
const IOMMUFD_TYPE: u8 = b';';
const fn iommufd_req(cmd: u32) -> libc::c_ulong {
    nix::request_code_none!(IOMMUFD_TYPE, cmd) as libc::c_ulong
}
const IOMMU_DESTROY: libc::c_ulong = iommufd_req(0x80);
const IOMMU_IOAS_ALLOC: libc::c_ulong = iommufd_req(0x81);
const IOMMU_IOAS_MAP: libc::c_ulong = iommufd_req(0x85);
const IOMMU_IOAS_UNMAP: libc::c_ulong = iommufd_req(0x86);

const IOMMU_IOAS_MAP_FIXED_IOVA: u32 = 1;
const IOMMU_IOAS_MAP_WRITEABLE: u32 = 2;
const IOMMU_IOAS_MAP_READABLE: u32 = 4;

/// `struct iommu_destroy`.
#[repr(C)]
struct IommuDestroy {
    size: u32,
    id: u32,
}

/// `struct iommu_ioas_alloc`.
#[repr(C)]
#[derive(Default)]
struct IommuIoasAlloc {
    size: u32,
    flags: u32,
    out_ioas_id: u32,
}

/// `struct iommu_ioas_map`.
#[repr(C)]
#[derive(Default)]
struct IommuIoasMap {
    size: u32,
    flags: u32,
    ioas_id: u32,
    reserved: u32,
    user_va: u64,
    length: u64,
    iova: u64,
}

/// `struct iommu_ioas_unmap`.
#[repr(C)]
#[derive(Default)]
struct IommuIoasUnmap {
    size: u32,
    ioas_id: u32,
    iova: u64,
    length: u64,
}

fn argsz<T>() -> u32 {
    std::mem::size_of::<T>() as u32
}

/// One `ioctl(2)`; `Err` carries errno.
///
/// # Safety
/// `arg` must be what `req` expects: a pointer to a live, correctly sized struct, or an
/// integer for the integer-argument ioctls.
unsafe fn ioctl(fd: &File, req: libc::c_ulong, arg: libc::c_ulong) -> io::Result<i32> {
    // SAFETY: forwarded to the caller's contract; the fd is open for the call's duration.
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), req as _, arg) };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

fn ptr<T>(v: &mut T) -> libc::c_ulong {
    v as *mut T as libc::c_ulong
}

/// An anonymous read/write mapping used as a DMA target.
struct DmaBuffer {
    addr: NonNull<c_void>,
    len: NonZeroUsize,
}

// SAFETY: the mapping is private to this buffer; nothing else holds its address except the
// kernel's IOMMU mapping, which is removed before the buffer is dropped.
unsafe impl Send for DmaBuffer {}

impl DmaBuffer {
    fn new(len: u64) -> io::Result<Self> {
        let len = usize::try_from(len)
            .ok()
            .and_then(NonZeroUsize::new)
            .ok_or_else(|| io::Error::from_raw_os_error(libc::EINVAL))?;
        // SAFETY: a fresh anonymous mapping at an address the kernel chooses.
        let addr = unsafe {
            mmap_anonymous(
                None,
                len,
                ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
                MapFlags::MAP_PRIVATE,
            )
        }
        .map_err(io::Error::from)?;
        Ok(Self { addr, len })
    }
}

impl Drop for DmaBuffer {
    fn drop(&mut self) {
        // SAFETY: `addr`/`len` are exactly the mapping `new` made; nothing uses it after.
        let _ = unsafe { munmap(self.addr, self.len.get()) };
    }
}

struct ContainerFd {
    // Field order matters: the fd closes first (the kernel drops the IOMMU mappings and
    // unpins the pages), then the buffers are unmapped.
    file: File,
    dma: BTreeMap<u64, DmaBuffer>,
    path: VfioPath,
    /// The IOAS of an iommufd container.
    ioas: u32,
}

struct GroupFd {
    file: File,
    number: u32,
}

struct DeviceFd {
    file: File,
    name: String,
}

#[derive(Default)]
struct Tables {
    next: u64,
    containers: HashMap<u64, ContainerFd>,
    groups: HashMap<u64, GroupFd>,
    devices: HashMap<u64, DeviceFd>,
}

/// The open VFIO fds of a `LinuxHost`, shared by its clones.
#[derive(Default)]
pub(crate) struct VfioFds {
    tables: Mutex<Tables>,
}

impl std::fmt::Debug for VfioFds {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let t = self.lock();
        f.debug_struct("VfioFds")
            .field("containers", &t.containers.len())
            .field("groups", &t.groups.len())
            .field("devices", &t.devices.len())
            .finish()
    }
}

fn group_path(n: u32) -> PathBuf {
    PathBuf::from(format!("/dev/vfio/{n}"))
}

fn ebadf(op: &'static str, path: impl Into<PathBuf>) -> HostError {
    HostError::errno(op, path, libc::EBADF)
}

fn open_rw(path: &Path) -> Result<File, HostError> {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(|e| HostError::io("open", path, e))
}

impl VfioFds {
    fn lock(&self) -> MutexGuard<'_, Tables> {
        self.tables.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn insert_id(t: &mut Tables) -> u64 {
        t.next += 1;
        t.next
    }

    fn with_container<R>(
        &self,
        c: VfioContainer,
        op: &'static str,
        f: impl FnOnce(&mut ContainerFd) -> Result<R, HostError>,
    ) -> Result<R, HostError> {
        let mut t = self.lock();
        let dev = match c.path {
            VfioPath::Legacy => CONTAINER_DEV,
            VfioPath::Iommufd => IOMMU_DEV,
        };
        match t.containers.get_mut(&c.id) {
            Some(k) if k.path == c.path => f(k),
            _ => Err(ebadf(op, dev)),
        }
    }

    fn with_group<R>(
        &self,
        g: VfioGroup,
        op: &'static str,
        f: impl FnOnce(&GroupFd) -> Result<R, HostError>,
    ) -> Result<R, HostError> {
        let t = self.lock();
        match t.groups.get(&g.id) {
            Some(k) if k.number == g.number => f(k),
            _ => Err(ebadf(op, group_path(g.number))),
        }
    }

    fn with_device<R>(
        &self,
        d: VfioDevice,
        op: &'static str,
        f: impl FnOnce(&DeviceFd) -> Result<R, HostError>,
    ) -> Result<R, HostError> {
        let t = self.lock();
        match t.devices.get(&d.id) {
            Some(k) => f(k),
            None => Err(ebadf(op, "/dev/vfio (device fd)")),
        }
    }

    pub(crate) fn open_container(&self) -> Result<VfioContainer, HostError> {
        let file = open_rw(Path::new(CONTAINER_DEV))?;
        let mut t = self.lock();
        let id = Self::insert_id(&mut t);
        t.containers.insert(
            id,
            ContainerFd {
                file,
                dma: BTreeMap::new(),
                path: VfioPath::Legacy,
                ioas: 0,
            },
        );
        Ok(VfioContainer {
            id,
            path: VfioPath::Legacy,
        })
    }

    pub(crate) fn api_version(&self, c: VfioContainer) -> Result<i32, HostError> {
        let op = "VFIO_GET_API_VERSION";
        self.with_container(c, op, |k| {
            // SAFETY: integer-argument ioctl.
            unsafe { ioctl(&k.file, VFIO_GET_API_VERSION, 0) }
                .map_err(|e| HostError::io(op, CONTAINER_DEV, e))
        })
    }

    pub(crate) fn check_extension(&self, c: VfioContainer, ext: u32) -> Result<u32, HostError> {
        let op = "VFIO_CHECK_EXTENSION";
        self.with_container(c, op, |k| {
            // SAFETY: integer-argument ioctl.
            unsafe { ioctl(&k.file, VFIO_CHECK_EXTENSION, libc::c_ulong::from(ext)) }
                .map(|v| v as u32)
                .map_err(|e| HostError::io(op, CONTAINER_DEV, e))
        })
    }

    pub(crate) fn open_group(&self, n: u32) -> Result<VfioGroup, HostError> {
        let file = open_rw(&group_path(n))?;
        let mut t = self.lock();
        let id = Self::insert_id(&mut t);
        t.groups.insert(id, GroupFd { file, number: n });
        Ok(VfioGroup { id, number: n })
    }

    pub(crate) fn group_status(&self, g: VfioGroup) -> Result<GroupStatus, HostError> {
        let op = "VFIO_GROUP_GET_STATUS";
        self.with_group(g, op, |k| {
            let mut st = abi::vfio_group_status {
                argsz: argsz::<abi::vfio_group_status>(),
                flags: 0,
            };
            // SAFETY: `st` is a live vfio_group_status with argsz set.
            unsafe { ioctl(&k.file, VFIO_GROUP_GET_STATUS, ptr(&mut st)) }
                .map_err(|e| HostError::io(op, group_path(k.number), e))?;
            Ok(GroupStatus::from_flags(st.flags))
        })
    }

    pub(crate) fn set_container(&self, g: VfioGroup, c: VfioContainer) -> Result<(), HostError> {
        let op = "VFIO_GROUP_SET_CONTAINER";
        let t = self.lock();
        let group = t
            .groups
            .get(&g.id)
            .filter(|k| k.number == g.number)
            .ok_or_else(|| ebadf(op, group_path(g.number)))?;
        let container = t
            .containers
            .get(&c.id)
            .filter(|k| k.path == VfioPath::Legacy && c.path == VfioPath::Legacy)
            .ok_or_else(|| ebadf(op, CONTAINER_DEV))?;
        let mut fd: i32 = container.file.as_raw_fd();
        // SAFETY: the argument is a pointer to the container fd number.
        unsafe { ioctl(&group.file, VFIO_GROUP_SET_CONTAINER, ptr(&mut fd)) }
            .map_err(|e| HostError::io(op, group_path(g.number), e))?;
        Ok(())
    }

    pub(crate) fn set_iommu(&self, c: VfioContainer, kind: IommuType) -> Result<(), HostError> {
        let op = "VFIO_SET_IOMMU";
        self.with_container(c, op, |k| {
            // SAFETY: integer-argument ioctl.
            unsafe { ioctl(&k.file, VFIO_SET_IOMMU, libc::c_ulong::from(kind.raw())) }
                .map_err(|e| HostError::io(op, CONTAINER_DEV, e))?;
            Ok(())
        })
    }

    pub(crate) fn iommu_info(&self, c: VfioContainer) -> Result<IommuInfo, HostError> {
        let op = "VFIO_IOMMU_GET_INFO";
        self.with_container(c, op, |k| {
            if k.path != VfioPath::Legacy {
                return Err(HostError::errno(op, IOMMU_DEV, libc::EINVAL));
            }
            let mut info = abi::vfio_iommu_type1_info {
                argsz: argsz::<abi::vfio_iommu_type1_info>(),
                ..Default::default()
            };
            // SAFETY: `info` is a live vfio_iommu_type1_info with argsz set.
            unsafe { ioctl(&k.file, VFIO_IOMMU_GET_INFO, ptr(&mut info)) }
                .map_err(|e| HostError::io(op, CONTAINER_DEV, e))?;
            Ok(IommuInfo {
                flags: info.flags,
                iova_pgsizes: info.iova_pgsizes,
            })
        })
    }

    pub(crate) fn group_device(&self, g: VfioGroup, name: &str) -> Result<VfioDevice, HostError> {
        let op = "VFIO_GROUP_GET_DEVICE_FD";
        let cname = CString::new(name)
            .map_err(|_| HostError::errno(op, group_path(g.number), libc::EINVAL))?;
        let file = self.with_group(g, op, |k| {
            // SAFETY: the argument is a NUL-terminated device name that outlives the call.
            let fd = unsafe { ioctl(&k.file, VFIO_GROUP_GET_DEVICE_FD, cname.as_ptr() as _) }
                .map_err(|e| HostError::io(op, group_path(k.number), e))?;
            // SAFETY: the kernel returned a new fd that nothing else owns.
            Ok(unsafe { <File as std::os::fd::FromRawFd>::from_raw_fd(fd) })
        })?;
        let mut t = self.lock();
        let id = Self::insert_id(&mut t);
        t.devices.insert(
            id,
            DeviceFd {
                file,
                name: name.to_string(),
            },
        );
        Ok(VfioDevice {
            id,
            path: VfioPath::Legacy,
        })
    }

    pub(crate) fn device_info(&self, d: VfioDevice) -> Result<DeviceInfo, HostError> {
        let op = "VFIO_DEVICE_GET_INFO";
        self.with_device(d, op, |k| {
            let mut info = abi::vfio_device_info {
                argsz: argsz::<abi::vfio_device_info>(),
                ..Default::default()
            };
            // SAFETY: `info` is a live vfio_device_info with argsz set.
            unsafe { ioctl(&k.file, VFIO_DEVICE_GET_INFO, ptr(&mut info)) }
                .map_err(|e| HostError::io(op, vfio_device_sysfs_dir(&k.name), e))?;
            Ok(DeviceInfo {
                flags: info.flags,
                num_regions: info.num_regions,
                num_irqs: info.num_irqs,
            })
        })
    }

    pub(crate) fn region_info(&self, d: VfioDevice, index: u32) -> Result<RegionInfo, HostError> {
        let op = "VFIO_DEVICE_GET_REGION_INFO";
        self.with_device(d, op, |k| {
            let mut info = abi::vfio_region_info {
                argsz: argsz::<abi::vfio_region_info>(),
                index,
                ..Default::default()
            };
            // SAFETY: `info` is a live vfio_region_info with argsz set; a kernel wanting a
            // bigger argsz for capabilities only reports it, it never writes past argsz.
            unsafe { ioctl(&k.file, VFIO_DEVICE_GET_REGION_INFO, ptr(&mut info)) }
                .map_err(|e| HostError::io(op, vfio_device_sysfs_dir(&k.name), e))?;
            Ok(RegionInfo {
                index,
                flags: info.flags,
                size: info.size,
                offset: info.offset,
            })
        })
    }

    pub(crate) fn irq_info(&self, d: VfioDevice, index: u32) -> Result<IrqInfo, HostError> {
        let op = "VFIO_DEVICE_GET_IRQ_INFO";
        self.with_device(d, op, |k| {
            let mut info = abi::vfio_irq_info {
                argsz: argsz::<abi::vfio_irq_info>(),
                index,
                ..Default::default()
            };
            // SAFETY: `info` is a live vfio_irq_info with argsz set.
            unsafe { ioctl(&k.file, VFIO_DEVICE_GET_IRQ_INFO, ptr(&mut info)) }
                .map_err(|e| HostError::io(op, vfio_device_sysfs_dir(&k.name), e))?;
            Ok(IrqInfo {
                index,
                flags: info.flags,
                count: info.count,
            })
        })
    }

    pub(crate) fn region_read(
        &self,
        d: VfioDevice,
        index: u32,
        offset: u64,
        buf: &mut [u8],
    ) -> Result<usize, HostError> {
        let info = self.region_info(d, index)?;
        self.with_device(d, "pread", |k| {
            let sysfs = vfio_device_sysfs_dir(&k.name);
            if offset >= info.size {
                return Err(HostError::errno("pread", sysfs, libc::EINVAL));
            }
            let len = buf
                .len()
                .min(usize::try_from(info.size - offset).unwrap_or(usize::MAX));
            k.file
                .read_at(&mut buf[..len], info.offset + offset)
                .map_err(|e| HostError::io("pread", sysfs, e))
        })
    }

    pub(crate) fn dma_map(
        &self,
        c: VfioContainer,
        iova: u64,
        size: u64,
    ) -> Result<DmaMapping, HostError> {
        let (op, dev) = match c.path {
            VfioPath::Legacy => ("VFIO_IOMMU_MAP_DMA", CONTAINER_DEV),
            VfioPath::Iommufd => ("IOMMU_IOAS_MAP", IOMMU_DEV),
        };
        self.with_container(c, op, |k| {
            let buf = DmaBuffer::new(size).map_err(|e| HostError::io(op, dev, e))?;
            let vaddr = buf.addr.as_ptr() as u64;
            match k.path {
                VfioPath::Legacy => {
                    let mut map = abi::vfio_iommu_type1_dma_map {
                        argsz: argsz::<abi::vfio_iommu_type1_dma_map>(),
                        flags: abi::VFIO_DMA_MAP_FLAG_READ | abi::VFIO_DMA_MAP_FLAG_WRITE,
                        vaddr,
                        iova,
                        size,
                    };
                    // SAFETY: `map` is live; `vaddr..+size` is our mapping, kept until unmap.
                    unsafe { ioctl(&k.file, VFIO_IOMMU_MAP_DMA, ptr(&mut map)) }
                        .map_err(|e| HostError::io(op, dev, e))?;
                }
                VfioPath::Iommufd => {
                    let mut map = IommuIoasMap {
                        size: argsz::<IommuIoasMap>(),
                        flags: IOMMU_IOAS_MAP_FIXED_IOVA
                            | IOMMU_IOAS_MAP_READABLE
                            | IOMMU_IOAS_MAP_WRITEABLE,
                        ioas_id: k.ioas,
                        user_va: vaddr,
                        length: size,
                        iova,
                        ..Default::default()
                    };
                    // SAFETY: as above, for struct iommu_ioas_map.
                    unsafe { ioctl(&k.file, IOMMU_IOAS_MAP, ptr(&mut map)) }
                        .map_err(|e| HostError::io(op, dev, e))?;
                }
            }
            k.dma.insert(iova, buf);
            Ok(DmaMapping { iova, size })
        })
    }

    pub(crate) fn dma_unmap(
        &self,
        c: VfioContainer,
        iova: u64,
        size: u64,
    ) -> Result<u64, HostError> {
        let (op, dev) = match c.path {
            VfioPath::Legacy => ("VFIO_IOMMU_UNMAP_DMA", CONTAINER_DEV),
            VfioPath::Iommufd => ("IOMMU_IOAS_UNMAP", IOMMU_DEV),
        };
        self.with_container(c, op, |k| {
            let unmapped = match k.path {
                VfioPath::Legacy => {
                    let mut unmap = abi::vfio_iommu_type1_dma_unmap {
                        argsz: argsz::<abi::vfio_iommu_type1_dma_unmap>(),
                        iova,
                        size,
                        ..Default::default()
                    };
                    // SAFETY: `unmap` is live, without the bitmap flag (no trailing data).
                    unsafe { ioctl(&k.file, VFIO_IOMMU_UNMAP_DMA, ptr(&mut unmap)) }
                        .map_err(|e| HostError::io(op, dev, e))?;
                    unmap.size
                }
                VfioPath::Iommufd => {
                    let mut unmap = IommuIoasUnmap {
                        size: argsz::<IommuIoasUnmap>(),
                        ioas_id: k.ioas,
                        iova,
                        length: size,
                    };
                    // SAFETY: `unmap` is a live struct iommu_ioas_unmap.
                    unsafe { ioctl(&k.file, IOMMU_IOAS_UNMAP, ptr(&mut unmap)) }
                        .map_err(|e| HostError::io(op, dev, e))?;
                    unmap.length
                }
            };
            // The kernel no longer maps these buffers: free them.
            let end = iova.saturating_add(size);
            let gone: Vec<u64> = k.dma.range(iova..end).map(|(&a, _)| a).collect();
            for a in gone {
                k.dma.remove(&a);
            }
            Ok(unmapped)
        })
    }

    pub(crate) fn close(&self, h: VfioHandle) -> Result<(), HostError> {
        let mut t = self.lock();
        // Dropping the entry closes the fd (and frees a container's buffers).
        let found = match h {
            VfioHandle::Container(c) => t
                .containers
                .get(&c.id)
                .is_some_and(|k| k.path == c.path)
                .then(|| t.containers.remove(&c.id))
                .is_some(),
            VfioHandle::Group(g) => t.groups.remove(&g.id).is_some(),
            VfioHandle::Device(d) => t.devices.remove(&d.id).is_some(),
        };
        if found {
            Ok(())
        } else {
            Err(ebadf("close", "/dev/vfio"))
        }
    }

    pub(crate) fn iommufd_open(&self) -> Result<VfioContainer, HostError> {
        let file = open_rw(Path::new(IOMMU_DEV))?;
        let mut alloc = IommuIoasAlloc {
            size: argsz::<IommuIoasAlloc>(),
            ..Default::default()
        };
        // SAFETY: `alloc` is a live struct iommu_ioas_alloc.
        unsafe { ioctl(&file, IOMMU_IOAS_ALLOC, ptr(&mut alloc)) }
            .map_err(|e| HostError::io("IOMMU_IOAS_ALLOC", IOMMU_DEV, e))?;
        let mut t = self.lock();
        let id = Self::insert_id(&mut t);
        t.containers.insert(
            id,
            ContainerFd {
                file,
                dma: BTreeMap::new(),
                path: VfioPath::Iommufd,
                ioas: alloc.out_ioas_id,
            },
        );
        Ok(VfioContainer {
            id,
            path: VfioPath::Iommufd,
        })
    }

    pub(crate) fn iommufd_device(
        &self,
        c: VfioContainer,
        name: &str,
        cdev: Option<PathBuf>,
    ) -> Result<VfioDevice, HostError> {
        let sysfs = vfio_device_sysfs_dir(name);
        let Some(cdev) = cdev else {
            return Err(HostError::errno(
                "open",
                sysfs.join("vfio-dev"),
                libc::ENOENT,
            ));
        };
        let file = open_rw(&cdev)?;
        self.with_container(c, "VFIO_DEVICE_BIND_IOMMUFD", |k| {
            if k.path != VfioPath::Iommufd {
                return Err(ebadf("VFIO_DEVICE_BIND_IOMMUFD", CONTAINER_DEV));
            }
            // argsz covers up to out_devid: the struct as every cdev kernel knows it.
            let mut bind = abi::vfio_device_bind_iommufd {
                argsz: 16,
                iommufd: k.file.as_raw_fd(),
                ..Default::default()
            };
            // SAFETY: `bind` is a live vfio_device_bind_iommufd; argsz is within its size.
            unsafe { ioctl(&file, VFIO_DEVICE_BIND_IOMMUFD, ptr(&mut bind)) }
                .map_err(|e| HostError::io("VFIO_DEVICE_BIND_IOMMUFD", &cdev, e))?;
            let mut attach = abi::vfio_device_attach_iommufd_pt {
                argsz: 12,
                pt_id: k.ioas,
                ..Default::default()
            };
            // SAFETY: `attach` is a live vfio_device_attach_iommufd_pt (argsz up to pt_id).
            unsafe { ioctl(&file, VFIO_DEVICE_ATTACH_IOMMUFD_PT, ptr(&mut attach)) }
                .map_err(|e| HostError::io("VFIO_DEVICE_ATTACH_IOMMUFD_PT", &cdev, e))?;
            Ok(())
        })?;
        let mut t = self.lock();
        let id = Self::insert_id(&mut t);
        t.devices.insert(
            id,
            DeviceFd {
                file,
                name: name.to_string(),
            },
        );
        Ok(VfioDevice {
            id,
            path: VfioPath::Iommufd,
        })
    }
}

impl Drop for ContainerFd {
    fn drop(&mut self) {
        if self.path == VfioPath::Iommufd && self.ioas != 0 {
            let mut d = IommuDestroy {
                size: argsz::<IommuDestroy>(),
                id: self.ioas,
            };
            // Best effort: closing the iommufd destroys the IOAS anyway.
            // SAFETY: `d` is a live struct iommu_destroy.
            let _ = unsafe { ioctl(&self.file, IOMMU_DESTROY, ptr(&mut d)) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ioctl_numbers_match_the_uapi_headers() {
        // _IO(';', 0x3b) + VFIO_BASE (100) + n.
        assert_eq!(VFIO_GET_API_VERSION, 0x3b64);
        assert_eq!(VFIO_GROUP_GET_DEVICE_FD, 0x3b6a);
        assert_eq!(VFIO_IOMMU_MAP_DMA, 0x3b71);
        assert_eq!(VFIO_DEVICE_ATTACH_IOMMUFD_PT, 0x3b77);
        assert_eq!(IOMMU_IOAS_ALLOC, 0x3b81);
        assert_eq!(std::mem::size_of::<IommuIoasMap>(), 40);
        assert_eq!(std::mem::size_of::<IommuIoasUnmap>(), 24);
    }

    #[test]
    fn dma_buffer_is_mapped_and_freed() {
        let b = DmaBuffer::new(1 << 20).unwrap();
        // SAFETY: the mapping is 1 MiB, readable and writable.
        unsafe { b.addr.cast::<u8>().as_ptr().write(0xa5) };
        drop(b);
        assert!(DmaBuffer::new(0).is_err());
    }
}
