//! `HostOps`: every byte vm-device reads from or writes to the host passes here.
//!
//! Paths are absolute kernel paths (`/sys/bus/pci/devices/0000:01:00.0/vendor`). The real
//! implementation opens them as they are; the simulator maps them under its fixture root.
//! Errors keep the `io::Error` (and so the errno) the kernel gave, with the operation and
//! path, so callers can explain a refusal precisely.

use std::io;
use std::path::{Path, PathBuf};

use crate::vfio::{
    DeviceInfo, DmaMapping, GroupStatus, IommuInfo, IommuType, IommufdAvailability, IrqInfo,
    RegionInfo, VfioContainer, VfioDevice, VfioGroup, VfioHandle,
};

/// What kind of node a path is, without following a final symbolic link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeKind {
    /// A regular file (a sysfs attribute, or a device node stand-in in fixtures).
    File,
    /// A directory.
    Dir,
    /// A symbolic link.
    Link,
    /// A character or block device node.
    Device,
}

/// The most an attribute read takes, on a real host and a simulated one alike: sysfs
/// attributes are at most a page (binary ones such as `config` 4 KiB); a bigger file where
/// an attribute belongs is a corrupted tree, and reading it whole would cost seconds and
/// gigabytes.
pub const MAX_ATTR_BYTES: usize = 64 << 10;

/// The most a `/proc` read takes (`cpuinfo` of a big server).
pub const MAX_PROC_BYTES: usize = 16 << 20;

/// The read cap of kernel path `p`: [`MAX_PROC_BYTES`] under `/proc`, else
/// [`MAX_ATTR_BYTES`].
pub fn cap_for(p: &Path) -> usize {
    if p.starts_with("/proc") {
        MAX_PROC_BYTES
    } else {
        MAX_ATTR_BYTES
    }
}

/// An error from the host, with what was attempted.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    /// A filesystem operation failed; `source` carries the errno.
    #[error("{op} {}: {source}", path.display())]
    Io {
        /// The operation (`read`, `write`, `readlink`, `list`, `open`).
        op: &'static str,
        /// The absolute kernel path.
        path: PathBuf,
        /// The error the kernel (or simulator) returned.
        #[source]
        source: io::Error,
    },
    /// Loading a kernel module failed.
    #[error("modprobe {module}: {detail}")]
    Module {
        /// Module name.
        module: String,
        /// What modprobe (or the simulator) said.
        detail: String,
    },
    /// Asking the graphics stack for adapters failed.
    #[error("wgpu adapter probe: {0}")]
    Adapter(String),
    /// The fixture or recording behind a simulated host is malformed.
    #[error("fixture: {0}")]
    Fixture(String),
    /// NVML (`libnvidia-ml.so.1`) is installed but answered with an error.
    #[error("NVML {call}: {detail}")]
    Nvml {
        /// The NVML function that failed (`nvmlInit_v2`, `nvmlDeviceGetMemoryInfo`).
        call: &'static str,
        /// What NVML said (`nvmlErrorString`, or the return code).
        detail: String,
    },
}

impl HostError {
    /// Builds an [`HostError::Io`].
    pub fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        HostError::Io {
            op,
            path: path.into(),
            source,
        }
    }

    /// Builds an [`HostError::Io`] from a raw errno.
    pub fn errno(op: &'static str, path: impl Into<PathBuf>, errno: i32) -> Self {
        Self::io(op, path, io::Error::from_raw_os_error(errno))
    }

    /// The errno, when the host gave one.
    pub fn raw_os_error(&self) -> Option<i32> {
        match self {
            HostError::Io { source, .. } => source.raw_os_error(),
            _ => None,
        }
    }

    /// True when the path does not exist (`ENOENT`).
    pub fn is_not_found(&self) -> bool {
        matches!(self, HostError::Io { source, .. } if source.kind() == io::ErrorKind::NotFound)
    }
}

