//! `SimHost`: a host made of a recorded fixture tree that answers writes as Linux does.
//!
//! A fixture (`docs/fixture-format.md`) is a directory that looks, from its root, like the parts
//! of `/sys`, `/proc` and `/dev` that GPU management touches. `SimHost` serves it read-only
//! from disk and keeps every change in an in-memory overlay, so a fixture on disk is never
//! modified and two simulators over one fixture never see each other. Writes to attributes
//! the kernel reacts to run the kernel's reaction (see [`kernel`]), with the errno a real
//! 6.1 kernel gives (`docs/kernel-sysfs-semantics.md`).
#![deny(missing_docs)]
#![deny(clippy::undocumented_unsafe_blocks)]

pub mod faults;
mod files;
mod fixture_copy;
pub mod kernel;
mod persist;
mod tree;
pub use tree::{cap_for, MAX_ATTR_BYTES, MAX_PROC_BYTES};
mod vfio;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use vm_device_host::{
    AdapterInfo, Adapters, DeviceInfo, DmaMapping, GroupStatus, HostError, IommuInfo, IommuType,
    IrqInfo, NodeKind, RegionInfo, Sysfs, System, Vfio, VfioContainer, VfioDevice, VfioGroup,
    VfioHandle,
};

pub use fixture_copy::copy_fixture;
use tree::Tree;
pub use tree::{SnapNode, Snapshot};
pub use vfio::{OpenDeviceFd, VfioFault};

/// One host operation as the simulator saw it, for tests that count or order host access.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// A file read.
    Read(PathBuf),
    /// A directory listing.
    List(PathBuf),
    /// A link read.
    ReadLink(PathBuf),
    /// An attribute write with its value.
    Write(PathBuf, Vec<u8>),
    /// A module load.
    LoadModule(String),
    /// A wgpu adapter probe.
    ProbeAdapters,
    /// An NVML memory query of a GPU (its PCI address).
    Nvml(String),
    /// A VFIO call (`open_group 7`, `set_container group=7 container=1`, ...).
    Vfio(String),
    /// `sched_setaffinity` of a thread (its id) to CPUs.
    SetAffinity(u32, Vec<u32>),
    /// A configuration-file change (`mkdir`, `create`, `remove`) and its path (root joined).
    File(&'static str, PathBuf),
}

/// A simulated host over a fixture tree.
pub struct SimHost {
    root: PathBuf,
    state: Mutex<State>,
}

/// Everything a simulated host holds behind its lock: the tree, the log, the kernel's own
/// memory (native drivers, pools, open device fds) and the fault plan.
pub struct State {
    pub(crate) tree: Tree,
    pub(crate) log: Vec<Op>,
    pub(crate) logging: bool,
    pub(crate) kernel: kernel::KernelState,
    pub(crate) kernel_scanned: bool,
    pub(crate) faults: faults::FaultState,
    pub(crate) vfio: vfio::VfioState,
    /// The persistent overlay, when the host was opened with one.
    pub(crate) persist: Option<persist::Persisted>,
}

impl SimHost {
    /// Opens the fixture tree at `dir` (which must exist). Empty directories listed in
    /// `.fixture/empty-dirs` are recreated in the overlay.
    pub fn from_fixture(dir: impl AsRef<Path>) -> Result<Self, HostError> {
        let root = dir.as_ref().to_path_buf();
        if !root.is_dir() {
            return Err(HostError::Fixture(format!(
                "{} is not a directory (expected a host tree with sys/, proc/, dev/)",
                root.display()
            )));
        }
        let mut tree = Tree::new(root.clone());
        let empty_dirs = root.join(".fixture/empty-dirs");
        // A list of directories: generous, but never a FIFO that blocks or a file that
        // would take all memory.
        let list = match tree::read_fixture_file(&empty_dirs, 64 << 20) {
            Ok(b) => String::from_utf8_lossy(&b).into_owned(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => {
                eprintln!("vm-device-sim: warning: {}: {e}", empty_dirs.display());
                String::new()
            }
        };
        {
            for line in list.lines().map(str::trim).filter(|l| !l.is_empty()) {
                tree.add_base_dir(&Path::new("/").join(line));
            }
        }
        Ok(Self {
            root,
            state: Mutex::new(State {
                tree,
                log: Vec::new(),
                logging: true,
                // Learnt from the pristine tree on the first call that needs it (a write, a
                // module load, VFIO): a read-only scan never pays for it.
                kernel: kernel::KernelState::default(),
                kernel_scanned: false,
                faults: faults::FaultState::default(),
                vfio: vfio::VfioState::default(),
                persist: None,
            }),
        })
    }

    /// Opens the fixture tree at `dir` with a persistent overlay in `state`: the changes
    /// earlier processes made with the same `state` are replayed, and this host's changes
    /// are added to it (see the `persist` module: `state/changes.jsonl`). `state` is
    /// created (0700) when absent, and refused when it belongs to another tree.
    pub fn from_fixture_with_state(
        dir: impl AsRef<Path>,
        state: impl AsRef<Path>,
    ) -> Result<Self, HostError> {
        let host = Self::from_fixture(dir)?;
        let p = persist::Persisted::open(state.as_ref(), &host.root)?;
        {
            let mut st = host.lock_raw();
            st.persist = Some(p);
            persist::catch_up(&mut st, &host.root);
        }
        Ok(host)
    }

    /// This host with fault plan `plan` (see [`faults`]).
    pub fn with_faults(self, plan: faults::FaultPlan) -> Self {
        self.set_faults(plan);
        self
    }

    /// Replaces the fault plan; its call counters start from zero.
    pub fn set_faults(&self, plan: faults::FaultPlan) {
        self.lock().faults.plan = plan;
    }

    /// The state of this host reopened by a new process: the same tree and kernel memory
    /// (native drivers, `new_id` entries, pools, `/dev/vfio` minors), with every VFIO fd the
    /// old process held closed (writes the kernel held for them complete now), no fault
    /// plan, an empty log, and alive. Works on a host that died of a
    /// [`FaultAction::Die`](faults::FaultAction::Die), which is its purpose: run `restore`
    /// on what a killed process left behind.
    pub fn fork(&self) -> SimHost {
        let st = self.lock();
        let mut new = State {
            tree: st.tree.clone(),
            log: Vec::new(),
            logging: st.logging,
            kernel: st.kernel.clone(),
            kernel_scanned: true,
            faults: faults::FaultState::default(),
            // A dead process holds no VFIO objects: its fds closed with it.
            vfio: vfio::VfioState::default(),
            // The copy lives in memory only.
            persist: None,
        };
        drop(st);
        new.release_all_fds();
        SimHost {
            root: self.root.clone(),
            state: Mutex::new(new),
        }
    }

    /// The CPUs each thread was pinned to with
    /// [`HostOps::set_thread_affinity`] (thread id → sorted CPUs).
    pub fn affinities(&self) -> BTreeMap<u32, Vec<u32>> {
        self.lock().kernel.affinity.clone()
    }

    /// True once a fault killed the simulated process.
    pub fn is_dead(&self) -> bool {
        self.lock().faults.dead.is_some()
    }

    /// Calls a [`FaultAction::Hang`](faults::FaultAction::Hang) stopped: operation and path.
    pub fn hangs(&self) -> Vec<(String, PathBuf)> {
        self.lock().faults.hangs.clone()
    }

    /// Writes the kernel holds until a VFIO device fd closes (rule 25).
    pub fn pending_writes(&self) -> Vec<kernel::PendingWrite> {
        self.lock().kernel.pending.clone()
    }

    /// Kernel log lines printed by the simulated reactions, oldest first.
    pub fn dmesg(&self) -> Vec<String> {
        self.lock().kernel.dmesg.clone()
    }

    /// The driver PCI function `addr` had when the fixture was opened (`None`: unbound, or
    /// no such function).
    pub fn native_driver(&self, addr: &str) -> Option<String> {
        self.lock().kernel.native.get(addr).cloned().flatten()
    }

    /// The minor number of `/dev/vfio/GROUP` while it exists (allocated lowest-free, rule 21).
    pub fn vfio_minor(&self, group: u32) -> Option<u32> {
        self.lock().kernel.vfio_minors.get(&group).copied()
    }

    /// Members of IOMMU group `group`: canonical device directory and bound driver.
    pub fn group_members(&self, group: u32) -> Vec<(PathBuf, Option<String>)> {
        kernel::group_members(&self.lock().tree, group)
    }

    /// Whether `VFIO_GROUP_GET_STATUS` would report group `group` viable (rule 23).
    pub fn group_viable(&self, group: u32) -> bool {
        kernel::group_viable(&self.lock().tree, group)
    }

    /// Marks a VFIO device fd of `dev` (address or UUID) in `group` open; see
    /// [`State::open_device_fd`].
    pub fn open_device_fd(&self, group: u32, dev: &str) {
        self.lock().open_device_fd(group, dev);
    }

    /// Marks a VFIO device fd of `dev` closed; see [`State::close_device_fd`].
    pub fn close_device_fd(&self, group: u32, dev: &str) {
        self.lock().close_device_fd(group, dev);
    }

    /// Marks group `group` attached to a container (or detached); see
    /// [`State::set_group_claimed`].
    pub fn set_group_claimed(&self, group: u32, claimed: bool) {
        self.lock().set_group_claimed(group, claimed);
    }

    /// `modprobe -r NAME` (rules 33–35). Not part of [`HostOps`]: the manager never unloads
    /// modules; tests use it to reproduce the measured module behaviour.
    pub fn unload_module(&self, name: &str) -> Result<(), HostError> {
        let mut st = self.lock();
        let path = PathBuf::from(name);
        let go = st.faults.check("rmmod", &path)?;
        let r = kernel::modules::unload(&mut st, name);
        st.faults.finish(go, "rmmod", &path, r)
    }

    /// The fixture directory this host serves.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Turns the operation log ([`ops`](Self::ops)) on or off (on by default). Programs that
    /// never look at it, such as `vm-cli --host-root`, turn it off to save the copies.
    pub fn set_logging(&self, on: bool) {
        self.lock_raw().logging = on;
    }

    /// Learns now what the kernel knows from boot (native drivers and their id tables,
    /// reset methods, DRM nodes, VFIO minors, loadable modules), which otherwise happens at
    /// the first call that needs it (the first write). A real host has this before any
    /// process runs: a measurement of a program's work on a booted host calls this first,
    /// so the simulator's own learning is not counted as the program's.
    pub fn learn_kernel(&self) {
        drop(self.lock());
    }

    /// Every host operation so far, in order.
    pub fn ops(&self) -> Vec<Op> {
        self.lock_raw().log.clone()
    }

    /// Forgets the recorded operations.
    pub fn clear_ops(&self) {
        self.lock_raw().log.clear();
    }

    /// The whole tree as it is now (fixture plus overlay), for byte-equal comparisons.
    pub fn snapshot(&self) -> Snapshot {
        self.lock_raw().tree.snapshot()
    }

    /// Every open VFIO device fd (one entry per fd), for the rules that depend on them
    /// (`enable` reads, blocking unbind/remove, refused probes in a group in use).
    pub fn open_device_fds(&self) -> Vec<OpenDeviceFd> {
        self.lock().vfio.open_device_fds()
    }

    /// True while `name` (PCI address or mdev UUID) has an open VFIO device fd.
    pub fn device_fd_open(&self, name: &str) -> bool {
        self.lock().vfio.open_device_names().contains(name)
    }

    /// Numbers of the IOMMU groups whose `/dev/vfio/N` is open.
    pub fn open_vfio_groups(&self) -> Vec<u32> {
        self.lock().vfio.open_groups().into_iter().collect()
    }

    /// Makes the next `fault.times` calls of VFIO operation `fault.op` fail with
    /// `fault.errno` (see [`VfioFault`] for the operation names).
    pub fn inject_vfio_fault(&self, fault: VfioFault) {
        self.lock().vfio.faults.push(fault);
    }

    /// The state, with the kernel's memory of the fixture (native drivers, id tables, reset
    /// methods) learnt if this is the first call that needs it.
    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        let mut st = self.lock_raw();
        if !st.kernel_scanned {
            st.kernel = kernel::KernelState::scan(&st.tree, &self.root);
            st.kernel_scanned = true;
        }
        st
    }