/// A graphics adapter that wgpu can open, as `.fixture/wgpu-adapters.json` records it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AdapterInfo {
    /// Adapter name (`NVIDIA H100 80GB HBM3`, `llvmpipe (LLVM 15.0.6, 256 bits)`).
    pub name: String,
    /// PCI vendor id (0 for software adapters).
    #[serde(default)]
    pub vendor: u32,
    /// PCI device id (0 for software adapters).
    #[serde(default)]
    pub device: u32,
    /// `DiscreteGpu`, `IntegratedGpu`, `VirtualGpu`, `Cpu` or `Other`.
    pub device_type: String,
    /// `Vulkan`, `Gl`, `Metal` or `Dx12`.
    pub backend: String,
    /// Driver name (`llvmpipe`, `NVIDIA`).
    #[serde(default)]
    pub driver: String,
    /// Driver version text.
    #[serde(default)]
    pub driver_info: String,
}

impl AdapterInfo {
    /// True for adapters that render on the CPU (lavapipe, llvmpipe, WARP).
    pub fn is_cpu(&self) -> bool {
        self.device_type == "Cpu"
    }
}

/// A process that holds a device node open.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ProcessHolder {
    /// Process id.
    pub pid: u32,
    /// Program name from `/proc/PID/comm`.
    pub comm: String,
    /// The device node it holds.
    pub path: PathBuf,
}

/// Files of the host: sysfs attributes, `/proc`, `/dev` nodes, and the few configuration
/// files vm-device writes (mdevctl definitions), each under a root the caller names.
///
/// Code that only reads the host's files can take `&dyn Sysfs` (or `impl Sysfs`).
pub trait Sysfs: Send + Sync {
    /// Reads a whole file.
    fn read(&self, path: &Path) -> Result<Vec<u8>, HostError>;

    /// Reads the target of a symbolic link, as stored (usually relative).
    fn read_link(&self, path: &Path) -> Result<PathBuf, HostError>;

    /// Lists the names in a directory (following links), sorted.
    fn list_dir(&self, path: &Path) -> Result<Vec<String>, HostError>;

    /// The kind of node at `path` without following a final link; `None` when absent.
    fn kind(&self, path: &Path) -> Option<NodeKind>;

    /// Resolves every symbolic link in `path` (like `realpath`).
    fn canonicalize(&self, path: &Path) -> Result<PathBuf, HostError>;

    /// Writes `value` to an attribute in one `write(2)`, as `echo -n value > path` would.
    fn write_attr(&self, path: &Path, value: &[u8]) -> Result<(), HostError>;

    // ---- configuration files (mdevctl definitions): `rel` is a plain relative path
    // (see [`config_path`]) under the directory `root`, which the caller chose; `root` may be
    // reached through links, but no component of `rel` is ever followed as one ----

    /// Creates the directory `root/rel` (mode 0755) and each missing directory above it
    /// below `root`; an existing directory is fine. A link or non-directory on the way:
    /// `ELOOP` / `ENOTDIR`.
    fn create_dir(&self, root: &Path, rel: &Path) -> Result<(), HostError>;

    /// Writes the new file `root/rel` (mode 0644) atomically: it appears whole or not at
    /// all (written to a temporary file beside it, synced, then linked into place). `EEXIST`
    /// when it exists (a link included); its directory must exist.
    fn write_file(&self, root: &Path, rel: &Path, contents: &[u8]) -> Result<(), HostError>;

    /// Removes the file `root/rel` (a link there is removed, never followed).
    fn remove_file(&self, root: &Path, rel: &Path) -> Result<(), HostError>;

    /// Removes the empty directory `root/rel` (`ENOTEMPTY` when it holds anything).
    fn remove_dir(&self, root: &Path, rel: &Path) -> Result<(), HostError>;

    /// Reads an attribute as text, without the trailing newline.
    fn read_attr(&self, path: &Path) -> Result<String, HostError> {
        let bytes = self.read(path)?;
        let text = String::from_utf8_lossy(&bytes);
        Ok(text.trim_end_matches(['\n', '\0']).to_string())
    }

    /// True when `path` exists, following links.
    fn exists(&self, path: &Path) -> bool {
        self.canonicalize(path)
            .ok()
            .and_then(|p| self.kind(&p))
            .is_some()
    }