    /// The state as it is, for calls that only read the tree.
    fn lock_raw(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves the overlay consistent enough to read.
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if st.persist.is_some() {
            persist::catch_up(&mut st, &self.root);
        }
        st
    }

    /// A configuration-file change: checked, fault-checked, logged for `--sim-state`, made.
    fn file_op(&self, root: &Path, rel: &Path, op: files::FileOp) -> Result<(), HostError> {
        vm_device_host::config_path(root, rel)?;
        let path = root.join(rel);
        let name = op.name();
        let mut st = self.lock();
        self.record(&mut st, Op::File(name, path.clone()));
        let go = st.faults.check(name, &path)?;
        let change = persist::Change::File {
            root: root.to_path_buf(),
            rel: rel.to_path_buf(),
            change: op.clone(),
        };
        let _recording = persist::record(&mut st, &self.root, change)?;
        let r =
            files::apply(&mut st.tree, root, rel, &op).map_err(|e| HostError::io(name, &path, e));
        st.faults.finish(go, name, &path, r)
    }

    fn record(&self, st: &mut State, op: Op) {
        if st.logging {
            st.log.push(op);
        }
    }
}

impl Sysfs for SimHost {
    fn read(&self, path: &Path) -> Result<Vec<u8>, HostError> {
        let mut st = self.lock_raw();
        self.record(&mut st, Op::Read(path.to_path_buf()));
        st.faults.check("read", path)?;
        st.tree
            .read(path)
            .map_err(|e| HostError::io("read", path, kernel::read_error(&st.tree, path, e)))
    }