    /// True when the user running this process may open `path` for reading, and for writing
    /// too when `write`, as `access(2)` answers with the real uid. The provided answer is
    /// "the node exists": a simulated host (a fixture tree) records no owners or modes, so
    /// `SimHost` keeps this default and every existing node counts as accessible there;
    /// `LinuxHost` asks the kernel.
    fn access(&self, path: &Path, write: bool) -> bool {
        let _ = write;
        self.exists(path)
    }

    /// True when `path` is a directory, following links.
    fn is_dir(&self, path: &Path) -> bool {
        self.canonicalize(path)
            .ok()
            .and_then(|p| self.kind(&p))
            .is_some_and(|k| k == NodeKind::Dir)
    }

    /// The last component of a link's target (`driver` → `vfio-pci`).
    fn link_name(&self, path: &Path) -> Result<String, HostError> {
        let target = self.read_link(path)?;
        Ok(target
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default())
    }
}

/// VFIO: containers, groups and devices, as the handles of [`crate::vfio`] name them.
pub trait Vfio: Sysfs {
    /// Opens `/dev/vfio/vfio`: a new, empty container.
    fn vfio_open_container(&self) -> Result<VfioContainer, HostError>;

    /// `VFIO_GET_API_VERSION` on a container ([`crate::vfio::VFIO_API_VERSION`] everywhere).
    fn vfio_api_version(&self, container: VfioContainer) -> Result<i32, HostError>;

    /// `VFIO_CHECK_EXTENSION`: 0 when unsupported, usually 1 when supported. `ext` is a
    /// `linux/vfio.h` extension number ([`IommuType::raw`] for the IOMMU types).
    fn vfio_check_extension(&self, container: VfioContainer, ext: u32) -> Result<u32, HostError>;

    /// Opens `/dev/vfio/N`. A group can be open once at a time (`EBUSY` otherwise).
    fn vfio_open_group(&self, group: u32) -> Result<VfioGroup, HostError>;

    /// `VFIO_GROUP_GET_STATUS`.
    fn vfio_group_status(&self, group: VfioGroup) -> Result<GroupStatus, HostError>;

    /// `VFIO_GROUP_SET_CONTAINER`: `EPERM` when the group is not viable.
    fn vfio_group_set_container(
        &self,
        group: VfioGroup,
        container: VfioContainer,
    ) -> Result<(), HostError>;

    /// `VFIO_SET_IOMMU`: `EINVAL` before a group is attached (or when already set), `ENODEV`
    /// when the backend module is not loaded.
    fn vfio_set_iommu(&self, container: VfioContainer, kind: IommuType) -> Result<(), HostError>;

    /// `VFIO_IOMMU_GET_INFO` of a container whose IOMMU is set.
    fn vfio_iommu_info(&self, container: VfioContainer) -> Result<IommuInfo, HostError>;

    /// `VFIO_GROUP_GET_DEVICE_FD` with a PCI address (`0000:01:00.0`) or an mdev UUID:
    /// `ENODEV` when no VFIO device of that name is in the group, `EINVAL` when the group's
    /// container has no IOMMU set.
    fn vfio_group_device(&self, group: VfioGroup, name: &str) -> Result<VfioDevice, HostError>;

    /// `VFIO_DEVICE_GET_INFO`.
    fn vfio_device_info(&self, device: VfioDevice) -> Result<DeviceInfo, HostError>;

    /// `VFIO_DEVICE_GET_REGION_INFO` (`EINVAL` for an index past `num_regions`).
    fn vfio_region_info(&self, device: VfioDevice, index: u32) -> Result<RegionInfo, HostError>;

    /// `VFIO_DEVICE_GET_IRQ_INFO` (`EINVAL` for an index past `num_irqs`).
    fn vfio_irq_info(&self, device: VfioDevice, index: u32) -> Result<IrqInfo, HostError>;