    fn read_link(&self, path: &Path) -> Result<PathBuf, HostError> {
        let mut st = self.lock_raw();
        self.record(&mut st, Op::ReadLink(path.to_path_buf()));
        st.faults.check("readlink", path)?;
        st.tree
            .read_link(path)
            .map_err(|e| HostError::io("readlink", path, e))
    }

    fn list_dir(&self, path: &Path) -> Result<Vec<String>, HostError> {
        let mut st = self.lock_raw();
        self.record(&mut st, Op::List(path.to_path_buf()));
        st.faults.check("list", path)?;
        st.tree
            .list(path)
            .map_err(|e| HostError::io("list", path, e))
    }

    fn kind(&self, path: &Path) -> Option<NodeKind> {
        let st = self.lock_raw();
        if st.faults.dead.is_some() {
            return None;
        }
        kernel::kind(&st.tree, path)
    }

    fn canonicalize(&self, path: &Path) -> Result<PathBuf, HostError> {
        let st = self.lock_raw();
        if st.faults.dead.is_some() {
            return Err(faults::killed_error("realpath", path));
        }
        // Mostly asked of device directories (a `/sys/bus/pci/devices` link's target).
        st.tree
            .resolve_expect(path, true, tree::Expect::Dir)
            .map_err(|e| HostError::io("realpath", path, e))
    }

    fn write_attr(&self, path: &Path, value: &[u8]) -> Result<(), HostError> {
        let mut st = self.lock();
        self.record(&mut st, Op::Write(path.to_path_buf(), value.to_vec()));
        let go = st.faults.check("write", path)?;
        let change = persist::Change::Write {
            path: path.to_path_buf(),
            value: value.to_vec(),
        };
        let _recording = persist::record(&mut st, &self.root, change)?;
        let r = kernel::write(&mut st, path, value).map_err(|e| HostError::io("write", path, e));
        st.faults.finish(go, "write", path, r)
    }

    fn create_dir(&self, root: &Path, rel: &Path) -> Result<(), HostError> {
        self.file_op(root, rel, files::FileOp::CreateDir)
    }

    fn write_file(&self, root: &Path, rel: &Path, contents: &[u8]) -> Result<(), HostError> {
        let contents = contents.to_vec();
        self.file_op(root, rel, files::FileOp::Write { contents })
    }

    fn remove_file(&self, root: &Path, rel: &Path) -> Result<(), HostError> {
        self.file_op(root, rel, files::FileOp::RemoveFile)
    }

    fn remove_dir(&self, root: &Path, rel: &Path) -> Result<(), HostError> {
        self.file_op(root, rel, files::FileOp::RemoveDir)
    }
}

impl Vfio for SimHost {
    fn vfio_open_container(&self) -> Result<VfioContainer, HostError> {
        vfio::open_container(&mut self.lock())
    }