    /// `pread` from region `index` at `offset` within the region; returns the bytes read
    /// (fewer than `buf.len()` at the end of the region).
    fn vfio_region_read(
        &self,
        device: VfioDevice,
        index: u32,
        offset: u64,
        buf: &mut [u8],
    ) -> Result<usize, HostError>;

    /// Maps `size` bytes of host memory, allocated and owned by the host implementation
    /// until unmapped or the container is closed, at `iova` (`VFIO_IOMMU_MAP_DMA` or
    /// `IOMMU_IOAS_MAP` with a fixed IOVA). Overlapping an existing mapping: `EEXIST`.
    fn vfio_dma_map(
        &self,
        container: VfioContainer,
        iova: u64,
        size: u64,
    ) -> Result<DmaMapping, HostError>;

    /// Unmaps every mapping inside `[iova, iova + size)` and frees its memory; returns the
    /// bytes unmapped (type1 answers 0 when nothing was mapped there; iommufd `ENOENT`).
    fn vfio_dma_unmap(
        &self,
        container: VfioContainer,
        iova: u64,
        size: u64,
    ) -> Result<u64, HostError>;

    /// Closes a handle's fd (and frees a container's DMA buffers). Closing an unknown or
    /// already closed handle: `EBADF`.
    fn vfio_close(&self, handle: VfioHandle) -> Result<(), HostError>;

    /// Opens `/dev/iommu` and allocates one IO address space (`IOMMU_IOAS_ALLOC`); the
    /// returned container has [`crate::vfio::VfioPath::Iommufd`]. `ENOENT` on kernels
    /// without iommufd.
    fn vfio_iommufd_open(&self) -> Result<VfioContainer, HostError>;

    /// Opens a device through its cdev and attaches it to the iommufd container's IOAS
    /// (`VFIO_DEVICE_BIND_IOMMUFD`, `VFIO_DEVICE_ATTACH_IOMMUFD_PT`).
    fn vfio_iommufd_device(
        &self,
        iommufd: VfioContainer,
        name: &str,
    ) -> Result<VfioDevice, HostError>;

    /// Whether `name` (PCI address or mdev UUID) can be opened through iommufd: `/dev/iommu`
    /// and the device's `vfio-dev/vfioN` cdev. Read-only.
    fn vfio_iommufd_availability(&self, name: &str) -> IommufdAvailability {
        let iommu_dev = self.exists(Path::new("/dev/iommu"));
        let dir = vfio_device_sysfs_dir(name).join("vfio-dev");
        let cdev = self
            .list_dir(&dir)
            .ok()
            .and_then(|names| names.into_iter().find(|n| n.starts_with("vfio")))
            .map(|n| PathBuf::from("/dev/vfio/devices").join(n))
            .filter(|p| self.exists(p));
        IommufdAvailability { iommu_dev, cdev }
    }
}

/// What the host's graphics stack reports: the wgpu adapter probe and NVML's memory figure.
pub trait Adapters: Send + Sync {
    /// The graphics adapters wgpu can open. Expensive on a real host: call only when the
    /// wgpu rung is being considered.
    fn probe_adapters(&self) -> Result<Vec<AdapterInfo>, HostError>;

    /// Total memory in bytes of the NVIDIA GPU at `addr` as NVML reports it
    /// (`nvmlDeviceGetMemoryInfo`; what `nvidia-smi` shows as `memory.total`). `Ok(None)`
    /// when NVML is not installed (`libnvidia-ml.so.1` does not load): a host without the
    /// NVIDIA user-space driver works the same, only without the figure. Call it only for a
    /// function bound to the `nvidia` driver. `LinuxHost` loads the library at run time;
    /// `SimHost` reads `.fixture/nvml.json`.
    fn nvml_memory_total(&self, addr: &crate::PciAddress) -> Result<Option<u64>, HostError>;
}

/// The host as a whole: kernel modules, the kernel command line and CPU, KVM, processes
/// (who holds a device node; later, where a thread may run) and the identity of the machine.
pub trait System: Sysfs {
    /// Loads a kernel module (`modprobe NAME`).
    fn load_module(&self, name: &str) -> Result<(), HostError>;

    /// Opens `/dev/kvm`, checks `KVM_GET_API_VERSION` (12) and creates (then closes) a VM
    /// with `KVM_CREATE_VM`: whether this process can use KVM at all. Returns the API
    /// version. The provided answer is "the node exists, API 12": a recorded tree cannot make
    /// ioctls; `LinuxHost` makes them.
    fn kvm_create_vm(&self) -> Result<i32, HostError> {
        let node = Path::new("/dev/kvm");
        if self.exists(node) {
            Ok(12)
        } else {
            Err(HostError::errno("open", node, 2))
        }
    }

    /// `sched_setaffinity(2)` of thread `tid` (a thread id, as `/proc/PID/task` lists them
    /// and QMP `query-cpus-fast` reports a vCPU's `thread-id`) to the CPUs `cpus`: how the
    /// launcher pins a VM's vCPU threads to the GPU's NUMA node. `LinuxHost` makes the call;
    /// `SimHost` records it ([`SimHost::affinities`]). The provided answer is `ENOSYS`: a host
    /// that cannot place threads says so rather than pretending.
    ///
    /// [`SimHost::affinities`]: https://docs.rs/vm-device-sim
    fn set_thread_affinity(&self, tid: u32, cpus: &[u32]) -> Result<(), HostError> {
        let _ = cpus;
        Err(HostError::errno(
            "sched_setaffinity",
            format!("/proc/{tid}"),
            38,
        ))
    }

    /// Which host this is, for vm-device's journals: a journal records the identity of the
    /// host it changed, and is replayed only on that host. The provided answer is this
    /// machine and this boot (`/etc/machine-id` and `/proc/sys/kernel/random/boot_id`, each
    /// `-` when unreadable); a simulated host answers with its tree instead.
    fn identity(&self) -> String {
        let read = |p: &str| {
            self.read_attr(Path::new(p))
                .ok()
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty() && !s.contains(char::is_whitespace))
                .unwrap_or_else(|| "-".to_string())
        };
        format!(
            "machine-id {} boot {}",
            read("/etc/machine-id"),
            read("/proc/sys/kernel/random/boot_id")
        )
    }

    /// `/proc/cmdline`.
    fn kernel_cmdline(&self) -> Result<String, HostError> {
        self.read_attr(Path::new("/proc/cmdline"))
    }

    /// `vendor_id` of `/proc/cpuinfo` (`GenuineIntel`, `AuthenticAMD`).
    fn cpu_vendor(&self) -> Result<String, HostError> {
        let info = self.read(Path::new("/proc/cpuinfo"))?;
        let text = String::from_utf8_lossy(&info);
        text.lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                (k.trim() == "vendor_id").then(|| v.trim().to_string())
            })
            .ok_or_else(|| HostError::Fixture("/proc/cpuinfo has no vendor_id line".into()))
    }

    /// Names of loaded modules, from `/proc/modules`.
    fn loaded_modules(&self) -> Result<Vec<String>, HostError> {
        let text = self.read(Path::new("/proc/modules"))?;
        Ok(String::from_utf8_lossy(&text)
            .lines()
            .filter_map(|l| l.split_whitespace().next().map(str::to_string))
            .collect())
    }

    /// The process id of this process and of its threads: `/proc/self` (a link to the pid)
    /// and `/proc/self/task`. Empty when `/proc/self` is absent (most fixtures).
    fn own_pids(&self) -> Vec<u32> {
        let Some(me) = self
            .read_link(Path::new("/proc/self"))
            .ok()
            .and_then(|t| t.to_str()?.trim().parse::<u32>().ok())
        else {
            return Vec::new();
        };
        let mut pids = vec![me];
        pids.extend(
            self.list_dir(Path::new("/proc/self/task"))
                .unwrap_or_default()
                .iter()
                .filter_map(|t| t.parse::<u32>().ok())
                .filter(|t| *t != me),
        );
        pids
    }

    /// Processes holding any of `paths` open, found by reading `/proc/*/fd/*` links. This
    /// process (and its threads: a pid in [`own_pids`](Self::own_pids), or whose
    /// `/proc/PID/status` names this process as its `Tgid`) is never a holder: its own
    /// probes (wgpu, NVML) open device nodes, and it never unbinds a device from itself.
    fn processes_holding(&self, paths: &[PathBuf]) -> Result<Vec<ProcessHolder>, HostError> {
        let mut found = Vec::new();
        let own = self.own_pids();
        for pid in self.list_dir(Path::new("/proc"))? {
            let Ok(pid_num) = pid.parse::<u32>() else {
                continue;
            };
            if own.contains(&pid_num) {
                continue;
            }
            let fd_dir = PathBuf::from(format!("/proc/{pid}/fd"));
            // A process may exit, or deny us its fds: skip it rather than fail the scan.
            let Ok(fds) = self.list_dir(&fd_dir) else {
                continue;
            };
            for fd in fds {
                let Ok(target) = self.read_link(&fd_dir.join(&fd)) else {
                    continue;
                };
                if let Some(p) = paths.iter().find(|p| **p == target) {
                    if found
                        .iter()
                        .any(|h: &ProcessHolder| h.pid == pid_num && h.path == *p)
                    {
                        continue;
                    }
                    if own
                        .first()
                        .is_some_and(|me| self.tgid(pid_num) == Some(*me))
                    {
                        // A thread of this process listed on its own.
                        continue;
                    }
                    let comm = self
                        .read_attr(&PathBuf::from(format!("/proc/{pid}/comm")))
                        .unwrap_or_default();
                    found.push(ProcessHolder {
                        pid: pid_num,
                        comm,
                        path: p.clone(),
                    });
                }
            }
        }
        Ok(found)
    }

    /// `Tgid` of `/proc/PID/status`: the process a thread belongs to.
    fn tgid(&self, pid: u32) -> Option<u32> {
        let status = self
            .read_attr(&PathBuf::from(format!("/proc/{pid}/status")))
            .ok()?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("Tgid:"))
            .and_then(|v| v.trim().parse().ok())
    }
}