    fn vfio_api_version(&self, container: VfioContainer) -> Result<i32, HostError> {
        vfio::api_version(&mut self.lock(), container)
    }

    fn vfio_check_extension(&self, container: VfioContainer, ext: u32) -> Result<u32, HostError> {
        vfio::check_extension(&mut self.lock(), container, ext)
    }

    fn vfio_open_group(&self, group: u32) -> Result<VfioGroup, HostError> {
        vfio::open_group(&mut self.lock(), group)
    }

    fn vfio_group_status(&self, group: VfioGroup) -> Result<GroupStatus, HostError> {
        vfio::group_status(&mut self.lock(), group)
    }

    fn vfio_group_set_container(
        &self,
        group: VfioGroup,
        container: VfioContainer,
    ) -> Result<(), HostError> {
        vfio::set_container(&mut self.lock(), group, container)
    }

    fn vfio_set_iommu(&self, container: VfioContainer, kind: IommuType) -> Result<(), HostError> {
        vfio::set_iommu(&mut self.lock(), container, kind)
    }

    fn vfio_iommu_info(&self, container: VfioContainer) -> Result<IommuInfo, HostError> {
        vfio::iommu_info(&mut self.lock(), container)
    }

    fn vfio_group_device(&self, group: VfioGroup, name: &str) -> Result<VfioDevice, HostError> {
        vfio::group_device(&mut self.lock(), group, name)
    }

    fn vfio_device_info(&self, device: VfioDevice) -> Result<DeviceInfo, HostError> {
        vfio::device_info(&mut self.lock(), device)
    }

    fn vfio_region_info(&self, device: VfioDevice, index: u32) -> Result<RegionInfo, HostError> {
        vfio::region_info(&mut self.lock(), device, index)
    }

    fn vfio_irq_info(&self, device: VfioDevice, index: u32) -> Result<IrqInfo, HostError> {
        vfio::irq_info(&mut self.lock(), device, index)
    }

    fn vfio_region_read(
        &self,
        device: VfioDevice,
        index: u32,
        offset: u64,
        buf: &mut [u8],
    ) -> Result<usize, HostError> {
        vfio::region_read(&mut self.lock(), device, index, offset, buf)
    }

    fn vfio_dma_map(
        &self,
        container: VfioContainer,
        iova: u64,
        size: u64,
    ) -> Result<DmaMapping, HostError> {
        vfio::dma_map(&mut self.lock(), container, iova, size)
    }

    fn vfio_dma_unmap(
        &self,
        container: VfioContainer,
        iova: u64,
        size: u64,
    ) -> Result<u64, HostError> {
        vfio::dma_unmap(&mut self.lock(), container, iova, size)
    }

    fn vfio_close(&self, handle: VfioHandle) -> Result<(), HostError> {
        vfio::close(&mut self.lock(), handle)
    }

    fn vfio_iommufd_open(&self) -> Result<VfioContainer, HostError> {
        vfio::iommufd_open(&mut self.lock())
    }

    fn vfio_iommufd_device(
        &self,
        iommufd: VfioContainer,
        name: &str,
    ) -> Result<VfioDevice, HostError> {
        vfio::iommufd_device(&mut self.lock(), iommufd, name)
    }
}