/// The one door to the host: [`Sysfs`], [`Vfio`], [`Adapters`] and [`System`] together.
///
/// Implementations: `LinuxHost` (the machine itself) and `SimHost` (a fixture tree that
/// reacts to writes as the kernel does) implement the four small traits; every type that
/// does is a `HostOps` (a blanket implementation), so `&dyn HostOps` reaches every
/// operation. Provided methods build on the required ones so both parse `/proc` the same
/// way.
pub trait HostOps: Sysfs + Vfio + Adapters + System {}

impl<T: Sysfs + Vfio + Adapters + System + ?Sized> HostOps for T {}

/// The components of `rel`, a path under a configuration root: relative, not empty, and
/// made of plain names only (no `.`, `..`, root or empty component). Anything else is
/// refused with `EINVAL`, before the host is touched.
pub fn config_path(root: &Path, rel: &Path) -> Result<Vec<std::ffi::OsString>, HostError> {
    use std::path::Component;
    let mut out = Vec::new();
    for c in rel.components() {
        match c {
            Component::Normal(n) => out.push(n.to_os_string()),
            _ => {
                return Err(HostError::io(
                    "check",
                    root.join(rel),
                    io::Error::new(
                        io::ErrorKind::InvalidInput,
                        "not a plain relative path under the configuration root",
                    ),
                ))
            }
        }
    }
    if out.is_empty() {
        return Err(HostError::errno("check", root, 22));
    }
    Ok(out)
}

/// The sysfs directory of a VFIO device name: `/sys/bus/pci/devices/ADDR` for a PCI address,
/// `/sys/bus/mdev/devices/UUID` otherwise.
pub fn vfio_device_sysfs_dir(name: &str) -> PathBuf {
    if name.parse::<crate::PciAddress>().is_ok() {
        PathBuf::from("/sys/bus/pci/devices").join(name)
    } else {
        PathBuf::from("/sys/bus/mdev/devices").join(name)
    }
}