impl Adapters for SimHost {
    fn probe_adapters(&self) -> Result<Vec<AdapterInfo>, HostError> {
        let mut st = self.lock_raw();
        self.record(&mut st, Op::ProbeAdapters);
        st.faults.check("probe-adapters", Path::new("wgpu"))?;
        let file = self.root.join(".fixture/wgpu-adapters.json");
        match tree::read_fixture_file(&file, 16 << 20) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map_err(|e| HostError::Fixture(format!("{}: {e}", file.display()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(HostError::io("read", file, e)),
        }
    }

    fn nvml_memory_total(
        &self,
        addr: &vm_device_host::PciAddress,
    ) -> Result<Option<u64>, HostError> {
        let mut st = self.lock_raw();
        self.record(&mut st, Op::Nvml(addr.to_string()));
        st.faults.check("nvml", Path::new(&addr.to_string()))?;
        drop(st);
        nvml_answer(&self.root.join(NVML_FIXTURE), addr)
    }
}

impl System for SimHost {
    fn set_thread_affinity(&self, tid: u32, cpus: &[u32]) -> Result<(), HostError> {
        let mut st = self.lock();
        self.record(&mut st, Op::SetAffinity(tid, cpus.to_vec()));
        let path = PathBuf::from(format!("/proc/{tid}"));
        let go = st.faults.check("sched_setaffinity", &path)?;
        // The kernel refuses an empty set (EINVAL) and CPUs that are not online.
        let online = kernel::numa::online_cpus(&st.tree);
        let r = if cpus.is_empty()
            || online
                .as_ref()
                .is_some_and(|on| cpus.iter().any(|c| !on.contains(c)))
        {
            Err(HostError::errno(
                "sched_setaffinity",
                &path,
                kernel::errno::EINVAL,
            ))
        } else {
            let mut set = cpus.to_vec();
            set.sort_unstable();
            set.dedup();
            st.kernel.affinity.insert(tid, set);
            Ok(())
        };
        st.faults.finish(go, "sched_setaffinity", &path, r)
    }

    fn load_module(&self, name: &str) -> Result<(), HostError> {
        let mut st = self.lock();
        self.record(&mut st, Op::LoadModule(name.to_string()));
        let path = PathBuf::from(name);
        let go = st.faults.check("modprobe", &path)?;
        let change = persist::Change::LoadModule {
            name: name.to_string(),
        };
        let _recording = persist::record(&mut st, &self.root, change)?;
        let r = kernel::load_module(&mut st, name);
        st.faults.finish(go, "modprobe", &path, r)
    }

    fn identity(&self) -> String {
        // A simulated host is its tree: journals of a simulation name it, and only a
        // simulation of the same tree replays them.
        let root = std::fs::canonicalize(&self.root).unwrap_or_else(|_| self.root.clone());
        format!("host tree {}", root.display())
    }
}

/// Where a fixture keeps NVML's answers (`docs/fixture-format.md`): a JSON array of
/// `{"address", "memory_total_bytes", "name"}` objects, one per GPU NVML sees. No file: NVML
/// is not installed on that host.
pub const NVML_FIXTURE: &str = ".fixture/nvml.json";

/// One GPU as NVML reported it on the recorded host.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
struct NvmlGpu {
    address: vm_device_host::PciAddress,
    memory_total_bytes: u64,
}

/// NVML's answer for `addr` from the fixture file at `file`: `None` without the file (no
/// library), NVML's "not found" for a GPU it does not list.
fn nvml_answer(file: &Path, addr: &vm_device_host::PciAddress) -> Result<Option<u64>, HostError> {
    let bytes = match std::fs::read(file) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(HostError::io("read", file, e)),
    };
    let gpus: Vec<NvmlGpu> = serde_json::from_slice(&bytes)
        .map_err(|e| HostError::Fixture(format!("{}: {e}", file.display())))?;
    match gpus.iter().find(|g| g.address == *addr) {
        Some(g) => Ok(Some(g.memory_total_bytes)),
        None => Err(HostError::Nvml {
            call: "nvmlDeviceGetHandleByPciBusId_v2",
            detail: format!("{addr}: Not Found (NVML_ERROR_NOT_FOUND)"),
        }),
    }
}

/// Per-path counts of operations, for "each attribute read once" checks.
pub fn count_ops(ops: &[Op]) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for op in ops {
        let key = match op {
            Op::Read(p) => format!("read {}", p.display()),
            Op::List(p) => format!("list {}", p.display()),
            Op::ReadLink(p) => format!("readlink {}", p.display()),
            Op::Write(p, _) => format!("write {}", p.display()),
            Op::LoadModule(n) => format!("modprobe {n}"),
            Op::ProbeAdapters => "probe-adapters".to_string(),
            Op::Nvml(a) => format!("nvml {a}"),
            Op::Vfio(t) => format!("vfio {}", t.split_whitespace().next().unwrap_or("")),
            Op::SetAffinity(tid, _) => format!("sched_setaffinity {tid}"),
            Op::File(op, p) => format!("{op} {}", p.display()),
        };
        *m.entry(key).or_insert(0) += 1;
    }
    m
}
